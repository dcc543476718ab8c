//! `infra-gen scale`: an operator's raise of an HPA's minimum until a time, kept by every
//! deploy, ended in the cluster at that time (see `rollout::capacity`), or ended early.

use std::path::Path;

use crate::capacity::Override;
use crate::cli::ScaleArgs;
use crate::cluster::lease::{self, Lease};
use crate::error::{Error, Result};
use crate::render::capacity::autoscaled;
use crate::rollout::RolloutError;
use crate::rollout::capacity;

use super::target::{self, Variables};

/// Runs the command.
pub async fn run(root: &Path, args: &ScaleArgs) -> Result<()> {
    let session = target::session(root, &args.target, true, Variables::Optional).await?;
    let workloads = autoscaled(&session.env);
    let names: Vec<&str> = workloads.iter().map(|(w, ..)| w.as_str()).collect();
    let workload = match (&args.workload, names.as_slice()) {
        (Some(w), _) => w.clone(),
        (None, [only]) => (*only).to_owned(),
        (None, []) => {
            return Err(Error::Usage(format!(
                "no workload of environments/{}.yaml has `autoscaling`",
                session.env.name
            )));
        }
        (None, _) => {
            return Err(Error::Usage(format!(
                "several workloads autoscale ({}): give --workload",
                names.join(", ")
            )));
        }
    };
    let Some((_, committed, windows)) = workloads.iter().find(|(w, ..)| *w == workload) else {
        return Err(Error::Usage(format!(
            "{workload} has no `autoscaling` in environments/{}.yaml (autoscaled: {})",
            session.env.name,
            names.join(", ")
        )));
    };
    let by = lease::identity();
    let lock = Lease::acquire(&session.cluster, &by)
        .await
        .map_err(RolloutError::from)?;
    let result = match (args.min, args.until) {
        (Some(min), Some(until)) => {
            let scale = Override {
                min,
                until,
                by: by.clone(),
            };
            capacity::set_override(&session.cluster, &session.env, &workload, &scale)
                .await
                .map(|c| {
                    format!(
                        "{workload}: HPA bounds {}..{} until {} ({}); deploys keep them, `infra-gen scale --env {} --clear` ends them early",
                        c.min,
                        c.max,
                        until,
                        until.to_zoned(jiff::tz::TimeZone::UTC).strftime("%Y-%m-%d %H:%M UTC"),
                        session.env.name
                    )
                })
        }
        _ => capacity::end_override(&session.cluster, &workload, *committed, windows)
            .await
            .map(|c| {
                format!(
                    "{workload}: raise ended; HPA bounds {}..{}{}",
                    c.min,
                    c.max,
                    if c.why.is_empty() {
                        " (the file's)".to_owned()
                    } else {
                        format!(" ({})", c.why.join("; "))
                    }
                )
            }),
    };
    lock.release().await?;
    crate::outln!("{}", result?);
    Ok(())
}
