//! Stateful game servers: versions side by side. Each release of a `stateful` workload is its
//! own StatefulSet `<name>-<version>` with a headless Service of the same name (stable per-pod
//! DNS names; `SERVER_ID` is the pod name), started beside the versions that still run. Once
//! every replica of the new version is ready (and, behind a load balancer, a healthy target),
//! **new connections** move to it — the stable NLB Service's selector, or the ALB forward
//! action's weights — while the old versions keep running with their established
//! connections until they are retired (`infra-gen retire`, or `retireAfterSeconds` in the
//! delayed `finalize`). Pods are never restarted by a template change (`OnDelete`).
//!
//! What happens to an established connection when new ones move (see the README):
//! - NLB: the old version's pods leave the stable Service, their targets are deregistered
//!   and drain; with connection termination off (the default), the NLB keeps forwarding an
//!   established flow to a deregistered target that stays healthy — "If a deregistered target
//!   stays healthy and an existing connection is not idle, the load balancer can continue to
//!   send traffic to the target" (ELB User Guide for Network Load Balancers, "Deregistration
//!   delay") — until it idles out (`tcp.idleTimeoutSeconds`, AWS default 350 s) or the pod
//!   stops at retire.
//! - ALB: weight 0 deregisters nothing (the target group stays registered), so an open
//!   WebSocket stays on its target until the idle timeout (`http.idleTimeoutSeconds`, AWS
//!   default 60 s of silence) or retire.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value as Json, json};

use super::desired::StatefulSpec;
use super::history::{self, Release};
use super::progress::Progress;
use super::verify::LbCheck;
use super::{REVISION, RolloutError, RolloutResult, TEMPLATE, hash, is_up_to_date, stamped};
use crate::cluster::wait::{self, Replicas, WaitError};
use crate::cluster::{Cluster, Kind, name_of};
use crate::render::context::{annotations, labels, versions_action};

/// How many target groups one ALB rule forwards to at most (an AWS limit, not adjustable).
pub const MAX_FORWARD_GROUPS: usize = 5;

/// Annotation of an old version: when `finalize` retires it.
pub const RETIRE_AT: &str = "infra-gen.dev/retire-at";

/// One running version.
#[derive(Debug, Clone)]
pub struct Version {
    /// The version (a DNS label).
    pub version: String,
    /// `<name>-<version>`.
    pub name: String,
    /// The StatefulSet.
    pub statefulset: Json,
    /// `spec.replicas`.
    pub replicas: i32,
    /// Ready pods.
    pub ready: i32,
    /// When it was created.
    pub created: Option<Timestamp>,
    /// When `finalize` retires it.
    pub retire_at: Option<Timestamp>,
}

/// A stateful workload as the cluster holds it.
#[derive(Debug, Clone)]
pub struct StatefulState {
    /// Running versions, oldest first.
    pub versions: Vec<Version>,
    /// The version new connections go to (`None`: nothing deployed yet, or, behind the NLB,
    /// a switch was interrupted while it selected every version).
    pub live: Option<String>,
    /// This workload's releases, newest first.
    pub releases: Vec<Release>,
}

impl StatefulState {
    /// A running version.
    pub fn version(&self, version: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.version == version)
    }
}

/// One stateful workload's operations.
pub struct Stateful<'a> {
    /// The cluster.
    pub cluster: &'a Cluster,
    /// The workload's objects from the tree.
    pub spec: &'a StatefulSpec,
    /// Progress output.
    pub progress: &'a Progress,
    /// How long a version may take to become ready.
    pub timeout: Duration,
    /// Who deploys (for the history).
    pub by: &'a str,
    /// The revision (for the history).
    pub revision: &'a str,
    /// The load-balancer checks (`None`: `--no-verify-lb`).
    pub lb: Option<&'a LbCheck>,
}

fn text<'a>(value: &'a Json, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
}

fn with_label(map: Option<&Json>, key: &str, value: &str) -> Json {
    let mut out = map.cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = out.as_object_mut() {
        m.insert(key.to_owned(), Json::String(value.to_owned()));
    }
    out
}

/// An object as the cluster holds it, reduced to what a tree's object has.
fn as_applied(object: &Json) -> Json {
    let meta = object.get("metadata").cloned().unwrap_or_default();
    let mut out = json!({
        "apiVersion": object.get("apiVersion").cloned().unwrap_or_default(),
        "kind": object.get("kind").cloned().unwrap_or_default(),
        "metadata": {
            "name": meta.get("name").cloned().unwrap_or_default(),
            "namespace": meta.get("namespace").cloned().unwrap_or_default(),
        },
        "spec": object.get("spec").cloned().unwrap_or_default(),
    });
    for key in ["labels", "annotations"] {
        if let Some(value) = meta.get(key) {
            out["metadata"][key] = value.clone();
        }
    }
    out
}

fn without_label(map: Option<&Json>, key: &str) -> Json {
    let mut out = map.cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = out.as_object_mut() {
        m.remove(key);
    }
    out
}

/// The spec of a stateful workload that left the tree, from what still runs of it (so its
/// old versions can be retired): `None` when no version of it runs.
pub async fn departed_spec(
    cluster: &Cluster,
    workload: &str,
) -> RolloutResult<Option<StatefulSpec>> {
    let selector = format!("{}={workload},{}", labels::NAME, labels::RELEASE);
    let mut sets = cluster.list(Kind::StatefulSet, &selector, None).await?;
    sets.sort_by_key(|s| text(s, "/metadata/creationTimestamp").to_owned());
    let Some(newest) = sets.last() else {
        return Ok(None);
    };
    let version = text(newest, "/metadata/labels/infra-gen.dev~1version").to_owned();
    let mut statefulset = as_applied(newest);
    statefulset["metadata"]["name"] = Json::String(workload.to_owned());
    statefulset["metadata"]["labels"] =
        without_label(statefulset.pointer("/metadata/labels"), labels::RELEASE);
    statefulset["spec"]["selector"]["matchLabels"] = without_label(
        statefulset.pointer("/spec/selector/matchLabels"),
        labels::RELEASE,
    );
    let headless = cluster
        .get(Kind::Service, name_of(newest))
        .await?
        .map(|s| {
            let mut s = as_applied(&s);
            s["metadata"]["labels"] = without_label(s.pointer("/metadata/labels"), labels::RELEASE);
            s["spec"]["selector"] = without_label(s.pointer("/spec/selector"), labels::RELEASE);
            s
        })
        .unwrap_or_else(
            || json!({"apiVersion": "v1", "kind": "Service", "metadata": {}, "spec": {}}),
        );
    let stable = cluster
        .get(Kind::Service, workload)
        .await?
        .map(|s| as_applied(&s));
    let ingress = cluster
        .get(Kind::Ingress, workload)
        .await?
        .map(|i| as_applied(&i));
    let nlb = stable
        .as_ref()
        .is_some_and(|s| text(s, "/spec/type") == "LoadBalancer");
    Ok(Some(StatefulSpec {
        name: workload.to_owned(),
        version,
        statefulset,
        headless,
        stable,
        ingress,
        hpa: None,
        nlb,
        retire_after: None,
        departed: true,
    }))
}

impl Stateful<'_> {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn say(&self, message: &str) {
        self.progress.step(&format!("{}: {message}", self.name()));
    }

    /// The environment (its label on the workload's objects), for commands to suggest.
    fn env_name(&self) -> &str {
        text(
            &self.spec.statefulset,
            "/metadata/labels/infra-gen.dev~1environment",
        )
    }

    fn versioned(&self, version: &str) -> String {
        format!("{}-{version}", self.name())
    }

    /// The pod-template hash of the desired release.
    pub fn template_hash(&self) -> String {
        hash(
            self.spec
                .statefulset
                .pointer("/spec/template")
                .unwrap_or(&Json::Null),
        )
    }

    fn base_selector(&self) -> Json {
        self.spec
            .statefulset
            .pointer("/spec/selector/matchLabels")
            .cloned()
            .unwrap_or_else(|| json!({}))
    }

    fn selector_text(&self, version: Option<&str>) -> String {
        let mut parts: Vec<String> = self
            .base_selector()
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        if let Some(version) = version {
            parts.push(format!("{}={version}", labels::RELEASE));
        }
        parts.join(",")
    }

    /// Reads the running versions and where new connections go.
    pub async fn observe(&self) -> RolloutResult<StatefulState> {
        let releases = history::read(self.cluster)
            .await?
            .remove(self.name())
            .unwrap_or_default();
        let mut versions: Vec<Version> = self
            .cluster
            .list(Kind::StatefulSet, &self.selector_text(None), None)
            .await?
            .into_iter()
            .filter_map(|set| {
                let version = set
                    .pointer("/metadata/labels")
                    .and_then(|l| l.get(labels::RELEASE))
                    .and_then(Json::as_str)?
                    .to_owned();
                let int = |p: &str| {
                    set.pointer(p)
                        .and_then(Json::as_i64)
                        .and_then(|v| i32::try_from(v).ok())
                        .unwrap_or(0)
                };
                Some(Version {
                    name: name_of(&set).to_owned(),
                    replicas: int("/spec/replicas"),
                    ready: int("/status/readyReplicas"),
                    created: text(&set, "/metadata/creationTimestamp").parse().ok(),
                    retire_at: set
                        .pointer("/metadata/annotations")
                        .and_then(|a| a.get(RETIRE_AT))
                        .and_then(Json::as_str)
                        .and_then(history::parse_time),
                    statefulset: set,
                    version,
                })
            })
            .collect();
        versions.sort_by_key(|v| (v.created, v.name.clone()));
        // The newest recorded release that still runs.
        let recorded = releases
            .iter()
            .find(|r| versions.iter().any(|v| v.version == r.slot))
            .map(|r| r.slot.clone());
        let live = match (&self.spec.stable, &self.spec.ingress) {
            (_, Some(_)) => {
                let ingress = self.cluster.get(Kind::Ingress, self.name()).await?;
                let action = ingress.as_ref().and_then(|i| {
                    i.pointer("/metadata/annotations")?
                        .get(format!("alb.ingress.kubernetes.io/actions.{}", self.name()))?
                        .as_str()
                        .and_then(|a| serde_json::from_str::<Json>(a).ok())
                });
                action.and_then(|a| {
                    a.pointer("/forwardConfig/targetGroups")?
                        .as_array()?
                        .iter()
                        .filter(|g| g.get("weight").and_then(Json::as_i64).unwrap_or(0) > 0)
                        .max_by_key(|g| g.get("weight").and_then(Json::as_i64).unwrap_or(0))
                        .and_then(|g| g.get("serviceName").and_then(Json::as_str))
                        .and_then(|s| s.strip_prefix(&format!("{}-", self.name())))
                        .map(str::to_owned)
                })
            }
            // A selector without a version (a release interrupted while the NLB selected
            // every version): the recorded one is live, the other is not switched to yet.
            (Some(_), None) => self
                .cluster
                .get(Kind::Service, self.name())
                .await?
                .and_then(|s| {
                    s.pointer("/spec/selector")?
                        .get(labels::RELEASE)?
                        .as_str()
                        .map(str::to_owned)
                })
                .or(recorded),
            // Not exposed: the newest release that still runs takes the new work.
            (None, None) => recorded,
        };
        Ok(StatefulState {
            live: live.filter(|l| versions.iter().any(|v| v.version == *l)),
            versions,
            releases,
        })
    }

    fn hpa_bounds(&self) -> Option<(i32, i32)> {
        super::hpa_bounds(self.spec.hpa.as_ref()?)
    }

    fn spec_replicas(&self) -> i32 {
        super::template_replicas(&self.spec.statefulset)
    }

    /// The StatefulSet of a version, from the tree's spec.
    fn statefulset(&self, version: &str, replicas: i32) -> Json {
        let mut s = self.spec.statefulset.clone();
        let name = self.versioned(version);
        s["metadata"]["name"] = Json::String(name.clone());
        s["metadata"]["labels"] =
            with_label(s.pointer("/metadata/labels"), labels::RELEASE, version);
        s["metadata"]["annotations"][TEMPLATE] = Json::String(self.template_hash());
        s["metadata"]["annotations"][REVISION] = Json::String(self.revision.to_owned());
        s["metadata"]["annotations"][annotations::VERSION] = Json::String(version.to_owned());
        s["spec"]["replicas"] = json!(replicas);
        s["spec"]["serviceName"] = Json::String(name);
        s["spec"]["selector"]["matchLabels"] = with_label(
            s.pointer("/spec/selector/matchLabels"),
            labels::RELEASE,
            version,
        );
        s["spec"]["template"]["metadata"]["labels"] = with_label(
            s.pointer("/spec/template/metadata/labels"),
            labels::RELEASE,
            version,
        );
        s["spec"]["template"]["metadata"]["labels"][labels::ACCEPTS] = json!(version);
        s
    }

    fn headless(&self, version: &str) -> Json {
        let mut s = self.spec.headless.clone();
        s["metadata"]["name"] = Json::String(self.versioned(version));
        s["metadata"]["labels"] =
            with_label(s.pointer("/metadata/labels"), labels::RELEASE, version);
        s["spec"]["selector"] = with_label(s.pointer("/spec/selector"), labels::RELEASE, version);
        s
    }

    /// The stable Service selecting `version`: where new connections go.
    fn stable(&self, version: &str) -> Option<Json> {
        let mut s = self.spec.stable.clone()?;
        s["spec"]["selector"] = with_label(s.pointer("/spec/selector"), labels::RELEASE, version);
        Some(s)
    }

    /// The stable Service while `version` is released: the pods labelled as accepting
    /// connections during its release — the live version's and its own — so its new pods
    /// are selected when created (they get their readiness gate) and no other version takes
    /// a new player.
    fn stable_during(&self, version: &str) -> Option<Json> {
        let mut s = self.spec.stable.clone()?;
        s["spec"]["selector"] = with_label(Some(&self.base_selector()), labels::ACCEPTS, version);
        Some(s)
    }

    /// The Ingress forwarding to `versions` with their weights.
    fn ingress(&self, weights: &[(String, u8)]) -> Option<Json> {
        let mut ingress = self.spec.ingress.clone()?;
        let services: Vec<(String, u8)> = weights
            .iter()
            .map(|(v, w)| (self.versioned(v), *w))
            .collect();
        ingress["metadata"]["annotations"]
            [format!("alb.ingress.kubernetes.io/actions.{}", self.name())] =
            Json::String(versions_action(&services));
        Some(ingress)
    }

    fn hpa(&self, version: &str) -> Option<Json> {
        let mut hpa = self.spec.hpa.clone()?;
        hpa["spec"]["scaleTargetRef"]["name"] = Json::String(self.versioned(version));
        Some(hpa)
    }

    async fn ensure(&self, object: &Json) -> RolloutResult<bool> {
        let desired = stamped(object);
        let kind = Kind::of(object)?;
        let live = self.cluster.get(kind, name_of(object)).await?;
        if is_up_to_date(&desired, live.as_ref()) {
            return Ok(false);
        }
        self.cluster.apply(&desired, false).await?;
        Ok(true)
    }

    /// The Service whose target groups carry a version's pods.
    fn lb_service(&self, version: &str) -> Option<String> {
        if self.spec.nlb {
            Some(self.name().to_owned())
        } else if self.spec.ingress.is_some() {
            Some(self.versioned(version))
        } else {
            None
        }
    }

    async fn wait_ready(&self, version: &str) -> Result<(), WaitError> {
        let name = self.versioned(version);
        let progress = self.progress;
        let mut report = |line: &str| progress.status(line);
        wait::statefulset_ready(
            self.cluster,
            &name,
            &self.selector_text(Some(version)),
            self.timeout,
            &mut report,
        )
        .await?;
        self.say(&format!("{name} is ready"));
        Ok(())
    }

    /// Whether the cluster runs the desired release with new connections on it (read-only).
    pub async fn is_converged(&self) -> RolloutResult<bool> {
        let state = self.observe().await?;
        let Some(live) = state.live.as_deref() else {
            return Ok(false);
        };
        let Some(running) = state.version(live) else {
            return Ok(false);
        };
        if live != self.spec.version || running.ready < running.replicas || running.replicas == 0 {
            return Ok(false);
        }
        if !is_up_to_date(
            &stamped(&self.statefulset(live, running.replicas)),
            Some(&running.statefulset),
        ) {
            return Ok(false);
        }
        if self.hpa_bounds().is_none() && running.replicas != self.spec_replicas() {
            return Ok(false);
        }
        if self.due_for_retirement(&state).next().is_some() {
            return Ok(false);
        }
        let routing = self
            .stable(live)
            .into_iter()
            .chain(self.ingress(&self.weights(&state, Some(live), Some(live))));
        for object in routing {
            let desired = stamped(&object);
            let current = self
                .cluster
                .get(Kind::of(&desired)?, name_of(&desired))
                .await?;
            if !is_up_to_date(&desired, current.as_ref()) {
                return Ok(false);
            }
        }
        Ok(history::is_latest(&state.releases, live, live))
    }

    /// Deploys the desired release: the live version is updated in place (its pods keep
    /// running); any other — new, left behind by an aborted or killed release, or an older
    /// one running again — is released beside the live one and takes the new connections.
    pub async fn deploy(&self) -> RolloutResult<()> {
        let state = self.observe().await?;
        let version = self.spec.version.clone();
        let name = self.versioned(&version);
        let Some(running) = state
            .version(&version)
            .filter(|_| state.live.as_deref() == Some(version.as_str()))
        else {
            return self.release(&state, &version, None, "deploy").await;
        };
        let replicas = match self.hpa_bounds() {
            Some((min, max)) => running.replicas.max(min).min(max.max(min)),
            None => self.spec_replicas(),
        };
        let desired = stamped(&self.statefulset(&version, replicas));
        let template_changed = running
            .statefulset
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(TEMPLATE))
            .and_then(Json::as_str)
            != Some(self.template_hash().as_str());
        if !is_up_to_date(&desired, Some(&running.statefulset)) {
            self.cluster.apply(&desired, false).await?;
            if template_changed {
                self.say(&format!(
                    "{name}: its pod template changed, but its {} running pod(s) keep the old one (updateStrategy OnDelete): only pods created later (a scale-up, a replaced pod) get it. To roll it out to every server, release a new version (a new image tag, or `version:`)",
                    running.replicas
                ));
            } else if running.replicas != replicas {
                self.say(&format!(
                    "{name}: {} → {replicas} replica(s)",
                    running.replicas
                ));
            } else {
                // Only the record of the revision that deployed it moved on: nothing a
                // player or an operator would call a change.
                self.say(&format!("{name} already runs this version"));
            }
        }
        if running.ready < replicas {
            self.ready_or_abort(&version, state.live.as_deref()).await?;
        }
        // Also when it is live already: an interrupted release may have left the NLB
        // selecting another version's pods too.
        let fresh = self.observe().await?;
        self.switch(&fresh, &version, state.live.as_deref()).await?;
        self.converge(&version, state.live.as_deref(), "deploy")
            .await
    }

    /// The ALB forwards to at most five target groups per rule (an AWS limit): a release
    /// that would need more is refused before anything is written, naming the versions to
    /// retire first.
    fn check_forward_limit(&self, state: &StatefulState, version: &str) -> RolloutResult<()> {
        if self.spec.ingress.is_none() {
            return Ok(());
        }
        let mut versions: Vec<&str> = state.versions.iter().map(|v| v.version.as_str()).collect();
        if !versions.contains(&version) {
            versions.push(version);
        }
        if versions.len() <= MAX_FORWARD_GROUPS {
            return Ok(());
        }
        let excess = versions.len() - MAX_FORWARD_GROUPS;
        let retire: Vec<String> = state
            .versions
            .iter()
            .filter(|v| Some(v.version.as_str()) != state.live.as_deref() && v.version != version)
            .take(excess)
            .map(|v| {
                format!(
                    "`infra-gen retire --env {} --workload {} --version {}`",
                    self.env_name(),
                    self.name(),
                    v.version
                )
            })
            .collect();
        Err(RolloutError::Preflight(format!(
            "{}: an ALB rule forwards to at most {MAX_FORWARD_GROUPS} target groups (an AWS limit), and releasing {version} beside {} would need {}; retire the oldest first: {}",
            self.name(),
            state
                .versions
                .iter()
                .map(|v| v.version.clone())
                .collect::<Vec<_>>()
                .join(", "),
            versions.len(),
            retire.join(", ")
        )))
    }

    /// Releases `version` beside the live one, through the same steps whatever its leftover
    /// state: a new version, one an aborted or killed release left behind, an older one
    /// running again, or a retired one (`object`: its recorded StatefulSet). The load
    /// balancer is made to select its pods before they are created (so each gets its
    /// readiness gate), pods that predate that are recreated, every pod must be ready (and,
    /// behind a load balancer, a healthy target) before new connections move to it.
    async fn release(
        &self,
        state: &StatefulState,
        version: &str,
        object: Option<Json>,
        action: &str,
    ) -> RolloutResult<()> {
        self.check_forward_limit(state, version)?;
        let name = self.versioned(version);
        let live = state.live.clone().filter(|l| l != version);
        let existing = state.version(version);
        let wanted = match self.hpa_bounds() {
            Some((min, max)) => live
                .as_deref()
                .and_then(|l| state.version(l))
                .map_or(min, |v| v.replicas)
                .max(min)
                .min(max.max(min)),
            None => self.spec_replicas(),
        }
        .max(existing.map_or(0, |v| v.replicas));
        self.ensure(&self.headless(version)).await?;
        if let Some(live) = &live {
            self.expose_during(state, live, version).await?;
            if let Some(ingress) = self.ingress(&self.weights(state, Some(live), Some(version))) {
                self.ensure(&ingress).await?;
            }
            self.wait_bound(version).await?;
        }
        match (object, existing) {
            // A retired version rolled back to: its recorded StatefulSet.
            (Some(mut object), _) => {
                object["spec"]["replicas"] = json!(wanted);
                object["spec"]["template"]["metadata"]["labels"][labels::ACCEPTS] = json!(version);
                self.cluster.apply(&stamped(&object), false).await?;
                self.say(&format!("started {name} again (it was retired)"));
            }
            // The tree's version: its StatefulSet as the tree has it.
            (None, _) if version == self.spec.version => {
                let desired = stamped(&self.statefulset(version, wanted));
                if !is_up_to_date(&desired, existing.map(|v| &v.statefulset)) {
                    self.cluster.apply(&desired, false).await?;
                }
                self.say(&format!(
                    "started {name} with {wanted} replica(s) beside {}",
                    if state.versions.iter().all(|v| v.version == version) {
                        "nothing (first release)".to_owned()
                    } else {
                        state
                            .versions
                            .iter()
                            .filter(|v| v.version != version)
                            .map(|v| v.name.clone())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ));
            }
            // Another running version (a rollback): its own template, only sized.
            (None, Some(running)) => {
                if running.replicas < wanted {
                    self.cluster
                        .scale_kind(Kind::StatefulSet, &name, wanted)
                        .await?;
                    self.say(&format!(
                        "scaled {name} from {} to {wanted} to take the new connections",
                        running.replicas
                    ));
                }
            }
            (None, None) => {
                return Err(RolloutError::Preflight(format!(
                    "{}: version {version} does not run and no spec of it is known",
                    self.name()
                )));
            }
        }
        if live.is_some() {
            self.regate(version).await?;
        }
        self.ready_or_abort(version, live.as_deref()).await?;
        if let (Some(lb), Some(service), Some(_)) = (self.lb, self.lb_service(version), &live)
            && let Err(problem) = lb
                .serving(
                    self.cluster,
                    self.progress,
                    &service,
                    &self.selector_text(Some(version)),
                    self.timeout,
                )
                .await?
        {
            self.undo(version, live.as_deref()).await?;
            return Err(RolloutError::NotServing {
                workload: self.name().to_owned(),
                slot: name,
                kept: live.unwrap_or_default(),
                problem,
            });
        }
        let fresh = self.observe().await?;
        self.switch(&fresh, version, live.as_deref()).await?;
        self.converge(version, live.as_deref(), action).await
    }

    /// Behind an NLB, while `version` is released: the live version's running pods and
    /// `version`'s (its template too) are labelled as accepting connections during this
    /// release, then the stable Service selects those only — versions kept for their
    /// players, or due for retirement, take no new one.
    async fn expose_during(
        &self,
        state: &StatefulState,
        live: &str,
        version: &str,
    ) -> RolloutResult<()> {
        let Some(during) = self.stable_during(version).filter(|_| self.spec.nlb) else {
            return Ok(());
        };
        for v in [live, version] {
            for pod in self
                .cluster
                .list(Kind::Pod, &self.selector_text(Some(v)), None)
                .await?
            {
                let has = pod
                    .pointer("/metadata/labels")
                    .and_then(|l| l.get(labels::ACCEPTS))
                    .and_then(Json::as_str)
                    == Some(version);
                if !has && pod.pointer("/metadata/deletionTimestamp").is_none() {
                    self.cluster
                        .label(Kind::Pod, name_of(&pod), labels::ACCEPTS, version)
                        .await?;
                }
            }
        }
        // Pods `version` makes later are selected too (a version rolled back to was made
        // before this release).
        if let Some(running) = state.version(version)
            && running
                .statefulset
                .pointer("/spec/template/metadata/labels")
                .and_then(|l| l.get(labels::ACCEPTS))
                .and_then(Json::as_str)
                != Some(version)
        {
            let patch = json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": running.name, "namespace": self.cluster.namespace()},
                "spec": {"template": {"metadata": {"labels": {labels::ACCEPTS: version}}}},
            });
            self.cluster
                .apply_as(&patch, "infra-gen-accepts", true, false)
                .await?;
        }
        if self.ensure(&during).await? {
            self.say(&format!(
                "the NLB selects {live} and {version} only: each new pod gets connections once its target is healthy"
            ));
            if self.lb.is_some() {
                self.cluster
                    .pause(
                        super::verify::WEBHOOK_CACHE_LAG,
                        "the controller's webhook seeing the new selector",
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Behind an ALB (with the load-balancer checks): waits until the controller bound the
    /// new version's Service, so the pods created next get their readiness gate.
    async fn wait_bound(&self, version: &str) -> RolloutResult<()> {
        let (Some(lb), true) = (self.lb, self.spec.ingress.is_some()) else {
            return Ok(());
        };
        let service = self.versioned(version);
        match lb
            .bound(self.cluster, self.progress, &service, self.timeout)
            .await?
        {
            Ok(()) => {
                self.cluster
                    .pause(
                        super::verify::WEBHOOK_CACHE_LAG,
                        "the controller's webhook seeing the binding",
                    )
                    .await?;
                Ok(())
            }
            Err(problem) => Err(RolloutError::NotServing {
                workload: self.name().to_owned(),
                slot: service,
                kept: self.name().to_owned(),
                problem,
            }),
        }
    }

    /// With the load-balancer checks, in a namespace that asks for readiness gates: pods of
    /// `version` created before the controller bound the Service that routes to them carry
    /// no gate (they would be Ready before their target is healthy): they are recreated.
    async fn regate(&self, version: &str) -> RolloutResult<()> {
        let (Some(lb), Some(service)) = (self.lb, self.lb_service(version)) else {
            return Ok(());
        };
        let ungated = lb
            .ungated(self.cluster, &service, &self.selector_text(Some(version)))
            .await?;
        if ungated.is_empty() {
            return Ok(());
        }
        let wanted = self
            .cluster
            .list(Kind::Pod, &self.selector_text(Some(version)), None)
            .await?
            .iter()
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .count();
        let recreated = super::delete_for_recreation(self.cluster, &ungated).await?;
        for (pod, _) in &recreated {
            self.say(&format!(
                "recreating pod {pod}: it was created before the load balancer bound {service}, so it has no readiness gate"
            ));
        }
        // The StatefulSet's status still counts the deleted pods as ready for a moment: wait
        // for their successors (same names, new UIDs) to be Ready — with their gates, so
        // only once their targets are healthy.
        super::replaced_and_ready(
            self.cluster,
            &self.selector_text(Some(version)),
            &recreated,
            wanted,
            self.timeout,
        )
        .await
        .map_err(|e| RolloutError::Preflight(format!("{}: {e}", self.name())))?;
        Ok(())
    }

    /// Forward weights: `new` (if any) gets everything once it is `to`, old versions 0.
    fn weights(
        &self,
        state: &StatefulState,
        to: Option<&str>,
        new: Option<&str>,
    ) -> Vec<(String, u8)> {
        let mut out: Vec<(String, u8)> = state
            .versions
            .iter()
            .map(|v| {
                (
                    v.version.clone(),
                    if Some(v.version.as_str()) == to {
                        100
                    } else {
                        0
                    },
                )
            })
            .collect();
        if let Some(new) = new
            && !out.iter().any(|(v, _)| v == new)
        {
            out.push((new.to_owned(), if Some(new) == to { 100 } else { 0 }));
        }
        out
    }

    /// Gives up a version that did not get ready: new connections stay where they were. One
    /// that never went live (no release of it) is deleted with its headless Service, so it
    /// is in no selector and no forward action and a retry starts it through the whole
    /// release; one that went live before (a rollback target) may hold players and is left
    /// as it is.
    async fn undo(&self, version: &str, live: Option<&str>) -> RolloutResult<()> {
        let state = self.observe().await?;
        if let Some(live) = live {
            if let Some(stable) = self.stable(live) {
                self.ensure(&stable).await?;
            }
            let weights: Vec<(String, u8)> = self
                .weights(&state, Some(live), None)
                .into_iter()
                .filter(|(v, _)| v != version)
                .collect();
            if let Some(ingress) = self.ingress(&weights) {
                self.ensure(&ingress).await?;
            }
        }
        let name = self.versioned(version);
        if state.releases.iter().any(|r| r.slot == version) {
            self.say(&format!(
                "{name} went live before and may still have players: left as it is"
            ));
            return Ok(());
        }
        self.cluster.delete(Kind::StatefulSet, &name).await?;
        self.cluster.delete(Kind::Service, &name).await?;
        self.say(&format!(
            "aborted, removed {name} (it never took connections)"
        ));
        Ok(())
    }

    async fn ready_or_abort(&self, version: &str, live: Option<&str>) -> RolloutResult<()> {
        let cause = match self.wait_ready(version).await {
            Ok(()) => return Ok(()),
            Err(WaitError::Cluster(e)) => return Err(e.into()),
            Err(cause) => cause,
        };
        if live != Some(version) {
            self.undo(version, live).await?;
        }
        Err(RolloutError::Aborted {
            workload: self.name().to_owned(),
            kept: live.map_or(
                "nothing (first release: no connections yet)".to_owned(),
                |l| format!("version {l} ({})", self.versioned(l)),
            ),
            cause: Box::new(cause),
            hint: format!(
                "new connections stay where they were; see `kubectl -n {} describe pods -l {}`; fix and release again",
                self.cluster.namespace(),
                self.selector_text(Some(version))
            ),
        })
    }

    /// New connections to `version` only: the stable Service's selector (NLB, in-cluster) and
    /// the ALB weights; old versions get their retirement time.
    /// `previous`: the version that took them before (the state may no longer say, while
    /// the NLB selects every version).
    async fn switch(
        &self,
        state: &StatefulState,
        version: &str,
        previous: Option<&str>,
    ) -> RolloutResult<()> {
        let ready = state.version(version).map_or(0, |v| v.ready);
        if ready == 0 {
            return Err(RolloutError::Preflight(format!(
                "{}: refusing to send new connections to {}: none of its pods is ready",
                self.name(),
                self.versioned(version)
            )));
        }
        let mut moved = false;
        if let Some(ingress) = self.ingress(&self.weights(state, Some(version), Some(version))) {
            moved |= self.ensure(&ingress).await?;
            if let (Some(previous), true) = (previous, moved) {
                self.check_weights(state, &ingress, version, previous)
                    .await?;
            }
        }
        if let Some(stable) = self.stable(version) {
            moved |= self.ensure(&stable).await?;
        }
        self.mark_retirement(state, version).await?;
        match previous {
            Some(previous) if previous != version => self.progress.step(&format!(
                "{}: new connections go to {version} now; {previous} keeps its players until it is retired",
                self.name()
            )),
            _ if moved || previous.is_none() => {
                self.say(&format!("new connections go to {version}"));
            }
            _ => {}
        }
        Ok(())
    }

    /// After the weights moved to `version`: the ALB rule forwards as the Ingress says, or
    /// the weights go back to `previous`.
    async fn check_weights(
        &self,
        state: &StatefulState,
        ingress: &Json,
        version: &str,
        previous: &str,
    ) -> RolloutResult<()> {
        let Some(lb) = self.lb else {
            return Ok(());
        };
        let rule = ingress.pointer("/spec/rules/0");
        let host = rule
            .and_then(|r| r.pointer("/host"))
            .and_then(Json::as_str)
            .unwrap_or_default();
        let path = rule
            .and_then(|r| r.pointer("/http/paths/0/path"))
            .and_then(Json::as_str)
            .unwrap_or("/");
        let expected: Vec<(String, u8)> = self
            .weights(state, Some(version), Some(version))
            .into_iter()
            .map(|(v, w)| (self.versioned(&v), w))
            .collect();
        if let Err(seen) = lb
            .weights(
                self.cluster,
                self.progress,
                self.name(),
                host,
                path,
                &expected,
            )
            .await?
        {
            if let Some(back) = self.ingress(&self.weights(state, Some(previous), Some(version))) {
                self.ensure(&back).await?;
            }
            return Err(RolloutError::NotServing {
                workload: self.name().to_owned(),
                slot: self.versioned(version),
                kept: previous.to_owned(),
                problem: seen,
            });
        }
        Ok(())
    }

    /// With `retireAfterSeconds`, every version but `live` gets the time `finalize` retires
    /// it (kept if it has one); `live` loses its own (it was rolled back to).
    async fn mark_retirement(&self, state: &StatefulState, live: &str) -> RolloutResult<()> {
        let now = Timestamp::now();
        for v in &state.versions {
            let at = match (v.version == live, v.retire_at, self.spec.retire_after) {
                (true, Some(_), _) => None,
                (false, None, Some(after)) => {
                    Some(now + SignedDuration::try_from(after).unwrap_or_default())
                }
                _ => continue,
            };
            // Its own field manager: the annotation outlives the applies of the tree, and
            // applying without it removes it.
            let mut patch = json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": v.name, "namespace": self.cluster.namespace()},
            });
            if let Some(at) = at {
                patch["metadata"]["annotations"] = json!({RETIRE_AT: history::time_text(at)});
            }
            self.cluster
                .apply_as(&patch, "infra-gen-retire", true, false)
                .await?;
        }
        Ok(())
    }

    async fn converge(
        &self,
        version: &str,
        previous: Option<&str>,
        action: &str,
    ) -> RolloutResult<()> {
        if let Some(hpa) = self.hpa(version)
            && self.ensure(&hpa).await?
        {
            self.say(&format!("HPA now scales {}", self.versioned(version)));
        }
        let state = self.observe().await?;
        let recorded = history::is_latest(&state.releases, version, version)
            && (action != "rollback"
                || state
                    .releases
                    .first()
                    .is_some_and(|r| r.action == "rollback"));
        if !recorded {
            self.record(&state, version, previous, action).await?;
        }
        for due in self
            .due_for_retirement(&state)
            .map(|v| v.version.clone())
            .collect::<Vec<_>>()
        {
            self.retire(&due).await?;
        }
        Ok(())
    }

    /// Records that `version` takes the new connections, with its StatefulSet (so a retired
    /// version can be started again by `rollback`).
    async fn record(
        &self,
        state: &StatefulState,
        version: &str,
        previous: Option<&str>,
        action: &str,
    ) -> RolloutResult<()> {
        let running = state.version(version);
        let object = running.map(|r| {
            let mut spec = r.statefulset.clone();
            if let Some(map) = spec.as_object_mut() {
                map.remove("status");
            }
            if let Some(meta) = spec.get_mut("metadata").and_then(Json::as_object_mut) {
                for key in [
                    "managedFields",
                    "resourceVersion",
                    "uid",
                    "creationTimestamp",
                    "generation",
                ] {
                    meta.remove(key);
                }
                if let Some(annotations) = meta.get_mut("annotations").and_then(Json::as_object_mut)
                {
                    annotations.remove(RETIRE_AT);
                }
            }
            spec
        });
        let release = Release {
            action: action.to_owned(),
            revision: running
                .and_then(|r| r.statefulset.pointer("/metadata/annotations"))
                .and_then(|a| a.get(REVISION))
                .and_then(Json::as_str)
                .unwrap_or(self.revision)
                .to_owned(),
            image: running
                .map(|r| text(&r.statefulset, "/spec/template/spec/containers/0/image").to_owned())
                .unwrap_or_default(),
            slot: version.to_owned(),
            template: version.to_owned(),
            at: history::time_text(Timestamp::now()),
            by: self.by.to_owned(),
            from_template: previous.map(str::to_owned),
            from_revision: None,
            lb_verified: Some(self.lb.is_some()),
            object,
        };
        Ok(history::record(self.cluster, self.name(), release).await?)
    }

    fn due_for_retirement<'s>(
        &self,
        state: &'s StatefulState,
    ) -> impl Iterator<Item = &'s Version> {
        let live = state.live.clone();
        let now = Timestamp::now();
        state.versions.iter().filter(move |v| {
            Some(v.version.as_str()) != live.as_deref() && v.retire_at.is_some_and(|at| at <= now)
        })
    }

    /// Pins new connections back to the live version when an interrupted release left the
    /// NLB selecting every version. The other versions keep the players they got meanwhile.
    pub async fn settle(&self) -> RolloutResult<()> {
        let state = self.observe().await?;
        let Some((live, stable)) = state
            .live
            .as_deref()
            .and_then(|live| Some((live, self.stable(live)?)))
        else {
            return Ok(());
        };
        if self.ensure(&stable).await? {
            let others: Vec<&str> = state
                .versions
                .iter()
                .filter(|v| v.version != live)
                .map(|v| v.name.as_str())
                .collect();
            self.say(&format!(
                "an interrupted release left the NLB selecting every version; new connections go to {live} again ({} keep the players they got)",
                others.join(", ")
            ));
        }
        Ok(())
    }

    /// Removes an old version: refused for the one that takes new connections.
    pub async fn retire(&self, version: &str) -> RolloutResult<()> {
        let state = self.observe().await?;
        let name = self.versioned(version);
        if state.live.as_deref() == Some(version) && !self.spec.departed {
            return Err(RolloutError::Preflight(format!(
                "{}: {name} takes the new connections, so it cannot be retired; release or roll back to another version first (running: {})",
                self.name(),
                state
                    .versions
                    .iter()
                    .map(|v| v.version.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let Some(running) = state.version(version) else {
            self.say(&format!("{name} does not run (already retired)"));
            return Ok(());
        };
        // Left selecting every version by an interrupted release: new connections go to the
        // live one only before this one goes.
        self.settle().await?;
        if let (Some(lb), Some(service)) = (self.lb, self.lb_service(version)) {
            lb.drained(
                self.cluster,
                self.progress,
                &[service],
                &self.selector_text(Some(version)),
            )
            .await?;
        }
        if let Some(ingress) = self.ingress(
            &self
                .weights(&state, state.live.as_deref(), None)
                .into_iter()
                .filter(|(v, _)| v != version)
                .collect::<Vec<_>>(),
        ) {
            self.ensure(&ingress).await?;
        }
        self.cluster.delete(Kind::StatefulSet, &name).await?;
        self.cluster.delete(Kind::Service, &name).await?;
        self.say(&format!(
            "retired {name}: its {} pod(s) stop (players still on them are disconnected)",
            running.replicas
        ));
        Ok(())
    }

    /// Points new connections back at the version that was live before: at once while it
    /// runs, after starting it again (from the release history) otherwise.
    pub async fn rollback(&self) -> RolloutResult<()> {
        self.settle().await?;
        let mut state = self.observe().await?;
        let Some(live) = state.live.clone() else {
            return Err(RolloutError::Preflight(format!(
                "{}: no version takes new connections: nothing to roll back",
                self.name()
            )));
        };
        // A release killed after its switch but before its record: it did go live.
        if state.releases.first().is_none_or(|r| r.slot != live) {
            let before = state.releases.first().map(|r| r.slot.clone());
            self.record(&state, &live, before.as_deref(), "deploy")
                .await?;
            state = self.observe().await?;
        }
        let index = state
            .releases
            .iter()
            .position(|r| r.slot == live)
            .ok_or_else(|| {
                RolloutError::Preflight(format!(
                    "{}: the release history has no entry for {live}; release the version you want instead",
                    self.name()
                ))
            })?;
        let Some(target) = history::rollback_target(&state.releases, index).cloned() else {
            return Err(RolloutError::Preflight(format!(
                "{}: no earlier version to roll back to ({live} is the only one recorded, or every earlier one was rolled back from)",
                self.name()
            )));
        };
        let version = target.slot.clone();
        let object = match state.version(&version) {
            Some(_) => None,
            None => Some(target.object.clone().ok_or_else(|| {
                RolloutError::Preflight(format!(
                    "{}: version {version} was retired and the history holds no spec to start it again; release its commit {} instead",
                    self.name(),
                    target.revision
                ))
            })?),
        };
        // Back through the same steps as a release: the NLB selects both, the old pods
        // register again (tens of seconds), then new connections move.
        self.release(&state, &version, object, "rollback").await
    }

    /// Retires the old versions whose `retireAfterSeconds` has passed.
    pub async fn finalize(&self) -> RolloutResult<()> {
        self.settle().await?;
        let state = self.observe().await?;
        let due: Vec<String> = self
            .due_for_retirement(&state)
            .map(|v| v.version.clone())
            .collect();
        for version in &due {
            self.retire(version).await?;
        }
        for waiting in state.versions.iter().filter(|v| {
            Some(v.version.as_str()) != state.live.as_deref() && !due.contains(&v.version)
        }) {
            match waiting.retire_at {
                Some(at) => self.say(&format!(
                    "{} keeps its players until {} (retireAfterSeconds), then `finalize` retires it",
                    waiting.name,
                    history::time_text(at)
                )),
                None => self.say(&format!(
                    "{} keeps running until `infra-gen retire --env … --workload {} --version {}`",
                    waiting.name,
                    self.name(),
                    waiting.version
                )),
            }
        }
        Ok(())
    }

    /// Objects a deploy would leave behind (for `diff`).
    pub async fn planned_objects(&self) -> RolloutResult<Vec<Json>> {
        let state = self.observe().await?;
        let version = &self.spec.version;
        let replicas = state
            .version(version)
            .map(|v| v.replicas)
            .unwrap_or_else(|| {
                self.hpa_bounds()
                    .map_or(self.spec_replicas(), |(min, _)| min)
            });
        let mut out = vec![
            stamped(&self.statefulset(version, replicas)),
            stamped(&self.headless(version)),
        ];
        out.extend(self.stable(version).map(|s| stamped(&s)));
        out.extend(
            self.ingress(&self.weights(&state, Some(version), Some(version)))
                .map(|i| stamped(&i)),
        );
        out.extend(self.hpa(version).map(|h| stamped(&h)));
        Ok(out)
    }

    /// Replica counts of a running version (for `status`).
    pub fn counts(version: &Version) -> Replicas {
        serde_json::from_value::<k8s_openapi::api::apps::v1::StatefulSet>(
            version.statefulset.clone(),
        )
        .map(|s| Replicas::of_statefulset(&s))
        .unwrap_or_default()
    }
}
