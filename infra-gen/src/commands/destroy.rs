//! `infra-gen destroy`: deletes a review instance's namespace. Other environments are
//! refused: deleting production must never be one mistyped CI job away.

use std::path::Path;

use crate::cli::TargetArgs;
use crate::cluster::Kind;
use crate::error::{Error, Result};

use super::target::{self, Variables};

/// Runs the command.
pub async fn run(root: &Path, args: &TargetArgs) -> Result<()> {
    let (env, desired) = target::load(root, args, true, Variables::Optional)?;
    if !env.spec.review {
        return Err(Error::Usage(format!(
            "destroy only deletes review environments; {} is not one (review: true). Delete its namespace by hand if you really mean it",
            env.name
        )));
    }
    let cluster = target::connect(&env, &desired, args.kubeconfig.as_deref()).await?;
    cluster.delete(Kind::Namespace, &desired.namespace).await?;
    println!(
        "deleted namespace {} (review environment {} instance {})",
        desired.namespace,
        env.name,
        env.instance.as_deref().unwrap_or("-")
    );
    Ok(())
}
