//! Reads stay beneath their roots (`--root`, `--allow-root`), also while files and
//! directories in a root are swapped for symbolic links during the run: a record carries the
//! code of a file inside a root or an error, never the code of a file outside every root.

mod common;
use common::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn error_kind(record: &Value) -> &str {
    record["error"]["kind"].as_str().unwrap_or("<no error>")
}

/// A layout of an OMERO host: the repository (`--root`), an instrument share (an
/// `--allow-root` that in-place imports link into), and what lies outside both.
struct Host {
    _tmp: tempfile::TempDir,
    repo: PathBuf,
    share: PathBuf,
    outside: PathBuf,
}

fn host() -> Host {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, share, outside) =
        (tmp.path().join("repo"), tmp.path().join("share"), tmp.path().join("outside"));
    for d in [&repo, &share, &outside] {
        fs::create_dir_all(d).unwrap();
    }
    Host { _tmp: tmp, repo, share, outside }
}

/// The code `sum --json` gives a file (run without a root).
fn code_of(path: &Path) -> String {
    let out = run_in(path.parent().unwrap(), &["sum", "--json", path.to_str().unwrap()], b"");
    json_lines(&out)[0]["iscc"].as_str().unwrap().to_string()
}

/// Swaps `at` between a regular file holding `inside` (or a real directory holding such a
/// file `f`, for `dir`) and a symbolic link to `target`, by renames, until it is killed. A
/// process of its own, so that its renames land anywhere in the worker's run.
struct Swapper(std::process::Child);

impl Drop for Swapper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn swapper(at: PathBuf, target: PathBuf, inside: Vec<u8>, dir: bool) -> Swapper {
    let parent = at.parent().unwrap().to_path_buf();
    fs::write(parent.join(".inside"), inside).unwrap();
    let script = r#"
import os, shutil, sys
at, target, is_dir = sys.argv[1], sys.argv[2], sys.argv[3] == "dir"
parent = os.path.dirname(at)
n = 0
while True:
    staged = os.path.join(parent, ".staged%d" % n)
    if n % 2 == 0:
        if is_dir:
            os.mkdir(staged)
            shutil.copyfile(os.path.join(parent, ".inside"), os.path.join(staged, "f"))
        else:
            shutil.copyfile(os.path.join(parent, ".inside"), staged)
    else:
        os.symlink(target, staged)
    if is_dir:
        # rename() puts no directory over a link, nor anything over a directory with files.
        old = os.path.join(parent, ".old%d" % n)
        os.rename(at, old)
        os.rename(staged, at)
        if os.path.islink(old):
            os.unlink(old)
        else:
            shutil.rmtree(old)
    else:
        os.rename(staged, at)
    n += 1
"#;
    let child = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&at)
        .arg(&target)
        .arg(if dir { "dir" } else { "file" })
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    Swapper(child)
}

/// Runs `args` (with `--groups -` fed `groups`) at least `rounds` times, and on until a code
/// and an `outside_root` refusal were both seen (or 60 s passed: on a loaded machine the
/// swapper may wait long for a core); returns every record.
fn race(dir: &Path, args: &[&str], groups: &str, rounds: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for round in 0.. {
        let out = run_in(dir, args, groups.as_bytes());
        all.extend(json_lines(&out));
        let seen = outcomes(&all);
        let both = seen.iter().any(|(c, _)| c.is_some()) && seen.iter().any(|(_, k)| k == "outside_root");
        if (round + 1 >= rounds && both) || Instant::now() > deadline {
            break;
        }
    }
    all
}

/// Every record and every file record in `records`: (its code, its error kind).
fn outcomes(records: &[Value]) -> Vec<(Option<String>, String)> {
    let mut all = Vec::new();
    for r in records {
        all.push((r["iscc"].as_str().map(str::to_string), error_kind(r).to_string()));
        for f in r["files"].as_array().into_iter().flatten() {
            all.push((f["iscc"].as_str().map(str::to_string), error_kind(f).to_string()));
        }
    }
    all
}

// Issue 29, item 3: a file of the repository swapped for a link to a file outside every root
// while the worker runs gives an error record, never the outside file's code.
#[test]
fn a_file_swapped_for_a_link_during_the_run_never_gives_the_outside_code() {
    let h = host();
    let secret = h.outside.join("config.json");
    fs::write(&secret, pseudo_random(4000, 99)).unwrap();
    let inside = pseudo_random(4000, 1);
    let secret_code = code_of(&secret);
    fs::write(h.repo.join("img.tif"), &inside).unwrap();
    let inside_code = code_of(&h.repo.join("img.tif"));
    let swap = swapper(h.repo.join("img.tif"), secret.clone(), inside.clone(), false);
    let line = "{\"id\": \"g\", \"files\": [\"img.tif\"]}\n".repeat(400);
    let root = h.repo.to_str().unwrap();
    let records = race(&h.repo, &["sum", "--json", "--root", root, "--groups", "-"], &line, 8);
    drop(swap);
    let seen = outcomes(&records);
    assert!(
        seen.iter().all(|(code, _)| code.as_deref() != Some(secret_code.as_str())),
        "the outside file's code"
    );
    let codes = seen.iter().filter(|(c, _)| c.as_deref() == Some(inside_code.as_str())).count();
    let refused = seen.iter().filter(|(_, k)| k == "outside_root").count();
    let other: Vec<_> =
        seen.iter().filter(|(c, k)| c.is_none() && k != "outside_root" && k != "not_found").collect();
    assert!(other.is_empty(), "{other:?}");
    assert!(codes > 0 && refused > 0, "{codes} codes, {refused} refusals: the race did not run");
}

// The same for a directory on the path (`d/f` with `d` swapped for a link to a directory
// outside), and for a file of an allowed root (the instrument share).
#[test]
fn directories_and_allowed_roots_are_raced_the_same_way() {
    let h = host();
    fs::create_dir(h.outside.join("d")).unwrap();
    let secret = pseudo_random(3000, 77);
    fs::write(h.outside.join("d/f"), &secret).unwrap();
    fs::write(h.outside.join("scan.czi"), &secret).unwrap();
    let secret_code = code_of(&h.outside.join("d/f"));
    let inside = pseudo_random(3000, 2);
    fs::create_dir(h.repo.join("d")).unwrap();
    fs::write(h.repo.join("d/f"), &inside).unwrap();
    fs::write(h.share.join("scan.czi"), &inside).unwrap();
    symlink(h.share.join("scan.czi"), h.repo.join("scan.czi")).unwrap();
    let swaps = [
        swapper(h.repo.join("d"), h.outside.join("d"), inside.clone(), true),
        swapper(h.share.join("scan.czi"), h.outside.join("scan.czi"), inside.clone(), false),
    ];
    let line =
        "{\"id\": \"g\", \"files\": [\"d/f\", \"scan.czi\"]}\n{\"id\": \"h\", \"files\": [\"scan.czi\"]}\n";
    let (root, share) = (h.repo.to_str().unwrap(), h.share.to_str().unwrap());
    let args = ["sum", "--json", "--root", root, "--allow-root", share, "--groups", "-"];
    let records = race(&h.repo, &args, &line.repeat(200), 8);
    drop(swaps);
    let seen = outcomes(&records);
    assert!(
        seen.iter().all(|(code, _)| code.as_deref() != Some(secret_code.as_str())),
        "the outside file's code"
    );
    assert!(seen.iter().any(|(c, _)| c.is_some()), "no code at all");
    assert!(seen.iter().any(|(_, k)| k == "outside_root"), "the race did not run");
}

// A directory walked under `--root` that is swapped for a link during the walk: no name and no
// code from outside the root.
#[test]
fn a_walk_under_the_root_never_lists_outside() {
    let h = host();
    fs::create_dir_all(h.outside.join("d")).unwrap();
    fs::write(h.outside.join("d/outside-name.tif"), pseudo_random(500, 5)).unwrap();
    let tree = h.repo.join("tree");
    for i in 0..30 {
        fs::create_dir_all(tree.join(format!("s{i:02}"))).unwrap();
        fs::write(tree.join(format!("s{i:02}/f")), pseudo_random(500, i)).unwrap();
    }
    // Walked last: the swap has the whole walk of the others to land in.
    fs::create_dir(tree.join("zz")).unwrap();
    fs::write(tree.join("zz/f"), b"inside").unwrap();
    let swap = swapper(tree.join("zz"), h.outside.join("d"), b"inside".to_vec(), true);
    let root = h.repo.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut runs = 0;
    let mut refused = 0;
    while (runs < 40 || refused < 3) && Instant::now() < deadline {
        let out = run_in(&h.repo, &["sum", "--json", "--root", root, "tree"], b"");
        assert!(!stdout(&out).contains("outside-name"), "{}", stdout(&out));
        refused += json_lines(&out).iter().filter(|r| error_kind(r) == "outside_root").count();
        runs += 1;
    }
    drop(swap);
    assert!(refused > 0, "{runs} walks, no refusal: the race did not run");
}

// In-place imports: a link into an allowed root is followed, and the file is opened beneath
// that root; a link that leads out of every root (also through the allowed root) is refused.
#[test]
fn links_into_an_allowed_root_are_followed_and_links_out_of_it_refused() {
    let h = host();
    fs::create_dir(h.share.join("sub")).unwrap();
    fs::write(h.share.join("scan.czi"), pseudo_random(5000, 3)).unwrap();
    fs::write(h.outside.join("secret"), pseudo_random(5000, 4)).unwrap();
    symlink(h.share.join("scan.czi"), h.repo.join("scan.czi")).unwrap();
    symlink(h.share.join("sub"), h.repo.join("sub")).unwrap();
    // Out of the share again: a link in the share, and a chain through it.
    symlink(h.outside.join("secret"), h.share.join("sub/escape")).unwrap();
    symlink(h.share.join("sub/escape"), h.repo.join("chain")).unwrap();
    // The share's own `.isccignore` and trees are read beneath it too.
    fs::write(h.share.join("sub/kept.tif"), b"kept").unwrap();
    let (root, share) = (h.repo.to_str().unwrap(), h.share.to_str().unwrap());
    let out = run_in(
        &h.repo,
        &[
            "sum",
            "--json",
            "--root",
            root,
            "--allow-root",
            share,
            "scan.czi",
            "sub/escape",
            "chain",
            "sub/kept.tif",
        ],
        b"",
    );
    let records = json_lines(&out);
    let kinds: Vec<&str> = records.iter().map(error_kind).collect();
    assert_eq!(kinds, ["<no error>", "outside_root", "outside_root", "<no error>"]);
    assert_eq!(records[0]["iscc"].as_str().unwrap(), code_of(&h.share.join("scan.czi")));
}

// Under `--root`, an `.isccignore` that is a link out of the root is refused: its content (a
// file outside the root) never decides what is hashed.
#[test]
fn an_ignore_file_that_links_out_of_the_root_is_refused() {
    let h = host();
    fs::create_dir(h.repo.join("tree")).unwrap();
    fs::write(h.repo.join("tree/a.tif"), b"a").unwrap();
    fs::write(h.repo.join("tree/b.tif"), b"b").unwrap();
    fs::write(h.outside.join("patterns"), "a.tif\n").unwrap();
    symlink(h.outside.join("patterns"), h.repo.join("tree/.isccignore")).unwrap();
    let root = h.repo.to_str().unwrap();
    let out = run_in(&h.repo, &["sum", "--json", "--root", root, "--tree", "tree"], b"");
    let record = &json_lines(&out)[0];
    assert_eq!(error_kind(record), "outside_root", "{record}");
    // An ignore file that links inside the root is read, as iscc-sum reads it.
    fs::write(h.repo.join("patterns"), "a.tif\n").unwrap();
    fs::remove_file(h.repo.join("tree/.isccignore")).unwrap();
    symlink(h.repo.join("patterns"), h.repo.join("tree/.isccignore")).unwrap();
    let out = run_in(&h.repo, &["sum", "--json", "--root", root, "--tree", "tree"], b"");
    let record = &json_lines(&out)[0];
    assert_eq!(record["file_count"], 1, "{record}"); // b.tif: a link is never hashed itself
    let theirs = stdout(&iscc_sum(&h.repo, &["--narrow", "--tree", "tree"]));
    assert_eq!(theirs, format!("{} *tree/\n", record["iscc"].as_str().unwrap()));
}

// The root itself can be walked and hashed as a tree under `--root`, with the codes a run
// without a root gives.
#[test]
fn the_root_itself_is_walked_beneath_itself() {
    let h = host();
    fs::create_dir(h.repo.join("sub")).unwrap();
    fs::write(h.repo.join("a.tif"), pseudo_random(3000, 1)).unwrap();
    fs::write(h.repo.join("sub/b.tif"), pseudo_random(3000, 2)).unwrap();
    let root = h.repo.to_str().unwrap();
    for args in [&["sum", "--json", "--tree", "."][..], &["sum", "--json", "."][..]] {
        let free = run_in(&h.repo, args, b"");
        let confined = run_in(&h.repo, &[args, &["--root", root]].concat(), b"");
        assert_eq!(confined.status.code(), Some(0), "{args:?}: {}", stdout(&confined));
        assert_eq!(stdout(&confined), stdout(&free), "{args:?}");
    }
}
