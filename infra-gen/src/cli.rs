//! Command-line interface: one args struct per command; doc comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Renders environment files into a committed Kubernetes manifests tree and applies it to EKS
/// with a zero-downtime blue-green cutover.
#[derive(Debug, Parser)]
#[command(name = "infra-gen", version, propagate_version = true)]
pub struct Cli {
    /// Repository root holding `environments/`, `manifests/` and optional `templates/`.
    #[arg(long, global = true, env = "INFRA_GEN_ROOT", default_value = ".")]
    pub root: PathBuf,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render environments into `manifests/<env>/` (or check the committed tree with --check).
    Render(RenderArgs),
    /// Check the environment files only (structure and rules), render nothing.
    Validate(ValidateArgs),
    /// Show, per environment: namespace, workloads, replicas/HPA range, Fargate size, hosts.
    Plan(PlanArgs),
    /// Print the JSON Schema of the environment file format (editors use it for completion).
    Schema,
}

/// `infra-gen render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Only these environments (repeatable); default: all of them.
    #[arg(long = "env", value_name = "NAME")]
    pub envs: Vec<String>,
    /// Review instance (e.g. `mr-42`) for a review environment; needs --output.
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// Write nothing; exit 1 listing every file that differs, is missing or is stale, and
    /// every environment file or manifest that is not committed.
    #[arg(long)]
    pub check: bool,
    /// Write into this directory instead of `manifests/` (e.g. a review instance).
    #[arg(long, value_name = "DIR", conflicts_with = "check")]
    pub output: Option<PathBuf>,
}

/// `infra-gen validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Review instance to validate a review environment for.
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
}

/// Output format of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PlanFormat {
    /// A table per environment, for people.
    #[default]
    Table,
    /// One JSON document, for scripts.
    Json,
}

/// `infra-gen plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// `table` (default) or `json`.
    #[arg(long, short = 'o', value_enum, default_value_t = PlanFormat::Table)]
    pub output: PlanFormat,
    /// Only these environments (repeatable); default: all of them.
    #[arg(long = "env", value_name = "NAME")]
    pub envs: Vec<String>,
    /// Review instance for review environments.
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
}
