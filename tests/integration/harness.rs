//! The harness of the integration tests: a temporary tree of files ([`Tree`]), the real
//! binary run in it with its status expected ([`Tree::run`], [`run_in`]), its JSON lines read
//! back into the crate's own record types with unknown fields denied ([`sum_lines`],
//! [`similar_lines`]), and the reference tools that tests/run.sh installs (iscc-sum and
//! iscc-core in a virtual environment).

use omero_iscc::engine::failure::{Failure, FailureKind};
use omero_iscc::records::similar::SimilarLine;
use omero_iscc::records::sum::{FileLine, GroupLine, Line};
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

/// A temporary directory of files, removed when dropped.
pub struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        Tree { dir: tempfile::tempdir().expect("a temporary directory") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` to `name` (its directories made first).
    pub fn file(&self, name: &str, bytes: impl AsRef<[u8]>) -> &Tree {
        let path = self.path().join(name);
        std::fs::create_dir_all(path.parent().expect("a file has a directory")).expect("mkdir");
        std::fs::write(path, bytes).expect("write a file of the tree");
        self
    }

    /// Runs the binary with `args` in the tree, feeding `stdin`, and expects exit status
    /// `status`.
    pub fn run(&self, args: &[&str], stdin: &[u8], status: i32) -> Output {
        expect_status(run_in(self.path(), args, stdin), status)
    }
}

/// `out`, after checking that it exited with `status`.
pub fn expect_status(out: Output, status: i32) -> Output {
    assert_eq!(out.status.code(), Some(status), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    out
}

/// The records a JSON `sum` wrote, each read into [`Line`] with unknown fields denied.
pub fn sum_lines(out: &Output) -> Vec<Line> {
    typed_lines(out, "sum record")
}

/// The groups `similar --json` wrote, each read into [`SimilarLine`].
pub fn similar_lines(out: &Output) -> Vec<SimilarLine> {
    typed_lines(out, "similar group")
}

/// The failure a record holds (a group's own, not its files'), if any.
pub fn failure(line: &Line) -> Option<&Failure> {
    match line {
        Line::File(file) => file.error.as_ref(),
        Line::Group(group) => group.error.as_ref(),
        Line::Bad(bad) => Some(&bad.error),
    }
}

/// The kind of the failure a record holds, if any.
pub fn error_kind(line: &Line) -> Option<FailureKind> {
    failure(line).map(|f| f.kind)
}

/// The code a record holds (a file's, a tree's or a group's), if any.
pub fn iscc_of(line: &Line) -> Option<&str> {
    match line {
        Line::File(file) => file.iscc.as_deref(),
        Line::Group(group) => group.iscc.as_deref(),
        Line::Bad(_) => None,
    }
}

/// The record of a file or a tree; any other record fails the test.
pub fn file_record(line: &Line) -> &FileLine {
    match line {
        Line::File(file) => file,
        other => panic!("not a file's record: {other:?}"),
    }
}

/// The record of a group; any other record fails the test.
pub fn group_record(line: &Line) -> &GroupLine {
    match line {
        Line::Group(group) => group,
        other => panic!("not a group's record: {other:?}"),
    }
}

fn typed_lines<T: serde::de::DeserializeOwned>(out: &Output, what: &str) -> Vec<T> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a {what} ({e}): {l}")))
        .collect()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
