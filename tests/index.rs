//! `index`: the answers equal a brute-force comparison with every live code, after adds,
//! replacements, removals, merges and crashed updates; the lock, the records and their errors.

mod common;
use common::*;
use omero_iscc::commands::index::{
    AnswerLine, CodeLine, MatchKind, StatsLine, UpdateLine, UpdateStatus, VerifyLine,
};
use omero_iscc::engine::codes::{hex, Digests};
use omero_iscc::engine::index::entry::Space;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// SplitMix64: the tests' deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for k in 0..4 {
            out[8 * k..8 * k + 8].copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }
}

/// A code of the tests, kept as the digests it is made of: the brute force reads these, not
/// the ISCC strings (whose decoding is what the index does).
#[derive(Clone, Debug)]
struct Code {
    id: u64,
    data: [u8; 32],
    instance: [u8; 32],
    wide: bool,
    datahash: bool,
    pixels: bool,
    group: u64,
    owner: u64,
}

impl Code {
    fn iscc(&self) -> String {
        Digests { data: self.data, instance: self.instance, filesize: 0 }.codes(self.wide).iscc
    }

    fn datahash(&self) -> Option<String> {
        self.datahash.then(|| format!("1e20{}", hex(&self.instance)))
    }

    fn add_line(&self) -> String {
        let line = CodeLine {
            id: self.id,
            iscc: self.iscc(),
            datahash: self.datahash(),
            group: self.group,
            owner: self.owner,
            code: if self.pixels { Space::Pixels } else { Space::Files },
        };
        serde_json::to_string(&line).unwrap()
    }

    fn query_line(&self, with_id: bool) -> String {
        let mut v = serde_json::json!({"iscc": self.iscc()});
        if with_id {
            v["id"] = self.id.into();
        }
        if let Some(d) = self.datahash() {
            v["datahash"] = d.into();
        }
        if self.pixels {
            v["code"] = "pixels".into();
        }
        v.to_string()
    }
}

/// The documented rule, written from the digests: (kind, distance, bits) if `b` matches `a`.
fn brute_relation(a: &Code, b: &Code, threshold: u32) -> Option<(MatchKind, u32, u32)> {
    if a.pixels != b.pixels {
        return None;
    }
    let known = |c: &Code| if c.wide || c.datahash { 16 } else { 8 };
    let n = known(a).min(known(b));
    let instance = a.instance[..n] == b.instance[..n];
    let bits = if a.wide && b.wide { 128 } else { 64 };
    let distance: u32 = (0..bits / 8).map(|k| (a.data[k] ^ b.data[k]).count_ones()).sum();
    let limit = if bits == 128 { 2 * threshold } else { threshold };
    if !instance && distance > limit {
        return None;
    }
    let kind = if instance {
        MatchKind::Identical
    } else if distance == 0 {
        MatchKind::SameData
    } else {
        MatchKind::Similar
    };
    Some((kind, distance, bits as u32))
}

type Answer = BTreeSet<(u64, MatchKind, u32, u32)>;

/// The live codes for the brute force: their digests' first 128 bits as integers, in
/// columns.
struct Flat<'a> {
    codes: Vec<&'a Code>,
    data: Vec<u128>,
    instance: Vec<u128>,
}

fn first_128(b: &[u8; 32]) -> u128 {
    u128::from_be_bytes(b[..16].try_into().unwrap())
}

fn flat(live: &BTreeMap<u64, Code>) -> Flat<'_> {
    let codes: Vec<&Code> = live.values().collect();
    let data = codes.iter().map(|c| first_128(&c.data)).collect();
    let instance = codes.iter().map(|c| first_128(&c.instance)).collect();
    Flat { codes, data, instance }
}

/// Every live code `query` matches, by comparing it with each.
fn brute_force(live: &Flat, query: &Code, with_id: bool, threshold: u32) -> Answer {
    let (qd, qi) = (first_128(&query.data), first_128(&query.instance));
    let mut out = Answer::new();
    for (k, (&d, &i)) in live.data.iter().zip(&live.instance).enumerate() {
        // A cheap first look (the first 64 bits of both); the rule itself decides.
        if ((qd ^ d) >> 64).count_ones() > 2 * threshold && (qi >> 64) != (i >> 64) {
            continue;
        }
        let c = live.codes[k];
        if with_id && c.id == query.id {
            continue;
        }
        if let Some((kind, d, b)) = brute_relation(query, c, threshold) {
            out.insert((c.id, kind, d, b));
        }
    }
    out
}

/// [`brute_force`] for every query, on all cores.
fn brute_force_all(live: &Flat, queries: &[(Code, bool)], threshold: u32) -> Vec<Answer> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let part = queries.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = queries
            .chunks(part)
            .map(|chunk| {
                s.spawn(move || {
                    chunk.iter().map(|(q, w)| brute_force(live, q, *w, threshold)).collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

fn kind_rank(k: MatchKind) -> u8 {
    (k != MatchKind::Identical) as u8
}

/// Flips `d` bits of the Data-Code's first `width` bits in one of three patterns: at random,
/// packed into as few 16-bit blocks as possible, or spread round-robin over the blocks (the
/// pattern that tests the pigeonhole bound at its edge).
fn flip(data: &mut [u8; 32], d: u32, width: u32, pattern: u64, rng: &mut Rng) {
    let mut chosen = BTreeSet::new();
    let blocks = width / 16;
    let first_block = rng.below(blocks as u64) as u32;
    let mut k = 0u32;
    while (chosen.len() as u32) < d {
        let bit = match pattern {
            0 => rng.below(width as u64) as u32,
            1 => ((first_block + k / 16) % blocks) * 16 + (k % 16),
            _ => ((first_block + k) % blocks) * 16 + rng.below(16) as u32,
        };
        k += 1;
        chosen.insert(bit);
    }
    for bit in chosen {
        data[(bit / 8) as usize] ^= 0x80 >> (bit % 8);
    }
}

/// The codes of the tests: random, with near copies of earlier codes among them.
struct Maker {
    rng: Rng,
    next_id: u64,
}

impl Maker {
    fn random(&mut self) -> Code {
        let r = self.rng.next();
        self.next_id += 1;
        Code {
            id: self.next_id,
            data: self.rng.bytes(),
            instance: self.rng.bytes(),
            wide: r % 5 < 2,
            datahash: r % 7 < 3,
            pixels: r % 11 == 0,
            group: 1 + (r >> 8) % 5,
            owner: 1 + (r >> 16) % 20,
        }
    }

    /// A near copy of `base` at distance `d` (on the pair's width), of width `wide`.
    fn near(&mut self, base: &Code, d: u32, wide: bool, pattern: u64) -> Code {
        let mut c = self.random();
        c.pixels = base.pixels;
        c.wide = wide;
        c.data = base.data;
        let width = if wide && base.wide { 128 } else { 64 };
        flip(&mut c.data, d, width, pattern, &mut self.rng);
        c
    }

    fn batch(&mut self, n: usize, pool: &[Code]) -> Vec<Code> {
        (0..n)
            .map(|k| {
                if k % 4 == 3 && !pool.is_empty() {
                    let base = pool[self.rng.below(pool.len() as u64) as usize].clone();
                    let d = self.rng.below(27) as u32;
                    let wide = self.rng.below(2) == 0;
                    let pattern = self.rng.below(3);
                    self.near(&base, d, wide, pattern)
                } else {
                    self.random()
                }
            })
            .collect()
    }
}

fn index(dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut all = vec!["index"];
    all.extend_from_slice(args);
    run_in(dir, &all, stdin.as_bytes())
}

fn add(dir: &Path, codes: &[Code]) -> Vec<UpdateLine> {
    let input: String = codes.iter().map(|c| c.add_line() + "\n").collect();
    let out = index(dir, &["add", "idx"], &input);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    typed(&out)
}

fn typed<T: serde::de::DeserializeOwned>(out: &std::process::Output) -> Vec<T> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Queries the index and compares every answer with the brute force.
/// Returns the (bits, distance) of every match found.
fn check(
    dir: &Path,
    live: &BTreeMap<u64, Code>,
    queries: &[(Code, bool)],
    threshold: u32,
    what: &str,
) -> BTreeSet<(u32, u32)> {
    let input: String = queries.iter().map(|(c, with_id)| c.query_line(*with_id) + "\n").collect();
    let t = threshold.to_string();
    let out = index(dir, &["query", "--threshold", &t, "idx"], &input);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answers: Vec<AnswerLine> = typed(&out);
    assert_eq!(answers.len(), queries.len());
    let live_flat = flat(live);
    let wanted = brute_force_all(&live_flat, queries, threshold);
    let mut seen = BTreeSet::new();
    for (k, ((q, _), a)) in queries.iter().zip(&answers).enumerate() {
        assert_eq!(a.line, k + 1);
        let matches = a.matches.as_ref().unwrap_or_else(|| panic!("{what}: error {:?}", a.error));
        let got: Answer = matches.iter().map(|m| (m.id, m.kind, m.distance, m.bits)).collect();
        assert_eq!(got.len(), matches.len(), "{what}: an id twice in one answer");
        let want = &wanted[k];
        if got != *want {
            let missing: Vec<_> = want.difference(&got).take(5).collect();
            let extra: Vec<_> = got.difference(want).take(5).collect();
            panic!("{what}, threshold {threshold}, query {k} ({q:?}): missing {missing:?}, extra {extra:?}");
        }
        let order: Vec<_> = matches.iter().map(|m| (kind_rank(m.kind), m.distance, m.id)).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{what}: answer out of order");
        for m in matches {
            let c = &live[&m.id];
            assert_eq!((m.iscc.as_str(), m.group, m.owner), (c.iscc().as_str(), c.group, c.owner));
        }
        seen.extend(got.iter().map(|&(_, _, d, b)| (b, d)));
    }
    seen
}

/// Queries: near copies of live codes at every distance up to past the threshold, for every
/// pair of widths and flip pattern; codes of the index itself (with and without their id);
/// removed codes; same instance with other data; random codes.
fn queries(maker: &mut Maker, live: &BTreeMap<u64, Code>, removed: &[Code]) -> Vec<(Code, bool)> {
    let codes: Vec<&Code> = live.values().collect();
    let mut out = Vec::new();
    for d in 0..=26u32 {
        for (base_wide, wide) in [(false, false), (true, true), (false, true), (true, false)] {
            for pattern in 0..3 {
                for _ in 0..3 {
                    let base = loop {
                        let c = codes[maker.rng.below(codes.len() as u64) as usize];
                        if c.wide == base_wide {
                            break c;
                        }
                    };
                    if (base_wide && wide) || d <= 16 {
                        out.push((maker.near(base, d, wide, pattern), false));
                    }
                }
            }
        }
    }
    for k in 0..200 {
        let c = codes[maker.rng.below(codes.len() as u64) as usize].clone();
        out.push((c, k % 2 == 0));
    }
    for c in removed.iter().take(200) {
        out.push((c.clone(), false));
    }
    for _ in 0..150 {
        let base = codes[maker.rng.below(codes.len() as u64) as usize];
        let mut c = maker.random();
        c.instance = base.instance;
        c.pixels = base.pixels;
        out.push((c, false));
    }
    for _ in 0..300 {
        out.push((maker.random(), false));
    }
    out
}

#[test]
fn answers_equal_brute_force_on_100000_codes_after_adds_removes_and_crashes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut maker = Maker { rng: Rng(24), next_id: 1000 };
    let mut live: BTreeMap<u64, Code> = BTreeMap::new();

    // A first add large enough for a segment with tables, then small segments scanned.
    let a = maker.batch(70_000, &[]);
    let a = {
        let mut with_near = a.clone();
        let extra = maker.batch(4_000, &a);
        with_near.truncate(66_000);
        with_near.extend(extra);
        with_near
    };
    let status = add(d, &a);
    assert!(status.iter().all(|s| s.status == Some(UpdateStatus::Added)));
    live.extend(a.iter().map(|c| (c.id, c.clone())));
    let pool: Vec<Code> = live.values().cloned().collect();
    let b = maker.batch(16_000, &pool);
    add(d, &b);
    live.extend(b.iter().map(|c| (c.id, c.clone())));

    // Replacements: known ids with new codes.
    let mut c = maker.batch(16_000, &pool);
    for (k, code) in c.iter_mut().take(2_000).enumerate() {
        code.id = pool[k * 17].id;
    }
    let status = add(d, &c);
    assert_eq!(status.iter().filter(|s| s.status == Some(UpdateStatus::Replaced)).count(), 2_000);
    live.extend(c.iter().map(|c| (c.id, c.clone())));

    // Removals from the large and the small segments, and of ids never added.
    let gone: Vec<Code> = live.values().step_by(29).cloned().collect();
    let input: String =
        gone.iter().map(|c| format!("{{\"id\":{}}}\n", c.id)).collect::<String>() + "{\"id\":7}\n";
    let out = index(d, &["remove", "idx"], &input);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status: Vec<UpdateLine> = typed(&out);
    assert_eq!(status.last().unwrap().status, Some(UpdateStatus::Absent));
    assert!(status[..gone.len()].iter().all(|s| s.status == Some(UpdateStatus::Removed)));
    for g in &gone {
        live.remove(&g.id);
    }

    let qs = queries(&mut maker, &live, &gone);
    let seen = check(d, &live, &qs, 12, "after adds, replacements and removals");
    // Matches at every distance up to the threshold, narrow (64 bits) and wide (128 bits).
    let every: BTreeSet<(u32, u32)> = (0..=12).map(|d| (64, d)).chain((0..=24).map(|d| (128, d))).collect();
    assert!(seen.is_superset(&every), "distances without a match: {:?}", every.difference(&seen));

    // Crashed updates change nothing; the next update clears what they left.
    let pool: Vec<Code> = live.values().cloned().collect();
    let lost = maker.batch(6_000, &pool);
    let input: String = lost.iter().map(|c| c.add_line() + "\n").collect();
    for (point, command) in
        [("segment-written", "add"), ("manifest-written", "add"), ("manifest-switched", "compact")]
    {
        let out = bin()
            .args(["index", command, "idx"])
            .current_dir(d)
            .env("OMERO_ISCC_INDEX_FAULT", point)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                // `compact` reads nothing and may be gone before its input is written.
                let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
                child.wait_with_output()
            })
            .unwrap();
        assert!(!out.status.success(), "{point}: the update must have aborted");
        check(d, &live, &qs[..400], 12, point);
    }
    // The compaction that crashed after its switch left the merged segments behind.
    let files = |d: &Path| -> Vec<String> {
        fs::read_dir(d.join("idx"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(files(d).iter().filter(|n| n.ends_with(".isx")).count() > 1, "{:?}", files(d));
    let removed_remove: Vec<Code> = live.values().step_by(31).take(500).cloned().collect();
    let input: String = removed_remove.iter().map(|c| format!("{{\"id\":{}}}\n", c.id)).collect();
    let out = index(d, &["remove", "idx"], &input);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for g in &removed_remove {
        live.remove(&g.id);
    }
    let names: Vec<String> = fs::read_dir(d.join("idx"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n == "MANIFEST.tmp"), "{names:?}");
    let stats: Vec<StatsLine> = typed(&index(d, &["stats", "idx"], ""));
    assert_eq!(names.iter().filter(|n| n.ends_with(".isx")).count() as u64, stats[0].segments, "{names:?}");
    assert_eq!(stats[0].codes, live.len() as u64);

    let mut all_removed = gone.clone();
    all_removed.extend(removed_remove);
    let qs = queries(&mut maker, &live, &all_removed);
    for threshold in [12, 0, 5, 20] {
        check(d, &live, &qs, threshold, "after crashes");
    }

    // One segment after `compact`, tombstones dropped, the same answers.
    let out = index(d, &["compact", "idx"], "");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats: Vec<StatsLine> = typed(&index(d, &["stats", "idx"], ""));
    assert_eq!((stats[0].segments, stats[0].tombstones, stats[0].dead), (1, 0, 0));
    assert_eq!(stats[0].codes, live.len() as u64);
    check(d, &live, &qs, 12, "after compact");
    let verified: Vec<VerifyLine> = typed(&index(d, &["verify", "idx"], ""));
    assert!(verified.iter().all(|v| v.error.is_none()), "{verified:?}");
}

#[test]
fn many_small_updates_merge_and_keep_every_answer() {
    // Updates of a few hundred codes, with replacements and removals between them, go
    // through the merges of the newest segments; the answers stay those of the brute force.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut maker = Maker { rng: Rng(7), next_id: 0 };
    let mut live: BTreeMap<u64, Code> = BTreeMap::new();
    let mut removed = Vec::new();
    let mut segments = BTreeSet::new();
    for round in 0..24 {
        let pool: Vec<Code> = live.values().cloned().collect();
        let mut batch = maker.batch(300 + 50 * (round % 5), &pool);
        if round % 3 == 2 {
            for (k, c) in batch.iter_mut().take(40).enumerate() {
                c.id = pool[(k * 13) % pool.len()].id;
            }
        }
        add(d, &batch);
        live.extend(batch.into_iter().map(|c| (c.id, c)));
        if round % 4 == 3 {
            let gone: Vec<Code> = live.values().skip(round).step_by(9).cloned().collect();
            let input: String = gone.iter().map(|c| format!("{{\"id\":{}}}\n", c.id)).collect();
            assert!(index(d, &["remove", "idx"], &input).status.success());
            for g in &gone {
                live.remove(&g.id);
            }
            removed.extend(gone);
        }
        let stats: Vec<StatsLine> = typed(&index(d, &["stats", "idx"], ""));
        assert_eq!(stats[0].codes, live.len() as u64);
        segments.insert(stats[0].segments);
    }
    assert!(segments.len() > 2 && *segments.iter().max().unwrap() < 12, "segment counts seen: {segments:?}");
    let qs = queries(&mut maker, &live, &removed);
    check(d, &live, &qs, 12, "after small updates");
}

#[test]
fn real_files_copied_edited_and_hashed_as_pixels() {
    let samples = samples();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let original = fs::read(samples.join("ome-tiff/neuron-4Ch.tiff")).unwrap();
    fs::write(d.join("a-original.tiff"), &original).unwrap();
    fs::write(d.join("b-copy.tiff"), &original).unwrap();
    let mut edited = original.clone();
    let mid = edited.len() / 2;
    for (b, noise) in edited[mid..mid + 64].iter_mut().zip(pseudo_random(64, 5)) {
        *b ^= noise | 1;
    }
    fs::write(d.join("c-edited.tiff"), &edited).unwrap();
    fs::copy(samples.join("ome-tiff/neocortex-3Ch.tiff"), d.join("d-other.tiff")).unwrap();
    let names = ["a-original.tiff", "b-copy.tiff", "c-edited.tiff", "d-other.tiff"];
    for wide in [false, true] {
        let mut args = vec!["sum", "--json"];
        if wide {
            args.push("--wide");
        }
        args.extend_from_slice(&names);
        let sums = plain_json_lines(&run_in(d, &args, b""));
        let mut input = String::new();
        for (k, s) in sums.iter().enumerate() {
            let line = serde_json::json!({"id": k + 1, "iscc": s["iscc"], "datahash": s["datahash"], "group": 3, "owner": 4});
            input += &format!("{line}\n");
        }
        // The same bytes as a pixel code: a pixel code never matches a file's.
        let pixel =
            serde_json::json!({"id": 99, "iscc": sums[0]["iscc"], "group": 3, "owner": 4, "code": "pixels"});
        input += &format!("{pixel}\n");
        let dir = format!("idx-{wide}");
        let out = index(d, &["add", &dir], &input);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let query = format!("{{\"id\":1,\"iscc\":{}}}\n", sums[0]["iscc"]);
        let out = index(d, &["query", &dir], &query);
        let answers: Vec<AnswerLine> = typed(&out);
        let m = answers[0].matches.as_ref().unwrap();
        // The edited copy's distance is that of iscc-core's Data-Codes of the same files (a
        // small edit can leave the first 64 bits alone: then it has the same data).
        let reference = iscc_core(d, &["a-original.tiff", "c-edited.tiff"]);
        let key = if wide { "wide" } else { "narrow" };
        let data = |r: &serde_json::Value| {
            omero_iscc::engine::codes::decode_sum(r[key].as_str().unwrap()).unwrap().data
        };
        let expected = (data(&reference[0]) ^ data(&reference[1])).count_ones();
        assert!(expected <= if wide { 24 } else { 12 }, "the edit moved the code too far: {expected}");
        let kind = if expected == 0 { MatchKind::SameData } else { MatchKind::Similar };
        let got: Vec<(u64, MatchKind)> = m.iter().map(|m| (m.id, m.kind)).collect();
        assert_eq!(got, [(2, MatchKind::Identical), (3, kind)], "wide={wide}: {}", stdout(&out));
        assert_eq!(m[1].distance, expected);
        assert_eq!(m[1].bits, if wide { 128 } else { 64 });
        assert_eq!(m[1].iscc, reference[1][if wide { "wide" } else { "narrow" }].as_str().unwrap());
    }
}

#[test]
fn a_second_writer_is_refused_while_readers_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut maker = Maker { rng: Rng(3), next_id: 0 };
    let codes = maker.batch(50, &[]);
    add(d, &codes);
    // The first writer holds the lock while it waits for its input.
    let mut first = bin()
        .args(["index", "add", "idx"])
        .current_dir(d)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lock = d.join("idx/LOCK");
    let pid = first.id().to_string();
    for _ in 0..500 {
        if fs::read_to_string(&lock).unwrap_or_default() == pid {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let second = index(d, &["add", "idx"], &codes[0].add_line());
    assert_eq!(second.status.code(), Some(2));
    let err = stderr(&second);
    assert!(err.contains("being updated by another process") && err.contains(&format!("pid {pid}")), "{err}");
    let removal = index(d, &["remove", "idx"], "{\"id\":1}\n");
    assert_eq!(removal.status.code(), Some(2), "{}", stderr(&removal));
    let query = index(d, &["query", "idx"], &codes[5].query_line(true));
    assert_eq!(query.status.code(), Some(0), "{}", stderr(&query));
    use std::io::Write;
    let more = maker.batch(5, &[]);
    let input: String = more.iter().map(|c| c.add_line() + "\n").collect();
    first.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats: Vec<StatsLine> = typed(&index(d, &["stats", "idx"], ""));
    assert_eq!(stats[0].codes, 55);
}

#[test]
fn bad_records_get_errors_with_their_line_and_the_others_are_added() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut maker = Maker { rng: Rng(5), next_id: 0 };
    let good = maker.batch(3, &[]);
    let data_code = omero_iscc::engine::codes::unit(iscc_lib::codec::MainType::Data, &[1; 32], 64);
    let wrong_hash = format!("1e20{}", hex(&[9; 32]));
    let lines = [
        good[0].add_line(),
        "not json".to_string(),
        format!("{{\"id\":5,\"iscc\":\"{}\",\"group\":1,\"owner\":1,\"path\":\"x\"}}", good[1].iscc()),
        format!("{{\"id\":6,\"iscc\":\"{data_code}\",\"group\":1,\"owner\":1}}"),
        format!(
            "{{\"id\":7,\"iscc\":\"{}\",\"datahash\":\"{wrong_hash}\",\"group\":1,\"owner\":1}}",
            good[1].iscc()
        ),
        format!("{{\"id\":8,\"iscc\":\"{}\"}}", good[1].iscc()),
        String::new(),
        good[2].add_line(),
    ];
    let out = index(d, &["add", "idx"], &(lines.join("\n") + "\n"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let status: Vec<UpdateLine> = typed(&out);
    let summary: Vec<(Option<usize>, Option<u64>, bool)> =
        status.iter().map(|s| (s.line, s.id, s.status == Some(UpdateStatus::Added))).collect();
    assert_eq!(
        summary,
        [
            (None, Some(good[0].id), true),
            (Some(2), None, false),
            (Some(3), Some(5), false),
            (Some(4), Some(6), false),
            (Some(5), Some(7), false),
            (Some(6), Some(8), false),
            (None, Some(good[2].id), true),
        ]
    );
    let messages: Vec<String> =
        status.iter().filter_map(|s| s.error.as_ref()).map(|e| e.message.clone()).collect();
    assert!(messages[1].contains("unknown field `path`"), "{messages:?}");
    assert!(messages[2].contains("not an ISCC-SUM"), "{messages:?}");
    assert!(messages[3].contains("not of the code's Instance-Code"), "{messages:?}");
    assert!(messages[4].contains("missing field `group`"), "{messages:?}");
    let stats: Vec<StatsLine> = typed(&index(d, &["stats", "idx"], ""));
    assert_eq!(stats[0].codes, 2);

    let out =
        index(d, &["query", "idx"], &format!("{}\n{{\"iscc\":\"ISCC:XYZ\"}}\n", good[0].query_line(false)));
    assert_eq!(out.status.code(), Some(1));
    let answers: Vec<AnswerLine> = typed(&out);
    assert_eq!(answers[0].matches.as_ref().unwrap()[0].id, good[0].id);
    assert_eq!((answers[1].line, answers[1].matches.is_none()), (2, true));

    let missing = index(d, &["query", "nothing-here"], "");
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("no index in nothing-here"), "{}", stderr(&missing));
}

#[test]
fn visible_limits_the_matches_to_what_the_reader_may_see() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut maker = Maker { rng: Rng(9), next_id: 0 };
    let base = maker.random();
    let mut copies = Vec::new();
    for (group, owner) in [(1, 10), (2, 20), (2, 21), (3, 30)] {
        let mut c = maker.random();
        (c.data, c.instance, c.wide, c.pixels, c.group, c.owner) =
            (base.data, base.instance, base.wide, base.pixels, group, owner);
        copies.push(c);
    }
    add(d, &copies);
    let mut q: serde_json::Value = serde_json::from_str(&base.query_line(false)).unwrap();
    let mut ids = |visible: serde_json::Value| -> Vec<u64> {
        q["visible"] = visible;
        let answers: Vec<AnswerLine> = typed(&index(d, &["query", "idx"], &format!("{q}\n")));
        answers[0].matches.as_ref().unwrap().iter().map(|m| m.id).collect()
    };
    let [a, b, c, e] = [copies[0].id, copies[1].id, copies[2].id, copies[3].id];
    assert_eq!(ids(serde_json::json!({"groups": [1]})), [a]);
    assert_eq!(ids(serde_json::json!({"groups": [1], "owner": 21, "own_groups": [2]})), [a, c]);
    assert_eq!(ids(serde_json::json!({"owner": 30, "own_groups": [2]})), Vec::<u64>::new());
    assert_eq!(ids(serde_json::json!({"groups": [2, 3]})), [b, c, e]);
}

#[test]
fn list_and_rebuild_give_the_same_index_and_damage_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut maker = Maker { rng: Rng(11), next_id: 0 };
    let codes = maker.batch(2_000, &[]);
    add(d, &codes);
    let listed = index(d, &["list", "idx"], "");
    let lines: Vec<CodeLine> = typed(&listed);
    assert_eq!(lines.len(), 2_000);
    assert!(lines.windows(2).all(|w| w[0].id < w[1].id));
    let out = index(d, &["rebuild", "copy"], &stdout(&listed));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let qs: String = codes.iter().step_by(7).map(|c| c.query_line(true) + "\n").collect();
    let one: Vec<AnswerLine> = typed(&index(d, &["query", "idx"], &qs));
    let two: Vec<AnswerLine> = typed(&index(d, &["query", "copy"], &qs));
    assert_eq!(one, two);

    // A flipped byte in a segment's body: `verify` finds it.
    let seg = fs::read_dir(d.join("copy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "isx"))
        .unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    fs::write(&seg, &bytes).unwrap();
    let out = index(d, &["verify", "copy"], "");
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<VerifyLine> = typed(&out);
    assert!(lines[0].error.as_ref().unwrap().message.contains("checksum"));
    // A damaged header: the index is not opened at all.
    bytes[20] ^= 1;
    fs::write(&seg, &bytes).unwrap();
    let out = index(d, &["query", "copy"], &qs);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("damaged header"), "{}", stderr(&out));
}
