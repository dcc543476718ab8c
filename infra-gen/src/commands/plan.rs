//! `infra-gen plan`: a table per environment — what would run where, and how big.

use std::path::Path;

use crate::capacity::{self, Window};
use crate::cli::{PlanArgs, PlanFormat};
use crate::env::model::{Compute, Strategy, TrafficProvider, WorkloadKind};
use crate::env::{Environment, rules};
use crate::error::Result;
use crate::render::Manifest;
use crate::render::context::annotations;
use crate::render::context::instance_host;

/// Prints the plan.
pub fn run(root: &Path, args: &PlanArgs) -> Result<()> {
    let environments = super::load_environments(root, &args.envs, args.instance.as_deref())?;
    let manifests = root.join("manifests");
    let renderer = super::render::renderer(root)?;
    let mut docs = Vec::new();
    for env in &environments {
        let rendered = renderer.render(env)?;
        let changes = one_time_changes(&manifests, env, &rendered);
        match args.output {
            PlanFormat::Table => {
                crate::out!("{}", plan(env));
                for change in changes {
                    crate::outln!("  one-time change: {change}");
                }
            }
            PlanFormat::Json => {
                let mut doc = plan_json(env);
                doc["oneTimeChanges"] = serde_json::json!(changes);
                docs.push(doc);
            }
        }
    }
    if args.output == PlanFormat::Json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&docs).unwrap_or_default()
        );
    }
    Ok(())
}

/// The committed tree's object of `kind` for a workload (`None`: not committed yet).
fn committed(manifests: &Path, env: &str, kind: &str, workload: &str) -> Option<serde_json::Value> {
    let file = manifests
        .join(env)
        .join(format!("{}-{workload}.yaml", kind.to_ascii_lowercase()));
    let text = std::fs::read_to_string(&file).ok()?;
    let arc: std::sync::Arc<Path> = std::sync::Arc::from(file.as_path());
    Some(crate::env::yaml::parse(&arc, &text).ok()??.to_json())
}

/// A running version whose pod template changes: its pods are not restarted (OnDelete).
fn stateful_change(
    manifests: &Path,
    env: &Environment,
    name: &str,
    rendered: &[Manifest],
) -> Option<String> {
    let committed = committed(manifests, &env.name, "StatefulSet", name)?;
    let now = rendered
        .iter()
        .find(|m| m.kind == "StatefulSet" && m.name == name)?;
    let version = |o: &serde_json::Value| {
        o.pointer("/metadata/annotations")
            .and_then(|a| a.get(annotations::VERSION))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let v = version(&now.body)?;
    let same_version = version(&committed).as_deref() == Some(v.as_str());
    let template_changed =
        committed.pointer("/spec/template") != now.body.pointer("/spec/template");
    (same_version && template_changed).then(|| {
        format!(
            "{name} keeps version {v} but changes its pod template: the running pod(s) of {name}-{v} keep the old one (updateStrategy OnDelete), only pods created later (a scale-up, a replaced pod) get it. To roll it out to every server, release a new version (a new image tag, or `version:`)"
        )
    })
}

/// The rollout strategy the committed tree has for a workload (`None`: not committed yet).
fn committed_strategy(manifests: &Path, env: &str, workload: &str) -> Option<Strategy> {
    let object = committed(manifests, env, "Deployment", workload)?;
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
/// switching between rolling and blue-green, a running stateful version whose template
/// changes (against the committed tree, before `render`; `rendered` is the tree to come).
pub fn one_time_changes(manifests: &Path, env: &Environment, rendered: &[Manifest]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, w) in &env.spec.workloads {
        if w.kind == WorkloadKind::Stateful {
            out.extend(stateful_change(manifests, env, name, rendered));
            continue;
        }
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
        let gateway = env.spec.traffic.provider == TrafficProvider::GatewayApi;
        let lb = match (w.kind, w.http.is_some()) {
            (WorkloadKind::Tcp, _) if gateway => format!(
                "the LoadBalancer Service {name} stays; its selector moves to the live slot, so the cloud's load balancer follows its new endpoints"
            ),
            (_, true) if gateway && wanted == Strategy::BlueGreen => format!(
                "the HTTPRoute's backend changes from Service {name} to the weighted {name}-blue and {name}-green, which the Gateway routes to once their endpoints are ready"
            ),
            (_, true) if gateway => format!(
                "the HTTPRoute's backend changes from the weighted slots to Service {name}, which the Gateway routes to once its endpoints are ready"
            ),
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
        let refused = if w.kind == WorkloadKind::Tcp || w.http.is_some() {
            " `apply` refuses it without --allow-strategy-change: do it in a quiet moment"
        } else {
            ""
        };
        out.push(match wanted {
            Strategy::BlueGreen => format!(
                "{name} switches from rolling to blue-green: apply starts {name}-blue with as many replicas as Deployment {name} runs now, moves the traffic to it once every replica is available, then deletes Deployment {name}. Load balancer: {lb}.{refused}"
            ),
            Strategy::Rolling => format!(
                "{name} switches from blue-green to rolling: apply starts Deployment {name} with as many replicas as the live slot runs now (kept while the HPA takes the count over), waits until it is ready, then deletes {name}-blue, {name}-green, their Services and the preview. Load balancer: {lb}.{refused}"
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
                    "autoscaling": w.autoscaling.as_ref().map(|a| serde_json::json!({
                        "min": a.min,
                        "max": a.max,
                        "schedule": windows_json(a),
                    })),
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
        "traffic": {
            "provider": env.spec.traffic.provider.as_str(),
            "parentRefs": env.spec.traffic.parent_refs,
        },
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
    let traffic = &env.spec.traffic;
    out.push_str(&match traffic.provider {
        TrafficProvider::Alb => {
            "  traffic: alb (AWS Load Balancer Controller: ALB Ingresses, NLB Services; checked through ELBv2)\n".to_owned()
        }
        TrafficProvider::GatewayApi => {
            let parents: Vec<String> = traffic
                .parent_refs
                .iter()
                .map(|p| {
                    let gateway = crate::gateway::ParentReference {
                        name: p.name.clone(),
                        namespace: p.namespace.clone(),
                        section_name: p.section_name.clone(),
                        ..Default::default()
                    };
                    gateway.describe(&namespace)
                })
                .collect();
            format!(
                "  traffic: gateway-api (HTTPRoutes on {}; LoadBalancer Services for tcp; checked through the route's status)\n",
                parents.join(", ")
            )
        }
    });
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
            WorkloadKind::Stateful => "stateful",
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
        let canary = w.rollout.as_ref().is_some_and(|r| r.canary.is_some());
        let rollout = match (w.kind, w.rollout.as_ref().map(|r| r.strategy)) {
            (WorkloadKind::Cron, _) => "-",
            (WorkloadKind::Stateful, _) => "versions",
            (_, Some(Strategy::BlueGreen)) if canary => "canary",
            (_, Some(Strategy::BlueGreen)) => "blue-green",
            _ => "rolling",
        };
        let mut hosts: Vec<String> = w.http.iter().map(|h| instance_host(env, &h.host)).collect();
        hosts.extend(
            w.rollout
                .as_ref()
                .and_then(|r| r.preview_host.as_deref())
                .map(|h| format!("{} (preview)", instance_host(env, h))),
        );
        if w.kind == WorkloadKind::Tcp || (w.kind == WorkloadKind::Stateful && w.tcp.is_some()) {
            let ports: Vec<String> = w
                .ports
                .iter()
                .flatten()
                .map(|p| format!("{}:{}", p.name, p.port))
                .collect();
            let lb = match traffic.provider {
                TrafficProvider::Alb => "NLB",
                TrafficProvider::GatewayApi => "LoadBalancer",
            };
            hosts.push(format!("{lb} {}", ports.join(" ")));
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
    let now = jiff::Timestamp::now();
    for (name, w) in &env.spec.workloads {
        let Some(a) = &w.autoscaling else { continue };
        for spec in &a.schedule {
            let Ok(window) = Window::resolve(spec, (a.min, a.max)) else {
                continue;
            };
            let (min, max) = window.bounds((a.min, a.max));
            let start = spec.cron.as_deref().or(spec.at.as_deref()).unwrap_or("-");
            out.push_str(&format!(
                "  {name}: window {} ({start} {}, {}): HPA {min}..{max}, raised {} before\n",
                window.name,
                window.zone_name,
                capacity::friendly(window.duration),
                capacity::friendly(window.lead),
            ));
            let next = window.upcoming(now, 3);
            if next.is_empty() {
                out.push_str("    no window to come\n");
            }
            for o in next {
                out.push_str(&format!(
                    "    {} → {} (raised {})\n",
                    window.local(o.starts),
                    window.local(o.closes),
                    window.local(o.opens)
                ));
            }
        }
    }
    out
}

/// The windows of an HPA, with their next three occurrences (RFC 3339, UTC).
fn windows_json(a: &crate::env::model::Autoscaling) -> Vec<serde_json::Value> {
    let now = jiff::Timestamp::now();
    a.schedule
        .iter()
        .filter_map(|spec| Window::resolve(spec, (a.min, a.max)).ok())
        .map(|w| {
            let (min, max) = w.bounds((a.min, a.max));
            serde_json::json!({
                "name": w.name,
                "min": min,
                "max": max,
                "next": w.upcoming(now, 3).iter().map(|o| serde_json::json!({
                    "raised": o.opens.to_string(),
                    "starts": o.starts.to_string(),
                    "ends": o.closes.to_string(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}
