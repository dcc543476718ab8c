//! What the stand-in controller needs from a cluster: a view of the objects it watches and
//! the few writes it makes. The API-server double implements it over its own store; [`super::kube`]
//! over a real API server.

use std::collections::HashMap;
use std::future::Future;

use serde_json::Value as Json;

use super::Settings;

/// A copy of what the controller looks at.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Ingresses of class `alb`.
    pub ingresses: Vec<Json>,
    pub services: Vec<Json>,
    pub pods: Vec<Json>,
    pub bindings: Vec<Json>,
    /// The controller's behaviour in each namespace it serves; a namespace missing here has
    /// no controller (nothing is made or changed for it).
    pub settings: HashMap<String, Settings>,
}

/// A readiness-gate condition the controller sets on a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateResult {
    pub namespace: String,
    pub pod: String,
    /// The condition type, `target-health.elbv2.k8s.aws/<binding>`.
    pub gate: String,
    /// The pod's target is `healthy`.
    pub healthy: bool,
    /// ELBv2's reason for the target's state (e.g. `Elb.RegistrationInProgress`).
    pub reason: String,
}

/// A cluster the controller reconciles.
pub trait Cluster {
    fn snapshot(&self) -> impl Future<Output = Snapshot>;
    /// Creates or updates a TargetGroupBinding.
    fn put_binding(&self, namespace: &str, name: &str, binding: Json) -> impl Future<Output = ()>;
    fn delete_binding(&self, namespace: &str, name: &str) -> impl Future<Output = ()>;
    /// Writes the load balancer's DNS name into an Ingress's or Service's status.
    fn set_hostname(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        dns: &str,
    ) -> impl Future<Output = ()>;
    /// Sets the readiness-gate conditions (only changes need a write).
    fn set_gates(&self, results: Vec<GateResult>) -> impl Future<Output = ()>;
}
