//! Paths in JSON. Paths are bytes on Unix; in JSON a path that is not valid UTF-8 keeps every
//! byte: each invalid byte 0xXY is written as the lone surrogate `\udcXY`, the convention of
//! Python's `surrogateescape` (so `os.fsencode(json.loads(line)["path"])` gives back the
//! exact bytes). [`PathText`] carries a path through serde that way.
//!
//! `serde_json` refuses lone surrogates when it reads, so a line is first passed through
//! [`unescape_line`], which turns each `\udcXY` into a private-use placeholder character that
//! [`bytes_of`] maps back to the byte.

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Error as _, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt::Write as _;

/// First placeholder: byte 0xXY stands as U+10FFXY (a private-use character no real path is
/// expected to carry; only 0x80..=0xFF occur, as smaller bytes are always valid UTF-8).
const PLACEHOLDER: u32 = 0x10FF00;

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
        let text = Cow::<str>::deserialize(deserializer)?;
        Ok(PathText(bytes_of(&text)))
    }
}

/// `bytes` as JSON string text (with its quotes), invalid UTF-8 bytes as `\udcXY`.
pub fn to_json(bytes: &[u8]) -> String {
    let mut escaped = String::with_capacity(bytes.len());
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
                    escaped.push(char::from_u32(PLACEHOLDER + b as u32).expect("valid scalar"));
                }
                rest = &after[bad..];
            }
        }
    }
    let quoted = serde_json::to_string(&escaped).expect("a str always serializes");
    if bytes.len() == escaped.len() {
        return quoted;
    }
    let mut out = String::with_capacity(quoted.len() + 16);
    for c in quoted.chars() {
        match c as u32 {
            v @ 0x10FF80..=0x10FFFF => {
                let _ = write!(out, "\\udc{:02x}", v - PLACEHOLDER);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The bytes of a path string read from a line that went through [`unescape_line`].
pub fn bytes_of(value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    for c in value.chars() {
        match c as u32 {
            v @ 0x10FF80..=0x10FFFF => out.push((v - PLACEHOLDER) as u8),
            _ => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// Rewrites lone `\udcXY` escapes (X ≥ 8) in a JSON line into the placeholders that
/// [`bytes_of`] understands, so `serde_json` can parse the line.
pub fn unescape_line(line: &str) -> Cow<'_, str> {
    if !line.contains("\\udc") && !line.contains("\\uDC") {
        return Cow::Borrowed(line);
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
                // U+10FFXY as a surrogate pair: serde_json decodes it to the placeholder.
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
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_paths_round_trip_through_json() {
        let raw = b"dir/caf\xe9 \"q\"\xff.tif".to_vec();
        let s = to_json(&raw);
        assert_eq!(s, "\"dir/caf\\udce9 \\\"q\\\"\\udcff.tif\"");
        let line = unescape_line(&s);
        let value: PathText = serde_json::from_str(&line).unwrap();
        assert_eq!(value.0, raw);
        assert_eq!(serde_json::to_string(&PathText(raw)).unwrap(), s);
    }

    #[test]
    fn plain_paths_are_plain_json() {
        assert_eq!(to_json("a/ü.tif".as_bytes()), "\"a/ü.tif\"");
    }
}
