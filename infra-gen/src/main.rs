//! `infra-gen`: parses arguments, runs the command, prints the whole error chain once.

use std::process::ExitCode;

use clap::Parser;
use infra_gen::cli::Cli;
use infra_gen::error::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match infra_gen::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Environments(diagnostics)) => {
            // Each diagnostic already says file:line:column; no prefix in front of the first.
            eprintln!("{diagnostics}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("infra-gen: {error}");
            ExitCode::FAILURE
        }
    }
}
