//! omero-iscc: ISCC-SUM content identifiers (ISO 24138) for the files of an OMERO server.
//!
//! The crate has two halves:
//! - [`engine`]: the hashing itself. Chunking and MinHash of the Data-Code, one-pass hashing
//!   of files and streams with BLAKE3 and OMERO's checksums, iscc-sum-compatible directory
//!   walks and `.isccignore` rules, and near pairs by Hamming distance.
//! - [`commands`]: `sum`, `check`, `selftest` and `similar`, over the shared plumbing beside
//!   them: arguments ([`cli`]), jobs from inputs ([`inputs`]), records ([`records`],
//!   [`pathcodec`]), standard streams and the pool ([`streams`]), ordered parallel output
//!   ([`ordered`]), progress ([`progress`]) and exit statuses ([`exit`]).

pub mod streams;

pub mod cli;
pub mod commands;
pub mod engine;
pub mod error;
pub mod exit;
pub mod inputs;
pub mod ordered;
pub mod pathcodec;
pub mod progress;
pub mod records;
