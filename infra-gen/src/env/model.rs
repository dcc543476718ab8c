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
    /// What routes requests to the workloads and moves them during a release: the AWS Load
    /// Balancer Controller (default, EKS) or a Gateway API implementation (any cluster).
    #[serde(default)]
    pub traffic: Traffic,
}

/// What routes the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficProvider {
    /// The AWS Load Balancer Controller: an ALB Ingress per `web` workload (weighted forward
    /// actions, header conditions), an NLB per `tcp` workload; every move is checked through
    /// ELBv2.
    #[default]
    Alb,
    /// The Gateway API: an `HTTPRoute` per `web` workload attached to `parentRefs` (weighted
    /// `backendRefs`, header `matches`), a plain `LoadBalancer` Service per `tcp` workload;
    /// every move is checked through the route's status. For clusters that are not EKS
    /// (Alibaba Cloud ACK, GKE, …) or EKS with a Gateway API controller.
    GatewayApi,
}

impl TrafficProvider {
    /// `alb` or `gateway-api`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficProvider::Alb => "alb",
            TrafficProvider::GatewayApi => "gateway-api",
        }
    }
}

/// How requests reach the workloads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Traffic {
    /// `alb` (default) or `gateway-api`.
    #[serde(default)]
    pub provider: TrafficProvider,
    /// `gateway-api`: the Gateway listeners every HTTPRoute attaches to (at least one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentRef>,
    /// `gateway-api`: annotations of every `tcp` workload's `LoadBalancer` Service, the cloud's
    /// load-balancer options (e.g. Alibaba Cloud's
    /// `service.beta.kubernetes.io/alibaba-cloud-loadbalancer-spec`); a workload's
    /// `tcp.annotations` override them key by key. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub load_balancer_annotations: BTreeMap<String, String>,
}

/// A Gateway (and optionally one of its listeners) an HTTPRoute attaches to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParentRef {
    /// The Gateway's name, e.g. `public`.
    pub name: String,
    /// The Gateway's namespace (default: the environment's namespace). Its listener must
    /// allow routes from this namespace (`allowedRoutes.namespaces`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// One listener of the Gateway, by name, e.g. `https` (default: every listener that
    /// allows the route).
    #[serde(default)]
    pub section_name: Option<String>,
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
    /// The kubectl image capacity windows' CronJobs run (default
    /// `registry.k8s.io/kubectl:v<version>.0`); set it to a mirror where registry.k8s.io is
    /// not reachable.
    #[serde(default)]
    pub kubectl_image: Option<String>,
    /// The kubeconfig context that reaches this cluster, for commands run with a kubeconfig
    /// (`--kubeconfig` or `KUBECONFIG`): used instead of the kubeconfig's current context, so
    /// a laptop whose current context is another cluster still reaches this one. `--context`
    /// must then name the same context.
    #[serde(default)]
    pub context: Option<String>,
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
    /// A game server that keeps players or state (socket/connector, back end): one
    /// StatefulSet per version (`<name>-<version>`), pods with stable names (`SERVER_ID`),
    /// never restarted by an update; new connections go to the newest version, old ones stay
    /// until retired. Exposed through an NLB (`tcp`), the ALB (`http`), or not at all.
    Stateful,
}

/// A workload: a Deployment (or a CronJob for `cron`) and what exposes it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workload {
    /// `web`, `tcp`, `worker`, `cron` or `stateful`.
    pub kind: WorkloadKind,
    /// Image with a tag, e.g. `registry.gitlab.example.com/games/app:1.4.2`. `${VAR}` is
    /// replaced at apply time (e.g. `${CI_COMMIT_SHA}`).
    pub image: String,
    /// Replicas (default 1; within `autoscaling` when set). Not for `cron`.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Container port of a `web` workload (named `http`).
    #[serde(default)]
    pub port: Option<u16>,
    /// Ports of a `tcp` workload (the NLB listens on each one that is exposed), or the
    /// container ports of a `worker` (health, metrics; never exposed).
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
    /// Readiness and liveness probes.
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
    /// Pod security settings; the defaults are safe (non-root UID/GID 65532, read-only root
    /// filesystem, no Kubernetes API token unless an IAM role needs it).
    #[serde(default)]
    pub security: Option<Security>,
    /// `stateful`: the version's name (a DNS label once slugified, e.g. `1.4.2` → `1-4-2`);
    /// default: the image tag.
    #[serde(default)]
    pub version: Option<String>,
    /// `stateful`: seconds after an old version stopped getting new connections before the
    /// delayed `infra-gen finalize` retires it (default: only `infra-gen retire` does).
    #[serde(default)]
    pub retire_after_seconds: Option<u32>,
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
    /// Whether the NLB listens on it (default true; `false` for a port only used for health
    /// checks or metrics).
    #[serde(default)]
    pub expose: Option<bool>,
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

/// Readiness and liveness probes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Probes {
    /// Readiness: when a pod may get traffic. An HTTP path on the port named `http` (e.g.
    /// `/healthz/ready`), or `{http: PATH, port: PORT}`, `{tcp: PORT}`, `{exec: [COMMAND…]}`.
    #[serde(default)]
    pub readiness: Option<Probe>,
    /// Liveness: when the kubelet restarts a container. Same forms as `readiness`.
    #[serde(default)]
    pub liveness: Option<Probe>,
}

/// A probe.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Probe {
    /// An HTTP GET of this path on the port named `http` (the port of a `web` workload).
    Path(String),
    /// A check on a named or numbered port of the workload, or a command.
    Check(ProbeCheck),
}

/// `{http: PATH, port: PORT}`, `{tcp: PORT}` or `{exec: [COMMAND…]}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeCheck {
    /// HTTP GET of this path, healthy on 2xx/3xx.
    #[serde(default)]
    pub http: Option<String>,
    /// The port of the HTTP check (default: the port named `http`): a port name of the
    /// workload, or a number it declares.
    #[serde(default)]
    pub port: Option<PortRef>,
    /// A TCP connect to this port of the workload (name or number).
    #[serde(default)]
    pub tcp: Option<PortRef>,
    /// A command run in the container; exit code 0 is healthy.
    #[serde(default)]
    pub exec: Option<Vec<String>>,
}

/// A port of the workload, by name or number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum PortRef {
    /// A port number the workload declares.
    Number(u16),
    /// A port name the workload declares.
    Name(String),
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => write!(f, "{n}"),
        }
    }
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
    /// Seconds an idle connection (a quiet WebSocket) stays open through the ALB (1–4000;
    /// AWS default 60).
    #[serde(default)]
    pub idle_timeout_seconds: Option<u32>,
}

/// NLB of a `tcp` workload.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tcp {
    /// `internet-facing` (default) or `internal`.
    #[serde(default)]
    pub scheme: Scheme,
    /// Seconds a deregistered target drains: the NLB sends it no new connections, and (with
    /// `connectionTermination`) closes its connections when they end. Default: preStop +
    /// drain. At most 3600.
    #[serde(default)]
    pub deregistration_delay_seconds: Option<u32>,
    /// Close established connections when the deregistration delay ends (default false:
    /// players stay connected to an old version's pods until they leave or the pods stop).
    #[serde(default)]
    pub connection_termination: Option<bool>,
    /// Seconds an idle TCP connection stays open through the NLB (60–6000; AWS default 350).
    #[serde(default)]
    pub idle_timeout_seconds: Option<u32>,
    /// `traffic.provider: gateway-api`: annotations of this workload's `LoadBalancer` Service,
    /// over `traffic.loadBalancerAnnotations` (a key here replaces the same key there).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
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
    /// Windows of raised capacity (the minutes after maintenance, an event's start): CronJobs
    /// in the cluster raise the HPA's bounds `lead` before each window and lower them after
    /// it, and every deploy keeps the window in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<CapacityWindow>,
}

/// A window of raised capacity.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CapacityWindow {
    /// Name (lowercase letters, digits, -): names the window's CronJobs and what `status`
    /// says, e.g. maintenance-end.
    pub name: String,
    /// When the window starts, every time: cron "minute hour day-of-month month weekday" in
    /// `timeZone`, e.g. "0 11 * * wed" (one minute; hours may be a list).
    #[serde(default)]
    pub cron: Option<String>,
    /// Or once: a local date and time in `timeZone`, e.g. "2026-12-24T18:00".
    #[serde(default)]
    pub at: Option<String>,
    /// How long the window lasts from its start, e.g. 2h, 90m, 1h30m.
    #[serde(default)]
    pub duration: Option<String>,
    /// Or, with `at`, when it ends: a local date and time in `timeZone`.
    #[serde(default)]
    pub until: Option<String>,
    /// IANA time zone of `cron`/`at`, as CronJob's timeZone, e.g. Asia/Tokyo.
    pub time_zone: String,
    /// Fewest replicas while the window is open (above autoscaling.min).
    pub min: u32,
    /// Most replicas while the window is open (default autoscaling.max, raised to `min`).
    #[serde(default)]
    pub max: Option<u32>,
    /// How long before the start the capacity is raised, so new pods are ready when the
    /// clients arrive (default 5m: a CronJob pod, the HPA's next sync, pods starting on
    /// Fargate).
    #[serde(default)]
    pub lead: Option<String>,
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
    /// `tcp`: seconds both slots stay selected once every new pod is a healthy NLB target,
    /// before the old slot stops getting new connections (default 0: the switch waits for
    /// target health, not for a fixed time).
    #[serde(default)]
    pub overlap_seconds: Option<u32>,
    /// Grey release on the ALB (blue-green `web`): `apply` stops once requests whose
    /// `header` has one of `values` go to the new slot and every other request stays on the
    /// live one; `infra-gen promote` moves everyone, `infra-gen abort` gives up.
    #[serde(default)]
    pub canary: Option<Canary>,
}

/// Which requests a grey release sends to the new version first.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Canary {
    /// The request header, e.g. `Version` (at most 40 characters of RFC 7230 token; not
    /// `Host`). Matched case-insensitively by the ALB.
    pub header: String,
    /// Values that go to the new version, e.g. `["1.4.2"]`, or `["1.4.*"]` (`*` and `?` are
    /// wildcards; case-insensitive; 1 to 3 values of at most 128 characters). With
    /// `traffic.provider: gateway-api`: exact, case-sensitive values (no wildcards), or with
    /// `match: regular-expression` regular expressions.
    pub values: Vec<String>,
    /// `gateway-api` only: how `values` are compared, `exact` (default) or
    /// `regular-expression` (the Gateway API's `RegularExpression` header match, whose
    /// dialect the Gateway implementation defines).
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_type: Option<HeaderMatch>,
}

/// How a Gateway API header match compares values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HeaderMatch {
    /// The whole value, case-sensitive.
    Exact,
    /// A regular expression.
    RegularExpression,
}

/// Pod security settings. Every pod runs with `runAsNonRoot`, no privilege escalation, every
/// capability dropped and the `RuntimeDefault` seccomp profile; these keys change the rest.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Security {
    /// UID the containers run as (default 65532, the `nonroot` user of distroless images;
    /// 1 to 2147483647: never root).
    #[serde(default)]
    pub run_as_user: Option<i64>,
    /// GID the containers run as (default 65532; 0 to 2147483647).
    #[serde(default)]
    pub run_as_group: Option<i64>,
    /// Whether the container's root filesystem is read-only (default true). For scratch
    /// files, prefer `tmp: true` over turning this off.
    #[serde(default)]
    pub read_only_root_filesystem: Option<bool>,
    /// A writable `/tmp` (an `emptyDir`, gone with the pod; on Fargate it counts against the
    /// pod's 20 GiB of ephemeral storage). Default false.
    #[serde(default)]
    pub tmp: Option<bool>,
    /// Mount the Kubernetes API token into the pod (default: only when
    /// `serviceAccount.roleArn` is set, which IRSA needs). `true` for a workload that talks to
    /// the cluster; `false` is refused with a role.
    #[serde(default)]
    pub service_account_token: Option<bool>,
}

/// UID and GID of the `nonroot` user of distroless images, the default of every pod.
pub const NONROOT_ID: i64 = 65532;

impl Security {
    /// The UID the containers run as.
    pub fn user(&self) -> i64 {
        self.run_as_user.unwrap_or(NONROOT_ID)
    }

    /// The GID the containers run as.
    pub fn group(&self) -> i64 {
        self.run_as_group.unwrap_or(NONROOT_ID)
    }
}

/// The pod's service account.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceAccountSpec {
    /// IAM role ARN for IRSA (`eks.amazonaws.com/role-arn`).
    pub role_arn: String,
}
