//! The `similar` command: groups of identical and of near-identical codes.
//!
//! Identical: the same datahash (BLAKE3 of the bytes) when records carry one, else the same
//! Instance-Code bits. Near-identical: connected components of the graph that joins two codes
//! whose Data-Codes are at most `threshold` bits apart (two wide codes: `2 × threshold` over
//! 128 bits; any other two over their first 64 bits: the rule of the code index, pair by
//! pair); the pairs come from `hamming`, exactly those a brute-force comparison finds.
//! Memory: about 170 bytes per code plus the names.

use crate::engine::codes;
use crate::engine::hamming;
use crate::exit::{unusable, RunError, Status};
use crate::pathcodec::PathText;
use crate::plan::{Grouping, SimilarPlan};
use crate::records::similar::{Member, SimilarKind, SimilarLine};
use crate::streams::{self, Inputs, Output};
use rayon::prelude::*;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{self, Write};

/// One input code.
#[derive(Clone, Debug)]
pub struct InputCode {
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

impl InputCode {
    /// The ISCC-SUM as it was given.
    pub fn iscc(&self) -> String {
        codes::DecodedSum { header: self.header, data: self.data, instance: self.instance, wide: self.wide }
            .to_iscc()
    }
}

/// A group of the output.
#[derive(Debug, PartialEq, Eq)]
pub struct CodeGroup {
    pub kind: SimilarKind,
    /// Indexes of the input codes, in input order.
    pub members: Vec<usize>,
}

/// Decodes an ISCC-SUM into its header, Data-Code and Instance-Code bits, and width.
pub fn decode(iscc: &str) -> Option<([u8; 2], u128, u128, bool)> {
    codes::decode_sum(iscc).map(|d| (d.header, d.data, d.instance, d.wide))
}

/// A JSON record of any command (`sum`, `pixels`, a caller's own), read for its code and name
/// only: other fields are ignored.
#[derive(Deserialize)]
struct AnyRecord<'a> {
    #[serde(borrow, default)]
    id: Option<&'a serde_json::value::RawValue>,
    /// `pixels` records name their image so.
    #[serde(borrow, default)]
    image: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    path: Option<PathText>,
    #[serde(borrow, default)]
    iscc: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    datahash: Option<std::borrow::Cow<'a, str>>,
}

/// Parses one input line (JSON record or iscc-sum line); `Ok(None)` for blank lines.
pub fn parse_line(line: &[u8]) -> Result<Option<InputCode>, String> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() || line.starts_with(b"  ISCC:") {
        return Ok(None); // blank, or a `--units` line belonging to the record above
    }
    if trimmed[0] == b'{' {
        let text = std::str::from_utf8(trimmed).map_err(|_| "not UTF-8".to_string())?;
        let rec: AnyRecord = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let iscc = rec.iscc.ok_or("no \"iscc\" (a failed record?)")?;
        let (by_id, name) = match (rec.id.or(rec.image), &rec.path) {
            (Some(raw), _) if raw.get() != "null" => {
                let name = match serde_json::from_str::<PathText>(raw.get()) {
                    Ok(s) => s.0,
                    Err(_) => raw.get().as_bytes().to_vec(),
                };
                (true, name)
            }
            (_, Some(p)) => (false, p.0.clone()),
            _ => return Err("neither \"id\" (or \"image\") nor \"path\"".into()),
        };
        let (header, data, instance, wide) =
            decode(&iscc).ok_or_else(|| format!("not an ISCC-SUM: {iscc:?}"))?;
        let datahash = match rec.datahash {
            Some(d) => {
                Some(codes::parse_datahash(&d).ok_or_else(|| format!("not a BLAKE3 datahash: {d:?}"))?)
            }
            None => None,
        };
        return Ok(Some(InputCode { by_id, wide, name: name.into(), header, data, instance, datahash }));
    }
    let pos =
        trimmed.windows(2).position(|w| w == b" *").ok_or("not an ISCC line (expected 'ISCC:... *name')")?;
    let code = std::str::from_utf8(&trimmed[..pos]).map_err(|_| "code is not ASCII")?;
    let (header, data, instance, wide) = decode(code).ok_or_else(|| format!("not an ISCC-SUM: {code:?}"))?;
    Ok(Some(InputCode {
        by_id: false,
        wide,
        name: trimmed[pos + 2..].into(),
        header,
        data,
        instance,
        datahash: None,
    }))
}

/// Identity classes: entries of the same content share a class number.
///
/// Content is known at one of three precisions: the whole datahash (JSON records), 128
/// Instance-Code bits (wide codes) or 64 (narrow codes); the Instance-Code is the start of the
/// datahash. Entries whose first 64 bits agree are joined at the finest precision both carry,
/// so a file listed as a text line and as a JSON record is one content.
fn identity_classes(entries: &[InputCode]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    order.par_sort_unstable_by_key(|&i| (entries[i as usize].instance >> 64, i));
    let mut class = vec![0u32; entries.len()];
    let mut next = 0u32;
    for run in
        order.chunk_by(|&a, &b| entries[a as usize].instance >> 64 == entries[b as usize].instance >> 64)
    {
        // Within a run: one class per datahash, then per 128-bit code not covered by one;
        // 64-bit codes join the run's first class.
        let mut by_hash: Vec<([u8; 32], u32)> = Vec::new();
        let mut by_wide: Vec<(u128, u32)> = Vec::new();
        let mut new_class = || {
            next += 1;
            next - 1
        };
        for &i in run {
            if let Some(d) = entries[i as usize].datahash {
                let c = match by_hash.iter().find(|(h, _)| *h == d) {
                    Some(&(_, c)) => c,
                    None => {
                        let c = new_class();
                        by_hash.push((d, c));
                        c
                    }
                };
                class[i as usize] = c;
            }
        }
        for &i in run {
            let e = &entries[i as usize];
            if e.datahash.is_none() && e.wide {
                let prefix = |h: &[u8; 32]| u128::from_be_bytes(h[..16].try_into().expect("16 bytes"));
                let c = match by_hash.iter().find(|(h, _)| prefix(h) == e.instance) {
                    Some(&(_, c)) => c,
                    None => match by_wide.iter().find(|(w, _)| *w == e.instance) {
                        Some(&(_, c)) => c,
                        None => {
                            let c = new_class();
                            by_wide.push((e.instance, c));
                            c
                        }
                    },
                };
                class[i as usize] = c;
            }
        }
        let first = by_hash.first().map(|&(_, c)| c).or(by_wide.first().map(|&(_, c)| c));
        let narrow_class = first.unwrap_or_else(&mut new_class);
        for &i in run {
            let e = &entries[i as usize];
            if e.datahash.is_none() && !e.wide {
                class[i as usize] = narrow_class;
            }
        }
    }
    class
}

/// Identical groups (2+ members with the same content), in order of their first member.
pub fn identical_groups(entries: &[InputCode]) -> Vec<CodeGroup> {
    groups_of_classes(&identity_classes(entries))
}

fn groups_of_classes(class: &[u32]) -> Vec<CodeGroup> {
    let mut members: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, &c) in class.iter().enumerate() {
        members.entry(c).or_default().push(i);
    }
    let mut groups: Vec<CodeGroup> = members
        .into_values()
        .filter(|m| m.len() > 1)
        .map(|members| CodeGroup { kind: SimilarKind::Identical, members })
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

/// Pairs of entries that join the same near-identical groups as every matching pair would, by
/// the rule of the code index (docs/index.md): two wide codes match within `2 × threshold`
/// over their 128 bits, any other two within `threshold` over their first 64 bits; pair by
/// pair, so that a code's matches never depend on the other codes of the input.
///
/// Entries whose compared bits are equal always match (distance 0), so each such class is
/// chained to its first member and only one member per class is compared: n copies of one
/// code (a blank file imported 100,000 times) cost n pairs, not n² / 2. Two wide codes are
/// not compared over 64 bits, so the wide members of a 64-bit class are not chained there,
/// and a narrow code near that class is paired with each of them.
fn near_pairs(entries: &[InputCode], threshold: u32) -> Vec<(u32, u32)> {
    let mut pairs = Vec::new();
    if entries.iter().any(|e| !e.wide) {
        let classes = classes_by(entries, |e| Some((e.data & (u128::MAX << 64), e.wide)));
        for class in &classes {
            if !entries[class[0] as usize].wide {
                pairs.extend(class[1..].iter().map(|&m| (class[0], m)));
            }
        }
        let firsts: Vec<u128> =
            classes.iter().map(|c| entries[c[0] as usize].data & (u128::MAX << 64)).collect();
        for (a, b) in hamming::near_pairs(&firsts, 64, threshold) {
            let (a, b) = (&classes[a as usize], &classes[b as usize]);
            match (entries[a[0] as usize].wide, entries[b[0] as usize].wide) {
                (true, true) => {}
                (false, false) => pairs.push((a[0], b[0])),
                (false, true) => pairs.extend(b.iter().map(|&m| (a[0], m))),
                (true, false) => pairs.extend(a.iter().map(|&m| (b[0], m))),
            }
        }
    }
    let wide = classes_by(entries, |e| e.wide.then_some((e.data, true)));
    for class in &wide {
        pairs.extend(class[1..].iter().map(|&m| (class[0], m)));
    }
    if wide.len() > 1 {
        let firsts: Vec<u128> = wide.iter().map(|c| entries[c[0] as usize].data).collect();
        let found = hamming::near_pairs(&firsts, 128, threshold * 2);
        pairs.extend(found.into_iter().map(|(a, b)| (wide[a as usize][0], wide[b as usize][0])));
    }
    pairs
}

/// The entries grouped by `key` (entries without one left out), each class in input order,
/// the classes in the order of their first members.
fn classes_by(entries: &[InputCode], key: impl Fn(&InputCode) -> Option<(u128, bool)>) -> Vec<Vec<u32>> {
    let mut index: HashMap<(u128, bool), usize> = HashMap::new();
    let mut classes: Vec<Vec<u32>> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(k) = key(e) {
            let slot = *index.entry(k).or_insert_with(|| {
                classes.push(Vec::new());
                classes.len() - 1
            });
            classes[slot].push(i as u32);
        }
    }
    classes
}

/// Near-identical groups: components of 2+ members that are not all one identical group.
pub fn similar_groups(entries: &[InputCode], threshold: u32) -> Vec<CodeGroup> {
    let mut parent: Vec<u32> = (0..entries.len() as u32).collect();
    for (i, j) in near_pairs(entries, threshold) {
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
    let class = identity_classes(entries);
    let same_content = |m: &[usize]| m.iter().all(|&i| class[i] == class[m[0]]);
    let mut groups: Vec<CodeGroup> = components
        .into_values()
        .filter(|m| m.len() > 1 && !same_content(m))
        .map(|members| CodeGroup { kind: SimilarKind::Similar, members })
        .collect();
    groups.sort_by_key(|g| g.members[0]);
    groups
}

/// Data-Code distance between two entries, at the width used for grouping.
fn distance(a: &InputCode, b: &InputCode) -> u32 {
    if a.wide && b.wide {
        (a.data ^ b.data).count_ones()
    } else {
        (((a.data ^ b.data) >> 64) as u64).count_ones()
    }
}

/// Runs `similar`; returns the exit status.
pub fn run(plan: &SimilarPlan) -> Result<Status, RunError> {
    let reader = Inputs::default().open(&plan.input, "FILE")?;
    let (entries, bad) = read_entries(reader).map_err(|e| unusable("reading input", &e))?;
    for (line, why) in &bad {
        crate::warn!("line {line}: {why} (skipped)");
    }
    let mut groups = identical_groups(&entries);
    if let Grouping::AlsoSimilar { threshold } = plan.groups {
        groups.extend(similar_groups(&entries, threshold));
    }
    let mut out = Output::default();
    let mut writer = io::BufWriter::new(out.writer());
    streams::written(write_groups(&mut writer, &entries, &groups, plan.json).and_then(|_| writer.flush()))?;
    drop(writer);
    out.flush()?;
    let identical = groups.iter().filter(|g| g.kind == SimilarKind::Identical).count();
    crate::warn!(
        "{} code(s): {identical} identical group(s), {} similar group(s){}",
        entries.len(),
        groups.len() - identical,
        if bad.is_empty() { String::new() } else { format!(", {} malformed line(s) skipped", bad.len()) }
    );
    Ok(Status::from_failed(!bad.is_empty()))
}

/// A line that could not be used: its number and why.
pub type Malformed = (usize, String);

/// Reads all entries, parsing lines in parallel, block by block; returns the malformed lines
/// (line number, reason) too.
pub fn read_entries(mut reader: impl io::Read) -> io::Result<(Vec<InputCode>, Vec<Malformed>)> {
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
        let parsed: Vec<Result<Option<InputCode>, String>> =
            lines.par_iter().map(|l| parse_line(l)).collect();
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

fn group_line(entries: &[InputCode], group: &CodeGroup) -> SimilarLine {
    let first = &entries[group.members[0]];
    let members = group
        .members
        .iter()
        .map(|&i| {
            let e = &entries[i];
            let name = Some(PathText(e.name.to_vec()));
            let (id, path) = if e.by_id { (name, None) } else { (None, name) };
            Member { id, path, iscc: e.iscc(), distance: distance(first, e) }
        })
        .collect();
    SimilarLine { kind: group.kind, members }
}

fn write_groups(
    out: &mut dyn Write,
    entries: &[InputCode],
    groups: &[CodeGroup],
    json: bool,
) -> io::Result<()> {
    for (n, group) in groups.iter().enumerate() {
        let first = &entries[group.members[0]];
        if json {
            serde_json::to_writer(&mut *out, &group_line(entries, group))?;
            out.write_all(b"\n")?;
        } else {
            if n > 0 {
                out.write_all(b"\n")?;
            }
            let (kind, mark) = match group.kind {
                SimilarKind::Identical => ("identical", '='),
                SimilarKind::Similar => ("similar", '~'),
            };
            writeln!(out, "# {kind}: {} members", group.members.len())?;
            for (k, &i) in group.members.iter().enumerate() {
                let e = &entries[i];
                if k > 0 {
                    write!(out, "  {mark}{:02} ", distance(first, e))?;
                }
                out.write_all(format!("{} *", e.iscc()).as_bytes())?;
                out.write_all(&e.name)?;
                out.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}
