//! Checks of rendered objects. Each is read back into its `k8s-openapi` type and written
//! again: a field the type does not know (a template typo) is missing from the round trip
//! and reported with its path. Then the Fargate and ALB rules that a custom template could
//! break are checked on the objects themselves.

use k8s_openapi::api::{apps, autoscaling, batch, core, networking, policy, rbac};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use super::Manifest;
use crate::env::Environment;
use crate::env::model::Compute;

/// Checks one object: a kind this tool renders, well typed, no unknown field, and in the
/// environment's namespace.
pub fn object(body: &Json, namespace: &str) -> Result<(), String> {
    let api_version = body
        .get("apiVersion")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let kind = body.get("kind").and_then(Json::as_str).unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => roundtrip::<core::v1::Namespace>(body)?,
        ("v1", "ServiceAccount") => roundtrip::<core::v1::ServiceAccount>(body)?,
        ("v1", "Service") => roundtrip::<core::v1::Service>(body)?,
        ("v1", "ConfigMap") => roundtrip::<core::v1::ConfigMap>(body)?,
        ("apps/v1", "Deployment") => roundtrip::<apps::v1::Deployment>(body)?,
        ("apps/v1", "DaemonSet") => roundtrip::<apps::v1::DaemonSet>(body)?,
        ("apps/v1", "StatefulSet") => roundtrip::<apps::v1::StatefulSet>(body)?,
        ("batch/v1", "CronJob") => roundtrip::<batch::v1::CronJob>(body)?,
        ("networking.k8s.io/v1", "Ingress") => roundtrip::<networking::v1::Ingress>(body)?,
        (crate::gateway::API_VERSION, "HTTPRoute") => roundtrip::<crate::gateway::HttpRoute>(body)?,
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            roundtrip::<autoscaling::v2::HorizontalPodAutoscaler>(body)?
        }
        ("policy/v1", "PodDisruptionBudget") => roundtrip::<policy::v1::PodDisruptionBudget>(body)?,
        ("rbac.authorization.k8s.io/v1", "Role") => roundtrip::<rbac::v1::Role>(body)?,
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            roundtrip::<rbac::v1::RoleBinding>(body)?
        }
        _ => {
            return Err(format!(
                "{api_version} {kind} is not a kind infra-gen renders (Namespace, ServiceAccount, Service, ConfigMap, Deployment, StatefulSet, CronJob, Ingress, HTTPRoute, HorizontalPodAutoscaler, PodDisruptionBudget, Role, RoleBinding)"
            ));
        }
    }
    let object_namespace = body.pointer("/metadata/namespace").and_then(Json::as_str);
    match (kind, object_namespace) {
        ("Namespace", None) => Ok(()),
        ("Namespace", Some(_)) => Err("a Namespace has no metadata.namespace".into()),
        (_, Some(ns)) if ns == namespace => Ok(()),
        (_, other) => Err(format!(
            "metadata.namespace is {other:?}, expected {namespace:?}: every object of an environment lives in its namespace"
        )),
    }
}

fn roundtrip<T: DeserializeOwned + Serialize>(body: &Json) -> Result<(), String> {
    let typed: T = serde_path_to_error::deserialize(body.clone())
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_unknown(body, &back, String::new()) {
        Some(path) => Err(format!(
            "{path} is not a field of this kind (misspelt or misplaced?)"
        )),
        None => Ok(()),
    }
}

fn is_empty(value: &Json) -> bool {
    match value {
        Json::Null => true,
        Json::Object(m) => m.is_empty(),
        Json::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The first path present in `original` but dropped by the typed round trip.
fn first_unknown(original: &Json, back: &Json, path: String) -> Option<String> {
    match (original, back) {
        (Json::Object(a), Json::Object(b)) => a.iter().find_map(|(key, value)| {
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match b.get(key) {
                Some(other) => first_unknown(value, other, child),
                None if is_empty(value) => None,
                None => Some(child),
            }
        }),
        (Json::Array(a), Json::Array(b)) => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_unknown(x, y, format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Rules on the rendered objects: Fargate cannot run DaemonSets, host networking or ports,
/// privileged containers or topology spread constraints; an ALB Ingress must use IP targets.
pub fn environment_rules(env: &Environment, manifests: &[Manifest]) -> Result<(), String> {
    let fargate = env.spec.cluster.compute == Compute::Fargate;
    let mut problems = Vec::new();
    for m in manifests {
        let id = format!("{}/{}", m.kind, m.name);
        if fargate && m.kind == "DaemonSet" {
            problems.push(format!("{id}: DaemonSets do not run on Fargate"));
        }
        if fargate
            && m.kind == "StatefulSet"
            && m.body
                .pointer("/spec/volumeClaimTemplates")
                .is_some_and(|v| !is_empty(v))
        {
            problems.push(format!(
                "{id}: volumeClaimTemplates need EBS volumes, which Fargate pods cannot mount; a stateful workload gives identity (stable names), not storage — keep state in a database or cache"
            ));
        }
        let pod = match m.kind.as_str() {
            "Deployment" | "DaemonSet" | "StatefulSet" => m.body.pointer("/spec/template/spec"),
            "CronJob" => m.body.pointer("/spec/jobTemplate/spec/template/spec"),
            _ => None,
        };
        if let (true, Some(pod)) = (fargate, pod) {
            for key in ["hostNetwork", "hostPID", "hostIPC"] {
                if pod.get(key) == Some(&Json::Bool(true)) {
                    problems.push(format!("{id}: {key} is not supported on Fargate"));
                }
            }
            if pod
                .get("topologySpreadConstraints")
                .is_some_and(|t| !is_empty(t))
            {
                problems.push(format!(
                    "{id}: topologySpreadConstraints are not supported on Fargate"
                ));
            }
            for container in pod
                .get("containers")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                let name = container.get("name").and_then(Json::as_str).unwrap_or("?");
                if container.pointer("/securityContext/privileged") == Some(&Json::Bool(true)) {
                    problems.push(format!(
                        "{id}: container {name} is privileged, which Fargate refuses"
                    ));
                }
                let host_port = container
                    .get("ports")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .any(|p| p.get("hostPort").is_some());
                if host_port {
                    problems.push(format!(
                        "{id}: container {name} uses a hostPort, which Fargate refuses"
                    ));
                }
                if container.pointer("/resources/requests/cpu").is_none()
                    || container.pointer("/resources/requests/memory").is_none()
                {
                    problems.push(format!("{id}: container {name} has no cpu and memory requests; Fargate sizes the pod from them"));
                }
            }
        }
        if m.kind == "Ingress"
            && m.body
                .pointer("/spec/ingressClassName")
                .and_then(Json::as_str)
                == Some("alb")
        {
            let target = m
                .body
                .pointer("/metadata/annotations/alb.ingress.kubernetes.io~1target-type")
                .and_then(Json::as_str);
            if target != Some("ip") {
                problems.push(format!(
                    "{id}: alb.ingress.kubernetes.io/target-type must be ip (found {target:?}): Fargate pods have no node port, and IP targets let the readiness gate work"
                ));
            }
        }
    }
    problems.extend(named_ports(manifests));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The pod template of a workload object.
fn pod_template(m: &Manifest) -> Option<&Json> {
    match m.kind.as_str() {
        "Deployment" | "DaemonSet" | "StatefulSet" => m.body.pointer("/spec/template"),
        "CronJob" => m.body.pointer("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn port_names(container: &Json) -> Vec<&str> {
    container
        .get("ports")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("name").and_then(Json::as_str))
        .collect()
}

/// A probe or lifecycle handler of a container that names a port the container does not
/// declare: the kubelet cannot resolve it, so the probe errors on every try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndeclaredPort {
    pub container: String,
    /// `readinessProbe`, `livenessProbe`, `startupProbe`, `lifecycle.preStop`, …
    pub handler: &'static str,
    pub port: String,
    /// The port names the container declares.
    pub declared: Vec<String>,
}

/// The handlers of a pod spec that name ports their container does not declare.
pub fn undeclared_handler_ports(spec: &Json) -> Vec<UndeclaredPort> {
    let mut out = Vec::new();
    for container in spec
        .get("containers")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let name = container.get("name").and_then(Json::as_str).unwrap_or("?");
        let declared = port_names(container);
        for (handler, pointer) in [
            ("readinessProbe", "/readinessProbe"),
            ("livenessProbe", "/livenessProbe"),
            ("startupProbe", "/startupProbe"),
            ("lifecycle.preStop", "/lifecycle/preStop"),
            ("lifecycle.postStart", "/lifecycle/postStart"),
        ] {
            let Some(action) = container.pointer(pointer) else {
                continue;
            };
            for kind in ["httpGet", "tcpSocket"] {
                if let Some(port) = action
                    .pointer(&format!("/{kind}/port"))
                    .and_then(Json::as_str)
                    && !declared.contains(&port)
                {
                    out.push(UndeclaredPort {
                        container: name.to_owned(),
                        handler,
                        port: port.to_owned(),
                        declared: declared.iter().map(|d| (*d).to_owned()).collect(),
                    });
                }
            }
        }
    }
    out
}

/// Every named port a rendered object refers to resolves, as the kubelet and the load
/// balancer controller will resolve it (project templates included): a probe's or
/// lifecycle handler's port in its container; a Service's `targetPort` in the pods it
/// selects; an Ingress backend's port in its Service; a forward action's `servicePort` in
/// the Services it names. The blue-green slot label, filled in at apply, is ignored when
/// matching selectors.
pub fn named_ports(manifests: &[Manifest]) -> Vec<String> {
    let mut problems = Vec::new();
    for m in manifests {
        let Some(template) = pod_template(m) else {
            continue;
        };
        let id = format!("{}/{}", m.kind, m.name);
        for missing in undeclared_handler_ports(template.get("spec").unwrap_or(&Json::Null)) {
            problems.push(format!(
                "{id}: the {} of container {} names port {:?}, which the container does not declare (its ports: {}); the kubelet cannot resolve it, the probe errors on every try and the pod would never be ready",
                missing.handler,
                missing.container,
                missing.port,
                if missing.declared.is_empty() { "none".to_owned() } else { missing.declared.join(", ") }
            ));
        }
    }
    let workloads: Vec<(&Manifest, &Json)> = manifests
        .iter()
        .filter_map(|m| pod_template(m).map(|t| (m, t)))
        .collect();
    let services: Vec<&Manifest> = manifests.iter().filter(|m| m.kind == "Service").collect();
    for service in &services {
        let Some(selector) = service
            .body
            .pointer("/spec/selector")
            .and_then(Json::as_object)
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        let selected: Vec<&(&Manifest, &Json)> = workloads
            .iter()
            .filter(|(_, template)| {
                let labels = template
                    .pointer("/metadata/labels")
                    .and_then(Json::as_object);
                selector.iter().all(|(k, v)| {
                    k == crate::render::context::labels::SLOT
                        || labels.and_then(|l| l.get(k)) == Some(v)
                })
            })
            .collect();
        if selected.is_empty() {
            continue;
        }
        for port in service
            .body
            .pointer("/spec/ports")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let Some(target) = port.get("targetPort").and_then(Json::as_str) else {
                continue;
            };
            for (workload, template) in &selected {
                let declared: Vec<&str> = template
                    .pointer("/spec/containers")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(port_names)
                    .collect();
                if !declared.contains(&target) {
                    problems.push(format!(
                        "Service/{}: targetPort {target:?} is not a port of the pods it selects ({}/{} declares: {})",
                        service.name,
                        workload.kind,
                        workload.name,
                        declared.join(", ")
                    ));
                }
            }
        }
    }
    let service_ports = |name: &str| -> Option<Vec<String>> {
        services.iter().find(|s| s.name == name).map(|s| {
            s.body
                .pointer("/spec/ports")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("name").and_then(Json::as_str).map(str::to_owned))
                .collect()
        })
    };
    for ingress in manifests.iter().filter(|m| m.kind == "Ingress") {
        let id = format!("Ingress/{}", ingress.name);
        for path in ingress
            .body
            .pointer("/spec/rules")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.pointer("/http/paths").and_then(Json::as_array))
            .flatten()
        {
            let service = path
                .pointer("/backend/service/name")
                .and_then(Json::as_str)
                .unwrap_or_default();
            let Some(port) = path
                .pointer("/backend/service/port/name")
                .and_then(Json::as_str)
            else {
                continue;
            };
            if port == "use-annotation" {
                continue;
            }
            match service_ports(service) {
                Some(ports) if !ports.iter().any(|p| p == port) => problems.push(format!(
                    "{id}: backend port {port:?} is not a port of Service {service} (its ports: {})",
                    ports.join(", ")
                )),
                _ => {}
            }
        }
        let actions = ingress
            .body
            .pointer("/metadata/annotations")
            .and_then(Json::as_object)
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("alb.ingress.kubernetes.io/actions."));
        for (key, action) in actions {
            let Some(action) = action
                .as_str()
                .and_then(|a| serde_json::from_str::<Json>(a).ok())
            else {
                continue;
            };
            for group in action
                .pointer("/forwardConfig/targetGroups")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                let service = group
                    .get("serviceName")
                    .and_then(Json::as_str)
                    .unwrap_or_default();
                let Some(port) = group.get("servicePort").and_then(Json::as_str) else {
                    continue;
                };
                match service_ports(service) {
                    Some(ports) if !ports.iter().any(|p| p == port) => problems.push(format!(
                        "{id}: {key} forwards to port {port:?} of Service {service}, which has no such port (its ports: {})",
                        ports.join(", ")
                    )),
                    None => problems.push(format!(
                        "{id}: {key} forwards to Service {service}, which this environment does not render"
                    )),
                    _ => {}
                }
            }
        }
    }
    problems
}
