//! Bad input and edge cases: every one gives a clear error record (or a usage error), the
//! other records are still produced, and nothing panics.

mod common;
use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn error_kind(record: &Value) -> &str {
    record["error"]["kind"].as_str().unwrap_or("<no error>")
}

#[test]
fn empty_file_has_the_iso_code() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("empty"), b"").unwrap();
    let reference = iscc_core(tmp.path(), &["empty"]);
    let out = run_in(tmp.path(), &["sum", "empty"], b"");
    assert_eq!(stdout(&out), format!("{} *empty\n", reference[0]["narrow"].as_str().unwrap()));
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn failures_are_records_and_the_rest_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("good"), b"some bytes").unwrap();
    fs::create_dir(d.join("dir")).unwrap();
    let fifo = d.join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let list = "good\nmissing\ndir\nfifo\n/dev/null\ngood\n";
    fs::write(d.join("list"), list).unwrap();
    let out = run_in(d, &["sum", "--json", "--files-from", "list"], b"");
    assert_eq!(out.status.code(), Some(1));
    let records = json_lines(&out);
    let kinds: Vec<&str> = records.iter().map(error_kind).collect();
    assert_eq!(kinds, ["<no error>", "not_found", "not_a_file", "not_a_file", "not_a_file", "<no error>"]);
    assert!(records[3]["error"]["message"].as_str().unwrap().contains("FIFO"));
    // Text mode: codes on stdout, errors on stderr, same exit status.
    let out = run_in(d, &["sum", "good", "missing"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).ends_with(" *good\n"));
    assert_eq!(stderr(&out), "omero-iscc: missing: No such file or directory\n");
}

#[test]
fn nul_separated_lists() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a b\nc"), b"x").unwrap();
    let out = run_in(tmp.path(), &["sum", "--json", "--files-from", "-", "-0"], b"a b\nc\0");
    assert_eq!(json_lines(&out)[0]["path"], "a b\nc");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_root_confines_symlinks_and_dot_dot() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    fs::create_dir_all(root.join("user/2026")).unwrap();
    fs::write(root.join("user/2026/img.tif"), b"pixels").unwrap();
    fs::write(tmp.path().join("secret"), b"not yours").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("user/escape")).unwrap();
    std::os::unix::fs::symlink("2026/img.tif", root.join("user/inside")).unwrap();
    let groups = concat!(
        r#"{"id": "fileset:1", "files": ["user/2026/img.tif"]}"#,
        "\n",
        r#"{"id": "fileset:2", "files": ["user/escape"]}"#,
        "\n",
        "this is not json\n",
        r#"{"id": "fileset:3", "files": ["../secret"]}"#,
        "\n",
        r#"{"id": "fileset:4", "files": ["user/inside", "user/2026/../../../secret"]}"#,
        "\n",
        r#"{"id": "fileset:5", "files": []}"#,
        "\n",
    );
    let out = run_in(tmp.path(), &["sum", "--json", "--root", "repo", "--groups", "-"], groups.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let r = json_lines(&out);
    assert_eq!(r.len(), 6);
    assert!(r[0]["iscc"].is_string());
    assert_eq!(error_kind(&r[1]), "outside_root");
    assert_eq!(error_kind(&r[1]["files"][0]), "outside_root");
    assert_eq!((r[2]["line"].as_u64(), error_kind(&r[2])), (Some(3), "invalid_input"));
    assert_eq!(error_kind(&r[3]), "outside_root");
    // A group with one failed file has no code but keeps the good file's record.
    assert!(r[4].get("iscc").is_none());
    assert_eq!(error_kind(&r[4]), "outside_root");
    assert_eq!(r[4]["files"][0]["iscc"], r[0]["iscc"]);
    assert_eq!(error_kind(&r[5]), "invalid_input");
}

#[test]
fn non_utf8_names_are_escaped_and_hashed() {
    let tmp = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.tif");
    fs::write(tmp.path().join(name), b"bytes of a file").unwrap();
    fs::write(tmp.path().join("plain.tif"), b"bytes of a file").unwrap();
    let out = run_in(tmp.path(), &["sum", "--json", "."], b"");
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains(r#""path":"./caf\udce9.tif""#), "{text}");
    let codes: Vec<String> = text
        .lines()
        .map(|l| l.split("\"iscc\":").nth(1).unwrap().split('"').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(codes[0], codes[1]);
}

#[test]
fn unreadable_file_is_permission_denied() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("locked"), b"x").unwrap();
    fs::write(d.join("open"), b"y").unwrap();
    let mode = |p: &Path, m: u32| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    };
    mode(&d.join("locked"), 0o000);
    mode(&d.join("open"), 0o644);
    mode(d, 0o755);
    // Root reads everything: drop to an unprivileged user when running as root.
    let exe = env!("CARGO_BIN_EXE_omero-iscc");
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if is_root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", exe]);
        c
    } else {
        std::process::Command::new(exe)
    };
    // The unprivileged user must be able to reach the directory and run the binary.
    let mut p = d.to_path_buf();
    while let Some(parent) = p.parent() {
        if is_root {
            let _ = fs::metadata(&p).map(|m| {
                use std::os::unix::fs::PermissionsExt;
                let m = m.permissions().mode();
                mode(&p, m | 0o011);
            });
        }
        p = parent.to_path_buf();
    }
    let out = cmd.args(["sum", "--json", "locked", "open"]).current_dir(d).output().unwrap();
    let records: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(error_kind(&records[0]), "permission_denied", "{}", String::from_utf8_lossy(&out.stderr));
    assert!(records[1]["iscc"].is_string());
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2_with_their_exact_message() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, message) in [
        (&["sum", "--groups", "-"][..], "--groups writes JSON records: add --json"),
        (
            &["sum", "--checksum", "MD5-128", "x"][..],
            "--checksum values are written in JSON records only: add --json",
        ),
        (
            &["sum", "-", "--files-from", "-"][..],
            "standard input ('-') can be used only once (by PATH 1 and by --files-from)",
        ),
        (&["sum", "--tree", "-"][..], "--tree needs directories, not standard input"),
        (&["sum", "--root", "does-not-exist", "x"][..], "--root does-not-exist: No such file or directory"),
        (&["sum", "--files-from", "no-list"][..], "--files-from no-list: No such file or directory"),
        (&["check", "-", "-"][..], "standard input ('-') can be used only once (by FILE 1 and by FILE 2)"),
        (&["check", ""][..], "FILE: an empty path names no file"),
        (&["similar", "no-input"][..], "FILE no-input: No such file or directory"),
    ] {
        let out = run_in(tmp.path(), args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
        assert_eq!(stderr(&out), format!("omero-iscc: {message}\n"), "{args:?}");
    }
    // Refused by the argument parser (its own wording), also with status 2.
    for args in [
        &["sum", "--checksum", "SHA-256", "x"][..],
        &["sum", "--threads", "0", "x"][..],
        &["sum", "--threads", "70000", "x"][..],
        &["similar", "--threshold", "65"][..],
        &["similar", "--threshold", "4294967296"][..],
    ] {
        let out = run_in(tmp.path(), args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).starts_with("error: "), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn too_many_threads_are_capped_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("f"), pseudo_random(100, 1)).unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    let cap = (4 * cores).min(1024);
    let out = run_in(tmp.path(), &["sum", "--threads", "60000", "f"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out),
        format!("omero-iscc: --threads 60000 is more than 4 × the {cores} core(s) here; using {cap}\n")
    );
    assert!(stdout(&out).ends_with(" *f\n"));
}

#[test]
fn a_listed_dash_is_a_file_called_dash_and_only_the_command_line_dash_is_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("repo");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("-"), b"the file called dash").unwrap();
    fs::write(tmp.path().join("list"), "-\n").unwrap();
    let want = run_in(&root, &["sum", "--json", "--", "./-"], b"");
    let want = &json_lines(&want)[0]["iscc"];
    let root_arg = root.to_str().unwrap();
    let stdin = b"standard input, not the file";
    let out = run_in(tmp.path(), &["sum", "--json", "--root", root_arg, "--files-from", "list"], stdin);
    let r = json_lines(&out);
    assert_eq!((r.len(), &r[0]["path"], &r[0]["iscc"]), (1, &Value::from("-"), want));
    // Groups: the same (a group's file `-` is the file).
    let out = run_in(
        tmp.path(),
        &["sum", "--json", "--root", root_arg, "--groups", "-"],
        b"{\"id\":\"g\",\"files\":[\"-\"]}\n",
    );
    assert_eq!(&json_lines(&out)[0]["iscc"], want);
    // The command line's `-` is standard input.
    let out = run_in(tmp.path(), &["sum", "--json", "-"], stdin);
    assert_ne!(&json_lines(&out)[0]["iscc"], want);
}

#[test]
fn an_empty_path_is_an_error_not_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("f"), b"x").unwrap();
    let root = tmp.path().to_str().unwrap();
    for args in [
        &["sum", "--json", ""][..],
        &["sum", "--json", "--root", root, ""][..],
        &["sum", "--json", "--tree", ""][..],
    ] {
        let out = run_in(tmp.path(), args, b"");
        let r = json_lines(&out);
        assert_eq!(r.len(), 1, "{args:?}: {}", stdout(&out));
        assert_eq!(error_kind(&r[0]), "invalid_input", "{args:?}");
        assert_eq!(r[0]["error"]["message"], "an empty path names no file");
        assert_eq!(out.status.code(), Some(1));
    }
    let out = run_in(tmp.path(), &["sum", "--json", "--groups", "-"], b"{\"id\":\"g\",\"files\":[\"\"]}\n");
    assert_eq!(json_lines(&out)[0]["files"][0]["error"]["kind"], "invalid_input");
}

#[test]
fn generated_files_are_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_in(
        tmp.path(),
        &["sum", "--json", "/proc/self/status", "/sys/kernel/mm/transparent_hugepage/enabled"],
        b"",
    );
    for r in json_lines(&out) {
        if r["path"] == "/sys/kernel/mm/transparent_hugepage/enabled" && error_kind(&r) == "not_found" {
            continue; // not every kernel has it
        }
        assert_eq!(error_kind(&r), "not_a_file", "{r}");
        let message = r["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("a generated file (") && message.contains("standard input"), "{message}");
    }
    // As a stream it hashes what it gives now.
    let out = run_in(tmp.path(), &["sum", "-"], &fs::read("/proc/self/status").unwrap());
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn records_come_out_in_input_order_with_many_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for i in 0..300u64 {
        let name = format!("f{i}");
        // Sizes vary a lot so that workers finish out of order.
        fs::write(tmp.path().join(&name), pseudo_random(((i * 7919) % 300_000) as usize, i)).unwrap();
        names.push(name);
    }
    let mut args = vec!["sum", "--threads", "8"];
    args.extend(names.iter().map(String::as_str));
    let out = run_in(tmp.path(), &args, b"");
    let text = stdout(&out);
    let paths: Vec<&str> = text.lines().map(|l| l.split(" *").nth(1).unwrap()).collect();
    assert_eq!(paths, names);
}

#[test]
fn selftest_passes() {
    let out = bin().arg("selftest").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("selftest: all checks passed"));
    assert!(stdout(&out).lines().filter(|l| l.starts_with("ok ")).count() >= 12);
}

#[test]
fn progress_is_drawn_only_when_asked_on_a_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("f"), pseudo_random(3 << 20, 9)).unwrap();
    let quiet = run_in(tmp.path(), &["sum", "f"], b"");
    assert_eq!(stderr(&quiet), "", "auto: no bar on a pipe");
    let asked = run_in(tmp.path(), &["sum", "--progress", "always", "f"], b"");
    let err = stderr(&asked);
    assert!(err.contains("1/1 files, 3.00 MiB of 3.00 MiB"), "{err:?}");
    assert_eq!(stdout(&asked), stdout(&quiet));
    let never = run_in(tmp.path(), &["sum", "--progress", "never", "f"], b"");
    assert_eq!(stderr(&never), "");
}

#[test]
fn allowed_roots_let_in_place_imports_link_out_of_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, share, other) = (tmp.path().join("repo"), tmp.path().join("share"), tmp.path().join("other"));
    for d in [&repo, &share, &other] {
        fs::create_dir(d).unwrap();
    }
    fs::write(share.join("scan.czi"), pseudo_random(5000, 3)).unwrap();
    fs::write(other.join("secret"), b"not for hashing").unwrap();
    std::os::unix::fs::symlink(share.join("scan.czi"), repo.join("scan.czi")).unwrap();
    std::os::unix::fs::symlink(other.join("secret"), repo.join("secret")).unwrap();
    let (r, s) = (repo.to_str().unwrap(), share.to_str().unwrap());
    let out = run_in(tmp.path(), &["sum", "--json", "--root", r, "scan.czi", "secret"], b"");
    let kinds: Vec<String> = json_lines(&out).iter().map(|x| error_kind(x).to_string()).collect();
    assert_eq!(kinds, ["outside_root", "outside_root"]);
    let out =
        run_in(tmp.path(), &["sum", "--json", "--root", r, "--allow-root", s, "scan.czi", "secret"], b"");
    let records = json_lines(&out);
    let direct = run_in(&share, &["sum", "--json", "scan.czi"], b"");
    assert_eq!(records[0]["iscc"], json_lines(&direct)[0]["iscc"]);
    assert_eq!(error_kind(&records[1]), "outside_root", "only the allowed root is let in");
    // `..` out of the root stays refused, whatever is allowed.
    let out =
        run_in(tmp.path(), &["sum", "--json", "--root", r, "--allow-root", s, "../share/scan.czi"], b"");
    assert_eq!(error_kind(&json_lines(&out)[0]), "outside_root");
    let out = run_in(tmp.path(), &["sum", "--root", r, "--allow-root", "nowhere", "scan.czi"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out), "omero-iscc: --allow-root nowhere: No such file or directory\n");
}
