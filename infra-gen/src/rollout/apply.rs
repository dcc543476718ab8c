//! `apply`: preflight, lock, objects in dependency order, the rollout of each workload, prune.
//! It first works out, reading only, whether anything differs; an apply of what already runs
//! makes no write at all (not even the lock).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value as Json;

use super::applyset;
use super::bluegreen::BlueGreen;
use super::desired::{BlueGreenSpec, Desired, StatefulSpec};
use super::progress::Progress;
use super::stateful::Stateful;
use super::{RolloutError, RolloutResult, is_up_to_date, stamped};
use crate::cluster::lease::{self, Lease};
use crate::cluster::wait::{self, Replicas, WaitError};
use crate::cluster::{Cluster, ClusterError, Kind, describe, name_of};
use crate::render::context::labels;

/// Options of an apply.
#[derive(Clone)]
pub struct ApplyOptions {
    /// How long a new version may take to become ready.
    pub timeout: Duration,
    /// Delete objects of this environment that are no longer in the tree.
    pub prune: bool,
    /// The load-balancer checks (`None`: `--no-verify-lb`).
    pub lb: Option<super::verify::LbCheck>,
    /// Without the checks: how long the controller is given to apply a move of ALB traffic
    /// away from a slot before that slot is scaled down or replaced.
    pub unverified_wait: Duration,
    /// Switch workloads behind a load balancer between rolling and blue-green.
    pub allow_strategy_change: bool,
}

/// What an apply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Objects written (applied, scaled, deleted).
    pub writes: usize,
    /// Objects pruned.
    pub pruned: Vec<String>,
    /// Whether nothing had to change.
    pub nothing_to_do: bool,
}

/// The blue-green operations of one workload of this apply.
fn workload<'a>(
    cluster: &'a Cluster,
    desired: &'a Desired,
    spec: &'a BlueGreenSpec,
    options: &'a ApplyOptions,
    progress: &'a Progress,
    by: &'a str,
) -> BlueGreen<'a> {
    BlueGreen {
        cluster,
        spec,
        progress,
        timeout: options.timeout,
        by,
        revision: &desired.revision,
        lb: options.lb.as_ref(),
        unverified_wait: options.unverified_wait,
    }
}

/// The operations of one stateful workload of this apply.
fn stateful<'a>(
    cluster: &'a Cluster,
    desired: &'a Desired,
    spec: &'a StatefulSpec,
    options: &'a ApplyOptions,
    progress: &'a Progress,
    by: &'a str,
) -> Stateful<'a> {
    Stateful {
        cluster,
        spec,
        progress,
        timeout: options.timeout,
        by,
        revision: &desired.revision,
        lb: options.lb.as_ref(),
    }
}

/// What differs between the tree and the cluster (read-only).
#[derive(Debug, Default)]
struct Plan {
    objects: Vec<Json>,
    rolling: Vec<String>,
    blue_green: Vec<usize>,
    stateful: Vec<usize>,
    prune: Prune,
    /// The ApplySet parent's group-kinds: as in the cluster (`None`: no parent yet), before
    /// the objects are applied (widened to what is about to be applied), and after prune.
    applyset: Option<BTreeSet<String>>,
    applyset_before: BTreeSet<String>,
    applyset_after: BTreeSet<String>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.objects.is_empty()
            && self.rolling.is_empty()
            && self.blue_green.is_empty()
            && self.stateful.is_empty()
            && self.prune.delete.is_empty()
            && self.prune.unlabelled.is_empty()
            && self.applyset.as_ref() == Some(&self.applyset_after)
    }
}

/// Every object of the environment that the tree (with what `apply` makes of it: slots,
/// versions) wants to exist, by kind and name.
fn wanted_objects(desired: &Desired) -> RolloutResult<BTreeSet<(Kind, String)>> {
    let mut wanted: BTreeSet<(Kind, String)> = BTreeSet::new();
    for object in &desired.objects {
        wanted.insert((Kind::of(object)?, name_of(object).to_owned()));
    }
    for bg in &desired.blue_green {
        for name in [format!("{}-blue", bg.name), format!("{}-green", bg.name)] {
            wanted.insert((Kind::Deployment, name));
        }
        wanted.insert((Kind::Service, bg.name.clone()));
        wanted.insert((Kind::Service, format!("{}-preview", bg.name)));
        if let Some(route) = &bg.ingress {
            wanted.insert((Kind::of(route)?, bg.name.clone()));
        }
        if bg.hpa.is_some() {
            wanted.insert((Kind::HorizontalPodAutoscaler, bg.name.clone()));
        }
    }
    for st in &desired.stateful {
        if st.stable.is_some() {
            wanted.insert((Kind::Service, st.name.clone()));
        }
        if st.ingress.is_some() {
            wanted.insert((Kind::Ingress, st.name.clone()));
        }
        if st.hpa.is_some() {
            wanted.insert((Kind::HorizontalPodAutoscaler, st.name.clone()));
        }
    }
    Ok(wanted)
}

/// The group-kinds of the ApplySet's members once the tree is applied.
fn wanted_group_kinds(desired: &Desired) -> RolloutResult<BTreeSet<String>> {
    let mut kinds: BTreeSet<Kind> = wanted_objects(desired)?
        .into_iter()
        .map(|(kind, _)| kind)
        .filter(|kind| *kind != Kind::Namespace)
        .collect();
    if !desired.stateful.is_empty() {
        // Each version is a StatefulSet with its headless Service.
        kinds.insert(Kind::StatefulSet);
        kinds.insert(Kind::Service);
    }
    Ok(kinds.into_iter().map(applyset::group_kind).collect())
}

fn environment_selector(desired: &Desired) -> String {
    format!(
        "{}=infra-gen,{}={}",
        labels::MANAGED_BY,
        labels::ENVIRONMENT,
        desired.environment
    )
}

/// What pruning would do: delete objects of this environment the tree no longer has, and
/// keep those still needed (said why).
#[derive(Debug, Default, Clone)]
pub struct Prune {
    /// To delete.
    pub delete: Vec<(Kind, String)>,
    /// Kept although no longer in the tree, with the reason.
    pub kept: Vec<String>,
    /// Group-kinds of the set's members once the deletions are done.
    pub remaining: BTreeSet<String>,
    /// Objects an infra-gen from before ApplySets applied, that stay: labelled part of the set
    /// by the next apply.
    pub unlabelled: Vec<(Kind, String)>,
}

/// The Secrets a pod template uses: env and envFrom references, volumes, pull secrets.
fn secrets_used(object: &Json, out: &mut BTreeSet<String>) {
    let specs = [
        "/spec/template/spec",
        "/spec/jobTemplate/spec/template/spec",
    ];
    for path in specs {
        let Some(spec) = object.pointer(path) else {
            continue;
        };
        let mut add = |value: Option<&Json>| {
            if let Some(name) = value.and_then(Json::as_str) {
                out.insert(name.to_owned());
            }
        };
        for pull in spec
            .get("imagePullSecrets")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            add(pull.get("name"));
        }
        for volume in spec
            .get("volumes")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            add(volume.pointer("/secret/secretName"));
            for source in volume
                .pointer("/projected/sources")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                add(source.pointer("/secret/name"));
            }
        }
        let containers = ["containers", "initContainers"];
        for container in containers
            .iter()
            .filter_map(|c| spec.get(*c).and_then(Json::as_array))
            .flatten()
        {
            for env in container
                .get("env")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                add(env.pointer("/valueFrom/secretKeyRef/name"));
            }
            for from in container
                .get("envFrom")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                add(from.pointer("/secretRef/name"));
            }
        }
    }
}

/// Objects of this environment in the cluster that the tree no longer has. A Secret that a
/// desired or running workload still uses is kept (its pods could not restart without it).
pub async fn prune_candidates(cluster: &Cluster, desired: &Desired) -> RolloutResult<Prune> {
    let wanted = wanted_objects(desired)?;
    let mut members = Vec::new();
    for kind in Kind::APPLIED.into_iter().filter(|k| *k != Kind::Namespace) {
        members.push((kind, set_members(cluster, desired, kind).await?));
    }
    let mut candidates = Vec::new();
    // A stateful workload that left the tree while versions of it still run: its servers may
    // have players, so nothing of it (versions, NLB Service, Ingress, PDB…) is pruned until
    // every version is retired.
    let name_label = |object: &Json| {
        object
            .pointer("/metadata/labels")
            .and_then(|l| l.get(labels::NAME))
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut departed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let sets = members
        .iter()
        .filter(|(kind, _)| *kind == Kind::StatefulSet)
        .flat_map(|(_, objects)| objects);
    for set in sets {
        let workload = name_label(set);
        let versioned = set
            .pointer("/metadata/labels")
            .and_then(|l| l.get(labels::RELEASE))
            .is_some();
        if versioned && !desired.stateful.iter().any(|s| s.name == workload) {
            departed
                .entry(workload)
                .or_default()
                .push(name_of(set).to_owned());
        }
    }
    let stateful_left: Vec<String> = departed
        .iter()
        .map(|(workload, versions)| {
            format!(
                "kept every object of stateful workload {workload}: it left the tree, but {} still run(s) and may have players; retire each with `infra-gen retire --env {} --workload {workload} --version …` (see `infra-gen status`), the next apply then prunes the rest",
                versions.join(", "),
                desired.environment
            )
        })
        .collect();
    let mut users: Vec<Json> = desired
        .objects
        .iter()
        .chain(desired.blue_green.iter().map(|b| &b.deployment))
        .chain(desired.stateful.iter().map(|s| &s.statefulset))
        .cloned()
        .collect();
    let mut remaining: BTreeSet<Kind> = BTreeSet::new();
    let mut unlabelled = Vec::new();
    for (kind, objects) in members {
        for object in objects {
            let name = name_of(&object).to_owned();
            let labelled = object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(applyset::PART_OF))
                .is_some();
            // Made by a controller (it owns it and deletes it itself): never pruned.
            let owned = object
                .pointer("/metadata/ownerReferences")
                .and_then(Json::as_array)
                .is_some_and(|o| !o.is_empty());
            if owned {
                continue;
            }
            // A version of a stateful workload has players: only `retire` removes it.
            let versioned = object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(labels::RELEASE))
                .is_some();
            // Running workloads keep the Secrets they use, old versions included.
            if matches!(kind, Kind::Deployment | Kind::StatefulSet | Kind::CronJob) {
                users.push(object.clone());
            }
            if versioned
                || departed.contains_key(&name_label(&object))
                || wanted.contains(&(kind, name.clone()))
            {
                remaining.insert(kind);
                if !labelled {
                    unlabelled.push((kind, name));
                }
                continue;
            }
            candidates.push((kind, name));
        }
    }
    let mut prune = Prune {
        kept: stateful_left,
        ..Prune::default()
    };
    for (kind, name) in candidates {
        if kind == Kind::Secret {
            let using: Vec<String> = users
                .iter()
                .filter(|u| {
                    let mut used = BTreeSet::new();
                    secrets_used(u, &mut used);
                    used.contains(&name)
                })
                .map(describe)
                .collect();
            if !using.is_empty() {
                let mut using = using;
                using.dedup();
                prune.kept.push(format!(
                    "kept Secret/{name} although it left `secrets:`: {} still use(s) it; remove the reference first, the next apply then prunes it",
                    using.join(", ")
                ));
                remaining.insert(kind);
                unlabelled.push((kind, name));
                continue;
            }
        }
        prune.delete.push((kind, name));
    }
    prune.remaining = remaining.into_iter().map(applyset::group_kind).collect();
    prune.unlabelled = unlabelled;
    Ok(prune)
}

/// The objects of `kind` in the environment's ApplySet: those labelled part of it, and those
/// an infra-gen from before ApplySets applied (the managed-by and environment labels, no
/// part-of label yet; the next apply labels those still in the tree). An object labelled
/// part of another set is never one of ours.
async fn set_members(cluster: &Cluster, desired: &Desired, kind: Kind) -> RolloutResult<Vec<Json>> {
    let selector = format!("{}={}", applyset::PART_OF, desired.applyset);
    let mut members = match cluster.list(kind, &selector, None).await {
        // A cluster without the Gateway API's CRDs holds no HTTPRoute to prune.
        Err(ClusterError::Api { code: 404, .. }) if kind == Kind::HttpRoute => {
            return Ok(Vec::new());
        }
        other => other?,
    };
    let legacy = cluster
        .list(kind, &environment_selector(desired), None)
        .await?
        .into_iter()
        .filter(|o| {
            o.pointer("/metadata/labels")
                .and_then(|l| l.get(applyset::PART_OF))
                .is_none()
        });
    members.extend(legacy);
    Ok(members)
}

async fn is_complete(cluster: &Cluster, name: &str) -> RolloutResult<bool> {
    let live = cluster.get(Kind::Deployment, name).await?;
    Ok(live
        .and_then(|d| serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(d).ok())
        .is_some_and(|d| Replicas::of(&d).is_complete()))
}

async fn plan(
    cluster: &Cluster,
    desired: &Desired,
    progress: &Progress,
    by: &str,
    options: &ApplyOptions,
) -> RolloutResult<Plan> {
    let mut plan = Plan::default();
    for object in &desired.objects {
        let live = cluster.get(Kind::of(object)?, name_of(object)).await?;
        let wanted = stamped(object);
        if !is_up_to_date(&wanted, live.as_ref()) {
            plan.objects.push(wanted);
        }
    }
    for name in &desired.rolling {
        let changed = plan.objects.iter().any(|o| {
            o.get("kind").and_then(Json::as_str) == Some("Deployment") && name_of(o) == name
        });
        if changed || !is_complete(cluster, name).await? {
            plan.rolling.push(name.clone());
        }
    }
    for (i, spec) in desired.blue_green.iter().enumerate() {
        let bg = workload(cluster, desired, spec, options, progress, by);
        if !bg.is_converged().await? {
            plan.blue_green.push(i);
        }
    }
    for (i, spec) in desired.stateful.iter().enumerate() {
        if !stateful(cluster, desired, spec, options, progress, by)
            .is_converged()
            .await?
        {
            plan.stateful.push(i);
        }
    }
    plan.applyset = applyset::read(cluster).await?;
    let wanted = wanted_group_kinds(desired)?;
    let existing = plan.applyset.clone().unwrap_or_default();
    plan.applyset_before = existing.union(&wanted).cloned().collect();
    plan.prune = prune_candidates(cluster, desired).await?;
    plan.applyset_after = wanted.union(&plan.prune.remaining).cloned().collect();
    if !options.prune {
        // Nothing is deleted: the kinds of what would have been stay in the set.
        let kept = plan
            .prune
            .delete
            .drain(..)
            .map(|(kind, _)| applyset::group_kind(kind));
        plan.applyset_after.extend(kept);
        plan.applyset_after
            .extend(plan.applyset_before.iter().cloned());
    }
    Ok(plan)
}

/// Runs the deploy.
pub async fn apply(
    cluster: &Cluster,
    desired: &Desired,
    options: &ApplyOptions,
    progress: &Progress,
) -> RolloutResult<Summary> {
    let by = lease::identity();
    routes_served(cluster, desired).await?;
    let first = plan(cluster, desired, progress, &by, options).await?;
    if !first.is_empty() && !options.allow_strategy_change {
        strategy_switches(cluster, desired).await?;
    }
    if first.is_empty() {
        progress.step(&format!(
            "nothing to do: namespace {} already runs this revision",
            desired.namespace
        ));
        for spec in desired.blue_green.iter().filter(|s| s.canary.is_some()) {
            let state = workload(cluster, desired, spec, options, progress, &by)
                .observe()
                .await?;
            if let (Some(found), Some(rule)) = (&state.canary, &spec.canary) {
                progress.step(&format!(
                    "{}: the canary runs ({} go to {}); `infra-gen promote` moves everyone, `infra-gen abort` gives it up",
                    spec.name,
                    super::canary::describe(rule),
                    found.slot.map_or("?", |s| s.as_str())
                ));
            }
        }
        return Ok(Summary {
            nothing_to_do: true,
            ..Summary::default()
        });
    }
    // The lock lives in the namespace, so the namespace comes first.
    if let Some(namespace) = desired.namespace_object() {
        let wanted = stamped(namespace);
        let live = cluster.get(Kind::Namespace, name_of(namespace)).await?;
        if !is_up_to_date(&wanted, live.as_ref()) {
            cluster.apply(&wanted, false).await?;
            progress.step(&format!("applied Namespace/{}", desired.namespace));
        }
    }
    let lock = Lease::acquire(cluster, &by).await?;
    progress.step(&format!(
        "took the deploy lock of {} as {by}",
        desired.namespace
    ));
    let result = locked(cluster, desired, options, progress, &by).await;
    let released = lock.release().await;
    let summary = result?;
    released?;
    Ok(Summary {
        writes: cluster.writes(),
        ..summary
    })
}

/// Refuses, before any write, a tree with HTTPRoutes on a cluster that does not serve them
/// (the Gateway API's CRDs are not installed): nothing could route the requests.
async fn routes_served(cluster: &Cluster, desired: &Desired) -> RolloutResult<()> {
    let routes = desired
        .objects
        .iter()
        .chain(desired.blue_green.iter().filter_map(|b| b.ingress.as_ref()))
        .any(super::route::is_http_route);
    if !routes {
        return Ok(());
    }
    match cluster.list(Kind::HttpRoute, "", None).await {
        Ok(_) => Ok(()),
        Err(ClusterError::Api { code: 404, .. }) => Err(RolloutError::Preflight(
            super::gateway_status::crds_missing(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Refuses, before any write, to switch a workload behind a load balancer between rolling
/// and blue-green: the switch moves the Ingress backend (or the NLB's targets) to target
/// groups whose targets only start registering then, so every request fails until they
/// are healthy. `--allow-strategy-change` does it anyway.
async fn strategy_switches(cluster: &Cluster, desired: &Desired) -> RolloutResult<()> {
    let runs = |d: Option<Json>| {
        d.and_then(|d| d.pointer("/spec/replicas").and_then(Json::as_i64))
            .unwrap_or(0)
            > 0
    };
    let mut switches = Vec::new();
    for spec in &desired.blue_green {
        if spec.ingress.is_none() && !spec.tcp {
            continue;
        }
        let rolling = runs(cluster.get(Kind::Deployment, &spec.name).await?);
        let blue = runs(
            cluster
                .get(Kind::Deployment, &format!("{}-blue", spec.name))
                .await?,
        );
        let green = runs(
            cluster
                .get(Kind::Deployment, &format!("{}-green", spec.name))
                .await?,
        );
        if rolling && !blue && !green {
            switches.push(format!("{} from rolling to blue-green", spec.name));
        }
    }
    for name in &desired.rolling {
        let behind_lb = desired.objects.iter().any(|o| {
            name_of(o) == name
                && match o.get("kind").and_then(Json::as_str) {
                    Some("Ingress") => true,
                    Some("Service") => {
                        o.pointer("/spec/type").and_then(Json::as_str) == Some("LoadBalancer")
                    }
                    _ => false,
                }
        });
        if !behind_lb {
            continue;
        }
        let blue = runs(
            cluster
                .get(Kind::Deployment, &format!("{name}-blue"))
                .await?,
        );
        let green = runs(
            cluster
                .get(Kind::Deployment, &format!("{name}-green"))
                .await?,
        );
        if blue || green {
            switches.push(format!("{name} from blue-green to rolling"));
        }
    }
    if switches.is_empty() {
        return Ok(());
    }
    Err(RolloutError::Preflight(format!(
        "refusing to switch {}: the load balancer would move every request at once to new target groups whose targets only then start registering, and requests fail until they are healthy (seconds to minutes; `infra-gen plan` says what changes). Do it in a quiet moment with `--allow-strategy-change`, or keep the strategy",
        switches.join(", ")
    )))
}

/// The field manager that keeps `spec.replicas` of a Deployment whose count the HPA takes
/// over, so that infra-gen dropping the field does not reset it.
pub const HANDOVER_MANAGER: &str = "infra-gen-handover";

/// When a Deployment's replica count passes to an HPA (the file adds `autoscaling`, so the
/// tree stops setting `spec.replicas`; or a blue-green workload becomes rolling), applying the
/// tree would drop the field and Kubernetes would reset the workload to 1 replica. As the
/// Kubernetes documentation describes for server-side apply ("Transferring ownership" /
/// "Migrating Deployments to horizontal autoscaling"), the current count is first applied by
/// a separate field manager, which keeps it until the HPA's own writes take it over.
async fn hand_over_replicas(
    cluster: &Cluster,
    desired: &Desired,
    object: &Json,
    progress: &Progress,
) -> RolloutResult<()> {
    if object.get("kind").and_then(Json::as_str) != Some("Deployment")
        || object.pointer("/spec/replicas").is_some()
    {
        return Ok(());
    }
    let name = name_of(object);
    let live = cluster.get(Kind::Deployment, name).await?;
    let count = |d: Option<&Json>| {
        d.and_then(|d| d.pointer("/spec/replicas"))
            .and_then(Json::as_i64)
            .unwrap_or(0)
    };
    let carried = match &live {
        // Only while infra-gen still owns the field: once the HPA wrote it, it is the HPA's.
        Some(live) if owns_replicas(live) => count(Some(live)),
        Some(_) => 0,
        // Blue-green → rolling: start with what the slots serve.
        None => {
            let mut most = 0;
            for slot in ["blue", "green"] {
                most = most.max(count(
                    cluster
                        .get(Kind::Deployment, &format!("{name}-{slot}"))
                        .await?
                        .as_ref(),
                ));
            }
            most
        }
    };
    if carried <= 1 {
        return Ok(());
    }
    if live.is_none() {
        let mut first = object.clone();
        first["spec"]["replicas"] = serde_json::json!(carried);
        cluster.apply(&first, false).await?;
    }
    let replicas_only = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": desired.namespace},
        "spec": {"replicas": carried},
    });
    match cluster
        .apply_as(&replicas_only, HANDOVER_MANAGER, false, false)
        .await
    {
        Ok(_) => progress.step(&format!(
            "{name}: kept its {carried} replicas while the HPA takes the count over"
        )),
        // The HPA already owns the field: nothing to hand over.
        Err(e) if e.code() == Some(409) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Whether infra-gen's applies own `spec.replicas` of a live object (its managedFields).
fn owns_replicas(live: &Json) -> bool {
    live.pointer("/metadata/managedFields")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .any(|entry| {
            entry.get("manager").and_then(Json::as_str) == Some(crate::cluster::FIELD_MANAGER)
                && entry.get("operation").and_then(Json::as_str) == Some("Apply")
                && entry.pointer("/fieldsV1/f:spec/f:replicas").is_some()
        })
}

async fn locked(
    cluster: &Cluster,
    desired: &Desired,
    options: &ApplyOptions,
    progress: &Progress,
    by: &str,
) -> RolloutResult<Summary> {
    // Plan again under the lock: another run may have changed things meanwhile.
    let plan = plan(cluster, desired, progress, by, options).await?;
    // The parent lists every kind about to be applied before any is (an interrupted run
    // leaves no member of a kind the parent does not name).
    if plan.applyset.as_ref() != Some(&plan.applyset_before) {
        let parent = applyset::parent(&desired.namespace, &plan.applyset_before)?;
        cluster.apply(&parent, false).await?;
        progress.step(&format!(
            "applied the ApplySet parent ConfigMap/{} ({}={})",
            applyset::PARENT,
            applyset::ID,
            desired.applyset
        ));
    }
    // Objects an infra-gen from before ApplySets applied join the set where they are, by a
    // field manager of their own that only sets the label (nothing else of them changes).
    for (kind, name) in &plan.prune.unlabelled {
        let label = serde_json::json!({
            "apiVersion": kind.api_version(),
            "kind": kind.name(),
            "metadata": {
                "name": name,
                "namespace": desired.namespace,
                "labels": {applyset::PART_OF: desired.applyset},
            },
        });
        cluster
            .apply_as(&label, applyset::MANAGER, true, false)
            .await?;
    }
    if !plan.prune.unlabelled.is_empty() {
        progress.step(&format!(
            "labelled {} object(s) applied before ApplySets as part of the set",
            plan.prune.unlabelled.len()
        ));
    }
    for object in &plan.objects {
        hand_over_replicas(cluster, desired, object, progress).await?;
        cluster.apply(object, false).await?;
        progress.step(&format!("applied {}", describe(object)));
    }
    for name in &plan.rolling {
        let selector = desired
            .objects
            .iter()
            .find(|o| {
                o.get("kind").and_then(Json::as_str) == Some("Deployment") && name_of(o) == name
            })
            .and_then(|d| d.pointer("/spec/selector/matchLabels"))
            .and_then(Json::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let mut report = |line: &str| progress.status(line);
        match wait::deployment_ready(cluster, name, &selector, options.timeout, &mut report).await {
            Ok(()) => progress.step(&format!("{name}: rolled out")),
            Err(WaitError::Cluster(e)) => return Err(e.into()),
            Err(cause) => {
                return Err(RolloutError::Rolling {
                    workload: name.clone(),
                    cause: Box::new(cause),
                    hint: format!(
                        "Kubernetes keeps the old pods serving (maxUnavailable 0); fix and deploy again, or `kubectl -n {} rollout undo deployment/{name}`",
                        desired.namespace
                    ),
                });
            }
        }
    }
    for index in &plan.blue_green {
        let spec = &desired.blue_green[*index];
        let bg = workload(cluster, desired, spec, options, progress, by);
        bg.deploy().await?;
    }
    for index in &plan.stateful {
        let spec = &desired.stateful[*index];
        stateful(cluster, desired, spec, options, progress, by)
            .deploy()
            .await?;
    }
    for kept in &plan.prune.kept {
        progress.step(&format!("warning: {kept}"));
    }
    let mut pruned = Vec::new();
    if !plan.prune.delete.is_empty() {
        let listed: Vec<String> = plan
            .prune
            .delete
            .iter()
            .map(|(k, n)| format!("{}/{n}", k.name()))
            .collect();
        progress.step(&format!(
            "pruning (no longer in the tree): {}",
            listed.join(", ")
        ));
        for (kind, name) in &plan.prune.delete {
            cluster.delete(*kind, name).await?;
        }
        pruned = listed;
    }
    if plan.applyset_after != plan.applyset_before {
        let parent = applyset::parent(&desired.namespace, &plan.applyset_after)?;
        cluster.apply(&parent, false).await?;
    }
    Ok(Summary {
        writes: cluster.writes(),
        pruned,
        nothing_to_do: false,
    })
}
