//! OMERO's import checksums, computed in the same pass as the ISCC so a caller can verify
//! the repository against `OriginalFile.hash` without reading a file twice.
//!
//! Names and output follow OMERO's `ChecksumAlgorithm` values and its Guava-based providers:
//! digests as lower-case hex of their bytes; the 32-bit checksums and the file size as the
//! hex of their little-endian bytes (Guava's `HashCode.fromInt`/`fromLong`).

use sha1::Digest as _;

/// A checksum algorithm OMERO may have recorded for an original file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    Sha1,
    Md5,
    Crc32,
    Adler32,
    FileSize,
}

impl Algorithm {
    /// Every supported algorithm, by OMERO name.
    pub const ALL: [Algorithm; 5] =
        [Algorithm::Sha1, Algorithm::Md5, Algorithm::Crc32, Algorithm::Adler32, Algorithm::FileSize];

    /// OMERO's name of the algorithm (`ChecksumAlgorithm.value`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1-160",
            Algorithm::Md5 => "MD5-128",
            Algorithm::Crc32 => "CRC-32",
            Algorithm::Adler32 => "Adler-32",
            Algorithm::FileSize => "File-Size-64",
        }
    }

    /// Parses an OMERO name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// A running checksum.
#[derive(Clone)]
pub enum Checksum {
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
    Crc32(crc32fast::Hasher),
    Adler32 { a: u32, b: u32 },
    FileSize(u64),
}

/// Bytes Adler-32 may sum before its accumulators must be reduced (zlib's NMAX).
const ADLER_NMAX: usize = 5552;
const ADLER_MOD: u32 = 65521;

impl Checksum {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha1 => Checksum::Sha1(sha1::Sha1::new()),
            Algorithm::Md5 => Checksum::Md5(md5::Md5::new()),
            Algorithm::Crc32 => Checksum::Crc32(crc32fast::Hasher::new()),
            Algorithm::Adler32 => Checksum::Adler32 { a: 1, b: 0 },
            Algorithm::FileSize => Checksum::FileSize(0),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Checksum::Sha1(h) => h.update(data),
            Checksum::Md5(h) => h.update(data),
            Checksum::Crc32(h) => h.update(data),
            Checksum::Adler32 { a, b } => {
                for block in data.chunks(ADLER_NMAX) {
                    for &byte in block {
                        *a += byte as u32;
                        *b += *a;
                    }
                    *a %= ADLER_MOD;
                    *b %= ADLER_MOD;
                }
            }
            Checksum::FileSize(n) => *n += data.len() as u64,
        }
    }

    /// The algorithm this checksum computes.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Checksum::Sha1(_) => Algorithm::Sha1,
            Checksum::Md5(_) => Algorithm::Md5,
            Checksum::Crc32(_) => Algorithm::Crc32,
            Checksum::Adler32 { .. } => Algorithm::Adler32,
            Checksum::FileSize(_) => Algorithm::FileSize,
        }
    }

    /// The value as OMERO stores it in `OriginalFile.hash`.
    pub fn finish(self) -> String {
        match self {
            Checksum::Sha1(h) => crate::engine::codes::hex(&h.finalize()),
            Checksum::Md5(h) => crate::engine::codes::hex(&h.finalize()),
            Checksum::Crc32(h) => crate::engine::codes::hex(&h.finalize().to_le_bytes()),
            Checksum::Adler32 { a, b } => crate::engine::codes::hex(&((b << 16) | a).to_le_bytes()),
            Checksum::FileSize(n) => crate::engine::codes::hex(&n.to_le_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(algorithm: Algorithm, data: &[u8]) -> String {
        let mut c = Checksum::new(algorithm);
        c.update(data);
        c.finish()
    }

    /// OMERO's own test vectors for "abc" (ome.util.checksum provider tests).
    #[test]
    fn omero_test_vectors_for_abc() {
        assert_eq!(of(Algorithm::Crc32, b"abc"), "c2412435");
        assert_eq!(of(Algorithm::Adler32, b"abc"), "27014d02");
        assert_eq!(of(Algorithm::Adler32, b""), "01000000");
        assert_eq!(of(Algorithm::FileSize, b"abc"), "0300000000000000");
    }

    #[test]
    fn adler_survives_long_runs_of_ff() {
        // 0xFF bytes overflow unreduced sums fastest; split and whole updates must agree.
        let data = vec![0xFFu8; 100_000];
        let mut split = Checksum::new(Algorithm::Adler32);
        split.update(&data[..12_345]);
        split.update(&data[12_345..]);
        assert_eq!(split.finish(), of(Algorithm::Adler32, &data));
    }

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
        }
        assert_eq!(Algorithm::from_name("SHA-256"), None);
    }
}
