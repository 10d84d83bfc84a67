//! A persistent, memory-mapped index of codes that answers, for a code, every indexed code
//! with the same instance or a Data-Code within a Hamming threshold: exactly the pairs a
//! comparison with every code finds (see docs/index.md).
//!
//! - `entry`: a code as indexed, and the rule that decides a match;
//! - `segment`, `build`: the immutable segment file, read in place and written once;
//! - `search`: one segment's matches, by multi-index hashing over 16-bit blocks or a scan;
//! - `store`: the directory (manifest, segments, lock), queries over all segments, updates.

pub mod build;
pub mod entry;
pub mod search;
pub mod segment;
pub mod store;
