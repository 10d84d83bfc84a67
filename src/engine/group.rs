//! Many files as one stream (a `--groups` group, a `--tree`), on every core.
//!
//! The stream's code is over the files' bytes concatenated in order. Small files are read in
//! batches (in parallel, each straight into its place in one buffer). Large files are mapped
//! in windows, as a single file is. Every file is read once, and a failure names the file.
//!
//! When each file's own code is asked for too (a group), the Data-Code is chunked once for
//! both: each file is chunked alone, and the group's chain adopts a file's chunks from the
//! first cut they share (`concat`, where the reason is proved). Small files are read and
//! hashed one file per task; beside them, the group takes the batch before (its BLAKE3 over
//! the batch, then its chain through the joins). A large file's first bytes tell where the
//! chains meet, and one Data-Code hasher takes the file from there, beside the file's BLAKE3
//! and the group's. BLAKE3 cannot be shared: a file inside the concatenation has other chunk
//! counters.

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
    if !per_file {
        let group = hash_concatenation(files, names, config);
        return GroupOutcome { group, files: Vec::new(), sharing: Sharing::default() };
    }
    if files.len() == 1 {
        // One file: its code is the group's (hashing it twice would double the work of the
        // commonest OMERO fileset).
        let own = files[0].clone().and_then(|p| hash::hash_path(&p, config));
        let group = own.clone().map_err(|f| f.at_name(&names[0]));
        return GroupOutcome { group, files: vec![own], sharing: Sharing::default() };
    }
    let mut group = StreamHasher::new(config);
    let mut sharing = Sharing::default();
    let mut failure: Option<Failure> = None;
    let mut outcomes: Vec<Result<Outcome, Failure>> = Vec::with_capacity(files.len());
    // Two batch buffers, reused: one being read and hashed file by file while the group
    // takes the other (`Pending`).
    let mut spare: Vec<u8> = Vec::new();
    let mut pending: Option<Pending> = None;
    let mut start = 0;
    while start < files.len() {
        let sizes = batch_sizes(files, start);
        if sizes.is_empty() {
            // One large file (or one that failed to resolve): the group must have taken what
            // came before it.
            if let Some(batch) = pending.take() {
                sharing += batch.feed(&mut group);
                spare = batch.buffer;
            }
            let to_group = failure.is_none();
            let fed = feed_large(&files[start], config, &mut group, to_group, &mut sharing);
            if let Err(f) = &fed {
                failure.get_or_insert_with(|| f.clone().at_name(&names[start]));
            }
            outcomes.push(fed);
            start += 1;
            continue;
        }
        let end = start + sizes.len();
        let bounds = offsets(&sizes);
        let mut buffer = std::mem::take(&mut spare);
        buffer.clear();
        buffer.resize(bounds[sizes.len()], 0);
        // Each file read into its place and hashed on its own, one file per task; beside
        // them, the group takes the batch before.
        let (own, fed) = rayon::join(
            || {
                files[start..end]
                    .par_iter()
                    .zip(slots(&mut buffer, &sizes).into_par_iter())
                    .zip(&bounds[..sizes.len()])
                    .map(|((path, slot), &at)| {
                        read_into(path, slot, config)?;
                        let mut rest = InstanceHasher::new(config);
                        rest.update(slot);
                        let chain = FileChain::new(slot, at);
                        Ok((rest.finish(chain.digest()), chain))
                    })
                    .collect::<Vec<Result<(Outcome, FileChain), Failure>>>()
            },
            || pending.take().map(|batch| (batch.feed(&mut group), batch.buffer)),
        );
        if let Some((shared, buffer)) = fed {
            sharing += shared;
            spare = buffer;
        }
        let first_failed = own.iter().position(Result::is_err);
        let mut chains = Vec::with_capacity(own.len());
        for (k, result) in own.into_iter().enumerate() {
            outcomes.push(result.map(|(outcome, chain)| {
                chains.push(chain);
                outcome
            }));
            if Some(k) == first_failed {
                let f = outcomes[start + k].clone().expect_err("the first failure");
                failure.get_or_insert_with(|| f.at_name(&names[start + k]));
            }
        }
        if failure.is_none() {
            // The group takes this batch beside the next one (or after the last).
            pending = Some(Pending { buffer, chains });
        } else {
            // The group has failed: only the files' own codes go on.
            spare = buffer;
        }
        start = end;
    }
    if let Some(batch) = pending.take() {
        sharing += batch.feed(&mut group);
    }
    let group = match failure {
        Some(f) => Err(f),
        None => Ok(group.finish()),
    };
    GroupOutcome { group, files: outcomes, sharing }
}

/// A batch of small files whose own codes are done, for the group to take.
struct Pending {
    buffer: Vec<u8>,
    chains: Vec<FileChain>,
}

impl Pending {
    /// The group's part of the batch: BLAKE3 and checksums over its bytes, then its chain
    /// through the files' chains.
    fn feed(&self, group: &mut StreamHasher) -> Sharing {
        let (data, rest) = group.parts_mut();
        rest.update(&self.buffer);
        let chains: Vec<&FileChain> = self.chains.iter().collect();
        concat::chain_files(data, &self.buffer, &chains)
    }
}

/// The concatenation's code alone (a tree): batches of small files read in parallel and
/// handed to the group's hasher whole, which the parallel chunker and BLAKE3 split again.
fn hash_concatenation(
    files: &[Result<PathBuf, Failure>],
    names: &[String],
    config: &HashConfig,
) -> Result<Outcome, Failure> {
    let mut group = StreamHasher::new(config);
    let mut buffer: Vec<u8> = Vec::new(); // reused batch after batch: no new pages to fault in
    let mut start = 0;
    while start < files.len() {
        let sizes = batch_sizes(files, start);
        if sizes.is_empty() {
            let path = files[start].as_ref().map_err(|f| f.clone().at_name(&names[start]))?;
            hash::feed_path(path, config, &mut |b| group.update(b)).map_err(|f| f.at_name(&names[start]))?;
            start += 1;
            continue;
        }
        let end = start + sizes.len();
        buffer.clear();
        buffer.resize(sizes.iter().sum::<u64>() as usize, 0);
        let read: Vec<Result<(), Failure>> = files[start..end]
            .par_iter()
            .zip(slots(&mut buffer, &sizes).into_par_iter())
            .map(|(p, slot)| read_into(p, slot, config))
            .collect();
        if let Some(k) = read.iter().position(Result::is_err) {
            return Err(read[k].clone().expect_err("a failure").at_name(&names[start + k]));
        }
        group.update(&buffer);
        start = end;
    }
    Ok(group.finish())
}

/// Where each file of a batch starts, and the batch's end.
fn offsets(sizes: &[u64]) -> Vec<usize> {
    let mut at = 0;
    let mut bounds = vec![0];
    for &size in sizes {
        at += size as usize;
        bounds.push(at);
    }
    bounds
}

/// `buffer` cut into one slot per file.
fn slots<'a>(buffer: &'a mut [u8], sizes: &[u64]) -> Vec<&'a mut [u8]> {
    let mut slots = Vec::with_capacity(sizes.len());
    let mut rest = buffer;
    for &size in sizes {
        let (head, tail) = rest.split_at_mut(size as usize);
        slots.push(head);
        rest = tail;
    }
    slots
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

/// Feeds one large file to its own hasher and to the group's (while `to_group`).
fn feed_large(
    path: &Result<PathBuf, Failure>,
    config: &HashConfig,
    group: &mut StreamHasher,
    to_group: bool,
    sharing: &mut Sharing,
) -> Result<Outcome, Failure> {
    let path = path.as_ref().map_err(Clone::clone)?;
    if !to_group {
        return hash::hash_path(path, config);
    }
    let mut file = LargeFile::Start;
    hash::feed_path(path, config, &mut |b| file.update(b, group, config))?;
    Ok(file.finish(group, config, sharing))
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
