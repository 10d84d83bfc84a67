//! Getting a file's bytes to the hashers: memory-mapped windows for regular files, a reused
//! buffer for small files, pipes and standard input.
//!
//! Windows are a few tens of MiB, advised sequential, and unmapped as soon as they are
//! hashed, so resident memory stays bounded whatever the file's size; the next window's
//! range is handed to the kernel's read-ahead while the current one is hashed. A file that
//! changes while it is read (size or modification time differ between windows, or it
//! shrinks under a window: see `sigbus`) fails with `changed_while_reading`. With a deadline
//! (`--time-budget`), a file is given up between two windows or buffers once it has passed.

use crate::engine::budget::check_deadline;
use crate::engine::sigbus::Watch;
use crate::error::{ErrorKind, Failure};
use memmap2::{Advice, MmapOptions};
use std::cell::RefCell;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Bytes mapped at a time. A multiple of every page size in use.
pub const WINDOW: u64 = 32 << 20;
/// Files smaller than this are read: mapping costs more than copying them.
pub const MMAP_MIN: u64 = 1 << 20;
/// Read buffer size: large enough for the hashers to split a buffer across threads.
const BUFFER: usize = 8 << 20;

/// Bytes fed to hashers so far, by every thread (for the progress bar).
static BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// Bytes fed to hashers since the process started.
pub fn bytes_read() -> u64 {
    BYTES_READ.load(Ordering::Relaxed)
}

/// Hands `bytes` to `sink` and counts them.
fn deliver(sink: &mut dyn FnMut(&[u8]), bytes: &[u8]) {
    sink(bytes);
    BYTES_READ.fetch_add(bytes.len() as u64, Ordering::Relaxed);
}

thread_local! {
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Borrows a read buffer of this thread, returning it afterwards. (Taken out of the thread's
/// pool rather than borrowed in place: a sink may run rayon work that reads on this thread.)
/// The buffer is `need` bytes long (at most [`BUFFER`]), so small files keep small buffers.
fn with_buffer<T>(need: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    let need = need.clamp(1, BUFFER);
    let mut buf = BUFFERS.with(|b| b.borrow_mut().pop()).unwrap_or_default();
    if buf.len() < need {
        buf.resize(need, 0);
    }
    let out = f(&mut buf[..need]);
    BUFFERS.with(|b| b.borrow_mut().push(buf));
    out
}

/// What identifies a file's content state cheaply.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp { size: meta.len(), mtime: (meta.mtime(), meta.mtime_nsec()) }
    }

    fn now(file: &File) -> Result<Stamp, Failure> {
        file.metadata().map(|m| Stamp::of(&m)).map_err(|e| Failure::io(&e))
    }
}

fn changed(what: &str) -> Failure {
    Failure::new(ErrorKind::ChangedWhileReading, format!("file changed while it was read ({what})"))
}

/// Feeds an open regular file to `sink`; returns the number of bytes fed.
pub fn feed_file(
    file: &File,
    meta: &Metadata,
    use_mmap: bool,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<u64, Failure> {
    feed_file_until(file, meta, use_mmap, None, sink)
}

/// [`feed_file`] that gives the file up (with a `budget` failure) at the first window or buffer
/// that starts after `deadline`.
pub fn feed_file_until(
    file: &File,
    meta: &Metadata,
    use_mmap: bool,
    deadline: Option<Instant>,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<u64, Failure> {
    let before = Stamp::of(meta);
    let fed = if use_mmap && before.size >= MMAP_MIN {
        feed_mapped(file, before, deadline, sink)?
    } else {
        feed_read(file, before.size, deadline, sink)?
    };
    let after = Stamp::now(file)?;
    if after != before || fed != before.size {
        return Err(changed(if after.size != before.size { "size" } else { "modification time" }));
    }
    Ok(fed)
}

fn feed_mapped(
    file: &File,
    stamp: Stamp,
    deadline: Option<Instant>,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<u64, Failure> {
    let mut offset = 0;
    while offset < stamp.size {
        check_deadline(deadline)?;
        let len = WINDOW.min(stamp.size - offset);
        let next = offset + len;
        if next < stamp.size {
            // SAFETY: posix_fadvise only advises the kernel about a range of our open file.
            unsafe {
                libc::posix_fadvise(
                    file.as_raw_fd(),
                    next as libc::off_t,
                    WINDOW.min(stamp.size - next) as libc::off_t,
                    libc::POSIX_FADV_WILLNEED,
                );
            }
        }
        if is_hole(file, offset, len) {
            // Nothing stored here: hash zeros from memory instead of making the kernel fill
            // the page cache with zero pages (slow, and it evicts useful data).
            deliver(sink, &zeros()[..len as usize]);
            if Stamp::now(file)? != stamp {
                return Err(changed("size or modification time"));
            }
            offset = next;
            continue;
        }
        // SAFETY: the mapping is read-only and private to this function. Another process may
        // still change the file under it: changed bytes give a wrong code only for a file whose
        // size or mtime then differ (checked after each window); a truncation raises SIGBUS,
        // which `Watch` turns into zero pages and a `changed_while_reading` failure.
        let map = unsafe { MmapOptions::new().offset(offset).len(len as usize).populate().map(file) };
        let map = match map {
            Ok(map) => map,
            // A file system that cannot map: read this window instead.
            Err(_) => {
                feed_range(file, offset, len, deadline, sink)?;
                offset = next;
                continue;
            }
        };
        let _ = map.advise(Advice::Sequential);
        let Some(watch) = Watch::new(map.as_ptr(), map.len()) else {
            drop(map);
            feed_range(file, offset, len, deadline, sink)?;
            offset = next;
            continue;
        };
        deliver(sink, &map);
        let faulted = watch.faulted();
        drop(watch);
        drop(map);
        if faulted {
            return Err(changed("it shrank"));
        }
        if Stamp::now(file)? != stamp {
            return Err(changed("size or modification time"));
        }
        offset = next;
    }
    Ok(offset)
}

/// Whether `[offset, offset + len)` of the file is one hole (no data stored), as far as the
/// file system can tell (`SEEK_DATA`); `false` when it cannot.
fn is_hole(file: &File, offset: u64, len: u64) -> bool {
    // SAFETY: lseek on our own open descriptor; the file position is not used by this reader
    // (mapping and positional reads ignore it).
    let data = unsafe { libc::lseek(file.as_raw_fd(), offset as libc::off_t, libc::SEEK_DATA) };
    if data < 0 {
        // ENXIO: no data from `offset` to the end of the file. Anything else: no answer.
        return io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
    }
    data as u64 >= offset + len
}

/// A window of zeros, allocated once and never written (its pages stay the shared zero page).
fn zeros() -> &'static [u8] {
    static ZEROS: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    ZEROS.get_or_init(|| vec![0u8; WINDOW as usize])
}

/// Reads `[offset, offset + len)` with positional reads.
fn feed_range(
    file: &File,
    offset: u64,
    len: u64,
    deadline: Option<Instant>,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), Failure> {
    with_buffer(len as usize, |buf| {
        let mut done = 0;
        while done < len {
            check_deadline(deadline)?;
            let want = (len - done).min(buf.len() as u64) as usize;
            let n = file.read_at(&mut buf[..want], offset + done).map_err(|e| Failure::io(&e))?;
            if n == 0 {
                return Err(changed("it shrank"));
            }
            deliver(sink, &buf[..n]);
            done += n as u64;
        }
        Ok(())
    })
}

fn feed_read(
    mut file: &File,
    size: u64,
    deadline: Option<Instant>,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<u64, Failure> {
    // One byte more than the size, so that a file that grew is noticed in the same read.
    let need = usize::try_from(size).unwrap_or(usize::MAX).saturating_add(1);
    read_all(&mut file, need, deadline, sink)
}

/// Reads a small regular file whole into `buf`, which is exactly as long as the file was when
/// it was opened (`meta`): with the checks of every read (a file that grew, shrank or changed
/// fails with `changed_while_reading`). For batches of small files read straight into one
/// buffer, without a copy.
pub fn read_whole(file: &File, meta: &Metadata, buf: &mut [u8]) -> Result<(), Failure> {
    let before = Stamp::of(meta);
    if before.size != buf.len() as u64 {
        return Err(changed("size"));
    }
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], done as u64) {
            Ok(0) => return Err(changed("it shrank")),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::io(&e)),
        }
    }
    let mut more = [0u8; 1];
    if file.read_at(&mut more, done as u64).map_err(|e| Failure::io(&e))? > 0 {
        return Err(changed("size"));
    }
    if Stamp::now(file)? != before {
        return Err(changed("size or modification time"));
    }
    BYTES_READ.fetch_add(done as u64, Ordering::Relaxed);
    Ok(())
}

/// Feeds a stream (standard input, a pipe) until its end, or until `deadline`.
pub fn feed_reader(
    reader: &mut dyn Read,
    deadline: Option<Instant>,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<u64, Failure> {
    read_all(reader, BUFFER, deadline, sink)
}

fn read_all(
    reader: &mut dyn Read,
    need: usize,
    deadline: Option<Instant>,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<u64, Failure> {
    with_buffer(need, |buf| {
        let mut total = 0u64;
        loop {
            check_deadline(deadline)?;
            // Fill the buffer before hashing: pipes deliver small pieces, hashers like big ones.
            let mut filled = 0;
            while filled < buf.len() {
                match reader.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Failure::io(&e)),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            deliver(sink, &buf[..filled]);
            total += filled as u64;
            if filled < buf.len() {
                return Ok(total);
            }
        }
    })
}
