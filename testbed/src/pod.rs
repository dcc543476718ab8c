//! What a container does on our test nodes, decided by its image name, and what the kubelet
//! reports about it: the one model behind the API-server double's kubelet and the node agent
//! of the real control plane, so both tell infra-gen the same story.
//!
//! | image contains | the pod |
//! | --- | --- |
//! | `never-ready` | runs, never ready |
//! | `crash-once` | crashes once (restart 1, CrashLoopBackOff), then runs and gets ready |
//! | `crash` | crash-loops, its restart count growing |
//! | `exit-1` | exits 1: Failed under `restartPolicy: Never`, a crash loop otherwise |
//! | `pull-once` | fails one image pull (ErrImagePull), then gets ready |
//! | `pullfail` | never pulls (ImagePullBackOff) |
//! | `no-fargate-profile` | stays Pending: no Fargate profile selects it |
//! | anything else | ready after the node's start-up time; a Job's pod completes |

use std::time::Duration;

use serde_json::{Value as Json, json};

/// How a container behaves, from its image name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Ready,
    NeverReady,
    Crash,
    CrashOnce,
    ExitOne,
    PullFail,
    PullOnce,
    FargateUnschedulable,
}

impl Behaviour {
    /// The behaviour an image name asks for.
    pub fn of(image: &str) -> Self {
        if image.contains("never-ready") {
            Self::NeverReady
        } else if image.contains("crash-once") {
            Self::CrashOnce
        } else if image.contains("crash") {
            Self::Crash
        } else if image.contains("exit-1") {
            Self::ExitOne
        } else if image.contains("pull-once") {
            Self::PullOnce
        } else if image.contains("pullfail") {
            Self::PullFail
        } else if image.contains("no-fargate-profile") {
            Self::FargateUnschedulable
        } else {
            Self::Ready
        }
    }
}

/// What a container of `image` wrote, as a test reads it back through `pods/log`
/// (`previous`: the instance before its last restart).
pub fn log_lines(behaviour: Behaviour, image: &str, previous: bool) -> Vec<String> {
    let mut lines = vec![
        format!("starting {image}"),
        "reading configuration".to_owned(),
    ];
    match behaviour {
        Behaviour::Crash | Behaviour::ExitOne | Behaviour::CrashOnce if previous => {
            lines.push("error: cannot reach the database: connection refused".into());
            lines.push("exiting with code 1".into());
        }
        Behaviour::NeverReady => {
            lines.push("waiting for the database before reporting ready".into())
        }
        _ => lines.push("listening on :8080".into()),
    }
    lines
}

/// How fast things happen on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// From the container's start to its readiness probe passing.
    pub ready_after: Duration,
    /// How long the `-once` images fail before they recover.
    pub once_for: Duration,
    /// Time between the restarts of a crash-looping container.
    pub crash_every: Duration,
}

impl Timing {
    /// The double's: everything compressed, a test takes seconds.
    pub const FAST: Self = Self {
        ready_after: Duration::from_millis(300),
        once_for: Duration::from_millis(700),
        crash_every: Duration::from_millis(350),
    };

    /// The node agent's: a kubelet's first crash back-off is 10 s, probes run every few
    /// seconds; the start-up stays short so a suite of many deploys finishes.
    pub const NODE: Self = Self {
        ready_after: Duration::from_secs(1),
        once_for: Duration::from_secs(3),
        crash_every: Duration::from_secs(10),
    };
}

/// What the kubelet reports for a pod at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct PodState {
    pub phase: &'static str,
    /// Every container is ready (readiness gates not counted).
    pub ready: bool,
    /// The container's `state`, or null before it was created.
    pub state: Json,
    pub last: Option<Json>,
    pub restarts: i64,
    /// A condition that is False: (type, reason, message).
    pub condition: Option<(&'static str, &'static str, String)>,
    /// The newest event the kubelet records: (reason, message).
    pub event: Option<(&'static str, String)>,
}

impl PodState {
    /// The container failed to start because of its configuration (a missing Secret).
    pub fn config_error(container: &str, message: &str) -> Self {
        Self {
            phase: "Pending",
            ready: false,
            state: json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}}),
            last: None,
            restarts: 0,
            condition: Some(not_ready(container)),
            event: Some(("Failed", format!("Error: {message}"))),
        }
    }

    /// A Job's pod whose containers ran and exited with `code`.
    pub fn exited(code: i64) -> Self {
        Self {
            phase: if code == 0 { "Succeeded" } else { "Failed" },
            ready: false,
            state: json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}}),
            last: None,
            restarts: 0,
            condition: Some(("Ready", "PodCompleted", String::new())),
            event: None,
        }
    }

    /// A running container whose readiness probe errors (it names a port the container
    /// does not declare): never ready, as the kubelet's prober reports it.
    pub fn probe_error(mut self, container: &str, error: String) -> Self {
        if self.phase == "Running" {
            self.ready = false;
            self.condition = Some(not_ready(container));
            self.event = Some(("Unhealthy", error));
        }
        self
    }
}

fn not_ready(container: &str) -> (&'static str, &'static str, String) {
    (
        "Ready",
        "ContainersNotReady",
        format!("containers with unready status: [{container}]"),
    )
}

/// The state of a pod `age` after its containers were first started. `runs_to_completion`:
/// a Job's pod (`restartPolicy` other than `Always`), which ends instead of serving.
pub fn pod_state(
    behaviour: Behaviour,
    image: &str,
    container: &str,
    age: Duration,
    timing: Timing,
    runs_to_completion: bool,
) -> PodState {
    let running = json!({"running": {"startedAt": crate::time_now()}});
    let base = |ready: bool, restarts: i64| PodState {
        phase: "Running",
        ready,
        state: running.clone(),
        last: None,
        restarts,
        condition: if ready {
            None
        } else {
            Some(not_ready(container))
        },
        event: None,
    };
    let crashed = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
    let crashing = |restarts: i64| PodState {
        phase: "Running",
        ready: false,
        state: json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off {}s restarting failed container={container}", timing.crash_every.as_secs().max(10))}}),
        last: Some(crashed.clone()),
        restarts,
        condition: Some(not_ready(container)),
        event: Some((
            "BackOff",
            format!("Back-off restarting failed container {container}"),
        )),
    };
    let terminated = |code: i64| PodState {
        phase: if code == 0 { "Succeeded" } else { "Failed" },
        ready: false,
        state: json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}}),
        last: None,
        restarts: 0,
        condition: Some(("Ready", "PodCompleted", String::new())),
        event: None,
    };
    let restarts_by =
        |age: Duration| 1 + (age.as_millis() / timing.crash_every.as_millis().max(1)) as i64;
    match behaviour {
        Behaviour::Ready if runs_to_completion && age >= timing.ready_after => terminated(0),
        Behaviour::Ready => base(age >= timing.ready_after, 0),
        Behaviour::NeverReady => base(false, 0),
        Behaviour::ExitOne if runs_to_completion => terminated(1),
        Behaviour::Crash | Behaviour::ExitOne => crashing(restarts_by(age).min(30)),
        Behaviour::CrashOnce if age < timing.once_for => crashing(1),
        Behaviour::CrashOnce => {
            let mut state = base(age >= timing.once_for + timing.ready_after, 1);
            state.last = Some(crashed);
            state
        }
        Behaviour::PullOnce if age < timing.once_for => PodState {
            phase: "Pending",
            ready: false,
            state: json!({"waiting": {"reason": "ErrImagePull", "message": format!("failed to pull and unpack image {image:?}: i/o timeout")}}),
            last: None,
            restarts: 0,
            condition: Some(not_ready(container)),
            event: Some((
                "Failed",
                format!("Failed to pull image {image:?}: i/o timeout"),
            )),
        },
        Behaviour::PullOnce => base(age >= timing.once_for + timing.ready_after, 0),
        Behaviour::PullFail => PodState {
            phase: "Pending",
            ready: false,
            state: json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image {image:?}")}}),
            last: None,
            restarts: 0,
            condition: Some(not_ready(container)),
            event: Some((
                "Failed",
                format!("Failed to pull image {image:?}: not found"),
            )),
        },
        Behaviour::FargateUnschedulable => PodState {
            phase: "Pending",
            ready: false,
            state: Json::Null,
            last: None,
            restarts: 0,
            condition: Some((
                "PodScheduled",
                "Unschedulable",
                "Pod not supported on Fargate: no Fargate profile selects namespace and labels"
                    .to_owned(),
            )),
            event: Some((
                "FailedScheduling",
                "Pod not supported on Fargate".to_owned(),
            )),
        },
    }
}

/// A probe that names a port its container does not declare, as the kubelet's prober
/// (v1.36) reports it: the port name is tried as a number and the event carries strconv's
/// error, e.g. `Readiness probe errored and resulted in unknown state: strconv.Atoi:
/// parsing "health": invalid syntax`.
pub fn missing_probe_port(spec: &Json) -> Option<String> {
    let containers = spec.get("containers").and_then(Json::as_array)?;
    for container in containers {
        let declared: Vec<&str> = container
            .get("ports")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("name").and_then(Json::as_str))
            .collect();
        for (probe, label) in [
            ("readinessProbe", "Readiness"),
            ("livenessProbe", "Liveness"),
        ] {
            for handler in ["httpGet", "tcpSocket"] {
                if let Some(port) = container
                    .pointer(&format!("/{probe}/{handler}/port"))
                    .and_then(Json::as_str)
                    && !declared.contains(&port)
                    && port.parse::<u16>().is_err()
                {
                    return Some(format!(
                        "{label} probe errored and resulted in unknown state: strconv.Atoi: parsing {port:?}: invalid syntax"
                    ));
                }
            }
        }
    }
    None
}

/// The first Secret reference of the pod's containers that cannot be resolved, in the
/// kubelet's words; `secret(name)` gives the Secret's data keys, or None when it is missing.
pub fn missing_secret(
    namespace: &str,
    spec: &Json,
    secret: impl Fn(&str) -> Option<Vec<String>>,
) -> Option<String> {
    let containers = spec.get("containers").and_then(Json::as_array)?;
    for container in containers {
        for env in container
            .get("env")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let Some(reference) = env.pointer("/valueFrom/secretKeyRef") else {
                continue;
            };
            if reference.get("optional").and_then(Json::as_bool) == Some(true) {
                continue;
            }
            let name = reference
                .get("name")
                .and_then(Json::as_str)
                .unwrap_or_default();
            let key = reference
                .get("key")
                .and_then(Json::as_str)
                .unwrap_or_default();
            match secret(name) {
                None => return Some(format!("secret {name:?} not found")),
                Some(keys) if !keys.iter().any(|k| k == key) => {
                    return Some(format!(
                        "couldn't find key {key} in Secret {namespace}/{name}"
                    ));
                }
                Some(_) => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_named_probe_port_reads_as_the_kubelets_prober_writes_it() {
        let spec = json!({"containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "health"}}}]});
        assert_eq!(
            missing_probe_port(&spec).as_deref(),
            Some(
                "Readiness probe errored and resulted in unknown state: strconv.Atoi: parsing \"health\": invalid syntax"
            )
        );
        let declared = json!({"containers": [{"name": "app", "ports": [{"name": "health", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "health"}}}]});
        assert_eq!(missing_probe_port(&declared), None);
    }

    #[test]
    fn a_jobs_pod_completes_and_a_failing_one_fails() {
        let age = Duration::from_secs(5);
        let done = pod_state(Behaviour::Ready, "x", "app", age, Timing::NODE, true);
        assert_eq!(done.phase, "Succeeded");
        let failed = pod_state(
            Behaviour::ExitOne,
            "x:exit-1",
            "app",
            age,
            Timing::NODE,
            true,
        );
        assert_eq!(failed.phase, "Failed");
        let looping = pod_state(
            Behaviour::ExitOne,
            "x:exit-1",
            "app",
            age,
            Timing::NODE,
            false,
        );
        assert_eq!(looping.phase, "Running");
        assert_eq!(looping.state["waiting"]["reason"], "CrashLoopBackOff");
    }

    #[test]
    fn a_crash_loop_restarts_once_per_back_off() {
        let at = |s| {
            pod_state(
                Behaviour::Crash,
                "x:crash",
                "app",
                Duration::from_secs(s),
                Timing::NODE,
                false,
            )
            .restarts
        };
        assert_eq!((at(0), at(9), at(10), at(25)), (1, 1, 2, 3));
    }
}
