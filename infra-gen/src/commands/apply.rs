//! `infra-gen apply`: preflight, lock, objects in order, each workload's rollout, prune (see `rollout::apply`).

use std::path::Path;

use crate::cli::ApplyArgs;
use crate::env::model::Compute;
use crate::error::{Error, Result};
use crate::rollout::apply::{self, ApplyOptions};
use crate::rollout::capacity;
use crate::rollout::desired::Desired;
use crate::{eks, env::Environment};

use super::target::{self, Variables};

/// Runs the command.
pub async fn run(root: &Path, args: &ApplyArgs) -> Result<()> {
    let (env, mut desired) =
        target::load(root, &args.target, args.allow_drift, Variables::Required)?;
    if env.spec.cluster.compute == Compute::Fargate && !args.skip_fargate_check {
        fargate_preflight(&env, &desired).await?;
    }
    let cluster = target::connect(&env, &desired, &args.target).await?;
    let progress = crate::rollout::progress::Progress::new();
    progress.step(&format!(
        "deploying {} (revision {}) to namespace {}",
        env.name,
        short(&desired.revision),
        desired.namespace
    ));
    capacity::settle(&cluster, &env, &mut desired, &|m| progress.step(m)).await?;
    let hpas: Vec<String> = env
        .spec
        .workloads
        .iter()
        .filter(|(_, w)| w.autoscaling.is_some())
        .map(|(name, _)| name.clone())
        .collect();
    if !hpas.is_empty() {
        for problem in capacity::metrics_problems(&cluster, &hpas).await? {
            progress.step(&format!("warning: {problem}"));
        }
    }
    let options = ApplyOptions {
        timeout: args.timeout,
        prune: !args.no_prune,
        lb: super::target::lb_check(&env, &args.lb, &progress).await,
        unverified_wait: args.lb.lb_unverified_wait,
        allow_strategy_change: args.allow_strategy_change,
    };
    let result = apply::apply(&cluster, &desired, &options, &progress).await;
    progress.finish();
    let summary = result?;
    if !summary.nothing_to_do {
        crate::outln!(
            "{}: deployed revision {} ({} write(s))",
            env.name,
            short(&desired.revision),
            summary.writes
        );
    } else {
        crate::outln!(
            "{}: already up to date (revision {})",
            env.name,
            short(&desired.revision)
        );
    }
    Ok(())
}

fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

/// On Fargate a pod that no profile selects stays Pending forever: refuse now instead.
async fn fargate_preflight(env: &Environment, desired: &Desired) -> Result<()> {
    let cluster = &env.spec.cluster;
    let profiles = eks::fargate_profiles(&cluster.name, &cluster.region).await?;
    let mut unselected = Vec::new();
    for (workload, labels) in desired.pod_labels() {
        if eks::selecting_profile(&profiles, &desired.namespace, &labels).is_none() {
            unselected.push(workload);
        }
    }
    if unselected.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = profiles
        .iter()
        .map(|p| {
            let namespaces: Vec<&str> = p.selectors.iter().map(|s| s.namespace.as_str()).collect();
            format!("{} ({})", p.name, namespaces.join(", "))
        })
        .collect();
    Err(Error::from(crate::rollout::RolloutError::Preflight(
        format!(
            "no Fargate profile of cluster {} selects namespace {} for {}: their pods would stay Pending forever. Profiles: {}. Create one: aws eks create-fargate-profile --cluster-name {} --region {} --fargate-profile-name {} --pod-execution-role-arn <role> --selectors namespace={}",
            cluster.name,
            desired.namespace,
            unselected.join(", "),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join("; ")
            },
            cluster.name,
            cluster.region,
            desired.namespace,
            desired.namespace
        ),
    )))
}
