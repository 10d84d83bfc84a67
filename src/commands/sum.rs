//! The `sum` command: jobs hashed on a pool of threads, records written in input order as
//! soon as each is ready.
//!
//! Jobs run through `ordered` (claimed in input order, so the first records come out at
//! once); a large file's buffers are split further across idle threads by the hashers.

use crate::cli::SumArgs;
use crate::engine::group;
use crate::engine::hash::{self, HashConfig};
use crate::error::Failure;
use crate::exit::{usage, Error, Status};
use crate::inputs::{self, Job, Origin, Resolver};
use crate::ordered;
use crate::progress;
use crate::records::{self, Format, Record};
use crate::streams::{self, Inputs, Output};
use indicatif::ProgressBar;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Runs `sum`; returns the exit status.
pub fn run(args: &SumArgs) -> Result<Status, Error> {
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
    let config = HashConfig { parallel: pool.current_num_threads() > 1, mmap: !args.no_mmap, checksums };
    let format = Format { json: args.json, wide: args.wide, units: args.units };
    let total = if progress::wanted(args.progress) { total_bytes(&jobs) } else { 0 };
    let progress = progress::bar(args.progress, jobs.len(), total);
    let result = execute(&pool, &jobs, &config, format, &progress);
    progress::finish(&progress);
    result.map(Status::from_failed)
}

fn collect_jobs(args: &SumArgs, resolver: &Resolver, inputs: &mut Inputs) -> Result<Vec<Job>, Error> {
    let given: Vec<Vec<u8>> = args.paths.iter().map(|p| p.as_bytes().to_vec()).collect();
    for _ in given.iter().filter(|p| p.as_slice() == b"-") {
        inputs.claim_stdin("a PATH argument")?;
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
                files.iter().filter_map(|(_, p)| p.as_ref().ok()).map(|p| size(p)).sum()
            }
            _ => 0,
        })
        .sum()
}

/// Runs every job, writing records in order. Returns whether any record failed.
fn execute(
    pool: &rayon::ThreadPool,
    jobs: &[Job],
    config: &HashConfig,
    format: Format,
    progress: &ProgressBar,
) -> Result<bool, Error> {
    let mut out = Output::default();
    let mut failed = false;
    ordered::for_each_ordered(
        pool,
        jobs.len(),
        |i| run_job(&jobs[i], config),
        |record| {
            failed |= record.failed();
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
    Ok(failed)
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

fn hash_group(id: &str, files: &[(Vec<u8>, Result<PathBuf, Failure>)], config: &HashConfig) -> Record {
    let resolved: Vec<Result<PathBuf, Failure>> = files.iter().map(|(_, p)| p.clone()).collect();
    let names: Vec<String> = files.iter().map(|(d, _)| String::from_utf8_lossy(d).into_owned()).collect();
    let outcome = group::hash_group(&resolved, &names, config, true);
    let files = files.iter().map(|(d, _)| d.clone()).zip(outcome.files).collect();
    Record::Group { id: id.to_string(), result: outcome.group, files }
}
