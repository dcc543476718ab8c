//! The ApplySet (KEP-3659) of an environment: what another tool reading the standard labels
//! sees is what infra-gen manages and prunes.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::BLUE_GREEN;
use crate::support::harness::Harness;

const PART_OF: &str = "applyset.kubernetes.io/part-of";
const PARENT: &str = "infra-gen-applyset";

const WORKER: &str = "  jobs:\n    kind: worker\n    image: registry.test/jobs:v1\n    replicas: 1\n    resources: {cpu: 100m, memory: 128Mi}\n";
const CRON: &str = "  nightly:\n    kind: cron\n    image: registry.test/jobs:v1\n    schedule: \"0 3 * * *\"\n    resources: {cpu: 100m, memory: 128Mi}\n";

/// The id KEP-3659 gives a ConfigMap parent, computed here from the specification
/// (`base64url(sha256("<name>.<namespace>.<Kind>.<group>"))`), not by infra-gen's code.
fn expected_id(namespace: &str) -> String {
    let digest = Sha256::digest(format!("{PARENT}.{namespace}.ConfigMap.").as_bytes());
    format!("applyset-{}-v1", URL_SAFE_NO_PAD.encode(digest))
}

/// (group, version, plural) of a `Kind.group` as the parent lists it.
fn resource(group_kind: &str) -> ApiResource {
    let (kind, group) = group_kind.split_once('.').unwrap_or((group_kind, ""));
    let (version, plural) = match kind {
        "ServiceAccount" => ("v1", "serviceaccounts"),
        "ConfigMap" => ("v1", "configmaps"),
        "Secret" => ("v1", "secrets"),
        "Service" => ("v1", "services"),
        "Deployment" => ("v1", "deployments"),
        "StatefulSet" => ("v1", "statefulsets"),
        "CronJob" => ("v1", "cronjobs"),
        "Ingress" => ("v1", "ingresses"),
        "HorizontalPodAutoscaler" => ("v2", "horizontalpodautoscalers"),
        "PodDisruptionBudget" => ("v1", "poddisruptionbudgets"),
        other => panic!("group-kind {other} not known to this test"),
    };
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

async fn api(h: &Harness, group_kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(h.client().await, &h.namespace(), &resource(group_kind))
}

/// `Kind/name` of every object with `selector` over `group_kinds`.
async fn listed(h: &Harness, group_kinds: &[&str], selector: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for gk in group_kinds {
        let kind = gk.split('.').next().unwrap();
        let params = ListParams::default().labels(selector);
        for item in api(h, gk).await.list(&params).await.unwrap().items {
            out.insert(format!("{kind}/{}", item.metadata.name.unwrap()));
        }
    }
    out
}

/// The parent's group-kinds, as a tool would read them.
async fn parent_kinds(h: &Harness) -> Vec<String> {
    let parent = h
        .get("ConfigMap", PARENT)
        .await
        .expect("the ApplySet parent");
    parent["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"]
        .as_str()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect()
}

const EVERY_KIND: [&str; 10] = [
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment.apps",
    "StatefulSet.apps",
    "CronJob.batch",
    "Ingress.networking.k8s.io",
    "HorizontalPodAutoscaler.autoscaling",
    "PodDisruptionBudget.policy",
];

/// `Kind/name` → uid of every object infra-gen manages for the environment.
async fn managed_uids(h: &Harness) -> Vec<(String, String)> {
    h.managed("prod")
        .await
        .into_iter()
        .map(|(object, uid, _)| (object, uid))
        .collect()
}

#[tokio::test]
async fn every_object_apply_manages_is_in_the_environment_s_applyset() {
    let h = Harness::start().await;
    h.write_env(
        "prod",
        &format!("{}{WORKER}{CRON}", h.web(&h.images.v1, BLUE_GREEN)),
    )
    .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());

    let parent = h.get("ConfigMap", PARENT).await.expect("a parent");
    let id = expected_id(&h.namespace());
    assert_eq!(
        parent["metadata"]["labels"]["applyset.kubernetes.io/id"],
        id
    );
    let tooling = parent["metadata"]["annotations"]["applyset.kubernetes.io/tooling"]
        .as_str()
        .unwrap();
    assert!(tooling.starts_with("infra-gen/v"), "{tooling}");
    assert!(
        parent["metadata"]["labels"].get(PART_OF).is_none(),
        "the parent is not its own member"
    );

    // What a tool following the specification finds: every group-kind the parent names,
    // listed by the part-of label, is exactly what infra-gen manages for the environment.
    let kinds = parent_kinds(&h).await;
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(kinds, sorted, "the specification wants them sorted");
    let kind_refs: Vec<&str> = kinds.iter().map(String::as_str).collect();
    let members = listed(&h, &kind_refs, &format!("{PART_OF}={id}")).await;
    let managed: BTreeSet<String> = managed_uids(&h).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(members, managed);
    for expected in [
        "Deployment/web-blue",
        "Service/web",
        "Deployment/jobs",
        "CronJob/nightly",
        "ServiceAccount/nightly",
    ] {
        assert!(members.contains(expected), "{expected} in {members:?}");
    }
    // The group-kinds are those of the members, no more.
    let member_kinds: BTreeSet<&str> = members
        .iter()
        .map(|m| m.split('/').next().unwrap())
        .collect();
    let named_kinds: BTreeSet<&str> = kinds
        .iter()
        .map(|gk| gk.split('.').next().unwrap())
        .collect();
    assert_eq!(member_kinds, named_kinds);
    // Its own bookkeeping (the lock, the release history) is not part of the set.
    assert!(!members.iter().any(|m| m.starts_with("ConfigMap/infra-gen")));
    // The committed tree stays plain: the label is added at apply time.
    let tree = std::fs::read_to_string(h.root().join("manifests/prod/deployment-jobs.yaml"))
        .unwrap_or_default();
    assert!(!tree.contains(PART_OF), "{tree}");
}

#[tokio::test]
async fn prune_deletes_by_the_set_and_the_parent_forgets_kinds_that_are_gone() {
    let h = Harness::start().await;
    h.write_env(
        "prod",
        &format!("{}{WORKER}{CRON}", h.web(&h.images.v1, BLUE_GREEN)),
    )
    .await;
    assert!(h.apply("prod", &[]).await.ok);
    let id = expected_id(&h.namespace());
    assert!(parent_kinds(&h).await.contains(&"CronJob.batch".to_owned()));

    // Another tool's object that happens to carry this environment's labels, but is part of
    // another set: never ours to delete. And an object labelled part of our set that the tree
    // does not have: the set says it is ours, so it is pruned.
    let configmaps = api(&h, "ConfigMap").await;
    let foreign: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "someone-elses", "labels": {
            "app.kubernetes.io/managed-by": "infra-gen",
            "infra-gen.dev/environment": "prod",
            PART_OF: "applyset-somebody-else-v1",
        }},
    }))
    .unwrap();
    let stray: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "stray", "labels": {PART_OF: id}},
    }))
    .unwrap();
    for object in [&foreign, &stray] {
        configmaps
            .patch(
                object.metadata.name.as_deref().unwrap(),
                &PatchParams::apply("someone").force(),
                &Patch::Apply(object),
            )
            .await
            .unwrap();
    }

    h.write_env(
        "prod",
        &format!("{}{WORKER}", h.web(&h.images.v1, BLUE_GREEN)),
    )
    .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(run.stderr.contains("CronJob/nightly"), "{}", run.all());
    assert!(h.get("CronJob", "nightly").await.is_none());
    assert!(h.get("ConfigMap", "stray").await.is_none(), "{}", run.all());
    assert!(
        h.get("ConfigMap", "someone-elses").await.is_some(),
        "{}",
        run.all()
    );
    let kinds = parent_kinds(&h).await;
    assert!(!kinds.contains(&"CronJob.batch".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"Deployment.apps".to_owned()), "{kinds:?}");
}

#[tokio::test]
async fn an_environment_applied_before_applysets_migrates_without_deleting_anything() {
    let h = Harness::start().await;
    h.write_env(
        "prod",
        &format!("{}{WORKER}", h.web(&h.images.v1, BLUE_GREEN)),
    )
    .await;
    assert!(h.apply("prod", &[]).await.ok);
    // Make it look like an older infra-gen applied it: no part-of labels, no parent.
    let before = managed_uids(&h).await;
    assert!(before.len() >= 6, "{before:?}");
    h.as_before_applysets("prod").await;
    assert!(h.managed("prod").await.iter().all(|(_, _, p)| p.is_none()));
    let pods_before = h.pod_names("web-blue").await;

    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(!run.stderr.contains("pruning"), "{}", run.all());
    assert_eq!(
        managed_uids(&h).await,
        before,
        "same objects, none recreated"
    );
    assert_eq!(
        h.pod_names("web-blue").await,
        pods_before,
        "no pod restarted"
    );
    let id = expected_id(&h.namespace());
    let members = listed(&h, &EVERY_KIND, &format!("{PART_OF}={id}")).await;
    let all: BTreeSet<String> = before.into_iter().map(|(k, _)| k).collect();
    assert_eq!(members, all, "every object is labelled again");
    assert!(h.get("ConfigMap", PARENT).await.is_some());
}

#[tokio::test]
async fn a_parent_another_tool_manages_stops_the_apply_before_it_writes() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    // The namespace exists (as an older deploy or a platform team would have made it).
    assert!(h.apply("prod", &[]).await.ok);
    let parent: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": PARENT,
            "labels": {"applyset.kubernetes.io/id": expected_id(&h.namespace())},
            "annotations": {"applyset.kubernetes.io/tooling": "kubectl/v1.36.2"}},
    }))
    .unwrap();
    api(&h, "ConfigMap")
        .await
        .patch(
            PARENT,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&parent),
        )
        .await
        .unwrap();
    h.write_env("prod", &h.web(&h.images.v2, BLUE_GREEN)).await;
    let run = h.apply("prod", &[]).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "ConfigMap/{PARENT} in {} is the ApplySet parent of another tool (applyset.kubernetes.io/tooling: kubectl/v1.36.2)",
            h.namespace()
        )),
        "{}",
        run.all()
    );
    assert!(
        h.get("Deployment", "web-green").await.is_none(),
        "nothing was applied"
    );
}
