//! Why pods are not ready, in words a person can act on: from pod conditions, container
//! states and the pods' newest events.

use serde_json::Value as Json;

use super::{Cluster, ClusterResult, Kind};

/// What one pod is stuck on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProblem {
    /// The pod.
    pub pod: String,
    /// Short reason, e.g. `CrashLoopBackOff`.
    pub reason: String,
    /// Details, e.g. the last exit code or the scheduler's message.
    pub detail: String,
    /// Whether waiting longer cannot help (bad image, crashing, missing secret, no Fargate
    /// profile): the rollout aborts at once.
    pub fatal: bool,
}

impl std::fmt::Display for PodProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pod {}: {}", self.pod, self.reason)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

const FATAL_WAITING: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

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
            if let Some(exit) = status
                .pointer("/lastState/terminated/exitCode")
                .and_then(Json::as_i64)
            {
                let last = text(status.pointer("/lastState/terminated/reason"));
                detail = format!(
                    "last exit code {exit} {last}; restarts {}",
                    status
                        .get("restartCount")
                        .and_then(Json::as_i64)
                        .unwrap_or(0)
                )
                .trim()
                .to_owned();
            }
            return Some(PodProblem {
                fatal: FATAL_WAITING.contains(&reason.as_str()),
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
                fatal: unschedulable && fargate,
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
    for pod in &pods {
        let Some(mut problem) = pod_problem(pod) else {
            continue;
        };
        if problem.detail.is_empty()
            && let Some(event) = newest_event(cluster, &problem.pod).await?
        {
            problem.detail = event;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_loops_and_bad_images_are_fatal_with_their_details() {
        let pod = serde_json::json!({"metadata": {"name": "web-green-1"}, "status": {"containerStatuses": [{
            "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
        }]}});
        let problem = pod_problem(&pod).unwrap();
        assert!(problem.fatal);
        assert_eq!(
            problem.to_string(),
            "pod web-green-1: CrashLoopBackOff (last exit code 1 Error; restarts 4)"
        );

        let pull = serde_json::json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x:9\""}}}]}});
        assert!(pod_problem(&pull).unwrap().fatal);
    }

    #[test]
    fn unschedulable_is_fatal_only_when_fargate_says_so() {
        let pod = |message: &str| serde_json::json!({"metadata": {"name": "p"}, "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]}});
        assert!(
            !pod_problem(&pod("0/3 nodes are available: insufficient cpu"))
                .unwrap()
                .fatal
        );
        assert!(
            pod_problem(&pod(
                "Pod not supported on Fargate: no Fargate profile matches"
            ))
            .unwrap()
            .fatal
        );
    }

    #[test]
    fn starting_pods_have_no_problem() {
        let pod = serde_json::json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(pod_problem(&pod), None);
    }
}
