//! The records `sum` produces and how they are written: iscc-sum-compatible text lines or
//! JSON Lines. The JSON shape is given by the serde types below, the one definition of it:
//! `check` and the tests read the output back into the same types with unknown fields
//! denied.
//!
//! A record of a path ([`PathRecord`]) can be written either way; a group's record (and a
//! `--groups` line that could not be read) only as JSON: [`Record`] holds either, and only
//! [`json_line`] takes it, so no group can reach the text writer.

use crate::engine::checksum::Algorithm;
use crate::engine::codes::Codes;
use crate::engine::failure::{Failure, FailureKind};
use crate::engine::hash::Outcome;
use crate::pathcodec::PathText;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;

/// What one job yields about one path or tree.
#[derive(Debug)]
pub enum PathRecord {
    File { path: Vec<u8>, result: Result<Outcome, Failure> },
    Tree { path: Vec<u8>, files: usize, result: Result<Outcome, Failure> },
}

/// What one job of a JSON run yields: a path's record, a group's, or a bad `--groups` line's.
#[derive(Debug)]
pub enum Record {
    Path(PathRecord),
    Group { id: String, result: Result<Outcome, Failure>, files: Vec<(Vec<u8>, Result<Outcome, Failure>)> },
    BadLine { line: usize, failure: Failure },
}

/// What the exit status needs of a record.
pub trait RecordStatus {
    /// Whether this record (or any file in it) failed.
    fn failed(&self) -> bool;
    /// Whether the time budget cost this record (or a file in it) its code.
    fn out_of_time(&self) -> bool;
}

fn out_of_time(result: &Result<Outcome, Failure>) -> bool {
    matches!(result, Err(f) if f.kind == FailureKind::Budget)
}

impl RecordStatus for PathRecord {
    fn failed(&self) -> bool {
        match self {
            PathRecord::File { result, .. } | PathRecord::Tree { result, .. } => result.is_err(),
        }
    }

    fn out_of_time(&self) -> bool {
        match self {
            PathRecord::File { result, .. } | PathRecord::Tree { result, .. } => out_of_time(result),
        }
    }
}

impl RecordStatus for Record {
    fn failed(&self) -> bool {
        match self {
            Record::Path(record) => record.failed(),
            Record::Group { result, files, .. } => result.is_err() || files.iter().any(|(_, r)| r.is_err()),
            Record::BadLine { .. } => true,
        }
    }

    fn out_of_time(&self) -> bool {
        match self {
            Record::Path(record) => record.out_of_time(),
            Record::Group { result, files, .. } => {
                out_of_time(result) || files.iter().any(|(_, r)| out_of_time(r))
            }
            Record::BadLine { .. } => false,
        }
    }
}

/// Which codes a record holds: narrow or wide, and the units or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format {
    pub wide: bool,
    pub units: bool,
}

/// OMERO checksums by algorithm name, in the order they were computed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checksums(pub Vec<(String, String)>);

impl Serialize for Checksums {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Checksums {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Checksums;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of checksum names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checksums, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(Checksums(out))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

/// The JSON record of a file, a standard-input stream, or (with `file_count`) a tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLine {
    pub path: PathText,
    /// Trees only: how many files the tree's code covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_count: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iscc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datahash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesize: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<[String; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<Checksums>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

/// The JSON record of a `--groups` line: the code of the files' concatenation and each file's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupLine {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iscc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datahash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesize: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<[String; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<Checksums>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    pub files: Vec<FileLine>,
}

/// The JSON record of a `--groups` line that could not be read (`"id": null`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BadLine {
    pub id: Option<String>,
    pub line: usize,
    pub error: Failure,
}

/// Any JSON line `sum` writes (for readers, such as the tests).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Line {
    Group(GroupLine),
    File(FileLine),
    Bad(BadLine),
}

impl<'de> Deserialize<'de> for Line {
    /// Each kind of record tried in turn on the line's JSON text (not `#[serde(untagged)]`,
    /// which would read paths as UTF-8 text: see `pathcodec`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        let group = match serde_json::from_str(text) {
            Ok(line) => return Ok(Line::Group(line)),
            Err(e) => e,
        };
        let file = match serde_json::from_str(text) {
            Ok(line) => return Ok(Line::File(line)),
            Err(e) => e,
        };
        match serde_json::from_str(text) {
            Ok(line) => Ok(Line::Bad(line)),
            Err(bad) => Err(D::Error::custom(format!(
                "not a record: as a group: {group}; as a file: {file}; as a bad line: {bad}"
            ))),
        }
    }
}

/// The code fields of a record: all of them from its outcome, or only its error.
struct Fields {
    iscc: Option<String>,
    datahash: Option<String>,
    filesize: Option<u64>,
    units: Option<[String; 2]>,
    checksums: Option<Checksums>,
    error: Option<Failure>,
}

fn fields(result: &Result<Outcome, Failure>, format: Format) -> Fields {
    match result {
        Ok(outcome) => {
            let Codes { iscc, datahash, filesize, units } = outcome.digests.codes(format.wide);
            let checksums = (!outcome.checksums.is_empty()).then(|| {
                Checksums(
                    outcome
                        .checksums
                        .iter()
                        .map(|(a, v)| (Algorithm::name(*a).to_string(), v.clone()))
                        .collect(),
                )
            });
            Fields {
                iscc: Some(iscc),
                datahash: Some(datahash),
                filesize: Some(filesize),
                units: format.units.then_some(units),
                checksums,
                error: None,
            }
        }
        Err(failure) => Fields {
            iscc: None,
            datahash: None,
            filesize: None,
            units: None,
            checksums: None,
            error: Some(failure.clone()),
        },
    }
}

fn file_line(
    path: &[u8],
    file_count: Option<usize>,
    result: &Result<Outcome, Failure>,
    format: Format,
) -> FileLine {
    let Fields { iscc, datahash, filesize, units, checksums, error } = fields(result, format);
    FileLine { path: PathText(path.to_vec()), file_count, iscc, datahash, filesize, units, checksums, error }
}

/// The JSON line of a path's record.
pub fn path_line(record: &PathRecord, format: Format) -> FileLine {
    match record {
        PathRecord::File { path, result } => file_line(path, None, result, format),
        PathRecord::Tree { path, files, result } => file_line(path, Some(*files), result, format),
    }
}

/// The JSON line of a record.
pub fn to_line(record: &Record, format: Format) -> Line {
    match record {
        Record::Path(record) => Line::File(path_line(record, format)),
        Record::Group { id, result, files } => {
            let Fields { iscc, datahash, filesize, units, checksums, error } = fields(result, format);
            let files = files.iter().map(|(p, r)| file_line(p, None, r, format)).collect();
            Line::Group(GroupLine {
                id: id.clone(),
                iscc,
                datahash,
                filesize,
                units,
                checksums,
                error,
                files,
            })
        }
        Record::BadLine { line, failure } => {
            Line::Bad(BadLine { id: None, line: *line, error: failure.clone() })
        }
    }
}

/// A record as JSON Lines writes it: one line, flushed on its own.
pub fn json_line(record: &Record, format: Format) -> Vec<u8> {
    let mut out = serde_json::to_vec(&to_line(record, format)).expect("records always serialize");
    out.push(b'\n');
    out
}

/// A path's record as iscc-sum writes it: its standard-output bytes (`ISCC:... *path`, and the
/// units below with `--units`), or, when it failed, the message for standard error.
pub fn text_line(record: &PathRecord, format: Format) -> Result<Vec<u8>, String> {
    let (PathRecord::File { path, result } | PathRecord::Tree { path, result, .. }) = record;
    match result {
        Ok(outcome) => {
            let codes = outcome.digests.codes(format.wide);
            let mut out = Vec::with_capacity(80 + path.len());
            let _ = write!(out, "{} *", codes.iscc);
            out.extend_from_slice(path);
            out.push(b'\n');
            if format.units {
                for unit in &codes.units {
                    let _ = writeln!(out, "  {unit}");
                }
            }
            Ok(out)
        }
        Err(failure) => Err(format!("{}: {failure}", String::from_utf8_lossy(path))),
    }
}
