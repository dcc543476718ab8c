//! `infra-gen finalize`: scale the previous slot of every blue-green workload to 0 once its
//! scale-down delay has passed (`--now`: at once). The delayed CI job runs it.

use std::path::Path;

use crate::cli::FinalizeArgs;
use crate::cluster::lease::{self, Lease};
use crate::error::Result;
use crate::rollout::bluegreen::BlueGreen;

use super::target::{self, Variables};

/// Runs the command.
pub async fn run(root: &Path, args: &FinalizeArgs) -> Result<()> {
    let session = target::session(root, &args.target, true, Variables::Optional).await?;
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
            timeout: std::time::Duration::from_secs(600),
            by: &by,
            revision: &session.desired.revision,
        };
        if let Err(e) = bg.finalize(args.now).await {
            result = Err(e);
            break;
        }
    }
    session.progress.finish();
    lock.release().await?;
    Ok(result?)
}
