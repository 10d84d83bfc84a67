//! `check` verifies what `sum` (text and JSON) and iscc-sum wrote, and catches changed and
//! missing files.

use crate::harness::*;
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
    let vectors = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/commands/selftest_vectors.json");
    let out = std::process::Command::new(python()).arg("-c").arg(script).arg(vectors).output().unwrap();
    assert_eq!(stdout(&out).trim(), "same", "{}", stderr(&out));
}

#[test]
fn nul_terminated_iscc_sum_lines_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("a b\nc"), pseudo_random(3000, 5)).unwrap();
    fs::write(d.join("plain"), pseudo_random(3000, 6)).unwrap();
    fs::write(d.join("zero.txt"), iscc_sum(d, &["-z", "a b\nc", "plain"]).stdout).unwrap();
    let out = run_in(d, &["check", "zero.txt"], b"");
    assert_eq!(stdout(&out), "a b\nc: OK\nplain: OK\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_file_without_records_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("empty.txt"), b"\n\n").unwrap();
    let out = run_in(tmp.path(), &["check", "empty.txt"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "omero-iscc: empty.txt: no ISCC records found\n\
         omero-iscc: 0 checked: 0 OK, 0 FAILED, 0 MISSING, 1 file(s) without records\n"
    );
}

#[test]
fn progress_redraws_in_a_captured_log_are_not_malformed_records() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for i in 0..4u64 {
        fs::write(d.join(format!("f{i}")), pseudo_random(200_000, i)).unwrap();
    }
    // What `sum ... > log 2>&1` keeps when a progress bar is drawn on the same stream.
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' sum --json --progress always f0 f1 f2 f3 > log 2>&1",
            env!("CARGO_BIN_EXE_omero-iscc")
        ))
        .current_dir(d)
        .status()
        .unwrap();
    assert!(status.success());
    let log = fs::read(d.join("log")).unwrap();
    assert!(log.contains(&b'\r'), "the log has progress redraws");
    let out = run_in(d, &["check", "log"], b"");
    assert_eq!(stdout(&out), "f0: OK\nf1: OK\nf2: OK\nf3: OK\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("malformed"));
}
