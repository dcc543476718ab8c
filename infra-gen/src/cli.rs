//! Command-line interface: one args struct per command; doc comments are the `--help` text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Renders environment files into a committed Kubernetes manifests tree and applies it to EKS
/// with a zero-downtime blue-green cutover.
#[derive(Debug, Parser)]
#[command(
    name = "infra-gen",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("INFRA_GEN_COMMIT"), ")"),
    propagate_version = true,
    after_help = "Exit codes: 0 done; 1 failed; 2 bad input (nothing written); 3 another run holds the deploy lock; 4 aborted before moving traffic (traffic untouched); 5 traffic needs a look (a move back not confirmed, a rolling update stopped half-way); 6 cluster or AWS unreachable; 141 output pipe closed."
)]
pub struct Cli {
    /// Repository root holding `environments/`, `manifests/` and optional `templates/`.
    #[arg(long, global = true, env = "INFRA_GEN_ROOT", default_value = ".")]
    pub root: PathBuf,

    /// More log lines on stderr: -v retries and lock renewals, -vv the API requests
    /// (RUST_LOG, e.g. `infra_gen=debug,kube=info`, overrides both flags).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr (no warnings).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log filter: RUST_LOG when set, else warnings (-q: errors; -v: info; -vv: debug).
    pub fn log_filter(&self) -> String {
        if let Ok(filter) = std::env::var("RUST_LOG")
            && !filter.trim().is_empty()
        {
            return filter;
        }
        // The Kubernetes client logs every failed try itself; infra-gen says what failed once.
        match (self.quiet, self.verbose) {
            (true, _) => "off,infra_gen=error".into(),
            (false, 0) => "off,infra_gen=warn".into(),
            (false, 1) => "off,infra_gen=info".into(),
            (false, _) => "warn,infra_gen=debug,kube_client=debug".into(),
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a repository here: environment files with one workload, the schema, a
    /// .gitlab-ci.yml using the deploy component, and the rendered manifests/.
    Init(InitArgs),
    /// Render environments into `manifests/<env>/` (or check the committed tree with --check).
    Render(RenderArgs),
    /// Check the environment files only (structure and rules), render nothing.
    Validate(ValidateArgs),
    /// Show, per environment: namespace, workloads, replicas/HPA range, Fargate size, hosts.
    Plan(PlanArgs),
    /// Print the JSON Schema of the environment file format (editors use it for completion).
    Schema,
    /// Apply an environment's tree to its cluster, with the blue-green cutover.
    Apply(ApplyArgs),
    /// Switch blue-green workloads back to the release that was live before.
    Rollback(RollbackArgs),
    /// Scale down the previous slot of blue-green workloads once their delay has passed.
    Finalize(FinalizeArgs),
    /// Move every request to the grey release (`rollout.canary`) and remove its header rule.
    Promote(CanaryArgs),
    /// Give the grey release up: remove its header rule, scale its slot down.
    Abort(CanaryArgs),
    /// Show what runs: slots, revisions, ready replicas, HPA, weights, last releases.
    Status(StatusArgs),
    /// Remove an old version of a stateful workload (never the one taking new connections).
    #[command(disable_version_flag = true)]
    Retire(RetireArgs),
    /// Raise an HPA's minimum until a time (an announced event), or end that early (--clear).
    Scale(ScaleArgs),
    /// List the releases recorded in the cluster (deploys, rollbacks, promotions), newest first.
    History(StatusArgs),
    /// Print a shell completion script: `infra-gen completion bash > /etc/bash_completion.d/infra-gen`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show what apply would change (server-side dry run against the live objects).
    Diff(DiffArgs),
    /// Delete a review environment instance (its namespace and everything in it).
    Destroy(TargetArgs),
    /// EKS credentials for kubectl and for this tool.
    #[command(subcommand)]
    Eks(EksCommand),
}

/// The workload kinds `init` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitKind {
    /// An HTTP service behind an ALB, released blue-green.
    Web,
    /// A TCP service behind an NLB, released blue-green.
    Tcp,
    /// Game servers players stay connected to: each release runs beside the old ones.
    Stateful,
    /// A background worker (rolling updates).
    Worker,
    /// A scheduled job.
    Cron,
}

/// `infra-gen init`.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// The kind of the workload to start with.
    #[arg(long, value_enum)]
    pub kind: InitKind,
    /// An environment (repeatable, e.g. `--env staging --env production`): the first deploys
    /// on every push to the default branch, the others by hand.
    #[arg(long = "env", value_name = "NAME", required = true)]
    pub envs: Vec<String>,
    /// The EKS cluster of the environments (edit each file for several clusters).
    #[arg(long, value_name = "NAME")]
    pub cluster: String,
    /// Its AWS region, e.g. ap-northeast-1.
    #[arg(long, value_name = "REGION")]
    pub region: String,
    /// The GitLab project's numeric id (the namespace is `<project>-<id>`).
    #[arg(long, value_name = "ID")]
    pub project_id: u64,
    /// The project's name (default: this directory's name).
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
    /// The workload's name (default: the project's).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The container registry the cluster pulls from with CI_REGISTRY_USER/PASSWORD.
    #[arg(
        long,
        value_name = "HOST",
        default_value = "registry.gitlab.example.com"
    )]
    pub registry: String,
    /// Print what would be written, write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Which environment and cluster a cluster command works on.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The environment (`environments/<NAME>.yaml`).
    #[arg(long = "env", value_name = "NAME")]
    pub env: String,
    /// Review instance, e.g. `mr-42` (review environments only).
    #[arg(long, value_name = "ID")]
    pub instance: Option<String>,
    /// Kubeconfig to use instead of the environment's EKS cluster (default: $KUBECONFIG,
    /// which may list several files, merged as kubectl merges them).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Use the kubeconfig's cluster even though it cannot be confirmed to be the environment's
    /// EKS cluster (a local cluster): said loudly. Without it, a kubeconfig must reach the
    /// endpoint, with the CA, that EKS DescribeCluster gives for `cluster: {name, region}`.
    #[arg(long)]
    pub any_cluster: bool,
}

/// How traffic moves are checked against the AWS load balancer.
#[derive(Debug, Clone, Args)]
pub struct LbArgs {
    /// Move traffic without checking the load balancer: through ELBv2 (targets healthy, rule
    /// weights applied, targets drained), or with `traffic.provider: gateway-api` the
    /// HTTPRoute's status and the Services' endpoints. For clusters without the AWS Load
    /// Balancer Controller or a CI role without elasticloadbalancing:Describe*. Said loudly
    /// and recorded in the release history.
    #[arg(long)]
    pub no_verify_lb: bool,
    /// How long the controller may take to apply new ALB weights (or a Gateway to accept the
    /// HTTPRoute) before they are moved back.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub lb_converge_timeout: std::time::Duration,
    /// With --no-verify-lb: how long to wait after moving ALB traffic away from a slot before
    /// that slot is scaled down or replaced (the controller's usual time to apply a change;
    /// with the checks on, the weights are read back from the ALB instead).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub lb_unverified_wait: std::time::Duration,
}

/// `infra-gen apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Environment, instance, kubeconfig.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Load-balancer checks.
    #[command(flatten)]
    pub lb: LbArgs,
    /// How long a new version may take to become ready (e.g. 10m, 90s).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Apply the committed tree even if it differs from what the environment files render.
    #[arg(long)]
    pub allow_drift: bool,
    /// Do not ask EKS whether a Fargate profile selects the namespace.
    #[arg(long)]
    pub skip_fargate_check: bool,
    /// Keep objects of this environment that are no longer in the tree.
    #[arg(long)]
    pub no_prune: bool,
    /// Switch a workload behind a load balancer between rolling and blue-green although
    /// the switch moves every request at once to target groups whose targets are still
    /// registering (see `infra-gen plan`): for a quiet moment.
    #[arg(long)]
    pub allow_strategy_change: bool,
}

/// `infra-gen rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Environment, instance, kubeconfig.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Load-balancer checks.
    #[command(flatten)]
    pub lb: LbArgs,
    /// How long the previous version may take to become ready again.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Undo this revision (git commit; the CI job passes `$CI_COMMIT_SHA`): workloads where it
    /// is not live are left alone, so a retried rollback never goes back further. Default:
    /// the newest deploy that is live.
    #[arg(long, value_name = "COMMIT")]
    pub revision: Option<String>,
}

/// `infra-gen promote` / `infra-gen abort`.
#[derive(Debug, Args)]
pub struct CanaryArgs {
    /// Environment, instance, kubeconfig.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Load-balancer checks.
    #[command(flatten)]
    pub lb: LbArgs,
    /// How long a slot may take to become ready (promote: the canary slot sized to the live load).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// Only a canary of this revision (git commit; the CI job passes `$CI_COMMIT_SHA`), so a
    /// job of an older pipeline never promotes or aborts a newer canary. Default: the one
    /// that runs.
    #[arg(long, value_name = "COMMIT")]
    pub revision: Option<String>,
}

/// `infra-gen finalize`.
#[derive(Debug, Args)]
pub struct FinalizeArgs {
    /// Environment, instance, kubeconfig.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Load-balancer checks.
    #[command(flatten)]
    pub lb: LbArgs,
    /// Scale down now, even before the scale-down delay has passed.
    #[arg(long)]
    pub now: bool,
}

/// `infra-gen retire`.
#[derive(Debug, Args)]
pub struct RetireArgs {
    /// Environment, instance, kubeconfig.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Load-balancer checks (its targets drain first).
    #[command(flatten)]
    pub lb: LbArgs,
    /// The stateful workload.
    #[arg(long, value_name = "NAME")]
    pub workload: String,
    /// The version to remove, as `infra-gen status` lists it (`2-6-0`) or as its tag (`2.6.0`).
    #[arg(long, value_name = "VERSION")]
    pub version: String,
}

/// `infra-gen diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Environment, instance, kubeconfig.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Exit 1 when something would change (0: nothing; above 1: an error), as `kubectl diff`.
    #[arg(long)]
    pub exit_code: bool,
    /// `table` (default: unified diffs) or `json` (one entry per object that would change).
    #[arg(long, short = 'o', value_enum, default_value_t = PlanFormat::Table)]
    pub output: PlanFormat,
    /// Needs no secret CI variables (a reviewer's machine, a merge request pipeline): Secrets
    /// are compared by their keys only, their values are "not compared".
    #[arg(long)]
    pub without_secret_values: bool,
}

/// `infra-gen scale`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["min", "clear"])))]
pub struct ScaleArgs {
    /// Environment, instance, kubeconfig.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The autoscaled workload (default: the only one of the environment).
    #[arg(long, value_name = "NAME")]
    pub workload: Option<String>,
    /// Fewest replicas until --until (deploys keep it; raises the maximum if below).
    #[arg(long, value_name = "N", requires = "until")]
    pub min: Option<u32>,
    /// When the raise ends: RFC 3339 (`2026-12-09T12:00:00+09:00`) or a duration from now
    /// (`3h`, `90m`).
    #[arg(long, value_name = "TIME", value_parser = parse_until)]
    pub until: Option<jiff::Timestamp>,
    /// End the current raise now: back to the bounds of the file (and any window in force).
    #[arg(long, conflicts_with_all = ["min", "until"])]
    pub clear: bool,
}

/// An instant: RFC 3339 with an offset, or a duration from now.
pub fn parse_until(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    match crate::duration::parse(text) {
        Ok(d) if d.is_positive() => jiff::Timestamp::now()
            .checked_add(d)
            .map_err(|e| e.to_string()),
        _ => Err(format!(
            "{text:?} is neither a time like 2026-12-09T12:00:00+09:00 nor a duration like 3h"
        )),
    }
}

/// `infra-gen status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Environment, instance, kubeconfig.
    #[command(flatten)]
    pub target: TargetArgs,
    /// `table` (default) or `json`.
    #[arg(long, short = 'o', value_enum, default_value_t = PlanFormat::Table)]
    pub output: PlanFormat,
}

/// `infra-gen eks …`.
#[derive(Debug, Subcommand)]
pub enum EksCommand {
    /// Print an ExecCredential with a bearer token for the cluster (a kubeconfig exec plugin).
    Token(EksArgs),
    /// Write a kubeconfig whose user runs `infra-gen eks token`.
    Kubeconfig(KubeconfigArgs),
}

/// The EKS cluster.
#[derive(Debug, Args)]
pub struct EksArgs {
    /// EKS cluster name.
    #[arg(long)]
    pub cluster: String,
    /// AWS region (default: $AWS_REGION).
    #[arg(long, env = "AWS_REGION")]
    pub region: String,
}

/// `infra-gen eks kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The cluster.
    #[command(flatten)]
    pub eks: EksArgs,
    /// Where to write it (default: standard output).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Parses `10m`, `90s`, `1h` or seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse_std(text)
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
