//! omero-iscc: ISCC-SUM content identifiers (ISO 24138) for the files of an OMERO server.
//!
//! The crate is built in layers, each using only those below it (docs/architecture.md draws
//! them; tests/integration/house.rs checks them):
//! - [`cli`]: the command line as clap parses it;
//! - [`plan`]: what each command will do, validated once from its arguments;
//! - [`commands`]: `sum`, `check`, `selftest`, `similar`, `pixels` and `index`, each running
//!   its plan;
//! - the plumbing the commands share: jobs from inputs ([`jobs`]), records ([`records`],
//!   [`pathcodec`]), standard streams and the pool ([`streams`]), ordered parallel output
//!   ([`ordered`]), progress ([`progress`]) and exit statuses ([`exit`]);
//! - [`engine`]: the hashing itself. Chunking and MinHash of the Data-Code, one-pass hashing
//!   of files and streams with BLAKE3 and OMERO's checksums, paths confined to their roots,
//!   iscc-sum-compatible directory walks and `.isccignore` rules, near pairs by Hamming
//!   distance, the code index and pixel codes. It imports nothing from the layers above.

pub mod streams;

pub mod cli;
pub mod commands;
pub mod engine;
pub mod exit;
pub mod jobs;
pub mod ordered;
pub mod pathcodec;
pub mod plan;
pub mod progress;
pub mod records;
