//! Why pods are not ready, in words a person can act on: from pod conditions, container
//! states and the pods' newest events.

use serde_json::Value as Json;

use super::{Cluster, ClusterResult, Kind};
use crate::render::check::undeclared_handler_ports;

/// How soon a pod problem should stop a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Starting up, or a state the kubelet works through by itself.
    Wait,
    /// Fatal once it lasts beyond the kubelet's retries ([`PERSISTENT_FOR`]): one failed image
    /// pull or a config error seen during start-up can clear on the next try.
    Persistent,
    /// Waiting cannot help (an invalid image name, a crash loop past [`CRASH_RESTARTS`]
    /// restarts, no Fargate profile): the rollout aborts at once.
    Fatal,
}

/// How long a [`Urgency::Persistent`] problem must last before it aborts a rollout: the
/// kubelet retries an image pull after 10 s, then 20 s; a pull still failing after that is
/// not a hiccup.
pub const PERSISTENT_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Restarts after which a crash-looping container is fatal: one crash during start-up (a
/// dependency not up yet) is not; crashing again after the kubelet's first back-off (10 s)
/// is.
pub const CRASH_RESTARTS: i64 = 2;

/// What one pod is stuck on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProblem {
    /// The pod.
    pub pod: String,
    /// Short reason, e.g. `CrashLoopBackOff`.
    pub reason: String,
    /// Details, e.g. the last exit code or the scheduler's message.
    pub detail: String,
    /// How soon it stops a rollout.
    pub urgency: Urgency,
    /// The last lines its failing container wrote (the instance before a restart for a
    /// crash loop), read once a rollout gives up.
    pub logs: Option<String>,
}

impl PodProblem {
    /// Whether waiting longer cannot help.
    pub fn is_fatal(&self) -> bool {
        self.urgency == Urgency::Fatal
    }
}

impl std::fmt::Display for PodProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod {}: {}", self.pod, self.reason)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        if let Some(logs) = &self.logs {
            for line in logs.lines() {
                write!(f, "\n      | {line}")?;
            }
        }
        Ok(())
    }
}

const FATAL_WAITING: [&str; 2] = ["InvalidImageName", "ErrImageNeverPull"];
const PERSISTENT_WAITING: [&str; 4] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

fn urgency_of(reason: &str, restarts: i64) -> Urgency {
    if FATAL_WAITING.contains(&reason) {
        Urgency::Fatal
    } else if reason == "CrashLoopBackOff" {
        if restarts >= CRASH_RESTARTS {
            Urgency::Fatal
        } else {
            Urgency::Persistent
        }
    } else if PERSISTENT_WAITING.contains(&reason) {
        Urgency::Persistent
    } else {
        Urgency::Wait
    }
}

fn text(value: Option<&Json>) -> String {
    value.and_then(Json::as_str).unwrap_or_default().to_owned()
}

/// The problem of one pod, if it has one.
pub fn pod_problem(pod: &Json) -> Option<PodProblem> {
    let name = super::name_of(pod).to_owned();
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    for status in &statuses {
        if let Some(waiting) = status.pointer("/state/waiting") {
            let reason = text(waiting.get("reason"));
            if reason.is_empty() || reason == "ContainerCreating" || reason == "PodInitializing" {
                continue;
            }
            let mut detail = text(waiting.get("message"));
            let restarts = status
                .get("restartCount")
                .and_then(Json::as_i64)
                .unwrap_or(0);
            if let Some(exit) = status
                .pointer("/lastState/terminated/exitCode")
                .and_then(Json::as_i64)
            {
                let last = text(status.pointer("/lastState/terminated/reason"));
                detail = format!("last exit code {exit} {last}; restarts {restarts}")
                    .trim()
                    .to_owned();
            }
            return Some(PodProblem {
                logs: None,
                urgency: urgency_of(&reason, restarts),
                pod: name,
                reason,
                detail,
            });
        }
    }
    let conditions = pod
        .pointer("/status/conditions")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = conditions.iter().any(|c| {
        c.get("type").and_then(Json::as_str) == Some("Ready")
            && c.get("status").and_then(Json::as_str) == Some("True")
    });
    // A probe on a port the container does not declare errors on every try (the kubelet's
    // wording differs between versions; the spec says it plainly): no wait fixes that.
    if !ready
        && let Some(missing) = undeclared_handler_ports(pod.get("spec").unwrap_or(&Json::Null))
            .into_iter()
            .find(|m| m.handler.ends_with("Probe"))
    {
        return Some(PodProblem {
            pod: name,
            reason: "ProbePortMissing".into(),
            detail: format!(
                "the {} of container {} names port {:?}, which the container does not declare (its ports: {})",
                missing.handler,
                missing.container,
                missing.port,
                if missing.declared.is_empty() {
                    "none".to_owned()
                } else {
                    missing.declared.join(", ")
                }
            ),
            urgency: Urgency::Fatal,
            logs: None,
        });
    }
    for condition in &conditions {
        let kind = text(condition.get("type"));
        if condition.get("status").and_then(Json::as_str) == Some("False")
            && (kind == "PodScheduled" || kind == "Ready")
        {
            let reason = text(condition.get("reason"));
            let detail = text(condition.get("message"));
            let unschedulable = reason == "Unschedulable";
            let fargate = detail.to_ascii_lowercase().contains("fargate");
            if reason.is_empty() && detail.is_empty() {
                continue;
            }
            return Some(PodProblem {
                pod: name,
                reason: if reason.is_empty() {
                    format!("{kind} False")
                } else {
                    reason
                },
                logs: None,
                urgency: if unschedulable && fargate {
                    Urgency::Fatal
                } else {
                    Urgency::Wait
                },
                detail,
            });
        }
    }
    None
}

/// Problems of the pods matching `selector`, each completed with the pod's newest warning
/// event when the pod itself says little.
pub async fn problems(cluster: &Cluster, selector: &str) -> ClusterResult<Vec<PodProblem>> {
    let pods = cluster.list(Kind::Pod, selector, None).await?;
    let mut out = Vec::new();
    // Events are read for a few pods only: a message shows five, and a wait asks every 2 s.
    let mut events_read = 0;
    for pod in &pods {
        // A terminating or finished pod (a Failed one stays until the pod GC) is not what a
        // rollout waits for.
        let finished = matches!(
            pod.pointer("/status/phase").and_then(Json::as_str),
            Some("Failed" | "Succeeded")
        );
        if finished || pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let Some(mut problem) = pod_problem(pod) else {
            continue;
        };
        // "containers with unready status" says little: the newest event says why (a failing
        // probe, and whether it can ever succeed).
        let generic = problem.detail.is_empty() || problem.reason == "ContainersNotReady";
        if generic && events_read < 5 {
            events_read += 1;
            if let Some(event) = newest_event(cluster, &problem.pod).await? {
                problem.detail = event;
            }
        }
        out.push(problem);
    }
    Ok(out)
}

/// The newest event of an object, as "Reason: message".
pub async fn newest_event(cluster: &Cluster, object: &str) -> ClusterResult<Option<String>> {
    let events = cluster
        .list(
            Kind::Event,
            "",
            Some(&format!("involvedObject.name={object}")),
        )
        .await?;
    let newest = events.iter().max_by_key(|e| {
        text(e.get("lastTimestamp"))
            .max(text(e.get("eventTime")))
            .max(text(e.pointer("/metadata/creationTimestamp")))
    });
    Ok(newest.map(|e| format!("{}: {}", text(e.get("reason")), text(e.get("message")))))
}

/// How many log lines an abort shows.
pub const LOG_LINES: i64 = 20;

/// Reads the last lines of `problem`'s failing container (the previous instance when it
/// restarted) into it. A log that cannot be read says why instead.
pub async fn attach_logs(cluster: &Cluster, problem: &mut PodProblem) {
    let Ok(Some(pod)) = cluster.get(Kind::Pod, &problem.pod).await else {
        return;
    };
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(status) = statuses
        .iter()
        .find(|s| s.get("ready").and_then(Json::as_bool) != Some(true))
    else {
        return;
    };
    let container = status
        .get("name")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let restarted = status
        .get("restartCount")
        .and_then(Json::as_i64)
        .unwrap_or(0)
        > 0;
    let started = status.pointer("/state/running").is_some()
        || status.pointer("/state/terminated").is_some()
        || restarted;
    if !started {
        // Never ran (an image that cannot be pulled, a missing Secret): no log to show.
        return;
    }
    problem.logs = Some(
        match cluster
            .pod_logs(&problem.pod, container, restarted, LOG_LINES)
            .await
        {
            Ok(text) if text.trim().is_empty() => format!("(container {container} wrote nothing)"),
            Ok(text) => format!(
                "last lines of container {container}{}:\n{}",
                if restarted {
                    " (before its last restart)"
                } else {
                    ""
                },
                text.trim_end()
            ),
            Err(e) => format!("(the log of container {container} could not be read: {e})"),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crashing(restarts: i64) -> Json {
        serde_json::json!({"metadata": {"name": "web-green-1"}, "status": {"containerStatuses": [{
            "restartCount": restarts,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
        }]}})
    }

    #[test]
    fn a_crash_loop_is_fatal_only_after_several_restarts() {
        let problem = pod_problem(&crashing(4)).unwrap();
        assert!(problem.is_fatal());
        assert_eq!(
            problem.to_string(),
            "pod web-green-1: CrashLoopBackOff (last exit code 1 Error; restarts 4)"
        );
        let once = pod_problem(&crashing(1)).unwrap();
        assert_eq!(
            once.urgency,
            Urgency::Persistent,
            "one crash is not an abort"
        );
    }

    #[test]
    fn pull_errors_must_persist_and_invalid_names_are_fatal_at_once() {
        let waiting = |reason: &str| serde_json::json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [{"state": {"waiting": {"reason": reason, "message": "x"}}}]}});
        assert_eq!(
            pod_problem(&waiting("ImagePullBackOff")).unwrap().urgency,
            Urgency::Persistent
        );
        assert_eq!(
            pod_problem(&waiting("CreateContainerConfigError"))
                .unwrap()
                .urgency,
            Urgency::Persistent
        );
        assert!(
            pod_problem(&waiting("InvalidImageName"))
                .unwrap()
                .is_fatal()
        );
    }

    #[test]
    fn unschedulable_is_fatal_only_when_fargate_says_so() {
        let pod = |message: &str| serde_json::json!({"metadata": {"name": "p"}, "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}});
        assert!(
            !pod_problem(&pod("0/3 nodes are available: insufficient cpu"))
                .unwrap()
                .is_fatal()
        );
        assert!(
            pod_problem(&pod(
                "Pod not supported on Fargate: no Fargate profile matches"
            ))
            .unwrap()
            .is_fatal()
        );
    }

    #[test]
    fn a_probe_on_an_undeclared_port_is_fatal_whatever_the_kubelet_says() {
        let pod = serde_json::json!({"metadata": {"name": "game-green-1"},
            "spec": {"containers": [{"name": "game", "ports": [{"name": "game", "containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": "health"}}}]},
            "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                "containerStatuses": [{"name": "game", "ready": false, "state": {"running": {}}}]}});
        let problem = pod_problem(&pod).unwrap();
        assert!(problem.is_fatal());
        assert_eq!(
            problem.to_string(),
            "pod game-green-1: ProbePortMissing (the readinessProbe of container game names port \"health\", which the container does not declare (its ports: game))"
        );
    }

    #[test]
    fn starting_pods_have_no_problem() {
        let pod = serde_json::json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(pod_problem(&pod), None);
    }
}
