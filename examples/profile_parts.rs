//! Times the parts of one ISCC-SUM pass over a file held in memory, on one thread:
//! `cargo run --release --example profile_parts -- FILE`.

use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("usage: profile_parts FILE");
    let data = std::fs::read(path).expect("readable file");
    let gib = data.len() as f64 / (1u64 << 30) as f64;
    for _ in 0..2 {
        let t = Instant::now();
        let n = iscc_lib::alg_cdc_chunks(&data, false, 1024).unwrap().len();
        report(&format!("iscc-lib chunking ({n} chunks)"), t, gib);
    }
    let t = Instant::now();
    let mut pos = 0;
    let mut chunks = 0u64;
    while pos < data.len() {
        pos += omero_iscc::engine::cdc::cut(&data[pos..]);
        chunks += 1;
    }
    report("gear chunking", t, gib);
    let t = Instant::now();
    let mut features = Vec::with_capacity(chunks as usize);
    let mut pos = 0;
    while pos < data.len() {
        let n = omero_iscc::engine::cdc::cut(&data[pos..]);
        features.push(xxhash_rust::xxh32::xxh32(&data[pos..pos + n], 0));
        pos += n;
    }
    report("chunking + xxh32", t, gib);
    let t = Instant::now();
    let mut m = omero_iscc::engine::minhash::MinHash::default();
    m.fold(&features);
    report(&format!("minhash of {} features", features.len()), t, gib);
    let t = Instant::now();
    let h = blake3::hash(&data);
    report("blake3 (one thread)", t, gib);
    let t = Instant::now();
    let mut d = omero_iscc::engine::datacode::DataHasher::new(false);
    d.update(&data);
    let _ = d.finalize();
    report("DataHasher sequential", t, gib);
    println!("{}", h.to_hex());
}

fn report(what: &str, t: Instant, gib: f64) {
    let s = t.elapsed().as_secs_f64();
    println!("{what:40} {s:7.3} s  {:6.2} GiB/s", gib / s);
}
