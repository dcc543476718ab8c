//! Rendering: environment → Kubernetes objects. minijinja templates (embedded, or overridden
//! from the project's `templates/` folder) lay out each object from [`context`]; every
//! document is parsed back and checked ([`check`]) before anything is written, so a template
//! bug is an error, never a broken file.

pub mod capacity;
pub mod check;
pub mod context;
pub mod pipeline;

use std::path::Path;

use minijinja::{AutoEscape, UndefinedBehavior, Value, context};
use serde_json::Value as Json;

use crate::env::Environment;
use crate::env::model::TrafficProvider;
use crate::env::yaml;
use context::{EnvContext, SLOTS, WorkloadContext};

/// The embedded templates, by file name. A file of the same name in the project's
/// `templates/` folder replaces one.
pub const TEMPLATES: [(&str, &str); 15] = [
    ("_pod.yaml.j2", include_str!("templates/_pod.yaml.j2")),
    (
        "namespace.yaml.j2",
        include_str!("templates/namespace.yaml.j2"),
    ),
    (
        "serviceaccount.yaml.j2",
        include_str!("templates/serviceaccount.yaml.j2"),
    ),
    (
        "deployment.yaml.j2",
        include_str!("templates/deployment.yaml.j2"),
    ),
    ("cronjob.yaml.j2", include_str!("templates/cronjob.yaml.j2")),
    ("service.yaml.j2", include_str!("templates/service.yaml.j2")),
    (
        "service-slot.yaml.j2",
        include_str!("templates/service-slot.yaml.j2"),
    ),
    (
        "service-preview.yaml.j2",
        include_str!("templates/service-preview.yaml.j2"),
    ),
    ("ingress.yaml.j2", include_str!("templates/ingress.yaml.j2")),
    (
        "httproute.yaml.j2",
        include_str!("templates/httproute.yaml.j2"),
    ),
    (
        "httproute-preview.yaml.j2",
        include_str!("templates/httproute-preview.yaml.j2"),
    ),
    ("hpa.yaml.j2", include_str!("templates/hpa.yaml.j2")),
    ("pdb.yaml.j2", include_str!("templates/pdb.yaml.j2")),
    (
        "statefulset.yaml.j2",
        include_str!("templates/statefulset.yaml.j2"),
    ),
    (
        "service-headless.yaml.j2",
        include_str!("templates/service-headless.yaml.j2"),
    ),
];

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template file could not be read.
    #[error("cannot read template {path}: {source}")]
    ReadTemplate {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A template does not compile or fails while rendering.
    #[error("template {template} (environment {environment}): {message}")]
    Template {
        /// Template name.
        template: String,
        /// Environment being rendered.
        environment: String,
        /// minijinja's message, with the template line.
        message: String,
    },
    /// A template produced something that is not a valid object.
    #[error(
        "template {template} rendered an invalid object for environment {environment}{object}: {message}"
    )]
    InvalidObject {
        /// Template name.
        template: String,
        /// Environment being rendered.
        environment: String,
        /// ` (Kind/name)` when known.
        object: String,
        /// What is wrong.
        message: String,
    },
}

/// One rendered Kubernetes object.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// e.g. `Deployment`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// The object.
    pub body: Json,
    /// An extra header line explaining live state filled in by `apply`.
    pub note: Option<&'static str>,
}

impl Manifest {
    /// `deployment-controltower.yaml`.
    pub fn file_name(&self) -> String {
        format!("{}-{}.yaml", self.kind.to_ascii_lowercase(), self.name)
    }
}

const BLUE_GREEN_NOTE: &str = "Blue-green: `infra-gen apply` fills in the live slot (names, selectors, weights) from the cluster.";
const STATEFUL_NOTE: &str = "Stateful: `infra-gen apply` makes each version `<name>-<version>` and points new connections (selector, weights) at the newest.";

/// Renders environments with a fixed set of templates.
pub struct Renderer {
    jinja: minijinja::Environment<'static>,
    /// Templates replaced by the project's own.
    pub overridden: Vec<String>,
}

impl Renderer {
    /// The embedded templates, with those found in `templates_dir` (if it exists) instead.
    pub fn new(templates_dir: Option<&Path>) -> Result<Self, RenderError> {
        let mut jinja = minijinja::Environment::new();
        jinja.set_undefined_behavior(UndefinedBehavior::Strict);
        // minijinja would JSON-escape every output of a `.yaml.j2` template; templates quote
        // explicitly with `| tojson` instead, so `false` stays a boolean.
        jinja.set_auto_escape_callback(|_| AutoEscape::None);
        let mut overridden = Vec::new();
        for (name, source) in TEMPLATES {
            let custom = templates_dir.map(|d| d.join(name)).filter(|p| p.is_file());
            let added = match custom {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|source| {
                        RenderError::ReadTemplate {
                            path: path.display().to_string(),
                            source,
                        }
                    })?;
                    overridden.push(name.to_owned());
                    jinja.add_template_owned(name, text)
                }
                None => jinja.add_template(name, source),
            };
            added.map_err(|e| RenderError::Template {
                template: name.to_owned(),
                environment: "-".into(),
                message: format!("{e:#}"),
            })?;
        }
        Ok(Self { jinja, overridden })
    }

    /// Every object of an environment, checked.
    pub fn render(&self, env: &Environment) -> Result<Vec<Manifest>, RenderError> {
        let ctx = context::build(env);
        let mut out = vec![self.one(env, "namespace.yaml.j2", &ctx, None, None, None)?];
        for w in &ctx.workloads {
            let note = w.blue_green.then_some(BLUE_GREEN_NOTE);
            out.push(self.one(env, "serviceaccount.yaml.j2", &ctx, Some(w), None, None)?);
            if w.kind == "cron" {
                out.push(self.one(env, "cronjob.yaml.j2", &ctx, Some(w), None, None)?);
                continue;
            }
            if w.stateful {
                let note = Some(STATEFUL_NOTE);
                out.push(self.one(env, "statefulset.yaml.j2", &ctx, Some(w), None, note)?);
                out.push(self.one(env, "service-headless.yaml.j2", &ctx, Some(w), None, note)?);
                if w.load_balancer || w.http.is_some() {
                    out.push(self.one(env, "service.yaml.j2", &ctx, Some(w), None, note)?);
                }
                if w.http.is_some() {
                    out.push(self.one(env, "ingress.yaml.j2", &ctx, Some(w), None, note)?);
                }
                if w.autoscaling.is_some() {
                    out.push(self.one(env, "hpa.yaml.j2", &ctx, Some(w), None, note)?);
                }
                out.push(self.one(env, "pdb.yaml.j2", &ctx, Some(w), None, None)?);
                continue;
            }
            out.push(self.one(env, "deployment.yaml.j2", &ctx, Some(w), None, note)?);
            if matches!(w.kind, "web" | "tcp") {
                out.push(self.one(env, "service.yaml.j2", &ctx, Some(w), None, note)?);
            }
            if w.blue_green {
                for slot in SLOTS {
                    out.push(self.one(
                        env,
                        "service-slot.yaml.j2",
                        &ctx,
                        Some(w),
                        Some(slot),
                        None,
                    )?);
                }
                out.push(self.one(env, "service-preview.yaml.j2", &ctx, Some(w), None, note)?);
            }
            if w.http.is_some() && env.spec.traffic.provider == TrafficProvider::GatewayApi {
                out.push(self.one(env, "httproute.yaml.j2", &ctx, Some(w), None, note)?);
                if w.blue_green && w.preview_host.is_some() {
                    out.push(self.one(
                        env,
                        "httproute-preview.yaml.j2",
                        &ctx,
                        Some(w),
                        None,
                        None,
                    )?);
                }
            } else if w.http.is_some() {
                out.push(self.one(env, "ingress.yaml.j2", &ctx, Some(w), None, note)?);
            }
            if w.autoscaling.is_some() {
                out.push(self.one(env, "hpa.yaml.j2", &ctx, Some(w), None, note)?);
            }
            if w.pdb {
                out.push(self.one(env, "pdb.yaml.j2", &ctx, Some(w), None, None)?);
            }
        }
        for body in capacity::objects(env, &ctx) {
            let kind = body["kind"].as_str().unwrap_or_default().to_owned();
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            check::object(&body, &ctx.namespace).map_err(|message| RenderError::InvalidObject {
                template: "-".into(),
                environment: env.name.clone(),
                object: format!(" ({kind}/{name})"),
                message,
            })?;
            out.push(Manifest {
                kind,
                name,
                body,
                note: None,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &out {
            if !seen.insert(m.file_name()) {
                return Err(RenderError::InvalidObject {
                    template: "-".into(),
                    environment: env.name.clone(),
                    object: format!(" ({}/{})", m.kind, m.name),
                    message: "two objects of the same kind and name; rename a workload".into(),
                });
            }
        }
        check::environment_rules(env, &out).map_err(|message| RenderError::InvalidObject {
            template: "-".into(),
            environment: env.name.clone(),
            object: String::new(),
            message,
        })?;
        Ok(out)
    }

    fn one(
        &self,
        env: &Environment,
        template: &str,
        ctx: &EnvContext,
        workload: Option<&WorkloadContext>,
        slot: Option<&str>,
        note: Option<&'static str>,
    ) -> Result<Manifest, RenderError> {
        let template_error = |e: minijinja::Error| {
            let line = e.line().and_then(|n| {
                self.jinja
                    .get_template(template)
                    .ok()?
                    .source()
                    .lines()
                    .nth(n - 1)
                    .map(str::trim)
                    .map(str::to_owned)
            });
            RenderError::Template {
                template: template.to_owned(),
                environment: env.name.clone(),
                message: match line {
                    Some(text) => format!("{e}; the line: {text}"),
                    None => e.to_string(),
                },
            }
        };
        let text = self
            .jinja
            .get_template(template)
            .and_then(|t| {
                t.render(context! {
                    env => Value::from(minijinja::value::Serde(ctx)),
                    w => Value::from(minijinja::value::Serde(workload)),
                    slot => slot,
                })
            })
            .map_err(template_error)?;
        let invalid = |object: String, message: String| RenderError::InvalidObject {
            template: template.to_owned(),
            environment: env.name.clone(),
            object,
            message,
        };
        let file: std::sync::Arc<Path> = std::sync::Arc::from(Path::new(template));
        let node = yaml::parse(&file, &text)
            .map_err(|d| {
                invalid(
                    String::new(),
                    format!("{d} (in the rendered text:\n{text})"),
                )
            })?
            .ok_or_else(|| invalid(String::new(), "the template rendered nothing".into()))?;
        let body = node.to_json();
        let kind = body
            .get("kind")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = body
            .pointer("/metadata/name")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        if kind.is_empty() || name.is_empty() {
            return Err(invalid(
                String::new(),
                "the object has no kind or no metadata.name".into(),
            ));
        }
        check::object(&body, &ctx.namespace)
            .map_err(|message| invalid(format!(" ({kind}/{name})"), message))?;
        Ok(Manifest {
            kind,
            name,
            body,
            note,
        })
    }
}
