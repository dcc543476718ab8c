//! What the templates see: the environment turned into plain, precomputed values (labels,
//! selectors, grace period, Fargate size, env list…), so templates only lay out objects and
//! never decide.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::env::model::{
    Compute, EnvValue, PortRef, Probe, Protocol, Strategy, TrafficProvider, Workload, WorkloadKind,
};
use crate::env::rules;
use crate::env::{Environment, slugify};

/// Label keys this tool sets.
pub mod labels {
    /// The workload name.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// Workload + environment (+ instance).
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// The project.
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// Always `infra-gen`.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The image tag.
    pub const VERSION: &str = "app.kubernetes.io/version";
    /// The environment (+ instance): what `apply` prunes by.
    pub const ENVIRONMENT: &str = "infra-gen.dev/environment";
    /// The blue-green slot of a pod.
    pub const SLOT: &str = "infra-gen.dev/slot";
    /// The release of a `stateful` workload a pod, StatefulSet or headless Service belongs
    /// to (set by `infra-gen apply`).
    pub const RELEASE: &str = "infra-gen.dev/version";
    /// A `stateful` pod that may take new connections while the version named here is
    /// released: the pods of the live version and of that version carry it, so the NLB
    /// Service selects those two and no other version during the release.
    pub const ACCEPTS: &str = "infra-gen.dev/accepts-during";
    /// Namespace label that makes the AWS LB Controller inject pod readiness gates.
    pub const READINESS_GATE: &str = "elbv2.k8s.aws/pod-readiness-gate-inject";
}

/// Annotation keys this tool sets.
pub mod annotations {
    /// Rollout strategy of a workload (`blue-green` or `rolling`).
    pub const ROLLOUT: &str = "infra-gen.dev/rollout";
    /// The Fargate size the pod will get.
    pub const FARGATE_SIZE: &str = "infra-gen.dev/fargate-size";
    /// Seconds the old slot keeps running after a cutover.
    pub const SCALE_DOWN_DELAY: &str = "infra-gen.dev/scale-down-delay-seconds";
    /// Traffic steps of a cutover.
    pub const STEPS: &str = "infra-gen.dev/steps";
    /// Pause between steps.
    pub const STEP_PAUSE: &str = "infra-gen.dev/step-pause-seconds";
    /// tcp: seconds both slots stay selected.
    pub const OVERLAP: &str = "infra-gen.dev/overlap-seconds";
    /// Grey release: `{"header": …, "values": […]}` (`rollout.canary`).
    pub const CANARY: &str = "infra-gen.dev/canary";
    /// The workload kind.
    pub const KIND: &str = "infra-gen.dev/kind";
    /// `stateful`: the version of the release (a DNS label, or a `${VARIABLE}` resolved by
    /// `apply`); apply names the StatefulSet `<name>-<version>`.
    pub const VERSION: &str = "infra-gen.dev/version";
    /// `stateful`: seconds after the switch an old version is retired by `finalize`.
    pub const RETIRE_AFTER: &str = "infra-gen.dev/retire-after-seconds";
}

/// The two blue-green slots.
pub const SLOTS: [&str; 2] = ["blue", "green"];

/// The environment as the templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct EnvContext {
    /// Environment name (`staging`).
    pub name: String,
    /// Environment + instance, the value of the environment label.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Namespace labels.
    pub namespace_labels: BTreeMap<String, String>,
    /// Image-pull secret name, if a registry is configured.
    pub pull_secret: Option<String>,
    /// `fargate` or `ec2`.
    pub compute: &'static str,
    /// `alb` or `gateway-api`: what routes HTTP requests (an Ingress or an HTTPRoute).
    pub traffic: &'static str,
    /// `gateway-api`: the HTTPRoutes' `parentRefs`, in Gateway API shape.
    pub parent_refs: Vec<serde_json::Value>,
    /// Workloads, by name order.
    pub workloads: Vec<WorkloadContext>,
}

/// A workload as the templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadContext {
    /// Name.
    pub name: String,
    /// `web`, `tcp`, `worker`, `cron`.
    pub kind: &'static str,
    /// Image reference (placeholders such as `${CI_COMMIT_SHA}` kept).
    pub image: String,
    /// Replicas, or `None` when the HPA owns the count.
    pub replicas: Option<u32>,
    /// Labels of every object of the workload.
    pub labels: BTreeMap<String, String>,
    /// Labels of its pods (adds the version).
    pub pod_labels: BTreeMap<String, String>,
    /// Selector of its pods.
    pub selector: BTreeMap<String, String>,
    /// Blue-green: the selector of each slot's pods (`blue`, `green`).
    pub slot_selectors: BTreeMap<String, BTreeMap<String, String>>,
    /// Annotations of the Deployment/CronJob.
    pub annotations: BTreeMap<String, String>,
    /// Container ports.
    pub ports: Vec<PortContext>,
    /// The ports its Services expose (a `tcp` workload's ports without `expose: false`).
    pub service_ports: Vec<PortContext>,
    /// Entrypoint override.
    pub command: Option<Vec<String>>,
    /// Arguments.
    pub args: Option<Vec<String>>,
    /// Container resources, in Kubernetes shape.
    pub resources: serde_json::Value,
    /// Container env, in Kubernetes shape.
    pub env: Vec<serde_json::Value>,
    /// Readiness probe path, when it is an HTTP check (kept for project templates).
    pub readiness: Option<String>,
    /// Liveness probe path, when it is an HTTP check (kept for project templates).
    pub liveness: Option<String>,
    /// The readiness probe in Kubernetes shape (`httpGet`/`tcpSocket`/`exec` and timing).
    pub readiness_probe: Option<serde_json::Value>,
    /// The liveness probe in Kubernetes shape.
    pub liveness_probe: Option<serde_json::Value>,
    /// Seconds the preStop hook sleeps.
    pub pre_stop_seconds: u32,
    /// terminationGracePeriodSeconds.
    pub grace_seconds: u32,
    /// Seconds the ALB waits for in-flight requests of a deregistering target.
    pub deregistration_delay: u32,
    /// ALB exposure.
    pub http: Option<HttpContext>,
    /// NLB scheme (`tcp`).
    pub nlb_scheme: Option<&'static str>,
    /// NLB health check (`tcp`): one for every target group of the Service.
    pub nlb_health: Option<NlbHealth>,
    /// NLB target-group attributes (`tcp`): deregistration delay, connection termination.
    pub nlb_target_group_attributes: Option<String>,
    /// HPA settings.
    pub autoscaling: Option<AutoscalingContext>,
    /// Whether a PodDisruptionBudget is rendered.
    pub pdb: bool,
    /// Whether the workload is blue-green.
    pub blue_green: bool,
    /// Whether it is `stateful` (a StatefulSet per version).
    pub stateful: bool,
    /// Whether its Ingress forwards through the weighted action (blue-green, stateful).
    pub weighted: bool,
    /// Whether an NLB exposes it (`tcp`, or `stateful` with `tcp`, on the ALB provider).
    pub nlb: bool,
    /// Whether a `LoadBalancer` Service exposes it (`tcp`, or `stateful` with `tcp`): an NLB,
    /// or with `traffic.provider: gateway-api` the cluster's own load balancer.
    pub load_balancer: bool,
    /// `gateway-api`: the annotations of its `LoadBalancer` Service (`traffic.loadBalancerAnnotations`).
    pub lb_annotations: BTreeMap<String, String>,
    /// The kind of its pods' controller: `Deployment` or `StatefulSet`.
    pub controller: &'static str,
    /// `stateful`: the version (annotation value).
    pub version: Option<String>,
    /// Load-balancer attributes of the ALB (idle timeout), if any.
    pub alb_attributes: Option<String>,
    /// NLB listener attributes per `TCP-<port>` (idle timeout).
    pub nlb_listener_attributes: BTreeMap<String, String>,
    /// Preview host (blue-green web).
    pub preview_host: Option<String>,
    /// Cron schedule.
    pub schedule: Option<String>,
    /// Cron time zone.
    pub time_zone: Option<String>,
    /// IRSA role.
    pub role_arn: Option<String>,
    /// Pod security settings, defaults applied.
    pub security: SecurityContext,
}

/// The security settings of a workload's pods as the templates see them.
#[derive(Debug, Clone, Serialize)]
pub struct SecurityContext {
    /// `runAsUser`.
    pub run_as_user: i64,
    /// `runAsGroup`.
    pub run_as_group: i64,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: bool,
    /// Whether `/tmp` is an `emptyDir`.
    pub tmp: bool,
    /// `automountServiceAccountToken` (pod and ServiceAccount).
    pub service_account_token: bool,
}

impl SecurityContext {
    fn of(w: &Workload) -> Self {
        let security = w.security.clone().unwrap_or_default();
        Self {
            run_as_user: security.user(),
            run_as_group: security.group(),
            read_only_root_filesystem: security.read_only_root_filesystem.unwrap_or(true),
            tmp: security.tmp.unwrap_or(false),
            service_account_token: security
                .service_account_token
                .unwrap_or(w.service_account.is_some()),
        }
    }
}

/// The health check of an NLB's target groups: TCP or HTTP (NLBs cannot check UDP).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NlbHealth {
    /// `TCP` or `HTTP`.
    pub protocol: &'static str,
    /// The pod port checked.
    pub port: u16,
    /// HTTP path.
    pub path: Option<String>,
}

/// A container port.
#[derive(Debug, Clone, Serialize)]
pub struct PortContext {
    /// Port name.
    pub name: String,
    /// Port number.
    pub port: u16,
    /// `TCP` or `UDP`.
    pub protocol: &'static str,
}

/// ALB settings.
#[derive(Debug, Clone, Serialize)]
pub struct HttpContext {
    /// Host.
    pub host: String,
    /// Path prefix.
    pub path: String,
    /// Ingress annotations.
    pub annotations: BTreeMap<String, String>,
}

/// HPA settings.
#[derive(Debug, Clone, Serialize)]
pub struct AutoscalingContext {
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Metrics in autoscaling/v2 shape.
    pub metrics: Vec<serde_json::Value>,
}

/// Builds the context of an environment.
pub fn build(env: &Environment) -> EnvContext {
    let id = match &env.instance {
        Some(instance) => format!("{}-{instance}", env.name),
        None => env.name.clone(),
    };
    // IP targets of an ALB or an NLB: a pod must not be Ready before its target is healthy.
    // (The AWS Load Balancer Controller's readiness gates; a Gateway API controller has none.)
    let behind_lb = env.spec.traffic.provider == TrafficProvider::Alb
        && env
            .spec
            .workloads
            .values()
            .any(|w| w.http.is_some() || w.tcp.is_some() || w.kind == WorkloadKind::Tcp);
    let mut namespace_labels = BTreeMap::from([
        (labels::MANAGED_BY.to_owned(), "infra-gen".to_owned()),
        (labels::ENVIRONMENT.to_owned(), id.clone()),
        (labels::PART_OF.to_owned(), slugify(&env.spec.project.name)),
    ]);
    if behind_lb {
        namespace_labels.insert(labels::READINESS_GATE.to_owned(), "enabled".to_owned());
    }
    EnvContext {
        workloads: env
            .spec
            .workloads
            .iter()
            .map(|(name, w)| workload(env, &id, name, w))
            .collect(),
        name: env.name.clone(),
        namespace: env.namespace(),
        namespace_labels,
        pull_secret: env.spec.registry.as_ref().map(|r| r.pull_secret.clone()),
        compute: match env.spec.cluster.compute {
            Compute::Fargate => "fargate",
            Compute::Ec2 => "ec2",
        },
        traffic: env.spec.traffic.provider.as_str(),
        parent_refs: env
            .spec
            .traffic
            .parent_refs
            .iter()
            .map(|p| {
                let mut r = serde_json::json!({"name": p.name});
                if let Some(ns) = &p.namespace {
                    r["namespace"] = ns.clone().into();
                }
                if let Some(section) = &p.section_name {
                    r["sectionName"] = section.clone().into();
                }
                r
            })
            .collect(),
        id,
    }
}

fn kind_str(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Web => "web",
        WorkloadKind::Tcp => "tcp",
        WorkloadKind::Worker => "worker",
        WorkloadKind::Cron => "cron",
        WorkloadKind::Stateful => "stateful",
    }
}

fn workload(env: &Environment, id: &str, name: &str, w: &Workload) -> WorkloadContext {
    let selector = BTreeMap::from([
        (labels::NAME.to_owned(), name.to_owned()),
        (labels::INSTANCE.to_owned(), format!("{name}-{id}")),
    ]);
    let mut labels = selector.clone();
    labels.insert(labels::PART_OF.to_owned(), slugify(&env.spec.project.name));
    labels.insert(labels::MANAGED_BY.to_owned(), "infra-gen".to_owned());
    labels.insert(labels::ENVIRONMENT.to_owned(), id.to_owned());
    let mut pod_labels = labels.clone();
    if let Some(tag) = rules::image_tag(&w.image).filter(|t| !t.contains("${")) {
        let version: String = tag.chars().take(63).collect();
        pod_labels.insert(
            labels::VERSION.to_owned(),
            version.trim_end_matches(['-', '.', '_']).to_owned(),
        );
    }

    let rollout = w.rollout.as_ref();
    let blue_green = rollout.is_some_and(|r| r.strategy == Strategy::BlueGreen);
    let (pre_stop, drain, grace) = rules::shutdown_timing(w);
    let mut annotations =
        BTreeMap::from([(annotations::KIND.to_owned(), kind_str(w.kind).to_owned())]);
    if !matches!(w.kind, WorkloadKind::Cron | WorkloadKind::Stateful) {
        let strategy = if blue_green { "blue-green" } else { "rolling" };
        annotations.insert(annotations::ROLLOUT.to_owned(), strategy.to_owned());
    }
    if w.kind == WorkloadKind::Stateful {
        if let Some(v) =
            rules::version_slug(w).or_else(|| rules::image_tag(&w.image).map(str::to_owned))
        {
            annotations.insert(annotations::VERSION.to_owned(), v);
        }
        if let Some(seconds) = w.retire_after_seconds {
            annotations.insert(annotations::RETIRE_AFTER.to_owned(), seconds.to_string());
        }
    }
    if env.spec.cluster.compute == Compute::Fargate
        && let Ok(size) = rules::fargate_size(w)
    {
        annotations.insert(annotations::FARGATE_SIZE.to_owned(), size.to_string());
    }
    if let Some(r) = rollout.filter(|_| blue_green) {
        annotations.insert(
            annotations::SCALE_DOWN_DELAY.to_owned(),
            r.scale_down_delay_seconds.unwrap_or(600).to_string(),
        );
        let steps = r.steps.clone().unwrap_or_else(|| vec![100]);
        let steps: Vec<String> = steps.iter().map(u8::to_string).collect();
        annotations.insert(annotations::STEPS.to_owned(), steps.join(","));
        annotations.insert(
            annotations::STEP_PAUSE.to_owned(),
            r.step_pause_seconds.unwrap_or(30).to_string(),
        );
        if w.kind == WorkloadKind::Tcp {
            annotations.insert(
                annotations::OVERLAP.to_owned(),
                r.overlap_seconds.unwrap_or(0).to_string(),
            );
        }
        if let Some(canary) = &r.canary {
            annotations.insert(
                annotations::CANARY.to_owned(),
                serde_json::to_string(canary).unwrap_or_default(),
            );
        }
    }

    let ports: Vec<PortContext> = match (w.port, &w.ports) {
        (Some(port), _) => vec![PortContext {
            name: "http".into(),
            port,
            protocol: "TCP",
        }],
        (None, Some(ports)) => ports
            .iter()
            .map(|p| PortContext {
                name: p.name.clone(),
                port: p.port,
                protocol: match p.protocol {
                    Protocol::Tcp => "TCP",
                    Protocol::Udp => "UDP",
                },
            })
            .collect(),
        (None, None) => Vec::new(),
    };

    let resources = match &w.resources {
        None => serde_json::json!({}),
        Some(r) => {
            let limits = r.limits.as_ref();
            let mut limit = serde_json::Map::new();
            if let Some(cpu) = limits.and_then(|l| l.cpu.as_ref()) {
                limit.insert("cpu".into(), cpu.text().into());
            }
            let memory_limit = limits.and_then(|l| l.memory.as_ref()).unwrap_or(&r.memory);
            limit.insert("memory".into(), memory_limit.text().into());
            serde_json::json!({"requests": {"cpu": r.cpu.text(), "memory": r.memory.text()}, "limits": limit})
        }
    };

    let stateful = w.kind == WorkloadKind::Stateful;
    // The version names the release: a slug, or the tag's `${VARIABLE}` that apply resolves.
    let version = stateful.then(|| {
        rules::version_slug(w)
            .unwrap_or_else(|| rules::image_tag(&w.image).unwrap_or_default().to_owned())
    });
    let mut env_list: Vec<serde_json::Value> = w
        .env
        .iter()
        .map(|(var, value)| match value {
            EnvValue::Text(t) => serde_json::json!({"name": var, "value": t}),
            EnvValue::Number(n) if n.fract() == 0.0 => serde_json::json!({"name": var, "value": format!("{}", *n as i64)}),
            EnvValue::Number(n) => serde_json::json!({"name": var, "value": n.to_string()}),
            EnvValue::Bool(b) => serde_json::json!({"name": var, "value": b.to_string()}),
            EnvValue::Secret(s) => serde_json::json!({"name": var, "valueFrom": {"secretKeyRef": {"name": s.secret, "key": s.key}}}),
            EnvValue::Field(f) => serde_json::json!({"name": var, "valueFrom": {"fieldRef": {"fieldPath": f.field}}}),
        })
        .collect();
    if let Some(version) = &version {
        // A server's stable identity (`<name>-<version>-<ordinal>`) and its release.
        if !w.env.contains_key("SERVER_ID") {
            env_list.push(serde_json::json!({"name": "SERVER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}));
        }
        if !w.env.contains_key("VERSION") {
            env_list.push(serde_json::json!({"name": "VERSION", "value": version}));
        }
    }
    let load_balancer = w.kind == WorkloadKind::Tcp || (stateful && w.tcp.is_some());
    let alb = env.spec.traffic.provider == TrafficProvider::Alb;
    let nlb = load_balancer && alb;

    let readiness = w
        .probes
        .as_ref()
        .and_then(|p| p.readiness.as_ref())
        .and_then(http_path);
    let http = w.http.as_ref().map(|h| {
        let mut a = BTreeMap::new();
        // An HTTPRoute carries no annotations: the Gateway holds TLS and the listener.
        if alb {
            let key = |k: &str| format!("alb.ingress.kubernetes.io/{k}");
            a.insert(key("scheme"), h.scheme.as_str().to_owned());
            a.insert(key("target-type"), "ip".to_owned());
            a.insert(
                key("healthcheck-path"),
                h.healthcheck_path
                    .clone()
                    .or_else(|| readiness.clone())
                    .unwrap_or_else(|| "/".into()),
            );
            a.insert(key("success-codes"), "200".to_owned());
            a.insert(
                key("target-group-attributes"),
                format!("deregistration_delay.timeout_seconds={}", pre_stop + drain),
            );
            match &h.certificate_arn {
                Some(arn) => {
                    a.insert(
                        key("listen-ports"),
                        r#"[{"HTTP": 80}, {"HTTPS": 443}]"#.to_owned(),
                    );
                    a.insert(key("certificate-arn"), arn.clone());
                    a.insert(key("ssl-redirect"), "443".to_owned());
                }
                None => {
                    a.insert(key("listen-ports"), r#"[{"HTTP": 80}]"#.to_owned());
                }
            }
            if let Some(group) = &h.group_name {
                a.insert(key("group.name"), group.clone());
            }
            if let Some(seconds) = h.idle_timeout_seconds {
                a.insert(
                    key("load-balancer-attributes"),
                    format!("idle_timeout.timeout_seconds={seconds}"),
                );
            }
            if blue_green {
                a.insert(
                    key(&format!("actions.{name}")),
                    forward_action(name, 100, 0),
                );
            }
            if w.kind == WorkloadKind::Stateful {
                // `apply` lists every running version here, the newest with all the weight.
                a.insert(
                    key(&format!("actions.{name}")),
                    versions_action(&[(format!("{name}-headless"), 100)]),
                );
            }
        }
        HttpContext {
            host: instance_host(env, &h.host),
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            annotations: a,
        }
    });

    let autoscaling = w.autoscaling.as_ref().map(|a| {
        let mut metrics = Vec::new();
        let resource = |name: &str, percent: u8| {
            serde_json::json!({"type": "Resource", "resource": {"name": name, "target": {"type": "Utilization", "averageUtilization": percent}}})
        };
        metrics.push(resource("cpu", a.cpu_percent.unwrap_or(70)));
        if let Some(m) = a.memory_percent {
            metrics.push(resource("memory", m));
        }
        AutoscalingContext { min: a.min, max: a.max, metrics }
    });
    let min_replicas = autoscaling
        .as_ref()
        .map_or(w.replicas.unwrap_or(1), |a| a.min);

    let nlb_health = nlb.then(|| nlb_health(w, &ports)).flatten();
    let service_ports: Vec<PortContext> = ports
        .iter()
        .filter(|p| {
            w.ports
                .iter()
                .flatten()
                .find(|s| s.name == p.name)
                .is_none_or(|s| s.expose != Some(false))
        })
        .cloned()
        .collect();
    // One listener per exposed TCP port (AWS Load Balancer Controller v2.10+:
    // `service.beta.kubernetes.io/aws-load-balancer-listener-attributes.${Protocol}-${Port}`;
    // NLB TCP idle timeout 60–6000 s, default 350 s).
    let nlb_listener_attributes: BTreeMap<String, String> = w
        .tcp
        .as_ref()
        .and_then(|t| t.idle_timeout_seconds)
        .filter(|_| nlb)
        .map(|seconds| {
            service_ports
                .iter()
                .filter(|p| p.protocol == "TCP")
                .map(|p| {
                    (
                        format!("service.beta.kubernetes.io/aws-load-balancer-listener-attributes.TCP-{}", p.port),
                        format!("tcp.idle_timeout.seconds={seconds}"),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    WorkloadContext {
        weighted: blue_green || stateful,
        stateful,
        nlb,
        load_balancer,
        lb_annotations: if load_balancer && !alb {
            let mut a = env.spec.traffic.load_balancer_annotations.clone();
            a.extend(w.tcp.iter().flat_map(|t| t.annotations.clone()));
            a
        } else {
            BTreeMap::new()
        },
        controller: if stateful { "StatefulSet" } else { "Deployment" },
        version: version.clone(),
        alb_attributes: w
            .http
            .as_ref()
            .and_then(|h| h.idle_timeout_seconds)
            .map(|s| format!("idle_timeout.timeout_seconds={s}")),
        nlb_listener_attributes,
        name: name.to_owned(),
        kind: kind_str(w.kind),
        image: w.image.clone(),
        replicas: if autoscaling.is_some() {
            None
        } else {
            Some(w.replicas.unwrap_or(1))
        },
        labels,
        pod_labels,
        slot_selectors: SLOTS
            .iter()
            .map(|slot| {
                let mut s = selector.clone();
                s.insert(labels::SLOT.to_owned(), (*slot).to_owned());
                ((*slot).to_owned(), s)
            })
            .collect(),
        selector,
        annotations,
        ports,
        command: w.command.clone(),
        args: w.args.clone(),
        resources,
        env: env_list,
        readiness_probe: w
            .probes
            .as_ref()
            .and_then(|p| p.readiness.as_ref())
            .map(|p| with_timing(probe_json(p), &[("periodSeconds", 5), ("failureThreshold", 2)])),
        liveness_probe: w.probes.as_ref().and_then(|p| p.liveness.as_ref()).map(|p| {
            with_timing(
                probe_json(p),
                &[("initialDelaySeconds", 5), ("periodSeconds", 10), ("failureThreshold", 3)],
            )
        }),
        readiness,
        liveness: w.probes.as_ref().and_then(|p| p.liveness.as_ref()).and_then(http_path),
        nlb_health,
        nlb_target_group_attributes: nlb.then(|| {
            let (delay, termination) = rules::nlb_draining(w);
            format!(
                "deregistration_delay.timeout_seconds={delay},deregistration_delay.connection_termination.enabled={termination}"
            )
        }),
        service_ports,
        pre_stop_seconds: pre_stop,
        grace_seconds: grace,
        deregistration_delay: pre_stop + drain,
        http,
        nlb_scheme: nlb.then(|| {
            w.tcp
                .as_ref()
                .map(|t| t.scheme)
                .unwrap_or_default()
                .as_str()
        }),
        pdb: w.kind != WorkloadKind::Cron && min_replicas >= 2,
        autoscaling,
        blue_green,
        preview_host: rollout
            .and_then(|r| r.preview_host.as_deref())
            .map(|h| instance_host(env, h)),
        schedule: w.schedule.clone(),
        time_zone: w.time_zone.clone(),
        role_arn: w.service_account.as_ref().map(|s| s.role_arn.clone()),
        security: SecurityContext::of(w),
    }
}

/// The path of an HTTP probe.
fn http_path(probe: &Probe) -> Option<String> {
    match probe {
        Probe::Path(path) => Some(path.clone()),
        Probe::Check(check) => check.http.clone(),
    }
}

fn port_json(port: &PortRef) -> serde_json::Value {
    match port {
        PortRef::Number(n) => serde_json::json!(n),
        PortRef::Name(n) => serde_json::json!(n),
    }
}

/// A probe's handler in Kubernetes shape. A plain path checks the port named `http`.
fn probe_json(probe: &Probe) -> serde_json::Value {
    let http = PortRef::Name("http".into());
    match probe {
        Probe::Path(path) => serde_json::json!({"httpGet": {"path": path, "port": "http"}}),
        Probe::Check(c) => match (&c.http, &c.tcp, &c.exec) {
            (Some(path), _, _) => {
                serde_json::json!({"httpGet": {"path": path, "port": port_json(c.port.as_ref().unwrap_or(&http))}})
            }
            (None, Some(port), _) => serde_json::json!({"tcpSocket": {"port": port_json(port)}}),
            (None, None, Some(command)) => serde_json::json!({"exec": {"command": command}}),
            // Refused by the rules (exactly one of http, tcp, exec).
            (None, None, None) => serde_json::json!({}),
        },
    }
}

fn with_timing(mut probe: serde_json::Value, timing: &[(&str, u32)]) -> serde_json::Value {
    if let Some(map) = probe.as_object_mut() {
        for (key, value) in timing {
            map.insert((*key).to_owned(), serde_json::json!(value));
        }
    }
    probe
}

/// The declared port a reference names.
pub fn resolve_port<'p>(ports: &'p [PortContext], port: &PortRef) -> Option<&'p PortContext> {
    ports.iter().find(|p| match port {
        PortRef::Name(name) => p.name == *name,
        PortRef::Number(number) => p.port == *number,
    })
}

/// How an NLB checks a `tcp` workload's targets: the readiness probe when it is an HTTP or
/// TCP check on a TCP port; else a TCP connect to the first TCP port. `None`: only UDP ports
/// and no TCP/HTTP readiness probe — nothing the NLB could check (a rule refuses it).
pub fn nlb_health(w: &Workload, ports: &[PortContext]) -> Option<NlbHealth> {
    let tcp = |p: &&PortContext| p.protocol == "TCP";
    let http = PortRef::Name("http".into());
    let from_probe = w
        .probes
        .as_ref()
        .and_then(|p| p.readiness.as_ref())
        .and_then(|probe| match probe {
            Probe::Path(path) => resolve_port(ports, &http).filter(tcp).map(|p| NlbHealth {
                protocol: "HTTP",
                port: p.port,
                path: Some(path.clone()),
            }),
            Probe::Check(check) => match (&check.http, &check.tcp) {
                (Some(path), _) => resolve_port(ports, check.port.as_ref().unwrap_or(&http))
                    .filter(tcp)
                    .map(|p| NlbHealth {
                        protocol: "HTTP",
                        port: p.port,
                        path: Some(path.clone()),
                    }),
                (None, Some(port)) => resolve_port(ports, port).filter(tcp).map(|p| NlbHealth {
                    protocol: "TCP",
                    port: p.port,
                    path: None,
                }),
                _ => None,
            },
        });
    from_probe.or_else(|| {
        ports.iter().find(tcp).map(|p| NlbHealth {
            protocol: "TCP",
            port: p.port,
            path: None,
        })
    })
}

/// A review instance gets its own host names: `mr-42.` + the host of the file.
pub fn instance_host(env: &Environment, host: &str) -> String {
    match &env.instance {
        Some(instance) => format!("{instance}.{host}"),
        None => host.to_owned(),
    }
}

/// The AWS LB Controller forward action over the Services of a stateful workload's versions
/// (`<name>-<version>`), with their weights.
pub fn versions_action(services: &[(String, u8)]) -> String {
    let groups: Vec<serde_json::Value> = services
        .iter()
        .map(|(service, weight)| serde_json::json!({"serviceName": service, "servicePort": "http", "weight": weight}))
        .collect();
    serde_json::json!({"type": "forward", "forwardConfig": {"targetGroups": groups}}).to_string()
}

/// The AWS LB Controller forward action sending `blue`% to the blue slot and `green`% to
/// the green slot of a workload.
pub fn forward_action(name: &str, blue: u8, green: u8) -> String {
    serde_json::json!({
        "type": "forward",
        "forwardConfig": {
            "targetGroups": [
                {"serviceName": format!("{name}-blue"), "servicePort": "http", "weight": blue},
                {"serviceName": format!("{name}-green"), "servicePort": "http", "weight": green},
            ]
        }
    })
    .to_string()
}
