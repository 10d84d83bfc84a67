//! The run's shared resources, in one place for every command: inputs opened by name with
//! standard input claimed at most once, the thread pool, standard output with its
//! broken-pipe rule, and standard error that never stops a run.
//!
//! The rule for output: a record is written whole and flushed; a closed pipe ends the run
//! quietly with [`Status::Incomplete`](crate::exit::Status); any other write error ends it
//! with a message and the same status. Messages on standard error are best effort: a closed
//! standard error never stops records from reaching standard output.

use crate::cli::Priority;
use crate::exit::{usage, Error};
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

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
        self.open_claiming(name, what, what)
    }

    /// [`Inputs::open`] for the `n`th (from 1) of several arguments called `what`, so that a
    /// second claim on standard input says which arguments made both.
    pub fn open_nth(&mut self, name: &OsStr, what: &str, n: usize) -> Result<Box<dyn BufRead + Send>, Error> {
        self.open_claiming(name, what, &format!("{what} {n}"))
    }

    fn open_claiming(
        &mut self,
        name: &OsStr,
        what: &str,
        claim: &str,
    ) -> Result<Box<dyn BufRead + Send>, Error> {
        if is_stdin(name) {
            self.claim_stdin(claim)?;
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

/// Lowers this process's CPU and I/O priority for `Priority::Low`: nice 10 and the lowest
/// level of best-effort I/O, never raising a priority that is already lower. Called before any
/// thread is started: Linux keeps both per thread, and new threads inherit them.
pub fn set_priority(priority: Priority) {
    if priority == Priority::Normal {
        return;
    }
    const NICE: libc::c_int = 10;
    // SAFETY: getpriority/setpriority only read and change this thread's nice value; errno is
    // cleared first because -1 is also a valid priority.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if nice < NICE
            && io::Error::last_os_error().raw_os_error() == Some(0)
            && libc::setpriority(libc::PRIO_PROCESS, 0, NICE) != 0
        {
            warn!("cannot lower the CPU priority: {}", plain(&io::Error::last_os_error()));
        }
    }
    // ioprio_get/ioprio_set (linux/ioprio.h): the class in the top bits, the level below.
    const WHO_PROCESS: libc::c_long = 1;
    const CLASS_SHIFT: libc::c_long = 13;
    const CLASS_BEST_EFFORT: libc::c_long = 2;
    const CLASS_IDLE: libc::c_long = 3;
    const LOWEST_LEVEL: libc::c_long = 7;
    // SAFETY: both system calls take plain integers and touch only this thread's I/O priority.
    unsafe {
        let current = libc::syscall(libc::SYS_ioprio_get, WHO_PROCESS, 0);
        let (class, level) = (current >> CLASS_SHIFT, current & ((1 << CLASS_SHIFT) - 1));
        let lower_already = class == CLASS_IDLE || (class == CLASS_BEST_EFFORT && level >= LOWEST_LEVEL);
        let low = (CLASS_BEST_EFFORT << CLASS_SHIFT) | LOWEST_LEVEL;
        if current >= 0 && !lower_already && libc::syscall(libc::SYS_ioprio_set, WHO_PROCESS, 0, low) != 0 {
            warn!("cannot lower the I/O priority: {}", plain(&io::Error::last_os_error()));
        }
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

/// Whether descriptor 1 was closed when the process started.
static STDOUT_CLOSED_AT_START: AtomicBool = AtomicBool::new(false);

/// Runs before `main`, and so before Rust's runtime, which opens `/dev/null` on a closed
/// descriptor 0, 1 or 2: afterwards a closed standard output looks like `>/dev/null`.
/// (glibc calls the functions of `.init_array` before `main`, static binaries included.)
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static NOTE_CLOSED_STDOUT: extern "C" fn() = note_closed_stdout;

#[cfg(target_os = "linux")]
extern "C" fn note_closed_stdout() {
    // SAFETY: F_GETFD only asks whether the descriptor is open; nothing is changed.
    let open = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_GETFD) } != -1;
    if !open {
        STDOUT_CLOSED_AT_START.store(true, Ordering::Relaxed);
    }
}

/// `Err(NoOutput)` when standard output was closed as the process started (`>&-`), where the
/// platform lets that be told apart from a standard output on `/dev/null`.
pub fn check_stdout() -> Result<(), Error> {
    // The reference keeps the constructor (and the object that holds it) in every link.
    #[cfg(target_os = "linux")]
    std::hint::black_box(&NOTE_CLOSED_STDOUT);
    if STDOUT_CLOSED_AT_START.load(Ordering::Relaxed) {
        return Err(Error::NoOutput);
    }
    Ok(())
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
