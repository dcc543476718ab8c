//! `infra-gen diff`: what `apply` would change, object by object, as a unified diff of the
//! live object and the server-side dry run of the desired one (managed fields, status and
//! server-set metadata stripped; Secret values never shown).

use std::path::Path;

use serde_json::Value as Json;
use similar::TextDiff;

use crate::cli::{DiffArgs, PlanFormat};
use crate::cluster::{Kind, describe, name_of};
use crate::error::Result;
use crate::rollout::apply::prune_candidates;
use crate::rollout::stamped;

use super::target::{self, Variables};

fn normalize(object: &Json) -> Json {
    let mut o = object.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = o.get_mut("metadata").and_then(Json::as_object_mut) {
        for key in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            meta.remove(key);
        }
        if let Some(annotations) = meta.get_mut("annotations").and_then(Json::as_object_mut) {
            annotations.remove(crate::rollout::APPLIED);
            annotations.remove("deployment.kubernetes.io/revision");
        }
    }
    if o.get("kind").and_then(Json::as_str) == Some("Secret")
        && let Some(data) = o.get_mut("data").and_then(Json::as_object_mut)
    {
        for value in data.values_mut() {
            let length = value.as_str().map_or(0, str::len);
            *value = Json::String(format!("<redacted: {length} base64 characters>"));
        }
    }
    o
}

fn yaml(object: Option<&Json>) -> String {
    object
        .map(|o| serde_saphyr::to_string(&normalize(o)).unwrap_or_default())
        .unwrap_or_default()
}

/// Runs the command.
pub async fn run(root: &Path, args: &DiffArgs) -> Result<()> {
    let json = args.output == PlanFormat::Json;
    let mut entries: Vec<Json> = Vec::new();
    let variables = if args.without_secret_values {
        Variables::Optional
    } else {
        Variables::Required
    };
    let mut session = target::session(root, &args.target, false, variables).await?;
    // What apply would write: the HPA bounds in force (read only: nothing is ended here).
    let now = jiff::Timestamp::now();
    let bounds = crate::rollout::capacity::in_force(&session.cluster, &session.env, now).await?;
    session.desired.raise_capacity(&bounds);
    session.desired.drop_ended_windows(now);
    let cluster = &session.cluster;
    let mut desired: Vec<Json> = session.desired.objects.iter().map(stamped).collect();
    for spec in &session.desired.blue_green {
        let bg = session.blue_green(spec, Default::default(), "");
        desired.extend(bg.planned_objects().await?);
    }
    for spec in &session.desired.stateful {
        desired.extend(
            session
                .stateful(spec, Default::default(), "")
                .planned_objects()
                .await?,
        );
    }
    let mut changed = 0;
    for object in &desired {
        let kind = Kind::of(object)?;
        let live = cluster.get(kind, name_of(object)).await?;
        if args.without_secret_values && kind == Kind::Secret {
            let keys = |o: Option<&Json>| -> Vec<String> {
                o.and_then(|o| o.get("data"))
                    .and_then(Json::as_object)
                    .map(|d| d.keys().cloned().collect())
                    .unwrap_or_default()
            };
            let (old, new) = (keys(live.as_ref()), keys(Some(object)));
            let label = match (&live, old == new) {
                (None, _) => "new",
                (Some(_), false) => "changed",
                (Some(_), true) => continue,
            };
            changed += 1;
            let text = format!(
                "{}: keys {} → {} (values not compared)",
                describe(object),
                old.join(", "),
                new.join(", ")
            );
            if json {
                entries.push(serde_json::json!({"kind": "Secret", "name": name_of(object), "change": label, "diff": text}));
            } else {
                crate::outln!("{text}\n");
            }
            continue;
        }
        let after = match cluster.apply(object, true).await {
            Ok(after) => after,
            // Before the first deploy the namespace does not exist: the object is new as is.
            Err(e) if e.code() == Some(404) && live.is_none() => object.clone(),
            Err(e) => return Err(e.into()),
        };
        let (old, new) = (yaml(live.as_ref()), yaml(Some(&after)));
        if old == new {
            continue;
        }
        changed += 1;
        let title = describe(object);
        let label = if live.is_none() { "new" } else { "changed" };
        let text = TextDiff::from_lines(&old, &new)
            .unified_diff()
            .context_radius(3)
            .header(&format!("{title} (live)"), &format!("{title} ({label})"))
            .to_string();
        if json {
            entries.push(serde_json::json!({
                "kind": kind.name(),
                "name": name_of(object),
                "change": label,
                "diff": text,
            }));
        } else {
            crate::outln!("{text}");
        }
    }
    let prune = prune_candidates(cluster, &session.desired).await?;
    for kept in &prune.kept {
        if !json {
            crate::outln!("# {kept}");
        }
    }
    for (kind, name) in prune.delete {
        changed += 1;
        if json {
            entries
                .push(serde_json::json!({"kind": kind.name(), "name": name, "change": "deleted"}));
        } else {
            crate::outln!(
                "--- {}/{name} (live)\n+++ deleted: no longer in the tree\n",
                kind.name()
            );
        }
    }
    session.progress.finish();
    if json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "environment": session.env.name,
                "namespace": session.desired.namespace,
                "changes": entries,
                "kept": prune.kept,
            }))
            .unwrap_or_default()
        );
    } else if changed == 0 {
        crate::outln!(
            "no differences: namespace {} matches the tree",
            session.desired.namespace
        );
    } else {
        crate::outln!("{changed} object(s) would change");
    }
    if args.exit_code && changed > 0 {
        return Err(crate::error::Error::Differences(changed));
    }
    Ok(())
}
