//! The `check` command: recompute and compare the codes in lines written by `sum` (text or
//! JSON, also group records) or by iscc-sum (default and BSD-tag lines).
//!
//! JSON records also have their `datahash`, `filesize` and `checksums` compared, all from
//! the same read of each file.

use crate::checksum::Algorithm;
use crate::cli::CheckArgs;
use crate::codes;
use crate::error::ErrorKind;
use crate::exit::{Status, UsageError};
use crate::hash::{self, HashConfig, Outcome, StreamHasher};
use crate::inputs::Resolver;
use crate::ordered;
use crate::record::{path_bytes, unescape_surrogates};
use crate::walk;
use serde_json::Value;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
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
pub fn run(args: &CheckArgs) -> Result<Status, UsageError> {
    if args.files.iter().filter(|f| f.as_bytes() == b"-").count() > 1 {
        return Err(UsageError("standard input ('-') can be used only once".into()));
    }
    let resolver = Resolver::new(args.root.as_deref()).map_err(|e| UsageError(format!("--root: {e}")))?;
    let mut expected = Vec::new();
    let mut malformed = 0usize;
    for name in &args.files {
        let reader: Box<dyn BufRead> = if name.as_bytes() == b"-" {
            Box::new(BufReader::new(io::stdin()))
        } else {
            let file =
                File::open(name).map_err(|e| UsageError(format!("{}: {e}", name.to_string_lossy())))?;
            Box::new(BufReader::new(file))
        };
        read_lines(reader, &name.to_string_lossy(), &mut expected, &mut malformed)
            .map_err(|e| UsageError(format!("{}: {e}", name.to_string_lossy())))?;
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| UsageError(format!("cannot start threads: {e}")))?;
    let (mut ok, mut failed, mut missing) = (0usize, 0usize, 0usize);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    ordered::for_each_ordered(
        &pool,
        expected.len(),
        |i| (i, verify(&expected[i], &resolver, threads > 1)),
        |(i, verdict)| {
            let e: &Expected = &expected[i];
            let word = match &verdict {
                Verdict::Ok => {
                    ok += 1;
                    "OK"
                }
                Verdict::Failed(why) => {
                    failed += 1;
                    if !why.is_empty() {
                        let _ =
                            writeln!(io::stderr(), "omero-iscc: {}: {why}", String::from_utf8_lossy(&e.path));
                    }
                    "FAILED"
                }
                Verdict::Missing => {
                    missing += 1;
                    "MISSING"
                }
            };
            if verdict == Verdict::Ok && args.quiet {
                return true;
            }
            let line = [&e.path[..], b": ", word.as_bytes(), b"\n"].concat();
            out.write_all(&line).and_then(|_| out.flush()).is_ok()
        },
    );
    let total = expected.len();
    eprintln!(
        "omero-iscc: {total} checked: {ok} OK, {failed} FAILED, {missing} MISSING{}",
        if malformed > 0 { format!(", {malformed} malformed line(s)") } else { String::new() }
    );
    Ok(if failed + missing + malformed > 0 { Status::Failure } else { Status::Success })
}

fn read_lines(
    reader: Box<dyn BufRead>,
    name: &str,
    out: &mut Vec<Expected>,
    malformed: &mut usize,
) -> io::Result<()> {
    for (n, line) in reader.split(b'\n').enumerate() {
        let mut line = line?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if n == 0 && line.starts_with("\u{feff}".as_bytes()) {
            line.drain(..3);
        }
        if line.iter().all(u8::is_ascii_whitespace) || line.starts_with(b"  ISCC:") {
            continue; // blank, or a --units line belonging to the line above
        }
        match parse_line(&line) {
            Ok(mut found) => out.append(&mut found),
            Err(why) => {
                *malformed += 1;
                eprintln!("omero-iscc: {name}:{}: {why}", n + 1);
            }
        }
    }
    Ok(())
}

fn parse_line(line: &[u8]) -> Result<Vec<Expected>, String> {
    if line.first() == Some(&b'{') {
        let text = std::str::from_utf8(line).map_err(|_| "JSON line is not UTF-8".to_string())?;
        let value: Value =
            serde_json::from_str(&unescape_surrogates(text)).map_err(|e| format!("not valid JSON: {e}"))?;
        return parse_json(&value);
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

fn parse_json(value: &Value) -> Result<Vec<Expected>, String> {
    if let Some(files) = value.get("files").and_then(Value::as_array) {
        // A group record: verify each of its files.
        let mut all = Vec::new();
        for f in files {
            all.append(&mut parse_json(f)?);
        }
        return Ok(all);
    }
    let path = value.get("path").and_then(Value::as_str).ok_or("JSON record has no \"path\"")?;
    let Some(iscc) = value.get("iscc").and_then(Value::as_str) else {
        return Err(format!("record for {path:?} has no \"iscc\" (it failed when it was computed)"));
    };
    valid_code(iscc)?;
    let mut checksums = Vec::new();
    if let Some(map) = value.get("checksums").and_then(Value::as_object) {
        for (name, v) in map {
            let algorithm =
                Algorithm::from_name(name).ok_or_else(|| format!("unsupported checksum {name:?}"))?;
            checksums.push((algorithm, v.as_str().unwrap_or_default().to_string()));
        }
    }
    Ok(vec![Expected {
        path: path_bytes(path),
        iscc: iscc.to_string(),
        datahash: value.get("datahash").and_then(Value::as_str).map(str::to_string),
        filesize: value.get("filesize").and_then(Value::as_u64),
        checksums,
    }])
}

fn verify(e: &Expected, resolver: &Resolver, parallel: bool) -> Verdict {
    let config =
        HashConfig { parallel, mmap: true, checksums: e.checksums.iter().map(|(a, _)| *a).collect() };
    let tree = e.path.ends_with(b"/") && e.path.len() > 1;
    let path = resolver.resolve(Path::new(OsStr::from_bytes(&e.path)));
    let outcome = path.and_then(|p| {
        if tree {
            let walked = walk::walk(&p);
            if let Some((_, err)) = walked.errors.first() {
                return Err(crate::error::Failure::io(err));
            }
            let mut hasher = StreamHasher::new(&config);
            for f in &walked.files {
                hash::feed_path(f, &config, &mut |b| hasher.update(b))?;
            }
            Ok(hasher.finish())
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
