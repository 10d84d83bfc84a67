//! The commands of the `omero-iscc` binary. Each runs its plan and returns `Result<Status,
//! RunError>`: the status of a run that reached its end, or the error that ended it early (see
//! `exit`).

pub mod check;
pub mod index;
pub mod pixels;
pub mod selftest;
pub mod similar;
pub mod sum;

use crate::exit::{RunError, Status};
use crate::plan::Plan;

/// Runs the command the plan is for.
pub fn run(plan: Plan) -> Result<Status, RunError> {
    match plan {
        Plan::Sum(plan) => sum::run(&plan),
        Plan::Check(plan) => check::run(&plan),
        Plan::Selftest => selftest::run(),
        Plan::Similar(plan) => similar::run(&plan),
        Plan::Pixels(plan) => pixels::run(&plan),
        Plan::Index(plan) => index::run(&plan),
    }
}
