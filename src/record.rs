//! The records `sum` produces and how they are written: iscc-sum-compatible text lines or
//! JSON Lines (schema in the README).
//!
//! Paths are bytes on Unix. In JSON a path that is not valid UTF-8 keeps every byte: each
//! invalid byte 0xXY is written as the lone surrogate `\udcXY`, the convention of Python's
//! `surrogateescape` (so `os.fsencode(json.loads(line)["path"])` gives back the exact bytes).

use crate::checksum::Algorithm;
use crate::codes::Codes;
use crate::error::Failure;
use crate::hash::Outcome;
use std::fmt::Write as _;
use std::io::{self, Write};

/// What one record says about one path, tree or group.
#[derive(Debug)]
pub enum Record {
    File { path: Vec<u8>, result: Result<Outcome, Failure> },
    Tree { path: Vec<u8>, files: usize, result: Result<Outcome, Failure> },
    Group { id: String, result: Result<Outcome, Failure>, files: Vec<(Vec<u8>, Result<Outcome, Failure>)> },
    BadLine { line: usize, failure: Failure },
}

impl Record {
    /// Whether this record (or any file in it) failed.
    pub fn failed(&self) -> bool {
        match self {
            Record::File { result, .. } | Record::Tree { result, .. } => result.is_err(),
            Record::Group { result, files, .. } => result.is_err() || files.iter().any(|(_, r)| r.is_err()),
            Record::BadLine { .. } => true,
        }
    }
}

/// How records are written.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    pub json: bool,
    pub wide: bool,
    pub units: bool,
}

/// Writes one record: its stdout part to `out`, and in text mode its errors to `err`.
pub fn write_record(
    record: &Record,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    if format.json {
        let mut line = String::with_capacity(256);
        json_record(record, format, &mut line);
        line.push('\n');
        return out.write_all(line.as_bytes());
    }
    match record {
        Record::File { path, result } | Record::Tree { path, result, .. } => match result {
            Ok(outcome) => {
                let codes = outcome.digests.codes(format.wide);
                out.write_all(format!("{} *", codes.iscc).as_bytes())?;
                out.write_all(path)?;
                out.write_all(b"\n")?;
                if format.units {
                    for unit in &codes.units {
                        writeln!(out, "  {unit}")?;
                    }
                }
                Ok(())
            }
            Err(failure) => {
                err.write_all(b"omero-iscc: ")?;
                err.write_all(path)?;
                writeln!(err, ": {failure}")
            }
        },
        Record::Group { .. } => unreachable!("groups are written as JSON only"),
        Record::BadLine { line, failure } => writeln!(err, "omero-iscc: line {line}: {failure}"),
    }
}

fn json_record(record: &Record, format: Format, s: &mut String) {
    match record {
        Record::File { path, result } => {
            s.push_str("{\"path\":");
            json_path(path, s);
            json_result(result, format, s);
            s.push('}');
        }
        Record::Tree { path, files, result } => {
            s.push_str("{\"path\":");
            json_path(path, s);
            let _ = write!(s, ",\"file_count\":{files}");
            json_result(result, format, s);
            s.push('}');
        }
        Record::Group { id, result, files } => {
            s.push_str("{\"id\":");
            json_str(id, s);
            json_result(result, format, s);
            s.push_str(",\"files\":[");
            for (i, (path, result)) in files.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                json_record(&Record::File { path: path.clone(), result: result.clone() }, format, s);
            }
            s.push_str("]}");
        }
        Record::BadLine { line, failure } => {
            let _ = write!(s, "{{\"id\":null,\"line\":{line}");
            json_failure(failure, s);
            s.push('}');
        }
    }
}

fn json_result(result: &Result<Outcome, Failure>, format: Format, s: &mut String) {
    match result {
        Ok(outcome) => json_codes(&outcome.digests.codes(format.wide), &outcome.checksums, format, s),
        Err(failure) => json_failure(failure, s),
    }
}

fn json_codes(codes: &Codes, checksums: &[(Algorithm, String)], format: Format, s: &mut String) {
    let _ = write!(
        s,
        ",\"iscc\":\"{}\",\"datahash\":\"{}\",\"filesize\":{}",
        codes.iscc, codes.datahash, codes.filesize
    );
    if format.units {
        let _ = write!(s, ",\"units\":[\"{}\",\"{}\"]", codes.units[0], codes.units[1]);
    }
    if !checksums.is_empty() {
        s.push_str(",\"checksums\":{");
        for (i, (algorithm, value)) in checksums.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "\"{}\":\"{}\"", algorithm.name(), value);
        }
        s.push('}');
    }
}

fn json_failure(failure: &Failure, s: &mut String) {
    s.push_str(",\"error\":");
    s.push_str(&serde_json::to_string(failure).expect("a failure always serializes"));
}

fn json_str(text: &str, s: &mut String) {
    s.push_str(&serde_json::to_string(text).expect("a str always serializes"));
}

/// Writes `bytes` as a JSON string, invalid UTF-8 bytes as `\udcXY` (see the module doc).
pub fn json_path(bytes: &[u8], s: &mut String) {
    let mut escaped = String::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                escaped.push_str(valid);
                rest = &[];
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                escaped.push_str(std::str::from_utf8(valid).expect("checked valid"));
                let bad = e.error_len().unwrap_or(after.len());
                for &b in &after[..bad] {
                    // Placeholder outside the reach of real text: a private-use character
                    // per byte, replaced by the escape once the string is quoted.
                    escaped.push(char::from_u32(0x10FF00 + b as u32).expect("valid scalar"));
                }
                rest = &after[bad..];
            }
        }
    }
    let quoted = serde_json::to_string(&escaped).expect("a str always serializes");
    if bytes.len() == escaped.len() {
        s.push_str(&quoted);
        return;
    }
    for c in quoted.chars() {
        match c as u32 {
            v @ 0x10FF80..=0x10FFFF => {
                let _ = write!(s, "\\udc{:02x}", v - 0x10FF00);
            }
            _ => s.push(c),
        }
    }
}

/// The inverse of [`json_path`] for a string that `serde_json` could not take: JSON text of a
/// string value with `\udcXY` escapes, turned back into bytes. Used by `check`.
pub fn path_bytes(value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for c in value.chars() {
        match c as u32 {
            v @ 0x10FF80..=0x10FFFF => out.push((v - 0x10FF00) as u8),
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// Rewrites lone `\udcXY` escapes (X ≥ 8) in a JSON line into the private-use placeholders
/// that [`path_bytes`] understands, so `serde_json` can parse the line.
pub fn unescape_surrogates(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains("\\udc") && !line.contains("\\uDC") {
        return std::borrow::Cow::Borrowed(line);
    }
    let bytes = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 1 < bytes.len() {
            let is_lone = bytes.len() >= i + 6
                && bytes[i + 1] == b'u'
                && bytes[i + 2..i + 4].eq_ignore_ascii_case(b"dc")
                && matches!(bytes[i + 4].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f')
                && bytes[i + 5].is_ascii_hexdigit();
            if is_lone {
                let v = u32::from_str_radix(&line[i + 4..i + 6], 16).expect("hex digits");
                let _ = write!(out, "\\udbff\\udf{:02x}", v);
                i += 6;
            } else {
                out.push_str(&line[i..i + 2]);
                i += 2;
            }
        } else {
            let c = line[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_paths_round_trip_through_json() {
        let raw = b"dir/caf\xe9 \"q\"\xff.tif".to_vec();
        let mut s = String::new();
        json_path(&raw, &mut s);
        assert_eq!(s, "\"dir/caf\\udce9 \\\"q\\\"\\udcff.tif\"");
        let line = unescape_surrogates(&s);
        let value: String = serde_json::from_str(&line).unwrap();
        assert_eq!(path_bytes(&value), raw);
    }

    #[test]
    fn plain_paths_are_plain_json() {
        let mut s = String::new();
        json_path("a/ü.tif".as_bytes(), &mut s);
        assert_eq!(s, "\"a/ü.tif\"");
    }
}
