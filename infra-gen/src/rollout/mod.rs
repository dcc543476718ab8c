//! Rollout: from the manifests tree to the cluster. [`desired`] turns the tree (plus CI
//! variables for images and secrets) into what the cluster should hold; [`apply`] runs the
//! deploy (preflight, lock, objects in order, per-workload rollout, prune); [`state`] reads
//! where a blue-green workload's traffic goes; [`bluegreen`] is the cutover, a flat list of
//! idempotent steps that each look at that state first.

pub mod apply;
pub mod applyset;
pub mod bluegreen;
pub mod canary;
pub mod capacity;
pub mod desired;
pub mod gateway_status;
pub mod history;
pub mod progress;
pub mod route;
pub mod state;
pub mod stateful;
pub mod verify;

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::cluster::ClusterError;
use crate::cluster::lease::LeaseError;
use crate::cluster::wait::WaitError;

/// Annotation holding the hash of what infra-gen last applied to an object.
pub const APPLIED: &str = "infra-gen.dev/applied";
/// Annotation holding the pod-template hash of a slot Deployment.
pub const TEMPLATE: &str = "infra-gen.dev/template";
/// Annotation holding the revision (git commit) of a slot Deployment.
pub const REVISION: &str = "infra-gen.dev/revision";
/// Stable Service annotation: when `finalize` may scale the previous slot down.
pub const SCALE_DOWN_AFTER: &str = "infra-gen.dev/scale-down-after";

/// Why a deploy step failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The lock is held.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// A CI variable is missing, or the tree is unusable.
    #[error("{0}")]
    Input(String),
    /// The new version did not become ready; traffic was not moved.
    #[error(
        "{workload}: the new version did not become ready, so traffic stays on {kept}. {cause}\n  {hint}"
    )]
    Aborted {
        /// Workload.
        workload: String,
        /// What still serves.
        kept: String,
        /// Why (boxed: it carries the pods' diagnoses).
        cause: Box<WaitError>,
        /// What to do.
        hint: String,
    },
    /// A rolling update did not complete.
    #[error("{workload}: the rolling update did not complete: {cause}\n  {hint}")]
    Rolling {
        /// Workload.
        workload: String,
        /// Why.
        cause: Box<WaitError>,
        /// What to do.
        hint: String,
    },
    /// A precondition in the cluster or in AWS does not hold.
    #[error("{0}")]
    Preflight(String),
    /// An ELBv2 call failed.
    #[error(transparent)]
    Elb(#[from] crate::elb::ElbError),
    /// The load balancer is not ready for a slot (targets, gates, rule weights).
    #[error(
        "{workload}: the load balancer is not ready for {slot}, so traffic stays on {kept}: {problem}"
    )]
    NotServing {
        /// Workload.
        workload: String,
        /// The slot traffic was to move to.
        slot: String,
        /// Where the traffic is.
        kept: String,
        /// What the load balancer showed.
        problem: String,
    },
    /// Every request was given back to a slot in the Ingress (HTTPRoute), but the ALB
    /// (Gateway) did not confirm it: the slot that lost the traffic was left running.
    #[error(
        "{workload}: every request was moved back to {slot} in the {}, but {problem}; {left} keeps its pods, since the {} may still send it requests. Once the controller has applied it (`infra-gen status`), run the command again",
        .router.object(),
        .router.lb()
    )]
    MoveBackUnconfirmed {
        /// Workload.
        workload: String,
        /// What routes the traffic.
        router: Router,
        /// The slot that takes every request back.
        slot: String,
        /// The slot that lost them.
        left: String,
        /// What the load balancer showed.
        problem: String,
    },
    /// The deploy lock was lost; the run stopped before its next write.
    #[error(
        "{workload}: {reason}. Traffic was left where it is: {traffic} (each traffic step is a single write, so the step in progress had either completed or not started). The run holding the lock now finishes or reverts the cutover; `infra-gen status` shows it"
    )]
    LockLost {
        /// Workload being changed.
        workload: String,
        /// Who holds the lock now, or why it could not be renewed.
        reason: String,
        /// Where the traffic is.
        traffic: String,
    },
    /// A rollback's target did not become ready; traffic did not move.
    #[error(
        "{workload}: the rollback target {target} did not become ready, so traffic stays as it was ({kept}); {target} keeps its pods as they are for another try. {cause}"
    )]
    RollbackNotReady {
        /// Workload.
        workload: String,
        /// The slot rolled back to.
        target: String,
        /// Where the traffic is.
        kept: String,
        /// Why (boxed: it carries the pods' diagnoses).
        cause: Box<WaitError>,
    },
}

/// Result alias.
pub type RolloutResult<T> = Result<T, RolloutError>;

/// What routes a workload's HTTP requests, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Router {
    /// An ALB Ingress (AWS Load Balancer Controller).
    Alb,
    /// A Gateway API HTTPRoute.
    Gateway,
}

impl Router {
    /// Of a workload's routing object from the tree.
    pub fn of(route: Option<&Json>) -> Router {
        match route {
            Some(r) if route::is_http_route(r) => Router::Gateway,
            _ => Router::Alb,
        }
    }

    /// `Ingress` or `HTTPRoute`.
    pub fn object(self) -> &'static str {
        match self {
            Router::Alb => "Ingress",
            Router::Gateway => "HTTPRoute",
        }
    }

    /// `ALB` or `Gateway`.
    pub fn lb(self) -> &'static str {
        match self {
            Router::Alb => "ALB",
            Router::Gateway => "Gateway",
        }
    }

    /// Who applies the object.
    pub fn controller(self) -> &'static str {
        match self {
            Router::Alb => "AWS Load Balancer Controller",
            Router::Gateway => "Gateway controller",
        }
    }
}

/// `(minReplicas, maxReplicas)` of an HPA object from the tree (min defaults to 1 as the API
/// server defaults it); `None` without a max.
pub fn hpa_bounds(hpa: &Json) -> Option<(i32, i32)> {
    let int = |p: &str| {
        hpa.pointer(p)
            .and_then(Json::as_i64)
            .and_then(|v| i32::try_from(v).ok())
    };
    Some((
        int("/spec/minReplicas").unwrap_or(1),
        int("/spec/maxReplicas")?,
    ))
}

/// Deletes pods so their controller recreates them; their (name, UID) pairs, for
/// [`replaced_and_ready`].
pub async fn delete_for_recreation(
    cluster: &crate::cluster::Cluster,
    pods: &[String],
) -> Result<Vec<(String, Option<String>)>, crate::cluster::ClusterError> {
    let mut deleted = Vec::new();
    for pod in pods {
        let uid = cluster
            .get(crate::cluster::Kind::Pod, pod)
            .await?
            .and_then(|p| p.pointer("/metadata/uid")?.as_str().map(str::to_owned));
        cluster.delete(crate::cluster::Kind::Pod, pod).await?;
        deleted.push((pod.clone(), uid));
    }
    Ok(deleted)
}

/// After pods were deleted to be recreated: waits until `wanted` pods of `selector` are Ready
/// and not terminating, none of them a deleted one (same name and UID). A controller's status
/// keeps counting deleted pods for a moment; this reads the pods themselves.
pub async fn replaced_and_ready(
    cluster: &crate::cluster::Cluster,
    selector: &str,
    deleted: &[(String, Option<String>)],
    wanted: usize,
    timeout: std::time::Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let pods = cluster
            .list(crate::cluster::Kind::Pod, selector, None)
            .await
            .map_err(|e| e.to_string())?;
        let ready = pods
            .iter()
            .filter(|p| {
                let name = crate::cluster::name_of(p);
                let uid = p.pointer("/metadata/uid").and_then(Json::as_str);
                !deleted
                    .iter()
                    .any(|(n, u)| n == name && u.as_deref() == uid)
                    && p.pointer("/metadata/deletionTimestamp").is_none()
                    && p.pointer("/status/conditions")
                        .and_then(Json::as_array)
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        if ready >= wanted {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{ready} of {wanted} recreated pod(s) of {selector} got ready within {timeout:?}; see `kubectl -n {} describe pods -l {selector}`",
                cluster.namespace()
            ));
        }
        cluster
            .pause(std::time::Duration::from_millis(500), "recreated pods")
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// `spec.replicas` of a workload from the tree (1 when the tree leaves it out).
pub fn template_replicas(workload: &Json) -> i32 {
    workload
        .pointer("/spec/replicas")
        .and_then(Json::as_i64)
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or(1)
}

/// First 16 hex characters of the SHA-256 of a JSON value (serialised as is).
pub fn hash(value: &Json) -> String {
    let digest = Sha256::digest(serde_json::to_string(value).unwrap_or_default().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Whether everything in `desired` is in `live` with the same value (live may hold more:
/// defaults, status, fields of other managers).
pub fn is_subset(desired: &Json, live: &Json) -> bool {
    match (desired, live) {
        (Json::Object(d), Json::Object(l)) => d.iter().all(|(k, v)| match l.get(k) {
            Some(lv) => is_subset(v, lv),
            None => {
                v.is_null()
                    || v.as_object().is_some_and(|o| o.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty())
            }
        }),
        (Json::Array(d), Json::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (Json::Number(a), Json::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// `desired` with the [`APPLIED`] annotation: the hash of `desired` itself. For a Secret the
/// hash covers its keys, not its values (a hash of a weak password would give it away); its
/// values are compared directly.
pub fn stamped(desired: &Json) -> Json {
    let mut out = desired.clone();
    let digest = if desired.get("kind").and_then(Json::as_str) == Some("Secret") {
        let mut redacted = desired.clone();
        if let Some(data) = redacted.get_mut("data").and_then(Json::as_object_mut) {
            for value in data.values_mut() {
                *value = Json::Null;
            }
        }
        hash(&redacted)
    } else {
        hash(desired)
    };
    if let Some(meta) = out.get_mut("metadata").and_then(Json::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Json::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(APPLIED.into(), Json::String(digest));
        }
    }
    out
}

/// Whether `live` already is what applying `stamped_desired` would make it: same applied
/// hash (so no field was dropped from the tree) and every desired field in place (so nobody
/// changed it by hand).
pub fn is_up_to_date(stamped_desired: &Json, live: Option<&Json>) -> bool {
    let Some(live) = live else { return false };
    let wanted = stamped_desired.pointer("/metadata/annotations/infra-gen.dev~1applied");
    let found = live.pointer("/metadata/annotations/infra-gen.dev~1applied");
    wanted.is_some() && wanted == found && is_subset(stamped_desired, live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_what_the_server_adds_and_compares_numbers_by_value() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        let live = json!({"spec": {"replicas": 2.0, "ports": [{"port": 80, "protocol": "TCP"}], "extra": 1}, "status": {}});
        assert!(is_subset(&desired, &live));
        assert!(!is_subset(&json!({"spec": {"replicas": 3}}), &live));
        assert!(
            !is_subset(&json!({"spec": {"ports": []}}), &live),
            "list lengths must match"
        );
    }

    #[test]
    fn up_to_date_needs_the_same_stamp_and_the_same_fields() {
        let desired = stamped(&json!({"metadata": {"name": "x"}, "data": {"a": "1"}}));
        let mut live = desired.clone();
        assert!(is_up_to_date(&desired, Some(&live)));
        live["data"]["a"] = "2".into();
        assert!(!is_up_to_date(&desired, Some(&live)), "changed by hand");
        let fewer = stamped(&json!({"metadata": {"name": "x"}, "data": {}}));
        assert!(
            !is_up_to_date(&fewer, Some(&desired)),
            "a field dropped from the tree changes the stamp"
        );
        assert!(!is_up_to_date(&desired, None));
    }
}
