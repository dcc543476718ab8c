//! The blue-green cutover of one workload, as named, idempotent steps. Each reads the live
//! state through [`state::observe`] first (where the traffic actually goes) and either says
//! why it skips or what it switched, so a run killed at any point is finished or undone by
//! the next command, whichever it is.
//!
//! Rules every step keeps:
//! - a slot that has traffic (ALB weight, or the stable Service selecting it) is never
//!   re-templated, and never scaled below what it serves;
//! - traffic only moves to a slot whose every replica is available, sized to the live load;
//! - an interrupted cutover is finished (when the new slot is healthy) or moved back before
//!   anything else happens.
//!
//! Live state: `<name>-blue` / `<name>-green` are the slot Deployments; the weights of the
//! Ingress action (or of the HTTPRoute's backends, [`super::route`]) and the stable Service
//! `<name>`'s selector route the traffic; the HPA follows the
//! live slot; the scale-down deadline of the previous slot is an annotation on the stable
//! Service, which `finalize` (and `apply`, once due) reads.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value as Json, json};

use super::canary;
use super::desired::BlueGreenSpec;
use super::history::{self, Release};
use super::progress::Progress;
use super::state::{Objects, SlotView};
pub use super::state::{Routing, Slot, State};
use super::verify::LbCheck;
use super::{
    REVISION, RolloutError, RolloutResult, Router, SCALE_DOWN_AFTER, TEMPLATE, hash, is_up_to_date,
    stamped,
};
use crate::cluster::wait::{self, WaitError};
use crate::cluster::{Cluster, Kind, diagnose};
use crate::env::model as canary_model;
use crate::render::context::labels;

/// Which way an interrupted cutover is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// Finish moving traffic to the new slot.
    Complete,
    /// Move every request back to the slot it came from.
    Revert,
}

/// Who may finish an interrupted cutover. Anyone else first moves every request back to the
/// slot it came from (the last release): a cutover stopped on purpose — a cancelled CI job is
/// how a misbehaving release is stopped — must never be completed by an unattended job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume<'r> {
    /// A deploy: only a retry of the same commit, whose template the target slot runs.
    Deploy,
    /// A promote of the grey release in the target slot: of this revision, or — without one —
    /// of the canary the history recorded there.
    Promote(Option<&'r str>),
    /// `finalize`, `rollback`, `abort`: always back.
    Never,
}

/// One workload's blue-green operations.
pub struct BlueGreen<'a> {
    /// The cluster.
    pub cluster: &'a Cluster,
    /// The workload's objects from the tree.
    pub spec: &'a BlueGreenSpec,
    /// Progress output.
    pub progress: &'a Progress,
    /// How long a slot may take to become ready.
    pub timeout: Duration,
    /// Who deploys (for the history).
    pub by: &'a str,
    /// The revision (for the history).
    pub revision: &'a str,
    /// The load-balancer checks (`None`: `--no-verify-lb`).
    pub lb: Option<&'a LbCheck>,
    /// Without the checks: how long the controller is given to apply a move of ALB traffic
    /// away from a slot before that slot is scaled down or replaced.
    pub unverified_wait: Duration,
}

/// Whether a traffic move checks the load balancer first: moving to a slot that is to take
/// over, yes; moving back to the slot that served, no (that is the safe direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    Forward,
    Back,
}

impl BlueGreen<'_> {
    fn name(&self) -> &str {
        &self.spec.name
    }

    /// What routes the workload's requests, for messages.
    fn router(&self) -> Router {
        Router::of(self.spec.ingress.as_ref())
    }

    /// Whether the stable Service of a `tcp` workload is an NLB (the ALB provider), rather
    /// than a plain LoadBalancer of the cluster's own (the Gateway API provider).
    fn nlb(&self) -> bool {
        self.spec
            .stable
            .pointer("/spec/loadBalancerClass")
            .and_then(Json::as_str)
            == Some("service.k8s.aws/nlb")
    }

    /// `NLB` or `the LoadBalancer Service`, for messages about a `tcp` workload.
    fn tcp_lb(&self) -> &'static str {
        if self.nlb() {
            "NLB"
        } else {
            "the LoadBalancer Service"
        }
    }

    fn slot_name(&self, slot: Slot) -> String {
        format!("{}-{}", self.name(), slot.as_str())
    }

    fn say(&self, message: &str) {
        self.progress.step(&format!("{}: {message}", self.name()));
    }

    /// The pod-template hash of the desired version.
    pub fn template_hash(&self) -> String {
        hash(
            self.spec
                .deployment
                .pointer("/spec/template")
                .unwrap_or(&Json::Null),
        )
    }

    /// Reads where the workload's traffic goes (the one truth every command uses).
    pub async fn observe(&self) -> RolloutResult<State> {
        let name = self.name();
        let get = |kind: Kind, object: String| async move { self.cluster.get(kind, &object).await };
        let releases = history::read(self.cluster)
            .await?
            .remove(name)
            .unwrap_or_default();
        // An Ingress the tree no longer has is pruned at the end of this apply; its weights
        // are not this cutover's.
        let ingress = match &self.spec.ingress {
            Some(route) => get(Kind::of(route)?, name.to_owned()).await?,
            None => None,
        };
        let objects = Objects {
            blue: get(Kind::Deployment, self.slot_name(Slot::Blue)).await?,
            green: get(Kind::Deployment, self.slot_name(Slot::Green)).await?,
            stable: get(Kind::Service, name.to_owned()).await?,
            ingress,
            rolling: get(Kind::Deployment, name.to_owned()).await?,
            releases,
        };
        Ok(super::state::observe(name, objects))
    }

    fn hpa_bounds(&self) -> Option<(i32, i32)> {
        super::hpa_bounds(self.spec.hpa.as_ref()?)
    }

    /// The replica count the environment file asks for (no HPA).
    fn spec_replicas(&self) -> i32 {
        super::template_replicas(&self.spec.deployment).max(1)
    }

    /// How many replicas a slot about to take over from `live` needs: what the HPA scaled the
    /// live slot (or the rolling Deployment being replaced) to, within the HPA's bounds; the
    /// file's `replicas` without an HPA.
    fn wanted_replicas(&self, state: &State, live: Option<Slot>) -> i32 {
        match self.hpa_bounds() {
            Some((min, max)) => {
                let serving = match live {
                    Some(slot) => state.slot(slot).replicas,
                    None => state
                        .rolling
                        .as_ref()
                        .and_then(|d| d.pointer("/spec/replicas"))
                        .and_then(Json::as_i64)
                        .and_then(|r| i32::try_from(r).ok())
                        .unwrap_or(0),
                };
                serving.max(min).min(max.max(min))
            }
            None => self.spec_replicas(),
        }
    }

    fn with_slot(map: Option<&Json>, slot: Option<Slot>) -> Json {
        let mut out = map.cloned().unwrap_or_else(|| json!({}));
        if let (Some(slot), Some(m)) = (slot, out.as_object_mut()) {
            m.insert(labels::SLOT.into(), Json::String(slot.as_str().into()));
        }
        out
    }

    fn slot_deployment(&self, slot: Slot, replicas: i32) -> Json {
        let mut d = self.spec.deployment.clone();
        d["metadata"]["name"] = Json::String(self.slot_name(slot));
        d["metadata"]["labels"] = Self::with_slot(d.pointer("/metadata/labels"), Some(slot));
        d["metadata"]["annotations"][TEMPLATE] = Json::String(self.template_hash());
        d["metadata"]["annotations"][REVISION] = Json::String(self.revision.to_owned());
        d["spec"]["replicas"] = json!(replicas);
        d["spec"]["selector"]["matchLabels"] =
            Self::with_slot(d.pointer("/spec/selector/matchLabels"), Some(slot));
        d["spec"]["template"]["metadata"]["labels"] =
            Self::with_slot(d.pointer("/spec/template/metadata/labels"), Some(slot));
        d
    }

    /// The stable Service selecting `slot` (`None`: both slots, during a tcp overlap).
    fn stable(&self, slot: Option<Slot>, scale_down_after: Option<&str>) -> Json {
        let mut s = self.spec.stable.clone();
        s["spec"]["selector"] = Self::with_slot(s.pointer("/spec/selector"), slot);
        if let Some(deadline) = scale_down_after {
            s["metadata"]["annotations"][SCALE_DOWN_AFTER] = Json::String(deadline.into());
        }
        s
    }

    fn preview(&self, slot: Slot) -> Json {
        let mut s = self.spec.preview.clone();
        s["spec"]["selector"] = Self::with_slot(s.pointer("/spec/selector"), Some(slot));
        s
    }

    /// What routes the workload's requests (the Ingress or the HTTPRoute) with `percent`% on
    /// `to` and the rest on the other slot.
    fn ingress(&self, to: Slot, percent: u8) -> Option<Json> {
        let route = self.spec.ingress.as_ref()?;
        let (blue, green) = match to {
            Slot::Blue => (percent, 100 - percent),
            Slot::Green => (100 - percent, percent),
        };
        Some(super::route::with_shares(
            route,
            self.name(),
            &[
                (self.slot_name(Slot::Blue), blue),
                (self.slot_name(Slot::Green), green),
            ],
        ))
    }

    /// The Ingress with `percent`% on `to`, and — while a grey release runs — the header
    /// rule sending the canary's requests to `canary`.
    fn weighted(&self, to: Slot, percent: u8, canary: Option<Slot>) -> RolloutResult<Option<Json>> {
        let Some(ingress) = self.ingress(to, percent) else {
            return Ok(None);
        };
        match (canary, &self.spec.canary) {
            (Some(slot), Some(rule)) => Ok(Some(canary::with_canary(
                &ingress,
                self.name(),
                slot,
                rule,
            )?)),
            _ => Ok(Some(ingress)),
        }
    }

    fn hpa(&self, slot: Slot) -> Option<Json> {
        let mut hpa = self.spec.hpa.clone()?;
        hpa["spec"]["scaleTargetRef"]["name"] = Json::String(self.slot_name(slot));
        Some(hpa)
    }

    fn deadline_text(state: &State) -> Option<String> {
        state.scale_down_after.map(history::time_text)
    }

    fn new_deadline(&self) -> String {
        let delay = SignedDuration::try_from(self.spec.scale_down_delay).unwrap_or_default();
        history::time_text(Timestamp::now() + delay)
    }

    /// Applies `object` unless the cluster already has it; says whether it wrote.
    async fn ensure(&self, object: &Json) -> RolloutResult<bool> {
        let desired = stamped(object);
        let kind = Kind::of(object)?;
        let live = self
            .cluster
            .get(kind, crate::cluster::name_of(object))
            .await?;
        if is_up_to_date(&desired, live.as_ref()) {
            return Ok(false);
        }
        self.cluster.apply(&desired, false).await?;
        Ok(true)
    }

    async fn is_current(&self, object: &Json) -> RolloutResult<bool> {
        let kind = Kind::of(object)?;
        let live = self
            .cluster
            .get(kind, crate::cluster::name_of(object))
            .await?;
        Ok(is_up_to_date(&stamped(object), live.as_ref()))
    }

    /// The live-state objects for `live` being the live slot. The preview shows the live
    /// release too, until the next deploy starts a candidate in the other slot (which then
    /// shows there): it never points at a slot about to be scaled down.
    fn live_objects(&self, live: Slot, deadline: Option<&str>) -> Vec<Json> {
        let mut objects = vec![self.stable(Some(live), deadline), self.preview(live)];
        objects.extend(self.ingress(live, 100));
        objects.extend(self.hpa(live));
        objects
    }

    /// Whether the slot that is not live still runs although its scale-down is due.
    fn scale_down_due(state: &State, live: Slot) -> bool {
        let previous = state.slot(live.other());
        previous.replicas > 0
            && !previous.has_traffic()
            && state
                .scale_down_after
                .is_some_and(|deadline| deadline <= Timestamp::now())
    }

    /// The objects a deploy would leave behind (for `diff`): the target slot's Deployment
    /// when it would be (re)started, and the live-state objects pointing at the target.
    pub async fn planned_objects(&self) -> RolloutResult<Vec<Json>> {
        let state = self.observe().await?;
        let desired = self.template_hash();
        let live = state.last_live();
        let target = match live {
            Some(slot) if state.slot(slot).runs(&desired) => slot,
            Some(slot) => slot.other(),
            None => Slot::BOTH
                .into_iter()
                .find(|s| state.slot(*s).runs(&desired))
                .unwrap_or(Slot::Blue),
        };
        let mut out = Vec::new();
        if live != Some(target) {
            let replicas = self.wanted_replicas(&state, live);
            out.push(stamped(&self.slot_deployment(target, replicas)));
        }
        let deadline = Self::deadline_text(&state);
        // A grey release stops with the header rule, everyone else on the live slot.
        if let (Some(live), Some(_)) = (live.filter(|l| *l != target), &self.spec.canary) {
            out.push(stamped(&self.stable(Some(live), deadline.as_deref())));
            out.push(stamped(&self.preview(target)));
            out.extend(self.weighted(live, 100, Some(target))?.iter().map(stamped));
            out.extend(self.hpa(live).iter().map(stamped));
            return Ok(out);
        }
        out.extend(
            self.live_objects(target, deadline.as_deref())
                .iter()
                .map(stamped),
        );
        Ok(out)
    }

    /// Whether the cluster already runs the desired version, fully switched, with nothing
    /// left to do (read-only).
    pub async fn is_converged(&self) -> RolloutResult<bool> {
        let state = self.observe().await?;
        let Some(live) = state.live() else {
            return Ok(false);
        };
        if self.spec.canary.is_some() && !state.slot(live).runs(&self.template_hash()) {
            return self.is_in_canary(&state, live).await;
        }
        let view = state.slot(live);
        if !view.runs(&self.template_hash()) || !view.complete {
            return Ok(false);
        }
        let sized = match self.hpa_bounds() {
            Some((min, max)) => (min..=max.max(min)).contains(&view.replicas),
            None => view.replicas == self.spec_replicas(),
        };
        if !sized || Self::scale_down_due(&state, live) {
            return Ok(false);
        }
        let deadline = Self::deadline_text(&state);
        for object in self.live_objects(live, deadline.as_deref()) {
            if !self.is_current(&object).await? {
                return Ok(false);
            }
        }
        Ok(history::is_latest(
            &state.releases,
            view.template.as_deref().unwrap_or_default(),
            live.as_str(),
        ))
    }

    /// Whether the grey release of the desired version runs as asked: its slot ready, the
    /// header rule, the live-state objects and the record (read-only).
    async fn is_in_canary(&self, state: &State, live: Slot) -> RolloutResult<bool> {
        let target = live.other();
        let view = state.slot(target);
        let in_canary = state
            .canary
            .as_ref()
            .is_some_and(|c| c.slot == Some(target));
        if !in_canary || !view.runs(&self.template_hash()) || !view.complete {
            return Ok(false);
        }
        let deadline = Self::deadline_text(state);
        let mut objects = vec![
            self.stable(Some(live), deadline.as_deref()),
            self.preview(target),
        ];
        objects.extend(self.weighted(live, 100, Some(target))?);
        objects.extend(self.hpa(live));
        for object in objects {
            if !self.is_current(&object).await? {
                return Ok(false);
            }
        }
        Ok(state.canaries.first().is_some_and(|r| {
            r.action == "canary"
                && r.slot == target.as_str()
                && Some(&r.template) == view.template.as_ref()
        }))
    }

    /// Turns a lost lock into a message that says where the traffic was left.
    async fn guarded<T>(
        &self,
        result: impl std::future::Future<Output = RolloutResult<T>>,
    ) -> RolloutResult<T> {
        match result.await {
            Err(RolloutError::Cluster(error)) if error.is_lock_lost() => {
                let traffic = match self.observe().await {
                    Ok(state) => state.traffic(),
                    Err(e) => format!("unknown ({e})"),
                };
                Err(RolloutError::LockLost {
                    workload: self.name().to_owned(),
                    reason: error.to_string(),
                    traffic,
                })
            }
            other => other,
        }
    }

    /// Deploys the desired version: settle an interrupted cutover, then new slot, wait,
    /// cutover, converge.
    pub async fn deploy(&self) -> RolloutResult<()> {
        self.guarded(self.deploy_steps()).await
    }

    async fn deploy_steps(&self) -> RolloutResult<()> {
        let desired = self.template_hash();
        let state = self.observe().await?;
        let state = self.settle_interrupted(state, Resume::Deploy).await?;
        match state.routing {
            Routing::Live(live) if state.slot(live).runs(&desired) => {
                self.say(&format!("{} already runs this version", live.as_str()));
                self.converge(live, None, "deploy").await
            }
            Routing::Live(live) => match &self.spec.canary {
                Some(rule) if self.spec.ingress.is_some() => {
                    self.canary_into(&state, live.other(), live, rule).await
                }
                _ => self.release_into(&state, live.other(), Some(live)).await,
            },
            Routing::Idle => {
                let target = Slot::BOTH
                    .into_iter()
                    .find(|s| state.slot(*s).runs(&desired))
                    .unwrap_or(Slot::Blue);
                self.release_into(&state, target, None).await
            }
            Routing::Split { .. } => Err(RolloutError::Preflight(format!(
                "{}: traffic is still split after settling the interrupted cutover ({}); run the deploy again",
                self.name(),
                state.traffic()
            ))),
        }
    }

    /// Whether a slot could take all traffic now: every replica available, no pod stuck.
    async fn is_healthy(&self, view: &SlotView) -> RolloutResult<bool> {
        Ok(view.complete && self.problem_of(view.slot).await?.is_none())
    }

    /// Settles an interrupted cutover, if there is one: finished when `resume` may finish it
    /// and its target is healthy, else every request goes back to the slot it came from (a
    /// retry of its own commit then waits for the target with no traffic on it). Returns the
    /// state after.
    async fn settle_interrupted(&self, state: State, resume: Resume<'_>) -> RolloutResult<State> {
        let Routing::Split { from, to } = state.routing else {
            return Ok(state);
        };
        let target = state.slot(to);
        let same = |revision: &str| {
            target
                .revision
                .as_deref()
                .is_some_and(|r| same_revision(r, revision))
        };
        let ours = match resume {
            Resume::Deploy => target.runs(&self.template_hash()) && same(self.revision),
            Resume::Promote(Some(revision)) => same(revision),
            Resume::Promote(None) => state.canaries.first().is_some_and(|r| {
                r.action == "canary"
                    && r.slot == to.as_str()
                    && Some(&r.template) == target.template.as_ref()
            }),
            Resume::Never => false,
        };
        let (way, why) = if !ours {
            (
                Settle::Revert,
                match resume {
                    Resume::Never => "it is not finished by this command",
                    _ => "only its own commit's deploy (or promote) may finish it",
                },
            )
        } else if self.is_healthy(target).await? {
            (Settle::Complete, "")
        } else {
            (
                Settle::Revert,
                "its new slot is not ready, and no traffic waits on it",
            )
        };
        self.settle(&state, from, to, way, why).await
    }

    /// Finishes or undoes an interrupted cutover from `from` to `to` (`why`: the reason it is
    /// undone); returns the new state.
    async fn settle(
        &self,
        state: &State,
        from: Slot,
        to: Slot,
        way: Settle,
        why: &str,
    ) -> RolloutResult<State> {
        let found = format!(
            "found an interrupted cutover from {} to {} ({})",
            from.as_str(),
            to.as_str(),
            state.traffic()
        );
        match way {
            Settle::Complete => {
                self.say(&format!("{found}; completing it"));
                self.ready_or_abort(to, Some(from)).await?;
                self.shift(Some(from), to, &self.spec.steps, Move::Forward, None)
                    .await?;
                self.converge(to, Some(from), "deploy").await?;
            }
            Settle::Revert => {
                self.say(&format!(
                    "{found}; moving all traffic back to {} ({why})",
                    from.as_str()
                ));
                let needed = state.slot(to).replicas;
                self.size(from, needed, "to take back the traffic").await?;
                if let Err(cause) = self.wait_ready(from).await {
                    return Err(self.stuck(cause, state));
                }
                self.shift(Some(to), from, &[100], Move::Back, None).await?;
            }
        }
        self.observe().await
    }

    /// The error of a settle that can go neither way: nothing is touched.
    fn stuck(&self, cause: WaitError, state: &State) -> RolloutError {
        match cause {
            WaitError::Cluster(e) => e.into(),
            cause => RolloutError::Aborted {
                workload: self.name().to_owned(),
                kept: state.traffic(),
                cause: Box::new(cause),
                hint: "neither slot is ready to take all the traffic, so it was left as it is; see `infra-gen status` and the pods".into(),
            },
        }
    }

    /// Starts the desired version in `target` (which has no traffic), waits for it, moves the
    /// traffic from `live`, converges.
    async fn release_into(
        &self,
        state: &State,
        target: Slot,
        live: Option<Slot>,
    ) -> RolloutResult<()> {
        self.start_slot(state, target, live).await?;
        self.shift(live, target, &self.spec.steps, Move::Forward, None)
            .await?;
        self.converge(target, live, "deploy").await
    }

    /// Puts the desired version in `target` (which has no traffic) with the live load's
    /// replicas and waits until every replica is available (else aborts).
    async fn start_slot(
        &self,
        state: &State,
        target: Slot,
        live: Option<Slot>,
    ) -> RolloutResult<()> {
        let view = state.slot(target);
        if view.has_traffic() {
            return Err(RolloutError::Preflight(format!(
                "{}: refusing to change {}: it has traffic ({})",
                self.name(),
                self.slot_name(target),
                state.traffic()
            )));
        }
        if let Some(live) = live {
            // A grey release of an older version in `target`: its header requests go back
            // to the live slot before `target` changes.
            self.clear_canary(state, live).await?;
            self.record_live(state, live, None, "deploy").await?;
        }
        let replicas = self.wanted_replicas(state, live);
        if self.spec.tcp && live.is_some() {
            // A slot that still runs an older version (kept for an instant rollback) is
            // emptied first: selected by the NLB, its old pods would take new players and be
            // replaced under them.
            if view.replicas > 0 && !view.runs(&self.template_hash()) {
                self.cluster
                    .apply(&stamped(&self.slot_deployment(target, 0)), false)
                    .await?;
                self.say(&format!(
                    "emptied {} (it still ran {}) before the {} selects it",
                    self.slot_name(target),
                    view.revision.as_deref().map_or("an older version", short),
                    self.tcp_lb()
                ));
                self.gone(target).await?;
            }
            // The AWS Load Balancer Controller injects its readiness gate only into pods a
            // Service it binds selects when they are created: the NLB Service selects both
            // slots first, so a new pod is Ready (and gets connections) only once its NLB
            // target is healthy.
            if self.ensure(&self.stable(None, None)).await? {
                if self.nlb() {
                    self.say(
                        "NLB selects both slots: each new pod gets connections once its target is healthy",
                    );
                } else {
                    self.say(
                        "the LoadBalancer Service selects both slots: each new pod gets connections once it is a ready endpoint",
                    );
                }
                if self.lb.is_some() && self.nlb() {
                    self.cluster
                        .pause(
                            super::verify::WEBHOOK_CACHE_LAG,
                            "the controller's webhook seeing the new selector",
                        )
                        .await?;
                }
            }
        }
        if view.runs(&self.template_hash()) && view.replicas >= replicas {
            self.say(&format!("{} already holds this version", target.as_str()));
        } else {
            self.cluster
                .apply(&stamped(&self.slot_deployment(target, replicas)), false)
                .await?;
            self.say(&format!(
                "started {} with {replicas} replica(s) of the new version",
                self.slot_name(target)
            ));
        }
        if self.ensure(&self.preview(target)).await? {
            self.say(&format!("preview now shows {}", target.as_str()));
        }
        self.ready_or_abort(target, live).await
    }

    /// Removes a grey release's header rule, so every request goes to `live` again; waits
    /// until the ALB has no header rule left. Says whether there was one.
    async fn clear_canary(&self, state: &State, live: Slot) -> RolloutResult<bool> {
        let Some(found) = &state.canary else {
            return Ok(false);
        };
        let mut wrote = false;
        if let Some(ingress) = self.ingress(live, 100) {
            wrote = self.ensure(&ingress).await?;
        }
        let was = found
            .rule
            .as_ref()
            .map_or_else(|| "a leftover".to_owned(), canary::describe);
        self.say(&format!(
            "removed the header rule ({was}): every request goes to {} again",
            live.as_str()
        ));
        if let Some(lb) = self.lb {
            let (host, path) = self.host_and_path();
            if let Err(seen) = lb
                .canary(self.cluster, self.progress, self.name(), &host, &path, None)
                .await?
            {
                return Err(RolloutError::NotServing {
                    workload: self.name().to_owned(),
                    slot: found
                        .slot
                        .map_or_else(|| self.name().to_owned(), |s| self.slot_name(s)),
                    kept: format!("{} ({})", live.as_str(), self.slot_name(live)),
                    problem: seen,
                });
            }
        } else if wrote && !self.unverified_wait.is_zero() {
            self.say(&format!(
                "waiting {:?} for the {} to remove the header rule (not checked: --no-verify-lb)",
                self.unverified_wait,
                self.router().controller()
            ));
            self.cluster
                .pause(
                    self.unverified_wait,
                    "the controller removing the header rule",
                )
                .await?;
        }
        Ok(true)
    }

    /// The grey release of the desired version: `target` started and ready, then the header
    /// rule; every other request stays on `live`. Stops there (`promote`/`abort` continue).
    async fn canary_into(
        &self,
        state: &State,
        target: Slot,
        live: Slot,
        rule: &canary_model::Canary,
    ) -> RolloutResult<()> {
        let desired = self.template_hash();
        let already = state
            .canary
            .as_ref()
            .is_some_and(|c| c.slot == Some(target))
            && state.slot(target).runs(&desired);
        if !already {
            self.start_slot(state, target, Some(live)).await?;
        } else if !state.slot(target).complete {
            self.ready_or_abort(target, Some(live)).await?;
        }
        if let (Some(lb), true) = (self.lb, self.routes_through_lb()) {
            let service = self.lb_service(target);
            if let Err(problem) = lb
                .serving(
                    self.cluster,
                    self.progress,
                    &service,
                    &self.selector(target),
                    self.timeout,
                )
                .await?
            {
                return Err(self.not_serving(target, live, problem).await);
            }
        }
        if let Some(ingress) = self.weighted(live, 100, Some(target))?
            && self.ensure(&ingress).await?
            && let Some(lb) = self.lb
        {
            let (host, path) = self.host_and_path();
            let service = self.slot_name(target);
            if let Err(seen) = lb
                .canary(
                    self.cluster,
                    self.progress,
                    self.name(),
                    &host,
                    &path,
                    Some((rule, &service)),
                )
                .await?
            {
                return Err(self.not_serving(target, live, seen).await);
            }
        }
        let state = self.observe().await?;
        let deadline = Self::deadline_text(&state);
        for object in [self.stable(Some(live), deadline.as_deref())]
            .into_iter()
            .chain(self.hpa(live))
        {
            self.ensure(&object).await?;
        }
        self.record_canary(&state, target, live, "canary").await?;
        self.progress.step(&format!(
            "{}: canary — requests with {} go to {} (the new version), every other request stays on {}. Watch it, then `infra-gen promote --env …` moves everyone{}, or `infra-gen abort --env …` gives it up",
            self.name(),
            canary::describe(rule),
            self.slot_name(target),
            self.slot_name(live),
            if self.spec.steps.len() > 1 {
                format!(
                    " by steps {}",
                    self.spec
                        .steps
                        .iter()
                        .map(|s| format!("{s}%"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            }
        ));
        Ok(())
    }

    /// Records a grey release starting (`canary`) or given up (`abort`) in `target`, unless
    /// the newest such record already says so.
    async fn record_canary(
        &self,
        state: &State,
        target: Slot,
        live: Slot,
        action: &str,
    ) -> RolloutResult<()> {
        let view = state.slot(target);
        let template = view.template.clone().unwrap_or_default();
        let done = state.canaries.first().is_some_and(|r| {
            r.action == action && r.slot == target.as_str() && r.template == template
        });
        if done {
            return Ok(());
        }
        let release = self.release(action, view, Some(state.slot(live)));
        history::record(self.cluster, self.name(), release).await?;
        Ok(())
    }

    /// The history record of `action` putting `view` live (or in canary), replacing `before`.
    fn release(&self, action: &str, view: &SlotView, before: Option<&SlotView>) -> Release {
        Release {
            action: action.to_owned(),
            revision: view
                .revision
                .clone()
                .unwrap_or_else(|| self.revision.to_owned()),
            image: view.image.clone().unwrap_or_default(),
            slot: view.slot.as_str().to_owned(),
            template: view.template.clone().unwrap_or_default(),
            at: history::time_text(Timestamp::now()),
            by: self.by.to_owned(),
            from_template: before.and_then(|b| b.template.clone()),
            from_revision: before.and_then(|b| b.revision.clone()),
            lb_verified: Some(self.lb.is_some()),
            object: None,
        }
    }

    /// The grey release running now, if its new slot runs `revision` (any, without one):
    /// (live slot, canary slot).
    fn running_canary(
        &self,
        state: &State,
        revision: Option<&str>,
    ) -> RolloutResult<Option<(Slot, Slot)>> {
        let (Some(live), Some(found)) = (state.live(), &state.canary) else {
            return Ok(None);
        };
        let Some(slot) = found.slot.filter(|s| *s != live) else {
            return Ok(None);
        };
        if let (Some(revision), Some(running)) = (revision, state.slot(slot).revision.as_deref())
            && !same_revision(revision, running)
        {
            return Err(RolloutError::Preflight(format!(
                "{}: the canary in {} runs revision {}, not {}; promote or abort it from its own pipeline (or without --revision)",
                self.name(),
                self.slot_name(slot),
                short(running),
                short(revision)
            )));
        }
        Ok(Some((live, slot)))
    }

    /// Moves everyone to the grey release's slot (at once or by `rollout.steps`, the header
    /// rule kept until the last step), removes the header rule and records the release as
    /// live. With `revision`, only a canary of that revision.
    pub async fn promote(&self, revision: Option<&str>) -> RolloutResult<()> {
        self.guarded(self.promote_steps(revision)).await
    }

    async fn promote_steps(&self, revision: Option<&str>) -> RolloutResult<()> {
        let state = self.observe().await?;
        // A promote killed half-way: finished by a promote of that canary, else moved back.
        let state = self
            .settle_interrupted(state, Resume::Promote(revision))
            .await?;
        let Some((live, target)) = self.running_canary(&state, revision)? else {
            let Some(live) = state.live() else {
                return Err(RolloutError::Preflight(format!(
                    "{}: nothing is deployed, so there is no canary to promote",
                    self.name()
                )));
            };
            if state.canary.is_some() {
                self.clear_canary(&state, live).await?;
            }
            let runs = state.slot(live).revision.as_deref().map_or("?", short);
            match revision {
                Some(r)
                    if state
                        .slot(live)
                        .revision
                        .as_deref()
                        .is_some_and(|l| same_revision(l, r)) =>
                {
                    self.say(&format!(
                        "{} already runs revision {} for everyone: nothing to promote",
                        live.as_str(),
                        short(r)
                    ));
                    return self.converge(live, None, "deploy").await;
                }
                _ => {
                    self.say(&format!(
                        "no canary runs ({} is live with revision {runs}): nothing to promote",
                        live.as_str()
                    ));
                    return Ok(());
                }
            }
        };
        self.say(&format!(
            "promoting {} (revision {}): every request moves to it",
            self.slot_name(target),
            state.slot(target).revision.as_deref().map_or("?", short)
        ));
        self.ready_or_abort(target, Some(live)).await?;
        self.shift(
            Some(live),
            target,
            &self.spec.steps,
            Move::Forward,
            Some(target),
        )
        .await?;
        self.converge(target, Some(live), "deploy").await?;
        if let Some(lb) = self.lb {
            let (host, path) = self.host_and_path();
            if let Err(seen) = lb
                .canary(self.cluster, self.progress, self.name(), &host, &path, None)
                .await?
            {
                self.say(&format!(
                    "warning: the header rule is still on the {} ({seen}); it forwards to {} like every other request, and the controller removes it with the next reconcile",
                    self.router().lb(),
                    target.as_str()
                ));
            }
        }
        Ok(())
    }

    /// Gives the grey release up: removes the header rule (every request on the live slot),
    /// then scales its slot to 0 once its targets drained. With `revision`, only a canary
    /// of that revision.
    pub async fn abort(&self, revision: Option<&str>) -> RolloutResult<()> {
        self.guarded(self.abort_steps(revision)).await
    }

    async fn abort_steps(&self, revision: Option<&str>) -> RolloutResult<()> {
        let state = self.observe().await?;
        // A promote killed half-way: move everyone back first.
        let state = self.settle_interrupted(state, Resume::Never).await?;
        let Some(live) = state.live() else {
            return Err(RolloutError::Preflight(format!(
                "{}: nothing is deployed, so there is no canary to abort",
                self.name()
            )));
        };
        let target = self
            .running_canary(&state, revision)?
            .map(|(_, target)| target);
        let removed = self.clear_canary(&state, live).await?;
        // The slot of an aborted canary (found by its rule, or — after a killed abort — by
        // running the revision being aborted while it has no traffic).
        let other = live.other();
        let view = state.slot(other);
        let aborted = target.or_else(|| {
            let matches = match revision {
                Some(r) => view
                    .revision
                    .as_deref()
                    .is_some_and(|v| same_revision(v, r)),
                None => view.runs(&self.template_hash()),
            };
            (matches
                && !state
                    .slot(live)
                    .runs(view.template.as_deref().unwrap_or_default()))
            .then_some(other)
        });
        match aborted {
            Some(slot) if state.slot(slot).replicas > 0 => {
                self.drain(slot).await?;
                self.cluster.scale(&self.slot_name(slot), 0).await?;
                self.say(&format!(
                    "aborted the canary: scaled {} to 0; every request stays on {}",
                    self.slot_name(slot),
                    self.slot_name(live)
                ));
                let state = self.observe().await?;
                self.record_canary(&state, slot, live, "abort").await
            }
            Some(slot) => {
                self.say(&format!(
                    "{} is already scaled down; every request goes to {}",
                    self.slot_name(slot),
                    self.slot_name(live)
                ));
                let state = self.observe().await?;
                self.record_canary(&state, slot, live, "abort").await
            }
            None if removed => Ok(()),
            None => {
                if revision.is_some_and(|r| {
                    state
                        .slot(live)
                        .revision
                        .as_deref()
                        .is_some_and(|l| same_revision(l, r))
                }) {
                    return Err(RolloutError::Preflight(format!(
                        "{}: revision {} is live for everyone already (promoted); `infra-gen rollback` goes back to the release before it",
                        self.name(),
                        revision.map_or("?", short)
                    )));
                }
                self.say(&format!(
                    "no canary runs ({} is live): nothing to abort",
                    live.as_str()
                ));
                Ok(())
            }
        }
    }

    fn selector(&self, slot: Slot) -> String {
        let mut parts: Vec<String> = self
            .spec
            .deployment
            .pointer("/spec/selector/matchLabels")
            .and_then(Json::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        parts.push(format!("{}={}", labels::SLOT, slot.as_str()));
        parts.join(",")
    }

    async fn wait_ready(&self, slot: Slot) -> Result<(), WaitError> {
        let name = self.slot_name(slot);
        let progress = self.progress;
        let mut report = |line: &str| progress.status(line);
        wait::deployment_ready(
            self.cluster,
            &name,
            &self.selector(slot),
            self.timeout,
            &mut report,
        )
        .await?;
        self.say(&format!("{name} is ready"));
        Ok(())
    }

    /// Waits for `target`; if it does not get ready, gives its traffic back to `live` (when it
    /// had any), scales it to 0 and fails naming the pods' reasons.
    async fn ready_or_abort(&self, target: Slot, live: Option<Slot>) -> RolloutResult<()> {
        let cause = match self.wait_ready(target).await {
            Ok(()) => return Ok(()),
            Err(WaitError::Cluster(e)) => return Err(e.into()),
            Err(cause) => cause,
        };
        let mut hint = format!(
            "see `kubectl -n {} describe pods -l {}` and `kubectl logs`; fix and run the deploy again",
            self.cluster.namespace(),
            self.selector(target)
        );
        // Pods waiting on their readiness gate wait on the load balancer: say what it sees
        // (before the pods go).
        if let Some(lb) = self.lb.filter(|_| self.routes_through_lb())
            && let Err(seen) = lb
                .serving(
                    self.cluster,
                    self.progress,
                    &self.lb_service(target),
                    &self.selector(target),
                    Duration::ZERO,
                )
                .await?
        {
            hint = format!("the load balancer: {seen}; {hint}");
        }
        let state = self.observe().await?;
        let canary_traffic = state
            .canary
            .as_ref()
            .is_some_and(|c| c.slot == Some(target));
        if let Some(live) = live
            && (state.slot(target).has_traffic() || canary_traffic)
        {
            self.move_back(live).await?;
            self.drain(target).await?;
        }
        // A slot holding a release (a rollback target) keeps its pods for another try.
        if live != Some(target) && state.release_in(target).is_none() {
            self.cluster.scale(&self.slot_name(target), 0).await?;
            self.say(&format!("aborted, scaled {} to 0", self.slot_name(target)));
        }
        let kept = live.map_or("nothing (first deploy: no traffic yet)".to_owned(), |l| {
            format!("{} ({})", l.as_str(), self.slot_name(l))
        });
        Err(RolloutError::Aborted {
            workload: self.name().to_owned(),
            kept,
            cause: Box::new(cause),
            hint,
        })
    }

    /// Whether traffic reaches the workload through an AWS load balancer (ALB or NLB).
    fn routes_through_lb(&self) -> bool {
        self.spec.ingress.is_some() || self.spec.tcp
    }

    /// The Service whose target groups carry `slot`'s pods: the slot Service the ALB
    /// forwards to, or the stable NLB Service of a `tcp` workload.
    fn lb_service(&self, slot: Slot) -> String {
        if self.spec.tcp {
            self.name().to_owned()
        } else {
            self.slot_name(slot)
        }
    }

    /// The host and path of the Ingress rule every request reaches.
    fn host_and_path(&self) -> (String, String) {
        let rule = self
            .spec
            .ingress
            .as_ref()
            .and_then(|i| i.pointer("/spec/rules/0"));
        let text = |p: &str| {
            rule.and_then(|r| r.pointer(p))
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        (text("/host"), text("/http/paths/0/path"))
    }

    /// Stops a move to `to` the load balancer is not ready for: all traffic back on `from`,
    /// `to` scaled to 0 unless it was live, and the error naming what was seen.
    async fn not_serving(&self, to: Slot, from: Slot, problem: String) -> RolloutError {
        self.say(&format!(
            "the {} is not ready for {}: {problem}; moving every request back to {}",
            self.router().lb(),
            self.slot_name(to),
            from.as_str()
        ));
        let undo = async {
            let state = self.observe().await?;
            let canary_traffic = state.canary.as_ref().is_some_and(|c| c.slot == Some(to));
            if state.slot(to).has_traffic() || canary_traffic {
                self.move_back(from).await?;
            }
            // A slot holding a release (a rollback target) stays as it is: only a version
            // that never went live is scaled down.
            if state.release_in(to).is_none() {
                self.drain(to).await?;
                self.cluster.scale(&self.slot_name(to), 0).await?;
                self.say(&format!("aborted, scaled {} to 0", self.slot_name(to)));
            }
            RolloutResult::Ok(())
        };
        if let Err(e) = undo.await {
            return e;
        }
        RolloutError::NotServing {
            workload: self.name().to_owned(),
            slot: self.slot_name(to),
            kept: format!("{} ({})", from.as_str(), self.slot_name(from)),
            problem,
        }
    }

    /// Waits until `slot` has no pod left (an emptied slot, before the NLB selects it).
    async fn gone(&self, slot: Slot) -> RolloutResult<()> {
        let started = std::time::Instant::now();
        loop {
            let pods = self
                .cluster
                .list(Kind::Pod, &self.selector(slot), None)
                .await?;
            if pods.is_empty() {
                return Ok(());
            }
            if started.elapsed() >= self.timeout {
                return Err(RolloutError::Preflight(format!(
                    "{}: {} still has {} pod(s) after {:?}; see `kubectl -n {} get pods -l {}`",
                    self.name(),
                    self.slot_name(slot),
                    pods.len(),
                    self.timeout,
                    self.cluster.namespace(),
                    self.selector(slot)
                )));
            }
            self.progress.status(&format!(
                "{}: waiting for {} old pod(s) to stop",
                self.slot_name(slot),
                pods.len()
            ));
            self.cluster
                .pause(Duration::from_secs(1), "wait for the old pods to stop")
                .await?;
        }
    }

    /// With the load-balancer checks: pods of `slot` created before the NLB Service selected
    /// them have no readiness gate (they would be Ready before their target is healthy):
    /// they are recreated and waited for (`from` keeps the traffic meanwhile).
    async fn regate(&self, slot: Slot, from: Slot) -> RolloutResult<()> {
        let Some(lb) = self.lb else {
            return Ok(());
        };
        let ungated = lb
            .ungated(self.cluster, &self.lb_service(slot), &self.selector(slot))
            .await?;
        if ungated.is_empty() {
            return Ok(());
        }
        let recreated = super::delete_for_recreation(self.cluster, &ungated).await?;
        self.say(&format!(
            "recreated {} pod(s) of {} created before the NLB selected them (no readiness gate)",
            ungated.len(),
            self.slot_name(slot)
        ));
        // The Deployment's status counts the deleted pods for a moment: wait for as many
        // Ready pods that are not them (Ready includes the gate: their targets are healthy).
        let state = self.observe().await?;
        let wanted = usize::try_from(state.slot(slot).replicas).unwrap_or(0);
        if let Err(e) = super::replaced_and_ready(
            self.cluster,
            &self.selector(slot),
            &recreated,
            wanted,
            self.timeout,
        )
        .await
        {
            self.say(&format!("{}: {e}", self.name()));
        }
        self.ready_or_abort(slot, Some(from)).await
    }

    /// Before `slot` is scaled down: waits until the ALB sends it nothing (weights and header
    /// rules read through ELBv2) and its load-balancer targets drained.
    async fn drain(&self, slot: Slot) -> RolloutResult<()> {
        let Some(lb) = self.lb.filter(|_| self.routes_through_lb()) else {
            return Ok(());
        };
        if self.spec.ingress.is_some() {
            let (host, path) = self.host_and_path();
            if let Err(problem) = lb
                .unshared(
                    self.cluster,
                    self.progress,
                    self.name(),
                    &host,
                    &path,
                    &self.slot_name(slot),
                )
                .await?
            {
                return Err(RolloutError::MoveBackUnconfirmed {
                    workload: self.name().to_owned(),
                    router: self.router(),
                    slot: self.slot_name(slot.other()),
                    left: self.slot_name(slot),
                    problem,
                });
            }
        }
        let mut services = vec![self.slot_name(slot)];
        if self.spec.tcp {
            services.push(self.name().to_owned());
        }
        lb.drained(self.cluster, self.progress, &services, &self.selector(slot))
            .await
    }

    /// Gives every request back to `live` at once (it still has the capacity it served with),
    /// confirmed on the load balancer before anything else happens to the other slot.
    async fn move_back(&self, live: Slot) -> RolloutResult<()> {
        let state = self.observe().await?;
        let deadline = Self::deadline_text(&state);
        let mut moved = false;
        if let Some(ingress) = self.ingress(live, 100) {
            moved = self.ensure(&ingress).await?;
        }
        self.ensure(&self.stable(Some(live), deadline.as_deref()))
            .await?;
        self.say(&format!("moved all traffic back to {}", live.as_str()));
        if moved {
            self.confirm_back(live).await?;
        }
        Ok(())
    }

    /// After the Ingress gave every request back to `live`: the ALB's rule says so too, read
    /// through ELBv2 — or, without the checks, the controller's usual time to apply it has
    /// passed — so the other slot may be drained, scaled down or replaced. A controller that
    /// does not apply it leaves the other slot running (the ALB may still send it requests).
    async fn confirm_back(&self, live: Slot) -> RolloutResult<()> {
        if self.spec.ingress.is_none() {
            return Ok(());
        }
        let left = live.other();
        let Some(lb) = self.lb else {
            if !self.unverified_wait.is_zero() {
                self.say(&format!(
                    "waiting {:?} for the {} to move the {}'s share of {} back (not checked: --no-verify-lb)",
                    self.unverified_wait,
                    self.router().controller(),
                    self.router().lb(),
                    self.slot_name(left)
                ));
                self.cluster
                    .pause(
                        self.unverified_wait,
                        "the controller applying the move back",
                    )
                    .await?;
            }
            return Ok(());
        };
        let (host, path) = self.host_and_path();
        let expected = [(self.slot_name(live), 100), (self.slot_name(left), 0)];
        match lb
            .weights(
                self.cluster,
                self.progress,
                self.name(),
                &host,
                &path,
                &expected,
            )
            .await?
        {
            Ok(()) => Ok(()),
            Err(problem) => Err(RolloutError::MoveBackUnconfirmed {
                workload: self.name().to_owned(),
                router: self.router(),
                slot: self.slot_name(live),
                left: self.slot_name(left),
                problem,
            }),
        }
    }

    /// Scales `slot` up to at least `replicas` (never down); says why.
    async fn size(&self, slot: Slot, replicas: i32, why: &str) -> RolloutResult<bool> {
        let state = self.observe().await?;
        let current = state.slot(slot).replicas;
        if current >= replicas || state.slot(slot).deployment.is_none() {
            return Ok(false);
        }
        self.cluster.scale(&self.slot_name(slot), replicas).await?;
        self.say(&format!(
            "scaled {} up from {current} to {replicas} {why}",
            self.slot_name(slot)
        ));
        Ok(true)
    }

    /// Before traffic moves from `live` to `to`: `to` gets at least as many replicas as the live
    /// slot runs now (the HPA may have scaled it during the wait), and is waited for.
    async fn follow_load(&self, live: Slot, to: Slot) -> RolloutResult<()> {
        let Some((_, max)) = self.hpa_bounds() else {
            return Ok(());
        };
        let state = self.observe().await?;
        let serving = state.slot(live).replicas.min(max);
        if self
            .size(
                to,
                serving,
                &format!(
                    "to follow the live load ({} runs {serving})",
                    self.slot_name(live)
                ),
            )
            .await?
        {
            self.ready_or_abort(to, Some(live)).await?;
        }
        Ok(())
    }

    async fn problem_of(&self, slot: Slot) -> RolloutResult<Option<String>> {
        let state = self.observe().await?;
        let view = state.slot(slot);
        if view.deployment.is_none() {
            return Ok(Some("the Deployment disappeared".into()));
        }
        let problems = diagnose::problems(self.cluster, &self.selector(slot)).await?;
        let first = problems
            .first()
            .map(|p| format!(", {p}"))
            .unwrap_or_default();
        Ok(if view.complete && !problems.iter().any(|p| p.is_fatal()) {
            None
        } else {
            Some(format!(
                "{}/{} available{first}",
                view.available, view.replicas
            ))
        })
    }

    /// Moves every request from `from` (none: first deploy) to `to`: the ALB weights by `steps`
    /// (starting after the weight `to` already has, so an interrupted cutover resumes; each
    /// step after the new slot was sized to the live load, each followed by a pause and a
    /// health check), the tcp overlap, then the stable Service (with the previous slot's
    /// scale-down deadline).
    async fn shift(
        &self,
        from: Option<Slot>,
        to: Slot,
        steps: &[u8],
        direction: Move,
        canary: Option<Slot>,
    ) -> RolloutResult<()> {
        let name = self.name().to_owned();
        let check = self
            .lb
            .filter(|_| direction == Move::Forward && from.is_some());
        if self.spec.tcp
            && direction == Move::Forward
            && let Some(from) = from
        {
            // The NLB registers only pods its Service selects: onto pods it does not select
            // now (a rollback, a resumed cutover) it moves like a release — both selected,
            // pods without their gate recreated, healthy targets — never by the selector
            // alone, which would leave new players no healthy target for tens of seconds.
            if self.ensure(&self.stable(None, None)).await? {
                self.say(&format!("{} selects both slots", self.tcp_lb()));
            }
            self.regate(to, from).await?;
        }
        if let (Some(lb), Some(from)) = (check, from)
            && self.routes_through_lb()
        {
            let service = self.lb_service(to);
            if let Err(problem) = lb
                .serving(
                    self.cluster,
                    self.progress,
                    &service,
                    &self.selector(to),
                    self.timeout,
                )
                .await?
            {
                return Err(self.not_serving(to, from, problem).await);
            }
        }
        if self.spec.ingress.is_some() {
            let already = self.observe().await?.slot(to).weight;
            let steps: Vec<u8> = match from {
                Some(_) => steps.iter().copied().filter(|p| *p > already).collect(),
                None => vec![100],
            };
            for (i, percent) in steps.iter().copied().enumerate() {
                if let Some(from) = from {
                    self.follow_load(from, to).await?;
                }
                let mut wrote = false;
                if let Some(ingress) =
                    self.weighted(to, percent, canary.filter(|_| percent < 100))?
                    && self.ensure(&ingress).await?
                {
                    wrote = true;
                    self.say(&format!(
                        "{percent}% of {} traffic on {}",
                        self.router().lb(),
                        to.as_str()
                    ));
                }
                if direction == Move::Back {
                    if wrote {
                        self.confirm_back(to).await?;
                    }
                } else if let (Some(lb), Some(from)) = (check, from) {
                    let (host, path) = self.host_and_path();
                    let expected = [
                        (self.slot_name(to), percent),
                        (self.slot_name(from), 100 - percent),
                    ];
                    let checked = lb
                        .weights(
                            self.cluster,
                            self.progress,
                            self.name(),
                            &host,
                            &path,
                            &expected,
                        )
                        .await;
                    match checked {
                        Ok(Ok(())) => {}
                        Ok(Err(seen)) => return Err(self.not_serving(to, from, seen).await),
                        // The lock is gone: another run acts now, this one writes nothing.
                        Err(RolloutError::Cluster(e)) if e.is_lock_lost() => {
                            return Err(RolloutError::Cluster(e));
                        }
                        // The weights moved but could not be read back (ELBv2 or the API
                        // failing): every request goes back before the error is reported.
                        Err(error) => {
                            let problem =
                                format!("the rule's weights could not be read back ({error})");
                            return Err(self.not_serving(to, from, problem).await);
                        }
                    }
                }
                if percent < 100 {
                    self.cluster
                        .pause(
                            self.spec.step_pause,
                            &format!("pause after the {percent}% step"),
                        )
                        .await?;
                    if let Some(problem) = self.problem_of(to).await?
                        && let Some(from) = from
                    {
                        self.move_back(from).await?;
                        return Err(RolloutError::Aborted {
                            workload: name.clone(),
                            kept: from.as_str().to_owned(),
                            cause: Box::new(WaitError::Failed {
                                name: self.slot_name(to),
                                problems: Vec::new(),
                            }),
                            hint: format!(
                                "after step {} ({percent}%) {}: {problem}; all traffic was moved back",
                                i + 1,
                                self.slot_name(to)
                            ),
                        });
                    }
                }
            }
        }
        if self.spec.tcp
            && let Some(from) = from
        {
            self.follow_load(from, to).await?;
            // NLB: both slots selected until the new one's targets are healthy (their pods'
            // readiness gates), then for `overlapSeconds` more if the file asks for it.
            if self.ensure(&self.stable(None, None)).await? {
                self.say(&format!("{} selects both slots", self.tcp_lb()));
            }
            if !self.spec.overlap.is_zero() {
                self.say(&format!(
                    "both slots stay selected for {:?}",
                    self.spec.overlap
                ));
                self.cluster
                    .pause(self.spec.overlap, "the NLB overlap")
                    .await?;
            }
        }
        if let Some(from) = from {
            self.follow_load(from, to).await?;
        }
        let deadline = from.map(|_| self.new_deadline());
        self.ensure(&self.stable(Some(to), deadline.as_deref()))
            .await?;
        match from {
            Some(from) => self.progress.step(&format!(
                "switched {name} from {} to {}",
                from.as_str(),
                to.as_str()
            )),
            None => self.say(&format!("{} is live (first deploy)", to.as_str())),
        }
        Ok(())
    }

    /// Brings every live-state object in line with `live` being live: weights, selectors,
    /// preview, HPA, replicas asked for by the file, the release record, and a due scale-down
    /// of the previous slot.
    async fn converge(
        &self,
        live: Slot,
        previous: Option<Slot>,
        action: &str,
    ) -> RolloutResult<()> {
        let state = self.observe().await?;
        let deadline = Self::deadline_text(&state);
        if let Some(ingress) = self.ingress(live, 100)
            && self.ensure(&ingress).await?
        {
            self.say(&format!(
                "100% of {} traffic on {}",
                self.router().lb(),
                live.as_str()
            ));
        }
        if self
            .ensure(&self.stable(Some(live), deadline.as_deref()))
            .await?
        {
            self.say(&format!(
                "Service {} selects {}",
                self.name(),
                live.as_str()
            ));
        }
        if self.ensure(&self.preview(live)).await? {
            self.say(&format!("preview now shows {}", live.as_str()));
        }
        if let Some(hpa) = self.hpa(live)
            && self.ensure(&hpa).await?
        {
            self.say(&format!("HPA now scales {}", self.slot_name(live)));
        }
        let view = state.slot(live);
        if self.hpa_bounds().is_none() && view.replicas != self.spec_replicas() {
            let replicas = self.spec_replicas();
            self.cluster.scale(&self.slot_name(live), replicas).await?;
            self.say(&format!(
                "scaled {} from {} to {replicas} replica(s), as the environment file asks",
                self.slot_name(live),
                view.replicas
            ));
            if let Err(cause) = self.wait_ready(live).await {
                return Err(match cause {
                    WaitError::Cluster(e) => e.into(),
                    cause => RolloutError::Rolling {
                        workload: self.name().to_owned(),
                        cause: Box::new(cause),
                        hint: format!(
                            "{} keeps serving with the pods that are ready; see `kubectl -n {} describe pods -l {}`",
                            self.slot_name(live),
                            self.cluster.namespace(),
                            self.selector(live)
                        ),
                    },
                });
            }
        }
        self.record_live(&state, live, previous, action).await?;
        let other = live.other();
        if Self::scale_down_due(&state, live) {
            self.drain(other).await?;
            self.cluster.scale(&self.slot_name(other), 0).await?;
            self.say(&format!(
                "scaled {} to 0 (its scale-down delay ended at {})",
                self.slot_name(other),
                deadline.clone().unwrap_or_default()
            ));
        } else if let Some(previous) = previous.filter(|p| *p != live) {
            let until = Self::deadline_text(&self.observe().await?).unwrap_or_default();
            self.say(&format!(
                "{} keeps running until {until} for an instant rollback (`infra-gen finalize`, or any apply after that time, scales it down)",
                self.slot_name(previous)
            ));
        }
        Ok(())
    }

    /// Records `live` as the newest release unless it already is (a run killed between the
    /// switch and the record leaves it unrecorded; the history must know it for rollbacks).
    async fn record_live(
        &self,
        state: &State,
        live: Slot,
        previous: Option<Slot>,
        action: &str,
    ) -> RolloutResult<()> {
        let view = state.slot(live);
        let template = view.template.clone().unwrap_or_default();
        let before = previous.map(|p| state.slot(p));
        let recorded = history::is_latest(&state.releases, &template, live.as_str())
            && (action != "rollback"
                || state.releases.first().is_some_and(|r| {
                    r.action == "rollback"
                        && r.from_template == before.and_then(|b| b.template.clone())
                }));
        if recorded {
            return Ok(());
        }
        history::record(
            self.cluster,
            self.name(),
            self.release(action, view, before),
        )
        .await?;
        Ok(())
    }

    /// Switches back to the release that was live before the current one (from the release
    /// history): at once while it still runs, after sizing it to the live load and waiting
    /// for it otherwise. With `revision` (the CI job's commit), a rollback of that revision
    /// that already happened is not done again.
    pub async fn rollback(&self, revision: Option<&str>) -> RolloutResult<()> {
        self.guarded(self.rollback_steps(revision)).await
    }

    async fn rollback_steps(&self, revision: Option<&str>) -> RolloutResult<()> {
        let mut state = self.observe().await?;
        let name = self.name().to_owned();
        // A cutover that never finished: rolling it back is moving every request back to
        // the release it started from. Without a revision that is all: the interrupted
        // release is what was to be undone (a further rollback goes back another release).
        if let Routing::Split { from, .. } = state.routing {
            state = self.settle_interrupted(state, Resume::Never).await?;
            if revision.is_none() {
                self.say(&format!(
                    "the interrupted release was given up; {} is live again",
                    from.as_str()
                ));
                return self.converge(from, None, "deploy").await;
            }
        }
        // A deploy killed after its switch but before its record: it did go live.
        if let Routing::Live(live) = state.routing
            && state.release_in(live).is_none()
        {
            let before = Slot::parse(state.releases.first().map_or("", |r| r.slot.as_str()));
            self.record_live(&state, live, before.filter(|b| *b != live), "deploy")
                .await?;
            state = self.observe().await?;
        }
        // During a grey release the newest deploy is the canary: rolling it back is aborting it.
        if let (Some(live), Some(found)) = (state.live(), &state.canary) {
            let live_revision = state.slot(live).revision.clone().unwrap_or_default();
            let canary_revision = found
                .slot
                .and_then(|s| state.slot(s).revision.clone())
                .unwrap_or_default();
            if let Some(r) = revision
                && same_revision(r, &live_revision)
                && !same_revision(r, &canary_revision)
            {
                return Err(RolloutError::Preflight(format!(
                    "{name}: a canary of revision {} runs on top of revision {}; `infra-gen abort` (or promote) it first, then roll back",
                    short(&canary_revision),
                    short(r)
                )));
            }
            self.say("a canary runs: rolling it back gives it up");
            return self.abort_steps(revision).await;
        }
        let Some(current) = state.last_live() else {
            return Err(RolloutError::Preflight(format!(
                "{name} has no live slot: nothing to roll back"
            )));
        };
        let Some((index, live_release)) = state.release_in(current) else {
            return Err(RolloutError::Preflight(format!(
                "{name}: the release history has no entry for the live slot {}, so the release before it is unknown; deploy the commit you want instead",
                current.as_str()
            )));
        };
        if let (Routing::Live(_), Some(revision)) = (state.routing, revision)
            && !same_revision(&live_release.revision, revision)
        {
            let done = state.releases[..=index].iter().any(|r| {
                r.action == "rollback"
                    && r.from_revision
                        .as_deref()
                        .is_some_and(|f| same_revision(f, revision))
            });
            self.say(&if done {
                format!(
                    "revision {} was already rolled back ({} is live); nothing to do",
                    short(revision),
                    short(&live_release.revision)
                )
            } else {
                format!(
                    "revision {} is not live ({} is); nothing to roll back",
                    short(revision),
                    short(&live_release.revision)
                )
            });
            return Ok(());
        }
        let Some(release) = history::rollback_target(&state.releases, index) else {
            return Err(RolloutError::Preflight(format!(
                "{name}: no earlier release to roll back to ({} is the only one recorded, or every earlier one was rolled back from)",
                short(&live_release.revision)
            )));
        };
        let Some(target) = Slot::BOTH
            .into_iter()
            .find(|s| state.slot(*s).runs(&release.template))
        else {
            let other = state.slot(current.other());
            return Err(RolloutError::Preflight(format!(
                "{name}: the release before {} is {} ({}), which no longer runs in a slot ({} holds {}); deploy commit {} to go back to it",
                short(&live_release.revision),
                short(&release.revision),
                release.image,
                self.slot_name(current.other()),
                other.revision.as_deref().map_or("nothing", short),
                release.revision
            )));
        };
        if state.routing == Routing::Live(target) {
            self.say(&format!("{} is already live", target.as_str()));
            return self.converge(target, None, "rollback").await;
        }
        let serving = Slot::BOTH
            .into_iter()
            .filter(|s| *s != target)
            .map(|s| state.slot(s).replicas)
            .max()
            .unwrap_or(0);
        let wanted = match self.hpa_bounds() {
            Some((min, max)) => serving.max(min).min(max.max(min)),
            None => serving.max(self.spec_replicas()),
        };
        self.size(target, wanted, "to take the live load back")
            .await?;
        if let Err(cause) = self.wait_ready(target).await {
            return Err(match cause {
                WaitError::Cluster(e) => e.into(),
                cause => RolloutError::RollbackNotReady {
                    workload: name,
                    target: self.slot_name(target),
                    kept: state.traffic(),
                    cause: Box::new(cause),
                },
            });
        }
        self.shift(Some(current), target, &[100], Move::Forward, None)
            .await?;
        self.converge(target, Some(current), "rollback").await
    }

    /// Scales the previous slot to 0 once its deadline passed (or at once with `now`),
    /// after settling an interrupted cutover. Never a slot that has traffic.
    pub async fn finalize(&self, now: bool) -> RolloutResult<()> {
        self.guarded(self.finalize_steps(now)).await
    }

    async fn finalize_steps(&self, now: bool) -> RolloutResult<()> {
        let state = self.observe().await?;
        // The delayed job of a pipeline whose deploy was cancelled: back to the last release.
        let state = self.settle_interrupted(state, Resume::Never).await?;
        let Some(live) = state.live() else {
            self.say("not deployed yet");
            return Ok(());
        };
        if let Some(found) = &state.canary {
            self.say(&format!(
                "a canary runs in {} ({}): `infra-gen promote` or `infra-gen abort` it; nothing is scaled down",
                found.slot.map_or_else(|| "no slot".to_owned(), |s| self.slot_name(s)),
                found.rule.as_ref().map_or_else(|| "no header rule".to_owned(), canary::describe)
            ));
            return Ok(());
        }
        let previous = live.other();
        let view = state.slot(previous);
        if view.replicas == 0 {
            self.say(&format!(
                "{} is already scaled down",
                self.slot_name(previous)
            ));
            return Ok(());
        }
        if view.has_traffic() {
            return Err(RolloutError::Preflight(format!(
                "{}: {} still has traffic ({}); not scaling it down",
                self.name(),
                self.slot_name(previous),
                state.traffic()
            )));
        }
        // A version that never went live there (a cancelled or aborted release) is no
        // rollback target: nothing to keep it for.
        let keep_for_rollback = state.release_in(previous).is_some();
        if let Some(deadline) = state.scale_down_after
            && keep_for_rollback
            && !now
            && deadline > Timestamp::now()
        {
            self.say(&format!(
                "{} stays up until {} for an instant rollback; `infra-gen finalize` (or any `apply`) after that time scales it down, `--now` does it now",
                self.slot_name(previous),
                history::time_text(deadline)
            ));
            return Ok(());
        }
        // A deploy killed between the switch and the HPA's re-point left the HPA on the
        // slot about to go: the live slot would lose its autoscaling.
        if let Some(hpa) = self.hpa(live)
            && self.ensure(&hpa).await?
        {
            self.say(&format!("HPA now scales {}", self.slot_name(live)));
        }
        self.drain(previous).await?;
        self.cluster.scale(&self.slot_name(previous), 0).await?;
        if keep_for_rollback {
            self.say(&format!("scaled {} to 0", self.slot_name(previous)));
        } else {
            self.say(&format!(
                "scaled {} to 0: it holds a version that never went live, no rollback target",
                self.slot_name(previous)
            ));
        }
        Ok(())
    }
}

/// Whether two revisions name the same commit (a short sha names its full one).
pub fn same_revision(a: &str, b: &str) -> bool {
    a == b || (a.len().min(b.len()) >= 7 && (a.starts_with(b) || b.starts_with(a)))
}

/// The first 12 characters of a revision.
pub fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}
