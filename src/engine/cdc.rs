//! Content-defined chunking of the ISCC Data-Code (ISO 24138, iscc-core's `alg_cdc_chunks`).
//!
//! A chunk's end depends only on where the chunk starts and on at most [`MAX`] bytes after
//! that start. Two facts follow, and the fast paths here rest on them:
//! * a chain of cuts begun at any position is exact from the first chunk start it shares
//!   with the true chain (the basis of the parallel stitching in `datacode`);
//! * inside a run of one byte value every chunk has the same length, so the chain can jump
//!   through such runs arithmetically instead of hashing every byte ([`run_period`]).
//!
//! The gear hash itself is one long chain of dependent additions; [`chain_pair`] walks two
//! chains at once so that a core always has independent work to overlap.

use std::sync::OnceLock;

/// Smallest chunk: the gear hash is not consulted before this offset.
pub const MIN: usize = 256;
/// Largest chunk: a cut is forced here.
pub const MAX: usize = 8192;
/// Offset where the strict mask gives way to the relaxed one.
const CENTER: usize = 640;
/// Strict mask (harder to match) used between [`MIN`] and [`CENTER`].
const MASK_S: u32 = (1 << 11) - 1;
/// Relaxed mask used between [`CENTER`] and [`MAX`].
const MASK_L: u32 = (1 << 9) - 1;

/// The gear table of iscc-core (`core_opts.cdc_gear`).
static GEAR: [u32; 256] = [
    1553318008, 574654857, 759734804, 310648967, 1393527547, 1195718329, 694400241, 1154184075, 1319583805,
    1298164590, 122602963, 989043992, 1918895050, 933636724, 1369634190, 1963341198, 1565176104, 1296753019,
    1105746212, 1191982839, 1195494369, 29065008, 1635524067, 722221599, 1355059059, 564669751, 1620421856,
    1100048288, 1018120624, 1087284781, 1723604070, 1415454125, 737834957, 1854265892, 1605418437,
    1697446953, 973791659, 674750707, 1669838606, 320299026, 1130545851, 1725494449, 939321396, 748475270,
    554975894, 1651665064, 1695413559, 671470969, 992078781, 1935142196, 1062778243, 1901125066, 1935811166,
    1644847216, 744420649, 2068980838, 1988851904, 1263854878, 1979320293, 111370182, 817303588, 478553825,
    694867320, 685227566, 345022554, 2095989693, 1770739427, 165413158, 1322704750, 46251975, 710520147,
    700507188, 2104251000, 1350123687, 1593227923, 1756802846, 1179873910, 1629210470, 358373501, 807118919,
    751426983, 172199468, 174707988, 1951167187, 1328704411, 2129871494, 1242495143, 1793093310, 1721521010,
    306195915, 1609230749, 1992815783, 1790818204, 234528824, 551692332, 1930351755, 110996527, 378457918,
    638641695, 743517326, 368806918, 1583529078, 1767199029, 182158924, 1114175764, 882553770, 552467890,
    1366456705, 934589400, 1574008098, 1798094820, 1548210079, 821697741, 601807702, 332526858, 1693310695,
    136360183, 1189114632, 506273277, 397438002, 620771032, 676183860, 1747529440, 909035644, 142389739,
    1991534368, 272707803, 1905681287, 1210958911, 596176677, 1380009185, 1153270606, 1150188963, 1067903737,
    1020928348, 978324723, 962376754, 1368724127, 1133797255, 1367747748, 1458212849, 537933020, 1295159285,
    2104731913, 1647629177, 1691336604, 922114202, 170715530, 1608833393, 62657989, 1140989235, 381784875,
    928003604, 449509021, 1057208185, 1239816707, 525522922, 476962140, 102897870, 132620570, 419788154,
    2095057491, 1240747817, 1271689397, 973007445, 1380110056, 1021668229, 12064370, 1186917580, 1017163094,
    597085928, 2018803520, 1795688603, 1722115921, 2015264326, 506263638, 1002517905, 1229603330, 1376031959,
    763839898, 1970623926, 1109937345, 524780807, 1976131071, 905940439, 1313298413, 772929676, 1578848328,
    1108240025, 577439381, 1293318580, 1512203375, 371003697, 308046041, 320070446, 1252546340, 568098497,
    1341794814, 1922466690, 480833267, 1060838440, 969079660, 1836468543, 2049091118, 2023431210, 383830867,
    2112679659, 231203270, 1551220541, 1377927987, 275637462, 2110145570, 1700335604, 738389040, 1688841319,
    1506456297, 1243730675, 258043479, 599084776, 41093802, 792486733, 1897397356, 28077829, 1520357900,
    361516586, 1119263216, 209458355, 45979201, 363681532, 477245280, 2107748241, 601938891, 244572459,
    1689418013, 1141711990, 1485744349, 1181066840, 1950794776, 410494836, 1445347454, 2137242950, 852679640,
    1014566730, 1999335993, 1871390758, 1736439305, 231222289, 603972436, 783045542, 370384393, 184356284,
    709706295, 1453549767, 591603172, 768512391, 854125182,
];

/// Length of the chunk that starts at `data[0]`, exactly as iscc-core's `alg_cdc_offset`.
///
/// A result equal to `data.len()` means the chunk ran into the end of the data: either a
/// real cut at that point or none found; the streaming hasher treats both as a tail.
#[inline]
pub fn cut(data: &[u8]) -> usize {
    let size = data.len();
    if size <= MIN {
        return size;
    }
    let strict_end = CENTER.min(size);
    let mut pattern: u32 = 0;
    if let Some(n) = scan(&data[MIN..strict_end], &mut pattern, MASK_S) {
        return MIN + n;
    }
    let relaxed_end = MAX.min(size);
    if let Some(n) = scan(&data[strict_end..relaxed_end], &mut pattern, MASK_L) {
        return strict_end + n;
    }
    relaxed_end
}

/// Rolls the gear hash over `bytes`; returns how many bytes it took to reach a pattern with
/// no bit of `mask` set. Four bytes per iteration: the hash chain itself is serial, the
/// unrolling only saves loop overhead around it.
#[inline(always)]
fn scan(bytes: &[u8], pattern: &mut u32, mask: u32) -> Option<usize> {
    let mut quads = bytes.chunks_exact(4);
    let mut done = 0;
    for quad in &mut quads {
        for (k, &byte) in quad.iter().enumerate() {
            *pattern = (*pattern >> 1).wrapping_add(GEAR[byte as usize]);
            if *pattern & mask == 0 {
                return Some(done + k + 1);
            }
        }
        done += 4;
    }
    for &byte in quads.remainder() {
        *pattern = (*pattern >> 1).wrapping_add(GEAR[byte as usize]);
        done += 1;
        if *pattern & mask == 0 {
            return Some(done);
        }
    }
    None
}

/// Length of every chunk inside a long run of `byte` (at most [`MAX`]).
pub fn run_period(byte: u8) -> usize {
    static PERIODS: OnceLock<[u16; 256]> = OnceLock::new();
    let periods = PERIODS.get_or_init(|| {
        let mut table = [0u16; 256];
        for (value, slot) in table.iter_mut().enumerate() {
            *slot = cut(&[value as u8; MAX]) as u16;
        }
        table
    });
    periods[byte as usize] as usize
}

/// Length of the run of equal bytes at the start of `data` (0 for empty data).
#[inline]
pub fn run_length(data: &[u8]) -> usize {
    let Some(&first) = data.first() else { return 0 };
    let word = u64::from_ne_bytes([first; 8]);
    let mut words = data.chunks_exact(8);
    let mut len = 0;
    for w in &mut words {
        let w = u64::from_ne_bytes(w.try_into().expect("chunks_exact(8) yields 8 bytes"));
        if w != word {
            let differing = (w ^ word).to_le_bytes();
            return len + differing.iter().position(|&b| b != 0).unwrap_or(8);
        }
        len += 8;
    }
    len + words.remainder().iter().take_while(|&&b| b == first).count()
}

/// One chunk of a chain: where it ends (exclusive, relative to the chained slice) and its
/// xxh32 feature. `repeat` identical chunks follow each other (runs of one byte value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub end: usize,
    pub len: u32,
    pub repeat: u32,
    pub feature: u32,
}

impl Span {
    /// Start of the first chunk of this span.
    pub fn start(&self) -> usize {
        self.end - self.len as usize * self.repeat as usize
    }

    /// Whether a chunk of this span starts at `pos`.
    pub fn has_start(&self, pos: usize) -> bool {
        pos >= self.start() && pos < self.end && (pos - self.start()) % self.len as usize == 0
    }
}

/// Minimum length of a byte run before the chain jumps through it instead of hashing it.
const JUMP_MIN: usize = 2 * MAX;

/// Chains chunks through `data` from `start`, emitting every complete chunk whose start is
/// below `stop`. A chunk that reaches the end of `data` is never emitted: it is the tail,
/// which more data may still extend. Returns the start of the first chunk not emitted (at
/// or past `stop`, or the tail's start).
pub fn chain(data: &[u8], start: usize, stop: usize, emit: &mut impl FnMut(Span)) -> usize {
    let mut pos = start;
    while pos < stop {
        if let Some(run) = run_span(data, pos, stop) {
            pos = run.end;
            emit(run);
            continue;
        }
        let rest = &data[pos..];
        let len = cut(rest);
        if len == rest.len() {
            return pos;
        }
        emit(chunk(data, pos, pos + len));
        pos += len;
    }
    pos
}

/// The chunk `data[start..end]` as a span.
fn chunk(data: &[u8], start: usize, end: usize) -> Span {
    Span {
        end,
        len: (end - start) as u32,
        repeat: 1,
        feature: xxhash_rust::xxh32::xxh32(&data[start..end], 0),
    }
}

/// The chunks of a long run of one byte value starting at `pos`, jumped through
/// arithmetically instead of hashed; `None` where no such run starts.
#[inline]
fn run_span(data: &[u8], pos: usize, stop: usize) -> Option<Span> {
    let rest = &data[pos..];
    if rest.len() <= JUMP_MIN || rest[0] != rest[MIN] || rest[0] != rest[1] {
        return None;
    }
    // Scan no further than the chunks this call may emit need.
    let limit = rest.len().min(stop - pos + 2 * MAX);
    let run = run_length(&rest[..limit]);
    if run < JUMP_MIN {
        return None;
    }
    let period = run_period(rest[0]);
    // Chunks wholly inside the run all have this period; keep the last one that would touch
    // the data's end out of the jump, it may be the tail.
    let mut count = run / period;
    if count * period >= rest.len() {
        count -= 1;
    }
    // Do not jump past `stop` by more than one chunk, so stitching stays exact.
    let count = count.min((stop - pos).div_ceil(period));
    (count > 0).then(|| Span {
        end: pos + count * period,
        len: period as u32,
        repeat: count as u32,
        feature: xxhash_rust::xxh32::xxh32(&rest[..period], 0),
    })
}

/// Two chains at once, each exactly as [`chain`] would walk it (`a` and `b` are `(start,
/// stop)` pairs, usually neighbouring segments); returns where each stopped. The gear hash
/// is a serial chain of dependent additions, about two cycles a byte that leave most of a
/// core idle: walking two chains in lockstep gives the core two independent chains to
/// overlap, which makes the chunking about 1.4 times as fast.
pub fn chain_pair(
    data: &[u8],
    a: (usize, usize),
    b: (usize, usize),
    emit_a: &mut impl FnMut(Span),
    emit_b: &mut impl FnMut(Span),
) -> (usize, usize) {
    let mut wa = Walker::new(a);
    let mut wb = Walker::new(b);
    let mut live_a = wa.begin(data, emit_a);
    let mut live_b = wb.begin(data, emit_b);
    while live_a && live_b {
        let (limit_a, mask_a) = wa.regime();
        let (limit_b, mask_b) = wb.regime();
        // Never 0: a live walker's scan is below its current limit (`begin`, `settle`).
        let n = (limit_a - wa.scan).min(limit_b - wb.scan);
        let (mut pa, mut pb) = (wa.pattern, wb.pattern);
        let taken = scan_pair(
            &data[wa.scan..wa.scan + n],
            &data[wb.scan..wb.scan + n],
            [&mut pa, &mut pb],
            [mask_a, mask_b],
        );
        wa.advance(taken, pa);
        wb.advance(taken, pb);
        live_a = wa.settle(data, pa & mask_a == 0, emit_a);
        live_b = wb.settle(data, pb & mask_b == 0, emit_b);
    }
    // One chain is done: the other goes on alone, from the start of its current chunk.
    let next_a = if live_a { chain(data, wa.pos, wa.stop, emit_a) } else { wa.pos };
    let next_b = if live_b { chain(data, wb.pos, wb.stop, emit_b) } else { wb.pos };
    (next_a, next_b)
}

/// [`scan`] over two byte strings of one length at once: rolls both gear hashes until either
/// reaches a pattern with no bit of its mask set; returns how many bytes each took (all of
/// them when neither did). Kept out
/// of line so that its few registers hold both hashes, both masks and the table.
#[inline(never)]
fn scan_pair(a: &[u8], b: &[u8], patterns: [&mut u32; 2], masks: [u32; 2]) -> usize {
    let [pa, pb] = patterns;
    let [ma, mb] = masks;
    let (mut x, mut y) = (*pa, *pb);
    let mut done = 0;
    for (qa, qb) in a.chunks_exact(4).zip(b.chunks_exact(4)) {
        for k in 0..4 {
            x = (x >> 1).wrapping_add(GEAR[qa[k] as usize]);
            y = (y >> 1).wrapping_add(GEAR[qb[k] as usize]);
            if x & ma == 0 || y & mb == 0 {
                (*pa, *pb) = (x, y);
                return done + k + 1;
            }
        }
        done += 4;
    }
    for (&ca, &cb) in a[done..].iter().zip(&b[done..]) {
        x = (x >> 1).wrapping_add(GEAR[ca as usize]);
        y = (y >> 1).wrapping_add(GEAR[cb as usize]);
        done += 1;
        if x & ma == 0 || y & mb == 0 {
            break;
        }
    }
    (*pa, *pb) = (x, y);
    done
}

/// One chain of [`chain_pair`], inside the chunk that starts at `pos`.
struct Walker {
    pos: usize,
    stop: usize,
    /// Next byte to roll into the gear hash.
    scan: usize,
    /// Where the strict mask gives way to the relaxed one, and where the chunk is forced.
    strict_end: usize,
    end: usize,
    pattern: u32,
}

impl Walker {
    fn new((start, stop): (usize, usize)) -> Self {
        Walker { pos: start, stop, scan: start, strict_end: start, end: start, pattern: 0 }
    }

    /// Starts the chunk at `pos` (jumping through runs first); `false` when the chain is done:
    /// `pos` is at or past `stop`, or its chunk is the tail.
    fn begin(&mut self, data: &[u8], emit: &mut impl FnMut(Span)) -> bool {
        while self.pos < self.stop {
            if let Some(run) = run_span(data, self.pos, self.stop) {
                self.pos = run.end;
                emit(run);
                continue;
            }
            let size = data.len() - self.pos;
            if size <= MIN {
                return false; // the tail
            }
            self.scan = self.pos + MIN;
            self.strict_end = self.pos + CENTER.min(size);
            self.end = self.pos + MAX.min(size);
            self.pattern = 0;
            return true;
        }
        false
    }

    /// How far the current mask holds, and the mask.
    fn regime(&self) -> (usize, u32) {
        if self.scan < self.strict_end {
            (self.strict_end, MASK_S)
        } else {
            (self.end, MASK_L)
        }
    }

    fn advance(&mut self, taken: usize, pattern: u32) {
        self.scan += taken;
        self.pattern = pattern;
    }

    /// After a step: ends the chunk where the hash matched (`matched`, at the last byte
    /// taken) or at its forced end, and begins the next; `false` when the chain is done.
    fn settle(&mut self, data: &[u8], matched: bool, emit: &mut impl FnMut(Span)) -> bool {
        if !matched && self.scan < self.end {
            return true; // still inside the chunk (perhaps at the switch of masks)
        }
        if self.scan == data.len() {
            return false; // the chunk runs into the end of the data: the tail
        }
        emit(chunk(data, self.pos, self.scan));
        self.pos = self.scan;
        self.begin(data, emit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::engine::testdata::pseudo_random;

    fn reference_ends(data: &[u8]) -> Vec<usize> {
        let chunks = iscc_lib::alg_cdc_chunks(data, false, 1024).unwrap();
        let mut end = 0;
        chunks
            .iter()
            .map(|c| {
                end += c.len();
                end
            })
            .collect()
    }

    fn chained_ends(data: &[u8]) -> Vec<usize> {
        let mut ends = Vec::new();
        let tail = chain(data, 0, data.len(), &mut |s: Span| {
            for k in 1..=s.repeat as usize {
                ends.push(s.start() + k * s.len as usize);
            }
        });
        if !data.is_empty() {
            ends.push(data.len());
            assert!(tail < data.len());
        }
        ends
    }

    #[test]
    fn cut_points_match_iscc_lib_on_random_zero_and_periodic_data() {
        let mut mixed = pseudo_random(300_000, 7);
        mixed[50_000..120_000].fill(0);
        mixed[150_000..170_003].fill(0xAB);
        let periodic: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for data in [pseudo_random(100_000, 1), vec![0u8; 100_000], mixed, periodic] {
            assert_eq!(chained_ends(&data), reference_ends(&data));
        }
    }

    fn alone(data: &[u8], (start, stop): (usize, usize)) -> (Vec<Span>, usize) {
        let mut spans = Vec::new();
        let next = chain(data, start, stop, &mut |s| spans.push(s));
        (spans, next)
    }

    /// Lockstep chains equal chains walked alone: starting and stopping anywhere (inside
    /// runs, at the data's end, in the tail), overlapping or not, either one finishing first.
    #[test]
    fn chains_in_lockstep_equal_chains_alone() {
        let mut mixed = pseudo_random(300_000, 7);
        mixed[50_000..120_000].fill(0);
        mixed[150_000..170_003].fill(0xAB);
        let points =
            [0, 1, 255, 257, 640, 8193, 50_000, 60_001, 119_999, 150_100, 200_000, 299_000, 299_900, 300_000];
        for a in points.iter().flat_map(|&x| points.iter().map(move |&y| (x, y))) {
            for b in [(0, 300_000), (60_000, 170_000), (299_500, 300_000), (120_000, 140_000), (a.1, a.0)] {
                let (mut spans_a, mut spans_b) = (Vec::new(), Vec::new());
                let (next_a, next_b) =
                    chain_pair(&mixed, a, b, &mut |s| spans_a.push(s), &mut |s| spans_b.push(s));
                assert_eq!((spans_a, next_a), alone(&mixed, a), "a {a:?} beside b {b:?}");
                assert_eq!((spans_b, next_b), alone(&mixed, b), "b {b:?} beside a {a:?}");
            }
        }
    }

    #[test]
    fn run_length_counts_equal_prefix() {
        assert_eq!(run_length(&[]), 0);
        assert_eq!(run_length(&[5; 21]), 21);
        let mut v = vec![9u8; 30];
        v[17] = 1;
        assert_eq!(run_length(&v), 17);
    }
}
