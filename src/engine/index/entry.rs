//! One code as the index keeps it, and the rule that decides whether two codes match.
//!
//! The rule, which the search and the tests' brute force both follow:
//! - two codes match only within one space (the files' codes, or the pixel codes);
//! - *identical instance*: their Instance-Codes agree on every bit both carry, that is 64 bits
//!   when either is a narrow code without a datahash, else 128 (a datahash gives its first 128
//!   bits, the Instance-Code of a wide code);
//! - *distance*: the Hamming distance of their Data-Codes over 128 bits when both are wide,
//!   else over their first 64 bits; it is compared with the threshold, which counts bits of a
//!   64-bit Data-Code and is doubled when both are wide (as `similar` does);
//! - a code matches if it has the identical instance or is within the threshold.

use crate::engine::codes::{self, DecodedSum};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Which code of an image: of its original files, or of its pixels. Codes of different
/// spaces never match (a pixel stream and a file are different bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Space {
    #[default]
    Files,
    Pixels,
}

/// Bits of the per-row flags byte.
pub mod flag {
    /// The Data-Code and Instance-Code are 128 bits (an `ISCC:K4A…` code).
    pub const WIDE: u8 = 1;
    /// 128 bits of the Instance-Code are known (wide code, or a datahash was given).
    pub const INSTANCE_128: u8 = 2;
    /// The code is a pixel code.
    pub const PIXELS: u8 = 4;
}

/// One indexed code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub group: u64,
    pub owner: u64,
    /// [`flag`] bits.
    pub flags: u8,
    /// The Data-Code's first 64 bits.
    pub hi: u64,
    /// Its next 64 bits (wide codes; 0 otherwise).
    pub lo: u64,
    /// The Instance-Code's (or datahash's) first 64 bits.
    pub ihi: u64,
    /// Its next 64 bits when known (0 otherwise).
    pub ilo: u64,
}

/// A code to look up: what [`Entry`] holds, less the owner, plus the id not to report.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub flags: u8,
    pub hi: u64,
    pub lo: u64,
    pub ihi: u64,
    pub ilo: u64,
    /// The query's own id, left out of its answer.
    pub exclude: Option<u64>,
}

impl Entry {
    pub fn wide(&self) -> bool {
        self.flags & flag::WIDE != 0
    }

    pub fn space(&self) -> Space {
        if self.flags & flag::PIXELS != 0 {
            Space::Pixels
        } else {
            Space::Files
        }
    }

    /// The ISCC-SUM again (the canonical header of its width).
    pub fn iscc(&self) -> String {
        iscc_of(self.flags, self.hi, self.lo, self.ihi, self.ilo)
    }

    pub fn probe(&self) -> Probe {
        Probe {
            flags: self.flags,
            hi: self.hi,
            lo: self.lo,
            ihi: self.ihi,
            ilo: self.ilo,
            exclude: Some(self.id),
        }
    }
}

/// The ISCC-SUM of a row's fields.
pub fn iscc_of(flags: u8, hi: u64, lo: u64, ihi: u64, ilo: u64) -> String {
    let wide = flags & flag::WIDE != 0;
    let join = |a: u64, b: u64| (a as u128) << 64 | b as u128;
    DecodedSum {
        header: canonical_header(wide),
        data: join(hi, if wide { lo } else { 0 }),
        instance: join(ihi, if wide { ilo } else { 0 }),
        wide,
    }
    .to_iscc()
}

/// The header every ISCC-SUM of this width has, taken from a code composed by the crate's
/// own code path (so it is iscc-lib's, not a copy).
fn canonical_header(wide: bool) -> [u8; 2] {
    static HEADERS: OnceLock<[[u8; 2]; 2]> = OnceLock::new();
    HEADERS.get_or_init(|| {
        let digests = codes::Digests { data: [0; 32], instance: [0; 32], filesize: 0 };
        let header =
            |w: bool| codes::decode_sum(&digests.codes(w).iscc).expect("a composed code decodes").header;
        [header(false), header(true)]
    })[wide as usize]
}

/// Why a code record cannot be indexed or looked up.
pub fn parse_code(iscc: &str, datahash: Option<&str>, space: Space) -> Result<Probe, String> {
    let sum = codes::decode_sum(iscc).ok_or_else(|| format!("not an ISCC-SUM: {iscc:?}"))?;
    if sum.header != canonical_header(sum.wide) {
        return Err(format!("not an ISCC-SUM of a Data-Code and an Instance-Code: {iscc:?}"));
    }
    let mut flags = if sum.wide { flag::WIDE | flag::INSTANCE_128 } else { 0 };
    if space == Space::Pixels {
        flags |= flag::PIXELS;
    }
    let (hi, lo) = ((sum.data >> 64) as u64, sum.data as u64);
    let (mut ihi, mut ilo) = ((sum.instance >> 64) as u64, sum.instance as u64);
    if let Some(text) = datahash {
        let hash = codes::parse_datahash(text).ok_or_else(|| format!("not a BLAKE3 datahash: {text:?}"))?;
        let first = u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"));
        let second = u64::from_be_bytes(hash[8..16].try_into().expect("8 bytes"));
        if first != ihi || (sum.wide && second != ilo) {
            return Err(format!("the datahash {text} is not of the code's Instance-Code ({iscc})"));
        }
        (ihi, ilo) = (first, second);
        flags |= flag::INSTANCE_128;
    }
    Ok(Probe { flags, hi, lo, ihi, ilo, exclude: None })
}

/// How a code matches a query: what the answer reports of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relation {
    /// The Instance-Codes agree on every bit both carry.
    pub instance: bool,
    pub distance: u32,
    /// Bits the distance is counted over: 64 or 128.
    pub bits: u32,
}

/// The largest distance that matches for a pair of these widths (see the module's rule).
pub fn limit(both_wide: bool, threshold: u32) -> u32 {
    if both_wide {
        2 * threshold
    } else {
        threshold
    }
}

/// The relation of a code (its row's fields) to a probe, whether it matches or not; `None`
/// for a code of another space.
#[inline(always)]
pub fn relate(p: &Probe, flags: u8, hi: u64, lo: u64, ihi: u64, ilo: u64) -> Option<Relation> {
    if (p.flags ^ flags) & flag::PIXELS != 0 {
        return None;
    }
    let both_wide = p.flags & flags & flag::WIDE != 0;
    let mut distance = (p.hi ^ hi).count_ones();
    if both_wide {
        distance += (p.lo ^ lo).count_ones();
    }
    let both_128 = p.flags & flags & flag::INSTANCE_128 != 0;
    let instance = p.ihi == ihi && (!both_128 || p.ilo == ilo);
    Some(Relation { instance, distance, bits: if both_wide { 128 } else { 64 } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_datahash_must_agree() {
        let d = codes::Digests { data: [7; 32], instance: [9; 32], filesize: 1 };
        for wide in [false, true] {
            let c = d.codes(wide);
            let p = parse_code(&c.iscc, Some(&c.datahash), Space::Files).unwrap();
            assert_eq!(iscc_of(p.flags, p.hi, p.lo, p.ihi, p.ilo), c.iscc);
            assert_eq!(p.flags & flag::INSTANCE_128, flag::INSTANCE_128);
            let other = codes::Digests { instance: [8; 32], ..d }.codes(wide).datahash;
            assert!(parse_code(&c.iscc, Some(&other), Space::Files).unwrap_err().contains("not of the code"));
        }
        let data_code = codes::unit(iscc_lib::codec::MainType::Data, &[1; 32], 64);
        assert!(parse_code(&data_code, None, Space::Files).is_err());
    }
}
