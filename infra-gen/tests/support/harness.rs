//! The end-to-end harness. By default it starts the API-server double; with
//! `INFRA_GEN_E2E_KUBECONFIG` set it uses that cluster instead, unchanged (see README:
//! "Testing against a real cluster"). On the test command's own control plane (the `testbed`
//! program announces itself in `kube-system/testbed`) a test's options reach the node agent
//! and the load-balancer stand-in through its namespace's annotations, so every test runs
//! there as on the double. Each test gets its own project id, hence its own namespace, and a
//! temp project directory with its environment file.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value as Json, json};

use super::apiserver::lb::LbSim;
use super::apiserver::{ApiServer, Options};
use super::awsproxy::{AwsProxy, Throttle};
use super::changelog::{ChangeLog, Entry};
use super::proxy::ApiProxy;

/// The label of every member of an ApplySet (KEP-3659).
pub const APPLYSET_PART_OF: &str = "applyset.kubernetes.io/part-of";

/// Kinds `apply` writes into the namespace (every one an ApplySet member can be).
pub const MEMBER_KINDS: [&str; 10] = [
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "Ingress",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
];

/// Container images with known behaviour. On the double the name decides the behaviour; on a
/// real cluster they come from `INFRA_GEN_E2E_IMAGE_*` (see README).
pub struct Images {
    /// Readiness path the images answer 200 on.
    pub ready_path: String,
    /// Arguments that make the image serve HTTP on 8080 (real cluster only).
    pub args: Option<String>,
    pub v1: String,
    pub v2: String,
    pub v3: String,
    pub crash: String,
    /// Crashes once at start, then serves.
    pub crash_once: String,
    /// Arguments that make `crash_once` crash once (real cluster only).
    pub crash_once_args: Option<String>,
    pub never_ready: String,
}

impl Images {
    /// The images of a real cluster (`real`), else the double's names, which the double
    /// and the test control plane's node agent both read.
    fn from_env(real: bool) -> Self {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        if real {
            Self {
                ready_path: var("INFRA_GEN_E2E_READY_PATH", "/"),
                args: Some(var(
                    "INFRA_GEN_E2E_ARGS",
                    r#"["netexec", "--http-port=8080"]"#,
                )),
                v1: var(
                    "INFRA_GEN_E2E_IMAGE_V1",
                    "registry.k8s.io/e2e-test-images/agnhost:2.47",
                ),
                v2: var(
                    "INFRA_GEN_E2E_IMAGE_V2",
                    "registry.k8s.io/e2e-test-images/agnhost:2.48",
                ),
                v3: var(
                    "INFRA_GEN_E2E_IMAGE_V3",
                    "registry.k8s.io/e2e-test-images/agnhost:2.50",
                ),
                crash: var(
                    "INFRA_GEN_E2E_IMAGE_CRASH",
                    "registry.k8s.io/e2e-test-images/busybox:1.36.1-1",
                ),
                crash_once: var(
                    "INFRA_GEN_E2E_IMAGE_CRASH_ONCE",
                    "registry.k8s.io/e2e-test-images/busybox:1.36.1-1",
                ),
                // /tmp is an emptyDir: it outlives the container's first, crashing run.
                crash_once_args: Some(var(
                    "INFRA_GEN_E2E_CRASH_ONCE_ARGS",
                    r#"["sh", "-c", "if [ -e /tmp/started ]; then exec httpd -f -p 8080 -h /tmp; fi; touch /tmp/started; exit 1"]"#,
                )),
                never_ready: var(
                    "INFRA_GEN_E2E_IMAGE_NEVER_READY",
                    "registry.k8s.io/pause:3.10",
                ),
            }
        } else {
            Self {
                ready_path: "/ready".into(),
                args: None,
                v1: "registry.test/web:v1".into(),
                v2: "registry.test/web:v2".into(),
                v3: "registry.test/web:v3".into(),
                crash: "registry.test/web:crash".into(),
                crash_once: "registry.test/web:crash-once".into(),
                crash_once_args: None,
                never_ready: "registry.test/web:never-ready".into(),
            }
        }
    }
}

/// The test command's control plane, as its `testbed` program announced it.
#[derive(Debug, Clone)]
pub struct Testbed {
    /// moto's endpoint, the load-balancer stand-in's ELBv2.
    pub moto: Option<String>,
}

/// One test's world.
pub struct Harness {
    /// The double, unless a real cluster is used.
    pub double: Option<ApiServer>,
    /// The test control plane (node agent and load-balancer stand-in), when that is the
    /// real cluster used.
    pub testbed: Option<Testbed>,
    /// Every change in the test's namespace, on a real cluster (the double keeps its own).
    log: Option<ChangeLog>,
    /// On a real cluster, what infra-gen talks to: it logs requests and injects faults as
    /// the double does.
    proxy: Option<ApiProxy>,
    /// The kubeconfig of the cluster itself, for the harness's own reads and writes.
    direct: PathBuf,
    /// A proxy throttling infra-gen's ELBv2 calls, when the test asked for one.
    aws_proxy: std::sync::Mutex<Option<AwsProxy>>,
    pub kubeconfig: PathBuf,
    pub project: tempfile::TempDir,
    pub id: u32,
    pub images: Images,
    /// The commit being deployed: changes with every new environment file, like a CI
    /// pipeline of a new commit.
    revision: std::sync::Mutex<String>,
    /// moto's endpoint when the cluster has a (simulated or real) AWS Load Balancer
    /// Controller whose load balancer infra-gen checks; otherwise commands run with
    /// `--no-verify-lb`.
    pub lb_endpoint: Option<String>,
    /// With the Gateway API (`Options::gateway`): environment files say
    /// `traffic.provider: gateway-api` attached to the Gateway `public` of the test's
    /// namespace, and commands check the route status instead of ELBv2.
    pub gateway: bool,
}

/// The Gateway the tests' HTTPRoutes attach to (class `testbed`: the controller stand-in's).
pub const GATEWAY: &str = "public";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique project id (hence namespace) per test, per process.
fn unique_id() -> u32 {
    let base = (std::process::id() % 10_000) * 100;
    100_000 + base + NEXT.fetch_add(1, Ordering::SeqCst)
}

/// The result of one CLI run.
pub struct Run {
    pub ok: bool,
    /// The exit code (None when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Self {
            ok: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        Self::create(options, std::env::var_os("INFRA_GEN_E2E_KUBECONFIG")).await
    }

    /// Always the double, for tests of behaviour only it can produce (faults, expiring tokens).
    pub async fn double_only(options: Options) -> Self {
        Self::create(options, None).await
    }

    async fn create(options: Options, real: Option<std::ffi::OsString>) -> Self {
        let project = tempfile::tempdir().expect("temp project");
        let id = unique_id();
        let gateway = options.gateway;
        let Some(path) = real else {
            let lb_endpoint = options.lb.as_ref().map(|sim| sim.moto.clone());
            let double = ApiServer::start(options).await;
            let kubeconfig = double.kubeconfig(project.path(), None);
            let h = Self {
                double: Some(double),
                testbed: None,
                log: None,
                proxy: None,
                direct: kubeconfig.clone(),
                aws_proxy: Default::default(),
                kubeconfig,
                project,
                id,
                images: Images::from_env(false),
                revision: std::sync::Mutex::new("0".repeat(40)),
                lb_endpoint,
                gateway,
            };
            if gateway {
                h.put_gateway(json!({"from": "Same"})).await;
            }
            return h;
        };
        let direct = PathBuf::from(path);
        let client = Self::client_for(&direct).await;
        let proxy = ApiProxy::start(client.clone()).await;
        let kubeconfig = proxy.kubeconfig(project.path());
        let testbed = Self::testbed_of(&client).await;
        let lb_endpoint = match &testbed {
            // The stand-in serves every namespace; infra-gen checks it through the same moto.
            Some(t) => options.lb.as_ref().and(t.moto.clone()),
            // On a real cluster with the controller (EKS), INFRA_GEN_E2E_VERIFY_LB=1 keeps the
            // load-balancer checks on, with the real AWS credentials of the environment.
            None => std::env::var("INFRA_GEN_E2E_VERIFY_LB")
                .ok()
                .filter(|v| v == "1")
                .map(|_| String::new()),
        };
        let namespace = format!("e2e-{id}");
        if testbed.is_some() {
            Self::prepare_namespace(&client, &namespace, &options).await;
        }
        let log = ChangeLog::start(client, &namespace).await;
        let h = Self {
            double: None,
            images: Images::from_env(testbed.is_none()),
            testbed,
            log: Some(log),
            proxy: Some(proxy),
            direct,
            aws_proxy: Default::default(),
            kubeconfig,
            project,
            id,
            revision: std::sync::Mutex::new("0".repeat(40)),
            lb_endpoint,
            gateway,
        };
        if gateway {
            h.put_gateway(json!({"from": "Same"})).await;
        }
        h
    }

    /// Creates (or changes) the Gateway [`GATEWAY`] of the test's namespace: one HTTP
    /// listener `http` that admits the routes `namespaces` says (`allowedRoutes.namespaces`).
    pub async fn put_gateway(&self, namespaces: Json) {
        if self.double.is_some() {
            // On the test control plane the harness made the namespace already.
            let all: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client().await);
            all.patch(
                &self.namespace(),
                &PatchParams::apply("e2e-harness").force(),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace()}})),
            )
            .await
            .unwrap();
        }
        let api = self.api(
            self.client().await,
            "gateway.networking.k8s.io",
            "v1",
            "Gateway",
            "gateways",
        );
        let gateway = json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": GATEWAY, "namespace": self.namespace()},
            "spec": {
                "gatewayClassName": testbed::gateway::CLASS,
                "listeners": [{"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": namespaces}}],
            },
        });
        api.patch(
            GATEWAY,
            &PatchParams::apply("e2e-harness").force(),
            &Patch::Apply(gateway),
        )
        .await
        .unwrap();
    }

    /// The test control plane's announcement, if the cluster is that.
    async fn testbed_of(client: &kube::Client) -> Option<Testbed> {
        let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(client.clone(), "kube-system");
        let map = maps.get_opt(testbed::ANNOUNCEMENT).await.ok()??;
        let data = map.data.unwrap_or_default();
        Some(Testbed {
            moto: data.get("moto").cloned(),
        })
    }

    /// Creates the test's namespace with the node agent's timing and the load-balancer
    /// stand-in's behaviour for it (`off`: no controller, as on a double without one).
    async fn prepare_namespace(client: &kube::Client, namespace: &str, options: &Options) {
        let timing = testbed::node::NodeTiming::from(testbed::pod::Timing {
            ready_after: options.ready_after,
            ..testbed::pod::Timing::NODE
        });
        let lb = match &options.lb {
            Some(sim) => serde_json::to_string(&sim.settings).unwrap(),
            None => "off".to_owned(),
        };
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        namespaces
            .patch(
                namespace,
                &PatchParams::apply("e2e-harness").force(),
                &Patch::Apply(json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": namespace, "annotations": {
                        testbed::node::ANNOTATION: serde_json::to_string(&timing).unwrap(),
                        testbed::lb::settings::ANNOTATION: lb,
                    }},
                })),
            )
            .await
            .unwrap();
    }

    /// Changes how the load-balancer controller behaves from now on (the double's simulated
    /// one, or the test control plane's stand-in in this namespace).
    pub async fn set_lb(&self, change: impl FnOnce(&mut LbSim)) {
        if let Some(double) = &self.double {
            double.set_lb(change);
            return;
        }
        assert!(
            self.testbed.is_some(),
            "this test needs a controller it can break: the double or the test control plane"
        );
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client().await);
        let current = namespaces.get(&self.namespace()).await.unwrap();
        let settings = current
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(testbed::lb::settings::ANNOTATION))
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        let mut sim = LbSim {
            moto: String::new(),
            settings,
        };
        change(&mut sim);
        namespaces
            .patch(
                &self.namespace(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    testbed::lb::settings::ANNOTATION: serde_json::to_string(&sim.settings).unwrap(),
                }}})),
            )
            .await
            .unwrap();
    }

    /// Makes pods created from now on take `ready_after` to become ready (the double's
    /// kubelet, or the test control plane's node agent in this namespace).
    pub async fn set_ready_after(&self, ready_after: Duration) {
        if let Some(double) = &self.double {
            double.set_ready_after(ready_after);
            return;
        }
        assert!(
            self.testbed.is_some(),
            "this test needs a node it can slow down: the double or the test control plane"
        );
        let timing = testbed::node::NodeTiming::from(testbed::pod::Timing {
            ready_after,
            ..testbed::pod::Timing::NODE
        });
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client().await);
        namespaces
            .patch(
                &self.namespace(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    testbed::node::ANNOTATION: serde_json::to_string(&timing).unwrap(),
                }}})),
            )
            .await
            .unwrap();
    }

    /// What the ALB's listener rule for the workload's host and path forwards, per Service
    /// (through the controller's TargetGroupBindings), percent — read from ELBv2 (moto), as
    /// the load balancer routes requests, not from the Ingress. `None` before the controller
    /// made the load balancer or the rule.
    pub async fn alb_shares(&self, workload: &str, host: &str) -> Option<Vec<(String, i32)>> {
        let endpoint = self.lb_endpoint.clone().filter(|e| !e.is_empty())?;
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "e2e",
            ))
            .load()
            .await;
        let elb =
            infra_gen::elb::Elb::with_client(aws_sdk_elasticloadbalancingv2::Client::new(&config));
        let ingress = self.get("Ingress", workload).await?;
        let dns = ingress
            .pointer("/status/loadBalancer/ingress/0/hostname")?
            .as_str()?
            .to_owned();
        let forward = elb.forward_for(&dns, &[], host, "/").await.ok()??;
        let bindings = self.list("TargetGroupBinding").await;
        let total: i32 = forward.groups.iter().map(|(_, w)| *w).sum();
        Some(
            forward
                .groups
                .iter()
                .map(|(arn, weight)| {
                    let service = bindings
                        .iter()
                        .find(|b| {
                            b.pointer("/spec/targetGroupARN").and_then(Json::as_str) == Some(arn)
                        })
                        .and_then(|b| b.pointer("/spec/serviceRef/name").and_then(Json::as_str))
                        .unwrap_or(arn)
                        .to_owned();
                    (service, if total > 0 { weight * 100 / total } else { 0 })
                })
                .collect(),
        )
    }

    /// From now on, infra-gen's ELBv2 calls go through a proxy answering `throttle` of them
    /// with `Throttling`; returns nothing, [`Harness::throttled`] counts them.
    pub async fn throttle_elb(&self, throttle: Throttle) {
        let upstream = self
            .lb_endpoint
            .clone()
            .filter(|e| !e.is_empty())
            .expect("throttling needs moto as the load balancer's AWS");
        let proxy = AwsProxy::start(&upstream, throttle).await;
        *self.aws_proxy.lock().unwrap() = Some(proxy);
    }

    /// From now on every ELBv2 call of infra-gen is refused (AccessDenied); needs
    /// [`Harness::throttle_elb`] first.
    pub fn deny_elb(&self) {
        if let Some(proxy) = self.aws_proxy.lock().unwrap().as_ref() {
            proxy.deny();
        }
    }

    /// How many of infra-gen's ELBv2 calls were throttled.
    pub fn throttled(&self) -> u32 {
        self.aws_proxy
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, AwsProxy::throttled)
    }

    /// Whether the cluster's controllers, kubelet and load balancer are the ones the test can
    /// tune and break (the double's or the test control plane's).
    pub fn is_tunable(&self) -> bool {
        self.double.is_some() || self.testbed.is_some()
    }

    /// Every change in the test's namespace so far, oldest first: (resourceVersion, event,
    /// kind, name, object) — from the double's log, or from watches on a real cluster.
    pub fn events(&self) -> Vec<Entry> {
        match (&self.double, &self.log) {
            (Some(double), _) => double.events(),
            (None, Some(log)) => log.events(),
            (None, None) => Vec::new(),
        }
    }

    pub fn root(&self) -> &Path {
        self.project.path()
    }

    pub fn namespace(&self) -> String {
        format!("e2e-{}", self.id)
    }

    /// The double, for tests that need its request log or fault injection.
    pub fn double(&self) -> &ApiServer {
        self.double
            .as_ref()
            .expect("this test needs the API-server double")
    }

    /// Writes `environments/<env>.yaml` from a workloads block (YAML, indented by 2) and
    /// renders the tree.
    pub async fn write_env(&self, env: &str, workloads: &str) {
        self.write_env_with_secrets(env, workloads, "").await;
    }

    /// [`Harness::write_env`] with more `secrets:` entries (YAML, indented by 2).
    pub async fn write_env_with_secrets(&self, env: &str, workloads: &str, secrets: &str) {
        self.write_env_file(env, workloads, secrets);
        let run = self.run(&["render"], &[]).await;
        assert!(run.ok, "render failed: {}", run.all());
    }

    /// Writes `environments/<env>.yaml` without rendering (as an edit before `plan`).
    pub fn write_env_file(&self, env: &str, workloads: &str, secrets: &str) {
        let traffic = if self.gateway {
            format!("traffic: {{provider: gateway-api, parentRefs: [{{name: {GATEWAY}}}]}}\n")
        } else {
            String::new()
        };
        let text = format!(
            "project: {{name: e2e, id: {id}}}\ncluster: {{name: e2e, region: us-east-1, compute: ec2}}\nregistry: {{server: registry.test, pullSecret: pull}}\n{traffic}workloads:\n{workloads}\nsecrets:\n  app-db: {{uri: {{fromEnv: E2E_DB_URI}}}}\n{secrets}",
            id = self.id
        );
        let dir = self.root().join("environments");
        std::fs::create_dir_all(&dir).unwrap();
        *self.revision.lock().unwrap() = Self::revision_of(&text);
        std::fs::write(dir.join(format!("{env}.yaml")), text).unwrap();
    }

    /// The commit a pipeline for this environment file would deploy (40 hex digits).
    pub fn revision_of(text: &str) -> String {
        use std::hash::{Hash, Hasher};
        let mut out = String::new();
        for salt in 0..3u8 {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (salt, text).hash(&mut h);
            out.push_str(&format!("{:016x}", h.finish()));
        }
        out.truncate(40);
        out
    }

    /// The revision the next command deploys.
    pub fn revision(&self) -> String {
        self.revision.lock().unwrap().clone()
    }

    /// A blue-green web workload.
    pub fn web(&self, image: &str, extra: &str) -> String {
        let args = self.args_line(image);
        format!(
            "  web:\n    kind: web\n    image: {image}\n{args}    port: 8080\n    resources: {{cpu: 100m, memory: 128Mi}}\n    env: {{DB: {{secret: app-db, key: uri}}}}\n    probes: {{readiness: {ready}}}\n    http: {{host: web.e2e.test}}\n{extra}",
            ready = self.images.ready_path
        )
    }

    /// A blue-green `tcp` workload `game` on port 8080.
    pub fn tcp(&self, image: &str, extra: &str) -> String {
        format!(
            "  game:\n    kind: tcp\n    image: {image}\n{}    ports: [{{name: game, port: 8080}}]\n    resources: {{cpu: 100m, memory: 128Mi}}\n{extra}",
            self.args_line(image)
        )
    }

    /// A `stateful` game server `connector` on port 8080 behind an NLB (`tcp:`).
    pub fn stateful(&self, image: &str, extra: &str) -> String {
        format!(
            "  connector:\n    kind: stateful\n    image: {image}\n{}    ports: [{{name: socket, port: 8080}}]\n    resources: {{cpu: 100m, memory: 128Mi}}\n    probes: {{readiness: {{http: {ready}, port: socket}}}}\n{extra}",
            self.args_line(image),
            ready = self.images.ready_path
        )
    }

    /// The version infra-gen takes from an image's tag (slugified to a DNS label).
    pub fn version_of(image: &str) -> String {
        let tag = image.rsplit_once(':').map_or("latest", |(_, t)| t);
        let mut out = String::new();
        for c in tag.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        out.trim_matches('-').to_owned()
    }

    /// The pods of one version of a stateful workload: name → UID.
    pub async fn version_pods(
        &self,
        workload: &str,
        version: &str,
    ) -> std::collections::BTreeMap<String, String> {
        self.list("Pod")
            .await
            .into_iter()
            .filter(|p| {
                p.pointer("/metadata/labels/app.kubernetes.io~1name")
                    .and_then(Json::as_str)
                    == Some(workload)
                    && p.pointer("/metadata/labels/infra-gen.dev~1version")
                        .and_then(Json::as_str)
                        == Some(version)
                    && p.pointer("/metadata/deletionTimestamp").is_none()
            })
            .filter_map(|p| {
                Some((
                    p.pointer("/metadata/name")?.as_str()?.to_owned(),
                    p.pointer("/metadata/uid")?.as_str()?.to_owned(),
                ))
            })
            .collect()
    }

    /// The version the stable Service of a stateful workload sends new connections to.
    pub async fn live_version(&self, workload: &str) -> Option<String> {
        self.get("Service", workload)
            .await?
            .pointer("/spec/selector/infra-gen.dev~1version")
            .and_then(Json::as_str)
            .map(str::to_owned)
    }

    /// The `args:` line an image needs on a real cluster (none on the double), and for the
    /// crash-once image the writable `/tmp` its marker file lives in (the root filesystem is
    /// read-only; the emptyDir outlives the container's first, crashing run).
    pub fn args_line(&self, image: &str) -> String {
        let args = if image == self.images.crash_once {
            self.images.crash_once_args.as_ref()
        } else {
            self.images.args.as_ref()
        };
        let mut lines = args.map(|a| format!("    args: {a}\n")).unwrap_or_default();
        if image == self.images.crash_once {
            lines.push_str("    security: {tmp: true}\n");
        }
        lines
    }

    fn command_for(&self, args: &[String], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_infra-gen"));
        let mut args = args.to_vec();
        let moves_traffic = args.first().is_some_and(|c| {
            [
                "apply", "rollback", "finalize", "retire", "promote", "abort",
            ]
            .contains(&c.as_str())
        });
        if moves_traffic
            && self.lb_endpoint.is_none()
            && !self.gateway
            && !args.iter().any(|a| a == "--no-verify-lb")
        {
            args.push("--no-verify-lb".into());
            // No controller applies anything here: nothing to give it time for (a test of
            // the wait passes its own).
            if !args.iter().any(|a| a == "--lb-unverified-wait") {
                args.extend(["--lb-unverified-wait".into(), "0s".into()]);
            }
        }
        let throttled = self
            .aws_proxy
            .lock()
            .unwrap()
            .as_ref()
            .map(|p| p.url.clone());
        if let Some(endpoint) = throttled
            .as_ref()
            .or(self.lb_endpoint.as_ref())
            .filter(|e| !e.is_empty())
        {
            command
                .env("AWS_ENDPOINT_URL", endpoint)
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env_remove("AWS_SESSION_TOKEN")
                .env_remove("AWS_PROFILE");
        }
        // The test clusters are not the environment files' EKS cluster: every cluster command
        // says so (the identity check has its own test).
        let any_cluster = args.iter().any(|a| a == "--kubeconfig")
            && !args.iter().any(|a| a == "--check-cluster-identity");
        let args: Vec<&String> = args
            .iter()
            .filter(|a| *a != "--check-cluster-identity")
            .collect();
        command
            .arg("--root")
            .arg(self.root())
            .args(args)
            .args(any_cluster.then_some("--any-cluster"))
            .env_remove("KUBECONFIG")
            .env("CI_REGISTRY_USER", "ci-user")
            .env("CI_REGISTRY_PASSWORD", "registry-password-secret")
            .env("E2E_DB_URI", "mongodb://db.e2e.test/app")
            .env("CI_COMMIT_SHA", self.revision())
            .env("CI_JOB_URL", "https://gitlab.test/e2e/-/jobs/1")
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        command
    }

    /// Runs `infra-gen --root <project> args…` with CI variables set.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut command = self.command_for(&args, env);
        let output = tokio::time::timeout(Duration::from_secs(300), command.output())
            .await
            .expect("infra-gen timed out")
            .expect("run infra-gen");
        Run::from(output)
    }

    /// How long a deploy may wait for pods: the double's are ready in a moment; the test
    /// control plane rolls ReplicaSets and registers targets as slowly as a real controller;
    /// a real cluster pulls images first.
    pub fn timeout(&self) -> &'static str {
        if self.double.is_some() {
            "20s"
        } else if self.testbed.is_some() {
            "120s"
        } else {
            "180s"
        }
    }

    fn apply_args(&self, env: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["apply", "--env", env, "--kubeconfig"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(self.kubeconfig.to_string_lossy().to_string());
        if !extra.contains(&"--timeout") {
            args.extend(["--timeout".to_owned(), self.timeout().to_owned()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// `apply --env <env> --kubeconfig … [extra…]`.
    pub async fn apply(&self, env: &str, extra: &[&str]) -> Run {
        let args = self.apply_args(env, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args, &[]).await
    }

    /// Starts `apply` without waiting for it (to kill it half-way, as a cancelled CI job,
    /// or to change the cluster meanwhile); [`Harness::finish`] collects its output.
    pub fn spawn_apply(
        &self,
        env: &str,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> tokio::process::Child {
        let mut command = self.command_for(&self.apply_args(env, extra), vars);
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command.spawn().expect("start infra-gen")
    }

    /// Starts another cluster command (`promote`, `abort`, …) without waiting for it.
    pub fn spawn_command(&self, command: &str, env: &str, extra: &[&str]) -> tokio::process::Child {
        let mut args: Vec<String> = [command, "--env", env, "--kubeconfig"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(self.kubeconfig.to_string_lossy().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut command = self.command_for(&args, &[]);
        command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command.spawn().expect("start infra-gen")
    }

    /// Waits for a spawned run to end (at most 5 minutes) and returns its output.
    pub async fn finish(child: tokio::process::Child) -> Run {
        let output = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .expect("infra-gen timed out")
            .expect("wait for infra-gen");
        Run::from(output)
    }

    /// Kills a run as a cancelled CI job or a lost runner would (SIGKILL: no clean-up).
    pub async fn kill(child: &mut tokio::process::Child) {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }

    /// Waits until `condition` holds (polling every 100 ms); panics after `seconds`.
    pub async fn until<F, Fut>(&self, what: &str, seconds: u64, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        while !condition().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting for {what} after {seconds} s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Another cluster command (`status`, `rollback`, …) for `env`.
    pub async fn command(&self, command: &str, env: &str, extra: &[&str]) -> Run {
        self.command_without(command, env, extra, &[]).await
    }

    /// [`Harness::command`] without the given CI variables (a reviewer's machine, a merge
    /// request pipeline without the protected ones).
    pub async fn command_without(
        &self,
        command: &str,
        env: &str,
        extra: &[&str],
        unset: &[&str],
    ) -> Run {
        let kubeconfig = self.kubeconfig.to_string_lossy().to_string();
        let args: Vec<String> = [command, "--env", env, "--kubeconfig", &kubeconfig]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        let mut child = self.command_for(&args, &[]);
        for name in unset {
            child.env_remove(name);
        }
        let output = tokio::time::timeout(Duration::from_secs(300), child.output())
            .await
            .expect("infra-gen timed out")
            .expect("run infra-gen");
        Run::from(output)
    }

    pub async fn client(&self) -> kube::Client {
        Self::client_for(&self.direct).await
    }

    /// Every request infra-gen made so far (watches left out).
    pub fn requests(&self) -> Vec<super::apiserver::Request> {
        match (&self.double, &self.proxy) {
            (Some(double), _) => double.requests(),
            (None, Some(proxy)) => proxy.requests(),
            (None, None) => Vec::new(),
        }
    }

    /// How many writes (any method but GET) infra-gen made so far: what a poll counts, without
    /// copying a log that grows to thousands of requests over a long test.
    pub fn write_count(&self) -> usize {
        match (&self.double, &self.proxy) {
            (Some(double), _) => double.write_count(),
            (None, Some(proxy)) => proxy.write_count(),
            (None, None) => 0,
        }
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        if let Some(double) = &self.double {
            double.clear_requests();
        }
        if let Some(proxy) = &self.proxy {
            proxy.clear_requests();
        }
    }

    /// Whether every injected fault was used up.
    pub fn faults_used(&self) -> bool {
        match (&self.double, &self.proxy) {
            (Some(double), _) => double.faults_used(),
            (None, Some(proxy)) => proxy.faults_used(),
            (None, None) => true,
        }
    }

    /// Makes the next `times` requests of infra-gen with `method` whose path contains
    /// `path_contains` fail with `status`.
    pub fn fail(&self, method: &str, path_contains: &str, status: u16, times: usize) {
        self.fault(super::apiserver::Fault {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            agent_contains: String::new(),
            status: Some(status),
            remaining: times,
        });
    }

    /// Adds an injected failure (the double's, or the proxy's in front of a real server).
    pub fn fault(&self, fault: super::apiserver::Fault) {
        if let Some(double) = &self.double {
            double.fault(fault);
        } else if let Some(proxy) = &self.proxy {
            proxy.fault(fault);
        }
    }

    async fn client_for(path: &Path) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    fn api(
        &self,
        client: kube::Client,
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
    ) -> Api<DynamicObject> {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        Api::namespaced_with(client, &self.namespace(), &resource)
    }

    /// Reads an object of the test namespace as JSON.
    pub async fn get(&self, kind: &str, name: &str) -> Option<Json> {
        let (group, version, plural) = Self::resource_of(kind);
        let api = self.api(self.client().await, group, version, kind, plural);
        api.get_opt(name)
            .await
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap())
    }

    fn resource_of(kind: &str) -> (&'static str, &'static str, &'static str) {
        match kind {
            "Deployment" => ("apps", "v1", "deployments"),
            "Service" => ("", "v1", "services"),
            "Ingress" => ("networking.k8s.io", "v1", "ingresses"),
            "HorizontalPodAutoscaler" => ("autoscaling", "v2", "horizontalpodautoscalers"),
            "ConfigMap" => ("", "v1", "configmaps"),
            "Secret" => ("", "v1", "secrets"),
            "Lease" => ("coordination.k8s.io", "v1", "leases"),
            "ServiceAccount" => ("", "v1", "serviceaccounts"),
            "PodDisruptionBudget" => ("policy", "v1", "poddisruptionbudgets"),
            "StatefulSet" => ("apps", "v1", "statefulsets"),
            "CronJob" => ("batch", "v1", "cronjobs"),
            "Job" => ("batch", "v1", "jobs"),
            "Pod" => ("", "v1", "pods"),
            "TargetGroupBinding" => ("elbv2.k8s.aws", "v1beta1", "targetgroupbindings"),
            "HTTPRoute" => ("gateway.networking.k8s.io", "v1", "httproutes"),
            "Gateway" => ("gateway.networking.k8s.io", "v1", "gateways"),
            other => panic!("kind {other} not in the harness"),
        }
    }

    /// Every object of a kind in the test namespace.
    pub async fn list(&self, kind: &str) -> Vec<Json> {
        let (group, version, plural) = Self::resource_of(kind);
        let api = self.api(self.client().await, group, version, kind, plural);
        api.list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }

    /// The names of the pods of a slot Deployment `<workload>-<slot>`.
    pub async fn pod_names(&self, deployment: &str) -> Vec<String> {
        let (workload, slot) = deployment.rsplit_once('-').unwrap();
        self.list("Pod")
            .await
            .into_iter()
            .filter(|p| {
                p.pointer("/metadata/labels/app.kubernetes.io~1name")
                    .and_then(Json::as_str)
                    == Some(workload)
                    && p.pointer("/metadata/labels/infra-gen.dev~1slot")
                        .and_then(Json::as_str)
                        == Some(slot)
            })
            .filter_map(|p| {
                p.pointer("/metadata/name")
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            })
            .collect()
    }

    /// The slot the stable Service selects.
    pub async fn live_slot(&self, workload: &str) -> Option<String> {
        let service = self.get("Service", workload).await?;
        service
            .pointer("/spec/selector/infra-gen.dev~1slot")
            .and_then(Json::as_str)
            .map(str::to_owned)
    }

    /// (blue, green) ALB weights of the workload's Ingress.
    pub async fn weights(&self, workload: &str) -> Option<(u64, u64)> {
        if self.gateway {
            let route = self.get("HTTPRoute", workload).await?;
            return Some(route_weights(&route, workload).0);
        }
        let ingress = self.get("Ingress", workload).await?;
        let action = ingress
            .pointer(&format!(
                "/metadata/annotations/alb.ingress.kubernetes.io~1actions.{workload}"
            ))?
            .as_str()?;
        let action: Json = serde_json::from_str(action).ok()?;
        let groups = action
            .pointer("/forwardConfig/targetGroups")?
            .as_array()?
            .clone();
        let weight = |slot: &str| {
            groups
                .iter()
                .find(|g| g["serviceName"] == json!(format!("{workload}-{slot}")))
                .and_then(|g| g["weight"].as_u64())
                .unwrap_or(0)
        };
        Some((weight("blue"), weight("green")))
    }

    pub async fn replicas(&self, deployment: &str) -> Option<i64> {
        self.get("Deployment", deployment)
            .await?
            .pointer("/spec/replicas")
            .and_then(Json::as_i64)
    }

    pub async fn image(&self, deployment: &str) -> Option<String> {
        self.get("Deployment", deployment)
            .await?
            .pointer("/spec/template/spec/containers/0/image")
            .and_then(Json::as_str)
            .map(str::to_owned)
    }

    /// Release history of a workload (newest first).
    pub async fn releases(&self, workload: &str) -> Vec<Json> {
        let Some(map) = self.get("ConfigMap", "infra-gen-releases").await else {
            return Vec::new();
        };
        map.pointer(&format!("/data/{workload}"))
            .and_then(Json::as_str)
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }

    /// Scales a Deployment as the HPA would.
    pub async fn scale_like_the_hpa(&self, deployment: &str, replicas: i64) {
        self.merge_patch(
            "Deployment",
            deployment,
            json!({"spec": {"replicas": replicas}}),
        )
        .await;
    }

    /// Creates (or takes over) the Lease as another deploy would hold it, built from the
    /// typed struct so its MicroTimes have the six fractional digits the API requires.
    pub async fn hold_lease(&self, holder: &str, renewed_seconds_ago: i64) {
        use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
        use k8s_openapi::jiff::{SignedDuration, Timestamp};
        let at = Timestamp::now() - SignedDuration::from_secs(renewed_seconds_ago);
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some("infra-gen-deploy".into()),
                namespace: Some(self.namespace()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(60),
                acquire_time: Some(MicroTime(at)),
                renew_time: Some(MicroTime(at)),
                ..LeaseSpec::default()
            }),
        };
        let api: Api<Lease> = Api::namespaced(self.client().await, &self.namespace());
        api.patch(
            "infra-gen-deploy",
            &PatchParams::apply("other-deployer").force(),
            &Patch::Apply(&lease),
        )
        .await
        .unwrap();
    }

    /// Every object infra-gen manages for `env` (its managed-by and environment labels), as
    /// (`Kind/name`, uid, `applyset.kubernetes.io/part-of` label), sorted.
    pub async fn managed(&self, env: &str) -> Vec<(String, String, Option<String>)> {
        let client = self.client().await;
        let selector =
            format!("app.kubernetes.io/managed-by=infra-gen,infra-gen.dev/environment={env}");
        let mut out = Vec::new();
        for kind in MEMBER_KINDS {
            let (group, version, plural) = Self::resource_of(kind);
            let api = self.api(client.clone(), group, version, kind, plural);
            let params = kube::api::ListParams::default().labels(&selector);
            for item in api.list(&params).await.unwrap().items {
                let part_of = item
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(APPLYSET_PART_OF))
                    .cloned();
                out.push((
                    format!("{kind}/{}", item.metadata.name.unwrap()),
                    item.metadata.uid.unwrap(),
                    part_of,
                ));
            }
        }
        out.sort();
        out
    }

    /// Leaves `env` as an infra-gen from before ApplySets (KEP-3659) did: no part-of label on
    /// any object, no parent ConfigMap.
    pub async fn as_before_applysets(&self, env: &str) {
        let client = self.client().await;
        for (object, _, _) in self.managed(env).await {
            let (kind, name) = object.split_once('/').unwrap();
            let (group, version, plural) = Self::resource_of(kind);
            self.api(client.clone(), group, version, kind, plural)
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {APPLYSET_PART_OF: null}}})),
                )
                .await
                .unwrap();
        }
        if self.get("ConfigMap", "infra-gen-applyset").await.is_some() {
            self.delete("ConfigMap", "infra-gen-applyset").await;
        }
    }

    /// Creates a pod of its own in the test namespace (as someone debugging would), with
    /// `labels`, running `image` under `restart_policy`.
    pub async fn create_pod(&self, name: &str, labels: &Json, image: &str, restart_policy: &str) {
        let api: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client().await, &self.namespace());
        let pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": self.namespace(), "labels": labels},
            "spec": {
                "restartPolicy": restart_policy,
                "containers": [{"name": "debug", "image": image}],
            },
        }))
        .unwrap();
        api.create(&Default::default(), &pod).await.unwrap();
    }

    /// Runs a CronJob now, as `kubectl create job --from=cronjob/<name>` does, and waits for
    /// its Job to end; true when it completed. On a cluster its pod runs (on the test control
    /// plane, the node agent runs kubectl images with a real kubectl as the pod's service
    /// account). The double has no Job controller: there the kubectl arguments of its
    /// containers are carried out through the API, as kubectl would (`patch` with a merge
    /// patch and field manager, `delete` of `kind/name`s), RBAC not checked.
    pub async fn run_cronjob(&self, name: &str) -> bool {
        let cronjob = self
            .get("CronJob", name)
            .await
            .unwrap_or_else(|| panic!("no CronJob {name}"));
        let template = cronjob["spec"]["jobTemplate"].clone();
        if self.double.is_none() {
            let job_name = format!("{name}-run-{}", unique_id());
            let job = json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": job_name, "namespace": self.namespace(), "labels": template["metadata"]["labels"]},
                "spec": template["spec"],
            });
            let api = self.api(self.client().await, "batch", "v1", "Job", "jobs");
            api.create(&Default::default(), &serde_json::from_value(job).unwrap())
                .await
                .unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            loop {
                let Some(job) = api.get_opt(&job_name).await.unwrap() else {
                    // Deleted with its CronJob (an override's expiry deletes itself).
                    return true;
                };
                let job = serde_json::to_value(job).unwrap();
                for c in job["status"]["conditions"].as_array().into_iter().flatten() {
                    if c["status"] == "True" && (c["type"] == "Complete" || c["type"] == "Failed") {
                        return c["type"] == "Complete";
                    }
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "Job {job_name} did not end in 120 s: {job}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let pod = &template["spec"]["template"]["spec"];
        let containers = ["initContainers", "containers"]
            .iter()
            .flat_map(|k| pod[*k].as_array().cloned().unwrap_or_default());
        for container in containers {
            let args: Vec<String> = container["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            let flag = |name: &str| {
                args.iter()
                    .find_map(|a| a.strip_prefix(&format!("--{name}=")))
                    .map(str::to_owned)
            };
            assert_eq!(
                flag("namespace").as_deref(),
                Some(self.namespace().as_str())
            );
            let kind_of = |resource: &str| match resource {
                "horizontalpodautoscaler" => "HorizontalPodAutoscaler",
                "cronjob" => "CronJob",
                "configmap" => "ConfigMap",
                other => panic!("the double's kubectl does not know {other}"),
            };
            match args[0].as_str() {
                "patch" => {
                    assert_eq!(flag("type").as_deref(), Some("merge"));
                    let kind = kind_of(&args[1]);
                    let (group, version, plural) = Self::resource_of(kind);
                    let api = self.api(self.client().await, group, version, kind, plural);
                    let patch: Json = serde_json::from_str(&flag("patch").unwrap()).unwrap();
                    let params = PatchParams {
                        field_manager: flag("field-manager"),
                        ..PatchParams::default()
                    };
                    if api
                        .patch(&args[2], &params, &Patch::Merge(patch))
                        .await
                        .is_err()
                    {
                        return false;
                    }
                }
                "delete" => {
                    for target in args.iter().skip(1).filter(|a| !a.starts_with("--")) {
                        let (resource, object) = target.split_once('/').unwrap();
                        let kind = kind_of(resource);
                        let (group, version, plural) = Self::resource_of(kind);
                        let api = self.api(self.client().await, group, version, kind, plural);
                        let _ = api.delete(object, &Default::default()).await;
                    }
                }
                other => panic!("the double's kubectl does not know `{other}`"),
            }
        }
        true
    }

    /// Deletes an object of the test namespace (as an operator would).
    /// Merge-patches one object of the namespace, as an operator's `kubectl patch` would.
    pub async fn merge_patch(&self, kind: &str, name: &str, patch: Json) {
        let (group, version, plural) = Self::resource_of(kind);
        let api = self.api(self.client().await, group, version, kind, plural);
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    pub async fn delete(&self, kind: &str, name: &str) {
        let (group, version, plural) = Self::resource_of(kind);
        let api = self.api(self.client().await, group, version, kind, plural);
        api.delete(name, &Default::default()).await.unwrap();
    }

    /// Resource versions of every object of the namespace this tool manages.
    pub async fn versions(&self) -> Vec<(String, String)> {
        let client = self.client().await;
        let mut out = Vec::new();
        for (group, version, kind, plural) in [
            ("apps", "v1", "Deployment", "deployments"),
            ("", "v1", "Service", "services"),
            ("networking.k8s.io", "v1", "Ingress", "ingresses"),
            ("", "v1", "ConfigMap", "configmaps"),
            ("", "v1", "Secret", "secrets"),
            (
                "autoscaling",
                "v2",
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
            ),
            ("coordination.k8s.io", "v1", "Lease", "leases"),
        ] {
            let api = self.api(client.clone(), group, version, kind, plural);
            for o in api.list(&Default::default()).await.unwrap().items {
                out.push((
                    format!("{kind}/{}", o.metadata.name.unwrap_or_default()),
                    o.metadata.resource_version.unwrap_or_default(),
                ));
            }
        }
        out.sort();
        out
    }
}

/// One slot's traffic at one point of the change log.
#[derive(Debug, Clone, Default)]
struct SlotTraffic {
    weight: u64,
    /// A grey release's header rule sends requests to it.
    canary: bool,
    selected: bool,
    /// The stable Service selects this slot only (not both, as during an NLB overlap,
    /// when its Endpoints hold only the pods that are ready).
    pinned: bool,
    available: i64,
    replicas: i64,
    template: Json,
}

impl SlotTraffic {
    fn has_traffic(&self) -> bool {
        self.weight > 0 || self.canary || (self.selected && self.replicas > 0)
    }
}

/// An HTTPRoute's (blue, green) weights on the rule without header matches, in percent of
/// their sum, and the Service its header rule sends to (with weight), if it has one.
pub fn route_weights(route: &Json, workload: &str) -> ((u64, u64), Option<String>) {
    let rules = route
        .pointer("/spec/rules")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let headers = |r: &Json| {
        r["matches"].as_array().is_some_and(|m| {
            m.iter()
                .any(|m| m["headers"].as_array().is_some_and(|h| !h.is_empty()))
        })
    };
    let weight = |b: &Json| b["weight"].as_u64().unwrap_or(1);
    let main = rules.iter().find(|r| !headers(r));
    let refs = main
        .and_then(|r| r["backendRefs"].as_array().cloned())
        .unwrap_or_default();
    let total: u64 = refs.iter().map(weight).sum();
    let share = |slot: &str| {
        refs.iter()
            .find(|b| b["name"] == json!(format!("{workload}-{slot}")))
            .and_then(|b| (weight(b) * 100).checked_div(total))
            .unwrap_or(0)
    };
    let canary = rules.iter().find(|r| headers(r)).and_then(|r| {
        r["backendRefs"]
            .as_array()?
            .iter()
            .find(|b| weight(b) > 0)?["name"]
            .as_str()
            .map(str::to_owned)
    });
    ((share("blue"), share("green")), canary)
}

impl Harness {
    /// Over the namespace's whole change log, every moment a slot of `workload` got traffic (ALB
    /// weight, or the stable Service selecting it alone) while not every replica was available, and
    /// every change to a slot that had traffic that re-templated it, lowered its replicas or
    /// left it fewer available pods than it served with. Empty: traffic only ever reached
    /// ready slots, and no slot was cut from under its traffic.
    pub fn traffic_violations(&self, workload: &str) -> Vec<String> {
        let slots = ["blue", "green"];
        let mut deployments: std::collections::HashMap<String, Json> = Default::default();
        let mut weights = (0u64, 0u64);
        let mut canary: Option<String> = None;
        let mut selector: Option<Json> = None;
        let mut before: [SlotTraffic; 2] = Default::default();
        let mut out = Vec::new();
        for (rv, _, kind, name, object) in self.events() {
            match kind.as_str() {
                "Deployment" if slots.iter().any(|s| name == format!("{workload}-{s}")) => {
                    deployments.insert(name, object);
                }
                "Ingress" if name == workload => {
                    let action = object
                        .pointer(&format!(
                            "/metadata/annotations/alb.ingress.kubernetes.io~1actions.{workload}"
                        ))
                        .and_then(Json::as_str)
                        .and_then(|a| serde_json::from_str::<Json>(a).ok());
                    let weight = |slot: &str| {
                        action
                            .as_ref()
                            .and_then(|a| a.pointer("/forwardConfig/targetGroups"))
                            .and_then(Json::as_array)
                            .and_then(|g| {
                                g.iter().find(|t| {
                                    t["serviceName"] == json!(format!("{workload}-{slot}"))
                                })
                            })
                            .and_then(|t| t["weight"].as_u64())
                            .unwrap_or(0)
                    };
                    weights = (weight("blue"), weight("green"));
                    // The header rule: a path to `<workload>-canary` and its action's slot.
                    let backend = format!("{workload}-canary");
                    let has_path = object
                        .pointer("/spec/rules/0/http/paths")
                        .and_then(Json::as_array)
                        .is_some_and(|p| {
                            p.iter().any(|p| {
                                p.pointer("/backend/service/name").and_then(Json::as_str)
                                    == Some(backend.as_str())
                            })
                        });
                    canary = object
                        .pointer(&format!(
                            "/metadata/annotations/alb.ingress.kubernetes.io~1actions.{backend}"
                        ))
                        .and_then(Json::as_str)
                        .and_then(|a| serde_json::from_str::<Json>(a).ok())
                        .and_then(|a| {
                            a.pointer("/forwardConfig/targetGroups/0/serviceName")
                                .and_then(Json::as_str)
                                .map(str::to_owned)
                        })
                        .filter(|_| has_path);
                }
                "HTTPRoute" if name == workload => {
                    (weights, canary) = route_weights(&object, workload);
                }
                "Service" if name == workload => {
                    selector = object.pointer("/spec/selector").cloned();
                }
                _ => continue,
            }
            for (i, slot) in slots.iter().enumerate() {
                let deployment = deployments.get(&format!("{workload}-{slot}"));
                let int = |p: &str| {
                    deployment
                        .and_then(|d| d.pointer(p))
                        .and_then(Json::as_i64)
                        .unwrap_or(0)
                };
                let pod_labels =
                    deployment.and_then(|d| d.pointer("/spec/template/metadata/labels"));
                let selected = match (selector.as_ref().and_then(Json::as_object), pod_labels) {
                    (Some(sel), Some(Json::Object(labels))) if !sel.is_empty() => {
                        sel.iter().all(|(k, v)| labels.get(k) == Some(v))
                    }
                    _ => false,
                };
                let pinned = selector
                    .as_ref()
                    .and_then(|s| s.get("infra-gen.dev/slot"))
                    .and_then(Json::as_str)
                    == Some(*slot);
                let now = SlotTraffic {
                    weight: if i == 0 { weights.0 } else { weights.1 },
                    canary: canary.as_deref() == Some(format!("{workload}-{slot}").as_str()),
                    selected,
                    pinned,
                    available: int("/status/availableReplicas"),
                    replicas: int("/spec/replicas"),
                    template: deployment
                        .and_then(|d| d.pointer("/spec/template"))
                        .cloned()
                        .unwrap_or(Json::Null),
                };
                let was = &before[i];
                let gained = now.weight > was.weight
                    || (now.pinned && !was.pinned)
                    || (now.canary && !was.canary);
                if now.has_traffic()
                    && gained
                    && (now.replicas == 0 || now.available < now.replicas)
                {
                    out.push(format!(
                        "rv {rv}: {slot} got traffic (weight {}, selected alone {}, header rule {}) with {}/{} replicas available",
                        now.weight, now.pinned, now.canary, now.available, now.replicas
                    ));
                }
                if was.has_traffic() && now.has_traffic() {
                    if now.template != was.template && !was.template.is_null() {
                        out.push(format!(
                            "rv {rv}: {slot} was re-templated while it had traffic"
                        ));
                    }
                    if now.replicas < was.replicas {
                        out.push(format!(
                            "rv {rv}: {slot} was scaled from {} to {} while it had traffic",
                            was.replicas, now.replicas
                        ));
                    }
                    if now.available < was.available.min(now.replicas) {
                        out.push(format!(
                            "rv {rv}: {slot} went from {} to {} available pods while it had traffic",
                            was.available, now.available
                        ));
                    }
                }
                before[i] = now;
            }
        }
        out
    }
}

impl Harness {
    /// Over the namespace's whole change log, for a stateful workload: every moment its stable
    /// Service started sending new connections to a version that was not fully ready, every
    /// pod of a version deleted while its StatefulSet still wanted it (a restarted server:
    /// its players dropped), every version removed or scaled down while or after it took
    /// connections other than by `retire`, and the live version removed. Empty: players were
    /// never dropped, new connections only reached ready servers.
    pub fn stateful_violations(&self, workload: &str) -> Vec<String> {
        let prefix = format!("{workload}-");
        let mut sets: std::collections::HashMap<String, Json> = Default::default();
        let mut pinned: Option<String> = None;
        let mut ever_live: std::collections::HashSet<String> = Default::default();
        let mut selector = Json::Null;
        // Pods that were ready while the stable Service selected them: they may have players.
        let mut served: std::collections::HashSet<String> = Default::default();
        let mut pods: std::collections::HashMap<String, Json> = Default::default();
        let mut out = Vec::new();
        let int = |o: &Json, p: &str| o.pointer(p).and_then(Json::as_i64).unwrap_or(0);
        let ready = |pod: &Json| {
            pod.pointer("/status/conditions")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        };
        let selected = |selector: &Json, pod: &Json| {
            selector.as_object().is_some_and(|s| {
                !s.is_empty()
                    && s.iter().all(|(k, v)| {
                        pod.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v)
                    })
            })
        };
        for (rv, event, kind, name, object) in self.events() {
            if kind == "Service" && name == workload {
                selector = object
                    .pointer("/spec/selector")
                    .cloned()
                    .unwrap_or_default();
            }
            if kind == "Pod" && event != "DELETED" && name.starts_with(&prefix) {
                pods.insert(name.clone(), object.clone());
            }
            for (pod_name, pod) in &pods {
                if ready(pod) && selected(&selector, pod) {
                    served.insert(pod_name.clone());
                }
            }
            match kind.as_str() {
                "StatefulSet" if name.starts_with(&prefix) => {
                    let version = name[prefix.len()..].to_owned();
                    if event == "DELETED" {
                        if pinned.as_deref() == Some(version.as_str()) {
                            out.push(format!(
                                "rv {rv}: {name} was deleted while it took new connections"
                            ));
                        }
                        sets.remove(&name);
                        continue;
                    }
                    if let Some(was) = sets.get(&name)
                        && ever_live.contains(&version)
                        && int(&object, "/spec/replicas") < int(was, "/spec/replicas")
                    {
                        out.push(format!(
                            "rv {rv}: {name} was scaled from {} to {} after it took connections",
                            int(was, "/spec/replicas"),
                            int(&object, "/spec/replicas")
                        ));
                    }
                    sets.insert(name, object);
                }
                "Service" if name == workload => {
                    let now = object
                        .pointer("/spec/selector/infra-gen.dev~1version")
                        .and_then(Json::as_str)
                        .map(str::to_owned);
                    if let Some(version) = &now
                        && now != pinned
                    {
                        let set = sets.get(&format!("{prefix}{version}"));
                        let (replicas, ready) = set.map_or((0, 0), |s| {
                            (int(s, "/spec/replicas"), int(s, "/status/readyReplicas"))
                        });
                        if replicas == 0 || ready < replicas {
                            out.push(format!(
                                "rv {rv}: new connections went to {version} with {ready}/{replicas} ready"
                            ));
                        }
                        ever_live.insert(version.clone());
                    }
                    if now.is_some() {
                        pinned = now;
                    }
                }
                "Pod" if event == "DELETED" && name.starts_with(&prefix) => {
                    let Some((set, ordinal)) = name.rsplit_once('-') else {
                        continue;
                    };
                    let ordinal: i64 = ordinal.parse().unwrap_or(-1);
                    pods.remove(&name);
                    // Only a server that was ready while selected can have players to drop (a
                    // pod recreated before it ever was is no restart of a server).
                    if let Some(owner) = sets.get(set)
                        && served.contains(&name)
                        && ordinal < int(owner, "/spec/replicas")
                    {
                        out.push(format!(
                            "rv {rv}: pod {name} was deleted while {set} still ran it"
                        ));
                    }
                    served.remove(&name);
                }
                _ => {}
            }
        }
        out
    }
}

impl Drop for Harness {
    /// On a real cluster, a test that passed leaves nothing behind: its namespaces (review
    /// instances included) are deleted. A failed test's stay, to be looked at.
    fn drop(&mut self) {
        if self.double.is_some() || std::thread::panicking() {
            return;
        }
        let kubeconfig = self.direct.clone();
        let prefix = self.namespace();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let client = Harness::client_for(&kubeconfig).await;
                let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
                let Ok(list) = namespaces.list(&Default::default()).await else {
                    return;
                };
                for namespace in list.items {
                    let name = namespace.metadata.name.unwrap_or_default();
                    if name == prefix || name.starts_with(&format!("{prefix}-")) {
                        let _ = namespaces.delete(&name, &Default::default()).await;
                    }
                }
            });
        })
        .join();
    }
}
