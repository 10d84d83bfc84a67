//! The `sum` command: jobs hashed on a pool of threads, records written in input order as
//! soon as each is ready.
//!
//! Jobs run through `ordered` (claimed in input order, so the first records come out at
//! once); a large file's buffers are split further across idle threads by the hashers. A
//! text run has path jobs only, written as iscc-sum writes them; a JSON run may also have
//! groups (the plan decides which run it is).

use crate::engine::beneath::{self, Roots};
use crate::engine::checksum::Algorithm;
use crate::engine::failure::{Failure, FailureKind};
use crate::engine::group;
use crate::engine::hash::{self, HashConfig};
use crate::engine::resolve::Resolver;
use crate::engine::source;
use crate::exit::{unusable, RunError, Status};
use crate::jobs::{self, GroupFile, Job, Origin, PathJob};
use crate::ordered;
use crate::plan::{JsonSources, Paths, SumOutput, SumPlan};
use crate::progress;
use crate::records::sum::{self as records, PathRecord, Record, RecordStatus};
use crate::streams::{self, Inputs, Output};
use indicatif::ProgressBar;
use rayon::ThreadPool;
use std::io;
use std::path::{Path, PathBuf};

/// Runs `sum`; returns the exit status.
pub fn run(plan: &SumPlan) -> Result<Status, RunError> {
    if plan.low_priority {
        streams::lower_priority();
    }
    match &plan.output {
        SumOutput::Text { paths, format } => {
            let jobs = path_jobs(paths, &plan.resolver, &mut Inputs::default())?;
            let (pool, config) = hashing(plan, Vec::new())?;
            let write = |record: &PathRecord| match records::text_line(record, *format) {
                Ok(line) => (line, None),
                Err(message) => (Vec::new(), Some(message)),
            };
            execute(plan, &pool, &jobs, |job| path_record(job, &config), write)
        }
        SumOutput::Json { sources, format, checksums } => {
            let jobs = json_jobs(sources, &plan.resolver, &mut Inputs::default())?;
            let (pool, config) = hashing(plan, checksums.clone())?;
            let write = |record: &Record| (records::json_line(record, *format), None);
            execute(plan, &pool, &jobs, |job| record(job, &config), write)
        }
    }
}

/// The run's threads, and how each file is hashed on them.
fn hashing(plan: &SumPlan, checksums: Vec<Algorithm>) -> Result<(ThreadPool, HashConfig), RunError> {
    let pool = streams::pool(plan.threads)?;
    let config = HashConfig {
        parallel: pool.current_num_threads() > 1,
        mmap: plan.mmap,
        checksums,
        roots: plan.resolver.roots().cloned(),
        budget: plan.budget,
    };
    Ok((pool, config))
}

/// The jobs of the paths named on the command line and in the list, in that order; no path
/// at all is standard input.
fn path_jobs(paths: &Paths, resolver: &Resolver, inputs: &mut Inputs) -> Result<Vec<PathJob>, RunError> {
    let mut given = paths.given.clone();
    claim_stdin(&given, inputs)?;
    if given.is_empty() && paths.list.is_none() {
        inputs.claim_stdin("the default input")?;
        given.push(b"-".to_vec());
    }
    let mut jobs = jobs::path_jobs(&given, paths.tree, Origin::CommandLine, resolver);
    if let Some(list) = &paths.list {
        let mut reader = inputs.open(&list.name, "--files-from")?;
        let listed =
            jobs::read_path_list(&mut *reader, list.nul).map_err(|e| unusable("--files-from", &e))?;
        jobs.extend(jobs::path_jobs(&listed, paths.tree, Origin::List, resolver));
    }
    Ok(jobs)
}

/// The jobs of a JSON run: its paths', or its groups' and then those of the files named
/// beside them.
fn json_jobs(sources: &JsonSources, resolver: &Resolver, inputs: &mut Inputs) -> Result<Vec<Job>, RunError> {
    match sources {
        JsonSources::Paths(paths) => {
            Ok(path_jobs(paths, resolver, inputs)?.into_iter().map(Job::Path).collect())
        }
        JsonSources::Groups { groups, given } => {
            claim_stdin(given, inputs)?;
            let mut reader = inputs.open(groups, "--groups")?;
            let mut jobs = jobs::group_jobs(&mut *reader, resolver).map_err(|e| unusable("--groups", &e))?;
            let paths = jobs::path_jobs(given, false, Origin::CommandLine, resolver);
            jobs.extend(paths.into_iter().map(Job::Path));
            Ok(jobs)
        }
    }
}

/// Claims standard input for each `-` on the command line (`PATH n`).
fn claim_stdin(given: &[Vec<u8>], inputs: &mut Inputs) -> Result<(), RunError> {
    for (i, _) in given.iter().enumerate().filter(|(_, p)| p.as_slice() == b"-") {
        inputs.claim_stdin(&format!("PATH {}", i + 1))?;
    }
    Ok(())
}

/// What a job reads, as far as it is known up front (for the progress bar's estimate).
trait Size {
    fn size(&self) -> u64;
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

impl Size for PathJob {
    fn size(&self) -> u64 {
        match self {
            PathJob::File { path: Ok(p), .. } => file_size(p),
            PathJob::Tree { files: Ok(files), .. } => files.iter().map(|p| file_size(p)).sum(),
            _ => 0,
        }
    }
}

impl Size for Job {
    fn size(&self) -> u64 {
        match self {
            Job::Path(job) => job.size(),
            Job::Group { files, .. } => {
                files.iter().filter_map(|f| f.path.as_ref().ok()).map(|p| file_size(p)).sum()
            }
            Job::BadLine { .. } => 0,
        }
    }
}

/// Runs every job on `pool`, writing each record in order (its standard-output bytes, and a
/// message for standard error), under the progress bar the plan asks for.
fn execute<J: Size + Sync, R: RecordStatus + Send>(
    plan: &SumPlan,
    pool: &ThreadPool,
    jobs: &[J],
    work: impl Fn(&J) -> R + Sync,
    write: impl Fn(&R) -> (Vec<u8>, Option<String>),
) -> Result<Status, RunError> {
    let total = if plan.progress { jobs.iter().map(Size::size).sum() } else { 0 };
    let progress = progress::bar(plan.progress, jobs.len(), total, source::bytes_read);
    let result = write_in_order(pool, jobs, work, write, &progress);
    progress::finish(&progress);
    let (failed, out_of_time) = result?;
    Ok(if out_of_time { Status::OutOfTime } else { Status::from_failed(failed) })
}

/// Runs every job, writing records in order. Returns whether any record failed, and whether
/// any was cut short by the time budget.
fn write_in_order<J: Sync, R: RecordStatus + Send>(
    pool: &ThreadPool,
    jobs: &[J],
    work: impl Fn(&J) -> R + Sync,
    write: impl Fn(&R) -> (Vec<u8>, Option<String>),
    progress: &ProgressBar,
) -> Result<(bool, bool), RunError> {
    let mut out = Output::default();
    let mut failed = false;
    let mut out_of_time = false;
    ordered::for_each_ordered(
        pool,
        jobs.len(),
        |i| work(&jobs[i]),
        |record| {
            failed |= record.failed();
            out_of_time |= record.out_of_time();
            let (bytes, message) = write(&record);
            progress.suspend(|| {
                if let Some(message) = message {
                    crate::warn!("{message}");
                }
                out.record(&bytes)
            })?;
            progress.inc(1);
            Ok::<(), RunError>(())
        },
    )?;
    Ok((failed, out_of_time))
}

/// Hashes one path job into its record. Never panics on bad input: every failure is a record.
fn path_record(job: &PathJob, config: &HashConfig) -> PathRecord {
    match job {
        PathJob::File { display, path } => PathRecord::File {
            path: display.clone(),
            result: path.clone().and_then(|p| hash::hash_path(&p, config)),
        },
        PathJob::Stdin => PathRecord::File {
            path: b"-".to_vec(),
            result: hash::hash_reader(&mut io::stdin().lock(), config),
        },
        PathJob::Tree { display, files } => {
            let (count, result) = match files {
                Ok(files) => (files.len(), group::hash_files(files, config)),
                Err(f) => (0, Err(f.clone())),
            };
            PathRecord::Tree { path: display.clone(), files: count, result }
        }
    }
}

/// Hashes one job of a JSON run into its record.
fn record(job: &Job, config: &HashConfig) -> Record {
    match job {
        Job::Path(job) => Record::Path(path_record(job, config)),
        Job::Group { id, files } => group_record(id, files, config),
        Job::BadLine { line, failure } => Record::BadLine { line: *line, failure: failure.clone() },
    }
}

/// A group's record. A file whose size is not the one its line gives is not read; one whose
/// size changed between that check and its read loses its code (and the group its code).
fn group_record(id: &str, files: &[GroupFile], config: &HashConfig) -> Record {
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
        FailureKind::SizeMismatch,
        format!("{what}: the file has {actual} bytes, its group line says {expected} (the size recorded at import)"),
    )
}
