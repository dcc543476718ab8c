//! The ApplySet of an environment (KEP-3659, the metadata `kubectl apply --prune --applyset`
//! uses): every object `apply` manages in the namespace carries the label
//! `applyset.kubernetes.io/part-of: <id>`, and a parent ConfigMap `infra-gen-applyset` carries
//! `applyset.kubernetes.io/id: <id>`, the tooling (`infra-gen/v<version>`) and the group-kinds
//! its members have. Prune deletes members of the set that the tree no longer has, so any tool
//! that reads ApplySets sees exactly what infra-gen would prune.
//!
//! The id is what the specification and kubectl compute from the parent:
//! `applyset-<base64url(sha256("<name>.<namespace>.<Kind>.<group>"))>-v1`. Like kubectl, the
//! parent is first widened to the kinds about to be applied (so an interrupted run never
//! leaves a member of a kind the parent does not list), then narrowed after prune.
//! The label is added when the tree is read (not written into `manifests/`: the specification
//! asks tools to refuse manifests that already carry it), so the committed tree stays plain
//! and an environment applied before ApplySets migrates on its next apply: every object gets
//! the label by the same server-side apply that keeps it, and nothing is deleted for it.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use super::{RolloutError, RolloutResult};
use crate::cluster::{Cluster, Kind, typed_to_json};
use crate::render::context::labels;

/// Label of every member: the set's id.
pub const PART_OF: &str = "applyset.kubernetes.io/part-of";
/// Label of the parent: the set's id.
pub const ID: &str = "applyset.kubernetes.io/id";
/// Annotation of the parent: the tool that manages the set (`<tool>/<version>`).
pub const TOOLING: &str = "applyset.kubernetes.io/tooling";
/// Annotation of the parent: the group-kinds of its members (`Kind.group`, sorted).
pub const CONTAINS_GROUP_KINDS: &str = "applyset.kubernetes.io/contains-group-kinds";
/// Name of the parent ConfigMap, one per namespace (an environment has its own namespace).
pub const PARENT: &str = "infra-gen-applyset";
/// Field manager that labels objects applied before ApplySets (only the label).
pub const MANAGER: &str = "infra-gen-applyset";
/// Tool name in [`TOOLING`].
const TOOL: &str = "infra-gen";

/// The set's id in `namespace`, as KEP-3659 and kubectl compute it for a ConfigMap parent
/// (core group: the empty string after the last dot).
pub fn id(namespace: &str) -> String {
    let gknn = format!("{PARENT}.{namespace}.ConfigMap.");
    let digest = Sha256::digest(gknn.as_bytes());
    format!("applyset-{}-v1", URL_SAFE_NO_PAD.encode(digest))
}

/// `infra-gen/v<version>`.
pub fn tooling() -> String {
    format!("{TOOL}/v{}", env!("CARGO_PKG_VERSION"))
}

/// A kind as the specification names group-kinds: `Deployment.apps`, `Service` (core).
pub fn group_kind(kind: Kind) -> String {
    match kind.group() {
        "" => kind.name().to_owned(),
        group => format!("{}.{group}", kind.name()),
    }
}

/// Whether an object belongs in the set: what `apply` manages for an environment (the
/// managed-by and environment labels), but not the cluster-scoped Namespace, which holds the
/// parent itself.
fn is_member(object: &Json) -> bool {
    let kind = object.get("kind").and_then(Json::as_str);
    let labels = object.pointer("/metadata/labels");
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Json::as_str);
    kind != Some("Namespace")
        && label(labels::MANAGED_BY) == Some("infra-gen")
        && label(labels::ENVIRONMENT).is_some()
}

/// Adds the part-of label to an object of the set (others are left alone).
pub fn label(object: &mut Json, id: &str) {
    if !is_member(object) {
        return;
    }
    if let Some(labels) = object
        .pointer_mut("/metadata/labels")
        .and_then(Json::as_object_mut)
    {
        labels.insert(PART_OF.to_owned(), Json::String(id.to_owned()));
    }
}

/// The parent object listing `group_kinds`.
pub fn parent(namespace: &str, group_kinds: &BTreeSet<String>) -> RolloutResult<Json> {
    let map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(PARENT.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [
                    (ID.to_owned(), id(namespace)),
                    (labels::MANAGED_BY.to_owned(), TOOL.to_owned()),
                ]
                .into(),
            ),
            annotations: Some(
                [
                    (TOOLING.to_owned(), tooling()),
                    (
                        CONTAINS_GROUP_KINDS.to_owned(),
                        group_kinds.iter().cloned().collect::<Vec<_>>().join(","),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    Ok(typed_to_json(&map)?)
}

/// The parent as it is in the cluster: `None` when there is none yet, else the group-kinds
/// it lists. Refuses a parent another tool manages or whose id does not match its name and
/// namespace (the specification requires both checks before changing a set).
pub async fn read(cluster: &Cluster) -> RolloutResult<Option<BTreeSet<String>>> {
    let Some(live) = cluster.get(Kind::ConfigMap, PARENT).await? else {
        return Ok(None);
    };
    let namespace = cluster.namespace();
    let tooling = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(TOOLING))
        .and_then(Json::as_str);
    if let Some(tooling) = tooling
        && tooling.split('/').next() != Some(TOOL)
    {
        return Err(RolloutError::Input(format!(
            "ConfigMap/{PARENT} in {namespace} is the ApplySet parent of another tool ({TOOLING}: {tooling}); infra-gen does not change a set it does not manage: rename or delete that ConfigMap if it is stale"
        )));
    }
    let found = live
        .pointer("/metadata/labels")
        .and_then(|l| l.get(ID))
        .and_then(Json::as_str);
    let expected = id(namespace);
    if let Some(found) = found
        && found != expected
    {
        return Err(RolloutError::Input(format!(
            "ConfigMap/{PARENT} in {namespace} has {ID}: {found}, but a parent of that name and namespace has id {expected}: the label was changed by hand; set it back (kubectl -n {namespace} label configmap {PARENT} --overwrite {ID}={expected})"
        )));
    }
    let kinds = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(CONTAINS_GROUP_KINDS))
        .and_then(Json::as_str)
        .unwrap_or_default()
        .split(',')
        .filter(|gk| !gk.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(Some(kinds))
}

/// The kinds `Kind::APPLIED` names in `group_kinds` (an unknown group-kind, from a newer
/// infra-gen, is skipped: nothing of it is pruned).
pub fn kinds_of(group_kinds: &BTreeSet<String>) -> Vec<Kind> {
    Kind::APPLIED
        .into_iter()
        .filter(|k| group_kinds.contains(&group_kind(*k)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_kubectl_s_for_a_configmap_parent() {
        // base64url(sha256("infra-gen-applyset.controltower-9391-staging.ConfigMap.")) without
        // padding, as kubectl's ApplySet.ID() computes it (worked out with Python's hashlib).
        assert_eq!(
            id("controltower-9391-staging"),
            "applyset-63PkmVQ5r4Ftgzt7IKHxfGC_95AnUSwj8QJVMtTUFo8-v1"
        );
        assert_ne!(
            id("controltower-9391-staging"),
            id("controltower-9391-production")
        );
    }

    #[test]
    fn group_kinds_are_kind_dot_group() {
        assert_eq!(group_kind(Kind::Deployment), "Deployment.apps");
        assert_eq!(group_kind(Kind::Service), "Service");
        assert_eq!(group_kind(Kind::Ingress), "Ingress.networking.k8s.io");
        let listed: BTreeSet<String> = ["Service".to_owned(), "Deployment.apps".to_owned()].into();
        assert_eq!(kinds_of(&listed), [Kind::Service, Kind::Deployment]);
    }
}
