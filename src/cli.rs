//! Command-line arguments (clap derive). Validation of combinations lives with each command.

use crate::engine::checksum::Algorithm;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

/// ISCC-SUM content identifiers (ISO 24138) for the files of an OMERO server.
///
/// Exit status: 0 when every record succeeded, 1 when any record failed (all others are
/// still produced), 2 for usage errors, 3 when the run stopped before its end (standard
/// output closed or unwritable).
#[derive(Debug, Parser)]
#[command(name = "omero-iscc", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compute ISCC-SUMs of files, directories, file lists, groups or standard input.
    Sum(SumArgs),
    /// Verify lines written by `sum` (text or JSON) or by iscc-sum.
    Check(CheckArgs),
    /// Run the ISO 24138 conformance vectors on this binary's own code paths.
    Selftest,
    /// Group identical and near-identical codes from `sum --json` records or iscc-sum lines.
    Similar(SimilarArgs),
    /// Pixel codes (IMAGEWALK): hash a framed stream of images' planes, one record per image.
    ///
    /// The stream (standard input or FILE) holds, per image, a line
    /// `{"image": ID, "planes": P, "plane_bytes": N}`, then the planes' canonical bytes in
    /// walk order as `{"bytes": K}` lines each followed by K raw bytes, then `{"end": true}`
    /// (or `{"abort": "why"}`). Each image gets a JSON line with its wide ISCC-SUM; a fault
    /// in one image's frames gives that image an error record and the next still get theirs.
    Pixels(PixelsArgs),
    /// A persistent index of codes: identical and near-identical matches of a code, exactly.
    ///
    /// The index lives in a directory (see docs/index.md). Records are JSON Lines: `add`
    /// reads {"id", "iscc", "datahash"?, "group", "owner", "code"?} (code: files or pixels),
    /// `remove` reads {"id"}, `query` reads {"id"?, "iscc", "datahash"?, "code"?, "visible"?}
    /// and answers each line with its matches.
    Index(IndexArgs),
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    #[command(subcommand)]
    pub command: IndexCommand,
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Add codes (an id already indexed is replaced), in one atomic update; creates the index.
    Add(IndexUpdateArgs),
    /// Remove codes by id, in one atomic update.
    Remove(IndexUpdateArgs),
    /// Answer each code line with its identical and near-identical codes.
    Query(IndexQueryArgs),
    /// Counts, size and segments of the index, as one JSON object.
    Stats(IndexDirArgs),
    /// Every indexed code as an `add` record, by id.
    List(IndexDirArgs),
    /// Merge all segments into one, dropping removed codes.
    Compact(IndexDirArgs),
    /// Replace the whole index with the codes read, in one atomic update.
    Rebuild(IndexUpdateArgs),
    /// Check every segment's checksum and tables.
    Verify(IndexDirArgs),
}

#[derive(Debug, Args)]
pub struct IndexDirArgs {
    /// The index directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct IndexUpdateArgs {
    /// The index directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// JSON Lines records; `-` or nothing for standard input.
    #[arg(value_name = "FILE")]
    pub input: Option<OsString>,
}

#[derive(Debug, Args)]
pub struct IndexQueryArgs {
    /// The index directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// JSON Lines query records; `-` or nothing for standard input.
    #[arg(value_name = "FILE")]
    pub input: Option<OsString>,

    /// Largest Data-Code Hamming distance, in bits of a 64-bit Data-Code, that matches
    /// (doubled when both codes are wide, as for `similar`).
    #[arg(long, default_value_t = 12, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=64))]
    pub threshold: u32,
}

#[derive(Debug, Args)]
pub struct PixelsArgs {
    /// The framed plane stream; `-` or nothing for standard input.
    #[arg(value_name = "FILE")]
    pub input: Option<OsString>,

    /// Also output each plane's simprint (its 256-bit Data-Code, base64, as iscc-bio).
    #[arg(long)]
    pub simprints: bool,

    /// Worker threads [default: all cores; at most 4 × cores, and 1024].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

#[derive(Debug, Args)]
pub struct SumArgs {
    /// Files or directories to hash; `-` reads standard input as one stream.
    ///
    /// A directory is walked recursively in iscc-sum's order (symbolic links skipped,
    /// `.isccignore` honoured, `*.iscc.json` left out) and gives one record per file.
    #[arg(value_name = "PATH")]
    pub paths: Vec<OsString>,

    /// One record per directory: the ISCC-SUM of all its files' bytes in walk order.
    ///
    /// Equals `iscc-sum --tree DIR`.
    #[arg(long)]
    pub tree: bool,

    /// Read paths from FILE (`-` for standard input), one per line.
    ///
    /// Each line names a file, resolved under --root like any other path: a line `-` is a
    /// file called `-`.
    #[arg(long, value_name = "FILE")]
    pub files_from: Option<OsString>,

    /// With --files-from: paths are separated by NUL bytes, not newlines.
    #[arg(short = '0', long = "null", requires = "files_from")]
    pub null: bool,

    /// Read groups from FILE (`-` for standard input): JSON Lines of {"id": .., "files": [..]}.
    ///
    /// Each group gives one record with the code of its files' bytes concatenated in the
    /// order listed, and a `files` array of per-file records. Every file is read once.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tree", "files_from"])]
    pub groups: Option<OsString>,

    /// Resolve relative paths under DIR and refuse any path that resolves outside it.
    ///
    /// Symbolic links are resolved before the check; a refused path gives an
    /// `outside_root` error record.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// With --root: symbolic links in the root may also lead into DIR (repeatable).
    ///
    /// For in-place imports, whose repository entries link to an instrument share. A path
    /// must still be named under the root; only where its links lead may be DIR.
    #[arg(long = "allow-root", value_name = "DIR", requires = "root")]
    pub allowed_roots: Vec<PathBuf>,

    /// Wide codes: 2×128 bits (`ISCC:K4A…`, iscc-sum's default) instead of the ISO 24138
    /// 2×64-bit narrow codes (`ISCC:KUA…`).
    #[arg(long)]
    pub wide: bool,

    /// Also output the Data-Code and Instance-Code units (256 bits each, as iscc-sum).
    #[arg(long)]
    pub units: bool,

    /// Also compute the checksum OMERO recorded at import, in the same pass (repeatable).
    ///
    /// One of SHA1-160 (OMERO's default), MD5-128, CRC-32, Adler-32, File-Size-64, output
    /// as OMERO stores it in OriginalFile.hash. Needs --json.
    #[arg(long = "checksum", value_name = "ALG", value_parser = parse_algorithm)]
    pub checksums: Vec<Algorithm>,

    /// Write JSON Lines, one object per record, flushed as each record is ready.
    #[arg(long)]
    pub json: bool,

    /// Worker threads [default: all cores; at most 4 × cores, and 1024].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// Progress bar on standard error.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto, value_name = "WHEN")]
    pub progress: ProgressMode,

    /// Read files instead of memory-mapping them.
    #[arg(long)]
    pub no_mmap: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Only when standard error is a terminal.
    Auto,
    Always,
    Never,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Files of lines written by `sum` (text or --json) or by iscc-sum; `-` for standard input.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<OsString>,

    /// Resolve relative paths in the lines under DIR, refusing paths outside it.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Print only what failed.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SimilarArgs {
    /// JSON Lines records with `iscc` and `id` or `path`, or iscc-sum lines; `-` or nothing
    /// for standard input.
    #[arg(value_name = "FILE")]
    pub input: Option<OsString>,

    /// Largest Data-Code Hamming distance, in bits of a 64-bit Data-Code, that joins two
    /// codes (scaled ×2 for wide codes).
    #[arg(long, default_value_t = 12, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=64))]
    pub threshold: u32,

    /// Write one JSON object per group.
    #[arg(long)]
    pub json: bool,

    /// Only groups of identical content (same datahash or Instance-Code); no near duplicates.
    #[arg(long)]
    pub exact: bool,
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    Algorithm::from_name(name).ok_or_else(|| {
        let known: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        format!("unsupported checksum '{name}' (supported: {})", known.join(", "))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
