//! The commands of the `omero-iscc` binary. Each returns `Result<Status, Error>`: the status of
//! a run that reached its end, or the error that ended it early (see `exit`).

pub mod check;
pub mod index;
pub mod pixels;
pub mod selftest;
pub mod similar;
pub mod sum;

use crate::cli::{Cli, Command};
use crate::exit::{Error, Status};

/// Runs the command the user chose.
pub fn run(cli: &Cli) -> Result<Status, Error> {
    match &cli.command {
        Command::Sum(args) => sum::run(args),
        Command::Check(args) => check::run(args),
        Command::Selftest => selftest::run(),
        Command::Similar(args) => similar::run(args),
        Command::Pixels(args) => pixels::run(args),
        Command::Index(args) => index::run(args),
    }
}
