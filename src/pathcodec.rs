//! Paths in JSON, the one codec for every place a path is written or read (records, `check`,
//! `similar`, `--groups` lines). Paths are bytes on Unix; in JSON a path that is not valid
//! UTF-8 keeps every byte: each byte 0xXY that is not part of valid UTF-8 is written as the
//! lone surrogate `\udcXY`, the convention of Python's `surrogateescape` (so
//! `os.fsencode(json.loads(line)["path"])` gives back the exact bytes, and
//! `json.dumps(os.fsdecode(name))` writes what is read here).
//!
//! Reading is exact: `serde_json` hands a string to [`PathText`] as bytes, with a lone
//! surrogate escape encoded as in WTF-8 (three bytes, which valid UTF-8 text never holds), and
//! only `\udc80`..`\udcff` decode to a byte; any other lone surrogate is an error. No character
//! stands in for a byte, so every name, whatever characters it holds, reads back as itself.
//! A string can be read so only by `serde_json`'s own deserializer: types holding a
//! [`PathText`] are read from JSON text directly, never through `#[serde(untagged)]` or
//! `serde_json::Value` (which take strings as UTF-8 text first).

use serde::de::{Deserialize, Deserializer, Visitor};
use serde::ser::{Error as _, Serialize, Serializer};
use std::fmt::{self, Write as _};

/// A path as bytes that (de)serializes as a JSON string with `\udcXY` escapes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathText(pub Vec<u8>);

impl PathText {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for PathText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let json = to_json(&self.0);
        let raw = serde_json::value::RawValue::from_string(json).map_err(S::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PathText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = PathText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path (a string)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PathText, E> {
                Ok(PathText(v.as_bytes().to_vec()))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<PathText, E> {
                from_wtf8(v).map(PathText).map_err(E::custom)
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

/// `bytes` as JSON string text (with its quotes), bytes outside valid UTF-8 as `\udcXY`.
pub fn to_json(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        let quoted = serde_json::to_string(chunk.valid()).expect("a str always serializes");
        out.push_str(&quoted[1..quoted.len() - 1]);
        for &b in chunk.invalid() {
            let _ = write!(out, "\\udc{b:02x}");
        }
    }
    out.push('"');
    out
}

/// A JSON string's bytes as `serde_json` reads them for `deserialize_bytes` (WTF-8: lone
/// surrogates as three bytes `ED A0..BF xx`) to the path's bytes.
fn from_wtf8(wtf8: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(wtf8.len());
    let mut i = 0;
    while i < wtf8.len() {
        let surrogate = wtf8[i] == 0xED && wtf8.get(i + 1).is_some_and(|b| (0xA0..=0xBF).contains(b));
        if !surrogate {
            out.push(wtf8[i]);
            i += 1;
            continue;
        }
        let Some(&last) = wtf8.get(i + 2) else {
            return Err("a path string ends inside a character".into());
        };
        let unit = 0xD000 | (u32::from(wtf8[i + 1] & 0x3F) << 6) | u32::from(last & 0x3F);
        if !(0xDC80..=0xDCFF).contains(&unit) {
            return Err(format!(
                "\\u{unit:04x} in a path is a lone surrogate that stands for no byte \
                 (bytes of names that are not UTF-8 are written \\udc80..\\udcff)"
            ));
        }
        out.push((unit - 0xDC00) as u8);
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::from_str::<PathText>(json).map(|p| p.0)
    }

    #[test]
    fn names_that_are_not_utf8_round_trip_through_json() {
        let raw = b"dir/caf\xe9 \"q\"\xff.tif".to_vec();
        let s = to_json(&raw);
        assert_eq!(s, "\"dir/caf\\udce9 \\\"q\\\"\\udcff.tif\"");
        assert_eq!(read(&s).unwrap(), raw);
        assert_eq!(serde_json::to_string(&PathText(raw)).unwrap(), s);
    }

    #[test]
    fn every_name_reads_back_as_itself() {
        let names: [&[u8]; 6] = [
            "a/ü.tif".as_bytes(),
            "\u{10FF80}\u{10FFFF}".as_bytes(),
            "\u{1F600}\\\"\n\u{7f}".as_bytes(),
            b"\xed\xa0\x80 (an encoded surrogate is not UTF-8)",
            b"\xf0\x9f\x98 truncated, \xc3",
            b"",
        ];
        for name in names {
            let json = to_json(name);
            assert_eq!(read(&json).unwrap(), name, "{json}");
            // Python writes the same with ensure_ascii: non-ASCII as \u escapes (pairs beyond
            // the BMP).
            let ascii: String = json
                .chars()
                .flat_map(|c| {
                    if c.is_ascii() {
                        vec![c.to_string()]
                    } else {
                        let mut units = [0u16; 2];
                        c.encode_utf16(&mut units).iter().map(|u| format!("\\u{u:04x}")).collect()
                    }
                })
                .collect();
            assert_eq!(read(&ascii).unwrap(), name, "{ascii}");
        }
        assert_eq!(to_json("a/ü.tif".as_bytes()), "\"a/ü.tif\"");
    }

    #[test]
    fn surrogates_that_stand_for_no_byte_are_refused() {
        for bad in ["\"\\udc41\"", "\"\\ud800\"", "\"a\\udbffb\""] {
            assert!(read(bad).is_err(), "{bad}");
        }
        // A pair is a character, not two bytes.
        assert_eq!(read("\"\\ud83d\\ude00\"").unwrap(), "\u{1F600}".as_bytes());
    }
}
