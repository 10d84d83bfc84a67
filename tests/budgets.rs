//! What a run may spend and read: a time budget that stops a huge (sparse) file, a ceiling on
//! file sizes, the sizes OMERO recorded, and a lower CPU and I/O priority.
//!
//! "Not read" is shown by the file's access time: each file starts with an access time older
//! than its modification time, which any read (or mapping) of it updates, also under
//! `relatime`.

mod common;
use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn error_kind(record: &Value) -> &str {
    record["error"]["kind"].as_str().unwrap_or("<no error>")
}

/// Sets the file's access time to 2001 (older than its modification time).
fn age_access_time(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let times = [
        libc::timespec { tv_sec: 1_000_000_000, tv_nsec: 0 },
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
    ];
    // SAFETY: a NUL-terminated path and two timespecs, as utimensat takes them.
    assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) }, 0);
}

/// Whether the file was read since [`age_access_time`].
fn was_read(path: &Path) -> bool {
    fs::metadata(path).unwrap().atime() != 1_000_000_000
}

#[test]
fn access_times_tell_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f");
    fs::write(&f, b"bytes").unwrap();
    age_access_time(&f);
    assert!(!was_read(&f));
    let _ = fs::File::open(&f).unwrap().metadata().unwrap();
    assert!(!was_read(&f), "opening and fstat are no read");
    fs::read(&f).unwrap();
    assert!(was_read(&f), "this file system does not record reads: the tests below could not tell");
}

// Issue 29, item 4: a sparse file far larger than the budget allows to hash is given up soon
// after the budget ends; the files before it keep their codes, those after it are not opened
// (one thread: with more, a later file may well be hashed beside it in time), and the exit
// status says the run did not finish.
#[test]
fn a_huge_sparse_file_stops_at_the_time_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("before.tif"), pseudo_random(10_000, 1)).unwrap();
    let huge = fs::File::create(d.join("huge.raw")).unwrap();
    huge.set_len(8 << 40).unwrap(); // 8 TiB of holes: hours of hashing
    drop(huge);
    fs::write(d.join("after.tif"), pseudo_random(10_000, 2)).unwrap();
    age_access_time(&d.join("after.tif"));
    let budget = 2.0;
    let started = Instant::now();
    let out = run_in(
        d,
        &["sum", "--json", "--threads", "1", "--time-budget", "2", "before.tif", "huge.raw", "after.tif"],
        b"",
    );
    let took = started.elapsed().as_secs_f64();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let records = json_lines(&out);
    let kinds: Vec<&str> = records.iter().map(error_kind).collect();
    assert_eq!(kinds, ["<no error>", "budget", "budget"]);
    assert!(!was_read(&d.join("after.tif")), "a file after the budget is not read");
    // A loose bound (a loaded test machine): the budget, then at most a window of hashing.
    assert!(took < budget + 5.0, "stopped {took:.1} s after the start, budget {budget} s");
    eprintln!("8 TiB sparse file, budget {budget} s: the run took {took:.2} s");
    // A tree is cut the same way.
    let out = run_in(d, &["sum", "--json", "--tree", "--time-budget", "0.5", "."], b"");
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(error_kind(&json_lines(&out)[0]), "budget");
    // And standard input that does not end.
    let mut child = bin()
        .args(["sum", "--json", "--time-budget", "0.5", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![7u8; 1 << 20];
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until && stdin.write_all(&chunk).is_ok() {}
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(error_kind(&json_lines(&out)[0]), "budget");
}

// `--max-file-size`: a larger file is not read (not even mapped); one at the ceiling is.
#[test]
fn files_above_the_size_ceiling_are_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("small"), pseudo_random(1000, 1)).unwrap();
    fs::write(d.join("large"), pseudo_random(3 << 20, 2)).unwrap();
    fs::write(d.join("exact"), pseudo_random(2 << 20, 3)).unwrap();
    for name in ["small", "large", "exact"] {
        age_access_time(&d.join(name));
    }
    let out = run_in(d, &["sum", "--json", "--max-file-size", "2M", "small", "large", "exact"], b"");
    assert_eq!(out.status.code(), Some(1));
    let records = json_lines(&out);
    let kinds: Vec<&str> = records.iter().map(error_kind).collect();
    assert_eq!(kinds, ["<no error>", "too_large", "<no error>"]);
    assert_eq!(
        records[1]["error"]["message"],
        "not read: 3145728 bytes is more than --max-file-size 2097152"
    );
    assert!(!was_read(&d.join("large")));
    assert!(was_read(&d.join("small")) && was_read(&d.join("exact")));
    // In a group, the large file costs the group its code; its neighbours keep theirs.
    let line = "{\"id\": \"g\", \"files\": [\"small\", \"large\"]}\n";
    let out = run_in(d, &["sum", "--json", "--max-file-size", "2M", "--groups", "-"], line.as_bytes());
    let record = &json_lines(&out)[0];
    assert_eq!(error_kind(record), "too_large");
    assert!(record["files"][0]["iscc"].is_string());
}

// Issue 29, item 3: a file whose size differs from the one its group line gives (what OMERO
// recorded at import) is not hashed, and not read.
#[test]
fn a_file_of_another_size_than_recorded_is_not_hashed() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("a.tif"), pseudo_random(5000, 1)).unwrap();
    fs::write(d.join("b.tif"), pseudo_random(3000, 2)).unwrap();
    fs::write(d.join("c.tif"), pseudo_random(3 << 20, 3)).unwrap();
    age_access_time(&d.join("c.tif"));
    let lines = concat!(
        r#"{"id": "right", "files": [{"path": "a.tif", "size": 5000}, "b.tif"]}"#,
        "\n",
        r#"{"id": "unknown", "files": [{"path": "a.tif", "size": null}, {"path": "b.tif"}]}"#,
        "\n",
        r#"{"id": "wrong", "files": [{"path": "c.tif", "size": 3145727}]}"#,
        "\n",
        r#"{"id": "bad", "files": [{"path": "a.tif", "size": -1}]}"#,
        "\n",
        r#"{"id": "extra", "files": [{"path": "a.tif", "mtime": 5}]}"#,
        "\n",
    );
    let out = run_in(d, &["sum", "--json", "--root", ".", "--groups", "-"], lines.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let r = json_lines(&out);
    assert!(r[0]["iscc"].is_string() && r[1]["iscc"].is_string());
    assert_eq!(error_kind(&r[2]), "size_mismatch");
    assert_eq!(error_kind(&r[2]["files"][0]), "size_mismatch");
    assert_eq!(
        r[2]["files"][0]["error"]["message"],
        "not hashed: the file has 3145728 bytes, its group line says 3145727 (the size recorded at import)"
    );
    assert!(!was_read(&d.join("c.tif")), "the file of the wrong size was read");
    for n in [3, 4] {
        assert_eq!((r[n]["id"].clone(), error_kind(&r[n])), (Value::Null, "invalid_input"), "{}", r[n]);
    }
}

/// The nice value and I/O priority (class, level) of each thread of `pid`.
fn priorities(pid: u32) -> Vec<(i64, i64, i64)> {
    let mut out = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid: i64 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        let stat = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        let nice: i64 = fields[16].parse().unwrap(); // field 19 of stat, the 17th after the name
                                                     // SAFETY: ioprio_get takes two integers and reads the priority of that thread.
        let io = unsafe { libc::syscall(libc::SYS_ioprio_get, 1 as libc::c_long, tid as libc::c_long) };
        out.push((nice, io >> 13, io & 0x1fff));
    }
    out
}

// Issue 29, item 4: `--priority low` puts every thread of the worker at nice 10 and at the
// lowest best-effort I/O level; `normal` leaves them as started.
#[test]
fn low_priority_holds_for_every_thread() {
    for (args, want_low) in [
        (&["pixels", "--priority", "low", "--threads", "3"][..], true),
        (&["sum", "--priority", "low", "--threads", "3", "-"][..], true),
        (&["pixels", "--threads", "3"][..], false),
    ] {
        let mut child = bin().args(args).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        // Waits on its standard input: all its threads are up.
        std::thread::sleep(Duration::from_millis(300));
        let seen = priorities(child.id());
        drop(child.stdin.take());
        child.wait().unwrap();
        assert!(seen.len() >= 2, "{args:?}: {seen:?}");
        for (nice, class, level) in seen {
            if want_low {
                assert_eq!((nice, class, level), (10, 2, 7), "{args:?}");
            } else {
                assert_eq!(nice, 0, "{args:?}");
                assert_ne!((class, level), (2, 7), "{args:?}");
            }
        }
    }
}

// `--priority low` never raises a priority that is already lower.
#[test]
fn low_priority_never_raises_a_lower_one() {
    let out = Command::new("nice")
        .args(["-n", "15", env!("CARGO_BIN_EXE_omero-iscc"), "pixels", "--priority", "low"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut child = Command::new("nice")
        .args(["-n", "15", env!("CARGO_BIN_EXE_omero-iscc"), "pixels", "--priority", "low"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let seen = priorities(child.id());
    drop(child.stdin.take());
    child.wait().unwrap();
    assert!(seen.iter().all(|(nice, _, _)| *nice == 15), "{seen:?}");
}

// A file that changes size between the check of its recorded size and its read (replaced by
// a file of another size) loses its code: no record carries a code of another size than the
// one its group line gives.
#[test]
fn a_file_that_changes_size_after_the_check_loses_its_code() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_path_buf();
    fs::write(d.join("f.tif"), pseudo_random(3000, 1)).unwrap();
    // The swapper is a process of its own: its renames then land anywhere in the worker's run.
    fs::write(d.join("a"), pseudo_random(3000, 1)).unwrap();
    fs::write(d.join("b"), pseudo_random(3001, 2)).unwrap();
    let swap = "import os, shutil\nwhile True:\n    for src in ('a', 'b'):\n        shutil.copyfile(src, '.staged')\n        os.rename('.staged', 'f.tif')\n";
    let mut swapper = Command::new(python()).args(["-c", swap]).current_dir(&d).spawn().unwrap();
    // The file comes last in its group, after others: the sizes are checked when the group
    // starts, so the swap has the reading of the others to land in.
    let mut files: Vec<String> = (0..40).map(|i| format!("\"o{i}\"")).collect();
    for i in 0..40 {
        fs::write(d.join(format!("o{i}")), pseudo_random(20_000, 100 + i)).unwrap();
    }
    files.push("{\"path\": \"f.tif\", \"size\": 3000}".into());
    let lines = format!("{{\"id\": \"g\", \"files\": [{}]}}\n", files.join(", ")).repeat(50);
    let (mut codes, mut refused) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while (codes == 0 || refused == 0 || codes + refused < 200) && Instant::now() < deadline {
        let out = run_in(&d, &["sum", "--json", "--root", ".", "--groups", "-"], lines.as_bytes());
        for record in json_lines(&out) {
            let file = &record["files"][40];
            match error_kind(file) {
                "<no error>" => {
                    assert_eq!(file["filesize"], 3000, "{record}");
                    assert_eq!(record["filesize"], 40 * 20_000 + 3000, "{record}");
                    codes += 1;
                }
                // Changed between the batch's sizing and its read: refused all the same.
                "size_mismatch" | "changed_while_reading" => refused += 1,
                other => panic!("{other}: {record}"),
            }
        }
    }
    swapper.kill().unwrap();
    swapper.wait().unwrap();
    assert!(codes > 0 && refused > 0, "{codes} codes, {refused} refusals: the race did not run");
}
