//! Waiting for a Deployment to have every replica available: a watch on the Deployment
//! (re-established by kube's watcher when the API server drops it), a look at its pods every
//! two seconds for problems that waiting cannot fix, and a deadline. A problem the kubelet
//! may still clear by itself (one failed pull, one crash) only stops the wait once it has
//! lasted [`diagnose::PERSISTENT_FOR`]; a lost deploy lock stops it at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::runtime::{WatchStreamExt, watcher};

use super::diagnose::{self, PodProblem, Urgency};
use super::{Cluster, ClusterError};

/// Why a Deployment did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed.
    #[error("{name}: {ready}/{desired} replicas available after {waited:?}{}", problems_text(.problems))]
    Timeout {
        /// Deployment.
        name: String,
        /// Available replicas.
        ready: i32,
        /// Wanted replicas.
        desired: i32,
        /// How long we waited.
        waited: Duration,
        /// What the pods are stuck on.
        problems: Vec<PodProblem>,
    },
    /// A pod is in a state waiting cannot fix (crash loop, bad image, no Fargate profile).
    #[error("{name} cannot become ready{}", problems_text(.problems))]
    Failed {
        /// Deployment.
        name: String,
        /// The problems.
        problems: Vec<PodProblem>,
    },
    /// The cluster could not be asked.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

fn problems_text(problems: &[PodProblem]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = problems
        .iter()
        .take(5)
        .map(|p| format!("\n  - {p}"))
        .collect();
    format!(":{}", lines.concat())
}

/// Replica counts of a Deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replicas {
    /// spec.replicas.
    pub desired: i32,
    /// Pods of the current template.
    pub updated: i32,
    /// Available pods.
    pub available: i32,
    /// All pods (old templates included).
    pub total: i32,
    /// Whether the controller has seen the latest spec.
    pub observed: bool,
}

impl Replicas {
    /// Counts of a Deployment.
    pub fn of(deployment: &Deployment) -> Self {
        let status = deployment.status.clone().unwrap_or_default();
        let generation = deployment.metadata.generation.unwrap_or(0);
        Self {
            desired: deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1),
            updated: status.updated_replicas.unwrap_or(0),
            available: status.available_replicas.unwrap_or(0),
            total: status.replicas.unwrap_or(0),
            observed: status.observed_generation.unwrap_or(0) >= generation,
        }
    }

    /// Counts of a StatefulSet (OnDelete: pods of an older template count, they are the
    /// version's servers too).
    pub fn of_statefulset(set: &StatefulSet) -> Self {
        let status = set.status.clone().unwrap_or_default();
        let generation = set.metadata.generation.unwrap_or(0);
        let desired = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        Self {
            desired,
            updated: status.replicas,
            available: status
                .available_replicas
                .unwrap_or(status.ready_replicas.unwrap_or(0)),
            total: status.replicas,
            observed: status.observed_generation.unwrap_or(0) >= generation,
        }
    }

    /// Every wanted replica runs the current template and is available, and no old pod is left.
    pub fn is_complete(&self) -> bool {
        self.observed
            && self.updated == self.desired
            && self.available == self.desired
            && self.total == self.desired
    }
}

/// Waits until the Deployment `name` is complete. `report` receives a line whenever the
/// state a person would want to see changes ("2/3 available — pod x: ContainerCreating").
pub async fn deployment_ready(
    cluster: &Cluster,
    name: &str,
    selector: &str,
    timeout: Duration,
    report: &mut (dyn FnMut(&str) + Send),
) -> Result<(), WaitError> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(cluster.deployments(), config)
        .default_backoff()
        .map(|e| {
            e.map(|event| match event {
                watcher::Event::Apply(d) | watcher::Event::InitApply(d) => Some(Replicas::of(&d)),
                _ => None,
            })
        })
        .boxed();
    ready(cluster, name, selector, timeout, report, events).await
}

/// Waits until the StatefulSet `name` has every replica ready (see [`deployment_ready`]).
pub async fn statefulset_ready(
    cluster: &Cluster,
    name: &str,
    selector: &str,
    timeout: Duration,
    report: &mut (dyn FnMut(&str) + Send),
) -> Result<(), WaitError> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(cluster.statefulsets(), config)
        .default_backoff()
        .map(|e| {
            e.map(|event| match event {
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
                    Some(Replicas::of_statefulset(&s))
                }
                _ => None,
            })
        })
        .boxed();
    ready(cluster, name, selector, timeout, report, events).await
}

/// The replica counts a watch reports (`None`: an event without an object).
type Events = futures::stream::BoxStream<'static, Result<Option<Replicas>, watcher::Error>>;

async fn ready(
    cluster: &Cluster,
    name: &str,
    selector: &str,
    timeout: Duration,
    report: &mut (dyn FnMut(&str) + Send),
    mut events: Events,
) -> Result<(), WaitError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pod_check = tokio::time::interval(Duration::from_secs(2));
    let mut lock_check = tokio::time::interval(Duration::from_millis(250));
    let mut replicas = Replicas::default();
    let mut problems: Vec<PodProblem> = Vec::new();
    // Since when each (pod, reason) has been seen without a break.
    let mut seen_since: HashMap<(String, String), Instant> = HashMap::new();
    let mut last_line = String::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Some(r))) => replicas = r,
                Some(Ok(None)) => {}
                Some(Err(error)) => tracing::debug!(%error, "deployment watch interrupted; kube re-establishes it"),
                None => {}
            },
            _ = lock_check.tick() => cluster.check_lock(&format!("wait for {name}"))?,
            _ = pod_check.tick() => {
                problems = diagnose::problems(cluster, selector).await?;
                let now = Instant::now();
                seen_since.retain(|key, _| problems.iter().any(|p| p.pod == key.0 && p.reason == key.1));
                let mut stuck = Vec::new();
                for problem in &problems {
                    let since = *seen_since
                        .entry((problem.pod.clone(), problem.reason.clone()))
                        .or_insert(now);
                    let lasted = now.duration_since(since);
                    match problem.urgency {
                        Urgency::Fatal => stuck.push(problem.clone()),
                        Urgency::Persistent if lasted >= diagnose::PERSISTENT_FOR => {
                            let mut p = problem.clone();
                            p.detail = format!("{}; for {} s", p.detail, lasted.as_secs()).trim_start_matches("; ").to_owned();
                            stuck.push(p);
                        }
                        _ => {}
                    }
                }
                if !stuck.is_empty() {
                    if let Some(first) = stuck.first_mut() {
                        diagnose::attach_logs(cluster, first).await;
                    }
                    return Err(WaitError::Failed { name: name.to_owned(), problems: stuck });
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                // What the pods say now, not at the last check up to two seconds ago: a pod
                // created late in the wait may only just have been given its reason.
                if let Ok(now) = diagnose::problems(cluster, selector).await {
                    problems = now;
                }
                if let Some(first) = problems.first_mut() {
                    diagnose::attach_logs(cluster, first).await;
                }
                return Err(WaitError::Timeout {
                    name: name.to_owned(),
                    ready: replicas.available,
                    desired: replicas.desired,
                    waited: started.elapsed(),
                    problems,
                });
            }
        }
        if replicas.is_complete() {
            report(&format!(
                "{name}: {}/{} available",
                replicas.available, replicas.desired
            ));
            return Ok(());
        }
        let mut line = format!(
            "{name}: {}/{} available",
            replicas.available, replicas.desired
        );
        if let Some(p) = problems.first() {
            line.push_str(&format!(" — {p}"));
        }
        if line != last_line {
            report(&line);
            last_line = line;
        }
    }
}
