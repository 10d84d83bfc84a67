//! The `similar` command: groups of identical and of near-identical codes.
//!
//! Identical: the same datahash (BLAKE3 of the bytes) when records carry one, else the same
//! Instance-Code bits. Near-identical: connected components of the graph that joins two codes
//! whose Data-Codes are at most `threshold` bits apart; the pairs come from `hamming`, exactly
//! those a brute-force comparison finds. Memory: about 170 bytes per code plus the names.

use crate::cli::SimilarArgs;
use crate::exit::{Status, UsageError};
use crate::record::{json_path, path_bytes, unescape_surrogates};
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

/// One input code.
#[derive(Clone, Debug)]
pub struct Entry {
    /// `true`: named by an `id`; `false`: by a `path`.
    pub by_id: bool,
    pub wide: bool,
    pub name: Box<[u8]>,
    /// The code's 2-byte header, kept to print the code again.
    header: [u8; 2],
    /// Data-Code bits: 64 (narrow) or 128 (wide), left-aligned.
    pub data: u128,
    pub instance: u128,
    pub datahash: Option<[u8; 32]>,
}

impl Entry {
    /// The ISCC-SUM as it was given.
    pub fn iscc(&self) -> String {
        let unit = if self.wide { 16 } else { 8 };
        let mut raw = self.header.to_vec();
        raw.extend_from_slice(&self.data.to_be_bytes()[..unit]);
        raw.extend_from_slice(&self.instance.to_be_bytes()[..unit]);
        format!("ISCC:{}", iscc_lib::codec::encode_base32(&raw))
    }
}

/// A group of the output.
#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    pub identical: bool,
    /// Entry indexes, in input order.
    pub members: Vec<usize>,
}

/// Decodes an ISCC-SUM into its header, Data-Code and Instance-Code bits, and width.
pub fn decode(iscc: &str) -> Option<([u8; 2], u128, u128, bool)> {
    use iscc_lib::codec::{MainType, SubType};
    let raw = iscc_lib::codec::decode_base32(iscc.strip_prefix("ISCC:")?).ok()?;
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
    Some(([raw[0], raw[1]], bits(&tail[..unit]), bits(&tail[unit..]), wide))
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
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

#[derive(Deserialize)]
struct JsonRecord<'a> {
    #[serde(borrow, default)]
    id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    path: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    iscc: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    datahash: Option<std::borrow::Cow<'a, str>>,
}

/// Parses one input line (JSON record or iscc-sum line); `Ok(None)` for blank lines.
pub fn parse_line(line: &[u8]) -> Result<Option<Entry>, String> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return Ok(None);
    }
    if trimmed[0] == b'{' {
        let text = std::str::from_utf8(trimmed).map_err(|_| "not UTF-8".to_string())?;
        let text = unescape_surrogates(text);
        let rec: JsonRecord = serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}"))?;
        let iscc = rec.iscc.ok_or("no \"iscc\" (a failed record?)")?;
        let (by_id, name) = match (rec.id, &rec.path) {
            (Some(raw), _) if raw.get() != "null" => {
                let name = match serde_json::from_str::<String>(raw.get()) {
                    Ok(s) => s.into_bytes(),
                    Err(_) => raw.get().as_bytes().to_vec(),
                };
                (true, name)
            }
            (_, Some(p)) => (false, path_bytes(p)),
            _ => return Err("neither \"id\" nor \"path\"".into()),
        };
        let (header, data, instance, wide) =
            decode(&iscc).ok_or_else(|| format!("not an ISCC-SUM: {iscc:?}"))?;
        let datahash = match rec.datahash {
            Some(d) => Some(parse_hash(&d).ok_or_else(|| format!("not a BLAKE3 datahash: {d:?}"))?),
            None => None,
        };
        return Ok(Some(Entry { by_id, wide, name: name.into(), header, data, instance, datahash }));
    }
    let pos =
        trimmed.windows(2).position(|w| w == b" *").ok_or("not an ISCC line (expected 'ISCC:... *name')")?;
    let code = std::str::from_utf8(&trimmed[..pos]).map_err(|_| "code is not ASCII")?;
    let (header, data, instance, wide) = decode(code).ok_or_else(|| format!("not an ISCC-SUM: {code:?}"))?;
    Ok(Some(Entry {
        by_id: false,
        wide,
        name: trimmed[pos + 2..].into(),
        header,
        data,
        instance,
        datahash: None,
    }))
}

/// What makes two entries identical: the datahash when there is one (exact), else the
/// Instance-Code bits of the same width.
fn content_key(e: &Entry) -> (u8, [u8; 32]) {
    match &e.datahash {
        Some(d) => (0, *d),
        None => {
            let mut k = [0u8; 32];
            k[..16].copy_from_slice(&e.instance.to_be_bytes());
            (1 + e.wide as u8, k)
        }
    }
}

/// Identical groups (2+ members with the same content), in order of their first member.
pub fn identical_groups(entries: &[Entry]) -> Vec<Group> {
    let mut keyed: Vec<((u8, [u8; 32]), u32)> =
        entries.par_iter().enumerate().map(|(i, e)| (content_key(e), i as u32)).collect();
    keyed.par_sort_unstable();
    let mut groups: Vec<Group> = keyed
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() > 1)
        .map(|run| Group { identical: true, members: run.iter().map(|&(_, i)| i as usize).collect() })
        .collect();
    groups.par_sort_unstable_by_key(|g| g.members[0]);
    groups
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        parent[x as usize] = parent[parent[x as usize] as usize];
        x = parent[x as usize];
    }
    x
}

/// Near-identical groups: components of 2+ members that are not all one identical group.
pub fn similar_groups(entries: &[Entry], threshold: u32) -> Vec<Group> {
    let all_wide = entries.iter().all(|e| e.wide);
    let (bits, threshold) = if all_wide { (128, threshold * 2) } else { (64, threshold) };
    let codes: Vec<u128> =
        entries.iter().map(|e| if bits == 64 { e.data & (u128::MAX << 64) } else { e.data }).collect();
    let mut parent: Vec<u32> = (0..entries.len() as u32).collect();
    for (i, j) in crate::hamming::near_pairs(&codes, bits, threshold) {
        let (a, b) = (find(&mut parent, i), find(&mut parent, j));
        if a != b {
            parent[a.max(b) as usize] = a.min(b);
        }
    }
    let mut components: HashMap<u32, Vec<usize>> = HashMap::new();
    for i in 0..entries.len() {
        let root = find(&mut parent, i as u32);
        components.entry(root).or_default().push(i);
    }
    let same_content =
        |m: &[usize]| m.iter().all(|&i| content_key(&entries[i]) == content_key(&entries[m[0]]));
    let mut groups: Vec<Group> = components
        .into_values()
        .filter(|m| m.len() > 1 && !same_content(m))
        .map(|members| Group { identical: false, members })
        .collect();
    groups.sort_by_key(|g| g.members[0]);
    groups
}

/// Data-Code distance between two entries, at the width used for grouping.
fn distance(a: &Entry, b: &Entry) -> u32 {
    if a.wide && b.wide {
        (a.data ^ b.data).count_ones()
    } else {
        (((a.data ^ b.data) >> 64) as u64).count_ones()
    }
}

/// Runs `similar`; returns the exit status.
pub fn run(args: &SimilarArgs) -> Result<Status, UsageError> {
    let reader: Box<dyn io::Read> = match &args.input {
        None => Box::new(io::stdin()),
        Some(p) if p.as_bytes() == b"-" => Box::new(io::stdin()),
        Some(p) => Box::new(File::open(p).map_err(|e| UsageError(format!("{}: {e}", p.to_string_lossy())))?),
    };
    let (entries, bad) = read_entries(reader).map_err(|e| UsageError(format!("reading input: {e}")))?;
    for (line, why) in &bad {
        eprintln!("omero-iscc: line {line}: {why} (skipped)");
    }
    let mut groups = identical_groups(&entries);
    if !args.exact {
        groups.extend(similar_groups(&entries, args.threshold));
    }
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = write_groups(&mut out, &entries, &groups, args.json).and_then(|_| out.flush());
    if let Err(e) = written {
        if e.kind() != io::ErrorKind::BrokenPipe {
            return Err(UsageError(format!("cannot write output: {e}")));
        }
    }
    let identical = groups.iter().filter(|g| g.identical).count();
    eprintln!(
        "omero-iscc: {} code(s): {identical} identical group(s), {} similar group(s){}",
        entries.len(),
        groups.len() - identical,
        if bad.is_empty() { String::new() } else { format!(", {} malformed line(s) skipped", bad.len()) }
    );
    Ok(if bad.is_empty() { Status::Success } else { Status::Failure })
}

/// A line that could not be used: its number and why.
pub type Malformed = (usize, String);

/// Reads all entries, parsing lines in parallel, block by block; returns the malformed lines
/// (line number, reason) too.
pub fn read_entries(mut reader: impl io::Read) -> io::Result<(Vec<Entry>, Vec<Malformed>)> {
    const BLOCK: usize = 32 << 20;
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    let mut first_line = 1;
    let mut buf: Vec<u8> = Vec::with_capacity(BLOCK);
    let mut eof = false;
    while !eof {
        let start = buf.len();
        buf.resize(start + BLOCK, 0);
        let mut filled = start;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        // Whole lines only; the rest waits for the next block (unless the input ended).
        let cut = if eof { buf.len() } else { buf.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) };
        let lines: Vec<&[u8]> = buf[..cut].split(|&b| b == b'\n').collect();
        let lines = if buf[..cut].ends_with(b"\n") { &lines[..lines.len() - 1] } else { &lines[..] };
        let parsed: Vec<Result<Option<Entry>, String>> = lines.par_iter().map(|l| parse_line(l)).collect();
        for (k, p) in parsed.into_iter().enumerate() {
            match p {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => {}
                Err(why) => bad.push((first_line + k, why)),
            }
        }
        first_line += lines.len();
        buf.drain(..cut);
    }
    Ok((entries, bad))
}

fn write_groups(out: &mut dyn Write, entries: &[Entry], groups: &[Group], json: bool) -> io::Result<()> {
    for (n, group) in groups.iter().enumerate() {
        let first = &entries[group.members[0]];
        if json {
            let mut s = String::from(if group.identical {
                "{\"kind\":\"identical\",\"members\":["
            } else {
                "{\"kind\":\"similar\",\"members\":["
            });
            for (k, &i) in group.members.iter().enumerate() {
                let e = &entries[i];
                if k > 0 {
                    s.push(',');
                }
                s.push_str(if e.by_id { "{\"id\":" } else { "{\"path\":" });
                json_path(&e.name, &mut s);
                s.push_str(&format!(",\"iscc\":\"{}\",\"distance\":{}}}", e.iscc(), distance(first, e)));
            }
            s.push_str("]}\n");
            out.write_all(s.as_bytes())?;
        } else {
            if n > 0 {
                out.write_all(b"\n")?;
            }
            let kind = if group.identical { "identical" } else { "similar" };
            writeln!(out, "# {kind}: {} members", group.members.len())?;
            for (k, &i) in group.members.iter().enumerate() {
                let e = &entries[i];
                if k > 0 {
                    write!(out, "  {}{:02} ", if group.identical { '=' } else { '~' }, distance(first, e))?;
                }
                out.write_all(format!("{} *", e.iscc()).as_bytes())?;
                out.write_all(&e.name)?;
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}
