//! `check` verifies what `sum` (text and JSON) and iscc-sum wrote, and catches changed and
//! missing files.

mod common;
use common::*;
use std::fs;

#[test]
fn verifies_own_and_iscc_sum_output_and_catches_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::create_dir(d.join("data")).unwrap();
    for i in 0..5u64 {
        fs::write(d.join(format!("data/f{i}.tif")), pseudo_random(20_000 + i as usize * 999, i)).unwrap();
    }
    let text = run_in(d, &["sum", "data"], b"");
    fs::write(d.join("sums.txt"), &text.stdout).unwrap();
    let json = run_in(d, &["sum", "--json", "--checksum", "SHA1-160", "data", "--tree"], b"");
    let json_files = run_in(d, &["sum", "--json", "--checksum", "SHA1-160", "--wide", "data"], b"");
    fs::write(d.join("sums.jsonl"), [json.stdout, json_files.stdout].concat()).unwrap();
    fs::write(d.join("ref.txt"), iscc_sum(d, &["data"]).stdout).unwrap();
    fs::write(d.join("ref-tag.txt"), iscc_sum(d, &["--tag", "--narrow", "data"]).stdout).unwrap();
    for file in ["sums.txt", "sums.jsonl", "ref.txt", "ref-tag.txt"] {
        let out = run_in(d, &["check", file], b"");
        assert_eq!(out.status.code(), Some(0), "{file}: {}{}", stdout(&out), stderr(&out));
        assert!(stdout(&out).lines().all(|l| l.ends_with(": OK")), "{file}");
    }
    // And iscc-sum accepts ours.
    let out = std::process::Command::new(python())
        .args(["-m", "iscc_sum", "-c", "sums.txt"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // Change one byte in place (same size), delete another file.
    let mut bytes = fs::read(d.join("data/f1.tif")).unwrap();
    bytes[10_000] ^= 1;
    fs::write(d.join("data/f1.tif"), bytes).unwrap();
    fs::remove_file(d.join("data/f3.tif")).unwrap();
    fs::write(d.join("bad.txt"), "garbage line\n").unwrap();
    let out = run_in(d, &["check", "sums.txt", "sums.jsonl", "bad.txt"], b"");
    assert_eq!(out.status.code(), Some(1));
    let lines = stdout(&out);
    assert!(lines.contains("data/f1.tif: FAILED\n"), "{lines}");
    assert!(lines.contains("data/f3.tif: MISSING\n"));
    assert!(lines.contains("data/: FAILED\n"));
    assert!(lines.contains("data/f0.tif: OK\n"));
    let err = stderr(&out);
    assert!(err.contains("ISCC, datahash, SHA1-160 differ(s)"), "{err}");
    assert!(err.contains("bad.txt:1: improperly formatted"), "{err}");
    assert!(err.contains("malformed line"), "{err}");
}

#[test]
fn selftest_vectors_are_iscc_cores_own() {
    // The vectors compiled into `selftest` must be iscc-core's data.json sections, unedited.
    let script = r#"
import json, os, sys, iscc_core
ours = json.load(open(sys.argv[1]))
theirs = json.load(open(os.path.join(os.path.dirname(iscc_core.__file__), "data.json")))
assert set(ours) == {"gen_data_code_v0", "gen_instance_code_v0", "gen_iscc_code_v0"}, set(ours)
for key in ours:
    assert ours[key] == theirs[key], key
print("same")
"#;
    let vectors = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/selftest_vectors.json");
    let out = std::process::Command::new(python()).arg("-c").arg(script).arg(vectors).output().unwrap();
    assert_eq!(stdout(&out).trim(), "same", "{}", stderr(&out));
}
