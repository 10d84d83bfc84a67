//! Streaming Data-Code: content-defined chunks, their xxh32 features and a folded MinHash,
//! bit-identical to iscc-core's `DataHasherV0` for the same byte stream.
//!
//! Large buffers are chunked in parallel: the buffer is split into segments, each segment is
//! chained speculatively from its own start, and the true chain is stitched through them: it
//! adopts a segment's chunks from the first chunk start the two chains share (see `cdc`).
//! Where they never meet (a segment inside one long run of a byte value, say), the true chain
//! simply goes on sequentially, so the result is exact whatever the data.

use crate::engine::cdc::{self, Span};
use crate::engine::minhash::MinHash;
use rayon::prelude::*;

/// Below this many bytes a buffer is chunked on the calling thread.
const PARALLEL_MIN: usize = 4 << 20;
/// Smallest segment worth a task of its own.
const SEGMENT_MIN: usize = 1 << 20;

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
        let mut start = 0;
        if !self.tail.is_empty() {
            // Finish the pending chunk: it ends within `cdc::MAX` bytes of its start, and no
            // earlier than the tail's end (the tail held no cut).
            let take = data.len().min(cdc::MAX);
            self.tail.extend_from_slice(&data[..take]);
            let len = cdc::cut(&self.tail);
            if len == self.tail.len() && take == data.len() {
                return; // still no end in sight: the whole tail waits for more data
            }
            let held = self.tail.len() - take;
            self.fold_one(xxhash_rust::xxh32::xxh32(&self.tail[..len], 0));
            start = len - held;
            self.tail.clear();
        }
        let rest = &data[start..];
        let threads = rayon::current_num_threads();
        let tail_start = if self.parallel && threads > 1 && rest.len() >= PARALLEL_MIN {
            self.chain_parallel(rest, threads)
        } else {
            self.chain_sequential(rest)
        };
        self.tail.extend_from_slice(&rest[tail_start..]);
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

    fn chain_sequential(&mut self, data: &[u8]) -> usize {
        let mut features = std::mem::take(&mut self.features);
        features.clear();
        let tail = cdc::chain(data, 0, data.len(), &mut |s: Span| features.push(s.feature));
        self.minhash.fold(&features);
        self.features = features;
        tail
    }

    fn chain_parallel(&mut self, data: &[u8], threads: usize) -> usize {
        let segments = (4 * threads).min(data.len() / SEGMENT_MIN).max(2);
        let bounds: Vec<usize> = (0..=segments).map(|k| data.len() * k / segments).collect();
        // Phase 1, parallel: each segment's speculative chain.
        let chains: Vec<(Vec<Span>, usize)> = (0..segments)
            .into_par_iter()
            .map(|k| {
                let mut spans = Vec::with_capacity((bounds[k + 1] - bounds[k]) / 1024 + 16);
                let next = cdc::chain(data, bounds[k], bounds[k + 1], &mut |s| spans.push(s));
                (spans, next)
            })
            .collect();
        // Phase 2, sequential and short: find where the true chain joins each segment.
        let mut accepted: Vec<&[Span]> = vec![&chains[0].0];
        let mut bridge: Vec<u32> = Vec::new();
        let mut pos = chains[0].1;
        'segments: for (k, (spans, next)) in chains.iter().enumerate().skip(1) {
            loop {
                if pos == bounds[k] {
                    accepted.push(spans);
                    pos = *next;
                    continue 'segments;
                }
                if pos > *next {
                    continue 'segments; // passed this segment without meeting its chain
                }
                let i = spans.partition_point(|s| s.end < pos);
                let target = match spans.get(i) {
                    Some(span) if span.end == pos => {
                        accepted.push(&spans[i + 1..]);
                        pos = *next;
                        continue 'segments;
                    }
                    Some(span) if span.has_start(pos) => {
                        // Inside a run of equal chunks: the rest of the run adds one feature.
                        bridge.push(span.feature);
                        accepted.push(&spans[i + 1..]);
                        pos = *next;
                        continue 'segments;
                    }
                    // No start of this chain lies between `pos` and the span's end: a chunk
                    // inside it, or a run whose chunks are out of phase with ours.
                    Some(span) => span.end,
                    None => *next,
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
        // Phase 3, parallel: fold the accepted features.
        let folded = accepted
            .par_iter()
            .map(|spans| {
                let features: Vec<u32> = spans.iter().map(|s| s.feature).collect();
                let mut m = MinHash::default();
                m.fold(&features);
                m
            })
            .reduce(MinHash::default, |mut a, b| {
                a.merge(&b);
                a
            });
        self.minhash.merge(&folded);
        self.minhash.fold(&bridge);
        pos
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
}
