//! A small AWS Load Balancer Controller, on moto's ELBv2, for the double: what infra-gen's
//! load-balancer checks talk to. Like the real controller it
//!
//! - makes an ALB per `alb` Ingress (listener :80, a rule per host/path forwarding to the
//!   Services of the backend or of the `actions.<name>` weighted forward, with the
//!   `conditions.<name>` header conditions, numbered in the controller's order: paths of a
//!   rule Exact first, then Prefix longest first — a stable sort — then the rest as listed)
//!   and an NLB per
//!   `service.k8s.aws/nlb` Service (a target group per port), writes the load balancer's DNS
//!   name into the object's status, and a TargetGroupBinding per (Service, port);
//! - registers the IPs of the pods a bound Service selects once their containers are ready,
//!   deregisters the others, and sets each pod's readiness gate once its target is healthy;
//! - (the webhook, in the kubelet module) gives new pods their gates.
//!
//! And it can misbehave as the real one does: skip gate injection (webhook unreachable),
//! never register targets, leave targets `initial`, or never apply new rule weights.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use elbv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, LoadBalancerTypeEnum, ProtocolEnum, RuleCondition,
    TargetDescription, TargetGroupTuple, TargetTypeEnum,
};
use serde_json::{Value as Json, json};

use super::{Data, Key, Resource, Shared, new_metadata};

/// How the simulated controller behaves.
#[derive(Debug, Clone)]
pub struct LbSim {
    /// moto's endpoint.
    pub moto: String,
    /// The webhook injects readiness gates (false: it is unreachable, `failurePolicy: Ignore`).
    pub inject_gates: bool,
    /// Pod IPs are registered as targets (false: they never are).
    pub register_targets: bool,
    /// Seconds a new target stays `initial`.
    pub initial_seconds: u32,
    /// Targets never pass their health check.
    pub stuck_initial: bool,
    /// New forward weights reach the listener rule (false: the rule keeps its first ones).
    pub apply_weights: bool,
    /// `conditions.<action>` annotations become rule conditions (false: ignored, as by a
    /// controller older than v2.0 or one that fails to parse them).
    pub apply_conditions: bool,
}

impl LbSim {
    /// A controller that works, on `moto`.
    pub fn new(moto: &str) -> Self {
        Self {
            moto: moto.to_owned(),
            inject_gates: true,
            register_targets: true,
            initial_seconds: 1,
            stuck_initial: false,
            apply_weights: true,
            apply_conditions: true,
        }
    }
}

/// (namespace, object name).
type Owner = (String, String);
/// A load balancer: ARN, DNS name, listener ARN by port.
type Balancer = (String, String, BTreeMap<i32, String>);
/// A listener rule the sim made: ARN, what it matches (host, path, header condition) and
/// the forward (target group, weight) it was last given.
#[derive(Debug, Clone, PartialEq)]
struct RuleState {
    arn: String,
    matches: String,
    groups: Vec<(String, i32)>,
}

/// A rule the controller wants: conditions, what they match (for comparison), forward groups.
type DesiredRule = (Vec<RuleCondition>, String, Vec<(String, i32)>);

#[derive(Default)]
struct Aws {
    vpc: String,
    subnets: Vec<String>,
    /// (namespace, object) → (load balancer ARN, DNS name, listener ARNs by port).
    balancers: HashMap<Owner, Balancer>,
    /// (namespace, service, port) → target group ARN.
    groups: HashMap<(String, String, i32), String>,
    /// (namespace, Ingress) → its listener rules, in priority order.
    rules: HashMap<Owner, Vec<RuleState>>,
    next_priority: i32,
}

async fn client(moto: &str) -> elbv2::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto)
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "double",
        ))
        .load()
        .await;
    elbv2::Client::new(&config)
}

/// The default VPC and its subnets, read from moto's EC2 (query API; no SDK needed).
async fn network(moto: &str) -> (String, Vec<String>) {
    let text = reqwest::Client::new()
        .post(moto)
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Action=DescribeSubnets&Version=2016-11-15")
        .send()
        .await
        .expect("moto EC2 DescribeSubnets")
        .text()
        .await
        .unwrap_or_default();
    let values = |tag: &str| -> Vec<String> {
        text.split(&format!("<{tag}>"))
            .skip(1)
            .filter_map(|part| part.split(&format!("</{tag}>")).next())
            .map(str::to_owned)
            .collect()
    };
    let subnets = values("subnetId");
    let vpc = values("vpcId").into_iter().next().unwrap_or_default();
    assert!(
        !subnets.is_empty() && !vpc.is_empty(),
        "moto has no default VPC: {text}"
    );
    (vpc, subnets)
}

fn short_hash(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:010x}", h.finish() & 0xff_ffff_ffff)
}

fn text<'a>(value: &'a Json, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
}

/// A copy of what the controller looks at.
struct Snapshot {
    ingresses: Vec<Json>,
    services: Vec<Json>,
    pods: Vec<Json>,
    bindings: Vec<Json>,
}

fn snapshot(shared: &Shared) -> Snapshot {
    let data = shared.data.lock().unwrap();
    let of = |kind: &str| -> Vec<Json> {
        data.objects
            .iter()
            .filter(|(k, _)| k.resource.kind == kind)
            .map(|(_, o)| o.clone())
            .collect()
    };
    Snapshot {
        ingresses: of("Ingress")
            .into_iter()
            .filter(|i| text(i, "/spec/ingressClassName") == "alb")
            .collect(),
        services: of("Service"),
        pods: of("Pod"),
        bindings: of("TargetGroupBinding"),
    }
}

fn store(shared: &Shared, kind: &str, namespace: &str, name: &str, object: Json) {
    let mut data = shared.data.lock().unwrap();
    let key = Key {
        resource: Resource::by_kind(kind),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let mut object = object;
    if let Some(existing) = data.objects.get(&key) {
        if existing.get("spec") == object.get("spec")
            && existing.get("status") == object.get("status")
            && existing.pointer("/metadata/labels") == object.pointer("/metadata/labels")
        {
            return;
        }
        object["metadata"]["uid"] = existing["metadata"]["uid"].clone();
        object["metadata"]["creationTimestamp"] = existing["metadata"]["creationTimestamp"].clone();
    }
    new_metadata(&mut object, &key);
    let events = shared.events.clone();
    data.store(key, object, &events);
}

fn set_status_hostname(shared: &Shared, kind: &str, namespace: &str, name: &str, dns: &str) {
    let mut data = shared.data.lock().unwrap();
    let key = Key {
        resource: Resource::by_kind(kind),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let Some(mut object) = data.objects.get(&key).cloned() else {
        return;
    };
    let wanted = json!({"loadBalancer": {"ingress": [{"hostname": dns}]}});
    if object.get("status") == Some(&wanted) {
        return;
    }
    object["status"] = wanted;
    let events = shared.events.clone();
    data.store(key, object, &events);
}

/// The simulated controller, every 300 ms.
pub(super) async fn run(shared: Arc<Shared>, sim: LbSim) {
    let elb = client(&sim.moto).await;
    let (vpc, subnets) = network(&sim.moto).await;
    let mut aws = Aws {
        vpc,
        subnets,
        next_priority: 1,
        ..Aws::default()
    };
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The test may change the behaviour while the controller runs.
        let sim = shared
            .options
            .lock()
            .unwrap()
            .lb
            .clone()
            .unwrap_or_else(|| sim.clone());
        let snap = snapshot(&shared);
        for ingress in &snap.ingresses {
            reconcile_ingress(&shared, &sim, &elb, &mut aws, &snap, ingress).await;
        }
        for service in snap.services.iter().filter(|s| {
            text(s, "/spec/type") == "LoadBalancer"
                && text(s, "/spec/loadBalancerClass") == "service.k8s.aws/nlb"
        }) {
            reconcile_nlb(&shared, &elb, &mut aws, service).await;
        }
        sync_targets(&shared, &sim, &elb, &aws, &snap).await;
        forget_unbound(&shared, &snap);
    }
}

/// Like the controller, deletes the bindings of Services no load balancer uses any more
/// (their Ingress or NLB Service is gone).
fn forget_unbound(shared: &Shared, snap: &Snapshot) {
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
    let mut data = shared.data.lock().unwrap();
    for binding in &snap.bindings {
        let namespace = text(binding, "/metadata/namespace").to_owned();
        let service = text(binding, "/spec/serviceRef/name").to_owned();
        if !used.contains(&(namespace.clone(), service)) {
            let key = Key {
                resource: Resource::by_kind("TargetGroupBinding"),
                namespace,
                name: text(binding, "/metadata/name").to_owned(),
            };
            let events = shared.events.clone();
            data.remove(&key, &events);
        }
    }
}

async fn ensure_balancer(
    elb: &elbv2::Client,
    aws: &mut Aws,
    namespace: &str,
    name: &str,
    network: bool,
) -> Option<(String, String)> {
    let key = (namespace.to_owned(), name.to_owned());
    if let Some((arn, dns, _)) = aws.balancers.get(&key) {
        return Some((arn.clone(), dns.clone()));
    }
    let lb_name = format!("k8s-{}", short_hash(&format!("{namespace}/{name}")));
    let created = elb
        .create_load_balancer()
        .name(&lb_name)
        .set_subnets(Some(aws.subnets.clone()))
        .r#type(if network {
            LoadBalancerTypeEnum::Network
        } else {
            LoadBalancerTypeEnum::Application
        })
        .send()
        .await
        .ok()?;
    let balancer = created.load_balancers().first()?;
    let arn = balancer.load_balancer_arn()?.to_owned();
    let dns = balancer.dns_name()?.to_owned();
    aws.balancers
        .insert(key, (arn.clone(), dns.clone(), BTreeMap::new()));
    Some((arn, dns))
}

async fn ensure_listener(
    elb: &elbv2::Client,
    aws: &mut Aws,
    key: &(String, String),
    port: i32,
    protocol: ProtocolEnum,
    default: Option<String>,
) -> Option<String> {
    let (arn, _, listeners) = aws.balancers.get(key)?;
    if let Some(listener) = listeners.get(&port) {
        return Some(listener.clone());
    }
    let action = match default {
        Some(group) => Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(group)
            .build(),
        None => Action::builder()
            .r#type(ActionTypeEnum::FixedResponse)
            .fixed_response_config(
                elbv2::types::FixedResponseActionConfig::builder()
                    .status_code("404")
                    .build(),
            )
            .build(),
    };
    let created = elb
        .create_listener()
        .load_balancer_arn(arn)
        .port(port)
        .protocol(protocol)
        .default_actions(action)
        .send()
        .await
        .ok()?;
    let listener = created.listeners().first()?.listener_arn()?.to_owned();
    if let Some((_, _, listeners)) = aws.balancers.get_mut(key) {
        listeners.insert(port, listener.clone());
    }
    Some(listener)
}

/// The target group and TargetGroupBinding of (Service, port).
#[allow(clippy::too_many_arguments)]
async fn ensure_group(
    shared: &Shared,
    elb: &elbv2::Client,
    aws: &mut Aws,
    owner: &Json,
    namespace: &str,
    service: &str,
    port: i32,
    port_name: &str,
    protocol: ProtocolEnum,
) -> Option<String> {
    let key = (namespace.to_owned(), service.to_owned(), port);
    let group = match aws.groups.get(&key) {
        Some(group) => group.clone(),
        None => {
            let name = format!(
                "k8s-{}",
                short_hash(&format!("{namespace}/{service}/{port}"))
            );
            let created = elb
                .create_target_group()
                .name(&name)
                .protocol(protocol)
                .port(port)
                .vpc_id(&aws.vpc)
                .target_type(TargetTypeEnum::Ip)
                .send()
                .await
                .ok()?;
            let group = created
                .target_groups()
                .first()?
                .target_group_arn()?
                .to_owned();
            aws.groups.insert(key, group.clone());
            group
        }
    };
    let binding = format!("k8s-{service}-{}", &short_hash(&group)[..6]);
    // The worst case for prune: the binding carries the environment's labels.
    let labels = owner
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    store(
        shared,
        "TargetGroupBinding",
        namespace,
        &binding,
        json!({
            "apiVersion": "elbv2.k8s.aws/v1beta1",
            "kind": "TargetGroupBinding",
            "metadata": {"name": binding, "namespace": namespace, "labels": labels},
            "spec": {"serviceRef": {"name": service, "port": port_name}, "targetGroupARN": group, "targetType": "ip"},
        }),
    );
    Some(group)
}

fn forward(groups: &[(String, i32)]) -> Option<Action> {
    let tuples: Vec<TargetGroupTuple> = groups
        .iter()
        .map(|(arn, weight)| {
            TargetGroupTuple::builder()
                .target_group_arn(arn)
                .weight(*weight)
                .build()
        })
        .collect();
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .forward_config(
            ForwardActionConfig::builder()
                .set_target_groups(Some(tuples))
                .build(),
        )
        .build()
        .into()
}

async fn reconcile_ingress(
    shared: &Shared,
    sim: &LbSim,
    elb: &elbv2::Client,
    aws: &mut Aws,
    snap: &Snapshot,
    ingress: &Json,
) {
    let namespace = text(ingress, "/metadata/namespace").to_owned();
    let name = text(ingress, "/metadata/name").to_owned();
    let Some((_, dns)) = ensure_balancer(elb, aws, &namespace, &name, false).await else {
        return;
    };
    let key = (namespace.clone(), name.clone());
    let Some(listener) = ensure_listener(elb, aws, &key, 80, ProtocolEnum::Http, None).await else {
        return;
    };
    // (conditions, what they match, forward groups), in the controller's priority order.
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
                    &format!("/metadata/annotations/alb.ingress.kubernetes.io~1actions.{backend}"),
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
                if let Some(group) = ensure_group(
                    shared,
                    elb,
                    aws,
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
                    .set_values(Some(infra_gen::elb::path_patterns(&path_value)))
                    .build(),
            ];
            let mut matches = format!("{host}{path_value}");
            let extra = text(
                ingress,
                &format!("/metadata/annotations/alb.ingress.kubernetes.io~1conditions.{backend}"),
            );
            let extra: Vec<Json> = serde_json::from_str(extra).unwrap_or_default();
            for condition in extra.into_iter().filter(|_| sim.apply_conditions) {
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
    let key = (namespace.clone(), name.clone());
    let existing = aws.rules.get(&key).cloned().unwrap_or_default();
    let same_shape = existing.len() == desired.len()
        && existing.iter().zip(&desired).all(|(e, d)| e.matches == d.1);
    if same_shape {
        // Only the forwards changed (weights): modified in place.
        let mut updated = existing.clone();
        for (rule, (_, _, groups)) in updated.iter_mut().zip(&desired) {
            if rule.groups != *groups
                && sim.apply_weights
                && let Some(action) = forward(groups)
                && elb
                    .modify_rule()
                    .rule_arn(&rule.arn)
                    .actions(action)
                    .send()
                    .await
                    .is_ok()
            {
                rule.groups = groups.clone();
            }
        }
        aws.rules.insert(key, updated);
    } else {
        // Rules added or removed: the controller renumbers them; here they are made again
        // in order (each new one gets the next priority number).
        for rule in &existing {
            let _ = elb.delete_rule().rule_arn(&rule.arn).send().await;
        }
        let mut made = Vec::new();
        for (conditions, matches, groups) in desired {
            let priority = aws.next_priority;
            aws.next_priority += 1;
            if let Some(action) = forward(&groups)
                && let Ok(created) = elb
                    .create_rule()
                    .listener_arn(&listener)
                    .priority(priority)
                    .set_conditions(Some(conditions))
                    .actions(action)
                    .send()
                    .await
                && let Some(arn) = created.rules().first().and_then(|r| r.rule_arn())
            {
                made.push(RuleState {
                    arn: arn.to_owned(),
                    matches,
                    groups,
                });
            }
        }
        aws.rules.insert(key, made);
    }
    set_status_hostname(shared, "Ingress", &namespace, &name, &dns);
}

async fn reconcile_nlb(shared: &Shared, elb: &elbv2::Client, aws: &mut Aws, service: &Json) {
    let namespace = text(service, "/metadata/namespace").to_owned();
    let name = text(service, "/metadata/name").to_owned();
    let Some((_, dns)) = ensure_balancer(elb, aws, &namespace, &name, true).await else {
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
        if let Some(group) = ensure_group(
            shared,
            elb,
            aws,
            service,
            &namespace,
            &name,
            number,
            &port_name,
            protocol.clone(),
        )
        .await
        {
            ensure_listener(elb, aws, &key, number, protocol, Some(group)).await;
        }
    }
    set_status_hostname(shared, "Service", &namespace, &name, &dns);
}

/// Targets follow the pods each bound Service selects (once their containers are ready);
/// gates follow target health. Attributes (deregistration delay) follow the Service or
/// Ingress annotations; the misbehaviours are tags moto's wrapper reads.
async fn sync_targets(
    shared: &Shared,
    sim: &LbSim,
    elb: &elbv2::Client,
    aws: &Aws,
    snap: &Snapshot,
) {
    let mut gate_results: Vec<(Key, String, bool)> = Vec::new();
    for binding in &snap.bindings {
        let namespace = text(binding, "/metadata/namespace").to_owned();
        let group = text(binding, "/spec/targetGroupARN").to_owned();
        if !aws.groups.values().any(|g| *g == group) {
            continue;
        }
        let service_name = text(binding, "/spec/serviceRef/name");
        let Some(service) = snap.services.iter().find(|s| {
            text(s, "/metadata/namespace") == namespace && text(s, "/metadata/name") == service_name
        }) else {
            continue;
        };
        let delay = service
            .pointer("/metadata/annotations/service.beta.kubernetes.io~1aws-load-balancer-target-group-attributes")
            .or_else(|| {
                snap.ingresses
                    .iter()
                    .find(|i| text(i, "/metadata/namespace") == namespace)
                    .and_then(|i| i.pointer("/metadata/annotations/alb.ingress.kubernetes.io~1target-group-attributes"))
            })
            .and_then(Json::as_str)
            .and_then(|a| {
                a.split(',')
                    .find_map(|kv| kv.strip_prefix("deregistration_delay.timeout_seconds="))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "300".into());
        let _ = elb
            .modify_target_group_attributes()
            .target_group_arn(&group)
            .attributes(
                elbv2::types::TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(delay)
                    .build(),
            )
            .send()
            .await;
        let mut tags = vec![
            elbv2::types::Tag::builder()
                .key("moto:initial-seconds")
                .value(sim.initial_seconds.to_string())
                .build(),
        ];
        if sim.stuck_initial {
            tags.push(
                elbv2::types::Tag::builder()
                    .key("moto:stuck")
                    .value("initial")
                    .build(),
            );
        }
        let _ = elb
            .add_tags()
            .resource_arns(&group)
            .set_tags(Some(tags))
            .send()
            .await;
        let selector = service
            .pointer("/spec/selector")
            .and_then(Json::as_object)
            .cloned()
            .unwrap_or_default();
        let selected: Vec<&Json> = snap
            .pods
            .iter()
            .filter(|p| text(p, "/metadata/namespace") == namespace)
            .filter(|p| {
                !selector.is_empty()
                    && selector.iter().all(|(k, v)| {
                        p.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v)
                    })
            })
            .collect();
        let ready_ips: Vec<String> = selected
            .iter()
            .filter(|p| {
                p.pointer("/status/conditions")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| text(c, "/type") == "ContainersReady" && text(c, "/status") == "True")
            })
            .map(|p| text(p, "/status/podIP").to_owned())
            .filter(|ip| !ip.is_empty())
            .collect();
        let Ok(health) = elb
            .describe_target_health()
            .target_group_arn(&group)
            .send()
            .await
        else {
            continue;
        };
        let registered: HashMap<String, String> = health
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let id = d.target().and_then(|t| t.id())?.to_owned();
                let state = d
                    .target_health()
                    .and_then(|h| h.state())
                    .map(|s| s.as_str().to_owned())?;
                Some((id, state))
            })
            .collect();
        if sim.register_targets {
            let add: Vec<TargetDescription> = ready_ips
                .iter()
                .filter(|ip| !matches!(registered.get(*ip).map(String::as_str), Some(s) if s != "draining"))
                .map(|ip| TargetDescription::builder().id(ip).build())
                .collect();
            if !add.is_empty() {
                let _ = elb
                    .register_targets()
                    .target_group_arn(&group)
                    .set_targets(Some(add))
                    .send()
                    .await;
            }
        }
        let remove: Vec<TargetDescription> = registered
            .iter()
            .filter(|(ip, state)| !ready_ips.contains(ip) && state.as_str() != "draining")
            .map(|(ip, _)| TargetDescription::builder().id(ip).build())
            .collect();
        if !remove.is_empty() {
            let _ = elb
                .deregister_targets()
                .target_group_arn(&group)
                .set_targets(Some(remove))
                .send()
                .await;
        }
        let gate = format!(
            "target-health.elbv2.k8s.aws/{}",
            text(binding, "/metadata/name")
        );
        for pod in &selected {
            let ip = text(pod, "/status/podIP");
            let healthy = registered.get(ip).map(String::as_str) == Some("healthy");
            gate_results.push((
                Key {
                    resource: Resource::by_kind("Pod"),
                    namespace: namespace.clone(),
                    name: text(pod, "/metadata/name").to_owned(),
                },
                gate.clone(),
                healthy,
            ));
        }
    }
    let mut data = shared.data.lock().unwrap();
    apply_gates(&mut data, gate_results);
}

fn apply_gates(data: &mut Data, results: Vec<(Key, String, bool)>) {
    for (pod, gate, healthy) in results {
        let entry = (pod, gate);
        if healthy {
            data.gates_passed.insert(entry);
        } else {
            data.gates_passed.remove(&entry);
        }
    }
}
