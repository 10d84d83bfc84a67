//! Property tests of the chunker and the streaming hashers: random data built from random
//! runs of one byte, periodic stretches and noise; random update splits; 1-8 threads.
//! Everything is compared with iscc-lib (the ISCC Foundation's implementation) and with the
//! sequential path, so a parallel shortcut that loses a chunk cannot hide.

use iscc_lib::codec::MainType;
use omero_iscc::engine::cdc;
use omero_iscc::engine::codes::unit;
use omero_iscc::engine::datacode::DataHasher;
use omero_iscc::engine::hash::{HashConfig, StreamHasher};
use omero_iscc::engine::testdata::pseudo_random;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Piece {
    Run(u8, usize),
    Period(Vec<u8>, usize),
    Noise(u64, usize),
}

fn piece(scale: usize) -> impl Strategy<Value = Piece> {
    prop_oneof![
        (any::<u8>(), 1..scale).prop_map(|(b, n)| Piece::Run(b, n)),
        (prop::collection::vec(any::<u8>(), 1..80), 1..scale).prop_map(|(p, n)| Piece::Period(p, n)),
        (any::<u64>(), 1..2 * scale).prop_map(|(s, n)| Piece::Noise(s, n)),
    ]
}

fn build(pieces: &[Piece]) -> Vec<u8> {
    let mut data = Vec::new();
    for p in pieces {
        match p {
            Piece::Run(b, n) => data.resize(data.len() + n, *b),
            Piece::Period(pattern, n) => data.extend(pattern.iter().cycle().take(*n)),
            Piece::Noise(seed, n) => data.extend(pseudo_random(*n, *seed)),
        }
    }
    data
}

/// Feeds `data` in pieces cut at `splits` (positions, any order, clipped to the data).
fn feed(data: &[u8], splits: &[usize], mut update: impl FnMut(&[u8])) {
    let mut cuts: Vec<usize> = splits.iter().map(|&s| s.min(data.len())).collect();
    cuts.sort_unstable();
    let mut start = 0;
    for cut in cuts.into_iter().chain([data.len()]) {
        update(&data[start..cut]);
        start = cut;
    }
}

fn data_code(data: &[u8], splits: &[usize], parallel: bool) -> String {
    let mut h = DataHasher::new(parallel);
    feed(data, splits, |b| h.update(b));
    unit(MainType::Data, &h.finalize(), 256)
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Chunk boundaries equal iscc-lib's content-defined chunking.
    #[test]
    fn chunk_boundaries_equal_iscc_lib(pieces in prop::collection::vec(piece(40_000), 1..8)) {
        let data = build(&pieces);
        let want: Vec<usize> = iscc_lib::alg_cdc_chunks(&data, false, 1024).unwrap().iter().map(|c| c.len()).collect();
        let mut got = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let len = cdc::cut(&data[pos..]);
            got.push(len);
            pos += len;
        }
        if data.is_empty() {
            got.push(0);
        }
        prop_assert_eq!(got, want);
    }

    /// Two chains walked in lockstep (`chain_pair`) equal the same chains walked alone,
    /// wherever they start and stop.
    #[test]
    fn chains_in_lockstep_equal_chains_alone(
        pieces in prop::collection::vec(piece(40_000), 1..8),
        points in prop::collection::vec(any::<prop::sample::Index>(), 4),
    ) {
        let data = build(&pieces);
        let p: Vec<usize> = points.iter().map(|i| i.index(data.len() + 1)).collect();
        let alone = |(start, stop): (usize, usize)| {
            let mut spans = Vec::new();
            let next = cdc::chain(&data, start, stop, &mut |s| spans.push(s));
            (spans, next)
        };
        let (a, b) = ((p[0], p[1]), (p[2], p[3]));
        let (mut spans_a, mut spans_b) = (Vec::new(), Vec::new());
        let (next_a, next_b) = cdc::chain_pair(&data, a, b, &mut |s| spans_a.push(s), &mut |s| spans_b.push(s));
        prop_assert_eq!((spans_a, next_a), alone(a));
        prop_assert_eq!((spans_b, next_b), alone(b));
    }

    /// The Data-Code over multi-MiB streams, split anywhere, sequential and on 1-8 threads.
    #[test]
    fn data_code_equals_iscc_lib_and_the_sequential_path(
        pieces in prop::collection::vec(piece(3 << 20), 1..6),
        splits in prop::collection::vec(0usize..20 << 20, 0..5),
        threads in 1usize..=8,
    ) {
        let data = build(&pieces);
        let want = iscc_lib::gen_data_code_v0(&data, 256).unwrap().iscc;
        prop_assert_eq!(&data_code(&data, &splits, false), &want);
        let parallel = pool(threads).install(|| data_code(&data, &splits, true));
        prop_assert_eq!(&parallel, &want);
    }

    /// The whole stream hasher (Data-Code, BLAKE3, size) as `sum` runs it.
    #[test]
    fn stream_hasher_equals_iscc_lib(
        pieces in prop::collection::vec(piece(2 << 20), 1..5),
        splits in prop::collection::vec(0usize..12 << 20, 0..4),
        threads in 1usize..=8,
    ) {
        let data = build(&pieces);
        let outcome = pool(threads).install(|| {
            let mut h = StreamHasher::new(&HashConfig { parallel: threads > 1, mmap: true, ..HashConfig::default() });
            feed(&data, &splits, |b| h.update(b));
            h.finish()
        });
        let codes = outcome.digests.codes(true);
        prop_assert_eq!(&codes.units[0], &iscc_lib::gen_data_code_v0(&data, 256).unwrap().iscc);
        prop_assert_eq!(&codes.units[1], &iscc_lib::gen_instance_code_v0(&data, 256).unwrap().iscc);
        prop_assert_eq!(codes.filesize, data.len() as u64);
        prop_assert_eq!(codes.datahash, format!("1e20{}", blake3::hash(&data).to_hex()));
    }
}
