//! What kube-apiserver refuses, so the double refuses it too, with the same status code and
//! messages shaped like apimachinery's (`k8s.io/apimachinery/pkg/util/validation`,
//! `pkg/apis/*/validation`, the strict JSON decoder and `metav1.MicroTime`):
//!
//! - bodies: duplicate fields, unknown fields (400 with `fieldValidation=Strict`, dropped
//!   without it), `MicroTime` with anything but six fractional digits, `Time` that is not
//!   RFC 3339, values of the wrong type;
//! - metadata: object names (DNS-1123 subdomain or label, DNS-1035 label for Services,
//!   52 characters for CronJobs), label keys and values, annotation keys and total size;
//! - immutable fields: `Deployment.spec.selector`, `Service.spec.clusterIP`,
//!   `Job.spec.template`, every `StatefulSet.spec` field but the updatable ones.

use serde_json::Value as Json;

use super::Resource;

/// A refusal: HTTP status, Kubernetes reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    fn bad_request(message: String) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message,
        }
    }

    fn invalid(message: String) -> Self {
        Self {
            code: 422,
            reason: "Invalid",
            message,
        }
    }
}

/// `Deployment.apps`, `Service` (how apimachinery names a kind in "is invalid" messages).
pub fn qualified(resource: &Resource) -> String {
    if resource.group.is_empty() {
        resource.kind.to_owned()
    } else {
        format!("{}.{}", resource.kind, resource.group)
    }
}

/// Parses a JSON body, listing duplicate keys (Go's strict decoder reports them; serde_json
/// keeps the last silently).
pub fn parse_with_duplicates(body: &[u8]) -> Result<(Json, Vec<String>), String> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    struct Seed<'a> {
        path: String,
        duplicates: &'a mut Vec<String>,
    }

    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = Json;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = Json;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
            Ok(Json::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
            Ok(Json::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
            Ok(Json::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
        }
        fn visit_str<E>(self, v: &str) -> Result<Json, E> {
            Ok(Json::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Json, E> {
            Ok(Json::String(v))
        }
        fn visit_unit<E>(self) -> Result<Json, E> {
            Ok(Json::Null)
        }
        fn visit_none<E>(self) -> Result<Json, E> {
            Ok(Json::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
            let mut out = Vec::new();
            let mut i = 0;
            loop {
                let seed = Seed {
                    path: format!("{}[{i}]", self.path),
                    duplicates: &mut *self.duplicates,
                };
                match seq.next_element_seed(seed)? {
                    Some(v) => out.push(v),
                    None => break,
                }
                i += 1;
            }
            Ok(Json::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                let seed = Seed {
                    path: path.clone(),
                    duplicates: &mut *self.duplicates,
                };
                let value = map.next_value_seed(seed)?;
                if out.insert(key, value).is_some() {
                    self.duplicates.push(path);
                }
            }
            Ok(Json::Object(out))
        }
    }

    let mut duplicates = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = Seed {
        path: String::new(),
        duplicates: &mut duplicates,
    }
    .deserialize(&mut deserializer)
    .map_err(|e| e.to_string())?;
    deserializer.end().map_err(|e| e.to_string())?;
    Ok((value, duplicates))
}

const MICRO_LAYOUT: &str = "2006-01-02T15:04:05.000000Z07:00";

/// Go's `time.Parse(RFC3339Micro, value)` error, if `value` is not exactly that layout.
fn micro_time_error(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    let head_ok = digits(0..4)
        && bytes.get(4) == Some(&b'-')
        && digits(5..7)
        && bytes.get(7) == Some(&b'-')
        && digits(8..10)
        && bytes.get(10) == Some(&b'T')
        && digits(11..13)
        && bytes.get(13) == Some(&b':')
        && digits(14..16)
        && bytes.get(16) == Some(&b':')
        && digits(17..19);
    let parsing = format!("parsing time {value:?} as {MICRO_LAYOUT:?}");
    if !head_ok {
        return Some(format!("{parsing}: cannot parse {value:?} as \"2006\""));
    }
    let rest = &value[19..];
    let fraction: String = rest
        .strip_prefix('.')
        .map(|r| r.chars().take_while(char::is_ascii_digit).collect())
        .unwrap_or_default();
    if !rest.starts_with('.') || fraction.len() < 6 {
        return Some(format!("{parsing}: cannot parse {rest:?} as \".000000\""));
    }
    let zone = &rest[7..];
    let zone_ok = zone == "Z"
        || (zone.len() == 6
            && (zone.starts_with('+') || zone.starts_with('-'))
            && zone.as_bytes()[3] == b':'
            && zone[1..3].bytes().all(|b| b.is_ascii_digit())
            && zone[4..6].bytes().all(|b| b.is_ascii_digit()));
    if !zone_ok {
        return Some(format!("{parsing}: cannot parse {zone:?} as \"Z07:00\""));
    }
    None
}

/// Go's `time.Parse(RFC3339, value)` error (fractions are accepted, as Go does).
fn time_error(value: &str) -> Option<String> {
    match value.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(_) => None,
        Err(_) => Some(format!(
            "parsing time {value:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse {value:?} as \"2006\""
        )),
    }
}

/// The `MicroTime` and `Time` fields of a kind that clients write.
fn time_fields(kind: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        "Lease" => (&["/spec/acquireTime", "/spec/renewTime"], &[]),
        "Event" => (&["/eventTime"], &["/firstTimestamp", "/lastTimestamp"]),
        _ => (&[], &[]),
    }
}

/// Decoding a body: wrong time formats. A create or update gets 400 ("cannot be handled
/// as"); a server-side apply fails while building its typed patch, which kube-apiserver
/// answers with 500.
pub fn check_times(resource: &Resource, body: &Json, apply: bool) -> Result<(), Refusal> {
    let (micro, plain) = time_fields(resource.kind);
    let mut problems = Vec::new();
    for pointer in micro {
        if let Some(value) = body.pointer(pointer).and_then(Json::as_str)
            && let Some(e) = micro_time_error(value)
        {
            problems.push(e);
        }
    }
    let mut times: Vec<&str> = plain.to_vec();
    times.extend(["/metadata/creationTimestamp", "/metadata/deletionTimestamp"]);
    for pointer in times {
        if let Some(value) = body.pointer(pointer).and_then(Json::as_str)
            && let Some(e) = time_error(value)
        {
            problems.push(e);
        }
    }
    let Some(first) = problems.into_iter().next() else {
        return Ok(());
    };
    let kind = resource.kind;
    Err(if apply {
        Refusal {
            code: 500,
            reason: "InternalError",
            message: format!(
                "Internal error occurred: failed to create typed patch object: {first}"
            ),
        }
    } else {
        Refusal::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: {first}",
            resource.version
        ))
    })
}

/// Round-trips an object through its k8s-openapi type: what a real API server keeps of it
/// (fields its schema does not have are gone). Kinds without a type are kept as they are.
pub fn round_trip(kind: &str, value: &Json) -> Result<Json, String> {
    fn through<T: serde::de::DeserializeOwned + serde::Serialize>(
        value: &Json,
    ) -> Result<Json, String> {
        let typed: T = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let path = e.path().to_string();
            format!("{path}: {}", e.inner())
        })?;
        serde_json::to_value(typed).map_err(|e| e.to_string())
    }
    use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, networking, policy};
    match kind {
        "Namespace" => through::<core::v1::Namespace>(value),
        "ServiceAccount" => through::<core::v1::ServiceAccount>(value),
        "ConfigMap" => through::<core::v1::ConfigMap>(value),
        "Secret" => through::<core::v1::Secret>(value),
        "Service" => through::<core::v1::Service>(value),
        "Pod" => through::<core::v1::Pod>(value),
        "Event" => through::<core::v1::Event>(value),
        "Deployment" => through::<apps::v1::Deployment>(value),
        "StatefulSet" => through::<apps::v1::StatefulSet>(value),
        "Job" => through::<batch::v1::Job>(value),
        "CronJob" => through::<batch::v1::CronJob>(value),
        "Ingress" => through::<networking::v1::Ingress>(value),
        "HorizontalPodAutoscaler" => through::<autoscaling::v2::HorizontalPodAutoscaler>(value),
        "PodDisruptionBudget" => through::<policy::v1::PodDisruptionBudget>(value),
        "Lease" => through::<coordination::v1::Lease>(value),
        _ => Ok(value.clone()),
    }
}

/// Paths present in `body` but not in `kept` (what the schema dropped), as dotted paths.
pub fn unknown_fields(body: &Json, kept: &Json) -> Vec<String> {
    fn walk(body: &Json, kept: Option<&Json>, path: &str, out: &mut Vec<String>) {
        match body {
            Json::Object(map) => {
                for (key, value) in map {
                    if path.is_empty() && (key == "apiVersion" || key == "kind") {
                        continue;
                    }
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    match kept.and_then(|k| k.get(key)) {
                        Some(k) => walk(value, Some(k), &child, out),
                        None if value.is_null() => {}
                        None => out.push(child),
                    }
                }
            }
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(
                        item,
                        kept.and_then(|k| k.get(i)),
                        &format!("{path}[{i}]"),
                        out,
                    );
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(body, Some(kept), "", &mut out);
    out
}

/// The strict decoding error, as kube-apiserver words it for a create/update, and for a
/// server-side apply.
pub fn strict_error(
    resource: &Resource,
    namespace: &str,
    name: &str,
    unknown: &[String],
    duplicates: &[String],
    apply: bool,
) -> Option<Refusal> {
    if unknown.is_empty() && duplicates.is_empty() {
        return None;
    }
    let kind = resource.kind;
    if apply {
        let mut parts: Vec<String> = unknown
            .iter()
            .map(|u| format!(".{u}: field not declared in schema"))
            .collect();
        parts.extend(duplicates.iter().map(|d| format!(".{d}: duplicate field")));
        return Some(Refusal::bad_request(format!(
            "failed to create typed patch object ({namespace}/{name}; {}, Kind={kind}): {}",
            resource.api_version(),
            parts.join(", ")
        )));
    }
    let mut parts: Vec<String> = unknown
        .iter()
        .map(|u| format!("unknown field {u:?}"))
        .collect();
    parts.extend(duplicates.iter().map(|d| format!("duplicate field {d:?}")));
    Some(Refusal::bad_request(format!(
        "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
        resource.version,
        parts.join(", ")
    )))
}

fn regex_error(message: &str, format: &str, examples: &[&str]) -> String {
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{message} (e.g. {}regex used for validation is '{format}')",
        examples.join("or ")
    )
}

fn is_label_text(value: &str, allow_upper_and_underscore: bool) -> bool {
    let ok = |c: char| {
        c.is_ascii_digit()
            || c.is_ascii_lowercase()
            || c == '-'
            || (allow_upper_and_underscore && (c.is_ascii_uppercase() || c == '_' || c == '.'))
    };
    let edge = |c: char| {
        c.is_ascii_digit()
            || c.is_ascii_lowercase()
            || (allow_upper_and_underscore && c.is_ascii_uppercase())
    };
    !value.is_empty()
        && value.chars().all(ok)
        && value.chars().next().is_some_and(edge)
        && value.chars().last().is_some_and(edge)
}

/// RFC 1123 label errors.
pub fn dns1123_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_owned());
    }
    if !is_label_text(value, false) {
        errors.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "123-abc"],
        ));
    }
    errors
}

/// RFC 1123 subdomain errors.
pub fn dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 253 {
        errors.push("must be no more than 253 characters".to_owned());
    }
    if !value.split('.').all(|part| is_label_text(part, false)) {
        errors.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
            &["example.com"],
        ));
    }
    errors
}

/// RFC 1035 label errors (Service names).
pub fn dns1035_label(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_owned());
    }
    if !is_label_text(value, false) || !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        errors.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            "[a-z]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "abc-123"],
        ));
    }
    errors
}

/// Label or annotation key errors (qualified names: `[prefix/]name`).
pub fn qualified_name(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let mut errors = Vec::new();
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            errors.push("prefix part must be non-empty".to_owned());
        } else {
            errors.extend(
                dns1123_subdomain(prefix)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    if name.is_empty() {
        errors.push("name part must be non-empty".to_owned());
    } else {
        if name.len() > 63 {
            errors.push("name part must be no more than 63 characters".to_owned());
        }
        if !is_label_text(name, true) {
            errors.push(regex_error(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]",
                &["MyName", "my.name", "123-abc"],
            ));
        }
    }
    errors
}

/// Label value errors.
pub fn label_value(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !is_label_text(value, true) {
        errors.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    errors
}

/// The most annotations may hold, in bytes (keys and values).
pub const ANNOTATIONS_MAX: usize = 256 * 1024;

/// Metadata errors of an object being stored: name, labels, annotations.
pub fn check_metadata(resource: &Resource, object: &Json) -> Result<(), Refusal> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let mut errors: Vec<String> = Vec::new();
    let name_errors = match resource.kind {
        "Namespace" => dns1123_label(name),
        "Service" => dns1035_label(name),
        "CronJob" if name.len() > 52 => vec!["must be no more than 52 characters".to_owned()],
        _ => dns1123_subdomain(name),
    };
    errors.extend(
        name_errors
            .into_iter()
            .map(|e| format!("metadata.name: Invalid value: {name:?}: {e}")),
    );
    if let Some(labels) = object.pointer("/metadata/labels").and_then(Json::as_object) {
        for (key, value) in labels {
            errors.extend(
                qualified_name(key)
                    .into_iter()
                    .map(|e| format!("metadata.labels: Invalid value: {key:?}: {e}")),
            );
            let value = value.as_str().unwrap_or_default();
            errors.extend(
                label_value(value)
                    .into_iter()
                    .map(|e| format!("metadata.labels: Invalid value: {value:?}: {e}")),
            );
        }
    }
    if let Some(annotations) = object
        .pointer("/metadata/annotations")
        .and_then(Json::as_object)
    {
        let mut total = 0;
        for (key, value) in annotations {
            total += key.len() + value.as_str().map_or(0, str::len);
            errors.extend(
                qualified_name(key)
                    .into_iter()
                    .map(|e| format!("metadata.annotations: Invalid value: {key:?}: {e}")),
            );
        }
        if total > ANNOTATIONS_MAX {
            errors.push(format!(
                "metadata.annotations: Too long: must have at most {ANNOTATIONS_MAX} bytes"
            ));
        }
    }
    errors.extend(pod_template_errors(resource.kind, object));
    invalid(resource, name, errors)
}

/// What kube-apiserver's `ValidatePodSpec` refuses that a template could get wrong: a
/// volumeMount naming no volume (`validateVolumeMounts`: `field.NotFound`), and a UID/GID
/// outside an int32 (`IsValidUserID`/`IsValidGroupID`).
fn pod_template_errors(kind: &str, object: &Json) -> Vec<String> {
    let (pointer, path) = match kind {
        "Pod" => ("/spec", "spec"),
        "CronJob" => (
            "/spec/jobTemplate/spec/template/spec",
            "spec.jobTemplate.spec.template.spec",
        ),
        "Deployment" | "StatefulSet" | "ReplicaSet" | "DaemonSet" | "Job" => {
            ("/spec/template/spec", "spec.template.spec")
        }
        _ => return Vec::new(),
    };
    let Some(pod) = object.pointer(pointer) else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let volumes: Vec<&str> = pod
        .get("volumes")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Json::as_str))
        .collect();
    let ids = |context: Option<&Json>, at: String, errors: &mut Vec<String>| {
        for (field, what) in [
            ("runAsUser", "must be between 0 and 2147483647, inclusive"),
            ("runAsGroup", "must be between 0 and 2147483647, inclusive"),
        ] {
            if let Some(id) = context.and_then(|c| c.get(field)).and_then(Json::as_i64)
                && !(0..=2_147_483_647).contains(&id)
            {
                errors.push(format!("{at}.{field}: Invalid value: {id}: {what}"));
            }
        }
    };
    ids(
        pod.get("securityContext"),
        format!("{path}.securityContext"),
        &mut errors,
    );
    for list in ["initContainers", "containers"] {
        let containers = pod.get(list).and_then(Json::as_array).into_iter().flatten();
        for (i, container) in containers.enumerate() {
            ids(
                container.get("securityContext"),
                format!("{path}.{list}[{i}].securityContext"),
                &mut errors,
            );
            let mounts = container
                .get("volumeMounts")
                .and_then(Json::as_array)
                .into_iter()
                .flatten();
            for (j, mount) in mounts.enumerate() {
                let name = mount.get("name").and_then(Json::as_str).unwrap_or_default();
                if !volumes.contains(&name) {
                    errors.push(format!(
                        "{path}.{list}[{i}].volumeMounts[{j}].name: Not found: {name:?}"
                    ));
                }
            }
        }
    }
    errors
}

fn invalid(resource: &Resource, name: &str, errors: Vec<String>) -> Result<(), Refusal> {
    if errors.is_empty() {
        return Ok(());
    }
    let listed = if errors.len() == 1 {
        errors[0].clone()
    } else {
        format!("[{}]", errors.join(", "))
    };
    Err(Refusal::invalid(format!(
        "{} {name:?} is invalid: {listed}",
        qualified(resource)
    )))
}

/// Changes an update may not make.
pub fn check_immutable(resource: &Resource, before: &Json, after: &Json) -> Result<(), Refusal> {
    let name = after
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let changed = |pointer: &str| before.pointer(pointer) != after.pointer(pointer);
    let mut errors = Vec::new();
    match resource.kind {
        "Deployment" if changed("/spec/selector") => errors.push(format!(
            "spec.selector: Invalid value: {}: field is immutable",
            after
                .pointer("/spec/selector")
                .cloned()
                .unwrap_or(Json::Null)
        )),
        "Service" if before.pointer("/spec/clusterIP").is_some() && changed("/spec/clusterIP") => {
            errors.push(format!(
                "spec.clusterIP: Invalid value: {}: field is immutable",
                after
                    .pointer("/spec/clusterIP")
                    .cloned()
                    .unwrap_or(Json::Null)
            ))
        }
        "Job" if changed("/spec/template") => errors.push(format!(
            "spec.template: Invalid value: {}: field is immutable",
            after
                .pointer("/spec/template")
                .cloned()
                .unwrap_or(Json::Null)
        )),
        "StatefulSet" => {
            let fixed = |o: &Json| {
                let mut spec = o.get("spec").cloned().unwrap_or(Json::Null);
                if let Some(map) = spec.as_object_mut() {
                    for key in [
                        "replicas",
                        "ordinals",
                        "template",
                        "updateStrategy",
                        "persistentVolumeClaimRetentionPolicy",
                        "minReadySeconds",
                    ] {
                        map.remove(key);
                    }
                }
                spec
            };
            if fixed(before) != fixed(after) {
                errors.push("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".to_owned());
            }
        }
        _ => {}
    }
    invalid(resource, name, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_templates_need_their_volumes_and_valid_ids() {
        let deployment = serde_json::json!({"spec": {"template": {"spec": {
            "securityContext": {"runAsUser": -1, "runAsGroup": 65532},
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            "containers": [{"name": "c", "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "cache", "mountPath": "/cache"}
            ]}]
        }}}});
        assert_eq!(
            pod_template_errors("Deployment", &deployment),
            [
                "spec.template.spec.securityContext.runAsUser: Invalid value: -1: must be between 0 and 2147483647, inclusive",
                "spec.template.spec.containers[0].volumeMounts[1].name: Not found: \"cache\"",
            ]
        );
        assert!(pod_template_errors("Service", &deployment).is_empty());
    }

    #[test]
    fn micro_times_need_exactly_six_fractional_digits() {
        assert_eq!(micro_time_error("2026-12-01T07:49:16.023460Z"), None);
        assert_eq!(micro_time_error("2026-12-01T07:49:16.023460+09:00"), None);
        assert_eq!(
            micro_time_error("2026-12-01T07:49:16.02346Z").unwrap(),
            "parsing time \"2026-12-01T07:49:16.02346Z\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \".02346Z\" as \".000000\""
        );
        assert!(
            micro_time_error("2026-12-01T07:49:16.023460789Z")
                .unwrap()
                .ends_with("cannot parse \"789Z\" as \"Z07:00\"")
        );
        assert!(micro_time_error("2026-12-01T07:49:16Z").is_some());
    }

    #[test]
    fn names_follow_apimachinery() {
        assert!(dns1123_label("web-1").is_empty());
        assert!(!dns1123_label("Web").is_empty());
        assert!(
            !dns1035_label("1web").is_empty(),
            "a Service name starts with a letter"
        );
        assert!(dns1123_subdomain("a.b-c").is_empty());
        assert!(!dns1123_subdomain(&"a".repeat(254)).is_empty());
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(!qualified_name("Bad_Prefix/name").is_empty());
        assert!(!qualified_name(&"n".repeat(64)).is_empty());
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_3").is_empty());
        assert!(!label_value("-v").is_empty());
    }

    #[test]
    fn duplicates_are_found_at_every_depth() {
        let (_, dups) = parse_with_duplicates(
            br#"{"spec": {"replicas": 1, "replicas": 2, "x": [{"a": 1, "a": 2}]}}"#,
        )
        .unwrap();
        assert_eq!(dups, vec!["spec.replicas", "spec.x[0].a"]);
    }
}
