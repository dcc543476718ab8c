//! `infra-gen plan`: a table per environment — what would run where, and how big.

use std::path::Path;

use crate::cli::{PlanArgs, PlanFormat};
use crate::env::model::{Compute, Strategy, WorkloadKind};
use crate::env::{Environment, rules};
use crate::error::Result;
use crate::render::context::annotations;

/// Prints the plan.
pub fn run(root: &Path, args: &PlanArgs) -> Result<()> {
    let environments = super::load_environments(root, &args.envs, args.instance.as_deref())?;
    let manifests = root.join("manifests");
    match args.output {
        PlanFormat::Table => {
            for env in &environments {
                print!("{}", plan(env));
                for change in one_time_changes(&manifests, env) {
                    println!("  one-time change: {change}");
                }
            }
        }
        PlanFormat::Json => {
            let doc: Vec<serde_json::Value> = environments
                .iter()
                .map(|env| {
                    let mut doc = plan_json(env);
                    doc["oneTimeChanges"] = serde_json::json!(one_time_changes(&manifests, env));
                    doc
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
    }
    Ok(())
}

/// The rollout strategy the committed tree has for a workload (`None`: not committed yet).
fn committed_strategy(manifests: &Path, env: &str, workload: &str) -> Option<Strategy> {
    let file = manifests
        .join(env)
        .join(format!("deployment-{workload}.yaml"));
    let text = std::fs::read_to_string(&file).ok()?;
    let arc: std::sync::Arc<Path> = std::sync::Arc::from(file.as_path());
    let object = crate::env::yaml::parse(&arc, &text).ok()??.to_json();
    match object
        .pointer("/metadata/annotations")?
        .get(annotations::ROLLOUT)?
        .as_str()?
    {
        "blue-green" => Some(Strategy::BlueGreen),
        _ => Some(Strategy::Rolling),
    }
}

/// Changes the next apply makes once, and what they do to the load balancer: a workload
/// switching between rolling and blue-green (against the committed tree, before `render`).
pub fn one_time_changes(manifests: &Path, env: &Environment) -> Vec<String> {
    let mut out = Vec::new();
    for (name, w) in &env.spec.workloads {
        if w.kind == WorkloadKind::Cron {
            continue;
        }
        let wanted = w.rollout.as_ref().map(|r| r.strategy).unwrap_or_default();
        let Some(committed) = committed_strategy(manifests, &env.name, name) else {
            continue;
        };
        if committed == wanted {
            continue;
        }
        let lb = match (w.kind, w.http.is_some()) {
            (WorkloadKind::Tcp, _) => format!(
                "the NLB of Service {name} stays; its selector moves to the live slot, so its targets re-register"
            ),
            (_, true) if wanted == Strategy::BlueGreen => format!(
                "the Ingress backend changes from Service {name} to the weighted action over {name}-blue and {name}-green, so the AWS Load Balancer Controller creates new target groups and deletes the old one; requests reach the new targets once they register (seconds to minutes)"
            ),
            (_, true) => format!(
                "the Ingress backend changes from the weighted action to Service {name}, so the AWS Load Balancer Controller creates a new target group and deletes the slot ones; requests reach the new targets once they register (seconds to minutes)"
            ),
            _ => "no load balancer is involved".to_owned(),
        };
        out.push(match wanted {
            Strategy::BlueGreen => format!(
                "{name} switches from rolling to blue-green: apply starts {name}-blue with as many replicas as Deployment {name} runs now, moves the traffic to it once every replica is available, then deletes Deployment {name}. Load balancer: {lb}."
            ),
            Strategy::Rolling => format!(
                "{name} switches from blue-green to rolling: apply starts Deployment {name} with as many replicas as the live slot runs now (kept while the HPA takes the count over), waits until it is ready, then deletes {name}-blue, {name}-green, their Services and the preview. Load balancer: {lb}."
            ),
        });
    }
    out
}

/// The plan of one environment, for scripts.
pub fn plan_json(env: &Environment) -> serde_json::Value {
    let workloads: serde_json::Map<String, serde_json::Value> = env
        .spec
        .workloads
        .iter()
        .map(|(name, w)| {
            let size = match env.spec.cluster.compute {
                Compute::Fargate => rules::fargate_size(w).ok().map(|s| s.to_string()),
                Compute::Ec2 => None,
            };
            (
                name.clone(),
                serde_json::json!({
                    "kind": w.kind,
                    "replicas": w.replicas,
                    "autoscaling": w.autoscaling.as_ref().map(|a| serde_json::json!({"min": a.min, "max": a.max})),
                    "fargateSize": size,
                    "strategy": w.rollout.as_ref().map(|r| r.strategy).unwrap_or_default(),
                }),
            )
        })
        .collect();
    serde_json::json!({
        "environment": env.name,
        "review": env.spec.review,
        "namespace": env.namespace(),
        "cluster": env.spec.cluster.name,
        "region": env.spec.cluster.region,
        "kubernetesVersion": env.kubernetes_version(),
        "workloads": workloads,
    })
}

/// The plan of one environment, as text.
pub fn plan(env: &Environment) -> String {
    let cluster = &env.spec.cluster;
    let compute = match cluster.compute {
        Compute::Fargate => "fargate",
        Compute::Ec2 => "ec2",
    };
    let namespace = if env.spec.review && env.instance.is_none() {
        format!("{}-<instance>", env.namespace())
    } else {
        env.namespace()
    };
    let mut out = format!(
        "{} → namespace {namespace} on {} ({}, {compute})\n",
        env.name, cluster.name, cluster.region
    );
    let mut rows = vec![
        [
            "WORKLOAD",
            "KIND",
            "REPLICAS",
            "HPA",
            "FARGATE SIZE",
            "ROLLOUT",
            "HOSTS",
        ]
        .map(String::from),
    ];
    for (name, w) in &env.spec.workloads {
        let kind = match w.kind {
            WorkloadKind::Web => "web",
            WorkloadKind::Tcp => "tcp",
            WorkloadKind::Worker => "worker",
            WorkloadKind::Cron => "cron",
        };
        let replicas = match (w.kind, &w.autoscaling) {
            (WorkloadKind::Cron, _) => w.schedule.clone().unwrap_or_default(),
            (_, Some(_)) => "(hpa)".into(),
            (_, None) => w.replicas.unwrap_or(1).to_string(),
        };
        let hpa = w
            .autoscaling
            .as_ref()
            .map_or("-".into(), |a| format!("{}..{}", a.min, a.max));
        let size = match cluster.compute {
            Compute::Fargate => {
                rules::fargate_size(w).map_or_else(|e| format!("({e})"), |s| s.to_string())
            }
            Compute::Ec2 => "-".into(),
        };
        let rollout = match (w.kind, w.rollout.as_ref().map(|r| r.strategy)) {
            (WorkloadKind::Cron, _) => "-",
            (_, Some(Strategy::BlueGreen)) => "blue-green",
            _ => "rolling",
        };
        let mut hosts: Vec<String> = w.http.iter().map(|h| h.host.clone()).collect();
        hosts.extend(
            w.rollout
                .as_ref()
                .and_then(|r| r.preview_host.clone())
                .map(|h| format!("{h} (preview)")),
        );
        if w.kind == WorkloadKind::Tcp {
            let ports: Vec<String> = w
                .ports
                .iter()
                .flatten()
                .map(|p| format!("{}:{}", p.name, p.port))
                .collect();
            hosts.push(format!("NLB {}", ports.join(" ")));
        }
        let hosts = if hosts.is_empty() {
            "-".into()
        } else {
            hosts.join(", ")
        };
        rows.push([
            name.clone(),
            kind.into(),
            replicas,
            hpa,
            size,
            rollout.into(),
            hosts,
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(&format!("  {}\n", cells.join("  ").trim_end()));
    }
    out
}
