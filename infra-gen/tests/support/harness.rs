//! The end-to-end harness. By default it starts the API-server double; with
//! `INFRA_GEN_E2E_KUBECONFIG` set it uses that cluster instead, unchanged (see README:
//! "Running the end-to-end suite against a real cluster"). Each test gets its own project id,
//! hence its own namespace, and a temp project directory with its environment file.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value as Json, json};

use super::apiserver::{ApiServer, Options};

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
    pub never_ready: String,
}

impl Images {
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
                never_ready: "registry.test/web:never-ready".into(),
            }
        }
    }
}

/// One test's world.
pub struct Harness {
    /// The double, unless a real cluster is used.
    pub double: Option<ApiServer>,
    pub kubeconfig: PathBuf,
    pub project: tempfile::TempDir,
    pub id: u32,
    pub images: Images,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique project id (hence namespace) per test, per process.
fn unique_id() -> u32 {
    let base = (std::process::id() % 10_000) * 100;
    100_000 + base + NEXT.fetch_add(1, Ordering::SeqCst)
}

/// The result of one CLI run.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Self {
            ok: output.status.success(),
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
        let (double, kubeconfig) = match real {
            Some(path) => (None, PathBuf::from(path)),
            None => {
                let double = ApiServer::start(options).await;
                let kubeconfig = double.kubeconfig(project.path(), None);
                (Some(double), kubeconfig)
            }
        };
        let images = Images::from_env(double.is_none());
        Self {
            double,
            kubeconfig,
            project,
            id: unique_id(),
            images,
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
        let text = format!(
            "project: {{name: e2e, id: {id}}}\ncluster: {{name: e2e, region: us-east-1, compute: ec2}}\nregistry: {{server: registry.test, pullSecret: pull}}\nworkloads:\n{workloads}\nsecrets:\n  app-db: {{uri: {{fromEnv: E2E_DB_URI}}}}\n",
            id = self.id
        );
        let dir = self.root().join("environments");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{env}.yaml")), text).unwrap();
        let run = self.run(&["render"], &[]).await;
        assert!(run.ok, "render failed: {}", run.all());
    }

    /// A blue-green web workload.
    pub fn web(&self, image: &str, extra: &str) -> String {
        let args = self
            .images
            .args
            .as_ref()
            .map(|a| format!("    args: {a}\n"))
            .unwrap_or_default();
        format!(
            "  web:\n    kind: web\n    image: {image}\n{args}    port: 8080\n    resources: {{cpu: 100m, memory: 128Mi}}\n    env: {{DB: {{secret: app-db, key: uri}}}}\n    probes: {{readiness: {ready}}}\n    http: {{host: web.e2e.test}}\n{extra}",
            ready = self.images.ready_path
        )
    }

    /// Runs `infra-gen --root <project> args…` with CI variables set.
    pub async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_infra-gen"));
        command
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env_remove("KUBECONFIG")
            .env("CI_REGISTRY_USER", "ci-user")
            .env("CI_REGISTRY_PASSWORD", "registry-password-secret")
            .env("E2E_DB_URI", "mongodb://db.e2e.test/app")
            .env("CI_COMMIT_SHA", "0123456789abcdef0123456789abcdef01234567")
            .env("CI_JOB_URL", "https://gitlab.test/e2e/-/jobs/1")
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .expect("infra-gen timed out")
            .expect("run infra-gen");
        Run::from(output)
    }

    /// `apply --env <env> --kubeconfig … [extra…]`.
    pub async fn apply(&self, env: &str, extra: &[&str]) -> Run {
        let kubeconfig = self.kubeconfig.to_string_lossy().to_string();
        let mut args = vec!["apply", "--env", env, "--kubeconfig", &kubeconfig];
        if !extra.contains(&"--timeout") {
            args.extend(["--timeout", "20s"]);
        }
        args.extend_from_slice(extra);
        self.run(&args, &[]).await
    }

    /// Another cluster command (`status`, `rollback`, …) for `env`.
    pub async fn command(&self, command: &str, env: &str, extra: &[&str]) -> Run {
        let kubeconfig = self.kubeconfig.to_string_lossy().to_string();
        let mut args = vec![command, "--env", env, "--kubeconfig", &kubeconfig];
        args.extend_from_slice(extra);
        self.run(&args, &[]).await
    }

    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
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
        let (group, version, plural) = match kind {
            "Deployment" => ("apps", "v1", "deployments"),
            "Service" => ("", "v1", "services"),
            "Ingress" => ("networking.k8s.io", "v1", "ingresses"),
            "HorizontalPodAutoscaler" => ("autoscaling", "v2", "horizontalpodautoscalers"),
            "ConfigMap" => ("", "v1", "configmaps"),
            "Secret" => ("", "v1", "secrets"),
            "Lease" => ("coordination.k8s.io", "v1", "leases"),
            "ServiceAccount" => ("", "v1", "serviceaccounts"),
            "PodDisruptionBudget" => ("policy", "v1", "poddisruptionbudgets"),
            other => panic!("kind {other} not in the harness"),
        };
        let api = self.api(self.client().await, group, version, kind, plural);
        api.get_opt(name)
            .await
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap())
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
        let api = self.api(
            self.client().await,
            "apps",
            "v1",
            "Deployment",
            "deployments",
        );
        api.patch(
            deployment,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
    }

    /// Creates a Lease as another deploy would hold it.
    pub async fn hold_lease(&self, holder: &str, renewed_seconds_ago: i64) {
        let api = self.api(
            self.client().await,
            "coordination.k8s.io",
            "v1",
            "Lease",
            "leases",
        );
        let at = (time::OffsetDateTime::now_utc() - time::Duration::seconds(renewed_seconds_ago))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "infra-gen-deploy", "namespace": self.namespace()},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 60, "acquireTime": at, "renewTime": at},
        });
        api.patch(
            "infra-gen-deploy",
            &PatchParams::apply("other-deployer").force(),
            &Patch::Apply(lease),
        )
        .await
        .unwrap();
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
