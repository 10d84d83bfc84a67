//! The `sum` command: jobs hashed on a pool of threads, records written in input order as
//! soon as each is ready.
//!
//! Jobs run through `ordered` (claimed in input order, so the first records come out at
//! once); a large file's buffers are split further across idle threads by the hashers.

use crate::cli::SumArgs;
use crate::engine::beneath::{self, Roots};
use crate::engine::budget::Budget;
use crate::engine::group;
use crate::engine::hash::{self, HashConfig, Outcome};
use crate::error::{ErrorKind, Failure};
use crate::exit::{usage, Error, Status};
use crate::inputs::{self, GroupFile, Job, Origin, Resolver};
use crate::ordered;
use crate::progress;
use crate::records::{self, Format, Record};
use crate::streams::{self, Inputs, Output};
use indicatif::ProgressBar;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Runs `sum`; returns the exit status.
pub fn run(args: &SumArgs) -> Result<Status, Error> {
    let started = Instant::now();
    streams::set_priority(args.priority);
    if args.groups.is_some() && !args.json {
        return usage("--groups writes JSON records: add --json");
    }
    if !args.checksums.is_empty() && !args.json {
        return usage("--checksum values are written in JSON records only: add --json");
    }
    if args.tree && args.paths.iter().any(|p| streams::is_stdin(p)) {
        return usage("--tree needs directories, not standard input");
    }
    let mut resolver = Resolver::new(args.root.as_deref()).map_err(|e| {
        let root = args.root.as_deref().unwrap_or(Path::new("")).display();
        Error::Usage(format!("--root {root}: {}", streams::plain(&e)))
    })?;
    for dir in &args.allowed_roots {
        resolver = resolver
            .allow(dir)
            .map_err(|e| Error::Usage(format!("--allow-root {}: {}", dir.display(), streams::plain(&e))))?;
    }
    let jobs = collect_jobs(args, &resolver, &mut Inputs::default())?;
    let pool = streams::pool(args.threads)?;
    let mut checksums = args.checksums.clone();
    checksums.sort();
    checksums.dedup();
    let budget = Budget {
        deadline: args.time_budget.map(|budget| started + budget),
        max_file_size: args.max_file_size,
    };
    let config = HashConfig {
        parallel: pool.current_num_threads() > 1,
        mmap: !args.no_mmap,
        checksums,
        roots: resolver.roots().cloned(),
        budget,
    };
    let format = Format { json: args.json, wide: args.wide, units: args.units };
    let total = if progress::wanted(args.progress) { total_bytes(&jobs) } else { 0 };
    let progress = progress::bar(args.progress, jobs.len(), total);
    let result = execute(&pool, &jobs, &config, format, &progress);
    progress::finish(&progress);
    let (failed, out_of_time) = result?;
    Ok(if out_of_time { Status::OutOfTime } else { Status::from_failed(failed) })
}

fn collect_jobs(args: &SumArgs, resolver: &Resolver, inputs: &mut Inputs) -> Result<Vec<Job>, Error> {
    let given: Vec<Vec<u8>> = args.paths.iter().map(|p| p.as_bytes().to_vec()).collect();
    for (i, _) in given.iter().enumerate().filter(|(_, p)| p.as_slice() == b"-") {
        inputs.claim_stdin(&format!("PATH {}", i + 1))?;
    }
    if let Some(groups) = &args.groups {
        let mut reader = inputs.open(groups, "--groups")?;
        let mut jobs = inputs::group_jobs(&mut *reader, resolver)
            .map_err(|e| Error::Usage(format!("--groups: {}", streams::plain(&e))))?;
        jobs.extend(inputs::path_jobs(&given, false, Origin::CommandLine, resolver));
        return Ok(jobs);
    }
    let mut paths = given;
    if paths.is_empty() && args.files_from.is_none() {
        inputs.claim_stdin("the default input")?;
        paths.push(b"-".to_vec());
    }
    let mut jobs = inputs::path_jobs(&paths, args.tree, Origin::CommandLine, resolver);
    if let Some(list) = &args.files_from {
        let mut reader = inputs.open(list, "--files-from")?;
        let listed = inputs::read_path_list(&mut *reader, args.null)
            .map_err(|e| Error::Usage(format!("--files-from: {}", streams::plain(&e))))?;
        jobs.extend(inputs::path_jobs(&listed, args.tree, Origin::List, resolver));
    }
    Ok(jobs)
}

/// Bytes the jobs will read, as far as known up front (for the progress bar's estimate).
fn total_bytes(jobs: &[Job]) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    jobs.iter()
        .map(|job| match job {
            Job::File { path: Ok(p), .. } => size(p),
            Job::Tree { files: Ok(files), .. } => files.iter().map(|p| size(p)).sum(),
            Job::Group { files, .. } => {
                files.iter().filter_map(|f| f.path.as_ref().ok()).map(|p| size(p)).sum()
            }
            _ => 0,
        })
        .sum()
}

/// Runs every job, writing records in order. Returns whether any record failed, and whether
/// any was cut short by the time budget.
fn execute(
    pool: &rayon::ThreadPool,
    jobs: &[Job],
    config: &HashConfig,
    format: Format,
    progress: &ProgressBar,
) -> Result<(bool, bool), Error> {
    let mut out = Output::default();
    let mut failed = false;
    let mut out_of_time = false;
    ordered::for_each_ordered(
        pool,
        jobs.len(),
        |i| run_job(&jobs[i], config),
        |record| {
            failed |= record.failed();
            out_of_time |= ran_out_of_time(&record);
            let (bytes, message) = records::render(&record, format);
            progress.suspend(|| {
                if let Some(message) = message {
                    crate::warn!("{message}");
                }
                out.record(&bytes)
            })?;
            progress.inc(1);
            Ok::<(), Error>(())
        },
    )?;
    Ok((failed, out_of_time))
}

/// Whether the time budget cost this record (or a file in it) its code.
fn ran_out_of_time(record: &Record) -> bool {
    let budget = |r: &Result<Outcome, Failure>| matches!(r, Err(f) if f.kind == ErrorKind::Budget);
    match record {
        Record::File { result, .. } | Record::Tree { result, .. } => budget(result),
        Record::Group { result, files, .. } => budget(result) || files.iter().any(|(_, r)| budget(r)),
        Record::BadLine { .. } => false,
    }
}

/// Hashes one job into its record. Never panics on bad input: every failure is a record.
pub fn run_job(job: &Job, config: &HashConfig) -> Record {
    match job {
        Job::File { display, path } => Record::File {
            path: display.clone(),
            result: path.clone().and_then(|p| hash::hash_path(&p, config)),
        },
        Job::Stdin => {
            Record::File { path: b"-".to_vec(), result: hash::hash_reader(&mut io::stdin().lock(), config) }
        }
        Job::Tree { display, files } => {
            let (count, result) = match files {
                Ok(files) => (files.len(), group::hash_files(files, config)),
                Err(f) => (0, Err(f.clone())),
            };
            Record::Tree { path: display.clone(), files: count, result }
        }
        Job::Group { id, files } => hash_group(id, files, config),
        Job::BadLine { line, failure } => Record::BadLine { line: *line, failure: failure.clone() },
    }
}

/// A group's record. A file whose size is not the one its line gives is not read; one whose
/// size changed between that check and its read loses its code (and the group its code).
fn hash_group(id: &str, files: &[GroupFile], config: &HashConfig) -> Record {
    let resolved: Vec<Result<PathBuf, Failure>> = files
        .iter()
        .map(|f| {
            let path = f.path.clone()?;
            match f.size {
                Some(expected) if !config.budget.spent() => {
                    match size_beneath(&path, config.roots.as_deref())? {
                        Some(actual) if actual != expected => {
                            Err(size_mismatch(expected, actual, "not hashed"))
                        }
                        _ => Ok(path),
                    }
                }
                _ => Ok(path),
            }
        })
        .collect();
    let names: Vec<String> = files.iter().map(|f| String::from_utf8_lossy(&f.display).into_owned()).collect();
    let outcome = group::hash_group(&resolved, &names, config, true);
    let mut group_result = outcome.group;
    let mut records = Vec::with_capacity(files.len());
    for (k, (file, own)) in files.iter().zip(outcome.files).enumerate() {
        let own = own.and_then(|o| match file.size {
            Some(expected) if expected != o.digests.filesize => {
                Err(size_mismatch(expected, o.digests.filesize, "code withheld"))
            }
            _ => Ok(o),
        });
        if let (Err(failure), Ok(_)) = (&own, &group_result) {
            group_result = Err(failure.clone().at_name(&names[k]));
        }
        records.push((file.display.clone(), own));
    }
    Record::Group { id: id.to_string(), result: group_result, files: records }
}

/// The size of a regular file as it would be opened for hashing (beneath the roots when
/// given); `None` for anything else, which is not opened here (its open refuses it).
fn size_beneath(path: &Path, roots: Option<&Roots>) -> Result<Option<u64>, Failure> {
    let found = match roots {
        Some(_) => std::fs::symlink_metadata(path),
        None => std::fs::metadata(path),
    };
    let found = found.map_err(|e| Failure::io(&e))?;
    if !found.is_file() {
        return Ok(None);
    }
    let meta = match roots {
        Some(roots) => roots.open(path, beneath::READ_FLAGS)?.metadata(),
        None => Ok(found),
    };
    meta.map(|m| m.is_file().then_some(m.len())).map_err(|e| Failure::io(&e))
}

fn size_mismatch(expected: u64, actual: u64, what: &str) -> Failure {
    Failure::new(
        ErrorKind::SizeMismatch,
        format!("{what}: the file has {actual} bytes, its group line says {expected} (the size recorded at import)"),
    )
}
