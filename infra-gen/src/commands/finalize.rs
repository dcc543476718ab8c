//! `infra-gen finalize`: scale the previous slot of every blue-green workload to 0 once its
//! scale-down delay has passed (`--now`: at once). The delayed CI job runs it.

use std::path::Path;
use std::time::Duration;

use crate::cli::FinalizeArgs;
use crate::error::Result;

use super::target::{self, SlotOp, Variables};

/// Runs the command.
pub async fn run(root: &Path, args: &FinalizeArgs) -> Result<()> {
    let mut session = target::session(root, &args.target, true, Variables::Optional).await?;
    session.with_capacity().await?;
    target::with_lb(&mut session, &args.lb).await;
    session
        .each_blue_green(SlotOp::Finalize { now: args.now }, Duration::from_secs(600))
        .await
}
