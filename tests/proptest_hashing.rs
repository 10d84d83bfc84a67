//! Property tests of the chunker and the streaming hashers: random data built from random
//! runs of one byte, periodic stretches and noise; random update splits; 1-8 threads.
//! Everything is compared with iscc-lib (the ISCC Foundation's implementation) and with the
//! sequential path, so a parallel shortcut that loses a chunk cannot hide. Groups are cut
//! from such data at random places, so files end inside runs, runs cross the joins, and
//! files are shorter than a chunk or empty; each file's code and the group's are compared.

use iscc_lib::codec::MainType;
use omero_iscc::engine::cdc;
use omero_iscc::engine::codes::unit;
use omero_iscc::engine::concat::{self, FileChain, Sharing};
use omero_iscc::engine::datacode::DataHasher;
use omero_iscc::engine::group;
use omero_iscc::engine::hash::{HashConfig, StreamHasher};
use omero_iscc::engine::testdata::pseudo_random;
use proptest::prelude::*;
use std::path::PathBuf;

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

/// Pieces for groups of large files whose codes a lost or extra chunk still changes: long
/// runs and short periods (few distinct chunks), and a little noise. (In a file of a
/// thousand distinct chunks, a lost chunk is the minimum of one of the 64 lanes in about 6 %
/// of cases: the code would nearly always stay the same.)
fn sparse_piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        (any::<u8>(), 1..1_500_000usize).prop_map(|(b, n)| Piece::Run(b, n)),
        (prop::collection::vec(any::<u8>(), 1..80), 1..60_000usize).prop_map(|(p, n)| Piece::Period(p, n)),
        (any::<u64>(), 1..12_000usize).prop_map(|(s, n)| Piece::Noise(s, n)),
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

/// `data` cut into files: each pair (place, length) cuts at the place and `length` bytes
/// later, so that short and empty files come up often.
fn cut_files(data: &[u8], cuts: &[(prop::sample::Index, usize)]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts
        .iter()
        .flat_map(|(place, len)| {
            let p = place.index(data.len() + 1);
            [p, (p + len).min(data.len())]
        })
        .collect();
    at.sort_unstable();
    let mut files = Vec::new();
    let mut start = 0;
    for cut in at.into_iter().chain([data.len()]) {
        files.push(data[start..cut].to_vec());
        start = cut;
    }
    files
}

fn data_code_of(data: &[u8]) -> String {
    iscc_lib::gen_data_code_v0(data, 256).unwrap().iscc
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

proptest! {
    // Each case is small: many of them, to come upon the rarer joins.
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A group's Data-Code from its files' own chains (`concat::chain_files`), the files
    /// handed over in batches of any size, equals iscc-lib's code of the concatenation; each
    /// file's own code equals iscc-lib's code of the file.
    #[test]
    fn group_chained_from_its_files_equals_iscc_lib(
        pieces in prop::collection::vec(piece(30_000), 1..8),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), 0usize..1200), 0..16),
        per_batch in 1usize..8,
    ) {
        let data = build(&pieces);
        let files = cut_files(&data, &cuts);
        let mut group = DataHasher::new(false);
        let mut sharing = Sharing::default();
        for batch in files.chunks(per_batch) {
            let bytes = batch.concat();
            let mut start = 0;
            let chains: Vec<FileChain> = batch.iter().map(|f| {
                start += f.len();
                FileChain::new(f, start - f.len())
            }).collect();
            for (file, chain) in batch.iter().zip(&chains) {
                prop_assert_eq!(unit(MainType::Data, &chain.digest(), 256), data_code_of(file));
            }
            sharing += concat::chain_files(&mut group, &bytes, &chains.iter().collect::<Vec<_>>());
        }
        prop_assert_eq!(unit(MainType::Data, &group.finalize(), 256), data_code_of(&data));
        prop_assert_eq!(sharing.met + sharing.apart + sharing.empty, files.len() as u64);
        prop_assert_eq!(sharing.bytes, data.len() as u64);
    }

    /// The group hasher as `sum --groups` runs it, on files written to disk: small files in
    /// batches, files of 1 MiB and more mapped (or read) in windows and joined to the group's
    /// chain in their first bytes; 1-8 threads. Every code of every file and of the group.
    #[test]
    fn group_hasher_equals_iscc_lib_per_file_and_concatenated(
        pieces in prop::collection::vec(sparse_piece(), 1..8),
        cuts in prop::collection::vec((any::<prop::sample::Index>(), 0usize..1200), 0..10),
        threads in 1usize..=8,
        mmap in any::<bool>(),
    ) {
        let data = build(&pieces);
        let files = cut_files(&data, &cuts);
        let tmp = tempfile::tempdir().unwrap();
        let paths: Vec<Result<PathBuf, _>> = files.iter().enumerate().map(|(k, f)| {
            let path = tmp.path().join(format!("f{k:02}"));
            std::fs::write(&path, f).unwrap();
            Ok(path)
        }).collect();
        let names: Vec<String> = (0..files.len()).map(|k| format!("f{k:02}")).collect();
        let config = HashConfig { parallel: threads > 1, mmap, checksums: vec![], ..Default::default() };
        let outcome = pool(threads).install(|| group::hash_group(&paths, &names, &config, true));
        let codes = outcome.group.unwrap().digests.codes(true);
        prop_assert_eq!(&codes.units[0], &data_code_of(&data));
        prop_assert_eq!(&codes.units[1], &iscc_lib::gen_instance_code_v0(&data, 256).unwrap().iscc);
        prop_assert_eq!(codes.filesize, data.len() as u64);
        prop_assert_eq!(outcome.files.len(), files.len());
        for (file, own) in files.iter().zip(outcome.files) {
            let codes = own.unwrap().digests.codes(true);
            prop_assert_eq!(&codes.units[0], &data_code_of(file), "a file of {} bytes", file.len());
            prop_assert_eq!(&codes.units[1], &iscc_lib::gen_instance_code_v0(file, 256).unwrap().iscc);
            prop_assert_eq!(codes.filesize, file.len() as u64);
        }
        if files.len() > 1 {
            let s = outcome.sharing;
            prop_assert_eq!(s.met + s.apart + s.empty, files.len() as u64);
        }
    }
}
