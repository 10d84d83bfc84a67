//! Many files as one stream (a `--groups` group, a `--tree`), on every core.
//!
//! The stream's code is over the files' bytes concatenated in order. Small files are read in
//! batches (in parallel, each straight into its place in one buffer). Large files are mapped
//! in windows, as a single file is. Every file is read once, and a failure names the file.
//!
//! When each file's own code is asked for too (a group), the Data-Code is chunked once for
//! both: each file is chunked alone, and the group's chain adopts a file's chunks from the
//! first cut they share (`concat`, where the reason is proved). Small files are chunked one
//! file per task, beside the group's BLAKE3 over the whole batch; the group's chain then walks
//! the joins between them. A large file's first bytes tell where the chains meet, and
//! one Data-Code hasher takes the file from there, beside the file's BLAKE3 and the group's.
//! BLAKE3 cannot be shared: a file inside the concatenation has other chunk counters.

use crate::engine::concat::{self, FileChain, Join, Sharing};
use crate::engine::datacode::DataHasher;
use crate::engine::hash::{self, HashConfig, InstanceHasher, Outcome, StreamHasher};
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
    /// How often the group's Data-Code shared its files' chunks (when `per_file`).
    pub sharing: Sharing,
}

/// Hashes regular files as one stream, in order (a tree); a failure names the file it
/// happened on.
pub fn hash_files(files: &[PathBuf], config: &HashConfig) -> Result<Outcome, Failure> {
    let resolved: Vec<Result<PathBuf, Failure>> = files.iter().cloned().map(Ok).collect();
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    hash_group(&resolved, &names, config, false).group
}

/// Hashes `files` (already resolved, or why not; `names` name them in failures) as one stream,
/// and each on its own when `per_file`.
pub fn hash_group(
    files: &[Result<PathBuf, Failure>],
    names: &[String],
    config: &HashConfig,
    per_file: bool,
) -> GroupOutcome {
    let mut sharing = Sharing::default();
    if per_file && files.len() == 1 {
        // One file: its code is the group's (hashing it twice would double the work of the
        // commonest OMERO fileset).
        let own = files[0].clone().and_then(|p| hash::hash_path(&p, config));
        return GroupOutcome {
            group: own.clone().map_err(|f| f.at_name(&names[0])),
            files: vec![own],
            sharing,
        };
    }
    let mut group = StreamHasher::new(config);
    let mut failure: Option<Failure> = None;
    let mut outcomes: Vec<Result<Outcome, Failure>> =
        Vec::with_capacity(if per_file { files.len() } else { 0 });
    let mut buffer: Vec<u8> = Vec::new(); // reused batch after batch: no new pages to fault in
    let mut start = 0;
    while start < files.len() {
        if failure.is_some() && !per_file {
            break; // the group has failed and no file's own code is asked for
        }
        let sizes = batch_sizes(files, start);
        if sizes.is_empty() {
            // One large file (or one that failed to resolve): fed to its hasher and the group's.
            let to_group = failure.is_none();
            let fed = feed_one(&files[start], config, &mut group, to_group, per_file, &mut sharing);
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
            .map(|(p, slot)| read_into(p, slot))
            .collect();
        // The group takes the batch up to its first failed file.
        let first_failed = read.iter().position(Result::is_err);
        let valid = first_failed.map_or(buffer.len(), |k| sizes[..k].iter().sum::<u64>() as usize);
        let feed_group = failure.is_none();
        if per_file {
            let bounds: Vec<usize> = std::iter::once(0)
                .chain(sizes.iter().scan(0usize, |at, &s| {
                    *at += s as usize;
                    Some(*at)
                }))
                .collect();
            let own = hash_batch(
                &buffer,
                &bounds,
                &read,
                &buffer[..valid],
                feed_group.then_some(&mut group),
                config,
            );
            if feed_group {
                let chains: Vec<&FileChain> =
                    own.iter().map_while(|r| r.as_ref().ok().map(|(_, c)| c)).collect();
                debug_assert_eq!(chains.len(), first_failed.unwrap_or(own.len()));
                sharing += concat::chain_files(group.parts_mut().0, &buffer[..valid], &chains);
            }
            outcomes.extend(own.into_iter().map(|r| r.map(|(outcome, _)| outcome)));
        } else if feed_group {
            group.update(&buffer[..valid]);
        }
        if let Some(k) = first_failed {
            let f = read[k].clone().expect_err("the first failure");
            failure.get_or_insert_with(|| f.at_name(&names[start + k]));
        }
        start = end;
    }
    let group = match failure {
        Some(f) => Err(f),
        None => Ok(group.finish()),
    };
    GroupOutcome { group, files: outcomes, sharing }
}

/// Each file of a batch on its own, one file per task: its BLAKE3 and its chain of chunks,
/// kept for the group's. Beside them, the group's BLAKE3 (and checksums) over `to_group`, the
/// batch up to its first failed file, when `group` is given.
fn hash_batch(
    buffer: &[u8],
    bounds: &[usize],
    read: &[Result<(), Failure>],
    to_group: &[u8],
    group: Option<&mut StreamHasher>,
    config: &HashConfig,
) -> Vec<Result<(Outcome, FileChain), Failure>> {
    let own = || {
        read.par_iter()
            .enumerate()
            .map(|(k, r)| {
                r.clone().map(|()| {
                    let bytes = &buffer[bounds[k]..bounds[k + 1]];
                    let mut rest = InstanceHasher::new(config);
                    rest.update(bytes);
                    let chain = FileChain::new(bytes, bounds[k]);
                    (rest.finish(chain.digest()), chain)
                })
            })
            .collect()
    };
    match group {
        Some(group) => rayon::join(own, || group.parts_mut().1.update(to_group)).0,
        None => own(),
    }
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
fn read_into(path: &Result<PathBuf, Failure>, slot: &mut [u8]) -> Result<(), Failure> {
    let path = path.as_ref().map_err(Clone::clone)?;
    let (file, meta) = hash::open_regular(path)?;
    source::read_whole(&file, &meta, slot)
}

/// Feeds one large file to its own hasher (when `per_file`) and to the group's (while
/// `to_group`).
fn feed_one(
    path: &Result<PathBuf, Failure>,
    config: &HashConfig,
    group: &mut StreamHasher,
    to_group: bool,
    per_file: bool,
    sharing: &mut Sharing,
) -> Result<Option<Outcome>, Failure> {
    let path = path.as_ref().map_err(Clone::clone)?;
    if !per_file {
        if to_group {
            hash::feed_path(path, config, &mut |b| group.update(b))?;
        }
        return Ok(None);
    }
    if !to_group {
        return hash::hash_path(path, config).map(Some);
    }
    let mut file = LargeFile::Start;
    hash::feed_path(path, config, &mut |b| file.update(b, group, config))?;
    Ok(Some(file.finish(group, config, sharing)))
}

/// A large file of a group, fed window by window with the group.
enum LargeFile {
    /// Nothing fed yet.
    Start,
    /// The file's chain and the group's met at `join.at`: `rest` chains the file from there
    /// for both codes.
    Joined { join: Join, rest: DataHasher, own: InstanceHasher, size: u64 },
    /// They did not meet near the file's start: each code is chunked on its own.
    Apart { own: StreamHasher, size: u64 },
}

impl LargeFile {
    fn update(&mut self, bytes: &[u8], group: &mut StreamHasher, config: &HashConfig) {
        let mut skip = 0;
        if let LargeFile::Start = self {
            *self = match concat::join_file(group.parts_mut().0, bytes) {
                Some(join) => {
                    skip = join.at;
                    let (rest, own) = (DataHasher::new(config.parallel), InstanceHasher::new(config));
                    LargeFile::Joined { join, rest, own, size: 0 }
                }
                None => LargeFile::Apart { own: StreamHasher::new(config), size: 0 },
            };
        }
        match self {
            LargeFile::Start => unreachable!("set just above"),
            LargeFile::Joined { rest, own, size, .. } => {
                *size += bytes.len() as u64;
                let group_rest = group.parts_mut().1;
                hash::update_with(rest, &bytes[skip..], &mut [own, group_rest], bytes, config.parallel);
            }
            LargeFile::Apart { own, size } => {
                *size += bytes.len() as u64;
                hash::update_all(&mut [own, group], bytes);
            }
        }
    }

    fn finish(self, group: &mut StreamHasher, config: &HashConfig, sharing: &mut Sharing) -> Outcome {
        match self {
            LargeFile::Start => {
                // An empty stream: nothing for the group.
                sharing.empty += 1;
                StreamHasher::new(config).finish()
            }
            LargeFile::Joined { join, rest, own, size } => {
                sharing.met += 1;
                sharing.walked += join.at as u64;
                sharing.bytes += size;
                own.finish(concat::finish_join(join, rest, group.parts_mut().0))
            }
            LargeFile::Apart { own, size } => {
                sharing.apart += 1;
                sharing.walked += size;
                sharing.bytes += size;
                own.finish()
            }
        }
    }
}
