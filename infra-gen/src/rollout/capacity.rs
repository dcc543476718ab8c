//! Capacity in the cluster: the HPA bounds every deploy applies (the committed ones, raised by
//! an open window and by an `infra-gen scale` override), the override itself, and whether the
//! metrics API the HPAs need answers.
//!
//! An override is a ConfigMap `<workload>-capacity-override` (min, until, by) and a CronJob
//! `<workload>-capacity-expire` that fires at `until` in UTC: it sets the bounds in force then,
//! resumes the window CronJobs the override suspended (those that would have lowered or
//! changed the bounds while it holds), and deletes itself and the ConfigMap. A deploy after
//! `until` does the same if the CronJob could not run.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use super::desired::Desired;
use super::{RolloutError, RolloutResult};
use crate::capacity::{self, Capacity, Edge, Override, Window};
use crate::cluster::{Cluster, Kind, name_of};
use crate::env::Environment;
use crate::render::capacity::{
    self as rendered, autoscaled, expire_name, kubectl_container, kubectl_image, kubectl_pod,
    override_name, patch_args,
};
use crate::render::context::labels;

/// The key of the override ConfigMap that holds it (JSON).
const OVERRIDE_KEY: &str = "override";

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// The override of `workload`, if one is recorded (expired or not).
pub async fn read_override(cluster: &Cluster, workload: &str) -> RolloutResult<Option<Override>> {
    let Some(map) = cluster
        .get(Kind::ConfigMap, &override_name(workload))
        .await?
    else {
        return Ok(None);
    };
    let text = map
        .pointer(&format!("/data/{OVERRIDE_KEY}"))
        .and_then(Json::as_str)
        .unwrap_or_default();
    serde_json::from_str(text).map(Some).map_err(|e| {
        RolloutError::Input(format!(
            "ConfigMap {}: data.{OVERRIDE_KEY} is not an override ({e}); remove it with `infra-gen scale --clear`",
            override_name(workload)
        ))
    })
}

/// The bounds in force for every autoscaled workload of `env`, at `at`.
pub async fn in_force(
    cluster: &Cluster,
    env: &Environment,
    at: jiff::Timestamp,
) -> RolloutResult<BTreeMap<String, Capacity>> {
    let mut out = BTreeMap::new();
    for (workload, committed, windows) in autoscaled(env) {
        let scale = read_override(cluster, &workload).await?;
        out.insert(
            workload,
            capacity::in_force(committed, &windows, scale.as_ref(), at),
        );
    }
    Ok(out)
}

/// Makes `desired` apply the bounds in force (says which, when raised), and leaves out the
/// CronJobs of one-off windows that ended. Ends an override whose time passed but whose
/// CronJob did not run.
pub async fn settle(
    cluster: &Cluster,
    env: &Environment,
    desired: &mut Desired,
    say: &dyn Fn(&str),
) -> RolloutResult<()> {
    let at = now();
    // One read of each override: an expired one is ended, a live one counts.
    let mut bounds = BTreeMap::new();
    for (workload, committed, windows) in autoscaled(env) {
        let mut scale = read_override(cluster, &workload).await?;
        if let Some(expired) = scale.as_ref().filter(|s| s.until <= at) {
            say(&format!(
                "{workload}: the override scale --min {} ended at {}; removing it",
                expired.min, expired.until
            ));
            end_override(cluster, &workload, committed, &windows).await?;
            scale = None;
        }
        bounds.insert(
            workload,
            capacity::in_force(committed, &windows, scale.as_ref(), at),
        );
    }
    for (workload, c) in &bounds {
        if !c.why.is_empty() {
            say(&format!(
                "{workload}: HPA bounds {}..{} in force: {}",
                c.min,
                c.max,
                c.why.join("; ")
            ));
        }
    }
    desired.raise_capacity(&bounds);
    desired.drop_ended_windows(at);
    Ok(())
}

/// The window CronJobs of `workload` that fire between `from` and `to`.
fn firing_between(
    workload: &str,
    windows: &[Window],
    from: jiff::Timestamp,
    to: jiff::Timestamp,
) -> Vec<String> {
    let mut out = Vec::new();
    for w in windows {
        for o in w.upcoming(from, 400) {
            if o.opens >= to && o.closes >= to {
                break;
            }
            if (from..to).contains(&o.opens) {
                out.push(capacity::cronjob_name(workload, &w.name, Edge::Up));
            }
            if (from..to).contains(&o.closes) {
                out.push(capacity::cronjob_name(workload, &w.name, Edge::Down));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn hpa_bounds_object(namespace: &str, workload: &str, (min, max): (u32, u32)) -> Json {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": workload, "namespace": namespace},
        "spec": {"minReplicas": min, "maxReplicas": max},
    })
}

fn suspend_object(namespace: &str, cronjob: &str, suspend: bool) -> Json {
    json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": cronjob, "namespace": namespace},
        "spec": {"suspend": suspend},
    })
}

/// Sets an HPA's bounds now (as the capacity field manager, like the CronJobs).
async fn set_bounds(cluster: &Cluster, workload: &str, bounds: (u32, u32)) -> RolloutResult<()> {
    if cluster
        .get(Kind::HorizontalPodAutoscaler, workload)
        .await?
        .is_none()
    {
        return Err(RolloutError::Input(format!(
            "{workload} has no HPA in namespace {} yet: deploy it first (`infra-gen apply`)",
            cluster.namespace()
        )));
    }
    cluster
        .apply_as(
            &hpa_bounds_object(cluster.namespace(), workload, bounds),
            capacity::FIELD_MANAGER,
            true,
            false,
        )
        .await?;
    Ok(())
}

/// Records an override and applies it: the bounds now, the window CronJobs that would undo it
/// suspended, and the CronJob that ends it at `until`.
pub async fn set_override(
    cluster: &Cluster,
    env: &Environment,
    workload: &str,
    scale: &Override,
) -> RolloutResult<Capacity> {
    let Some((_, committed, windows)) = autoscaled(env).into_iter().find(|(w, ..)| w == workload)
    else {
        return Err(RolloutError::Input(format!(
            "{workload} has no `autoscaling` in environments/{}.yaml: only an HPA's minimum can be raised",
            env.name
        )));
    };
    let at = now();
    if scale.until <= at {
        return Err(RolloutError::Input(format!(
            "--until {} is not in the future",
            scale.until
        )));
    }
    // An override replaces the one before; the new one's CronJob resumes every window's.
    let ns = cluster.namespace().to_owned();
    let record = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": override_name(workload),
            "namespace": ns,
            "labels": {labels::MANAGED_BY: "infra-gen", labels::NAME: rendered::ACCOUNT},
        },
        "data": {OVERRIDE_KEY: serde_json::to_string(scale).unwrap_or_default()},
    });
    cluster.apply(&record, false).await?;
    let c = capacity::in_force(committed, &windows, Some(scale), at);
    set_bounds(cluster, workload, (c.min, c.max)).await?;
    let suspended = firing_between(workload, &windows, at, scale.until);
    for cronjob in &suspended {
        if cluster.get(Kind::CronJob, cronjob).await?.is_some() {
            cluster
                .apply_as(
                    &suspend_object(&ns, cronjob, true),
                    capacity::FIELD_MANAGER,
                    true,
                    false,
                )
                .await?;
        }
    }
    let after = capacity::in_force(committed, &windows, None, scale.until);
    let resume = windows
        .iter()
        .flat_map(|w| [Edge::Up, Edge::Down].map(|e| capacity::cronjob_name(workload, &w.name, e)))
        .collect::<Vec<_>>();
    cluster
        .apply(
            &expire_cronjob(env, &ns, workload, scale, (after.min, after.max), &resume),
            false,
        )
        .await?;
    Ok(c)
}

/// The CronJob that ends an override at `until` (UTC, to the minute after).
fn expire_cronjob(
    env: &Environment,
    namespace: &str,
    workload: &str,
    scale: &Override,
    bounds: (u32, u32),
    resume: &[String],
) -> Json {
    let image = kubectl_image(env);
    let until = scale.until.to_zoned(jiff::tz::TimeZone::UTC);
    // CronJobs fire on whole minutes: the minute at or after `until`.
    let fire = if until.second() == 0 && until.subsec_nanosecond() == 0 {
        until
    } else {
        until
            .checked_add(jiff::SignedDuration::from_secs(
                60 - i64::from(until.second()),
            ))
            .unwrap_or(until)
    };
    let schedule = format!(
        "{} {} {} {} *",
        fire.minute(),
        fire.hour(),
        fire.day(),
        fire.month()
    );
    let mut init = vec![kubectl_container(
        "bounds",
        &image,
        patch_args(namespace, workload, bounds),
    )];
    for (i, cronjob) in resume.iter().enumerate() {
        init.push(kubectl_container(
            &format!("resume-{i}"),
            &image,
            vec![
                "patch".into(),
                "cronjob".into(),
                cronjob.clone(),
                format!("--namespace={namespace}"),
                format!("--field-manager={}", capacity::FIELD_MANAGER),
                "--type=merge".into(),
                r#"--patch={"spec":{"suspend":false}}"#.into(),
            ],
        ));
    }
    let done = kubectl_container(
        "done",
        &image,
        vec![
            "delete".into(),
            format!("cronjob/{}", expire_name(workload)),
            format!("configmap/{}", override_name(workload)),
            format!("--namespace={namespace}"),
            "--ignore-not-found".into(),
            "--wait=false".into(),
        ],
    );
    let labels = BTreeMap::from([
        (labels::NAME.to_owned(), rendered::ACCOUNT.to_owned()),
        (labels::MANAGED_BY.to_owned(), "infra-gen".to_owned()),
    ]);
    let annotations = BTreeMap::from([(
        "infra-gen.dev/override".to_owned(),
        serde_json::to_string(scale).unwrap_or_default(),
    )]);
    let pull_secret = env.spec.registry.as_ref().map(|r| r.pull_secret.as_str());
    rendered::cronjob(
        namespace,
        &expire_name(workload),
        labels,
        annotations,
        schedule,
        "Etc/UTC",
        24 * 3600,
        kubectl_pod(pull_secret, init, vec![done]),
    )
}

/// Ends the override of `workload` now: the bounds in force without it, every window CronJob
/// resumed, the record and its CronJob deleted. Returns the bounds now in force.
pub async fn end_override(
    cluster: &Cluster,
    workload: &str,
    committed: (u32, u32),
    windows: &[Window],
) -> RolloutResult<Capacity> {
    let ns = cluster.namespace().to_owned();
    let c = capacity::in_force(committed, windows, None, now());
    if cluster
        .get(Kind::HorizontalPodAutoscaler, workload)
        .await?
        .is_some()
    {
        set_bounds(cluster, workload, (c.min, c.max)).await?;
    }
    for w in windows {
        for edge in [Edge::Up, Edge::Down] {
            let cronjob = capacity::cronjob_name(workload, &w.name, edge);
            let suspended = cluster
                .get(Kind::CronJob, &cronjob)
                .await?
                .and_then(|c| c.pointer("/spec/suspend").and_then(Json::as_bool))
                == Some(true);
            if suspended {
                cluster
                    .apply_as(
                        &suspend_object(&ns, &cronjob, false),
                        capacity::FIELD_MANAGER,
                        true,
                        false,
                    )
                    .await?;
            }
        }
    }
    cluster
        .delete(Kind::CronJob, &expire_name(workload))
        .await?;
    cluster
        .delete(Kind::ConfigMap, &override_name(workload))
        .await?;
    Ok(c)
}

/// Why the HPAs of an environment cannot scale, with the fix: the metrics API missing or not
/// Available, or an HPA that reports it cannot get its metrics.
pub async fn metrics_problems(cluster: &Cluster, hpas: &[String]) -> RolloutResult<Vec<String>> {
    let mut out = Vec::new();
    const FIX: &str = "install metrics-server (on Fargate with a port other than the kubelet's 10250: the EKS add-on, or the Helm chart with `--set containerPort=4443`; see the README's cluster set-up)";
    match cluster.get(Kind::ApiService, METRICS_API).await {
        Ok(None) => out.push(format!(
            "the metrics API ({METRICS_API}) is not registered: HPAs cannot read CPU or memory and never scale; {FIX}"
        )),
        Ok(Some(api)) => {
            if let Some(why) = not_available(&api) {
                out.push(format!(
                    "the metrics API ({METRICS_API}) is not Available ({why}): HPAs cannot read CPU or memory; {FIX}"
                ));
            }
        }
        Err(e) if e.code() == Some(403) => out.push(format!(
            "cannot check the metrics API ({METRICS_API}): reading APIServices is forbidden to this identity"
        )),
        Err(e) => return Err(e.into()),
    }
    for hpa in hpas {
        if let Some(object) = cluster.get(Kind::HorizontalPodAutoscaler, hpa).await?
            && let Some(why) = scaling_inactive(&object)
        {
            out.push(format!("HPA {}: {why}", name_of(&object)));
        }
    }
    Ok(out)
}

/// The APIService of the resource metrics API.
pub const METRICS_API: &str = "v1beta1.metrics.k8s.io";

fn condition<'a>(object: &'a Json, kind: &str) -> Option<&'a Json> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Json::as_str) == Some(kind))
}

fn reason_message(c: &Json) -> String {
    let text = |k: &str| c.get(k).and_then(Json::as_str).unwrap_or_default();
    match (text("reason"), text("message")) {
        (r, "") => r.to_owned(),
        (r, m) => format!("{r}: {m}"),
    }
}

/// Why an APIService is not Available (None when it is).
pub fn not_available(api: &Json) -> Option<String> {
    match condition(api, "Available") {
        Some(c) if c.get("status").and_then(Json::as_str) == Some("True") => None,
        Some(c) => Some(reason_message(c)),
        None => Some("no Available condition yet".into()),
    }
}

/// Why an HPA cannot compute its metrics (None when it can, or has not said yet).
pub fn scaling_inactive(hpa: &Json) -> Option<String> {
    let c = condition(hpa, "ScalingActive")?;
    (c.get("status").and_then(Json::as_str) == Some("False")).then(|| reason_message(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_service_or_hpa_that_cannot_serve_metrics_says_why() {
        let down = json!({"status": {"conditions": [{"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck", "message": "failing or missing response from https://10.0.0.1:10250"}]}});
        assert_eq!(
            not_available(&down).as_deref(),
            Some("FailedDiscoveryCheck: failing or missing response from https://10.0.0.1:10250")
        );
        let up = json!({"status": {"conditions": [{"type": "Available", "status": "True"}]}});
        assert_eq!(not_available(&up), None);
        let hpa = json!({"status": {"conditions": [{"type": "ScalingActive", "status": "False", "reason": "FailedGetResourceMetric", "message": "unable to get metrics for resource cpu"}]}});
        assert_eq!(
            scaling_inactive(&hpa).as_deref(),
            Some("FailedGetResourceMetric: unable to get metrics for resource cpu")
        );
        assert_eq!(scaling_inactive(&json!({"status": {}})), None);
    }
}
