//! One pass over a byte stream: Data-Code, Instance-Code (BLAKE3) and OMERO checksums fed
//! from the same buffer, on parallel threads when the buffer is large.

use crate::engine::beneath::{self, Roots};
use crate::engine::budget::Budget;
use crate::engine::checksum::{Algorithm, Checksum};
use crate::engine::codes::Digests;
use crate::engine::datacode::DataHasher;
use crate::engine::source;
use crate::error::{ErrorKind, Failure};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// Buffers at least this large are split between threads.
const PARALLEL_MIN: usize = 1 << 20;
/// BLAKE3's own multi-threading pays off above this size.
const BLAKE3_RAYON_MIN: usize = 4 << 20;

/// How to hash: fixed for a whole run.
#[derive(Clone, Debug, Default)]
pub struct HashConfig {
    /// Split large buffers across the rayon pool.
    pub parallel: bool,
    /// Map regular files (else read them).
    pub mmap: bool,
    /// OMERO checksums to compute alongside.
    pub checksums: Vec<Algorithm>,
    /// With `--root`: the roots files are opened beneath (see `beneath`); else files are
    /// opened by name.
    pub roots: Option<Arc<Roots>>,
    /// The run's time budget and file size ceiling.
    pub budget: Budget,
}

/// The running state of one record's stream.
pub struct StreamHasher {
    data: DataHasher,
    rest: InstanceHasher,
    parallel: bool,
}

/// Everything of a stream's pass but its Data-Code: BLAKE3 (the Instance-Code), the size and
/// the OMERO checksums. Kept apart so that a group's files can share their Data-Code's
/// chunking with the group's while each stream keeps its own BLAKE3 (`group`).
pub struct InstanceHasher {
    instance: blake3::Hasher,
    size: u64,
    checksums: Vec<Checksum>,
}

/// What a finished stream yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub digests: Digests,
    pub checksums: Vec<(Algorithm, String)>,
}

impl StreamHasher {
    pub fn new(config: &HashConfig) -> Self {
        StreamHasher {
            data: DataHasher::new(config.parallel),
            rest: InstanceHasher::new(config),
            parallel: config.parallel,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        update_with(&mut self.data, bytes, &mut [&mut self.rest], bytes, self.parallel);
    }

    /// The Data-Code's hasher and the rest, for a caller that feeds them different bytes.
    pub fn parts_mut(&mut self) -> (&mut DataHasher, &mut InstanceHasher) {
        (&mut self.data, &mut self.rest)
    }

    pub fn finish(self) -> Outcome {
        self.rest.finish(self.data.finalize())
    }
}

impl InstanceHasher {
    pub fn new(config: &HashConfig) -> Self {
        InstanceHasher {
            instance: blake3::Hasher::new(),
            size: 0,
            checksums: config.checksums.iter().map(|&a| Checksum::new(a)).collect(),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if bytes.len() >= BLAKE3_RAYON_MIN && rayon::current_num_threads() > 1 {
            self.instance.update_rayon(bytes);
        } else {
            self.instance.update(bytes);
        }
        for c in self.checksums.iter_mut() {
            c.update(bytes);
        }
    }

    /// The stream's outcome, with the Data-Code's digest computed elsewhere.
    pub fn finish(self, data: [u8; 32]) -> Outcome {
        let digests = Digests { data, instance: *self.instance.finalize().as_bytes(), filesize: self.size };
        let checksums = self.checksums.into_iter().map(|c| (c.algorithm(), c.finish())).collect();
        Outcome { digests, checksums }
    }
}

/// One step of a pass: `data_bytes` to the Data-Code's hasher, `bytes` (the same bytes, or a
/// longer stretch ending with them) to each of `rest`. On a large buffer, BLAKE3 and the
/// checksums run beside the Data-Code's sequential stitching.
pub fn update_with(
    data: &mut DataHasher,
    data_bytes: &[u8],
    rest: &mut [&mut InstanceHasher],
    bytes: &[u8],
    parallel: bool,
) {
    let threads = rayon::current_num_threads();
    let update_rest = || match rest {
        [a, b] if parallel && threads > 1 && bytes.len() >= PARALLEL_MIN => {
            rayon::join(|| a.update(bytes), || b.update(bytes));
        }
        rest => rest.iter_mut().for_each(|r| r.update(bytes)),
    };
    if parallel && bytes.len() >= PARALLEL_MIN && threads > 1 {
        data.update_alongside(data_bytes, update_rest);
    } else {
        data.update(data_bytes);
        update_rest();
    }
}

/// Feeds `bytes` to several streams at once (a file and the group it belongs to).
pub fn update_all(hashers: &mut [&mut StreamHasher], bytes: &[u8]) {
    match hashers {
        [one] => one.update(bytes),
        [a, b] if a.parallel && bytes.len() >= PARALLEL_MIN => {
            rayon::join(|| a.update(bytes), || b.update(bytes));
        }
        _ => hashers.iter_mut().for_each(|h| h.update(bytes)),
    }
}

/// Opens `path` for hashing: regular files only, beneath the run's roots when it has some,
/// within its budget. Anything else (FIFO, device, socket, directory) is refused before it is
/// opened, so a FIFO cannot block the run; a file over the size ceiling is refused before a
/// byte of it is read.
pub fn open_regular(path: &Path, config: &HashConfig) -> Result<(File, std::fs::Metadata), Failure> {
    config.budget.check_time()?;
    let file = match &config.roots {
        Some(roots) => {
            // Not by name through links: a link here appeared after the path was checked,
            // and the open below refuses it.
            let meta = std::fs::symlink_metadata(path).map_err(|e| Failure::io(&e))?;
            if !meta.file_type().is_symlink() {
                refuse_non_regular(&meta)?;
            }
            roots.open(path, beneath::READ_FLAGS)?
        }
        None => {
            let meta = std::fs::metadata(path).map_err(|e| Failure::io(&e))?;
            refuse_non_regular(&meta)?;
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)
                .map_err(|e| Failure::io(&e))?
        }
    };
    // The path may have been swapped between stat and open: judge what was opened.
    let meta = file.metadata().map_err(|e| Failure::io(&e))?;
    refuse_non_regular(&meta)?;
    refuse_generated(&file)?;
    config.budget.check_size(meta.len())?;
    Ok((file, meta))
}

/// File systems whose files are made as they are read (size 0 or a guess): `/proc`, `/sys`
/// and their kin. Their "size" cannot be checked against what was read.
const GENERATED_FS: [(libc::c_long, &str); 5] = [
    (0x9fa0, "procfs"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x6366_7362, "securityfs"),
];

fn refuse_generated(file: &File) -> Result<(), Failure> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: fstatfs fills the zeroed struct we own from our own open descriptor.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return Ok(()); // no answer: treat it as an ordinary file
    }
    match GENERATED_FS.iter().find(|(magic, _)| fs.f_type as libc::c_long == *magic) {
        Some((_, name)) => Err(Failure::new(
            ErrorKind::NotAFile,
            format!(
                "a generated file ({name}): its content is made as it is read and has no fixed size; \
                 to hash what it gives now, pass it on standard input ('-')"
            ),
        )),
        None => Ok(()),
    }
}

fn refuse_non_regular(meta: &std::fs::Metadata) -> Result<(), Failure> {
    let t = meta.file_type();
    let what = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "is a directory"
    } else if t.is_fifo() {
        "is a FIFO; pass it as '-' on standard input to hash a stream"
    } else if t.is_block_device() || t.is_char_device() {
        "is a device"
    } else if t.is_socket() {
        "is a socket"
    } else {
        "is not a regular file"
    };
    Err(Failure::new(ErrorKind::NotAFile, format!("not a regular file: {what}")))
}

/// Hashes one regular file into the given streams.
pub fn feed_path(path: &Path, config: &HashConfig, sink: &mut dyn FnMut(&[u8])) -> Result<u64, Failure> {
    let (file, meta) = open_regular(path, config)?;
    source::feed_file_until(&file, &meta, config.mmap, config.budget.deadline, sink)
}

/// Hashes one regular file.
pub fn hash_path(path: &Path, config: &HashConfig) -> Result<Outcome, Failure> {
    let mut hasher = StreamHasher::new(config);
    feed_path(path, config, &mut |b| hasher.update(b))?;
    Ok(hasher.finish())
}

/// Hashes a stream to its end.
pub fn hash_reader(reader: &mut dyn Read, config: &HashConfig) -> Result<Outcome, Failure> {
    let mut hasher = StreamHasher::new(config);
    source::feed_reader(reader, config.budget.deadline, &mut |b| hasher.update(b))?;
    Ok(hasher.finish())
}
