//! `infra-gen destroy`: deletes a review instance's namespace. Other environments are
//! refused: deleting production must never be one mistyped CI job away.
//!
//! The load balancers go first: the Ingresses and NLB Services are deleted, and the AWS
//! Load Balancer Controller given time to remove its ALBs, NLBs and TargetGroupBindings
//! itself; infra-gen never deletes what the controller owns. Then the namespace.

use std::path::Path;

use crate::cli::TargetArgs;
use crate::cluster::{Kind, name_of};
use crate::error::{Error, Result};

use super::target::{self, Variables};

/// How long the controller may take to remove its load balancers.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

async fn release_load_balancers(cluster: &crate::cluster::Cluster) -> Result<()> {
    for ingress in cluster.list(Kind::Ingress, "", None).await? {
        cluster.delete(Kind::Ingress, name_of(&ingress)).await?;
    }
    for service in cluster.list(Kind::Service, "", None).await? {
        if service
            .pointer("/spec/type")
            .and_then(serde_json::Value::as_str)
            == Some("LoadBalancer")
        {
            cluster.delete(Kind::Service, name_of(&service)).await?;
        }
    }
    let started = std::time::Instant::now();
    loop {
        let bindings = match cluster.list(Kind::TargetGroupBinding, "", None).await {
            Ok(b) => b,
            // No controller: nothing to wait for.
            Err(e) if e.code() == Some(404) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if bindings.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= RELEASE_WAIT {
            eprintln!(
                "warning: the AWS Load Balancer Controller still has {} TargetGroupBinding(s) after {:?}; deleting the namespace anyway (its finalizers let the controller finish)",
                bindings.len(),
                RELEASE_WAIT
            );
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Runs the command.
pub async fn run(root: &Path, args: &TargetArgs) -> Result<()> {
    let (env, desired) = target::load(root, args, true, Variables::Optional)?;
    if !env.spec.review {
        return Err(Error::Usage(format!(
            "destroy only deletes review environments; {} is not one (review: true). Delete its namespace by hand if you really mean it",
            env.name
        )));
    }
    let cluster = target::connect(&env, &desired, args).await?;
    release_load_balancers(&cluster).await?;
    cluster.delete(Kind::Namespace, &desired.namespace).await?;
    crate::outln!(
        "deleted namespace {} (review environment {} instance {})",
        desired.namespace,
        env.name,
        env.instance.as_deref().unwrap_or("-")
    );
    Ok(())
}
