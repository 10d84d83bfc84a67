//! The pixel code of one image (IMAGEWALK): its planes' canonical bytes, in walk order, as one
//! ISCC-SUM stream (wide, 256-bit units), with optional per-plane simprints (the 256-bit
//! Data-Code of each plane alone, as iscc-bio writes them).
//!
//! The bytes arrive in pieces of any size; planes are cut by counting, so a plane may span
//! pieces and a piece may hold several planes.

use crate::engine::codes::Digests;
use crate::engine::datacode::DataHasher;
use crate::engine::hash::{HashConfig, StreamHasher};

/// One plane's simprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Simprint {
    /// The plane's 256-bit Data-Code digest.
    pub digest: [u8; 32],
    /// Its index in walk order.
    pub plane: u64,
    /// Its byte count.
    pub size: u64,
}

/// The running state of one image.
pub struct ImageHasher {
    stream: StreamHasher,
    planes: PlaneCounter,
    parallel: bool,
}

/// Cuts the stream into planes, and hashes each plane alone when simprints are wanted.
struct PlaneCounter {
    plane_bytes: u64,
    /// Bytes of the current plane seen so far.
    in_plane: u64,
    done: u64,
    /// The current plane's own Data-Code, when simprints are wanted.
    hasher: Option<DataHasher>,
    simprints: Vec<Simprint>,
    parallel: bool,
}

impl PlaneCounter {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = ((self.plane_bytes - self.in_plane).min(bytes.len() as u64)) as usize;
            if let Some(hasher) = &mut self.hasher {
                hasher.update(&bytes[..take]);
            }
            bytes = &bytes[take..];
            self.in_plane += take as u64;
            if self.in_plane == self.plane_bytes {
                if let Some(hasher) = &mut self.hasher {
                    let plane = std::mem::replace(hasher, DataHasher::new(self.parallel));
                    self.simprints.push(Simprint {
                        digest: plane.finalize(),
                        plane: self.done,
                        size: self.plane_bytes,
                    });
                }
                self.done += 1;
                self.in_plane = 0;
            }
        }
    }
}

/// A finished image.
#[derive(Debug)]
pub struct PixelOutcome {
    pub digests: Digests,
    pub planes: u64,
    pub simprints: Option<Vec<Simprint>>,
}

impl ImageHasher {
    pub fn new(plane_bytes: u64, simprints: bool, parallel: bool) -> Self {
        let config = HashConfig { parallel, ..HashConfig::default() };
        ImageHasher {
            stream: StreamHasher::new(&config),
            planes: PlaneCounter {
                plane_bytes,
                in_plane: 0,
                done: 0,
                hasher: simprints.then(|| DataHasher::new(parallel)),
                simprints: Vec::new(),
                parallel,
            },
            parallel,
        }
    }

    /// Whole planes seen so far.
    pub fn planes_done(&self) -> u64 {
        self.planes.done
    }

    /// Feeds the next bytes of the walk.
    pub fn update(&mut self, bytes: &[u8]) {
        let (stream, planes) = (&mut self.stream, &mut self.planes);
        if planes.hasher.is_some() && self.parallel && bytes.len() >= 1 << 20 {
            rayon::join(|| stream.update(bytes), || planes.feed(bytes));
        } else {
            stream.update(bytes);
            planes.feed(bytes);
        }
    }

    pub fn finish(self) -> PixelOutcome {
        let wanted = self.planes.hasher.is_some();
        PixelOutcome {
            digests: self.stream.finish().digests,
            planes: self.planes.done,
            simprints: wanted.then_some(self.planes.simprints),
        }
    }
}

/// Standard base64 with padding (RFC 4648), as iscc-bio encodes simprints.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testdata::pseudo_random;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let vectors = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")];
        for (plain, encoded) in vectors {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn any_split_gives_the_same_codes_and_simprints() {
        let data = pseudo_random(3 * 70_000, 5);
        let whole = {
            let mut h = ImageHasher::new(70_000, true, false);
            h.update(&data);
            h.finish()
        };
        for cut in [1, 69_999, 70_000, 70_001, 150_000] {
            let mut h = ImageHasher::new(70_000, true, true);
            h.update(&data[..cut]);
            h.update(&data[cut..]);
            let got = h.finish();
            assert_eq!(got.digests, whole.digests);
            assert_eq!(got.simprints, whole.simprints);
            assert_eq!(got.planes, 3);
        }
        let simprints = whole.simprints.unwrap();
        assert_eq!(simprints.len(), 3);
        let mut alone = DataHasher::new(false);
        alone.update(&data[70_000..140_000]);
        assert_eq!(simprints[1].digest, alone.finalize());
    }
}
