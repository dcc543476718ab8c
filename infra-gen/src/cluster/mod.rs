//! The cluster: the only module that imports `kube`. Objects are plain JSON in and out;
//! writes are server-side applies with field manager `infra-gen`, retried on transient
//! failures (5xx, 429, 409 conflicts, dropped connections). Every write asks the API server
//! for strict field validation, so a field it does not know is an error rather than silently
//! dropped, and every write first checks that this run still holds the deploy lock.

pub mod connect;
pub mod diagnose;
pub mod lease;
pub mod wait;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value as Json;

/// The field manager of every write.
pub const FIELD_MANAGER: &str = "infra-gen";

/// Why a cluster call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The API server answered with an error status.
    #[error("{action}: the API server answered {code} {reason}: {message}")]
    Api {
        /// What was being done, e.g. "apply Deployment controltower-green".
        action: String,
        /// HTTP status.
        code: u16,
        /// Kubernetes reason (`NotFound`, `Forbidden`, …).
        reason: String,
        /// Kubernetes message.
        message: String,
    },
    /// The API server could not be reached, or the answer could not be read.
    #[error("{action}: {message}")]
    Transport {
        /// What was being done.
        action: String,
        /// What went wrong.
        message: String,
    },
    /// A kind this tool does not manage.
    #[error("{api_version} {kind} is not a kind infra-gen manages")]
    UnknownKind {
        /// apiVersion.
        api_version: String,
        /// kind.
        kind: String,
    },
    /// The credentials or kubeconfig cannot be used.
    #[error("{0}")]
    Config(String),
    /// The kubeconfig reaches another cluster than the environment names.
    #[error("{0}")]
    Identity(String),
    /// This run no longer holds the deploy lock, so it stopped before the write.
    #[error("stopped at `{action}` without writing: {reason}")]
    LockLost {
        /// The write that was not made.
        action: String,
        /// Who holds the lock now, or why it could not be renewed.
        reason: String,
    },
}

impl ClusterError {
    /// The HTTP status, for API errors.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClusterError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this is the lost-lock stop.
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, ClusterError::LockLost { .. })
    }

    fn is_transient(&self) -> bool {
        match self {
            ClusterError::Api { code, .. } => *code >= 500 || *code == 429 || *code == 409,
            ClusterError::Transport { .. } => true,
            _ => false,
        }
    }
}

/// Result alias of cluster calls.
pub type ClusterResult<T> = Result<T, ClusterError>;

fn from_kube(action: &str, error: kube::Error) -> ClusterError {
    match error {
        kube::Error::Api(status) => ClusterError::Api {
            action: action.to_owned(),
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        other => ClusterError::Transport {
            action: action.to_owned(),
            message: other.to_string(),
        },
    }
}

/// A kind this tool reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// v1 Namespace.
    Namespace,
    /// v1 ServiceAccount.
    ServiceAccount,
    /// rbac.authorization.k8s.io/v1 Role.
    Role,
    /// rbac.authorization.k8s.io/v1 RoleBinding.
    RoleBinding,
    /// v1 ConfigMap.
    ConfigMap,
    /// v1 Secret.
    Secret,
    /// v1 Service.
    Service,
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// batch/v1 CronJob.
    CronJob,
    /// networking.k8s.io/v1 Ingress.
    Ingress,
    /// autoscaling/v2 HorizontalPodAutoscaler.
    HorizontalPodAutoscaler,
    /// policy/v1 PodDisruptionBudget.
    PodDisruptionBudget,
    /// coordination.k8s.io/v1 Lease.
    Lease,
    /// v1 Pod.
    Pod,
    /// v1 Event.
    Event,
    /// batch/v1 Job (read: what a capacity CronJob ran).
    Job,
    /// apiregistration.k8s.io/v1 APIService (read: whether the metrics API answers).
    ApiService,
    /// discovery.k8s.io/v1 EndpointSlice: which pods a Service's consumers (a Gateway, the
    /// cloud's load balancer) may send to; read, never written.
    EndpointSlice,
    /// gateway.networking.k8s.io/v1 HTTPRoute (`traffic.provider: gateway-api`): served only
    /// where the Gateway API's CRDs are installed.
    HttpRoute,
    /// elbv2.k8s.aws/v1beta1 TargetGroupBinding: made by the AWS Load Balancer Controller;
    /// read to find a Service's target groups, never written or pruned.
    TargetGroupBinding,
}

impl Kind {
    /// Kinds whose objects `apply` creates and prunes, in the order they are applied:
    /// what others depend on first, what exposes traffic last.
    pub const APPLIED: [Kind; 14] = [
        Kind::Namespace,
        Kind::ServiceAccount,
        Kind::Role,
        Kind::RoleBinding,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Service,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::CronJob,
        Kind::Ingress,
        Kind::HttpRoute,
        Kind::HorizontalPodAutoscaler,
        Kind::PodDisruptionBudget,
    ];

    /// (group, version, kind, plural, namespaced)
    fn meta(self) -> (&'static str, &'static str, &'static str, &'static str, bool) {
        match self {
            Kind::Namespace => ("", "v1", "Namespace", "namespaces", false),
            Kind::ServiceAccount => ("", "v1", "ServiceAccount", "serviceaccounts", true),
            Kind::Role => ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
            Kind::RoleBinding => (
                "rbac.authorization.k8s.io",
                "v1",
                "RoleBinding",
                "rolebindings",
                true,
            ),
            Kind::ConfigMap => ("", "v1", "ConfigMap", "configmaps", true),
            Kind::Secret => ("", "v1", "Secret", "secrets", true),
            Kind::Service => ("", "v1", "Service", "services", true),
            Kind::Deployment => ("apps", "v1", "Deployment", "deployments", true),
            Kind::StatefulSet => ("apps", "v1", "StatefulSet", "statefulsets", true),
            Kind::CronJob => ("batch", "v1", "CronJob", "cronjobs", true),
            Kind::Ingress => ("networking.k8s.io", "v1", "Ingress", "ingresses", true),
            Kind::EndpointSlice => (
                "discovery.k8s.io",
                "v1",
                "EndpointSlice",
                "endpointslices",
                true,
            ),
            Kind::HttpRoute => (
                "gateway.networking.k8s.io",
                "v1",
                "HTTPRoute",
                "httproutes",
                true,
            ),
            Kind::HorizontalPodAutoscaler => (
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
                true,
            ),
            Kind::PodDisruptionBudget => (
                "policy",
                "v1",
                "PodDisruptionBudget",
                "poddisruptionbudgets",
                true,
            ),
            Kind::Lease => ("coordination.k8s.io", "v1", "Lease", "leases", true),
            Kind::Pod => ("", "v1", "Pod", "pods", true),
            Kind::Event => ("", "v1", "Event", "events", true),
            Kind::Job => ("batch", "v1", "Job", "jobs", true),
            Kind::ApiService => (
                "apiregistration.k8s.io",
                "v1",
                "APIService",
                "apiservices",
                false,
            ),
            Kind::TargetGroupBinding => (
                "elbv2.k8s.aws",
                "v1beta1",
                "TargetGroupBinding",
                "targetgroupbindings",
                true,
            ),
        }
    }

    /// The API group, e.g. `apps` (`""` for the core group).
    pub fn group(self) -> &'static str {
        self.meta().0
    }

    /// The kind name, e.g. `Deployment`.
    pub fn name(self) -> &'static str {
        self.meta().2
    }

    /// `apps/v1`, `v1`, …
    pub fn api_version(self) -> String {
        let (group, version, ..) = self.meta();
        if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        }
    }

    /// The kind of an object, from its apiVersion and kind.
    pub fn of(object: &Json) -> ClusterResult<Kind> {
        let api_version = object
            .get("apiVersion")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let kind = object
            .get("kind")
            .and_then(Json::as_str)
            .unwrap_or_default();
        Kind::APPLIED
            .into_iter()
            .chain([Kind::Lease, Kind::Pod, Kind::Event, Kind::Job])
            .find(|k| k.name() == kind && k.api_version() == api_version)
            .ok_or_else(|| ClusterError::UnknownKind {
                api_version: api_version.to_owned(),
                kind: kind.to_owned(),
            })
    }

    fn resource(self) -> ApiResource {
        let (group, version, kind, plural, _) = self.meta();
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    fn is_namespaced(self) -> bool {
        self.meta().4
    }
}

/// `metadata.name` of an object.
pub fn name_of(object: &Json) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .unwrap_or_default()
}

/// `Kind/name` of an object, for messages.
pub fn describe(object: &Json) -> String {
    format!(
        "{}/{}",
        object.get("kind").and_then(Json::as_str).unwrap_or("?"),
        name_of(object)
    )
}

/// A typed Kubernetes object as the JSON this module takes. The k8s-openapi serializers
/// write the API's own formats (MicroTime with six fractional digits, base64 byte data), so
/// objects infra-gen makes itself are built as typed structs and converted here.
pub fn typed_to_json<K>(object: &K) -> ClusterResult<Json>
where
    K: k8s_openapi::Resource + serde::Serialize,
{
    let mut json = serde_json::to_value(object).map_err(|e| ClusterError::Transport {
        action: format!("serialise a {}", K::KIND),
        message: e.to_string(),
    })?;
    if let Some(map) = json.as_object_mut() {
        map.insert("apiVersion".into(), K::API_VERSION.into());
        map.insert("kind".into(), K::KIND.into());
    }
    Ok(json)
}

/// Whether this run still holds the deploy lock. The lease's renewer marks it lost when
/// another run took the lease over, or when renewals kept failing until it expired; from then
/// on every write of the [`Cluster`] is refused before it is sent.
#[derive(Debug, Default)]
pub struct LockWatch {
    lost: Mutex<Option<String>>,
    /// The holder writes only until this instant unless a renewal moves it: two thirds of the
    /// lease's lifetime after the last renewal that succeeded (client-go's leader election
    /// keeps its RenewDeadline below the LeaseDuration alike), checked on every write
    /// whatever the renewal in flight is doing, so the holder has stopped before anyone else
    /// may take the lease over.
    deadline: Mutex<Option<(std::time::Instant, String)>>,
    /// Why the last renewal failed, for the message when the deadline passes.
    last_failure: Mutex<Option<String>>,
}

impl LockWatch {
    /// Records why the lock is gone.
    pub fn lose(&self, reason: String) {
        if let Ok(mut lost) = self.lost.lock()
            && lost.is_none()
        {
            *lost = Some(reason);
        }
    }

    /// Sets the instant after which the lock counts as lost unless renewed, and what to say
    /// then.
    pub fn hold_until(&self, deadline: std::time::Instant, reason: String) {
        if let Ok(mut d) = self.deadline.lock() {
            *d = Some((deadline, reason));
        }
        if let Ok(mut f) = self.last_failure.lock() {
            *f = None;
        }
    }

    /// Records why a renewal failed (the deadline stays where the last success put it).
    pub fn note_failure(&self, cause: String) {
        if let Ok(mut f) = self.last_failure.lock() {
            *f = Some(cause);
        }
    }

    /// Why the lock is gone, if it is.
    pub fn lost(&self) -> Option<String> {
        if let Some(reason) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Some(reason);
        }
        let deadline = self.deadline.lock().ok().and_then(|d| d.clone());
        match deadline {
            Some((at, reason)) if std::time::Instant::now() >= at => {
                let reason = match self.last_failure.lock().ok().and_then(|f| f.clone()) {
                    Some(cause) => format!("{reason} (last error: {cause})"),
                    None => reason,
                };
                self.lose(reason.clone());
                Some(reason)
            }
            _ => None,
        }
    }
}

/// A connection to one namespace of a cluster. Counts its writes.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    namespace: String,
    writes: Arc<AtomicUsize>,
    lock: Arc<LockWatch>,
}

const ATTEMPTS: u32 = 6;

async fn retry<T, F, Fut>(mut call: F) -> ClusterResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ClusterResult<T>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "transient cluster error; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `request` with `fieldValidation=Strict` added to its query (kube's `PostParams` has no
/// field for it; `PatchParams` does).
fn strict(mut request: http::Request<Vec<u8>>) -> ClusterResult<http::Request<Vec<u8>>> {
    let uri = request.uri().to_string();
    let joined = if uri.ends_with('?') || uri.ends_with('&') {
        format!("{uri}fieldValidation=Strict")
    } else if uri.contains('?') {
        format!("{uri}&fieldValidation=Strict")
    } else {
        format!("{uri}?fieldValidation=Strict")
    };
    *request.uri_mut() = joined.parse().map_err(|e| ClusterError::Transport {
        action: format!("build the request {uri}"),
        message: format!("{e}"),
    })?;
    Ok(request)
}

impl Cluster {
    /// A connection to `namespace` through `client`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            writes: Default::default(),
            lock: Default::default(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Writes made so far (applies, creates, replaces, deletes).
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// The lock state every write checks.
    pub fn lock_watch(&self) -> Arc<LockWatch> {
        self.lock.clone()
    }

    /// The same connection without the lock check, for the lease's own writes (a renewal
    /// must still be possible to learn that the lock was lost).
    fn unguarded(&self) -> Cluster {
        Cluster {
            lock: Default::default(),
            ..self.clone()
        }
    }

    /// Fails when the lock is lost, naming the write that will not be made.
    pub fn check_lock(&self, action: &str) -> ClusterResult<()> {
        match self.lock.lost() {
            Some(reason) => Err(ClusterError::LockLost {
                action: action.to_owned(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Sleeps, waking early with the lost-lock error when the lock is lost meanwhile.
    pub async fn pause(&self, duration: Duration, during: &str) -> ClusterResult<()> {
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            self.check_lock(during)?;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(());
            }
            tokio::time::sleep((deadline - now).min(Duration::from_millis(200))).await;
        }
    }

    fn api(&self, kind: Kind) -> Api<DynamicObject> {
        if kind.is_namespaced() {
            Api::namespaced_with(self.client.clone(), &self.namespace, &kind.resource())
        } else {
            Api::all_with(self.client.clone(), &kind.resource())
        }
    }

    /// Reads an object; `None` when it does not exist.
    pub async fn get(&self, kind: Kind, name: &str) -> ClusterResult<Option<Json>> {
        let action = format!("read {}/{name}", kind.name());
        let api = self.api(kind);
        retry(|| async {
            match api.get_opt(name).await {
                Ok(found) => found
                    .map(to_json)
                    .transpose()
                    .map_err(|m| ClusterError::Transport {
                        action: action.clone(),
                        message: m,
                    }),
                Err(e) => Err(from_kube(&action, e)),
            }
        })
        .await
    }

    /// Lists objects matching a label selector (and optionally a field selector).
    pub async fn list(
        &self,
        kind: Kind,
        labels: &str,
        fields: Option<&str>,
    ) -> ClusterResult<Vec<Json>> {
        let action = format!("list {} with {labels}", kind.name());
        let api = self.api(kind);
        let mut params = ListParams::default();
        if !labels.is_empty() {
            params = params.labels(labels);
        }
        if let Some(fields) = fields {
            params = params.fields(fields);
        }
        retry(|| async {
            let list = api.list(&params).await.map_err(|e| from_kube(&action, e))?;
            list.items
                .into_iter()
                .map(|item| {
                    // List items usually come without apiVersion and kind.
                    let mut json = to_json(item)?;
                    if let Some(map) = json.as_object_mut() {
                        map.insert("apiVersion".into(), kind.api_version().into());
                        map.insert("kind".into(), kind.name().into());
                    }
                    Ok(json)
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(|m| ClusterError::Transport {
                    action: action.clone(),
                    message: m,
                })
        })
        .await
    }

    /// Server-side apply (force: infra-gen owns the fields it sets). With `dry_run`, the API
    /// server computes the result without storing it.
    pub async fn apply(&self, object: &Json, dry_run: bool) -> ClusterResult<Json> {
        self.apply_as(object, FIELD_MANAGER, true, dry_run).await
    }

    /// Server-side apply as another field manager, forced or not (a conflict is then 409).
    pub async fn apply_as(
        &self,
        object: &Json,
        manager: &str,
        force: bool,
        dry_run: bool,
    ) -> ClusterResult<Json> {
        let kind = Kind::of(object)?;
        let name = name_of(object).to_owned();
        let action = format!("apply {}/{name}", kind.name());
        if !dry_run {
            self.check_lock(&action)?;
        }
        let api = self.api(kind);
        let mut params = PatchParams::apply(manager).validation_strict();
        if force {
            params = params.force();
        }
        if dry_run {
            params = params.dry_run();
        }
        let result = retry(|| async {
            let applied = api
                .patch(&name, &params, &Patch::Apply(object))
                .await
                .map_err(|e| from_kube(&action, e))?;
            to_json(applied).map_err(|m| ClusterError::Transport {
                action: action.clone(),
                message: m,
            })
        })
        .await?;
        if !dry_run {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        Ok(result)
    }

    async fn send(&self, request: http::Request<Vec<u8>>, action: &str) -> ClusterResult<Json> {
        let object: DynamicObject = self
            .client
            .request(strict(request)?)
            .await
            .map_err(|e| from_kube(action, e))?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        to_json(object).map_err(|m| ClusterError::Transport {
            action: action.to_owned(),
            message: m,
        })
    }

    fn body(object: &Json, action: &str) -> ClusterResult<Vec<u8>> {
        serde_json::to_vec(object).map_err(|e| ClusterError::Transport {
            action: action.to_owned(),
            message: e.to_string(),
        })
    }

    fn post_params() -> PostParams {
        PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_owned()),
        }
    }

    /// Creates an object; a 409 (already exists) is returned, not retried.
    pub async fn create(&self, object: &Json) -> ClusterResult<Json> {
        let kind = Kind::of(object)?;
        let action = format!("create {}", describe(object));
        self.check_lock(&action)?;
        let request = kube::core::Request::new(self.api(kind).resource_url())
            .create(&Self::post_params(), Self::body(object, &action)?)
            .map_err(|e| ClusterError::Transport {
                action: action.clone(),
                message: e.to_string(),
            })?;
        self.send(request, &action).await
    }

    /// Replaces an object; with `metadata.resourceVersion` set, a concurrent change gives 409.
    pub async fn replace(&self, object: &Json) -> ClusterResult<Json> {
        let kind = Kind::of(object)?;
        let action = format!("replace {}", describe(object));
        self.check_lock(&action)?;
        let request = kube::core::Request::new(self.api(kind).resource_url())
            .replace(
                name_of(object),
                &Self::post_params(),
                Self::body(object, &action)?,
            )
            .map_err(|e| ClusterError::Transport {
                action: action.clone(),
                message: e.to_string(),
            })?;
        self.send(request, &action).await
    }

    /// Deletes an object; deleting one that is gone is fine.
    pub async fn delete(&self, kind: Kind, name: &str) -> ClusterResult<()> {
        let action = format!("delete {}/{name}", kind.name());
        self.check_lock(&action)?;
        let api = self.api(kind);
        retry(|| async {
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(e) => Err(from_kube(&action, e)),
            }
        })
        .await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Deletes an object only if it is still the one read: the same uid and
    /// resourceVersion (a 409 says it changed meanwhile, and nothing was deleted).
    pub async fn delete_exactly(
        &self,
        kind: Kind,
        name: &str,
        uid: &str,
        resource_version: &str,
    ) -> ClusterResult<()> {
        let action = format!("delete {}/{name}", kind.name());
        self.check_lock(&action)?;
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: Some(resource_version.to_owned()),
            }),
            ..DeleteParams::background()
        };
        match self.api(kind).delete(name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(from_kube(&action, e)),
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Sets `spec.replicas` of a Deployment (a merge patch: the rest of the object, and who
    /// owns it, stay as they are).
    pub async fn scale(&self, name: &str, replicas: i32) -> ClusterResult<()> {
        self.scale_kind(Kind::Deployment, name, replicas).await
    }

    /// Sets `spec.replicas` of a Deployment or StatefulSet.
    pub async fn scale_kind(&self, kind: Kind, name: &str, replicas: i32) -> ClusterResult<()> {
        let action = format!("scale {}/{name} to {replicas}", kind.name());
        self.check_lock(&action)?;
        let api = self.api(kind);
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        }
        .validation_strict();
        retry(|| async {
            api.patch(name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ())
                .map_err(|e| from_kube(&action, e))
        })
        .await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Sets one label of an object (a merge patch: nothing else of it changes).
    pub async fn label(&self, kind: Kind, name: &str, key: &str, value: &str) -> ClusterResult<()> {
        let action = format!("label {}/{name} {key}={value}", kind.name());
        self.check_lock(&action)?;
        let api = self.api(kind);
        let patch = serde_json::json!({"metadata": {"labels": {key: value}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        retry(|| async {
            match api.patch(name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(e) => Err(from_kube(&action, e)),
            }
        })
        .await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// The last `lines` lines a container of a pod wrote (`previous`: its instance before the
    /// last restart).
    pub async fn pod_logs(
        &self,
        pod: &str,
        container: &str,
        previous: bool,
        lines: i64,
    ) -> ClusterResult<String> {
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let params = kube::api::LogParams {
            container: Some(container.to_owned()),
            previous,
            tail_lines: Some(lines),
            ..kube::api::LogParams::default()
        };
        api.logs(pod, &params)
            .await
            .map_err(|e| from_kube(&format!("read the log of pod {pod}"), e))
    }

    /// The typed Deployment API (for the watcher).
    pub fn deployments(&self) -> Api<k8s_openapi::api::apps::v1::Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The typed StatefulSet API (for the watcher).
    pub fn statefulsets(&self) -> Api<k8s_openapi::api::apps::v1::StatefulSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

fn to_json(object: DynamicObject) -> Result<Json, String> {
    serde_json::to_value(object).map_err(|e| e.to_string())
}
