//! The index directory: its manifest, its segments, its writer's lock, and the updates.
//!
//! `MANIFEST` (JSON) names the live segments, oldest first. An update writes a new segment
//! (its rows and its tombstones, or the merge of the newest segments with them) and syncs it,
//! writes `MANIFEST.tmp` and syncs it, renames it over `MANIFEST` and syncs the directory:
//! until the rename, readers and a crash see the previous index whole; after it, the new
//! one. Files the manifest does not name (a crashed update's) are removed by the next writer.
//!
//! A row of segment `s` is live unless a segment newer than `s` has its id among its
//! tombstones. Ids are unique among live rows: adding an id that is live tombstones the old
//! row in the same update.
//!
//! One writer at a time holds an exclusive `flock` on `LOCK`; a second is refused at once.
//! Readers take no lock: segments never change once named, and a reader that finds a segment
//! gone (merged away since it read the manifest) reads the manifest again.

use super::build;
use super::entry::{flag, Entry, Probe, Relation};
use super::search::{self, Hit};
use super::segment::{Sec, Segment};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const MANIFEST: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";
const LOCK: &str = "LOCK";
const FORMAT: &str = "omero-iscc-index";
/// An update merges the newest segments with its own rows while they are at most twice its
/// size and the merge rewrites at most this many rows (or 4 × the update); bigger merges
/// wait for `compact`, so that an update costs in proportion to its size.
const MERGE_ROWS: u64 = 1 << 18;
/// Environment variable that makes an update abort at a chosen point, for the crash tests:
/// `segment-written` (new segment synced, manifest untouched), `manifest-written`
/// (`MANIFEST.tmp` synced, not yet renamed) or `manifest-switched` (renamed, the merged
/// segments not yet deleted).
pub const FAULT_ENV: &str = "OMERO_ISCC_INDEX_FAULT";

/// Why an index cannot be read or updated.
#[derive(Debug)]
pub enum IndexError {
    /// No index in the directory.
    Missing(PathBuf),
    /// Another process holds the writer's lock.
    Locked {
        dir: PathBuf,
        holder: String,
    },
    /// A file of the index is not what it should be.
    Damaged {
        path: PathBuf,
        why: String,
    },
    Io {
        path: PathBuf,
        error: io::Error,
    },
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexError::Missing(dir) => write!(f, "no index in {} (`index add` creates one)", dir.display()),
            IndexError::Locked { dir, holder } => write!(
                f,
                "the index in {} is being updated by another process{holder}; one writer at a time",
                dir.display()
            ),
            IndexError::Damaged { path, why } => {
                write!(f, "{}: {why} (rebuild the index with `index rebuild`)", path.display())
            }
            IndexError::Io { path, error } => {
                write!(f, "{}: {}", path.display(), crate::streams::plain(error))
            }
        }
    }
}

impl std::error::Error for IndexError {}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> IndexError + '_ {
    move |error| IndexError::Io { path: path.to_path_buf(), error }
}

/// The manifest's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// Counts the updates.
    pub generation: u64,
    /// Sequence number of the next segment.
    pub next_seq: u64,
    pub segments: Vec<SegmentRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRef {
    pub file: String,
    pub seq: u64,
    pub rows: u64,
    pub tombstones: u64,
    pub bytes: u64,
}

fn segment_name(seq: u64) -> String {
    format!("seg-{seq:016x}.isx")
}

/// A readable index: the segments a manifest names, mapped.
pub struct Index {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub segments: Vec<Segment>,
    /// Per tombstoned id, the newest segment sequence that removed it.
    tombs: HashMap<u64, u64>,
}

/// One match of a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub entry: Entry,
    pub relation: Relation,
}

impl Index {
    /// Opens the index in `dir` for reading.
    pub fn open(dir: &Path) -> Result<Index, IndexError> {
        // A segment can vanish between reading the manifest and mapping it when a writer
        // merges it away; the manifest read again names its replacement.
        let mut attempts = 0;
        loop {
            match Index::try_open(dir) {
                Err(IndexError::Io { error, .. })
                    if error.kind() == io::ErrorKind::NotFound && attempts < 20 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5 * attempts));
                }
                other => return other,
            }
        }
    }

    fn try_open(dir: &Path) -> Result<Index, IndexError> {
        let path = dir.join(MANIFEST);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return if dir.join(LOCK).exists() {
                    Ok(Index::empty(dir))
                } else {
                    Err(IndexError::Missing(dir.to_path_buf()))
                }
            }
            Err(e) => return Err(io_at(&path)(e)),
        };
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| IndexError::Damaged { path: path.clone(), why: format!("not a manifest: {e}") })?;
        if manifest.format != FORMAT || manifest.version != 1 {
            return Err(IndexError::Damaged { path, why: "not a manifest of this format".into() });
        }
        let mut segments = Vec::with_capacity(manifest.segments.len());
        for r in &manifest.segments {
            let seg_path = dir.join(&r.file);
            let seg = Segment::open(&seg_path)
                .map_err(|e| IndexError::Io { path: seg_path.clone(), error: e })?
                .map_err(|why| IndexError::Damaged { path: seg_path.clone(), why })?;
            let h = &seg.header;
            if h.seq != r.seq || h.rows != r.rows || h.tombstones != r.tombstones || seg.bytes() != r.bytes {
                return Err(IndexError::Damaged {
                    path: seg_path,
                    why: "does not match the manifest".into(),
                });
            }
            segments.push(seg);
        }
        let mut tombs = HashMap::new();
        for seg in &segments {
            for &id in seg.col::<u64>(Sec::Tombstones as usize) {
                tombs.insert(id, seg.header.seq);
            }
        }
        Ok(Index { dir: dir.to_path_buf(), manifest, segments, tombs })
    }

    fn empty(dir: &Path) -> Index {
        let manifest =
            Manifest { format: FORMAT.into(), version: 1, generation: 0, next_seq: 1, segments: Vec::new() };
        Index { dir: dir.to_path_buf(), manifest, segments: Vec::new(), tombs: HashMap::new() }
    }

    /// Whether row `row` of segment `s` is live.
    fn live(&self, s: usize, id: u64) -> bool {
        match self.tombs.get(&id) {
            Some(&t) => t <= self.segments[s].header.seq,
            None => true,
        }
    }

    /// The entry of a row.
    pub fn entry(&self, s: usize, row: usize) -> Entry {
        let seg = &self.segments[s];
        let acl = seg.col::<u32>(Sec::Acl as usize)[row] as usize;
        let owners = seg.col::<u64>(Sec::Owners as usize);
        Entry {
            id: seg.col::<u64>(Sec::Ids as usize)[row],
            group: owners[2 * acl],
            owner: owners[2 * acl + 1],
            flags: seg.col::<u8>(Sec::Flags as usize)[row],
            hi: seg.col::<u64>(Sec::Hi as usize)[row],
            lo: seg.col::<u64>(Sec::Lo as usize).get(row).copied().unwrap_or(0),
            ihi: seg.col::<u64>(Sec::Ihi as usize)[row],
            ilo: seg.col::<u64>(Sec::Ilo as usize).get(row).copied().unwrap_or(0),
        }
    }

    /// The live code with this id, if any: (segment, row).
    pub fn find_id(&self, id: u64) -> Option<(usize, usize)> {
        for (s, seg) in self.segments.iter().enumerate().rev() {
            if let Some(r) = row_of(seg, id) {
                if self.live(s, id) {
                    return Some((s, r));
                }
            }
        }
        None
    }

    /// Every live code matching `probe`: identical instance or within `threshold` bits (see
    /// `entry` for the rule); identical instances first, then by distance and id.
    pub fn query(&self, probe: &Probe, threshold: u32) -> Vec<Found> {
        let mut found = Vec::new();
        let mut hits: Vec<Hit> = Vec::new();
        for (s, seg) in self.segments.iter().enumerate() {
            hits.clear();
            search::search(seg, probe, threshold, &mut hits);
            let ids = seg.col::<u64>(Sec::Ids as usize);
            for h in &hits {
                let id = ids[h.row as usize];
                if Some(id) != probe.exclude && self.live(s, id) {
                    found.push(Found { entry: self.entry(s, h.row as usize), relation: h.relation });
                }
            }
        }
        found.sort_unstable_by_key(|f| (!f.relation.instance, f.relation.distance, f.entry.id));
        found
    }

    /// Every live code, segment by segment.
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.segments.iter().enumerate().flat_map(move |(s, seg)| {
            let ids = seg.col::<u64>(Sec::Ids as usize);
            (0..seg.rows()).filter(move |&r| self.live(s, ids[r])).map(move |r| self.entry(s, r))
        })
    }

    /// Counts for `index stats`.
    pub fn stats(&self) -> Stats {
        let mut st = Stats { generation: self.manifest.generation, ..Stats::default() };
        for (s, seg) in self.segments.iter().enumerate() {
            st.segments += 1;
            st.bytes += seg.bytes();
            st.tombstones += seg.header.tombstones;
            let ids = seg.col::<u64>(Sec::Ids as usize);
            let flags = seg.col::<u8>(Sec::Flags as usize);
            for r in 0..seg.rows() {
                if !self.live(s, ids[r]) {
                    st.dead += 1;
                    continue;
                }
                st.codes += 1;
                st.max_id = st.max_id.max(ids[r]);
                if flags[r] & flag::WIDE != 0 {
                    st.wide += 1;
                }
                if flags[r] & flag::PIXELS != 0 {
                    st.pixels += 1;
                }
            }
        }
        st
    }
}

/// What `index stats` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub generation: u64,
    pub segments: u64,
    pub codes: u64,
    /// Rows removed or replaced, still on disk until a merge drops them.
    pub dead: u64,
    pub tombstones: u64,
    pub wide: u64,
    pub pixels: u64,
    pub max_id: u64,
    pub bytes: u64,
}

/// What an update did with one of its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Added,
    /// The id was live: its old code is replaced.
    Replaced,
    Removed,
    /// A removal of an id that is not in the index.
    Absent,
}

/// The writer: holds the lock for as long as it lives.
pub struct Writer {
    index: Index,
    _lock: File,
}

impl Writer {
    /// Locks the index in `dir` for writing (creating it if `create`), and removes what a
    /// crashed update left.
    pub fn open(dir: &Path, create: bool) -> Result<Writer, IndexError> {
        if create {
            fs::create_dir_all(dir).map_err(io_at(dir))?;
        } else if !dir.join(MANIFEST).exists() && !dir.join(LOCK).exists() {
            return Err(IndexError::Missing(dir.to_path_buf()));
        }
        let lock_path = dir.join(LOCK);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(io_at(&lock_path))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = fs::read_to_string(&lock_path)
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok())
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                return Err(IndexError::Locked { dir: dir.to_path_buf(), holder });
            }
            return Err(IndexError::Io { path: lock_path, error });
        }
        lock.set_len(0).map_err(io_at(&lock_path))?;
        write!(lock, "{}", std::process::id()).map_err(io_at(&lock_path))?;
        let index = Index::open(dir)?;
        let writer = Writer { index, _lock: lock };
        writer.remove_unnamed()?;
        Ok(writer)
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Removes segment files the manifest does not name, and a stale `MANIFEST.tmp`.
    fn remove_unnamed(&self) -> Result<(), IndexError> {
        let dir = &self.index.dir;
        let named: std::collections::HashSet<&str> =
            self.index.manifest.segments.iter().map(|s| s.file.as_str()).collect();
        for item in fs::read_dir(dir).map_err(io_at(dir))? {
            let item = item.map_err(io_at(dir))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            let ours = (name.starts_with("seg-") && name.ends_with(".isx")) || name == MANIFEST_TMP;
            if ours && !named.contains(name.as_ref()) {
                fs::remove_file(item.path()).map_err(io_at(&item.path()))?;
            }
        }
        Ok(())
    }

    /// Adds (or replaces) `adds`, then removes `removes`, in one atomic update; returns what
    /// happened to each add, then to each removal.
    pub fn update(&mut self, adds: Vec<Entry>, removes: &[u64]) -> Result<Vec<Change>, IndexError> {
        let mut changes = Vec::with_capacity(adds.len() + removes.len());
        // Per id touched: whether it is live after the records so far, and whether the index
        // had it (then the update tombstones it).
        let mut live_now: HashMap<u64, bool> = HashMap::with_capacity(adds.len() + removes.len());
        let mut in_index: HashMap<u64, bool> = HashMap::with_capacity(adds.len() + removes.len());
        let mut pending: HashMap<u64, Entry> = HashMap::with_capacity(adds.len());
        let index = &self.index;
        let mut had = |id: u64| *in_index.entry(id).or_insert_with(|| index.find_id(id).is_some());
        for e in adds {
            let was = match live_now.get(&e.id) {
                Some(&live) => live,
                None => had(e.id),
            };
            changes.push(if was { Change::Replaced } else { Change::Added });
            live_now.insert(e.id, true);
            pending.insert(e.id, e);
        }
        for &id in removes {
            let was = match live_now.get(&id) {
                Some(&live) => live,
                None => had(id),
            };
            changes.push(if was { Change::Removed } else { Change::Absent });
            live_now.insert(id, false);
            pending.remove(&id);
        }
        let mut tombstones: Vec<u64> = in_index.iter().filter(|&(_, &had)| had).map(|(&id, _)| id).collect();
        tombstones.sort_unstable();
        let rows: Vec<Entry> = pending.into_values().collect();
        if rows.is_empty() && tombstones.is_empty() {
            return Ok(changes);
        }
        let merge_from = self.merge_start(rows.len() as u64 + tombstones.len() as u64);
        self.commit(rows, tombstones, merge_from)?;
        Ok(changes)
    }

    /// Where the merge of an update of `size` rows and tombstones starts: the newest
    /// segments while each is at most twice what is merged so far, within the merge limit.
    fn merge_start(&self, size: u64) -> usize {
        let refs = &self.index.manifest.segments;
        let cap = MERGE_ROWS.max(4 * size);
        let mut start = refs.len();
        let mut total = size;
        while start > 0 {
            let s = &refs[start - 1];
            let weight = s.rows + s.tombstones;
            if weight > 2 * total.max(1) || total + weight > cap {
                break;
            }
            total += weight;
            start -= 1;
        }
        start
    }

    /// Merges every segment into one, dropping removed rows and all tombstones.
    pub fn compact(&mut self) -> Result<(), IndexError> {
        if self.index.segments.len() <= 1 && self.index.manifest.segments.iter().all(|s| s.tombstones == 0) {
            return Ok(());
        }
        self.commit(Vec::new(), Vec::new(), 0)
    }

    /// Replaces the whole index with `entries` in one update (ids repeated keep the last).
    pub fn rebuild(&mut self, entries: Vec<Entry>) -> Result<(), IndexError> {
        let mut last: HashMap<u64, Entry> = HashMap::with_capacity(entries.len());
        for e in entries {
            last.insert(e.id, e);
        }
        let rows: Vec<Entry> = last.into_values().collect();
        let n = self.index.segments.len();
        self.commit_segments(rows, Vec::new(), n, true)
    }

    /// Writes one segment holding `rows`, `tombstones`, and the live rows of the segments
    /// from `merge_from` on, and switches the manifest to it.
    fn commit(
        &mut self,
        rows: Vec<Entry>,
        tombstones: Vec<u64>,
        merge_from: usize,
    ) -> Result<(), IndexError> {
        self.commit_segments(rows, tombstones, merge_from, false)
    }

    fn commit_segments(
        &mut self,
        mut rows: Vec<Entry>,
        mut tombstones: Vec<u64>,
        merge_from: usize,
        replace_all: bool,
    ) -> Result<(), IndexError> {
        let dir = self.index.dir.clone();
        let old = &self.index;
        let keep = if replace_all { 0 } else { merge_from };
        if !replace_all {
            // The merged segments' live rows, less those this update removes or replaces.
            let removed: std::collections::HashSet<u64> = tombstones.iter().copied().collect();
            for s in merge_from..old.segments.len() {
                let ids = old.segments[s].col::<u64>(Sec::Ids as usize);
                for (r, &id) in ids.iter().enumerate() {
                    if old.live(s, id) && !removed.contains(&id) {
                        rows.push(old.entry(s, r));
                    }
                }
                tombstones.extend_from_slice(old.segments[s].col::<u64>(Sec::Tombstones as usize));
            }
        }
        // A tombstone is kept while a kept (older) segment has a row of its id, live or not:
        // dropping one whose row another tombstone also removes would be safe, but not
        // needed.
        let kept = &old.segments[..keep];
        tombstones.retain(|&id| kept.iter().any(|seg| has_id(seg, id)));
        let mut manifest = old.manifest.clone();
        let seq = manifest.next_seq;
        let file = segment_name(seq);
        let path = dir.join(&file);
        let tables = true;
        build::write(&path, seq, &mut rows, &tombstones, tables).map_err(io_at(&path))?;
        fault("segment-written");
        let seg = Segment::open(&path)
            .map_err(io_at(&path))?
            .map_err(|why| IndexError::Damaged { path: path.clone(), why })?;
        let retired: Vec<String> = manifest.segments.drain(keep..).map(|s| s.file).collect();
        manifest.segments.push(SegmentRef {
            file,
            seq,
            rows: seg.header.rows,
            tombstones: seg.header.tombstones,
            bytes: seg.bytes(),
        });
        manifest.next_seq = seq + 1;
        manifest.generation += 1;
        write_manifest(&dir, &manifest)?;
        fault("manifest-switched");
        for name in retired {
            let p = dir.join(&name);
            fs::remove_file(&p).map_err(io_at(&p))?;
        }
        self.index = Index::open(&dir)?;
        Ok(())
    }
}

/// The row of this id in a segment, live or not.
fn row_of(seg: &Segment, id: u64) -> Option<usize> {
    let ids = seg.col::<u64>(Sec::Ids as usize);
    let by_id = seg.col::<u32>(Sec::ById as usize);
    let k = by_id.partition_point(|&r| ids[r as usize] < id);
    by_id.get(k).filter(|&&r| ids[r as usize] == id).map(|&r| r as usize)
}

fn has_id(seg: &Segment, id: u64) -> bool {
    row_of(seg, id).is_some()
}

/// Aborts the process here if the fault variable names this point (crash tests).
fn fault(point: &str) {
    if std::env::var_os(FAULT_ENV).is_some_and(|v| v == point) {
        std::process::abort();
    }
}

/// Writes the manifest atomically: temporary file, sync, rename, sync of the directory.
fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), IndexError> {
    let tmp = dir.join(MANIFEST_TMP);
    let mut text = serde_json::to_vec_pretty(manifest).expect("a manifest serializes");
    text.push(b'\n');
    let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
    f.write_all(&text).and_then(|_| f.sync_all()).map_err(io_at(&tmp))?;
    drop(f);
    fault("manifest-written");
    let path = dir.join(MANIFEST);
    fs::rename(&tmp, &path).map_err(io_at(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_at(dir))?;
    Ok(())
}
