//! The in-cluster half of scheduled capacity: for each window of `autoscaling.schedule`, a
//! CronJob that raises the HPA's bounds `lead` before the window starts and one that lowers
//! them when it ends, in the window's time zone; and the ServiceAccount, Role and RoleBinding
//! they (and an `infra-gen scale` override's expiry) run with — allowed to patch only this
//! environment's HPAs and capacity CronJobs by name. Built from the k8s-openapi types.
//!
//! The CronJobs patch the HPA by its name, which never changes: after a blue-green cutover
//! (the HPA re-pointed to the other slot) or a stateful release they act on the live one.

use std::collections::BTreeMap;

use k8s_openapi::Resource;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, LocalObjectReference,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value as Json, json};

use super::context::{EnvContext, labels};
use crate::capacity::{self, Edge, Window};
use crate::env::Environment;

/// The ServiceAccount, Role and RoleBinding of the capacity CronJobs.
pub const ACCOUNT: &str = "infra-gen-capacity";

/// Annotation of a one-off window's CronJobs: when the window ends; `apply` leaves them out
/// of the cluster afterwards (a CronJob would fire again on the same date next year).
pub const WINDOW_ENDS: &str = "infra-gen.dev/window-ends";

/// The kubectl image: the file's `cluster.kubectlImage`, else the official one of the
/// cluster's minor version.
pub fn kubectl_image(env: &Environment) -> String {
    env.spec
        .cluster
        .kubectl_image
        .clone()
        .unwrap_or_else(|| format!("registry.k8s.io/kubectl:v{}.0", env.kubernetes_version()))
}

/// The CronJob that ends an `infra-gen scale` override (made by `scale`, not rendered).
pub fn expire_name(workload: &str) -> String {
    format!("{workload}-capacity-expire")
}

/// The ConfigMap that records an `infra-gen scale` override.
pub fn override_name(workload: &str) -> String {
    format!("{workload}-capacity-override")
}

/// The workloads with an HPA, with their committed bounds and resolved windows (windows the
/// rules refuse are left out; rendering refuses the file before this is used).
pub fn autoscaled(env: &Environment) -> Vec<(String, (u32, u32), Vec<Window>)> {
    env.spec
        .workloads
        .iter()
        .filter_map(|(name, w)| {
            let a = w.autoscaling.as_ref()?;
            let windows = a
                .schedule
                .iter()
                .filter_map(|s| Window::resolve(s, (a.min, a.max)).ok())
                .collect();
            Some((name.clone(), (a.min, a.max), windows))
        })
        .collect()
}

fn common_labels(ctx: &EnvContext, instance: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([
        (labels::NAME.to_owned(), ACCOUNT.to_owned()),
        (labels::INSTANCE.to_owned(), instance.to_owned()),
        (labels::MANAGED_BY.to_owned(), "infra-gen".to_owned()),
        (labels::ENVIRONMENT.to_owned(), ctx.id.clone()),
    ]);
    if let Some(part_of) = ctx.namespace_labels.get(labels::PART_OF) {
        out.insert(labels::PART_OF.to_owned(), part_of.clone());
    }
    out
}

fn meta(ctx: &EnvContext, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(ctx.namespace.clone()),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

fn to_json<T: serde::Serialize + Resource>(object: &T) -> Json {
    let mut body = serde_json::to_value(object).unwrap_or(Json::Null);
    if let Some(map) = body.as_object_mut() {
        map.insert("apiVersion".into(), Json::String(T::API_VERSION.into()));
        map.insert("kind".into(), Json::String(T::KIND.into()));
    }
    body
}

/// The arguments of `kubectl` that set an HPA's bounds.
pub fn patch_args(namespace: &str, hpa: &str, (min, max): (u32, u32)) -> Vec<String> {
    vec![
        "patch".into(),
        "horizontalpodautoscaler".into(),
        hpa.into(),
        format!("--namespace={namespace}"),
        format!("--field-manager={}", capacity::FIELD_MANAGER),
        "--type=merge".into(),
        format!(
            "--patch={}",
            json!({"spec": {"minReplicas": min, "maxReplicas": max}})
        ),
    ]
}

/// A container running kubectl with `args`, as the restricted Pod Security Standard wants.
pub fn kubectl_container(name: &str, image: &str, args: Vec<String>) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(image.to_owned()),
        args: Some(args),
        // kubectl keeps a discovery cache under $HOME.
        env: Some(vec![EnvVar {
            name: "HOME".into(),
            value: Some("/tmp".into()),
            ..EnvVar::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("100m".into())),
                ("memory".into(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".into(),
                Quantity("128Mi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// The pod of a capacity Job: kubectl as a non-root user with the capacity account.
pub fn kubectl_pod(
    pull_secret: Option<&str>,
    init: Vec<Container>,
    containers: Vec<Container>,
) -> PodSpec {
    PodSpec {
        service_account_name: Some(ACCOUNT.into()),
        automount_service_account_token: Some(true),
        restart_policy: Some("Never".into()),
        image_pull_secrets: pull_secret.map(|s| vec![LocalObjectReference { name: s.to_owned() }]),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        init_containers: (!init.is_empty()).then_some(init),
        containers,
        volumes: Some(vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }]),
        ..PodSpec::default()
    }
}

/// A CronJob of the capacity account running `pod` on `schedule` in `zone`.
#[allow(clippy::too_many_arguments)]
pub fn cronjob(
    namespace: &str,
    name: &str,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    schedule: String,
    zone: &str,
    starting_deadline: i64,
    pod: PodSpec,
) -> Json {
    let pod_labels = labels.clone();
    to_json(&CronJob {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels.clone()),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(CronJobSpec {
            schedule,
            time_zone: Some(zone.to_owned()),
            concurrency_policy: Some("Forbid".into()),
            starting_deadline_seconds: Some(starting_deadline),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(4),
                    active_deadline_seconds: Some(600),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        status: None,
    })
}

/// Every capacity object of an environment: nothing when no workload has an HPA.
pub fn objects(env: &Environment, ctx: &EnvContext) -> Vec<Json> {
    let workloads = autoscaled(env);
    if workloads.is_empty() {
        return Vec::new();
    }
    let image = kubectl_image(env);
    let ns = ctx.namespace.as_str();
    let account_labels = common_labels(ctx, &format!("{ACCOUNT}-{}", ctx.id));
    let mut cronjobs = Vec::new();
    let mut out = Vec::new();
    for (workload, committed, windows) in &workloads {
        cronjobs.push(expire_name(workload));
        for w in windows {
            let ends = w
                .ends()
                .map(|t| BTreeMap::from([(WINDOW_ENDS.to_owned(), t.to_string())]))
                .unwrap_or_default();
            for (edge, schedule, bounds, deadline) in [
                (
                    Edge::Up,
                    w.up_schedule(),
                    w.bounds(*committed),
                    (w.duration + w.lead).as_secs(),
                ),
                (Edge::Down, w.down_schedule(), *committed, 24 * 3600),
            ] {
                let Ok(schedule) = schedule else { continue };
                let name = capacity::cronjob_name(workload, &w.name, edge);
                let mut labels = common_labels(ctx, &format!("{workload}-{}", ctx.id));
                labels.insert("infra-gen.dev/capacity-window".into(), w.name.clone());
                let container =
                    kubectl_container("kubectl", &image, patch_args(ns, workload, bounds));
                out.push(cronjob(
                    ns,
                    &name,
                    labels,
                    ends.clone(),
                    schedule.to_string(),
                    &w.zone_name,
                    deadline,
                    kubectl_pod(ctx.pull_secret.as_deref(), Vec::new(), vec![container]),
                ));
                cronjobs.push(name);
            }
        }
    }
    let hpas: Vec<String> = workloads.iter().map(|(w, ..)| w.clone()).collect();
    let overrides: Vec<String> = hpas.iter().map(|w| override_name(w)).collect();
    let rule = |group: &str, resource: &str, verbs: &[&str], names: &[String]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        resource_names: Some(names.to_vec()),
        ..PolicyRule::default()
    };
    let mut account = vec![
        to_json(&ServiceAccount {
            metadata: meta(ctx, ACCOUNT, account_labels.clone()),
            automount_service_account_token: Some(true),
            ..ServiceAccount::default()
        }),
        to_json(&Role {
            metadata: meta(ctx, ACCOUNT, account_labels.clone()),
            rules: Some(vec![
                rule(
                    "autoscaling",
                    "horizontalpodautoscalers",
                    &["get", "patch"],
                    &hpas,
                ),
                rule("batch", "cronjobs", &["get", "patch", "delete"], &cronjobs),
                rule("", "configmaps", &["get", "delete"], &overrides),
            ]),
        }),
        to_json(&RoleBinding {
            metadata: meta(ctx, ACCOUNT, account_labels),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: ACCOUNT.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: ACCOUNT.into(),
                namespace: Some(ctx.namespace.clone()),
                ..Subject::default()
            }]),
        }),
    ];
    account.extend(out);
    account
}
