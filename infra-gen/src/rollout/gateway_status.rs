//! A traffic move checked through the Gateway API: after every write of an HTTPRoute, its
//! status is read back until, for every Gateway it names in `parentRefs`, a controller
//! reports on the route's current generation that it is `Accepted` and its backends are
//! resolved (`ResolvedRefs`). A Gateway that refuses the route (a listener that does not allow
//! routes from this namespace, an unknown section, a Service that does not exist) stops the
//! move: the caller moves every request back to where it was.
//!
//! Before traffic moves to a slot, its pods must be ready endpoints of the Service the Gateway
//! routes to ([`endpoints_ready`]): the EndpointSlices every Gateway data plane follows.
//!
//! What this cannot see: whether the data plane applied the weights, and its own health
//! checks of the pods (the Gateway API publishes neither). The pods' preStop sleep covers
//! what draining covers on the ALB.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use serde_json::Value as Json;

use super::progress::Progress;
use super::{RolloutError, RolloutResult};
use crate::cluster::{Cluster, ClusterError, Kind};
use crate::gateway::{ParentReference, RouteStatus};

/// How often the status is read again.
const EVERY: Duration = Duration::from_millis(500);

/// What the status of one route says.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every parent accepted this generation, with every backend resolved.
    Accepted(Vec<String>),
    /// A parent refused it (or a backend did not resolve): no use waiting.
    Refused(String),
    /// Not reported on yet (for this generation).
    Pending(String),
}

/// What [`verdict`] reads of a live route: its name, generation, parents and status. Read
/// leniently (no other field of the route is looked at), so a field infra-gen does not write
/// — filters, timeouts, set by a person or a controller — does not stop the check.
#[derive(Debug, Default, Deserialize)]
pub struct Observed {
    /// Name, namespace, generation.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The parents.
    #[serde(default)]
    pub spec: ObservedSpec,
    /// What the controllers say.
    #[serde(default)]
    pub status: Option<RouteStatus>,
}

/// The part of a route's `spec` [`verdict`] reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedSpec {
    /// The Gateways it attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
}

/// Reads a live route's status against its own generation and parents.
pub fn verdict(route: &Observed) -> Verdict {
    let namespace = route.metadata.namespace.clone().unwrap_or_default();
    let name = route.metadata.name.clone().unwrap_or_default();
    let generation = route.metadata.generation.unwrap_or(0);
    let statuses = route
        .status
        .as_ref()
        .map(|s| s.parents.as_slice())
        .unwrap_or_default();
    if route.spec.parent_refs.is_empty() {
        return Verdict::Refused(format!(
            "HTTPRoute {name} names no Gateway in parentRefs, so no Gateway serves it; set traffic.parentRefs"
        ));
    }
    let mut accepted = Vec::new();
    let mut pending = Vec::new();
    for parent in &route.spec.parent_refs {
        let who = parent.describe(&namespace);
        let Some(status) = statuses
            .iter()
            .find(|s| s.parent_ref.same_as(parent, &namespace))
        else {
            pending.push(format!(
                "{who} has not reported on HTTPRoute {name} (no controller manages that Gateway, or it has not seen the route yet)"
            ));
            continue;
        };
        let current = |type_: &str| {
            status
                .condition(type_)
                .filter(|c| c.observed_generation.unwrap_or(0) >= generation)
        };
        let (Some(accepted_now), Some(resolved)) = (current("Accepted"), current("ResolvedRefs"))
        else {
            pending.push(format!(
                "{who} has not reported on generation {generation} of HTTPRoute {name} yet"
            ));
            continue;
        };
        if accepted_now.status != "True" {
            return Verdict::Refused(format!(
                "{who} does not accept HTTPRoute {name}: {} — {} (check the Gateway's listeners: their allowedRoutes must admit namespace {namespace}, and traffic.parentRefs must name an existing Gateway and listener)",
                accepted_now.reason, accepted_now.message
            ));
        }
        if resolved.status != "True" {
            return Verdict::Refused(format!(
                "{who} cannot resolve the backends of HTTPRoute {name}: {} — {}",
                resolved.reason, resolved.message
            ));
        }
        accepted.push(who);
    }
    if pending.is_empty() {
        Verdict::Accepted(accepted)
    } else {
        Verdict::Pending(pending.join("; "))
    }
}

/// Waits (up to `converge`) until every Gateway the route `name` names accepted its current
/// generation. `Ok(Err(what was seen))` otherwise, at once when a Gateway refuses it.
pub async fn accepted(
    cluster: &Cluster,
    progress: &Progress,
    name: &str,
    converge: Duration,
) -> RolloutResult<Result<(), String>> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        cluster.check_lock(&format!("check the status of HTTPRoute {name}"))?;
        let live = match cluster.get(Kind::HttpRoute, name).await {
            Ok(Some(live)) => live,
            Ok(None) => return Ok(Err(format!("HTTPRoute {name} does not exist"))),
            Err(ClusterError::Api { code: 404, .. }) => {
                return Ok(Err(crds_missing()));
            }
            Err(e) => return Err(e.into()),
        };
        let route: Observed = serde_json::from_value(live).map_err(|e| {
            RolloutError::Input(format!(
                "the cluster's HTTPRoute {name} cannot be read: {e}"
            ))
        })?;
        let seen = match verdict(&route) {
            Verdict::Accepted(parents) => {
                progress.step(&format!(
                    "HTTPRoute {name}: generation {} accepted by {}",
                    route.metadata.generation.unwrap_or(0),
                    parents.join(", ")
                ));
                return Ok(Ok(()));
            }
            Verdict::Refused(why) => return Ok(Err(why)),
            Verdict::Pending(why) => why,
        };
        if started.elapsed() >= converge {
            let parents: Vec<String> = route
                .spec
                .parent_refs
                .iter()
                .map(|p| p.describe(cluster.namespace()))
                .collect();
            return Ok(Err(format!(
                "after {:?}: {seen}: the Gateway controller of {} did not confirm the route (see its logs)",
                started.elapsed(),
                parents.join(", ")
            )));
        }
        if seen != last {
            progress.status(&format!("HTTPRoute {name}: waiting — {seen}"));
            last = seen;
        }
        cluster
            .pause(EVERY, &format!("wait for the status of HTTPRoute {name}"))
            .await?;
    }
}

/// Waits (up to `timeout`) until every running pod of `selector` is a ready endpoint of
/// `service` in its EndpointSlices: what a Gateway's data plane (and the cloud's load balancer
/// of a LoadBalancer Service) sends requests to — the one backend readiness every cluster
/// publishes. `Ok(Err(problem))` otherwise.
pub async fn endpoints_ready(
    cluster: &Cluster,
    progress: &Progress,
    service: &str,
    selector: &str,
    timeout: Duration,
) -> RolloutResult<Result<(), String>> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        cluster.check_lock(&format!("check the endpoints of {service}"))?;
        let pods: Vec<String> = cluster
            .list(Kind::Pod, selector, None)
            .await?
            .iter()
            .filter(|p| super::verify::is_running(p))
            .map(|p| crate::cluster::name_of(p).to_owned())
            .collect();
        let slices = cluster
            .list(
                Kind::EndpointSlice,
                &format!("kubernetes.io/service-name={service}"),
                None,
            )
            .await?;
        let ready: Vec<&str> = slices
            .iter()
            .filter_map(|s| s.get("endpoints").and_then(Json::as_array))
            .flatten()
            // The API: an unset `ready` means ready.
            .filter(|e| e.pointer("/conditions/ready").and_then(Json::as_bool) != Some(false))
            .filter_map(|e| e.pointer("/targetRef/name").and_then(Json::as_str))
            .collect();
        let missing: Vec<&String> = pods
            .iter()
            .filter(|p| !ready.contains(&p.as_str()))
            .collect();
        if !pods.is_empty() && missing.is_empty() {
            progress.step(&format!(
                "{service}: every pod is a ready endpoint ({}), which is what the Gateway sends requests to (the Gateway API publishes no target health)",
                pods.len()
            ));
            return Ok(Ok(()));
        }
        let line = if pods.is_empty() {
            format!("{service}: no running pod of {selector}")
        } else {
            format!(
                "{service}: {}/{} pods are ready endpoints — not yet: {}",
                pods.len() - missing.len(),
                pods.len(),
                missing
                    .iter()
                    .take(3)
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if started.elapsed() >= timeout {
            return Ok(Err(format!(
                "after {:?}: {line} (see `kubectl -n {} get endpointslices -l kubernetes.io/service-name={service} -o yaml`)",
                started.elapsed(),
                cluster.namespace()
            )));
        }
        if line != last {
            progress.status(&line);
            last = line;
        }
        cluster
            .pause(EVERY, &format!("wait for the endpoints of {service}"))
            .await?;
    }
}

/// The message for a cluster that serves no HTTPRoutes.
pub fn crds_missing() -> String {
    "this cluster serves no HTTPRoutes (gateway.networking.k8s.io/v1): the Gateway API's CRDs are not installed; install its standard channel (`kubectl apply -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.4.1/standard-install.yaml`) and a Gateway controller, or use traffic.provider: alb".to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(status: Json) -> Observed {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "ns", "generation": 3},
            "spec": {"parentRefs": [{"name": "public", "namespace": "gw"}], "rules": []},
            "status": status,
        }))
        .unwrap()
    }

    fn parent(accepted: (&str, &str), resolved: &str, generation: i64) -> Json {
        json!({"parents": [{
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public", "namespace": "gw"},
            "controllerName": "example.com/gateway",
            "conditions": [
                {"type": "Accepted", "status": accepted.0, "reason": accepted.1, "message": "listener https does not allow routes from ns", "observedGeneration": generation, "lastTransitionTime": "2026-12-04T00:00:00Z"},
                {"type": "ResolvedRefs", "status": resolved, "reason": "ResolvedRefs", "message": "", "observedGeneration": generation, "lastTransitionTime": "2026-12-04T00:00:00Z"}
            ]
        }]})
    }

    #[test]
    fn a_route_is_accepted_only_for_its_current_generation() {
        assert!(matches!(
            verdict(&route(parent(("True", "Accepted"), "True", 3))),
            Verdict::Accepted(_)
        ));
        assert!(
            matches!(verdict(&route(parent(("True", "Accepted"), "True", 2))), Verdict::Pending(p) if p.contains("generation 3")),
            "a status of the previous generation says nothing of the weights just written"
        );
        assert!(matches!(verdict(&route(json!({}))), Verdict::Pending(_)));
    }

    #[test]
    fn a_refusing_gateway_is_named_with_its_reason() {
        let Verdict::Refused(why) = verdict(&route(parent(
            ("False", "NotAllowedByListeners"),
            "True",
            3,
        ))) else {
            panic!("refused")
        };
        assert!(
            why.contains("Gateway gw/public does not accept HTTPRoute web: NotAllowedByListeners"),
            "{why}"
        );
        assert!(matches!(
            verdict(&route(parent(("True", "Accepted"), "False", 3))),
            Verdict::Refused(w) if w.contains("cannot resolve the backends")
        ));
    }

    #[test]
    fn fields_infra_gen_does_not_write_are_left_out_when_reading() {
        let live = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {"parentRefs": [{"name": "public"}], "rules": [{"filters": [], "timeouts": {}, "backendRefs": [{"name": "web-blue", "filters": []}]}]},
        });
        let observed: Observed = serde_json::from_value(live).unwrap();
        assert_eq!(observed.spec.parent_refs[0].name, "public");
    }
}
