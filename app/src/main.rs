//! `controltower`: parses settings, sets up logging, serves until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use controltower::config::Settings;
use controltower::startup::Application;
use controltower::telemetry;

/// mimalloc instead of glibc's malloc: a check-in allocates and frees a few dozen small
/// buffers (headers, body, JSON, the log line), and glibc's free lists cost about a tenth of
/// the service's CPU in the spike (profile in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse();
    let _log_writer = telemetry::init_tracing(settings.log_format, &settings.log_level);
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "controltower stopped");
            eprintln!("controltower: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

/// Completes on SIGTERM (Kubernetes) or Ctrl-C (a terminal).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
