//! `infra-gen render`: writes `manifests/<env>/`, or with `--check` compares the committed
//! tree with what the environment files render and asks git what is not committed.

use std::collections::BTreeMap;
use std::path::Path;

use crate::cli::RenderArgs;
use crate::error::{Error, Result};
use crate::render::Renderer;
use crate::tree::{self, EnvFiles};

/// The renderer of a project: embedded templates, or those of `<root>/templates/`.
pub fn renderer(root: &Path) -> Result<Renderer> {
    Ok(Renderer::new(Some(&root.join("templates")))?)
}

/// Runs the command.
pub fn run(root: &Path, args: &RenderArgs) -> Result<()> {
    if args.instance.is_some() && args.output.is_none() && !args.check {
        return Err(Error::Usage(
            "review instances are rendered on the fly, not into manifests/: add --output DIR"
                .into(),
        ));
    }
    let environments = super::load_environments(root, &args.envs, args.instance.as_deref())?;
    let (errors, warnings): (Vec<_>, Vec<_>) = crate::render::pipeline::check(root, &environments)
        .into_iter()
        .partition(crate::env::diagnostic::Diagnostic::is_error);
    for warning in &warnings {
        eprintln!("{warning}");
    }
    if !errors.is_empty() {
        return Err(Error::Environments(crate::env::diagnostic::Diagnostics(
            errors,
        )));
    }
    let renderer = renderer(root)?;
    if !renderer.overridden.is_empty() {
        eprintln!(
            "using project templates: {}",
            renderer.overridden.join(", ")
        );
    }
    let mut rendered: BTreeMap<String, EnvFiles> = BTreeMap::new();
    for env in &environments {
        if env.spec.review && env.instance.is_none() {
            eprintln!(
                "skipping review environment {}: it is rendered per merge request (--instance mr-N --output DIR)",
                env.name
            );
            continue;
        }
        let manifests = renderer.render(env)?;
        rendered.insert(env.name.clone(), tree::files(env, &manifests)?);
    }
    let manifests_dir = args
        .output
        .clone()
        .unwrap_or_else(|| root.join("manifests"));
    let all = args.envs.is_empty() && args.output.is_none();
    if args.check {
        return check(root, &manifests_dir, &rendered, all);
    }
    let report = tree::write(&manifests_dir, &rendered, all)?;
    for path in &report.written {
        crate::outln!("wrote   {}", path.display());
    }
    for path in &report.removed {
        crate::outln!("removed {}", path.display());
    }
    crate::outln!(
        "{} environment(s): {} file(s) written, {} unchanged, {} removed",
        rendered.len(),
        report.written.len(),
        report.unchanged,
        report.removed.len()
    );
    Ok(())
}

fn check(
    root: &Path,
    manifests_dir: &Path,
    rendered: &BTreeMap<String, EnvFiles>,
    all: bool,
) -> Result<()> {
    let drift = tree::check(manifests_dir, rendered, all)?;
    let mut problems = 0;
    for (path, diff) in &drift.differing {
        crate::outln!("differs: {}\n{diff}", path.display());
        problems += 1;
    }
    for path in &drift.missing {
        crate::outln!("missing: {}", path.display());
        problems += 1;
    }
    for path in &drift.stale {
        crate::outln!("stale:   {} (no longer rendered)", path.display());
        problems += 1;
    }
    // Editors complete and check environment files against the committed schema: it must be
    // this binary's (it goes stale when infra-gen is upgraded).
    let schema = root.join("environments/schema.json");
    if let Ok(committed) = std::fs::read_to_string(&schema)
        && committed.trim_end() != super::schema::schema_text().trim_end()
    {
        crate::outln!(
            "differs: {} is not the schema of this infra-gen ({}): run `infra-gen schema > environments/schema.json` and commit it",
            schema.display(),
            env!("CARGO_PKG_VERSION")
        );
        problems += 1;
    }
    let uncommitted = tree::uncommitted(root, &["environments/", "manifests/", "templates/"]);
    match &uncommitted {
        Some(entries) => {
            for (path, what) in entries {
                crate::outln!("not committed: {path} ({what})");
            }
        }
        None => crate::outln!("note: not a git repository; skipped the committed-files check"),
    }
    let uncommitted = uncommitted.map_or(0, |e| e.len());
    match (problems, uncommitted) {
        (0, 0) => {
            crate::outln!(
                "manifests/ matches the environment files ({} environment(s))",
                rendered.len()
            );
            Ok(())
        }
        (0, n) => Err(Error::Check(format!(
            "the tree matches the environment files, but {n} file(s) are not committed: commit them"
        ))),
        (p, _) => Err(Error::Check(format!(
            "{p} file(s) of manifests/ do not match the environment files: run `infra-gen render` and commit the result"
        ))),
    }
}
