//! The `check` command: recompute and compare the codes in lines written by `sum` (text or
//! JSON, also group records) or by iscc-sum (default and BSD-tag lines).
//!
//! JSON records also have their `datahash`, `filesize` and `checksums` compared, all from
//! the same read of each file.

use crate::cli::CheckArgs;
use crate::engine::checksum::Algorithm;
use crate::engine::codes;
use crate::engine::group;
use crate::engine::hash::{self, HashConfig, Outcome};
use crate::error::ErrorKind;
use crate::exit::{Error, Status};
use crate::inputs::{self, Resolver};
use crate::ordered;
use crate::pathcodec::PathText;
use crate::streams::{self, Inputs, Output};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One expectation read from a line.
#[derive(Debug)]
struct Expected {
    path: Vec<u8>,
    iscc: String,
    datahash: Option<String>,
    filesize: Option<u64>,
    checksums: Vec<(Algorithm, String)>,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Ok,
    Failed(String),
    Missing,
}

/// Runs `check`; returns the exit status.
pub fn run(args: &CheckArgs) -> Result<Status, Error> {
    let resolver = Resolver::new(args.root.as_deref())
        .map_err(|e| Error::Usage(format!("--root: {}", streams::plain(&e))))?;
    let mut inputs = Inputs::default();
    let mut expected = Vec::new();
    let mut malformed = 0usize;
    let mut empty_files = 0usize;
    // Every input is opened (standard input claimed) before any is read.
    let readers = args
        .files
        .iter()
        .enumerate()
        .map(|(i, name)| inputs.open_nth(name, "FILE", i + 1))
        .collect::<Result<Vec<_>, _>>()?;
    for (name, mut reader) in args.files.iter().zip(readers) {
        let mut text = Vec::new();
        reader
            .read_to_end(&mut text)
            .map_err(|e| Error::Usage(format!("{}: {}", name.to_string_lossy(), streams::plain(&e))))?;
        let before = expected.len();
        malformed += read_records(&text, &name.to_string_lossy(), &mut expected);
        if expected.len() == before {
            empty_files += 1;
            crate::warn!("{}: no ISCC records found", name.to_string_lossy());
        }
    }
    let pool = streams::pool(None)?;
    let parallel = pool.current_num_threads() > 1;
    let (mut ok, mut failed, mut missing) = (0usize, 0usize, 0usize);
    let mut out = Output::default();
    ordered::for_each_ordered(
        &pool,
        expected.len(),
        |i| (i, verify(&expected[i], &resolver, parallel)),
        |(i, verdict)| {
            let e: &Expected = &expected[i];
            let word = match &verdict {
                Verdict::Ok => {
                    ok += 1;
                    "OK"
                }
                Verdict::Failed(why) => {
                    failed += 1;
                    crate::warn!("{}: {why}", String::from_utf8_lossy(&e.path));
                    "FAILED"
                }
                Verdict::Missing => {
                    missing += 1;
                    "MISSING"
                }
            };
            if verdict == Verdict::Ok && args.quiet {
                return Ok(());
            }
            out.record(&[&e.path[..], b": ", word.as_bytes(), b"\n"].concat())
        },
    )?;
    // Reached only when every record was checked and written: the summary is the whole run.
    let total = expected.len();
    let mut extra = String::new();
    if malformed > 0 {
        extra += &format!(", {malformed} malformed line(s)");
    }
    if empty_files > 0 {
        extra += &format!(", {empty_files} file(s) without records");
    }
    crate::warn!("{total} checked: {ok} OK, {failed} FAILED, {missing} MISSING{extra}");
    Ok(Status::from_failed(failed + missing + malformed + empty_files > 0))
}

/// Reads the expectations of one file of records; returns how many lines were malformed.
///
/// Records end with a newline, or with NUL when the file has any (iscc-sum `-z`). A line a
/// captured log wrote over with carriage returns (progress-bar redraws) is split at them,
/// and the redraws are left out.
fn read_records(text: &[u8], name: &str, out: &mut Vec<Expected>) -> usize {
    let mut text = text;
    if let Some(rest) = text.strip_prefix("\u{feff}".as_bytes()) {
        text = rest;
    }
    let nul = text.contains(&0);
    let mut malformed = 0;
    for (n, line) in text.split(|&b| b == if nul { 0 } else { b'\n' }).enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let pieces: Vec<&[u8]> = match parse_line(line) {
            Ok(found) => {
                out.extend(found);
                continue;
            }
            Err(_) if !nul && line.contains(&b'\r') => line.split(|&b| b == b'\r').collect(),
            Err(_) => vec![line],
        };
        for piece in pieces {
            if is_blank_or_unit(piece) || is_progress_redraw(piece) {
                continue;
            }
            match parse_line(piece) {
                Ok(found) => out.extend(found),
                Err(why) => {
                    malformed += 1;
                    crate::warn!("{name}:{}: {why}", n + 1);
                }
            }
        }
    }
    malformed
}

/// Blank, or a `--units` line belonging to the record above.
fn is_blank_or_unit(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace) || line.starts_with(b"  ISCC:")
}

/// What `sum --progress` draws: `HH:MM:SS [bar] ...`.
fn is_progress_redraw(piece: &[u8]) -> bool {
    piece.len() > 10
        && piece[..8]
            .iter()
            .enumerate()
            .all(|(i, &b)| if i % 3 == 2 { b == b':' } else { b.is_ascii_digit() })
        && &piece[8..10] == b" ["
}

fn parse_line(line: &[u8]) -> Result<Vec<Expected>, String> {
    if is_blank_or_unit(line) {
        return Ok(Vec::new());
    }
    if line.first() == Some(&b'{') {
        let text = std::str::from_utf8(line).map_err(|_| "JSON line is not UTF-8".to_string())?;
        let record: JsonRecord = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        return parse_json(record);
    }
    // iscc-sum's default format `ISCC:CODE *path` and BSD format `ISCC-SUM (path) = ISCC:CODE`.
    if let Some(rest) = line.strip_prefix(b"ISCC-SUM (") {
        if let Some(pos) = rest.windows(4).rposition(|w| w == b") = ") {
            let code = std::str::from_utf8(&rest[pos + 4..]).unwrap_or("");
            return one(rest[..pos].to_vec(), code);
        }
    } else if line.starts_with(b"ISCC:") {
        if let Some(pos) = line.windows(2).position(|w| w == b" *") {
            let code = std::str::from_utf8(&line[..pos]).unwrap_or("");
            return one(line[pos + 2..].to_vec(), code);
        }
    }
    Err("improperly formatted ISCC checksum line".into())
}

fn one(path: Vec<u8>, code: &str) -> Result<Vec<Expected>, String> {
    valid_code(code)?;
    Ok(vec![Expected { path, iscc: code.to_string(), datahash: None, filesize: None, checksums: vec![] }])
}

fn valid_code(code: &str) -> Result<(), String> {
    codes::is_wide(code).map(|_| ()).ok_or_else(|| format!("not an ISCC-SUM code: {code:?}"))
}

/// The fields of a `sum --json` record (file, tree or group) that `check` compares; the others
/// are ignored.
#[derive(Deserialize)]
struct JsonRecord {
    #[serde(default)]
    path: Option<PathText>,
    #[serde(default)]
    iscc: Option<String>,
    #[serde(default)]
    datahash: Option<String>,
    #[serde(default)]
    filesize: Option<Value>,
    #[serde(default)]
    checksums: Option<BTreeMap<String, Value>>,
    /// A group record: its files.
    #[serde(default)]
    files: Option<Vec<JsonRecord>>,
}

fn parse_json(record: JsonRecord) -> Result<Vec<Expected>, String> {
    if let Some(files) = record.files {
        // A group record: verify each of its files.
        let mut all = Vec::new();
        for f in files {
            all.append(&mut parse_json(f)?);
        }
        return Ok(all);
    }
    let path = record.path.ok_or("JSON record has no \"path\"")?;
    let Some(iscc) = record.iscc else {
        return Err(format!(
            "record for {:?} has no \"iscc\" (it failed when it was computed)",
            String::from_utf8_lossy(path.as_bytes())
        ));
    };
    valid_code(&iscc)?;
    let mut checksums = Vec::new();
    for (name, v) in record.checksums.unwrap_or_default() {
        let algorithm =
            Algorithm::from_name(&name).ok_or_else(|| format!("unsupported checksum {name:?}"))?;
        checksums.push((algorithm, v.as_str().unwrap_or_default().to_string()));
    }
    Ok(vec![Expected {
        path: path.0,
        iscc,
        datahash: record.datahash,
        filesize: record.filesize.as_ref().and_then(Value::as_u64),
        checksums,
    }])
}

fn verify(e: &Expected, resolver: &Resolver, parallel: bool) -> Verdict {
    let config = HashConfig {
        parallel,
        mmap: true,
        checksums: e.checksums.iter().map(|(a, _)| *a).collect(),
        roots: resolver.roots().cloned(),
        ..HashConfig::default()
    };
    let tree = e.path.ends_with(b"/") && e.path.len() > 1;
    let path = resolver.resolve(Path::new(OsStr::from_bytes(&e.path)));
    let outcome = path.and_then(|p| {
        if tree {
            group::hash_files(&inputs::tree_files(&p, resolver)?, &config)
        } else {
            hash::hash_path(&p, &config)
        }
    });
    match outcome {
        Err(f) if f.kind == ErrorKind::NotFound => Verdict::Missing,
        Err(f) => Verdict::Failed(f.message),
        Ok(outcome) => compare(e, &outcome),
    }
}

fn compare(e: &Expected, outcome: &Outcome) -> Verdict {
    let wide = codes::is_wide(&e.iscc).unwrap_or(false);
    let codes = outcome.digests.codes(wide);
    let mut differs = Vec::new();
    if codes.iscc != e.iscc {
        differs.push("ISCC");
    }
    if e.datahash.as_deref().is_some_and(|d| d != codes.datahash) {
        differs.push("datahash");
    }
    if e.filesize.is_some_and(|s| s != codes.filesize) {
        differs.push("filesize");
    }
    for ((algorithm, want), (_, got)) in e.checksums.iter().zip(&outcome.checksums) {
        if !want.eq_ignore_ascii_case(got) {
            differs.push(algorithm.name());
        }
    }
    if differs.is_empty() {
        Verdict::Ok
    } else {
        Verdict::Failed(format!("{} differ(s)", differs.join(", ")))
    }
}
