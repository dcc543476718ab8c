//! YAML with positions. Environment files are parsed into [`Node`]s that remember their file,
//! line and column, so every later error (unknown key, bad value, broken rule) can point at
//! the exact place — including values that came from `_defaults.yaml`.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use saphyr::{LoadableYamlNode, MarkedYamlOwned, ScalarOwned, YamlDataOwned};

use super::diagnostic::{Diagnostic, Span};

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path into a document, displayed as `workloads.web.env.PORT` or `rollout.steps[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.to_owned()));
        Self(segments)
    }

    /// This path extended by an index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    /// The path without its last step.
    pub fn parent(&self) -> Self {
        let mut segments = self.0.clone();
        segments.pop();
        Self(segments)
    }

    /// Parses a dotted path (`a.b[2].c`), for tests and rule code.
    pub fn parse(text: &str) -> Self {
        let mut segments = Vec::new();
        for part in text.split('.').filter(|p| !p.is_empty()) {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if !key.is_empty() {
                segments.push(Segment::Key(key.to_owned()));
            }
            while let Some(close) = rest.find(']') {
                if let Ok(i) = rest[1..close].parse() {
                    segments.push(Segment::Index(i));
                }
                rest = &rest[close + 1..];
            }
        }
        Self(segments)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if k.contains(['.', '[', ' ']) || k.is_empty() => {
                    write!(f, "{}{k:?}", if i > 0 { "." } else { "" })?
                }
                Segment::Key(k) if i > 0 => write!(f, ".{k}")?,
                Segment::Key(k) => write!(f, "{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A YAML value with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub span: Span,
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where it is.
    pub span: Span,
}

/// The YAML data model used by environment files (YAML 1.2 core schema).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// How the value is described in messages ("a string \"two\"", "a mapping", …).
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => format!("the boolean {b}"),
            Value::Int(i) => format!("the number {i}"),
            Value::Float(x) => format!("the number {x}"),
            Value::Str(s) if s.chars().count() > 40 => {
                let head: String = s.chars().take(40).collect();
                format!("the string {head:?}…")
            }
            Value::Str(s) => format!("the string {s:?}"),
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
        }
    }
}

impl Node {
    /// The node at `path` below this one, if any.
    pub fn get(&self, path: &KeyPath) -> Option<&Node> {
        let mut node = self;
        for segment in &path.0 {
            node = match (segment, &node.value) {
                (Segment::Key(k), Value::Map(entries)) => {
                    &entries.iter().find(|(key, _)| &key.name == k)?.1
                }
                (Segment::Index(i), Value::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// The key node of the last step of `path`, if it is a mapping key.
    pub fn key_of(&self, path: &KeyPath) -> Option<&Key> {
        let (Some(Segment::Key(last)), parent) = (path.0.last(), path.parent()) else {
            return None;
        };
        match &self.get(&parent)?.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(key, _)| &key.name == last)
                .map(|(k, _)| k),
            _ => None,
        }
    }

    /// The closest position for `path`: the value itself, else its nearest existing parent.
    pub fn span_for(&self, path: &KeyPath) -> Span {
        let mut probe = path.clone();
        loop {
            if let Some(node) = self.get(&probe) {
                return node.span.clone();
            }
            if probe.0.is_empty() {
                return self.span.clone();
            }
            probe = probe.parent();
        }
    }

    /// Converts to JSON for typed deserialisation (positions are dropped).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(x) => serde_json::Number::from_f64(*x)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => {
                serde_json::Value::Array(items.iter().map(Node::to_json).collect())
            }
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

fn span_of(file: &Arc<Path>, marker: &saphyr::Marker) -> Span {
    Span {
        file: file.clone(),
        line: marker.line(),
        column: marker.col() + 1,
    }
}

/// Parses one environment file. An empty file gives `Ok(None)`.
pub fn parse(file: &Arc<Path>, text: &str) -> Result<Option<Node>, Diagnostic> {
    let documents = MarkedYamlOwned::load_from_str(text).map_err(|e| {
        Diagnostic::error(
            Some(span_of(file, e.marker())),
            "",
            format!("this is not valid YAML: {}", e.info()),
        )
        .with_hint("check the indentation and that every `key: value` has a space after the colon")
    })?;
    let mut documents = documents.into_iter();
    let Some(first) = documents.next() else {
        return Ok(None);
    };
    if let Some(second) = documents.next() {
        return Err(Diagnostic::error(
            Some(span_of(file, &second.span.start)),
            "",
            "a second YAML document starts here; an environment file holds exactly one",
        )
        .with_hint("remove the `---` line, or move this part into its own environment file"));
    }
    convert(file, first).map(Some)
}

fn convert(file: &Arc<Path>, node: MarkedYamlOwned) -> Result<Node, Diagnostic> {
    let span = span_of(file, &node.span.start);
    let value = match node.data {
        YamlDataOwned::Value(scalar) => scalar_value(scalar),
        YamlDataOwned::Representation(text, _, _) => Value::Str(text),
        YamlDataOwned::Sequence(items) => Value::Seq(
            items
                .into_iter()
                .map(|item| convert(file, item))
                .collect::<Result<_, _>>()?,
        ),
        YamlDataOwned::Mapping(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                let key_span = span_of(file, &key.span.start);
                let name = match key.data {
                    YamlDataOwned::Value(ScalarOwned::String(s)) => s,
                    YamlDataOwned::Value(ScalarOwned::Integer(i)) => i.to_string(),
                    YamlDataOwned::Value(ScalarOwned::Boolean(b)) => b.to_string(),
                    _ => {
                        return Err(Diagnostic::error(
                            Some(key_span),
                            "",
                            "this key is not a plain string",
                        )
                        .with_hint("keys are names like `replicas`; quote unusual ones"));
                    }
                };
                out.push((
                    Key {
                        name,
                        span: key_span,
                    },
                    convert(file, value)?,
                ));
            }
            Value::Map(out)
        }
        YamlDataOwned::Tagged(tag, _) => {
            return Err(Diagnostic::error(
                Some(span),
                "",
                format!("YAML tags such as !{} are not supported", tag.suffix),
            )
            .with_hint("write the plain value"));
        }
        YamlDataOwned::Alias(_) => {
            return Err(Diagnostic::error(
                Some(span),
                "",
                "YAML anchors and aliases are not supported",
            )
            .with_hint("put shared values in environments/_defaults.yaml instead"));
        }
        YamlDataOwned::BadValue => {
            return Err(Diagnostic::error(
                Some(span),
                "",
                "this value cannot be read",
            ));
        }
    };
    Ok(Node { value, span })
}

fn scalar_value(scalar: ScalarOwned) -> Value {
    match scalar {
        ScalarOwned::Null => Value::Null,
        ScalarOwned::Boolean(b) => Value::Bool(b),
        ScalarOwned::Integer(i) => Value::Int(i),
        ScalarOwned::FloatingPoint(x) => Value::Float(x.into_inner()),
        ScalarOwned::String(s) => Value::Str(s),
    }
}

/// Deep-merges `defaults` under `environment`: mappings merge key by key, anything else
/// (scalars, lists, null) in the environment replaces the default.
pub fn merge(defaults: Node, environment: Node) -> Node {
    match (defaults.value, environment.value) {
        (Value::Map(base), Value::Map(over)) => {
            let mut merged: Vec<(Key, Node)> = Vec::with_capacity(base.len() + over.len());
            let mut over = over;
            for (key, base_value) in base {
                match over.iter().position(|(k, _)| k.name == key.name) {
                    Some(i) => {
                        let (over_key, over_value) = over.remove(i);
                        merged.push((over_key, merge(base_value, over_value)));
                    }
                    None => merged.push((key, base_value)),
                }
            }
            merged.extend(over);
            Node {
                value: Value::Map(merged),
                span: environment.span,
            }
        }
        (_, value) => Node {
            value,
            span: environment.span,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> Arc<Path> {
        Arc::from(Path::new(name))
    }

    fn parse_ok(text: &str) -> Node {
        parse(&file("t.yaml"), text).unwrap().unwrap()
    }

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let node = parse_ok("a:\n  b: 1\n  c: [x, y]\n");
        let b = node.get(&KeyPath::parse("a.b")).unwrap();
        assert_eq!((b.span.line, b.span.column), (2, 6));
        let key = node.key_of(&KeyPath::parse("a.c")).unwrap();
        assert_eq!((key.span.line, key.span.column), (3, 3));
        let y = node.get(&KeyPath::parse("a.c[1]")).unwrap();
        assert_eq!(y.value, Value::Str("y".into()));
    }

    #[test]
    fn yaml_1_2_scalars_keep_yes_and_on_as_strings() {
        let node = parse_ok("a: yes\nb: on\nc: true\nd: 08\ne: 1.5\nf: ~\n");
        assert_eq!(
            node.get(&KeyPath::parse("a")).unwrap().value,
            Value::Str("yes".into())
        );
        assert_eq!(
            node.get(&KeyPath::parse("b")).unwrap().value,
            Value::Str("on".into())
        );
        assert_eq!(
            node.get(&KeyPath::parse("c")).unwrap().value,
            Value::Bool(true)
        );
        assert_eq!(
            node.get(&KeyPath::parse("e")).unwrap().value,
            Value::Float(1.5)
        );
        assert_eq!(node.get(&KeyPath::parse("f")).unwrap().value, Value::Null);
    }

    #[test]
    fn syntax_errors_duplicates_and_aliases_point_at_the_line() {
        let err = parse(&file("bad.yaml"), "a: 1\na: 2\n").unwrap_err();
        assert_eq!(err.span.as_ref().map(|s| s.line), Some(2));
        assert!(err.to_string().starts_with("bad.yaml:2:"), "{err}");

        let err = parse(&file("bad.yaml"), "a:\n  - x\n b: [\n").unwrap_err();
        assert!(err.message.contains("not valid YAML"), "{err}");

        let aliased = parse(&file("ok.yaml"), "a: &x 1\nb: *x\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            aliased.to_json(),
            serde_json::json!({"a": 1, "b": 1}),
            "aliases resolve"
        );

        let err = parse(&file("bad.yaml"), "a: 1\n---\nb: 2\n").unwrap_err();
        assert!(err.message.contains("second YAML document"), "{err}");
    }

    #[test]
    fn merge_combines_maps_and_replaces_the_rest() {
        let defaults = parse(&file("_defaults.yaml"), "a: {x: 1, y: [1, 2]}\nb: 1\n")
            .unwrap()
            .unwrap();
        let env = parse(&file("env.yaml"), "a: {y: [3], z: 2}\nc: 3\n")
            .unwrap()
            .unwrap();
        let merged = merge(defaults, env);
        assert_eq!(
            merged.to_json(),
            serde_json::json!({"a": {"x": 1, "y": [3], "z": 2}, "b": 1, "c": 3})
        );
        let x = merged.get(&KeyPath::parse("a.x")).unwrap();
        assert_eq!(
            &*x.span.file,
            Path::new("_defaults.yaml"),
            "a default keeps its own position"
        );
    }

    #[test]
    fn paths_display_and_parse_back() {
        let path = KeyPath::parse("workloads.web.rollout.steps[1]");
        assert_eq!(path.to_string(), "workloads.web.rollout.steps[1]");
        assert_eq!(KeyPath::default().key("a.b").to_string(), "\"a.b\"");
    }
}
