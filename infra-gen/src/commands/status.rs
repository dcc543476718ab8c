//! `infra-gen status`: what runs, at a glance — per workload its live slot, each slot's
//! ready replicas, revision and image, the HPA, the ALB weights, the scale-down deadline and
//! the last releases.

use std::path::Path;

use serde::Serialize;
use serde_json::Value as Json;

use crate::cli::{PlanFormat, StatusArgs};
use crate::cluster::{Cluster, Kind};
use crate::error::Result;
use crate::rollout::bluegreen::Slot;
use crate::rollout::history::{self, Release};
use crate::rollout::{REVISION, SCALE_DOWN_AFTER};

use super::target::{self, Variables};

/// One Deployment's state.
#[derive(Debug, Serialize)]
pub struct DeploymentStatus {
    /// Deployment name.
    pub name: String,
    /// spec.replicas.
    pub desired: i64,
    /// status.availableReplicas.
    pub available: i64,
    /// Revision (git commit) it runs.
    pub revision: String,
    /// Image.
    pub image: String,
}

/// One workload's state.
#[derive(Debug, Serialize)]
pub struct WorkloadStatus {
    /// Workload.
    pub name: String,
    /// `blue-green` or `rolling`.
    pub strategy: String,
    /// Live slot (blue-green).
    pub live: Option<String>,
    /// Its Deployments (the two slots, or the one).
    pub deployments: Vec<DeploymentStatus>,
    /// HPA: current replicas, min, max, target Deployment.
    pub hpa: Option<serde_json::Value>,
    /// ALB weights (blue, green).
    pub weights: Option<(u64, u64)>,
    /// When finalize may scale the previous slot down.
    pub scale_down_after: Option<String>,
    /// Newest releases first.
    pub releases: Vec<Release>,
}

fn deployment_status(name: &str, d: Option<&Json>) -> Option<DeploymentStatus> {
    let d = d?;
    let int = |p: &str| d.pointer(p).and_then(Json::as_i64).unwrap_or(0);
    Some(DeploymentStatus {
        name: name.to_owned(),
        desired: int("/spec/replicas"),
        available: int("/status/availableReplicas"),
        revision: d
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(REVISION))
            .and_then(Json::as_str)
            .unwrap_or("-")
            .to_owned(),
        image: d
            .pointer("/spec/template/spec/containers/0/image")
            .and_then(Json::as_str)
            .unwrap_or("-")
            .to_owned(),
    })
}

async fn hpa_status(cluster: &Cluster, name: &str) -> Result<Option<Json>> {
    Ok(cluster
        .get(Kind::HorizontalPodAutoscaler, name)
        .await?
        .map(|h| {
            serde_json::json!({
                "current": h.pointer("/status/currentReplicas"),
                "min": h.pointer("/spec/minReplicas"),
                "max": h.pointer("/spec/maxReplicas"),
                "target": h.pointer("/spec/scaleTargetRef/name"),
            })
        }))
}

fn weights(ingress: Option<&Json>, name: &str) -> Option<(u64, u64)> {
    let action = ingress?
        .pointer("/metadata/annotations")?
        .get(format!("alb.ingress.kubernetes.io/actions.{name}"))?
        .as_str()?;
    let action: Json = serde_json::from_str(action).ok()?;
    let groups = action.pointer("/forwardConfig/targetGroups")?.as_array()?;
    let weight = |slot: &str| {
        groups
            .iter()
            .find(|g| {
                g.get("serviceName").and_then(Json::as_str) == Some(&format!("{name}-{slot}"))
            })
            .and_then(|g| g.get("weight"))
            .and_then(Json::as_u64)
            .unwrap_or(0)
    };
    Some((weight("blue"), weight("green")))
}

/// Collects the status of every workload.
pub async fn collect(session: &target::Session) -> Result<Vec<WorkloadStatus>> {
    let cluster = &session.cluster;
    let releases = history::read(cluster).await?;
    let mut out = Vec::new();
    for spec in &session.desired.blue_green {
        let bg = session.blue_green(spec, Default::default(), "");
        let live = bg.read().await?;
        let ingress = cluster.get(Kind::Ingress, &spec.name).await?;
        out.push(WorkloadStatus {
            name: spec.name.clone(),
            strategy: "blue-green".into(),
            live: live.active.map(|s| s.as_str().to_owned()),
            deployments: [Slot::Blue, Slot::Green]
                .into_iter()
                .filter_map(|s| {
                    deployment_status(&format!("{}-{}", spec.name, s.as_str()), live.deployment(s))
                })
                .collect(),
            hpa: hpa_status(cluster, &spec.name).await?,
            weights: weights(ingress.as_ref(), &spec.name),
            scale_down_after: live
                .stable
                .as_ref()
                .and_then(|s| s.pointer("/metadata/annotations"))
                .and_then(|a| a.get(SCALE_DOWN_AFTER))
                .and_then(Json::as_str)
                .map(str::to_owned),
            releases: releases.get(&spec.name).cloned().unwrap_or_default(),
        });
    }
    for name in &session.desired.rolling {
        let live = cluster.get(Kind::Deployment, name).await?;
        out.push(WorkloadStatus {
            name: name.clone(),
            strategy: "rolling".into(),
            live: None,
            deployments: deployment_status(name, live.as_ref()).into_iter().collect(),
            hpa: hpa_status(cluster, name).await?,
            weights: None,
            scale_down_after: None,
            releases: releases.get(name).cloned().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Runs the command.
pub async fn run(root: &Path, args: &StatusArgs) -> Result<()> {
    let session = target::session(root, &args.target, true, Variables::Optional).await?;
    let statuses = collect(&session).await?;
    session.progress.finish();
    if args.output == PlanFormat::Json {
        let doc = serde_json::json!({"environment": session.env.name, "namespace": session.desired.namespace, "workloads": statuses});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    println!(
        "{} → namespace {}",
        session.env.name, session.desired.namespace
    );
    for w in &statuses {
        println!();
        let live = w
            .live
            .as_deref()
            .map_or(String::new(), |l| format!(", live: {l}"));
        println!("{} ({}{live})", w.name, w.strategy);
        for d in &w.deployments {
            let marker = if w
                .live
                .as_deref()
                .is_some_and(|l| d.name.ends_with(&format!("-{l}")))
            {
                "*"
            } else {
                " "
            };
            let revision = d.revision.get(..12).unwrap_or(&d.revision);
            println!(
                "  {marker} {:<28} {}/{} available  revision {revision:<12}  {}",
                d.name, d.available, d.desired, d.image
            );
        }
        if let Some(h) = &w.hpa {
            let show = |k: &str| {
                h.get(k).map_or("-".to_owned(), |v| {
                    v.to_string().trim_matches('"').to_owned()
                })
            };
            println!(
                "    HPA: {} replicas (min {}, max {}) → {}",
                show("current"),
                show("min"),
                show("max"),
                show("target")
            );
        }
        if let Some((blue, green)) = w.weights {
            println!("    ALB weights: blue {blue}%, green {green}%");
        }
        if let Some(deadline) = &w.scale_down_after {
            println!("    previous slot scaled down after {deadline} (infra-gen finalize)");
        }
        if w.releases.is_empty() {
            println!("    releases: none recorded");
        }
        for r in w.releases.iter().take(5) {
            let revision = r.revision.get(..12).unwrap_or(&r.revision);
            println!(
                "    {}  {:<8} {:<5} {revision:<12}  {}  by {}",
                r.at, r.action, r.slot, r.image, r.by
            );
        }
    }
    Ok(())
}
