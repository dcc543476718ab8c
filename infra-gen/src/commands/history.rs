//! `infra-gen history`: the release records of an environment (what `rollback` goes back to),
//! newest first, as a table or JSON.

use std::path::Path;

use crate::cli::{PlanFormat, StatusArgs};
use crate::error::Result;
use crate::rollout::history;

use super::target::{self, Variables};

/// Runs the command.
pub async fn run(root: &Path, args: &StatusArgs) -> Result<()> {
    let session = target::session(root, &args.target, true, Variables::Optional).await?;
    let records = history::read(&session.cluster).await?;
    session.progress.finish();
    let mut rows: Vec<(&String, &history::Release)> = records
        .iter()
        .flat_map(|(workload, releases)| releases.iter().map(move |r| (workload, r)))
        .collect();
    // RFC 3339 times in UTC sort as text.
    rows.sort_by(|a, b| b.1.at.cmp(&a.1.at));
    if args.output == PlanFormat::Json {
        let doc: Vec<serde_json::Value> = rows
            .iter()
            .map(|(workload, r)| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(map) = v.as_object_mut() {
                    map.insert("workload".into(), serde_json::json!(workload));
                }
                v
            })
            .collect();
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "environment": session.env.name,
                "namespace": session.desired.namespace,
                "releases": doc,
            }))
            .unwrap_or_default()
        );
        return Ok(());
    }
    if rows.is_empty() {
        crate::outln!(
            "{}: no release recorded in namespace {}",
            session.env.name,
            session.desired.namespace
        );
        return Ok(());
    }
    crate::outln!(
        "{:<20}  {:<16} {:<8} {:<6} {:<12}  {:<40}  BY",
        "WHEN",
        "WORKLOAD",
        "ACTION",
        "SLOT",
        "REVISION",
        "IMAGE"
    );
    for (workload, r) in rows {
        crate::outln!(
            "{:<20}  {:<16} {:<8} {:<6} {:<12}  {:<40}  {}",
            r.at,
            workload,
            r.action,
            r.slot,
            r.revision.get(..12).unwrap_or(&r.revision),
            r.image,
            r.by
        );
    }
    Ok(())
}
