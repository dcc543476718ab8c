//! `infra-gen promote` and `infra-gen abort`: the end of a grey release (`rollout.canary`).
//! `apply` stops once the header rule sends the canary's requests to the new slot; promote
//! moves everyone there (at once or by `rollout.steps`) and removes the rule, abort removes
//! the rule and scales the new slot down.

use std::path::Path;

use crate::cli::CanaryArgs;
use crate::error::Result;

use super::target::{self, SlotOp, Variables};

/// Runs `promote` (`true`) or `abort`.
pub async fn run(root: &Path, args: &CanaryArgs, promote: bool) -> Result<()> {
    let mut session = target::session(root, &args.target, true, Variables::Optional).await?;
    session.with_capacity().await?;
    target::with_lb(&mut session, &args.lb).await;
    if !session
        .desired
        .blue_green
        .iter()
        .any(|b| b.canary.is_some())
    {
        crate::outln!(
            "{} has no workload with `rollout.canary`; nothing to {}",
            session.env.name,
            if promote { "promote" } else { "abort" }
        );
        return Ok(());
    }
    let revision = args.revision.clone();
    let op = if promote {
        SlotOp::Promote { revision }
    } else {
        SlotOp::Abort { revision }
    };
    session.each_blue_green(op, args.timeout).await?;
    crate::outln!(
        "{}: {}",
        session.env.name,
        if promote { "promoted" } else { "aborted" }
    );
    Ok(())
}
