//! Environment files: `environments/*.yaml`, each deep-merged over `_defaults.yaml`,
//! checked structurally ([`schema`]) and by the deployment rules ([`rules`]), with every
//! problem reported at its file, line and column ([`diagnostic`]).

pub mod diagnostic;
pub mod fargate;
pub mod model;
pub mod rules;
pub mod schema;
pub mod yaml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use diagnostic::{Diagnostic, Span};
use model::{EnvironmentSpec, NamespaceSuffix};
use yaml::{KeyPath, Node};

/// The defaults file merged under every environment.
pub const DEFAULTS_FILE: &str = "_defaults.yaml";

/// One environment, loaded and valid.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Its name: the file stem (`staging`).
    pub name: String,
    /// Its file.
    pub file: PathBuf,
    /// The defaults file merged under it, if any.
    pub defaults_file: Option<PathBuf>,
    /// The typed, merged content.
    pub spec: EnvironmentSpec,
    /// The merged document with positions, for messages.
    pub node: Node,
    /// The review instance (`mr-42`) it is rendered for, if any.
    pub instance: Option<String>,
}

impl Environment {
    /// The namespace: `<project>-<id>[-<environment>][-<instance>]`.
    pub fn namespace(&self) -> String {
        let mut ns = format!(
            "{}-{}",
            slugify(&self.spec.project.name),
            self.spec.project.id
        );
        if self.spec.namespace.suffix == NamespaceSuffix::Env {
            ns.push('-');
            ns.push_str(&self.name);
        }
        if let Some(instance) = &self.instance {
            ns.push('-');
            ns.push_str(instance);
        }
        ns
    }

    /// The position of a dotted path, e.g. `workloads.web.replicas`: the value, except for a
    /// whole section (a mapping), whose key line is where a reader looks.
    pub fn span(&self, path: &str) -> Span {
        let path = KeyPath::parse(path);
        match (self.node.get(&path), self.node.key_of(&path)) {
            (
                Some(Node {
                    value: yaml::Value::Map(_),
                    ..
                }),
                Some(key),
            ) => key.span.clone(),
            _ => self.node.span_for(&path),
        }
    }

    /// The position of the key of a dotted path (for messages about a name).
    pub fn key_span(&self, path: &str) -> Span {
        let path = KeyPath::parse(path);
        match self.node.key_of(&path) {
            Some(key) => key.span.clone(),
            None => self.node.span_for(&path),
        }
    }

    /// Whether the file (or its defaults) sets a dotted path, e.g. `workloads.web.http.scheme`.
    pub fn has(&self, path: &str) -> bool {
        self.node.get(&KeyPath::parse(path)).is_some()
    }

    /// Kubernetes version to validate against (`cluster.version`, default 1.33).
    pub fn kubernetes_version(&self) -> &str {
        self.spec.cluster.version.as_deref().unwrap_or("1.33")
    }
}

/// Lowercases and replaces runs of anything but letters and digits by one `-`.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// What loading found: the valid environments, and every diagnostic (errors and warnings).
#[derive(Debug, Default)]
pub struct Loaded {
    /// Environments without errors, in file-name order.
    pub environments: Vec<Environment>,
    /// Every problem found, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Loads every environment file of `environments_dir`. `instance` is the review instance
/// (`mr-42`) for review environments.
pub fn load(environments_dir: &Path, instance: Option<&str>) -> Loaded {
    let entries = match std::fs::read_dir(environments_dir) {
        Ok(entries) => entries,
        Err(error) => {
            let mut loaded = Loaded::default();
            loaded.diagnostics.push(
                Diagnostic::error(
                    None,
                    "",
                    format!("cannot read {}: {error}", environments_dir.display()),
                )
                .with_hint("run infra-gen from the repository root, or pass --root"),
            );
            return loaded;
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    let mut sources = Vec::with_capacity(paths.len());
    let mut unreadable = Vec::new();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => sources.push((path, text)),
            Err(e) => unreadable.push(Diagnostic::error(
                None,
                "",
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }
    let mut loaded = load_sources(sources, instance);
    loaded.diagnostics.splice(0..0, unreadable);
    if loaded.environments.is_empty() && !loaded.has_errors() {
        loaded.diagnostics.push(
            Diagnostic::error(
                None,
                "",
                format!("{} holds no environment file", environments_dir.display()),
            )
            .with_hint("copy an example, e.g. environments/staging.yaml from the README"),
        );
    }
    loaded
}

/// Loads environments from `(path, text)` pairs (one of them may be `_defaults.yaml`).
/// Nothing is read from disk: tests and fuzzing feed texts directly.
pub fn load_sources(sources: Vec<(PathBuf, String)>, instance: Option<&str>) -> Loaded {
    let mut loaded = Loaded::default();
    let is_defaults = |p: &Path| p.file_name().and_then(|n| n.to_str()) == Some(DEFAULTS_FILE);
    let defaults = match sources.iter().find(|(p, _)| is_defaults(p)) {
        Some((path, text)) => match parse_text(path, text) {
            Ok(node) => node,
            Err(d) => {
                loaded.diagnostics.push(d);
                return loaded;
            }
        },
        None => None,
    };
    let schema = schema::json_schema();
    for (file, text) in &sources {
        if is_defaults(file) {
            continue;
        }
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        if stem.starts_with('_') {
            loaded.diagnostics.push(
                Diagnostic::error(
                    None,
                    "",
                    format!(
                        "{}: only {DEFAULTS_FILE} may start with `_`",
                        file.display()
                    ),
                )
                .with_hint("rename it; every other file is an environment"),
            );
            continue;
        }
        match load_one(file, text, &stem, defaults.clone(), &schema, instance) {
            Ok((env, warnings)) => {
                loaded.diagnostics.extend(warnings);
                loaded.environments.push(env);
            }
            Err(diagnostics) => loaded.diagnostics.extend(diagnostics),
        }
    }
    loaded
        .diagnostics
        .extend(rules::check_project(&loaded.environments));
    loaded
}

fn parse_text(path: &Path, text: &str) -> Result<Option<Node>, Diagnostic> {
    let file: Arc<Path> = Arc::from(diagnostic::display_path(path).as_path());
    yaml::parse(&file, text)
}

fn load_one(
    file: &Path,
    text: &str,
    name: &str,
    defaults: Option<Node>,
    schema: &serde_json::Value,
    instance: Option<&str>,
) -> Result<(Environment, Vec<Diagnostic>), Vec<Diagnostic>> {
    let node = match parse_text(file, text) {
        Ok(Some(node)) => node,
        Ok(None) => {
            return Err(vec![
                Diagnostic::error(None, "", format!("{} is empty", file.display()))
                    .with_hint("an environment needs at least project, cluster and workloads"),
            ]);
        }
        Err(d) => return Err(vec![d]),
    };
    let defaults_file = defaults.as_ref().map(|d| d.span.file.to_path_buf());
    let node = match defaults {
        Some(defaults) => yaml::merge(defaults, node),
        None => node,
    };
    let structural = schema::validate(&node, schema);
    if !structural.is_empty() {
        return Err(structural);
    }
    let spec: EnvironmentSpec = serde_path_to_error::deserialize(node.to_json()).map_err(|e| {
        let path = KeyPath::parse(&e.path().to_string());
        vec![Diagnostic::error(
            Some(node.span_for(&path)),
            path.to_string(),
            e.inner().to_string(),
        )]
    })?;
    // Only review environments have instances; `rules` reports an instance given to another.
    let env_instance = instance.filter(|_| spec.review).map(str::to_owned);
    let env = Environment {
        name: name.to_owned(),
        file: file.to_path_buf(),
        defaults_file,
        spec,
        node,
        instance: env_instance,
    };
    let diagnostics = rules::check_environment(&env, instance);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(diagnostics);
    }
    Ok((env, diagnostics))
}
