//! End-to-end: the real `infra-gen` binary against the API-server double, or — unchanged —
//! against a real cluster when `INFRA_GEN_E2E_KUBECONFIG` is set. Assertions read the cluster
//! through the Kubernetes API, never the double's internals; checks that need the double's
//! change log say so and are skipped against a real cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of the support code
#[path = "../support/mod.rs"]
mod support;

mod applyset;
mod canary;
mod capacity;
mod deploy;
mod gameservers;
mod gateway;
mod loadbalancer;
mod lock;
mod recovery;
mod stateful;

/// A blue-green web workload with two replicas and the default delay.
const BLUE_GREEN: &str =
    "    replicas: 2\n    rollout: {strategy: blue-green, scaleDownDelaySeconds: 600}\n";
