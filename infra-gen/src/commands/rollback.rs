//! `infra-gen rollback`: every blue-green workload back to the release that was live before
//! (from the release history; instant while its slot still runs, sized to the live load,
//! waited for and switched after `finalize`).

use std::path::Path;

use crate::cli::RollbackArgs;
use crate::error::Result;

use super::target::{self, SlotOp, Variables};

/// Runs the command.
pub async fn run(root: &Path, args: &RollbackArgs) -> Result<()> {
    let mut session = target::session(root, &args.target, true, Variables::Optional).await?;
    session.with_capacity().await?;
    target::with_lb(&mut session, &args.lb).await;
    if session.desired.blue_green.is_empty() && session.desired.stateful.is_empty() {
        crate::outln!(
            "{} has no blue-green or stateful workload; roll back a rolling one by deploying the previous commit",
            session.env.name
        );
        return Ok(());
    }
    session
        .each_blue_green(
            SlotOp::Rollback {
                revision: args.revision.clone(),
            },
            args.timeout,
        )
        .await?;
    crate::outln!("{}: rolled back", session.env.name);
    Ok(())
}
