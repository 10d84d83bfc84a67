//! Closed standard streams, for every command: a closed standard output ends the run quietly
//! with status 3 (incomplete) and no summary that claims the rest; a closed standard error
//! never stops records from reaching standard output. Streams are pipes whose reading end is
//! closed before the command starts, so the first write fails every time.

use crate::harness::*;
use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A pipe's writing end whose reading end is already closed.
fn dead_pipe() -> Stdio {
    let mut fds = [0; 2];
    // SAFETY: pipe() fills the two descriptors we own from here on.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors are ours and open; each is owned exactly once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

#[derive(Clone, Copy, PartialEq)]
enum Closed {
    Stdout,
    Stderr,
}

fn run(dir: &Path, args: &[&str], closed: Closed) -> Output {
    let mut cmd = bin();
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    match closed {
        Closed::Stdout => cmd.stdout(dead_pipe()).stderr(Stdio::piped()),
        Closed::Stderr => cmd.stdout(Stdio::piped()).stderr(dead_pipe()),
    };
    cmd.output().expect("the binary runs")
}

/// A directory with three files, their `sum` lines, and a line that fails `check`.
fn fixture() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for i in 0..3u64 {
        fs::write(d.join(format!("f{i}")), pseudo_random(5000, i)).unwrap();
    }
    let out = run_in(d, &["sum", "f0", "f1", "f2"], b"");
    let mut sums = stdout(&out);
    let f0_code = sums.split(' ').next().unwrap().to_string();
    sums += &format!("{f0_code} *f1\n"); // f0's code for f1: FAILED
    fs::write(d.join("sums.txt"), sums).unwrap();
    let json = run_in(d, &["sum", "--json", "f0", "f1", "f0"], b"");
    fs::write(d.join("records.jsonl"), stdout(&json) + "not a record\n").unwrap();
    let mut frames = Vec::new();
    for id in 0..2 {
        frames.extend(
            format!("{{\"image\": {id}, \"planes\": 1, \"plane_bytes\": 5000}}\n{{\"bytes\": 5000}}\n")
                .bytes(),
        );
        frames.extend(pseudo_random(5000, id));
        frames.extend(b"{\"end\": true}\n");
    }
    fs::write(d.join("planes.frames"), frames).unwrap();
    tmp
}

const COMMANDS: &[&[&str]] = &[
    &["sum", "f0", "f1", "missing", "f2"],
    &["sum", "--json", "--progress", "always", "f0", "f1", "missing", "f2"],
    &["check", "sums.txt"],
    &["similar", "records.jsonl"],
    &["selftest"],
    &["pixels", "planes.frames"],
];

#[test]
fn a_closed_stdout_ends_every_command_quietly_with_status_3() {
    let tmp = fixture();
    for args in COMMANDS {
        let out = run(tmp.path(), args, Closed::Stdout);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // No summary claiming what was not done (and no progress bar: `sum` stops at once).
        assert!(!err.contains("checked:") && !err.contains("group(s)"), "{args:?}: {err}");
    }
}

#[test]
fn a_closed_stderr_never_stops_the_records() {
    let tmp = fixture();
    let expect: &[(&[&str], i32, usize)] = &[
        (COMMANDS[0], 1, 3), // three records; the missing file's message is lost
        (COMMANDS[1], 1, 4), // four JSON records, one of them the error
        (COMMANDS[2], 1, 4), // OK, OK, OK, FAILED
        (COMMANDS[3], 1, 2), // one identical group of two members: header and two lines
        (COMMANDS[4], 0, 0), // every check, then the verdict
        (COMMANDS[5], 0, 2), // one record per image
    ];
    for &(args, status, min_lines) in expect {
        let out = run(tmp.path(), args, Closed::Stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {}", stdout(&out));
        assert!(stdout(&out).lines().count() >= min_lines, "{args:?}: {}", stdout(&out));
    }
    let out = run(tmp.path(), COMMANDS[4], Closed::Stderr);
    assert!(stdout(&out).ends_with("selftest: all checks passed\n"));
    let out = run(tmp.path(), COMMANDS[2], Closed::Stderr);
    assert_eq!(stdout(&out).lines().filter(|l| l.ends_with(": FAILED")).count(), 1);
}

#[test]
fn a_complete_run_still_ends_with_its_summary() {
    let tmp = fixture();
    let out = run_in(tmp.path(), &["check", "sums.txt"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).ends_with("omero-iscc: 4 checked: 3 OK, 1 FAILED, 0 MISSING\n"), "{}", stderr(&out));
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "'{}' selftest | head -n 1; echo \"status ${{PIPESTATUS[0]}}\"",
            env!("CARGO_BIN_EXE_omero-iscc")
        ))
        .output()
        .unwrap();
    // Whether the pipe closed before the last line depends on timing: 0 or 3, never a panic.
    assert!(stdout(&out).ends_with("status 0\n") || stdout(&out).ends_with("status 3\n"), "{}", stdout(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn pixels_ends_at_once_when_its_output_closes_while_its_input_stays_open() {
    // The reader thread is blocked on a stdin that sends nothing more: the run must still end
    // (status 3) when standard output is gone, not wait for the input's end.
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = bin()
        .arg("pixels")
        .current_dir(tmp.path())
        .stdin(Stdio::piped())
        .stdout(dead_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(b"{\"image\": 1, \"planes\": 1, \"plane_bytes\": 3}\n{\"bytes\": 3}\nabc{\"end\": true}\n")
        .unwrap();
    input.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "pixels still runs 10 s after its output closed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    drop(input);
    assert_eq!(status.code(), Some(3));
}
