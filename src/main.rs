//! `omero-iscc`: parse the command line, run the command, exit with its status.

use clap::Parser;
use omero_iscc::cli::{Cli, Command};
use omero_iscc::exit::Status;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Sum(args) => omero_iscc::sum::run(args),
        Command::Check(args) => omero_iscc::check::run(args),
        Command::Selftest => Ok(omero_iscc::selftest::run()),
        Command::Similar(args) => omero_iscc::similar::run(args),
    };
    let status = result.unwrap_or_else(|e| {
        eprintln!("omero-iscc: {e}");
        Status::Usage
    });
    ExitCode::from(status.code())
}
