//! The records `index` reads and writes: codes to add (also what `list` writes), ids to
//! remove, queries and their answers, and the lines of `stats` and `verify`.

use crate::engine::failure::Failure;
use crate::engine::index::entry::Space;
use serde::{Deserialize, Serialize};

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
