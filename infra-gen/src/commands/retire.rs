//! `infra-gen retire`: removes an old version of a stateful workload — its StatefulSet and
//! headless Service, after its load-balancer targets drained. The version that takes new
//! connections is refused.

use std::path::Path;
use std::time::Duration;

use crate::cli::RetireArgs;
use crate::cluster::lease::{self, Lease};
use crate::error::{Error, Result};
use crate::rollout::RolloutError;
use crate::rollout::stateful::departed_spec;

use super::target::{self, Variables};

/// Runs the command.
pub async fn run(root: &Path, args: &RetireArgs) -> Result<()> {
    let mut session = target::session(root, &args.target, true, Variables::Optional).await?;
    session.with_capacity().await?;
    target::with_lb(&mut session, &args.lb).await;
    let departed;
    let spec = match session
        .desired
        .stateful
        .iter()
        .find(|s| s.name == args.workload)
    {
        Some(spec) => spec,
        // Left the tree while versions of it still run: retire them from what runs.
        None => match departed_spec(&session.cluster, &args.workload)
            .await
            .map_err(Error::from)?
        {
            Some(spec) => {
                departed = spec;
                &departed
            }
            None => {
                let names: Vec<&str> = session
                    .desired
                    .stateful
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                return Err(Error::Usage(format!(
                    "{} has no stateful workload {:?} (stateful workloads: {}), and no version of one by that name runs in {}",
                    session.env.name,
                    args.workload,
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    },
                    session.cluster.namespace()
                )));
            }
        },
    };
    let by = lease::identity();
    let lock = Lease::acquire(&session.cluster, &by)
        .await
        .map_err(RolloutError::from)?;
    let result = session
        .stateful(spec, Duration::from_secs(600), &by)
        .retire(&crate::env::slugify(&args.version))
        .await;
    session.progress.finish();
    lock.release().await?;
    Ok(result?)
}
