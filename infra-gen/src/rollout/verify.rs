//! The cutover checked against the load balancer itself, not only the Kubernetes objects.
//! Two things make trusting the objects wrong in production: the AWS Load Balancer
//! Controller's readiness-gate webhook gives a pod its gate only if it already bound a
//! Service selecting the pod (and, configured with `failurePolicy: Ignore`, none while it is
//! unreachable), so such pods become Ready before the load balancer has a healthy target for
//! them; and the controller applies target registrations and
//! listener-rule weights separately and late, so weight can reach a target group whose
//! targets are still `initial`. So, through ELBv2:
//!
//! - before a slot gets traffic: its pods carry the gate (when the namespace asks for
//!   injection), and every pod IP is a `healthy` target of each target group bound (by the
//!   controller's `TargetGroupBinding`s) to the Service that routes to it;
//! - after each weight change: the listener rule for the host and path forwards with the
//!   weights asked for;
//! - before a slot is scaled down: none of its targets is still `draining`.
//!
//! With the Gateway API provider there is no ELBv2 to read: before traffic moves to a slot its
//! pods must be ready endpoints of the Service the Gateway routes to (the EndpointSlices its
//! data plane follows), and after each move the HTTPRoute's status is checked
//! ([`super::gateway_status`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::progress::Progress;
use super::{RolloutError, RolloutResult};
use crate::cluster::{Cluster, ClusterError, Kind, name_of};
use crate::elb::Elb;
use crate::env::model::Canary;
use crate::render::context::labels;

/// The readiness gate the controller injects, per TargetGroupBinding.
pub const GATE_PREFIX: &str = "target-health.elbv2.k8s.aws/";

/// The load-balancer checks of a run (absent with `--no-verify-lb`).
#[derive(Clone)]
pub struct LbCheck {
    /// What is read back.
    pub provider: Checked,
    /// How long the controller may take to apply weights before they are moved back.
    pub converge: Duration,
}

/// What a traffic move is checked against.
#[derive(Clone)]
pub enum Checked {
    /// The ALB and NLB themselves, through ELBv2 of the cluster's region.
    Elb(Elb),
    /// The HTTPRoute's status, as the Gateway controllers write it ([`super::gateway_status`]).
    /// No target health nor applied weights can be read: what the route's status says is
    /// what is checked.
    GatewayApi,
}

/// A target group the controller bound to a Service.
#[derive(Debug, Clone)]
struct Binding {
    name: String,
    group: String,
}

fn text<'a>(value: &'a Json, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
}

/// Whether a pod runs and may take requests: not terminating, not finished.
pub(super) fn is_running(pod: &Json) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && !matches!(text(pod, "/status/phase"), "Failed" | "Succeeded")
}

/// How long the AWS Load Balancer Controller's webhook may take to see a Service's new
/// selector in its cache: pods created sooner than this after it changed may get no
/// readiness gate (they are then recreated, which this wait mostly spares).
pub const WEBHOOK_CACHE_LAG: Duration = Duration::from_secs(2);

/// How often a check looks again.
const EVERY: Duration = Duration::from_secs(2);

impl LbCheck {
    /// The target groups bound to `service`; `Err(problem)` when the cluster has no
    /// controller at all.
    async fn bindings(
        &self,
        cluster: &Cluster,
        service: &str,
    ) -> RolloutResult<Result<Vec<Binding>, String>> {
        let all = match cluster.list(Kind::TargetGroupBinding, "", None).await {
            Ok(all) => all,
            Err(ClusterError::Api { code: 404, .. }) => {
                return Ok(Err(
                    "this cluster serves no TargetGroupBindings (elbv2.k8s.aws/v1beta1): the AWS Load Balancer Controller is not installed, so the load balancer cannot be checked; install it, or pass --no-verify-lb".to_owned(),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Ok(all
            .iter()
            .filter(|b| text(b, "/spec/serviceRef/name") == service)
            .map(|b| Binding {
                name: name_of(b).to_owned(),
                group: text(b, "/spec/targetGroupARN").to_owned(),
            })
            .filter(|b| !b.group.is_empty())
            .collect()))
    }

    /// Waits (up to `timeout`) until the controller bound `service` (a TargetGroupBinding
    /// names it): pods created from then on get its readiness gate. `Ok(Err(problem))`
    /// otherwise.
    pub async fn bound(
        &self,
        cluster: &Cluster,
        progress: &Progress,
        service: &str,
        timeout: Duration,
    ) -> RolloutResult<Result<(), String>> {
        let Checked::Elb(_) = &self.provider else {
            // No controller binds Services to target groups.
            return Ok(Ok(()));
        };
        let started = Instant::now();
        loop {
            cluster.check_lock(&format!("wait for the controller to bind {service}"))?;
            match self.bindings(cluster, service).await? {
                Err(problem) => return Ok(Err(problem)),
                Ok(bindings) if !bindings.is_empty() => return Ok(Ok(())),
                Ok(_) => {}
            }
            let line = format!(
                "no TargetGroupBinding binds Service {service} yet: the AWS Load Balancer Controller has not picked it up; its pods are created once it has, so each gets its readiness gate"
            );
            if started.elapsed() >= timeout {
                return Ok(Err(format!("after {:?}: {line}", started.elapsed())));
            }
            progress.status(&line);
            cluster
                .pause(EVERY, &format!("wait for the controller to bind {service}"))
                .await?;
        }
    }

    /// The running pods of `selector` that lack the readiness gate of one of `service`'s
    /// TargetGroupBindings, in a namespace that asks the controller to inject them (none
    /// otherwise, or when no controller is installed).
    pub async fn ungated(
        &self,
        cluster: &Cluster,
        service: &str,
        selector: &str,
    ) -> RolloutResult<Vec<String>> {
        let Checked::Elb(_) = &self.provider else {
            return Ok(Vec::new());
        };
        let namespace = cluster
            .get(Kind::Namespace, cluster.namespace())
            .await?
            .unwrap_or_default();
        let inject = namespace
            .pointer("/metadata/labels")
            .and_then(|l| l.get(labels::READINESS_GATE))
            .and_then(Json::as_str)
            == Some("enabled");
        let Ok(bindings) = self.bindings(cluster, service).await? else {
            return Ok(Vec::new());
        };
        if !inject || bindings.is_empty() {
            return Ok(Vec::new());
        }
        Ok(cluster
            .list(Kind::Pod, selector, None)
            .await?
            .iter()
            .filter(|p| is_running(p))
            .filter(|pod| {
                let gates: Vec<&str> = pod
                    .pointer("/spec/readinessGates")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.get("conditionType").and_then(Json::as_str))
                    .collect();
                bindings
                    .iter()
                    .any(|b| !gates.contains(&format!("{GATE_PREFIX}{}", b.name).as_str()))
            })
            .map(|p| name_of(p).to_owned())
            .collect())
    }

    /// Waits until every pod of `selector` carries the controller's readiness gate (when
    /// the namespace asks for injection) and is a `healthy` target of each target group
    /// bound to `service`. `Ok(Err(problem))`: it will not be, or not in `timeout`.
    pub async fn serving(
        &self,
        cluster: &Cluster,
        progress: &Progress,
        service: &str,
        selector: &str,
        timeout: Duration,
    ) -> RolloutResult<Result<(), String>> {
        let Checked::Elb(elb) = &self.provider else {
            return super::gateway_status::endpoints_ready(
                cluster, progress, service, selector, timeout,
            )
            .await;
        };
        let started = Instant::now();
        let namespace = cluster
            .get(Kind::Namespace, cluster.namespace())
            .await?
            .unwrap_or_default();
        let inject = namespace
            .pointer("/metadata/labels")
            .and_then(|l| l.get(labels::READINESS_GATE))
            .and_then(Json::as_str)
            == Some("enabled");
        let mut last = String::new();
        loop {
            cluster.check_lock(&format!("check the targets of {service}"))?;
            let bindings = match self.bindings(cluster, service).await? {
                Ok(b) => b,
                Err(problem) => return Ok(Err(problem)),
            };
            // A pod that is terminating or finished (a Failed one stays until the pod GC
            // removes it) takes no new requests and is no target: it is not waited for.
            let pods: Vec<Json> = cluster
                .list(Kind::Pod, selector, None)
                .await?
                .into_iter()
                .filter(is_running)
                .collect();
            let line = if bindings.is_empty() {
                format!(
                    "no TargetGroupBinding binds Service {service} yet: the AWS Load Balancer Controller has not picked it up (see its logs)"
                )
            } else {
                if inject {
                    for pod in &pods {
                        let gates: Vec<&str> = pod
                            .pointer("/spec/readinessGates")
                            .and_then(Json::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|g| g.get("conditionType").and_then(Json::as_str))
                            .collect();
                        if let Some(missing) = bindings
                            .iter()
                            .find(|b| !gates.contains(&format!("{GATE_PREFIX}{}", b.name).as_str()))
                        {
                            return Ok(Err(format!(
                                "pod {} has no readiness gate {GATE_PREFIX}{}, although namespace {} asks the AWS Load Balancer Controller to inject it: the controller's webhook gave it none when the pod was created — the controller had not bound the Service yet, or its webhook was unreachable and configured with failurePolicy: Ignore (pods are then Ready before the load balancer has a healthy target for them). Check `kubectl get mutatingwebhookconfiguration aws-load-balancer-webhook -o yaml` and `kubectl -n kube-system get pods -l app.kubernetes.io/name=aws-load-balancer-controller`, then deploy again: the new pods are created anew",
                                name_of(pod),
                                missing.name,
                                cluster.namespace()
                            )));
                        }
                    }
                }
                let ips: Vec<(String, String)> = pods
                    .iter()
                    .map(|p| (name_of(p).to_owned(), text(p, "/status/podIP").to_owned()))
                    .collect();
                let mut not_healthy = Vec::new();
                let mut total = 0;
                for binding in &bindings {
                    let targets = elb
                        .targets(&binding.group)
                        .await
                        .map_err(RolloutError::from)?;
                    for (pod, ip) in &ips {
                        total += 1;
                        match targets.iter().find(|t| t.id == *ip) {
                            Some(t) if t.state == "healthy" => {}
                            Some(t) => not_healthy.push(format!("pod {pod} {t}")),
                            None => not_healthy.push(format!("pod {pod} ({ip}): not registered")),
                        }
                    }
                }
                if not_healthy.is_empty() && !ips.is_empty() {
                    progress.step(&format!(
                        "{service}: every pod is a healthy target ({total} in {} target group(s))",
                        bindings.len()
                    ));
                    return Ok(Ok(()));
                }
                format!(
                    "{service}: {}/{total} targets healthy — {}",
                    total - not_healthy.len(),
                    not_healthy
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            if line != last {
                progress.status(&line);
                last = line.clone();
            }
            if timeout.is_zero() {
                return Ok(Err(line));
            }
            if started.elapsed() >= timeout {
                return Ok(Err(format!("after {:?}: {line}", started.elapsed())));
            }
            cluster
                .pause(EVERY, &format!("wait for the targets of {service}"))
                .await?;
        }
    }

    /// Waits (up to `converge`) until the listener rule the Ingress's host and path reach
    /// forwards with `expected` percent per Service. `Ok(Err(what was seen))` otherwise.
    pub async fn weights(
        &self,
        cluster: &Cluster,
        progress: &Progress,
        ingress: &str,
        host: &str,
        path: &str,
        expected: &[(String, u8)],
    ) -> RolloutResult<Result<(), String>> {
        let Checked::Elb(elb) = &self.provider else {
            return super::gateway_status::accepted(cluster, progress, ingress, self.converge)
                .await;
        };
        let started = Instant::now();
        let mut seen = String::from("no load balancer in the Ingress status yet");
        loop {
            cluster.check_lock(&format!("check the weights of Ingress {ingress}"))?;
            let live = cluster
                .get(Kind::Ingress, ingress)
                .await?
                .unwrap_or_default();
            let dns = text(&live, "/status/loadBalancer/ingress/0/hostname").to_owned();
            if !dns.is_empty() {
                let mut groups: BTreeMap<String, String> = BTreeMap::new();
                for (service, _) in expected {
                    if let Ok(bindings) = self.bindings(cluster, service).await? {
                        for b in bindings {
                            groups.insert(b.group, service.clone());
                        }
                    }
                }
                let arns: Vec<String> = groups.keys().cloned().collect();
                seen = match elb
                    .forward_for(&dns, &arns, host, path)
                    .await
                    .map_err(RolloutError::from)?
                {
                    None => format!("no rule of {dns} forwards {host}{path}"),
                    Some(forward) => {
                        let total: i32 = forward.groups.iter().map(|(_, w)| *w).sum();
                        let actual: BTreeMap<String, u8> = forward
                            .groups
                            .iter()
                            .map(|(arn, w)| {
                                let service =
                                    groups.get(arn).cloned().unwrap_or_else(|| arn.clone());
                                let percent = if total > 0 {
                                    (w * 100 / total) as u8
                                } else {
                                    0
                                };
                                (service, percent)
                            })
                            .collect();
                        let matches = expected.iter().all(|(service, want)| {
                            actual.get(service).copied().unwrap_or(0) == *want
                        }) && actual
                            .iter()
                            .all(|(s, w)| *w == 0 || expected.iter().any(|(e, _)| e == s));
                        if matches {
                            progress.step(&format!(
                                "{ingress}: the ALB rule for {host}{path} forwards {}",
                                describe(expected)
                            ));
                            return Ok(Ok(()));
                        }
                        let shown: Vec<(String, u8)> = actual.into_iter().collect();
                        format!(
                            "the ALB rule for {host}{path} forwards {}",
                            describe(&shown)
                        )
                    }
                };
            }
            if started.elapsed() >= self.converge {
                return Ok(Err(format!(
                    "after {:?} {seen}, not {}: the AWS Load Balancer Controller did not apply the weights (see its logs)",
                    self.converge,
                    describe(expected)
                )));
            }
            progress.status(&format!(
                "{ingress}: waiting for the ALB to apply the weights — {seen}"
            ));
            cluster
                .pause(EVERY, &format!("wait for the weights of Ingress {ingress}"))
                .await?;
        }
    }

    /// Waits (up to `converge`) until the ALB sends `service` no request: the listener rule
    /// the Ingress's host and path reach forwards 0 % to its target groups, and no header
    /// rule forwards to them. An ALB does not deregister a target group at weight 0, so its
    /// targets never show `draining`: this, not target health, says a slot left the ALB.
    /// `Ok(Err(what was seen))` otherwise.
    pub async fn unshared(
        &self,
        cluster: &Cluster,
        progress: &Progress,
        ingress: &str,
        host: &str,
        path: &str,
        service: &str,
    ) -> RolloutResult<Result<(), String>> {
        let Checked::Elb(elb) = &self.provider else {
            return super::gateway_status::accepted(cluster, progress, ingress, self.converge)
                .await;
        };
        let started = Instant::now();
        let groups: Vec<String> = match self.bindings(cluster, service).await? {
            Ok(bindings) => bindings.into_iter().map(|b| b.group).collect(),
            Err(problem) => return Ok(Err(problem)),
        };
        loop {
            cluster.check_lock(&format!("check that the ALB sends {service} nothing"))?;
            let live = cluster
                .get(Kind::Ingress, ingress)
                .await?
                .unwrap_or_default();
            let dns = text(&live, "/status/loadBalancer/ingress/0/hostname").to_owned();
            if dns.is_empty() || groups.is_empty() {
                return Ok(Ok(()));
            }
            let rule = elb
                .forward_for(&dns, &groups, host, path)
                .await
                .map_err(RolloutError::from)?;
            let headers = elb
                .header_rules(&dns, &groups, host, path)
                .await
                .map_err(RolloutError::from)?
                .unwrap_or_default();
            let share = |forwards: &[(String, i32)]| -> i32 {
                let total: i32 = forwards.iter().map(|(_, w)| *w).sum();
                let mine: i32 = forwards
                    .iter()
                    .filter(|(arn, _)| groups.contains(arn))
                    .map(|(_, w)| *w)
                    .sum();
                if total > 0 { mine * 100 / total } else { 0 }
            };
            let main = rule.as_ref().map_or(0, |f| share(&f.groups));
            let by_header: Vec<String> = headers
                .iter()
                .filter(|h| share(&h.forward.groups) > 0)
                .map(|h| h.header.clone())
                .collect();
            if main == 0 && by_header.is_empty() {
                return Ok(Ok(()));
            }
            let seen = if by_header.is_empty() {
                format!("the ALB rule for {host}{path} still forwards {main}% to {service}")
            } else {
                format!(
                    "the ALB still forwards requests with header {} to {service}",
                    by_header.join(", ")
                )
            };
            if started.elapsed() >= self.converge {
                return Ok(Err(format!(
                    "after {:?} {seen}: the AWS Load Balancer Controller did not apply the Ingress (see its logs)",
                    self.converge
                )));
            }
            progress.status(&format!("{ingress}: waiting until {seen} no more"));
            cluster
                .pause(
                    EVERY,
                    &format!("wait until the ALB sends {service} nothing"),
                )
                .await?;
        }
    }

    /// Waits (up to `converge`) until the ALB has the grey-release rule `expected` asks for:
    /// `Some((canary, service))`, a header rule for the Ingress's host and path matching
    /// `canary`, forwarding everything to `service`'s target group and evaluated before the
    /// host/path rule every request reaches; `None`, no header rule left for them.
    /// `Ok(Err(what was seen))` otherwise.
    pub async fn canary(
        &self,
        cluster: &Cluster,
        progress: &Progress,
        ingress: &str,
        host: &str,
        path: &str,
        expected: Option<(&Canary, &str)>,
    ) -> RolloutResult<Result<(), String>> {
        let Checked::Elb(elb) = &self.provider else {
            return super::gateway_status::accepted(cluster, progress, ingress, self.converge)
                .await;
        };
        let started = Instant::now();
        let mut seen = String::from("no load balancer in the Ingress status yet");
        loop {
            cluster.check_lock(&format!("check the header rule of Ingress {ingress}"))?;
            let live = cluster
                .get(Kind::Ingress, ingress)
                .await?
                .unwrap_or_default();
            let dns = text(&live, "/status/loadBalancer/ingress/0/hostname").to_owned();
            if !dns.is_empty() {
                let groups: Vec<String> = match expected {
                    Some((_, service)) => match self.bindings(cluster, service).await? {
                        Ok(bindings) => bindings.into_iter().map(|b| b.group).collect(),
                        Err(problem) => return Ok(Err(problem)),
                    },
                    None => Vec::new(),
                };
                let rules = elb
                    .header_rules(&dns, &groups, host, path)
                    .await
                    .map_err(RolloutError::from)?
                    .unwrap_or_default();
                let done = match expected {
                    None => rules.is_empty(),
                    Some((canary, _)) => rules.iter().any(|r| {
                        let mut want: Vec<String> = canary
                            .values
                            .iter()
                            .map(|v| v.to_ascii_lowercase())
                            .collect();
                        let mut have: Vec<String> =
                            r.values.iter().map(|v| v.to_ascii_lowercase()).collect();
                        want.sort();
                        have.sort();
                        r.header.eq_ignore_ascii_case(&canary.header)
                            && want == have
                            && r.before_main
                            && !r.forward.groups.is_empty()
                            && r.forward.groups.iter().all(|(arn, w)| {
                                if groups.contains(arn) {
                                    *w > 0
                                } else {
                                    *w == 0
                                }
                            })
                    }),
                };
                if done {
                    progress.step(&match expected {
                        Some((canary, service)) => format!(
                            "{ingress}: the ALB sends {host}{path} requests with {} to {service}, before the rule for everyone else",
                            super::canary::describe(canary)
                        ),
                        None => format!("{ingress}: the ALB has no header rule left for {host}{path}"),
                    });
                    return Ok(Ok(()));
                }
                seen = if rules.is_empty() {
                    format!("no header rule of {dns} matches {host}{path}")
                } else {
                    rules
                        .iter()
                        .map(|r| {
                            format!(
                                "a rule {} for {}: {} ({} the rule for everyone else)",
                                r.forward.rule,
                                r.header,
                                r.values.join(" | "),
                                if r.before_main { "before" } else { "after" }
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                };
            }
            if started.elapsed() >= self.converge {
                return Ok(Err(format!(
                    "after {:?}: {seen}: the AWS Load Balancer Controller did not apply the header rule (see its logs)",
                    self.converge
                )));
            }
            progress.status(&format!(
                "{ingress}: waiting for the ALB's header rule — {seen}"
            ));
            cluster
                .pause(
                    EVERY,
                    &format!("wait for the header rule of Ingress {ingress}"),
                )
                .await?;
        }
    }

    /// Waits until no pod of `selector` is a `draining` target of the groups bound to
    /// `services` — nor a registered one of a Service that no longer selects it (the
    /// controller is about to deregister it) — at most the longest deregistration delay and
    /// 30 s more.
    pub async fn drained(
        &self,
        cluster: &Cluster,
        progress: &Progress,
        services: &[String],
        selector: &str,
    ) -> RolloutResult<()> {
        let Checked::Elb(elb) = &self.provider else {
            // Nothing tells when a Gateway (or the cluster's load balancer) stopped using
            // the pods; their preStop sleep covers the endpoint update.
            return Ok(());
        };
        let started = Instant::now();
        let pods = cluster.list(Kind::Pod, selector, None).await?;
        let ips: Vec<String> = pods
            .iter()
            .map(|p| text(p, "/status/podIP").to_owned())
            .filter(|ip| !ip.is_empty())
            .collect();
        let pod_labels = pods
            .first()
            .and_then(|p| p.pointer("/metadata/labels"))
            .cloned()
            .unwrap_or_default();
        // (group, whether its Service still selects these pods)
        let mut groups = Vec::new();
        for service in services {
            let Ok(bindings) = self.bindings(cluster, service).await? else {
                continue;
            };
            let selects = cluster
                .get(Kind::Service, service)
                .await?
                .and_then(|s| {
                    s.pointer("/spec/selector")
                        .and_then(Json::as_object)
                        .cloned()
                })
                .is_some_and(|selector| {
                    !selector.is_empty()
                        && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
                });
            groups.extend(bindings.into_iter().map(|b| (b, selects)));
        }
        let mut limit = Duration::ZERO;
        for (b, _) in &groups {
            let delay = elb
                .deregistration_delay(&b.group)
                .await
                .map_err(RolloutError::from)?;
            limit = limit.max(Duration::from_secs(delay + 30));
        }
        loop {
            let mut waiting = 0;
            for (b, selects) in &groups {
                waiting += elb
                    .targets(&b.group)
                    .await
                    .map_err(RolloutError::from)?
                    .iter()
                    .filter(|t| ips.contains(&t.id))
                    .filter(|t| t.state == "draining" || (!selects && t.state != "unused"))
                    .count();
            }
            if waiting == 0 {
                return Ok(());
            }
            if started.elapsed() >= limit {
                progress.step(&format!(
                    "{waiting} target(s) still draining after {:?} (the deregistration delay has passed): scaling down anyway",
                    started.elapsed()
                ));
                return Ok(());
            }
            progress.status(&format!(
                "{waiting} target(s) still draining: waiting before the scale-down so connections and in-flight requests finish"
            ));
            cluster.pause(EVERY, "wait for targets to drain").await?;
        }
    }
}

fn describe(weights: &[(String, u8)]) -> String {
    weights
        .iter()
        .map(|(s, w)| format!("{w}% to {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}
