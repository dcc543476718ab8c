//! The environment file format, as Rust types. The JSON Schema (`infra-gen schema`,
//! `environments/schema.json`) is generated from these types and their doc comments, so the
//! editor help, the validation and the code can never disagree.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One environment: `environments/<name>.yaml`, with `environments/_defaults.yaml` merged under
/// it (mappings merge, lists and scalars replace).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "infra-gen environment file")]
pub struct EnvironmentSpec {
    /// The GitLab project. Its name (slugified) and id make the namespace `<name>-<id>`.
    pub project: Project,
    /// The EKS cluster this environment deploys to.
    pub cluster: Cluster,
    /// Namespace options.
    #[serde(default)]
    pub namespace: NamespaceOptions,
    /// A review environment: rendered per merge request (`--instance mr-42`), never into
    /// `manifests/`; it may use `:latest` images.
    #[serde(default)]
    pub review: bool,
    /// Container registry and the name of the image-pull secret made at apply time.
    #[serde(default)]
    pub registry: Option<Registry>,
    /// The workloads, by name (a DNS-1123 label such as `controltower`).
    pub workloads: BTreeMap<String, Workload>,
    /// Secrets made at apply time from CI variables; their values are never rendered.
    /// `name: {key: {fromEnv: VARIABLE}}`.
    #[serde(default)]
    pub secrets: BTreeMap<String, BTreeMap<String, FromEnv>>,
}

/// The GitLab project.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Project {
    /// Project name, e.g. `controltower` (slugified for the namespace).
    pub name: String,
    /// Numeric GitLab project id, e.g. `9391`.
    pub id: u64,
}

/// Where pods run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Compute {
    /// EKS Fargate: every pod gets its own micro-VM sized from its requests.
    #[default]
    Fargate,
    /// EC2 nodes (managed node groups, Karpenter).
    Ec2,
}

/// The EKS cluster.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    /// EKS cluster name, e.g. `games-prod`.
    pub name: String,
    /// AWS region, e.g. `ap-northeast-1`.
    pub region: String,
    /// `fargate` (default) or `ec2`.
    #[serde(default)]
    pub compute: Compute,
    /// Kubernetes minor version the manifests are validated against, e.g. `"1.33"`.
    #[serde(default)]
    pub version: Option<String>,
}

/// What is appended to `<project>-<id>` to make the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NamespaceSuffix {
    /// `<project>-<id>`: one namespace per project on this cluster.
    #[default]
    None,
    /// `<project>-<id>-<environment>`: for clusters shared by several environments.
    Env,
}

/// Namespace options.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceOptions {
    /// `none` (default) or `env`.
    #[serde(default)]
    pub suffix: NamespaceSuffix,
}

/// The container registry.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Registry {
    /// Registry host, e.g. `registry.gitlab.example.com`.
    pub server: String,
    /// Name of the image-pull secret (type dockerconfigjson), made at apply time.
    pub pull_secret: String,
    /// Variable holding the registry user (default `CI_REGISTRY_USER`).
    #[serde(default)]
    pub username: Option<FromEnv>,
    /// Variable holding the registry password (default `CI_REGISTRY_PASSWORD`).
    #[serde(default)]
    pub password: Option<FromEnv>,
}

/// A value read from an environment variable at apply time.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FromEnv {
    /// Name of the CI variable, e.g. `MONGODB_URI`.
    pub from_env: String,
}

/// The kind of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// HTTP service behind an ALB Ingress.
    Web,
    /// TCP/UDP service behind an NLB.
    Tcp,
    /// Background process, no Service.
    Worker,
    /// Scheduled job (CronJob).
    Cron,
}

/// A workload: a Deployment (or a CronJob for `cron`) and what exposes it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    /// `web`, `tcp`, `worker` or `cron`.
    pub kind: WorkloadKind,
    /// Image with a tag, e.g. `registry.gitlab.example.com/games/app:1.4.2`. `${VAR}` is
    /// replaced at apply time (e.g. `${CI_COMMIT_SHA}`).
    pub image: String,
    /// Replicas (default 1; within `autoscaling` when set). Not for `cron`.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Container port of a `web` workload.
    #[serde(default)]
    pub port: Option<u16>,
    /// Ports of a `tcp` workload.
    #[serde(default)]
    pub ports: Option<Vec<PortSpec>>,
    /// Overrides the image entrypoint.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Arguments to the entrypoint.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    /// CPU and memory requests (required on Fargate, which sizes the pod from them).
    #[serde(default)]
    pub resources: Option<Resources>,
    /// Environment variables: a value, `{secret, key}`, or `{field}` (Downward API).
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    /// HTTP probe paths.
    #[serde(default)]
    pub probes: Option<Probes>,
    /// ALB Ingress (AWS Load Balancer Controller) for a `web` workload.
    #[serde(default)]
    pub http: Option<Http>,
    /// NLB for a `tcp` workload.
    #[serde(default)]
    pub tcp: Option<Tcp>,
    /// Horizontal Pod Autoscaler.
    #[serde(default)]
    pub autoscaling: Option<Autoscaling>,
    /// Graceful shutdown timing.
    #[serde(default)]
    pub shutdown: Option<Shutdown>,
    /// How new versions replace old ones.
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// Cron schedule of a `cron` workload, e.g. `"0 3 * * *"`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Time zone of the schedule, e.g. `Asia/Tokyo` (default UTC).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The pod's service account (IRSA role).
    #[serde(default)]
    pub service_account: Option<ServiceAccountSpec>,
}

/// A port of a `tcp` workload.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortSpec {
    /// Port name (DNS-1123 label, ≤ 15 characters), e.g. `game`.
    pub name: String,
    /// Container port, also the NLB listener port.
    pub port: u16,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

/// CPU and memory.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// CPU request, e.g. `500m` or `1`.
    pub cpu: Quantity,
    /// Memory request, e.g. `512Mi` or `1Gi`.
    pub memory: Quantity,
    /// Limits (default: memory limit = memory request, no CPU limit).
    #[serde(default)]
    pub limits: Option<Limits>,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// CPU limit.
    #[serde(default)]
    pub cpu: Option<Quantity>,
    /// Memory limit.
    #[serde(default)]
    pub memory: Option<Quantity>,
}

/// A Kubernetes quantity: `500m`, `1`, `0.5`, `512Mi`, `1Gi`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Quantity {
    /// Text such as `500m` or `1Gi`.
    Text(String),
    /// A bare number of cores (or bytes).
    Number(f64),
}

impl Quantity {
    /// The quantity as Kubernetes writes it.
    pub fn text(&self) -> String {
        match self {
            Quantity::Text(t) => t.clone(),
            Quantity::Number(n) if n.fract() == 0.0 => format!("{}", *n as i64),
            Quantity::Number(n) => format!("{n}"),
        }
    }
}

/// An environment variable.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    /// A literal value.
    Text(String),
    /// A number, written as text.
    Number(f64),
    /// A boolean, written as `true`/`false`.
    Bool(bool),
    /// A key of a Secret (e.g. one declared under `secrets:`).
    Secret(SecretRef),
    /// A Downward API field, e.g. `metadata.name`, `status.podIP`.
    Field(FieldRef),
}

/// `{secret: NAME, key: KEY}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Secret name.
    pub secret: String,
    /// Key in the secret.
    pub key: String,
}

/// `{field: PATH}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldRef {
    /// Downward API field path: `metadata.name`, `metadata.namespace`, `metadata.uid`,
    /// `spec.nodeName`, `spec.serviceAccountName`, `status.podIP`, `status.hostIP`.
    pub field: String,
}

/// HTTP probe paths (on the workload's port).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probes {
    /// Readiness path, e.g. `/healthz/ready`.
    #[serde(default)]
    pub readiness: Option<String>,
    /// Liveness path, e.g. `/healthz/live`.
    #[serde(default)]
    pub liveness: Option<String>,
}

/// ALB scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Reachable from the internet.
    #[default]
    InternetFacing,
    /// Only inside the VPC.
    Internal,
}

impl Scheme {
    /// The annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::InternetFacing => "internet-facing",
            Scheme::Internal => "internal",
        }
    }
}

/// ALB Ingress of a `web` workload.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Http {
    /// Host name, e.g. `ct.example.com`. A review instance is served on `<instance>.<host>`.
    pub host: String,
    /// `internet-facing` (default) or `internal`.
    #[serde(default)]
    pub scheme: Scheme,
    /// ACM certificate ARN; with it the ALB listens on 443 and redirects 80 to 443.
    #[serde(default)]
    pub certificate_arn: Option<String>,
    /// Path prefix routed to the workload (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// ALB health-check path (default: the readiness probe path).
    #[serde(default)]
    pub healthcheck_path: Option<String>,
    /// ALB group name, to share one ALB between Ingresses.
    #[serde(default)]
    pub group_name: Option<String>,
}

/// NLB of a `tcp` workload.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tcp {
    /// `internet-facing` (default) or `internal`.
    #[serde(default)]
    pub scheme: Scheme,
}

/// Horizontal Pod Autoscaler.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Autoscaling {
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Target average CPU utilisation in percent of the request (default 70).
    #[serde(default)]
    pub cpu_percent: Option<u8>,
    /// Target average memory utilisation in percent of the request.
    #[serde(default)]
    pub memory_percent: Option<u8>,
}

/// Graceful shutdown timing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Shutdown {
    /// Seconds the preStop hook sleeps so the load balancer stops sending traffic before
    /// SIGTERM (default 15).
    #[serde(default)]
    pub pre_stop_seconds: Option<u32>,
    /// Seconds the process drains after SIGTERM (default 10).
    #[serde(default)]
    pub drain_seconds: Option<u32>,
    /// terminationGracePeriodSeconds; default preStop + drain + 10. A smaller value is an
    /// error: the kubelet would SIGKILL a draining pod.
    #[serde(default)]
    pub grace_period_seconds: Option<u32>,
}

/// Rollout strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Kubernetes rolling update, then wait until ready.
    #[default]
    Rolling,
    /// Two slots (blue, green); the idle one gets the new version and traffic moves once it is
    /// all ready.
    BlueGreen,
}

/// How new versions replace old ones.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rollout {
    /// `rolling` (default) or `blue-green`.
    #[serde(default)]
    pub strategy: Strategy,
    /// Host on which the idle (new) slot can be tried before the cutover (`web`).
    #[serde(default)]
    pub preview_host: Option<String>,
    /// Seconds the old slot keeps running after a cutover, so rollback is instant
    /// (default 600). `infra-gen finalize` scales it down.
    #[serde(default)]
    pub scale_down_delay_seconds: Option<u32>,
    /// Traffic percentages to the new slot, ascending, ending at 100, e.g. `[10, 50, 100]`
    /// (default: `[100]`, all at once). `web` only.
    #[serde(default)]
    pub steps: Option<Vec<u8>>,
    /// Seconds between steps, with a health check of the new slot (default 30).
    #[serde(default)]
    pub step_pause_seconds: Option<u32>,
    /// `tcp`: seconds both slots stay selected so new NLB targets register before old ones
    /// drain (default 60).
    #[serde(default)]
    pub overlap_seconds: Option<u32>,
}

/// The pod's service account.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceAccountSpec {
    /// IAM role ARN for IRSA (`eks.amazonaws.com/role-arn`).
    pub role_arn: String,
}
