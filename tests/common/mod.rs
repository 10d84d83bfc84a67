//! Helpers of the integration tests: run the real binary, and the reference tools that
//! tests/run.sh installs (iscc-sum and iscc-core in a virtual environment).
#![allow(dead_code)]

use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_omero-iscc"))
}

/// Runs the binary with `args` in `dir`, feeding `stdin`.
pub fn run_in(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = bin()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut input = child.stdin.take().expect("piped");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("the binary finishes");
    writer.join().expect("stdin writer");
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON lines the binary wrote. Each must also read into its serde type with unknown
/// fields denied (`records::Line` for `sum`, `similar::GroupLine` for `similar`), so a
/// renamed or extra field fails the test that reads it. (`Value` cannot hold the `\udcXY`
/// escapes of names that are not UTF-8: there they read as the Latin-1 character of their
/// byte; the typed read is exact.)
pub fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| {
            let value: Value = serde_json::from_str(&l.replace("\\udc", "\\u00")).expect("each line is JSON");
            if value.get("kind").is_some() {
                let typed: Result<omero_iscc::commands::similar::GroupLine, _> = serde_json::from_str(l);
                typed.unwrap_or_else(|e| panic!("not a similar group line ({e}): {l}"));
            } else {
                let typed: Result<omero_iscc::records::Line, _> = serde_json::from_str(l);
                typed.unwrap_or_else(|e| panic!("not a sum record ({e}): {l}"));
            }
            value
        })
        .collect()
}

/// Untyped JSON lines (of the reference scripts).
pub fn plain_json_lines(out: &Output) -> Vec<Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect()
}

/// The Python of the test environment (reference packages installed).
pub fn python() -> PathBuf {
    PathBuf::from(std::env::var_os("OMERO_ISCC_PYTHON").expect(
        "OMERO_ISCC_PYTHON is not set: run the tests through tests/run.sh, which installs \
         iscc-sum and iscc-core to compare against",
    ))
}

/// The sample files fetched by tests/run.sh.
pub fn samples() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var_os("OMERO_ISCC_SAMPLES")
            .expect("OMERO_ISCC_SAMPLES is not set: run the tests through tests/run.sh, which fetches them"),
    );
    assert!(dir.join("ome-tiff").is_dir(), "sample files missing in {}", dir.display());
    dir
}

/// Runs the reference iscc-sum CLI in `dir`.
pub fn iscc_sum<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Output {
    let out = Command::new(python())
        .arg("-m")
        .arg("iscc_sum")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("iscc-sum runs");
    assert!(out.status.success(), "iscc-sum failed: {}", stderr(&out));
    out
}

/// iscc-core's codes and hashlib/zlib checksums for each argument (see
/// tests/reference/iscc_core_sum.py; an argument `a+b+` is the concatenation of a and b).
pub fn iscc_core<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/iscc_core_sum.py");
    let out = Command::new(python()).arg(script).args(args).current_dir(dir).output().expect("python runs");
    assert!(out.status.success(), "iscc-core reference failed: {}", stderr(&out));
    plain_json_lines(&out)
}

/// Deterministic pseudo-random bytes (the crate's own generator, shared with its unit tests).
pub use omero_iscc::engine::testdata::pseudo_random;
