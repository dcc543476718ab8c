//! Every rule of the environment format, each with the message a user gets: where
//! (file:line:column and key path), what was found, and how to fix it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use infra_gen::env::{self, diagnostic::Diagnostic};

const BASE: &str = "\
project: {name: controltower, id: 9391}
cluster: {name: games, region: ap-northeast-1}
workloads:
  web:
    kind: web
    image: registry.example.com/ct:1.0.0
    port: 8080
    replicas: 2
    resources: {cpu: 500m, memory: 1Gi}
    probes: {readiness: /ready}
";

fn diagnostics(files: &[(&str, &str)], instance: Option<&str>) -> Vec<Diagnostic> {
    let sources = files
        .iter()
        .map(|(name, text)| {
            (
                PathBuf::from(format!("environments/{name}")),
                (*text).to_owned(),
            )
        })
        .collect();
    env::load_sources(sources, instance).diagnostics
}

/// The errors of one environment file `staging.yaml`, as the user sees them.
fn errors(text: &str) -> Vec<String> {
    diagnostics(&[("staging.yaml", text)], None)
        .into_iter()
        .filter(Diagnostic::is_error)
        .map(|d| d.to_string())
        .collect()
}

fn assert_error(text: &str, location: &str, needles: &[&str]) {
    let errors = errors(text);
    let found = errors
        .iter()
        .any(|e| e.starts_with(location) && needles.iter().all(|n| e.contains(n)));
    assert!(
        found,
        "expected an error at {location} containing {needles:?}, got:\n{}",
        errors.join("\n")
    );
}

#[test]
fn the_base_file_is_valid() {
    assert_eq!(errors(BASE), Vec::<String>::new());
}

#[test]
fn unknown_keys_point_at_the_key_and_suggest_the_nearest() {
    let text = BASE.replace("    replicas: 2", "    replcas: 2");
    assert_error(
        &text,
        "environments/staging.yaml:8:5",
        &[
            "workloads.web.replcas",
            "unknown key `replcas`",
            "did you mean `replicas`?",
        ],
    );
    let text = format!("{BASE}colour: red\n");
    assert_error(
        &text,
        "environments/staging.yaml:11:1",
        &["unknown key `colour`", "valid keys here: project, cluster"],
    );
}

#[test]
fn every_structural_error_of_a_file_is_reported_at_once() {
    let text = BASE
        .replace("kind: web", "kind: webb")
        .replace("port: 8080", "port: eighty")
        .replace("id: 9391", "id: -1")
        .replace("  web:\n", "  web:\n    colour: red\n");
    let errors = errors(&text);
    assert!(errors.len() >= 4, "{errors:#?}");
    assert!(errors.iter().any(|e| e.contains("workloads.web.kind")
        && e.contains("expected one of: web, tcp, worker, cron")
        && e.contains("did you mean `web`?")));
    assert!(errors.iter().any(|e| e.contains("workloads.web.port")
        && e.contains("expected a whole number, found the string \"eighty\"")));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("project.id") && e.contains("below the minimum 0"))
    );
    assert!(errors.iter().any(|e| e.contains("unknown key `colour`")));
}

#[test]
fn missing_keys_and_wrong_types_say_what_is_expected() {
    assert_error(
        &BASE.replace("    image: registry.example.com/ct:1.0.0\n", ""),
        "environments/staging.yaml:5:5",
        &[
            "workloads.web.image",
            "missing key `image`",
            "Image with a tag",
        ],
    );
    assert_error(
        &BASE.replace("replicas: 2", "replicas: two"),
        "environments/staging.yaml:8:15",
        &["expected a whole number"],
    );
    assert_error(
        &BASE.replace("cluster: {name: games,", "cluster: {name: 42,"),
        "environments/staging.yaml:2:17",
        &["cluster.name", "put it in quotes"],
    );
    let text = format!("{BASE}    env:\n      A: {{secrt: x, key: y}}\n");
    assert_error(
        &text,
        "environments/staging.yaml:12:11",
        &["unknown key `secrt`", "did you mean `secret`?"],
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    assert_error(
        "project: {name: x\ncluster: [\n",
        "environments/staging.yaml:",
        &["not valid YAML"],
    );
    assert_error(
        &format!("{BASE}project: again\n"),
        "environments/staging.yaml:11:",
        &["not valid YAML", "duplicated key"],
    );
}

#[test]
fn names_must_be_dns_labels_and_the_namespace_at_most_63_characters() {
    assert_error(
        &BASE.replace("  web:\n", "  Web_1:\n"),
        "environments/staging.yaml:4:3",
        &["workload name \"Web_1\" is not a DNS-1123 label"],
    );
    let long = "x".repeat(60);
    assert_error(
        &BASE.replace("name: controltower", &format!("name: {long}")),
        "environments/staging.yaml:1:",
        &["project.name", "(65 characters) is not a DNS-1123 label"],
    );
    assert_error(
        &BASE.replace("name: controltower", "name: \"!!!\""),
        "environments/staging.yaml:1:",
        &["no letter or digit"],
    );
}

#[test]
fn namespaces_are_slugified_from_the_project_name() {
    let loaded = env::load_sources(
        vec![(
            PathBuf::from("environments/prod.yaml"),
            BASE.replace("name: controltower", "name: Mini Hunter!"),
        )],
        None,
    );
    assert_eq!(loaded.environments[0].namespace(), "mini-hunter-9391");
    let suffixed = format!("{BASE}namespace: {{suffix: env}}\n");
    let loaded = env::load_sources(
        vec![(PathBuf::from("environments/prod.yaml"), suffixed)],
        None,
    );
    assert_eq!(loaded.environments[0].namespace(), "controltower-9391-prod");
}

#[test]
fn two_environments_on_one_cluster_never_share_a_namespace() {
    let diagnostics = diagnostics(&[("a.yaml", BASE), ("b.yaml", BASE)], None);
    let collision = diagnostics
        .iter()
        .find(|d| d.is_error())
        .expect("a collision error")
        .to_string();
    assert!(
        collision.starts_with("environments/b.yaml:1:1"),
        "{collision}"
    );
    assert!(
        collision.contains(
            "environments a and b would both deploy to namespace controltower-9391 on cluster games"
        ),
        "{collision}"
    );
    assert!(collision.contains("suffix: env"), "{collision}");
    // Different clusters, or a suffix, are fine.
    let other = BASE.replace("name: games,", "name: games-2,");
    assert!(diagnostics_ok(&[("a.yaml", BASE), ("b.yaml", &other)]));
    let a = format!("{BASE}namespace: {{suffix: env}}\n");
    assert!(diagnostics_ok(&[("a.yaml", &a), ("b.yaml", &a)]));
}

fn diagnostics_ok(files: &[(&str, &str)]) -> bool {
    !diagnostics(files, None).iter().any(Diagnostic::is_error)
}

#[test]
fn autoscaling_bounds_and_replicas_within_them() {
    let text = BASE.replace(
        "    replicas: 2\n",
        "    replicas: 12\n    autoscaling: {min: 5, max: 3}\n",
    );
    assert_error(
        &text,
        "environments/staging.yaml:9:5",
        &["autoscaling.min 5 is above autoscaling.max 3", "swap them"],
    );
    assert_error(
        &text,
        "environments/staging.yaml:8:15",
        &["replicas 12 is outside autoscaling 5..3"],
    );
    let zero = BASE.replace("    replicas: 2\n", "    autoscaling: {min: 0, max: 3}\n");
    assert_error(
        &zero,
        "environments/staging.yaml:8:24",
        &["autoscaling.min is 0"],
    );
}

#[test]
fn grace_period_must_cover_prestop_and_drain() {
    let text = format!(
        "{BASE}    shutdown: {{preStopSeconds: 20, drainSeconds: 10, gracePeriodSeconds: 30}}\n"
    );
    assert_error(
        &text,
        "environments/staging.yaml:11:",
        &[
            "terminationGracePeriodSeconds 30 is less than preStop 20 + drain 10 + 5",
            "SIGKILL",
            "at least 35",
        ],
    );
    let fine = format!("{BASE}    shutdown: {{preStopSeconds: 20, drainSeconds: 10}}\n");
    assert_eq!(errors(&fine), Vec::<String>::new());
}

#[test]
fn fargate_needs_requests_that_fit_a_fargate_size() {
    let none = BASE.replace("    resources: {cpu: 500m, memory: 1Gi}\n", "");
    assert_error(
        &none,
        "environments/staging.yaml:4:3",
        &["on Fargate, no resources", "next Fargate vCPU/memory pair"],
    );
    let huge = BASE.replace("memory: 1Gi", "memory: 200Gi");
    assert_error(
        &huge,
        "environments/staging.yaml:9:5",
        &["more than the largest Fargate size (16 vCPU / 120 GB)"],
    );
    let bad = BASE.replace("cpu: 500m", "cpu: lots");
    assert_error(
        &bad,
        "environments/staging.yaml:9:5",
        &["cpu \"lots\" is not a quantity"],
    );
    let ec2 = BASE
        .replace(
            "region: ap-northeast-1}",
            "region: ap-northeast-1, compute: ec2}",
        )
        .replace("    resources: {cpu: 500m, memory: 1Gi}\n", "");
    assert_eq!(errors(&ec2), Vec::<String>::new(), "EC2 only warns");
}

#[test]
fn latest_and_untagged_images_only_in_review_environments() {
    assert_error(
        &BASE.replace("ct:1.0.0", "ct:latest"),
        "environments/staging.yaml:6:12",
        &["uses :latest outside a review environment"],
    );
    assert_error(
        &BASE.replace("ct:1.0.0", "ct"),
        "environments/staging.yaml:6:12",
        &["has no tag"],
    );
    assert_eq!(
        errors(&BASE.replace("ct:1.0.0", "ct@sha256:abc")),
        Vec::<String>::new(),
        "a digest pins the image"
    );
    assert_eq!(
        errors(&BASE.replace("ct:1.0.0", "ct:${CI_COMMIT_SHA}")),
        Vec::<String>::new()
    );
    assert_error(
        &BASE.replace("ct:1.0.0", "ct:${CI COMMIT}"),
        "environments/staging.yaml:6:12",
        &["malformed ${VARIABLE}"],
    );
    let review = format!("review: true\n{}", BASE.replace("ct:1.0.0", "ct:latest"));
    assert_eq!(errors(&review), Vec::<String>::new());
}

#[test]
fn kinds_accept_only_what_applies_to_them() {
    let cron = BASE
        .replace("kind: web", "kind: cron")
        .replace("    port: 8080\n", "")
        .replace("    probes: {readiness: /ready}\n", "");
    assert_error(
        &cron,
        "environments/staging.yaml:4:3",
        &["a cron workload needs `schedule`"],
    );
    assert_error(
        &cron,
        "environments/staging.yaml:7:15",
        &["`replicas` does not apply to a cron workload"],
    );
    let schedule = cron.replace("    replicas: 2\n", "    schedule: \"0 3 * *\"\n");
    assert_error(
        &schedule,
        "environments/staging.yaml:7:15",
        &["does not have 5 fields"],
    );
    let tcp = BASE.replace("kind: web", "kind: tcp");
    assert_error(
        &tcp,
        "environments/staging.yaml:7:11",
        &["`port` does not apply to a tcp workload", "under `ports`"],
    );
    assert_error(
        &tcp,
        "environments/staging.yaml:4:3",
        &["a tcp workload needs `ports`"],
    );
    let web = BASE.replace("    port: 8080\n", "");
    assert_error(
        &web,
        "environments/staging.yaml:4:3",
        &["a web workload needs `port`"],
    );
    let worker = format!(
        "{}    rollout: {{strategy: blue-green}}\n",
        BASE.replace("kind: web", "kind: worker")
            .replace("    port: 8080\n", "")
    );
    assert_error(
        &worker,
        "environments/staging.yaml:",
        &["`rollout` does not apply to a worker workload"],
    );
}

#[test]
fn rollout_settings_must_fit_the_strategy() {
    let steps = format!("{BASE}    rollout: {{strategy: blue-green, steps: [50, 20]}}\n");
    assert_error(
        &steps,
        "environments/staging.yaml:11:",
        &["steps [50, 20] must rise strictly", "[10, 50, 100]"],
    );
    let preview = format!("{BASE}    rollout: {{strategy: rolling, previewHost: p.example.com}}\n");
    let errors = errors(&preview);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("previewHost needs `http`")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("previewHost only applies to blue-green")),
        "{errors:#?}"
    );
    let overlap = format!("{BASE}    rollout: {{strategy: blue-green, overlapSeconds: 30}}\n");
    assert_error(
        &overlap,
        "environments/staging.yaml:11:",
        &["overlapSeconds only applies to tcp"],
    );
}

#[test]
fn env_vars_secret_refs_and_downward_fields_are_checked() {
    let text = format!(
        "{BASE}    env:\n      1BAD: x\n      NODE: {{field: spec.node}}\n      DB: {{secret: db, key: url}}\nsecrets:\n  db: {{uri: {{fromEnv: DB_URI}}}}\n"
    );
    assert_error(
        &text,
        "environments/staging.yaml:12:7",
        &["\"1BAD\" is not an environment variable name"],
    );
    assert_error(
        &text,
        "environments/staging.yaml:13:21",
        &["\"spec.node\" is not a Downward API field", "spec.nodeName"],
    );
    assert_error(
        &text,
        "environments/staging.yaml:14:",
        &["secret \"db\" has no key \"url\"", "its keys: uri"],
    );
    let undeclared = format!("{BASE}    env:\n      DB: {{secret: elsewhere, key: url}}\n");
    let warnings: Vec<String> = diagnostics(&[("staging.yaml", &undeclared)], None)
        .iter()
        .filter(|d| !d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("warning") && w.contains("not declared under `secrets:`")),
        "{warnings:#?}"
    );
}

#[test]
fn http_and_probe_values_are_checked() {
    let text = format!(
        "{BASE}    http: {{host: not a host, certificateArn: arn:aws:iam::1:role/x, path: api}}\n"
    );
    assert_error(
        &text,
        "environments/staging.yaml:11:",
        &["\"not a host\" is not a host name"],
    );
    assert_error(
        &text,
        "environments/staging.yaml:11:",
        &["is not an ACM certificate ARN"],
    );
    assert_error(
        &text,
        "environments/staging.yaml:11:",
        &["path \"api\" must start with /"],
    );
    assert_error(
        &BASE.replace("/ready", "ready"),
        "environments/staging.yaml:10:25",
        &["probe path \"ready\" must start with /"],
    );
}

#[test]
fn defaults_merge_under_each_environment_and_errors_point_into_the_defaults_file() {
    let defaults = "project: {name: controltower, id: 9391}\nworkloads:\n  web: {kind: web, port: 8080, replicas: 2, resources: {cpu: 500m, memory: 1Gi}, probes: {readiness: /r}, colour: red}\n";
    let env = "cluster: {name: games, region: r}\nworkloads:\n  web: {image: 'x:1'}\n";
    let found: Vec<String> =
        diagnostics(&[("_defaults.yaml", defaults), ("staging.yaml", env)], None)
            .iter()
            .map(ToString::to_string)
            .collect();
    assert!(
        found
            .iter()
            .any(|d| d.starts_with("environments/_defaults.yaml:3:")
                && d.contains("unknown key `colour`")),
        "{found:#?}"
    );

    let defaults = defaults.replace(", colour: red", "");
    let loaded = env::load_sources(
        vec![
            (PathBuf::from("environments/_defaults.yaml"), defaults),
            (PathBuf::from("environments/staging.yaml"), env.to_owned()),
        ],
        None,
    );
    assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
    let web = &loaded.environments[0].spec.workloads["web"];
    assert_eq!(
        (web.port, web.replicas, web.image.as_str()),
        (Some(8080), Some(2), "x:1")
    );
}

#[test]
fn an_empty_or_second_document_is_an_error() {
    assert!(errors("").iter().any(|e| e.contains("is empty")));
    assert!(
        errors(&format!("{BASE}---\na: 1\n"))
            .iter()
            .any(|e| e.contains("second YAML document"))
    );
}

const GAME: &str = "\
project: {name: mini, id: 1}
cluster: {name: games, region: ap-northeast-1}
workloads:
  game:
    kind: tcp
    image: registry.example.com/game:1.0.0
    replicas: 2
    resources: {cpu: 500m, memory: 1Gi}
    ports:
      - {name: game, port: 7777}
      - {name: voice, port: 7778, protocol: UDP}
    probes: {readiness: /ready}
";

#[test]
fn a_probe_must_check_a_port_the_workload_declares() {
    assert_error(
        GAME,
        "environments/staging.yaml:12:25",
        &[
            "workloads.game.probes.readiness",
            "checks port http, which workload game does not declare (its ports: game (7777), voice (7778))",
            "{http: /ready, port: game} or {tcp: game}",
        ],
    );
    let named = GAME.replace(
        "{readiness: /ready}",
        "{readiness: {http: /ready, port: health}}",
    );
    assert_error(
        &named,
        "environments/staging.yaml:12:14",
        &["checks port health"],
    );
    let numbered = GAME.replace("{readiness: /ready}", "{readiness: {tcp: 9999}}");
    assert_error(
        &numbered,
        "environments/staging.yaml:12:14",
        &["checks port 9999"],
    );
    let fine = GAME.replace(
        "{readiness: /ready}",
        "{readiness: {tcp: game}, liveness: {tcp: 7777}}",
    );
    assert_eq!(errors(&fine), Vec::<String>::new());
}

#[test]
fn a_probe_is_one_check_on_a_tcp_port() {
    let both = GAME.replace(
        "{readiness: /ready}",
        "{readiness: {http: /ready, tcp: game}}",
    );
    assert_error(
        &both,
        "environments/staging.yaml:12:14",
        &["exactly one of http, tcp or exec (found 2)"],
    );
    let udp = GAME.replace("{readiness: /ready}", "{readiness: {tcp: voice}}");
    assert_error(
        &udp,
        "environments/staging.yaml:12:14",
        &["a TCP check on voice, a UDP port"],
    );
    let stray = GAME.replace(
        "{readiness: /ready}",
        "{readiness: {tcp: game, port: game}}",
    );
    assert_error(
        &stray,
        "environments/staging.yaml:12:43",
        &[
            "workloads.game.probes.readiness.port",
            "`port` goes with an `http` check",
        ],
    );
    let exec = GAME.replace("{readiness: /ready}", "{readiness: {exec: [/bin/healthy]}}");
    assert_eq!(errors(&exec), Vec::<String>::new());
}

#[test]
fn an_nlb_needs_a_tcp_or_http_health_check() {
    let udp_only = GAME
        .replace("      - {name: game, port: 7777}\n", "")
        .replace("    probes: {readiness: /ready}\n", "");
    assert_error(
        &udp_only,
        "environments/staging.yaml:10:7",
        &[
            "workloads.game.ports",
            "only UDP ports, and an NLB health-checks over TCP or HTTP only",
            "{name: health, port: 8081, expose: false}",
        ],
    );
    let with_health = udp_only.replace(
        "      - {name: voice, port: 7778, protocol: UDP}\n",
        "      - {name: voice, port: 7778, protocol: UDP}\n      - {name: health, port: 8081, expose: false}\n    probes: {readiness: {http: /ready, port: health}}\n",
    );
    assert_eq!(errors(&with_health), Vec::<String>::new());
    let nothing = GAME
        .replace(
            "      - {name: game, port: 7777}\n",
            "      - {name: game, port: 7777, expose: false}\n",
        )
        .replace(
            "      - {name: voice, port: 7778, protocol: UDP}\n",
            "      - {name: voice, port: 7778, protocol: UDP, expose: false}\n",
        )
        .replace("{readiness: /ready}", "{readiness: {tcp: game}}");
    assert_error(
        &nothing,
        "environments/staging.yaml:10:7",
        &["every port has expose: false"],
    );
}

#[test]
fn draining_the_old_version_must_fit_its_scale_down_delay() {
    let game = GAME.replace("{readiness: /ready}", "{readiness: {tcp: game}}");
    let short = format!(
        "{game}    tcp: {{deregistrationDelaySeconds: 900}}\n    rollout: {{strategy: blue-green, scaleDownDelaySeconds: 600}}\n"
    );
    assert_error(
        &short,
        "environments/staging.yaml:14:",
        &[
            "workloads.game.rollout.scaleDownDelaySeconds",
            "scaled down after 600 s, before its load-balancer targets finished draining (900 s)",
            "at least 900",
        ],
    );
    let cut = format!(
        "{game}    tcp: {{deregistrationDelaySeconds: 10, connectionTermination: true}}\n    shutdown: {{preStopSeconds: 30, drainSeconds: 60}}\n"
    );
    assert_error(
        &cut,
        "environments/staging.yaml:13:",
        &[
            "workloads.game.tcp.deregistrationDelaySeconds",
            "closes connections 10 s after deregistration, while a pod still drains for preStop + drain = 90 s",
        ],
    );
    let too_long = format!("{game}    tcp: {{deregistrationDelaySeconds: 4000}}\n");
    assert_error(
        &too_long,
        "environments/staging.yaml:13:",
        &["more than the 3600 s"],
    );
}

#[test]
fn workers_may_declare_ports_to_probe_but_never_expose_them() {
    let worker = BASE.replace(
        "    kind: web\n    image: registry.example.com/ct:1.0.0\n    port: 8080\n",
        "    kind: worker\n    image: registry.example.com/ct:1.0.0\n    ports: [{name: health, port: 8081}]\n",
    ).replace("{readiness: /ready}", "{readiness: {http: /ready, port: health}}");
    assert_eq!(errors(&worker), Vec::<String>::new());
    let exposed = worker.replace(
        "{name: health, port: 8081}",
        "{name: health, port: 8081, expose: true}",
    );
    assert_error(
        &exposed,
        "environments/staging.yaml:",
        &["`expose` only applies to workloads behind an NLB"],
    );
}

const SERVER: &str = "\
project: {name: mini, id: 1}
cluster: {name: games, region: ap-northeast-1}
workloads:
  connector:
    kind: stateful
    image: registry.example.com/connector:2.7.0
    replicas: 3
    resources: {cpu: 500m, memory: 1Gi}
    ports: [{name: socket, port: 3010}, {name: health, port: 8081, expose: false}]
    probes: {readiness: {http: /ready, port: health}}
    tcp: {deregistrationDelaySeconds: 300, idleTimeoutSeconds: 3600}
    retireAfterSeconds: 86400
";

#[test]
fn a_stateful_game_server_behind_an_nlb_is_valid() {
    assert_eq!(errors(SERVER), Vec::<String>::new());
    let backend = SERVER
        .replace(
            "    tcp: {deregistrationDelaySeconds: 300, idleTimeoutSeconds: 3600}\n",
            "",
        )
        .replace(
            ", {name: health, port: 8081, expose: false}",
            ", {name: health, port: 8081}",
        )
        .replace("86400", "600");
    assert_eq!(errors(&backend), Vec::<String>::new(), "not exposed");
}

#[test]
fn stateful_versions_are_dns_labels_short_enough_for_their_pods() {
    let long = SERVER.replace(
        "    replicas: 3\n",
        "    replicas: 3\n    version: 2.7.0-hotfix-for-the-winter-event-final-build-4\n",
    );
    assert_error(
        &long,
        "environments/staging.yaml:8:14",
        &[
            "workloads.connector.version",
            "StatefulSet connector-2-7-0-hotfix-for-the-winter-event-final-build-4, 57 characters: at most 52",
            "set a shorter `version:`",
        ],
    );
    let empty = SERVER.replace(
        "    replicas: 3\n",
        "    replicas: 3\n    version: \"...\"\n",
    );
    assert_error(
        &empty,
        "environments/staging.yaml:8:14",
        &["the version has no letters or digits"],
    );
    let on_web = format!("{BASE}    version: 1.0.0\n");
    assert_error(
        &on_web,
        "environments/staging.yaml:11:14",
        &[
            "`version`",
            "only stateful workloads run versions side by side",
        ],
    );
}

#[test]
fn a_stateful_workload_has_no_rollout_and_one_way_in() {
    let rollout = SERVER.replace(
        "    retireAfterSeconds: 86400\n",
        "    rollout: {strategy: blue-green}\n",
    );
    assert_error(
        &rollout,
        "environments/staging.yaml:12:5",
        &["`rollout`", "versions run side by side"],
    );
    let port = SERVER.replace("    replicas: 3\n", "    replicas: 3\n    port: 8080\n");
    assert_error(
        &port,
        "environments/staging.yaml:8:11",
        &["`port`", "under `ports`"],
    );
    let both = SERVER.replace(
        "    retireAfterSeconds: 86400\n",
        "    http: {host: c.example.com}\n",
    );
    assert_error(
        &both,
        "environments/staging.yaml:4:3",
        &["through the ALB (`http`) or an NLB (`tcp`), not both"],
    );
    let alb = SERVER
        .replace(
            "    tcp: {deregistrationDelaySeconds: 300, idleTimeoutSeconds: 3600}\n",
            "    http: {host: c.example.com}\n",
        )
        .replace(", expose: false", "");
    assert_error(
        &alb,
        "environments/staging.yaml:11:5",
        &[
            "the ALB forwards to the port named http",
            "add {name: http, port: 8080}",
        ],
    );
}

#[test]
fn old_versions_are_not_retired_before_their_targets_drained() {
    let early = SERVER.replace("86400", "120");
    assert_error(
        &early,
        "environments/staging.yaml:12:25",
        &[
            "an old version is retired 120 s after the switch, before its load-balancer targets finished draining (300 s)",
            "at least 300",
        ],
    );
}

#[test]
fn idle_timeouts_stay_within_what_aws_allows() {
    let nlb = SERVER.replace("idleTimeoutSeconds: 3600", "idleTimeoutSeconds: 7200");
    assert_error(
        &nlb,
        "environments/staging.yaml:11:",
        &[
            "workloads.connector.tcp.idleTimeoutSeconds",
            "7200 s is outside the 60–6000 s an NLB TCP listener allows",
        ],
    );
    let alb = format!("{BASE}    http: {{host: ct.example.com, idleTimeoutSeconds: 0}}\n");
    assert_error(
        &alb,
        "environments/staging.yaml:11:",
        &[
            "workloads.web.http.idleTimeoutSeconds",
            "0 s is outside the 1–4000 s an ALB allows",
        ],
    );
}

const GATEWAY: &str = "traffic:\n  provider: gateway-api\n  parentRefs: [{name: public, namespace: gateways, sectionName: https}]\n";

#[test]
fn the_gateway_api_provider_needs_a_gateway_and_a_valid_reference() {
    let web = format!("{GATEWAY}{BASE}    http: {{host: ct.example.com}}\n");
    assert_eq!(errors(&web), Vec::<String>::new());
    let none = web.replace(
        "  parentRefs: [{name: public, namespace: gateways, sectionName: https}]\n",
        "",
    );
    assert_error(
        &none,
        "environments/staging.yaml:2:13:",
        &[
            "traffic.provider",
            "gateway-api needs the Gateway its HTTPRoutes attach to",
            "add traffic.parentRefs",
        ],
    );
    let bad = web.replace("namespace: gateways", "namespace: Gateways_1");
    assert_error(
        &bad,
        "environments/staging.yaml:3:",
        &[
            "traffic.parentRefs[0].namespace",
            "\"Gateways_1\" is not a namespace name",
        ],
    );
    let alb = web.replace("provider: gateway-api", "provider: alb");
    assert_error(
        &alb,
        "environments/staging.yaml:3:",
        &[
            "traffic.parentRefs",
            "traffic.provider is alb",
            "set traffic.provider: gateway-api, or drop parentRefs",
        ],
    );
    let annotations = format!(
        "traffic:\n  loadBalancerAnnotations: {{service.beta.kubernetes.io/alibaba-cloud-loadbalancer-spec: slb.s1.small}}\n{BASE}"
    );
    assert_error(
        &annotations,
        "environments/staging.yaml:2:",
        &[
            "traffic.loadBalancerAnnotations",
            "for the cluster's own load balancer",
        ],
    );
    let bad_key = web.replace(
        "sectionName: https}]\n",
        "sectionName: https}]\n  loadBalancerAnnotations: {\"bad key/x\": \"1\"}\n",
    );
    assert_error(
        &bad_key,
        "environments/staging.yaml:4:",
        &["\"bad key/x\" is not an annotation key"],
    );
}

#[test]
fn alb_and_nlb_settings_are_refused_with_the_gateway_api_and_say_where_they_live() {
    let web = format!(
        "{GATEWAY}{BASE}    http: {{host: ct.example.com, certificateArn: \"arn:aws:acm:ap-northeast-1:1:certificate/x\", scheme: internal, healthcheckPath: /h, groupName: g, idleTimeoutSeconds: 120}}\n"
    );
    let found = errors(&web);
    for (key, needle) in [
        (
            "certificateArn",
            "TLS is the Gateway's: its HTTPS listener holds the certificate",
        ),
        (
            "scheme",
            "whether the load balancer is internal is the Gateway's",
        ),
        (
            "healthcheckPath",
            "the Gateway API has no load-balancer health check",
        ),
        ("groupName", "groupName shares one ALB between Ingresses"),
        ("idleTimeoutSeconds", "idle timeouts are set on the Gateway"),
    ] {
        assert!(
            found
                .iter()
                .any(|e| e.starts_with("environments/staging.yaml:14:")
                    && e.contains(&format!("workloads.web.http.{key}"))
                    && e.contains(&format!("http.{key} is an ALB setting: {needle}"))),
            "{key}: {found:#?}"
        );
    }
    let tcp = format!(
        "{GATEWAY}{}",
        BASE.replace("kind: web", "kind: tcp")
            .replace("port: 8080", "ports: [{name: game, port: 7777}]")
            .replace(
                "probes: {readiness: /ready}",
                "tcp: {deregistrationDelaySeconds: 60}"
            )
    );
    assert_error(
        &tcp,
        "environments/staging.yaml:13:",
        &[
            "workloads.web.tcp.deregistrationDelaySeconds",
            "an NLB setting",
            "set the cloud's options in traffic.loadBalancerAnnotations",
        ],
    );
    let plain_tcp = tcp.replace("    tcp: {deregistrationDelaySeconds: 60}\n", "");
    assert_eq!(errors(&plain_tcp), Vec::<String>::new());
    let own = tcp.replace(
        "tcp: {deregistrationDelaySeconds: 60}",
        "tcp: {annotations: {example.com/lb-size: small}}",
    );
    assert_eq!(errors(&own), Vec::<String>::new());
    let on_alb = own
        .replace("provider: gateway-api", "provider: alb")
        .replace(
            "  parentRefs: [{name: public, namespace: gateways, sectionName: https}]\n",
            "",
        );
    assert_error(
        &on_alb,
        "environments/staging.yaml:12:",
        &[
            "workloads.web.tcp.annotations",
            "for the cluster's own load balancer",
        ],
    );
}

#[test]
fn a_canary_on_an_httproute_matches_exact_values_or_regular_expressions() {
    let web = format!(
        "{GATEWAY}{BASE}    http: {{host: ct.example.com}}\n    rollout:\n      strategy: blue-green\n      canary: {{header: Version, values: [\"1.4.2\", \"1.4.3\", \"1.4.4\", \"1.5.0\"]}}\n"
    );
    assert_eq!(
        errors(&web),
        Vec::<String>::new(),
        "no ALB limit of 3 values"
    );
    let wildcard = web.replace("\"1.5.0\"", "\"1.5.*\"");
    assert_error(
        &wildcard,
        "environments/staging.yaml:17:",
        &[
            "workloads.web.rollout.canary.values[3]",
            "\"1.5.*\" has a wildcard: the Gateway API compares header values exactly",
            "set match: regular-expression",
        ],
    );
    let regex = wildcard.replace("values:", "match: regular-expression, values:");
    assert_eq!(errors(&regex), Vec::<String>::new());
    let broken = regex.replace("\"1.5.*\"", "\"1.5.(\"");
    assert_error(
        &broken,
        "environments/staging.yaml:17:",
        &[
            "workloads.web.rollout.canary.values[3]",
            "is not a regular expression",
        ],
    );
    let on_alb = format!(
        "{BASE}    http: {{host: ct.example.com}}\n    rollout:\n      strategy: blue-green\n      canary: {{header: Version, match: exact, values: [\"1.4.2\"]}}\n"
    );
    assert_error(
        &on_alb,
        "environments/staging.yaml:14:",
        &[
            "workloads.web.rollout.canary.match",
            "the ALB compares them case-insensitively",
        ],
    );
}

#[test]
fn a_canary_matches_a_header_within_what_the_alb_allows() {
    let web = format!(
        "{BASE}    http: {{host: ct.example.com}}\n    rollout:\n      strategy: blue-green\n      canary: {{header: Version, values: [\"1.4.2\"]}}\n"
    );
    assert_eq!(errors(&web), Vec::<String>::new());
    let bad_header = web.replace("header: Version", "header: \"Client Version\"");
    assert_error(
        &bad_header,
        "environments/staging.yaml:14:",
        &[
            "workloads.web.rollout.canary.header",
            "\"Client Version\" is not a header name the ALB matches",
        ],
    );
    let host = web.replace("header: Version", "header: host");
    assert_error(
        &host,
        "environments/staging.yaml:14:",
        &["the ALB matches Host with a host condition"],
    );
    let many = web.replace(
        "[\"1.4.2\"]",
        "[\"1.4.2\", \"1.4.3\", \"1.4.4\", \"1.5.0\"]",
    );
    assert_error(
        &many,
        "environments/staging.yaml:14:",
        &[
            "workloads.web.rollout.canary.values",
            "4 value(s): the ALB allows 3 per condition and 5 per rule, and this rule's host and path take 2, so 1 to 3",
            "use a wildcard",
        ],
    );
    // A longer path takes two path patterns (/api and /api/*): one value fewer.
    let api = many
        .replace("host: ct.example.com", "host: ct.example.com, path: /api")
        .replace(", \"1.4.4\", \"1.5.0\"", ", \"1.4.4\"");
    assert_error(
        &api,
        "environments/staging.yaml:14:",
        &["3 value(s)", "take 3, so 1 to 2"],
    );
    let empty = web.replace("[\"1.4.2\"]", "[\"\"]");
    assert_error(
        &empty,
        "environments/staging.yaml:14:",
        &[
            "workloads.web.rollout.canary.values[0]",
            "1 to 128 printable characters",
        ],
    );
    let rolling = web.replace("strategy: blue-green", "strategy: rolling");
    assert_error(
        &rolling,
        "environments/staging.yaml:14:",
        &[
            "a canary routes requests by header on the load balancer: it needs a blue-green web workload with `http`",
        ],
    );
    let unknown = web.replace("values:", "value:");
    assert_error(
        &unknown,
        "environments/staging.yaml:14:",
        &["value", "values"],
    );
}

#[test]
fn pod_security_refuses_root_bad_ids_and_an_irsa_role_without_its_token() {
    let root = format!("{BASE}    security: {{runAsUser: 0}}\n");
    assert_error(
        &root,
        "environments/staging.yaml:11:27",
        &[
            "workloads.web.security.runAsUser",
            "runAsUser 0 is root",
            "65532",
        ],
    );
    let too_big = format!("{BASE}    security: {{runAsGroup: 4294967296}}\n");
    assert_error(
        &too_big,
        "environments/staging.yaml:11:28",
        &[
            "workloads.web.security.runAsGroup",
            "a GID from 0 to 2147483647",
        ],
    );
    let role_without_token = format!(
        "{BASE}    serviceAccount: {{roleArn: \"arn:aws:iam::123456789012:role/ct\"}}\n    security: {{serviceAccountToken: false}}\n"
    );
    assert_error(
        &role_without_token,
        "environments/staging.yaml:12:37",
        &[
            "workloads.web.security.serviceAccountToken",
            "IRSA needs the service account token",
        ],
    );
    // What the defaults allow is accepted as written: a group 0, a token without a role,
    // a writable root filesystem.
    let fine = format!(
        "{BASE}    security: {{runAsUser: 1000, runAsGroup: 0, serviceAccountToken: true, readOnlyRootFilesystem: false, tmp: true}}\n"
    );
    assert_eq!(errors(&fine), Vec::<String>::new());
}

/// The base file with an HPA of 2..10 and the given capacity windows (YAML list items,
/// indented for `schedule:`), the first on line 14.
fn with_windows(windows: &str) -> String {
    format!(
        "{}    autoscaling:\n      min: 2\n      max: 10\n      schedule:\n{windows}",
        BASE.replace("    replicas: 2\n", "")
    )
}

#[test]
fn capacity_windows_are_checked_where_they_are_written() {
    let ok = with_windows(
        "        - {name: maintenance-end, cron: \"0 11 * * wed\", timeZone: Asia/Tokyo, duration: 2h, lead: 10m, min: 20}\n",
    );
    assert_eq!(errors(&ok), Vec::<String>::new());
    // A zone that does not exist, pointed at on its line and column.
    assert_error(
        &with_windows(
            "        - {name: a, cron: \"0 11 * * wed\", timeZone: Asia/Tokio, duration: 2h, min: 20}\n",
        ),
        "environments/staging.yaml:14:",
        &[
            "timeZone",
            "\"Asia/Tokio\" is not an IANA time zone",
            "Asia/Tokyo",
        ],
    );
    // min above max.
    assert_error(
        &with_windows(
            "        - {name: a, cron: \"0 11 * * wed\", timeZone: UTC, duration: 2h, min: 20, max: 15}\n",
        ),
        "environments/staging.yaml:14:",
        &["max 15 is below the window's min 20"],
    );
    // Shorter than its lead time.
    assert_error(
        &with_windows(
            "        - {name: a, cron: \"0 11 * * wed\", timeZone: UTC, duration: 5m, lead: 10m, min: 20}\n",
        ),
        "environments/staging.yaml:14:",
        &["lasts 5m", "raised 10m before"],
    );
    // Two windows open at once, lead time included: the second is pointed at.
    assert_error(
        &with_windows(concat!(
            "        - {name: a, cron: \"0 11 * * wed\", timeZone: Asia/Tokyo, duration: 2h, min: 20}\n",
            "        - {name: b, cron: \"0 13 * * wed\", timeZone: Asia/Tokyo, duration: 1h, min: 30}\n",
        )),
        "environments/staging.yaml:15:",
        &["windows a and b are both open at", "merge them"],
    );
    // The same window twice.
    assert_error(
        &with_windows(concat!(
            "        - {name: a, cron: \"0 11 * * mon\", timeZone: UTC, duration: 1h, min: 20}\n",
            "        - {name: a, cron: \"0 11 * * fri\", timeZone: UTC, duration: 1h, min: 20}\n",
        )),
        "environments/staging.yaml:15:",
        &["a second window is named \"a\""],
    );
    // A start in the hour Berlin's clocks skip in spring.
    assert_error(
        &with_windows(
            "        - {name: a, cron: \"30 2 * * sun\", timeZone: Europe/Berlin, duration: 1h, lead: 0s, min: 20}\n",
        ),
        "environments/staging.yaml:14:",
        &["does not exist in Europe/Berlin", "clock"],
    );
    // A one-off window that ended is a warning, not an error: deploys drop its CronJobs.
    let ended = with_windows(
        "        - {name: launch, at: \"2020-01-01T10:00\", until: \"2020-01-01T12:00\", timeZone: UTC, min: 20}\n",
    );
    assert_eq!(errors(&ended), Vec::<String>::new());
    let warnings: Vec<String> = diagnostics(&[("staging.yaml", &ended)], None)
        .into_iter()
        .map(|d| d.to_string())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("environments/staging.yaml:14:")
                && w.contains("the window ended at 2020-01-01 12:00 UTC")),
        "{warnings:?}"
    );
    // A key the window does not have.
    assert_error(
        &with_windows(
            "        - {name: a, cron: \"0 11 * * wed\", timeZone: UTC, duraton: 2h, min: 20}\n",
        ),
        "environments/staging.yaml:14:",
        &["duraton"],
    );
}

#[test]
fn arns_follow_the_partition_of_the_clusters_region() {
    let china = BASE
        .replace("region: ap-northeast-1", "region: cn-north-1")
        .replace(
            "    probes: {readiness: /ready}\n",
            "    probes: {readiness: /ready}\n    http: {host: ct.example.cn, certificateArn: \"arn:aws-cn:acm:cn-north-1:123456789012:certificate/abc\"}\n    serviceAccount: {roleArn: \"arn:aws-cn:iam::123456789012:role/ct\"}\n",
        );
    assert_eq!(errors(&china), Vec::<String>::new());
    // An ARN of the global partition in a China region is refused, with the right form.
    let wrong = china.replace("arn:aws-cn:iam::", "arn:aws:iam::");
    assert_error(
        &wrong,
        "environments/staging.yaml:",
        &[
            "is not an IAM role ARN of partition aws-cn (region cn-north-1)",
            "arn:aws-cn:iam::<account>:role/<name>",
        ],
    );
    let global = BASE.replace(
        "    probes: {readiness: /ready}\n",
        "    probes: {readiness: /ready}\n    http: {host: ct.example.com, certificateArn: \"arn:aws-cn:acm:cn-north-1:1:certificate/abc\"}\n",
    );
    assert_error(
        &global,
        "environments/staging.yaml:",
        &["not an ACM certificate ARN of partition aws"],
    );
}
