//! The release history: a ConfigMap `infra-gen-releases` with, per workload, the releases
//! that went live, newest first (revision = git commit, image, slot, time, who — the CI job
//! URL). A candidate that never got traffic is never recorded, so the history answers "what
//! was live before this?" — which is what `rollback` goes back to.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::cluster::{Cluster, ClusterError, ClusterResult, Kind, typed_to_json};

/// The ConfigMap name.
pub const HISTORY: &str = "infra-gen-releases";
/// Releases kept per workload.
pub const KEEP: usize = 20;

/// One release of a workload: a moment a version went live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// `deploy` or `rollback`.
    pub action: String,
    /// Git commit.
    pub revision: String,
    /// Image deployed.
    pub image: String,
    /// Slot that went live (`blue`, `green`), or `-` for rolling workloads.
    pub slot: String,
    /// Pod template hash.
    pub template: String,
    /// When it went live (RFC 3339, as the API's `Time`).
    pub at: String,
    /// CI job URL or user@host.
    pub by: String,
    /// The pod template hash of what was live before (what a rollback rolled back from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_template: Option<String>,
    /// The revision of what was live before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_revision: Option<String>,
    /// Whether the cutover was checked against the load balancer (`false`: `--no-verify-lb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_verified: Option<bool>,
    /// `stateful`: the version's StatefulSet, so a rollback can start it again after it was
    /// retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Json>,
}

impl Release {
    /// Whether this release rolled back from `template`.
    pub fn rolled_back_from(&self, template: &str) -> bool {
        self.action == "rollback" && self.from_template.as_deref() == Some(template)
    }
}

/// A time as the API writes `Time` (RFC 3339, seconds).
pub fn time_text(at: Timestamp) -> String {
    serde_json::to_value(Time(at))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| at.to_string())
}

/// Parses a time written by [`time_text`] (or any RFC 3339 time).
pub fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// The releases of every workload, newest first.
pub async fn read(cluster: &Cluster) -> ClusterResult<BTreeMap<String, Vec<Release>>> {
    let mut out = BTreeMap::new();
    if let Some(map) = cluster.get(Kind::ConfigMap, HISTORY).await?
        && let Some(data) = map.get("data").and_then(Json::as_object)
    {
        for (workload, text) in data {
            let releases: Vec<Release> = text
                .as_str()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default();
            out.insert(workload.clone(), releases);
        }
    }
    Ok(out)
}

/// Whether the newest release of `workload` is `template` in `slot`.
pub fn is_latest(releases: &[Release], template: &str, slot: &str) -> bool {
    releases
        .first()
        .is_some_and(|r| r.template == template && r.slot == slot)
}

/// The release a rollback from `releases[current]` goes back to: the newest older release
/// of another template that was not itself rolled back from since. A rolled-back version is
/// never a target again (a retried rollback must not flip back to it), and a candidate that
/// never went live is not in the history at all.
pub fn rollback_target(releases: &[Release], current: usize) -> Option<&Release> {
    let live = releases.get(current)?;
    releases
        .iter()
        .enumerate()
        .skip(current + 1)
        .find(|(index, release)| {
            release.template != live.template
                && !releases[..*index]
                    .iter()
                    .any(|newer| newer.rolled_back_from(&release.template))
        })
        .map(|(_, release)| release)
}

/// Records a release (newest first, the oldest beyond [`KEEP`] dropped).
pub async fn record(cluster: &Cluster, workload: &str, release: Release) -> ClusterResult<()> {
    let mut all = read(cluster).await?;
    let list = all.entry(workload.to_owned()).or_default();
    list.insert(0, release);
    list.truncate(KEEP);
    let mut data = BTreeMap::new();
    for (name, releases) in &all {
        let text = serde_json::to_string(releases).map_err(|e| ClusterError::Transport {
            action: format!("record a release of {workload}"),
            message: e.to_string(),
        })?;
        data.insert(name.clone(), text);
    }
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(HISTORY.to_owned()),
            namespace: Some(cluster.namespace().to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "infra-gen".to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    cluster.apply(&typed_to_json(&map)?, false).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(action: &str, template: &str, from: Option<&str>) -> Release {
        Release {
            action: action.into(),
            revision: format!("rev-{template}"),
            image: format!("img:{template}"),
            slot: "blue".into(),
            template: template.into(),
            at: "2026-12-01T00:00:00Z".into(),
            by: "ci".into(),
            from_template: from.map(str::to_owned),
            from_revision: from.map(|f| format!("rev-{f}")),
            lb_verified: None,
            object: None,
        }
    }

    #[test]
    fn rollback_goes_to_the_release_live_before() {
        let history = [
            release("deploy", "v2", Some("v1")),
            release("deploy", "v1", Some("v0")),
            release("deploy", "v0", None),
        ];
        assert_eq!(rollback_target(&history, 0).unwrap().template, "v1");
    }

    #[test]
    fn a_second_rollback_never_returns_to_the_version_rolled_back_from() {
        let history = [
            release("rollback", "v1", Some("v2")),
            release("deploy", "v2", Some("v1")),
            release("deploy", "v1", Some("v0")),
            release("deploy", "v0", None),
        ];
        assert_eq!(
            rollback_target(&history, 0).unwrap().template,
            "v0",
            "v2 was rolled back from; v1 is live"
        );
        let only_two = &history[..3];
        assert!(rollback_target(only_two, 0).is_none());
    }

    #[test]
    fn a_version_deployed_again_after_its_rollback_is_a_target_again() {
        let history = [
            release("deploy", "v4", Some("v2")),
            release("deploy", "v2", Some("v1")),
            release("rollback", "v1", Some("v2")),
            release("deploy", "v2", Some("v1")),
            release("deploy", "v1", None),
        ];
        assert_eq!(rollback_target(&history, 0).unwrap().template, "v2");
    }

    #[test]
    fn times_are_written_as_the_api_writes_them() {
        let at: Timestamp = "2026-12-01T07:49:16.023460Z".parse().unwrap();
        assert_eq!(time_text(at), "2026-12-01T07:49:16Z");
        assert_eq!(
            parse_time("2026-12-01T07:49:16Z").unwrap().as_second(),
            at.as_second()
        );
    }
}
