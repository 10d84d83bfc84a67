//! Writes N synthetic `sum --json`-like records for benchmarking `similar`:
//! `cargo run --release --example gen_codes -- N > codes.jsonl`.
//!
//! Random 256-bit digests; every 10th record repeats an earlier one exactly (an identical
//! duplicate) and every 10th+5 is a near copy of an earlier one (1 to 10 Data-Code bits flipped).

use iscc_lib::codec::{encode_component, MainType, SubType, Version};
use std::io::{BufWriter, Write};

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).expect("usage: gen_codes N");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut kept: Vec<([u8; 32], [u8; 32])> = Vec::with_capacity(n);
    let out = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, out.lock());
    for i in 0..n {
        let mut data = [0u8; 32];
        let mut inst = [0u8; 32];
        for k in 0..4 {
            data[k * 8..k * 8 + 8].copy_from_slice(&next().to_le_bytes());
            inst[k * 8..k * 8 + 8].copy_from_slice(&next().to_le_bytes());
        }
        if i > 0 && i % 10 == 0 {
            (data, inst) = kept[next() as usize % i];
        } else if i > 0 && i % 10 == 5 {
            data = kept[next() as usize % i].0;
            for _ in 0..1 + next() % 10 {
                let bit = (next() % 64) as usize;
                data[bit / 8] ^= 0x80 >> (bit % 8);
            }
        }
        kept.push((data, inst));
        let d = format!(
            "ISCC:{}",
            encode_component(MainType::Data, SubType::None, Version::V0, 256, &data).unwrap()
        );
        let s = format!(
            "ISCC:{}",
            encode_component(MainType::Instance, SubType::None, Version::V0, 256, &inst).unwrap()
        );
        let code = iscc_lib::gen_iscc_code_v0(&[&d, &s], false).unwrap().iscc;
        let hash: String = inst.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(out, "{{\"id\":\"image:{i}\",\"iscc\":\"{code}\",\"datahash\":\"1e20{hash}\"}}").unwrap();
    }
}
