//! Near pairs of Data-Codes by Hamming distance, without comparing all pairs.
//!
//! For each 16-bit block of the codes, they are sorted into 65,536 buckets by the block's
//! value. Two codes at most `threshold` bits apart differ in some block by at most
//! `threshold / blocks` bits (pigeonhole), so comparing every bucket with the buckets whose
//! value is that close finds every such pair, and only such pairs are reported.

use rayon::prelude::*;

/// A Data-Code as compared here: 64 bits (narrow) or 128 bits (wide).
trait Bits: Copy + Send + Sync + Default {
    const BITS: u32;
    fn from_left(code: u128) -> Self;
    fn block(self, b: usize) -> usize;
    #[inline(always)]
    fn distance(self, other: Self) -> u32 {
        self.xor_ones(other)
    }
    fn xor_ones(self, other: Self) -> u32;
}

impl Bits for u64 {
    const BITS: u32 = 64;
    fn from_left(code: u128) -> Self {
        (code >> 64) as u64
    }
    fn block(self, b: usize) -> usize {
        ((self >> (48 - 16 * b)) & 0xFFFF) as usize
    }
    #[inline(always)]
    fn xor_ones(self, other: Self) -> u32 {
        (self ^ other).count_ones()
    }
}

impl Bits for u128 {
    const BITS: u32 = 128;
    fn from_left(code: u128) -> Self {
        code
    }
    fn block(self, b: usize) -> usize {
        ((self >> (112 - 16 * b)) & 0xFFFF) as usize
    }
    #[inline(always)]
    fn xor_ones(self, other: Self) -> u32 {
        (self ^ other).count_ones()
    }
}

/// Pairs `(i, j)` whose Data-Codes (left-aligned in a `u128`; the first `bits` = 64 or 128
/// compared) are at most `threshold` apart: every such pair, perhaps more than once, and no
/// other.
///
/// For each 16-bit block the codes are sorted into 65,536 buckets by the block's value. Two
/// codes within the threshold differ in some block by at most `threshold / blocks` bits, so
/// comparing every bucket with the buckets whose value is that close finds every pair.
/// Bucket against bucket, both contiguous in memory, keeps the comparisons cache-friendly.
pub fn near_pairs(codes: &[u128], bits: u32, threshold: u32) -> Vec<(u32, u32)> {
    if bits == 64 {
        pairs_of::<u64>(codes, threshold)
    } else {
        pairs_of::<u128>(codes, threshold)
    }
}

/// The XOR masks of a 16-bit block that change at most `radius` of its bits, fewest first:
/// the values within `radius` of a block value `v` are `v ^ mask`.
pub fn block_masks(radius: u32) -> Vec<usize> {
    let mut masks: Vec<usize> = (0..1usize << 16).filter(|m| m.count_ones() <= radius).collect();
    masks.sort_by_key(|m| (m.count_ones(), *m));
    masks
}

fn pairs_of<T: Bits>(codes: &[u128], threshold: u32) -> Vec<(u32, u32)> {
    let codes: Vec<T> = codes.iter().map(|&c| T::from_left(c)).collect();
    let blocks = (T::BITS / 16) as usize;
    let radius = threshold / blocks as u32;
    let masks = block_masks(radius);
    let mut found = Vec::new();
    for b in 0..blocks {
        let mut offsets = vec![0usize; (1 << 16) + 1];
        for &c in &codes {
            offsets[c.block(b) + 1] += 1;
        }
        for k in 1..offsets.len() {
            offsets[k] += offsets[k - 1];
        }
        let mut fill = offsets.clone();
        let mut sorted = vec![T::default(); codes.len()];
        let mut ids = vec![0u32; codes.len()];
        for (i, &c) in codes.iter().enumerate() {
            let k = c.block(b);
            sorted[fill[k]] = c;
            ids[fill[k]] = i as u32;
            fill[k] += 1;
        }
        let (sorted, ids, offsets, masks) = (&sorted[..], &ids[..], &offsets[..], &masks[..]);
        let tables = Tables { sorted, ids, offsets, masks, threshold };
        let block_pairs = (0..1usize << 16)
            .into_par_iter()
            .with_min_len(64)
            .fold(Vec::new, |mut out, v| {
                tables.compare(v, &mut out);
                out
            })
            .reduce(Vec::new, |mut x, mut y| {
                x.append(&mut y);
                x
            });
        found.extend(block_pairs);
    }
    found
}

/// One block's buckets.
struct Tables<'a, T> {
    sorted: &'a [T],
    ids: &'a [u32],
    offsets: &'a [usize],
    masks: &'a [usize],
    threshold: u32,
}

impl<T: Bits> Tables<'_, T> {
    /// Compares bucket `v` with itself and with every bucket `w >= v` near enough.
    fn compare(&self, v: usize, out: &mut Vec<(u32, u32)>) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has POPCNT, checked just above.
            unsafe { self.compare_popcnt(v, out) };
            return;
        }
        self.compare_portable(v, out);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn compare_popcnt(&self, v: usize, out: &mut Vec<(u32, u32)>) {
        // The same loop, compiled with the POPCNT instruction for `count_ones`.
        self.compare_portable(v, out)
    }

    #[inline(always)]
    fn compare_portable(&self, v: usize, out: &mut Vec<(u32, u32)>) {
        let (v0, v1) = (self.offsets[v], self.offsets[v + 1]);
        if v0 == v1 {
            return;
        }
        for &m in self.masks {
            let w = v ^ m;
            if w < v {
                continue; // each pair of buckets once
            }
            let w1 = self.offsets[w + 1];
            for x in v0..v1 {
                let a = self.sorted[x];
                let from = if w == v { x + 1 } else { self.offsets[w] };
                for (k, &c) in self.sorted[from..w1].iter().enumerate() {
                    if a.distance(c) <= self.threshold {
                        let (p, q) = (self.ids[x], self.ids[from + k]);
                        out.push((p.min(q), p.max(q)));
                    }
                }
            }
        }
    }
}
