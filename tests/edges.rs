//! The worker at its edges: frames that are almost right, names iscc-sum and the worker write
//! differently, names that are not UTF-8 in every place a path is read, and standard streams
//! that are closed or claimed twice. Each test guards one case that once went wrong.

mod common;
use common::*;
use omero_iscc::records::PixelLine;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn pixel_records(out: &std::process::Output) -> Vec<PixelLine> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a pixel record ({e}): {l}")))
        .collect()
}

fn message(line: &PixelLine) -> String {
    line.error.as_ref().map(|e| e.message.clone()).unwrap_or_default()
}

/// A complete image of one plane: `{"image": id, ...}`, its bytes, its end frame.
fn good_image(id: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{{\"image\": {id}, \"planes\": 1, \"plane_bytes\": {}}}\n{{\"bytes\": {}}}\n",
        bytes.len(),
        bytes.len()
    )
    .into_bytes();
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"{\"end\": true}\n");
    out
}

// Issue 26, item 1: a bad image frame while another image is open is that frame's own record,
// and the open image is told that the next image began.
#[test]
fn a_bad_image_frame_gets_its_own_record_and_the_open_image_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let bad_frames: [(&str, &str); 4] = [
        (r#"{"image": 7, "planes": 0, "plane_bytes": 2}"#, "at least one plane"),
        (r#"{"image": [7], "planes": 1, "plane_bytes": 2}"#, "a number or a string"),
        (r#"{"image": 7, "planes": 18446744073709551616, "plane_bytes": 2}"#, "planes"),
        (r#"{"image": 7, "planes": 4294967296, "plane_bytes": 4294967296}"#, "overflow"),
    ];
    for (bad, why) in bad_frames {
        let mut input = b"{\"image\": 1, \"planes\": 1, \"plane_bytes\": 2}\n{\"bytes\": 2}\nab".to_vec();
        input.extend_from_slice(bad.as_bytes());
        input.extend_from_slice(b"\n{\"bytes\": 2}\ncd{\"end\": true}\n");
        input.extend(good_image("8", b"xyz"));
        let out = run_in(dir.path(), &["pixels"], &input);
        let got = pixel_records(&out);
        let ids: Vec<String> = got.iter().map(|r| r.image.to_string()).collect();
        let bad_id = serde_json::from_str::<serde_json::Value>(bad).unwrap()["image"].to_string();
        assert_eq!(ids, ["1".to_string(), bad_id, "8".to_string()], "{bad}");
        assert_eq!(
            message(&got[0]),
            "the next image began before this one's end frame: 1 of 1 planes (2 of 2 bytes)",
            "{bad}"
        );
        assert!(message(&got[1]).contains(why), "{bad}: {}", message(&got[1]));
        assert!(got[2].iscc.is_some() && got[2].error.is_none(), "{bad}");
        assert_eq!(out.status.code(), Some(1));
    }
}

// Issue 26, item 2: stray pixel bytes are one record per frame, whatever the frame's size.
#[test]
fn bytes_outside_an_image_are_one_record_per_frame() {
    let dir = tempfile::tempdir().unwrap();
    let big = 9 << 20; // more than two of the reader's pieces
    let mut input = b"{\"image\": 1, \"planes\": 1, \"plane_bytes\": 4}\n{\"abort\": \"gone\"}\n".to_vec();
    input.extend_from_slice(format!("{{\"bytes\": {big}}}\n").as_bytes());
    input.resize(input.len() + big, 0);
    input.extend_from_slice(b"{\"bytes\": 3}\nabc");
    input.extend(good_image("2", b"pixels"));
    let out = run_in(dir.path(), &["pixels"], &input);
    let got = pixel_records(&out);
    let summary: Vec<(String, String)> = got.iter().map(|r| (r.image.to_string(), message(r))).collect();
    assert_eq!(
        summary,
        [
            ("1".into(), "the producer gave the image up: gone".into()),
            ("null".into(), "pixel bytes outside an image".into()),
            ("null".into(), "pixel bytes outside an image".into()),
            ("2".into(), String::new()),
        ]
    );
}

// Issue 26, item 3: every frame is read with its exact keys; an unknown key is no frame.
#[test]
fn frames_with_unknown_keys_are_not_frames() {
    let dir = tempfile::tempdir().unwrap();
    for (frame_at_end, why) in [
        (&b"{\"end\": true, \"bytes\": 1}\n"[..], "end"),
        (&b"{\"end\": true, \"extra\": 1}\n"[..], "extra"),
        (&b"{\"abort\": \"why\", \"end\": true}\n"[..], "abort"),
    ] {
        let mut input = b"{\"image\": 1, \"planes\": 1, \"plane_bytes\": 2}\n{\"bytes\": 2}\nab".to_vec();
        input.extend_from_slice(frame_at_end);
        let out = run_in(dir.path(), &["pixels"], &input);
        let got = pixel_records(&out);
        assert_eq!(got.len(), 1, "{why}: {got:?}");
        assert!(got[0].iscc.is_none(), "{why}: an image whose end frame is not one has no code");
        assert!(message(&got[0]).starts_with("not a frame: "), "{why}: {}", message(&got[0]));
    }
    // A bytes frame with an extra key is garbage too, not a bytes frame that drops the key.
    let mut input =
        b"{\"image\": 1, \"planes\": 1, \"plane_bytes\": 1}\n{\"bytes\": 1, \"end\": true}\n\n".to_vec();
    input.extend(good_image("2", b"q"));
    let got = pixel_records(&run_in(dir.path(), &["pixels"], &input));
    let ids: Vec<String> = got.iter().map(|r| r.image.to_string()).collect();
    assert_eq!(ids, ["1", "2"]);
    assert!(message(&got[0]).starts_with("not a frame: "), "{}", message(&got[0]));
    assert!(got[1].iscc.is_some());
}

// Issue 26, item 6: a `--groups` line names a file whose name is not UTF-8 with the escapes
// the records use, and the name comes back byte for byte.
#[test]
fn group_lines_read_names_that_are_not_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9\xff.tif");
    fs::write(d.join(name), b"bytes of a file").unwrap();
    fs::write(d.join("plain.tif"), b"bytes of a file").unwrap();
    let line = "{\"id\": \"g\", \"files\": [\"caf\\udce9\\udcff.tif\", \"plain.tif\"]}\n";
    let out = run_in(d, &["sum", "--json", "--root", ".", "--groups", "-"], line.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains(r#""path":"caf\udce9\udcff.tif""#), "{text}");
    let record = &json_lines(&out)[0];
    assert_eq!(record["files"][0]["iscc"], record["files"][1]["iscc"]);
    // The same escapes in a `{"path", "size"}` entry.
    let line = "{\"id\": \"g\", \"files\": [{\"path\": \"caf\\udce9\\udcff.tif\", \"size\": 15}]}\n";
    let out = run_in(d, &["sum", "--json", "--root", ".", "--groups", "-"], line.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // What is not a name that surrogateescape writes is refused, with the line's number.
    let line = "{\"id\": \"g\", \"files\": [\"a\\udc41\"]}\n";
    let out = run_in(d, &["sum", "--json", "--groups", "-"], line.as_bytes());
    let record = &json_lines(&out)[0];
    assert_eq!(record["error"]["kind"], "invalid_input", "{record}");
    assert_eq!(record["line"], 1);
}

// Issue 26, item 6: one codec, exact for every name: a name holding the characters the codec
// once used as placeholders reads back as itself, in `check` and `similar` alike.
#[test]
fn every_name_round_trips_through_the_records() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let names: [&[u8]; 3] =
        ["private-\u{10FF80}-\u{10FFFF}".as_bytes(), b"raw-\x80\xfe", "\u{1F600} \\ \"".as_bytes()];
    for (i, name) in names.iter().enumerate() {
        fs::write(d.join(std::ffi::OsStr::from_bytes(name)), pseudo_random(3000, i as u64)).unwrap();
    }
    let args: Vec<&str> = vec!["sum", "--json"];
    let mut cmd = bin();
    cmd.args(&args).current_dir(d);
    for name in &names {
        cmd.arg(std::ffi::OsStr::from_bytes(name));
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    fs::write(d.join("records.jsonl"), &out.stdout).unwrap();
    let check = run_in(d, &["check", "records.jsonl"], b"");
    assert_eq!(check.status.code(), Some(0), "{}{}", stdout(&check), stderr(&check));
    let lines: Vec<&[u8]> = check.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    for (line, name) in lines.iter().zip(names) {
        assert_eq!(*line, [name, b": OK"].concat().as_slice());
    }
    // `similar` names each member as its record did.
    fs::write(d.join("twice.jsonl"), [&out.stdout[..], &out.stdout[..]].concat()).unwrap();
    let similar = run_in(d, &["similar", "--json", "--exact", "twice.jsonl"], b"");
    let mut named: Vec<Vec<u8>> = Vec::new();
    for line in stdout(&similar).lines() {
        let group: omero_iscc::commands::similar::GroupLine = serde_json::from_str(line).unwrap();
        assert_eq!(group.members.len(), 2, "{line}");
        for member in group.members {
            named.push(member.path.expect("named by path").0);
        }
    }
    let mut want: Vec<Vec<u8>> = names.iter().flat_map(|n| [n.to_vec(), n.to_vec()]).collect();
    named.sort();
    want.sort();
    assert_eq!(named, want);
    let raw = String::from_utf8_lossy(&similar.stdout);
    assert!(raw.contains(r#""raw-\udc80\udcfe""#), "{raw}");
}

// Issue 26, item 7: a standard output closed when the worker starts is noticed: nothing can be
// written, so the run is incomplete (status 3), not a silent success.
#[test]
fn a_standard_output_closed_at_start_is_status_3() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("f"), b"some bytes").unwrap();
    let exe = env!("CARGO_BIN_EXE_omero-iscc");
    for args in [&["sum", "f"][..], &["sum", "--json", "f"][..], &["selftest"][..]] {
        let out = Command::new("sh")
            .arg("-c")
            .arg("exec \"$@\" >&-")
            .arg("sh")
            .arg(exe)
            .args(args)
            .current_dir(tmp.path())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert_eq!(stderr(&out), "omero-iscc: standard output is closed: no record can be written\n");
    }
    // Standard output on /dev/null, opened by the caller, is not closed: the run succeeds.
    let out = bin().args(["sum", "f"]).current_dir(tmp.path()).stdout(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

// Issue 26, item 8: a second claim on standard input names both claimants.
#[test]
fn standard_input_claimed_twice_names_both_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a"), b"").unwrap();
    for (args, message) in [
        (&["sum", "-", "x", "-"][..], "standard input ('-') can be used only once (by PATH 1 and by PATH 3)"),
        (
            &["sum", "--files-from", "-", "a", "-"][..],
            "standard input ('-') can be used only once (by PATH 2 and by --files-from)",
        ),
        (
            &["check", "a", "-", "-"][..],
            "standard input ('-') can be used only once (by FILE 2 and by FILE 3)",
        ),
    ] {
        let out = run_in(tmp.path(), args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(stderr(&out), format!("omero-iscc: {message}\n"), "{args:?}");
    }
}

/// Runs iscc-sum, whatever its status.
fn iscc_sum_any(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(python()).arg("-m").arg("iscc_sum").args(args).current_dir(dir).output().unwrap()
}

// Issue 26, item 4: an `.isccignore` that exists but is no file (a directory, a link to one)
// stops iscc-sum; it stops the tree here too, with an error record instead of a code.
#[test]
fn an_isccignore_that_is_no_file_is_refused_as_iscc_sum_refuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let make = |name: &str| {
        let tree = d.join(name);
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("data.tif"), pseudo_random(2000, 1)).unwrap();
        fs::write(tree.join("sub/more.tif"), pseudo_random(2000, 2)).unwrap();
        tree
    };
    fs::create_dir(make("as_dir").join(".isccignore")).unwrap();
    std::os::unix::fs::symlink("sub", make("link_to_dir").join(".isccignore")).unwrap();
    fs::create_dir(make("deeper").join("sub/.isccignore")).unwrap();
    // What iscc-sum reads as no ignore file, or as a file: the same codes.
    std::os::unix::fs::symlink("nowhere", make("dangling").join(".isccignore")).unwrap();
    fs::write(d.join("patterns"), "*.tif\n!data.tif\n").unwrap();
    std::os::unix::fs::symlink(d.join("patterns"), make("link_to_file").join(".isccignore")).unwrap();
    for name in ["as_dir", "link_to_dir", "deeper"] {
        let theirs = iscc_sum_any(d, &["--tree", name]);
        assert_eq!(theirs.status.code(), Some(2), "{name}: iscc-sum refuses");
        assert!(stderr(&theirs).contains("Is a directory"), "{name}: {}", stderr(&theirs));
        let ours = run_in(d, &["sum", "--json", "--tree", name], b"");
        assert_eq!(ours.status.code(), Some(1), "{name}: {}", stdout(&ours));
        let record = &json_lines(&ours)[0];
        assert!(record.get("iscc").is_none(), "{name}: {record}");
        assert_eq!(record["error"]["kind"], "not_a_file", "{name}: {record}");
        assert!(
            record["error"]["message"].as_str().unwrap().contains(".isccignore: Is a directory"),
            "{record}"
        );
        // Listing the directory fails the same way: iscc-sum lists nothing, the worker gives
        // the directory's error record.
        let ours = run_in(d, &["sum", "--json", name], b"");
        assert_eq!(ours.status.code(), Some(1), "{name}");
    }
    for name in ["dangling", "link_to_file"] {
        let theirs = stdout(&iscc_sum(d, &["--narrow", "--tree", name]));
        let ours = run_in(d, &["sum", "--tree", name], b"");
        assert_eq!(stdout(&ours), theirs, "{name}");
    }
}

// Issue 26, item 5: the names `sum` writes. A tree is named with one trailing slash, as
// iscc-sum names it; a name holding a backslash keeps it, where iscc-sum writes a slash that
// names another file (its own `-c` cannot find it), so both tools' `check` find the worker's.
#[test]
fn tree_names_end_in_one_slash_and_backslashes_stay() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::create_dir_all(d.join("dir/sub")).unwrap();
    fs::write(d.join("dir/back\\slash"), b"abc").unwrap();
    fs::write(d.join("dir/sub/f"), b"x").unwrap();
    for arg in ["dir//", "dir///", "./dir/"] {
        let theirs = stdout(&iscc_sum(d, &["--narrow", "--tree", arg]));
        let ours = stdout(&run_in(d, &["sum", "--tree", arg], b""));
        assert_eq!(ours, theirs, "{arg}");
    }
    let ours = run_in(d, &["sum", "--wide", "dir"], b"");
    assert!(stdout(&ours).contains(" *dir/back\\slash\n"), "{}", stdout(&ours));
    fs::write(d.join("ours.txt"), &ours.stdout).unwrap();
    let theirs_check = iscc_sum_any(d, &["-c", "ours.txt"]);
    assert_eq!(theirs_check.status.code(), Some(0), "{}", stdout(&theirs_check));
    let ours_check = run_in(d, &["check", "ours.txt"], b"");
    assert_eq!(ours_check.status.code(), Some(0));
    // iscc-sum's own line for it names `dir/back/slash`, which neither tool finds.
    let theirs = stdout(&iscc_sum(d, &["dir"]));
    assert!(theirs.contains(" *dir/back/slash\n"), "{theirs}");
}
