//! How the load-balancer stand-in behaves in one namespace: the knobs a test turns to make
//! it slow or broken the ways the real AWS Load Balancer Controller can be.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The namespace annotation that carries a namespace's [`Settings`] (JSON) on the real
/// control plane; `off` means "no controller here", as on a cluster without one.
pub const ANNOTATION: &str = "testbed.infra-gen.dev/lb";

/// The controller's behaviour. Timings left `None` are the cluster's usual [`Pace`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    /// The webhook gives new pods their readiness gates (false: it answers without them, as
    /// one whose cache missed the binding, or one with `failurePolicy: Ignore` unreachable).
    pub inject_gates: bool,
    /// Pod IPs are registered as targets (false: they never are).
    pub register_targets: bool,
    /// Seconds a new target stays `initial`.
    pub initial_seconds: Option<u32>,
    /// Targets never pass their health check.
    pub stuck_initial: bool,
    /// New forward weights reach the listener rule (false: the rule keeps its first ones).
    pub apply_weights: bool,
    /// `conditions.<action>` annotations become rule conditions (false: ignored, as by a
    /// controller older than v2.0 or one that fails to parse them).
    pub apply_conditions: bool,
    /// How long after an Ingress change its listener rules change.
    #[serde(with = "millis")]
    pub weight_lag: Option<Duration>,
    /// Seconds a deregistered target drains, instead of the target group's delay.
    pub draining_seconds: Option<u32>,
    /// The controller has stopped reconciling (its webhook still answers, as a standby
    /// replica's does): rules, targets and gates stay as they are.
    pub paused: bool,
}

impl Default for Settings {
    /// A controller that works, at the cluster's usual pace.
    fn default() -> Self {
        Self {
            inject_gates: true,
            register_targets: true,
            initial_seconds: None,
            stuck_initial: false,
            apply_weights: true,
            apply_conditions: true,
            weight_lag: None,
            draining_seconds: None,
            paused: false,
        }
    }
}

/// How fast a cluster's controller usually is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// The API-server double's: targets healthy after a second, rules changed at the next
    /// reconcile, so a suite of hundreds of deploys takes minutes.
    Fast,
    /// The real controller's: a new target is `initial` for its health check's interval ×
    /// healthy threshold (from the Ingress or Service annotations, else the controller's
    /// defaults: 15 s × 2 for an ALB, 10 s × 3 for an NLB), a rule change lands a reconcile
    /// lag after the Ingress changed.
    Real,
}

impl Pace {
    /// Seconds a new target stays `initial`, given what its health check takes.
    pub fn initial_seconds(self, settings: &Settings, health_check: u32) -> u32 {
        settings.initial_seconds.unwrap_or(match self {
            Self::Fast => 1,
            Self::Real => health_check,
        })
    }

    /// The lag between an Ingress change and its listener rules' change.
    pub fn rule_lag(self, settings: &Settings) -> Duration {
        settings.weight_lag.unwrap_or(match self {
            Self::Fast => Duration::ZERO,
            Self::Real => REALISTIC_RULE_LAG,
        })
    }
}

/// The real controller's usual time from an Ingress change to the listener rule's change:
/// a reconcile, then a few ELBv2 calls.
pub const REALISTIC_RULE_LAG: Duration = Duration::from_secs(3);

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
