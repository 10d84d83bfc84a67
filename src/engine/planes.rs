//! The plane stream that `pixels` reads: images' pixel bytes framed so that one worker
//! process hashes a whole batch of images, and a fault in one image's frames costs only that
//! image.
//!
//! The stream is a sequence of frames. Control frames are JSON objects on a line of their own
//! (at most [`MAX_LINE`] bytes, ending in `\n`); the pixel bytes follow `bytes` frames raw:
//!
//! ```text
//! {"image": 51, "planes": 3, "plane_bytes": 131072}   one image begins: its id (a number or
//!                                                      a string, echoed back), plane count and
//!                                                      bytes per plane
//! {"bytes": 65536}                                     exactly 65536 raw bytes follow: the
//! <65536 bytes>                                        next bytes of the walk (any split;
//! ...                                                  planes are cut by counting)
//! {"end": true}                                        the image is complete
//! {"abort": "getPlane failed: ..."}                    or: the producer gave it up
//! ```
//!
//! Each frame has exactly its keys. Anything else where a control frame is due is garbage: it
//! ends the current image with an error, and the reader skips frames until the next `image`
//! frame. An `image` frame with unusable fields is that image's failure (its bytes frames are
//! skipped the same way), and a `bytes` frame where no image is open is one stray frame. The
//! bytes of a `bytes` frame are never interpreted, also when they are skipped, so pixel data
//! can hold any value, newlines and frames included.

use serde_json::Value;
use std::io::{self, BufRead, Read};

/// Longest control line.
pub const MAX_LINE: usize = 64 << 10;
/// Largest piece of pixel data handed over at once.
pub const PIECE: usize = 4 << 20;

/// What the reader found next.
#[derive(Debug)]
pub enum Event {
    /// An `image` frame, checked.
    Begin(Header),
    /// Up to [`PIECE`] pixel bytes of the current `bytes` frame.
    Data(Vec<u8>),
    /// `{"end": true}`.
    End,
    /// `{"abort": why}`.
    Abort(String),
    /// A malformed frame or a stray line (its message).
    Garbage(String),
    /// An `image` frame whose fields cannot be used: the image it names (a number, a string or
    /// whatever it held) and why. Its bytes frames are skipped.
    BadImage { id: Value, message: String },
    /// A `bytes` frame where no image is open: one event per frame, its bytes skipped.
    Stray { bytes: u64 },
    /// The stream ended inside a `bytes` frame: `missing` bytes of it never came.
    Truncated { missing: u64 },
}

/// An image's declared shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub id: Value,
    pub planes: u64,
    pub plane_bytes: u64,
}

impl Header {
    pub fn total(&self) -> u64 {
        self.planes.saturating_mul(self.plane_bytes)
    }
}

/// A control frame, read with its exact keys: a frame with a key it does not have is no frame
/// (so `{"bytes": 1, "end": true}` cannot pass for a bytes frame that drops the `end`).
enum Control {
    /// An `image` frame: the id it names, and its shape or why the shape is unusable.
    Image {
        id: Value,
        shape: Result<(u64, u64), String>,
    },
    Bytes(u64),
    End(bool),
    Abort(String),
}

impl Control {
    /// The frame on a line, or `None` when the line is no frame at all.
    fn parse(text: &[u8]) -> Option<Control> {
        let serde_json::Value::Object(mut map) = serde_json::from_slice(text).ok()? else {
            return None;
        };
        if let Some(id) = map.remove("image") {
            // A frame that names an image is that image's frame, however wrong the rest: its
            // record carries the id and the reason.
            return Some(Control::Image { id, shape: image_shape(map) });
        }
        if map.len() != 1 {
            return None;
        }
        let (key, value) = map.into_iter().next()?;
        match (key.as_str(), value) {
            ("bytes", value) => value.as_u64().map(Control::Bytes),
            ("end", Value::Bool(end)) => Some(Control::End(end)),
            ("abort", Value::String(why)) => Some(Control::Abort(why)),
            _ => None,
        }
    }
}

/// The `planes` and `plane_bytes` of an image frame (the rest of its keys), checked.
fn image_shape(mut rest: serde_json::Map<String, Value>) -> Result<(u64, u64), String> {
    let mut count = |key: &str| match rest.remove(key) {
        Some(v) => v.as_u64().ok_or_else(|| format!("\"{key}\" is not a count of at most 2^64 - 1: {v}")),
        None => Err(format!("an image frame has no \"{key}\"")),
    };
    let planes = count("planes")?;
    let plane_bytes = count("plane_bytes")?;
    if let Some(key) = rest.keys().next() {
        return Err(format!("an image frame has no key \"{key}\" (only image, planes, plane_bytes)"));
    }
    if planes == 0 || plane_bytes == 0 {
        return Err(format!(
            "an image has at least one plane of at least one byte (got {planes} × {plane_bytes})"
        ));
    }
    if planes.checked_mul(plane_bytes).is_none() {
        return Err(format!("{planes} planes of {plane_bytes} bytes overflow a 64-bit count"));
    }
    Ok((planes, plane_bytes))
}

/// Reads events from a framed stream; bounded memory whatever the frames declare.
pub struct Reader<R> {
    input: R,
    /// Raw bytes still due in the current `bytes` frame.
    pending: u64,
    /// After garbage: skip frames until an `image` frame.
    resync: bool,
    /// An image began and has not ended: bytes frames belong to it.
    open: bool,
    line: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Self {
        Reader { input, pending: 0, resync: false, open: false, line: Vec::new() }
    }

    /// The next event; `None` at the end of the stream. `spare` is a buffer to reuse for
    /// [`Event::Data`].
    pub fn next_event(&mut self, spare: Vec<u8>) -> io::Result<Option<Event>> {
        if self.pending > 0 {
            return self.data(spare).map(Some);
        }
        loop {
            let Some(too_long) = self.read_line()? else { return Ok(None) };
            if too_long {
                if self.resync {
                    continue;
                }
                return Ok(Some(self.garbage(format!("a control line longer than {MAX_LINE} bytes"))));
            }
            let text = trim_newline(&self.line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue; // blank lines separate nothing; allowed anywhere a frame is due
            }
            let parsed = Control::parse(text);
            if self.resync {
                match parsed {
                    Some(Control::Image { .. }) => self.resync = false,
                    // A skipped image's bytes are skipped by their count, never read as lines:
                    // pixel data may hold anything, frames included.
                    Some(Control::Bytes(n)) => {
                        self.skip(n)?;
                        continue;
                    }
                    _ => continue,
                }
            }
            let event = match parsed {
                Some(Control::Image { id, shape }) => self.begin(id, shape),
                Some(Control::Bytes(0)) => continue,
                Some(Control::Bytes(bytes)) if !self.open => {
                    self.skip(bytes)?;
                    Event::Stray { bytes }
                }
                Some(Control::Bytes(bytes)) => {
                    self.pending = bytes;
                    return self.data(spare).map(Some);
                }
                Some(Control::End(true)) => {
                    self.open = false;
                    Event::End
                }
                Some(Control::Abort(why)) => {
                    self.open = false;
                    Event::Abort(why)
                }
                Some(Control::End(false)) | None => {
                    let message = describe_garbage(text);
                    self.garbage(message)
                }
            };
            return Ok(Some(event));
        }
    }

    /// Garbage ends the open image; frames are skipped until the next `image` frame.
    fn garbage(&mut self, message: String) -> Event {
        self.resync = true;
        self.open = false;
        Event::Garbage(message)
    }

    fn begin(&mut self, id: Value, shape: Result<(u64, u64), String>) -> Event {
        let shape = if id.is_string() || id.is_u64() || id.is_i64() {
            shape
        } else {
            Err("an image id is a number or a string".to_string())
        };
        match shape {
            Ok((planes, plane_bytes)) => {
                self.open = true;
                Event::Begin(Header { id, planes, plane_bytes })
            }
            Err(message) => {
                // Its bytes frames follow: skip them until the next image.
                self.resync = true;
                self.open = false;
                Event::BadImage { id, message }
            }
        }
    }

    /// Reads and drops the `n` raw bytes of a skipped `bytes` frame (fewer if the stream ends).
    fn skip(&mut self, n: u64) -> io::Result<()> {
        io::copy(&mut (&mut self.input).take(n), &mut io::sink())?;
        Ok(())
    }

    /// Reads up to a piece of the current `bytes` frame.
    fn data(&mut self, mut buf: Vec<u8>) -> io::Result<Event> {
        let want = self.pending.min(PIECE as u64) as usize;
        buf.clear();
        let got = (&mut self.input).take(want as u64).read_to_end(&mut buf)?;
        if got < want {
            let missing = self.pending - got as u64;
            self.pending = 0;
            self.open = false;
            return Ok(Event::Truncated { missing });
        }
        self.pending -= got as u64;
        Ok(Event::Data(buf))
    }

    /// Reads one line into `self.line`; `Some(true)` if it was cut at [`MAX_LINE`] (the rest
    /// of it is discarded), `None` at the end of the stream.
    fn read_line(&mut self) -> io::Result<Option<bool>> {
        self.line.clear();
        let n = (&mut self.input).take(MAX_LINE as u64).read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(None);
        }
        if self.line.last() == Some(&b'\n') || n < MAX_LINE {
            return Ok(Some(false));
        }
        // Discard the rest of the over-long line.
        loop {
            let chunk = self.input.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.input.consume(i + 1);
                    break;
                }
                None => {
                    let len = chunk.len();
                    self.input.consume(len);
                }
            }
        }
        Ok(Some(true))
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn describe_garbage(text: &[u8]) -> String {
    let shown: String = String::from_utf8_lossy(&text[..text.len().min(60)]).escape_debug().collect();
    format!("not a frame: \"{shown}{}\"", if text.len() > 60 { "…" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(input: &[u8]) -> Vec<String> {
        let mut reader = Reader::new(input);
        let mut out = Vec::new();
        while let Some(event) = reader.next_event(Vec::new()).unwrap() {
            out.push(match event {
                Event::Begin(h) => format!("begin {} {}x{}", h.id, h.planes, h.plane_bytes),
                Event::Data(d) => format!("data {}", d.len()),
                Event::End => "end".into(),
                Event::Abort(why) => format!("abort {why}"),
                Event::Garbage(message) => format!("garbage {message}"),
                Event::BadImage { id, message } => format!("bad image {id} {message}"),
                Event::Stray { bytes } => format!("stray {bytes}"),
                Event::Truncated { missing } => format!("truncated {missing}"),
            });
        }
        out
    }

    #[test]
    fn raw_bytes_may_hold_newlines_and_braces() {
        let mut input = b"{\"image\": 1, \"planes\": 1, \"plane_bytes\": 4}\n{\"bytes\": 4}\n".to_vec();
        input.extend_from_slice(b"\n{\n}");
        input.extend_from_slice(b"{\"end\": true}\n");
        assert_eq!(events(&input), ["begin 1 1x4", "data 4", "end"]);
    }

    #[test]
    fn garbage_skips_to_the_next_image() {
        let input = b"{\"image\": 1, \"planes\": 1, \"plane_bytes\": 2}\nxx\n{\"bytes\": 2}\nab{\"end\": true}\n\
                      {\"image\": \"b\", \"planes\": 1, \"plane_bytes\": 1}\n{\"bytes\": 1}\nz{\"end\": true}\n";
        assert_eq!(
            events(input),
            ["begin 1 1x2", "garbage not a frame: \"xx\"", "begin \"b\" 1x1", "data 1", "end"]
        );
    }

    #[test]
    fn bad_image_frames_are_named_and_skipped() {
        let input = b"{\"image\": 7, \"planes\": 0, \"plane_bytes\": 2}\n{\"bytes\": 2}\nab{\"end\": true}\n\
                      {\"image\": [1], \"planes\": 1, \"plane_bytes\": 1}\n";
        let got = events(input);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("bad image 7 an image has at least one plane"), "{got:?}");
        assert!(got[1].contains("a number or a string"), "{got:?}");
    }

    #[test]
    fn skipped_frames_are_skipped_by_their_count_and_stray_bytes_are_one_event() {
        // The bad image's bytes hold what looks like an image frame: it is not read as one.
        let input = b"{\"image\": 7, \"planes\": 0, \"plane_bytes\": 1}\n{\"bytes\": 58}\n\
                      {\"image\": 9, \"planes\": 1, \"plane_bytes\": 1}\n{\"end\": true}\n\
                      {\"end\": true}\n{\"image\": 2, \"planes\": 1, \"plane_bytes\": 1}\n{\"abort\": \"x\"}\n\
                      {\"bytes\": 3}\nabc{\"bytes\": 1}\n\n";
        let got = events(input);
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(got[0].starts_with("bad image 7 "), "{got:?}");
        assert_eq!(got[1..], ["begin 2 1x1", "abort x", "stray 3", "stray 1"]);
    }

    #[test]
    fn frames_have_exactly_their_keys() {
        for line in [
            "{\"bytes\": 1, \"end\": true}",
            "{\"end\": true, \"x\": 0}",
            "{\"abort\": 1}",
            "{\"end\": \"yes\"}",
            "[1]",
        ] {
            let input = format!("{{\"image\": 1, \"planes\": 1, \"plane_bytes\": 1}}\n{line}\n");
            let got = events(input.as_bytes());
            assert_eq!(got.len(), 2, "{line}: {got:?}");
            assert!(got[1].starts_with("garbage not a frame"), "{line}: {got:?}");
        }
        let input = b"{\"image\": \"x\", \"planes\": 1, \"plane_bytes\": 1, \"extra\": 1}\n";
        assert_eq!(
            events(input),
            ["bad image \"x\" an image frame has no key \"extra\" (only image, planes, plane_bytes)"]
        );
    }

    #[test]
    fn a_stream_cut_inside_a_bytes_frame_says_how_much_is_missing() {
        let input = b"{\"image\": 1, \"planes\": 2, \"plane_bytes\": 4}\n{\"bytes\": 8}\nabc";
        assert_eq!(events(input), ["begin 1 2x4", "truncated 5"]);
    }

    #[test]
    fn large_frames_come_in_bounded_pieces() {
        let n = PIECE * 2 + 5;
        let mut input =
            format!("{{\"image\": 1, \"planes\": 1, \"plane_bytes\": {n}}}\n{{\"bytes\": {n}}}\n")
                .into_bytes();
        input.resize(input.len() + n, 0);
        input.extend_from_slice(b"{\"end\": true}\n");
        let want = vec![
            "begin 1 1x".to_string() + &n.to_string(),
            format!("data {PIECE}"),
            format!("data {PIECE}"),
            "data 5".into(),
            "end".into(),
        ];
        assert_eq!(events(&input), want);
    }

    #[test]
    fn an_over_long_line_is_garbage_once() {
        let mut input = vec![b'x'; MAX_LINE * 3];
        input.extend_from_slice(b"\n{\"image\": 2, \"planes\": 1, \"plane_bytes\": 1}\n");
        let got = events(&input);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("longer than"), "{got:?}");
        assert_eq!(got[1], "begin 2 1x1");
    }
}
