//! `infra-gen`: parses arguments, runs the command, prints the whole error chain once.

use std::process::ExitCode;

use clap::Parser;
use infra_gen::cli::Cli;
use infra_gen::error::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(cli.log_filter()).unwrap_or_else(|e| {
        eprintln!("infra-gen: RUST_LOG is not a log filter ({e}); using warn");
        tracing_subscriber::EnvFilter::new("warn")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match infra_gen::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match &error {
                // Each diagnostic already says file:line:column; no prefix in front of the first.
                Error::Environments(diagnostics) => eprintln!("{diagnostics}"),
                // `diff --exit-code`: the diff said it all.
                Error::Differences(_) => {}
                other => eprintln!("infra-gen: {other}"),
            }
            if error.exit_code() == infra_gen::error::exit::UNREACHABLE
                && let Some(server) = infra_gen::cluster::connect::server()
            {
                eprintln!("  the API server: {server}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}
