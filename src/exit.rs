//! Exit statuses shared by every command.

/// What the process reports to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Every record succeeded.
    Success = 0,
    /// At least one record failed; all others were still produced.
    Failure = 1,
    /// The command line or its inputs could not be used at all.
    Usage = 2,
}

impl Status {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An error that ends a command before any record, with the status to exit with.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Shorthand for a usage error as an `anyhow::Error`-free result.
pub fn usage<T>(message: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(message.into()))
}
