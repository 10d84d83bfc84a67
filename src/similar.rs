//! The `similar` command: groups of identical and of near-identical codes.
//!
//! Identical: the same datahash (BLAKE3 of the bytes) when records carry one, else the same
//! Instance-Code bits. Near-identical: connected components of the graph that joins two
//! codes whose Data-Codes are at most `threshold` bits apart, found without comparing all
//! pairs: the Data-Code is cut into 16-bit blocks, and two codes within the threshold agree
//! on some block up to `threshold / blocks` bits (pigeonhole), so each code only visits the
//! buckets of its blocks' near values. The pairs found are exactly those a brute-force
//! comparison finds; memory is a few dozen bytes per code plus the names.

use crate::cli::SimilarArgs;
use crate::exit::{Status, UsageError};
use crate::record::{json_path, path_bytes, unescape_surrogates};
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;

/// One input code.
#[derive(Clone, Debug)]
pub struct Entry {
    /// `true`: named by an `id`; `false`: by a `path`.
    pub by_id: bool,
    pub name: Vec<u8>,
    pub iscc: String,
    /// Data-Code bits: 64 (narrow) or 128 (wide), left-aligned.
    pub data: u128,
    pub instance: u128,
    pub wide: bool,
    pub datahash: Option<String>,
}

/// A group of the output.
#[derive(Debug, PartialEq, Eq)]
pub struct Group {
    pub identical: bool,
    /// Entry indexes, in input order.
    pub members: Vec<usize>,
}

/// Decodes an ISCC-SUM into its Data-Code and Instance-Code bits.
pub fn decode(iscc: &str) -> Option<(u128, u128, bool)> {
    let body = iscc.strip_prefix("ISCC:")?;
    let raw = iscc_lib::codec::decode_base32(body).ok()?;
    let (_, _, _, _, tail) = iscc_lib::codec::decode_header(&raw).ok()?;
    let wide = crate::codes::is_wide(iscc)?;
    let unit = if wide { 16 } else { 8 };
    if tail.len() != 2 * unit {
        return None;
    }
    let bits = |b: &[u8]| {
        let mut v = [0u8; 16];
        v[..b.len()].copy_from_slice(b);
        u128::from_be_bytes(v)
    };
    Some((bits(&tail[..unit]), bits(&tail[unit..]), wide))
}

#[derive(Deserialize)]
struct JsonRecord<'a> {
    #[serde(default)]
    id: Option<serde_json::Value>,
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
        let (by_id, name) = match (&rec.id, &rec.path) {
            (Some(serde_json::Value::String(s)), _) => (true, s.as_bytes().to_vec()),
            (Some(v), _) if !v.is_null() => (true, v.to_string().into_bytes()),
            (_, Some(p)) => (false, path_bytes(p)),
            _ => return Err("neither \"id\" nor \"path\"".into()),
        };
        let (data, instance, wide) = decode(&iscc).ok_or_else(|| format!("not an ISCC-SUM: {iscc:?}"))?;
        return Ok(Some(Entry { by_id, name, iscc: iscc.into_owned(), data, instance, wide, datahash: rec.datahash.map(|d| d.into_owned()) }));
    }
    let pos = trimmed.windows(2).position(|w| w == b" *").ok_or("not an ISCC line (expected 'ISCC:... *name')")?;
    let code = std::str::from_utf8(&trimmed[..pos]).map_err(|_| "code is not ASCII")?;
    let (data, instance, wide) = decode(code).ok_or_else(|| format!("not an ISCC-SUM: {code:?}"))?;
    Ok(Some(Entry { by_id: false, name: trimmed[pos + 2..].to_vec(), iscc: code.to_string(), data, instance, wide, datahash: None }))
}

/// Identical groups (2+ members with the same content), in order of their first member.
pub fn identical_groups(entries: &[Entry]) -> Vec<Group> {
    let mut by_key: HashMap<(Option<&str>, u128, bool), Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        // A datahash is exact; without one the Instance-Code bits of the same width are.
        let key = match &e.datahash {
            Some(d) => (Some(d.as_str()), 0, false),
            None => (None, e.instance, e.wide),
        };
        by_key.entry(key).or_default().push(i);
    }
    let mut groups: Vec<Group> = by_key
        .into_values()
        .filter(|m| m.len() > 1)
        .map(|members| Group { identical: true, members })
        .collect();
    groups.sort_by_key(|g| g.members[0]);
    groups
}

/// Pairs `(i, j)`, `i < j`, whose `bits`-bit Data-Codes are at most `threshold` apart.
pub fn near_pairs(codes: &[u128], bits: u32, threshold: u32) -> Vec<(u32, u32)> {
    let blocks = (bits / 16) as usize;
    let radius = threshold / blocks as u32;
    let block_of = |code: u128, b: usize| ((code >> (128 - 16 * (b + 1))) & 0xFFFF) as usize;
    let masks: Vec<usize> = (0..1usize << 16).filter(|m| m.count_ones() <= radius).collect();
    // One table per block: entries sorted by the block's value, with bucket offsets.
    let tables: Vec<(Vec<u32>, Vec<u32>)> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let mut counts = vec![0u32; (1 << 16) + 1];
            for &c in codes {
                counts[block_of(c, b) + 1] += 1;
            }
            for k in 1..counts.len() {
                counts[k] += counts[k - 1];
            }
            let mut fill = counts.clone();
            let mut order = vec![0u32; codes.len()];
            for (i, &c) in codes.iter().enumerate() {
                let v = block_of(c, b);
                order[fill[v] as usize] = i as u32;
                fill[v] += 1;
            }
            (counts, order)
        })
        .collect();
    let narrow = bits == 64;
    (0..codes.len())
        .into_par_iter()
        .fold(Vec::new, |mut found, i| {
            let ci = codes[i];
            for (b, (offsets, order)) in tables.iter().enumerate() {
                let v = block_of(ci, b);
                for &m in &masks {
                    let k = v ^ m;
                    for &j in &order[offsets[k] as usize..offsets[k + 1] as usize] {
                        let j = j as usize;
                        if j <= i {
                            continue;
                        }
                        let d = if narrow {
                            (((ci ^ codes[j]) >> 64) as u64).count_ones()
                        } else {
                            (ci ^ codes[j]).count_ones()
                        };
                        if d <= threshold {
                            found.push((i as u32, j as u32));
                        }
                    }
                }
            }
            found
        })
        .reduce(Vec::new, |mut a, mut b| {
            a.append(&mut b);
            a
        })
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
    let codes: Vec<u128> = entries.iter().map(|e| if bits == 64 { e.data & (u128::MAX << 64) } else { e.data }).collect();
    let mut parent: Vec<u32> = (0..entries.len() as u32).collect();
    for (i, j) in near_pairs(&codes, bits, threshold) {
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
    let same_content = |m: &[usize]| {
        let key = |e: &Entry| (e.datahash.clone(), if e.datahash.is_some() { 0 } else { e.instance });
        m.iter().all(|&i| key(&entries[i]) == key(&entries[m[0]]))
    };
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
    let reader: Box<dyn BufRead> = match &args.input {
        None => Box::new(BufReader::new(io::stdin())),
        Some(p) if p.as_bytes() == b"-" => Box::new(BufReader::new(io::stdin())),
        Some(p) => Box::new(BufReader::new(
            File::open(p).map_err(|e| UsageError(format!("{}: {e}", p.to_string_lossy())))?,
        )),
    };
    let (entries, bad) = read_entries(reader).map_err(|e| UsageError(format!("reading input: {e}")))?;
    for (line, why) in &bad {
        eprintln!("omero-iscc: line {line}: {why} (skipped)");
    }
    let mut groups = identical_groups(&entries);
    groups.extend(similar_groups(&entries, args.threshold));
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

/// Reads all entries, parsing lines in parallel blocks; returns the malformed lines too.
pub fn read_entries(mut reader: impl BufRead) -> io::Result<(Vec<Entry>, Vec<(usize, String)>)> {
    let mut entries = Vec::new();
    let mut bad = Vec::new();
    let mut first_line = 1;
    loop {
        let mut block: Vec<Vec<u8>> = Vec::with_capacity(65536);
        for _ in 0..65536 {
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            block.push(line);
        }
        if block.is_empty() {
            return Ok((entries, bad));
        }
        let parsed: Vec<Result<Option<Entry>, String>> = block.par_iter().map(|l| parse_line(l)).collect();
        for (k, p) in parsed.into_iter().enumerate() {
            match p {
                Ok(Some(e)) => entries.push(e),
                Ok(None) => {}
                Err(why) => bad.push((first_line + k, why)),
            }
        }
        first_line += block.len();
    }
}

fn write_groups(out: &mut dyn Write, entries: &[Entry], groups: &[Group], json: bool) -> io::Result<()> {
    for (n, group) in groups.iter().enumerate() {
        let first = &entries[group.members[0]];
        if json {
            let mut s = String::from(if group.identical { "{\"kind\":\"identical\",\"members\":[" } else { "{\"kind\":\"similar\",\"members\":[" });
            for (k, &i) in group.members.iter().enumerate() {
                let e = &entries[i];
                if k > 0 {
                    s.push(',');
                }
                s.push_str(if e.by_id { "{\"id\":" } else { "{\"path\":" });
                json_path(&e.name, &mut s);
                s.push_str(&format!(",\"iscc\":\"{}\",\"distance\":{}}}", e.iscc, distance(first, e)));
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
                out.write_all(format!("{} *", e.iscc).as_bytes())?;
                out.write_all(&e.name)?;
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}
