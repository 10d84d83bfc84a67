//! The segment file: an immutable, memory-mapped set of rows (codes), the tombstones of one
//! update, and the tables that find near codes without reading every row.
//!
//! Layout (little-endian): a 256-byte header, then sections, each starting on a 64-byte
//! boundary so that it can be read in place as an array of its type:
//!
//! | section | type | count | content |
//! |---|---|---|---|
//! | `ids` | u64 | rows | the code's id |
//! | `acl` | u32 | rows | index into `owners` |
//! | `flags` | u8 | rows | [`flag`](super::entry::flag) bits |
//! | `hi` | u64 | rows | the Data-Code's first 64 bits, ascending: rows are sorted by it |
//! | `lo` | u64 | rows or 0 | the wide Data-Code's next 64 bits (absent: no wide row) |
//! | `ihi` | u64 | rows | the Instance-Code's first 64 bits |
//! | `ilo` | u64 | rows or 0 | its next 64 bits (absent: none known) |
//! | `by_instance` | u32 | rows | rows ordered by (`ihi`, `ilo`) |
//! | `by_id` | u32 | rows | rows ordered by id |
//! | `owners` | u64 | 2 × owners | (group, owner) pairs |
//! | `tombstones` | u64 | tombstones | ids this update removed from older segments, ascending |
//! | `dir0`…`dir7` | u32 | 65,537 or 0 | bucket starts of 16-bit block `j` of the Data-Code |
//! | `post1`…`post7` | u32 | rows (`post4`…`post7`: wide rows) or 0 | rows by block value |
//!
//! Block `j` is bits `16j .. 16j+16` of the 128-bit Data-Code. Rows are sorted by `hi`, so
//! block 0's bucket `v` is the rows `dir0[v] .. dir0[v+1]` themselves; block `j > 0`'s bucket
//! is `post_j[dir_j[v] .. dir_j[v+1]]`. Blocks 4 to 7 hold the wide rows only. A segment of
//! fewer rows than [`TABLE_MIN_ROWS`](super::build::TABLE_MIN_ROWS) has no tables and is
//! scanned.
//!
//! The header holds the segment's sequence number, counts, each section's offset and length,
//! and CRC-32s of the header and of the body; readers check the header and the section bounds
//! when they map a segment, and `index verify` checks the body.

use std::fs::File;
use std::path::{Path, PathBuf};

#[cfg(target_endian = "big")]
compile_error!("index segments are read in place as little-endian arrays");

pub const MAGIC: &[u8; 8] = b"ISCCIDX\0";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 256;
/// Every section starts at a multiple of this.
pub const ALIGN: usize = 64;
/// Values of a 16-bit block, and entries of a bucket directory.
pub const BUCKETS: usize = 1 << 16;
pub const BLOCKS: usize = 8;

/// The sections, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Sec {
    Ids,
    Acl,
    Flags,
    Hi,
    Lo,
    Ihi,
    Ilo,
    ByInstance,
    ById,
    Owners,
    Tombstones,
    Dir0,
    Post1 = 11 + BLOCKS,
}
pub const SECTIONS: usize = Sec::Post1 as usize + BLOCKS - 1;

/// Section of block `j`'s directory.
pub fn dir(j: usize) -> usize {
    Sec::Dir0 as usize + j
}

/// Section of block `j`'s postings (`j >= 1`).
pub fn post(j: usize) -> usize {
    Sec::Post1 as usize + j - 1
}

/// Header fields (after the magic and version).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub rows: u64,
    pub wide_rows: u64,
    pub owners: u64,
    pub tombstones: u64,
    /// Offset and length in bytes of each section.
    pub sections: Vec<(u64, u64)>,
    pub body_crc: u32,
}

impl Header {
    /// The 256 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut w = Put { buf: &mut out, at: 0 };
        w.bytes(MAGIC);
        w.u32(VERSION);
        w.u32(SECTIONS as u32);
        for v in [self.seq, self.rows, self.wide_rows, self.owners, self.tombstones] {
            w.u64(v);
        }
        w.u32(self.body_crc);
        w.u32(0);
        // Section lengths are implied by the counts, so only the offsets are stored: 8 bytes
        // each would not fit 256 bytes with both.
        for &(offset, _) in &self.sections {
            w.u32((offset / ALIGN as u64) as u32);
        }
        let crc = crc32fast::hash(&out[..HEADER_LEN - 4]);
        out[HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads and checks a header; `Err` says what is wrong.
    pub fn decode(raw: &[u8], file_len: u64) -> Result<Header, String> {
        if raw.len() < HEADER_LEN || &raw[..8] != MAGIC {
            return Err("not an index segment".into());
        }
        let crc = u32::from_le_bytes(raw[HEADER_LEN - 4..HEADER_LEN].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&raw[..HEADER_LEN - 4]) {
            return Err("damaged header (checksum)".into());
        }
        let mut r = Get { buf: raw, at: 8 };
        let version = r.u32();
        if version != VERSION {
            return Err(format!("format version {version}, this program reads {VERSION}"));
        }
        if r.u32() as usize != SECTIONS {
            return Err("unexpected section count".into());
        }
        let mut h = Header {
            seq: r.u64(),
            rows: r.u64(),
            wide_rows: r.u64(),
            owners: r.u64(),
            tombstones: r.u64(),
            ..Header::default()
        };
        h.body_crc = r.u32();
        r.u32();
        let offsets: Vec<u64> = (0..SECTIONS).map(|_| r.u32() as u64 * ALIGN as u64).collect();
        if h.rows > u32::MAX as u64 || h.wide_rows > h.rows {
            return Err("impossible row counts".into());
        }
        for (s, &offset) in offsets.iter().enumerate() {
            let end = offsets.get(s + 1).copied().unwrap_or(file_len);
            if offset < HEADER_LEN as u64 || end < offset || end > file_len {
                return Err(format!("section {s} out of bounds"));
            }
            h.sections.push((offset, end - offset));
        }
        Ok(h)
    }

    /// Whether each section's length fits the counts (lengths include the padding).
    pub fn check_lengths(&self) -> Result<(), String> {
        let n = self.rows;
        let tables = self.sections[dir(0)].1 > 0;
        for s in 0..SECTIONS {
            let want = expected_len(s, n, self.wide_rows, self.owners, self.tombstones, tables, self);
            let got = self.sections[s].1;
            if got < want || got >= want + ALIGN as u64 && !(got == 0 && want == 0) {
                return Err(format!("section {s}: {got} bytes, expected {want}"));
            }
        }
        Ok(())
    }
}

/// Bytes of section `s` before padding.
fn expected_len(s: usize, n: u64, wide: u64, owners: u64, tombs: u64, tables: bool, h: &Header) -> u64 {
    let optional = |len: u64| if h.sections[s].1 == 0 { 0 } else { len };
    match s {
        x if x == Sec::Ids as usize || x == Sec::Hi as usize || x == Sec::Ihi as usize => 8 * n,
        x if x == Sec::Lo as usize || x == Sec::Ilo as usize => optional(8 * n),
        x if x == Sec::Acl as usize || x == Sec::ByInstance as usize || x == Sec::ById as usize => 4 * n,
        x if x == Sec::Flags as usize => n,
        x if x == Sec::Owners as usize => 16 * owners,
        x if x == Sec::Tombstones as usize => 8 * tombs,
        x if (dir(0)..dir(0) + BLOCKS).contains(&x) => {
            if tables {
                4 * (BUCKETS as u64 + 1)
            } else {
                0
            }
        }
        x => {
            let j = x - Sec::Post1 as usize + 1;
            match (tables, j >= 4) {
                (false, _) => 0,
                (true, false) => 4 * n,
                (true, true) => 4 * wide,
            }
        }
    }
}

struct Put<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Put<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.at..self.at + b.len()].copy_from_slice(b);
        self.at += b.len();
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

struct Get<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Get<'_> {
    fn u32(&mut self) -> u32 {
        self.at += 4;
        u32::from_le_bytes(self.buf[self.at - 4..self.at].try_into().expect("4 bytes"))
    }
    fn u64(&mut self) -> u64 {
        self.at += 8;
        u64::from_le_bytes(self.buf[self.at - 8..self.at].try_into().expect("8 bytes"))
    }
}

/// A mapped segment.
pub struct Segment {
    pub path: PathBuf,
    pub header: Header,
    map: memmap2::Mmap,
}

/// Element types a section can be read as.
pub trait Plain: Copy {}
impl Plain for u8 {}
impl Plain for u32 {}
impl Plain for u64 {}

impl Segment {
    /// Maps a segment file and checks its header and section bounds.
    pub fn open(path: &Path) -> std::io::Result<Result<Segment, String>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < HEADER_LEN as u64 {
            return Ok(Err("truncated segment".into()));
        }
        // SAFETY: segment files are written whole before any manifest names them and never
        // modified after; only the index's own writer creates them, under its lock. A file
        // truncated by someone else would raise SIGBUS on access, as for any mapped file.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let header = match Header::decode(&map, len).and_then(|h| h.check_lengths().map(|_| h)) {
            Ok(h) => h,
            Err(why) => return Ok(Err(why)),
        };
        Ok(Ok(Segment { path: path.to_path_buf(), header, map }))
    }

    /// Section `s` as an array of `T`.
    pub fn col<T: Plain>(&self, s: usize) -> &[T] {
        let (offset, len) = self.header.sections[s];
        let count = match s {
            x if (dir(0)..dir(0) + BLOCKS).contains(&x) => {
                if len == 0 {
                    0
                } else {
                    BUCKETS + 1
                }
            }
            _ => self.exact_len(s) / std::mem::size_of::<T>(),
        };
        let bytes = &self.map[offset as usize..offset as usize + count * std::mem::size_of::<T>()];
        assert_eq!(bytes.as_ptr() as usize % std::mem::align_of::<T>(), 0, "sections are 64-byte aligned");
        // SAFETY: the range lies in the mapping (bounds checked by `Header::decode` and the
        // slice above), is aligned for `T` (the map is page-aligned and the offset a multiple
        // of 64, asserted), and every bit pattern is a valid u8, u32 or u64; the mapping lives
        // as long as `self`, which the returned slice borrows.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, count) }
    }

    /// Section length without padding.
    fn exact_len(&self, s: usize) -> usize {
        let h = &self.header;
        let tables = h.sections[dir(0)].1 > 0;
        expected_len(s, h.rows, h.wide_rows, h.owners, h.tombstones, tables, h) as usize
    }

    pub fn rows(&self) -> usize {
        self.header.rows as usize
    }

    pub fn has_tables(&self) -> bool {
        self.header.sections[dir(0)].1 > 0
    }

    pub fn bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// The CRC-32 of the body, to compare with the header's.
    pub fn body_crc(&self) -> u32 {
        crc32fast::hash(&self.map[HEADER_LEN..])
    }
}
