//! `infra-gen rollback`: every blue-green workload back to its previous slot (instant while
//! it still runs; scaled up, waited for and switched after `finalize`).

use std::path::Path;

use crate::cli::RollbackArgs;
use crate::cluster::lease::{self, Lease};
use crate::error::Result;
use crate::rollout::bluegreen::BlueGreen;

use super::target::{self, Variables};

/// Runs the command.
pub async fn run(root: &Path, args: &RollbackArgs) -> Result<()> {
    let session = target::session(root, &args.target, true, Variables::Optional).await?;
    if session.desired.blue_green.is_empty() {
        println!(
            "{} has no blue-green workload; roll back a rolling one by deploying the previous commit",
            session.env.name
        );
        return Ok(());
    }
    let by = lease::identity();
    let lock = Lease::acquire(&session.cluster, &by)
        .await
        .map_err(crate::rollout::RolloutError::from)?;
    let mut result = Ok(());
    for spec in &session.desired.blue_green {
        let bg = BlueGreen {
            cluster: &session.cluster,
            spec,
            progress: &session.progress,
            timeout: args.timeout,
            by: &by,
            revision: &session.desired.revision,
        };
        if let Err(e) = bg.rollback().await {
            result = Err(e);
            break;
        }
    }
    session.progress.finish();
    lock.release().await?;
    result?;
    println!("{}: rolled back", session.env.name);
    Ok(())
}
