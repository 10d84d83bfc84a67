//! The `sum` command: jobs hashed on a pool of threads, records written in input order as
//! soon as each is ready.
//!
//! Jobs run through `ordered` (claimed in input order, so the first records come out at
//! once); a large file's buffers are split further across idle threads by the hashers.

use crate::cli::SumArgs;
use crate::exit::{usage, Status, UsageError};
use crate::hash::{self, HashConfig, StreamHasher};
use crate::inputs::{self, Job, Resolver};
use crate::ordered;
use crate::progress;
use crate::record::{self, Format, Record};
use indicatif::ProgressBar;
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::os::unix::ffi::OsStrExt;

/// Runs `sum`; returns the exit status.
pub fn run(args: &SumArgs) -> Result<Status, UsageError> {
    let stdin_users = args.paths.iter().filter(|p| p.as_bytes() == b"-").count()
        + args.files_from.as_ref().is_some_and(|f| f.as_bytes() == b"-") as usize
        + args.groups.as_ref().is_some_and(|f| f.as_bytes() == b"-") as usize;
    if stdin_users > 1 {
        return usage("standard input ('-') can be used only once");
    }
    if args.groups.is_some() && !args.json {
        return usage("--groups writes JSON records: add --json");
    }
    if !args.checksums.is_empty() && !args.json {
        return usage("--checksum values are written in JSON records only: add --json");
    }
    if args.tree && args.paths.iter().any(|p| p.as_bytes() == b"-") {
        return usage("--tree needs directories, not standard input");
    }
    let resolver = Resolver::new(args.root.as_deref()).map_err(|e| {
        UsageError(format!(
            "--root {}: {e}",
            args.root.as_ref().map(|r| r.display().to_string()).unwrap_or_default()
        ))
    })?;
    let jobs = collect_jobs(args, &resolver)?;
    let threads = args
        .threads
        .map(usize::from)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("omero-iscc-{i}"))
        .build()
        .map_err(|e| UsageError(format!("cannot start {threads} threads: {e}")))?;
    let mut checksums = args.checksums.clone();
    checksums.sort();
    checksums.dedup();
    let config = HashConfig { parallel: threads > 1, mmap: !args.no_mmap, checksums };
    let format = Format { json: args.json, wide: args.wide, units: args.units };
    let total = if progress::wanted(args.progress) { total_bytes(&jobs) } else { 0 };
    let progress = progress::bar(args.progress, jobs.len(), total);
    let failed = execute(&pool, &jobs, &config, format, &progress);
    progress::finish(&progress);
    Ok(if failed { Status::Failure } else { Status::Success })
}

fn collect_jobs(args: &SumArgs, resolver: &Resolver) -> Result<Vec<Job>, UsageError> {
    let open = |name: &std::ffi::OsStr| -> Result<Box<dyn io::BufRead>, UsageError> {
        if name.as_bytes() == b"-" {
            Ok(Box::new(BufReader::new(io::stdin())))
        } else {
            File::open(name)
                .map(|f| Box::new(BufReader::new(f)) as Box<dyn io::BufRead>)
                .map_err(|e| UsageError(format!("{}: {e}", name.to_string_lossy())))
        }
    };
    if let Some(groups) = &args.groups {
        let mut reader = open(groups)?;
        let mut jobs =
            inputs::group_jobs(&mut *reader, resolver).map_err(|e| UsageError(format!("--groups: {e}")))?;
        let extra: Vec<Vec<u8>> = args.paths.iter().map(|p| p.as_bytes().to_vec()).collect();
        jobs.extend(inputs::path_jobs(&extra, false, true, resolver));
        return Ok(jobs);
    }
    let mut paths: Vec<Vec<u8>> = args.paths.iter().map(|p| p.as_bytes().to_vec()).collect();
    if paths.is_empty() && args.files_from.is_none() {
        paths.push(b"-".to_vec());
    }
    let mut jobs = inputs::path_jobs(&paths, args.tree, true, resolver);
    if let Some(list) = &args.files_from {
        let mut reader = open(list)?;
        let listed = inputs::read_path_list(&mut *reader, args.null)
            .map_err(|e| UsageError(format!("--files-from: {e}")))?;
        jobs.extend(inputs::path_jobs(&listed, args.tree, false, resolver));
    }
    Ok(jobs)
}

/// Bytes the jobs will read, as far as known up front (for the progress bar's estimate).
fn total_bytes(jobs: &[Job]) -> u64 {
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
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
) -> bool {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let stderr = io::stderr();
    let mut failed = false;
    ordered::for_each_ordered(
        pool,
        jobs.len(),
        |i| run_job(&jobs[i], config),
        |record| {
            failed |= record.failed();
            let written = progress.suspend(|| {
                let mut err = stderr.lock();
                record::write_record(&record, format, &mut out, &mut err).and_then(|_| out.flush())
            });
            if let Err(e) = written {
                // A closed pipe ends the run quietly; anything else is reported.
                if e.kind() != io::ErrorKind::BrokenPipe {
                    let _ = writeln!(io::stderr(), "omero-iscc: cannot write output: {e}");
                    failed = true;
                }
                return false;
            }
            progress.inc(1);
            true
        },
    );
    failed
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
                Ok(files) => (files.len(), hash_tree(files, config)),
                Err(f) => (0, Err(f.clone())),
            };
            Record::Tree { path: display.clone(), files: count, result }
        }
        Job::Group { id, files } => hash_group(id, files, config),
        Job::BadLine { line, failure } => Record::BadLine { line: *line, failure: failure.clone() },
    }
}

fn hash_tree(
    files: &[std::path::PathBuf],
    config: &HashConfig,
) -> Result<hash::Outcome, crate::error::Failure> {
    let mut hasher = StreamHasher::new(config);
    for file in files {
        hash::feed_path(file, config, &mut |b| hasher.update(b)).map_err(|mut f| {
            f.message = format!("{}: {}", file.display(), f.message);
            f
        })?;
    }
    Ok(hasher.finish())
}

fn hash_group(
    id: &str,
    files: &[(Vec<u8>, Result<std::path::PathBuf, crate::error::Failure>)],
    config: &HashConfig,
) -> Record {
    let single = files.len() == 1;
    let mut group = (!single).then(|| StreamHasher::new(config));
    let mut group_failure = None;
    let mut records = Vec::with_capacity(files.len());
    for (display, path) in files {
        let mut file_hasher = StreamHasher::new(config);
        let fed = path.clone().and_then(|p| {
            hash::feed_path(&p, config, &mut |b| match group.as_mut() {
                Some(g) if group_failure.is_none() => hash::update_all(&mut [&mut file_hasher, g], b),
                _ => file_hasher.update(b),
            })
        });
        let result = fed.map(|_| file_hasher.finish());
        if let Err(f) = &result {
            if group_failure.is_none() {
                let mut f = f.clone();
                f.message = format!("{}: {}", String::from_utf8_lossy(display), f.message);
                group_failure = Some(f);
            }
        }
        records.push((display.clone(), result));
    }
    let result = match (group_failure, group) {
        (Some(f), _) => Err(f),
        (None, Some(g)) => Ok(g.finish()),
        (None, None) => records[0].1.clone(),
    };
    Record::Group { id: id.to_string(), result, files: records }
}
