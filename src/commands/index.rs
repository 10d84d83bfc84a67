//! The `index` command: a persistent index of codes kept in a directory (see docs/index.md).
//!
//! `add`, `remove` and `rebuild` read JSON Lines and apply them as one atomic update, then
//! write one line per input record (its status, or its error); `query` answers each code line
//! as it arrives (lines that arrive together are answered in parallel); `stats`, `list`,
//! `compact` and `verify` act on the whole index.

use crate::cli::{IndexArgs, IndexCommand, IndexDirArgs, IndexQueryArgs, IndexUpdateArgs};
use crate::engine::index::entry::{self, Entry, Probe, Space};
use crate::engine::index::search;
use crate::engine::index::store::{Change, Found, Index, IndexError, Writer};
use crate::error::{ErrorKind, Failure};
use crate::exit::{Error, Status};
use crate::streams::{self, Inputs, Output};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::mpsc;

/// A code to add: `index add` and `index rebuild` read these, `index list` writes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeLine {
    /// The key of the code (for OMERO: the annotation's id); adding an id again replaces it.
    pub id: u64,
    /// An ISCC-SUM, narrow (`ISCC:KUA…`) or wide (`ISCC:K4A…`).
    pub iscc: String,
    /// The BLAKE3 datahash (`1e20…`), if known: it must agree with the Instance-Code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datahash: Option<String>,
    /// Group and owner ids (OMERO's), given back with each match.
    pub group: u64,
    pub owner: u64,
    /// `files` (default) or `pixels`: codes of one space match only codes of the same.
    #[serde(default, skip_serializing_if = "is_files")]
    pub code: Space,
}

fn is_files(space: &Space) -> bool {
    *space == Space::Files
}

/// A code to remove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveLine {
    pub id: u64,
}

/// A code to look up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryLine {
    /// The code's own id, if it is indexed: left out of its matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub iscc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datahash: Option<String>,
    #[serde(default, skip_serializing_if = "is_files")]
    pub code: Space,
    /// Only matches this reader may see; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible: Option<Visible>,
}

/// Which matches a reader may see: every code of `groups`, and the codes of `owner` in
/// `own_groups` (for OMERO: the groups whose data the reader may read, and the private groups
/// where the reader sees only their own).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Visible {
    #[serde(default)]
    pub groups: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<u64>,
    #[serde(default)]
    pub own_groups: Vec<u64>,
}

impl Visible {
    fn admits(&self, e: &Entry) -> bool {
        self.groups.contains(&e.group) || (self.owner == Some(e.owner) && self.own_groups.contains(&e.group))
    }
}

/// What `add`, `remove` and `rebuild` write per input record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateLine {
    /// The input line, for records that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UpdateStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStatus {
    Added,
    /// The id was indexed: its code is replaced.
    Replaced,
    Removed,
    /// Nothing to remove: the id is not indexed.
    Absent,
}

/// The answer to one query line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerLine {
    pub line: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Identical instances first, then by distance, then by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<Vec<MatchLine>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchLine {
    pub id: u64,
    pub group: u64,
    pub owner: u64,
    #[serde(default, skip_serializing_if = "is_files")]
    pub code: Space,
    pub iscc: String,
    #[serde(rename = "match")]
    pub kind: MatchKind,
    /// Data-Code Hamming distance, over `bits` bits.
    pub distance: u32,
    /// 128 when both codes are wide, else 64.
    pub bits: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// The same Instance-Code (or datahash): the same bytes.
    Identical,
    /// Other bytes with the same Data-Code.
    SameData,
    /// Data-Codes within the threshold.
    Similar,
}

/// What `index stats` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsLine {
    pub codes: u64,
    pub wide: u64,
    pub pixels: u64,
    /// The largest id indexed (0 when empty).
    pub max_id: u64,
    pub segments: u64,
    /// Removed or replaced codes still on disk, and the tombstones that remove them, until
    /// `compact`.
    pub dead: u64,
    pub tombstones: u64,
    pub bytes: u64,
    pub bytes_per_code: f64,
    pub generation: u64,
}

/// What `index verify` writes per segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyLine {
    pub file: String,
    pub rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

/// Runs `index`; returns the exit status.
pub fn run(args: &IndexArgs) -> Result<Status, Error> {
    match &args.command {
        IndexCommand::Add(a) => update(a, Mode::Add),
        IndexCommand::Remove(a) => update(a, Mode::Remove),
        IndexCommand::Rebuild(a) => update(a, Mode::Rebuild),
        IndexCommand::Query(a) => query(a),
        IndexCommand::Stats(a) => stats(a),
        IndexCommand::List(a) => list(a),
        IndexCommand::Compact(a) => {
            writer(&a.dir, false)?.compact().map_err(fatal)?;
            Ok(Status::Success)
        }
        IndexCommand::Verify(a) => verify(a),
    }
}

fn fatal(e: IndexError) -> Error {
    Error::Usage(e.to_string())
}

fn writer(dir: &Path, create: bool) -> Result<Writer, Error> {
    Writer::open(dir, create).map_err(fatal)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Add,
    Remove,
    Rebuild,
}

/// A parsed input line: what it asks for, or why it cannot be used.
type Parsed<T> = (usize, Result<T, (Option<u64>, Failure)>);

fn invalid(id: Option<u64>, message: String) -> (Option<u64>, Failure) {
    (id, Failure::new(ErrorKind::InvalidInput, message))
}

/// An entry from an add record.
pub fn entry_of(line: &CodeLine) -> Result<Entry, String> {
    let p = entry::parse_code(&line.iscc, line.datahash.as_deref(), line.code)?;
    Ok(Entry {
        id: line.id,
        group: line.group,
        owner: line.owner,
        flags: p.flags,
        hi: p.hi,
        lo: p.lo,
        ihi: p.ihi,
        ilo: p.ilo,
    })
}

fn parse_add(text: &[u8]) -> Result<Entry, (Option<u64>, Failure)> {
    let line: CodeLine = serde_json::from_slice(text)
        .map_err(|e| invalid(loose_id(text), format!("not a code record: {e}")))?;
    entry_of(&line).map_err(|why| invalid(Some(line.id), why))
}

fn parse_remove(text: &[u8]) -> Result<u64, (Option<u64>, Failure)> {
    let line: RemoveLine = serde_json::from_slice(text)
        .map_err(|e| invalid(loose_id(text), format!("not a removal record: {e}")))?;
    Ok(line.id)
}

/// The id of a line that is not a valid record, if it has one.
fn loose_id(text: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(text).ok()?.get("id")?.as_u64()
}

/// Reads every non-blank line of the input and parses them in parallel, block by block.
fn read_all<T: Send>(
    input: Option<&OsStr>,
    parse: impl Fn(&[u8]) -> T + Sync,
) -> Result<Vec<(usize, T)>, Error> {
    let name = input.unwrap_or(OsStr::new("-"));
    let mut reader = Inputs::default().open(name, "FILE")?;
    let mut out = Vec::new();
    let mut number = 0usize;
    loop {
        let mut block: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        while bytes < (32 << 20) {
            let mut line = Vec::new();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::Usage(format!("reading input: {}", streams::plain(&e))))?;
            if n == 0 {
                break;
            }
            number += 1;
            bytes += n;
            if !line.trim_ascii().is_empty() {
                block.push((number, line));
            }
        }
        if block.is_empty() {
            return Ok(out);
        }
        out.par_extend(block.into_par_iter().map(|(k, line)| (k, parse(line.trim_ascii()))));
    }
}

fn update(args: &IndexUpdateArgs, mode: Mode) -> Result<Status, Error> {
    // The lock is taken before reading the input, so that a second writer is refused at once.
    let mut w = writer(&args.dir, mode != Mode::Remove)?;
    let mut failed = false;
    // Per valid input record its id, per invalid one why; then what the update did with
    // each valid one, in the same order.
    let lines: Vec<Parsed<u64>>;
    let changes = if mode == Mode::Remove {
        lines = read_all(args.input.as_deref(), parse_remove)?;
        let ids: Vec<u64> = lines.iter().filter_map(|(_, r)| r.as_ref().ok().copied()).collect();
        w.update(Vec::new(), &ids).map_err(fatal)?
    } else {
        let parsed: Vec<Parsed<Entry>> = read_all(args.input.as_deref(), parse_add)?;
        let entries: Vec<Entry> = parsed.iter().filter_map(|(_, r)| r.as_ref().ok().copied()).collect();
        lines = parsed.into_iter().map(|(n, r)| (n, r.map(|e| e.id))).collect();
        if mode == Mode::Rebuild {
            let n = entries.len();
            w.rebuild(entries).map_err(fatal)?;
            vec![Change::Added; n]
        } else {
            w.update(entries, &[]).map_err(fatal)?
        }
    };
    let mut out = Output::default();
    let mut buf = io::BufWriter::with_capacity(1 << 16, out.writer());
    let mut next = changes.into_iter();
    for (number, result) in lines {
        let record = match result {
            Ok(id) => {
                let status = match next.next().expect("one change per valid record") {
                    Change::Added => UpdateStatus::Added,
                    Change::Replaced => UpdateStatus::Replaced,
                    Change::Removed => UpdateStatus::Removed,
                    Change::Absent => UpdateStatus::Absent,
                };
                UpdateLine { line: None, id: Some(id), status: Some(status), error: None }
            }
            Err((id, failure)) => {
                failed = true;
                UpdateLine { line: Some(number), id, status: None, error: Some(failure) }
            }
        };
        streams::written(serde_json::to_writer(&mut buf, &record).map_err(io::Error::from))?;
        streams::written(buf.write_all(b"\n"))?;
    }
    streams::written(buf.flush())?;
    drop(buf);
    out.flush()?;
    Ok(Status::from_failed(failed))
}

/// Lines answered together at most: enough to use every core on a batch, few enough that
/// answers keep flowing.
const BATCH: usize = 4096;

fn query(args: &IndexQueryArgs) -> Result<Status, Error> {
    let index = Index::open(&args.dir).map_err(fatal)?;
    let name = args.input.clone().unwrap_or_else(|| "-".into());
    let mut reader = Inputs::default().open(&name, "FILE")?;
    // A reader thread hands lines over as they arrive; the answers to all the lines that are
    // waiting are computed in parallel and written in order, so one query at a time (a
    // program asking as it goes) is answered at once and a file of queries uses every core.
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(2 * BATCH);
    std::thread::spawn(move || loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                if tx.send(Ok(line)).is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        }
    });
    let mut out = Output::default();
    let mut number = 0usize;
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        let mut lines = Vec::with_capacity(batch.len());
        for line in batch {
            let line = line.map_err(|e| Error::Usage(format!("reading input: {}", streams::plain(&e))))?;
            number += 1;
            if !line.trim_ascii().is_empty() {
                lines.push((number, line));
            }
        }
        let answers: Vec<(Vec<u8>, bool)> = lines
            .par_iter()
            .map(|(n, line)| {
                let answer = answer(&index, *n, line.trim_ascii(), args.threshold);
                let mut bytes = serde_json::to_vec(&answer).expect("answers serialize");
                bytes.push(b'\n');
                (bytes, answer.error.is_some())
            })
            .collect();
        failed |= answers.iter().any(|(_, f)| *f);
        let bytes: Vec<u8> = answers.into_iter().flat_map(|(b, _)| b).collect();
        out.record(&bytes)?;
    }
    Ok(Status::from_failed(failed))
}

/// The answer to one query line.
pub fn answer(index: &Index, number: usize, text: &[u8], threshold: u32) -> AnswerLine {
    let fail = |id, message| AnswerLine {
        line: number,
        id,
        matches: None,
        error: Some(Failure::new(ErrorKind::InvalidInput, message)),
    };
    let q: QueryLine = match serde_json::from_slice(text) {
        Ok(q) => q,
        Err(e) => return fail(loose_id(text), format!("not a query record: {e}")),
    };
    let probe: Probe = match entry::parse_code(&q.iscc, q.datahash.as_deref(), q.code) {
        Ok(p) => Probe { exclude: q.id, ..p },
        Err(why) => return fail(q.id, why),
    };
    let found = index.query(&probe, threshold);
    let matches = found
        .iter()
        .filter(|f| match &q.visible {
            Some(v) => v.admits(&f.entry),
            None => true,
        })
        .map(match_line)
        .collect();
    AnswerLine { line: number, id: q.id, matches: Some(matches), error: None }
}

fn match_line(f: &Found) -> MatchLine {
    let e = &f.entry;
    let kind = if f.relation.instance {
        MatchKind::Identical
    } else if f.relation.distance == 0 {
        MatchKind::SameData
    } else {
        MatchKind::Similar
    };
    MatchLine {
        id: e.id,
        group: e.group,
        owner: e.owner,
        code: e.space(),
        iscc: e.iscc(),
        kind,
        distance: f.relation.distance,
        bits: f.relation.bits,
    }
}

fn stats(args: &IndexDirArgs) -> Result<Status, Error> {
    let index = Index::open(&args.dir).map_err(fatal)?;
    let s = index.stats();
    let line = StatsLine {
        codes: s.codes,
        wide: s.wide,
        pixels: s.pixels,
        max_id: s.max_id,
        segments: s.segments,
        dead: s.dead,
        tombstones: s.tombstones,
        bytes: s.bytes,
        bytes_per_code: if s.codes == 0 {
            0.0
        } else {
            (s.bytes as f64 / s.codes as f64 * 10.0).round() / 10.0
        },
        generation: s.generation,
    };
    let mut text = serde_json::to_vec(&line).expect("stats serialize");
    text.push(b'\n');
    Output::default().record(&text)?;
    Ok(Status::Success)
}

fn list(args: &IndexDirArgs) -> Result<Status, Error> {
    let index = Index::open(&args.dir).map_err(fatal)?;
    let mut entries: Vec<Entry> = index.entries().collect();
    entries.par_sort_unstable_by_key(|e| e.id);
    let mut out = Output::default();
    let mut buf = io::BufWriter::with_capacity(1 << 16, out.writer());
    for e in &entries {
        // The index keeps the datahash's first 128 bits only: it is not given back.
        let line = CodeLine {
            id: e.id,
            iscc: e.iscc(),
            datahash: None,
            group: e.group,
            owner: e.owner,
            code: e.space(),
        };
        streams::written(serde_json::to_writer(&mut buf, &line).map_err(io::Error::from))?;
        streams::written(buf.write_all(b"\n"))?;
    }
    streams::written(buf.flush())?;
    drop(buf);
    out.flush()?;
    Ok(Status::Success)
}

fn verify(args: &IndexDirArgs) -> Result<Status, Error> {
    let index = Index::open(&args.dir).map_err(fatal)?;
    let mut out = Output::default();
    let mut failed = false;
    for seg in &index.segments {
        let error = if seg.body_crc() != seg.header.body_crc {
            Some("damaged body (checksum)".to_string())
        } else {
            search::check_tables(seg).err()
        };
        failed |= error.is_some();
        let line = VerifyLine {
            file: seg.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            rows: seg.header.rows,
            error: error.map(|m| Failure::new(ErrorKind::Io, m)),
        };
        let mut text = serde_json::to_vec(&line).expect("lines serialize");
        text.push(b'\n');
        out.record(&text)?;
    }
    Ok(Status::from_failed(failed))
}
