//! The release history: a ConfigMap `infra-gen-releases` with, per workload, the newest
//! releases first (revision = git commit, image, slot, time, who — the CI job URL).

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::cluster::{Cluster, ClusterResult, Kind};

/// The ConfigMap name.
pub const HISTORY: &str = "infra-gen-releases";
/// Releases kept per workload.
pub const KEEP: usize = 20;

/// One release of a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// RFC 3339 time.
    pub at: String,
    /// CI job URL or user@host.
    pub by: String,
}

/// The releases of every workload, newest first.
pub async fn read(
    cluster: &Cluster,
) -> ClusterResult<std::collections::BTreeMap<String, Vec<Release>>> {
    let mut out = std::collections::BTreeMap::new();
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
pub fn is_latest(
    history: &std::collections::BTreeMap<String, Vec<Release>>,
    workload: &str,
    template: &str,
    slot: &str,
) -> bool {
    history
        .get(workload)
        .and_then(|r| r.first())
        .is_some_and(|r| r.template == template && r.slot == slot)
}

/// Records a release (newest first, the oldest beyond [`KEEP`] dropped).
pub async fn record(cluster: &Cluster, workload: &str, release: Release) -> ClusterResult<()> {
    let mut all = read(cluster).await?;
    let list = all.entry(workload.to_owned()).or_default();
    list.insert(0, release);
    list.truncate(KEEP);
    let data: serde_json::Map<String, Json> = all
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Json::String(serde_json::to_string(v).unwrap_or_default()),
            )
        })
        .collect();
    let map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": HISTORY, "namespace": cluster.namespace(), "labels": {"app.kubernetes.io/managed-by": "infra-gen"}},
        "data": data,
    });
    cluster.apply(&map, false).await?;
    Ok(())
}
