//! The `similar` command (placeholder until its module lands in this change).
use crate::cli::SimilarArgs;
use crate::exit::{Status, UsageError};

pub fn run(_args: &SimilarArgs) -> Result<Status, UsageError> {
    Err(UsageError("similar: not built yet".into()))
}
