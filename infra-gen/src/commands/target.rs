//! What every cluster command starts with: the environment, its tree (refusing drift), the
//! desired state, and a connection to its namespace.

use std::path::Path;
use std::time::Duration;

use crate::cli::{LbArgs, TargetArgs};
use crate::cluster::connect::{self, Target};
use crate::cluster::lease::{self, Lease};
use crate::cluster::{Cluster, ClusterError};
use crate::env::Environment;
use crate::env::model::TrafficProvider;
use crate::error::{Error, Result};
use crate::rollout::RolloutError;
use crate::rollout::bluegreen::BlueGreen;
use crate::rollout::desired::{self, BlueGreenSpec, Desired, StatefulSpec};
use crate::rollout::progress::Progress;
use crate::rollout::stateful::Stateful;
use crate::rollout::verify::{Checked, LbCheck};
use crate::tree;

/// How `${VARIABLE}`s and secrets are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variables {
    /// Every variable must be set (apply).
    Required,
    /// Unset ones stay as written (commands that never write images or secrets).
    Optional,
}

/// The environment, its desired state and the cluster.
pub struct Session {
    /// The environment.
    pub env: Environment,
    /// What the cluster should hold.
    pub desired: Desired,
    /// The namespace connection.
    pub cluster: Cluster,
    /// Output.
    pub progress: Progress,
    /// The load-balancer checks (`None`: `--no-verify-lb`, or a command that moves no
    /// traffic).
    pub lb: Option<LbCheck>,
    /// Without the checks: how long the controller is given to apply a move of ALB traffic
    /// away from a slot before that slot is scaled down or replaced.
    pub unverified_wait: Duration,
}

/// Sets the session's load-balancer checks from the flags (said loudly when they are off).
pub async fn with_lb(session: &mut Session, args: &LbArgs) {
    session.lb = lb_check(&session.env, args, &session.progress).await;
    session.unverified_wait = args.lb_unverified_wait;
}

/// The load-balancer checks the flags ask for; says it loudly when they are off.
pub async fn lb_check(env: &Environment, args: &LbArgs, progress: &Progress) -> Option<LbCheck> {
    if args.no_verify_lb {
        progress.step("WARNING: --no-verify-lb: traffic moves without checking the load balancer (healthy targets, applied rule weights, drained targets); the release history records it");
        return None;
    }
    let provider = match env.spec.traffic.provider {
        TrafficProvider::Alb => {
            Checked::Elb(crate::elb::Elb::connect(&env.spec.cluster.region).await)
        }
        TrafficProvider::GatewayApi => Checked::GatewayApi,
    };
    Some(LbCheck {
        provider,
        converge: args.lb_converge_timeout,
    })
}

/// Loads the environment and the tree. `allow_drift` applies the committed tree even when it
/// differs from what the environment files render.
pub fn load(
    root: &Path,
    target: &TargetArgs,
    allow_drift: bool,
    variables: Variables,
) -> Result<(Environment, Desired)> {
    let mut environments = super::load_environments(
        root,
        std::slice::from_ref(&target.env),
        target.instance.as_deref(),
    )?;
    let env = environments
        .pop()
        .ok_or_else(|| Error::Usage(format!("no environment {}", target.env)))?;
    if env.spec.review && env.instance.is_none() {
        return Err(Error::Usage(format!(
            "{} is a review environment: give --instance (e.g. mr-42)",
            env.name
        )));
    }
    let manifests = super::render::renderer(root)?.render(&env)?;
    let objects = if env.spec.review {
        // Review instances are rendered on the fly, never committed.
        manifests.into_iter().map(|m| m.body).collect()
    } else {
        let rendered = tree::files(&env, &manifests)?;
        let manifests = root.join("manifests");
        let drift = tree::check(
            &manifests,
            &std::collections::BTreeMap::from([(env.name.clone(), rendered)]),
            false,
        )?;
        if !drift.is_clean() {
            let mut files: Vec<String> = drift
                .differing
                .iter()
                .map(|(p, _)| p.display().to_string())
                .collect();
            files.extend(
                drift
                    .missing
                    .iter()
                    .map(|p| format!("{} (missing)", p.display())),
            );
            files.extend(
                drift
                    .stale
                    .iter()
                    .map(|p| format!("{} (stale)", p.display())),
            );
            if !allow_drift {
                return Err(Error::Usage(format!(
                    "manifests/{} differs from what environments/{}.yaml renders: {}; run `infra-gen render` and commit, or pass --allow-drift to apply the committed tree anyway",
                    env.name,
                    env.name,
                    files.join(", ")
                )));
            }
            eprintln!(
                "warning: applying the committed tree although it drifted: {}",
                files.join(", ")
            );
        }
        desired::read_tree(&manifests.join(&env.name))?
    };
    let lookup = |name: &str| match variables {
        Variables::Required => std::env::var(name).ok(),
        Variables::Optional => std::env::var(name)
            .ok()
            .or_else(|| Some(format!("${{{name}}}"))),
    };
    let desired = desired::build(&env, objects, &lookup, &desired::revision(root))?;
    Ok((env, desired))
}

/// Connects to the environment's namespace.
pub async fn connect(env: &Environment, desired: &Desired, args: &TargetArgs) -> Result<Cluster> {
    let target = Target::choose(
        args.kubeconfig.as_deref(),
        context(env, args)?,
        env.spec.cluster.context.as_deref(),
        &env.spec.cluster.name,
        &env.spec.cluster.region,
    );
    let expect = if args.any_cluster {
        if matches!(target, Target::Kubeconfig { .. }) {
            eprintln!(
                "WARNING: --any-cluster: not checking that {} is EKS cluster {} ({}), which environments/{}.yaml names",
                target.describe(),
                env.spec.cluster.name,
                env.spec.cluster.region,
                env.name
            );
        }
        None
    } else {
        Some((
            env.spec.cluster.name.as_str(),
            env.spec.cluster.region.as_str(),
        ))
    };
    let client = connect::client(&target, expect)
        .await
        .map_err(Error::Cluster)?;
    Ok(Cluster::new(client, &desired.namespace))
}

/// `--context`, refused when the environment file names another context for its cluster.
fn context<'a>(env: &Environment, args: &'a TargetArgs) -> Result<Option<&'a str>> {
    match (args.context.as_deref(), env.spec.cluster.context.as_deref()) {
        (Some(flag), Some(named)) if flag != named && !args.any_cluster => {
            Err(Error::Cluster(ClusterError::Identity(format!(
                "--context {flag}, but environments/{}.yaml names context {named} for cluster {} ({}) at cluster.context: drop --context, or pass --any-cluster to use {flag} anyway",
                env.name, env.spec.cluster.name, env.spec.cluster.region
            ))))
        }
        (flag, _) => Ok(flag),
    }
}

/// Loads and connects.
pub async fn session(
    root: &Path,
    target: &TargetArgs,
    allow_drift: bool,
    variables: Variables,
) -> Result<Session> {
    let (env, desired) = load(root, target, allow_drift, variables)?;
    let cluster = connect(&env, &desired, target).await?;
    Ok(Session {
        env,
        desired,
        cluster,
        progress: Progress::new(),
        lb: None,
        unverified_wait: Duration::ZERO,
    })
}

impl Session {
    /// Makes the session's HPAs carry the bounds in force (windows, an override) before a
    /// command that writes them.
    pub async fn with_capacity(&mut self) -> Result<()> {
        let progress = &self.progress;
        crate::rollout::capacity::settle(&self.cluster, &self.env, &mut self.desired, &|m| {
            progress.step(m)
        })
        .await?;
        Ok(())
    }

    /// The blue-green operations of one workload of this session.
    pub fn blue_green<'a>(
        &'a self,
        spec: &'a BlueGreenSpec,
        timeout: Duration,
        by: &'a str,
    ) -> BlueGreen<'a> {
        BlueGreen {
            cluster: &self.cluster,
            spec,
            progress: &self.progress,
            timeout,
            by,
            revision: &self.desired.revision,
            lb: self.lb.as_ref(),
            unverified_wait: self.unverified_wait,
        }
    }

    /// The operations of one stateful workload of this session.
    pub fn stateful<'a>(
        &'a self,
        spec: &'a StatefulSpec,
        timeout: Duration,
        by: &'a str,
    ) -> Stateful<'a> {
        Stateful {
            cluster: &self.cluster,
            spec,
            progress: &self.progress,
            timeout,
            by,
            revision: &self.desired.revision,
            lb: self.lb.as_ref(),
        }
    }

    /// The revision a rollback without `--revision` undoes: the newest deploy that is live in
    /// some workload. A workload whose live release is another revision is left alone, so a
    /// rollback that failed half-way finishes on a re-run instead of going back further.
    async fn newest_live_deploy(&self) -> Result<Option<String>> {
        let mut newest: Option<(k8s_openapi::jiff::Timestamp, String)> = None;
        for spec in &self.desired.blue_green {
            let state = self.blue_green(spec, Duration::ZERO, "").observe().await?;
            // An interrupted cutover is rolled back by moving back: its release never went live.
            let Some((_, release)) = state.live().and_then(|s| state.release_in(s)) else {
                continue;
            };
            if release.action != "deploy" {
                continue;
            }
            let at = crate::rollout::history::parse_time(&release.at)
                .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
            if newest.as_ref().is_none_or(|(t, _)| at > *t) {
                newest = Some((at, release.revision.clone()));
            }
        }
        Ok(newest.map(|(_, revision)| revision))
    }

    /// Runs `op` on every blue-green workload under the deploy lock (stopping at the first
    /// failure, and giving the lock back either way).
    pub async fn each_blue_green(&self, op: SlotOp, timeout: Duration) -> Result<()> {
        let by = lease::identity();
        let lock = Lease::acquire(&self.cluster, &by)
            .await
            .map_err(RolloutError::from)?;
        let result = self.each_locked(&op, timeout, &by).await;
        self.progress.finish();
        lock.release().await?;
        result
    }

    async fn each_locked(&self, op: &SlotOp, timeout: Duration, by: &str) -> Result<()> {
        let revision = match op {
            SlotOp::Rollback { revision: Some(r) } => Some(r.clone()),
            SlotOp::Rollback { revision: None } => {
                let newest = self.newest_live_deploy().await?;
                if let Some(r) = &newest {
                    self.progress.step(&format!(
                        "rolling back revision {} (the newest deploy that is live)",
                        crate::rollout::bluegreen::short(r)
                    ));
                }
                newest
            }
            _ => None,
        };
        for spec in &self.desired.blue_green {
            let bg = self.blue_green(spec, timeout, by);
            match op {
                // Without --revision during a grey release, the newest deploy is the canary;
                // during an interrupted cutover, it is the one that did not finish.
                SlotOp::Rollback { revision: None }
                    if {
                        let state = bg.observe().await?;
                        state.canary.is_some()
                            || matches!(state.routing, crate::rollout::state::Routing::Split { .. })
                    } =>
                {
                    bg.rollback(None).await?
                }
                SlotOp::Rollback { .. } => bg.rollback(revision.as_deref()).await?,
                SlotOp::Finalize { now } => bg.finalize(*now).await?,
                SlotOp::Promote { revision } => bg.promote(revision.as_deref()).await?,
                SlotOp::Abort { revision } => bg.abort(revision.as_deref()).await?,
            }
        }
        for spec in &self.desired.stateful {
            let workload = self.stateful(spec, timeout, by);
            match op {
                SlotOp::Rollback { .. } => {
                    let state = workload.observe().await?;
                    let live_revision = state
                        .live
                        .as_deref()
                        .and_then(|l| state.releases.iter().find(|r| r.slot == l))
                        .map(|r| r.revision.clone());
                    match (&revision, live_revision) {
                        (Some(r), Some(live))
                            if !crate::rollout::bluegreen::same_revision(r, &live) =>
                        {
                            workload.settle().await?;
                            self.progress.step(&format!(
                                "{}: revision {} is not the one taking new connections; nothing to roll back",
                                spec.name,
                                crate::rollout::bluegreen::short(r)
                            ));
                        }
                        _ => workload.rollback().await?,
                    }
                }
                SlotOp::Finalize { .. } => workload.finalize().await?,
                // Stateful versions have no grey release: each takes the new connections
                // once ready.
                SlotOp::Promote { .. } | SlotOp::Abort { .. } => {}
            }
        }
        Ok(())
    }
}

/// What to do with the previous slot of every blue-green workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotOp {
    /// Switch back to the release that was live before.
    Rollback {
        /// Only undo this revision (a rollback of it that already happened is not repeated).
        revision: Option<String>,
    },
    /// Scale it down once its delay has passed (or `now`).
    Finalize {
        /// Do not wait for the delay.
        now: bool,
    },
    /// Move everyone to the grey release's slot.
    Promote {
        /// Only a canary of this revision.
        revision: Option<String>,
    },
    /// Give the grey release up.
    Abort {
        /// Only a canary of this revision.
        revision: Option<String>,
    },
}

impl From<ClusterError> for Error {
    fn from(error: ClusterError) -> Self {
        Error::Cluster(error)
    }
}
