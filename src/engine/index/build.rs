//! Writing a segment: rows sorted by Data-Code, the lookup orders, the block tables, and the
//! header with its checksums; the file is flushed to disk before it is named anywhere.

use super::entry::Entry;
use super::segment::{dir, post, Header, Sec, ALIGN, BLOCKS, BUCKETS, HEADER_LEN, SECTIONS};
use rayon::prelude::*;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

/// Segments of fewer rows are scanned: their tables (2 MiB of directories) would cost more
/// than they save.
pub const TABLE_MIN_ROWS: usize = 1 << 16;

/// Block `j` (0..8) of a row's 128-bit Data-Code.
#[inline(always)]
pub fn block(hi: u64, lo: u64, j: usize) -> usize {
    let word = if j < 4 { hi } else { lo };
    ((word >> (48 - 16 * (j % 4))) & 0xFFFF) as usize
}

/// Writes `entries` (ids unique) and `tombstones` as segment `seq` at `path`, with tables
/// when `tables` and the rows are many enough; the file is synced before this returns.
pub fn write(
    path: &Path,
    seq: u64,
    entries: &mut [Entry],
    tombstones: &[u64],
    tables: bool,
) -> io::Result<u64> {
    if entries.len() > u32::MAX as usize {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "more than 2^32 - 1 codes in one segment"));
    }
    entries.par_sort_unstable_by_key(|e| (e.hi, e.lo, e.id));
    let n = entries.len();
    let tables = tables && n >= TABLE_MIN_ROWS;
    let wide: Vec<u32> = (0..n as u32).filter(|&r| entries[r as usize].wide()).collect();
    let any_lo = !wide.is_empty();
    let any_ilo = entries.iter().any(|e| e.ilo != 0);

    let mut owners: Vec<(u64, u64)> = Vec::new();
    let mut owner_index: HashMap<(u64, u64), u32> = HashMap::new();
    let acl: Vec<u32> = entries
        .iter()
        .map(|e| {
            *owner_index.entry((e.group, e.owner)).or_insert_with(|| {
                owners.push((e.group, e.owner));
                owners.len() as u32 - 1
            })
        })
        .collect();
    let mut by_instance: Vec<u32> = (0..n as u32).collect();
    by_instance.par_sort_unstable_by_key(|&r| (entries[r as usize].ihi, entries[r as usize].ilo, r));
    let mut by_id: Vec<u32> = (0..n as u32).collect();
    by_id.par_sort_unstable_by_key(|&r| entries[r as usize].id);
    let mut tombs = tombstones.to_vec();
    tombs.sort_unstable();
    tombs.dedup();

    let mut file = File::create(path)?;
    file.write_all(&[0u8; HEADER_LEN])?;
    let mut w = Body {
        out: io::BufWriter::with_capacity(1 << 20, &mut file),
        at: HEADER_LEN as u64,
        crc: crc32fast::Hasher::new(),
    };
    let mut offsets = vec![0u64; SECTIONS];
    let u64s = |f: &dyn Fn(&Entry) -> u64| entries.iter().map(f).collect::<Vec<u64>>();
    offsets[Sec::Ids as usize] = w.section(bytes_of(&u64s(&|e| e.id)))?;
    offsets[Sec::Acl as usize] = w.section(bytes_of(&acl))?;
    offsets[Sec::Flags as usize] = w.section(&entries.iter().map(|e| e.flags).collect::<Vec<u8>>())?;
    offsets[Sec::Hi as usize] = w.section(bytes_of(&u64s(&|e| e.hi)))?;
    let lo = if any_lo { u64s(&|e| e.lo) } else { Vec::new() };
    offsets[Sec::Lo as usize] = w.section(bytes_of(&lo))?;
    offsets[Sec::Ihi as usize] = w.section(bytes_of(&u64s(&|e| e.ihi)))?;
    let ilo = if any_ilo { u64s(&|e| e.ilo) } else { Vec::new() };
    offsets[Sec::Ilo as usize] = w.section(bytes_of(&ilo))?;
    offsets[Sec::ByInstance as usize] = w.section(bytes_of(&by_instance))?;
    offsets[Sec::ById as usize] = w.section(bytes_of(&by_id))?;
    let flat: Vec<u64> = owners.iter().flat_map(|&(g, o)| [g, o]).collect();
    offsets[Sec::Owners as usize] = w.section(bytes_of(&flat))?;
    offsets[Sec::Tombstones as usize] = w.section(bytes_of(&tombs))?;
    let mut postings: Vec<Vec<u32>> = Vec::new();
    for j in 0..BLOCKS {
        if !tables {
            offsets[dir(j)] = w.section(&[])?;
            continue;
        }
        let rows: Vec<u32> = if j < 4 { (0..n as u32).collect() } else { wide.clone() };
        let (directory, posting) = bucket(entries, &rows, j);
        offsets[dir(j)] = w.section(bytes_of(&directory))?;
        if j > 0 {
            postings.push(posting);
        }
    }
    for j in 1..BLOCKS {
        offsets[post(j)] = w.section(if tables { bytes_of(&postings[j - 1]) } else { &[] })?;
    }
    let end = w.at;
    let body_crc = w.crc.clone().finalize();
    w.out.flush()?;
    drop(w);
    let sections = (0..SECTIONS)
        .map(|s| (offsets[s], offsets.get(s + 1).copied().unwrap_or(end) - offsets[s]))
        .collect();
    let header = Header {
        seq,
        rows: n as u64,
        wide_rows: wide.len() as u64,
        owners: owners.len() as u64,
        tombstones: tombs.len() as u64,
        sections,
        body_crc,
    };
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header.encode())?;
    file.sync_all()?;
    Ok(end)
}

/// Block `j`'s directory (bucket starts, 65,537 entries) and its rows ordered by block value
/// (a counting sort: rows stay ascending within a bucket).
fn bucket(entries: &[Entry], rows: &[u32], j: usize) -> (Vec<u32>, Vec<u32>) {
    let key = |r: u32| block(entries[r as usize].hi, entries[r as usize].lo, j);
    let mut directory = vec![0u32; BUCKETS + 1];
    for &r in rows {
        directory[key(r) + 1] += 1;
    }
    for v in 1..=BUCKETS {
        directory[v] += directory[v - 1];
    }
    if j == 0 {
        return (directory, Vec::new()); // the rows themselves are in block-0 order
    }
    let mut fill = directory.clone();
    let mut posting = vec![0u32; rows.len()];
    for &r in rows {
        let k = key(r);
        posting[fill[k] as usize] = r;
        fill[k] += 1;
    }
    (directory, posting)
}

/// The bytes of an array of plain integers, in memory order (little-endian here).
fn bytes_of<T: super::segment::Plain>(values: &[T]) -> &[u8] {
    // SAFETY: u8, u32 and u64 have no padding and any alignment is valid for u8; the slice
    // covers exactly the memory of `values`, which it borrows.
    unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values)) }
}

/// The body being written: its position and running checksum.
struct Body<W: Write> {
    out: W,
    at: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Body<W> {
    /// Writes one section, padded to the alignment; returns its offset.
    fn section(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let start = self.at;
        self.put(bytes)?;
        let pad = (ALIGN - (self.at as usize % ALIGN)) % ALIGN;
        self.put(&[0u8; ALIGN][..pad])?;
        Ok(start)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.crc.update(bytes);
        self.at += bytes.len() as u64;
        Ok(())
    }
}
