//! Why one record failed. A failure belongs to its record: the run goes on with the others.

use serde::Serialize;
use std::fmt;
use std::io;

/// The `error.kind` of a failed JSON record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    OutsideRoot,
    NotAFile,
    ChangedWhileReading,
    Io,
    /// A malformed `--groups` line or similar input that names no file.
    InvalidInput,
}

/// A failed record's error: a kind a program can act on and a message a person can read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
            _ if error.raw_os_error() == Some(libc::ENOTDIR) => ErrorKind::NotFound,
            _ if error.raw_os_error() == Some(libc::EISDIR) => ErrorKind::NotAFile,
            _ => ErrorKind::Io,
        };
        Failure::new(kind, strip_os_error(error))
    }
}

/// "No such file or directory (os error 2)" → "No such file or directory".
fn strip_os_error(error: &io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
