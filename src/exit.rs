//! Exit statuses, and the errors that end a command early. `main` alone turns them into the
//! process's exit status (with [`Error::status`]); commands only return them.

use std::fmt;
use std::io;

/// What the process reports to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every record succeeded.
    Success = 0,
    /// At least one record failed; all others were still produced.
    Failure = 1,
    /// The command line or its inputs could not be used at all: nothing was done.
    Usage = 2,
    /// The run stopped before every record was written: standard output was closed by its
    /// reader (`| head`), closed when the process started (`>&-`), or could not be written.
    Incomplete = 3,
    /// The run's time budget ran out: every record was written, and those of the files it
    /// did not hash have the error kind `budget` (hash them in a later run).
    OutOfTime = 4,
}

impl Status {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// `Failure` if anything failed, else `Success`.
    pub fn from_failed(failed: bool) -> Status {
        if failed {
            Status::Failure
        } else {
            Status::Success
        }
    }
}

/// Why a command ended before its last record.
#[derive(Debug)]
pub enum Error {
    /// The command line or its inputs cannot be used (a message for the user).
    Usage(String),
    /// Standard output was closed by its reader: the run ends quietly.
    OutputClosed,
    /// Standard output could not be written (disk full, I/O error).
    Output(io::Error),
    /// Standard output was closed before the process started (`>&-`): no record can reach
    /// anyone, so nothing is done.
    NoOutput,
}

impl Error {
    /// The exit status this error ends the process with.
    pub fn status(&self) -> Status {
        match self {
            Error::Usage(_) => Status::Usage,
            Error::OutputClosed | Error::Output(_) | Error::NoOutput => Status::Incomplete,
        }
    }

    /// The message to print, if any (a closed pipe is not worth one).
    pub fn message(&self) -> Option<String> {
        match self {
            Error::Usage(m) => Some(m.clone()),
            Error::OutputClosed => None,
            Error::Output(e) => Some(format!("cannot write output: {e}; the run stopped before its end")),
            Error::NoOutput => Some("standard output is closed: no record can be written".into()),
        }
    }

    /// Classifies a failed write to standard output.
    pub fn from_write(e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Error::OutputClosed
        } else {
            Error::Output(e)
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message().unwrap_or_else(|| "standard output was closed".into()))
    }
}

impl std::error::Error for Error {}

/// Shorthand for a usage error.
pub fn usage<T>(message: impl Into<String>) -> Result<T, Error> {
    Err(Error::Usage(message.into()))
}
