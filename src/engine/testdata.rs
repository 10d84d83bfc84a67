//! Deterministic pseudo-random bytes (xorshift64): the one generator behind `selftest`, the
//! unit tests, the integration tests and the examples, so their data is reproducible.

/// `len` bytes from `seed`; the same seed always gives the same bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
