//! Field ownership, as server-side apply keeps it: per field manager and operation (`Apply`
//! or `Update`), the set of fields it owns. An apply conflicts (409) with another manager that
//! owns a field it sets to a different value, unless forced; fields a manager stops applying
//! are removed unless another manager owns them too; updates take the fields they change.
//! Lists are owned as a whole (the double does not model associative list keys).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value as Json, json};

/// A field path (object keys; lists are leaves).
pub type Path = Vec<String>;

/// (manager, operation) → owned fields.
pub type Managers = BTreeMap<(String, &'static str), BTreeSet<Path>>;

const SERVER_SET: [&str; 7] = [
    "name",
    "namespace",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
];

/// The fields of an object a manager can own: everything but identity, server-set metadata
/// and status.
pub fn leaves_of(object: &Json, status: bool) -> BTreeSet<Path> {
    let mut relevant = object.clone();
    if let Some(map) = relevant.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        if !status {
            map.remove("status");
        }
    }
    if let Some(meta) = relevant.get_mut("metadata").and_then(Json::as_object_mut) {
        for key in SERVER_SET {
            meta.remove(key);
        }
    }
    let mut out = BTreeSet::new();
    leaves(&relevant, &mut Vec::new(), &mut out);
    out
}

/// Leaf fields; an empty object sets nothing, so it is not one.
fn leaves(value: &Json, prefix: &mut Vec<String>, out: &mut BTreeSet<Path>) {
    match value {
        Json::Object(map) => {
            for (k, v) in map {
                prefix.push(k.clone());
                leaves(v, prefix, out);
                prefix.pop();
            }
        }
        _ if prefix.is_empty() => {}
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The value at a path.
pub fn at<'a>(object: &'a Json, path: &[String]) -> Option<&'a Json> {
    path.iter().try_fold(object, |o, k| o.get(k))
}

/// Whether `owned` covers `path` (the same field, one above it, or one inside it).
fn covers(owned: &BTreeSet<Path>, path: &Path) -> bool {
    owned
        .iter()
        .any(|o| o == path || path.starts_with(o) || o.starts_with(path))
}

/// `.spec.replicas`.
pub fn dotted(path: &Path) -> String {
    format!(".{}", path.join("."))
}

/// Removes a path, and parents it leaves empty.
pub fn remove_path(value: &mut Json, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            if let Some(map) = value.as_object_mut() {
                map.remove(last);
            }
        }
        [first, rest @ ..] => {
            if let Some(child) = value.get_mut(first) {
                remove_path(child, rest);
                if child.as_object().is_some_and(|m| m.is_empty())
                    && let Some(map) = value.as_object_mut()
                {
                    map.remove(first);
                }
            }
        }
    }
}

/// Objects merge key by key; everything else (lists included) is replaced.
pub fn merge(target: &mut Json, patch: &Json) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Json::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// A server-side apply of `config` by `manager` onto `object` (the live object, or an empty
/// one). Returns the conflicts (other manager, field) when not forced.
pub fn apply(
    managers: &mut Managers,
    object: &mut Json,
    config: &Json,
    manager: &str,
    force: bool,
) -> Result<(), Vec<(String, String)>> {
    let applied = leaves_of(config, false);
    let me = (manager.to_owned(), "Apply");
    let mut conflicts = Vec::new();
    for path in &applied {
        let differs = at(object, path) != at(config, path);
        if !differs {
            continue;
        }
        for (other, owned) in managers.iter() {
            if *other != me && covers(owned, path) {
                conflicts.push((other.0.clone(), dotted(path)));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort();
        conflicts.dedup();
        return Err(conflicts);
    }
    // Forced: the fields set to another value change hands.
    for path in &applied {
        if at(object, path) != at(config, path) {
            for (other, owned) in managers.iter_mut() {
                if *other != me {
                    owned.retain(|o| !(o == path || path.starts_with(o) || o.starts_with(path)));
                }
            }
        }
    }
    let previous = managers.get(&me).cloned().unwrap_or_default();
    for gone in previous.difference(&applied) {
        let shared = managers
            .iter()
            .any(|(other, owned)| *other != me && covers(owned, gone));
        let still_applied = applied.iter().any(|a| a == gone || a.starts_with(gone));
        if !shared && !still_applied {
            remove_path(object, gone);
        }
    }
    let mut relevant = config.clone();
    if let Some(map) = relevant.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = relevant.get_mut("metadata").and_then(Json::as_object_mut) {
        for key in SERVER_SET {
            meta.remove(key);
        }
    }
    merge(object, &relevant);
    managers.insert(me, applied);
    managers.retain(|_, owned| !owned.is_empty());
    Ok(())
}

/// An update (create, replace, merge patch) by `manager`: it takes every field it changed.
pub fn update(
    managers: &mut Managers,
    before: Option<&Json>,
    after: &Json,
    manager: &str,
    status: bool,
) {
    let empty = json!({});
    let before = before.unwrap_or(&empty);
    let changed: BTreeSet<Path> = leaves_of(after, status)
        .into_iter()
        .filter(|p| at(before, p) != at(after, p))
        .collect();
    let removed: BTreeSet<Path> = leaves_of(before, status)
        .into_iter()
        .filter(|p| at(after, p).is_none())
        .collect();
    let me = (manager.to_owned(), "Update");
    for (other, owned) in managers.iter_mut() {
        if *other != me {
            owned.retain(|o| {
                !changed
                    .iter()
                    .chain(&removed)
                    .any(|p| o == p || p.starts_with(o))
            });
        }
    }
    managers.entry(me).or_default().extend(changed);
    managers.retain(|_, owned| !owned.is_empty());
}

/// `metadata.managedFields` in the API's shape (FieldsV1: `f:` keys).
pub fn managed_fields(managers: &Managers, api_version: &str, time: &str) -> Json {
    let entries: Vec<Json> = managers
        .iter()
        .map(|((manager, operation), owned)| {
            let mut fields = json!({});
            for path in owned {
                let mut node = &mut fields;
                for key in path {
                    node = node
                        .as_object_mut()
                        .map(|m| m.entry(format!("f:{key}")).or_insert_with(|| json!({})))
                        .expect("fieldsV1 nodes are objects");
                }
            }
            let mut entry = json!({
                "manager": manager,
                "operation": operation,
                "apiVersion": api_version,
                "time": time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            });
            if owned
                .iter()
                .all(|p| p.first().is_some_and(|k| k == "status"))
            {
                entry["subresource"] = json!("status");
            }
            entry
        })
        .collect();
    Json::Array(entries)
}

/// The 409 message of a conflicting apply, as kube-apiserver words it.
pub fn conflict_message(conflicts: &[(String, String)], api_version: &str) -> String {
    if let [(manager, field)] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {manager:?} using {api_version}: {field}"
        );
    }
    let mut by_manager: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (manager, field) in conflicts {
        by_manager.entry(manager).or_default().push(field);
    }
    let parts: Vec<String> = by_manager
        .iter()
        .map(|(manager, fields)| {
            let list: Vec<String> = fields.iter().map(|f| format!("- {f}")).collect();
            format!(
                "conflicts with {manager:?} using {api_version}:\n{}",
                list.join("\n")
            )
        })
        .collect();
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        parts.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_another_manager_owns_with_another_value_conflicts_unless_forced() {
        let mut managers = Managers::new();
        let mut object = json!({"spec": {"replicas": 3}});
        update(&mut managers, None, &object, "kubectl", false);
        let config = json!({"spec": {"replicas": 2}});
        let conflicts = apply(&mut managers, &mut object, &config, "infra-gen", false).unwrap_err();
        assert_eq!(
            conflicts,
            vec![("kubectl".to_owned(), ".spec.replicas".to_owned())]
        );
        assert_eq!(object["spec"]["replicas"], 3);
        apply(&mut managers, &mut object, &config, "infra-gen", true).unwrap();
        assert_eq!(object["spec"]["replicas"], 2);
        assert!(!managers.contains_key(&("kubectl".to_owned(), "Update")));
    }

    #[test]
    fn a_field_no_longer_applied_goes_unless_another_manager_owns_it() {
        let mut managers = Managers::new();
        let mut object = json!({});
        apply(
            &mut managers,
            &mut object,
            &json!({"spec": {"replicas": 3, "x": 1}}),
            "infra-gen",
            true,
        )
        .unwrap();
        apply(
            &mut managers,
            &mut object,
            &json!({"spec": {"replicas": 3}}),
            "handover",
            false,
        )
        .unwrap();
        apply(
            &mut managers,
            &mut object,
            &json!({"spec": {}}),
            "infra-gen",
            true,
        )
        .unwrap();
        assert_eq!(
            object,
            json!({"spec": {"replicas": 3}}),
            "x removed, replicas kept by handover"
        );
    }
}
