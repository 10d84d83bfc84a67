//! What a run may spend: a time budget (`--time-budget`) and a ceiling on the size of a file
//! (`--max-file-size`).
//!
//! The time budget is checked before each file is opened and again at every window or buffer
//! of a file in progress (at most 32 MiB: a few tens of milliseconds of hashing), so a huge
//! file, sparse or not, is interrupted soon after the budget ends instead of holding the run
//! for hours. Files not finished get a `budget` failure; files above the ceiling a `too_large`
//! one, before any byte of theirs is read.

use crate::error::{ErrorKind, Failure};
use std::time::Instant;

/// A run's limits; the default has none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// When the run stops starting and finishing files.
    pub deadline: Option<Instant>,
    /// Largest file, in bytes, that is read.
    pub max_file_size: Option<u64>,
}

impl Budget {
    /// Whether the time budget has run out.
    pub fn spent(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// `Err(budget)` once the time budget has run out.
    pub fn check_time(&self) -> Result<(), Failure> {
        if self.spent() {
            return Err(out_of_time());
        }
        Ok(())
    }

    /// `Err(too_large)` for a file larger than the ceiling.
    pub fn check_size(&self, size: u64) -> Result<(), Failure> {
        match self.max_file_size {
            Some(max) if size > max => Err(Failure::new(
                ErrorKind::TooLarge,
                format!("not read: {size} bytes is more than --max-file-size {max}"),
            )),
            _ => Ok(()),
        }
    }
}

/// The failure of a file the time budget did not let finish.
pub fn out_of_time() -> Failure {
    Failure::new(ErrorKind::Budget, "not hashed: the run's time budget ran out; hash it in a later run")
}

/// Checks `deadline` (a run's [`Budget::deadline`]) while a file is read.
pub fn check_deadline(deadline: Option<Instant>) -> Result<(), Failure> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(out_of_time()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn limits_hold_only_when_set() {
        let none = Budget::default();
        assert!(none.check_time().is_ok() && none.check_size(u64::MAX).is_ok());
        let past = Budget { deadline: Some(Instant::now()), max_file_size: Some(10) };
        assert_eq!(past.check_time().unwrap_err().kind, ErrorKind::Budget);
        assert!(past.check_size(10).is_ok());
        assert_eq!(past.check_size(11).unwrap_err().kind, ErrorKind::TooLarge);
        let later = Budget { deadline: Some(Instant::now() + Duration::from_secs(60)), max_file_size: None };
        assert!(later.check_time().is_ok());
    }
}
