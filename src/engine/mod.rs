//! The hashing engine: everything that turns bytes into codes, independent of the commands.
//!
//! - `cdc`, `minhash`, `datacode`: the Data-Code (content-defined chunks, MinHash), exact and
//!   parallel.
//! - `hash`, `source`, `sigbus`: one pass over a file or stream feeding every hasher; files
//!   mapped in windows, with recovery when a file shrinks under its mapping.
//! - `beneath`, `budget`: files opened beneath their root through no symbolic link; a run's
//!   time budget and file size ceiling.
//! - `group`: many files as one stream (a group, a tree) on every core, each file's own code
//!   alongside; `concat`: the group's Data-Code and its files' from one chunking.
//! - `checksum`: OMERO's import checksums, computed in the same pass.
//! - `codes`: digests to ISCC strings.
//! - `walk`, `ignore`: directory walks in iscc-sum's order with its `.isccignore` rules.
//! - `hamming`: near pairs of codes by Hamming distance.
//! - `index`: a persistent index of codes, answering matches of one code exactly.
//! - `planes`, `pixelcode`: the framed plane stream of `pixels` and the pixel code (IMAGEWALK)
//!   of each image in it.

pub mod beneath;
pub mod budget;
pub mod cdc;
pub mod checksum;
pub mod codes;
pub mod concat;
pub mod datacode;
pub mod group;
pub mod hamming;
pub mod hash;
pub mod ignore;
pub mod index;
pub mod minhash;
pub mod pixelcode;
pub mod planes;
pub mod sigbus;
pub mod source;
pub mod testdata;
pub mod walk;
