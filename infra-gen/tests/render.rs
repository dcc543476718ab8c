//! Rendering, end to end: the committed trees are what the environment files render (golden),
//! output is deterministic, `render --check` reports drift and uncommitted files, review
//! instances, template overrides, and the committed schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use infra_gen::commands::render::renderer;
use infra_gen::env;
use infra_gen::tree;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn infra_gen(root: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_infra-gen"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run infra-gen");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A copy of a project (environments and templates) in a temp dir.
fn copy_project(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["environments", "manifests", "templates"] {
        let source = from.join(sub);
        if source.exists() {
            copy_dir(&source, &dir.path().join(sub));
        }
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for env_dir in std::fs::read_dir(dir).unwrap() {
        let env_dir = env_dir.unwrap().path();
        for file in std::fs::read_dir(&env_dir).unwrap() {
            let file = file.unwrap().path();
            let key = format!(
                "{}/{}",
                env_dir.file_name().unwrap().to_string_lossy(),
                file.file_name().unwrap().to_string_lossy()
            );
            out.insert(key, std::fs::read(&file).unwrap());
        }
    }
    out
}

#[test]
fn committed_trees_are_what_the_environment_files_render() {
    for root in [
        repo(),
        repo().join("examples/mini-hunter"),
        repo().join("examples/gateway-api"),
    ] {
        let loaded = env::load(&root.join("environments"), None);
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let renderer = renderer(&root).unwrap();
        let mut rendered = BTreeMap::new();
        for environment in loaded.environments.iter().filter(|e| !e.spec.review) {
            rendered.insert(
                environment.name.clone(),
                tree::files(environment, &renderer.render(environment).unwrap()).unwrap(),
            );
        }
        let drift = tree::check(&root.join("manifests"), &rendered, true).unwrap();
        assert!(
            drift.is_clean(),
            "{} drifted from its environment files; run `infra-gen --root {} render`:\n{drift:#?}",
            root.display(),
            root.display()
        );
    }
}

#[test]
fn rendering_is_byte_for_byte_deterministic_wherever_it_runs() {
    let a = copy_project(&repo());
    let b = copy_project(&repo());
    std::fs::remove_dir_all(a.path().join("manifests")).unwrap();
    std::fs::remove_dir_all(b.path().join("manifests")).unwrap();
    assert!(infra_gen(a.path(), &["render"]).0);
    // Again from another working directory with a relative root.
    let status = Command::new(env!("CARGO_BIN_EXE_infra-gen"))
        .current_dir(b.path().parent().unwrap())
        .args([
            "--root",
            b.path().file_name().unwrap().to_str().unwrap(),
            "render",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let first = read_tree(&a.path().join("manifests"));
    assert_eq!(first, read_tree(&b.path().join("manifests")));
    assert_eq!(
        first,
        read_tree(&repo().join("manifests")),
        "same bytes as the committed tree"
    );
    // And rendering again changes nothing.
    let (ok, stdout, _) = infra_gen(a.path(), &["render"]);
    assert!(ok);
    assert!(stdout.contains("0 file(s) written"), "{stdout}");
}

#[test]
fn check_lists_differing_missing_and_stale_files_and_render_repairs_them() {
    let project = copy_project(&repo().join("examples/mini-hunter"));
    let root = project.path();
    let dir = root.join("manifests/production");
    std::fs::write(dir.join("deployment-console.yaml"), "# edited by hand\n").unwrap();
    std::fs::remove_file(dir.join("service-console.yaml")).unwrap();
    std::fs::write(dir.join("configmap-old.yaml"), "kind: ConfigMap\n").unwrap();
    std::fs::create_dir_all(root.join("manifests/qa")).unwrap();
    std::fs::write(root.join("manifests/qa/x.yaml"), "x: 1\n").unwrap();

    let (ok, stdout, stderr) = infra_gen(root, &["render", "--check"]);
    assert!(!ok, "check must fail");
    assert!(
        stdout.contains("differs: ") && stdout.contains("deployment-console.yaml"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-# edited by hand"),
        "a short diff is shown: {stdout}"
    );
    assert!(
        stdout.contains("missing: ") && stdout.contains("service-console.yaml"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stale:   ") && stdout.contains("configmap-old.yaml"),
        "{stdout}"
    );
    assert!(
        stdout.contains("manifests/qa"),
        "a directory of no environment is stale: {stdout}"
    );
    assert!(stderr.contains("run `infra-gen render`"), "{stderr}");
    assert!(
        std::fs::read_to_string(dir.join("deployment-console.yaml"))
            .unwrap()
            .starts_with("# edited"),
        "--check writes nothing"
    );

    let (ok, stdout, _) = infra_gen(root, &["render"]);
    assert!(ok, "{stdout}");
    assert!(!dir.join("configmap-old.yaml").exists());
    assert!(!root.join("manifests/qa").exists());
    assert_eq!(
        read_tree(&root.join("manifests")),
        read_tree(&repo().join("examples/mini-hunter/manifests"))
    );
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[test]
fn check_tells_forgot_to_commit_from_forgot_to_render() {
    let project = copy_project(&repo().join("examples/mini-hunter"));
    let root = project.path();
    git(root, &["init", "-q"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "init"]);
    let (ok, stdout, _) = infra_gen(root, &["render", "--check"]);
    assert!(ok, "{stdout}");

    // Edit an environment file and render, but do not commit.
    let env_file = root.join("environments/_defaults.yaml");
    let text = std::fs::read_to_string(&env_file).unwrap().replace(
        "replicas: 2\n    resources: {cpu: 250m",
        "replicas: 3\n    resources: {cpu: 250m",
    );
    std::fs::write(&env_file, text).unwrap();
    let (ok, _, _) = infra_gen(root, &["render"]);
    assert!(ok);
    let (ok, stdout, stderr) = infra_gen(root, &["render", "--check"]);
    assert!(!ok);
    assert!(
        stdout.contains("not committed: environments/_defaults.yaml (modified, not committed)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not committed: manifests/production/deployment-console.yaml"),
        "{stdout}"
    );
    assert!(stderr.contains("not committed: commit them"), "{stderr}");
    assert!(
        !stdout.contains("differs:"),
        "the tree itself matches: {stdout}"
    );
}

#[test]
fn review_instances_render_on_the_fly_with_their_own_namespace_and_host() {
    let out = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = infra_gen(
        &repo(),
        &[
            "render",
            "--env",
            "review",
            "--instance",
            "mr-42",
            "--output",
            out.path().to_str().unwrap(),
        ],
    );
    assert!(ok, "{stdout}{stderr}");
    let namespace = std::fs::read_to_string(
        out.path()
            .join("review/namespace-controltower-9391-mr-42.yaml"),
    )
    .unwrap();
    assert!(
        namespace.contains("infra-gen.dev/environment: review-mr-42"),
        "{namespace}"
    );
    let ingress =
        std::fs::read_to_string(out.path().join("review/ingress-controltower.yaml")).unwrap();
    assert!(
        ingress.contains("host: mr-42.review.ct.staging.example.com"),
        "{ingress}"
    );
    // `plan` shows the host the Ingress has.
    let (ok, plan, stderr) =
        infra_gen(&repo(), &["plan", "--env", "review", "--instance", "mr-42"]);
    assert!(ok, "{stderr}");
    assert!(
        plan.contains(" mr-42.review.ct.staging.example.com"),
        "{plan}"
    );

    let (ok, _, stderr) = infra_gen(
        &repo(),
        &[
            "render",
            "--env",
            "staging",
            "--instance",
            "mr-42",
            "--output",
            out.path().to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("not a review environment"), "{stderr}");

    let (ok, _, stderr) = infra_gen(
        &repo(),
        &["render", "--env", "review", "--instance", "mr-42"],
    );
    assert!(!ok);
    assert!(stderr.contains("--output"), "{stderr}");
}

#[test]
fn unknown_environment_names_suggest_the_nearest() {
    let (ok, _, stderr) = infra_gen(&repo(), &["render", "--env", "stagign", "--check"]);
    assert!(!ok);
    assert!(stderr.contains("did you mean `staging`?"), "{stderr}");
}

#[test]
fn plan_shows_namespace_sizes_and_hosts() {
    let (ok, stdout, _) = infra_gen(&repo().join("examples/mini-hunter"), &["plan"]);
    assert!(ok);
    assert!(
        stdout.contains(
            "production → namespace mini-hunter-9391 on games-prod (ap-northeast-1, fargate)"
        ),
        "{stdout}"
    );
    let game = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("game-server"))
        .unwrap();
    for cell in [
        "tcp",
        "(hpa)",
        "4..40",
        "2 vCPU / 5 GB",
        "blue-green",
        "NLB game:7777 voice:7778",
    ] {
        assert!(game.contains(cell), "{game}");
    }
    let ranking = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("ranking"))
        .unwrap();
    assert!(
        ranking.contains("0 3 * * *") && ranking.contains("1 vCPU / 3 GB"),
        "{ranking}"
    );
}

#[test]
fn committed_schema_is_the_generated_one_and_every_environment_file_references_it() {
    for root in [
        repo(),
        repo().join("examples/mini-hunter"),
        repo().join("examples/gateway-api"),
    ] {
        let committed = std::fs::read_to_string(root.join("environments/schema.json")).unwrap();
        assert_eq!(
            committed.trim_end(),
            infra_gen::commands::schema::schema_text(),
            "run `infra-gen schema > {}/environments/schema.json`",
            root.display()
        );
        for entry in std::fs::read_dir(root.join("environments")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".yaml") && !name.starts_with('_') {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    text.starts_with("# yaml-language-server: $schema=./schema.json"),
                    "{name} lacks the modeline"
                );
            }
        }
    }
}

fn project_with_template(name: &str, template: &str) -> tempfile::TempDir {
    let project = copy_project(&repo().join("examples/mini-hunter"));
    std::fs::create_dir_all(project.path().join("templates")).unwrap();
    std::fs::write(project.path().join("templates").join(name), template).unwrap();
    project
}

#[test]
fn project_templates_override_the_embedded_ones_and_are_checked() {
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ env.namespace | tojson }}\n  labels: {{ env.namespace_labels | tojson }}\n  annotations: {team: hunters}\n";
    let project = project_with_template("namespace.yaml.j2", ns);
    let (ok, stdout, stderr) = infra_gen(project.path(), &["render"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("using project templates: namespace.yaml.j2"),
        "{stderr}"
    );
    let _ = stdout;
    let text = std::fs::read_to_string(
        project
            .path()
            .join("manifests/production/namespace-mini-hunter-9391.yaml"),
    )
    .unwrap();
    assert!(text.contains("team: hunters"), "{text}");

    let typo = ns.replace("annotations", "anotations");
    let project = project_with_template("namespace.yaml.j2", &typo);
    let (ok, _, stderr) = infra_gen(project.path(), &["render"]);
    assert!(!ok);
    assert!(
        stderr.contains("metadata.anotations is not a field"),
        "{stderr}"
    );

    let broken = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ env.namespaec }}\n";
    let project = project_with_template("namespace.yaml.j2", broken);
    let (ok, _, stderr) = infra_gen(project.path(), &["render"]);
    assert!(!ok);
    assert!(
        stderr.contains("template namespace.yaml.j2") && stderr.contains("namespaec"),
        "{stderr}"
    );

    let not_yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: [unclosed\n";
    let project = project_with_template("namespace.yaml.j2", not_yaml);
    let (ok, _, stderr) = infra_gen(project.path(), &["render"]);
    assert!(!ok);
    assert!(stderr.contains("not valid YAML"), "{stderr}");
    // Nothing was written for a failed render.
    assert_eq!(
        read_tree(&project.path().join("manifests")),
        read_tree(&repo().join("examples/mini-hunter/manifests"))
    );
}

#[test]
fn fargate_restrictions_hold_even_for_custom_templates() {
    let deployment =
        std::fs::read_to_string(repo().join("infra-gen/src/render/templates/deployment.yaml.j2"))
            .unwrap()
            .replace(
                "    spec:\n      {{ pod_spec",
                "    spec:\n      hostNetwork: true\n      {{ pod_spec",
            );
    let project = project_with_template("deployment.yaml.j2", &deployment);
    let (ok, _, stderr) = infra_gen(project.path(), &["render"]);
    assert!(!ok);
    assert!(
        stderr.contains("hostNetwork is not supported on Fargate"),
        "{stderr}"
    );

    let ingress =
        std::fs::read_to_string(repo().join("infra-gen/src/render/templates/ingress.yaml.j2"))
            .unwrap()
            .replace(
                "  annotations: {{ w.http.annotations | tojson }}",
                "  annotations: {\"alb.ingress.kubernetes.io/target-type\": instance}",
            );
    let project = project_with_template("ingress.yaml.j2", &ingress);
    let (ok, _, stderr) = infra_gen(project.path(), &["render"]);
    assert!(!ok);
    assert!(stderr.contains("target-type must be ip"), "{stderr}");
}

#[test]
fn a_finalize_job_that_starts_before_the_scale_down_delay_is_refused_with_its_position() {
    let dir = copy_project(&repo());
    let committed = std::fs::read_to_string(repo().join(".gitlab-ci.yml")).unwrap();
    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    // The deploy component's input.
    let pipeline = committed.replace("finalize_delay: 11 minutes", "finalize_delay: 5 minutes");
    std::fs::write(dir.path().join(".gitlab-ci.yml"), &pipeline).unwrap();
    let line = line_of(&pipeline, "finalize_delay: 5 minutes");
    let (ok, _, stderr) = infra_gen(dir.path(), &["render", "--check"]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(".gitlab-ci.yml:{line}:")),
        "position: {stderr}"
    );
    assert!(
        stderr.contains("the included finalize-production job starts \"5 minutes\" (300 s) after the deploy, before the 600 s scale-down delay of workload controltower"),
        "{stderr}"
    );
    assert!(
        stderr.contains("finalize_delay: 10 minutes"),
        "the fix: {stderr}"
    );
    // A job written out in the pipeline.
    let pipeline = format!(
        "{committed}\nfinalize-by-hand:\n  stage: deploy\n  when: delayed\n  start_in: 5 minutes\n  script:\n    - infra-gen finalize --env production\n"
    );
    std::fs::write(dir.path().join(".gitlab-ci.yml"), &pipeline).unwrap();
    let line = line_of(&pipeline, "start_in: 5 minutes");
    let (ok, _, stderr) = infra_gen(dir.path(), &["render", "--check"]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&format!(".gitlab-ci.yml:{line}:"))
            && stderr.contains("finalize-by-hand starts \"5 minutes\" (300 s) after the deploy")
            && stderr.contains("start_in: 10 minutes"),
        "{stderr}"
    );
    // The committed pipeline agrees with the environments.
    let (ok, _, stderr) = infra_gen(&repo(), &["render", "--check"]);
    assert!(ok, "{stderr}");
}

#[test]
fn plan_shows_a_strategy_switch_as_a_one_time_change_with_its_load_balancer_effect() {
    let dir = copy_project(&repo());
    let staging = dir.path().join("environments/staging.yaml");
    let text = std::fs::read_to_string(&staging).unwrap();
    let rolling = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("rollout:"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&staging, rolling).unwrap();
    let (ok, stdout, stderr) = infra_gen(dir.path(), &["plan", "--env", "staging"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("one-time change: controltower switches from blue-green to rolling")
            && stdout.contains("as many replicas as the live slot runs now")
            && stdout.contains("creates a new target group"),
        "{stdout}"
    );
    let (_, json, _) = infra_gen(dir.path(), &["plan", "--env", "staging", "-o", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc[0]["oneTimeChanges"].as_array().map(Vec::len), Some(1));
    // Once rendered and committed, it is no longer a change.
    assert!(infra_gen(dir.path(), &["render"]).0);
    let (_, stdout, _) = infra_gen(dir.path(), &["plan", "--env", "staging"]);
    assert!(!stdout.contains("one-time change"), "{stdout}");
}

#[test]
fn a_strategy_switch_behind_a_gateway_names_the_httproute_not_the_alb() {
    let dir = copy_project(&repo().join("examples/gateway-api"));
    let file = dir.path().join("environments/production.yaml");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "http: {host: console.mini-hunter.example.cn, path: /}",
        "http: {host: console.mini-hunter.example.cn, path: /}\n    rollout: {strategy: blue-green}",
    );
    std::fs::write(&file, text).unwrap();
    let (ok, stdout, stderr) = infra_gen(dir.path(), &["plan"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("one-time change: console switches from rolling to blue-green")
            && stdout.contains("the HTTPRoute's backend changes from Service console to the weighted console-blue and console-green")
            && !stdout.contains("AWS Load Balancer Controller creates"),
        "{stdout}"
    );
}

#[test]
fn a_gateway_api_environment_renders_httproutes_and_nothing_of_aws() {
    let tree = repo().join("examples/gateway-api/manifests/production");
    for entry in std::fs::read_dir(&tree).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for aws in [
            "alb.ingress.kubernetes.io",
            "aws-load-balancer",
            "elbv2.k8s.aws",
            "kind: Ingress",
        ] {
            assert!(!text.contains(aws), "{} has {aws}", path.display());
        }
    }
    // Blue-green with a preview: the weighted route over both slots and the preview's route.
    let route = yaml_file(&tree.join("httproute-gateway.yaml"));
    assert_eq!(
        route["spec"]["parentRefs"],
        serde_json::json!([{"name": "public", "namespace": "gateways", "sectionName": "https"}])
    );
    assert_eq!(
        route["spec"]["hostnames"],
        serde_json::json!(["api.mini-hunter.example.cn"])
    );
    assert_eq!(
        route["spec"]["rules"],
        serde_json::json!([{
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [
                {"name": "gateway-blue", "port": 80, "weight": 100},
                {"name": "gateway-green", "port": 80, "weight": 0}
            ]
        }])
    );
    let preview = yaml_file(&tree.join("httproute-gateway-preview.yaml"));
    assert_eq!(
        preview["spec"]["hostnames"],
        serde_json::json!(["preview.api.mini-hunter.example.cn"])
    );
    assert_eq!(
        preview["spec"]["rules"][0]["backendRefs"][0]["name"],
        "gateway-preview"
    );
    // Rolling: the stable Service.
    let console = yaml_file(&tree.join("httproute-console.yaml"));
    assert_eq!(
        console["spec"]["rules"][0]["backendRefs"],
        serde_json::json!([{"name": "console", "port": 80}])
    );
    // tcp: a plain LoadBalancer with the file's annotations; no readiness-gate label.
    let game = yaml_file(&tree.join("service-game-server.yaml"));
    assert_eq!(game["spec"]["type"], "LoadBalancer");
    assert!(game["spec"].get("loadBalancerClass").is_none());
    assert_eq!(
        game["metadata"]["annotations"]["service.beta.kubernetes.io/alibaba-cloud-loadbalancer-spec"],
        "slb.s2.small"
    );
    // A workload's own annotations override the environment's, key by key.
    let connector = yaml_file(&tree.join("service-connector.yaml"));
    assert_eq!(connector["spec"]["type"], "LoadBalancer");
    assert_eq!(
        connector["metadata"]["annotations"],
        serde_json::json!({
            "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-address-type": "internet",
            "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-spec": "slb.s3.medium"
        })
    );
    let namespace = yaml_file(&tree.join("namespace-mini-hunter-cn-9392.yaml"));
    assert!(
        namespace["metadata"]["labels"]
            .get("elbv2.k8s.aws/pod-readiness-gate-inject")
            .is_none()
    );
    // The plan names the provider and its Gateway.
    let (ok, stdout, stderr) = infra_gen(&repo().join("examples/gateway-api"), &["plan"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "traffic: gateway-api (HTTPRoutes on Gateway gateways/public (listener https)"
        ) && stdout.contains("LoadBalancer game:7777"),
        "{stdout}"
    );
    let (ok, stdout, _) = infra_gen(
        &repo().join("examples/gateway-api"),
        &["plan", "-o", "json"],
    );
    assert!(ok);
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(plan[0]["traffic"]["provider"], "gateway-api");
    assert_eq!(plan[0]["traffic"]["parentRefs"][0]["name"], "public");
}

fn yaml_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let arc: std::sync::Arc<Path> = std::sync::Arc::from(path);
    env::yaml::parse(&arc, &text).unwrap().unwrap().to_json()
}

#[test]
fn the_game_server_nlb_checks_a_tcp_health_port_and_keeps_players_connected() {
    let tree = repo().join("examples/mini-hunter/manifests/production");
    let service = yaml_file(&tree.join("service-game-server.yaml"));
    let annotation = |key: &str| {
        service["metadata"]["annotations"]
            [format!("service.beta.kubernetes.io/aws-load-balancer-{key}")]
        .as_str()
        .map(str::to_owned)
    };
    assert_eq!(annotation("healthcheck-protocol").as_deref(), Some("HTTP"));
    assert_eq!(annotation("healthcheck-port").as_deref(), Some("8081"));
    assert_eq!(annotation("healthcheck-path").as_deref(), Some("/ready"));
    assert_eq!(
        annotation("target-group-attributes").as_deref(),
        Some(
            "deregistration_delay.timeout_seconds=300,deregistration_delay.connection_termination.enabled=false"
        ),
        "a cutover does not cut players off"
    );
    let listeners: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        listeners,
        ["game", "voice"],
        "the health port is not a listener"
    );
    let deployment = yaml_file(&tree.join("deployment-game-server.yaml"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "health");
    let ports: Vec<&str> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(ports.contains(&"health"), "{ports:?}");
}

#[test]
fn an_nlb_only_namespace_asks_for_readiness_gates_and_tcp_probes_become_tcp_checks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("environments")).unwrap();
    std::fs::write(
        dir.path().join("environments/prod.yaml"),
        "project: {name: arena, id: 7}\ncluster: {name: c, region: eu-west-1, compute: ec2}\nworkloads:\n  arena:\n    kind: tcp\n    image: r.example.com/arena:1.0\n    replicas: 2\n    ports: [{name: game, port: 7000}, {name: voice, port: 7001, protocol: UDP}]\n    probes: {readiness: {tcp: game}, liveness: {exec: [/bin/alive]}}\n",
    )
    .unwrap();
    let (ok, _, stderr) = infra_gen(dir.path(), &["render"]);
    assert!(ok, "{stderr}");
    let tree = dir.path().join("manifests/prod");
    let namespace = yaml_file(&tree.join("namespace-arena-7.yaml"));
    assert_eq!(
        namespace["metadata"]["labels"]["elbv2.k8s.aws/pod-readiness-gate-inject"],
        "enabled"
    );
    let service = yaml_file(&tree.join("service-arena.yaml"));
    let annotations = &service["metadata"]["annotations"];
    assert_eq!(
        annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-protocol"],
        "TCP"
    );
    assert_eq!(
        annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-port"],
        "7000"
    );
    assert!(
        annotations
            .get("service.beta.kubernetes.io/aws-load-balancer-healthcheck-path")
            .is_none()
    );
    let deployment = yaml_file(&tree.join("deployment-arena.yaml"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["tcpSocket"]["port"], "game");
    assert_eq!(
        container["livenessProbe"]["exec"]["command"][0],
        "/bin/alive"
    );
}

#[test]
fn a_project_template_naming_a_port_that_does_not_exist_is_refused() {
    let pod = std::fs::read_to_string(repo().join("infra-gen/src/render/templates/_pod.yaml.j2"))
        .unwrap()
        .replace(
            "    readinessProbe: {{ w.readiness_probe | tojson }}",
            "    readinessProbe: {httpGet: {path: /ready, port: http}}",
        );
    let project = project_with_template("_pod.yaml.j2", &pod);
    let (ok, _, stderr) = infra_gen(project.path(), &["render"]);
    assert!(!ok);
    assert!(
        stderr.contains("Deployment/game-server: the readinessProbe of container game-server names port \"http\", which the container does not declare (its ports: game, voice, health)"),
        "{stderr}"
    );
    let service =
        std::fs::read_to_string(repo().join("infra-gen/src/render/templates/service.yaml.j2"))
            .unwrap()
            .replace("targetPort: {{ p.name | tojson }}", "targetPort: gamer");
    let project = project_with_template("service.yaml.j2", &service);
    let (ok, _, stderr) = infra_gen(project.path(), &["render"]);
    assert!(!ok);
    assert!(
        stderr.contains(
            "Service/game-server: targetPort \"gamer\" is not a port of the pods it selects"
        ),
        "{stderr}"
    );
}

#[test]
fn a_stateful_connector_renders_stable_ids_and_keeps_players_connected() {
    let tree = repo().join("examples/mini-hunter/manifests/production");
    let set = yaml_file(&tree.join("statefulset-connector.yaml"));
    assert_eq!(set["spec"]["podManagementPolicy"], "Parallel");
    assert_eq!(set["spec"]["updateStrategy"]["type"], "OnDelete");
    assert_eq!(
        set["metadata"]["annotations"]["infra-gen.dev/version"],
        "2-7-0"
    );
    let pod = &set["spec"]["template"]["spec"];
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let var = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    assert_eq!(
        var("SERVER_ID").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(var("VERSION").unwrap()["value"], "2-7-0");
    assert!(
        set["spec"].get("volumeClaimTemplates").is_none(),
        "identity, not storage"
    );
    // preStop 30 s + drain 60 s fit in the grace period.
    assert!(pod["terminationGracePeriodSeconds"].as_i64().unwrap() >= 90);

    let headless = yaml_file(&tree.join("service-connector-headless.yaml"));
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let pdb = yaml_file(&tree.join("poddisruptionbudget-connector.yaml"));
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);

    let nlb = yaml_file(&tree.join("service-connector.yaml"));
    let annotations = nlb["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(
        annotations["service.beta.kubernetes.io/aws-load-balancer-target-group-attributes"],
        "deregistration_delay.timeout_seconds=300,deregistration_delay.connection_termination.enabled=false"
    );
    let listeners: Vec<&String> = annotations
        .keys()
        .filter(|k| k.contains("listener-attributes"))
        .collect();
    assert_eq!(
        listeners,
        ["service.beta.kubernetes.io/aws-load-balancer-listener-attributes.TCP-3010"],
        "one listener, the exposed port; the health port is none"
    );
    assert_eq!(
        annotations["service.beta.kubernetes.io/aws-load-balancer-listener-attributes.TCP-3010"],
        "tcp.idle_timeout.seconds=3600"
    );

    // The back end is not exposed: a headless Service for its stable names, no NLB.
    assert!(tree.join("statefulset-battle.yaml").exists());
    assert!(tree.join("service-battle-headless.yaml").exists());
    assert!(!tree.join("service-battle.yaml").exists());
}

#[test]
fn a_stateful_workload_behind_the_alb_forwards_to_its_versions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("environments")).unwrap();
    std::fs::write(
        dir.path().join("environments/prod.yaml"),
        "project: {name: arena, id: 7}\ncluster: {name: c, region: eu-west-1, compute: ec2}\nworkloads:\n  lobby:\n    kind: stateful\n    image: r.example.com/lobby:3.1\n    replicas: 2\n    ports: [{name: http, port: 8080}]\n    probes: {readiness: /ready}\n    http: {host: lobby.example.com, idleTimeoutSeconds: 1200}\n",
    )
    .unwrap();
    let (ok, _, stderr) = infra_gen(dir.path(), &["render"]);
    assert!(ok, "{stderr}");
    let tree = dir.path().join("manifests/prod");
    let ingress = yaml_file(&tree.join("ingress-lobby.yaml"));
    let annotations = &ingress["metadata"]["annotations"];
    let action: serde_json::Value = serde_json::from_str(
        annotations["alb.ingress.kubernetes.io/actions.lobby"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        action["forwardConfig"]["targetGroups"],
        serde_json::json!([{"serviceName": "lobby-headless", "servicePort": "http", "weight": 100}]),
        "the tree forwards to its per-version Service; apply names it lobby-<version> and lists every running version"
    );
    let headless = yaml_file(&tree.join("service-lobby-headless.yaml"));
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(
        annotations["alb.ingress.kubernetes.io/load-balancer-attributes"],
        "idle_timeout.timeout_seconds=1200"
    );
    let stable = yaml_file(&tree.join("service-lobby.yaml"));
    assert_eq!(
        stable["spec"]["type"], "ClusterIP",
        "in-cluster clients reach the live version; the ALB's target groups are the versions' Services"
    );
}

#[test]
fn fargate_refuses_volume_claim_templates_on_a_stateful_workload() {
    let template =
        std::fs::read_to_string(repo().join("infra-gen/src/render/templates/statefulset.yaml.j2"))
            .unwrap()
            .replace(
                "  podManagementPolicy: Parallel\n",
                "  podManagementPolicy: Parallel\n  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
            );
    assert!(
        template.contains("volumeClaimTemplates"),
        "the template changed"
    );
    let project = project_with_template("statefulset.yaml.j2", &template);
    let (ok, _, stderr) = infra_gen(project.path(), &["render"]);
    assert!(!ok);
    assert!(
        stderr.contains("StatefulSet/connector: volumeClaimTemplates need EBS volumes, which Fargate pods cannot mount"),
        "{stderr}"
    );
}

#[test]
fn a_grey_release_is_in_the_tree_as_the_deployment_s_canary_and_the_ingress_stays_plain() {
    let tree = repo().join("examples/mini-hunter/manifests/production");
    let deployment = yaml_file(&tree.join("deployment-gateway.yaml"));
    let canary: serde_json::Value = serde_json::from_str(
        deployment["metadata"]["annotations"]["infra-gen.dev/canary"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        canary,
        serde_json::json!({"header": "Version", "values": ["2.8.*"]})
    );
    let ingress = yaml_file(&tree.join("ingress-gateway.yaml"));
    let paths = ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap();
    assert_eq!(
        paths.len(),
        1,
        "apply adds the header rule, only while a canary runs"
    );
    assert_eq!(paths[0]["backend"]["service"]["name"], "gateway");
    assert!(
        !ingress["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.contains("conditions.")),
        "{ingress}"
    );
}

/// Every pod of both committed trees: a non-root UID/GID, a read-only root filesystem, and
/// the API token only where an IAM role (IRSA) needs it — on the pod and its ServiceAccount.
#[test]
fn every_rendered_pod_runs_as_nonroot_read_only_and_without_a_token_unless_irsa() {
    let mut pods = 0;
    for tree in [
        repo().join("manifests"),
        repo().join("examples/mini-hunter/manifests"),
    ] {
        for file in read_tree(&tree).into_keys() {
            let name = file.rsplit('/').next().unwrap();
            let pointer = if name.starts_with("deployment-") || name.starts_with("statefulset-") {
                "/spec/template/spec"
            } else if name.starts_with("cronjob-") {
                "/spec/jobTemplate/spec/template/spec"
            } else {
                continue;
            };
            let object = yaml_file(&tree.join(&file));
            let pod = object.pointer(pointer).unwrap();
            pods += 1;
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{file}");
            assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{file}");
            assert_eq!(pod["securityContext"]["runAsGroup"], 65532, "{file}");
            let container = &pod["containers"][0]["securityContext"];
            assert_eq!(container["readOnlyRootFilesystem"], true, "{file}");
            assert_eq!(container["allowPrivilegeEscalation"], false, "{file}");

            let workload = pod["serviceAccountName"].as_str().unwrap();
            let env = file.split('/').next().unwrap();
            let account = yaml_file(
                &tree
                    .join(env)
                    .join(format!("serviceaccount-{workload}.yaml")),
            );
            let irsa = account
                .pointer("/metadata/annotations/eks.amazonaws.com~1role-arn")
                .is_some();
            // The capacity CronJobs patch HPAs: they need the token, and their account may do
            // nothing else (checked with the Role below).
            let needs_token = irsa || workload == "infra-gen-capacity";
            assert_eq!(pod["automountServiceAccountToken"], needs_token, "{file}");
            assert_eq!(
                account["automountServiceAccountToken"], needs_token,
                "{file}"
            );
        }
    }
    assert!(pods >= 9, "only {pods} pods found");

    // The example's console has an IAM role, so it gets the token; its cron job asked for a
    // writable /tmp and got an emptyDir there, the root filesystem still read-only.
    let tree = repo().join("examples/mini-hunter/manifests/production");
    let console = yaml_file(&tree.join("deployment-console.yaml"));
    assert_eq!(
        console["spec"]["template"]["spec"]["automountServiceAccountToken"],
        true
    );
    let cron = yaml_file(&tree.join("cronjob-ranking.yaml"));
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        serde_json::json!([{"name": "tmp", "emptyDir": {}}])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        serde_json::json!([{"name": "tmp", "mountPath": "/tmp"}])
    );
}

#[test]
fn pod_security_settings_override_the_defaults() {
    let project = copy_project(&repo());
    let file = project.path().join("environments/_defaults.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let Some(at) = text.find("    image:") else {
        panic!("no image line in {text}")
    };
    let edited = format!(
        "{}    security: {{runAsUser: 1000, runAsGroup: 3000, readOnlyRootFilesystem: false, serviceAccountToken: true}}\n{}",
        &text[..at],
        &text[at..]
    );
    std::fs::write(&file, edited).unwrap();
    let (ok, _, stderr) = infra_gen(project.path(), &["render"]);
    assert!(ok, "{stderr}");
    let deployment = yaml_file(
        &project
            .path()
            .join("manifests/staging/deployment-controltower.yaml"),
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 1000);
    assert_eq!(pod["securityContext"]["runAsGroup"], 3000);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "always");
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        false
    );
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert!(pod.get("volumes").is_none(), "no /tmp unless asked");
    let account = yaml_file(
        &project
            .path()
            .join("manifests/staging/serviceaccount-controltower.yaml"),
    );
    assert_eq!(account["automountServiceAccountToken"], true);
}

#[test]
fn a_capacity_window_renders_cronjobs_in_its_zone_and_a_role_that_may_patch_only_its_hpa() {
    // environments/production.yaml: maintenance ends at 11:00 JST every Wednesday; 20 pods
    // from 10:50 to 13:00 (committed bounds 3..30).
    let tree = repo().join("manifests/production");
    let up = yaml_file(&tree.join("cronjob-controltower-capacity-maintenance-end-up.yaml"));
    let down = yaml_file(&tree.join("cronjob-controltower-capacity-maintenance-end-down.yaml"));
    assert_eq!(up["spec"]["schedule"], "50 10 * * 3");
    assert_eq!(down["spec"]["schedule"], "0 13 * * 3");
    for (job, patch) in [
        (
            &up,
            r#"--patch={"spec":{"minReplicas":20,"maxReplicas":30}}"#,
        ),
        (
            &down,
            r#"--patch={"spec":{"minReplicas":3,"maxReplicas":30}}"#,
        ),
    ] {
        assert_eq!(job["spec"]["timeZone"], "Asia/Tokyo");
        assert_eq!(job["spec"]["concurrencyPolicy"], "Forbid");
        let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "infra-gen-capacity");
        let args: Vec<&str> = pod["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "patch",
                "horizontalpodautoscaler",
                "controltower",
                "--namespace=controltower-9391",
                "--field-manager=infra-gen-capacity",
                "--type=merge",
                patch
            ]
        );
        // The kubectl of the cluster's minor version.
        assert_eq!(
            pod["containers"][0]["image"],
            "registry.k8s.io/kubectl:v1.33.0"
        );
        // Not a pod of the workload: no Service or PDB selects it.
        assert_eq!(
            job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
            "infra-gen-capacity"
        );
    }
    let role = yaml_file(&tree.join("role-infra-gen-capacity.yaml"));
    let rules = role["rules"].as_array().unwrap();
    let names = |resource: &str| -> Vec<String> {
        rules
            .iter()
            .find(|r| r["resources"][0] == resource)
            .map(|r| {
                r["resourceNames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap()
    };
    assert_eq!(names("horizontalpodautoscalers"), ["controltower"]);
    assert_eq!(
        names("cronjobs"),
        [
            "controltower-capacity-expire",
            "controltower-capacity-maintenance-end-up",
            "controltower-capacity-maintenance-end-down"
        ]
    );
    assert!(rules.iter().all(|r| {
        !r["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "create" || v == "*")
    }));
    let binding = yaml_file(&tree.join("rolebinding-infra-gen-capacity.yaml"));
    assert_eq!(binding["subjects"][0]["name"], "infra-gen-capacity");
    // Staging has no window: the account is there for `infra-gen scale`, no window CronJob.
    let tree = read_tree(&repo().join("manifests"));
    let staging: Vec<&String> = tree.keys().filter(|f| f.starts_with("staging/")).collect();
    assert!(
        staging
            .iter()
            .any(|f| f.contains("role-infra-gen-capacity"))
    );
    assert!(
        !staging
            .iter()
            .any(|f| f.contains("cronjob-controltower-capacity"))
    );
}

#[test]
fn plan_shows_each_capacity_window_and_the_next_ones_in_its_zone() {
    let (ok, stdout, stderr) = infra_gen(&repo(), &["plan", "--env", "production"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "controltower: window maintenance-end (0 11 * * wed Asia/Tokyo, 2h): HPA 20..30, raised 10m before"
        ),
        "{stdout}"
    );
    let next: Vec<&str> = stdout.lines().filter(|l| l.contains("(raised ")).collect();
    assert_eq!(next.len(), 3, "{stdout}");
    for line in next {
        assert!(
            line.contains(" 11:00 JST → ")
                && line.contains(" 13:00 JST (raised ")
                && line.contains(" 10:50 JST)"),
            "{line}"
        );
    }
    let (ok, json, _) = infra_gen(&repo(), &["plan", "--env", "production", "-o", "json"]);
    assert!(ok);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let window = &doc[0]["workloads"]["controltower"]["autoscaling"]["schedule"][0];
    assert_eq!(window["name"], "maintenance-end");
    assert_eq!(window["min"], 20);
    // 11:00 JST is 02:00 UTC, on a Wednesday.
    let starts = window["next"][0]["starts"].as_str().unwrap();
    assert!(starts.ends_with("T02:00:00Z"), "{starts}");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_instead_of_panicking() {
    // As `infra-gen plan -o json | head -c1`: the reader is gone before the plan is written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_infra-gen"))
        .arg("--root")
        .arg(repo())
        .args(["plan", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(141), "{stderr}");
}

#[test]
fn check_fails_when_the_committed_schema_is_not_this_binarys() {
    let dir = copy_project(&repo());
    let schema = dir.path().join("environments/schema.json");
    // As after an upgrade of infra-gen that added a key.
    let old = std::fs::read_to_string(&schema)
        .unwrap()
        .replace("\"kubectlImage\"", "\"kubectlImageOld\"");
    std::fs::write(&schema, old).unwrap();
    let (ok, stdout, stderr) = infra_gen(dir.path(), &["render", "--check"]);
    assert!(!ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("schema.json is not the schema of this infra-gen")
            && stdout.contains("run `infra-gen schema > environments/schema.json`"),
        "{stdout}"
    );
}

#[test]
fn failures_exit_with_the_code_of_their_class() {
    // Bad input: nothing is written, exit 2.
    let dir = copy_project(&repo());
    let staging = dir.path().join("environments/staging.yaml");
    let text = std::fs::read_to_string(&staging).unwrap();
    std::fs::write(&staging, format!("{text}\nunknownKey: 1\n")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_infra-gen"))
        .arg("--root")
        .arg(dir.path())
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    // A cluster that cannot be reached: exit 6, the server named.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:9\"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_infra-gen"))
        .arg("--root")
        .arg(repo())
        .args([
            "status",
            "--env",
            "staging",
            "--any-cluster",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("127.0.0.1:9"), "{stderr}");
    // The codes are in --help.
    let (_, help, _) = infra_gen(&repo(), &["--help"]);
    assert!(
        help.contains("3 another run holds the deploy lock"),
        "{help}"
    );
}

#[test]
fn shell_completions_know_the_commands_and_their_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, script, stderr) = infra_gen(&repo(), &["completion", shell]);
        assert!(ok, "{stderr}");
        // fish writes a long flag as `-l env`.
        let flags: [&str; 2] = if shell == "fish" {
            ["-l env", "-l until"]
        } else {
            ["--env", "--until"]
        };
        for word in ["apply", "rollback", "scale"].into_iter().chain(flags) {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let (ok, _, stderr) = infra_gen(&repo(), &["completion", "tcsh"]);
    assert!(!ok);
    assert!(stderr.contains("possible values"), "{stderr}");
}

#[test]
fn kubeconfig_lists_merge_as_kubectl_merges_them_and_context_picks_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, context: &str, port: u16, current: bool| {
        let path = dir.path().join(name);
        let current = if current {
            format!("current-context: {context}\n")
        } else {
            String::new()
        };
        std::fs::write(
            &path,
            format!("apiVersion: v1\nkind: Config\nclusters: [{{name: {context}, cluster: {{server: \"https://127.0.0.1:{port}\"}}}}]\nusers: [{{name: {context}, user: {{token: t}}}}]\ncontexts: [{{name: {context}, context: {{cluster: {context}, user: {context}}}}}]\n{current}"),
        )
        .unwrap();
        path
    };
    let staging = file("staging.yaml", "staging", 9, true);
    let production = file("production.yaml", "production", 7, false);
    let list = std::env::join_paths([&staging, &production]).unwrap();
    let server_reached = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_infra-gen"))
            .arg("--root")
            .arg(repo())
            .args(["status", "--env", "staging", "--any-cluster"])
            .args(extra)
            .env("KUBECONFIG", &list)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(6));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // The current context of the merged files, then the one named by --context.
    assert!(server_reached(&[]).contains("https://127.0.0.1:9/"));
    let stderr = server_reached(&["--context", "production"]);
    assert!(stderr.contains("https://127.0.0.1:7/"), "{stderr}");
    assert!(stderr.contains("context production"), "{stderr}");
}

#[test]
fn the_environment_files_context_is_used_with_a_kubeconfig_and_another_is_refused() {
    let dir = copy_project(&repo());
    let staging = dir.path().join("environments/staging.yaml");
    let text = std::fs::read_to_string(&staging).unwrap().replace(
        "cluster: {name: games-staging, region: ap-northeast-1, compute: fargate}",
        "cluster: {name: games-staging, region: ap-northeast-1, compute: fargate, context: staging}",
    );
    assert!(text.contains("context: staging"));
    std::fs::write(&staging, text).unwrap();
    // The current context is production's; the file names staging's.
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: s, cluster: {server: \"https://127.0.0.1:9\"}}, {name: p, cluster: {server: \"https://127.0.0.1:7\"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: staging, context: {cluster: s, user: u}}, {name: production, context: {cluster: p, user: u}}]\ncurrent-context: production\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_infra-gen"))
            .arg("--root")
            .arg(dir.path())
            .args(["status", "--env", "staging", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(extra)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&["--any-cluster"]);
    assert_eq!(code, Some(6), "{stderr}");
    assert!(stderr.contains("https://127.0.0.1:9/"), "{stderr}");
    assert!(stderr.contains("context staging"), "{stderr}");
    // --context naming another context than the file's: refused before any connection.
    let (code, stderr) = run(&["--context", "production"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--context production")
            && stderr.contains("names context staging")
            && stderr.contains("cluster.context"),
        "{stderr}"
    );
    assert!(!stderr.contains("127.0.0.1:7"), "{stderr}");
    // An empty context is a file error at its place.
    let text = std::fs::read_to_string(&staging)
        .unwrap()
        .replace("context: staging", "context: \"\"");
    std::fs::write(&staging, text).unwrap();
    let (ok, stdout, stderr) = infra_gen(dir.path(), &["validate"]);
    assert!(!ok);
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("staging.yaml:3:") && all.contains("cluster.context is empty"),
        "{all}"
    );
}

#[test]
fn init_scaffolds_a_repository_that_renders_and_checks_at_once_for_every_kind() {
    for kind in ["web", "tcp", "stateful", "worker", "cron"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q"]);
        let init = [
            "init",
            "--kind",
            kind,
            "--env",
            "staging",
            "--env",
            "production",
            "--cluster",
            "games-prod",
            "--region",
            "ap-northeast-1",
            "--project",
            "Space Race",
            "--project-id",
            "4242",
        ];
        let (ok, stdout, stderr) = infra_gen(root, &init);
        assert!(ok, "{kind}: {stdout}{stderr}");
        for file in [
            "environments/_defaults.yaml",
            "environments/staging.yaml",
            "environments/production.yaml",
            "environments/schema.json",
            ".gitlab-ci.yml",
        ] {
            assert!(root.join(file).is_file(), "{kind}: no {file}");
        }
        assert!(
            root.join("manifests/production/namespace.yaml").is_file()
                || std::fs::read_dir(root.join("manifests/production")).is_ok(),
            "{kind}: nothing rendered"
        );
        let defaults = std::fs::read_to_string(root.join("environments/_defaults.yaml")).unwrap();
        assert!(
            defaults.contains(&format!("kind: {kind}")) && defaults.contains("id: 4242"),
            "{defaults}"
        );
        // The pipeline deploys staging on every push and production by hand, through the
        // component of this release, with a finalize delay render --check accepts.
        let pipeline = std::fs::read_to_string(root.join(".gitlab-ci.yml")).unwrap();
        assert!(
            pipeline.contains(&format!("/deploy@{}", env!("CARGO_PKG_VERSION")))
                && pipeline.contains("environment: staging")
                && pipeline.contains("when: on_success")
                && pipeline.contains("environment: production")
                && pipeline.contains("when: manual"),
            "{pipeline}"
        );
        let (ok, out, err) = infra_gen(root, &["validate"]);
        assert!(ok, "{kind}: {out}{err}");
        let (ok, out, err) = infra_gen(root, &["plan"]);
        assert!(
            ok && out.contains("space-race-4242-production"),
            "{kind}: {out}{err}"
        );
        git(root, &["add", "-A"]);
        git(root, &["commit", "-qm", "scaffold"]);
        let (ok, out, err) = infra_gen(root, &["render", "--check"]);
        assert!(ok, "{kind}: {out}{err}");

        // A second init refuses, names what exists, and changes nothing.
        let before = std::fs::read_to_string(root.join("environments/staging.yaml")).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_infra-gen"))
            .arg("--root")
            .arg(root)
            .args(init)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("refusing to overwrite")
                && stderr.contains("environments/staging.yaml")
                && stderr.contains(".gitlab-ci.yml"),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("environments/staging.yaml")).unwrap(),
            before
        );
    }
    // --dry-run prints the files and writes nothing.
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = infra_gen(
        dir.path(),
        &[
            "init",
            "--kind",
            "web",
            "--env",
            "staging",
            "--cluster",
            "c",
            "--region",
            "eu-west-1",
            "--project-id",
            "1",
            "--dry-run",
        ],
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("--- environments/_defaults.yaml") && stdout.contains("kind: web"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let (ok, stdout, stderr) = infra_gen(&repo(), &["--version"]);
    assert!(ok, "{stderr}");
    let version = stdout.trim();
    assert!(
        version.starts_with(&format!("infra-gen {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let commit = version
        .rsplit_once("(commit ")
        .and_then(|(_, c)| c.strip_suffix(')'))
        .unwrap_or_default();
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{version}"
    );
}
