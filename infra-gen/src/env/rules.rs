//! The deployment rules: what a valid environment file may ask for. Every rule
//! is a clear error (or a warning), never a silent fix, and names the key to change.

use std::collections::BTreeMap;

use super::Environment;
use super::diagnostic::Diagnostic;
use super::fargate::{self, FargateSize};
use super::model::{
    Autoscaling, Canary, Compute, EnvValue, HeaderMatch, PortRef, Probe, Protocol, Quantity,
    Security, Strategy, TrafficProvider, Workload, WorkloadKind,
};
use crate::capacity;

/// Longest DNS-1123 label.
pub const MAX_LABEL: usize = 63;
/// Seconds added to preStop + drain for the default terminationGracePeriodSeconds.
pub const GRACE_MARGIN: u32 = 10;
/// The smallest margin accepted when terminationGracePeriodSeconds is set by hand.
pub const MIN_GRACE_MARGIN: u32 = 5;
/// Default preStop sleep.
pub const DEFAULT_PRE_STOP: u32 = 15;
/// Default drain window.
pub const DEFAULT_DRAIN: u32 = 10;

const DOWNWARD_FIELDS: [&str; 9] = [
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.podIP",
    "status.hostIP",
];

/// Whether `name` is a DNS-1123 label: lowercase letters, digits and `-`, starting and
/// ending alphanumeric, at most 63 characters.
pub fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_hostname(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    host.len() <= 253 && host.contains('.') && host.split('.').all(is_dns_label)
}

/// The timing of a workload's shutdown: (preStop, drain, terminationGracePeriodSeconds).
pub fn shutdown_timing(workload: &Workload) -> (u32, u32, u32) {
    let shutdown = workload.shutdown.as_ref();
    let pre_stop = shutdown
        .and_then(|s| s.pre_stop_seconds)
        .unwrap_or(DEFAULT_PRE_STOP);
    let drain = shutdown
        .and_then(|s| s.drain_seconds)
        .unwrap_or(DEFAULT_DRAIN);
    let grace = shutdown
        .and_then(|s| s.grace_period_seconds)
        .unwrap_or(pre_stop + drain + GRACE_MARGIN);
    (pre_stop, drain, grace)
}

/// How an NLB drains a `tcp` workload's deregistered targets: (deregistration delay in
/// seconds, whether connections are closed when it ends). Defaults: preStop + drain, and
/// connections stay open (players are not cut off by a cutover).
pub fn nlb_draining(workload: &Workload) -> (u32, bool) {
    let (pre_stop, drain, _) = shutdown_timing(workload);
    let tcp = workload.tcp.as_ref();
    (
        tcp.and_then(|t| t.deregistration_delay_seconds)
            .unwrap_or(pre_stop + drain),
        tcp.and_then(|t| t.connection_termination).unwrap_or(false),
    )
}

/// The ports a workload's container declares: (name, number, protocol).
pub fn declared_ports(workload: &Workload) -> Vec<(String, u16, Protocol)> {
    match (workload.port, &workload.ports) {
        (Some(port), _) => vec![("http".to_owned(), port, Protocol::Tcp)],
        (None, Some(ports)) => ports
            .iter()
            .map(|p| (p.name.clone(), p.port, p.protocol))
            .collect(),
        (None, None) => Vec::new(),
    }
}

/// The Fargate size a workload's pod gets, or why it has none.
pub fn fargate_size(workload: &Workload) -> Result<FargateSize, String> {
    let resources = workload
        .resources
        .as_ref()
        .ok_or_else(|| "no resources: Fargate sizes the pod from its requests".to_owned())?;
    let limits = resources.limits.as_ref();
    let parse =
        |what: &str, quantity: &Quantity, parser: fn(&str) -> Option<f64>, example: &str| {
            parser(&quantity.text()).ok_or_else(|| {
                format!(
                    "{what} {:?} is not a quantity like {example}",
                    quantity.text()
                )
            })
        };
    let cpu_request = parse("cpu", &resources.cpu, fargate::parse_cpu, "500m or 1")?;
    let memory_request = parse(
        "memory",
        &resources.memory,
        fargate::parse_memory,
        "512Mi or 1Gi",
    )?;
    let cpu_limit = match limits.and_then(|l| l.cpu.as_ref()) {
        Some(cpu) => parse("limits.cpu", cpu, fargate::parse_cpu, "500m or 1")?,
        None => 0.0,
    };
    let memory_limit = match limits.and_then(|l| l.memory.as_ref()) {
        Some(memory) => parse(
            "limits.memory",
            memory,
            fargate::parse_memory,
            "512Mi or 1Gi",
        )?,
        None => 0.0,
    };
    fargate::size_for(cpu_request.max(cpu_limit), memory_request.max(memory_limit)).ok_or_else(|| {
        format!(
            "the pod needs {} vCPU and {:.0} MiB (+{} MiB Fargate overhead), more than the largest Fargate size (16 vCPU / 120 GB)",
            cpu_request.max(cpu_limit) / 1000.0,
            memory_request.max(memory_limit),
            fargate::OVERHEAD_MIB
        )
    })
}

/// The tag of an image reference, if any (`None` for `repo/app` and `repo/app@sha256:…`).
pub fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':').map(|(_, tag)| tag)
}

struct Checker<'a> {
    env: &'a Environment,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::error(Some(self.env.span(path)), path, message).with_hint(hint);
        self.out.push(d);
    }

    fn error_at_key(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::error(Some(self.env.key_span(path)), path, message).with_hint(hint);
        self.out.push(d);
    }

    fn warning(&mut self, path: &str, message: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::warning(Some(self.env.span(path)), path, message).with_hint(hint);
        self.out.push(d);
    }
}

/// The AWS partition of a region, as ARNs name it: `aws-cn` for China, `aws-us-gov` for
/// GovCloud, `aws` elsewhere.
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Checks one environment.
pub fn check_environment(env: &Environment, instance: Option<&str>) -> Vec<Diagnostic> {
    let mut c = Checker {
        env,
        out: Vec::new(),
    };
    let spec = &env.spec;

    if let Some(instance) = instance
        && spec.review
        && !is_dns_label(instance)
    {
        c.error(
            "review",
            format!("instance {instance:?} is not a DNS-1123 label"),
            "use lowercase letters, digits and -, e.g. mr-42",
        );
    }
    let slug = super::slugify(&spec.project.name);
    if slug.is_empty() {
        c.error(
            "project.name",
            format!(
                "project name {:?} has no letter or digit to make a namespace from",
                spec.project.name
            ),
            "use the GitLab project path, e.g. controltower",
        );
    }
    let namespace = env.namespace();
    if !slug.is_empty() && !is_dns_label(&namespace) {
        c.error(
            "project.name",
            format!("namespace {namespace:?} ({} characters) is not a DNS-1123 label of at most {MAX_LABEL}", namespace.len()),
            "shorten project.name, or drop namespace.suffix",
        );
    }
    if let Some(version) = &spec.cluster.version {
        let valid = version
            .split_once('.')
            .is_some_and(|(a, b)| a == "1" && b.parse::<u32>().is_ok());
        if !valid {
            c.error(
                "cluster.version",
                format!(
                    "cluster.version {version:?} is not a Kubernetes minor version like \"1.33\""
                ),
                "quote it: version: \"1.33\"",
            );
        }
    }
    if spec
        .cluster
        .context
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        c.error(
            "cluster.context",
            "cluster.context is empty".to_owned(),
            "name the kubeconfig context that reaches this cluster (kubectl config get-contexts), or drop the key",
        );
    }
    if let Some(registry) = &spec.registry
        && !is_dns_label(&registry.pull_secret)
    {
        c.error(
            "registry.pullSecret",
            format!(
                "pull secret name {:?} is not a DNS-1123 label",
                registry.pull_secret
            ),
            "e.g. gitlab-registry",
        );
    }
    for (name, keys) in &spec.secrets {
        let path = format!("secrets.{name}");
        if !is_dns_label(name) {
            c.error_at_key(
                &path,
                format!("secret name {name:?} is not a DNS-1123 label"),
                "lowercase letters, digits and -",
            );
        }
        for (key, source) in keys {
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                c.error_at_key(
                    &format!("{path}.{key}"),
                    format!("secret key {key:?} may only hold letters, digits, - _ ."),
                    "e.g. uri",
                );
            }
            if !is_env_name(&source.from_env) {
                c.error(
                    &format!("{path}.{key}.fromEnv"),
                    format!("{:?} is not an environment variable name", source.from_env),
                    "e.g. MONGODB_URI",
                );
            }
        }
    }
    check_traffic(&mut c);
    if spec.workloads.is_empty() {
        c.error(
            "workloads",
            "no workloads",
            "add one, e.g. `workloads: {web: {kind: web, image: …, port: 8080}}`",
        );
    }
    for (name, workload) in &spec.workloads {
        check_workload(&mut c, name, workload);
    }
    c.out
}

/// Whether `name` is a DNS-1123 subdomain (a Gateway's or a listener's name).
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// The traffic provider and what it needs.
fn check_traffic(c: &mut Checker<'_>) {
    let traffic = &c.env.spec.traffic;
    match traffic.provider {
        TrafficProvider::GatewayApi if traffic.parent_refs.is_empty() => c.error(
            "traffic.provider",
            "traffic.provider gateway-api needs the Gateway its HTTPRoutes attach to",
            "add traffic.parentRefs, e.g. [{name: public, namespace: gateways, sectionName: https}]",
        ),
        TrafficProvider::Alb if !traffic.parent_refs.is_empty() => c.error(
            "traffic.parentRefs",
            "parentRefs attach HTTPRoutes to a Gateway, but traffic.provider is alb (the default): the ALB Ingress has no parent",
            "set traffic.provider: gateway-api, or drop parentRefs",
        ),
        _ => {}
    }
    if traffic.provider == TrafficProvider::Alb && !traffic.load_balancer_annotations.is_empty() {
        c.error(
            "traffic.loadBalancerAnnotations",
            "loadBalancerAnnotations are for the cluster's own load balancer (traffic.provider gateway-api); on the ALB provider an NLB is configured by the tcp keys",
            "set traffic.provider: gateway-api, or use workloads.<name>.tcp",
        );
    }
    for (i, parent) in traffic.parent_refs.iter().enumerate() {
        let at = format!("traffic.parentRefs[{i}]");
        if !is_dns_subdomain(&parent.name) {
            c.error(
                &format!("{at}.name"),
                format!(
                    "{:?} is not a Gateway name (a DNS-1123 subdomain)",
                    parent.name
                ),
                "e.g. public",
            );
        }
        if let Some(ns) = &parent.namespace
            && !is_dns_label(ns)
        {
            c.error(
                &format!("{at}.namespace"),
                format!("{ns:?} is not a namespace name (a DNS-1123 label)"),
                "e.g. gateways",
            );
        }
        if let Some(section) = &parent.section_name
            && !is_dns_subdomain(section)
        {
            c.error(
                &format!("{at}.sectionName"),
                format!("{section:?} is not a listener name (lowercase letters, digits, - and .)"),
                "the name of one of the Gateway's listeners, e.g. https",
            );
        }
    }
    check_annotation_keys(
        c,
        "traffic.loadBalancerAnnotations",
        &traffic.load_balancer_annotations,
    );
}

/// Annotation keys: `[prefix/]name`, a DNS subdomain and up to 63 letters, digits, - _ .
fn check_annotation_keys(c: &mut Checker<'_>, base: &str, annotations: &BTreeMap<String, String>) {
    for key in annotations.keys() {
        let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
        let valid_name = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            && name.starts_with(|ch: char| ch.is_ascii_alphanumeric())
            && name.ends_with(|ch: char| ch.is_ascii_alphanumeric());
        if !valid_name || (key.contains('/') && !is_dns_subdomain(prefix)) {
            c.error_at_key(
                &format!("{base}.{key}"),
                format!("{key:?} is not an annotation key ([prefix/]name: a DNS subdomain, then up to 63 letters, digits, - _ .)"),
                "e.g. service.beta.kubernetes.io/alibaba-cloud-loadbalancer-spec",
            );
        }
    }
}

/// What the ALB and NLB keys become with the Gateway API provider: each refused, with where
/// the setting lives there.
fn check_gateway_keys(c: &mut Checker<'_>, base: &str, w: &Workload) {
    let http_keys: [(&str, &str, &str); 5] = [
        (
            "certificateArn",
            "TLS is the Gateway's: its HTTPS listener holds the certificate (certificateRefs), not the route",
            "drop certificateArn; name the Gateway's HTTPS listener in traffic.parentRefs[].sectionName",
        ),
        (
            "scheme",
            "whether the load balancer is internal is the Gateway's (its address and class), not the route's",
            "drop scheme; attach to an internal Gateway in traffic.parentRefs for an internal service",
        ),
        (
            "healthcheckPath",
            "the Gateway API has no load-balancer health check: a pod gets requests once its readiness probe passes",
            "drop healthcheckPath; set probes.readiness",
        ),
        (
            "groupName",
            "groupName shares one ALB between Ingresses; with the Gateway API every route attaches to the Gateway in traffic.parentRefs",
            "drop groupName",
        ),
        (
            "idleTimeoutSeconds",
            "idle timeouts are set on the Gateway (an implementation's policy), not on the route",
            "drop idleTimeoutSeconds and set the timeout in the Gateway implementation's policy",
        ),
    ];
    for (key, why, hint) in http_keys {
        let path = format!("{base}.http.{key}");
        if c.env.has(&path) {
            c.error_at_key(&path, format!("http.{key} is an ALB setting: {why}"), hint);
        }
    }
    for key in [
        "scheme",
        "deregistrationDelaySeconds",
        "connectionTermination",
        "idleTimeoutSeconds",
    ] {
        let path = format!("{base}.tcp.{key}");
        if c.env.has(&path) {
            c.error_at_key(
                &path,
                format!("tcp.{key} is an NLB setting; with traffic.provider gateway-api a tcp workload gets a plain LoadBalancer Service of the cluster's own load balancer"),
                "drop it and set the cloud's options in traffic.loadBalancerAnnotations",
            );
        }
    }
    if let Some(tcp) = &w.tcp {
        check_annotation_keys(c, &format!("{base}.tcp.annotations"), &tcp.annotations);
    }
    if w.kind == WorkloadKind::Stateful && w.http.is_some() {
        c.error(
            &format!("{base}.http"),
            "a stateful workload's versions are weighted over HTTP on the ALB only; with traffic.provider gateway-api a stateful workload is exposed with tcp (or not at all)",
            "use tcp for the game servers, or traffic.provider alb",
        );
    }
}

fn check_workload(c: &mut Checker<'_>, name: &str, w: &Workload) {
    let spec = &c.env.spec;
    let base = format!("workloads.{name}");
    let at = |key: &str| format!("{base}.{key}");
    if !is_dns_label(name) {
        c.error(
            &base,
            format!("workload name {name:?} is not a DNS-1123 label"),
            "use lowercase letters, digits and -, at most 63 characters",
        );
    }
    let blue_green = w
        .rollout
        .as_ref()
        .is_some_and(|r| r.strategy == Strategy::BlueGreen);
    let gateway = spec.traffic.provider == TrafficProvider::GatewayApi;
    if gateway {
        check_gateway_keys(c, &base, w);
    } else if w.tcp.as_ref().is_some_and(|t| !t.annotations.is_empty()) {
        c.error_at_key(
            &format!("{base}.tcp.annotations"),
            "tcp.annotations are for the cluster's own load balancer (traffic.provider gateway-api); the NLB is configured by the other tcp keys",
            "drop them, or set traffic.provider: gateway-api",
        );
    }
    if blue_green && name.len() + "-preview".len() > MAX_LABEL {
        c.error(&base, format!("workload name {name:?} is too long for blue-green: {name}-preview would exceed {MAX_LABEL} characters"), "shorten the name");
    }

    // Image.
    match image_tag(&w.image) {
        _ if w.image.contains('@') => {}
        None if !spec.review => c.error(
            &at("image"),
            format!(
                "image {:?} has no tag, so every node may run a different version",
                w.image
            ),
            "pin a tag, e.g. :1.4.2 or :${CI_COMMIT_SHA}",
        ),
        Some("latest") if !spec.review => c.error(
            &at("image"),
            format!(
                "image {:?} uses :latest outside a review environment",
                w.image
            ),
            "pin a tag, e.g. :1.4.2 or :${CI_COMMIT_SHA}",
        ),
        _ => {}
    }
    if w.image.contains("${") {
        let vars = placeholders(&w.image);
        if vars.iter().any(|v| !is_env_name(v)) || w.image.matches("${").count() != vars.len() {
            c.error(
                &at("image"),
                format!("image {:?} has a malformed ${{VARIABLE}}", w.image),
                "write ${NAME} with letters, digits and _",
            );
        }
    }

    // Kind-specific shape.
    let exposed_port = |c: &mut Checker<'_>| {
        if w.port.is_none() {
            c.error(
                &base,
                "a web workload needs `port` (its container port)",
                "e.g. port: 8080",
            );
        }
    };
    let forbid = |c: &mut Checker<'_>, present: bool, key: &str, why: &str| {
        if present {
            c.error(
                &at(key),
                format!("`{key}` does not apply to a {} workload", kind_name(w.kind)),
                why.to_owned(),
            );
        }
    };
    match w.kind {
        WorkloadKind::Web => {
            exposed_port(c);
            forbid(
                c,
                w.ports.is_some(),
                "ports",
                "web workloads have one `port`; use kind tcp for several",
            );
            forbid(c, w.tcp.is_some(), "tcp", "use kind tcp for an NLB");
        }
        WorkloadKind::Tcp => {
            forbid(
                c,
                w.port.is_some(),
                "port",
                "list the ports under `ports` with a name each",
            );
            forbid(c, w.http.is_some(), "http", "use kind web for an ALB");
            match &w.ports {
                None => c.error(
                    &base,
                    "a tcp workload needs `ports`",
                    "e.g. ports: [{name: game, port: 7000}]",
                ),
                Some(ports) if ports.is_empty() => {
                    c.error(&at("ports"), "ports is empty", "list at least one port")
                }
                Some(ports) => {
                    for (i, p) in ports.iter().enumerate() {
                        if !is_dns_label(&p.name) || p.name.len() > 15 {
                            c.error(&format!("{base}.ports[{i}].name"), format!("port name {:?} must be a DNS-1123 label of at most 15 characters", p.name), "e.g. game");
                        }
                    }
                }
            }
        }
        WorkloadKind::Stateful => {
            forbid(
                c,
                w.port.is_some(),
                "port",
                "list the ports under `ports` with a name each (the ALB needs one named http)",
            );
            forbid(
                c,
                w.rollout.is_some(),
                "rollout",
                "versions run side by side: each release is its own StatefulSet, so there is no rollout strategy",
            );
            if w.http.is_some() && w.tcp.is_some() {
                c.error(
                    &base,
                    "a stateful workload is exposed through the ALB (`http`) or an NLB (`tcp`), not both",
                    "keep one",
                );
            }
            let ports = w.ports.as_deref().unwrap_or_default();
            if w.http.is_some()
                && !ports
                    .iter()
                    .any(|p| p.name == "http" && p.protocol == Protocol::Tcp)
            {
                c.error(
                    &at("http"),
                    "the ALB forwards to the port named http, which this workload does not declare",
                    "add {name: http, port: 8080} to ports",
                );
            }
            if w.tcp.is_some() && ports.is_empty() {
                c.error(
                    &base,
                    "an NLB needs `ports`",
                    "e.g. ports: [{name: game, port: 7777}]",
                );
            }
            for (i, p) in ports.iter().enumerate() {
                if !is_dns_label(&p.name) || p.name.len() > 15 {
                    c.error(
                        &format!("{base}.ports[{i}].name"),
                        format!(
                            "port name {:?} must be a DNS-1123 label of at most 15 characters",
                            p.name
                        ),
                        "e.g. game",
                    );
                }
            }
            match version_slug(w) {
                Some(v) if v.is_empty() => c.error(
                    &at(if w.version.is_some() { "version" } else { "image" }),
                    "the version has no letters or digits to name the release by",
                    "e.g. version: 1.4.2",
                ),
                Some(v) if name.len() + 1 + v.len() > MAX_VERSIONED_NAME => c.error(
                    &at(if w.version.is_some() { "version" } else { "image" }),
                    format!(
                        "each release is a StatefulSet {name}-{v}, {} characters: at most {MAX_VERSIONED_NAME} (its pods' controller-revision-hash label must fit 63)",
                        name.len() + 1 + v.len()
                    ),
                    "set a shorter `version:`, or shorten the workload name",
                ),
                _ => {}
            }
            if let Some(seconds) = w.retire_after_seconds {
                let (pre_stop, drain, _) = shutdown_timing(w);
                let draining = if w.tcp.is_some() {
                    nlb_draining(w).0
                } else {
                    pre_stop + drain
                };
                if seconds < draining {
                    c.error(
                        &at("retireAfterSeconds"),
                        format!("an old version is retired {seconds} s after the switch, before its load-balancer targets finished draining ({draining} s)"),
                        format!("at least {draining}"),
                    );
                }
            }
        }
        WorkloadKind::Worker | WorkloadKind::Cron => {
            let why = "only web and tcp workloads are exposed";
            forbid(c, w.port.is_some(), "port", why);
            forbid(
                c,
                w.ports.is_some() && w.kind == WorkloadKind::Cron,
                "ports",
                "a job has no ports to probe or expose",
            );
            forbid(c, w.http.is_some(), "http", why);
            forbid(c, w.tcp.is_some(), "tcp", why);
            for (i, p) in w.ports.iter().flatten().enumerate() {
                if !is_dns_label(&p.name) || p.name.len() > 15 {
                    c.error(
                        &format!("{base}.ports[{i}].name"),
                        format!(
                            "port name {:?} must be a DNS-1123 label of at most 15 characters",
                            p.name
                        ),
                        "e.g. health",
                    );
                }
            }
            forbid(
                c,
                blue_green,
                "rollout",
                "blue-green needs traffic to move; use strategy rolling",
            );
        }
    }
    if w.kind != WorkloadKind::Stateful {
        let why = "only stateful workloads run versions side by side";
        forbid(c, w.version.is_some(), "version", why);
        forbid(
            c,
            w.retire_after_seconds.is_some(),
            "retireAfterSeconds",
            why,
        );
    }
    if w.kind == WorkloadKind::Cron {
        let why = "a CronJob runs one pod per schedule";
        forbid(c, w.replicas.is_some(), "replicas", why);
        forbid(c, w.autoscaling.is_some(), "autoscaling", why);
        forbid(c, w.rollout.is_some(), "rollout", why);
        forbid(c, w.probes.is_some(), "probes", "jobs are not probed");
        match &w.schedule {
            None => c.error(
                &base,
                "a cron workload needs `schedule`",
                "e.g. schedule: \"0 3 * * *\" (03:00 every day)",
            ),
            Some(s) if s.split_whitespace().count() != 5 && !s.starts_with('@') => {
                c.error(
                    &at("schedule"),
                    format!(
                        "schedule {s:?} does not have 5 fields (minute hour day month weekday)"
                    ),
                    "e.g. \"0 3 * * *\"",
                );
            }
            _ => {}
        }
    } else {
        forbid(
            c,
            w.schedule.is_some(),
            "schedule",
            "only cron workloads have a schedule",
        );
        forbid(
            c,
            w.time_zone.is_some(),
            "timeZone",
            "only cron workloads have a schedule",
        );
    }

    // Replicas and autoscaling.
    if let Some(a) = &w.autoscaling {
        if a.min == 0 {
            c.error(
                &at("autoscaling.min"),
                "autoscaling.min is 0",
                "at least 1; the HPA cannot scale from zero",
            );
        }
        if a.min > a.max {
            c.error(
                &at("autoscaling"),
                format!(
                    "autoscaling.min {} is above autoscaling.max {}",
                    a.min, a.max
                ),
                "swap them",
            );
        }
        if let Some(r) = w.replicas
            && (r < a.min || r > a.max)
        {
            c.error(
                &at("replicas"),
                format!("replicas {r} is outside autoscaling {}..{}", a.min, a.max),
                "set replicas within the range, or drop it",
            );
        }
        for (key, value) in [
            ("cpuPercent", a.cpu_percent),
            ("memoryPercent", a.memory_percent),
        ] {
            if let Some(p) = value
                && !(1..=100).contains(&p)
            {
                c.error(
                    &at(&format!("autoscaling.{key}")),
                    format!("{key} {p} is not a percentage between 1 and 100"),
                    "e.g. 70",
                );
            }
        }
        check_schedule(c, &at("autoscaling.schedule"), name, a);
    }

    // Shutdown.
    let (pre_stop, drain, grace) = shutdown_timing(w);
    if grace < pre_stop + drain + MIN_GRACE_MARGIN {
        c.error(
            &at("shutdown.gracePeriodSeconds"),
            format!("terminationGracePeriodSeconds {grace} is less than preStop {pre_stop} + drain {drain} + {MIN_GRACE_MARGIN}: the kubelet would SIGKILL a draining pod"),
            format!("raise it to at least {}, or drop it (default {})", pre_stop + drain + MIN_GRACE_MARGIN, pre_stop + drain + GRACE_MARGIN),
        );
    }

    // Fargate.
    if spec.cluster.compute == Compute::Fargate {
        if let Err(why) = fargate_size(w) {
            let path = if w.resources.is_some() {
                at("resources")
            } else {
                base.clone()
            };
            c.error(&path, format!("on Fargate, {why}"), "set resources: {cpu: 500m, memory: 1Gi}; the pod is sized up to the next Fargate vCPU/memory pair");
        }
    } else if w.resources.is_none() {
        c.warning(&base, "no resources: the scheduler cannot place the pod sensibly and the HPA cannot compute utilisation", "set resources: {cpu: 500m, memory: 1Gi}");
    }
    if w.autoscaling.is_some() && w.resources.is_none() {
        c.error(
            &at("autoscaling"),
            "autoscaling needs resources: utilisation is a percentage of the request",
            "set resources.cpu and resources.memory",
        );
    }

    // Environment variables.
    for (var, value) in &w.env {
        let path = format!("{base}.env.{var}");
        if !is_env_name(var) {
            c.error_at_key(
                &path,
                format!("{var:?} is not an environment variable name"),
                "letters, digits and _, not starting with a digit",
            );
        }
        match value {
            EnvValue::Field(f) if !DOWNWARD_FIELDS.contains(&f.field.as_str()) => {
                c.error(
                    &format!("{path}.field"),
                    format!("{:?} is not a Downward API field", f.field),
                    format!("one of {}", DOWNWARD_FIELDS.join(", ")),
                );
            }
            EnvValue::Secret(s) if !spec.secrets.contains_key(&s.secret) => {
                c.warning(
                    &format!("{path}.secret"),
                    format!(
                        "secret {:?} is not declared under `secrets:`, so apply will not create it",
                        s.secret
                    ),
                    "declare it, or make sure it exists in the namespace",
                );
            }
            EnvValue::Secret(s)
                if !spec
                    .secrets
                    .get(&s.secret)
                    .is_some_and(|keys| keys.contains_key(&s.key)) =>
            {
                let keys: Vec<&str> = spec
                    .secrets
                    .get(&s.secret)
                    .map(|k| k.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                c.error(
                    &format!("{path}.key"),
                    format!("secret {:?} has no key {:?}", s.secret, s.key),
                    format!("its keys: {}", keys.join(", ")),
                );
            }
            _ => {}
        }
    }

    // Probes: on a port the container declares, so the kubelet can find it.
    let ports = declared_ports(w);
    let names: Vec<String> = ports.iter().map(|(n, p, _)| format!("{n} ({p})")).collect();
    let declared = if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    };
    let find = |port: &PortRef| {
        ports.iter().find(|(n, number, _)| match port {
            PortRef::Name(name) => n == name,
            PortRef::Number(wanted) => number == wanted,
        })
    };
    if let Some(p) = &w.probes {
        for (key, value) in [("readiness", &p.readiness), ("liveness", &p.liveness)] {
            let Some(probe) = value else { continue };
            let path = at(&format!("probes.{key}"));
            // (HTTP path, port of an HTTP or TCP check, what kind of check)
            let (http_path, port, what) = match probe {
                Probe::Path(p) => (Some(p.as_str()), Some(PortRef::Name("http".into())), "HTTP"),
                Probe::Check(check) => {
                    let set = [
                        check.http.is_some(),
                        check.tcp.is_some(),
                        check.exec.is_some(),
                    ]
                    .iter()
                    .filter(|x| **x)
                    .count();
                    if set != 1 {
                        c.error(
                            &path,
                            format!("a probe is exactly one of http, tcp or exec (found {set})"),
                            "e.g. {http: /ready, port: health}, {tcp: game} or {exec: [/bin/check]}",
                        );
                        continue;
                    }
                    if check.port.is_some() && check.http.is_none() {
                        c.error(
                            &format!("{path}.port"),
                            "`port` goes with an `http` check (a tcp check names its port itself)",
                            "e.g. {tcp: game}",
                        );
                    }
                    if let Some(command) = &check.exec
                        && command.is_empty()
                    {
                        c.error(
                            &format!("{path}.exec"),
                            "the command is empty",
                            "e.g. [/bin/health-check]",
                        );
                    }
                    match (&check.http, &check.tcp) {
                        (Some(p), _) => (
                            Some(p.as_str()),
                            Some(check.port.clone().unwrap_or(PortRef::Name("http".into()))),
                            "HTTP",
                        ),
                        (None, Some(port)) => (None, Some(port.clone()), "TCP"),
                        _ => (None, None, "exec"),
                    }
                }
            };
            if let Some(p) = http_path
                && !p.starts_with('/')
            {
                c.error(
                    &path,
                    format!("probe path {p:?} must start with /"),
                    "e.g. /healthz/ready",
                );
            }
            if let Some(port) = port {
                match find(&port) {
                    None => c.error(
                        &path,
                        format!(
                            "the {key} probe checks port {port}, which workload {name} does not declare (its ports: {declared}), so the kubelet would never find it and the pods would never be ready"
                        ),
                        match w.kind {
                            WorkloadKind::Web => "a web workload's port is named http".to_owned(),
                            _ => format!(
                                "name a declared port, e.g. {{http: /ready, port: {}}} or {{tcp: {}}}; or declare the port under `ports`",
                                ports.first().map_or("health", |p| p.0.as_str()),
                                ports.first().map_or("health", |p| p.0.as_str())
                            ),
                        },
                    ),
                    Some((port_name, _, Protocol::Udp)) => c.error(
                        &path,
                        format!("the {key} probe is a {what} check on {port_name}, a UDP port: it can only succeed over TCP"),
                        "check a TCP port (e.g. a health port with expose: false), or use an exec probe",
                    ),
                    Some(_) => {}
                }
            }
        }
    }
    let nlb = w.kind == WorkloadKind::Tcp || (w.kind == WorkloadKind::Stateful && w.tcp.is_some());
    if let Some(ports) = &w.ports
        && nlb
    {
        if !ports.iter().any(|p| p.expose != Some(false)) {
            c.error(
                &at("ports"),
                "every port has expose: false, so the NLB would listen on nothing",
                "expose at least one port",
            );
        }
        let context_ports: Vec<crate::render::context::PortContext> = ports
            .iter()
            .map(|p| crate::render::context::PortContext {
                name: p.name.clone(),
                port: p.port,
                protocol: match p.protocol {
                    Protocol::Tcp => "TCP",
                    Protocol::Udp => "UDP",
                },
            })
            .collect();
        if crate::render::context::nlb_health(w, &context_ports).is_none() {
            c.error(
                &at("ports"),
                format!("workload {name} has only UDP ports, and an NLB health-checks over TCP or HTTP only: its targets would never be healthy"),
                "add a TCP port for health checks, e.g. {name: health, port: 8081, expose: false}, with a readiness probe on it ({tcp: health} or {http: /ready, port: health})",
            );
        }
    }
    if let Some(ports) = &w.ports {
        for (i, p) in ports.iter().enumerate() {
            if p.expose.is_some() && !nlb {
                c.error(
                    &format!("{base}.ports[{i}].expose"),
                    format!("`expose` only applies to workloads behind an NLB; a {} workload's ports here are not exposed through one", kind_name(w.kind)),
                    "drop it",
                );
            }
        }
    }

    // Idle timeouts within what AWS accepts (NLB TCP listener 60–6000 s, ALB 1–4000 s).
    if let Some(seconds) = w.tcp.as_ref().and_then(|t| t.idle_timeout_seconds)
        && !(60..=6000).contains(&seconds)
    {
        c.error(
            &at("tcp.idleTimeoutSeconds"),
            format!("{seconds} s is outside the 60–6000 s an NLB TCP listener allows"),
            "between 60 and 6000 (AWS default 350)",
        );
    }
    if let Some(seconds) = w.http.as_ref().and_then(|h| h.idle_timeout_seconds)
        && !(1..=4000).contains(&seconds)
    {
        c.error(
            &at("http.idleTimeoutSeconds"),
            format!("{seconds} s is outside the 1–4000 s an ALB allows"),
            "between 1 and 4000 (AWS default 60)",
        );
    }

    // Draining: the old version must outlive its targets' draining, and a draining pod must
    // not be cut off before it is done.
    let (pre_stop, drain, _) = shutdown_timing(w);
    let deregistration = if nlb {
        let (delay, termination) = nlb_draining(w);
        if delay > 3600 {
            c.error(
                &at("tcp.deregistrationDelaySeconds"),
                format!("{delay} s is more than the 3600 s an NLB target group allows"),
                "at most 3600",
            );
        }
        if termination && delay < pre_stop + drain {
            c.error(
                &at("tcp.deregistrationDelaySeconds"),
                format!("with connectionTermination the NLB closes connections {delay} s after deregistration, while a pod still drains for preStop + drain = {} s", pre_stop + drain),
                format!("set deregistrationDelaySeconds to at least {}", pre_stop + drain),
            );
        }
        delay
    } else {
        pre_stop + drain
    };
    if let Some(r) = w
        .rollout
        .as_ref()
        .filter(|r| r.strategy == Strategy::BlueGreen)
    {
        let scale_down = r.scale_down_delay_seconds.unwrap_or(600);
        if scale_down < deregistration {
            c.error(
                &at("rollout.scaleDownDelaySeconds"),
                format!("the old slot is scaled down after {scale_down} s, before its load-balancer targets finished draining ({deregistration} s): in-flight requests and connections would be cut"),
                format!("set scaleDownDelaySeconds to at least {deregistration}"),
            );
        }
    }
    let readiness = w.probes.as_ref().and_then(|p| p.readiness.as_ref());
    if matches!(w.kind, WorkloadKind::Web) && readiness.is_none() {
        c.warning(
            &base,
            "no readiness probe: new pods get traffic before they can answer",
            "set probes.readiness, e.g. /healthz/ready",
        );
    }
    if let Some(http) = &w.http {
        if !is_hostname(&http.host) {
            c.error(
                &at("http.host"),
                format!("{:?} is not a host name", http.host),
                "e.g. ct.example.com",
            );
        }
        let partition = partition(&spec.cluster.region);
        if let Some(arn) = &http.certificate_arn
            && !arn.starts_with(&format!("arn:{partition}:acm:"))
        {
            c.error(
                &at("http.certificateArn"),
                format!(
                    "{arn:?} is not an ACM certificate ARN of partition {partition} (region {})",
                    spec.cluster.region
                ),
                format!("arn:{partition}:acm:<region>:<account>:certificate/<id>"),
            );
        }
        if let Some(path) = &http.path
            && !path.starts_with('/')
        {
            c.error(
                &at("http.path"),
                format!("path {path:?} must start with /"),
                "e.g. /",
            );
        }
        if http.healthcheck_path.is_none() && readiness.is_none() && !gateway {
            c.warning(
                &at("http"),
                "the ALB health check will probe / (no healthcheckPath and no readiness probe)",
                "set probes.readiness or http.healthcheckPath",
            );
        }
    }

    // Rollout.
    if let Some(r) = &w.rollout {
        if let Some(host) = &r.preview_host {
            if w.http.is_none() {
                c.error(
                    &at("rollout.previewHost"),
                    "previewHost needs `http` (the preview is a host on the same ALB)",
                    "add http, or drop previewHost",
                );
            } else if !is_hostname(host) {
                c.error(
                    &at("rollout.previewHost"),
                    format!("{host:?} is not a host name"),
                    "e.g. preview.ct.example.com",
                );
            }
            if !blue_green {
                c.error(
                    &at("rollout.previewHost"),
                    "previewHost only applies to blue-green",
                    "set strategy: blue-green",
                );
            }
        }
        if let Some(steps) = &r.steps {
            if w.kind != WorkloadKind::Web || !blue_green {
                c.error(
                    &at("rollout.steps"),
                    "traffic steps need a blue-green web workload (ALB weights)",
                    "drop steps, or use kind web with strategy blue-green",
                );
            }
            let ascending = steps.windows(2).all(|p| p[0] < p[1]);
            if steps.is_empty()
                || !ascending
                || steps.last() != Some(&100)
                || steps.iter().any(|s| *s == 0 || *s > 100)
            {
                c.error(
                    &at("rollout.steps"),
                    format!("steps {steps:?} must rise strictly from 1 to end at 100"),
                    "e.g. [10, 50, 100]",
                );
            }
        }
        if let Some(canary) = &r.canary {
            check_canary(c, &at("rollout.canary"), w, blue_green, canary);
        }
        if r.overlap_seconds.is_some() && w.kind != WorkloadKind::Tcp {
            c.error(
                &at("rollout.overlapSeconds"),
                "overlapSeconds only applies to tcp workloads (NLB target registration)",
                "drop it",
            );
        }
    }
    if !c.env.spec.review && w.kind != WorkloadKind::Cron {
        let min = w
            .autoscaling
            .as_ref()
            .map(|a| a.min)
            .unwrap_or(w.replicas.unwrap_or(1));
        if min < 2 && matches!(w.kind, WorkloadKind::Web | WorkloadKind::Tcp) {
            c.warning(
                &base,
                "a single replica: a node drain or a crash takes the service down",
                "run at least 2 (replicas or autoscaling.min)",
            );
        }
    }
    let partition = partition(&spec.cluster.region);
    if let Some(sa) = &w.service_account
        && !sa.role_arn.starts_with(&format!("arn:{partition}:iam::"))
    {
        c.error(
            &at("serviceAccount.roleArn"),
            format!(
                "{:?} is not an IAM role ARN of partition {partition} (region {})",
                sa.role_arn, spec.cluster.region
            ),
            format!("arn:{partition}:iam::<account>:role/<name>"),
        );
    }
    if let Some(security) = &w.security {
        check_security(c, &at("security"), w, security);
    }
}

/// Largest UID/GID Kubernetes accepts (`IsValidUserID`/`IsValidGroupID`: an int32).
const MAX_ID: i64 = 2_147_483_647;

/// The capacity windows of a workload: each valid, named for its CronJobs, and none
/// overlapping another (lead times included) in the next two years.
fn check_schedule(c: &mut Checker<'_>, base: &str, workload: &str, a: &Autoscaling) {
    let now = jiff::Timestamp::now();
    let mut windows = Vec::new();
    let mut paths = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, w) in a.schedule.iter().enumerate() {
        let path = format!("{base}[{i}]");
        let cronjob = capacity::cronjob_name(workload, &w.name, capacity::Edge::Down);
        if !is_dns_label(&w.name) {
            c.error(
                &format!("{path}.name"),
                format!("window name {:?} is not a DNS-1123 label", w.name),
                "lowercase letters, digits and -, e.g. maintenance-end",
            );
        } else if cronjob.len() > capacity::MAX_CRONJOB_NAME {
            c.error(
                &format!("{path}.name"),
                format!(
                    "the window's CronJob {cronjob} would be {} characters, CronJob names have at most {}",
                    cronjob.len(),
                    capacity::MAX_CRONJOB_NAME
                ),
                "shorten the window's name",
            );
        } else if !names.insert(w.name.as_str()) {
            c.error(
                &format!("{path}.name"),
                format!("a second window is named {:?}", w.name),
                "give each window its own name",
            );
        }
        match capacity::Window::resolve(w, (a.min, a.max)) {
            Ok(window) => {
                if let Some(end) = window.ends()
                    && end <= now
                {
                    c.warning(
                        &format!("{path}.at"),
                        format!("the window ended at {}", window.local(end)),
                        "remove it from the file; deploys no longer create its CronJobs",
                    );
                }
                windows.push(window);
                paths.push(path);
            }
            Err(problems) => {
                for p in problems {
                    c.error(&format!("{path}.{}", p.key), p.message, p.hint);
                }
            }
        }
    }
    if let Some((first, second, when)) = capacity::first_overlap(&windows, now) {
        let (a, b) = (&windows[first], &windows[second]);
        let message = if first == second {
            format!(
                "window {} is still open when it opens again at {}",
                a.name,
                a.local(when)
            )
        } else {
            format!(
                "windows {} and {} are both open at {} (lead times included)",
                a.name,
                b.name,
                b.local(when)
            )
        };
        c.error(
            &paths[second],
            message,
            "windows of one workload must not overlap: merge them into one window with the higher min, or move one",
        );
    }
}

fn check_security(c: &mut Checker<'_>, base: &str, w: &Workload, security: &Security) {
    if let Some(user) = security.run_as_user {
        if user == 0 {
            c.error(
                &format!("{base}.runAsUser"),
                "runAsUser 0 is root, and every pod runs with runAsNonRoot: the kubelet would refuse to start it",
                "use a non-root UID such as 65532 (the distroless nonroot user), or leave it out",
            );
        } else if !(1..=MAX_ID).contains(&user) {
            c.error(
                &format!("{base}.runAsUser"),
                format!("runAsUser {user} is not a UID Kubernetes accepts"),
                format!("a UID from 1 to {MAX_ID}"),
            );
        }
    }
    if let Some(group) = security.run_as_group
        && !(0..=MAX_ID).contains(&group)
    {
        c.error(
            &format!("{base}.runAsGroup"),
            format!("runAsGroup {group} is not a GID Kubernetes accepts"),
            format!("a GID from 0 to {MAX_ID}"),
        );
    }
    if security.service_account_token == Some(false) && w.service_account.is_some() {
        c.error(
            &format!("{base}.serviceAccountToken"),
            "serviceAccountToken: false with serviceAccount.roleArn: IRSA needs the service account token to get AWS credentials",
            "remove serviceAccountToken (a role mounts the token), or remove the role",
        );
    }
}

fn kind_name(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Web => "web",
        WorkloadKind::Tcp => "tcp",
        WorkloadKind::Worker => "worker",
        WorkloadKind::Cron => "cron",
        WorkloadKind::Stateful => "stateful",
    }
}

/// A character of an RFC 7230 `token` (a header field name).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// The ALB's limits on a listener rule's conditions ("Listener rules for your Application
/// Load Balancer": at most 3 match values per condition and 5 per rule; HttpHeaderConditionConfig:
/// a header name of at most 40 RFC 7230 token characters, values of at most 128).
pub const ALB_VALUES_PER_CONDITION: usize = 3;
/// See [`ALB_VALUES_PER_CONDITION`].
pub const ALB_VALUES_PER_RULE: usize = 5;

/// The match values the canary rule spends on the host and path conditions it shares with
/// the rule every request reaches (the AWS Load Balancer Controller writes `/*` for the
/// Prefix path `/`, and `/p` plus `/p/*` for any other).
pub fn canary_host_path_values(w: &Workload) -> usize {
    let Some(http) = &w.http else {
        return 0;
    };
    let path = http.path.as_deref().unwrap_or("/");
    1 + if path.trim_end_matches('/').is_empty() {
        1
    } else {
        2
    }
}

fn check_canary(c: &mut Checker<'_>, base: &str, w: &Workload, blue_green: bool, canary: &Canary) {
    if w.http.is_none() || !blue_green || w.kind != WorkloadKind::Web {
        c.error(
            base,
            "a canary routes requests by header on the load balancer: it needs a blue-green web workload with `http`",
            "use kind web with http and strategy blue-green, or drop canary",
        );
    }
    if c.env.spec.traffic.provider == TrafficProvider::GatewayApi {
        check_route_canary(c, base, canary);
        return;
    }
    if canary.match_type.is_some() {
        c.error_at_key(
            &format!("{base}.match"),
            "`match` chooses how the Gateway API compares header values; the ALB compares them case-insensitively, with * and ? as wildcards",
            "drop match (or set traffic.provider: gateway-api)",
        );
    }
    let header = &canary.header;
    if header.is_empty() || header.len() > 40 || !header.chars().all(is_token_char) {
        c.error(
            &format!("{base}.header"),
            format!("{header:?} is not a header name the ALB matches (1 to 40 letters, digits or !#$%&'*+-.^_`|~)"),
            "e.g. Version",
        );
    } else if header.eq_ignore_ascii_case("host") {
        c.error(
            &format!("{base}.header"),
            "the ALB matches Host with a host condition, not a header condition",
            "use another header (e.g. a test header such as X-Canary)",
        );
    }
    let budget = ALB_VALUES_PER_RULE
        .saturating_sub(canary_host_path_values(w))
        .min(ALB_VALUES_PER_CONDITION);
    if canary.values.is_empty() || canary.values.len() > budget {
        c.error(
            &format!("{base}.values"),
            format!(
                "{} value(s): the ALB allows {ALB_VALUES_PER_CONDITION} per condition and {ALB_VALUES_PER_RULE} per rule, and this rule's host and path take {}, so 1 to {budget}",
                canary.values.len(),
                canary_host_path_values(w)
            ),
            "list fewer values, or use a wildcard (`1.4.*`)",
        );
    }
    for (i, value) in canary.values.iter().enumerate() {
        if value.is_empty() || value.len() > 128 || value.chars().any(|ch| ch.is_control()) {
            c.error(
                &format!("{base}.values[{i}]"),
                format!(
                    "{value:?} is not a value the ALB compares (1 to 128 printable characters)"
                ),
                "e.g. \"1.4.2\"",
            );
        }
    }
}

/// The Gateway API's limits on a header match (HTTPHeaderName: at most 256 token characters)
/// and on a rule's matches (at most 64; each value is one match).
const ROUTE_HEADER_NAME: usize = 256;
/// See [`ROUTE_HEADER_NAME`].
const ROUTE_MATCHES: usize = 64;

/// A canary on an HTTPRoute: a header match per value, exact or by regular expression.
fn check_route_canary(c: &mut Checker<'_>, base: &str, canary: &Canary) {
    let header = &canary.header;
    if header.is_empty() || header.len() > ROUTE_HEADER_NAME || !header.chars().all(is_token_char) {
        c.error(
            &format!("{base}.header"),
            format!("{header:?} is not a header name the Gateway API matches (1 to {ROUTE_HEADER_NAME} letters, digits or !#$%&'*+-.^_`|~)"),
            "e.g. Version",
        );
    }
    if canary.values.is_empty() || canary.values.len() > ROUTE_MATCHES {
        c.error(
            &format!("{base}.values"),
            format!(
                "{} value(s): each is one match of the HTTPRoute's rule, which takes 1 to {ROUTE_MATCHES}",
                canary.values.len()
            ),
            "list 1 to 64 values, or one regular expression with match: regular-expression",
        );
    }
    let regex = canary.match_type == Some(HeaderMatch::RegularExpression);
    for (i, value) in canary.values.iter().enumerate() {
        let at = format!("{base}.values[{i}]");
        if value.is_empty() || value.len() > 4096 || value.chars().any(|ch| ch.is_control()) {
            c.error(
                &at,
                format!("{value:?} is not a header value (1 to 4096 printable characters)"),
                "e.g. \"1.4.2\"",
            );
        } else if regex {
            if let Err(e) = regex::Regex::new(value) {
                let detail = e.to_string();
                let last = detail.lines().last().unwrap_or_default().to_owned();
                c.error(
                    &at,
                    format!("{value:?} is not a regular expression: {last}"),
                    "Gateway implementations use RE2-like syntax, e.g. \"1\\\\.4\\\\..*\"",
                );
            }
        } else if value.contains(['*', '?']) {
            c.error(
                &at,
                format!("{value:?} has a wildcard: the Gateway API compares header values exactly (the ALB's * and ? are not wildcards here)"),
                "list each exact value, or set match: regular-expression and write a pattern, e.g. \"1\\\\.4\\\\..*\"",
            );
        }
    }
}

/// The longest `<workload>-<version>`: the StatefulSet's pods carry
/// `controller-revision-hash: <name>-<10 characters>`, a label value of at most 63.
pub const MAX_VERSIONED_NAME: usize = 52;

/// The version a `stateful` workload's release is named by: `version:`, else the image tag,
/// slugified to a DNS label (`1.4.2` → `1-4-2`). `None` while the tag is a `${VARIABLE}`
/// (known at apply time: [`version_of_image`]).
pub fn version_slug(workload: &Workload) -> Option<String> {
    match &workload.version {
        Some(v) => Some(super::slugify(v)),
        None => image_tag(&workload.image)
            .filter(|t| !t.contains("${"))
            .map(super::slugify),
    }
}

/// The version of a resolved image reference (its tag, slugified).
pub fn version_of_image(image: &str) -> Option<String> {
    image_tag(image)
        .map(super::slugify)
        .filter(|v| !v.is_empty())
}

/// Names of the `${VAR}` placeholders in a text.
pub fn placeholders(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                out.push(after[..end].to_owned());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

/// Rules across environments: two environments on one cluster never share a namespace.
pub fn check_project(environments: &[Environment]) -> Vec<Diagnostic> {
    let mut seen: BTreeMap<(String, String, String), &Environment> = BTreeMap::new();
    let mut out = Vec::new();
    for env in environments.iter().filter(|e| !e.spec.review) {
        let key = (
            env.spec.cluster.name.clone(),
            env.spec.cluster.region.clone(),
            env.namespace(),
        );
        if let Some(first) = seen.get(&key) {
            out.push(
                Diagnostic::error(
                    Some(env.span("project")),
                    "project",
                    format!(
                        "environments {} and {} would both deploy to namespace {} on cluster {} ({}): the second apply would overwrite the first",
                        first.name, env.name, key.2, key.0, key.1
                    ),
                )
                .with_hint("set `namespace: {suffix: env}` in both, or use different clusters"),
            );
        } else {
            seen.insert(key, env);
        }
    }
    out
}
