//! Game-server releases that never drop players: `tcp` workloads behind an NLB and
//! `stateful` versions side by side, through retries, rollbacks and releases into a slot
//! that still runs. What a player would notice is checked from the namespace's change log
//! (double or real cluster): which pods the NLB Service selects at every change, and whether
//! they were ready.

use std::time::Duration;

use serde_json::Value as Json;

use crate::support::apiserver::Options;
use crate::support::apiserver::lb::LbSim;
use crate::support::harness::Harness;

fn moto() -> String {
    std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT is not set: run ./scripts/test")
}

/// A cluster whose load-balancer controller the test may tune (the double's or the test
/// control plane's); `None`, said on the output, elsewhere.
async fn tunable(lb: bool) -> Option<Harness> {
    let h = Harness::start_with(Options {
        lb: lb.then(|| LbSim::new(&moto())),
        ..Options::default()
    })
    .await;
    if !h.is_tunable() {
        eprintln!(
            "not run: this test slows or breaks the node or the load balancer on purpose, which only the double and the test control plane can"
        );
        return None;
    }
    Some(h)
}

async fn bound(h: &Harness, bindings: usize) {
    h.until("the controller's TargetGroupBindings", 120, || async {
        h.list("TargetGroupBinding").await.len() >= bindings
    })
    .await;
}

fn text<'a>(value: &'a Json, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
}

fn selects(selector: &Json, labels: Option<&Json>) -> bool {
    selector.as_object().is_some_and(|s| {
        !s.is_empty()
            && s.iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    })
}

/// Over the change log: at every change of the Service `service` or of a pod, the label
/// values (`label`) of the running pods the Service selects. Each entry: (resourceVersion,
/// values selected).
fn exposed(h: &Harness, service: &str, label: &str) -> Vec<(u64, Vec<String>)> {
    let mut selector = Json::Null;
    let mut pods: std::collections::BTreeMap<String, Json> = Default::default();
    let mut out = Vec::new();
    for (rv, event, kind, name, object) in h.events() {
        match kind.as_str() {
            "Service" if name == service => selector = object["spec"]["selector"].clone(),
            "Pod" if event == "DELETED" => {
                pods.remove(&name);
            }
            "Pod" => {
                pods.insert(name, object);
            }
            _ => continue,
        }
        let mut values: Vec<String> = pods
            .values()
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .filter(|p| selects(&selector, p.pointer("/metadata/labels")))
            .map(|p| {
                p.pointer(&format!("/metadata/labels/{}", label.replace('/', "~1")))
                    .and_then(Json::as_str)
                    .unwrap_or("?")
                    .to_owned()
            })
            .collect();
        values.sort();
        values.dedup();
        out.push((rv, values));
    }
    out
}

/// A `stateful` game server `connector` of version `version` behind an NLB.
fn connector(h: &Harness, image: &str, version: &str) -> String {
    h.stateful(
        image,
        &format!(
            "    replicas: 2\n    version: {version}\n    tcp: {{deregistrationDelaySeconds: 0}}\n"
        ),
    )
}

#[tokio::test]
async fn a_retry_of_an_aborted_stateful_version_starts_it_through_the_whole_release() {
    let Some(h) = tunable(true).await else {
        return;
    };
    let autoscaled = |image: &str, version: &str| {
        h.stateful(
            image,
            &format!("    version: {version}\n    autoscaling: {{min: 2, max: 4}}\n    tcp: {{deregistrationDelaySeconds: 0}}\n"),
        )
    };
    h.write_env("prod", &autoscaled(&h.images.v1, "r1")).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 1).await;
    // The first try of r2 never gets ready (a Secret missing, say) and is aborted.
    h.set_ready_after(Duration::from_secs(600)).await;
    h.write_env("prod", &autoscaled(&h.images.v2, "r2")).await;
    let timeout = if h.double.is_some() { "3s" } else { "30s" };
    let first = h.apply("prod", &["--timeout", timeout]).await;
    assert!(!first.ok, "{}", first.all());
    assert_eq!(h.live_version("connector").await.as_deref(), Some("r1"));
    // Fixed; GitLab's "Retry" runs the same job again.
    h.set_ready_after(Duration::from_millis(300)).await;
    let retry = h.apply("prod", &[]).await;
    assert!(retry.ok, "{}", retry.all());
    let healthy = retry
        .stderr
        .find("connector: every pod is a healthy target")
        .unwrap_or_else(|| panic!("no target check: {}", retry.all()));
    let switched = retry
        .stderr
        .find("new connections go to r2 now")
        .unwrap_or_else(|| panic!("no switch: {}", retry.all()));
    assert!(healthy < switched, "{}", retry.all());
    let pod = h.get("Pod", "connector-r2-0").await.unwrap();
    assert!(
        pod["spec"]["readinessGates"]
            .to_string()
            .contains("target-health.elbv2.k8s.aws/"),
        "{pod}"
    );
    assert_eq!(h.live_version("connector").await.as_deref(), Some("r2"));
    let set = h.get("StatefulSet", "connector-r2").await.unwrap();
    assert_eq!(set["spec"]["replicas"], 2, "{}", retry.all());
    assert_eq!(set["status"]["readyReplicas"], 2, "{}", retry.all());
    let violations = h.stateful_violations("connector");
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn a_stateful_release_exposes_only_the_live_version_and_the_new_one() {
    let Some(h) = tunable(false).await else {
        return;
    };
    for version in ["r1", "r2"] {
        h.write_env("prod", &connector(&h, &h.images.v1, version))
            .await;
        let run = h.apply("prod", &[]).await;
        assert!(run.ok, "{}", run.all());
    }
    // r1 keeps only the players it has; r3 is released beside r2.
    h.write_env("prod", &connector(&h, &h.images.v2, "r3"))
        .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let seen = exposed(&h, "connector", "infra-gen.dev/version");
    let after_r2 = seen
        .iter()
        .position(|(_, v)| v == &["r2".to_owned()])
        .expect("r2 was live alone");
    for (rv, versions) in &seen[after_r2..] {
        assert!(
            !versions.contains(&"r1".to_owned()),
            "rv {rv}: the NLB Service selected r1 (kept for its players only): {versions:?}"
        );
    }
    assert_eq!(h.live_version("connector").await.as_deref(), Some("r3"));
}

#[tokio::test]
async fn a_tcp_deploy_into_a_slot_that_still_runs_empties_it_before_the_nlb_selects_it() {
    let Some(h) = tunable(false).await else {
        return;
    };
    let game = |image: &str| {
        h.tcp(
            image,
            "    replicas: 2\n    rollout: {strategy: blue-green, scaleDownDelaySeconds: 600}\n",
        )
    };
    for image in [&h.images.v1, &h.images.v2] {
        h.write_env("prod", &game(image)).await;
        assert!(h.apply("prod", &[]).await.ok);
    }
    // Green is live with v2; blue still runs v1 for an instant rollback. v3 goes into blue.
    let before = h.events().len();
    h.write_env("prod", &game(&h.images.v3)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.live_slot("game").await.as_deref(), Some("blue"));
    let v1 = h.images.v1.clone();
    let mut selector = Json::Null;
    let mut pods: std::collections::BTreeMap<String, Json> = Default::default();
    for (i, (rv, event, kind, name, object)) in h.events().into_iter().enumerate() {
        match kind.as_str() {
            "Service" if name == "game" => selector = object["spec"]["selector"].clone(),
            "Pod" if event == "DELETED" => {
                pods.remove(&name);
                continue;
            }
            "Pod" => {
                pods.insert(name, object);
            }
            _ => continue,
        }
        if i < before {
            continue;
        }
        for pod in pods.values() {
            let running_v1 = text(pod, "/spec/containers/0/image") == v1
                && pod.pointer("/metadata/deletionTimestamp").is_none();
            assert!(
                !(running_v1
                    && selects(&selector, pod.pointer("/metadata/labels"))
                    && text(pod, "/metadata/labels/infra-gen.dev~1slot") == "blue"
                    && selector.get("infra-gen.dev/slot").is_none()),
                "rv {rv}: the NLB selected blue while it still ran v1's pod {} (new players would join a version being replaced)",
                text(pod, "/metadata/name")
            );
        }
    }
}

#[tokio::test]
async fn a_tcp_rollback_registers_the_previous_slot_before_it_switches() {
    let Some(h) = tunable(true).await else {
        return;
    };
    let game = |image: &str| {
        h.tcp(
            image,
            "    replicas: 2\n    probes: {readiness: {tcp: game}}\n    tcp: {deregistrationDelaySeconds: 2}\n    rollout: {strategy: blue-green, scaleDownDelaySeconds: 600}\n",
        )
    };
    h.write_env("prod", &game(&h.images.v1)).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 1).await;
    h.write_env("prod", &game(&h.images.v2)).await;
    let deploy = h.apply("prod", &[]).await;
    assert!(deploy.ok, "{}", deploy.all());
    let run = h.command("rollback", "prod", &["--timeout", "120s"]).await;
    assert!(run.ok, "{}", run.all());
    let order: Vec<usize> = [
        "NLB selects both slots",
        "game: every pod is a healthy target",
        "switched game from green to blue",
    ]
    .iter()
    .map(|needle| {
        run.stderr
            .find(needle)
            .unwrap_or_else(|| panic!("missing {needle:?}: {}", run.all()))
    })
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", run.all());
    assert_eq!(h.live_slot("game").await.as_deref(), Some("blue"));
    assert_eq!(h.replicas("game-blue").await, Some(2));
}

#[tokio::test]
async fn a_stateful_rollback_waits_for_healthy_nlb_targets_before_it_switches() {
    let Some(h) = tunable(true).await else {
        return;
    };
    h.write_env("prod", &connector(&h, &h.images.v1, "r1"))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 1).await;
    h.write_env("prod", &connector(&h, &h.images.v2, "r2"))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    let run = h.command("rollback", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let healthy = run
        .stderr
        .find("connector: every pod is a healthy target")
        .unwrap_or_else(|| panic!("no target check: {}", run.all()));
    let switched = run
        .stderr
        .find("new connections go to r1 now")
        .unwrap_or_else(|| panic!("no switch: {}", run.all()));
    assert!(healthy < switched, "{}", run.all());
    assert_eq!(h.live_version("connector").await.as_deref(), Some("r1"));
}

/// A `stateful` lobby of version `version` behind an ALB.
fn lobby(image: &str, version: &str) -> String {
    format!(
        "  lobby:\n    kind: stateful\n    image: {image}\n    version: {version}\n    replicas: 2\n    ports: [{{name: http, port: 8080}}]\n    resources: {{cpu: 100m, memory: 128Mi}}\n    probes: {{readiness: /ready}}\n    http: {{host: lobby.e2e.test}}\n"
    )
}

#[tokio::test]
async fn an_alb_stateful_release_creates_its_pods_once_the_controller_bound_their_service() {
    let Some(h) = tunable(true).await else {
        return;
    };
    h.write_env("prod", &lobby(&h.images.v1, "r1")).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 1).await;
    // A slower controller: it binds a new version's Service seconds after it appears.
    h.set_lb(|sim| sim.weight_lag = Some(Duration::from_secs(3)))
        .await;
    h.write_env("prod", &lobby(&h.images.v2, "r2")).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let pod = h.get("Pod", "lobby-r2-0").await.unwrap();
    assert!(
        pod["spec"]["readinessGates"]
            .to_string()
            .contains("target-health.elbv2.k8s.aws/"),
        "the pod was created before its Service was bound: {pod}"
    );
    let ingress = h.get("Ingress", "lobby").await.unwrap().to_string();
    assert!(ingress.contains("lobby-r2"), "{ingress}");
}

#[tokio::test]
async fn an_alb_stateful_release_past_five_target_groups_is_refused_naming_what_to_retire() {
    let h = Harness::start().await;
    for n in 1..=5 {
        h.write_env("prod", &lobby(&h.images.v1, &format!("r{n}")))
            .await;
        let run = h.apply("prod", &[]).await;
        assert!(run.ok, "{}", run.all());
    }
    h.write_env("prod", &lobby(&h.images.v1, "r6")).await;
    let run = h.apply("prod", &[]).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("at most 5 target groups")
            && run
                .stderr
                .contains("infra-gen retire --env prod --workload lobby --version r1"),
        "{}",
        run.all()
    );
    assert!(
        h.get("StatefulSet", "lobby-r6").await.is_none(),
        "refused before any write"
    );
}
