//! Finding a probe's matches in one segment, exactly.
//!
//! Identical instances come from a binary search of the instance order. Near Data-Codes come
//! from multi-index hashing over 16-bit blocks: cut the distance budget `T` into radii
//! `r_j` with `Σ (r_j + 1) ≥ T + 1`; a code within `T` differs from the probe in some block
//! `j` by at most `r_j` bits (else the distance would be at least `Σ (r_j + 1) > T`), so the
//! buckets within `r_j` of the probe's block values hold every match. Every candidate is
//! checked against the full rule (see `entry`), so the tables decide only what is read.
//!
//! A pair is at most `threshold` apart over 64 bits unless both codes are wide, when it may be
//! `2 × threshold` apart over 128 bits. A narrow probe therefore needs blocks 0 to 3 with the
//! radii of `threshold`; a wide probe also needs every wide row within `2 × threshold` over
//! blocks 0 to 7, so it takes, block by block, the larger of both radii. When the buckets
//! would hold more rows than the segment, the segment is scanned instead.

use super::build::block;
use super::entry::{flag, limit, relate, Probe, Relation};
use super::segment::{dir, post, Sec, Segment, BLOCKS, BUCKETS};
use std::sync::OnceLock;

/// A matching row of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub row: u32,
    pub relation: Relation,
}

/// Radii for `blocks` blocks that add up (each plus one) to `budget + 1`, as even as can be,
/// the larger ones first; `-1`: the block is not needed.
pub fn radii(budget: u32, blocks: usize) -> Vec<i32> {
    let total = budget as usize + 1;
    let (base, extra) = (total / blocks, total % blocks);
    (0..blocks).map(|j| (base + usize::from(j < extra)) as i32 - 1).collect()
}

/// Relative costs of the table search, in units of one row read in sequence: a bucket probe
/// (a directory entry, most often in cache) and a row read through a posting (a cache miss).
const PROBE_COST: u64 = 8;
const RANDOM_ROW_COST: u64 = 6;

/// The radius to search in each of the 8 blocks for this probe, in a segment of `rows` codes
/// (see the module doc).
///
/// For the 64-bit rule any radii with `Σ (r_j + 1) = threshold + 1` are exact; block 0's rows
/// are read in sequence and the others' through postings, so the split that costs least is
/// chosen: block 0 takes a larger share when the buckets are full.
pub fn plan(probe: &Probe, threshold: u32, rows: u64) -> [i32; BLOCKS] {
    let mut out = [-1i32; BLOCKS];
    out[..4].copy_from_slice(&narrow_radii(threshold, rows));
    if probe.flags & flag::WIDE != 0 {
        for (j, r) in radii(limit(true, threshold), BLOCKS).into_iter().enumerate() {
            out[j] = out[j].max(r);
        }
    }
    out.map(|r| r.min(16))
}

/// The cheapest radii of blocks 0 to 3 for the 64-bit rule: block 0's radius `r0`, the rest
/// of the budget split evenly over blocks 1 to 3.
fn narrow_radii(threshold: u32, rows: u64) -> [i32; 4] {
    let total = threshold as usize + 1;
    let per_bucket = rows / BUCKETS as u64;
    let cost = |r: i32, sequential: bool| {
        let probes = masks(r.min(16)).len() as u64;
        probes * PROBE_COST + probes * per_bucket * if sequential { 1 } else { RANDOM_ROW_COST }
    };
    let mut best = ([0i32; 4], u64::MAX);
    // Block 0's share of the budget (its radius plus one), at most 17: a block has 16 bits.
    for first in total.div_ceil(4)..=total.min(17) {
        let rem = total - first;
        let rest = if rem == 0 { vec![-1; 3] } else { radii(rem as u32 - 1, 3) };
        let split = [first as i32 - 1, rest[0], rest[1], rest[2]];
        if split.iter().any(|&r| r > 16) {
            continue;
        }
        let c = cost(split[0], true) + split[1..].iter().map(|&r| cost(r, false)).sum::<u64>();
        if c < best.1 {
            best = (split, c);
        }
    }
    assert!(best.1 < u64::MAX, "a threshold of at most 64 always has a split");
    best.0
}

/// The XOR masks within each radius 0..=16, fewest bits first.
fn masks(radius: i32) -> &'static [u16] {
    static MASKS: OnceLock<Vec<u16>> = OnceLock::new();
    static ENDS: OnceLock<[usize; 18]> = OnceLock::new();
    let all =
        MASKS.get_or_init(|| crate::engine::hamming::block_masks(16).into_iter().map(|m| m as u16).collect());
    let ends = ENDS.get_or_init(|| {
        let mut ends = [0usize; 18];
        for r in 0..=16usize {
            ends[r + 1] = all.iter().take_while(|m| m.count_ones() as usize <= r).count();
        }
        ends
    });
    if radius < 0 {
        &[]
    } else {
        &all[..ends[radius as usize + 1]]
    }
}

/// Every row of `seg` that matches `probe` (instance or distance), each once, by row.
pub fn search(seg: &Segment, probe: &Probe, threshold: u32, out: &mut Vec<Hit>) {
    let start = out.len();
    let cols = Cols::of(seg);
    instance_hits(&cols, probe, threshold, out);
    let radii = plan(probe, threshold, seg.rows() as u64);
    if seg.has_tables() && table_cost(seg, &radii) < seg.rows() as u64 {
        table_hits(seg, &cols, probe, threshold, &radii, out);
    } else {
        scan(&cols, probe, threshold, out);
    }
    let found = &mut out[start..];
    found.sort_unstable_by_key(|h| h.row);
    let mut kept = start;
    for k in start..out.len() {
        if kept > start && out[kept - 1].row == out[k].row {
            continue;
        }
        out[kept] = out[k];
        kept += 1;
    }
    out.truncate(kept);
}

/// A segment's columns, zero-filled where a column is absent.
struct Cols<'a> {
    flags: &'a [u8],
    hi: &'a [u64],
    lo: &'a [u64],
    ihi: &'a [u64],
    ilo: &'a [u64],
    by_instance: &'a [u32],
}

impl<'a> Cols<'a> {
    fn of(seg: &'a Segment) -> Cols<'a> {
        Cols {
            flags: seg.col(Sec::Flags as usize),
            hi: seg.col(Sec::Hi as usize),
            lo: seg.col(Sec::Lo as usize),
            ihi: seg.col(Sec::Ihi as usize),
            ilo: seg.col(Sec::Ilo as usize),
            by_instance: seg.col(Sec::ByInstance as usize),
        }
    }

    #[inline(always)]
    fn relate(&self, probe: &Probe, row: usize) -> Option<Relation> {
        let lo = self.lo.get(row).copied().unwrap_or(0);
        let ilo = self.ilo.get(row).copied().unwrap_or(0);
        relate(probe, self.flags[row], self.hi[row], lo, self.ihi[row], ilo)
    }

    /// Pushes `row` if it matches within the threshold, looking at its first 64 bits first:
    /// a row further than `first` there cannot be within the threshold (see [`first_limit`]),
    /// and only the rows that can are read further (each column is another cache miss).
    #[inline(always)]
    fn check_near(&self, probe: &Probe, threshold: u32, first: u32, row: usize, out: &mut Vec<Hit>) {
        if (probe.hi ^ self.hi[row]).count_ones() <= first {
            self.check(probe, threshold, row, out);
        }
    }

    /// Pushes `row` if it matches: identical instance or within the threshold.
    #[inline(always)]
    fn check(&self, probe: &Probe, threshold: u32, row: usize, out: &mut Vec<Hit>) {
        if let Some(rel) = self.relate(probe, row) {
            if rel.distance <= limit(rel.bits == 128, threshold) || rel.instance {
                out.push(Hit { row: row as u32, relation: rel });
            }
        }
    }
}

fn instance_hits(cols: &Cols, probe: &Probe, threshold: u32, out: &mut Vec<Hit>) {
    let first = cols.by_instance.partition_point(|&r| cols.ihi[r as usize] < probe.ihi);
    for &r in &cols.by_instance[first..] {
        if cols.ihi[r as usize] != probe.ihi {
            break;
        }
        cols.check(probe, threshold, r as usize, out);
    }
}

/// Estimated cost of the table search, in units of one scanned row.
fn table_cost(seg: &Segment, radii: &[i32; BLOCKS]) -> u64 {
    let rows = seg.rows() as u64;
    let wide = seg.header.wide_rows;
    radii
        .iter()
        .enumerate()
        .map(|(j, &r)| {
            let probes = masks(r).len() as u64;
            let per_bucket = if j < 4 { rows } else { wide } / BUCKETS as u64;
            // A probe reads the directory (a cache miss); a row of block 0 is read in
            // sequence, a row of the other blocks through its posting (another miss).
            probes * PROBE_COST + probes * per_bucket * if j == 0 { 1 } else { RANDOM_ROW_COST }
        })
        .sum()
}

/// The largest distance over the first 64 bits of a code that can match the probe: the
/// threshold for a narrow probe, twice it for a wide one (a pair of wide codes within `2T`
/// over 128 bits is within `2T` over their first 64).
fn first_limit(probe: &Probe, threshold: u32) -> u32 {
    if probe.flags & flag::WIDE != 0 {
        limit(true, threshold)
    } else {
        threshold
    }
}

fn table_hits(
    seg: &Segment,
    cols: &Cols,
    probe: &Probe,
    threshold: u32,
    radii: &[i32; BLOCKS],
    out: &mut Vec<Hit>,
) {
    let first = first_limit(probe, threshold);
    for (j, &r) in radii.iter().enumerate() {
        if r < 0 || (j >= 4 && seg.header.wide_rows == 0) {
            continue;
        }
        let directory: &[u32] = seg.col(dir(j));
        let postings: &[u32] = if j == 0 { &[] } else { seg.col(post(j)) };
        let value = block(probe.hi, probe.lo, j);
        for &m in masks(r) {
            let v = value ^ m as usize;
            let (a, b) = (directory[v] as usize, directory[v + 1] as usize);
            if j == 0 {
                for row in a..b {
                    cols.check_near(probe, threshold, first, row, out);
                }
            } else {
                for &row in &postings[a..b] {
                    cols.check_near(probe, threshold, first, row as usize, out);
                }
            }
        }
    }
}

/// Every row, compared on its first 64 bits first (a pair within the threshold is within
/// `2 × threshold` there at most).
fn scan(cols: &Cols, probe: &Probe, threshold: u32, out: &mut Vec<Hit>) {
    let first = first_limit(probe, threshold);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU has AVX2 and POPCNT, checked just above.
        unsafe { scan_avx2(cols, probe, threshold, first, out) };
        return;
    }
    scan_portable(cols, probe, threshold, first, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,popcnt")]
unsafe fn scan_avx2(cols: &Cols, probe: &Probe, threshold: u32, first: u32, out: &mut Vec<Hit>) {
    // The same loop, compiled with vector instructions for the XOR and population count.
    scan_portable(cols, probe, threshold, first, out)
}

#[inline(always)]
fn scan_portable(cols: &Cols, probe: &Probe, threshold: u32, first: u32, out: &mut Vec<Hit>) {
    const CHUNK: usize = 1024;
    let q = probe.hi;
    for (c, part) in cols.hi.chunks(CHUNK).enumerate() {
        // A branch-free pass over a chunk finds whether any row is near enough to look at.
        let near = part.iter().fold(0u32, |acc, &h| acc | u32::from((q ^ h).count_ones() <= first));
        if near == 0 {
            continue;
        }
        for (k, &h) in part.iter().enumerate() {
            if (q ^ h).count_ones() <= first {
                cols.check(probe, threshold, c * CHUNK + k, out);
            }
        }
    }
}

/// Every bucket directory's bounds are within the postings (for `index verify`).
pub fn check_tables(seg: &Segment) -> Result<(), String> {
    if !seg.has_tables() {
        return Ok(());
    }
    for j in 0..BLOCKS {
        let directory: &[u32] = seg.col(dir(j));
        let len = if j == 0 { seg.rows() } else { seg.col::<u32>(post(j)).len() };
        if directory[0] != 0
            || directory[BUCKETS] as usize != len
            || directory.windows(2).any(|w| w[0] > w[1])
        {
            return Err(format!("block {j}'s directory is inconsistent"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radii_add_up_to_the_budget_and_differ_by_one_at_most() {
        for blocks in [4, 8] {
            for budget in 0..=128u32 {
                let r = radii(budget, blocks);
                let total: i32 = r.iter().map(|&x| x + 1).sum();
                assert_eq!(total, budget as i32 + 1, "budget {budget}, {blocks} blocks: {r:?}");
                assert!(r.iter().max().unwrap() - r.iter().min().unwrap() <= 1);
            }
        }
        assert_eq!(radii(12, 4), [3, 2, 2, 2]);
        assert_eq!(radii(0, 4), [0, -1, -1, -1]);
    }

    #[test]
    fn every_plan_spends_the_whole_budget() {
        for rows in [0u64, 70_000, 1 << 20, 10_000_000, 1 << 32] {
            for threshold in 0..=64u32 {
                for flags in [0, flag::WIDE] {
                    let probe = Probe { flags, hi: 0, lo: 0, ihi: 0, ilo: 0, exclude: None };
                    let r = plan(&probe, threshold, rows);
                    assert!(r.iter().all(|&x| (-1..=16).contains(&x)), "{r:?}");
                    let narrow: i32 = r[..4].iter().map(|&x| x + 1).sum();
                    assert!(narrow > threshold as i32, "rows {rows}, threshold {threshold}: {r:?}");
                    if flags == flag::WIDE {
                        let wide: i32 = r.iter().map(|&x| x + 1).sum();
                        assert!(wide > 2 * threshold as i32, "rows {rows}, threshold {threshold}: {r:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn every_pair_within_the_budget_shares_a_block_within_its_radius() {
        // The pigeonhole argument, checked on pairs whose differences are spread as evenly
        // over the blocks as they can be (the hardest case) and packed into one block.
        for budget in 0..=24u32 {
            let r = radii(budget, 4);
            for spread in [true, false] {
                let mut x = 0u64;
                for k in 0..budget.min(64) {
                    let bit = if spread { (k % 4) * 16 + k / 4 } else { k };
                    x |= 1 << (63 - bit);
                }
                let near = (0..4).any(|j| (block(x, 0, j).count_ones() as i32) <= r[j]);
                assert!(near, "budget {budget}: {x:064b} escapes the radii {r:?}");
            }
        }
    }

    #[test]
    fn masks_are_every_value_within_the_radius() {
        for r in [-1, 0, 1, 2, 3, 16] {
            let m = masks(r);
            let want = (0..=0xFFFFu32).filter(|v| (v.count_ones() as i32) <= r).count();
            assert_eq!(m.len(), want);
            assert!(m.iter().all(|v| v.count_ones() as i32 <= r));
        }
    }
}
