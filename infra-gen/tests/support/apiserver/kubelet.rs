//! The simulated controllers and kubelet: each Deployment gets pods of its current template,
//! each pod becomes ready `ready_after` after it was created — or not, as its image says
//! (`testbed::pod`, the model the node agent of the real control plane uses too). Like the
//! kubelet, a container whose env names a Secret (or key) that does not exist waits in
//! `CreateContainerConfigError` until it does.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use testbed::pod::{Behaviour, PodState, Timing, missing_probe_port, missing_secret, pod_state};
use tokio::sync::broadcast;

use super::{Data, Key, Resource, WatchEvent, new_metadata, time_now};

/// The readiness gates the AWS Load Balancer Controller's webhook gives a pod being created:
/// one per TargetGroupBinding whose Service selects it, when the namespace asks for them.
fn injected_gates(data: &Data, namespace: &str, template: &Json) -> Vec<String> {
    if !data.inject_gates {
        return Vec::new();
    }
    let asks = data
        .objects
        .get(&Key {
            resource: Resource::by_kind("Namespace"),
            namespace: String::new(),
            name: namespace.to_owned(),
        })
        .and_then(|ns| ns.pointer("/metadata/labels/elbv2.k8s.aws~1pod-readiness-gate-inject"))
        .and_then(Json::as_str)
        == Some("enabled");
    if !asks {
        return Vec::new();
    }
    let of = |kind: &str| -> Vec<Json> {
        data.objects
            .iter()
            .filter(|(k, _)| k.resource.kind == kind && k.namespace == namespace)
            .map(|(_, o)| o.clone())
            .collect()
    };
    let view = testbed::lb::Snapshot {
        services: of("Service"),
        bindings: of("TargetGroupBinding"),
        ..testbed::lb::Snapshot::default()
    };
    testbed::lb::gates_for(&view, namespace, template.pointer("/metadata/labels"))
}

fn template_id(template: &Json) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut h);
    format!("{:08x}", h.finish() as u32)
}

/// One pass of every controller.
pub fn reconcile_all(
    data: &mut Data,
    events: &broadcast::Sender<WatchEvent>,
    ready_after: Duration,
) {
    let deployments: Vec<(Key, Json)> = data
        .objects
        .iter()
        .filter(|(k, _)| k.resource.kind == "Deployment")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, deployment) in deployments {
        reconcile_deployment(data, events, &key, &deployment, ready_after);
    }
    let sets: Vec<(Key, Json)> = data
        .objects
        .iter()
        .filter(|(k, _)| k.resource.kind == "StatefulSet")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, set) in sets {
        reconcile_statefulset(data, events, &key, &set, ready_after);
    }
    reconcile_bare_pods(data, events, ready_after);
    // Pods whose owner is gone go too.
    let orphans: Vec<Key> = data
        .objects
        .iter()
        .filter(|(k, o)| {
            k.resource.kind == "Pod"
                && o.pointer("/metadata/annotations/double~1owner")
                    .and_then(Json::as_str)
                    .is_some_and(|owner| {
                        let (kind, name) = owner.split_once('/').unwrap_or(("Deployment", owner));
                        !data.objects.keys().any(|d| {
                            d.resource.kind == kind && d.namespace == k.namespace && d.name == name
                        })
                    })
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in orphans {
        data.pods.remove(&k);
        data.remove(&k, events);
    }
}

/// Pods created directly (no owner of the double's): run as their image says; one that runs
/// to completion (`restartPolicy` other than `Always`) ends Succeeded or Failed and stays.
fn reconcile_bare_pods(
    data: &mut Data,
    events: &broadcast::Sender<WatchEvent>,
    ready_after: Duration,
) {
    let bare: Vec<(Key, Json)> = data
        .objects
        .iter()
        .filter(|(k, o)| {
            k.resource.kind == "Pod" && o.pointer("/metadata/annotations/double~1owner").is_none()
        })
        .map(|(k, o)| (k.clone(), o.clone()))
        .collect();
    for (key, pod) in bare {
        let (born, ready_after) = *data
            .pods
            .entry(key.clone())
            .or_insert_with(|| (Instant::now(), ready_after));
        let image = pod
            .pointer("/spec/containers/0/image")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let container = pod
            .pointer("/spec/containers/0/name")
            .and_then(Json::as_str)
            .unwrap_or("app")
            .to_owned();
        let once = pod.pointer("/spec/restartPolicy").and_then(Json::as_str) != Some("Always");
        let timing = Timing {
            ready_after,
            ..Timing::FAST
        };
        let state = pod_state(
            Behaviour::of(&image),
            &image,
            &container,
            born.elapsed(),
            timing,
            once,
        );
        let ip = data.pod_ips.len();
        let pod_ip = data
            .pod_ips
            .entry(key.clone())
            .or_insert_with(|| format!("10.1.{}.{}", ip / 250, ip % 250 + 2))
            .clone();
        let status = json!({
            "phase": state.phase,
            "podIP": pod_ip,
            "conditions": [{"type": "Ready", "status": if state.ready { "True" } else { "False" }}],
            "containerStatuses": [{"name": container, "ready": state.ready, "restartCount": state.restarts, "image": image, "imageID": "", "state": state.state}],
        });
        if pod.get("status").map(strip_times) != Some(strip_times(&status)) {
            let mut updated = pod;
            updated["status"] = status;
            data.store(key, updated, events);
        }
    }
}

/// Makes the pods of one owner (`Deployment/<name>`) match `wanted` (pod name → template) and
/// returns how many of them are ready.
fn pods_for(
    data: &mut Data,
    events: &broadcast::Sender<WatchEvent>,
    namespace: &str,
    owner: &str,
    wanted: &[(String, Json)],
    ready_after: Duration,
) -> i64 {
    let pod_resource = Resource::by_kind("Pod");
    let existing: Vec<Key> = data
        .objects
        .iter()
        .filter(|(k, o)| {
            k.resource == pod_resource
                && k.namespace == namespace
                && o.pointer("/metadata/annotations/double~1owner")
                    .and_then(Json::as_str)
                    == Some(owner)
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in &existing {
        if !wanted.iter().any(|(name, _)| *name == k.name) {
            data.pods.remove(k);
            data.gates.remove(k);
            data.pod_templates.remove(k);
            data.remove(k, events);
        }
    }
    let mut ready_count = 0;
    for (pod_name, template) in wanted {
        let pod_key = Key {
            resource: pod_resource,
            namespace: namespace.to_owned(),
            name: pod_name.clone(),
        };
        let first_seen = !data.pods.contains_key(&pod_key);
        // A pod's start-up time is fixed when it starts: a test that slows the node down
        // slows only the pods created after.
        let (born, ready_after) = *data
            .pods
            .entry(pod_key.clone())
            .or_insert_with(|| (Instant::now(), ready_after));
        let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
        if first_seen {
            let gates = injected_gates(data, namespace, template);
            data.gates.insert(pod_key.clone(), gates);
        }
        let gates = data.gates.get(&pod_key).cloned().unwrap_or_default();
        if !gates.is_empty() {
            spec["readinessGates"] =
                Json::Array(gates.iter().map(|g| json!({"conditionType": g})).collect());
        }
        let image = spec
            .pointer("/containers/0/image")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let container = spec
            .pointer("/containers/0/name")
            .and_then(Json::as_str)
            .unwrap_or("app")
            .to_owned();
        let timing = Timing {
            ready_after,
            ..Timing::FAST
        };
        let secret = |name: &str| -> Option<Vec<String>> {
            let secret = data.objects.get(&Key {
                resource: Resource::by_kind("Secret"),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })?;
            Some(
                secret
                    .get("data")
                    .and_then(Json::as_object)
                    .map(|d| d.keys().cloned().collect())
                    .unwrap_or_default(),
            )
        };
        let mut state = match missing_secret(namespace, &spec, secret) {
            Some(missing) => PodState::config_error(&container, &missing),
            None => pod_state(
                Behaviour::of(&image),
                &image,
                &container,
                born.elapsed(),
                timing,
                false,
            ),
        };
        if let Some(error) = missing_probe_port(&spec) {
            state = state.probe_error(&container, error);
        }
        // Containers ready; the pod is Ready only once every readiness gate passed too.
        let containers_ready = state.ready;
        let passed: Vec<bool> = gates
            .iter()
            .map(|g| data.gates_passed.contains(&(pod_key.clone(), g.clone())))
            .collect();
        if containers_ready && passed.iter().any(|p| !p) {
            state.ready = false;
            state.condition = Some((
                "Ready",
                "ReadinessGatesNotReady",
                "the status of pod readiness gate is not \"True\", but \"False\"".to_owned(),
            ));
        }
        if state.ready {
            ready_count += 1;
        }
        let mut conditions = match &state.condition {
            Some((kind, reason, message)) => {
                vec![json!({"type": kind, "status": "False", "reason": reason, "message": message})]
            }
            None => vec![json!({"type": "Ready", "status": "True"})],
        };
        conditions.push(json!({"type": "ContainersReady", "status": if containers_ready { "True" } else { "False" }}));
        for (gate, ok) in gates.iter().zip(&passed) {
            conditions.push(json!({"type": gate, "status": if *ok { "True" } else { "False" }}));
        }
        let mut statuses = Vec::new();
        if !state.state.is_null() {
            let mut status = json!({"name": container, "ready": state.ready, "restartCount": state.restarts, "image": image, "imageID": "", "state": state.state});
            if let Some(last) = &state.last {
                status["lastState"] = last.clone();
            }
            statuses.push(status);
        }
        let ip = data.pod_ips.len();
        let pod_ip = data
            .pod_ips
            .entry(pod_key.clone())
            .or_insert_with(|| format!("10.1.{}.{}", ip / 250, ip % 250 + 2))
            .clone();
        let pod = json!({
            "metadata": {"name": pod_name, "namespace": namespace, "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})), "annotations": {"double/owner": owner}},
            "spec": spec,
            "status": {"phase": state.phase, "podIP": pod_ip, "conditions": conditions, "containerStatuses": statuses},
        });
        let unchanged = data.objects.get(&pod_key).is_some_and(|p| {
            p.get("status").map(strip_times) == pod.get("status").map(strip_times)
                && p.pointer("/metadata/labels") == pod.pointer("/metadata/labels")
        });
        if !unchanged {
            let mut pod = pod;
            if let Some(existing) = data.objects.get(&pod_key) {
                pod["metadata"]["uid"] = existing
                    .pointer("/metadata/uid")
                    .cloned()
                    .unwrap_or(Json::Null);
                pod["metadata"]["creationTimestamp"] = existing
                    .pointer("/metadata/creationTimestamp")
                    .cloned()
                    .unwrap_or(Json::Null);
            }
            new_metadata(&mut pod, &pod_key);
            data.store(pod_key, pod, events);
        }
        if let Some((reason, message)) = state.event
            && data.events_made.insert(format!("{pod_name}/{reason}"))
        {
            let event_key = Key {
                resource: Resource::by_kind("Event"),
                namespace: namespace.to_owned(),
                name: format!("{pod_name}.{}", reason.to_ascii_lowercase()),
            };
            let mut event = json!({
                "metadata": {"name": event_key.name},
                "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": namespace},
                "reason": reason,
                "message": message,
                "type": "Warning",
                "lastTimestamp": time_now(),
            });
            new_metadata(&mut event, &event_key);
            data.store(event_key, event, events);
        }
    }
    ready_count
}

/// Status changes that are only timestamps are not changes.
fn strip_times(status: &Json) -> Json {
    let mut status = status.clone();
    if let Some(list) = status
        .get_mut("containerStatuses")
        .and_then(Json::as_array_mut)
    {
        for s in list {
            if let Some(running) = s
                .pointer_mut("/state/running")
                .and_then(Json::as_object_mut)
            {
                running.remove("startedAt");
            }
        }
    }
    status
}

fn reconcile_deployment(
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
    let id = template_id(&template);
    let wanted: Vec<(String, Json)> = (0..replicas)
        .map(|i| (format!("{}-{id}-{i}", key.name), template.clone()))
        .collect();
    let owner = format!("Deployment/{}", key.name);
    let available = pods_for(data, events, &key.namespace, &owner, &wanted, ready_after);
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

/// A StatefulSet: pods `<name>-<ordinal>`, all started at once (Parallel). With `OnDelete`
/// a pod keeps the template it was created from until it is deleted; with `RollingUpdate`
/// it is replaced by one of the current template.
fn reconcile_statefulset(
    data: &mut Data,
    events: &broadcast::Sender<WatchEvent>,
    key: &Key,
    set: &Json,
    ready_after: Duration,
) {
    let replicas = set
        .pointer("/spec/replicas")
        .and_then(Json::as_i64)
        .unwrap_or(1)
        .max(0);
    let template = set.pointer("/spec/template").cloned().unwrap_or(Json::Null);
    let on_delete = set
        .pointer("/spec/updateStrategy/type")
        .and_then(Json::as_str)
        == Some("OnDelete");
    let pod_resource = Resource::by_kind("Pod");
    let mut wanted = Vec::new();
    let mut updated = 0;
    for ordinal in 0..replicas {
        let name = format!("{}-{ordinal}", key.name);
        let pod_key = Key {
            resource: pod_resource,
            namespace: key.namespace.clone(),
            name: name.clone(),
        };
        let kept = data
            .pod_templates
            .entry(pod_key.clone())
            .or_insert_with(|| template.clone());
        if !on_delete {
            *kept = template.clone();
        }
        if *kept == template {
            updated += 1;
        }
        let mut pod_template = kept.clone();
        // The StatefulSet controller labels each pod with its own name.
        pod_template["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(name);
        wanted.push((name, pod_template));
    }
    let owner = format!("StatefulSet/{}", key.name);
    let ready = pods_for(data, events, &key.namespace, &owner, &wanted, ready_after);
    let generation = set
        .pointer("/metadata/generation")
        .and_then(Json::as_i64)
        .unwrap_or(1);
    let revision = format!("{}-{}", key.name, template_id(&template));
    let status = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": replicas,
        "updatedReplicas": updated,
        "currentRevision": revision,
        "updateRevision": revision,
    });
    if set.get("status") != Some(&status) {
        let mut changed = set.clone();
        changed["status"] = status;
        data.store(key.clone(), changed, events);
    }
}

/// When each simulated pod was created, and the start-up time it got then.
pub type Births = HashMap<Key, (Instant, Duration)>;
