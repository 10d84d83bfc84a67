//! Many files as one stream (a `--groups` group, a `--tree`), on every core.
//!
//! The stream's code is over the files' bytes concatenated in order, so its Data-Code cannot be
//! cut per file. Small files are therefore read in batches (in parallel), and each batch is
//! handed to the stream's hasher as one large buffer, which the parallel chunker and BLAKE3
//! split across the pool; meanwhile each file's own code is computed on the other threads, one
//! file per task. A large file is mapped in windows and fed to its own hasher and the group's
//! at once, as a single file is. Every file is read once, and a failure names the file.

use crate::engine::hash::{self, HashConfig, Outcome, StreamHasher};
use crate::engine::source::{self, MMAP_MIN};
use crate::error::Failure;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Bytes of small files read and hashed as one batch.
const BATCH_BYTES: u64 = 16 << 20;
/// Files at most per batch (bounds the per-file bookkeeping of tiny files).
const BATCH_FILES: usize = 4096;

/// A group's code, and each file's (when asked for) in order.
pub struct GroupOutcome {
    /// The code of the concatenation; the first file's failure if any file failed.
    pub group: Result<Outcome, Failure>,
    /// Per file, when `per_file`; else empty.
    pub files: Vec<Result<Outcome, Failure>>,
}

/// Hashes `files` (already resolved, or why not; `names` name them in failures) as one stream,
/// and each on its own when `per_file`.
pub fn hash_group(
    files: &[Result<PathBuf, Failure>],
    names: &[String],
    config: &HashConfig,
    per_file: bool,
) -> GroupOutcome {
    if per_file && files.len() == 1 {
        // One file: its code is the group's (hashing it twice would double the work of the
        // commonest OMERO fileset).
        let own = files[0].clone().and_then(|p| hash::hash_path(&p, config));
        return GroupOutcome { group: own.clone().map_err(|f| f.at_name(&names[0])), files: vec![own] };
    }
    let mut group = StreamHasher::new(config);
    let mut failure: Option<Failure> = None;
    let mut outcomes: Vec<Result<Outcome, Failure>> =
        Vec::with_capacity(if per_file { files.len() } else { 0 });
    let sequential = HashConfig { parallel: false, ..config.clone() };
    let mut buffer: Vec<u8> = Vec::new(); // reused batch after batch: no new pages to fault in
    let mut start = 0;
    while start < files.len() {
        if failure.is_some() && !per_file {
            break; // the group has failed and no file's own code is asked for
        }
        let sizes = batch_sizes(files, start);
        if sizes.is_empty() {
            // One large file (or one that failed to resolve): fed to its hasher and the group's.
            let fed = feed_one(&files[start], config, &mut group, failure.is_none(), per_file);
            if let Err(f) = &fed {
                failure.get_or_insert_with(|| f.clone().at_name(&names[start]));
            }
            if per_file {
                outcomes.push(fed.map(|own| own.expect("per_file hashes the file on its own")));
            }
            start += 1;
            continue;
        }
        let end = start + sizes.len();
        // Read the batch in parallel, each file straight into its place in one buffer.
        buffer.clear();
        buffer.resize(sizes.iter().sum::<u64>() as usize, 0);
        let mut slices = Vec::with_capacity(sizes.len());
        let mut rest = buffer.as_mut_slice();
        for &size in &sizes {
            let (head, tail) = rest.split_at_mut(size as usize);
            slices.push(head);
            rest = tail;
        }
        let read: Vec<Result<(), Failure>> = files[start..end]
            .par_iter()
            .zip(slices.into_par_iter())
            .map(|(p, slot)| read_into(p, slot, config))
            .collect();
        // Each file's own code, one file per task, while the group's hasher takes the batch up
        // to its first failed file as one buffer (split again by the parallel chunker).
        let first_failed = read.iter().position(Result::is_err);
        let valid = first_failed.map_or(buffer.len(), |k| sizes[..k].iter().sum::<u64>() as usize);
        let bounds: Vec<usize> = std::iter::once(0)
            .chain(sizes.iter().scan(0usize, |at, &s| {
                *at += s as usize;
                Some(*at)
            }))
            .collect();
        let feed_group = failure.is_none();
        let (own, ()) = rayon::join(
            || {
                if !per_file {
                    return Vec::new();
                }
                read.par_iter()
                    .enumerate()
                    .map(|(k, r)| {
                        r.clone().map(|()| {
                            let mut h = StreamHasher::new(&sequential);
                            h.update(&buffer[bounds[k]..bounds[k + 1]]);
                            h.finish()
                        })
                    })
                    .collect()
            },
            || {
                if feed_group {
                    group.update(&buffer[..valid]);
                }
            },
        );
        if let Some(k) = first_failed {
            let f = read[k].clone().expect_err("the first failure");
            failure.get_or_insert_with(|| f.at_name(&names[start + k]));
        }
        outcomes.extend(own);
        start = end;
    }
    let group = match failure {
        Some(f) => Err(f),
        None => Ok(group.finish()),
    };
    GroupOutcome { group, files: outcomes }
}

/// The sizes of the small files of the batch that starts at `start`, up to the limits; empty
/// when the file at `start` is large or unresolved (it stands alone).
fn batch_sizes(files: &[Result<PathBuf, Failure>], start: usize) -> Vec<u64> {
    let mut sizes = Vec::new();
    let mut bytes = 0u64;
    for file in &files[start..] {
        if sizes.len() >= BATCH_FILES || bytes >= BATCH_BYTES {
            break;
        }
        match file.as_ref().ok().and_then(|p| small_size(p)) {
            Some(size) => {
                bytes += size;
                sizes.push(size);
            }
            None => break,
        }
    }
    sizes
}

/// The size of a regular file small enough to be read whole, else `None`.
fn small_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().filter(|m| m.is_file() && m.len() < MMAP_MIN).map(|m| m.len())
}

/// Reads a small file into its slot of the batch, with the checks of any read (a regular
/// file, not changed since its size was taken).
fn read_into(path: &Result<PathBuf, Failure>, slot: &mut [u8], config: &HashConfig) -> Result<(), Failure> {
    let path = path.as_ref().map_err(Clone::clone)?;
    let (file, meta) = hash::open_regular(path, config)?;
    source::read_whole(&file, &meta, slot)
}

/// Feeds one file to its own hasher (when `per_file`) and to the group's (while `to_group`).
fn feed_one(
    path: &Result<PathBuf, Failure>,
    config: &HashConfig,
    group: &mut StreamHasher,
    to_group: bool,
    per_file: bool,
) -> Result<Option<Outcome>, Failure> {
    let path = path.as_ref().map_err(Clone::clone)?;
    if !per_file {
        if to_group {
            hash::feed_path(path, config, &mut |b| group.update(b))?;
        }
        return Ok(None);
    }
    let mut own = StreamHasher::new(config);
    hash::feed_path(path, config, &mut |b| {
        if to_group {
            hash::update_all(&mut [&mut own, group], b)
        } else {
            own.update(b)
        }
    })?;
    Ok(Some(own.finish()))
}
