//! `infra-gen init`: scaffolds a repository in place — `environments/` (defaults with one
//! workload of the kind asked, one file per environment, the schema), a `.gitlab-ci.yml` that
//! includes the deploy component, and the rendered `manifests/` — refusing to overwrite
//! anything.

use std::path::{Path, PathBuf};

use crate::cli::{InitArgs, InitKind, RenderArgs};
use crate::env::rules::is_dns_label;
use crate::error::{Error, Result};

/// The release image of this infra-gen, as the pipelines it writes pin it.
fn image() -> String {
    format!("{}:{}", env!("INFRA_GEN_IMAGE"), env!("CARGO_PKG_VERSION"))
}

/// The CI/CD components of this infra-gen's release (`<host>/<project path>/<name>@<version>`).
fn component(name: &str) -> String {
    format!(
        "{}/{name}@{}",
        env!("INFRA_GEN_COMPONENT"),
        env!("CARGO_PKG_VERSION")
    )
}

/// How long a blue-green workload keeps its previous version for an instant rollback.
const SCALE_DOWN_DELAY_MINUTES: u64 = 10;

/// Whether `init` releases the kind blue-green (and so writes a scale-down delay).
fn blue_green(kind: InitKind) -> bool {
    matches!(kind, InitKind::Web | InitKind::Tcp)
}

/// The workload of `_defaults.yaml`, for its kind.
fn workload(kind: InitKind, name: &str) -> String {
    let (kind_name, body) = match kind {
        InitKind::Web => (
            "web",
            "    port: 8080\n    replicas: 2\n    resources: {cpu: 250m, memory: 512Mi}\n    probes: {readiness: /healthz}\n",
        ),
        InitKind::Tcp => (
            "tcp",
            "    replicas: 2\n    ports: [{name: game, port: 7777}]\n    resources: {cpu: 500m, memory: 1Gi}\n    probes: {readiness: {tcp: game}}\n    # Connections to the old version are kept this long after a release.\n    tcp: {deregistrationDelaySeconds: 300}\n    shutdown: {preStopSeconds: 30, drainSeconds: 270}\n",
        ),
        InitKind::Stateful => (
            "stateful",
            "    replicas: 2\n    ports: [{name: socket, port: 3010}]\n    resources: {cpu: 500m, memory: 1Gi}\n    probes: {readiness: {tcp: socket}}\n    tcp: {deregistrationDelaySeconds: 300}\n    # Each release runs beside the old ones; players stay on theirs. Old versions are removed\n    # this long after the next release (or with `infra-gen retire`).\n    retireAfterSeconds: 86400\n",
        ),
        InitKind::Worker => (
            "worker",
            "    replicas: 1\n    resources: {cpu: 250m, memory: 512Mi}\n",
        ),
        InitKind::Cron => (
            "cron",
            "    schedule: \"0 3 * * *\"\n    timeZone: Etc/UTC\n    resources: {cpu: 250m, memory: 512Mi}\n",
        ),
    };
    let rollout = if blue_green(kind) {
        format!(
            "    # The previous version keeps running {SCALE_DOWN_DELAY_MINUTES} minutes after a release, for an instant rollback.\n    rollout: {{strategy: blue-green, scaleDownDelaySeconds: {}}}\n",
            SCALE_DOWN_DELAY_MINUTES * 60
        )
    } else {
        String::new()
    };
    format!(
        "  {name}:\n    kind: {kind_name}\n    image: ${{CI_REGISTRY_IMAGE}}:${{CI_COMMIT_SHA}}\n{body}{rollout}"
    )
}

/// What one environment's file says beyond the defaults.
fn environment(args: &InitArgs, kind: InitKind, name: &str, env: &str) -> String {
    let mut text = format!(
        "# yaml-language-server: $schema=./schema.json\ncluster: {{name: {}, region: {}, compute: fargate}}\n",
        args.cluster, args.region
    );
    if kind == InitKind::Web {
        text.push_str(&format!(
            "workloads:\n  {name}:\n    http:\n      host: {name}.{env}.example.com   # your host; certificateArn: for HTTPS\n      scheme: internet-facing\n"
        ));
    }
    text
}

/// The `finalize_delay` of the deploy component: a minute after the previous version's
/// scale-down delay has passed (nothing to scale down without blue-green).
fn finalize_delay(kind: InitKind) -> String {
    if blue_green(kind) {
        format!("{} minutes", SCALE_DOWN_DELAY_MINUTES + 1)
    } else {
        "1 minute".to_owned()
    }
}

/// `.gitlab-ci.yml`: build the application's image, check the tree, the deploy component per
/// environment (the first deploys on every push to the default branch, the others by hand).
fn pipeline(args: &InitArgs, kind: InitKind) -> String {
    let image = image();
    let mut text = format!(
        "# The delivery pipeline: build the image, check manifests/, deploy with infra-gen {version}.\n\
         # The deploy jobs come from infra-gen's CI/CD component; pin its version with the image's.\n\
         stages: [build, verify, deploy]\n\
         \n\
         build-image:\n\
         \x20 stage: build\n\
         \x20 image:\n\
         \x20   name: gcr.io/kaniko-project/executor:v1.23.2-debug\n\
         \x20   entrypoint: [\"\"]\n\
         \x20 script:\n\
         \x20   - mkdir -p /kaniko/.docker\n\
         \x20   - printf '{{\"auths\":{{\"%s\":{{\"auth\":\"%s\"}}}}}}' \"$CI_REGISTRY\" \"$(printf '%s:%s' \"$CI_REGISTRY_USER\" \"$CI_REGISTRY_PASSWORD\" | base64 | tr -d '\\n')\" > /kaniko/.docker/config.json\n\
         \x20   - /kaniko/executor --context \"$CI_PROJECT_DIR\" --dockerfile \"$CI_PROJECT_DIR/Dockerfile\" --destination \"$CI_REGISTRY_IMAGE:$CI_COMMIT_SHA\"\n\
         \n\
         # manifests/ must be what environments/ renders, and committed.\n\
         render-check:\n\
         \x20 stage: verify\n\
         \x20 image: {image}\n\
         \x20 needs: []\n\
         \x20 script:\n\
         \x20   - infra-gen render --check\n\
         \n\
         include:\n",
        version = env!("CARGO_PKG_VERSION"),
    );
    for (i, env) in args.envs.iter().enumerate() {
        let when = if i == 0 { "on_success" } else { "manual" };
        text.push_str(&format!(
            "  - component: {}\n    inputs:\n      environment: {env}\n      image: {image}\n      when: {when}\n",
            component("deploy")
        ));
        if i > 0 {
            text.push_str("      tags: true\n");
        }
        text.push_str(&format!(
            "      finalize_delay: {}      # at least rollout.scaleDownDelaySeconds\n",
            finalize_delay(kind)
        ));
        text.push_str("      needs: [build-image, render-check]\n");
    }
    text
}

/// Runs the command.
pub fn run(root: &Path, args: &InitArgs) -> Result<()> {
    let project = match &args.project {
        Some(p) => p.clone(),
        // `absolute`, not `canonicalize`: the directory need not exist yet (`--dry-run`).
        None => std::path::absolute(root)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "app".into()),
    };
    let slug = crate::env::slugify(&project);
    if slug.is_empty() {
        return Err(Error::Usage(format!(
            "project name {project:?} has no letter or digit: pass --project NAME (the GitLab project path)"
        )));
    }
    let name = args.name.clone().unwrap_or_else(|| slug.clone());
    if !is_dns_label(&name) {
        return Err(Error::Usage(format!(
            "workload name {name:?} is not a DNS-1123 label: pass --name with lowercase letters, digits and -"
        )));
    }
    for env in &args.envs {
        if !is_dns_label(env) || env.starts_with('_') {
            return Err(Error::Usage(format!(
                "environment name {env:?} is not a DNS-1123 label: use lowercase letters, digits and -, e.g. staging"
            )));
        }
    }
    let kind = args.kind;
    let mut files: Vec<(PathBuf, String)> = vec![(
        PathBuf::from("environments/_defaults.yaml"),
        format!(
            "# yaml-language-server: $schema=./schema.json\n# Settings every environment shares; environments/<name>.yaml adds and overrides.\nproject: {{name: {project}, id: {id}}}\n{namespace}registry: {{server: {registry}, pullSecret: gitlab-registry}}\nworkloads:\n{workload}",
            id = args.project_id,
            namespace = if args.envs.len() > 1 {
                format!(
                    "# The environments share cluster {}: one namespace each ({slug}-{}-<environment>).\nnamespace: {{suffix: env}}\n",
                    args.cluster, args.project_id
                )
            } else {
                String::new()
            },
            registry = args.registry,
            workload = workload(kind, &name),
        ),
    )];
    for env in &args.envs {
        files.push((
            PathBuf::from(format!("environments/{env}.yaml")),
            environment(args, kind, &name, env),
        ));
    }
    files.push((
        PathBuf::from("environments/schema.json"),
        format!("{}\n", super::schema::schema_text()),
    ));
    files.push((PathBuf::from(".gitlab-ci.yml"), pipeline(args, kind)));

    let existing: Vec<String> = files
        .iter()
        .map(|(path, _)| path)
        .chain(std::iter::once(&PathBuf::from("manifests")))
        .filter(|path| root.join(path).exists())
        .map(|path| path.display().to_string())
        .collect();
    if args.dry_run || !existing.is_empty() {
        for (path, text) in &files {
            crate::outln!("--- {} ({} lines)", path.display(), text.lines().count());
            if args.dry_run {
                crate::out!("{text}");
            }
        }
        crate::outln!("--- manifests/<environment>/ (rendered)");
        if !existing.is_empty() {
            return Err(Error::Usage(format!(
                "refusing to overwrite {} in {}: init scaffolds a repository without them (move them away, or add an environment by hand)",
                existing.join(", "),
                root.display()
            )));
        }
        return Ok(());
    }
    for (path, text) in &files {
        let full = root.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Write {
                path: parent.display().to_string(),
                source,
            })?;
        }
        std::fs::write(&full, text).map_err(|source| Error::Write {
            path: full.display().to_string(),
            source,
        })?;
        crate::outln!("wrote   {}", path.display());
    }
    super::render::run(
        root,
        &RenderArgs {
            envs: Vec::new(),
            instance: None,
            check: false,
            output: None,
        },
    )?;
    crate::outln!(
        "next: commit everything; set the CI/CD variables AWS_ROLE_ARN (a role the job's OIDC token may assume) and the secrets your workload reads; add a Dockerfile; `infra-gen plan` shows what each environment runs"
    );
    Ok(())
}
