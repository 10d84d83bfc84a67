//! Why one record failed. A failure belongs to its record: the run goes on with the others.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::Path;

/// The `error.kind` of a failed JSON record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    OutsideRoot,
    /// A directory, FIFO, device, socket, or a generated file (`/proc`, `/sys`) whose size is
    /// not known before it is read.
    NotAFile,
    ChangedWhileReading,
    Io,
    /// A malformed `--groups` line, an empty path, an unusable `.isccignore` pattern: input
    /// that names no file to hash.
    InvalidInput,
    /// The file's size is not the one its `--groups` line gave (what OMERO recorded at
    /// import): it was not hashed, or its code was withheld.
    SizeMismatch,
    /// The file is larger than `--max-file-size`: it was not read.
    TooLarge,
    /// The run's `--time-budget` ran out before this file was finished (or started): hash it
    /// in a later run.
    Budget,
}

/// A failed record's error: a kind a program can act on and a message a person can read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Failure { kind, message: message.into() }
    }

    /// Classifies an I/O error.
    pub fn io(error: &io::Error) -> Self {
        let kind = match error.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            io::ErrorKind::InvalidData => ErrorKind::InvalidInput,
            _ if error.raw_os_error() == Some(libc::ENOTDIR) => ErrorKind::NotFound,
            _ if error.raw_os_error() == Some(libc::EISDIR) => ErrorKind::NotAFile,
            _ => ErrorKind::Io,
        };
        Failure::new(kind, crate::streams::plain(error))
    }

    /// The same failure, its message naming the file it happened on (for a failure inside a
    /// tree or group, whose record is named by something else).
    pub fn at(self, path: &Path) -> Self {
        self.at_name(&path.to_string_lossy())
    }

    /// [`Failure::at`] for a name as the user wrote it.
    pub fn at_name(self, name: &str) -> Self {
        Failure { kind: self.kind, message: format!("{name}: {}", self.message) }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
