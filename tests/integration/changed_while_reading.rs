//! A file that shrinks or changes while it is hashed gives `changed_while_reading`, never a
//! crash: the truncation happens on another thread in the middle of hashing a mapped window,
//! so the reader touches pages past the new end of file (SIGBUS without the guard).

use omero_iscc::engine::failure::FailureKind;
use omero_iscc::engine::source;
use omero_iscc::records::sum::Line;
use std::fs::{self, File, OpenOptions};
use std::io::Write;

fn big_file(dir: &std::path::Path, len: usize) -> std::path::PathBuf {
    let path = dir.join("big");
    let mut f = File::create(&path).unwrap();
    let block: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
    for _ in 0..len / block.len() {
        f.write_all(&block).unwrap();
    }
    path
}

#[test]
fn truncation_under_a_mapped_window_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let path = big_file(tmp.path(), 48 << 20);
    let file = File::open(&path).unwrap();
    let meta = file.metadata().unwrap();
    let mut pages = 0usize;
    let mut first = true;
    let result = source::feed_file(&file, &meta, true, &mut |bytes| {
        if first {
            first = false;
            let p = path.clone();
            std::thread::spawn(move || {
                OpenOptions::new().write(true).open(p).unwrap().set_len(4096).unwrap()
            })
            .join()
            .unwrap();
        }
        // Touch every page of the window, as the hashers do.
        std::hint::black_box(bytes.iter().step_by(4096).map(|&b| b as u64).sum::<u64>());
        pages += bytes.len().div_ceil(4096);
    });
    let failure = result.expect_err("a truncated file must fail");
    assert_eq!(failure.kind, FailureKind::ChangedWhileReading, "{failure}");
    // Every page of the first window was read (past the new end: zero pages), no signal.
    assert_eq!(pages, (32 << 20) / 4096);
}

#[test]
fn growth_and_in_place_changes_between_windows_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let path = big_file(tmp.path(), 40 << 20);
    for use_mmap in [true, false] {
        let file = File::open(&path).unwrap();
        let meta = file.metadata().unwrap();
        let mut calls = 0;
        let result = source::feed_file(&file, &meta, use_mmap, &mut |_| {
            calls += 1;
            if calls == 1 {
                let mut f = OpenOptions::new().append(true).open(&path).unwrap();
                f.write_all(b"appended").unwrap();
            }
        });
        assert_eq!(result.unwrap_err().kind, FailureKind::ChangedWhileReading, "mmap {use_mmap}");
        fs::write(&path, &fs::read(&path).unwrap()[..40 << 20]).unwrap();
    }
}

#[test]
fn the_binary_survives_a_concurrent_truncation() {
    // End to end: truncate while the binary hashes; whatever the timing, it must end with a
    // record (a code if it finished first, else changed_while_reading) and no signal.
    let tmp = tempfile::tempdir().unwrap();
    let path = big_file(tmp.path(), 256 << 20);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_omero-iscc"))
        .args(["sum", "--json", "--threads", "1"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(30));
    OpenOptions::new().write(true).open(&path).unwrap().set_len(1 << 20).unwrap();
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().expect("exited normally, not by a signal");
    let record: Line = serde_json::from_slice(&out.stdout).unwrap();
    let Line::File(record) = record else { panic!("not a file's record: {record:?}") };
    match code {
        0 => assert!(record.iscc.is_some()),
        1 => assert_eq!(record.error.map(|e| e.kind), Some(FailureKind::ChangedWhileReading)),
        other => panic!("unexpected status {other}"),
    }
}
