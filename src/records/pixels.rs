//! The records `pixels` writes: one per image, with its pixel code or the error that cost it
//! its code.

use crate::engine::failure::Failure;
use serde::{Deserialize, Serialize};

/// The JSON record `pixels` writes per image: its pixel code (always wide), or the error that
/// cost it its code, with the whole planes read before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelLine {
    /// The id the `image` frame gave (a number or a string); `null` for a fault outside any
    /// image.
    pub image: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iscc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datahash: Option<String>,
    /// Bytes of the canonical stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    pub planes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plane_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<[String; 2]>,
    /// With `--simprints`: each plane's 256-bit Data-Code, as iscc-bio writes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simprints: Option<Vec<SimprintLine>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

/// One plane's simprint: iscc-bio's `{"simprint", "offset", "size"}` (offset: the plane's
/// index in walk order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimprintLine {
    pub simprint: String,
    pub offset: u64,
    pub size: u64,
}
