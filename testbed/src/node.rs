//! A node agent in place of the kubelet, on a real API server: it registers a Node, keeps it
//! Ready (status and the node Lease), and for every pod the scheduler binds to it writes what a
//! kubelet writes — pod IPs, container states and restarts, conditions with transition times,
//! events with the kubelet's reasons — as [`crate::pod`] decides from the pod's image. It
//! honours readiness gates (Ready only once every gate condition is True; it never sets them),
//! graceful deletion (a terminating pod keeps its IP, labels and readiness through its preStop
//! sleep, then its containers stop and the pod object is removed, at the latest when the grace
//! period ends), Jobs that complete, and Failed pods, which stay until the pod GC removes them.
//!
//! Pods of kubectl images run a real kubectl ([`crate::kubectl`]) when the agent has one.
//!
//! Timing per namespace: the annotation [`ANNOTATION`] holds [`NodeTiming`] as JSON.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::pod::{Behaviour, PodState, Timing, missing_probe_port, missing_secret, pod_state};
use crate::time_now;

/// The namespace annotation with the node's timing for that namespace's pods (JSON).
pub const ANNOTATION: &str = "testbed.infra-gen.dev/node";

/// How fast pods of one namespace start and fail (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeTiming {
    pub ready_after_ms: u64,
    pub once_for_ms: u64,
    pub crash_every_ms: u64,
}

impl From<NodeTiming> for Timing {
    fn from(t: NodeTiming) -> Self {
        Timing {
            ready_after: Duration::from_millis(t.ready_after_ms),
            once_for: Duration::from_millis(t.once_for_ms),
            crash_every: Duration::from_millis(t.crash_every_ms),
        }
    }
}

impl From<Timing> for NodeTiming {
    fn from(t: Timing) -> Self {
        Self {
            ready_after_ms: t.ready_after.as_millis() as u64,
            once_for_ms: t.once_for.as_millis() as u64,
            crash_every_ms: t.crash_every.as_millis() as u64,
        }
    }
}

/// How long a container takes to exit once it got SIGTERM (after its preStop hook).
const EXIT_AFTER_SIGTERM: Duration = Duration::from_millis(500);

/// A condition the agent reports: its type, status and, when not True, (reason, message).
struct Wanted {
    kind: &'static str,
    status: &'static str,
    detail: Option<(&'static str, String)>,
}

/// What the agent remembers of a pod (by UID).
struct Memo {
    /// When its containers were first started.
    born: Instant,
    /// Its namespace's timing when it started (a slower node slows only pods started later).
    timing: Timing,
    start_time: Json,
    ip: String,
    /// The status last written (conditions' times left out), to write only changes.
    written: Option<Json>,
    /// Transition time of each of the agent's conditions.
    transitions: HashMap<String, (String, Json)>,
    events: HashSet<String>,
    /// When the containers of a terminating pod exit, and with which code.
    exits_at: Option<(Instant, i64)>,
    /// A kubectl pod's run: its exit code once it ended.
    ran: Option<Arc<std::sync::Mutex<Option<i64>>>>,
}

/// The node agent.
pub struct Agent {
    client: kube::Client,
    name: String,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    secrets: Store<Secret>,
    memos: HashMap<String, Memo>,
    next_ip: u32,
    used_ips: HashSet<String>,
    kubectl: Option<crate::kubectl::Runner>,
}

fn spawn_reflector<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(%error, "watch failed; retrying");
            }
        }
    });
    reader
}

fn text<'a>(value: &'a Json, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
}

impl Agent {
    /// Registers the node `name` and starts watching the pods bound to it.
    pub async fn start(
        client: kube::Client,
        name: &str,
        kubectl: Option<crate::kubectl::Runner>,
    ) -> anyhow::Result<Self> {
        register(&client, name).await?;
        let pods = spawn_reflector(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields(&format!("spec.nodeName={name}")),
        );
        let namespaces = spawn_reflector(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        );
        let secrets = spawn_reflector(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default(),
        );
        pods.wait_until_ready().await?;
        namespaces.wait_until_ready().await?;
        secrets.wait_until_ready().await?;
        // Addresses of pods an earlier agent started stay theirs.
        let used_ips = pods
            .state()
            .iter()
            .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
            .collect();
        tokio::spawn(heartbeat(client.clone(), name.to_owned()));
        Ok(Self {
            client,
            name: name.to_owned(),
            pods,
            namespaces,
            secrets,
            memos: HashMap::new(),
            next_ip: 2,
            used_ips,
            kubectl,
        })
    }

    /// Runs until the process ends.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let pods = self.pods.state();
            let live: HashSet<String> =
                pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
            self.memos.retain(|uid, _| live.contains(uid));
            for pod in pods {
                if let Err(error) = self.step(&pod).await {
                    tracing::debug!(pod = pod.metadata.name.as_deref().unwrap_or(""), %error, "pod update failed; retried next tick");
                }
            }
        }
    }

    fn timing(&self, namespace: &str) -> Timing {
        self.namespaces
            .state()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(namespace))
            .and_then(|n| n.metadata.annotations.as_ref()?.get(ANNOTATION).cloned())
            .and_then(|a| serde_json::from_str::<NodeTiming>(&a).ok())
            .map_or(Timing::NODE, Timing::from)
    }

    fn allocate_ip(&mut self) -> String {
        loop {
            let n = self.next_ip;
            self.next_ip += 1;
            let ip = format!("10.244.{}.{}", n / 250, n % 250 + 2);
            if self.used_ips.insert(ip.clone()) {
                return ip;
            }
        }
    }

    async fn step(&mut self, pod: &Arc<Pod>) -> anyhow::Result<()> {
        let json = serde_json::to_value(pod.as_ref())?;
        let uid = text(&json, "/metadata/uid").to_owned();
        let namespace = text(&json, "/metadata/namespace").to_owned();
        if matches!(text(&json, "/status/phase"), "Succeeded" | "Failed")
            && json.pointer("/metadata/deletionTimestamp").is_none()
        {
            return Ok(());
        }
        if !self.memos.contains_key(&uid) {
            let ip = self.allocate_ip();
            let timing = self.timing(&namespace);
            self.memos.insert(
                uid.clone(),
                Memo {
                    born: Instant::now(),
                    timing,
                    start_time: time_now(),
                    ip,
                    written: None,
                    transitions: HashMap::new(),
                    events: HashSet::new(),
                    exits_at: None,
                    ran: None,
                },
            );
        }
        let spec = json.get("spec").cloned().unwrap_or_default();
        let container = text(&spec, "/containers/0/name").to_owned();
        let image = text(&spec, "/containers/0/image").to_owned();
        let timing = self.memos[&uid].timing;
        let runs_to_completion =
            text(&spec, "/restartPolicy") != "Always" && !text(&spec, "/restartPolicy").is_empty();
        let age = self.memos[&uid].born.elapsed();
        let secrets = self.secrets.state();
        let mut state = match missing_secret(&namespace, &spec, |secret| {
            secrets
                .iter()
                .find(|s| {
                    s.metadata.namespace.as_deref() == Some(namespace.as_str())
                        && s.metadata.name.as_deref() == Some(secret)
                })
                .map(|s| s.data.iter().flatten().map(|(k, _)| k.clone()).collect())
        }) {
            Some(missing) => PodState::config_error(&container, &missing),
            None => pod_state(
                Behaviour::of(&image),
                &image,
                &container,
                age,
                timing,
                runs_to_completion,
            ),
        };
        if let Some(error) = missing_probe_port(&spec) {
            state = state.probe_error(&container, error);
        }
        if let Some(runner) = &self.kubectl
            && crate::kubectl::is_kubectl(&image)
            && json.pointer("/metadata/deletionTimestamp").is_none()
        {
            let memo = self
                .memos
                .get_mut(&uid)
                .ok_or_else(|| anyhow::anyhow!("no memo"))?;
            let ran = memo.ran.get_or_insert_with(|| {
                let ran = Arc::new(std::sync::Mutex::new(None));
                let (runner, pod, done) = (runner.clone(), json.clone(), ran.clone());
                tokio::spawn(async move {
                    let code = runner.run(&pod).await;
                    if let Ok(mut slot) = done.lock() {
                        *slot = Some(code);
                    }
                });
                ran
            });
            let code = ran.lock().ok().and_then(|c| *c);
            state = match code {
                Some(code) => PodState::exited(code),
                None => pod_state(Behaviour::NeverReady, &image, &container, age, timing, true),
            };
        }

        if json.pointer("/metadata/deletionTimestamp").is_some() {
            return self.terminate(&json, &uid, state).await;
        }
        self.write(&json, &uid, &state).await?;
        for event in start_events(&state, &image, &container) {
            self.event(&json, &uid, event).await;
        }
        if let Some((reason, message)) = state.event.clone() {
            self.event(&json, &uid, ("Warning", reason, message)).await;
        }
        Ok(())
    }

    /// A pod being deleted: its containers run their preStop sleep, get SIGTERM and exit
    /// (or are killed when the grace period ends); then the pod object goes.
    async fn terminate(
        &mut self,
        pod: &Json,
        uid: &str,
        mut state: PodState,
    ) -> anyhow::Result<()> {
        let namespace = text(pod, "/metadata/namespace").to_owned();
        let name = text(pod, "/metadata/name").to_owned();
        let started = state.state.get("running").is_some();
        let memo = self
            .memos
            .get_mut(uid)
            .ok_or_else(|| anyhow::anyhow!("no memo"))?;
        let (exits_at, code) = *memo.exits_at.get_or_insert_with(|| {
            let grace = pod
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Json::as_u64)
                .unwrap_or(30);
            let pre_stop = pod
                .pointer("/spec/containers/0/lifecycle/preStop/sleep/seconds")
                .and_then(Json::as_u64)
                .unwrap_or(0);
            let wanted = Duration::from_secs(pre_stop) + EXIT_AFTER_SIGTERM;
            let limit = Duration::from_secs(grace);
            if !started {
                (Instant::now(), 0)
            } else if wanted <= limit {
                (Instant::now() + wanted, 0)
            } else {
                (Instant::now() + limit, 137)
            }
        });
        if started && !memo.events.contains("Killing") {
            let container = text(pod, "/spec/containers/0/name").to_owned();
            self.event(
                pod,
                uid,
                (
                    "Normal",
                    "Killing",
                    format!("Stopping container {container}"),
                ),
            )
            .await;
        }
        if Instant::now() < exits_at {
            // Until its containers exit the pod serves as before (readiness probes pass).
            return self.write(pod, uid, &state).await;
        }
        state.phase = if code == 0 { "Succeeded" } else { "Failed" };
        state.ready = false;
        state.state = json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }, "finishedAt": time_now()}});
        state.condition = Some(("Ready", "PodCompleted", String::new()));
        self.write(pod, uid, &state).await?;
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .delete(&name, &params)
            .await?;
        Ok(())
    }

    /// Writes the pod's status when it changed.
    async fn write(&mut self, pod: &Json, uid: &str, state: &PodState) -> anyhow::Result<()> {
        let namespace = text(pod, "/metadata/namespace").to_owned();
        let name = text(pod, "/metadata/name").to_owned();
        let memo = self
            .memos
            .get_mut(uid)
            .ok_or_else(|| anyhow::anyhow!("no memo"))?;
        // Ready needs every readiness gate's condition True too (set by their controllers).
        let gates: Vec<String> = pod
            .pointer("/spec/readinessGates")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .map(|g| text(g, "/conditionType").to_owned())
            .collect();
        let condition_of = |kind: &str| {
            pod.pointer("/status/conditions")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .find(|c| text(c, "/type") == kind)
                .map(|c| text(c, "/status").to_owned())
        };
        let mut ready = state.ready;
        let mut ready_reason = state.condition.clone();
        if state.ready
            && let Some(gate) = gates
                .iter()
                .find(|g| condition_of(g).as_deref() != Some("True"))
        {
            ready = false;
            let message = match condition_of(gate) {
                None => format!(
                    "corresponding condition of pod readiness gate \"{gate}\" does not exist."
                ),
                Some(status) => format!(
                    "the status of pod readiness gate \"{gate}\" is not \"True\", but {status}"
                ),
            };
            ready_reason = Some(("Ready", "ReadinessGatesNotReady", message));
        }
        let status_of = |b: bool| if b { "True" } else { "False" };
        let detail = |condition: &Option<(&'static str, &'static str, String)>| {
            condition
                .as_ref()
                .map(|(_, reason, message)| (*reason, message.clone()))
                .unwrap_or(("ContainersNotReady", String::new()))
        };
        let wanted: Vec<Wanted> = match &state.condition {
            Some(("PodScheduled", reason, message)) => vec![Wanted {
                kind: "PodScheduled",
                status: "False",
                detail: Some((reason, message.clone())),
            }],
            _ => vec![
                Wanted {
                    kind: "PodReadyToStartContainers",
                    status: "True",
                    detail: None,
                },
                Wanted {
                    kind: "Initialized",
                    status: "True",
                    detail: None,
                },
                Wanted {
                    kind: "ContainersReady",
                    status: status_of(state.ready),
                    detail: (!state.ready).then(|| detail(&state.condition)),
                },
                Wanted {
                    kind: "Ready",
                    status: status_of(ready),
                    detail: (!ready).then(|| detail(&ready_reason)),
                },
            ],
        };
        let mut conditions = Vec::new();
        for Wanted {
            kind,
            status,
            detail,
        } in wanted
        {
            let since = match memo.transitions.get(kind) {
                Some((was, at)) if was == status => at.clone(),
                _ => {
                    let now = time_now();
                    memo.transitions
                        .insert(kind.to_owned(), (status.to_owned(), now.clone()));
                    now
                }
            };
            let mut condition = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
            if let Some((reason, message)) = detail {
                condition["reason"] = json!(reason);
                if !message.is_empty() {
                    condition["message"] = json!(message);
                }
            }
            conditions.push(condition);
        }
        let containers: Vec<Json> = pod
            .pointer("/spec/containers")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                let mut status = json!({
                    "name": text(c, "/name"),
                    "image": text(c, "/image"),
                    "imageID": format!("testbed://{}", text(c, "/image")),
                    "containerID": format!("testbed://{uid}/{}", text(c, "/name")),
                    "ready": state.ready,
                    "started": state.state.get("running").is_some(),
                    "restartCount": state.restarts,
                    "state": if state.state.is_null() { json!({"waiting": {"reason": "ContainerCreating"}}) } else { state.state.clone() },
                });
                if let Some(last) = &state.last {
                    status["lastState"] = last.clone();
                }
                status
            })
            .collect();
        let status = json!({
            "phase": state.phase,
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": memo.ip,
            "podIPs": [{"ip": memo.ip}],
            "startTime": memo.start_time,
            "conditions": conditions,
            "containerStatuses": containers,
        });
        let comparable = without_times(&status);
        if memo.written.as_ref() == Some(&comparable) {
            return Ok(());
        }
        Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(&json!({"status": status})),
            )
            .await?;
        memo.written = Some(comparable);
        Ok(())
    }

    /// Records an event on the pod, once per reason, as the kubelet's recorder would.
    async fn event(
        &mut self,
        pod: &Json,
        uid: &str,
        (kind, reason, message): (&str, &str, String),
    ) {
        let Some(memo) = self.memos.get_mut(uid) else {
            return;
        };
        if !memo.events.insert(reason.to_owned()) {
            return;
        }
        let namespace = text(pod, "/metadata/namespace").to_owned();
        let pod_name = text(pod, "/metadata/name");
        let container = text(pod, "/spec/containers/0/name");
        let now = time_now();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let event: k8s_openapi::api::core::v1::Event = match serde_json::from_value(json!({
            "metadata": {"name": format!("{pod_name}.{nanos:x}"), "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": pod_name, "uid": uid, "fieldPath": format!("spec.containers{{{container}}}")},
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        })) {
            Ok(event) => event,
            Err(_) => return,
        };
        let _ =
            Api::<k8s_openapi::api::core::v1::Event>::namespaced(self.client.clone(), &namespace)
                .create(&PostParams::default(), &event)
                .await;
    }
}

/// The kubelet's events of a container that started: pulled, created, started.
fn start_events(
    state: &PodState,
    image: &str,
    container: &str,
) -> Vec<(&'static str, &'static str, String)> {
    if state.state.get("running").is_none() && state.restarts == 0 {
        return Vec::new();
    }
    vec![
        (
            "Normal",
            "Pulled",
            format!("Container image {image:?} already present on machine"),
        ),
        (
            "Normal",
            "Created",
            format!("Created container: {container}"),
        ),
        (
            "Normal",
            "Started",
            format!("Started container {container}"),
        ),
    ]
}

/// A status with the times that change on every write left out.
fn without_times(status: &Json) -> Json {
    let mut status = status.clone();
    for list in ["conditions", "containerStatuses"] {
        if let Some(items) = status.get_mut(list).and_then(Json::as_array_mut) {
            for item in items {
                if let Some(o) = item.as_object_mut() {
                    o.remove("lastTransitionTime");
                }
                if let Some(running) = item
                    .pointer_mut("/state/running")
                    .and_then(Json::as_object_mut)
                {
                    running.remove("startedAt");
                }
                if let Some(done) = item
                    .pointer_mut("/state/terminated")
                    .and_then(Json::as_object_mut)
                {
                    done.remove("finishedAt");
                }
            }
        }
    }
    status
}

/// Creates (or takes over) the Node and reports it Ready.
async fn register(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "testbed",
        }},
    }))?;
    nodes
        .patch(
            name,
            &PatchParams::apply("testbed").force(),
            &Patch::Apply(&node),
        )
        .await?;
    report_ready(&nodes, name).await
}

async fn report_ready(nodes: &Api<Node>, name: &str) -> anyhow::Result<()> {
    let now = time_now();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| json!({"type": kind, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now});
    let capacity =
        json!({"cpu": "64", "memory": "256Gi", "pods": "5000", "ephemeral-storage": "500Gi"});
    let status = json!({"status": {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "the testbed node agent is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "testbed", "systemUUID": "testbed", "bootID": "testbed",
            "kernelVersion": "testbed", "osImage": "testbed", "containerRuntimeVersion": "testbed://1",
            "kubeletVersion": "v1.36.3", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&status))
        .await?;
    Ok(())
}

/// Renews the node's Lease every 10 s and its Ready condition every 30 s, as the kubelet does.
async fn heartbeat(client: kube::Client, name: String) {
    let leases = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
    let nodes = Api::<Node>::all(client);
    let mut ticks = 0u32;
    loop {
        let lease: Result<Lease, _> = serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": micro_now()},
        }));
        if let Ok(lease) = lease
            && let Err(error) = leases
                .patch(
                    &name,
                    &PatchParams::apply("testbed").force(),
                    &Patch::Apply(&lease),
                )
                .await
        {
            tracing::warn!(%error, "could not renew the node lease");
        }
        if ticks.is_multiple_of(3)
            && let Err(error) = report_ready(&nodes, &name).await
        {
            tracing::warn!(%error, "could not report the node ready");
        }
        ticks = ticks.wrapping_add(1);
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

fn micro_now() -> Json {
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ))
    .unwrap_or(Json::Null)
}
