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
//! Anything else where a control frame is due is garbage: it ends the current image with an
//! error, and the reader skips lines until the next `image` frame. The bytes of a `bytes`
//! frame are never interpreted, so pixel data can hold any value, newlines included.

use serde::Deserialize;
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
    /// A malformed frame (its message), a stray line, or an `image` frame with bad fields.
    /// `id` is the image it names, when it names one.
    Garbage { message: String, id: Option<Value> },
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageFrame {
    image: Value,
    planes: u64,
    plane_bytes: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Control {
    Image(ImageFrame),
    Bytes { bytes: u64 },
    End { end: bool },
    Abort { abort: String },
}

/// Reads events from a framed stream; bounded memory whatever the frames declare.
pub struct Reader<R> {
    input: R,
    /// Raw bytes still due in the current `bytes` frame.
    pending: u64,
    /// After garbage: skip lines until an `image` frame.
    resync: bool,
    line: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    pub fn new(input: R) -> Self {
        Reader { input, pending: 0, resync: false, line: Vec::new() }
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
                self.resync = true;
                let message = format!("a control line longer than {MAX_LINE} bytes");
                return Ok(Some(Event::Garbage { message, id: None }));
            }
            let text = trim_newline(&self.line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue; // blank lines separate nothing; allowed anywhere a frame is due
            }
            let parsed: Result<Control, _> = serde_json::from_slice(text);
            if self.resync && !matches!(parsed, Ok(Control::Image(_))) {
                continue;
            }
            self.resync = false;
            let event = match parsed {
                Ok(Control::Image(frame)) => self.begin(frame),
                Ok(Control::Bytes { bytes: 0 }) => continue,
                Ok(Control::Bytes { bytes }) => {
                    self.pending = bytes;
                    return self.data(spare).map(Some);
                }
                Ok(Control::End { end: true }) => Event::End,
                Ok(Control::Abort { abort }) => Event::Abort(abort),
                Ok(Control::End { end: false }) | Err(_) => {
                    self.resync = true;
                    Event::Garbage { message: describe_garbage(text), id: None }
                }
            };
            return Ok(Some(event));
        }
    }

    fn begin(&mut self, frame: ImageFrame) -> Event {
        let ImageFrame { image, planes, plane_bytes } = frame;
        let problem = if !(image.is_string() || image.is_u64() || image.is_i64()) {
            Some("an image id is a number or a string".to_string())
        } else if planes == 0 || plane_bytes == 0 {
            Some(format!(
                "an image has at least one plane of at least one byte (got {planes} × {plane_bytes})"
            ))
        } else if planes.checked_mul(plane_bytes).is_none() {
            Some(format!("{planes} planes of {plane_bytes} bytes overflow a 64-bit count"))
        } else {
            None
        };
        match problem {
            Some(message) => {
                // Its bytes frames follow: skip them as garbage until the next image.
                self.resync = true;
                Event::Garbage { message, id: Some(image) }
            }
            None => Event::Begin(Header { id: image, planes, plane_bytes }),
        }
    }

    /// Reads up to a piece of the current `bytes` frame.
    fn data(&mut self, mut buf: Vec<u8>) -> io::Result<Event> {
        let want = self.pending.min(PIECE as u64) as usize;
        buf.clear();
        let got = (&mut self.input).take(want as u64).read_to_end(&mut buf)?;
        if got < want {
            let missing = self.pending - got as u64;
            self.pending = 0;
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
                Event::Garbage { message, id } => format!("garbage {id:?} {message}"),
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
            ["begin 1 1x2", "garbage None not a frame: \"xx\"", "begin \"b\" 1x1", "data 1", "end"]
        );
    }

    #[test]
    fn bad_image_frames_are_named_and_skipped() {
        let input = b"{\"image\": 7, \"planes\": 0, \"plane_bytes\": 2}\n{\"bytes\": 2}\nab{\"end\": true}\n\
                      {\"image\": [1], \"planes\": 1, \"plane_bytes\": 1}\n";
        let got = events(input);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("garbage Some(Number(7)) an image has at least one plane"), "{got:?}");
        assert!(got[1].contains("a number or a string"), "{got:?}");
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
