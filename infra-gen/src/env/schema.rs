//! Structural validation of an environment file against the JSON Schema generated from
//! [`super::model`]. It runs before typed deserialisation so that *every* structural problem
//! of a file is reported at once, each at its own line and column, with what would be valid
//! (and the nearest key for a typo), instead of serde's first error only.

use serde_json::{Map, Value as Json};

use super::diagnostic::Diagnostic;
use super::model::EnvironmentSpec;
use super::yaml::{KeyPath, Node, Value};

/// The JSON Schema of the environment file format.
pub fn json_schema() -> Json {
    let schema = schemars::schema_for!(EnvironmentSpec);
    serde_json::to_value(schema).unwrap_or(Json::Null)
}

/// Checks `node` against the schema; returns every problem found.
pub fn validate(node: &Node, schema: &Json) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    Validator { root: schema }.check(node, schema, &KeyPath::default(), &mut out);
    out
}

struct Validator<'a> {
    root: &'a Json,
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::Float(_) => "number",
        Value::Str(_) => "string",
        Value::Seq(_) => "array",
        Value::Map(_) => "object",
    }
}

fn type_matches(value: &Value, ty: &str) -> bool {
    let kind = kind_of(value);
    kind == ty
        || (ty == "number" && kind == "integer")
        || (ty == "integer" && matches!(value, Value::Float(x) if x.fract() == 0.0))
}

fn describe_type(ty: &str) -> &'static str {
    match ty {
        "null" => "nothing",
        "boolean" => "true or false",
        "integer" => "a whole number",
        "number" => "a number",
        "string" => "text",
        "array" => "a list",
        "object" => "a mapping",
        _ => "a value",
    }
}

/// The nearest candidate by edit distance, when it is close enough to be a typo.
pub fn nearest<'s>(word: &str, candidates: impl IntoIterator<Item = &'s str>) -> Option<&'s str> {
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&word.to_ascii_lowercase(), &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

impl<'a> Validator<'a> {
    fn resolve(&self, schema: &'a Json) -> &'a Json {
        match schema.get("$ref").and_then(Json::as_str) {
            Some(reference) => reference
                .strip_prefix("#/$defs/")
                .and_then(|name| self.root.get("$defs")?.get(name))
                .map(|s| self.resolve(s))
                .unwrap_or(schema),
            None => schema,
        }
    }

    fn check(&self, node: &Node, schema: &'a Json, path: &KeyPath, out: &mut Vec<Diagnostic>) {
        let schema = self.resolve(schema);
        if let Some(branches) = schema
            .get("oneOf")
            .or_else(|| schema.get("anyOf"))
            .and_then(Json::as_array)
        {
            self.check_alternatives(node, branches, path, out);
            return;
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Json::String(t) => vec![t.as_str()],
                Json::Array(ts) => ts.iter().filter_map(Json::as_str).collect(),
                _ => Vec::new(),
            };
            if !types.is_empty() && !types.iter().any(|t| type_matches(&node.value, t)) {
                let wanted: Vec<&str> = types
                    .iter()
                    .filter(|t| **t != "null")
                    .map(|t| describe_type(t))
                    .collect();
                let mut d = Diagnostic::error(
                    Some(node.span.clone()),
                    path.to_string(),
                    format!(
                        "expected {}, found {}",
                        wanted.join(" or "),
                        node.value.describe()
                    ),
                );
                if types.contains(&"string")
                    && matches!(node.value, Value::Int(_) | Value::Float(_) | Value::Bool(_))
                {
                    d = d.with_hint("YAML read this as a number or boolean: put it in quotes");
                } else if let Some(description) = schema.get("description").and_then(Json::as_str) {
                    d = d.with_hint(first_sentence(description));
                }
                out.push(d);
                return;
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Json::as_array) {
            self.check_enum(node, allowed, path, out);
            return;
        }
        if let Some(constant) = schema.get("const") {
            self.check_enum(node, std::slice::from_ref(constant), path, out);
            return;
        }
        match &node.value {
            Value::Map(entries) => self.check_object(node, entries, schema, path, out),
            Value::Seq(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item, item_schema, &path.index(i), out);
                    }
                }
            }
            Value::Int(_) | Value::Float(_) => self.check_range(node, schema, path, out),
            _ => {}
        }
    }

    fn check_range(&self, node: &Node, schema: &Json, path: &KeyPath, out: &mut Vec<Diagnostic>) {
        let value = match node.value {
            Value::Int(i) => i as f64,
            Value::Float(x) => x,
            _ => return,
        };
        if let Some(min) = schema.get("minimum").and_then(Json::as_f64)
            && value < min
        {
            out.push(Diagnostic::error(
                Some(node.span.clone()),
                path.to_string(),
                format!("{value} is below the minimum {min}"),
            ));
        }
        if let Some(max) = schema.get("maximum").and_then(Json::as_f64)
            && value > max
        {
            out.push(Diagnostic::error(
                Some(node.span.clone()),
                path.to_string(),
                format!("{value} is above the maximum {max}"),
            ));
        }
    }

    fn check_enum(&self, node: &Node, allowed: &[Json], path: &KeyPath, out: &mut Vec<Diagnostic>) {
        let found = node.to_json();
        if allowed.contains(&found) {
            return;
        }
        let words: Vec<&str> = allowed.iter().filter_map(Json::as_str).collect();
        let mut d = Diagnostic::error(
            Some(node.span.clone()),
            path.to_string(),
            format!(
                "found {}, expected one of: {}",
                node.value.describe(),
                words.join(", ")
            ),
        );
        if let Value::Str(s) = &node.value
            && let Some(near) = nearest(s, words.iter().copied())
        {
            d = d.with_hint(format!("did you mean `{near}`?"));
        }
        out.push(d);
    }

    fn check_object(
        &self,
        node: &Node,
        entries: &[(super::yaml::Key, Node)],
        schema: &'a Json,
        path: &KeyPath,
        out: &mut Vec<Diagnostic>,
    ) {
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Json::as_object)
            .unwrap_or(&empty);
        let additional = schema.get("additionalProperties");
        for (key, value) in entries {
            let child = path.key(&key.name);
            if let Some(property) = properties.get(&key.name) {
                self.check(value, property, &child, out);
            } else if let Some(extra) = additional.filter(|a| a.is_object()) {
                self.check(value, extra, &child, out);
            } else if additional == Some(&Json::Bool(false)) {
                let valid: Vec<&str> = properties.keys().map(String::as_str).collect();
                let hint = match nearest(&key.name, valid.iter().copied()) {
                    Some(near) => format!(
                        "did you mean `{near}`? Valid keys here: {}",
                        valid.join(", ")
                    ),
                    None => format!("valid keys here: {}", valid.join(", ")),
                };
                out.push(
                    Diagnostic::error(
                        Some(key.span.clone()),
                        child.to_string(),
                        format!("unknown key `{}`", key.name),
                    )
                    .with_hint(hint),
                );
            }
        }
        for required in schema
            .get("required")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
        {
            if !entries.iter().any(|(k, _)| k.name == required) {
                let mut d = Diagnostic::error(
                    Some(node.span.clone()),
                    path.key(required).to_string(),
                    format!("missing key `{required}`"),
                );
                if let Some(description) = properties
                    .get(required)
                    .map(|p| self.resolve(p))
                    .and_then(|p| p.get("description"))
                    .and_then(Json::as_str)
                {
                    d = d.with_hint(first_sentence(description));
                }
                out.push(d);
            }
        }
    }

    fn check_alternatives(
        &self,
        node: &Node,
        branches: &'a [Json],
        path: &KeyPath,
        out: &mut Vec<Diagnostic>,
    ) {
        let mut attempts = Vec::with_capacity(branches.len());
        for branch in branches {
            let mut errors = Vec::new();
            self.check(node, branch, path, &mut errors);
            if errors.is_empty() {
                return;
            }
            attempts.push((self.resolve(branch), errors));
        }
        // All word-like branches (an enum split into documented constants): list the words.
        let words: Vec<&str> = attempts
            .iter()
            .flat_map(|(b, _)| {
                b.get("enum")
                    .and_then(Json::as_array)
                    .map(|a| a.iter().filter_map(Json::as_str).collect::<Vec<_>>())
                    .or_else(|| b.get("const").and_then(Json::as_str).map(|c| vec![c]))
                    .unwrap_or_default()
            })
            .collect();
        if words.len() == attempts.len()
            || (!words.is_empty() && matches!(node.value, Value::Str(_)))
        {
            let allowed: Vec<Json> = words
                .iter()
                .map(|w| Json::String((*w).to_owned()))
                .collect();
            self.check_enum(node, &allowed, path, out);
            return;
        }
        // Prefer the branch of the same kind (a mapping for a mapping), then the fewest errors.
        let same_kind: Vec<&(&Json, Vec<Diagnostic>)> = attempts
            .iter()
            .filter(|(b, _)| match b.get("type").and_then(Json::as_str) {
                Some(t) => type_matches(&node.value, t),
                None => true,
            })
            .collect();
        if let Some((_, errors)) = same_kind.into_iter().min_by_key(|(_, e)| e.len()) {
            out.extend(errors.iter().cloned());
            return;
        }
        let kinds: Vec<String> = attempts
            .iter()
            .map(|(b, _)| {
                b.get("type")
                    .and_then(Json::as_str)
                    .map(|t| {
                        if t == "object" {
                            let keys: Vec<&str> = b
                                .get("properties")
                                .and_then(Json::as_object)
                                .map(|p| p.keys().map(String::as_str).collect())
                                .unwrap_or_default();
                            format!("{{{}}}", keys.join(", "))
                        } else {
                            describe_type(t).to_owned()
                        }
                    })
                    .unwrap_or_else(|| "a value".to_owned())
            })
            .collect();
        out.push(Diagnostic::error(
            Some(node.span.clone()),
            path.to_string(),
            format!(
                "expected {}, found {}",
                kinds.join(" or "),
                node.value.describe()
            ),
        ));
    }
}

fn first_sentence(text: &str) -> String {
    let text = text.replace('\n', " ");
    match text.find(". ") {
        Some(i) => text[..=i].to_owned(),
        None => text,
    }
}
