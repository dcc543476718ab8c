//! The load-balancer stand-in (`testbed::lb`, the same one the real control plane of the
//! test command runs) inside the double: the double's store as its [`Cluster`]. Its
//! readiness-gate webhook is the kubelet module's call to [`testbed::lb::gates_for`] when
//! the double creates a pod.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value as Json, json};
use testbed::lb::{Cluster, Controller, GateResult, Pace, Settings, Snapshot};

use super::{Key, Resource, Shared, new_metadata};

/// The simulated controller of one double: moto's endpoint and how it behaves (at the
/// double's fast pace where a timing is left open: targets healthy after a second, rules
/// changed at the next reconcile).
#[derive(Debug, Clone)]
pub struct LbSim {
    pub moto: String,
    pub settings: Settings,
}

impl LbSim {
    /// A controller that works, on `moto`.
    pub fn new(moto: &str) -> Self {
        Self {
            moto: moto.to_owned(),
            settings: Settings::default(),
        }
    }
}

impl std::ops::Deref for LbSim {
    type Target = Settings;
    fn deref(&self) -> &Settings {
        &self.settings
    }
}

impl std::ops::DerefMut for LbSim {
    fn deref_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }
}

fn text<'a>(value: &'a Json, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
}

/// The double as the controller's cluster.
pub(super) struct DoubleCluster(Arc<Shared>);

/// The objects the controller (and its webhook) look at, from the double's store.
pub(super) fn snapshot(shared: &Shared) -> Snapshot {
    let settings = shared
        .options
        .lock()
        .unwrap()
        .lb
        .as_ref()
        .map(|sim| sim.settings.clone());
    let data = shared.data.lock().unwrap();
    let of = |kind: &str| data.of_kind(kind);
    let namespaces: HashMap<String, Settings> = match settings {
        Some(settings) => data
            .objects
            .keys()
            .filter(|k| k.resource.kind == "Namespace")
            .map(|k| (k.name.clone(), settings.clone()))
            .collect(),
        None => HashMap::new(),
    };
    Snapshot {
        ingresses: of("Ingress")
            .into_iter()
            .filter(|i| text(i, "/spec/ingressClassName") == "alb")
            .collect(),
        services: of("Service"),
        pods: of("Pod"),
        bindings: of("TargetGroupBinding"),
        settings: namespaces,
    }
}

fn key(kind: &str, namespace: &str, name: &str) -> Key {
    Key {
        resource: Resource::by_kind(kind),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

impl Cluster for DoubleCluster {
    async fn snapshot(&self) -> Snapshot {
        snapshot(&self.0)
    }

    async fn put_binding(&self, namespace: &str, name: &str, binding: Json) {
        let mut data = self.0.data.lock().unwrap();
        let key = key("TargetGroupBinding", namespace, name);
        let mut object = binding;
        if let Some(existing) = data.objects.get(&key) {
            object["metadata"]["uid"] = existing["metadata"]["uid"].clone();
            object["metadata"]["creationTimestamp"] =
                existing["metadata"]["creationTimestamp"].clone();
        }
        new_metadata(&mut object, &key);
        let events = self.0.events.clone();
        data.store(key, object, &events);
    }

    async fn delete_binding(&self, namespace: &str, name: &str) {
        let mut data = self.0.data.lock().unwrap();
        let events = self.0.events.clone();
        data.remove(&key("TargetGroupBinding", namespace, name), &events);
    }

    async fn set_hostname(&self, kind: &str, namespace: &str, name: &str, dns: &str) {
        let mut data = self.0.data.lock().unwrap();
        let key = key(kind, namespace, name);
        let Some(mut object) = data.objects.get(&key).cloned() else {
            return;
        };
        object["status"] = json!({"loadBalancer": {"ingress": [{"hostname": dns}]}});
        let events = self.0.events.clone();
        data.store(key, object, &events);
    }

    async fn set_gates(&self, results: Vec<GateResult>) {
        let mut data = self.0.data.lock().unwrap();
        for result in results {
            let entry = (key("Pod", &result.namespace, &result.pod), result.gate);
            if result.healthy {
                data.gates_passed.insert(entry);
            } else {
                data.gates_passed.remove(&entry);
            }
        }
    }
}

/// The simulated controller, every 300 ms.
pub(super) async fn run(shared: Arc<Shared>, moto: String) {
    let mut controller = Controller::new(&moto, Pace::Fast)
        .await
        .expect("the load-balancer stand-in needs moto's default VPC");
    let cluster = DoubleCluster(shared);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        controller.reconcile(&cluster).await;
    }
}
