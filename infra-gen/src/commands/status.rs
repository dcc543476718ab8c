//! `infra-gen status`: what runs, at a glance — per workload its live slot, each slot's
//! ready replicas, revision and image, the HPA, the ALB weights, the scale-down deadline and
//! the last releases.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value as Json;

use crate::capacity::Capacity;
use crate::cli::{PlanFormat, StatusArgs};
use crate::cluster::{Cluster, Kind};
use crate::error::Result;
use crate::rollout::bluegreen::{Routing, Slot};
use crate::rollout::history::{self, Release};
use crate::rollout::{self, REVISION, state};

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
    /// Where the traffic goes, in words (blue-green).
    pub traffic: Option<String>,
    /// An interrupted cutover, and what the next command does about it.
    pub interrupted: Option<String>,
    /// Its Deployments (the two slots, or the one).
    pub deployments: Vec<DeploymentStatus>,
    /// HPA: current replicas, min, max, target Deployment.
    pub hpa: Option<serde_json::Value>,
    /// Weights of the ALB action or the HTTPRoute (blue, green).
    pub weights: Option<(u8, u8)>,
    /// When finalize may scale the previous slot down.
    pub scale_down_after: Option<String>,
    /// Newest releases first.
    pub releases: Vec<Release>,
    /// `stateful`: every running version, oldest first.
    pub versions: Vec<VersionStatus>,
    /// A grey release on the ALB (blue-green `web`).
    pub canary: Option<CanaryStatus>,
    /// Why pods of a Deployment that is not fully available are not (the first with its
    /// container's last log lines).
    pub problems: Vec<String>,
}

/// A grey release that runs.
#[derive(Debug, Serialize)]
pub struct CanaryStatus {
    /// The slot header requests go to.
    pub slot: Option<String>,
    /// The header.
    pub header: Option<String>,
    /// The values matched.
    pub values: Vec<String>,
    /// When it started (its `canary` record).
    pub since: Option<String>,
    /// Its revision.
    pub revision: Option<String>,
}

/// One running version of a stateful workload.
#[derive(Debug, Serialize)]
pub struct VersionStatus {
    /// The version.
    pub version: String,
    /// `<name>-<version>`.
    pub name: String,
    /// Pods wanted.
    pub replicas: i32,
    /// Pods ready.
    pub ready: i32,
    /// Seconds since it started.
    pub age_seconds: Option<i64>,
    /// Whether it takes the new connections.
    pub new_connections: bool,
    /// When `finalize` retires it.
    pub retire_at: Option<String>,
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

async fn hpa_status(
    cluster: &Cluster,
    name: &str,
    caps: &BTreeMap<String, Capacity>,
) -> Result<Option<Json>> {
    let capacity = caps.get(name);
    Ok(cluster
        .get(Kind::HorizontalPodAutoscaler, name)
        .await?
        .map(|h| {
            serde_json::json!({
                "current": h.pointer("/status/currentReplicas"),
                "min": h.pointer("/spec/minReplicas"),
                "max": h.pointer("/spec/maxReplicas"),
                "target": h.pointer("/spec/scaleTargetRef/name"),
                "minInForce": capacity.map(|c| c.min),
                "maxInForce": capacity.map(|c| c.max),
                "why": capacity.map(|c| c.why.clone()).unwrap_or_default(),
                "cannotScale": rollout::capacity::scaling_inactive(&h),
            })
        }))
}

/// Why the pods of a Deployment that is not fully available, or whose update is not, are not
/// ready: the pods' reasons, the first with its container's last log lines.
async fn unhealthy(cluster: &Cluster, d: &DeploymentStatus) -> Result<Vec<String>> {
    if d.desired == 0 {
        return Ok(Vec::new());
    }
    let Some(object) = cluster.get(Kind::Deployment, &d.name).await? else {
        return Ok(Vec::new());
    };
    // A rolling update that is stuck keeps the old pods available: the new ones count too.
    let updated = object
        .pointer("/status/updatedReplicas")
        .and_then(Json::as_i64)
        .unwrap_or(0);
    if d.available >= d.desired && updated >= d.desired {
        return Ok(Vec::new());
    }
    let selector: Vec<String> = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Json::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect();
    if selector.is_empty() {
        return Ok(Vec::new());
    }
    let mut problems = crate::cluster::diagnose::problems(cluster, &selector.join(",")).await?;
    if let Some(first) = problems.first_mut() {
        crate::cluster::diagnose::attach_logs(cluster, first).await;
    }
    Ok(problems.iter().take(3).map(ToString::to_string).collect())
}

/// Collects the status of every workload.
pub async fn collect(session: &target::Session) -> Result<Vec<WorkloadStatus>> {
    let cluster = &session.cluster;
    let releases = history::read(cluster).await?;
    let caps = rollout::capacity::in_force(cluster, &session.env, jiff::Timestamp::now()).await?;
    let mut out = Vec::new();
    for spec in &session.desired.blue_green {
        let bg = session.blue_green(spec, Default::default(), "");
        let live = bg.observe().await?;
        let interrupted = match live.routing {
            Routing::Split { from, to } => {
                let ready = live.slot(to);
                Some(format!(
                    "a cutover from {} to {} did not finish ({}); only a retry of its own commit (`infra-gen apply`, or `promote --revision` of its canary) finishes it, once {} is healthy ({}/{} available now); `finalize`, `rollback`, `abort` and the apply of any other commit move every request back to {} first",
                    from.as_str(),
                    to.as_str(),
                    live.traffic(),
                    to.as_str(),
                    ready.available,
                    ready.replicas,
                    from.as_str(),
                ))
            }
            _ => None,
        };
        out.push(WorkloadStatus {
            name: spec.name.clone(),
            strategy: "blue-green".into(),
            live: live.live().map(|s| s.as_str().to_owned()),
            traffic: Some(live.traffic()),
            interrupted,
            deployments: Slot::BOTH
                .into_iter()
                .filter_map(|s| {
                    deployment_status(
                        &format!("{}-{}", spec.name, s.as_str()),
                        live.slot(s).deployment.as_ref(),
                    )
                })
                .collect(),
            hpa: hpa_status(cluster, &spec.name, &caps).await?,
            weights: state::weights(live.ingress.as_ref(), &spec.name),
            scale_down_after: live.scale_down_after.map(history::time_text),
            releases: releases.get(&spec.name).cloned().unwrap_or_default(),
            versions: Vec::new(),
            canary: live.canary.as_ref().map(|c| {
                let slot = c.slot.map(|s| s.as_str().to_owned());
                let view = c.slot.map(|s| live.slot(s));
                CanaryStatus {
                    since: live
                        .canaries
                        .iter()
                        .find(|r| {
                            r.action == "canary"
                                && Some(&r.slot) == slot.as_ref()
                                && Some(&r.template) == view.and_then(|v| v.template.as_ref())
                        })
                        .map(|r| r.at.clone()),
                    revision: view.and_then(|v| v.revision.clone()),
                    header: c.rule.as_ref().map(|r| r.header.clone()),
                    values: c
                        .rule
                        .as_ref()
                        .map(|r| r.values.clone())
                        .unwrap_or_default(),
                    slot,
                }
            }),
            problems: Vec::new(),
        });
    }
    for spec in &session.desired.stateful {
        let state = session
            .stateful(spec, Default::default(), "")
            .observe()
            .await?;
        let now = k8s_openapi::jiff::Timestamp::now();
        out.push(WorkloadStatus {
            name: spec.name.clone(),
            strategy: "stateful".into(),
            live: state.live.clone(),
            traffic: None,
            interrupted: None,
            deployments: Vec::new(),
            hpa: hpa_status(cluster, &spec.name, &caps).await?,
            weights: None,
            scale_down_after: None,
            releases: releases.get(&spec.name).cloned().unwrap_or_default(),
            versions: state
                .versions
                .iter()
                .map(|v| VersionStatus {
                    version: v.version.clone(),
                    name: v.name.clone(),
                    replicas: v.replicas,
                    ready: v.ready,
                    age_seconds: v.created.map(|c| now.duration_since(c).as_secs()),
                    new_connections: state.live.as_deref() == Some(v.version.as_str()),
                    retire_at: v.retire_at.map(history::time_text),
                })
                .collect(),
            canary: None,
            problems: Vec::new(),
        });
    }
    for name in &session.desired.rolling {
        let live = cluster.get(Kind::Deployment, name).await?;
        out.push(WorkloadStatus {
            name: name.clone(),
            strategy: "rolling".into(),
            live: None,
            traffic: None,
            interrupted: None,
            deployments: deployment_status(name, live.as_ref()).into_iter().collect(),
            hpa: hpa_status(cluster, name, &caps).await?,
            weights: None,
            scale_down_after: None,
            releases: releases.get(name).cloned().unwrap_or_default(),
            versions: Vec::new(),
            canary: None,
            problems: Vec::new(),
        });
    }
    for w in &mut out {
        for d in &w.deployments {
            w.problems.extend(unhealthy(cluster, d).await?);
        }
    }
    Ok(out)
}

/// Runs the command.
pub async fn run(root: &Path, args: &StatusArgs) -> Result<()> {
    let session = target::session(root, &args.target, true, Variables::Optional).await?;
    let statuses = collect(&session).await?;
    let hpas: Vec<String> = statuses
        .iter()
        .filter(|w| w.hpa.is_some())
        .map(|w| w.name.clone())
        .collect();
    let metrics = if hpas.is_empty() {
        Vec::new()
    } else {
        rollout::capacity::metrics_problems(&session.cluster, &[]).await?
    };
    session.progress.finish();
    if args.output == PlanFormat::Json {
        let doc = serde_json::json!({"environment": session.env.name, "namespace": session.desired.namespace, "workloads": statuses, "problems": metrics});
        crate::outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    crate::outln!(
        "{} → namespace {}",
        session.env.name,
        session.desired.namespace
    );
    for problem in &metrics {
        crate::outln!("! {problem}");
    }
    for w in &statuses {
        crate::outln!();
        let live = w
            .live
            .as_deref()
            .map_or(String::new(), |l| format!(", live: {l}"));
        crate::outln!("{} ({}{live})", w.name, w.strategy);
        if let Some(note) = &w.interrupted {
            crate::outln!("  ! {note}");
        }
        for problem in &w.problems {
            crate::outln!("  ! {problem}");
        }
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
            crate::outln!(
                "  {marker} {:<28} {}/{} available  revision {revision:<12}  {}",
                d.name,
                d.available,
                d.desired,
                d.image
            );
        }
        for v in &w.versions {
            let age = v.age_seconds.map_or("-".to_owned(), |s| match s {
                s if s >= 86_400 => format!("{}d", s / 86_400),
                s if s >= 3600 => format!("{}h", s / 3600),
                s if s >= 60 => format!("{}m", s / 60),
                s => format!("{s}s"),
            });
            let marker = if v.new_connections { "*" } else { " " };
            let note = match (&v.retire_at, v.new_connections) {
                (_, true) => "takes new connections".to_owned(),
                (Some(at), false) => format!("retired by finalize after {at}"),
                (None, false) => "keeps its players until `infra-gen retire`".to_owned(),
            };
            crate::outln!(
                "  {marker} {:<28} {}/{} ready  age {age:<5}  {note}",
                v.name,
                v.ready,
                v.replicas
            );
        }
        if let Some(h) = &w.hpa {
            let show = |k: &str| {
                h.get(k).map_or("-".to_owned(), |v| {
                    v.to_string().trim_matches('"').to_owned()
                })
            };
            crate::outln!(
                "    HPA: {} replicas (min {}, max {}) → {}",
                show("current"),
                show("min"),
                show("max"),
                show("target")
            );
            let why: Vec<&str> = h
                .get("why")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .filter_map(Json::as_str)
                .collect();
            if !why.is_empty() {
                crate::outln!(
                    "    min {} in force: {}",
                    show("minInForce"),
                    why.join("; ")
                );
            } else if show("min") != show("minInForce") && show("minInForce") != "-" {
                crate::outln!(
                    "    ! the file's min is {}: the next deploy or capacity CronJob sets it",
                    show("minInForce")
                );
            }
            if let Some(problem) = h.get("cannotScale").and_then(Json::as_str) {
                crate::outln!("    ! HPA cannot scale: {problem}");
            }
        }
        if let Some((blue, green)) = w.weights {
            let by = match session.env.spec.traffic.provider {
                crate::env::model::TrafficProvider::Alb => "ALB",
                crate::env::model::TrafficProvider::GatewayApi => "HTTPRoute",
            };
            crate::outln!("    {by} weights: blue {blue}%, green {green}%");
        }
        if let Some(c) = &w.canary {
            crate::outln!(
                "    canary: requests with {}: {} go to {} (revision {}) since {}; `infra-gen promote` or `infra-gen abort`",
                c.header.as_deref().unwrap_or("?"),
                c.values.join(" | "),
                c.slot.as_deref().unwrap_or("?"),
                c.revision
                    .as_deref()
                    .map_or("?", |r| r.get(..12).unwrap_or(r)),
                c.since.as_deref().unwrap_or("?")
            );
        }
        if let Some(deadline) = &w.scale_down_after {
            let due = history::parse_time(deadline)
                .is_some_and(|d| d <= k8s_openapi::jiff::Timestamp::now());
            let idle_running = w.deployments.iter().any(|d| {
                w.live
                    .as_deref()
                    .is_some_and(|l| !d.name.ends_with(&format!("-{l}")))
                    && d.desired > 0
            });
            if idle_running {
                let when = if due { "is due since" } else { "after" };
                crate::outln!(
                    "    previous slot scaled down {when} {deadline} (`infra-gen finalize`, or the next apply)"
                );
            }
        }
        if w.releases.is_empty() {
            crate::outln!("    releases: none recorded");
        }
        for r in w.releases.iter().take(5) {
            let revision = r.revision.get(..12).unwrap_or(&r.revision);
            crate::outln!(
                "    {}  {:<8} {:<5} {revision:<12}  {}  by {}",
                r.at,
                r.action,
                r.slot,
                r.image,
                r.by
            );
        }
    }
    Ok(())
}
