//! omero-iscc: ISCC-SUM content identifiers (ISO 24138) for the files of an OMERO server.
//!
//! The library is the engine of the `omero-iscc` binary: chunking and MinHash of the
//! Data-Code (`cdc`, `minhash`, `datacode`), one-pass hashing of files and streams (`hash`,
//! `source`, `sigbus`), OMERO's import checksums (`checksum`), iscc-sum-compatible
//! directory walks (`walk`, `ignore`), near pairs by Hamming distance (`hamming`), and the
//! commands (`sum`, `check`, `selftest`, `similar`) with their inputs, records and progress.

pub mod cdc;
pub mod check;
pub mod checksum;
pub mod cli;
pub mod codes;
pub mod datacode;
pub mod error;
pub mod exit;
pub mod hamming;
pub mod hash;
pub mod ignore;
pub mod inputs;
pub mod minhash;
pub mod ordered;
pub mod progress;
pub mod record;
pub mod selftest;
pub mod sigbus;
pub mod similar;
pub mod source;
pub mod sum;
pub mod walk;
