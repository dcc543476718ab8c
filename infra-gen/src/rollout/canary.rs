//! Grey release by request header, on the ALB (below) or on an HTTPRoute (a rule with header
//! matches before the rule every request reaches, [`route_with_canary`]).
//!
//! On the ALB: while a canary runs, the workload's Ingress
//! holds a second path, before the one every request reaches: same host, same path and
//! pathType, backend `<name>-canary` (`use-annotation`), whose action forwards to the new
//! slot and whose condition (`alb.ingress.kubernetes.io/conditions.<name>-canary`) matches
//! the header. Everything else stays on the live slot through the weighted action.
//!
//! Why this order holds on the ALB: the AWS Load Balancer Controller numbers the listener
//! rules of an IngressGroup member by member (`group.order`, then namespace/name:
//! `pkg/ingress/group_loader.go`, `sortGroupMembers`), and within an Ingress rule by rule,
//! its paths sorted Exact first, then Prefix by length (a *stable* sort), then
//! ImplementationSpecific in order (`pkg/ingress/model_build_listener_rules.go`,
//! `sortIngressPaths`). Two paths of the same rule with the same pathType and path keep
//! their order, so the header path, listed first, gets the lower priority number and is
//! evaluated first. Both are in one Ingress, so no other member of a group can come between.
//!
//! Clean-up is by construction: every other Ingress infra-gen writes is built without these,
//! and server-side apply removes the path (the `paths` list is atomic) and the two
//! annotations (owned by the same field manager) as soon as one is applied.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, Ingress, IngressBackend, IngressServiceBackend, ServiceBackendPort,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::route;
use super::state::Slot;
use super::{RolloutError, RolloutResult};
use crate::env::model::{Canary, HeaderMatch};
use crate::gateway::{
    HttpBackendRef, HttpHeaderMatch, HttpPathMatch, HttpRouteMatch, HttpRouteRule,
};

/// The name of the canary's action and condition (and its path's backend).
pub fn action_name(workload: &str) -> String {
    format!("{workload}-canary")
}

fn action_key(workload: &str) -> String {
    format!(
        "alb.ingress.kubernetes.io/actions.{}",
        action_name(workload)
    )
}

fn conditions_key(workload: &str) -> String {
    format!(
        "alb.ingress.kubernetes.io/conditions.{}",
        action_name(workload)
    )
}

/// One element of `alb.ingress.kubernetes.io/conditions.<action>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    field: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http_header_config: Option<HeaderConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HeaderConfig {
    http_header_name: String,
    values: Vec<String>,
}

/// A canary as the live Ingress holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryState {
    /// The slot header requests go to (`None`: the action names no slot — a leftover).
    pub slot: Option<Slot>,
    /// The header and values matched (`None`: no condition — a leftover).
    pub rule: Option<Canary>,
    /// Whether the Ingress has the header path.
    pub path: bool,
}

fn annotation<'a>(ingress: &'a Json, key: &str) -> Option<&'a str> {
    ingress.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// Reads the canary of the live Ingress (or HTTPRoute) of `workload` (`None`: there is none,
/// nothing of it).
pub fn observe(ingress: Option<&Json>, workload: &str) -> Option<CanaryState> {
    let ingress = ingress?;
    if route::is_http_route(ingress) {
        return observe_route(ingress, workload);
    }
    let backend = action_name(workload);
    let path = ingress
        .pointer("/spec/rules")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.pointer("/http/paths").and_then(Json::as_array))
        .flatten()
        .any(|p| {
            p.pointer("/backend/service/name").and_then(Json::as_str) == Some(backend.as_str())
        });
    let action = annotation(ingress, &action_key(workload));
    let conditions = annotation(ingress, &conditions_key(workload));
    if !path && action.is_none() && conditions.is_none() {
        return None;
    }
    let slot = action
        .and_then(|a| serde_json::from_str::<Json>(a).ok())
        .and_then(|a| {
            a.pointer("/forwardConfig/targetGroups")?
                .as_array()?
                .iter()
                .filter(|g| g.get("weight").and_then(Json::as_i64).unwrap_or(0) > 0)
                .find_map(|g| {
                    g.get("serviceName")?
                        .as_str()?
                        .strip_prefix(&format!("{workload}-"))
                        .and_then(Slot::parse)
                })
        });
    let rule = conditions
        .and_then(|c| serde_json::from_str::<Vec<Condition>>(c).ok())
        .and_then(|list| {
            list.into_iter()
                .find(|c| c.field == "http-header")
                .and_then(|c| c.http_header_config)
        })
        .map(|h| Canary {
            header: h.http_header_name,
            values: h.values,
            match_type: None,
        });
    Some(CanaryState { slot, rule, path })
}

/// The header rules of a live HTTPRoute: a rule with header matches is a grey release's.
fn observe_route(route: &Json, workload: &str) -> Option<CanaryState> {
    let rule = route
        .pointer("/spec/rules")?
        .as_array()?
        .iter()
        .find(|r| route::has_header_matches(r))?;
    let slot = rule
        .get("backendRefs")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter(|b| b.get("weight").and_then(Json::as_i64).unwrap_or(1) > 0)
        .find_map(|b| {
            b.get("name")?
                .as_str()?
                .strip_prefix(&format!("{workload}-"))
                .and_then(Slot::parse)
        });
    let headers: Vec<&Json> = rule
        .get("matches")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.pointer("/headers/0"))
        .collect();
    let text = |h: &Json, key: &str| {
        h.get(key)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let rule = headers.first().map(|first| Canary {
        header: text(first, "name"),
        values: headers.iter().map(|h| text(h, "value")).collect(),
        match_type: match text(first, "type").as_str() {
            "RegularExpression" => Some(HeaderMatch::RegularExpression),
            _ => None,
        },
    });
    Some(CanaryState {
        slot,
        rule,
        path: true,
    })
}

/// `route` (the weighted HTTPRoute, every request on the live slot) with a rule before the
/// one every request reaches: same path, one match per value of the header, to `slot`.
fn route_with_canary(
    route: &Json,
    workload: &str,
    slot: Slot,
    canary: &Canary,
) -> RolloutResult<Json> {
    let mut typed = route::typed(route, workload)?;
    let Some(main) = typed
        .spec
        .rules
        .iter()
        .position(|r| r.matches.iter().all(|m| m.headers.is_empty()))
    else {
        return Err(RolloutError::Input(format!(
            "the tree's HTTPRoute {workload} has no rule without header matches; run `infra-gen render`"
        )));
    };
    let base = typed.spec.rules[main].clone();
    let paths: Vec<Option<HttpPathMatch>> = if base.matches.is_empty() {
        vec![None]
    } else {
        base.matches.iter().map(|m| m.path.clone()).collect()
    };
    let kind = match canary.match_type {
        Some(HeaderMatch::RegularExpression) => "RegularExpression",
        _ => "Exact",
    };
    let matches = paths
        .iter()
        .flat_map(|path| {
            canary.values.iter().map(move |value| HttpRouteMatch {
                path: path.clone(),
                headers: vec![HttpHeaderMatch {
                    type_: Some(kind.to_owned()),
                    name: canary.header.clone(),
                    value: value.clone(),
                }],
            })
        })
        .collect();
    let port = base.backend_refs.first().and_then(|b| b.port).or(Some(80));
    let rule = HttpRouteRule {
        name: None,
        matches,
        backend_refs: vec![HttpBackendRef {
            name: format!("{workload}-{}", slot.as_str()),
            port,
            weight: Some(100),
            ..HttpBackendRef::default()
        }],
    };
    typed.spec.rules.insert(main, rule);
    route::to_json(&typed, workload)
}

/// `ingress` (the weighted one, every request on the live slot) with the canary: requests
/// whose `canary.header` has one of `canary.values` go to `slot`.
pub fn with_canary(
    ingress: &Json,
    workload: &str,
    slot: Slot,
    canary: &Canary,
) -> RolloutResult<Json> {
    if route::is_http_route(ingress) {
        return route_with_canary(ingress, workload, slot, canary);
    }
    let invalid = |e: serde_json::Error| {
        RolloutError::Input(format!(
            "the tree's Ingress {workload} is not an Ingress: {e}"
        ))
    };
    let mut typed: Ingress = serde_json::from_value(ingress.clone()).map_err(invalid)?;
    let backend = action_name(workload);
    if let Some(spec) = typed.spec.as_mut() {
        for rule in spec.rules.iter_mut().flatten() {
            let Some(http) = rule.http.as_mut() else {
                continue;
            };
            let mut paths = Vec::with_capacity(http.paths.len() * 2);
            for path in http.paths.drain(..) {
                let routes_workload = path
                    .backend
                    .service
                    .as_ref()
                    .is_some_and(|s| s.name == workload);
                if routes_workload {
                    paths.push(HTTPIngressPath {
                        path: path.path.clone(),
                        path_type: path.path_type.clone(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: backend.clone(),
                                port: Some(ServiceBackendPort {
                                    name: Some("use-annotation".to_owned()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    });
                }
                paths.push(path);
            }
            http.paths = paths;
        }
    }
    let forward =
        crate::render::context::versions_action(&[(format!("{workload}-{}", slot.as_str()), 100)]);
    let conditions = vec![Condition {
        field: "http-header".to_owned(),
        http_header_config: Some(HeaderConfig {
            http_header_name: canary.header.clone(),
            values: canary.values.clone(),
        }),
    }];
    let annotations = typed
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(action_key(workload), forward);
    annotations.insert(
        conditions_key(workload),
        serde_json::to_string(&conditions).map_err(invalid)?,
    );
    Ok(crate::cluster::typed_to_json(&typed)?)
}

/// `header: v1 | v2`, for messages.
pub fn describe(canary: &Canary) -> String {
    format!("{}: {}", canary.header, canary.values.join(" | "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress() -> Json {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "ns", "annotations": {
                "alb.ingress.kubernetes.io/actions.web": crate::render::context::forward_action("web", 100, 0)
            }},
            "spec": {"ingressClassName": "alb", "rules": [{"host": "web.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"name": "use-annotation"}}}}
            ]}}]}
        })
    }

    fn canary() -> Canary {
        Canary {
            header: "Version".into(),
            values: vec!["1.4.2".into(), "1.5.*".into()],
            match_type: None,
        }
    }

    #[test]
    fn the_header_path_comes_first_with_the_same_host_path_and_type() {
        let out = with_canary(&ingress(), "web", Slot::Green, &canary()).unwrap();
        let paths = out["spec"]["rules"][0]["http"]["paths"].as_array().unwrap();
        assert_eq!(paths.len(), 2);
        assert_eq!(paths[0]["backend"]["service"]["name"], "web-canary");
        assert_eq!(
            paths[0]["backend"]["service"]["port"]["name"],
            "use-annotation"
        );
        assert_eq!(paths[1]["backend"]["service"]["name"], "web");
        for p in paths {
            assert_eq!(p["path"], "/");
            assert_eq!(p["pathType"], "Prefix");
        }
        let conditions: Json = serde_json::from_str(
            out["metadata"]["annotations"]["alb.ingress.kubernetes.io/conditions.web-canary"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            conditions,
            json!([{"field": "http-header", "httpHeaderConfig": {"httpHeaderName": "Version", "values": ["1.4.2", "1.5.*"]}}])
        );
    }

    #[test]
    fn observe_reads_back_what_with_canary_wrote_and_nothing_without_it() {
        let out = with_canary(&ingress(), "web", Slot::Green, &canary()).unwrap();
        assert_eq!(
            observe(Some(&out), "web"),
            Some(CanaryState {
                slot: Some(Slot::Green),
                rule: Some(canary()),
                path: true
            })
        );
        assert_eq!(observe(Some(&ingress()), "web"), None);
        // A leftover annotation alone is still seen (and cleaned up by the next apply).
        let mut stale = ingress();
        stale["metadata"]["annotations"]["alb.ingress.kubernetes.io/conditions.web-canary"] =
            json!("[]");
        assert_eq!(
            observe(Some(&stale), "web"),
            Some(CanaryState {
                slot: None,
                rule: None,
                path: false
            })
        );
    }
}
