//! The Gateway API's `HTTPRoute` (gateway.networking.k8s.io/v1), the part infra-gen writes
//! and reads back. `k8s-openapi` has no Gateway API types, and the `gateway-api` crate is built
//! on other versions of kube and k8s-openapi than this tool, so these are typed here, field
//! names and shapes as in the standard channel's CRD (the tests validate rendered routes
//! against that CRD's schema, and the end-to-end tests apply them to a real API server with
//! the CRD installed).
//!
//! Only the fields infra-gen renders are known: a rendered route with any other field is an
//! error ([`crate::render::check`]), so nothing a template adds is silently dropped when a
//! rollout rewrites the route.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// `apiVersion` of the routes infra-gen writes.
pub const API_VERSION: &str = "gateway.networking.k8s.io/v1";

/// An HTTPRoute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// `gateway.networking.k8s.io/v1`.
    pub api_version: String,
    /// `HTTPRoute`.
    pub kind: String,
    /// Name, namespace, labels.
    pub metadata: ObjectMeta,
    /// What it routes.
    pub spec: HttpRouteSpec,
    /// What the Gateway controllers made of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RouteStatus>,
}

/// `spec` of an HTTPRoute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    /// The Gateways (listeners) it attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentReference>,
    /// Host names it answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// Rules, matched by the Gateway's precedence (a match with more header matches wins
    /// over one with fewer, for the same host and path).
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

/// A reference to a Gateway (and one of its listeners).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    /// Default `gateway.networking.k8s.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Default `Gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Default: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Gateway's name.
    pub name: String,
    /// A listener's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// A listener's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

impl ParentReference {
    /// Whether `other` names the same parent (defaults applied: the route's namespace,
    /// group `gateway.networking.k8s.io`, kind `Gateway`).
    pub fn same_as(&self, other: &ParentReference, route_namespace: &str) -> bool {
        let group = |p: &ParentReference| {
            p.group
                .clone()
                .unwrap_or_else(|| "gateway.networking.k8s.io".into())
        };
        let kind = |p: &ParentReference| p.kind.clone().unwrap_or_else(|| "Gateway".into());
        let namespace = |p: &ParentReference| {
            p.namespace
                .clone()
                .unwrap_or_else(|| route_namespace.to_owned())
        };
        self.name == other.name
            && group(self) == group(other)
            && kind(self) == kind(other)
            && namespace(self) == namespace(other)
            && self.section_name == other.section_name
            && self.port == other.port
    }

    /// `gateways/public` or `gateways/public (listener https)`, for messages.
    pub fn describe(&self, route_namespace: &str) -> String {
        let namespace = self.namespace.as_deref().unwrap_or(route_namespace);
        match &self.section_name {
            Some(section) => format!("Gateway {namespace}/{} (listener {section})", self.name),
            None => format!("Gateway {namespace}/{}", self.name),
        }
    }
}

/// One rule of an HTTPRoute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    /// A name, for messages and status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Requests it takes (any of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    /// Where they go, by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
}

/// One match: a path and headers (all of them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    /// The path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    /// Headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeaderMatch>,
}

/// A path match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathMatch {
    /// `PathPrefix`, `Exact` or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// A header match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeaderMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Header name (case-insensitive).
    pub name: String,
    /// Value.
    pub value: String,
}

/// A weighted backend (a Service).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBackendRef {
    /// Default `""` (core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Default `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The Service.
    pub name: String,
    /// Default: the route's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// Its share, relative to the rule's other backends (default 1; 0 sends nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

impl HttpBackendRef {
    /// The weight, the Gateway API's default (1) applied.
    pub fn weight(&self) -> i32 {
        self.weight.unwrap_or(1)
    }
}

/// `status` of a route: one entry per parent a controller handles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// Per parent.
    #[serde(default)]
    pub parents: Vec<RouteParentStatus>,
}

/// What one controller says about the route for one parent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    /// The parent.
    pub parent_ref: ParentReference,
    /// The controller, e.g. `gateway.envoyproxy.io/gatewayclass-controller`.
    #[serde(default)]
    pub controller_name: String,
    /// `Accepted`, `ResolvedRefs` and others.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A status condition (read leniently: controllers differ in what they fill in).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Accepted`, `ResolvedRefs`, …
    #[serde(rename = "type", default)]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// A CamelCase reason.
    #[serde(default)]
    pub reason: String,
    /// Details.
    #[serde(default)]
    pub message: String,
    /// The route generation it speaks of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When it last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

impl RouteParentStatus {
    /// A condition by type.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_route_reads_and_writes_the_crds_field_names() {
        let route = json!({
            "apiVersion": API_VERSION, "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {
                "parentRefs": [{"name": "public", "namespace": "gw", "sectionName": "https"}],
                "hostnames": ["web.example.com"],
                "rules": [{
                    "matches": [{"path": {"type": "PathPrefix", "value": "/"}, "headers": [{"type": "Exact", "name": "X-Canary", "value": "qa"}]}],
                    "backendRefs": [{"name": "web-green", "port": 80, "weight": 100}]
                }]
            }
        });
        let typed: HttpRoute = serde_json::from_value(route.clone()).unwrap();
        assert_eq!(typed.spec.rules[0].backend_refs[0].weight(), 100);
        assert_eq!(serde_json::to_value(&typed).unwrap(), route);
        let unknown = json!({"apiVersion": API_VERSION, "kind": "HTTPRoute", "metadata": {}, "spec": {"rules": [{"filters": []}]}});
        assert!(serde_json::from_value::<HttpRoute>(unknown).is_err());
    }

    #[test]
    fn parents_compare_with_the_defaults_applied() {
        let written = ParentReference {
            name: "public".into(),
            ..ParentReference::default()
        };
        let defaulted = ParentReference {
            group: Some("gateway.networking.k8s.io".into()),
            kind: Some("Gateway".into()),
            namespace: Some("ns".into()),
            name: "public".into(),
            ..ParentReference::default()
        };
        assert!(written.same_as(&defaulted, "ns"));
        assert!(!written.same_as(&defaulted, "other"));
    }
}
