//! `omero-iscc`: parse the command line, run the command, exit with its status.

use clap::Parser;
use omero_iscc::cli::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let run = omero_iscc::streams::check_stdout().and_then(|()| omero_iscc::commands::run(&Cli::parse()));
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
