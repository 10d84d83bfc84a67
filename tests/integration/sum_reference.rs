//! Exactness: every code, unit, datahash, filesize and checksum the binary prints equals
//! what the reference implementations (iscc-sum 0.1.0, iscc-core 1.5.0, hashlib/zlib)
//! compute for the same bytes, on every optimised path (threads, mmap or read).

use crate::harness::*;
use omero_iscc::engine::failure::FailureKind;
use omero_iscc::records::sum::{GroupLine, Line};
use std::fs;
use std::path::Path;

const MIB: usize = 1 << 20;
/// The binary's mmap window (src/engine/source.rs).
const WINDOW: usize = omero_iscc::engine::source::WINDOW as usize;

/// Writes the synthetic inputs: the listed small sizes in random, zero and periodic data,
/// and files larger than one window, some with a chunk boundary exactly on a window edge.
fn synthetic(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut put = |name: String, data: &[u8]| {
        fs::write(dir.join(&name), data).unwrap();
        names.push(name);
    };
    for size in [0usize, 1, 255, 256, 257, 1023, 1024, 8191, 8192, 8193] {
        put(format!("random-{size}"), &pseudo_random(size, size as u64 + 1));
        put(format!("zero-{size}"), &vec![0u8; size]);
        put(format!("periodic-{size}"), &(0..size).map(|i| (i % 7) as u8).collect::<Vec<_>>());
    }
    put("random-3m".into(), &pseudo_random(3 * MIB + 17, 99));
    // All zeros: chunks of the zero period tile the file, one ends on every window edge.
    put("zero-70m".into(), &vec![0u8; 2 * WINDOW + 5 * MIB]);
    // Random data shifted by a zero prefix so that a true chunk boundary falls exactly on the
    // first window edge (verified against iscc-lib's chunker below).
    let random = pseudo_random(WINDOW + 9 * MIB, 7);
    let chunks = iscc_lib::alg_cdc_chunks(&random, false, 1024).unwrap();
    let mut end = 0;
    let mut before_edge = 0;
    for c in &chunks {
        end += c.len();
        if end < WINDOW - MIB {
            before_edge = end;
        }
    }
    let mut edged = vec![0u8; WINDOW - MIB - before_edge];
    edged.extend_from_slice(&random);
    let cuts: Vec<usize> = iscc_lib::alg_cdc_chunks(&edged, false, 1024)
        .unwrap()
        .iter()
        .scan(0, |e, c| {
            *e += c.len();
            Some(*e)
        })
        .collect();
    assert!(cuts.contains(&(WINDOW - MIB)), "test data: no cut at the planted position");
    put("edge-41m".into(), &edged);
    // Random, zero and periodic regions across window edges.
    let mut mixed = pseudo_random(2 * WINDOW + 3 * MIB, 11);
    mixed[WINDOW - 3 * MIB..WINDOW + 2 * MIB].fill(0);
    for (i, b) in mixed[2 * WINDOW - MIB..2 * WINDOW + MIB].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    put("mixed-67m".into(), &mixed);
    names
}

fn iscc_sum_lines(dir: &Path, names: &[String], wide: bool) -> String {
    let mut args: Vec<&str> = if wide { vec!["--units"] } else { vec!["--narrow", "--units"] };
    args.extend(names.iter().map(String::as_str));
    stdout(&iscc_sum(dir, &args))
}

#[test]
fn text_output_equals_iscc_sum_on_every_path() {
    let tmp = tempfile::tempdir().unwrap();
    let names = synthetic(tmp.path());
    let narrow = iscc_sum_lines(tmp.path(), &names, false);
    let wide = iscc_sum_lines(tmp.path(), &names, true);
    for extra in [&[][..], &["--threads", "1"][..], &["--no-mmap"][..], &["--threads", "3", "--no-mmap"][..]]
    {
        let mut args = vec!["sum", "--units"];
        args.extend_from_slice(extra);
        args.extend(names.iter().map(String::as_str));
        let out = run_in(tmp.path(), &args, b"");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), narrow, "narrow codes with {extra:?}");
        args.push("--wide");
        let out = run_in(tmp.path(), &args, b"");
        assert_eq!(stdout(&out), wide, "wide codes with {extra:?}");
    }
}

#[test]
fn json_records_equal_iscc_core_and_omero_checksums() {
    let tmp = tempfile::tempdir().unwrap();
    let names: Vec<String> = synthetic(tmp.path()).into_iter().filter(|n| !n.ends_with('m')).collect();
    let reference = iscc_core(tmp.path(), &names);
    let mut args = vec!["sum", "--json", "--units"];
    for alg in ["SHA1-160", "MD5-128", "CRC-32", "Adler-32", "File-Size-64"] {
        args.extend(["--checksum", alg]);
    }
    args.extend(names.iter().map(String::as_str));
    let out = run_in(tmp.path(), &args, b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records = sum_lines(&out);
    assert_eq!(records.len(), names.len());
    for (record, want) in records.iter().zip(&reference) {
        // The whole record, built from the reference's values.
        let expected = serde_json::json!({
            "path": want["arg"],
            "iscc": want["narrow"],
            "units": want["units"],
            "datahash": want["datahash"],
            "filesize": want["filesize"],
            "checksums": want["checksums"],
        });
        let expected: Line = serde_json::from_str(&expected.to_string()).unwrap();
        // A JSON object's keys have no order: the checksums are compared as a set.
        let by_key = |line: &Line| {
            let mut file = file_record(line).clone();
            file.checksums.iter_mut().for_each(|c| c.0.sort());
            file
        };
        assert_eq!(by_key(record), by_key(&expected), "{}", want["arg"]);
    }
}

#[test]
fn standard_input_equals_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = pseudo_random(5 * MIB + 3, 5);
    fs::write(tmp.path().join("f"), &data).unwrap();
    let want = stdout(&iscc_sum(tmp.path(), &["--narrow", "f"]));
    let out = run_in(tmp.path(), &["sum", "-"], &data);
    assert_eq!(stdout(&out), want.replace("*f", "*-"));
    let empty = run_in(tmp.path(), &["sum", "--json"], b"");
    let record = file_record(&sum_lines(&empty)[0]).clone();
    assert_eq!(record.path.as_bytes(), b"-");
    assert_eq!(record.iscc.as_deref(), iscc_core(tmp.path(), &["/dev/null"])[0]["narrow"].as_str());
}

#[test]
fn real_microscopy_files_and_directory_walks_equal_iscc_sum() {
    let samples = samples();
    for dir in ["ome-tiff", "dicomdirtests"] {
        let want = stdout(&iscc_sum(&samples, &["--narrow", dir]));
        let out = run_in(&samples, &["sum", dir], b"");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), want, "walk of {dir}");
        let want_tree = stdout(&iscc_sum(&samples, &["--narrow", "--tree", dir]));
        let tree = run_in(&samples, &["sum", "--tree", dir], b"");
        assert_eq!(stdout(&tree), want_tree, "tree of {dir}");
        let want_wide = stdout(&iscc_sum(&samples, &["--tree", dir]));
        let tree = run_in(&samples, &["sum", "--tree", "--wide", dir], b"");
        assert_eq!(stdout(&tree), want_wide, "wide tree of {dir}");
    }
}

#[test]
fn walk_order_and_isccignore_match_iscc_sum() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("t");
    let files = [
        "b.tif",
        "a.tif",
        "B.tif",
        "Z/x.log",
        "Z/keep.log",
        "a/é.tif",
        "a/e\u{301}x.tif",
        "a/sub/deep.raw",
        ".gitignore",
        "c.iscc.json",
        "build/out.bin",
        "docs/n/x.tmp",
        "10.tif",
        "9.tif",
    ];
    for (i, f) in files.iter().enumerate() {
        let p = root.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, pseudo_random(100 + i * 37, i as u64)).unwrap();
    }
    fs::write(root.join(".isccignore"), "*.log\n!keep.log\n/build\ndocs/**/*.tmp\n").unwrap();
    fs::write(root.join("a/.isccignore"), "sub/\n").unwrap();
    std::os::unix::fs::symlink(root.join("b.tif"), root.join("link.tif")).unwrap();
    let want = stdout(&iscc_sum(tmp.path(), &["--narrow", "t"]));
    let out = run_in(tmp.path(), &["sum", "t"], b"");
    assert_eq!(stdout(&out), want);
    let want = stdout(&iscc_sum(tmp.path(), &["--narrow", "--tree", "t"]));
    assert_eq!(stdout(&run_in(tmp.path(), &["sum", "--tree", "t"], b"")), want);
}

#[test]
fn group_codes_equal_the_concatenated_files() {
    let samples = samples();
    let tiffs: Vec<String> = ["neocortex-3Ch.tiff", "neuron-4Ch.tiff", "scratch-assay-labeled-10T-2Ch.tiff"]
        .iter()
        .map(|n| format!("ome-tiff/{n}"))
        .collect();
    let dicom =
        ["dicomdirtests/DICOMDIR", "dicomdirtests/77654033/CR1/6154", "dicomdirtests/77654033/CT2/17106"];
    let groups = format!(
        "{}\n{}\n{}\n",
        serde_json::json!({"id": "fileset:1", "files": tiffs}),
        serde_json::json!({"id": "fileset:2", "files": dicom}),
        serde_json::json!({"id": "fileset:3", "files": [&tiffs[1]]}),
    );
    let root = samples.to_str().unwrap();
    let out = run_in(
        Path::new("/"),
        &["sum", "--json", "--root", root, "--groups", "-", "--units"],
        groups.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records: Vec<GroupLine> = sum_lines(&out).iter().map(|l| group_record(l).clone()).collect();
    let concat = |files: &[&str]| files.iter().map(|f| format!("{f}+")).collect::<String>();
    let t: Vec<&str> = tiffs.iter().map(String::as_str).collect();
    let reference = iscc_core(&samples, &[concat(&t), concat(&dicom), tiffs[1].clone()]);
    for (record, want) in records.iter().zip(&reference) {
        assert_eq!(record.iscc.as_deref(), want["narrow"].as_str());
        assert_eq!(record.datahash.as_deref(), want["datahash"].as_str());
        assert_eq!(record.units.as_ref().map(|u| serde_json::json!(u)).as_ref(), Some(&want["units"]));
    }
    let per_file = iscc_core(&samples, &t);
    for (file, want) in records[0].files.iter().zip(&per_file) {
        assert_eq!(Some(file.path.as_bytes()), want["arg"].as_str().map(str::as_bytes));
        assert_eq!(file.iscc.as_deref(), want["narrow"].as_str());
    }
    assert!(records[2].iscc.is_some());
    assert_eq!(records[2].files[0].iscc, records[2].iscc);
}

#[test]
fn sparse_files_with_holes_of_whole_windows_equal_iscc_sum() {
    use std::io::{Seek, SeekFrom, Write};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sparse.bin");
    let mut f = fs::File::create(&path).unwrap();
    // Data, a hole spanning whole windows, data across a window edge, a hole to the end.
    f.write_all(&pseudo_random(MIB + 3, 21)).unwrap();
    f.seek(SeekFrom::Start(3 * WINDOW as u64 - 5000)).unwrap();
    f.write_all(&pseudo_random(2 * MIB, 22)).unwrap();
    f.set_len(5 * WINDOW as u64 + 12345).unwrap();
    drop(f);
    let want = stdout(&iscc_sum(tmp.path(), &["--narrow", "--units", "sparse.bin"]));
    for extra in [&[][..], &["--no-mmap"][..], &["--threads", "1"][..]] {
        let mut args = vec!["sum", "--units", "sparse.bin"];
        args.extend_from_slice(extra);
        assert_eq!(stdout(&run_in(tmp.path(), &args, b"")), want, "{extra:?}");
    }
}

#[test]
fn groups_and_trees_of_small_empty_large_and_mixed_files_on_every_thread_count() {
    // Batches of small files go to the group's hasher as one buffer, large files window by
    // window: every kind of neighbour, across batch limits (16 MiB, 4096 files).
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("t");
    fs::create_dir(&d).unwrap();
    let mut names = Vec::new();
    for k in 0..4300u64 {
        let size = match k {
            7 | 4099 => 3 << 20,           // large: mapped, fed to both hashers
            11 | 12 | 4200 => 0,           // empty
            k if k % 97 == 0 => 700_000,   // small but big: a batch fills by bytes
            k => (k * 37 % 5000) as usize, // tiny
        };
        let name = format!("f{k:05}");
        fs::write(d.join(&name), pseudo_random(size, k)).unwrap();
        names.push(format!("t/{name}"));
    }
    let want_tree = stdout(&iscc_sum(tmp.path(), &["--narrow", "--tree", "t"]));
    let group = serde_json::json!({"id": "all", "files": names}).to_string() + "\n";
    let per_file = iscc_core(tmp.path(), &names[..300]);
    let mut group_code = None;
    for threads in ["1", "2", "3", "8"] {
        let out = run_in(tmp.path(), &["sum", "--tree", "--threads", threads, "t"], b"");
        assert_eq!(stdout(&out), want_tree, "--tree, {threads} threads");
        let out =
            run_in(tmp.path(), &["sum", "--json", "--threads", threads, "--groups", "-"], group.as_bytes());
        let record = group_record(&sum_lines(&out)[0]).clone();
        assert_eq!(record.files.len(), names.len());
        for (file, want) in record.files.iter().zip(&per_file) {
            assert_eq!(file.iscc.as_deref(), want["narrow"].as_str(), "{}, {threads} threads", want["arg"]);
        }
        // The group's code is the tree's (same files, same order: no ignore file here).
        assert_eq!(format!("{} *t/\n", record.iscc.as_deref().unwrap()), want_tree);
        assert!(group_code.get_or_insert(record.iscc.clone()) == &record.iscc);
    }
    // A failed file in the middle: the group fails naming it; every other file keeps its code.
    fs::remove_file(d.join("f02000")).unwrap();
    let out = run_in(tmp.path(), &["sum", "--json", "--groups", "-"], group.as_bytes());
    let record = group_record(&sum_lines(&out)[0]).clone();
    let error = record.error.as_ref().expect("the group failed");
    assert_eq!(error.kind, FailureKind::NotFound);
    assert!(error.message.starts_with("t/f02000: "), "{error:?}");
    let files = &record.files;
    assert_eq!(files[2000].error.as_ref().map(|e| e.kind), Some(FailureKind::NotFound));
    assert_eq!(files.iter().filter(|f| f.iscc.is_some()).count(), names.len() - 1);
}
