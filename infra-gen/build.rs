//! Build facts for `infra-gen --version` and for what `infra-gen init` writes:
//!
//! - `INFRA_GEN_COMMIT`: the commit built — `$INFRA_GEN_COMMIT` (the release job sets it from
//!   `$CI_COMMIT_SHA`), else `git rev-parse HEAD` when built in a checkout, else `unknown`.
//!   (`CI_COMMIT_SHA` itself is not read: a local run of a pipeline job sets it, and the crate
//!   would be built again for the same commit);
//! - `INFRA_GEN_IMAGE`: the release image's repository (the release pipeline sets it to
//!   `$CI_REGISTRY_IMAGE/infra-gen`), written into the pipelines `init` scaffolds;
//! - `INFRA_GEN_COMPONENT`: the CI/CD component's path (`$CI_SERVER_FQDN/$CI_PROJECT_PATH`).

use std::process::Command;

fn main() {
    for variable in ["INFRA_GEN_COMMIT", "INFRA_GEN_IMAGE", "INFRA_GEN_COMPONENT"] {
        println!("cargo:rerun-if-env-changed={variable}");
    }
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let commit = from_env("INFRA_GEN_COMMIT")
        .or_else(git_head)
        .map(|c| c.chars().take(12).collect::<String>())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=INFRA_GEN_COMMIT={commit}");
    println!(
        "cargo:rustc-env=INFRA_GEN_IMAGE={}",
        from_env("INFRA_GEN_IMAGE")
            .unwrap_or_else(|| "registry.gitlab.example.com/games/controltower/infra-gen".into())
    );
    println!(
        "cargo:rustc-env=INFRA_GEN_COMPONENT={}",
        from_env("INFRA_GEN_COMPONENT")
            .unwrap_or_else(|| "gitlab.example.com/games/controltower".into())
    );
}

/// The checkout's commit; the build runs again when HEAD moves.
fn git_head() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    for path in ["HEAD", "packed-refs"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(file) = git(&["rev-parse", "--git-path", &reference])
    {
        println!("cargo:rerun-if-changed={file}");
    }
    Some(head)
}
