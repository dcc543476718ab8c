//! One module per subcommand, each with a `run`. Shared here: loading the environments a
//! command works on, with every diagnostic printed.

pub mod apply;
pub mod canary;
pub mod destroy;
pub mod diff;
pub mod eks;
pub mod finalize;
pub mod history;
pub mod init;
pub mod plan;
pub mod render;
pub mod retire;
pub mod rollback;
pub mod scale;
pub mod schema;
pub mod status;
pub mod target;
pub mod validate;

use std::path::Path;

use crate::cli::{Cli, Command, EksCommand};
use crate::env::diagnostic::{Diagnostic, Diagnostics};
use crate::env::{self, Environment, schema::nearest};
use crate::error::{Error, Result};

/// Runs the command the arguments name.
pub fn run(cli: Cli) -> Result<()> {
    let root = cli.root;
    match cli.command {
        Command::Init(args) => init::run(&root, &args),
        Command::Render(args) => render::run(&root, &args),
        Command::Validate(args) => validate::run(&root, &args),
        Command::Plan(args) => plan::run(&root, &args),
        Command::Schema => schema::run(),
        Command::Apply(args) => block_on(apply::run(&root, &args)),
        Command::Rollback(args) => block_on(rollback::run(&root, &args)),
        Command::Finalize(args) => block_on(finalize::run(&root, &args)),
        Command::Promote(args) => block_on(canary::run(&root, &args, true)),
        Command::Abort(args) => block_on(canary::run(&root, &args, false)),
        Command::Status(args) => block_on(status::run(&root, &args)),
        Command::Retire(args) => block_on(retire::run(&root, &args)),
        Command::Scale(args) => block_on(scale::run(&root, &args)),
        Command::History(args) => block_on(history::run(&root, &args)),
        Command::Completion { shell } => {
            let mut command = <crate::cli::Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "infra-gen", &mut script);
            crate::out!("{}", String::from_utf8_lossy(&script));
            Ok(())
        }
        Command::Diff(args) => block_on(diff::run(&root, &args)),
        Command::Destroy(args) => block_on(destroy::run(&root, &args)),
        Command::Eks(EksCommand::Token(args)) => block_on(eks::token(&args)),
        Command::Eks(EksCommand::Kubeconfig(args)) => block_on(eks::kubeconfig(&args)),
    }
}

/// Cluster and AWS commands are async; the rest of the tool is not.
fn block_on<F: std::future::Future<Output = Result<()>>>(future: F) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(future)
}

/// Loads every environment of `root/environments`, prints the warnings, and fails with all
/// errors at once. With `selected`, returns only those (unknown names are an error that
/// suggests the nearest one).
pub fn load_environments(
    root: &Path,
    selected: &[String],
    instance: Option<&str>,
) -> Result<Vec<Environment>> {
    let loaded = env::load(&root.join("environments"), instance);
    let mut diagnostics = loaded.diagnostics;
    // File order: a reader fixes them top to bottom.
    diagnostics.sort_by(|a, b| a.span.cmp(&b.span));
    let (errors, warnings): (Vec<Diagnostic>, Vec<Diagnostic>) =
        diagnostics.into_iter().partition(Diagnostic::is_error);
    for warning in &warnings {
        eprintln!("{warning}");
    }
    if !errors.is_empty() {
        return Err(Error::Environments(Diagnostics(errors)));
    }
    if let Some(instance) = instance {
        let not_review: Vec<&str> = loaded
            .environments
            .iter()
            .filter(|e| selected.contains(&e.name) && !e.spec.review)
            .map(|e| e.name.as_str())
            .collect();
        if !not_review.is_empty() {
            return Err(Error::Usage(format!(
                "--instance {instance} was given, but {} is not a review environment; add `review: true` to its file, or drop --instance",
                not_review.join(", ")
            )));
        }
        if selected.is_empty() {
            return Ok(loaded
                .environments
                .into_iter()
                .filter(|e| e.spec.review)
                .collect());
        }
    }
    if selected.is_empty() {
        return Ok(loaded.environments);
    }
    let names: Vec<&str> = loaded
        .environments
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    for wanted in selected {
        if !names.contains(&wanted.as_str()) {
            let hint = match nearest(wanted, names.iter().copied()) {
                Some(near) => format!("did you mean `{near}`? "),
                None => String::new(),
            };
            return Err(Error::Usage(format!(
                "no environment {wanted:?} (no environments/{wanted}.yaml); {hint}environments: {}",
                names.join(", ")
            )));
        }
    }
    Ok(loaded
        .environments
        .into_iter()
        .filter(|e| selected.contains(&e.name))
        .collect())
}
