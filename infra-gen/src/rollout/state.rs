//! The one truth about a blue-green workload: where its traffic goes. Every command
//! (`apply`, `finalize`, `rollback`, `status`, `diff`) reads the workload through
//! [`observe`], which derives the state from what actually routes requests — the ALB forward
//! action's weights and the stable Service's selector (the NLB's targets for `tcp`, in-cluster
//! callers for `web`) — and from the release history for what was live before.
//!
//! Why not a recorded "active slot": the cutover moves the weights first and the selector
//! last, so any single object (or an annotation written beside them) is wrong for the moment
//! a run is killed in between. A slot that receives requests by either path "has traffic";
//! when both slots have traffic, a cutover was interrupted, and the history (which records a
//! release only once it went live) says which slot it started from.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value as Json;

use super::canary::{self, CanaryState};
use super::history::{self, Release};
use super::{REVISION, SCALE_DOWN_AFTER, TEMPLATE};
use crate::cluster::wait::Replicas;
use crate::render::context::labels;

/// A slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// `blue`.
    Blue,
    /// `green`.
    Green,
}

impl Slot {
    /// Both slots.
    pub const BOTH: [Slot; 2] = [Slot::Blue, Slot::Green];

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

    /// `blue` → Blue.
    pub fn parse(text: &str) -> Option<Slot> {
        match text {
            "blue" => Some(Slot::Blue),
            "green" => Some(Slot::Green),
            _ => None,
        }
    }
}

/// One slot as the cluster holds it.
#[derive(Debug, Clone)]
pub struct SlotView {
    /// Which slot.
    pub slot: Slot,
    /// Its Deployment, if it exists.
    pub deployment: Option<Json>,
    /// The pod-template hash it runs.
    pub template: Option<String>,
    /// The revision (git commit) it runs.
    pub revision: Option<String>,
    /// Its image.
    pub image: Option<String>,
    /// `spec.replicas`.
    pub replicas: i32,
    /// Available replicas.
    pub available: i32,
    /// Every replica of its current template available, and at least one.
    pub complete: bool,
    /// Its share of the ALB forward action, percent (0 without an Ingress).
    pub weight: u8,
    /// Whether the stable Service selects its pods.
    pub selected: bool,
}

impl SlotView {
    /// Whether requests reach it, by the ALB or through the stable Service.
    pub fn has_traffic(&self) -> bool {
        self.weight > 0 || (self.selected && self.replicas > 0)
    }

    /// Whether it runs the pod template `hash`.
    pub fn runs(&self, hash: &str) -> bool {
        self.template.as_deref() == Some(hash)
    }
}

/// Where the traffic of a workload goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// No slot gets requests: nothing is deployed yet.
    Idle,
    /// One slot gets every request.
    Live(Slot),
    /// Both get requests: a cutover from `from` to `to` was interrupted (or is running).
    Split {
        /// The slot that was live before.
        from: Slot,
        /// The slot being cut over to.
        to: Slot,
    },
}

/// A blue-green workload as the cluster holds it.
#[derive(Debug, Clone)]
pub struct State {
    /// Workload name.
    pub name: String,
    /// The blue slot.
    pub blue: SlotView,
    /// The green slot.
    pub green: SlotView,
    /// Where requests go.
    pub routing: Routing,
    /// The stable Service.
    pub stable: Option<Json>,
    /// The workload's Ingress.
    pub ingress: Option<Json>,
    /// A Deployment `<name>` left from when the workload was rolling (switching strategy).
    pub rolling: Option<Json>,
    /// When the slot that is not live may be scaled down.
    pub scale_down_after: Option<Timestamp>,
    /// This workload's releases that went live, newest first.
    pub releases: Vec<Release>,
    /// A grey release on the ALB (the header rule), if the Ingress has one.
    pub canary: Option<CanaryState>,
    /// Grey releases started and ended (`canary`, `abort` records), newest first.
    pub canaries: Vec<Release>,
}

/// Release-history actions that are not a release going live.
pub const CANARY_ACTIONS: [&str; 2] = ["canary", "abort"];

/// The live objects [`observe`] derives the state from.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// `<name>-blue`.
    pub blue: Option<Json>,
    /// `<name>-green`.
    pub green: Option<Json>,
    /// The stable Service `<name>`.
    pub stable: Option<Json>,
    /// The Ingress `<name>`.
    pub ingress: Option<Json>,
    /// The Deployment `<name>` (rolling).
    pub rolling: Option<Json>,
    /// The workload's release history.
    pub releases: Vec<Release>,
}

fn annotation<'a>(object: Option<&'a Json>, key: &str) -> Option<&'a str> {
    object?.pointer("/metadata/annotations")?.get(key)?.as_str()
}

fn replicas_of(deployment: Option<&Json>) -> i32 {
    deployment
        .and_then(|d| d.pointer("/spec/replicas"))
        .and_then(Json::as_i64)
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or(0)
}

/// The (blue, green) shares, in percent, of the rule every request reaches: the Ingress's
/// forward action or the HTTPRoute's weighted backends, if the object has one.
pub fn weights(ingress: Option<&Json>, name: &str) -> Option<(u8, u8)> {
    let shares = super::route::shares(ingress, name)?;
    let weight = |slot: Slot| {
        let service = format!("{name}-{}", slot.as_str());
        shares
            .iter()
            .find(|(s, _)| *s == service)
            .map_or(0, |(_, w)| *w)
    };
    Some((weight(Slot::Blue), weight(Slot::Green)))
}

/// Whether a Service selector matches the pods of a Deployment (an empty selector selects
/// nothing: Kubernetes then manages no endpoints).
fn selects(selector: Option<&Json>, deployment: Option<&Json>) -> bool {
    let Some(selector) = selector.and_then(Json::as_object).filter(|s| !s.is_empty()) else {
        return false;
    };
    let Some(pod_labels) = deployment
        .and_then(|d| d.pointer("/spec/template/metadata/labels"))
        .and_then(Json::as_object)
    else {
        return false;
    };
    selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
}

fn view(slot: Slot, deployment: Option<&Json>, stable: Option<&Json>, weight: u8) -> SlotView {
    let complete = deployment
        .and_then(|d| {
            serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(d.clone()).ok()
        })
        .is_some_and(|d| Replicas::of(&d).is_complete());
    let replicas = replicas_of(deployment);
    SlotView {
        slot,
        template: annotation(deployment, TEMPLATE).map(str::to_owned),
        revision: annotation(deployment, REVISION).map(str::to_owned),
        image: deployment
            .and_then(|d| d.pointer("/spec/template/spec/containers/0/image"))
            .and_then(Json::as_str)
            .map(str::to_owned),
        replicas,
        available: deployment
            .and_then(|d| d.pointer("/status/availableReplicas"))
            .and_then(Json::as_i64)
            .and_then(|r| i32::try_from(r).ok())
            .unwrap_or(0),
        complete: complete && replicas > 0,
        weight,
        selected: selects(stable.and_then(|s| s.pointer("/spec/selector")), deployment),
        deployment: deployment.cloned(),
    }
}

/// Derives the state from the live objects (pure: the tests feed it objects directly).
pub fn observe(name: &str, objects: Objects) -> State {
    let (canaries, releases): (Vec<Release>, Vec<Release>) = objects
        .releases
        .into_iter()
        .partition(|r| CANARY_ACTIONS.contains(&r.action.as_str()));
    let (blue_weight, green_weight) = weights(objects.ingress.as_ref(), name).unwrap_or((0, 0));
    let stable = objects.stable.as_ref();
    let blue = view(Slot::Blue, objects.blue.as_ref(), stable, blue_weight);
    let green = view(Slot::Green, objects.green.as_ref(), stable, green_weight);
    let routing = match (blue.has_traffic(), green.has_traffic()) {
        (false, false) => Routing::Idle,
        (true, false) => Routing::Live(Slot::Blue),
        (false, true) => Routing::Live(Slot::Green),
        (true, true) => {
            let from = split_origin(&releases, &blue, &green, stable);
            Routing::Split {
                from,
                to: from.other(),
            }
        }
    };
    State {
        name: name.to_owned(),
        blue,
        green,
        routing,
        scale_down_after: annotation(stable, SCALE_DOWN_AFTER).and_then(history::parse_time),
        canary: canary::observe(objects.ingress.as_ref(), name),
        stable: objects.stable,
        ingress: objects.ingress,
        rolling: objects.rolling,
        releases,
        canaries,
    }
}

/// Which slot an interrupted cutover started from: the newest release that went live, when
/// its slot still runs it; else the slot the stable Service alone selects (it moves last);
/// else the slot with more weight.
fn split_origin(
    releases: &[Release],
    blue: &SlotView,
    green: &SlotView,
    stable: Option<&Json>,
) -> Slot {
    if let Some(last) = releases.first()
        && let Some(slot) = Slot::parse(&last.slot)
    {
        let holder = if slot == Slot::Blue { blue } else { green };
        if holder.runs(&last.template) {
            return slot;
        }
    }
    let pinned = stable
        .and_then(|s| {
            s.pointer(&format!(
                "/spec/selector/{}",
                labels::SLOT.replace('/', "~1")
            ))
        })
        .and_then(Json::as_str)
        .and_then(Slot::parse);
    if let Some(slot) = pinned {
        return slot;
    }
    if green.weight > blue.weight {
        Slot::Green
    } else {
        Slot::Blue
    }
}

impl State {
    /// One slot.
    pub fn slot(&self, slot: Slot) -> &SlotView {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }

    /// The slot every request goes to, if one does.
    pub fn live(&self) -> Option<Slot> {
        match self.routing {
            Routing::Live(slot) => Some(slot),
            _ => None,
        }
    }

    /// The slot that was live last: the live one, or the origin of an interrupted cutover.
    pub fn last_live(&self) -> Option<Slot> {
        match self.routing {
            Routing::Idle => None,
            Routing::Live(slot) | Routing::Split { from: slot, .. } => Some(slot),
        }
    }

    /// The release running in `slot`: the newest release recorded for the slot, if the slot
    /// still runs its template (else the slot holds a version that never went live there,
    /// or one whose record a killed run never wrote).
    pub fn release_in(&self, slot: Slot) -> Option<(usize, &Release)> {
        let template = self.slot(slot).template.as_deref()?;
        self.releases
            .iter()
            .enumerate()
            .find(|(_, r)| r.slot == slot.as_str())
            .filter(|(_, r)| r.template == template)
    }

    /// Where the traffic is, in words: "100% on blue", "ALB 50% blue / 50% green, the
    /// Service selects blue".
    pub fn traffic(&self) -> String {
        let channel = |slot: Slot| {
            let view = self.slot(slot);
            (view.weight, view.selected && view.replicas > 0)
        };
        let alb = self.ingress.is_some() && weights(self.ingress.as_ref(), &self.name).is_some();
        match self.routing {
            Routing::Idle => "no traffic yet".to_owned(),
            Routing::Live(slot) => format!("all traffic on {}", slot.as_str()),
            Routing::Split { .. } => {
                let mut parts = Vec::new();
                if alb {
                    let (b, _) = channel(Slot::Blue);
                    let (g, _) = channel(Slot::Green);
                    let by = match &self.ingress {
                        Some(route) if super::route::is_http_route(route) => "HTTPRoute",
                        _ => "ALB",
                    };
                    parts.push(format!("{by} {b}% on blue, {g}% on green"));
                }
                let selected: Vec<&str> = Slot::BOTH
                    .into_iter()
                    .filter(|s| channel(*s).1)
                    .map(Slot::as_str)
                    .collect();
                parts.push(format!(
                    "Service {} selects {}",
                    self.name,
                    if selected.is_empty() {
                        "no slot".to_owned()
                    } else {
                        selected.join(" and ")
                    }
                ));
                parts.join(", ")
            }
        }
    }

    /// Replica counts of both slots, for messages.
    pub fn counts(&self) -> BTreeMap<&'static str, (i32, i32)> {
        Slot::BOTH
            .into_iter()
            .map(|s| (s.as_str(), (self.slot(s).available, self.slot(s).replicas)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(slot: &str, template: &str, replicas: i64) -> Json {
        json!({
            "metadata": {"name": format!("web-{slot}"), "generation": 1, "annotations": {TEMPLATE: template}},
            "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "web", "infra-gen.dev/slot": slot}}}},
            "status": {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas, "availableReplicas": replicas},
        })
    }

    fn service(slot: Option<&str>) -> Json {
        let mut selector = json!({"app": "web"});
        if let Some(slot) = slot {
            selector["infra-gen.dev/slot"] = slot.into();
        }
        json!({"metadata": {"name": "web"}, "spec": {"selector": selector}})
    }

    fn ingress(blue: u8, green: u8) -> Json {
        json!({"metadata": {"name": "web", "annotations": {
            "alb.ingress.kubernetes.io/actions.web": crate::render::context::forward_action("web", blue, green)
        }}})
    }

    fn release(slot: &str, template: &str) -> Release {
        Release {
            action: "deploy".into(),
            revision: "r".into(),
            image: "i".into(),
            slot: slot.into(),
            template: template.into(),
            at: "2026-12-01T00:00:00Z".into(),
            by: "ci".into(),
            from_template: None,
            from_revision: None,
            lb_verified: None,
            object: None,
        }
    }

    #[test]
    fn weights_moved_but_selector_not_yet_is_an_interrupted_cutover_from_the_recorded_slot() {
        let state = observe(
            "web",
            Objects {
                blue: Some(deployment("blue", "v1", 2)),
                green: Some(deployment("green", "v2", 2)),
                stable: Some(service(Some("blue"))),
                ingress: Some(ingress(50, 50)),
                rolling: None,
                releases: vec![release("blue", "v1")],
            },
        );
        assert_eq!(
            state.routing,
            Routing::Split {
                from: Slot::Blue,
                to: Slot::Green
            }
        );
        assert_eq!(
            state.traffic(),
            "ALB 50% on blue, 50% on green, Service web selects blue"
        );
    }

    #[test]
    fn all_weight_on_the_new_slot_with_the_old_selector_is_still_a_split() {
        let state = observe(
            "web",
            Objects {
                blue: Some(deployment("blue", "v1", 2)),
                green: Some(deployment("green", "v2", 2)),
                stable: Some(service(Some("blue"))),
                ingress: Some(ingress(0, 100)),
                releases: vec![release("blue", "v1")],
                ..Objects::default()
            },
        );
        assert!(matches!(
            state.routing,
            Routing::Split {
                from: Slot::Blue,
                ..
            }
        ));
    }

    #[test]
    fn a_tcp_service_selecting_both_slots_is_a_split_not_a_first_deploy() {
        let state = observe(
            "web",
            Objects {
                blue: Some(deployment("blue", "v1", 3)),
                green: Some(deployment("green", "v2", 3)),
                stable: Some(service(None)),
                releases: vec![release("blue", "v1")],
                ..Objects::default()
            },
        );
        assert_eq!(
            state.routing,
            Routing::Split {
                from: Slot::Blue,
                to: Slot::Green
            }
        );
    }

    #[test]
    fn one_slot_with_all_traffic_is_live_and_an_empty_namespace_is_idle() {
        let live = observe(
            "web",
            Objects {
                blue: Some(deployment("blue", "v1", 2)),
                green: Some(deployment("green", "v2", 0)),
                stable: Some(service(Some("green"))),
                ingress: Some(ingress(0, 100)),
                ..Objects::default()
            },
        );
        assert_eq!(
            live.routing,
            Routing::Live(Slot::Green),
            "green gets every request (by weight and selector) though it has no pods"
        );
        let idle = observe("web", Objects::default());
        assert_eq!(idle.routing, Routing::Idle);
        let live = observe(
            "web",
            Objects {
                blue: Some(deployment("blue", "v1", 2)),
                green: Some(deployment("green", "v2", 0)),
                stable: Some(service(Some("blue"))),
                ingress: Some(ingress(100, 0)),
                ..Objects::default()
            },
        );
        assert_eq!(live.routing, Routing::Live(Slot::Blue));
    }

    #[test]
    fn without_history_the_selector_tells_where_a_split_started() {
        let state = observe(
            "web",
            Objects {
                blue: Some(deployment("blue", "v1", 2)),
                green: Some(deployment("green", "v2", 2)),
                stable: Some(service(Some("green"))),
                ingress: Some(ingress(90, 10)),
                ..Objects::default()
            },
        );
        assert_eq!(
            state.routing,
            Routing::Split {
                from: Slot::Green,
                to: Slot::Blue
            }
        );
    }
}
