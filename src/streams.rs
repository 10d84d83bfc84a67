//! The run's shared resources, in one place for every command: inputs opened by name with
//! standard input claimed at most once, the thread pool, standard output with its
//! broken-pipe rule, and standard error that never stops a run.
//!
//! The rule for output: a record is written whole and flushed; a closed pipe ends the run
//! quietly with [`Status::Incomplete`](crate::exit::Status); any other write error ends it
//! with a message and the same status. Messages on standard error are best effort: a closed
//! standard error never stops records from reaching standard output.

use crate::exit::{usage, Error};
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;

/// Most threads a run starts, whatever is asked: `--threads` above this is capped.
pub const MAX_THREADS: usize = 1024;
/// Threads per core beyond which more only cost memory.
const THREADS_PER_CORE: usize = 4;

/// Writes one message line on standard error, `omero-iscc: ` first; errors are ignored.
pub fn warn(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(format_args!("omero-iscc: {args}\n"));
}

/// `warn!("...")`: a best-effort message on standard error (see [`warn`]).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::streams::warn(format_args!($($arg)*)) };
}

/// Whether `name` is `-`, standard input.
pub fn is_stdin(name: &OsStr) -> bool {
    name.as_bytes() == b"-"
}

/// Opens the inputs a command names; standard input can be claimed once per run.
#[derive(Debug, Default)]
pub struct Inputs {
    stdin_claimed_by: Option<String>,
}

impl Inputs {
    /// Claims standard input for `what` (an option or argument); a second claim is a usage
    /// error.
    pub fn claim_stdin(&mut self, what: &str) -> Result<(), Error> {
        match &self.stdin_claimed_by {
            Some(first) => {
                usage(format!("standard input ('-') can be used only once (by {first} and by {what})"))
            }
            None => {
                self.stdin_claimed_by = Some(what.to_string());
                Ok(())
            }
        }
    }

    /// Opens a file of lines named by the user (`-`: standard input) for `what`.
    pub fn open(&mut self, name: &OsStr, what: &str) -> Result<Box<dyn BufRead + Send>, Error> {
        if is_stdin(name) {
            self.claim_stdin(what)?;
            return Ok(Box::new(BufReader::new(io::stdin())));
        }
        if name.is_empty() {
            return usage(format!("{what}: an empty path names no file"));
        }
        File::open(name)
            .map(|f| Box::new(BufReader::new(f)) as Box<dyn BufRead + Send>)
            .map_err(|e| Error::Usage(format!("{what} {}: {}", name.to_string_lossy(), plain(&e))))
    }
}

/// "No such file or directory (os error 2)" → "No such file or directory".
pub fn plain(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The worker threads of a run: `threads` if given (capped at 4 × cores and at
/// [`MAX_THREADS`], with a message), else one per core.
pub fn pool(threads: Option<u16>) -> Result<rayon::ThreadPool, Error> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cap = (THREADS_PER_CORE * cores).min(MAX_THREADS);
    let threads = match threads.map(usize::from) {
        None => cores,
        Some(n) if n > cap => {
            warn!("--threads {n} is more than {THREADS_PER_CORE} × the {cores} core(s) here; using {cap}");
            cap
        }
        Some(n) => n,
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("omero-iscc-{i}"))
        .build()
        .map_err(|e| Error::Usage(format!("cannot start {threads} threads: {e}")))
}

/// Standard output of a run, written a record at a time.
pub struct Output {
    out: io::StdoutLock<'static>,
}

impl Default for Output {
    fn default() -> Self {
        Output { out: io::stdout().lock() }
    }
}

impl Output {
    /// Writes one record's bytes and flushes them, so a reader sees each record as soon as
    /// it is ready (and a closed pipe is noticed at once).
    pub fn record(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.out.write_all(bytes).and_then(|_| self.out.flush()).map_err(Error::from_write)
    }

    /// The underlying writer, for output built piece by piece; pair it with [`Output::flush`].
    pub fn writer(&mut self) -> &mut dyn Write {
        &mut self.out
    }

    pub fn flush(&mut self) -> Result<(), Error> {
        self.out.flush().map_err(Error::from_write)
    }
}

/// Maps a write error to the run's [`Error`] (for `?` on `io::Result`).
pub fn written<T>(result: io::Result<T>) -> Result<T, Error> {
    result.map_err(Error::from_write)
}
