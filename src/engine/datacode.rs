//! Streaming Data-Code: content-defined chunks, their xxh32 features and a folded MinHash,
//! bit-identical to iscc-core's `DataHasherV0` for the same byte stream.
//!
//! Large buffers are split into segments, each segment is chained speculatively from its own
//! start (two at a time in lockstep on each thread, and on every thread of the pool when the
//! hasher is parallel), and the true chain is stitched through them: it
//! adopts a segment's chunks from the first chunk start the two chains share (see `cdc`).
//! Where they never meet (a segment inside one long run of a byte value, say), the true chain
//! simply goes on sequentially, so the result is exact whatever the data.
//!
//! Phase 1 (chaining and folding each segment) keeps every thread busy; phase 2 (stitching)
//! is short and sequential, so the caller's other work over the same bytes (BLAKE3) runs
//! beside it and fills the other threads ([`DataHasher::update_alongside`]). The threads
//! take segments in order, large ones first and ever smaller ones towards the end (guided
//! self-scheduling), so they also run out of phase 1 work within a fraction of a
//! millisecond of each other.

use crate::engine::cdc::{self, Span};
use crate::engine::minhash::MinHash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Below this many bytes a buffer is chunked on the calling thread.
const SPLIT_MIN: usize = 4 << 20;
/// Below this many bytes a buffer is chunked as one chain (two segments of at least
/// `SEGMENT_MIN` are needed to walk two chains in lockstep).
const PAIR_MIN: usize = 2 * SEGMENT_MIN;
/// Largest segment: big enough that stitching (a few chunks per segment) costs nothing.
const SEGMENT_MAX: usize = 2 << 20;
/// Smallest segment, the last ones: the threads finish phase 1 at most this far apart.
const SEGMENT_MIN: usize = 256 << 10;

/// Incremental Data-Code state.
#[derive(Default)]
pub struct DataHasher {
    /// Bytes of the chunk that started last and has not ended yet (at most `cdc::MAX`).
    tail: Vec<u8>,
    minhash: MinHash,
    /// Reused feature buffer of the sequential path.
    features: Vec<u32>,
    parallel: bool,
}

impl DataHasher {
    /// A hasher that may split large updates across the current rayon pool.
    pub fn new(parallel: bool) -> Self {
        Self { parallel, ..Self::default() }
    }

    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, data: &[u8]) {
        self.feed(data, None::<fn()>);
    }

    /// Feeds the next bytes of the stream and runs `alongside` (other work on the same bytes)
    /// on the pool at the same time: beside the chunking of a mid-sized buffer, or beside the
    /// stitching of a large one, after its parallel phase.
    pub fn update_alongside<R: Send>(&mut self, data: &[u8], alongside: impl FnOnce() -> R + Send) -> R {
        self.feed(data, Some(alongside)).expect("feed runs the work it is given")
    }

    /// [`update`](Self::update) and [`update_alongside`](Self::update_alongside): joins the
    /// pool only when there is other work to run beside the chunking.
    fn feed<R: Send>(&mut self, data: &[u8], alongside: Option<impl FnOnce() -> R + Send>) -> Option<R> {
        let Some(start) = self.finish_tail(data) else {
            return alongside.map(|work| work()); // the whole buffer went into the open chunk
        };
        let rest = &data[start..];
        let threads = if self.parallel { rayon::current_num_threads() } else { 1 };
        // Every thread chains segments of a large buffer first; one thread chunks the others
        // (two chains in lockstep when the buffer is worth splitting).
        let speculated = (threads > 1 && rest.len() >= SPLIT_MIN).then(|| speculate(rest, threads, SETTLE));
        let mut chunk = || match &speculated {
            Some(speculated) => self.settle(rest, speculated),
            None if rest.len() >= PAIR_MIN => self.settle(rest, &speculate(rest, 1, SETTLE)),
            None => self.chain_sequential(rest),
        };
        let (tail_start, out) = match alongside {
            Some(work) if threads > 1 => {
                let (tail_start, out) = rayon::join(chunk, work);
                (tail_start, Some(out))
            }
            Some(work) => (chunk(), Some(work())),
            None => (chunk(), None),
        };
        self.tail.extend_from_slice(&rest[tail_start..]);
        out
    }

    /// Ends the pending chunk with the first bytes of `data`; returns where the rest of
    /// `data` starts, or `None` when all of it went into the still open chunk.
    fn finish_tail(&mut self, data: &[u8]) -> Option<usize> {
        if self.tail.is_empty() {
            return Some(0);
        }
        // The pending chunk ends within `cdc::MAX` bytes of its start, and no earlier than the
        // tail's end (the tail held no cut).
        let take = data.len().min(cdc::MAX);
        self.tail.extend_from_slice(&data[..take]);
        let len = cdc::cut(&self.tail);
        if len == self.tail.len() && take == data.len() {
            return None;
        }
        let held = self.tail.len() - take;
        self.fold_one(xxhash_rust::xxh32::xxh32(&self.tail[..len], 0));
        self.tail.clear();
        Some(len - held)
    }

    /// The final 256-bit MinHash digest of everything fed.
    pub fn finalize(mut self) -> [u8; 32] {
        if !self.tail.is_empty() || self.minhash.is_empty() {
            // The tail is the last chunk; an empty stream has one empty chunk.
            let feature = xxhash_rust::xxh32::xxh32(&self.tail, 0);
            self.fold_one(feature);
        }
        self.minhash.digest()
    }

    fn fold_one(&mut self, feature: u32) {
        self.minhash.fold(&[feature]);
    }

    /// The open chunk: the bytes since the chain's last cut, which more data may still extend
    /// (empty at the stream's start).
    pub fn open_chunk(&self) -> &[u8] {
        &self.tail
    }

    /// Ends the open chunk with the first bytes of `data`, as [`update`](Self::update) would,
    /// and returns where the chain goes on in `data`; `None` when all of `data` went into the
    /// still open chunk. For callers that chain the rest of `data` themselves (`concat`).
    pub fn close_open_chunk(&mut self, data: &[u8]) -> Option<usize> {
        self.finish_tail(data)
    }

    /// Takes the features of chunks that the caller found on this stream's chain.
    pub fn fold(&mut self, features: &[u32]) {
        self.minhash.fold(features);
    }

    /// Takes the minima of chunks that the caller found on this stream's chain.
    pub fn merge(&mut self, minhash: &MinHash) {
        self.minhash.merge(minhash);
    }

    /// Replaces the open chunk with the chunk that starts at a cut the caller's chain reached:
    /// `bytes` are the stream's bytes from that cut to what has been fed so far. The caller's
    /// chain must have taken the old open chunk's chunk ([`close_open_chunk`], or its own walk
    /// from the open chunk's start).
    ///
    /// [`close_open_chunk`]: Self::close_open_chunk
    pub fn restart_open_chunk(&mut self, bytes: &[u8]) {
        self.tail.clear();
        self.tail.extend_from_slice(bytes);
    }

    /// The minima of every chunk that has ended, and the open chunk.
    pub fn into_parts(self) -> (MinHash, Vec<u8>) {
        (self.minhash, self.tail)
    }

    fn chain_sequential(&mut self, data: &[u8]) -> usize {
        let mut features = std::mem::take(&mut self.features);
        features.clear();
        let tail = cdc::chain(data, 0, data.len(), &mut |s: Span| features.push(s.feature));
        self.minhash.fold(&features);
        self.features = features;
        tail
    }

    /// Phase 2, sequential and short: finds where the true chain joins each speculated
    /// segment, folds what each joined segment adds from there, and returns the tail's start.
    fn settle(&mut self, data: &[u8], speculated: &Speculated) -> usize {
        let Speculated { bounds, chains } = speculated;
        let mut minhash = MinHash::default();
        let mut accept = |segment: &Segment, from: usize| segment.fold_from(from, &mut minhash);
        accept(&chains[0], 0);
        let mut bridge: Vec<u32> = Vec::new();
        let mut pos = chains[0].next;
        'segments: for (k, segment) in chains.iter().enumerate().skip(1) {
            let (spans, next) = (&segment.spans, segment.next);
            loop {
                if pos == bounds[k] {
                    accept(segment, 0);
                    pos = next;
                    continue 'segments;
                }
                if pos > next {
                    continue 'segments; // passed this segment without meeting its chain
                }
                let i = spans.partition_point(|s| s.end < pos);
                let target = match spans.get(i) {
                    Some(span) if span.end == pos => {
                        accept(segment, i + 1);
                        pos = next;
                        continue 'segments;
                    }
                    Some(span) if span.has_start(pos) => {
                        // Inside a run of equal chunks: the rest of the run adds one feature.
                        bridge.push(span.feature);
                        accept(segment, i + 1);
                        pos = next;
                        continue 'segments;
                    }
                    // No start of this chain lies between `pos` and the span's end: a chunk
                    // inside it, or a run whose chunks are out of phase with ours.
                    Some(span) => span.end,
                    None => next,
                };
                let stepped = cdc::chain(data, pos, target.max(pos + 1), &mut |s| bridge.push(s.feature));
                if stepped == pos {
                    break 'segments; // the chunk at `pos` runs to the end: the tail
                }
                pos = stepped;
            }
        }
        // Whatever the segments left unchained up to the tail, chain it here.
        pos = cdc::chain(data, pos, data.len(), &mut |s| bridge.push(s.feature));
        minhash.fold(&bridge);
        self.minhash.merge(&minhash);
        pos
    }
}

/// Phase 1's result: segment bounds and each segment's speculative chain.
struct Speculated {
    bounds: Vec<usize>,
    chains: Vec<Segment>,
}

/// Phase 1, parallel: each segment's speculative chain, with everything past its first
/// `settle` chunks already folded (the true chain nearly always joins before). Each thread
/// takes the next segment in order until none is left.
fn speculate(data: &[u8], threads: usize, settle: usize) -> Speculated {
    let bounds = segment_bounds(data.len(), threads);
    let slots: Vec<OnceLock<Segment>> = bounds[1..].iter().map(|_| OnceLock::new()).collect();
    let next = AtomicUsize::new(0);
    // Segments are taken two at a time and chained in lockstep (`cdc::chain_pair`).
    let work = || loop {
        let k = next.fetch_add(2, Ordering::Relaxed);
        match (slots.get(k), slots.get(k + 1)) {
            (Some(first), Some(second)) => {
                let (a, b) = chain_two_segments(data, &bounds, k, settle);
                let _ = first.set(a);
                let _ = second.set(b);
            }
            (Some(last), None) => {
                let _ = last.set(chain_segment(data, &bounds, k, settle));
            }
            _ => break,
        }
    };
    let helpers = threads.min(slots.len().div_ceil(2)) - 1;
    if helpers == 0 {
        work(); // no pool needed (nor started, outside one)
    } else {
        rayon::scope(|scope| {
            for _ in 0..helpers {
                scope.spawn(|_| work());
            }
            work();
        });
    }
    let chains = slots.into_iter().map(|s| s.into_inner().expect("every segment was chained")).collect();
    Speculated { bounds, chains }
}

/// Segment bounds over `len` bytes: each segment a share of what is left (guided
/// self-scheduling), between `SEGMENT_MIN` and `SEGMENT_MAX`; no runt at the end.
fn segment_bounds(len: usize, threads: usize) -> Vec<usize> {
    let mut bounds = vec![0];
    let mut pos = 0;
    while pos < len {
        let left = len - pos;
        let size = (left / (2 * threads)).clamp(SEGMENT_MIN, SEGMENT_MAX);
        pos += if left < size + SEGMENT_MIN { left } else { size };
        bounds.push(pos);
    }
    bounds
}

/// Chains segment `k` speculatively from its own start; folds all but its first `settle`
/// chunks.
fn chain_segment(data: &[u8], bounds: &[usize], k: usize, settle: usize) -> Segment {
    let mut spans = spans_for(bounds, k);
    let next = cdc::chain(data, bounds[k], bounds[k + 1], &mut |s| spans.push(s));
    Segment::new(spans, next, k, settle)
}

/// Segments `k` and `k + 1`, as [`chain_segment`] makes them, chained in lockstep.
fn chain_two_segments(data: &[u8], bounds: &[usize], k: usize, settle: usize) -> (Segment, Segment) {
    let (mut first, mut second) = (spans_for(bounds, k), spans_for(bounds, k + 1));
    let (next_first, next_second) = cdc::chain_pair(
        data,
        (bounds[k], bounds[k + 1]),
        (bounds[k + 1], bounds[k + 2]),
        &mut |s| first.push(s),
        &mut |s| second.push(s),
    );
    (Segment::new(first, next_first, k, settle), Segment::new(second, next_second, k + 1, settle))
}

/// Room for segment `k`'s spans (chunks average about 1 KiB).
fn spans_for(bounds: &[usize], k: usize) -> Vec<Span> {
    Vec::with_capacity((bounds[k + 1] - bounds[k]) / 1024 + 16)
}

/// Chunks at the start of a segment whose features phase 1 leaves unfolded: the true chain
/// joins a speculative one within a few chunks of the segment's start on any data but long
/// runs (and runs are single spans), so this is rarely exceeded, and a few dozen features
/// cost nothing to fold on the stitching thread.
const SETTLE: usize = 64;

/// One segment's speculative chain after phase 1.
struct Segment {
    spans: Vec<Span>,
    /// Start of the first chunk the chain left to the next segment (or the tail).
    next: usize,
    /// `spans[settled..]` are folded into `folded`.
    settled: usize,
    folded: MinHash,
}

impl Segment {
    /// Segment `k`'s chain, with all but its first `settle` chunks folded. Segment 0 starts
    /// on the true chain: all of it is accepted, so all of it is folded.
    fn new(spans: Vec<Span>, next: usize, k: usize, settle: usize) -> Self {
        let settled = if k == 0 { 0 } else { settle.min(spans.len()) };
        let mut folded = MinHash::default();
        fold_spans(&mut folded, &spans[settled..]);
        Segment { spans, next, settled, folded }
    }

    /// Folds the features of `spans[from..]` (the chunks the true chain shares) into `minhash`.
    fn fold_from(&self, from: usize, minhash: &mut MinHash) {
        if from <= self.settled {
            fold_spans(minhash, &self.spans[from..self.settled]);
            minhash.merge(&self.folded);
        } else {
            // Joined late: the pre-folded features include chunks the true chain does not have.
            fold_spans(minhash, &self.spans[from..]);
        }
    }
}

/// Folds the features of `spans` (a run of equal chunks adds its feature once: the minima
/// do not change when a feature is folded again).
pub fn fold_spans(minhash: &mut MinHash, spans: &[Span]) {
    let mut batch = [0u32; 256];
    for group in spans.chunks(batch.len()) {
        for (slot, span) in batch.iter_mut().zip(group) {
            *slot = span.feature;
        }
        minhash.fold(&batch[..group.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::testdata::pseudo_random;

    fn reference(data: &[u8]) -> String {
        iscc_lib::gen_data_code_v0(data, 256).unwrap().iscc
    }

    fn ours(data: &[u8], parallel: bool, pieces: &[usize]) -> String {
        let mut h = DataHasher::new(parallel);
        let mut rest = data;
        for &p in pieces {
            let p = p.min(rest.len());
            h.update(&rest[..p]);
            rest = &rest[p..];
        }
        h.update(rest);
        crate::engine::codes::unit(iscc_lib::codec::MainType::Data, &h.finalize(), 256)
    }

    /// Random data with zero runs, a periodic stretch and single-byte runs, so segment
    /// bounds fall inside every kind of region.
    fn mixed(len: usize) -> Vec<u8> {
        let mut d = pseudo_random(len, 42);
        let n = d.len();
        d[n / 10..n / 4].fill(0);
        for (i, b) in d[n / 3..n / 2].iter_mut().enumerate() {
            *b = (i % 7) as u8;
        }
        d[(n * 6) / 10..(n * 7) / 10].fill(0xEE);
        d
    }

    #[test]
    fn parallel_and_sequential_match_iscc_lib() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
        for data in [pseudo_random(9 << 20, 3), vec![0u8; 9 << 20], mixed(13 << 20)] {
            let expected = reference(&data);
            assert_eq!(ours(&data, false, &[]), expected);
            pool.install(|| {
                assert_eq!(ours(&data, true, &[]), expected);
                // Updates that split the stream at awkward places, around window-sized pieces.
                assert_eq!(ours(&data, true, &[1, 8191, 5 << 20, 4097]), expected);
            });
        }
    }

    #[test]
    fn tiny_inputs_match_iscc_lib() {
        for len in [0usize, 1, 255, 256, 257, 1023, 1024, 8191, 8192, 8193, 20000] {
            let data = pseudo_random(len, len as u64);
            assert_eq!(ours(&data, false, &[]), reference(&data), "len {len}");
            assert_eq!(ours(&data, false, &[len / 3, 1]), reference(&data), "split len {len}");
        }
    }

    /// Around the sizes where a buffer starts to be split in two and across threads.
    #[test]
    fn buffers_around_the_split_sizes_match_iscc_lib() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for len in [PAIR_MIN - 1, PAIR_MIN, PAIR_MIN + 1, 3 << 20, SPLIT_MIN - 1, SPLIT_MIN, SPLIT_MIN + 1] {
            let data = mixed(len);
            let expected = reference(&data);
            assert_eq!(ours(&data, false, &[]), expected, "len {len}");
            assert_eq!(pool.install(|| ours(&data, true, &[])), expected, "len {len}, 2 threads");
            assert_eq!(ours(&data, false, &[len / 2, 77]), expected, "len {len}, split");
        }
    }

    /// Stitching with every amount of pre-folding: `settle` 0 makes nearly every join a late
    /// one (the fallback that folds from the join), a huge `settle` folds nothing early.
    #[test]
    fn stitching_is_exact_whatever_was_folded_in_phase_1() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let periodic: Vec<u8> = pseudo_random(3001, 9).into_iter().cycle().take(9 << 20).collect();
        for data in [mixed(11 << 20), periodic] {
            let expected = reference(&data);
            for settle in [0, 1, 2, 5, SETTLE, usize::MAX] {
                let mut h = DataHasher::new(true);
                let tail = pool.install(|| h.settle(&data, &speculate(&data, 3, settle)));
                h.tail.extend_from_slice(&data[tail..]);
                let code = crate::engine::codes::unit(iscc_lib::codec::MainType::Data, &h.finalize(), 256);
                assert_eq!(code, expected, "settle {settle}");
            }
        }
    }

    #[test]
    fn segments_cover_the_buffer_largest_first() {
        for (len, threads) in
            [(4 << 20, 2), (32 << 20, 2), (32 << 20, 16), ((32 << 20) + 12_345, 3), (5 << 20, 64)]
        {
            let bounds = segment_bounds(len, threads);
            assert_eq!((bounds[0], *bounds.last().unwrap()), (0, len));
            let sizes: Vec<usize> = bounds.windows(2).map(|w| w[1] - w[0]).collect();
            let (last, body) = sizes.split_last().unwrap();
            assert!(body.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
            assert!(body.iter().all(|&n| (SEGMENT_MIN..=SEGMENT_MAX).contains(&n)), "{sizes:?}");
            assert!((SEGMENT_MIN..SEGMENT_MAX + SEGMENT_MIN).contains(last), "{sizes:?}");
        }
    }
}
