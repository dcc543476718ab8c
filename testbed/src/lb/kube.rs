//! The stand-in controller on a real API server: it watches what the real controller watches
//! through reflectors (its cache) and writes as the real controller writes (TargetGroupBindings,
//! load-balancer status, pod readiness-gate conditions).

use std::collections::HashMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value as Json, json};

use super::cluster::{Cluster, GateResult, Snapshot};
use super::settings::{ANNOTATION, Settings};

/// The field manager of every write, as the real controller's.
const MANAGER: &str = "aws-load-balancer-controller";

/// The TargetGroupBinding resource.
pub fn binding_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("elbv2.k8s.aws", "v1beta1", "TargetGroupBinding"),
        "targetgroupbindings",
    )
}

/// The controller's cache of a real cluster.
#[derive(Clone)]
pub struct KubeCluster {
    client: kube::Client,
    ingresses: Store<Ingress>,
    services: Store<Service>,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    bindings: Store<DynamicObject>,
}

fn spawn_reflector<K>(api: Api<K>, writer: reflector::store::Writer<K>)
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(error) = event {
                tracing::warn!(%error, "watch failed; retrying");
            }
        }
    });
}

impl KubeCluster {
    /// Starts the watches and waits until every cache holds a first list.
    pub async fn start(client: kube::Client) -> anyhow::Result<Self> {
        let (ingresses, w1) = reflector::store();
        spawn_reflector(Api::<Ingress>::all(client.clone()), w1);
        let (services, w2) = reflector::store();
        spawn_reflector(Api::<Service>::all(client.clone()), w2);
        let (pods, w3) = reflector::store();
        spawn_reflector(Api::<Pod>::all(client.clone()), w3);
        let (namespaces, w4) = reflector::store();
        spawn_reflector(Api::<Namespace>::all(client.clone()), w4);
        let resource = binding_resource();
        let w5 = reflector::store::Writer::new(resource.clone());
        let bindings = w5.as_reader();
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        let stream = reflector::reflector(w5, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(error) = event {
                    tracing::warn!(%error, "TargetGroupBinding watch failed; retrying");
                }
            }
        });
        for ready in [
            ingresses.wait_until_ready().await,
            services.wait_until_ready().await,
            pods.wait_until_ready().await,
            namespaces.wait_until_ready().await,
            bindings.wait_until_ready().await,
        ] {
            ready?;
        }
        Ok(Self {
            client,
            ingresses,
            services,
            pods,
            namespaces,
            bindings,
        })
    }

    /// The controller's behaviour per namespace, from the namespaces' annotation: none
    /// means the real controller's, `off` no controller.
    fn settings(&self) -> HashMap<String, Settings> {
        let mut out = HashMap::new();
        for namespace in self.namespaces.state() {
            let Some(name) = namespace.metadata.name.clone() else {
                continue;
            };
            // A namespace being deleted takes no new objects; the controller leaves it be.
            if namespace.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let annotation = namespace
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION));
            match annotation.map(String::as_str) {
                Some("off") => {}
                Some(text) => match serde_json::from_str::<Settings>(text) {
                    Ok(settings) => {
                        out.insert(name, settings);
                    }
                    Err(error) => {
                        tracing::warn!(namespace = name, %error, "ignoring a bad {ANNOTATION} annotation");
                    }
                },
                None => {
                    out.insert(name, Settings::default());
                }
            }
        }
        out
    }
}

fn to_json<T: serde::Serialize>(items: Vec<std::sync::Arc<T>>) -> Vec<Json> {
    items
        .iter()
        .filter_map(|o| serde_json::to_value(o.as_ref()).ok())
        .collect()
}

impl Cluster for KubeCluster {
    async fn snapshot(&self) -> Snapshot {
        Snapshot {
            ingresses: to_json(self.ingresses.state())
                .into_iter()
                .filter(|i| {
                    i.pointer("/spec/ingressClassName").and_then(Json::as_str) == Some("alb")
                })
                .collect(),
            services: to_json(self.services.state()),
            pods: to_json(self.pods.state()),
            bindings: to_json(self.bindings.state()),
            settings: self.settings(),
        }
    }

    async fn put_binding(&self, namespace: &str, name: &str, binding: Json) {
        let api = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            namespace,
            &binding_resource(),
        );
        if let Err(error) = api
            .patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&binding),
            )
            .await
        {
            tracing::warn!(namespace, name, %error, "could not write the TargetGroupBinding");
        }
    }

    async fn delete_binding(&self, namespace: &str, name: &str) {
        let api = Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            namespace,
            &binding_resource(),
        );
        let _ = api.delete(name, &DeleteParams::default()).await;
    }

    async fn set_hostname(&self, kind: &str, namespace: &str, name: &str, dns: &str) {
        let status = json!({"status": {"loadBalancer": {"ingress": [{"hostname": dns}]}}});
        let result = match kind {
            "Ingress" => Api::<Ingress>::namespaced(self.client.clone(), namespace)
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map(drop),
            _ => Api::<Service>::namespaced(self.client.clone(), namespace)
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .map(drop),
        };
        if let Err(error) = result {
            tracing::warn!(kind, namespace, name, %error, "could not write the load balancer's status");
        }
    }

    async fn set_gates(&self, results: Vec<GateResult>) {
        let pods: HashMap<(String, String), std::sync::Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter_map(|p| Some(((p.metadata.namespace.clone()?, p.metadata.name.clone()?), p)))
            .collect();
        for result in results {
            let Some(pod) = pods.get(&(result.namespace.clone(), result.pod.clone())) else {
                continue;
            };
            let status = if result.healthy { "True" } else { "False" };
            let current = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|c| c.iter().find(|c| c.type_ == result.gate));
            if current.is_some_and(|c| c.status == status) {
                continue;
            }
            let condition = json!({
                "type": result.gate,
                "status": status,
                "reason": if result.healthy { "" } else { result.reason.as_str() },
                "lastTransitionTime": crate::time_now(),
            });
            let patch = json!({"status": {"conditions": [condition]}});
            let _ = Api::<Pod>::namespaced(self.client.clone(), &result.namespace)
                .patch_status(
                    &result.pod,
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await;
        }
    }
}
