//! From digests to ISCC strings: the Data-Code and Instance-Code units and their ISCC-SUM
//! composite, encoded by iscc-lib (the ISCC Foundation's implementation of ISO 24138).

use iscc_lib::codec::{encode_component, MainType, SubType, Version};

/// What one pass over a byte stream yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digests {
    /// 256-bit compressed MinHash of the Data-Code.
    pub data: [u8; 32],
    /// BLAKE3 of the bytes (the Instance-Code's body and the datahash).
    pub instance: [u8; 32],
    pub filesize: u64,
}

/// The codes of one record, as they are printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Codes {
    /// `ISCC:KUA…` (narrow, 2×64 bits) or `ISCC:K4A…` (wide, 2×128 bits).
    pub iscc: String,
    /// BLAKE3 multihash: `1e20` and 64 hex digits.
    pub datahash: String,
    pub filesize: u64,
    /// The 256-bit Data-Code and Instance-Code units, as `iscc-sum --units` prints them.
    pub units: [String; 2],
}

/// Bits of each unit. iscc-sum always reports full 256-bit units; the composite takes the
/// first 64 (narrow) or 128 (wide) bits of each.
const UNIT_BITS: u32 = 256;

/// Encodes one unit of the given type from its digest at `bits` length.
pub fn unit(main: MainType, digest: &[u8; 32], bits: u32) -> String {
    let body = encode_component(main, SubType::None, Version::V0, bits, digest)
        .expect("a 32-byte digest encodes at 64, 128, 192 or 256 bits");
    format!("ISCC:{body}")
}

impl Digests {
    /// Composes the ISCC-SUM and its units.
    pub fn codes(&self, wide: bool) -> Codes {
        let data = unit(MainType::Data, &self.data, UNIT_BITS);
        let instance = unit(MainType::Instance, &self.instance, UNIT_BITS);
        let iscc = iscc_lib::gen_iscc_code_v0(&[&data, &instance], wide)
            .expect("a Data-Code and an Instance-Code of 256 bits always compose")
            .iscc;
        Codes {
            iscc,
            datahash: format!("1e20{}", hex(&self.instance)),
            filesize: self.filesize,
            units: [data, instance],
        }
    }
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// An ISCC-SUM taken apart: the one decoder of codes in the crate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodedSum {
    /// The 2-byte header, kept to print the code again.
    pub header: [u8; 2],
    /// Data-Code bits: 64 (narrow) or 128 (wide), left-aligned.
    pub data: u128,
    /// Instance-Code bits, likewise.
    pub instance: u128,
    pub wide: bool,
}

/// Decodes an ISCC-SUM (`ISCC:` optional); `None` for anything else.
pub fn decode_sum(iscc: &str) -> Option<DecodedSum> {
    let body = iscc.strip_prefix("ISCC:").unwrap_or(iscc);
    let raw = iscc_lib::codec::decode_base32(body).ok()?;
    let (main, sub, _, _, tail) = iscc_lib::codec::decode_header(&raw).ok()?;
    let wide = match (main, sub) {
        (MainType::Iscc, SubType::Wide) => true,
        (MainType::Iscc, SubType::Sum) => false,
        _ => return None,
    };
    let unit = if wide { 16 } else { 8 };
    if tail.len() != 2 * unit || raw.len() != 2 + 2 * unit {
        return None;
    }
    let bits = |b: &[u8]| {
        let mut v = [0u8; 16];
        v[..b.len()].copy_from_slice(b);
        u128::from_be_bytes(v)
    };
    Some(DecodedSum {
        header: [raw[0], raw[1]],
        data: bits(&tail[..unit]),
        instance: bits(&tail[unit..]),
        wide,
    })
}

impl DecodedSum {
    /// The code as an `ISCC:` string again.
    pub fn to_iscc(&self) -> String {
        let unit = if self.wide { 16 } else { 8 };
        let mut raw = self.header.to_vec();
        raw.extend_from_slice(&self.data.to_be_bytes()[..unit]);
        raw.extend_from_slice(&self.instance.to_be_bytes()[..unit]);
        format!("ISCC:{}", iscc_lib::codec::encode_base32(&raw))
    }
}

/// Parses a BLAKE3 datahash as `sum` writes it (`1e20` and 64 hex digits).
pub fn parse_datahash(text: &str) -> Option<[u8; 32]> {
    let hex = text.strip_prefix("1e20")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (k, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * k..2 * k + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether an ISCC-SUM string is of the wide (2×128-bit) kind, judged from its header.
pub fn is_wide(iscc: &str) -> Option<bool> {
    decode_sum(iscc).map(|d| d.wide)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_stream_composes_like_iscc_lib() {
        let digests = Digests {
            data: {
                let mut h = crate::engine::datacode::DataHasher::new(false);
                h.update(b"");
                h.finalize()
            },
            instance: *blake3::hash(b"").as_bytes(),
            filesize: 0,
        };
        let narrow = digests.codes(false);
        assert_eq!(is_wide(&narrow.iscc), Some(false));
        assert_eq!(is_wide(&digests.codes(true).iscc), Some(true));
        let data = iscc_lib::gen_data_code_v0(b"", 64).unwrap().iscc;
        let inst = iscc_lib::gen_instance_code_v0(b"", 64).unwrap().iscc;
        assert_eq!(narrow.iscc, iscc_lib::gen_iscc_code_v0(&[&data, &inst], false).unwrap().iscc);
    }
}
