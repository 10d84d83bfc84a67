//! The `selftest` command: ISO 24138 conformance vectors (iscc-core's `data.json`, the
//! Data-Code, Instance-Code and ISCC-CODE sections, compiled in) run through this binary's
//! own hashers, and the parallel chunker checked against the sequential one.

use crate::engine::codes::{hex, unit};
use crate::engine::datacode::DataHasher;
use crate::exit::{RunError, Status};
use crate::streams::Output;
use iscc_lib::codec::MainType;
use serde_json::Value;

const VECTORS: &str = include_str!("selftest_vectors.json");

/// Runs every check, printing one line each; returns the exit status.
pub fn run() -> Result<Status, RunError> {
    let vectors: Value = serde_json::from_str(VECTORS).expect("compiled-in vectors are valid JSON");
    let mut failures = 0;
    let mut out = Output::default();
    let mut report = |name: &str, ok: bool, detail: String| -> Result<(), RunError> {
        if ok {
            out.record(format!("ok      {name}\n").as_bytes())
        } else {
            failures += 1;
            out.record(format!("FAILED  {name}: {detail}\n").as_bytes())
        }
    };
    for (name, case) in section(&vectors, "gen_data_code_v0") {
        let (data, bits) = stream_input(case);
        let want = case["outputs"]["iscc"].as_str().unwrap_or_default();
        for pieces in [data.len(), 1] {
            let mut h = DataHasher::new(false);
            for piece in data.chunks(pieces.max(1)) {
                h.update(piece);
            }
            let got = unit(MainType::Data, &h.finalize(), bits);
            report(&format!("data/{name} (updates of {pieces} B)"), got == want, format!("{got} != {want}"))?;
        }
    }
    for (name, case) in section(&vectors, "gen_instance_code_v0") {
        let (data, bits) = stream_input(case);
        let digest = *blake3::hash(&data).as_bytes();
        let got = unit(MainType::Instance, &digest, bits);
        let out = &case["outputs"];
        let ok = got == out["iscc"].as_str().unwrap_or_default()
            && format!("1e20{}", hex(&digest)) == out["datahash"].as_str().unwrap_or_default()
            && Some(data.len() as u64) == out["filesize"].as_u64();
        report(&format!("instance/{name}"), ok, format!("{got} != {}", out["iscc"]))?;
    }
    for (name, case) in section(&vectors, "gen_iscc_code_v0") {
        let codes: Vec<&str> = case["inputs"][0]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let want = case["outputs"]["iscc"].as_str().unwrap_or_default();
        let got = iscc_lib::gen_iscc_code_v0(&codes, false).map(|r| r.iscc).unwrap_or_else(|e| e.to_string());
        report(&format!("iscc/{name}"), got == want, format!("{got} != {want}"))?;
    }
    let (ok, detail) = parallel_agrees();
    report("parallel chunking equals sequential (12 MiB: random, zero and periodic runs)", ok, detail)?;
    if failures == 0 {
        out.record(b"selftest: all checks passed\n")?;
    } else {
        out.record(format!("selftest: {failures} check(s) FAILED\n").as_bytes())?;
    }
    Ok(Status::from_failed(failures > 0))
}

fn section<'a>(vectors: &'a Value, key: &str) -> Vec<(&'a String, &'a Value)> {
    vectors[key].as_object().map(|m| m.iter().collect()).unwrap_or_default()
}

/// Decodes `["stream:<hex>", bits]`.
fn stream_input(case: &Value) -> (Vec<u8>, u32) {
    let stream = case["inputs"][0].as_str().unwrap_or_default();
    let hexits = stream.strip_prefix("stream:").unwrap_or_default();
    let data = (0..hexits.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hexits[2 * i..2 * i + 2], 16).ok())
        .collect();
    (data, case["inputs"][1].as_u64().unwrap_or(64) as u32)
}

fn parallel_agrees() -> (bool, String) {
    let mut data = crate::engine::testdata::pseudo_random(12 << 20, 1);
    data[1 << 20..3 << 20].fill(0);
    for (i, b) in data[5 << 20..6 << 20].iter_mut().enumerate() {
        *b = (i % 13) as u8;
    }
    let digest = |parallel: bool| {
        let mut h = DataHasher::new(parallel);
        h.update(&data);
        h.finalize()
    };
    let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build();
    match pool {
        Ok(pool) => {
            let (seq, par) = (digest(false), pool.install(|| digest(true)));
            (seq == par, format!("{} != {}", hex(&par), hex(&seq)))
        }
        Err(e) => (false, format!("cannot start threads: {e}")),
    }
}
