//! Deploys as they should go: first deploy, cutover, finalize, status, abort, lock, steps,
//! HPA counts, tcp overlap, prune, diff, CI variables, drift, rolling workloads.

use crate::BLUE_GREEN;
use crate::support::harness::Harness;

#[tokio::test]
async fn first_deploy_goes_to_blue_and_is_recorded() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("web: blue is live (first deploy)"),
        "{}",
        run.all()
    );

    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(
        h.image("web-blue").await.as_deref(),
        Some(h.images.v1.as_str())
    );
    assert_eq!(h.replicas("web-blue").await, Some(2));
    assert!(
        h.get("Deployment", "web").await.is_none(),
        "the tree's Deployment is a template, not applied"
    );
    let preview = h.get("Service", "web-preview").await.unwrap();
    assert_eq!(
        preview
            .pointer("/spec/selector/infra-gen.dev~1slot")
            .and_then(|v| v.as_str()),
        Some("blue"),
        "the preview shows what is live until a deploy starts a candidate"
    );

    let secret = h.get("Secret", "pull").await.expect("image-pull secret");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert!(h.get("Secret", "app-db").await.is_some());
    assert!(
        !run.all().contains("registry-password-secret"),
        "a secret value was printed"
    );
    assert!(
        !run.all().contains("mongodb://db.e2e.test"),
        "a secret value was printed"
    );

    let releases = h.releases("web").await;
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0]["slot"], "blue");
    assert_eq!(releases[0]["image"], h.images.v1.as_str());
    assert_eq!(releases[0]["revision"], h.revision().as_str());
    assert_eq!(releases[0]["by"], "https://gitlab.test/e2e/-/jobs/1");
    assert!(
        h.get("Lease", "infra-gen-deploy").await.is_none(),
        "the lock is given back"
    );
}

#[tokio::test]
async fn second_deploy_cuts_over_to_green_keeps_blue_until_finalize_and_status_tells_it() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, BLUE_GREEN)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("switched web from blue to green"),
        "{}",
        run.all()
    );

    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
    assert_eq!(h.weights("web").await, Some((0, 100)));
    assert_eq!(
        h.image("web-green").await.as_deref(),
        Some(h.images.v2.as_str())
    );
    assert_eq!(
        h.replicas("web-blue").await,
        Some(2),
        "the old slot keeps running until finalize"
    );
    let releases = h.releases("web").await;
    assert_eq!(releases.len(), 2);
    assert_eq!(
        (releases[0]["slot"].as_str(), releases[1]["slot"].as_str()),
        (Some("green"), Some("blue"))
    );

    let status = h.command("status", "prod", &[]).await;
    assert!(status.ok, "{}", status.all());
    for needle in [
        "web (blue-green, live: green)",
        "* web-green",
        "2/2 available",
        "ALB weights: blue 0%, green 100%",
        "previous slot scaled down after",
        "deploy   green",
        "deploy   blue",
    ] {
        assert!(
            status.stdout.contains(needle),
            "status lacks {needle:?}:\n{}",
            status.stdout
        );
    }

    let early = h.command("finalize", "prod", &[]).await;
    assert!(early.ok, "{}", early.all());
    assert!(early.stderr.contains("stays up until"), "{}", early.all());
    assert_eq!(h.replicas("web-blue").await, Some(2));
    let now = h.command("finalize", "prod", &["--now"]).await;
    assert!(now.ok, "{}", now.all());
    assert_eq!(h.replicas("web-blue").await, Some(0));
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
}

#[tokio::test]
async fn applying_the_same_revision_again_writes_nothing() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    let before = h.versions().await;
    h.clear_requests();
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(run.stdout.contains("already up to date"), "{}", run.all());
    assert_eq!(h.versions().await, before, "an object changed");
    let writes: Vec<_> = h.requests().into_iter().filter(|r| r.is_write()).collect();
    assert!(writes.is_empty(), "writes: {writes:#?}");
}

#[tokio::test]
async fn a_new_version_that_never_gets_ready_is_aborted_and_blue_keeps_the_traffic() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.never_ready, BLUE_GREEN))
        .await;
    // Long enough for a node under load to have reported the pods' state.
    let run = h.apply("prod", &["--timeout", "8s"]).await;
    assert!(!run.ok, "the deploy must fail");
    assert_eq!(
        run.code,
        Some(4),
        "aborted, traffic untouched: {}",
        run.all()
    );
    assert!(
        run.stderr
            .contains("web: the new version did not become ready, so traffic stays on blue"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("0/2 replicas available"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("ContainersNotReady") || run.stderr.contains("pod "),
        "the pods' reason is given: {}",
        run.all()
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(
        h.replicas("web-green").await,
        Some(0),
        "the idle slot is scaled to 0"
    );
    assert_eq!(h.releases("web").await.len(), 1, "no release recorded");
    assert!(
        h.get("Lease", "infra-gen-deploy").await.is_none(),
        "the lock is released on failure too"
    );
}

#[tokio::test]
async fn crash_looping_pods_abort_at_once_with_the_reason() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.crash, BLUE_GREEN))
        .await;
    let started = std::time::Instant::now();
    let run = h.apply("prod", &["--timeout", "300s"]).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "aborted once the container crashed again after the kubelet's back-off, not at the timeout"
    );
    assert!(run.stderr.contains("CrashLoopBackOff"), "{}", run.all());
    assert!(run.stderr.contains("last exit code 1"), "{}", run.all());
    // The crashed instance's last lines, as werf and kubedog print them.
    if h.double.is_some() {
        assert!(
            run.stderr
                .contains("last lines of container web (before its last restart):")
                && run
                    .stderr
                    .contains("| error: cannot reach the database: connection refused"),
            "{}",
            run.all()
        );
    } else {
        // The test control plane's node agent serves no logs (the API server does not proxy
        // to a loopback node address): the abort says so instead of staying silent.
        assert!(
            run.stderr.contains("last lines of container web")
                || run
                    .stderr
                    .contains("the log of container web could not be read"),
            "{}",
            run.all()
        );
    }
    assert!(
        run.stderr.contains("traffic stays on blue"),
        "{}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((100, 0)));
}

#[tokio::test]
async fn rollback_is_instant_within_the_delay_and_scales_up_after_finalize() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);

    let run = h.command("rollback", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("switched web from green to blue"),
        "{}",
        run.all()
    );
    assert!(
        !run.stderr.contains("scaled web-blue up"),
        "blue was still running: {}",
        run.all()
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_eq!(h.weights("web").await, Some((100, 0)));
    let releases = h.releases("web").await;
    assert_eq!(releases[0]["action"], "rollback");
    assert_eq!(releases[0]["fromTemplate"], releases[1]["template"]);

    // After finalize the previous slot must come back first.
    h.write_env("prod", &h.web(&h.images.v3, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
    assert!(h.command("finalize", "prod", &["--now"]).await.ok);
    assert_eq!(h.replicas("web-blue").await, Some(0));
    let run = h.command("rollback", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("scaled web-blue up from 0 to 2"),
        "{}",
        run.all()
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_eq!(h.replicas("web-blue").await, Some(2));
    assert_eq!(
        h.image("web-blue").await.as_deref(),
        Some(h.images.v1.as_str())
    );
}

#[tokio::test]
async fn a_lock_held_by_another_deploy_fails_at_once_naming_the_holder() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.hold_lease("https://gitlab.test/e2e/-/jobs/99", 5).await;
    h.write_env("prod", &h.web(&h.images.v2, BLUE_GREEN)).await;
    let run = h.apply("prod", &[]).await;
    assert!(!run.ok);
    assert_eq!(run.code, Some(3), "lock held: {}", run.all());
    assert!(
        run.stderr.contains("another deploy holds the lock"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("https://gitlab.test/e2e/-/jobs/99"),
        "{}",
        run.all()
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert!(
        h.get("Deployment", "web-green").await.is_none(),
        "nothing was started"
    );
}

#[tokio::test]
async fn an_expired_lock_left_by_a_killed_deploy_is_taken_over() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.hold_lease("https://gitlab.test/e2e/-/jobs/98", 120).await;
    h.write_env("prod", &h.web(&h.images.v2, BLUE_GREEN)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
}

#[tokio::test]
async fn traffic_steps_move_the_alb_weights_gradually() {
    let h = Harness::start().await;
    let steps = "    replicas: 2\n    rollout: {strategy: blue-green, steps: [10, 50, 100], stepPauseSeconds: 1}\n";
    h.write_env("prod", &h.web(&h.images.v1, steps)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, steps)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let order: Vec<usize> = [
        "10% of ALB traffic on green",
        "50% of ALB traffic on green",
        "100% of ALB traffic on green",
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
        "steps out of order: {}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((0, 100)));
}

#[tokio::test]
async fn the_replica_count_the_hpa_chose_is_carried_to_the_new_slot() {
    let h = Harness::start().await;
    let hpa = "    autoscaling: {min: 2, max: 10}\n    rollout: {strategy: blue-green}\n";
    h.write_env("prod", &h.web(&h.images.v1, hpa)).await;
    assert!(h.apply("prod", &[]).await.ok);
    let target = h.get("HorizontalPodAutoscaler", "web").await.unwrap();
    assert_eq!(
        target
            .pointer("/spec/scaleTargetRef/name")
            .and_then(|v| v.as_str()),
        Some("web-blue")
    );
    h.scale_like_the_hpa("web-blue", 5).await;
    h.write_env("prod", &h.web(&h.images.v2, hpa)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("started web-green with 5 replica(s)"),
        "{}",
        run.all()
    );
    assert_eq!(h.replicas("web-green").await, Some(5));
    let target = h.get("HorizontalPodAutoscaler", "web").await.unwrap();
    assert_eq!(
        target
            .pointer("/spec/scaleTargetRef/name")
            .and_then(|v| v.as_str()),
        Some("web-green"),
        "HPA re-pointed"
    );
}

#[tokio::test]
async fn tcp_workloads_select_both_slots_before_switching() {
    let h = Harness::start().await;
    let args = h
        .images
        .args
        .as_ref()
        .map(|a| format!("    args: {a}\n"))
        .unwrap_or_default();
    let tcp = |image: &str| {
        format!(
            "  game:\n    kind: tcp\n    image: {image}\n{args}    ports: [{{name: game, port: 8080}}]\n    replicas: 2\n    resources: {{cpu: 100m, memory: 128Mi}}\n    rollout: {{strategy: blue-green, overlapSeconds: 1}}\n"
        )
    };
    h.write_env("prod", &tcp(&h.images.v1)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &tcp(&h.images.v2)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let overlap = run
        .stderr
        .find("NLB selects both slots")
        .unwrap_or_else(|| panic!("{}", run.all()));
    let switched = run.stderr.find("switched game from blue to green").unwrap();
    assert!(overlap < switched);
    assert_eq!(h.live_slot("game").await.as_deref(), Some("green"));
}

#[tokio::test]
async fn objects_no_longer_in_the_tree_are_listed_then_pruned() {
    let h = Harness::start().await;
    let worker = "  jobs:\n    kind: worker\n    image: registry.test/jobs:v1\n    replicas: 1\n    resources: {cpu: 100m, memory: 128Mi}\n";
    h.write_env(
        "prod",
        &format!("{}{worker}", h.web(&h.images.v1, BLUE_GREEN)),
    )
    .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(h.get("Deployment", "jobs").await.is_some());
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("pruning (no longer in the tree): ServiceAccount/jobs, Deployment/jobs"),
        "{}",
        run.all()
    );
    assert!(h.get("Deployment", "jobs").await.is_none());
    assert!(h.get("ServiceAccount", "jobs").await.is_none());
    assert!(
        h.get("Deployment", "web-blue").await.is_some(),
        "slot Deployments are never pruned"
    );
}

#[tokio::test]
async fn diff_shows_what_apply_would_change_without_secret_values() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    let before = h.command("diff", "prod", &[]).await;
    assert!(before.ok, "{}", before.all());
    assert!(
        before.stdout.contains("Deployment/web-blue (new)"),
        "{}",
        before.stdout
    );
    assert!(before.stdout.contains("<redacted"), "{}", before.stdout);
    assert!(!before.stdout.contains("registry-password-secret"));
    assert!(
        h.get("Deployment", "web-blue").await.is_none(),
        "diff changes nothing"
    );
    // As `kubectl diff --exit-code`: 1 when something would change, 0 when nothing would.
    let code = h.command("diff", "prod", &["--exit-code"]).await;
    assert_eq!(code.code, Some(1), "{}", code.all());
    assert!(h.apply("prod", &[]).await.ok);
    let after = h.command("diff", "prod", &["--exit-code"]).await;
    assert!(after.ok, "{}", after.all());
    assert!(after.stdout.contains("no differences"), "{}", after.stdout);
    h.write_env("prod", &h.web(&h.images.v2, BLUE_GREEN)).await;
    let json = h.command("diff", "prod", &["-o", "json"]).await;
    assert!(json.ok, "{}", json.all());
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(
        doc["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["kind"] == "Deployment" && c["name"] == "web-green" && c["change"] == "new"),
        "{}",
        json.stdout
    );
    let changed = h.command("diff", "prod", &[]).await;
    assert!(
        changed.stdout.contains("Deployment/web-green (new)"),
        "{}",
        changed.stdout
    );
    let new_image = format!("image: {}", h.images.v2);
    assert!(
        changed
            .stdout
            .lines()
            .any(|l| l.starts_with('+') && l.trim_end().ends_with(&new_image)),
        "{}",
        changed.stdout
    );
}

#[tokio::test]
async fn a_reviewer_can_diff_without_the_secret_values() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, BLUE_GREEN)).await;
    let secrets = ["E2E_DB_URI", "CI_REGISTRY_PASSWORD"];
    // Without the mode, the missing variables are named and nothing is compared.
    let refused = h.command_without("diff", "prod", &[], &secrets).await;
    assert_eq!(refused.code, Some(2), "{}", refused.all());
    assert!(refused.stderr.contains("E2E_DB_URI"), "{}", refused.all());
    // With it: the release's changes, and the Secrets by their keys only.
    let run = h
        .command_without(
            "diff",
            "prod",
            &["--without-secret-values", "--exit-code"],
            &secrets,
        )
        .await;
    assert_eq!(run.code, Some(1), "{}", run.all());
    assert!(
        run.stdout.contains("Deployment/web-green (new)"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("Secret/app-db"),
        "same keys: not a change: {}",
        run.stdout
    );
    // A key added to a Secret shows, its value still not.
    h.write_env_with_secrets(
        "prod",
        &h.web(&h.images.v2, BLUE_GREEN),
        "  extra: {token: {fromEnv: E2E_EXTRA}}\n",
    )
    .await;
    let run = h
        .command_without("diff", "prod", &["--without-secret-values"], &["E2E_EXTRA"])
        .await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stdout
            .contains("Secret/extra: keys  → token (values not compared)"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn a_missing_ci_variable_is_named_before_anything_is_written() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web("registry.test/web:${APP_TAG}", BLUE_GREEN))
        .await;
    let run = h.apply("prod", &[]).await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("APP_TAG (image of Deployment/web)"),
        "{}",
        run.all()
    );
    let run = h
        .run(
            &[
                "apply",
                "--env",
                "prod",
                "--kubeconfig",
                h.kubeconfig.to_str().unwrap(),
            ],
            &[("APP_TAG", "v1"), ("E2E_DB_URI", "")],
        )
        .await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("E2E_DB_URI (secret app-db key uri)"),
        "{}",
        run.all()
    );
    assert!(h.get("Deployment", "web-blue").await.is_none());
    let run = h
        .run(
            &[
                "apply",
                "--env",
                "prod",
                "--kubeconfig",
                h.kubeconfig.to_str().unwrap(),
            ],
            &[("APP_TAG", "v1")],
        )
        .await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(
        h.image("web-blue").await.as_deref(),
        Some("registry.test/web:v1")
    );
}

#[tokio::test]
async fn a_drifted_tree_is_refused_unless_allowed() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    let file = h.root().join("manifests/prod/service-web-blue.yaml");
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("port: 80", "port: 81");
    std::fs::write(&file, text).unwrap();
    let run = h.apply("prod", &[]).await;
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("differs from what environments/prod.yaml renders")
            && run.stderr.contains("service-web-blue.yaml"),
        "{}",
        run.all()
    );
    let run = h.apply("prod", &["--allow-drift"]).await;
    assert!(run.ok, "{}", run.all());
    let service = h.get("Service", "web-blue").await.unwrap();
    assert_eq!(
        service
            .pointer("/spec/ports/0/port")
            .and_then(|v| v.as_i64()),
        Some(81),
        "the committed tree was applied"
    );
}

#[tokio::test]
async fn rolling_workloads_are_applied_and_waited_for() {
    let h = Harness::start().await;
    let args = h
        .images
        .args
        .as_ref()
        .map(|a| format!("    args: {a}\n"))
        .unwrap_or_default();
    let rolling = |image: &str| {
        format!(
            "  api:\n    kind: web\n    image: {image}\n{args}    port: 8080\n    replicas: 2\n    resources: {{cpu: 100m, memory: 128Mi}}\n    probes: {{readiness: {}}}\n",
            h.images.ready_path
        )
    };
    h.write_env("prod", &rolling(&h.images.v1)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(run.stderr.contains("api: rolled out"), "{}", run.all());
    h.write_env("prod", &rolling(&h.images.crash)).await;
    let run = h.apply("prod", &[]).await;
    assert!(!run.ok);
    assert_eq!(
        run.code,
        Some(5),
        "a rolling update stopped half-way: {}",
        run.all()
    );
    assert!(
        run.stderr
            .contains("api: the rolling update did not complete")
            && run.stderr.contains("CrashLoopBackOff"),
        "{}",
        run.all()
    );
    // `status` shows why the Deployment is not available, with the crashed container's log.
    let status = h.command("status", "prod", &[]).await;
    assert!(status.ok, "{}", status.all());
    assert!(
        status.stdout.contains("  ! pod api-") && status.stdout.contains("CrashLoopBackOff"),
        "{}",
        status.stdout
    );
    if h.double.is_some() {
        assert!(
            status
                .stdout
                .contains("| error: cannot reach the database: connection refused"),
            "{}",
            status.stdout
        );
    }
}

#[tokio::test]
async fn a_pod_whose_probe_names_a_missing_port_is_reported_as_such() {
    let h = Harness::start().await;
    let game = h.tcp(
        &h.images.v1,
        "    replicas: 2\n    probes: {readiness: {tcp: game}}\n",
    );
    h.write_env("prod", &game).await;
    // A hand-edited tree (a template of another tool, say): the probe names a port the
    // container does not have. Render refuses that; the committed tree is applied anyway.
    let file = h.root().join("manifests/prod/deployment-game.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text.replace(
        "tcpSocket:\n            port: game",
        "tcpSocket:\n            port: health",
    );
    assert_ne!(text, edited, "the probe is in the tree:\n{text}");
    std::fs::write(&file, edited).unwrap();
    let started = std::time::Instant::now();
    let run = h
        .apply("prod", &["--allow-drift", "--timeout", "300s"])
        .await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("ProbePortMissing")
            && run
                .stderr
                .contains("names port \"health\", which the container does not declare"),
        "{}",
        run.all()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "no wait fixes a missing port: aborted, not timed out"
    );
}

#[tokio::test]
async fn after_a_cutover_the_preview_shows_the_release_now_live() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, BLUE_GREEN)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
    let preview = h.get("Service", "web-preview").await.unwrap();
    assert_eq!(
        preview["spec"]["selector"]["infra-gen.dev/slot"], "green",
        "the preview host shows what is live until the next deploy starts a candidate: {preview}"
    );
}

#[tokio::test]
async fn finalize_re_points_an_hpa_left_on_the_old_slot_before_scaling_it_down() {
    let h = Harness::start().await;
    let hpa = "    autoscaling: {min: 2, max: 4}\n    rollout: {strategy: blue-green, scaleDownDelaySeconds: 600}\n";
    h.write_env("prod", &h.web(&h.images.v1, hpa)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, hpa)).await;
    assert!(h.apply("prod", &[]).await.ok);
    // A deploy killed between the switch and the HPA re-point leaves the HPA on blue.
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        h.client().await,
        &h.namespace(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("autoscaling", "v2", "HorizontalPodAutoscaler"),
            "horizontalpodautoscalers",
        ),
    );
    api.patch(
        "web",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            serde_json::json!({"spec": {"scaleTargetRef": {"name": "web-blue"}}}),
        ),
    )
    .await
    .unwrap();
    let run = h.command("finalize", "prod", &["--now"]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.replicas("web-blue").await, Some(0));
    let hpa = h.get("HorizontalPodAutoscaler", "web").await.unwrap();
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        "web-green",
        "the live slot keeps its autoscaling: {}",
        run.all()
    );
}

#[tokio::test]
async fn history_lists_the_releases_newest_first() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    let first = h.revision();
    h.write_env("prod", &h.web(&h.images.v2, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    let second = h.revision();
    let run = h.command("rollback", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());

    let run = h.command("history", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let rows: Vec<&str> = run.stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{}", run.stdout);
    assert!(
        rows[0].contains(" rollback ") && rows[0].contains(&first[..12]),
        "{}",
        run.stdout
    );
    assert!(
        rows[1].contains(" deploy ") && rows[1].contains(&second[..12]),
        "{}",
        run.stdout
    );
    assert!(
        rows[2].contains(" deploy ") && rows[2].contains(&first[..12]),
        "{}",
        run.stdout
    );

    let run = h.command("history", "prod", &["-o", "json"]).await;
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let releases = doc["releases"].as_array().unwrap();
    assert_eq!(releases.len(), 3);
    assert_eq!(releases[0]["workload"], "web");
    assert_eq!(releases[0]["action"], "rollback");
    assert_eq!(releases[2]["revision"], first.as_str());
}

#[tokio::test]
async fn re_running_an_older_pipelines_deploy_switches_back_to_its_slot_at_once() {
    // GitLab's "Rollback environment" re-runs the deploy job of the older pipeline: infra-gen
    // sees a deploy of that commit, whose slot still runs, and switches back without new pods.
    let h = Harness::start().await;
    let v1 = h.web(&h.images.v1, BLUE_GREEN);
    h.write_env("prod", &v1).await;
    assert!(h.apply("prod", &[]).await.ok);
    let blue_pods = h.pod_names("web-blue").await;
    h.write_env("prod", &h.web(&h.images.v2, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
    h.write_env("prod", &v1).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_eq!(
        h.pod_names("web-blue").await,
        blue_pods,
        "the same pods: {}",
        run.all()
    );
    let releases = h.releases("web").await;
    assert_eq!(releases.last().unwrap()["revision"], h.revision().as_str());
}
