//! What routes a workload's HTTP requests, whichever the provider: on the ALB, the Ingress's
//! weighted forward action (`alb.ingress.kubernetes.io/actions.<name>`); with the Gateway API,
//! the HTTPRoute's rule without header matches, whose `backendRefs` carry the weights. Every
//! command reads and moves traffic through these functions, so the cutover's state machine
//! ([`super::state`], [`super::bluegreen`]) is the same on both.
//!
//! On an HTTPRoute the rule every request reaches is the first one without header matches;
//! a grey release adds a rule before it with the same path and the header matches (the
//! Gateway API gives a match with more header matches precedence over one with fewer, for the
//! same host and path, whatever the order: [`super::canary`]).

use serde_json::Value as Json;

use super::{RolloutError, RolloutResult};
use crate::gateway::{HttpBackendRef, HttpRoute};

/// Whether `object` is a Gateway API HTTPRoute (else an Ingress).
pub fn is_http_route(object: &Json) -> bool {
    object.get("kind").and_then(Json::as_str) == Some("HTTPRoute")
}

fn action_key(name: &str) -> String {
    format!("alb.ingress.kubernetes.io/actions.{name}")
}

/// The rule of an HTTPRoute every request reaches: the first without header matches.
fn default_rule(route: &Json) -> Option<&Json> {
    route
        .pointer("/spec/rules")?
        .as_array()?
        .iter()
        .find(|rule| !has_header_matches(rule))
}

/// Whether an HTTPRoute rule matches on headers.
pub fn has_header_matches(rule: &Json) -> bool {
    rule.get("matches")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .any(|m| {
            m.get("headers")
                .and_then(Json::as_array)
                .is_some_and(|h| !h.is_empty())
        })
}

/// Percent of `weight` in `total` (0 when nothing is weighted).
fn percent(weight: i64, total: i64) -> u8 {
    if total <= 0 {
        0
    } else {
        u8::try_from((weight.max(0) * 100 / total).min(100)).unwrap_or(100)
    }
}

/// The Services the rule every request reaches forwards to, with their share in percent, as
/// the live (or rendered) object says. `None`: it has no such rule (an Ingress without the
/// weighted action).
pub fn shares(object: Option<&Json>, name: &str) -> Option<Vec<(String, u8)>> {
    let object = object?;
    // Backends and the key naming their Service; both weigh by `weight` (default 1).
    let (backends, service) = if is_http_route(object) {
        let refs = default_rule(object)?.get("backendRefs").cloned();
        (refs.unwrap_or_default(), "name")
    } else {
        let action = object
            .pointer("/metadata/annotations")?
            .get(action_key(name))?
            .as_str()?;
        let action: Json = serde_json::from_str(action).ok()?;
        (
            action.pointer("/forwardConfig/targetGroups")?.clone(),
            "serviceName",
        )
    };
    let backends = backends.as_array()?;
    let weight_of = |b: &Json| b.get("weight").and_then(Json::as_i64).unwrap_or(1);
    let total: i64 = backends.iter().map(weight_of).sum();
    Some(
        backends
            .iter()
            .filter_map(|b| {
                let service = b.get(service)?.as_str()?.to_owned();
                Some((service, percent(weight_of(b), total)))
            })
            .collect(),
    )
}

/// `object` (the tree's Ingress or HTTPRoute) with the rule every request reaches forwarding
/// to `shares` (Service, percent). The tree's objects were checked by [`check_tree_object`].
pub fn with_shares(object: &Json, name: &str, shares: &[(String, u8)]) -> Json {
    let mut out = object.clone();
    if !is_http_route(object) {
        out["metadata"]["annotations"][action_key(name)] =
            Json::String(crate::render::context::versions_action(shares));
        return out;
    }
    let rule = out
        .pointer_mut("/spec/rules")
        .and_then(Json::as_array_mut)
        .and_then(|rules| rules.iter_mut().find(|r| !has_header_matches(r)));
    if let Some(rule) = rule {
        let port = rule
            .pointer("/backendRefs/0/port")
            .and_then(Json::as_i64)
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(80);
        let refs: Vec<HttpBackendRef> = shares
            .iter()
            .map(|(service, weight)| HttpBackendRef {
                name: service.clone(),
                port: Some(port),
                weight: Some(i32::from(*weight)),
                ..HttpBackendRef::default()
            })
            .collect();
        rule["backendRefs"] = serde_json::to_value(refs).unwrap_or_default();
    }
    out
}

/// Refuses a tree's HTTPRoute the rollout cannot weight: not of the shape infra-gen renders,
/// or without a rule free of header matches.
pub fn check_tree_object(object: &Json, name: &str) -> RolloutResult<()> {
    if !is_http_route(object) {
        return Ok(());
    }
    typed(object, name)?;
    if default_rule(object).is_none() {
        return Err(RolloutError::Input(format!(
            "the tree's HTTPRoute {name} has no rule without header matches, so no rule takes every request to weight; run `infra-gen render`"
        )));
    }
    Ok(())
}

/// The tree's HTTPRoute, typed.
pub fn typed(object: &Json, name: &str) -> RolloutResult<HttpRoute> {
    serde_json::from_value(object.clone()).map_err(|e| {
        RolloutError::Input(format!(
            "the tree's HTTPRoute {name} is not an HTTPRoute infra-gen writes: {e}; run `infra-gen render`"
        ))
    })
}

/// An HTTPRoute as JSON.
pub fn to_json(route: &HttpRoute, name: &str) -> RolloutResult<Json> {
    serde_json::to_value(route).map_err(|e| RolloutError::Input(format!("HTTPRoute {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route() -> Json {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {
                "parentRefs": [{"name": "public"}],
                "hostnames": ["web.example.com"],
                "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                           "backendRefs": [{"name": "web-blue", "port": 80, "weight": 100}, {"name": "web-green", "port": 80, "weight": 0}]}]
            }
        })
    }

    #[test]
    fn route_weights_are_read_and_written_on_the_rule_without_headers() {
        assert_eq!(
            shares(Some(&route()), "web"),
            Some(vec![("web-blue".into(), 100), ("web-green".into(), 0)])
        );
        let moved = with_shares(
            &route(),
            "web",
            &[("web-blue".into(), 90), ("web-green".into(), 10)],
        );
        assert_eq!(
            moved["spec"]["rules"][0]["backendRefs"],
            json!([{"name": "web-blue", "port": 80, "weight": 90}, {"name": "web-green", "port": 80, "weight": 10}])
        );
        assert_eq!(
            shares(Some(&moved), "web"),
            Some(vec![("web-blue".into(), 90), ("web-green".into(), 10)])
        );
    }

    #[test]
    fn weights_are_shares_of_their_sum_with_the_gateway_api_default_of_one() {
        let mut live = route();
        // As a server holds a route written with relative weights, one left to its default.
        live["spec"]["rules"][0]["backendRefs"] = json!([{"name": "web-blue", "port": 80, "weight": 3}, {"name": "web-green", "port": 80}]);
        assert_eq!(
            shares(Some(&live), "web"),
            Some(vec![("web-blue".into(), 75), ("web-green".into(), 25)])
        );
    }

    #[test]
    fn the_ingress_action_is_read_and_written_as_before() {
        let ingress = json!({"kind": "Ingress", "metadata": {"name": "web", "annotations": {
            "alb.ingress.kubernetes.io/actions.web": crate::render::context::forward_action("web", 50, 50)
        }}});
        assert_eq!(
            shares(Some(&ingress), "web"),
            Some(vec![("web-blue".into(), 50), ("web-green".into(), 50)])
        );
        let moved = with_shares(
            &ingress,
            "web",
            &[("web-blue".into(), 0), ("web-green".into(), 100)],
        );
        assert_eq!(
            moved["metadata"]["annotations"]["alb.ingress.kubernetes.io/actions.web"],
            json!(crate::render::context::forward_action("web", 0, 100))
        );
    }
}
