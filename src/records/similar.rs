//! The records `similar --json` writes: one per group of identical or near-identical codes.

use crate::pathcodec::PathText;
use serde::{Deserialize, Serialize};

/// A group as `similar --json` writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilarLine {
    pub kind: SimilarKind,
    pub members: Vec<Member>,
}

/// What holds a group together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimilarKind {
    /// The same content: the same datahash, or the same Instance-Code.
    Identical,
    /// Data-Codes within the threshold of one another (through the group's other members).
    Similar,
}

/// One member of a group: named by the `id` or the `path` of its input record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<PathText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathText>,
    pub iscc: String,
    /// Data-Code bits from the group's first member.
    pub distance: u32,
}
