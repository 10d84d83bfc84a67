//! The `pixels` command: pixel codes (IMAGEWALK) of a batch of images from one framed plane
//! stream (format in `engine::planes`), one JSON record per image.
//!
//! A reader thread parses the frames while the calling thread hashes, so reading the pipe
//! overlaps hashing; the two hand pieces of at most `planes::PIECE` bytes back and forth
//! through bounded channels, which bounds memory to a few pieces whatever an image's size.
//! Each piece is hashed on the run's pool (the Data-Code split across its threads).

use crate::cli::PixelsArgs;
use crate::engine::codes::Codes;
use crate::engine::pixelcode::{base64, ImageHasher, PixelOutcome};
use crate::engine::planes::{Event, Header, Reader};
use crate::error::{ErrorKind, Failure};
use crate::exit::{Error, Status};
use crate::records::{PixelLine, SimprintLine};
use crate::streams::{self, Inputs, Output};
use serde_json::Value;
use std::ffi::OsStr;
use std::io::{self, BufRead};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Pieces in flight between the reader and the hasher.
const IN_FLIGHT: usize = 3;

/// Runs `pixels`; returns the exit status.
pub fn run(args: &PixelsArgs) -> Result<Status, Error> {
    streams::set_priority(args.priority);
    let name = args.input.clone().unwrap_or_else(|| "-".into());
    let input = Inputs::default().open(&name, "the plane stream")?;
    let pool = streams::pool(args.threads)?;
    let mut output = Output::default();
    let (events_tx, events_rx) = sync_channel::<io::Result<Event>>(IN_FLIGHT);
    let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
    // Not joined: when the run ends early (standard output closed), the reader may be blocked
    // on an input that sends nothing more; the process ends without waiting for it.
    std::thread::Builder::new()
        .name("omero-iscc-frames".into())
        .spawn(move || read_frames(input, events_tx, spare_rx))
        .map_err(|e| Error::Usage(format!("cannot start the reader thread: {e}")))?;
    hash_images(&events_rx, &spare_tx, &pool, args.simprints, &mut output, &name)
}

/// The reader thread: frames to events, until the stream ends or the hasher hangs up.
fn read_frames(
    input: Box<dyn BufRead + Send>,
    events: SyncSender<io::Result<Event>>,
    spares: Receiver<Vec<u8>>,
) {
    let mut reader = Reader::new(input);
    loop {
        let spare = spares.try_recv().unwrap_or_default();
        match reader.next_event(spare) {
            Ok(None) => return,
            Ok(Some(event)) => {
                if events.send(Ok(event)).is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = events.send(Err(error));
                return;
            }
        }
    }
}

/// The image being hashed.
struct Open {
    header: Header,
    hasher: ImageHasher,
    seen: u64,
    /// The first fault in its frames; the image is reported failed at its end.
    fault: Option<Failure>,
}

fn hash_images(
    events: &Receiver<io::Result<Event>>,
    spares: &SyncSender<Vec<u8>>,
    pool: &rayon::ThreadPool,
    simprints: bool,
    output: &mut Output,
    name: &OsStr,
) -> Result<Status, Error> {
    let mut failed = false;
    let mut open: Option<Open> = None;
    let mut emit = |line: PixelLine, output: &mut Output| -> Result<(), Error> {
        failed |= line.error.is_some();
        let mut bytes = serde_json::to_vec(&line).expect("records always serialize");
        bytes.push(b'\n');
        output.record(&bytes)
    };
    for event in events.iter() {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                let failure = Failure::new(
                    ErrorKind::Io,
                    format!("reading {}: {}", name.to_string_lossy(), streams::plain(&error)),
                );
                if let Some(image) = open.take() {
                    emit(failed_line(image.header.id, image.hasher.planes_done(), failure), output)?;
                } else {
                    emit(failed_line(Value::Null, 0, failure), output)?;
                }
                break;
            }
        };
        match event {
            Event::Begin(header) => {
                end_unfinished(&mut open, &mut emit, output)?;
                let hasher = ImageHasher::new(header.plane_bytes, simprints, pool.current_num_threads() > 1);
                open = Some(Open { header, hasher, seen: 0, fault: None });
            }
            Event::BadImage { id, message } => {
                // A new image began, however bad its frame: the open one ended unfinished, and
                // the bad frame's image gets its own record.
                end_unfinished(&mut open, &mut emit, output)?;
                emit(failed_line(id, 0, Failure::new(ErrorKind::InvalidInput, message)), output)?;
            }
            Event::Data(piece) => {
                // The reader sends bytes only while an image is open (stray frames are skipped).
                if let Some(image) = open.as_mut().filter(|image| image.fault.is_none()) {
                    let room = image.header.total() - image.seen;
                    if piece.len() as u64 > room {
                        let message = format!(
                            "more pixel bytes than declared: {} planes of {} bytes",
                            image.header.planes, image.header.plane_bytes
                        );
                        image.fault = Some(Failure::new(ErrorKind::InvalidInput, message));
                    } else {
                        pool.install(|| image.hasher.update(&piece));
                        image.seen += piece.len() as u64;
                    }
                }
                let _ = spares.try_send(piece);
            }
            Event::Stray { .. } => {
                let failure = Failure::new(ErrorKind::InvalidInput, "pixel bytes outside an image");
                emit(failed_line(Value::Null, 0, failure), output)?;
            }
            Event::End => match open.take() {
                Some(image) => emit(finish(image), output)?,
                None => {
                    let failure = Failure::new(ErrorKind::InvalidInput, "an end frame outside an image");
                    emit(failed_line(Value::Null, 0, failure), output)?;
                }
            },
            Event::Abort(why) => {
                let failure = Failure::new(ErrorKind::Io, format!("the producer gave the image up: {why}"));
                let (id, planes) =
                    open.take().map(|i| (i.header.id, i.hasher.planes_done())).unwrap_or_default();
                emit(failed_line(id, planes, failure), output)?;
            }
            Event::Garbage(message) => {
                let failure = Failure::new(ErrorKind::InvalidInput, message);
                let (id, planes) =
                    open.take().map(|i| (i.header.id, i.hasher.planes_done())).unwrap_or_default();
                emit(failed_line(id, planes, failure), output)?;
            }
            Event::Truncated { missing } => {
                let message = format!("the stream ended {missing} byte(s) short of a bytes frame");
                let failure = Failure::new(ErrorKind::InvalidInput, message);
                let (id, planes) =
                    open.take().map(|i| (i.header.id, i.hasher.planes_done())).unwrap_or_default();
                emit(failed_line(id, planes, failure), output)?;
            }
        }
    }
    if let Some(image) = open.take() {
        let failure = short(&image, "the stream ended before this image's end frame");
        emit(failed_line(image.header.id, image.hasher.planes_done(), failure), output)?;
    }
    Ok(Status::from_failed(failed))
}

/// Ends the open image, if any, as unfinished: the next image began before its end frame.
fn end_unfinished(
    open: &mut Option<Open>,
    emit: &mut impl FnMut(PixelLine, &mut Output) -> Result<(), Error>,
    output: &mut Output,
) -> Result<(), Error> {
    match open.take() {
        Some(image) => {
            let failure = short(&image, "the next image began before this one's end frame");
            emit(failed_line(image.header.id, image.hasher.planes_done(), failure), output)
        }
        None => Ok(()),
    }
}

/// The failure of an image that ended early.
fn short(image: &Open, why: &str) -> Failure {
    let Header { planes, plane_bytes, .. } = image.header;
    let message = format!(
        "{why}: {} of {planes} planes ({} of {} bytes)",
        image.hasher.planes_done(),
        image.seen,
        planes * plane_bytes
    );
    image.fault.clone().unwrap_or_else(|| Failure::new(ErrorKind::InvalidInput, message))
}

/// The record of an image whose end frame came.
fn finish(image: Open) -> PixelLine {
    if image.fault.is_some() || image.seen != image.header.total() {
        let failure = short(&image, "the end frame came early");
        return failed_line(image.header.id, image.hasher.planes_done(), failure);
    }
    let PixelOutcome { digests, planes, simprints } = image.hasher.finish();
    let Codes { iscc, datahash, filesize, units } = digests.codes(true);
    PixelLine {
        image: image.header.id,
        iscc: Some(iscc),
        datahash: Some(datahash),
        size: Some(filesize),
        planes,
        plane_bytes: Some(image.header.plane_bytes),
        units: Some(units),
        simprints: simprints.map(|all| {
            all.into_iter()
                .map(|s| SimprintLine { simprint: base64(&s.digest), offset: s.plane, size: s.size })
                .collect()
        }),
        error: None,
    }
}

fn failed_line(image: Value, planes: u64, failure: Failure) -> PixelLine {
    PixelLine {
        image,
        iscc: None,
        datahash: None,
        size: None,
        planes,
        plane_bytes: None,
        units: None,
        simprints: None,
        error: Some(failure),
    }
}
