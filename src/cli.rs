//! Command-line arguments as clap parses them (clap derive). What clap cannot refuse alone is
//! refused once, when the arguments become a plan (`plan`).

use crate::engine::checksum::Algorithm;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

/// ISCC-SUM content identifiers (ISO 24138) for the files of an OMERO server.
///
/// Exit status: 0 when every record succeeded, 1 when any record failed (all others are
/// still produced), 2 for usage errors, 3 when the run stopped before its end (standard
/// output closed or unwritable), 4 when `sum --time-budget` ran out (every record written;
/// the files not hashed in time carry the error kind `budget`).
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

    /// CPU and I/O priority: `low` is nice 10 and best-effort I/O at its lowest level.
    #[arg(long, value_enum, default_value_t = Priority::Normal, value_name = "LEVEL")]
    pub priority: Priority,
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
    /// order listed, and a `files` array of per-file records. Every file is read once. A file
    /// is a path, or {"path": .., "size": N}: a file of another size is not read
    /// (`size_mismatch`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["tree", "files_from"])]
    pub groups: Option<OsString>,

    /// Resolve relative paths under DIR and refuse any path that resolves outside it.
    ///
    /// Symbolic links are resolved before the check; a refused path gives an
    /// `outside_root` error record. Files are then opened beneath the root through no
    /// symbolic link, so a link that appears meanwhile is refused too.
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

    /// Stop after SECONDS (from the start of the run): no file is started afterwards, and a
    /// file in progress is given up within a window (32 MiB) of reading.
    ///
    /// Every file gets its record all the same: those not hashed have the error kind
    /// `budget`, and the exit status is 4.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub time_budget: Option<std::time::Duration>,

    /// Do not read files larger than SIZE bytes (suffixes K, M, G, T: powers of 1024); such a
    /// file gets an error record of kind `too_large`.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_file_size: Option<u64>,

    /// CPU and I/O priority: `low` is nice 10 and best-effort I/O at its lowest level (for
    /// runs beside a production server; the OMERO scripts use it).
    #[arg(long, value_enum, default_value_t = Priority::Normal, value_name = "LEVEL")]
    pub priority: Priority,
}

/// How much of the machine a run may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Priority {
    /// Nice 10, best-effort I/O at level 7: other work goes first.
    Low,
    /// As started.
    Normal,
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
    /// codes (×2 over 128 bits when both codes are wide; a narrow and a wide code are
    /// compared on their first 64 bits).
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

fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    let seconds: f64 = text.parse().map_err(|_| format!("not a number of seconds: '{text}'"))?;
    if !(seconds > 0.0 && seconds <= 1e9) {
        return Err(format!("a time budget is more than 0 and at most 10^9 seconds (got '{text}')"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

fn parse_size(text: &str) -> Result<u64, String> {
    let (digits, shift) = match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        Some(b'T' | b't') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("not a size in bytes (a whole number, optionally K, M, G or T): '{text}'"))
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

    #[test]
    fn sizes_and_seconds() {
        assert_eq!(super::parse_size("1000"), Ok(1000));
        assert_eq!(super::parse_size("2K"), Ok(2048));
        assert_eq!(super::parse_size("16T"), Ok(16 << 40));
        assert!(super::parse_size("16P").is_err() && super::parse_size("-1").is_err());
        assert!(super::parse_size("99999999999T").is_err());
        assert_eq!(super::parse_seconds("1.5"), Ok(std::time::Duration::from_millis(1500)));
        for bad in ["0", "-3", "nan", "inf", "x"] {
            assert!(super::parse_seconds(bad).is_err(), "{bad}");
        }
    }
}
