//! The EndpointSlice controller of the double: one slice per Service with a selector, an
//! endpoint per pod it selects that has an IP, with the conditions kube-controller-manager
//! writes (`ready`: Ready and not terminating; `serving`: Ready; `terminating`), as Gateway
//! implementations and cloud load balancers read them.

use serde_json::{Value as Json, json};
use tokio::sync::broadcast;

use super::{Data, Key, Resource, WatchEvent, new_metadata};

fn text<'a>(value: &'a Json, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
}

fn selects(selector: &serde_json::Map<String, Json>, pod: &Json) -> bool {
    let labels = pod.pointer("/metadata/labels").and_then(Json::as_object);
    !selector.is_empty()
        && labels.is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v)))
}

/// Brings every Service's slice up to date (written only when it changed); nothing to do
/// while no object changed since the last time.
pub fn reconcile(data: &mut Data, events: &broadcast::Sender<WatchEvent>) {
    if data.endpoints_rv == data.rv {
        return;
    }
    let services = data.of_kind("Service");
    let pods = data.of_kind("Pod");
    let mut wanted = Vec::new();
    for service in &services {
        let Some(selector) = service.pointer("/spec/selector").and_then(Json::as_object) else {
            continue;
        };
        let namespace = text(service, "/metadata/namespace");
        let name = text(service, "/metadata/name");
        let endpoints: Vec<Json> = pods
            .iter()
            .filter(|p| text(p, "/metadata/namespace") == namespace && selects(selector, p))
            .filter(|p| !text(p, "/status/podIP").is_empty())
            .map(|p| {
                let ready = p
                    .pointer("/status/conditions")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                let terminating = p.pointer("/metadata/deletionTimestamp").is_some();
                json!({
                    "addresses": [text(p, "/status/podIP")],
                    "conditions": {"ready": ready && !terminating, "serving": ready, "terminating": terminating},
                    "targetRef": {"kind": "Pod", "namespace": namespace, "name": text(p, "/metadata/name")},
                })
            })
            .collect();
        let key = Key {
            resource: Resource::by_kind("EndpointSlice"),
            namespace: namespace.to_owned(),
            name: format!("{name}-double"),
        };
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": key.name, "namespace": namespace, "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            }},
            "addressType": "IPv4",
            "endpoints": endpoints,
        });
        wanted.push((key, slice));
    }
    let stale: Vec<Key> = data
        .objects
        .keys()
        .filter(|k| k.resource.kind == "EndpointSlice")
        .filter(|k| !wanted.iter().any(|(w, _)| w == *k))
        .cloned()
        .collect();
    for key in stale {
        data.remove(&key, events);
    }
    for (key, mut slice) in wanted {
        match data.objects.get(&key) {
            Some(live) if live["endpoints"] == slice["endpoints"] => continue,
            Some(live) => {
                slice["metadata"]["uid"] = live["metadata"]["uid"].clone();
                slice["metadata"]["creationTimestamp"] =
                    live["metadata"]["creationTimestamp"].clone();
            }
            None => {}
        }
        new_metadata(&mut slice, &key);
        data.store(key, slice, events);
    }
    data.endpoints_rv = data.rv;
}
