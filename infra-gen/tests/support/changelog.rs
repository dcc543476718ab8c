//! Every change to the objects of one namespace, as a watch sees them on a real API server:
//! the counterpart of the double's change log, so the "traffic only ever reached ready pods"
//! invariants hold on both. Watches are open before [`ChangeLog::start`] returns; the events
//! of all kinds are merged in resourceVersion order (etcd's revision: one order for all).

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, WatchEvent, WatchParams,
};
use serde_json::Value as Json;

/// (resourceVersion, `ADDED`/`MODIFIED`/`DELETED`, kind, name, object).
pub type Entry = (u64, &'static str, String, String, Json);

/// The kinds the invariants look at.
const KINDS: [(&str, &str, &str, &str); 6] = [
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("", "v1", "Service", "services"),
    ("networking.k8s.io", "v1", "Ingress", "ingresses"),
    ("", "v1", "Pod", "pods"),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
    ),
];

pub struct ChangeLog {
    entries: Arc<Mutex<Vec<Entry>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ChangeLog {
    pub async fn start(client: kube::Client, namespace: &str) -> Self {
        let entries = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (group, version, kind, plural) in KINDS {
            let resource = ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(group, version, kind),
                plural,
            );
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            let mut rv = api
                .list(&ListParams::default())
                .await
                .expect("list before watching")
                .metadata
                .resource_version
                .unwrap_or_default();
            let first = api
                .watch(&WatchParams::default().timeout(290), &rv)
                .await
                .expect("open a watch");
            let entries = entries.clone();
            tasks.push(tokio::spawn(async move {
                let mut stream = first.boxed();
                loop {
                    while let Some(event) = stream.next().await {
                        let (kind_of_event, object) = match event {
                            Ok(WatchEvent::Added(o)) => ("ADDED", o),
                            Ok(WatchEvent::Modified(o)) => ("MODIFIED", o),
                            Ok(WatchEvent::Deleted(o)) => ("DELETED", o),
                            Ok(WatchEvent::Bookmark(b)) => {
                                rv = b.metadata.resource_version;
                                continue;
                            }
                            Ok(WatchEvent::Error(e)) => panic!("the {kind} watch failed: {e:?}"),
                            Err(_) => break,
                        };
                        rv = object.metadata.resource_version.clone().unwrap_or_default();
                        let name = object.metadata.name.clone().unwrap_or_default();
                        let json = serde_json::to_value(&object).unwrap_or_default();
                        entries.lock().unwrap().push((
                            rv.parse().unwrap_or_default(),
                            kind_of_event,
                            kind.to_owned(),
                            name,
                            json,
                        ));
                    }
                    match api.watch(&WatchParams::default().timeout(290), &rv).await {
                        Ok(next) => stream = next.boxed(),
                        Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                    }
                }
            }));
        }
        Self { entries, tasks }
    }

    /// Every change seen so far, oldest first.
    pub fn events(&self) -> Vec<Entry> {
        let mut out = self.entries.lock().unwrap().clone();
        out.sort_by_key(|e| e.0);
        out
    }
}

impl Drop for ChangeLog {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
