//! The blue-green cutover of one workload, as named, idempotent steps. Each looks at the live
//! state first and either says why it skips or what it switched, so a run killed at any point
//! is finished by the next one, and traffic only ever moves to a slot whose every replica is
//! available.
//!
//! Live state: the stable Service `<name>` records the live slot (selector + annotation);
//! `<name>-blue` / `<name>-green` are the slot Deployments; the Ingress action weights and the
//! HPA target follow the live slot; the scale-down deadline of the previous slot is an
//! annotation on the stable Service, which `finalize` reads.

use std::time::Duration;

use serde_json::{Value as Json, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::desired::BlueGreenSpec;
use super::history::{self, Release};
use super::progress::Progress;
use super::{
    ACTIVE_SLOT, REVISION, RolloutError, RolloutResult, SCALE_DOWN_AFTER, TEMPLATE, hash,
    is_up_to_date, stamped,
};
use crate::cluster::wait::{self, Replicas, WaitError};
use crate::cluster::{Cluster, Kind, diagnose};
use crate::render::context::{forward_action, labels};

/// A slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `blue`.
    Blue,
    /// `green`.
    Green,
}

impl Slot {
    /// `blue` or `green`.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }

    fn parse(text: &str) -> Option<Slot> {
        match text {
            "blue" => Some(Slot::Blue),
            "green" => Some(Slot::Green),
            _ => None,
        }
    }
}

/// What the cluster holds for a workload.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// The slot the stable Service selects.
    pub active: Option<Slot>,
    /// The blue slot Deployment.
    pub blue: Option<Json>,
    /// The green slot Deployment.
    pub green: Option<Json>,
    /// The stable Service.
    pub stable: Option<Json>,
}

impl Live {
    /// The slot Deployment of `slot`.
    pub fn deployment(&self, slot: Slot) -> Option<&Json> {
        match slot {
            Slot::Blue => self.blue.as_ref(),
            Slot::Green => self.green.as_ref(),
        }
    }
}

fn replicas_of(deployment: Option<&Json>) -> i32 {
    deployment
        .and_then(|d| d.pointer("/spec/replicas"))
        .and_then(Json::as_i64)
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or(0)
}

fn annotation<'a>(object: Option<&'a Json>, key: &str) -> Option<&'a str> {
    object?.pointer("/metadata/annotations")?.get(key)?.as_str()
}

fn now_text(offset: Duration) -> String {
    (OffsetDateTime::now_utc() + offset)
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// One workload's blue-green operations.
pub struct BlueGreen<'a> {
    /// The cluster.
    pub cluster: &'a Cluster,
    /// The workload's objects from the tree.
    pub spec: &'a BlueGreenSpec,
    /// Progress output.
    pub progress: &'a Progress,
    /// How long a new slot may take to become ready.
    pub timeout: Duration,
    /// Who deploys (for the history).
    pub by: &'a str,
    /// The revision (for the history).
    pub revision: &'a str,
}

impl BlueGreen<'_> {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn slot_name(&self, slot: Slot) -> String {
        format!("{}-{}", self.name(), slot.as_str())
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

    /// Reads the live state.
    pub async fn read(&self) -> RolloutResult<Live> {
        let stable = self.cluster.get(Kind::Service, self.name()).await?;
        let active = stable
            .as_ref()
            .and_then(|s| {
                s.pointer(&format!(
                    "/spec/selector/{}",
                    labels::SLOT.replace('/', "~1")
                ))
            })
            .and_then(Json::as_str)
            .and_then(Slot::parse);
        Ok(Live {
            active,
            blue: self
                .cluster
                .get(Kind::Deployment, &self.slot_name(Slot::Blue))
                .await?,
            green: self
                .cluster
                .get(Kind::Deployment, &self.slot_name(Slot::Green))
                .await?,
            stable,
        })
    }

    /// The slot the desired version should run in: the live one if it already runs it, the
    /// other one otherwise; blue for a first deploy.
    pub fn target(&self, live: &Live) -> Slot {
        match live.active {
            None => Slot::Blue,
            Some(active)
                if annotation(live.deployment(active), TEMPLATE)
                    == Some(self.template_hash().as_str()) =>
            {
                active
            }
            Some(active) => active.other(),
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
    fn stable(&self, slot: Option<Slot>, active: Slot, scale_down_after: Option<&str>) -> Json {
        let mut s = self.spec.stable.clone();
        s["spec"]["selector"] = Self::with_slot(s.pointer("/spec/selector"), slot);
        s["metadata"]["annotations"][ACTIVE_SLOT] = Json::String(active.as_str().into());
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

    fn ingress(&self, to: Slot, percent: u8) -> Option<Json> {
        let mut ingress = self.spec.ingress.clone()?;
        let (blue, green) = match to {
            Slot::Blue => (percent, 100 - percent),
            Slot::Green => (100 - percent, percent),
        };
        ingress["metadata"]["annotations"]
            [format!("alb.ingress.kubernetes.io/actions.{}", self.name())] =
            Json::String(forward_action(self.name(), blue, green));
        Some(ingress)
    }

    fn hpa(&self, slot: Slot) -> Option<Json> {
        let mut hpa = self.spec.hpa.clone()?;
        hpa["spec"]["scaleTargetRef"]["name"] = Json::String(self.slot_name(slot));
        Some(hpa)
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

    /// The objects a deploy would leave behind (for `diff`): the target slot's Deployment
    /// when it would be (re)started, and the live-state objects pointing at the target.
    pub async fn planned_objects(&self) -> RolloutResult<Vec<Json>> {
        let live = self.read().await?;
        let target = self.target(&live);
        let mut out = Vec::new();
        if live.active != Some(target) {
            let replicas = live
                .active
                .map_or(1, |a| replicas_of(live.deployment(a)).max(1));
            out.push(stamped(&self.slot_deployment(target, replicas)));
        }
        let deadline = annotation(live.stable.as_ref(), SCALE_DOWN_AFTER).map(str::to_owned);
        out.push(stamped(&self.stable(
            Some(target),
            target,
            deadline.as_deref(),
        )));
        out.push(stamped(&self.preview(target.other())));
        out.extend(self.ingress(target, 100).map(|i| stamped(&i)));
        out.extend(self.hpa(target).map(|h| stamped(&h)));
        Ok(out)
    }

    /// Whether the cluster already runs the desired version, fully switched (read-only).
    pub async fn is_converged(&self) -> RolloutResult<bool> {
        let live = self.read().await?;
        let target = self.target(&live);
        if live.active != Some(target) {
            return Ok(false);
        }
        let deployment = live.deployment(target);
        let complete = deployment
            .and_then(|d| {
                serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(d.clone()).ok()
            })
            .is_some_and(|d| Replicas::of(&d).is_complete());
        if !complete || replicas_of(deployment) == 0 {
            return Ok(false);
        }
        let deadline = annotation(live.stable.as_ref(), SCALE_DOWN_AFTER).map(str::to_owned);
        let mut objects = vec![
            self.stable(Some(target), target, deadline.as_deref()),
            self.preview(target.other()),
        ];
        objects.extend(self.ingress(target, 100));
        objects.extend(self.hpa(target));
        for object in &objects {
            if !self.is_current(object).await? {
                return Ok(false);
            }
        }
        let releases = history::read(self.cluster).await?;
        Ok(history::is_latest(
            &releases,
            self.name(),
            &self.template_hash(),
            target.as_str(),
        ))
    }

    /// Deploys the desired version: new slot, wait, cutover, converge.
    pub async fn deploy(&self) -> RolloutResult<()> {
        let live = self.read().await?;
        let target = self.target(&live);
        let name = self.name().to_owned();
        if live.active == Some(target) {
            self.progress.step(&format!(
                "{name}: {} already runs this version",
                target.as_str()
            ));
            return self.converge(target, None, "deploy").await;
        }
        let hpa_min = self
            .spec
            .hpa
            .as_ref()
            .and_then(|h| h.pointer("/spec/minReplicas"))
            .and_then(Json::as_i64)
            .map(|m| m as i32);
        let replicas = match (live.active, hpa_min) {
            // Carry over what the HPA scaled the live slot to.
            (Some(active), Some(min)) => replicas_of(live.deployment(active)).max(min),
            (Some(active), None) => replicas_of(live.deployment(active)).max(1),
            (None, Some(min)) => min,
            (None, None) => replicas_of(Some(&self.spec.deployment)).max(1),
        };
        let existing = live.deployment(target);
        let current = annotation(existing, TEMPLATE) == Some(self.template_hash().as_str())
            && replicas_of(existing) > 0;
        if current {
            self.progress.step(&format!(
                "{name}: {} already holds this version",
                target.as_str()
            ));
        } else {
            self.cluster
                .apply(&stamped(&self.slot_deployment(target, replicas)), false)
                .await?;
            self.progress.step(&format!(
                "{name}: started {} with {replicas} replica(s) of the new version",
                self.slot_name(target)
            ));
        }
        if self.ensure(&self.preview(target)).await? {
            self.progress
                .step(&format!("{name}: preview now shows {}", target.as_str()));
        }
        self.wait_ready(target, live.active).await?;
        self.cutover(live.active, target).await?;
        self.converge(target, live.active, "deploy").await
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

    async fn wait_ready(&self, target: Slot, active: Option<Slot>) -> RolloutResult<()> {
        let name = self.slot_name(target);
        let progress = self.progress;
        let mut report = |line: &str| progress.status(line);
        match wait::deployment_ready(
            self.cluster,
            &name,
            &self.selector(target),
            self.timeout,
            &mut report,
        )
        .await
        {
            Ok(()) => {
                self.progress
                    .step(&format!("{}: {} is ready", self.name(), name));
                Ok(())
            }
            Err(WaitError::Cluster(e)) => Err(e.into()),
            Err(cause) => {
                // Abort: the new slot gives its capacity back; traffic never moved.
                if active != Some(target) {
                    self.cluster.scale(&name, 0).await?;
                    self.progress
                        .step(&format!("{}: aborted, scaled {name} to 0", self.name()));
                }
                let kept = active
                    .map_or("nothing (first deploy: no traffic yet)".to_owned(), |a| {
                        format!("{} ({})", a.as_str(), self.slot_name(a))
                    });
                Err(RolloutError::Aborted {
                    workload: self.name().to_owned(),
                    kept,
                    cause: Box::new(cause),
                    hint: format!(
                        "see `kubectl -n {} describe pods -l {}` and `kubectl logs`; fix and run the deploy again",
                        self.cluster.namespace(),
                        self.selector(target)
                    ),
                })
            }
        }
    }

    async fn still_healthy(&self, target: Slot) -> RolloutResult<Option<String>> {
        let live = self
            .cluster
            .get(Kind::Deployment, &self.slot_name(target))
            .await?;
        let complete = live
            .and_then(|d| serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(d).ok())
            .map(|d| Replicas::of(&d));
        let problems = diagnose::problems(self.cluster, &self.selector(target)).await?;
        Ok(match complete {
            Some(r) if r.is_complete() && !problems.iter().any(|p| p.fatal) => None,
            Some(r) => Some(format!(
                "{}/{} available{}",
                r.available,
                r.desired,
                problems
                    .first()
                    .map(|p| format!(", {p}"))
                    .unwrap_or_default()
            )),
            None => Some("the Deployment disappeared".into()),
        })
    }

    /// Moves traffic from `from` to `to`.
    async fn cutover(&self, from: Option<Slot>, to: Slot) -> RolloutResult<()> {
        let name = self.name().to_owned();
        if self.spec.ingress.is_some() {
            let steps = if from.is_some() {
                self.spec.steps.clone()
            } else {
                vec![100]
            };
            for (i, percent) in steps.iter().copied().enumerate() {
                if let Some(ingress) = self.ingress(to, percent)
                    && self.ensure(&ingress).await?
                {
                    self.progress.step(&format!(
                        "{name}: {percent}% of ALB traffic on {}",
                        to.as_str()
                    ));
                }
                if percent < 100 {
                    tokio::time::sleep(self.spec.step_pause).await;
                    if let Some(problem) = self.still_healthy(to).await? {
                        if let Some(ingress) = from.and_then(|f| self.ingress(f, 100)) {
                            self.ensure(&ingress).await?;
                        }
                        return Err(RolloutError::Aborted {
                            workload: name.clone(),
                            kept: from.map_or("nothing".into(), |f| f.as_str().to_owned()),
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
            // NLB: select both slots first, so new targets register before old ones drain.
            if self.ensure(&self.stable(None, from, None)).await? {
                self.progress.step(&format!(
                    "{name}: NLB selects both slots for {:?}",
                    self.spec.overlap
                ));
            }
            tokio::time::sleep(self.spec.overlap).await;
        }
        let deadline = now_text(self.spec.scale_down_delay);
        let after = from.map(|_| deadline.as_str());
        self.ensure(&self.stable(Some(to), to, after)).await?;
        match from {
            Some(from) => self.progress.step(&format!(
                "switched {name} from {} to {}",
                from.as_str(),
                to.as_str()
            )),
            None => self
                .progress
                .step(&format!("{name}: {} is live (first deploy)", to.as_str())),
        }
        Ok(())
    }

    /// Brings every live-state object in line with `target` being live.
    async fn converge(
        &self,
        target: Slot,
        previous: Option<Slot>,
        action: &str,
    ) -> RolloutResult<()> {
        let name = self.name().to_owned();
        let live = self.read().await?;
        let deadline = annotation(live.stable.as_ref(), SCALE_DOWN_AFTER).map(str::to_owned);
        if let Some(ingress) = self.ingress(target, 100)
            && self.ensure(&ingress).await?
        {
            self.progress.step(&format!(
                "{name}: 100% of ALB traffic on {}",
                target.as_str()
            ));
        }
        if self
            .ensure(&self.stable(Some(target), target, deadline.as_deref()))
            .await?
        {
            self.progress.step(&format!(
                "{name}: Service {name} selects {}",
                target.as_str()
            ));
        }
        if self.ensure(&self.preview(target.other())).await? {
            self.progress.step(&format!(
                "{name}: preview now shows {}",
                target.other().as_str()
            ));
        }
        if let Some(hpa) = self.hpa(target)
            && self.ensure(&hpa).await?
        {
            self.progress.step(&format!(
                "{name}: HPA now scales {}",
                self.slot_name(target)
            ));
        }
        let template = annotation(live.deployment(target), TEMPLATE)
            .unwrap_or_default()
            .to_owned();
        let releases = history::read(self.cluster).await?;
        if !history::is_latest(&releases, &name, &template, target.as_str()) {
            let image = live
                .deployment(target)
                .and_then(|d| d.pointer("/spec/template/spec/containers/0/image"))
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned();
            let revision = annotation(live.deployment(target), REVISION)
                .unwrap_or(self.revision)
                .to_owned();
            history::record(
                self.cluster,
                &name,
                Release {
                    action: action.to_owned(),
                    revision,
                    image,
                    slot: target.as_str().to_owned(),
                    template,
                    at: now_text(Duration::ZERO),
                    by: self.by.to_owned(),
                },
            )
            .await?;
        }
        if let Some(previous) = previous.filter(|p| *p != target) {
            self.progress.step(&format!(
                "{name}: {} keeps running until {} for an instant rollback (`infra-gen finalize` scales it down)",
                self.slot_name(previous),
                deadline.unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// Switches back to the previous slot: at once while it still runs, after scaling it up
    /// and waiting for it once `finalize` has scaled it down.
    pub async fn rollback(&self) -> RolloutResult<()> {
        let live = self.read().await?;
        let name = self.name().to_owned();
        let active = live.active.ok_or_else(|| {
            RolloutError::Preflight(format!("{name} has no live slot: nothing to roll back"))
        })?;
        let previous = active.other();
        let Some(previous_deployment) = live.deployment(previous) else {
            return Err(RolloutError::Preflight(format!(
                "{name} has no previous release ({} does not exist)",
                self.slot_name(previous)
            )));
        };
        if replicas_of(Some(previous_deployment)) == 0 {
            let replicas = replicas_of(live.deployment(active)).max(1);
            self.cluster
                .scale(&self.slot_name(previous), replicas)
                .await?;
            self.progress.step(&format!(
                "{name}: scaled {} back up to {replicas}",
                self.slot_name(previous)
            ));
        }
        self.wait_ready(previous, Some(active)).await?;
        let instant = BlueGreenSpec {
            steps: vec![100],
            ..self.spec.clone()
        };
        let fast = BlueGreen {
            spec: &instant,
            ..*self
        };
        fast.cutover(Some(active), previous).await?;
        fast.converge(previous, Some(active), "rollback").await
    }

    /// Scales the previous slot to 0 once its deadline passed (or at once with `now`).
    pub async fn finalize(&self, now: bool) -> RolloutResult<()> {
        let live = self.read().await?;
        let name = self.name().to_owned();
        let Some(active) = live.active else {
            self.progress.step(&format!("{name}: not deployed yet"));
            return Ok(());
        };
        let previous = active.other();
        if replicas_of(live.deployment(previous)) == 0 {
            self.progress.step(&format!(
                "{name}: {} is already scaled down",
                self.slot_name(previous)
            ));
            return Ok(());
        }
        let deadline = annotation(live.stable.as_ref(), SCALE_DOWN_AFTER)
            .and_then(|d| OffsetDateTime::parse(d, &Rfc3339).ok());
        if let Some(deadline) = deadline
            && !now
            && deadline > OffsetDateTime::now_utc()
        {
            self.progress.step(&format!(
                "{name}: {} stays up until {deadline} (use --now to scale it down now)",
                self.slot_name(previous)
            ));
            return Ok(());
        }
        self.cluster.scale(&self.slot_name(previous), 0).await?;
        self.progress
            .step(&format!("{name}: scaled {} to 0", self.slot_name(previous)));
        Ok(())
    }
}
