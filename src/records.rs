//! The records `sum` produces and how they are written: iscc-sum-compatible text lines or
//! JSON Lines. The JSON shape is given by the serde types below (schema in the README); tests
//! read the output back into the same types with unknown fields denied.

use crate::engine::checksum::Algorithm;
use crate::engine::codes::Codes;
use crate::engine::hash::Outcome;
use crate::error::Failure;
use crate::pathcodec::PathText;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;

/// What one job yields about one path, tree or group.
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

/// The JSON record `pixels` writes per image: its pixel code (always wide), or the error that
/// cost it its code, with the whole planes read before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelLine {
    /// The id the `image` frame gave (a number or a string); `null` for a fault outside any
    /// image.
    pub image: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iscc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datahash: Option<String>,
    /// Bytes of the canonical stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub planes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plane_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<[String; 2]>,
    /// With `--simprints`: each plane's 256-bit Data-Code, as iscc-bio writes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simprints: Option<Vec<SimprintLine>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

/// One plane's simprint: iscc-bio's `{"simprint", "offset", "size"}` (offset: the plane's
/// index in walk order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimprintLine {
    pub simprint: String,
    pub offset: u64,
    pub size: u64,
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

/// The code fields of a result: (iscc, datahash, filesize, units, checksums, error).
type Fields =
    (Option<String>, Option<String>, Option<u64>, Option<[String; 2]>, Option<Checksums>, Option<Failure>);

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
            (Some(iscc), Some(datahash), Some(filesize), format.units.then_some(units), checksums, None)
        }
        Err(failure) => (None, None, None, None, None, Some(failure.clone())),
    }
}

fn file_line(
    path: &[u8],
    file_count: Option<usize>,
    result: &Result<Outcome, Failure>,
    format: Format,
) -> FileLine {
    let (iscc, datahash, filesize, units, checksums, error) = fields(result, format);
    FileLine { path: PathText(path.to_vec()), file_count, iscc, datahash, filesize, units, checksums, error }
}

/// The JSON line of a record.
pub fn to_line(record: &Record, format: Format) -> Line {
    match record {
        Record::File { path, result } => Line::File(file_line(path, None, result, format)),
        Record::Tree { path, files, result } => Line::File(file_line(path, Some(*files), result, format)),
        Record::Group { id, result, files } => {
            let (iscc, datahash, filesize, units, checksums, error) = fields(result, format);
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

/// One record as it is written: its standard-output bytes, and in text mode the message for
/// standard error when it failed.
pub fn render(record: &Record, format: Format) -> (Vec<u8>, Option<String>) {
    if format.json {
        let mut out = serde_json::to_vec(&to_line(record, format)).expect("records always serialize");
        out.push(b'\n');
        return (out, None);
    }
    match record {
        Record::File { path, result } | Record::Tree { path, result, .. } => match result {
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
                (out, None)
            }
            Err(failure) => (Vec::new(), Some(format!("{}: {failure}", String::from_utf8_lossy(path)))),
        },
        Record::Group { .. } => unreachable!("groups are written as JSON only (checked with the arguments)"),
        Record::BadLine { line, failure } => (Vec::new(), Some(format!("line {line}: {failure}"))),
    }
}
