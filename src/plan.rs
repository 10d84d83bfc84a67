//! What each command will do, decided once from its parsed arguments, before anything runs
//! (ripgrep's low and high arguments, fd's `Config`): the inputs it reads, the output it
//! writes, which codes, the roots, the budgets. The combinations that make no sense are
//! refused here, with the message the user sees, or cannot be written at all: a `sum` plan
//! that writes text has no groups and no checksums to give (only [`SumOutput::Json`] has
//! them), so nothing later has to check again.
//!
//! Building a plan opens the roots (`--root`, `--allow-root`), so that a root that cannot be
//! used is a usage error before any input is read; it opens no input and starts no thread.

use crate::cli::{
    CheckArgs, Cli, Command, IndexArgs, IndexCommand, PixelsArgs, Priority, ProgressMode, SimilarArgs,
    SumArgs,
};
use crate::engine::budget::Budget;
use crate::engine::checksum::Algorithm;
use crate::engine::resolve::Resolver;
use crate::exit::{unusable, usage, RunError};
use crate::records::sum::Format;
use crate::streams;
use std::ffi::{OsStr, OsString};
use std::io::{self, IsTerminal};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A command, ready to run.
#[derive(Debug)]
pub enum Plan {
    Sum(SumPlan),
    Check(CheckPlan),
    Selftest,
    Similar(SimilarPlan),
    Pixels(PixelsPlan),
    Index(IndexPlan),
}

impl Plan {
    /// The plan of the command line, or the usage error that stops it.
    pub fn new(cli: Cli) -> Result<Plan, RunError> {
        Ok(match cli.command {
            Command::Sum(args) => Plan::Sum(SumPlan::new(args)?),
            Command::Check(args) => Plan::Check(CheckPlan::new(args)?),
            Command::Selftest => Plan::Selftest,
            Command::Similar(args) => Plan::Similar(SimilarPlan::new(args)),
            Command::Pixels(args) => Plan::Pixels(PixelsPlan::new(args)),
            Command::Index(args) => Plan::Index(IndexPlan::new(args)),
        })
    }
}

/// `sum`: what to hash, how to write it, and within which limits.
#[derive(Debug)]
pub struct SumPlan {
    pub output: SumOutput,
    /// Paths resolve under the root (and may lead into the allowed roots), opened here.
    pub resolver: Resolver,
    /// Counted from when the plan was made: the start of the run.
    pub budget: Budget,
    pub threads: Option<u16>,
    pub low_priority: bool,
    /// Whether a progress bar is drawn on standard error.
    pub progress: bool,
    pub mmap: bool,
}

/// What `sum` writes, and what it reads for it.
#[derive(Debug)]
pub enum SumOutput {
    /// iscc-sum's lines (`ISCC:... *path`): files, trees and standard input only.
    Text { paths: Paths, format: Format },
    /// JSON Lines: also groups, and OMERO's checksums (sorted, each once).
    Json { sources: JsonSources, format: Format, checksums: Vec<Algorithm> },
}

/// The paths `sum` hashes: named on the command line (`-` is standard input) and in a list.
#[derive(Debug)]
pub struct Paths {
    pub given: Vec<Vec<u8>>,
    pub list: Option<PathList>,
    /// One record per directory (`--tree`); no `-` among `given` then.
    pub tree: bool,
}

/// A file of paths (`--files-from`; `-` is standard input).
#[derive(Debug)]
pub struct PathList {
    pub name: OsString,
    /// Paths end with NUL, not a newline (`-0`).
    pub nul: bool,
}

/// What a JSON `sum` reads: paths, or groups (and files named beside them).
#[derive(Debug)]
pub enum JsonSources {
    Paths(Paths),
    Groups { groups: OsString, given: Vec<Vec<u8>> },
}

impl SumPlan {
    fn new(args: SumArgs) -> Result<SumPlan, RunError> {
        let started = Instant::now();
        if args.groups.is_some() && !args.json {
            return usage("--groups writes JSON records: add --json");
        }
        if !args.checksums.is_empty() && !args.json {
            return usage("--checksum values are written in JSON records only: add --json");
        }
        if args.tree && args.paths.iter().any(|p| streams::is_stdin(p)) {
            return usage("--tree needs directories, not standard input");
        }
        let resolver = resolver(args.root.as_deref(), &args.allowed_roots)?;
        let given: Vec<Vec<u8>> = args.paths.iter().map(|p| p.as_bytes().to_vec()).collect();
        let format = Format { wide: args.wide, units: args.units };
        let paths = |given| Paths {
            given,
            list: args.files_from.map(|name| PathList { name, nul: args.null }),
            tree: args.tree,
        };
        let output = match (args.json, args.groups) {
            (false, _) => SumOutput::Text { paths: paths(given), format },
            (true, groups) => {
                let mut checksums = args.checksums;
                checksums.sort();
                checksums.dedup();
                let sources = match groups {
                    Some(groups) => JsonSources::Groups { groups, given },
                    None => JsonSources::Paths(paths(given)),
                };
                SumOutput::Json { sources, format, checksums }
            }
        };
        Ok(SumPlan {
            output,
            resolver,
            budget: Budget {
                deadline: args.time_budget.map(|budget| started + budget),
                max_file_size: args.max_file_size,
            },
            threads: args.threads,
            low_priority: args.priority == Priority::Low,
            progress: match args.progress {
                ProgressMode::Never => false,
                ProgressMode::Always => true,
                ProgressMode::Auto => io::stderr().is_terminal(),
            },
            mmap: !args.no_mmap,
        })
    }
}

/// The root and the allowed roots of `sum`, opened.
fn resolver(root: Option<&Path>, allowed: &[PathBuf]) -> Result<Resolver, RunError> {
    let mut resolver = Resolver::new(root).map_err(|e| {
        let root = root.unwrap_or(Path::new("")).display();
        unusable(format_args!("--root {root}"), &e)
    })?;
    for dir in allowed {
        resolver =
            resolver.allow(dir).map_err(|e| unusable(format_args!("--allow-root {}", dir.display()), &e))?;
    }
    Ok(resolver)
}

/// `check`: the files of lines to verify, and the root their paths resolve under.
#[derive(Debug)]
pub struct CheckPlan {
    pub files: Vec<OsString>,
    pub resolver: Resolver,
    /// Only what failed is printed.
    pub quiet: bool,
}

impl CheckPlan {
    fn new(args: CheckArgs) -> Result<CheckPlan, RunError> {
        let resolver = Resolver::new(args.root.as_deref()).map_err(|e| unusable("--root", &e))?;
        Ok(CheckPlan { files: args.files, resolver, quiet: args.quiet })
    }
}

/// `similar`: which groups of which input, written how.
#[derive(Debug)]
pub struct SimilarPlan {
    pub input: OsString,
    pub groups: Grouping,
    pub json: bool,
}

/// The groups `similar` looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// Identical content only (`--exact`).
    Identical,
    /// Identical content, and Data-Codes at most `threshold` bits apart (of 64; doubled for
    /// wide codes).
    AlsoSimilar { threshold: u32 },
}

impl SimilarPlan {
    fn new(args: SimilarArgs) -> SimilarPlan {
        SimilarPlan {
            input: stdin_by_default(args.input),
            groups: if args.exact {
                Grouping::Identical
            } else {
                Grouping::AlsoSimilar { threshold: args.threshold }
            },
            json: args.json,
        }
    }
}

/// `pixels`: the frame stream, and how to hash it.
#[derive(Debug)]
pub struct PixelsPlan {
    pub input: OsString,
    pub simprints: bool,
    pub threads: Option<u16>,
    pub low_priority: bool,
}

impl PixelsPlan {
    fn new(args: PixelsArgs) -> PixelsPlan {
        PixelsPlan {
            input: stdin_by_default(args.input),
            simprints: args.simprints,
            threads: args.threads,
            low_priority: args.priority == Priority::Low,
        }
    }
}

/// `index`: the index directory and what to do with it.
#[derive(Debug)]
pub struct IndexPlan {
    pub dir: PathBuf,
    pub action: IndexAction,
}

/// One `index` subcommand; `input` is JSON Lines (`-`: standard input).
#[derive(Debug)]
pub enum IndexAction {
    /// `add`, `remove` or `rebuild`: one atomic update with the records of `input`.
    Update {
        mode: UpdateMode,
        input: OsString,
    },
    Query {
        input: OsString,
        threshold: u32,
    },
    Stats,
    List,
    Compact,
    Verify,
}

/// What an update does with its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateMode {
    /// Adds codes; an indexed id gets its new code.
    Add,
    /// Removes ids.
    Remove,
    /// Replaces the whole index with the codes.
    Rebuild,
}

impl IndexPlan {
    fn new(args: IndexArgs) -> IndexPlan {
        let update = |mode, a: crate::cli::IndexUpdateArgs| IndexPlan {
            dir: a.dir,
            action: IndexAction::Update { mode, input: stdin_by_default(a.input) },
        };
        let on = |dir, action| IndexPlan { dir, action };
        match args.command {
            IndexCommand::Add(a) => update(UpdateMode::Add, a),
            IndexCommand::Remove(a) => update(UpdateMode::Remove, a),
            IndexCommand::Rebuild(a) => update(UpdateMode::Rebuild, a),
            IndexCommand::Query(a) => {
                on(a.dir, IndexAction::Query { input: stdin_by_default(a.input), threshold: a.threshold })
            }
            IndexCommand::Stats(a) => on(a.dir, IndexAction::Stats),
            IndexCommand::List(a) => on(a.dir, IndexAction::List),
            IndexCommand::Compact(a) => on(a.dir, IndexAction::Compact),
            IndexCommand::Verify(a) => on(a.dir, IndexAction::Verify),
        }
    }
}

/// An optional input argument: nothing is standard input (`-`).
fn stdin_by_default(input: Option<OsString>) -> OsString {
    input.unwrap_or_else(|| OsStr::new("-").to_os_string())
}
