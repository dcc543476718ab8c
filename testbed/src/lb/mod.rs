//! A stand-in for the AWS Load Balancer Controller on moto's ELBv2: what infra-gen's
//! load-balancer checks talk to, on the API-server double and on a real API server alike
//! (each a [`Cluster`]). Like the real controller it
//!
//! - makes an ALB per `alb` Ingress (listener :80, a rule per host/path forwarding to the
//!   Services of the backend or of the `actions.<name>` weighted forward, with the
//!   `conditions.<name>` header conditions, numbered in the controller's order: paths of a
//!   rule Exact first, then Prefix longest first — a stable sort — then the rest as listed)
//!   and an NLB per `service.k8s.aws/nlb` Service (a target group per port), writes the load
//!   balancer's DNS name into the object's status, and a TargetGroupBinding per
//!   (Service, port);
//! - registers the IPs of the pods a bound Service selects once their containers are ready
//!   (not once they terminate), deregisters the others, and sets each pod's readiness gate
//!   condition from its target's health;
//! - gives new pods their gates at admission ([`gates_for`], served by [`webhook`] on a real
//!   API server), deciding from what it has seen, as the real webhook decides from its cache.
//!
//! It takes the real controller's time ([`Settings`]): rule changes land after a reconcile
//! lag, new targets are `initial` for a health-check period, deregistered ones `draining`
//! for the deregistration delay. And it can misbehave as the real one does: skip gate
//! injection, never register targets, leave targets `initial`, never apply new rule weights,
//! ignore header conditions, or stop reconciling.

pub mod aws;
pub mod cluster;
pub mod kube;
pub mod settings;
pub mod webhook;

use std::collections::HashMap;
use std::time::Instant;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::types::{ProtocolEnum, RuleCondition, TargetDescription};
use serde_json::{Value as Json, json};

pub use cluster::{Cluster, GateResult, Snapshot};
pub use settings::{Pace, Settings};

use aws::Aws;

/// The readiness-gate condition type of a TargetGroupBinding.
pub fn gate_of(binding: &str) -> String {
    format!("target-health.elbv2.k8s.aws/{binding}")
}

fn text<'a>(value: &'a Json, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
}

fn selects(selector: &serde_json::Map<String, Json>, labels: Option<&Json>) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The readiness gates the controller's webhook gives a pod being created in `namespace`
/// with `labels`: one per TargetGroupBinding whose Service selects it. The namespace must ask
/// for them (label `elbv2.k8s.aws/pod-readiness-gate-inject: enabled`, which the webhook's
/// namespace selector checks).
pub fn gates_for(snap: &Snapshot, namespace: &str, labels: Option<&Json>) -> Vec<String> {
    snap.bindings
        .iter()
        .filter(|b| text(b, "/metadata/namespace") == namespace)
        .filter(|binding| {
            let service = text(binding, "/spec/serviceRef/name");
            snap.services
                .iter()
                .find(|s| {
                    text(s, "/metadata/namespace") == namespace
                        && text(s, "/metadata/name") == service
                })
                .and_then(|s| s.pointer("/spec/selector"))
                .and_then(Json::as_object)
                .is_some_and(|selector| selects(selector, labels))
        })
        .map(|b| gate_of(text(b, "/metadata/name")))
        .collect()
}

/// A rule the controller wants: conditions, what they match (for comparison), forward groups.
type DesiredRule = (Vec<RuleCondition>, String, Vec<(String, i32)>);

/// What the controller last saw of an Ingress, and since when.
struct Pending {
    seen: String,
    since: Instant,
}

/// The controller: its ELBv2 client and what it made there.
pub struct Controller {
    pace: Pace,
    elb: elbv2::Client,
    aws: Aws,
    pending: HashMap<(String, String), Pending>,
    /// Target-group settings last written (attributes and tags), to write only changes.
    written: HashMap<String, String>,
}

impl Controller {
    /// A controller on moto's endpoint (its default VPC and subnets), at `pace` where a
    /// namespace's settings leave a timing open.
    pub async fn new(moto: &str, pace: Pace) -> anyhow::Result<Self> {
        let elb = aws::client(moto).await;
        let aws = Aws::new(moto).await?;
        Ok(Self {
            pace,
            elb,
            aws,
            pending: HashMap::new(),
            written: HashMap::new(),
        })
    }

    /// One reconcile of everything the cluster holds.
    pub async fn reconcile(&mut self, cluster: &impl Cluster) {
        let snap = cluster.snapshot().await;
        let active = |ns: &str| snap.settings.get(ns).filter(|s| !s.paused).cloned();
        for ingress in &snap.ingresses {
            if let Some(settings) = active(text(ingress, "/metadata/namespace")) {
                self.reconcile_ingress(cluster, &settings, &snap, ingress)
                    .await;
            }
        }
        for service in snap.services.iter().filter(|s| {
            text(s, "/spec/type") == "LoadBalancer"
                && text(s, "/spec/loadBalancerClass") == "service.k8s.aws/nlb"
        }) {
            if active(text(service, "/metadata/namespace")).is_some() {
                self.reconcile_nlb(cluster, &snap, service).await;
            }
        }
        let gates = self.sync_targets(&snap).await;
        cluster.set_gates(gates).await;
        self.forget_unbound(cluster, &snap).await;
    }

    /// Like the controller, deletes the bindings of Services no load balancer uses any more
    /// (their Ingress or NLB Service is gone).
    async fn forget_unbound(&self, cluster: &impl Cluster, snap: &Snapshot) {
        let mut used: Vec<(String, String)> = Vec::new();
        for ingress in &snap.ingresses {
            let namespace = text(ingress, "/metadata/namespace").to_owned();
            for path in ingress
                .pointer("/spec/rules")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.pointer("/http/paths").and_then(Json::as_array))
                .flatten()
            {
                used.push((
                    namespace.clone(),
                    text(path, "/backend/service/name").to_owned(),
                ));
            }
            for (key, action) in ingress
                .pointer("/metadata/annotations")
                .and_then(Json::as_object)
                .into_iter()
                .flatten()
            {
                if !key.starts_with("alb.ingress.kubernetes.io/actions.") {
                    continue;
                }
                let action: Json = action
                    .as_str()
                    .and_then(|a| serde_json::from_str(a).ok())
                    .unwrap_or_default();
                for group in action
                    .pointer("/forwardConfig/targetGroups")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    used.push((namespace.clone(), text(group, "/serviceName").to_owned()));
                }
            }
        }
        for service in snap
            .services
            .iter()
            .filter(|s| text(s, "/spec/type") == "LoadBalancer")
        {
            used.push((
                text(service, "/metadata/namespace").to_owned(),
                text(service, "/metadata/name").to_owned(),
            ));
        }
        for binding in &snap.bindings {
            let namespace = text(binding, "/metadata/namespace").to_owned();
            if snap.settings.get(&namespace).is_none_or(|s| s.paused) {
                continue;
            }
            let service = text(binding, "/spec/serviceRef/name").to_owned();
            if !used.contains(&(namespace.clone(), service)) {
                cluster
                    .delete_binding(&namespace, text(binding, "/metadata/name"))
                    .await;
            }
        }
    }

    /// The target group and TargetGroupBinding of (Service, port).
    #[allow(clippy::too_many_arguments)]
    async fn ensure_group(
        &mut self,
        cluster: &impl Cluster,
        snap: &Snapshot,
        owner: &Json,
        namespace: &str,
        service: &str,
        port: i32,
        port_name: &str,
        protocol: ProtocolEnum,
    ) -> Option<String> {
        let group = self
            .aws
            .ensure_group(&self.elb, namespace, service, port, protocol)
            .await?;
        let binding = format!("k8s-{service}-{}", &aws::short_hash(&group)[..6]);
        // The worst case for prune: the binding carries the environment's labels.
        let labels = owner
            .pointer("/metadata/labels")
            .cloned()
            .unwrap_or(json!({}));
        let spec = json!({"serviceRef": {"name": service, "port": port_name}, "targetGroupARN": group, "targetType": "ip"});
        let existing = snap.bindings.iter().find(|b| {
            text(b, "/metadata/namespace") == namespace && text(b, "/metadata/name") == binding
        });
        if existing.is_none_or(|b| {
            b.get("spec") != Some(&spec) || b.pointer("/metadata/labels") != Some(&labels)
        }) {
            cluster
                .put_binding(
                    namespace,
                    &binding,
                    json!({
                        "apiVersion": "elbv2.k8s.aws/v1beta1",
                        "kind": "TargetGroupBinding",
                        "metadata": {"name": binding, "namespace": namespace, "labels": labels},
                        "spec": spec,
                    }),
                )
                .await;
        }
        Some(group)
    }

    async fn reconcile_ingress(
        &mut self,
        cluster: &impl Cluster,
        settings: &Settings,
        snap: &Snapshot,
        ingress: &Json,
    ) {
        let namespace = text(ingress, "/metadata/namespace").to_owned();
        let name = text(ingress, "/metadata/name").to_owned();
        let key = (namespace.clone(), name.clone());
        // The controller acts a reconcile lag after the last change of the Ingress it saw
        // (new target groups and bindings included), and at once the first time.
        let fingerprint = format!(
            "{}{}",
            ingress.get("spec").cloned().unwrap_or_default(),
            ingress
                .pointer("/metadata/annotations")
                .cloned()
                .unwrap_or_default()
        );
        let first = !self.pending.contains_key(&key);
        let pending = self.pending.entry(key.clone()).or_insert_with(|| Pending {
            seen: fingerprint.clone(),
            since: Instant::now(),
        });
        if pending.seen != fingerprint {
            pending.seen = fingerprint;
            pending.since = Instant::now();
        }
        if !first && pending.since.elapsed() < self.pace.rule_lag(settings) {
            return;
        }
        let Some((_, dns)) = self
            .aws
            .ensure_balancer(&self.elb, &namespace, &name, false)
            .await
        else {
            return;
        };
        let Some(listener) = self
            .aws
            .ensure_listener(&self.elb, &key, 80, ProtocolEnum::Http, None)
            .await
        else {
            return;
        };
        let mut desired: Vec<DesiredRule> = Vec::new();
        for rule in ingress
            .pointer("/spec/rules")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let host = text(rule, "/host").to_owned();
            let mut paths: Vec<&Json> = rule
                .pointer("/http/paths")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .collect();
            // sortIngressPaths: Exact, then Prefix by length (stable), then the others in order.
            paths.sort_by_key(|p| match text(p, "/pathType") {
                "Exact" => (0, 0),
                "Prefix" => (1, usize::MAX - text(p, "/path").len()),
                _ => (2, 0),
            });
            for path in paths {
                let backend = text(path, "/backend/service/name").to_owned();
                let port = text(path, "/backend/service/port/name").to_owned();
                // (service, service port name, weight)
                let targets: Vec<(String, String, i32)> = if port == "use-annotation" {
                    let action = text(
                        ingress,
                        &format!(
                            "/metadata/annotations/alb.ingress.kubernetes.io~1actions.{backend}"
                        ),
                    );
                    let action: Json = serde_json::from_str(action).unwrap_or_default();
                    action
                        .pointer("/forwardConfig/targetGroups")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                        .map(|g| {
                            (
                                text(g, "/serviceName").to_owned(),
                                text(g, "/servicePort").to_owned(),
                                g.get("weight").and_then(Json::as_i64).unwrap_or(0) as i32,
                            )
                        })
                        .collect()
                } else {
                    vec![(backend.clone(), port.clone(), 1)]
                };
                let mut groups = Vec::new();
                for (service, port_name, weight) in targets {
                    let Some(svc) = snap.services.iter().find(|s| {
                        text(s, "/metadata/namespace") == namespace
                            && text(s, "/metadata/name") == service
                    }) else {
                        continue;
                    };
                    let number = svc
                        .pointer("/spec/ports")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                        .find(|p| text(p, "/name") == port_name)
                        .and_then(|p| p.get("port").and_then(Json::as_i64))
                        .unwrap_or(80) as i32;
                    if let Some(group) = self
                        .ensure_group(
                            cluster,
                            snap,
                            ingress,
                            &namespace,
                            &service,
                            number,
                            &port_name,
                            ProtocolEnum::Http,
                        )
                        .await
                    {
                        groups.push((group, weight));
                    }
                }
                if groups.is_empty() {
                    continue;
                }
                let path_value = text(path, "/path").to_owned();
                let mut conditions = vec![
                    RuleCondition::builder()
                        .field("host-header")
                        .values(host.clone())
                        .build(),
                    RuleCondition::builder()
                        .field("path-pattern")
                        .set_values(Some(path_patterns(&path_value)))
                        .build(),
                ];
                let mut matches = format!("{host}{path_value}");
                let extra = text(
                    ingress,
                    &format!(
                        "/metadata/annotations/alb.ingress.kubernetes.io~1conditions.{backend}"
                    ),
                );
                let extra: Vec<Json> = serde_json::from_str(extra).unwrap_or_default();
                for condition in extra.into_iter().filter(|_| settings.apply_conditions) {
                    if text(&condition, "/field") != "http-header" {
                        continue;
                    }
                    let header = text(&condition, "/httpHeaderConfig/httpHeaderName").to_owned();
                    let values: Vec<String> = condition
                        .pointer("/httpHeaderConfig/values")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect();
                    matches.push_str(&format!(" {header}={}", values.join("|")));
                    conditions.push(
                        RuleCondition::builder()
                            .field("http-header")
                            .http_header_config(
                                elbv2::types::HttpHeaderConditionConfig::builder()
                                    .http_header_name(header)
                                    .set_values(Some(values))
                                    .build(),
                            )
                            .build(),
                    );
                }
                desired.push((conditions, matches, groups));
            }
        }
        let existing = self.aws.rules.get(&key).cloned().unwrap_or_default();
        let same_shape = existing.len() == desired.len()
            && existing.iter().zip(&desired).all(|(e, d)| e.matches == d.1);
        if !same_shape {
            // Rules added or removed: the controller renumbers them; here they are made again
            // in order (each new one gets the next priority number).
            self.aws
                .replace_rules(&self.elb, &key, &listener, desired)
                .await;
        } else if settings.apply_weights {
            // Only the forwards changed (weights): modified in place.
            self.aws.modify_forwards(&self.elb, &key, &desired).await;
        }
        if text(ingress, "/status/loadBalancer/ingress/0/hostname") != dns {
            cluster
                .set_hostname("Ingress", &namespace, &name, &dns)
                .await;
        }
    }

    async fn reconcile_nlb(&mut self, cluster: &impl Cluster, snap: &Snapshot, service: &Json) {
        let namespace = text(service, "/metadata/namespace").to_owned();
        let name = text(service, "/metadata/name").to_owned();
        let Some((_, dns)) = self
            .aws
            .ensure_balancer(&self.elb, &namespace, &name, true)
            .await
        else {
            return;
        };
        let key = (namespace.clone(), name.clone());
        for port in service
            .pointer("/spec/ports")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let number = port.get("port").and_then(Json::as_i64).unwrap_or(0) as i32;
            let protocol = if text(port, "/protocol") == "UDP" {
                ProtocolEnum::Udp
            } else {
                ProtocolEnum::Tcp
            };
            let port_name = text(port, "/name").to_owned();
            if let Some(group) = self
                .ensure_group(
                    cluster,
                    snap,
                    service,
                    &namespace,
                    &name,
                    number,
                    &port_name,
                    protocol.clone(),
                )
                .await
            {
                self.aws
                    .ensure_listener(&self.elb, &key, number, protocol, Some(group))
                    .await;
            }
        }
        if text(service, "/status/loadBalancer/ingress/0/hostname") != dns {
            cluster
                .set_hostname("Service", &namespace, &name, &dns)
                .await;
        }
    }

    /// Writes a target group's attributes and health-timing tags when they changed.
    async fn configure_group(&mut self, group: &str, delay: String, initial: u32, stuck: bool) {
        let fingerprint = format!("{delay}/{initial}/{stuck}");
        if self.written.get(group) == Some(&fingerprint) {
            return;
        }
        let attributes = self
            .elb
            .modify_target_group_attributes()
            .target_group_arn(group)
            .attributes(
                elbv2::types::TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(delay)
                    .build(),
            )
            .send()
            .await;
        let tags = vec![
            elbv2::types::Tag::builder()
                .key("moto:initial-seconds")
                .value(initial.to_string())
                .build(),
            elbv2::types::Tag::builder()
                .key("moto:stuck")
                .value(if stuck { "initial" } else { "no" })
                .build(),
        ];
        let tagged = self
            .elb
            .add_tags()
            .resource_arns(group)
            .set_tags(Some(tags))
            .send()
            .await;
        if attributes.is_ok() && tagged.is_ok() {
            self.written.insert(group.to_owned(), fingerprint);
        }
    }

    /// Targets follow the pods each bound Service selects (once their containers are ready,
    /// until they terminate); gate conditions follow target health. Attributes (the
    /// deregistration delay) follow the Service or Ingress annotations.
    async fn sync_targets(&mut self, snap: &Snapshot) -> Vec<GateResult> {
        let mut gate_results = Vec::new();
        for binding in &snap.bindings {
            let namespace = text(binding, "/metadata/namespace").to_owned();
            let Some(settings) = snap.settings.get(&namespace).filter(|s| !s.paused) else {
                continue;
            };
            let group = text(binding, "/spec/targetGroupARN").to_owned();
            if !self.aws.knows_group(&group) {
                continue;
            }
            let service_name = text(binding, "/spec/serviceRef/name");
            let Some(service) = snap.services.iter().find(|s| {
                text(s, "/metadata/namespace") == namespace
                    && text(s, "/metadata/name") == service_name
            }) else {
                continue;
            };
            let ingress = snap
                .ingresses
                .iter()
                .find(|i| text(i, "/metadata/namespace") == namespace);
            let network = text(service, "/spec/type") == "LoadBalancer";
            let annotation = |object: Option<&Json>, key: &str| -> Option<String> {
                object?
                    .pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            };
            let attributes = if network {
                annotation(
                    Some(service),
                    "service.beta.kubernetes.io/aws-load-balancer-target-group-attributes",
                )
            } else {
                annotation(ingress, "alb.ingress.kubernetes.io/target-group-attributes")
            };
            let delay = match settings.draining_seconds {
                Some(seconds) => seconds.to_string(),
                None => attributes
                    .as_deref()
                    .and_then(|a| {
                        a.split(',')
                            .find_map(|kv| kv.strip_prefix("deregistration_delay.timeout_seconds="))
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| "300".into()),
            };
            // A new target is healthy after `healthy threshold` checks `interval` apart.
            let number = |value: Option<String>, default: u32| {
                value.and_then(|v| v.parse::<u32>().ok()).unwrap_or(default)
            };
            let initial = self.pace.initial_seconds(settings, {
                if network {
                    number(annotation(Some(service), "service.beta.kubernetes.io/aws-load-balancer-healthcheck-interval"), 10)
                        * number(annotation(Some(service), "service.beta.kubernetes.io/aws-load-balancer-healthcheck-healthy-threshold"), 3)
                } else {
                    number(annotation(ingress, "alb.ingress.kubernetes.io/healthcheck-interval-seconds"), 15)
                        * number(annotation(ingress, "alb.ingress.kubernetes.io/healthy-threshold-count"), 2)
                }
            });
            self.configure_group(&group, delay, initial, settings.stuck_initial)
                .await;
            let gate = gate_of(text(binding, "/metadata/name"));
            let selector = service
                .pointer("/spec/selector")
                .and_then(Json::as_object)
                .cloned()
                .unwrap_or_default();
            let selected: Vec<&Json> = snap
                .pods
                .iter()
                .filter(|p| text(p, "/metadata/namespace") == namespace)
                .filter(|p| selects(&selector, p.pointer("/metadata/labels")))
                .collect();
            // As the controller's endpoint resolver: ready, or containers ready and waiting
            // for this gate; never a terminating or finished pod.
            let ready_ips: Vec<String> = selected
                .iter()
                .filter(|p| is_target(p))
                .map(|p| text(p, "/status/podIP").to_owned())
                .filter(|ip| !ip.is_empty())
                .collect();
            let Ok(health) = self
                .elb
                .describe_target_health()
                .target_group_arn(&group)
                .send()
                .await
            else {
                continue;
            };
            // Registered target → (state, reason, port it was registered at).
            let registered: HashMap<String, (String, String, Option<i32>)> = health
                .target_health_descriptions()
                .iter()
                .filter_map(|d| {
                    let id = d.target().and_then(|t| t.id())?.to_owned();
                    let port = d.target().and_then(|t| t.port());
                    let h = d.target_health()?;
                    let state = h.state().map(|s| s.as_str().to_owned())?;
                    let reason = h
                        .reason()
                        .map(|r| r.as_str().to_owned())
                        .unwrap_or_default();
                    Some((id, (state, reason, port)))
                })
                .collect();
            if settings.register_targets {
                // As the real controller, an IP target is the pod's address and the container
                // port the Service's target port names (not the target group's port).
                let add: Vec<TargetDescription> = ready_ips
                    .iter()
                    .filter(|ip| !matches!(registered.get(*ip), Some((s, _, _)) if s != "draining"))
                    .map(|ip| {
                        let pod = selected.iter().find(|p| text(p, "/status/podIP") == ip);
                        TargetDescription::builder()
                            .id(ip)
                            .set_port(pod.and_then(|p| target_port(service, p)))
                            .build()
                    })
                    .collect();
                if !add.is_empty() {
                    let _ = self
                        .elb
                        .register_targets()
                        .target_group_arn(&group)
                        .set_targets(Some(add))
                        .send()
                        .await;
                }
            }
            let remove: Vec<TargetDescription> = registered
                .iter()
                .filter(|(ip, (state, _, _))| !ready_ips.contains(ip) && state != "draining")
                .map(|(ip, (_, _, port))| {
                    TargetDescription::builder().id(ip).set_port(*port).build()
                })
                .collect();
            if !remove.is_empty() {
                let _ = self
                    .elb
                    .deregister_targets()
                    .target_group_arn(&group)
                    .set_targets(Some(remove))
                    .send()
                    .await;
            }
            for pod in &selected {
                if pod.pointer("/metadata/deletionTimestamp").is_some() {
                    continue;
                }
                let ip = text(pod, "/status/podIP");
                let (state, reason) = registered.get(ip).map_or_else(
                    || ("unregistered".into(), "Target.NotRegistered".into()),
                    |(state, reason, _)| (state.clone(), reason.clone()),
                );
                gate_results.push(GateResult {
                    namespace: namespace.clone(),
                    pod: text(pod, "/metadata/name").to_owned(),
                    gate: gate.clone(),
                    healthy: state == "healthy",
                    reason,
                });
            }
        }
        gate_results
    }
}

/// The container port of `pod` that the first port of `service` targets: a number as it is,
/// a name looked up among the pod's container ports (`None`: unresolved, the group's port).
fn target_port(service: &Json, pod: &Json) -> Option<i32> {
    let target = service.pointer("/spec/ports/0/targetPort")?;
    if let Some(number) = target.as_i64() {
        return i32::try_from(number).ok();
    }
    let name = target.as_str()?;
    pod.pointer("/spec/containers")?
        .as_array()?
        .iter()
        .filter_map(|c| c.get("ports")?.as_array())
        .flatten()
        .find(|p| p.get("name").and_then(Json::as_str) == Some(name))
        .and_then(|p| p.get("containerPort")?.as_i64())
        .and_then(|n| i32::try_from(n).ok())
}

/// Whether the controller registers a pod in the target group: as the real controller's
/// endpoint resolver, its endpoint is ready, or its containers are ready (on a ready node)
/// whatever its readiness gates say — so a pod whose gate just turned True is not dropped in
/// the moment before its kubelet marks it Ready. A terminating or finished pod never is.
fn is_target(pod: &Json) -> bool {
    if pod.pointer("/metadata/deletionTimestamp").is_some()
        || matches!(text(pod, "/status/phase"), "Succeeded" | "Failed")
    {
        return false;
    }
    let condition = |kind: &str| {
        pod.pointer("/status/conditions")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .find(|c| text(c, "/type") == kind)
            .map(|c| text(c, "/status") == "True")
    };
    condition("Ready") == Some(true) || condition("ContainersReady") == Some(true)
}

/// The ALB path patterns of a `Prefix` Ingress path, as the controller writes them: `/x`
/// also matches `/x/*`.
fn path_patterns(path: &str) -> Vec<String> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        vec!["/*".to_owned()]
    } else {
        vec![trimmed.to_owned(), format!("{trimmed}/*")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(conditions: &[(&str, &str)], terminating: bool) -> Json {
        let conditions: Vec<Json> = conditions
            .iter()
            .map(|(kind, status)| json!({"type": kind, "status": status}))
            .collect();
        let mut pod = json!({
            "metadata": {"name": "web-green-1"},
            "spec": {"readinessGates": [{"conditionType": "target-health.elbv2.k8s.aws/web"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "conditions": conditions},
        });
        if terminating {
            pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        pod
    }

    #[test]
    fn an_ip_target_is_registered_at_the_container_port_the_service_targets() {
        let pod = json!({"spec": {"containers": [
            {"name": "sidecar", "ports": [{"name": "metrics", "containerPort": 9090}]},
            {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]},
        ]}});
        let service =
            |target: Json| json!({"spec": {"ports": [{"port": 80, "targetPort": target}]}});
        assert_eq!(
            super::target_port(&service(json!("http")), &pod),
            Some(8080)
        );
        assert_eq!(super::target_port(&service(json!(8081)), &pod), Some(8081));
        assert_eq!(super::target_port(&service(json!("grpc")), &pod), None);
    }

    #[test]
    fn a_pod_stays_a_target_while_its_kubelet_has_not_yet_seen_its_gate_turn_true() {
        let gate = "target-health.elbv2.k8s.aws/web";
        // The controller set the gate; the kubelet has not recomputed Ready yet. The real
        // controller's endpoint resolver keeps any pod whose containers are ready: deregistering
        // it here would send a healthy target to draining and back to initial.
        let between = pod(
            &[
                ("ContainersReady", "True"),
                (gate, "True"),
                ("Ready", "False"),
            ],
            false,
        );
        assert!(is_target(&between));
        assert!(is_target(&pod(
            &[("ContainersReady", "True"), ("Ready", "False")],
            false
        )));
        assert!(is_target(&pod(
            &[
                ("ContainersReady", "True"),
                (gate, "True"),
                ("Ready", "True")
            ],
            false
        )));
        assert!(!is_target(&pod(
            &[("ContainersReady", "False"), ("Ready", "False")],
            false
        )));
        assert!(!is_target(&pod(
            &[
                ("ContainersReady", "True"),
                (gate, "True"),
                ("Ready", "True")
            ],
            true
        )));
    }
}
