//! The cutover checked against the load balancer: healthy targets before any weight moves,
//! the listener rule's weights after, drained targets before a scale-down, and the
//! controller's objects never pruned. On the double, a simulated AWS Load Balancer
//! Controller on moto's ELBv2 plays the controller, including its failures. The happy paths
//! also run against an EKS cluster with the controller (`INFRA_GEN_E2E_KUBECONFIG` and
//! `INFRA_GEN_E2E_VERIFY_LB=1`, with AWS credentials for ELBv2); the failures need the double.

use std::time::{Duration, Instant};

use crate::support::apiserver::Options;
use crate::support::apiserver::lb::LbSim;
use crate::support::harness::Harness;

fn moto() -> String {
    std::env::var("MOTO_ENDPOINT").expect(
        "MOTO_ENDPOINT is not set: run ./scripts/test (it starts moto through scripts/moto-server.py)",
    )
}

/// A cluster with an AWS Load Balancer Controller: the double's simulated one, the test
/// control plane's stand-in, or on another cluster the real one with
/// `INFRA_GEN_E2E_VERIFY_LB=1` (EKS) — else `None`, said on the test's output (kind and k3d
/// have no AWS load balancer to check).
async fn with_controller() -> Option<Harness> {
    let h = Harness::start_with(Options {
        lb: Some(LbSim::new(&moto())),
        ..Options::default()
    })
    .await;
    if h.lb_endpoint.is_none() {
        eprintln!(
            "not run: this test needs an AWS Load Balancer Controller; against a real cluster set INFRA_GEN_E2E_VERIFY_LB=1 (EKS with the controller)"
        );
        return None;
    }
    Some(h)
}

/// A controller that misbehaves: the double's, or the test control plane's stand-in (another
/// cluster's real controller cannot be told to).
async fn with_broken_controller(change: impl FnOnce(&mut LbSim)) -> Option<Harness> {
    let mut sim = LbSim::new(&moto());
    change(&mut sim);
    let h = Harness::start_with(Options {
        lb: Some(sim),
        ..Options::default()
    })
    .await;
    if !h.is_tunable() {
        eprintln!(
            "not run: this test breaks the load-balancer controller on purpose, which only the double and the test control plane can"
        );
        return None;
    }
    Some(h)
}

/// After the first deploy, the controller binds the Services the load balancer uses; pods
/// created before that get no readiness gate (a real race, which the checks catch), so the
/// tests wait for it, as a later deploy would find it done.
async fn bound(h: &Harness, bindings: usize) {
    h.until("the controller's TargetGroupBindings", 120, || async {
        h.list("TargetGroupBinding").await.len() >= bindings
    })
    .await;
}

const STEPS: &str =
    "    replicas: 2\n    rollout: {strategy: blue-green, steps: [50, 100], stepPauseSeconds: 1}\n";

#[tokio::test]
async fn the_cutover_waits_for_healthy_targets_and_checks_the_rule_weights() {
    let Some(h) = with_controller().await else {
        return;
    };
    h.write_env("prod", &h.web(&h.images.v1, STEPS)).await;
    let first = h.apply("prod", &[]).await;
    assert!(first.ok, "{}", first.all());
    bound(&h, 2).await;
    h.write_env("prod", &h.web(&h.images.v2, STEPS)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let order: Vec<usize> = [
        "web-green: every pod is a healthy target",
        "50% of ALB traffic on green",
        "web: the ALB rule for web.e2e.test/ forwards 50% to web-green, 50% to web-blue",
        "100% of ALB traffic on green",
        "web: the ALB rule for web.e2e.test/ forwards 100% to web-green, 0% to web-blue",
        "switched web from blue to green",
    ]
    .iter()
    .map(|needle| {
        run.stderr
            .find(needle)
            .unwrap_or_else(|| panic!("missing {needle:?}: {}", run.all()))
    })
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order: {}",
        run.all()
    );
    let pod = h
        .get("Pod", &h.pod_names("web-green").await[0])
        .await
        .unwrap();
    let gates = pod["spec"]["readinessGates"].to_string();
    assert!(gates.contains("target-health.elbv2.k8s.aws/"), "{gates}");
    assert_eq!(h.releases("web").await[0]["lbVerified"], true);
}

#[tokio::test]
async fn pods_without_their_readiness_gate_abort_before_any_weight_moves() {
    let Some(h) = with_broken_controller(|sim| sim.inject_gates = false).await else {
        return;
    };
    h.write_env("prod", &h.web(&h.images.v1, STEPS)).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 2).await;
    h.write_env("prod", &h.web(&h.images.v2, STEPS)).await;
    let run = h.apply("prod", &[]).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("the load balancer is not ready for web-green, so traffic stays on blue")
            && run
                .stderr
                .contains("has no readiness gate target-health.elbv2.k8s.aws/")
            && run.stderr.contains("had not bound the Service yet")
            && run
                .stderr
                .contains("kubectl get mutatingwebhookconfiguration aws-load-balancer-webhook"),
        "{}",
        run.all()
    );
    assert!(
        !run.stderr.contains("% of ALB traffic on green"),
        "{}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(h.replicas("web-green").await, Some(0));
}

#[tokio::test]
async fn targets_stuck_initial_abort_at_the_timeout_with_traffic_untouched() {
    let Some(h) = with_broken_controller(|_| {}).await else {
        return;
    };
    h.write_env("prod", &h.web(&h.images.v1, STEPS)).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 2).await;
    // From now on every new target stays `initial` (e.g. a health check on the wrong port).
    h.set_lb(|sim| sim.stuck_initial = true).await;
    h.write_env("prod", &h.web(&h.images.v2, STEPS)).await;
    // Long enough for a loaded node to start the pods and the controller to register them.
    let run = h.apply("prod", &["--timeout", "10s"]).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("traffic stays on blue")
            && run.stderr.contains("initial (Elb.RegistrationInProgress)"),
        "{}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(h.replicas("web-green").await, Some(0));
}

#[tokio::test]
async fn rule_weights_the_controller_does_not_apply_are_moved_back() {
    let Some(h) = with_broken_controller(|sim| sim.apply_weights = false).await else {
        return;
    };
    h.write_env("prod", &h.web(&h.images.v1, crate::BLUE_GREEN))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 2).await;
    h.write_env("prod", &h.web(&h.images.v2, crate::BLUE_GREEN))
        .await;
    let run = h.apply("prod", &["--lb-converge-timeout", "4s"]).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(
            "forwards 100% to web-blue, 0% to web-green, not 100% to web-green, 0% to web-blue"
        ) && run.stderr.contains("did not apply the weights")
            && run.stderr.contains("moved all traffic back to blue"),
        "{}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
}

#[tokio::test]
async fn finalize_waits_until_the_old_slot_has_drained() {
    let Some(h) = with_controller().await else {
        return;
    };
    let game = |image: &str| {
        h.tcp(
            image,
            "    replicas: 2\n    probes: {readiness: {tcp: game}}\n    tcp: {deregistrationDelaySeconds: 4}\n    rollout: {strategy: blue-green, scaleDownDelaySeconds: 60}\n",
        )
    };
    h.write_env("prod", &game(&h.images.v1)).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 1).await;
    h.write_env("prod", &game(&h.images.v2)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("game: every pod is a healthy target"),
        "the switch waited for NLB target health: {}",
        run.all()
    );
    let started = Instant::now();
    let finalize = h.command("finalize", "prod", &["--now"]).await;
    assert!(finalize.ok, "{}", finalize.all());
    assert!(
        finalize.stderr.contains("still draining"),
        "{}",
        finalize.all()
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it waited for the drain"
    );
    assert_eq!(h.replicas("game-blue").await, Some(0));
}

#[tokio::test]
async fn prune_and_destroy_leave_the_controllers_objects_alone() {
    let Some(h) = with_broken_controller(|_| {}).await else {
        return;
    };
    let worker = "  jobs:\n    kind: worker\n    image: registry.test/jobs:v1\n    replicas: 1\n    resources: {cpu: 100m, memory: 128Mi}\n";
    h.write_env(
        "prod",
        &format!("{}{worker}", h.web(&h.images.v1, crate::BLUE_GREEN)),
    )
    .await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 2).await;
    let before = h.list("TargetGroupBinding").await;
    assert!(
        before
            .iter()
            .all(|b| b["metadata"]["labels"]["infra-gen.dev/environment"] == "prod"),
        "they even carry the environment's label: {before:#?}"
    );
    h.write_env("prod", &h.web(&h.images.v1, crate::BLUE_GREEN))
        .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(run.stderr.contains("pruning"), "{}", run.all());
    let after = h.list("TargetGroupBinding").await;
    assert_eq!(
        after.len(),
        before.len(),
        "no binding pruned: {}",
        run.all()
    );

    // A review instance: destroy removes the load balancers first and lets the controller
    // clean up its bindings, then the namespace.
    let review = format!(
        "project: {{name: e2e, id: {}}}\ncluster: {{name: e2e, region: us-east-1, compute: ec2}}\nreview: true\nworkloads:\n{}",
        h.id,
        h.web(&h.images.v1, "    replicas: 1\n")
    ) + "secrets:\n  app-db: {uri: {fromEnv: E2E_DB_URI}}\n";
    std::fs::write(h.root().join("environments/review.yaml"), review).unwrap();
    let up = h.command("apply", "review", &["--instance", "mr-1"]).await;
    assert!(up.ok, "{}", up.all());
    let down = h
        .command("destroy", "review", &["--instance", "mr-1"])
        .await;
    assert!(down.ok, "{}", down.all());
    let instance = format!("{}-mr-1", h.namespace());
    let deletes: Vec<String> = h
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.path.contains(&instance))
        .map(|r| r.path)
        .collect();
    assert!(
        deletes.iter().all(|p| !p.contains("targetgroupbindings")),
        "{deletes:#?}"
    );
    let ingress = deletes.iter().position(|p| p.contains("/ingresses/"));
    let namespace = deletes
        .iter()
        .position(|p| *p == format!("/api/v1/namespaces/{instance}"));
    assert!(
        matches!((ingress, namespace), (Some(i), Some(n)) if i < n),
        "the Ingress goes first, the namespace last: {deletes:#?}"
    );
}

#[tokio::test]
async fn a_new_stateful_version_gets_connections_once_its_nlb_targets_are_healthy() {
    let Some(h) = with_controller().await else {
        return;
    };
    let extra = "    replicas: 2\n    tcp: {deregistrationDelaySeconds: 0}\n";
    h.write_env("prod", &h.stateful(&h.images.v1, extra)).await;
    let first = h.apply("prod", &[]).await;
    assert!(first.ok, "{}", first.all());
    bound(&h, 1).await;
    h.write_env("prod", &h.stateful(&h.images.v2, extra)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let v2 = Harness::version_of(&h.images.v2);
    let healthy = run
        .stderr
        .find("every pod is a healthy target")
        .unwrap_or_else(|| panic!("{}", run.all()));
    let switched = run
        .stderr
        .find(&format!("new connections go to {v2} now"))
        .unwrap_or_else(|| panic!("{}", run.all()));
    assert!(healthy < switched, "{}", run.all());
    let pod = h.get("Pod", &format!("connector-{v2}-0")).await.unwrap();
    assert!(
        pod["spec"]["readinessGates"]
            .to_string()
            .contains("target-health.elbv2.k8s.aws/"),
        "{pod}"
    );
    assert_eq!(h.releases("connector").await[0]["lbVerified"], true);
}

const CANARY: &str = "    replicas: 2\n    rollout: {strategy: blue-green, canary: {header: Version, values: [\"2.0.0\"]}}\n";

#[tokio::test]
async fn the_canary_rule_is_checked_on_the_alb_before_the_rule_for_everyone() {
    let Some(h) = with_controller().await else {
        return;
    };
    h.write_env("prod", &h.web(&h.images.v1, CANARY)).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 2).await;
    h.write_env("prod", &h.web(&h.images.v2, CANARY)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(
            "web: the ALB sends web.e2e.test/ requests with Version: 2.0.0 to web-green, before the rule for everyone else"
        ),
        "{}",
        run.all()
    );
    let promote = h.command("promote", "prod", &[]).await;
    assert!(promote.ok, "{}", promote.all());
    assert!(
        promote
            .stderr
            .contains("web: the ALB has no header rule left for web.e2e.test/"),
        "{}",
        promote.all()
    );
}

#[tokio::test]
async fn a_header_rule_the_controller_does_not_apply_gives_the_canary_up() {
    let Some(h) = with_broken_controller(|sim| sim.apply_conditions = false).await else {
        return;
    };
    h.write_env("prod", &h.web(&h.images.v1, CANARY)).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 2).await;
    h.write_env("prod", &h.web(&h.images.v2, CANARY)).await;
    let run = h.apply("prod", &["--lb-converge-timeout", "4s"]).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("no header rule of")
            && run
                .stderr
                .contains("the AWS Load Balancer Controller did not apply the header rule"),
        "{}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(h.replicas("web-green").await, Some(0));
    let ingress = h.get("Ingress", "web").await.unwrap();
    assert!(!ingress.to_string().contains("web-canary"), "{ingress}");
}

#[tokio::test]
async fn a_controller_that_stops_mid_cutover_never_has_requests_sent_to_a_terminating_slot() {
    let Some(h) = with_broken_controller(|_| {}).await else {
        return;
    };
    let steps = "    replicas: 2\n    rollout: {strategy: blue-green, steps: [50, 100], stepPauseSeconds: 8}\n";
    h.write_env("prod", &h.web(&h.images.v1, steps)).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 2).await;
    h.write_env("prod", &h.web(&h.images.v2, steps)).await;
    let child = h.spawn_apply("prod", &["--lb-converge-timeout", "5s"], &[]);
    // The ALB itself sends half the requests to green: then the controller stops.
    h.until("the ALB forwarding 50% to green", 240, || async {
        h.alb_shares("web", "web.e2e.test")
            .await
            .is_some_and(|s| s.contains(&("web-green".to_owned(), 50)))
    })
    .await;
    h.set_lb(|sim| sim.paused = true).await;
    let run = Harness::finish(child).await;
    assert!(!run.ok, "{}", run.all());
    assert_eq!(run.code, Some(5), "traffic needs a look: {}", run.all());
    assert!(
        run.stderr
            .contains("every request was moved back to web-blue in the Ingress")
            && run
                .stderr
                .contains("web-green keeps its pods, since the ALB may still send it requests"),
        "{}",
        run.all()
    );
    let shares = h.alb_shares("web", "web.e2e.test").await.unwrap();
    assert!(
        shares.contains(&("web-green".to_owned(), 50)),
        "the stopped controller still sends half to green: {shares:?}"
    );
    assert_eq!(h.replicas("web-green").await, Some(2));
    let terminating = h
        .list("Pod")
        .await
        .into_iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_some())
        .count();
    assert_eq!(
        terminating, 0,
        "no pod stopped while the ALB sends it requests"
    );

    // Nothing scales green down while the ALB still forwards to it: finalize says so.
    let finalize = h
        .command(
            "finalize",
            "prod",
            &["--now", "--lb-converge-timeout", "4s"],
        )
        .await;
    assert!(!finalize.ok, "{}", finalize.all());
    assert_eq!(h.replicas("web-green").await, Some(2), "{}", finalize.all());

    // The controller is back: the ALB follows the Ingress, then green goes.
    h.set_lb(|sim| sim.paused = false).await;
    let finalize = h.command("finalize", "prod", &["--now"]).await;
    assert!(finalize.ok, "{}", finalize.all());
    assert_eq!(h.replicas("web-green").await, Some(0));
    assert_eq!(
        h.alb_shares("web", "web.e2e.test").await.unwrap(),
        [("web-blue".to_owned(), 100), ("web-green".to_owned(), 0)]
    );
}

#[tokio::test]
async fn a_failed_pod_with_the_slots_labels_does_not_hold_the_cutover_up() {
    let Some(h) = with_broken_controller(|_| {}).await else {
        return;
    };
    h.write_env("prod", &h.web(&h.images.v1, STEPS)).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 2).await;
    // Someone ran a one-off pod with green's labels to debug; it failed and stays (Failed
    // pods remain until the pod GC), with an IP no target group will ever have.
    let mut labels = h
        .get("Deployment", "web-blue")
        .await
        .unwrap()
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap();
    labels["infra-gen.dev/slot"] = serde_json::json!("green");
    h.create_pod("debug-green", &labels, "registry.test/web:exit-1", "Never")
        .await;
    h.until("the debugging pod Failed", 60, || async {
        h.get("Pod", "debug-green")
            .await
            .is_some_and(|p| p.pointer("/status/phase").and_then(|p| p.as_str()) == Some("Failed"))
    })
    .await;
    h.write_env("prod", &h.web(&h.images.v2, STEPS)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
}

/// The subnets of moto's default VPC (EC2's query API).
async fn default_subnets() -> Vec<String> {
    let text = reqwest::Client::new()
        .post(moto())
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Action=DescribeSubnets&Version=2016-11-15")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.split("<subnetId>")
        .skip(1)
        .filter_map(|part| part.split("</subnetId>").next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_checks_find_the_alb_among_many_and_ride_out_throttling() {
    let Some(h) = with_controller().await else {
        return;
    };
    if h.lb_endpoint.as_deref().is_none_or(str::is_empty) {
        eprintln!("not run: this test fills moto with load balancers and throttles it");
        return;
    }
    // An account with more load balancers than a DescribeLoadBalancers page (moto's: 50),
    // made before this workload's, so its ALB is not on the first page.
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(
        &aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(moto())
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "e2e",
            ))
            .load()
            .await,
    );
    let subnets = default_subnets().await;
    for i in 0..60 {
        elb.create_load_balancer()
            .name(format!("other-{}-{i}", h.id))
            .set_subnets(Some(subnets.clone()))
            .send()
            .await
            .unwrap();
    }
    h.write_env("prod", &h.web(&h.images.v1, STEPS)).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 2).await;
    // Three of every four ELBv2 calls are throttled: the SDK's default three attempts would
    // give up on most of them.
    h.throttle_elb(crate::support::awsproxy::Throttle {
        throttled: 3,
        of: 4,
    })
    .await;
    h.write_env("prod", &h.web(&h.images.v2, STEPS)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(
            "web: the ALB rule for web.e2e.test/ forwards 100% to web-green, 0% to web-blue"
        ),
        "{}",
        run.all()
    );
    assert!(h.throttled() > 0, "the proxy throttled nothing");
}

#[tokio::test]
async fn an_elbv2_failure_right_after_a_weight_move_moves_every_request_back() {
    let Some(h) = with_broken_controller(|_| {}).await else {
        return;
    };
    let steps = "    replicas: 2\n    rollout: {strategy: blue-green, steps: [50, 100], stepPauseSeconds: 6}\n";
    h.write_env("prod", &h.web(&h.images.v1, steps)).await;
    assert!(h.apply("prod", &[]).await.ok);
    bound(&h, 2).await;
    h.throttle_elb(crate::support::awsproxy::Throttle {
        throttled: 0,
        of: 1,
    })
    .await;
    h.write_env("prod", &h.web(&h.images.v2, steps)).await;
    let child = h.spawn_apply("prod", &[], &[]);
    h.until("the ALB forwarding 50% to green", 240, || async {
        h.alb_shares("web", "web.e2e.test")
            .await
            .is_some_and(|s| s.contains(&("web-green".to_owned(), 50)))
    })
    .await;
    // During the pause the CI role loses its ELBv2 permissions: the 100 % step is written,
    // but its weights cannot be read back.
    h.deny_elb();
    let run = Harness::finish(child).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("moved all traffic back to blue")
            && run.stderr.contains("AccessDenied"),
        "{}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((100, 0)), "{}", run.all());
    assert_eq!(
        h.replicas("web-green").await,
        Some(2),
        "not scaled down while the ALB cannot be read: {}",
        run.all()
    );
}
