//! An in-process test double of the Kubernetes API server (DESIGN §8), enough for infra-gen:
//! objects by group/version/resource/namespace/name; server-side apply (field manager,
//! removal of fields a manager stopped applying, dry-run); create/replace with
//! resourceVersion preconditions; merge patches; get/list/watch with label and field
//! selectors; the status subresource; cascading namespace deletion; a simulated controller
//! that makes Deployments available after a delay, never, or with crashing/unpullable pods;
//! fault injection (error statuses, 409 conflicts, dropped watches); an optional bearer-token
//! check with expiring tokens; and a log of every request.
//!
//! It serves plain HTTP on 127.0.0.1 and writes a kubeconfig pointing at itself, so tests run
//! the real `infra-gen` binary against it.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};
use tokio::sync::broadcast;

/// A resource type the double serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

pub const RESOURCES: [Resource; 13] = [
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
struct WatchEvent {
    rv: u64,
    key: Key,
    kind: &'static str,
    object: Json,
}

/// How the simulated controller treats a Deployment, decided by its first container image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Ready,
    NeverReady,
    Crash,
    PullFail,
    FargateUnschedulable,
}

fn behaviour(image: &str) -> Behaviour {
    if image.contains("never-ready") {
        Behaviour::NeverReady
    } else if image.contains("crash") {
        Behaviour::Crash
    } else if image.contains("pullfail") {
        Behaviour::PullFail
    } else if image.contains("no-fargate-profile") {
        Behaviour::FargateUnschedulable
    } else {
        Behaviour::Ready
    }
}

/// A request as the double saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
}

impl Request {
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

#[derive(Debug, Clone)]
struct Fault {
    method: String,
    path_contains: String,
    status: u16,
    remaining: usize,
}

#[derive(Default)]
struct Data {
    rv: u64,
    objects: BTreeMap<Key, Json>,
    managed: HashMap<Key, HashMap<String, BTreeSet<Vec<String>>>>,
    log: Vec<WatchEvent>,
    requests: Vec<Request>,
    faults: Vec<Fault>,
    template_since: HashMap<Key, (String, Instant)>,
    events_made: BTreeSet<String>,
}

/// Settings of the double.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a Deployment's new pods take to become ready.
    pub ready_after: Duration,
    /// Close every watch after this long (the client must re-establish it).
    pub drop_watches_after: Option<Duration>,
    /// Accept only bearer tokens `test-token-<unix seconds>` younger than this.
    pub token_ttl: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ready_after: Duration::from_millis(300),
            drop_watches_after: None,
            token_ttl: None,
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

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn status_error(code: u16, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message.into(), "reason": reason, "code": code});
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response()
}

fn leaves(value: &Json, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match value {
        Json::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(k.clone());
                leaves(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

fn remove_path(value: &mut Json, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            if let Some(map) = value.as_object_mut() {
                map.remove(last);
            }
        }
        [first, rest @ ..] => {
            if let Some(child) = value.get_mut(first) {
                remove_path(child, rest);
                if child.as_object().is_some_and(|m| m.is_empty())
                    && let Some(map) = value.as_object_mut()
                {
                    map.remove(first);
                }
            }
        }
    }
}

/// Objects merge key by key; everything else (lists included) is replaced.
fn merge(target: &mut Json, patch: &Json) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Json::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
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
    let meta = object["metadata"].as_object_mut().expect("metadata");
    meta.insert("name".into(), Json::String(key.name.clone()));
    if key.resource.namespaced {
        meta.insert("namespace".into(), Json::String(key.namespace.clone()));
    }
    meta.entry("uid").or_insert_with(|| {
        Json::String(format!(
            "uid-{}-{}",
            key.name,
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ))
    });
    meta.entry("creationTimestamp")
        .or_insert_with(|| Json::String(now_rfc3339()));
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
        tokio::spawn(controller(shared.clone()));
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

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.data.lock().unwrap().requests.clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.data.lock().unwrap().requests.clear();
    }

    /// Makes the next `times` requests with `method` whose path contains `path_contains`
    /// fail with `status`.
    pub fn fail(&self, method: &str, path_contains: &str, status: u16, times: usize) {
        self.shared.data.lock().unwrap().faults.push(Fault {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            status,
            remaining: times,
        });
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

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = query_map(&uri);
    {
        let mut data = shared.data.lock().unwrap();
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        if !watch {
            data.requests.push(Request {
                method: method.to_string(),
                path: path.clone(),
                query: uri.query().unwrap_or_default().to_owned(),
            });
        }
        if let Some(fault) = data.faults.iter_mut().find(|f| {
            f.remaining > 0 && f.method == method.as_str() && path.contains(&f.path_contains)
        }) {
            fault.remaining -= 1;
            let status = fault.status;
            let reason = if status == 409 {
                "Conflict"
            } else {
                "InternalError"
            };
            return status_error(status, reason, format!("injected fault {status}"));
        }
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
    let Some(target) = parse_path(&path) else {
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
        (Method::POST, None) => create(&shared, &target, &body),
        (Method::PUT, Some(name)) => replace(&shared, &target, name, &body),
        (Method::PATCH, Some(name)) => patch(&shared, &target, name, &query, &content_type, &body),
        (Method::DELETE, Some(name)) => delete(&shared, &target, name),
        _ => status_error(405, "MethodNotAllowed", "method not allowed"),
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

fn parse_body(body: &Bytes) -> Result<Json, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(status_error(
            400,
            "BadRequest",
            format!("cannot read the body: {e}"),
        ))
    })
}

fn create(shared: &Shared, target: &Target, body: &Bytes) -> Response {
    let mut object = match parse_body(body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned();
    let key = Key {
        resource: target.resource,
        namespace: target.namespace.clone(),
        name: name.clone(),
    };
    let mut data = shared.data.lock().unwrap();
    if target.resource.namespaced && !data.namespace_exists(&target.namespace) {
        return status_error(
            404,
            "NotFound",
            format!("namespaces \"{}\" not found", target.namespace),
        );
    }
    if data.objects.contains_key(&key) {
        return status_error(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", target.resource.plural),
        );
    }
    new_metadata(&mut object, &key);
    let stored = data.store(key, object, &shared.events);
    (StatusCode::CREATED, axum::Json(stored)).into_response()
}

fn replace(shared: &Shared, target: &Target, name: &str, body: &Bytes) -> Response {
    let mut object = match parse_body(body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let key = Key {
        resource: target.resource,
        namespace: target.namespace.clone(),
        name: name.to_owned(),
    };
    let mut data = shared.data.lock().unwrap();
    let Some(current) = data.objects.get(&key).cloned() else {
        return status_error(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", target.resource.plural),
        );
    };
    let wanted_rv = object
        .pointer("/metadata/resourceVersion")
        .and_then(Json::as_str)
        .map(str::to_owned);
    let current_rv = current
        .pointer("/metadata/resourceVersion")
        .and_then(Json::as_str)
        .map(str::to_owned);
    if wanted_rv.is_some() && wanted_rv != current_rv {
        return status_error(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                target.resource.plural
            ),
        );
    }
    for field in ["uid", "creationTimestamp", "generation"] {
        if let Some(v) = current.pointer(&format!("/metadata/{field}")) {
            object["metadata"][field] = v.clone();
        }
    }
    if target.subresource.as_deref() == Some("status") {
        let mut updated = current.clone();
        updated["status"] = object.get("status").cloned().unwrap_or(Json::Null);
        object = updated;
    } else if let Some(status) = current.get("status") {
        object["status"] = status.clone();
    }
    bump_generation(Some(&current), &mut object);
    let stored = data.store(key, object, &shared.events);
    axum::Json(stored).into_response()
}

fn patch(
    shared: &Shared,
    target: &Target,
    name: &str,
    query: &HashMap<String, String>,
    content_type: &str,
    body: &Bytes,
) -> Response {
    let patch = match parse_body(body) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let key = Key {
        resource: target.resource,
        namespace: target.namespace.clone(),
        name: name.to_owned(),
    };
    let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
    let mut data = shared.data.lock().unwrap();
    let current = data.objects.get(&key).cloned();
    let apply = content_type.starts_with("application/apply-patch");
    if target.resource.namespaced && !data.namespace_exists(&target.namespace) {
        return status_error(
            404,
            "NotFound",
            format!("namespaces \"{}\" not found", target.namespace),
        );
    }
    let mut object = match (&current, apply) {
        (Some(c), _) => c.clone(),
        (None, true) => json!({"metadata": {}}),
        (None, false) => {
            return status_error(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", target.resource.plural),
            );
        }
    };
    let status_only = target.subresource.as_deref() == Some("status");
    let mut patch = patch;
    if !status_only {
        if let Some(map) = patch.as_object_mut() {
            map.remove("status");
        }
    } else {
        patch = json!({"status": patch.get("status").cloned().unwrap_or(Json::Null)});
    }
    if apply {
        let manager = query.get("fieldManager").cloned().unwrap_or_default();
        if manager.is_empty() {
            return status_error(
                422,
                "Invalid",
                "fieldManager is required for apply requests",
            );
        }
        let mut owned = BTreeSet::new();
        let mut relevant = patch.clone();
        if let Some(meta) = relevant.get_mut("metadata").and_then(Json::as_object_mut) {
            for key in [
                "name",
                "namespace",
                "resourceVersion",
                "uid",
                "creationTimestamp",
                "generation",
                "managedFields",
            ] {
                meta.remove(key);
            }
        }
        for key in ["apiVersion", "kind"] {
            if let Some(map) = relevant.as_object_mut() {
                map.remove(key);
            }
        }
        leaves(&relevant, &mut Vec::new(), &mut owned);
        let previous = data
            .managed
            .get(&key)
            .and_then(|m| m.get(&manager))
            .cloned()
            .unwrap_or_default();
        for gone in previous.difference(&owned) {
            remove_path(&mut object, gone);
        }
        merge(&mut object, &relevant);
        if !dry_run {
            data.managed
                .entry(key.clone())
                .or_default()
                .insert(manager.clone(), owned);
            let managers: Vec<Json> = data.managed[&key]
                .keys()
                .map(|m| json!({"manager": m, "operation": "Apply", "apiVersion": target.resource.api_version(), "fieldsType": "FieldsV1", "fieldsV1": {}}))
                .collect();
            object["metadata"]["managedFields"] = Json::Array(managers);
        }
    } else {
        merge(&mut object, &patch);
    }
    if current.is_none() {
        new_metadata(&mut object, &key);
    }
    bump_generation(current.as_ref(), &mut object);
    if dry_run {
        object["apiVersion"] = Json::String(target.resource.api_version());
        object["kind"] = Json::String(target.resource.kind.to_owned());
        return axum::Json(object).into_response();
    }
    let stored = data.store(key, object, &shared.events);
    axum::Json(stored).into_response()
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

/// The simulated controller: Deployment status and pods.
async fn controller(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ready_after = shared.options.lock().unwrap().ready_after;
        let mut data = shared.data.lock().unwrap();
        let deployments: Vec<(Key, Json)> = data
            .objects
            .iter()
            .filter(|(k, _)| k.resource.kind == "Deployment")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, deployment) in deployments {
            reconcile(&mut data, &shared.events, &key, &deployment, ready_after);
        }
        // Pods of Deployments that are gone go too.
        let orphans: Vec<Key> = data
            .objects
            .iter()
            .filter(|(k, o)| {
                k.resource.kind == "Pod"
                    && o.pointer("/metadata/annotations/double~1owner")
                        .and_then(Json::as_str)
                        .is_some_and(|owner| {
                            !data.objects.keys().any(|d| {
                                d.resource.kind == "Deployment"
                                    && d.namespace == k.namespace
                                    && d.name == owner
                            })
                        })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in orphans {
            data.remove(&k, &shared.events);
        }
    }
}

fn reconcile(
    data: &mut Data,
    events: &broadcast::Sender<WatchEvent>,
    key: &Key,
    deployment: &Json,
    ready_after: Duration,
) {
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Json::as_i64)
        .unwrap_or(1)
        .max(0);
    let template = deployment
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Json::Null);
    let template_id: String = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        template.to_string().hash(&mut h);
        format!("{:08x}", h.finish() as u32)
    };
    let since = match data.template_since.get(key) {
        Some((id, at)) if *id == template_id => *at,
        _ => {
            let now = Instant::now();
            data.template_since
                .insert(key.clone(), (template_id.clone(), now));
            now
        }
    };
    let image = template
        .pointer("/spec/containers/0/image")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned();
    let behaviour = behaviour(&image);
    let labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    let pod_resource = Resource::by_kind("Pod");
    let existing: Vec<Key> = data
        .objects
        .iter()
        .filter(|(k, o)| {
            k.resource == pod_resource
                && k.namespace == key.namespace
                && o.pointer("/metadata/annotations/double~1owner")
                    .and_then(Json::as_str)
                    == Some(key.name.as_str())
        })
        .map(|(k, _)| k.clone())
        .collect();
    let wanted: Vec<String> = (0..replicas)
        .map(|i| format!("{}-{template_id}-{i}", key.name))
        .collect();
    for k in &existing {
        if !wanted.contains(&k.name) {
            data.remove(k, events);
        }
    }
    let elapsed = since.elapsed();
    let ready = behaviour == Behaviour::Ready && elapsed >= ready_after;
    for pod_name in &wanted {
        let (phase, state, reason, message, restarts) = match behaviour {
            Behaviour::Ready if ready => (
                "Running",
                json!({"running": {"startedAt": now_rfc3339()}}),
                "",
                "",
                0,
            ),
            Behaviour::Ready | Behaviour::NeverReady => (
                "Running",
                json!({"running": {"startedAt": now_rfc3339()}}),
                "ContainersNotReady",
                "containers with unready status: [app]",
                0,
            ),
            Behaviour::Crash => (
                "Running",
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}}),
                "",
                "",
                3,
            ),
            Behaviour::PullFail => (
                "Pending",
                json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\"")}}),
                "",
                "",
                0,
            ),
            Behaviour::FargateUnschedulable => (
                "Pending",
                Json::Null,
                "Unschedulable",
                "Pod not supported on Fargate: no Fargate profile selects namespace and labels",
                0,
            ),
        };
        let mut conditions = vec![
            json!({"type": "Ready", "status": if ready { "True" } else { "False" }, "reason": reason, "message": message}),
        ];
        if behaviour == Behaviour::FargateUnschedulable {
            conditions = vec![
                json!({"type": "PodScheduled", "status": "False", "reason": reason, "message": message}),
            ];
        }
        let mut statuses = Vec::new();
        if !state.is_null() {
            let mut status = json!({"name": "app", "ready": ready, "restartCount": restarts, "image": image, "state": state});
            if behaviour == Behaviour::Crash {
                status["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
            }
            statuses.push(status);
        }
        let pod = json!({
            "metadata": {"name": pod_name, "namespace": key.namespace, "labels": labels, "annotations": {"double/owner": key.name}},
            "spec": template.get("spec").cloned().unwrap_or(json!({})),
            "status": {"phase": phase, "conditions": conditions, "containerStatuses": statuses},
        });
        let pod_key = Key {
            resource: pod_resource,
            namespace: key.namespace.clone(),
            name: pod_name.clone(),
        };
        let unchanged = data.objects.get(&pod_key).is_some_and(|p| {
            p.get("status") == pod.get("status")
                && p.pointer("/metadata/labels") == pod.pointer("/metadata/labels")
        });
        if !unchanged {
            let mut pod = pod;
            new_metadata(&mut pod, &pod_key);
            data.store(pod_key, pod, events);
        }
        if behaviour != Behaviour::Ready
            && behaviour != Behaviour::NeverReady
            && data.events_made.insert(pod_name.clone())
        {
            let event_key = Key {
                resource: Resource::by_kind("Event"),
                namespace: key.namespace.clone(),
                name: format!("{pod_name}.event"),
            };
            let (event_reason, event_message) = match behaviour {
                Behaviour::Crash => (
                    "BackOff",
                    "Back-off restarting failed container app".to_owned(),
                ),
                Behaviour::PullFail => (
                    "Failed",
                    format!("Failed to pull image \"{image}\": not found"),
                ),
                _ => (
                    "FailedScheduling",
                    "Pod not supported on Fargate".to_owned(),
                ),
            };
            let mut event = json!({
                "metadata": {"name": event_key.name},
                "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": key.namespace},
                "reason": event_reason,
                "message": event_message,
                "type": "Warning",
                "lastTimestamp": now_rfc3339(),
            });
            new_metadata(&mut event, &event_key);
            data.store(event_key, event, events);
        }
    }
    let available = if ready { replicas } else { 0 };
    let generation = deployment
        .pointer("/metadata/generation")
        .and_then(Json::as_i64)
        .unwrap_or(1);
    let status = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": available,
        "availableReplicas": available,
        "unavailableReplicas": replicas - available,
        "conditions": [{"type": "Available", "status": if available == replicas { "True" } else { "False" }}],
    });
    if deployment.get("status") != Some(&status) {
        let mut updated = deployment.clone();
        updated["status"] = status;
        data.store(key.clone(), updated, events);
    }
}
