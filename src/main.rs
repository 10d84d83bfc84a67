//! `omero-iscc`: parse the command line, make the plan, run it, exit with its status.

use clap::Parser;
use omero_iscc::cli::Cli;
use omero_iscc::plan::Plan;
use std::process::ExitCode;

fn main() -> ExitCode {
    let run = omero_iscc::streams::check_stdout()
        .and_then(|()| Plan::new(Cli::parse()))
        .and_then(omero_iscc::commands::run);
    let status = match run {
        Ok(status) => status,
        Err(error) => {
            if let Some(message) = error.message() {
                omero_iscc::warn!("{message}");
            }
            error.status()
        }
    };
    ExitCode::from(status.code())
}
