//! `.isccignore` parity, generated: random patterns (wildcards, `**`, classes and negated
//! classes, `!`, anchors, trailing `/`, escapes, odd white space and line ends) against random
//! paths with non-ASCII, NFC/NFD and odd names, compared with pathspec itself; random trees
//! with ignore files at several levels, their walks compared with iscc-sum's own walk and, for
//! some, `sum --tree` with `iscc-sum --tree`. Seeded: `OMERO_ISCC_SEED=N` reproduces a run.

use crate::harness::*;
use omero_iscc::engine::ignore::IgnoreSpec;
use omero_iscc::engine::walk;
use serde_json::{json, Value};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Names for files, directories and pattern literals.
const NAMES: &[&str] = &[
    "a",
    "b",
    "ab",
    "a.log",
    "b.log",
    "ä",
    "a\u{308}",
    "é.tif",
    "e\u{301}.tif",
    "x y",
    "[x]",
    "*",
    "?",
    "!k",
    "#h",
    "-",
    "]",
    "\\",
    "日本",
    "a\u{1c}",
    "ß",
    "k.TMP",
    ".hidden",
    "data.iscc.json",
    "Ab",
    "aa",
];
/// Pieces of a pattern segment.
const ATOMS: &[&str] = &[
    "a",
    "b",
    "ä",
    "a\u{308}",
    "é",
    "日",
    ".log",
    ".tif",
    "x y",
    "*",
    "*",
    "?",
    "?",
    "[abc]",
    "[!a]",
    "[^ä]",
    "[]a]",
    "[a-]",
    "[\\]",
    "[[:alpha:]]",
    "[a-c]",
    "[-a]",
    "[ä-ü]",
    "[\\-a]",
    "[!]]",
    "\\*",
    "\\?",
    "\\[",
    "\\ ",
    "\\!",
    "\\a",
    "k",
    ".",
    "-",
    "#",
];
/// Rare pieces: the pattern is dropped (unclosed class) or refused (reversed range, a
/// trailing escape), as iscc-sum refuses it.
const RARE: &[&str] = &["[ab", "[z-a]", "\\"];
const ENDS: &[&str] = &["", "", "", " ", "\t", "\u{a0}", "\u{1c}", "\\ ", "  "];
const BREAKS: &[&str] = &["\n", "\n", "\n", "\r\n", "\r"];

fn segment(rng: &mut Rng, rare: bool) -> String {
    if rng.chance(15) {
        return "**".into();
    }
    let mut s = String::new();
    for _ in 0..1 + rng.below(3) {
        s += if rare && rng.chance(4) { rng.pick(RARE) } else { rng.pick(ATOMS) };
    }
    s
}

fn pattern(rng: &mut Rng, rare: bool) -> String {
    if rng.chance(5) {
        return rng.pick(&["", "# comment", "/", "!", "**", "*/", "**/", "!*.log", "\\#h", "\\!k"]).into();
    }
    let segments: Vec<String> = (0..1 + rng.below(3)).map(|_| segment(rng, rare)).collect();
    let mut p = segments.join("/");
    if rng.chance(20) {
        p.insert(0, '/');
    }
    if rng.chance(20) {
        p.push('/');
    }
    if rng.chance(15) {
        p.insert(0, '!');
    }
    p + rng.pick(ENDS)
}

fn ignore_file(rng: &mut Rng, rare: bool) -> String {
    let mut text = String::new();
    for _ in 0..1 + rng.below(4) {
        text += &pattern(rng, rare);
        text += rng.pick(BREAKS);
    }
    if rng.chance(30) {
        text += &pattern(rng, rare); // no line end after the last line
    }
    text
}

fn path(rng: &mut Rng) -> String {
    let parts: Vec<&str> = (0..1 + rng.below(3)).map(|_| rng.pick(NAMES)).collect();
    parts.join("/")
}

fn seed() -> u64 {
    std::env::var("OMERO_ISCC_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x15CC_0042)
}

fn oracle(request: &Value) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/ignore_oracle.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    let body = serde_json::to_vec(request).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "oracle failed: {}", stderr(&out));
    plain_json_lines(&out)
}

#[test]
fn patterns_match_as_pathspec_matches_them() {
    let seed = seed();
    let mut rng = Rng(seed | 1);
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for n in 0..3000 {
        let text = ignore_file(&mut rng, true);
        let file = tmp.path().join(format!("case{n}.isccignore"));
        fs::write(&file, &text).unwrap();
        let mut paths = Vec::new();
        for _ in 0..4 {
            let p = path(&mut rng);
            paths.push(format!("{p}/"));
            paths.push(p);
        }
        cases.push((file, text, paths));
    }
    let request =
        json!({"match": cases.iter().map(|(f, _, p)| json!({"file": f, "paths": p})).collect::<Vec<_>>()});
    let answers = oracle(&request);
    assert_eq!(answers.len(), cases.len());
    let (mut compared, mut refused) = (0, 0);
    for ((file, text, paths), answer) in cases.iter().zip(&answers) {
        let mut spec = IgnoreSpec::default();
        let ours = spec.add_file(&fs::read(file).unwrap());
        let context = format!("seed {seed}, ignore file {text:?}");
        match (ours, answer.get("error")) {
            (Err(_), Some(_)) => refused += 1,
            (Ok(()), None) => {
                let want: Vec<bool> = serde_json::from_value(answer["ignored"].clone()).unwrap();
                for (p, want) in paths.iter().zip(want) {
                    assert_eq!(spec.matches(p), want, "{context}: path {p:?}");
                    compared += 1;
                }
            }
            (ours, theirs) => panic!("{context}: ours {ours:?}, pathspec {theirs:?}"),
        }
    }
    // The generator must reach both sides: enough refused files, and many verdicts.
    assert!(refused > 100 && compared > 12_000, "refused {refused}, compared {compared}");
}

/// A random tree: files and directories with names from NAMES, ignore files at some levels.
fn tree(rng: &mut Rng, dir: &Path, depth: usize) {
    fs::create_dir_all(dir).unwrap();
    if rng.chance(if depth == 0 { 90 } else { 35 }) {
        let rare = rng.chance(10);
        fs::write(dir.join(".isccignore"), ignore_file(rng, rare)).unwrap();
    }
    for _ in 0..2 + rng.below(5) {
        let name = rng.pick(NAMES);
        let target = dir.join(name);
        if target.exists() {
            continue;
        }
        if depth < 2 && rng.chance(30) {
            tree(rng, &target, depth + 1);
        } else {
            fs::write(&target, pseudo_random(rng.below(3000), rng.next())).unwrap();
        }
    }
}

#[test]
fn walks_equal_iscc_sums_walk_and_tree_codes_equal_iscc_sum() {
    let seed = seed();
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let tmp = tempfile::tempdir().unwrap();
    let roots: Vec<_> = (0..150).map(|n| tmp.path().join(format!("t{n}"))).collect();
    for root in &roots {
        tree(&mut rng, root, 0);
    }
    let answers = oracle(&json!({ "walk": roots }));
    let mut walked = 0;
    let mut trees_compared = 0;
    for (root, answer) in roots.iter().zip(&answers) {
        let ours = walk::walk(root);
        let context = format!("seed {seed}, tree {}", root.display());
        match (ours.errors.first(), answer.get("error")) {
            (Some(_), Some(_)) => continue,
            (None, None) => {}
            (e, theirs) => panic!("{context}: ours {e:?}, iscc-sum {theirs:?}"),
        }
        let want: Vec<String> = serde_json::from_value(answer["files"].clone()).unwrap();
        let got: Vec<String> =
            ours.files.iter().map(|f| f.strip_prefix(root).unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(got, want, "{context}");
        walked += 1;
        if !got.is_empty() && trees_compared < 12 && rng.chance(30) {
            let name = root.file_name().unwrap().to_str().unwrap();
            let theirs = stdout(&iscc_sum(tmp.path(), &["--narrow", "--tree", name]));
            let ours = run_in(tmp.path(), &["sum", "--tree", name], b"");
            assert_eq!(stdout(&ours), theirs, "{context}");
            trees_compared += 1;
        }
    }
    assert!(walked > 60 && trees_compared >= 5, "walked {walked}, trees compared {trees_compared}");
}
