//! What the cluster should hold: the tree's objects with `${VARIABLE}`s in images replaced,
//! the Secrets made from CI variables, and each blue-green workload's objects set aside for
//! the cutover (their live parts — slot, selectors, weights — are filled in from the cluster).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value as Json, json};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{RolloutError, RolloutResult};
use crate::cluster::{Kind, name_of, typed_to_json};
use crate::env::Environment;
use crate::env::model::{Canary, WorkloadKind};
use crate::env::rules::placeholders;
use crate::render::context::{annotations, labels};

/// A blue-green workload's objects from the tree, and its cutover settings.
#[derive(Debug, Clone)]
pub struct BlueGreenSpec {
    /// Workload name.
    pub name: String,
    /// `tcp` (NLB: selector overlap) rather than `web`.
    pub tcp: bool,
    /// The Deployment the slots are made from.
    pub deployment: Json,
    /// The stable Service.
    pub stable: Json,
    /// The preview Service.
    pub preview: Json,
    /// What routes its HTTP requests (web with http): the Ingress with the weighted action,
    /// or the HTTPRoute with the weighted backends ([`super::route`]).
    pub ingress: Option<Json>,
    /// The HPA (re-pointed to the live slot).
    pub hpa: Option<Json>,
    /// Traffic percentages to the new slot.
    pub steps: Vec<u8>,
    /// Pause between steps.
    pub step_pause: Duration,
    /// How long the old slot keeps running.
    pub scale_down_delay: Duration,
    /// tcp: how long both slots stay selected.
    pub overlap: Duration,
    /// Grey release by request header (`rollout.canary`).
    pub canary: Option<Canary>,
}

/// A stateful workload's objects from the tree: the release's spec, instantiated by `apply`
/// as `<name>-<version>`.
#[derive(Debug, Clone)]
pub struct StatefulSpec {
    /// Workload name.
    pub name: String,
    /// The version of this release (a DNS label).
    pub version: String,
    /// The StatefulSet the release is made from.
    pub statefulset: Json,
    /// The headless Service the release's is made from.
    pub headless: Json,
    /// The stable Service (NLB, or ClusterIP behind the ALB), when exposed.
    pub stable: Option<Json>,
    /// The Ingress with the weighted action over the versions.
    pub ingress: Option<Json>,
    /// The HPA (pointed at the newest version).
    pub hpa: Option<Json>,
    /// Exposed through an NLB.
    pub nlb: bool,
    /// How long after the switch `finalize` retires an old version.
    pub retire_after: Option<Duration>,
    /// Left the tree (rebuilt from what runs, to retire it): every version may be retired.
    pub departed: bool,
}

/// Everything one apply wants.
#[derive(Debug, Clone)]
pub struct Desired {
    /// Value of the environment label (environment, plus instance).
    pub environment: String,
    /// Namespace.
    pub namespace: String,
    /// Id of the environment's ApplySet (`applyset.kubernetes.io/part-of` of every object).
    pub applyset: String,
    /// Git commit being deployed.
    pub revision: String,
    /// Objects applied as they are, in dependency order.
    pub objects: Vec<Json>,
    /// Blue-green workloads.
    pub blue_green: Vec<BlueGreenSpec>,
    /// Stateful workloads.
    pub stateful: Vec<StatefulSpec>,
    /// Names of rolling Deployments (waited for after applying).
    pub rolling: Vec<String>,
}

impl Desired {
    /// The Namespace object.
    pub fn namespace_object(&self) -> Option<&Json> {
        self.objects
            .iter()
            .find(|o| o.get("kind").and_then(Json::as_str) == Some("Namespace"))
    }

    /// Sets the bounds of each HPA to those in force (by workload name), wherever the HPA
    /// is applied from: the plain objects, a blue-green or a stateful workload.
    pub fn raise_capacity(&mut self, bounds: &BTreeMap<String, crate::capacity::Capacity>) {
        let hpas = self
            .objects
            .iter_mut()
            .filter(|o| o.get("kind").and_then(Json::as_str) == Some("HorizontalPodAutoscaler"))
            .chain(self.blue_green.iter_mut().filter_map(|b| b.hpa.as_mut()))
            .chain(self.stateful.iter_mut().filter_map(|s| s.hpa.as_mut()));
        for hpa in hpas {
            if let Some(c) = bounds.get(name_of(hpa))
                && let Some(spec) = hpa.get_mut("spec").and_then(Json::as_object_mut)
            {
                spec.insert("minReplicas".into(), json!(c.min));
                spec.insert("maxReplicas".into(), json!(c.max));
            }
        }
    }

    /// Leaves out the CronJobs of one-off capacity windows that ended before `now` (pruned
    /// from the cluster like anything the tree no longer has).
    pub fn drop_ended_windows(&mut self, now: jiff::Timestamp) {
        self.objects.retain(|o| {
            let ends = o
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(crate::render::capacity::WINDOW_ENDS))
                .and_then(Json::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            ends.is_none_or(|ends| ends > now)
        });
    }

    /// Pod labels of every workload (to check Fargate profile selectors).
    pub fn pod_labels(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let templates = self
            .objects
            .iter()
            .chain(self.blue_green.iter().map(|b| &b.deployment))
            .chain(self.stateful.iter().map(|s| &s.statefulset))
            .filter_map(|o| {
                let path = match o.get("kind").and_then(Json::as_str)? {
                    "Deployment" | "StatefulSet" => "/spec/template/metadata/labels",
                    "CronJob" => "/spec/jobTemplate/spec/template/metadata/labels",
                    _ => return None,
                };
                let labels = o.pointer(path)?.as_object()?;
                Some((
                    name_of(o).to_owned(),
                    labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect(),
                ))
            });
        templates.collect()
    }
}

/// Reads the objects of a tree directory (every file but `kustomization.yaml`).
pub fn read_tree(dir: &Path) -> RolloutResult<Vec<Json>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| {
            RolloutError::Input(format!(
                "cannot read {}: {e}; run `infra-gen render` first",
                dir.display()
            ))
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name()
                    .is_some_and(|n| n != crate::tree::KUSTOMIZATION)
        })
        .collect();
    files.sort();
    let mut objects = Vec::with_capacity(files.len());
    for file in files {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| RolloutError::Input(format!("cannot read {}: {e}", file.display())))?;
        let arc: std::sync::Arc<Path> = std::sync::Arc::from(file.as_path());
        let node = crate::env::yaml::parse(&arc, &text)
            .map_err(|d| RolloutError::Input(d.to_string()))?
            .ok_or_else(|| RolloutError::Input(format!("{} is empty", file.display())))?;
        objects.push(node.to_json());
    }
    Ok(objects)
}

fn annotation<'a>(object: &'a Json, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/annotations")?.get(key)?.as_str()
}

fn seconds(object: &Json, key: &str, default: u64) -> Duration {
    Duration::from_secs(
        annotation(object, key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// Replaces `${VAR}` in every container image; collects the names of unset variables.
fn substitute_images(
    object: &mut Json,
    vars: &dyn Fn(&str) -> Option<String>,
    missing: &mut Vec<String>,
) {
    let what = super::super::cluster::describe(object);
    let containers = [
        "/spec/template/spec/containers",
        "/spec/jobTemplate/spec/template/spec/containers",
    ];
    for path in containers {
        let Some(list) = object.pointer_mut(path).and_then(Json::as_array_mut) else {
            continue;
        };
        for container in list {
            let Some(image) = container
                .get("image")
                .and_then(Json::as_str)
                .map(str::to_owned)
            else {
                continue;
            };
            let mut resolved = image.clone();
            for var in placeholders(&image) {
                match vars(&var).filter(|v| !v.is_empty()) {
                    Some(value) => resolved = resolved.replace(&format!("${{{var}}}"), &value),
                    None => missing.push(format!("{var} (image of {what})")),
                }
            }
            container["image"] = Json::String(resolved);
        }
    }
}

/// A Secret of the environment, built from the typed struct (its data is base64 as the API
/// wants it, by the library's `ByteString` serializer).
fn secret_object(
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    type_: &str,
    data: BTreeMap<String, ByteString>,
) -> RolloutResult<Json> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    Ok(typed_to_json(&secret)?)
}

/// The Secrets of the environment, from CI variables. Values never leave this function but
/// inside the returned objects, which are sent to the API server only.
fn secrets(
    env: &Environment,
    namespace: &str,
    env_labels: &BTreeMap<String, String>,
    vars: &dyn Fn(&str) -> Option<String>,
    missing: &mut Vec<String>,
) -> RolloutResult<Vec<Json>> {
    let mut out = Vec::new();
    let mut get = |var: &str, purpose: String| match vars(var).filter(|v| !v.is_empty()) {
        Some(value) => Some(value),
        None => {
            missing.push(format!("{var} ({purpose})"));
            None
        }
    };
    if let Some(registry) = &env.spec.registry {
        let user_var = registry
            .username
            .as_ref()
            .map_or("CI_REGISTRY_USER", |f| f.from_env.as_str())
            .to_owned();
        let password_var = registry
            .password
            .as_ref()
            .map_or("CI_REGISTRY_PASSWORD", |f| f.from_env.as_str())
            .to_owned();
        let user = get(
            &user_var,
            format!("registry user of pull secret {}", registry.pull_secret),
        );
        let password = get(
            &password_var,
            format!("registry password of pull secret {}", registry.pull_secret),
        );
        if let (Some(user), Some(password)) = (user, password) {
            let server = vars("CI_REGISTRY")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| registry.server.clone());
            let auth = STANDARD.encode(format!("{user}:{password}"));
            // The payload is the Docker config format, not a Kubernetes object.
            let config =
                json!({"auths": {server: {"username": user, "password": password, "auth": auth}}});
            out.push(secret_object(
                &registry.pull_secret,
                namespace,
                env_labels,
                "kubernetes.io/dockerconfigjson",
                BTreeMap::from([(
                    ".dockerconfigjson".to_owned(),
                    ByteString(config.to_string().into_bytes()),
                )]),
            )?);
        }
    }
    for (name, keys) in &env.spec.secrets {
        let mut data = BTreeMap::new();
        for (key, source) in keys {
            if let Some(value) = get(&source.from_env, format!("secret {name} key {key}")) {
                data.insert(key.clone(), ByteString(value.into_bytes()));
            }
        }
        out.push(secret_object(name, namespace, env_labels, "Opaque", data)?);
    }
    Ok(out)
}

/// Builds what the cluster should hold from the tree's objects.
pub fn build(
    env: &Environment,
    tree: Vec<Json>,
    vars: &dyn Fn(&str) -> Option<String>,
    revision: &str,
) -> RolloutResult<Desired> {
    let namespace = env.namespace();
    let environment = match &env.instance {
        Some(instance) => format!("{}-{instance}", env.name),
        None => env.name.clone(),
    };
    let env_labels = BTreeMap::from([
        (labels::MANAGED_BY.to_owned(), "infra-gen".to_owned()),
        (labels::ENVIRONMENT.to_owned(), environment.clone()),
    ]);
    let applyset = super::applyset::id(&namespace);
    let mut missing = Vec::new();
    let mut tree = tree;
    for object in &mut tree {
        substitute_images(object, vars, &mut missing);
        super::applyset::label(object, &applyset);
    }
    let mut secret_objects = secrets(env, &namespace, &env_labels, vars, &mut missing)?;
    for object in &mut secret_objects {
        super::applyset::label(object, &applyset);
    }
    if !missing.is_empty() {
        return Err(RolloutError::Input(format!(
            "these CI variables are not set: {}; define them in GitLab (Settings → CI/CD → Variables; mask secrets) or export them",
            missing.join(", ")
        )));
    }

    let find = |kind: &str, name: &str| {
        tree.iter()
            .find(|o| o.get("kind").and_then(Json::as_str) == Some(kind) && name_of(o) == name)
            .cloned()
    };
    let mut blue_green = Vec::new();
    let mut set_aside: Vec<(String, String)> = Vec::new();
    let mut rolling = Vec::new();
    for deployment in tree
        .iter()
        .filter(|o| o.get("kind").and_then(Json::as_str) == Some("Deployment"))
    {
        let name = name_of(deployment).to_owned();
        if annotation(deployment, annotations::ROLLOUT) != Some("blue-green") {
            rolling.push(name);
            continue;
        }
        let missing_object = |what: &str| {
            RolloutError::Input(format!(
                "the tree has blue-green Deployment {name} but no {what}; run `infra-gen render`"
            ))
        };
        let stable =
            find("Service", &name).ok_or_else(|| missing_object(&format!("Service {name}")))?;
        let preview = find("Service", &format!("{name}-preview"))
            .ok_or_else(|| missing_object(&format!("Service {name}-preview")))?;
        let tcp = env
            .spec
            .workloads
            .get(&name)
            .is_some_and(|w| w.kind == WorkloadKind::Tcp);
        let steps: Vec<u8> = annotation(deployment, annotations::STEPS)
            .map(|s| s.split(',').filter_map(|p| p.trim().parse().ok()).collect())
            .filter(|s: &Vec<u8>| s.last() == Some(&100))
            .unwrap_or_else(|| vec![100]);
        for (kind, object_name) in [
            ("Deployment", name.clone()),
            ("Service", name.clone()),
            ("Service", format!("{name}-preview")),
            ("Ingress", name.clone()),
            ("HTTPRoute", name.clone()),
            ("HorizontalPodAutoscaler", name.clone()),
        ] {
            set_aside.push((kind.to_owned(), object_name));
        }
        let ingress = find("Ingress", &name).or_else(|| find("HTTPRoute", &name));
        if let Some(route) = &ingress {
            super::route::check_tree_object(route, &name)?;
        }
        blue_green.push(BlueGreenSpec {
            tcp,
            deployment: deployment.clone(),
            stable,
            preview,
            ingress,
            hpa: find("HorizontalPodAutoscaler", &name),
            steps,
            step_pause: seconds(deployment, annotations::STEP_PAUSE, 30),
            scale_down_delay: seconds(deployment, annotations::SCALE_DOWN_DELAY, 600),
            overlap: seconds(deployment, annotations::OVERLAP, 0),
            canary: annotation(deployment, annotations::CANARY)
                .map(|text| {
                    serde_json::from_str::<Canary>(text).map_err(|e| {
                        RolloutError::Input(format!(
                            "Deployment {name}: annotation {} is not {{\"header\": …, \"values\": […]}} ({e}); run `infra-gen render`",
                            annotations::CANARY
                        ))
                    })
                })
                .transpose()?,
            name,
        });
    }
    let mut stateful = Vec::new();
    for set in tree
        .iter()
        .filter(|o| o.get("kind").and_then(Json::as_str) == Some("StatefulSet"))
    {
        let name = name_of(set).to_owned();
        let missing_object = |what: &str| {
            RolloutError::Input(format!(
                "the tree has stateful StatefulSet {name} but no {what}; run `infra-gen render`"
            ))
        };
        let headless = find("Service", &format!("{name}-headless"))
            .ok_or_else(|| missing_object(&format!("Service {name}-headless")))?;
        // The version: the file's, or the tag of the image as resolved now.
        let written = annotation(set, annotations::VERSION).unwrap_or_default();
        let version = if written.contains("${") || written.is_empty() {
            set.pointer("/spec/template/spec/containers/0/image")
                .and_then(Json::as_str)
                .and_then(crate::env::rules::version_of_image)
        } else {
            Some(written.to_owned())
        }
        .ok_or_else(|| {
            RolloutError::Input(format!(
                "stateful workload {name}: no version (its image has no tag); set `version:` in the environment file"
            ))
        })?;
        if name.len() + 1 + version.len() > crate::env::rules::MAX_VERSIONED_NAME {
            return Err(RolloutError::Input(format!(
                "stateful workload {name}: the release {name}-{version} is longer than {} characters; set a shorter `version:`",
                crate::env::rules::MAX_VERSIONED_NAME
            )));
        }
        let nlb = env
            .spec
            .workloads
            .get(&name)
            .is_some_and(|w| w.tcp.is_some());
        for (kind, object_name) in [
            ("StatefulSet", name.clone()),
            ("Service", format!("{name}-headless")),
            ("Service", name.clone()),
            ("Ingress", name.clone()),
            ("HorizontalPodAutoscaler", name.clone()),
        ] {
            set_aside.push((kind.to_owned(), object_name));
        }
        let mut statefulset = set.clone();
        // VERSION as resolved (the file may say `${CI_COMMIT_SHA}` through the image tag).
        if let Some(env_list) = statefulset
            .pointer_mut("/spec/template/spec/containers/0/env")
            .and_then(Json::as_array_mut)
        {
            for var in env_list.iter_mut() {
                if var.get("name").and_then(Json::as_str) == Some("VERSION")
                    && var
                        .get("value")
                        .and_then(Json::as_str)
                        .is_some_and(|v| v.contains("${"))
                {
                    var["value"] = Json::String(version.clone());
                }
            }
        }
        stateful.push(StatefulSpec {
            retire_after: annotation(set, annotations::RETIRE_AFTER)
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs),
            statefulset,
            headless,
            stable: find("Service", &name),
            ingress: find("Ingress", &name),
            hpa: find("HorizontalPodAutoscaler", &name),
            nlb,
            version,
            name,
            departed: false,
        });
    }
    let mut objects: Vec<Json> = tree
        .into_iter()
        .filter(|o| {
            let kind = o.get("kind").and_then(Json::as_str).unwrap_or_default();
            !set_aside.iter().any(|(k, n)| k == kind && n == name_of(o))
        })
        .chain(secret_objects)
        .collect();
    let order = |o: &Json| {
        Kind::of(o)
            .ok()
            .and_then(|k| Kind::APPLIED.iter().position(|a| *a == k))
            .unwrap_or(usize::MAX)
    };
    objects.sort_by_key(|o| order(o));
    Ok(Desired {
        environment,
        applyset,
        namespace,
        revision: revision.to_owned(),
        objects,
        blue_green,
        stateful,
        rolling,
    })
}

/// The revision being deployed: `CI_COMMIT_SHA`, else git HEAD of `root`, else `unknown`.
pub fn revision(root: &Path) -> String {
    if let Ok(sha) = std::env::var("CI_COMMIT_SHA")
        && !sha.is_empty()
    {
        return sha;
    }
    git2::Repository::discover(root)
        .ok()
        .and_then(|r| {
            r.head()
                .ok()?
                .peel_to_commit()
                .ok()
                .map(|c| c.id().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
