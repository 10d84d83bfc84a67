//! A group's Data-Code and its files' own Data-Codes from one chunking.
//!
//! A `--groups` group needs the code of its files' concatenation and each file's own. The
//! concatenation's chain of content-defined chunks and a file's own chain (the file chunked
//! as if it were the whole stream) start at different places, but once they share one cut
//! inside the file they share every cut from there to the file's last chunk. So the file's
//! chunks from that cut on are chunked and hashed once, for both codes; the group's chain only
//! walks itself from its last cut before the file to the first cut it shares with the file
//! (usually one to three chunks), and the file's last chunk, which the concatenation extends
//! into the next file, is hashed on its own.
//!
//! # Why the cuts coincide
//!
//! **What a cut depends on.** `cdc::cut(x)`, iscc-core's `alg_cdc_offset`, is the length of
//! the chunk that starts at `x[0]`. It starts its gear hash from 0 at every chunk and rolls
//! it from offset [`cdc::MIN`]. The mask tested at offset `i` is the strict one below
//! `CENTER` and the relaxed one from there. A cut is forced at [`cdc::MAX`]. The length of
//! `x` only stops the scan early: at `len(x)` when no cut came before. Nothing else is
//! read: no hash state, mask or counter carries from one chunk to the next. So the whole
//! state of a chain at a cut is the cut's position, and the chunk that starts there depends
//! only on the bytes that follow and on where the data ends.
//!
//! The gear hash's own memory (a byte leaves the 32-bit hash after 32 shifts) does not
//! matter here: the hash is reset at each cut, not carried across it. For the same reason
//! two chains that have not yet met may cut at different places even over the same bytes.
//! The masks are chosen by the distance from each chain's own last cut, and a chain does not
//! look at its first `MIN` bytes.
//!
//! **Lemma (prefix).** Let `f` be a prefix of `g`. If `cut(g) < len(f)`, then
//! `cut(f) = cut(g)`; otherwise `cut(f) = len(f)`.
//!
//! *Proof.* First take `cut(g) = c < len(f)`. Then `len(g) > MIN`; otherwise `c = len(g)`,
//! which is at least `len(f)`. The two scans read the same bytes at offsets `MIN..c`. Each
//! of those offsets is below `len(f)`, so each gets the same mask in both scans (the mask
//! depends on the offset alone). So the scan of `f` first matches at `c - 1` as `g`'s does,
//! or, if `c = MAX` was forced, it reaches `MAX < len(f)` without a match and is forced
//! there too. Now take `cut(g) ≥ len(f)`. Then `g`'s scan finds no match before offset
//! `len(f) - 1`, and neither does `f`'s. `f`'s scan therefore matches at its last byte, or
//! runs out at `len(f)`; `len(f) ≤ MAX` because `cut(g) ≤ MAX`. Or `len(f) ≤ MIN`, where
//! `cut` returns `len(f)` without a scan. In each case `cut(f) = len(f)`. ∎
//!
//! **Theorem.** Let a file `F` of `n` bytes lie at offset `a` of the group's stream `G`. Let
//! `p < n` be a start of `F`'s own chain such that `a + p` is a start of `G`'s chain. Then
//! every chunk of `F`'s chain from `p` on, except its last, is a chunk of `G`'s chain with the
//! same bytes. `F`'s last chunk starts at a start `a + t` of `G`'s chain.
//!
//! *Proof*, by induction over `F`'s chain from `p`. At a shared start `q`, take
//! `f = F[q..]` and `g = G[a + q..]`; `f` is a prefix of `g`. If `F`'s chunk at `q` is not
//! its last, `cut(f) < len(f)`, so by the lemma `cut(g) < len(f)` too (otherwise `cut(f)`
//! would be `len(f)`), and `cut(g) = cut(f)`. The next starts coincide. The induction ends at
//! `F`'s last chunk, whose start `t` is shared. ∎
//!
//! So the position of one shared cut is all that must match. The chains then stay together
//! until the file's last chunk. They part there, because only that chunk sees the file's end.
//! The same lemma shows that chunks chained over a prefix of the data (a large file's first
//! bytes, a batch of files) are true chunks wherever they do not touch that prefix's end. The
//! chain functions never emit a chunk that does; they leave it open.
//!
//! **What is hashed.**
//! - For a file: its own chunks before the shared cut, the shared chunks, and its last chunk.
//! - For the group: its own chunks from its last cut before the file up to the shared cut,
//!   and the shared chunks. Its chain then goes on from the start of the file's last chunk,
//!   into the next file.
//!
//! The shared chunks' features are folded once into one MinHash, which both codes take whole.
//!
//! **When the chains never meet.** A file shorter than a chunk has a single start, its first
//! byte. In a long run of one byte value, two chains keep their phases to the run's end. A
//! periodic stretch can do the same. In those cases the group's chain walks through the file
//! itself. The file's own code never depends on the group. [`Sharing`] counts how often
//! the chains met, and how many bytes the group's chain walked on its own.

use crate::engine::cdc::{self, Span};
use crate::engine::datacode::{fold_spans, DataHasher};
use crate::engine::minhash::MinHash;
use xxhash_rust::xxh32::xxh32;

/// Chunks at the start of a file whose features are folded apart from the rest. The group's
/// chain shares a file's chunks from the first cut the two chains have in common, nearly always
/// one of the first three, so the rest can be folded once for both codes before that cut is
/// known. The few unshared ones are folded for the file alone.
const SETTLE: usize = 4;

/// How many of a large file's first bytes are searched for a shared cut, first and second
/// try.
const HEAD: [usize; 2] = [16 << 10, 256 << 10];

/// How a group's chain met its files' chains.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sharing {
    /// Files whose own chain the group's chain met: chunked once for both codes.
    pub met: u64,
    /// Non-empty files whose chain the group's chain never met: the group chunked them itself.
    pub apart: u64,
    /// Empty files: no chunk to share.
    pub empty: u64,
    /// Bytes the group's chain walked itself: the joins, and the files it never met.
    pub walked: u64,
    /// Bytes in all.
    pub bytes: u64,
}

impl std::ops::AddAssign for Sharing {
    fn add_assign(&mut self, other: Sharing) {
        self.met += other.met;
        self.apart += other.apart;
        self.empty += other.empty;
        self.walked += other.walked;
        self.bytes += other.bytes;
    }
}

/// A file's own chain: the file chunked as the whole stream.
struct OwnChain {
    /// Where the file starts in the bytes the group's chain walks.
    start: usize,
    /// The file's chunks but its last (ends relative to `start`).
    spans: Vec<Span>,
    /// Start of the last chunk (relative to `start`): the one that sees the file's end.
    last: usize,
}

/// Where the group's chain went in a file.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    /// It has a start at `at`, where the file's chain has one. `spans[shared..]` are chunks
    /// of both. So, with `run`, is the rest of the run of equal chunks that `at` lies in.
    Met { at: usize, shared: usize, run: Option<u32> },
    /// It went past the file's last start without meeting the file's chain; it goes on at `at`.
    Passed { at: usize },
    /// Its chunk at `at` runs to the end of the bytes given: that chunk is still open.
    Open { at: usize },
}

impl OwnChain {
    /// `file`'s chain (`file` lies at `start` of the bytes the group's chain will walk). When
    /// `file` holds only a file's first bytes, its chunks are still the file's: the last one,
    /// which touches the end, is not among them (see the module's lemma).
    fn new(file: &[u8], start: usize) -> Self {
        let mut spans = Vec::with_capacity(file.len() / 1024 + 4);
        let last = cdc::chain(file, 0, file.len(), &mut |s| spans.push(s));
        OwnChain { start, spans, last }
    }

    /// Walks the group's chain from its start `pos` in `data` (which holds this file at
    /// `start`) to the first start it shares with this chain; pushes the features of the
    /// group's chunks on the way onto `bridge`.
    fn walk(&self, data: &[u8], mut pos: usize, bridge: &mut Vec<u32>) -> Walk {
        let last = self.start + self.last;
        loop {
            if pos == self.start {
                return Walk::Met { at: pos, shared: 0, run: None };
            }
            if pos > last {
                return Walk::Passed { at: pos };
            }
            let target = if pos < self.start {
                self.start
            } else {
                let rel = pos - self.start;
                // The spans are contiguous from 0: span `i` starts at or before `rel`.
                let i = self.spans.partition_point(|s| s.end < rel);
                match self.spans.get(i) {
                    Some(span) if span.end == rel => return Walk::Met { at: pos, shared: i + 1, run: None },
                    Some(span) if span.has_start(rel) => {
                        return Walk::Met { at: pos, shared: i + 1, run: Some(span.feature) };
                    }
                    // No start of the file's chain between `pos` and the span's end. Either
                    // `pos` is inside a chunk, or inside a run whose chunks are out of phase
                    // with the group's. Out of phase, the group's chunks there all have the
                    // run's period, so none can end on the file's.
                    Some(span) => self.start + span.end,
                    // `pos` is past every span's end but not past `last`, the last one's end.
                    None => last.max(pos + 1),
                }
            };
            let stepped = cdc::chain(data, pos, target, &mut |s| bridge.push(s.feature));
            if stepped == pos {
                return Walk::Open { at: pos };
            }
            pos = stepped;
        }
    }
}

/// A small file's own chain and Data-Code, with its chunks kept for the group's chain.
pub struct FileChain {
    own: OwnChain,
    len: usize,
    /// `own.spans[settled..]` are folded into `folded`.
    settled: usize,
    folded: MinHash,
    digest: [u8; 32],
}

impl FileChain {
    /// Chains `file`, which lies at `start` of its batch, alone; its Data-Code is ready at once.
    pub fn new(file: &[u8], start: usize) -> Self {
        let own = OwnChain::new(file, start);
        let settled = SETTLE.min(own.spans.len());
        let mut folded = MinHash::default();
        fold_spans(&mut folded, &own.spans[settled..]);
        let mut whole = folded;
        fold_spans(&mut whole, &own.spans[..settled]);
        // The last chunk; an empty file has one empty chunk.
        whole.fold(&[xxh32(&file[own.last..], 0)]);
        FileChain { own, len: file.len(), settled, folded, digest: whole.digest() }
    }

    /// The file's own Data-Code digest (256 bits).
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Folds the features of the file's chunks from `spans[from..]` (those the group's chain
    /// shares) into `minhash`.
    fn fold_from(&self, from: usize, minhash: &mut MinHash) {
        if from <= self.settled {
            fold_spans(minhash, &self.own.spans[from..self.settled]);
            minhash.merge(&self.folded);
        } else {
            // Met late: the folded part holds chunks the group's chain does not have.
            fold_spans(minhash, &self.own.spans[from..]);
        }
    }
}

/// Feeds `data`, a batch of whole files laid end to end (`files`, in order, each chained by
/// [`FileChain::new`] at its offset in `data`), to the group's Data-Code hasher. The group's
/// chain walks from its open chunk to each file's chain and adopts the file's chunks from
/// the first cut they share; its open chunk is then the last file's last chunk.
pub fn chain_files(group: &mut DataHasher, data: &[u8], files: &[&FileChain]) -> Sharing {
    debug_assert!(files.iter().all(|f| f.own.start + f.len <= data.len()));
    debug_assert!(files.windows(2).all(|w| w[0].own.start + w[0].len == w[1].own.start));
    let mut sharing = Sharing { bytes: data.len() as u64, ..Sharing::default() };
    let Some(mut pos) = group.close_open_chunk(data) else {
        // The whole batch went into the group's open chunk.
        sharing.walked = data.len() as u64;
        for file in files {
            if file.len == 0 {
                sharing.empty += 1;
            } else {
                sharing.apart += 1;
            }
        }
        return sharing;
    };
    sharing.walked += pos as u64;
    let mut bridge: Vec<u32> = Vec::new();
    let mut shared = MinHash::default();
    let mut open = false;
    for file in files {
        if file.len == 0 {
            sharing.empty += 1;
            continue;
        }
        if open {
            sharing.apart += 1;
            continue;
        }
        let from = pos;
        match file.own.walk(data, pos, &mut bridge) {
            Walk::Met { at, shared: first, run } => {
                bridge.extend(run);
                file.fold_from(first, &mut shared);
                sharing.met += 1;
                sharing.walked += (at - from) as u64;
                // The theorem: the group's chain has a start at the file's last chunk.
                pos = file.own.start + file.own.last;
            }
            Walk::Passed { at } => {
                sharing.apart += 1;
                sharing.walked += (at - from) as u64;
                pos = at;
            }
            Walk::Open { at } => {
                // The group's chunk at `at` runs to the batch's end: no file after this one
                // can meet it here.
                sharing.apart += 1;
                sharing.walked += (data.len() - from) as u64;
                pos = at;
                open = true;
            }
        }
    }
    // Normally nothing is left: the last file's last chunk is the open chunk.
    let from = pos;
    let tail = cdc::chain(data, pos, data.len(), &mut |s| bridge.push(s.feature));
    if !open {
        sharing.walked += (tail - from) as u64;
    }
    group.fold(&bridge);
    group.merge(&shared);
    group.restart_open_chunk(&data[tail..]);
    sharing
}

/// Where a large file's chain and the group's met, in the file's first bytes.
pub struct Join {
    /// The file's offset of the first start both chains share: both codes chain the file
    /// from here with one hasher.
    pub at: usize,
    /// Features of the file's own chunks before `at`.
    own_head: Vec<u32>,
}

/// Walks the group's chain from its open chunk into `first`, the first bytes of a large file
/// (all of them, or a prefix), looking for a cut it shares with the file's own chain. When
/// they meet, the group's hasher takes its chunks up to the shared cut, and the returned
/// [`Join`] says where a hasher of the rest of the file starts ([`finish_join`]). `None`: they
/// did not meet near the file's start, and the group is left as it was.
pub fn join_file(group: &mut DataHasher, first: &[u8]) -> Option<Join> {
    let open = group.open_chunk();
    if open.is_empty() {
        // The group's chain starts a chunk where the file starts.
        return Some(Join { at: 0, own_head: Vec::new() });
    }
    for size in HEAD {
        let head = &first[..first.len().min(size)];
        let own = OwnChain::new(head, open.len());
        let mut joined = Vec::with_capacity(open.len() + head.len());
        joined.extend_from_slice(open);
        joined.extend_from_slice(head);
        let mut bridge = Vec::new();
        if let Walk::Met { at, shared, .. } = own.walk(&joined, 0, &mut bridge) {
            // A run's chunks before `at` are the file's too: `spans[..shared]` holds its feature.
            let own_head = own.spans[..shared].iter().map(|s| s.feature).collect();
            let at = at - open.len();
            group.fold(&bridge);
            group.restart_open_chunk(&[]);
            return Some(Join { at, own_head });
        }
        if head.len() == first.len() {
            break;
        }
    }
    None
}

/// Ends a joined large file: `rest` chained the file from `join.at` to its end. The group's
/// hasher takes the shared chunks and goes on from the file's last chunk; returns the
/// file's own Data-Code digest.
pub fn finish_join(join: Join, rest: DataHasher, group: &mut DataHasher) -> [u8; 32] {
    let (shared, last) = rest.into_parts();
    debug_assert!(!last.is_empty(), "a file has a last chunk");
    group.merge(&shared);
    group.restart_open_chunk(&last);
    let mut own = shared;
    own.fold(&join.own_head);
    own.fold(&[xxh32(&last, 0)]);
    own.digest()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::codes::unit;
    use crate::engine::testdata::pseudo_random;
    use iscc_lib::codec::MainType;

    fn code(digest: &[u8; 32]) -> String {
        unit(MainType::Data, digest, 256)
    }

    fn reference(data: &[u8]) -> String {
        iscc_lib::gen_data_code_v0(data, 256).unwrap().iscc
    }

    /// The group's and each file's codes through `chain_files`, in batches of `per_batch`.
    fn batched(files: &[Vec<u8>], per_batch: usize) -> (String, Vec<String>, Sharing) {
        let mut group = DataHasher::new(false);
        let mut own = Vec::new();
        let mut sharing = Sharing::default();
        for batch in files.chunks(per_batch) {
            let data = batch.concat();
            let mut start = 0;
            let chains: Vec<FileChain> = batch
                .iter()
                .map(|f| {
                    start += f.len();
                    FileChain::new(f, start - f.len())
                })
                .collect();
            own.extend(chains.iter().map(|c| code(&c.digest())));
            sharing += chain_files(&mut group, &data, &chains.iter().collect::<Vec<_>>());
        }
        (code(&group.finalize()), own, sharing)
    }

    /// A file of one byte value after one of the same value: the chains keep their phases
    /// through the run, and meet only in the noise after it.
    #[test]
    fn runs_across_a_join_meet_after_the_run_or_not_at_all() {
        let mut second = vec![7u8; 50_000];
        second.extend(pseudo_random(30_000, 1));
        let files = vec![pseudo_random(20_000, 2), vec![7u8; 40_001], second, vec![7u8; 20_000], vec![]];
        let (group, own, sharing) = batched(&files, files.len());
        assert_eq!(group, reference(&files.concat()));
        for (f, c) in files.iter().zip(&own) {
            assert_eq!(c, &reference(f));
        }
        // The first file starts the group's chain; the all-7 files never meet it.
        assert_eq!((sharing.met, sharing.apart, sharing.empty), (2, 2, 1), "{sharing:?}");
    }

    #[test]
    fn tiny_and_empty_files_in_batches_of_every_size() {
        let sizes = [0usize, 1, 255, 256, 257, 0, 300, 700, 8191, 8192, 8193, 0, 3, 9000, 20_000, 1];
        let files: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(k, &n)| pseudo_random(n, k as u64)).collect();
        let want = reference(&files.concat());
        for per_batch in 1..=files.len() {
            let (group, own, _) = batched(&files, per_batch);
            assert_eq!(group, want, "{per_batch} per batch");
            for (f, c) in files.iter().zip(&own) {
                assert_eq!(c, &reference(f), "{} bytes", f.len());
            }
        }
    }

    /// The group's chain joins a large file in its first bytes (here all of them, or a prefix
    /// as of a first window). The files are a few chunks long, so that a chunk lost or added
    /// changes the MinHash.
    #[test]
    fn a_large_file_joins_within_its_first_bytes() {
        let (mut heads, mut misses) = (0, 0);
        for seed in 0..60u64 {
            let before = pseudo_random(300 + (seed as usize * 211) % 9000, seed);
            let file = pseudo_random(2000 + (seed as usize * 7919) % 20_000, seed + 100);
            for first in [file.len(), file.len().min(4000)] {
                let mut group = DataHasher::new(false);
                group.update(&before);
                let open = group.open_chunk().to_vec();
                let Some(join) = join_file(&mut group, &file[..first]) else {
                    // No shared cut in so few chunks: the group is left as it was.
                    assert_eq!(group.open_chunk(), &open[..]);
                    misses += 1;
                    continue;
                };
                assert!(join.at < first, "met at {}", join.at);
                heads += usize::from(!join.own_head.is_empty());
                let mut rest = DataHasher::new(false);
                rest.update(&file[join.at..first]);
                rest.update(&file[first..]);
                let own = finish_join(join, rest, &mut group);
                assert_eq!(code(&own), reference(&file), "seed {seed}");
                assert_eq!(code(&group.finalize()), reference(&[&before[..], &file].concat()), "seed {seed}");
            }
        }
        assert!(heads > 10 && misses < 10, "own first chunks {heads} times, no join {misses} times");
    }

    /// Data-Code inputs whose chains meet late: a periodic stretch keeps the group's chain and
    /// the file's apart until it ends.
    fn periodic_pair(seed: u64) -> (Vec<u8>, Vec<u8>) {
        let a = pseudo_random(3000 + (seed as usize * 7919) % 9000, seed);
        let period = pseudo_random(300 + (seed as usize * 104_729) % 3000, seed + 1000);
        let mut b: Vec<u8> = period.iter().cycle().take(30_000).copied().collect();
        b.extend(pseudo_random(2000, seed + 2000));
        (a, b)
    }

    /// The group adopts a file's chunks from a late index: within the chunks folded apart
    /// (`SETTLE`), just past them, far past them, or never.
    #[test]
    fn late_meets_adopt_exactly_the_shared_chunks() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..300u64 {
            let (a, b) = periodic_pair(seed);
            let data = [&a[..], &b].concat();
            let own = OwnChain::new(&b, a.len());
            seen.insert(match own.walk(&data, 0, &mut Vec::new()) {
                Walk::Met { shared, .. } => shared.min(SETTLE + 2) as i64,
                _ => -1,
            });
            let files = vec![a, b];
            let (group, own, _) = batched(&files, 2);
            assert_eq!(group, reference(&data), "seed {seed}");
            assert_eq!(own[1], reference(&files[1]), "seed {seed}");
        }
        let want = [-1, SETTLE as i64 - 1, SETTLE as i64, SETTLE as i64 + 1, SETTLE as i64 + 2];
        assert!(want.iter().all(|k| seen.contains(k)), "met at {seen:?}");
    }

    /// The group's chain lands on a start inside a file's run of equal chunks, not at the
    /// run's first. Runs of byte 70 are cut every 277 bytes, but a chunk that enters the run
    /// from other bytes can settle on a gear state that never matches, be forced at 8192,
    /// and end in phase with the file's run by chance (found by search: about one join in
    /// 2,500 of this shape). The rest of the run is then the file's and the group's.
    #[test]
    fn a_meet_inside_a_run_adopts_the_rest_of_the_run() {
        let a = pseudo_random(5543, 697);
        let mut b = pseudo_random(113, 1697);
        b.extend([70u8; 40_000]);
        b.extend(pseudo_random(3000, 2697));
        let data = [&a[..], &b].concat();
        let own = OwnChain::new(&b, a.len());
        let met = own.walk(&data, 0, &mut Vec::new());
        assert!(matches!(met, Walk::Met { run: Some(_), .. }), "{met:?}");
        let files = vec![a, b];
        let (group, own, sharing) = batched(&files, 2);
        assert_eq!(group, reference(&data));
        assert_eq!(own[1], reference(&files[1]));
        assert_eq!(sharing.met, 2);
    }

    /// The walk stops at the first shared start, never later: every group start before the
    /// one it returns is not a start of the file's chain.
    #[test]
    fn the_walk_stops_at_the_first_shared_start() {
        for seed in 0..40 {
            let data = pseudo_random(60_000, seed);
            let start = 1000 + (seed as usize * 997) % 6000;
            let own = OwnChain::new(&data[start..], start);
            let own_starts: Vec<usize> =
                std::iter::once(0).chain(own.spans.iter().map(|s| s.end)).map(|e| e + start).collect();
            let Walk::Met { at, .. } = own.walk(&data, 0, &mut Vec::new()) else {
                panic!("random data meets");
            };
            let mut group_starts = vec![0];
            cdc::chain(&data, 0, at, &mut |s| group_starts.push(s.end));
            assert_eq!(group_starts.last(), Some(&at));
            let first = group_starts.iter().find(|p| own_starts.contains(p));
            assert_eq!(first, Some(&at), "seed {seed}");
        }
    }
}
