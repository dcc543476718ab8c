//! A Gateway API controller stand-in: it writes the status of every HTTPRoute attached to a
//! Gateway of class [`CLASS`] as a Gateway controller (Envoy Gateway, Istio, the Alibaba Cloud
//! or AWS controllers) does — one entry per parent, `Accepted` and `ResolvedRefs` for the
//! route's current generation — by the Gateway API's rules for which routes a listener admits
//! (`allowedRoutes.namespaces`, `sectionName`, hostnames) and which backends resolve (a
//! Service of the route's namespace). It has no data plane: like every Gateway API status,
//! it says nothing of target health.
//!
//! [`route_status`] is pure, so the API-server double of infra-gen's tests runs the same
//! rules; [`run`] applies them to a real API server (with the CRDs of [`CRDS`]).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use serde_json::{Value as Json, json};

/// The GatewayClass whose Gateways this stand-in serves.
pub const CLASS: &str = "testbed";
/// The `controllerName` it reports as.
pub const CONTROLLER: &str = "testbed.infra-gen.dev/gateway-controller";

/// The standard channel's CRDs of HTTPRoute and Gateway, as released (v1.4.1, from the
/// `sigs.k8s.io/gateway-api` module: `config/crd/standard/`).
pub const CRDS: [&str; 2] = [
    include_str!("../gateway-api/gateway.networking.k8s.io_httproutes.yaml"),
    include_str!("../gateway-api/gateway.networking.k8s.io_gateways.yaml"),
];

/// What the routes are checked against.
pub struct World<'a> {
    /// Gateways, every namespace.
    pub gateways: &'a [Json],
    /// Services, every namespace.
    pub services: &'a [Json],
    /// Namespaces (for `allowedRoutes.namespaces.from: Selector`).
    pub namespaces: &'a [Json],
}

fn text<'a>(value: &'a Json, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
}

fn list<'a>(value: &'a Json, pointer: &str) -> &'a [Json] {
    value
        .pointer(pointer)
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Whether `hostname` (of a route) is served by a listener for `listener` (`*.` wildcards
/// on either side match one or more labels).
fn host_matches(listener: &str, hostname: &str) -> bool {
    let wildcard = |pattern: &str, host: &str| {
        pattern
            .strip_prefix("*.")
            .is_some_and(|suffix| host.ends_with(&format!(".{suffix}")))
    };
    listener.eq_ignore_ascii_case(hostname)
        || wildcard(listener, hostname)
        || wildcard(hostname, listener)
}

/// Whether a listener admits routes from `route_namespace`.
fn admits(listener: &Json, gateway_namespace: &str, route_namespace: &str, world: &World) -> bool {
    match text(listener, "/allowedRoutes/namespaces/from") {
        "All" => true,
        "Selector" => {
            let wanted = listener
                .pointer("/allowedRoutes/namespaces/selector/matchLabels")
                .and_then(Json::as_object);
            let labels = world
                .namespaces
                .iter()
                .find(|n| text(n, "/metadata/name") == route_namespace)
                .and_then(|n| n.pointer("/metadata/labels"))
                .and_then(Json::as_object);
            match (wanted, labels) {
                (Some(wanted), Some(labels)) => {
                    wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
                }
                (Some(wanted), None) => wanted.is_empty(),
                (None, _) => true,
            }
        }
        // `Same`, the default.
        _ => gateway_namespace == route_namespace,
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: i64,
    now: &str,
) -> Json {
    json!({
        "type": type_,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": now,
    })
}

/// The route's `status` as this controller would write it: the entries of other controllers
/// kept, one entry per parentRef to a Gateway of class [`CLASS`]. `now` stamps the
/// conditions.
pub fn route_status(route: &Json, world: &World, now: &str) -> Json {
    let namespace = text(route, "/metadata/namespace");
    let generation = route
        .pointer("/metadata/generation")
        .and_then(Json::as_i64)
        .unwrap_or(1);
    let mut parents: Vec<Json> = list(route, "/status/parents")
        .iter()
        .filter(|p| text(p, "/controllerName") != CONTROLLER)
        .cloned()
        .collect();
    let hostnames: Vec<&str> = list(route, "/spec/hostnames")
        .iter()
        .filter_map(Json::as_str)
        .collect();
    // Backends resolve the same for every parent.
    let mut resolved = (true, "ResolvedRefs", String::new());
    for backend in list(route, "/spec/rules")
        .iter()
        .flat_map(|r| list(r, "/backendRefs"))
    {
        let kind = backend
            .get("kind")
            .and_then(Json::as_str)
            .unwrap_or("Service");
        let group = backend.get("group").and_then(Json::as_str).unwrap_or("");
        let name = text(backend, "/name");
        let backend_namespace = backend
            .get("namespace")
            .and_then(Json::as_str)
            .unwrap_or(namespace);
        if kind != "Service" || !group.is_empty() {
            resolved = (
                false,
                "InvalidKind",
                format!("backend {name}: {group}/{kind} is not a Service"),
            );
            break;
        }
        if backend_namespace != namespace {
            resolved = (
                false,
                "RefNotPermitted",
                format!("backend {backend_namespace}/{name}: no ReferenceGrant allows it"),
            );
            break;
        }
        let exists = world.services.iter().any(|s| {
            text(s, "/metadata/namespace") == namespace && text(s, "/metadata/name") == name
        });
        if !exists {
            resolved = (
                false,
                "BackendNotFound",
                format!("Service {namespace}/{name} not found"),
            );
            break;
        }
    }
    for parent in list(route, "/spec/parentRefs") {
        let kind = parent
            .get("kind")
            .and_then(Json::as_str)
            .unwrap_or("Gateway");
        if kind != "Gateway" {
            continue;
        }
        let gateway_namespace = parent
            .get("namespace")
            .and_then(Json::as_str)
            .unwrap_or(namespace);
        let gateway_name = text(parent, "/name");
        let Some(gateway) = world.gateways.iter().find(|g| {
            text(g, "/metadata/namespace") == gateway_namespace
                && text(g, "/metadata/name") == gateway_name
                && text(g, "/spec/gatewayClassName") == CLASS
        }) else {
            // Not this controller's Gateway (or none): it says nothing, as real ones do.
            continue;
        };
        let section = parent.get("sectionName").and_then(Json::as_str);
        let port = parent.get("port").and_then(Json::as_i64);
        let listeners: Vec<&Json> = list(gateway, "/spec/listeners")
            .iter()
            .filter(|l| section.is_none_or(|s| text(l, "/name") == s))
            .filter(|l| port.is_none_or(|p| l.get("port").and_then(Json::as_i64) == Some(p)))
            .collect();
        let admitted: Vec<&&Json> = listeners
            .iter()
            .filter(|l| admits(l, gateway_namespace, namespace, world))
            .collect();
        let hosts_ok = admitted
            .iter()
            .any(|l| match l.get("hostname").and_then(Json::as_str) {
                None => true,
                Some(listener) => {
                    hostnames.is_empty() || hostnames.iter().any(|h| host_matches(listener, h))
                }
            });
        let accepted = if listeners.is_empty() {
            (
                false,
                "NoMatchingParent",
                format!(
                    "Gateway {gateway_namespace}/{gateway_name} has no listener {}",
                    section.unwrap_or("on that port")
                ),
            )
        } else if admitted.is_empty() {
            (
                false,
                "NotAllowedByListeners",
                format!(
                    "no listener of Gateway {gateway_namespace}/{gateway_name} allows routes from namespace {namespace}"
                ),
            )
        } else if !hosts_ok {
            (
                false,
                "NoMatchingListenerHostname",
                format!(
                    "no listener hostname of Gateway {gateway_namespace}/{gateway_name} matches {}",
                    hostnames.join(", ")
                ),
            )
        } else {
            (true, "Accepted", "Route is accepted".to_owned())
        };
        let mut reference = parent.clone();
        reference["group"] = json!("gateway.networking.k8s.io");
        reference["kind"] = json!("Gateway");
        reference["namespace"] = json!(gateway_namespace);
        parents.push(json!({
            "parentRef": reference,
            "controllerName": CONTROLLER,
            "conditions": [
                condition("Accepted", accepted.0, accepted.1, &accepted.2, generation, now),
                condition("ResolvedRefs", resolved.0, resolved.1, &resolved.2, generation, now),
            ],
        }));
    }
    json!({"parents": parents})
}

/// Whether `status` says something else than the route's current status (timestamps aside).
pub fn changed(route: &Json, status: &Json) -> bool {
    fn strip(value: &Json) -> Json {
        let mut value = value.clone();
        for parent in value
            .get_mut("parents")
            .and_then(Json::as_array_mut)
            .into_iter()
            .flatten()
        {
            for c in parent
                .get_mut("conditions")
                .and_then(Json::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(c) = c.as_object_mut() {
                    c.remove("lastTransitionTime");
                }
            }
        }
        value
    }
    strip(route.get("status").unwrap_or(&json!({"parents": []}))) != strip(status)
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Installs the Gateway API CRDs and waits until the API serves them.
pub async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for text in CRDS {
        let crd: CustomResourceDefinition = serde_saphyr::from_str(text)?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("testbed").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        let mut established = false;
        for _ in 0..100 {
            let live = api.get(&name).await?;
            established = live
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::ensure!(
            established,
            "the CRD {name} was not established within 10 s"
        );
    }
    Ok(())
}

async fn all(client: &kube::Client, resource: &ApiResource) -> Vec<Json> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    match api.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect(),
        Err(e) => {
            tracing::warn!("gateway stand-in: list {}: {e}", resource.plural);
            Vec::new()
        }
    }
}

/// Writes route statuses on a real API server, every 500 ms, until the process ends.
pub async fn run(client: kube::Client) {
    let routes = resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes");
    let gateways = resource("gateway.networking.k8s.io", "v1", "Gateway", "gateways");
    let services = resource("", "v1", "Service", "services");
    let namespaces = resource("", "v1", "Namespace", "namespaces");
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let gateway_list = all(&client, &gateways).await;
        if gateway_list.is_empty() {
            continue;
        }
        let service_list = all(&client, &services).await;
        let namespace_list = all(&client, &namespaces).await;
        let world = World {
            gateways: &gateway_list,
            services: &service_list,
            namespaces: &namespace_list,
        };
        let now = k8s_openapi::jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        for route in all(&client, &routes).await {
            let status = route_status(&route, &world, &now);
            if !changed(&route, &status) {
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), text(&route, "/metadata/namespace"), &routes);
            if let Err(e) = api
                .patch_status(
                    text(&route, "/metadata/name"),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await
            {
                tracing::warn!(
                    "gateway stand-in: status of HTTPRoute {}: {e}",
                    text(&route, "/metadata/name")
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(from: Json) -> Json {
        json!({"metadata": {"name": "public", "namespace": "gw"}, "spec": {"gatewayClassName": CLASS, "listeners": [
            {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "*.example.com", "allowedRoutes": {"namespaces": from}}
        ]}})
    }

    fn route(section: &str) -> Json {
        json!({"metadata": {"name": "web", "namespace": "app", "generation": 4}, "spec": {
            "parentRefs": [{"name": "public", "namespace": "gw", "sectionName": section}],
            "hostnames": ["web.example.com"],
            "rules": [{"backendRefs": [{"name": "web-blue", "port": 80}]}]
        }})
    }

    fn conditions(status: &Json) -> Vec<(String, String, String)> {
        list(status, "/parents/0/conditions")
            .iter()
            .map(|c| {
                (
                    text(c, "/type").into(),
                    text(c, "/status").into(),
                    text(c, "/reason").into(),
                )
            })
            .collect()
    }

    #[test]
    fn a_listener_admits_a_route_by_namespace_section_and_hostname() {
        let services = [json!({"metadata": {"name": "web-blue", "namespace": "app"}})];
        let namespaces = [json!({"metadata": {"name": "app", "labels": {"gateway": "public"}}})];
        let check = |gateway: Json, route: Json| {
            let gateways = [gateway];
            let world = World {
                gateways: &gateways,
                services: &services,
                namespaces: &namespaces,
            };
            conditions(&route_status(&route, &world, "2026-12-04T00:00:00Z"))
        };
        let accepted = check(gateway(json!({"from": "All"})), route("https"));
        assert_eq!(
            accepted[0],
            ("Accepted".into(), "True".into(), "Accepted".into())
        );
        assert_eq!(
            accepted[1],
            ("ResolvedRefs".into(), "True".into(), "ResolvedRefs".into())
        );
        assert_eq!(
            check(gateway(json!({"from": "Same"})), route("https"))[0].2,
            "NotAllowedByListeners"
        );
        assert_eq!(
            check(
                gateway(
                    json!({"from": "Selector", "selector": {"matchLabels": {"gateway": "public"}}})
                ),
                route("https")
            )[0]
            .1,
            "True"
        );
        assert_eq!(
            check(gateway(json!({"from": "All"})), route("http"))[0].2,
            "NoMatchingParent"
        );
        let mut elsewhere = route("https");
        elsewhere["spec"]["hostnames"] = json!(["web.example.org"]);
        assert_eq!(
            check(gateway(json!({"from": "All"})), elsewhere)[0].2,
            "NoMatchingListenerHostname"
        );
        let mut missing = route("https");
        missing["spec"]["rules"][0]["backendRefs"][0]["name"] = json!("web-green");
        assert_eq!(
            check(gateway(json!({"from": "All"})), missing)[1].2,
            "BackendNotFound"
        );
    }

    #[test]
    fn other_controllers_entries_stay_and_a_gateway_of_another_class_gets_none() {
        let mut other = gateway(json!({"from": "All"}));
        other["spec"]["gatewayClassName"] = json!("istio");
        let mut r = route("https");
        r["status"] = json!({"parents": [{"controllerName": "istio.io/gateway-controller", "parentRef": {"name": "x"}, "conditions": []}]});
        let gateways = [other];
        let world = World {
            gateways: &gateways,
            services: &[],
            namespaces: &[],
        };
        let status = route_status(&r, &world, "t");
        assert_eq!(list(&status, "/parents").len(), 1);
        assert!(!changed(&r, &status));
    }
}
