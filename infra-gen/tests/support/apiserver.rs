//! An in-process test double of the Kubernetes API server (DESIGN §8), enough for infra-gen,
//! and as strict as kube-apiserver where infra-gen could get it wrong: objects by
//! group/version/resource/namespace/name; server-side apply with field ownership per manager
//! (conflicts, forced takeover, removal of fields a manager stopped applying, managedFields,
//! dry-run) — [`fields`]; create/replace/merge patch with resourceVersion preconditions;
//! typed decoding of every body (unknown fields dropped, or refused with
//! `fieldValidation=Strict`; duplicate fields; MicroTime/Time formats), name/label/annotation
//! rules and immutable fields — [`validation`]; defaulting (`spec.replicas`, Service
//! `clusterIP`); get/list/watch with label and field selectors; the status subresource;
//! cascading namespace deletion; simulated controllers and kubelet — [`kubelet`]; fault
//! injection (error statuses, 409 conflicts, dropped watches); an optional bearer-token check
//! with expiring tokens; and a log of every request.
//!
//! It serves plain HTTP on 127.0.0.1 and writes a kubeconfig pointing at itself, so tests run
//! the real `infra-gen` binary against it. What it does not model is listed in the README
//! ("Testing against a real cluster").

mod endpoints;
mod fields;
mod kubelet;
pub mod lb;
pub mod validation;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use tokio::sync::broadcast;

use validation::Refusal;

/// A resource type the double serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

pub const RESOURCES: [Resource; 21] = [
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
    },
    Resource {
        group: "batch",
        version: "v1",
        plural: "cronjobs",
        kind: "CronJob",
        namespaced: true,
    },
    Resource {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingresses",
        kind: "Ingress",
        namespaced: true,
    },
    Resource {
        group: "autoscaling",
        version: "v2",
        plural: "horizontalpodautoscalers",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
    },
    Resource {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        namespaced: true,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        kind: "Role",
        namespaced: true,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        kind: "RoleBinding",
        namespaced: true,
    },
    Resource {
        group: "batch",
        version: "v1",
        plural: "jobs",
        kind: "Job",
        namespaced: true,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        kind: "EndpointSlice",
        namespaced: true,
    },
    // Served only with the Gateway API (Options::gateway), as a cluster serves them only
    // with its CRDs installed.
    Resource {
        group: "gateway.networking.k8s.io",
        version: "v1",
        plural: "httproutes",
        kind: "HTTPRoute",
        namespaced: true,
    },
    Resource {
        group: "gateway.networking.k8s.io",
        version: "v1",
        plural: "gateways",
        kind: "Gateway",
        namespaced: true,
    },
    // Served only with a simulated AWS Load Balancer Controller (Options::lb), as a cluster
    // serves it only with the controller's CRDs installed.
    Resource {
        group: "elbv2.k8s.aws",
        version: "v1beta1",
        plural: "targetgroupbindings",
        kind: "TargetGroupBinding",
        namespaced: true,
    },
];

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn by_kind(kind: &str) -> Resource {
        *RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .expect("known kind")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub resource: Resource,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct WatchEvent {
    rv: u64,
    key: Key,
    kind: &'static str,
    object: Json,
}

/// A request as the double saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Who sent it (infra-gen names its CI job there).
    pub user_agent: String,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Request {
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

/// An injected failure: the next `remaining` requests with `method` whose path contains
/// `path_contains` are answered with `status`, or (`None`) never answered at all.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: String,
    pub path_contains: String,
    /// Only requests whose user agent contains this (infra-gen's names its CI job).
    pub agent_contains: String,
    pub status: Option<u16>,
    pub remaining: usize,
}

/// The answer of the first fault that matches this request (and uses it up), if any: an
/// error status now, or — for a hanging fault — none for an hour.
pub async fn fault_answer(fault: Option<Option<u16>>) -> Option<Response> {
    match fault? {
        Some(status) => {
            let reason = if status == 409 {
                "Conflict"
            } else {
                "InternalError"
            };
            Some(status_error(
                status,
                reason,
                format!("injected fault {status}"),
            ))
        }
        None => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Some(status_error(504, "Timeout", "injected hang"))
        }
    }
}

/// Uses up the first fault that matches this request: `Some(status)` (None: it hangs).
pub fn take_fault(
    faults: &mut [Fault],
    method: &str,
    path: &str,
    agent: &str,
) -> Option<Option<u16>> {
    let fault = faults.iter_mut().find(|f| {
        f.remaining > 0
            && f.method == method
            && path.contains(&f.path_contains)
            && agent.contains(&f.agent_contains)
    })?;
    fault.remaining -= 1;
    Some(fault.status)
}

#[derive(Default)]
pub struct Data {
    rv: u64,
    /// The resourceVersion the EndpointSlices were last brought up to date at.
    endpoints_rv: u64,
    objects: BTreeMap<Key, Json>,
    managed: HashMap<Key, fields::Managers>,
    log: Vec<WatchEvent>,
    requests: Vec<Request>,
    faults: Vec<Fault>,
    /// When each simulated pod was created.
    pods: kubelet::Births,
    pod_ips: HashMap<Key, String>,
    /// The template each StatefulSet pod was created from (OnDelete keeps it).
    pod_templates: HashMap<Key, Json>,
    /// Readiness gates the (simulated) controller's webhook injected, per pod.
    gates: HashMap<Key, Vec<String>>,
    /// Gates the (simulated) controller set to True: the pod's target is healthy.
    gates_passed: BTreeSet<(Key, String)>,
    /// Whether the simulated controller's webhook injects readiness gates.
    inject_gates: bool,
    events_made: BTreeSet<String>,
    next_cluster_ip: u32,
}

/// Settings of the double.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a new pod takes to become ready.
    pub ready_after: Duration,
    /// Close every watch after this long (the client must re-establish it).
    pub drop_watches_after: Option<Duration>,
    /// Accept only bearer tokens `test-token-<unix seconds>` younger than this.
    pub token_ttl: Option<Duration>,
    /// A simulated AWS Load Balancer Controller on moto's ELBv2 (and the
    /// TargetGroupBinding API); without it, the cluster has no controller.
    pub lb: Option<lb::LbSim>,
    /// The Gateway API: its CRDs (HTTPRoute, Gateway) served, and the Gateway controller
    /// stand-in (`testbed::gateway`) writing route status.
    pub gateway: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ready_after: Duration::from_millis(300),
            drop_watches_after: None,
            token_ttl: None,
            lb: None,
            gateway: false,
        }
    }
}

struct Shared {
    data: Mutex<Data>,
    events: broadcast::Sender<WatchEvent>,
    options: Mutex<Options>,
}

/// A running double.
#[derive(Clone)]
pub struct ApiServer {
    shared: Arc<Shared>,
    pub url: String,
}

/// Now, as the API writes `Time` (RFC 3339, seconds), by the k8s-openapi serializer.
pub fn time_now() -> Json {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .expect("a Time serialises")
}

fn status_error(code: u16, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message.into(), "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn refused(refusal: Refusal) -> Response {
    status_error(refusal.code, refusal.reason, refusal.message)
}

fn labels_match(object: &Json, selector: &str) -> bool {
    let labels = object.pointer("/metadata/labels").and_then(Json::as_object);
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Json::as_str);
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                get(k.trim()) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                get(k.trim()) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                get(k).is_none()
            } else {
                get(term).is_some()
            }
        })
}

fn fields_match(object: &Json, selector: &str) -> bool {
    selector
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .all(|term| {
            let Some((path, value)) = term.split_once('=') else {
                return true;
            };
            let pointer = format!("/{}", path.trim_start_matches('=').replace('.', "/"));
            object.pointer(&pointer).and_then(Json::as_str) == Some(value.trim_start_matches('='))
        })
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Target {
    resource: Resource,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .copied()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    };
    match rest {
        ["namespaces"] => Some(Target {
            resource: find("namespaces")?,
            namespace: String::new(),
            name: None,
            subresource: None,
        }),
        ["namespaces", name] => Some(Target {
            resource: find("namespaces")?,
            namespace: String::new(),
            name: Some((*name).to_owned()),
            subresource: None,
        }),
        ["namespaces", ns, plural] => Some(Target {
            resource: find(plural)?,
            namespace: (*ns).to_owned(),
            name: None,
            subresource: None,
        }),
        ["namespaces", ns, plural, name] => Some(Target {
            resource: find(plural)?,
            namespace: (*ns).to_owned(),
            name: Some((*name).to_owned()),
            subresource: None,
        }),
        ["namespaces", ns, plural, name, sub] => Some(Target {
            resource: find(plural)?,
            namespace: (*ns).to_owned(),
            name: Some((*name).to_owned()),
            subresource: Some((*sub).to_owned()),
        }),
        [plural] => Some(Target {
            resource: find(plural)?,
            namespace: String::new(),
            name: None,
            subresource: None,
        }),
        _ => None,
    }
}

impl Data {
    /// Every object of `kind`, every namespace.
    fn of_kind(&self, kind: &str) -> Vec<Json> {
        self.objects
            .iter()
            .filter(|(k, _)| k.resource.kind == kind)
            .map(|(_, o)| o.clone())
            .collect()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn store(
        &mut self,
        key: Key,
        mut object: Json,
        events: &broadcast::Sender<WatchEvent>,
    ) -> Json {
        let created = !self.objects.contains_key(&key);
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = Json::String(rv.to_string());
        object["apiVersion"] = Json::String(key.resource.api_version());
        object["kind"] = Json::String(key.resource.kind.to_owned());
        let event = WatchEvent {
            rv,
            key: key.clone(),
            kind: if created { "ADDED" } else { "MODIFIED" },
            object: object.clone(),
        };
        self.log.push(event.clone());
        let _ = events.send(event);
        self.objects.insert(key, object.clone());
        object
    }

    fn remove(&mut self, key: &Key, events: &broadcast::Sender<WatchEvent>) -> Option<Json> {
        let object = self.objects.remove(key)?;
        self.managed.remove(key);
        let rv = self.next_rv();
        let event = WatchEvent {
            rv,
            key: key.clone(),
            kind: "DELETED",
            object: object.clone(),
        };
        self.log.push(event.clone());
        let _ = events.send(event);
        Some(object)
    }

    fn namespace_exists(&self, namespace: &str) -> bool {
        self.objects
            .keys()
            .any(|k| k.resource.kind == "Namespace" && k.name == namespace)
    }
}

fn new_metadata(object: &mut Json, key: &Key) {
    if !object.get("metadata").is_some_and(Json::is_object) {
        object["metadata"] = json!({});
    }
    let meta = object["metadata"].as_object_mut().expect("metadata");
    meta.insert("name".into(), Json::String(key.name.clone()));
    if key.resource.namespaced {
        meta.insert("namespace".into(), Json::String(key.namespace.clone()));
    }
    let fresh = |v: Option<&Json>| v.is_none_or(Json::is_null);
    if fresh(meta.get("uid")) {
        meta.insert(
            "uid".into(),
            Json::String(format!(
                "uid-{}-{}",
                key.name,
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            )),
        );
    }
    if fresh(meta.get("creationTimestamp")) {
        meta.insert("creationTimestamp".into(), time_now());
    }
    meta.entry("generation").or_insert(json!(1));
}

fn bump_generation(before: Option<&Json>, after: &mut Json) {
    let changed = before.is_some_and(|b| b.get("spec") != after.get("spec"));
    if changed {
        let generation = before
            .and_then(|b| b.pointer("/metadata/generation"))
            .and_then(Json::as_i64)
            .unwrap_or(1);
        after["metadata"]["generation"] = json!(generation + 1);
    }
}

/// Where a kind keeps its pod spec.
fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "Job" => Some("/spec/template/spec"),
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        "Pod" => Some("/spec"),
        _ => None,
    }
}

/// A `fieldRef` without `apiVersion` gets `v1`, as kube-apiserver defaults an
/// ObjectFieldSelector (env and downward-API volume items alike).
fn default_field_refs(spec: &mut Json) {
    for list in ["containers", "initContainers"] {
        for container in spec
            .get_mut(list)
            .and_then(Json::as_array_mut)
            .into_iter()
            .flatten()
        {
            for env in container
                .get_mut("env")
                .and_then(Json::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(field) = env
                    .pointer_mut("/valueFrom/fieldRef")
                    .and_then(Json::as_object_mut)
                {
                    field.entry("apiVersion").or_insert(json!("v1"));
                }
            }
        }
    }
    for volume in spec
        .get_mut("volumes")
        .and_then(Json::as_array_mut)
        .into_iter()
        .flatten()
    {
        for item in volume
            .pointer_mut("/downwardAPI/items")
            .and_then(Json::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(field) = item.get_mut("fieldRef").and_then(Json::as_object_mut) {
                field.entry("apiVersion").or_insert(json!("v1"));
            }
        }
    }
}

/// What kube-apiserver's defaulting adds that matters here.
fn default_fields(data: &mut Data, resource: &Resource, before: Option<&Json>, object: &mut Json) {
    if let Some(spec) = pod_spec_pointer(resource.kind).and_then(|p| object.pointer_mut(p)) {
        default_field_refs(spec);
    }
    match resource.kind {
        "Deployment" | "StatefulSet" => {
            if object.pointer("/spec/replicas").is_none()
                && let Some(spec) = object.get_mut("spec").and_then(Json::as_object_mut)
            {
                spec.insert("replicas".into(), json!(1));
            }
        }
        "Service" => {
            let Some(spec) = object.get_mut("spec").and_then(Json::as_object_mut) else {
                return;
            };
            spec.entry("type").or_insert(json!("ClusterIP"));
            let kept = before.and_then(|b| b.pointer("/spec/clusterIP")).cloned();
            if !spec.contains_key("clusterIP") {
                let ip = kept.unwrap_or_else(|| {
                    data.next_cluster_ip += 1;
                    let n = data.next_cluster_ip;
                    json!(format!("10.96.{}.{}", n / 250, n % 250 + 1))
                });
                spec.insert("clusterIP".into(), ip.clone());
                spec.insert("clusterIPs".into(), json!([ip]));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Json::as_array_mut) {
                for port in ports {
                    if let Some(p) = port.as_object_mut() {
                        p.entry("protocol").or_insert(json!("TCP"));
                        if !p.contains_key("targetPort")
                            && let Some(number) = p.get("port").cloned()
                        {
                            p.insert("targetPort".into(), number);
                        }
                    }
                }
            }
        }
        "HTTPRoute" => default_route(object),
        _ => {}
    }
}

/// The defaults the Gateway API's HTTPRoute CRD schema gives (v1.4, standard channel):
/// parents are Gateways of its group, backends Services of the core group with weight 1,
/// matches a PathPrefix of `/`, header matches Exact.
fn default_route(route: &mut Json) {
    let each =
        |value: &mut Json, pointer: &str, f: &mut dyn FnMut(&mut serde_json::Map<String, Json>)| {
            for item in value
                .pointer_mut(pointer)
                .and_then(Json::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(item) = item.as_object_mut() {
                    f(item);
                }
            }
        };
    each(route, "/spec/parentRefs", &mut |p| {
        p.entry("group")
            .or_insert(json!("gateway.networking.k8s.io"));
        p.entry("kind").or_insert(json!("Gateway"));
    });
    if route.pointer("/spec/rules").is_none()
        && let Some(spec) = route.get_mut("spec").and_then(Json::as_object_mut)
    {
        spec.insert("rules".into(), json!([{}]));
    }
    each(route, "/spec/rules", &mut |rule| {
        let matches = rule
            .entry("matches")
            .or_insert(json!([{"path": {"type": "PathPrefix", "value": "/"}}]));
        for m in matches.as_array_mut().into_iter().flatten() {
            if let Some(path) = m.get_mut("path").and_then(Json::as_object_mut) {
                path.entry("type").or_insert(json!("PathPrefix"));
                path.entry("value").or_insert(json!("/"));
            }
            for h in m
                .get_mut("headers")
                .and_then(Json::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(h) = h.as_object_mut() {
                    h.entry("type").or_insert(json!("Exact"));
                }
            }
        }
        for b in rule
            .get_mut("backendRefs")
            .and_then(Json::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(b) = b.as_object_mut() {
                b.entry("group").or_insert(json!(""));
                b.entry("kind").or_insert(json!("Service"));
                b.entry("weight").or_insert(json!(1));
            }
        }
    });
}

impl ApiServer {
    /// Starts the double on a free loopback port.
    pub async fn start(options: Options) -> ApiServer {
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            data: Mutex::new(Data::default()),
            events,
            options: Mutex::new(options),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        tokio::spawn(controllers(shared.clone()));
        if shared.options.lock().unwrap().gateway {
            tokio::spawn(gateway_controller(shared.clone()));
        }
        let sim = shared.options.lock().unwrap().lb.clone();
        if let Some(sim) = sim {
            shared.data.lock().unwrap().inject_gates = sim.inject_gates;
            tokio::spawn(lb::run(shared.clone(), sim.moto.clone()));
        }
        ApiServer { shared, url }
    }

    /// Writes a kubeconfig for this server. With `exec`, the user runs that command for tokens.
    pub fn kubeconfig(&self, dir: &Path, exec: Option<&Path>) -> PathBuf {
        let user = match exec {
            Some(command) => {
                json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": command, "args": [], "interactiveMode": "Never"}})
            }
            None => json!({"token": format!("test-token-{}", unix_now())}),
        };
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "double", "user": user}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "double"}}],
            "current-context": "double",
        });
        let path = dir.join("kubeconfig");
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        path
    }

    /// How long pods created from now on take to become ready.
    pub fn set_ready_after(&self, ready_after: Duration) {
        self.shared.options.lock().unwrap().ready_after = ready_after;
    }

    /// Changes how the simulated load balancer controller behaves from now on.
    pub fn set_lb(&self, change: impl FnOnce(&mut lb::LbSim)) {
        let mut options = self.shared.options.lock().unwrap();
        if let Some(sim) = options.lb.as_mut() {
            change(sim);
            let inject = sim.inject_gates;
            drop(options);
            self.shared.data.lock().unwrap().inject_gates = inject;
        }
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.data.lock().unwrap().requests.clone()
    }

    /// How many writes are in the log.
    pub fn write_count(&self) -> usize {
        let data = self.shared.data.lock().unwrap();
        data.requests.iter().filter(|r| r.is_write()).count()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.data.lock().unwrap().requests.clear();
    }

    /// Makes the next `times` requests with `method` whose path contains `path_contains`
    /// fail with `status`.
    pub fn fail(&self, method: &str, path_contains: &str, status: u16, times: usize) {
        self.fault(Fault {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            agent_contains: String::new(),
            status: Some(status),
            remaining: times,
        });
    }

    /// Adds an injected failure.
    pub fn fault(&self, fault: Fault) {
        self.shared.data.lock().unwrap().faults.push(fault);
    }

    /// Whether every injected fault was used up.
    pub fn faults_used(&self) -> bool {
        self.shared
            .data
            .lock()
            .unwrap()
            .faults
            .iter()
            .all(|f| f.remaining == 0)
    }

    /// Every change stored so far, oldest first, with its watch event type (`ADDED`,
    /// `MODIFIED`, `DELETED`): (resourceVersion, type, kind, name, object).
    pub fn events(&self) -> Vec<(u64, &'static str, String, String, Json)> {
        let data = self.shared.data.lock().unwrap();
        data.log
            .iter()
            .map(|e| {
                (
                    e.rv,
                    e.kind,
                    e.key.resource.kind.to_owned(),
                    e.key.name.clone(),
                    e.object.clone(),
                )
            })
            .collect()
    }

    /// Every change stored so far, oldest first: (resourceVersion, kind, name, object).
    pub fn changes(&self) -> Vec<(u64, String, String, Json)> {
        let data = self.shared.data.lock().unwrap();
        data.log
            .iter()
            .map(|e| {
                (
                    e.rv,
                    e.key.resource.kind.to_owned(),
                    e.key.name.clone(),
                    e.object.clone(),
                )
            })
            .collect()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The field manager of a non-apply write: `fieldManager`, else the user agent's first word
/// (as kube-apiserver derives it).
fn manager_of(query: &HashMap<String, String>, headers: &HeaderMap) -> String {
    query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .or_else(|| {
            headers
                .get("user-agent")
                .and_then(|v| v.to_str().ok())
                .and_then(|ua| ua.split('/').next())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = query_map(&uri);
    let fault = {
        let mut data = shared.data.lock().unwrap();
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        let agent = headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let fault = take_fault(&mut data.faults, method.as_str(), &path, &agent);
        if !watch {
            data.requests.push(Request {
                method: method.to_string(),
                path: path.clone(),
                query: uri.query().unwrap_or_default().to_owned(),
                user_agent: agent,
                at: std::time::Instant::now(),
            });
        }
        fault
    };
    if let Some(answer) = fault_answer(fault).await {
        return answer;
    }
    let ttl = shared.options.lock().unwrap().token_ttl;
    if let Some(ttl) = ttl {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let issued = token
            .and_then(|t| t.strip_prefix("test-token-"))
            .and_then(|s| s.parse::<u64>().ok());
        let fresh = issued.is_some_and(|at| unix_now().saturating_sub(at) < ttl.as_secs());
        if !fresh {
            return status_error(
                401,
                "Unauthorized",
                "Unauthorized: token missing or expired",
            );
        }
    }
    if path == "/version" {
        return axum::Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-double"}))
            .into_response();
    }
    let (controller, gateway) = {
        let options = shared.options.lock().unwrap();
        (options.lb.is_some(), options.gateway)
    };
    let Some(target) = parse_path(&path)
        .filter(|t| controller || t.resource.kind != "TargetGroupBinding")
        .filter(|t| gateway || t.resource.group != "gateway.networking.k8s.io")
    else {
        return status_error(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        );
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    match (method, &target.name) {
        (Method::GET, None)
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            watch(shared, target, query).await
        }
        (Method::GET, None) => list(&shared, &target, &query),
        (Method::GET, Some(name))
            if target.resource.kind == "Pod" && target.subresource.as_deref() == Some("log") =>
        {
            let key = Key {
                resource: target.resource,
                namespace: target.namespace.clone(),
                name: name.clone(),
            };
            let Some(pod) = shared.data.lock().unwrap().objects.get(&key).cloned() else {
                return status_error(404, "NotFound", format!("pods \"{name}\" not found"));
            };
            let image = pod
                .pointer("/spec/containers/0/image")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned();
            let previous = query.get("previous").map(String::as_str) == Some("true");
            let tail: usize = query
                .get("tailLines")
                .and_then(|t| t.parse().ok())
                .unwrap_or(usize::MAX);
            let lines =
                testbed::pod::log_lines(testbed::pod::Behaviour::of(&image), &image, previous);
            let text: String = lines[lines.len().saturating_sub(tail)..]
                .iter()
                .map(|l| format!("{l}\n"))
                .collect();
            (StatusCode::OK, text).into_response()
        }
        (Method::GET, Some(name)) => {
            let key = Key {
                resource: target.resource,
                namespace: target.namespace.clone(),
                name: name.clone(),
            };
            match shared.data.lock().unwrap().objects.get(&key) {
                Some(o) => axum::Json(o.clone()).into_response(),
                None => status_error(
                    404,
                    "NotFound",
                    format!("{} \"{name}\" not found", target.resource.plural),
                ),
            }
        }
        (Method::POST, None) => write(&shared, &target, None, Op::Create, &query, &headers, &body),
        (Method::PUT, Some(name)) => write(
            &shared,
            &target,
            Some(name),
            Op::Replace,
            &query,
            &headers,
            &body,
        ),
        (Method::PATCH, Some(name)) => {
            let op = if content_type.starts_with("application/apply-patch") {
                Op::Apply
            } else if content_type.starts_with("application/merge-patch")
                || content_type.starts_with("application/strategic-merge-patch")
            {
                Op::Merge
            } else {
                return status_error(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format ({content_type}); the double serves apply and merge patches"
                    ),
                );
            };
            write(&shared, &target, Some(name), op, &query, &headers, &body)
        }
        (Method::DELETE, Some(name)) => delete(&shared, &target, name),
        _ => status_error(405, "MethodNotAllowed", "method not allowed"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Replace,
    Merge,
    Apply,
}

/// Every write: decode (duplicates, times), preconditions, the change itself (with field
/// ownership), defaulting, typed decode (unknown fields), metadata rules, immutable fields,
/// managedFields, store.
fn write(
    shared: &Shared,
    target: &Target,
    name: Option<&str>,
    op: Op,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let resource = target.resource;
    let (request, duplicates) = match validation::parse_with_duplicates(body) {
        Ok(parsed) => parsed,
        Err(e) => {
            return status_error(
                400,
                "BadRequest",
                format!("the body cannot be read as JSON: {e}"),
            );
        }
    };
    if !request.is_object() {
        return status_error(400, "BadRequest", "the body must be a JSON object");
    }
    if let Err(r) = validation::check_times(&resource, &request, op == Op::Apply) {
        return refused(r);
    }
    let name = match name {
        Some(n) => n.to_owned(),
        None => request
            .pointer("/metadata/name")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    let key = Key {
        resource,
        namespace: target.namespace.clone(),
        name: name.clone(),
    };
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    let strict = query.get("fieldValidation").is_some_and(|v| v == "Strict");
    let status_only = target.subresource.as_deref() == Some("status");
    let mut data = shared.data.lock().unwrap();
    if resource.namespaced && !data.namespace_exists(&target.namespace) {
        return status_error(
            404,
            "NotFound",
            format!("namespaces \"{}\" not found", target.namespace),
        );
    }
    let before = data.objects.get(&key).cloned();
    match (op, &before) {
        (Op::Create, Some(_)) => {
            return status_error(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", resource.plural),
            );
        }
        (Op::Replace | Op::Merge, None) => {
            return status_error(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", resource.plural),
            );
        }
        _ => {}
    }
    if let (Some(wanted), Some(current)) = (
        request
            .pointer("/metadata/resourceVersion")
            .and_then(Json::as_str),
        before
            .as_ref()
            .and_then(|b| b.pointer("/metadata/resourceVersion"))
            .and_then(Json::as_str),
    ) && wanted != current
    {
        return status_error(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                resource.plural
            ),
        );
    }
    let mut managers = data.managed.get(&key).cloned().unwrap_or_default();
    let manager = manager_of(query, headers);
    let mut after = match op {
        Op::Create => request.clone(),
        Op::Replace => {
            let mut object = request.clone();
            let current = before.clone().unwrap_or_default();
            for field in ["uid", "creationTimestamp", "generation"] {
                if let Some(v) = current.pointer(&format!("/metadata/{field}")) {
                    object["metadata"][field] = v.clone();
                }
            }
            if status_only {
                let mut updated = current.clone();
                updated["status"] = object.get("status").cloned().unwrap_or(Json::Null);
                updated
            } else {
                match current.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => {
                        if let Some(map) = object.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
                object
            }
        }
        Op::Merge => {
            let mut object = before.clone().unwrap_or_default();
            let mut patch = request.clone();
            if status_only {
                patch = json!({"status": patch.get("status").cloned().unwrap_or(Json::Null)});
            } else if let Some(map) = patch.as_object_mut() {
                map.remove("status");
            }
            fields::merge(&mut object, &patch);
            object
        }
        Op::Apply => {
            if !query.contains_key("fieldManager") {
                return status_error(
                    422,
                    "Invalid",
                    "fieldManager is required for apply requests",
                );
            }
            let force = query.get("force").is_some_and(|v| v == "true");
            let mut object = before.clone().unwrap_or_else(|| json!({"metadata": {}}));
            if let Err(conflicts) =
                fields::apply(&mut managers, &mut object, &request, &manager, force)
            {
                return status_error(
                    409,
                    "Conflict",
                    fields::conflict_message(&conflicts, &resource.api_version()),
                );
            }
            object
        }
    };
    if before.is_none() {
        new_metadata(&mut after, &key);
    }
    after["apiVersion"] = Json::String(resource.api_version());
    after["kind"] = Json::String(resource.kind.to_owned());
    default_fields(&mut data, &resource, before.as_ref(), &mut after);
    let kept = match validation::round_trip(resource.kind, &after) {
        Ok(kept) => kept,
        Err(e) if e.contains("missing field") => {
            return status_error(
                422,
                "Invalid",
                format!(
                    "{} {name:?} is invalid: {e}: Required value",
                    validation::qualified(&resource)
                ),
            );
        }
        Err(e) => {
            return status_error(
                400,
                "BadRequest",
                format!(
                    "{} in version {:?} cannot be handled as a {}: {e}",
                    resource.kind, resource.version, resource.kind
                ),
            );
        }
    };
    if strict {
        let unknown = validation::unknown_fields(&request, &kept);
        if let Some(r) = validation::strict_error(
            &resource,
            &key.namespace,
            &name,
            &unknown,
            &duplicates,
            op == Op::Apply,
        ) {
            return refused(r);
        }
    }
    let mut after = kept;
    if let Err(r) = validation::check_metadata(&resource, &after) {
        return refused(r);
    }
    if let Some(before) = &before
        && let Err(r) = validation::check_immutable(&resource, before, &after)
    {
        return refused(r);
    }
    if op != Op::Apply {
        fields::update(
            &mut managers,
            before.as_ref(),
            &after,
            &manager,
            status_only,
        );
    }
    after["metadata"]["managedFields"] = fields::managed_fields(
        &managers,
        &resource.api_version(),
        time_now().as_str().unwrap_or_default(),
    );
    bump_generation(before.as_ref(), &mut after);
    if dry_run {
        return axum::Json(after).into_response();
    }
    data.managed.insert(key.clone(), managers);
    let stored = data.store(key, after, &shared.events);
    let code = if before.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (code, axum::Json(stored)).into_response()
}

fn delete(shared: &Shared, target: &Target, name: &str) -> Response {
    let key = Key {
        resource: target.resource,
        namespace: target.namespace.clone(),
        name: name.to_owned(),
    };
    let mut data = shared.data.lock().unwrap();
    let Some(object) = data.remove(&key, &shared.events) else {
        return status_error(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", target.resource.plural),
        );
    };
    if target.resource.kind == "Pod" {
        // Its owner makes a new pod in its place: a new start, a new webhook call, the
        // template the owner has now.
        data.pods.remove(&key);
        data.gates.remove(&key);
        data.pod_templates.remove(&key);
    }
    if target.resource.kind == "Namespace" {
        let inside: Vec<Key> = data
            .objects
            .keys()
            .filter(|k| k.namespace == name)
            .cloned()
            .collect();
        for k in inside {
            data.remove(&k, &shared.events);
        }
    }
    axum::Json(object).into_response()
}

/// The simulated controllers, every 50 ms.
async fn controllers(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ready_after = shared.options.lock().unwrap().ready_after;
        let mut data = shared.data.lock().unwrap();
        kubelet::reconcile_all(&mut data, &shared.events, ready_after);
        endpoints::reconcile(&mut data, &shared.events);
    }
}

/// The Gateway controller stand-in of the test control plane (`testbed::gateway`), on the
/// double's store, every 300 ms: route status as a controller writes it (the status
/// subresource: no new generation).
async fn gateway_controller(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut data = shared.data.lock().unwrap();
        let (gateways, services, namespaces, routes) = (
            data.of_kind("Gateway"),
            data.of_kind("Service"),
            data.of_kind("Namespace"),
            data.of_kind("HTTPRoute"),
        );
        let world = testbed::gateway::World {
            gateways: &gateways,
            services: &services,
            namespaces: &namespaces,
        };
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        for mut route in routes {
            let status = testbed::gateway::route_status(&route, &world, &now);
            if !testbed::gateway::changed(&route, &status) {
                continue;
            }
            route["status"] = status;
            let key = Key {
                resource: Resource::by_kind("HTTPRoute"),
                namespace: route["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                name: route["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            };
            let events = shared.events.clone();
            data.store(key, route, &events);
        }
    }
}

fn list(shared: &Shared, target: &Target, query: &HashMap<String, String>) -> Response {
    let data = shared.data.lock().unwrap();
    let labels = query.get("labelSelector").cloned().unwrap_or_default();
    let fields = query.get("fieldSelector").cloned().unwrap_or_default();
    let items: Vec<Json> = data
        .objects
        .iter()
        .filter(|(k, _)| {
            k.resource == target.resource
                && (target.namespace.is_empty() || k.namespace == target.namespace)
        })
        .map(|(_, o)| o)
        .filter(|o| labels_match(o, &labels) && fields_match(o, &fields))
        .cloned()
        .collect();
    axum::Json(json!({
        "apiVersion": target.resource.api_version(),
        "kind": format!("{}List", target.resource.kind),
        "metadata": {"resourceVersion": data.rv.to_string()},
        "items": items,
    }))
    .into_response()
}

async fn watch(shared: Arc<Shared>, target: Target, query: HashMap<String, String>) -> Response {
    let labels = query.get("labelSelector").cloned().unwrap_or_default();
    let fields = query.get("fieldSelector").cloned().unwrap_or_default();
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(290));
    let drop_after = shared.options.lock().unwrap().drop_watches_after;
    let mut receiver = shared.events.subscribe();
    let backlog: Vec<WatchEvent> = {
        let data = shared.data.lock().unwrap();
        if since == 0 {
            data.objects
                .iter()
                .map(|(k, o)| WatchEvent {
                    rv: data.rv,
                    key: k.clone(),
                    kind: "ADDED",
                    object: o.clone(),
                })
                .collect()
        } else {
            data.log.iter().filter(|e| e.rv > since).cloned().collect()
        }
    };
    let matches = move |e: &WatchEvent| {
        e.key.resource == target.resource
            && (target.namespace.is_empty() || e.key.namespace == target.namespace)
            && labels_match(&e.object, &labels)
            && fields_match(&e.object, &fields)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |e: &WatchEvent| {
            Bytes::from(format!("{}\n", json!({"type": e.kind, "object": e.object})))
        };
        let mut last = since;
        for e in backlog.iter().filter(|e| matches(e)) {
            last = last.max(e.rv);
            if tx.send(Ok(line(e))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + drop_after.unwrap_or(timeout).min(timeout);
        loop {
            tokio::select! {
                event = receiver.recv() => match event {
                    Ok(e) if e.rv > last && matches(&e) => {
                        last = e.rv;
                        if tx.send(Ok(line(&e))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
