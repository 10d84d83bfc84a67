//! The Data-Code's 64-lane MinHash, folded as features arrive.
//!
//! iscc-core collects every chunk's feature and takes the minima at the end (about 4 GB of
//! features per TB hashed). The minimum is associative and idempotent, so the same digest
//! comes from 64 running minima that are updated per feature and merged across threads by an
//! element-wise minimum.

/// Mersenne prime 2^61 - 1 of the universal hash functions.
const MPRIME: u64 = (1 << 61) - 1;

/// Multipliers of the 64 universal hash functions (iscc-core `MPA`).
static MPA: [u64; 64] = [
    853146490016488653,
    1849332765672628665,
    1131688930666554379,
    1936485333668353377,
    890837126813020267,
    1988249303247129861,
    1408894512544874755,
    2140251716176616185,
    1755124413189049421,
    1355916793659431597,
    546586563822844083,
    497603761441203021,
    2000709902557454173,
    1057597903350092207,
    1576204252850880253,
    2078784234495706739,
    1022616668454863635,
    2150082342606334489,
    712341150087765807,
    1511757510246096559,
    1525853819909660573,
    1263771796138990131,
    1215963627200985263,
    590069150281426443,
    130824646248385081,
    962725325544728503,
    1702561325943522847,
    296074222435072629,
    490211158716051523,
    1255327197241792767,
    699458998727907367,
    32930168991409845,
    1985097843455124585,
    362027841570125531,
    1903252144040897835,
    900391845076405289,
    547470123601853551,
    1689373724032359119,
    845594231933442371,
    400331968021206285,
    174967108345233429,
    876513700861085019,
    505848386844809885,
    1920468508342256199,
    1292611725303815789,
    963317239501343903,
    1730880032297268007,
    284614929850059717,
    1185026248283273081,
    2167288823816985197,
    1214905315086686483,
    1555253098157439857,
    1048013650291539723,
    1238618594841147605,
    1213502582686547311,
    286300733803129311,
    1250358511639043529,
    407534797452854371,
    960869149538623787,
    1722699901467253087,
    1325704236119824319,
    196979859428570839,
    1669408735473259699,
    781336617016068757,
];

/// Addends of the 64 universal hash functions (iscc-core `MPB`).
static MPB: [u64; 64] = [
    1089606993368836715,
    726972438868274737,
    66204585613901025,
    1078410179646709132,
    1343470117098523467,
    698653121981343911,
    1248486536592473639,
    1447963007834012793,
    1034598851883537815,
    1474008409379745934,
    793773480906057541,
    980501101461882479,
    963941556313537655,
    233651787311327325,
    243905121737149907,
    570269452476776142,
    297633284648631084,
    1516796967247398557,
    1494795672066692649,
    1728741177365151059,
    1029197538967983408,
    1660732464170610344,
    1399769594446678069,
    506465470557005705,
    1279720146829545181,
    860096419955634036,
    411519685280832908,
    69539191273403207,
    1960489729088056217,
    605092075716397684,
    1017496016211653149,
    1304834535101321372,
    949013511180032347,
    1142776242221098779,
    576980004709031232,
    1071272177143100544,
    1494527341093835499,
    1073290814142727850,
    1285904200674942617,
    1277176606329477335,
    343788427301735585,
    2100915269685487331,
    1227711252031557450,
    18593166391963377,
    2101884148332688233,
    191808277534686888,
    2170124912729392024,
    918430470748151293,
    1831024560113812361,
    1951365515851067694,
    744352348473654499,
    1921518311887826722,
    2020165648600700886,
    1764930142256726985,
    1903893374912839788,
    1449378957774802122,
    1435825328374066345,
    833197549717762813,
    2238991044337210799,
    748955638857938366,
    1834583747494146901,
    222012292803592982,
    901238460725547841,
    1501611130776083278,
];

/// Running minima of the 64 hash functions; each value fits 32 bits (`& MAXH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinHash {
    minima: [u32; 64],
    empty: bool,
}

impl Default for MinHash {
    fn default() -> Self {
        Self { minima: [u32::MAX; 64], empty: true }
    }
}

/// `((a * f + b) mod 2^64) mod (2^61 - 1)`, truncated to 32 bits, as iscc-core computes it.
#[inline(always)]
fn lane(a: u64, b: u64, feature: u32) -> u32 {
    let x = a.wrapping_mul(feature as u64).wrapping_add(b);
    // x mod (2^61 - 1) without a division: fold the top 3 bits onto the bottom 61.
    let mut r = (x & MPRIME) + (x >> 61);
    if r >= MPRIME {
        r -= MPRIME;
    }
    r as u32
}

#[inline(always)]
fn fold_into(minima: &mut [u32; 64], features: &[u32]) {
    for &feature in features {
        for k in 0..64 {
            minima[k] = minima[k].min(lane(MPA[k], MPB[k], feature));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fold_into_avx2(minima: &mut [u32; 64], features: &[u32]) {
    // Same code, compiled for AVX2 so the 64 lanes run eight at a time.
    fold_into(minima, features)
}

impl MinHash {
    /// Folds a batch of chunk features into the minima.
    pub fn fold(&mut self, features: &[u32]) {
        if features.is_empty() {
            return;
        }
        self.empty = false;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { fold_into_avx2(&mut self.minima, features) };
            return;
        }
        fold_into(&mut self.minima, features);
    }

    /// Merges minima computed over another part of the same chunk sequence.
    pub fn merge(&mut self, other: &MinHash) {
        for (mine, theirs) in self.minima.iter_mut().zip(other.minima.iter()) {
            *mine = (*mine).min(*theirs);
        }
        self.empty &= other.empty;
    }

    /// Whether no feature has been folded yet.
    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// The 256-bit digest: the 4 low bits of every lane, bit plane by bit plane, MSB first
    /// (iscc-core `alg_minhash_compress(mhash, lsb=4)`).
    pub fn digest(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut bit = 0;
        for plane in 0..4 {
            for &value in &self.minima {
                if (value >> plane) & 1 == 1 {
                    out[bit / 8] |= 0x80 >> (bit % 8);
                }
                bit += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_iscc_lib_for_folded_and_merged_features() {
        let features: Vec<u32> = (0..5000u32).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        let mut whole = MinHash::default();
        whole.fold(&features);
        let mut left = MinHash::default();
        left.fold(&features[..1234]);
        let mut right = MinHash::default();
        right.fold(&features[1234..]);
        left.merge(&right);
        let expected = iscc_lib::alg_minhash_256(&features);
        assert_eq!(whole.digest().to_vec(), expected);
        assert_eq!(left.digest().to_vec(), expected);
    }

    #[test]
    fn extreme_features_reduce_like_the_reference() {
        let features = [0u32, 1, u32::MAX, u32::MAX - 1, 1 << 31];
        let mut m = MinHash::default();
        m.fold(&features);
        assert_eq!(m.digest().to_vec(), iscc_lib::alg_minhash_256(&features));
    }
}
