//! After things go wrong: a cutover killed half-way and every command run after it, the tcp
//! overlap killed, rollbacks that must not flip back, replica counts that follow the live
//! load, strategy switches, prune of what the file dropped, transient pod states, and a
//! scale-down that came due later.

use std::time::Duration;

use crate::support::harness::Harness;

/// Gradual steps with a long pause, so a run can be killed while traffic is split.
const STEPS: &str = "    replicas: 2\n    rollout: {strategy: blue-green, steps: [50, 100], stepPauseSeconds: 30}\n";

/// v1 live on blue, then a deploy of v2 killed while the ALB sends 50 % to green.
async fn killed_at_half(h: &Harness) {
    killed_at(h, STEPS, (50, 50)).await;
}

/// v1 live on blue, then a deploy of v2 by `steps` cancelled (its CI job killed) once the ALB
/// sends `weights` to (blue, green).
async fn killed_at(h: &Harness, steps: &str, weights: (u64, u64)) {
    h.write_env("prod", &h.web(&h.images.v1, steps)).await;
    let first = h.apply("prod", &[]).await;
    assert!(first.ok, "{}", first.all());
    h.write_env("prod", &h.web(&h.images.v2, steps)).await;
    let mut child = h.spawn_apply("prod", &[], &[]);
    h.until(&format!("{weights:?} on (blue, green)"), 240, || async {
        h.weights("web").await == Some(weights)
    })
    .await;
    Harness::kill(&mut child).await;
    assert_eq!(
        h.live_slot("web").await.as_deref(),
        Some("blue"),
        "the selector moves last"
    );
}

/// A first step of 10 % with a long pause: the share most cancels happen at.
const TEN_PERCENT: &str = "    replicas: 2\n    rollout: {strategy: blue-green, steps: [10, 100], stepPauseSeconds: 60}\n";

/// Traffic only ever reached ready slots, and no slot lost pods under it.
fn assert_traffic_only_on_ready_slots(h: &Harness, workload: &str) {
    let violations = h.traffic_violations(workload);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn status_names_an_interrupted_cutover_and_what_the_next_command_does() {
    let h = Harness::start().await;
    killed_at_half(&h).await;
    let status = h.command("status", "prod", &[]).await;
    assert!(status.ok, "{}", status.all());
    for needle in [
        "a cutover from blue to green did not finish",
        "ALB 50% on blue, 50% on green, Service web selects blue",
        "only a retry of its own commit",
        "move every request back to blue first",
    ] {
        assert!(
            status.stdout.contains(needle),
            "status lacks {needle:?}:\n{}",
            status.stdout
        );
    }
}

#[tokio::test]
async fn a_release_cancelled_at_ten_percent_is_moved_back_by_the_unattended_finalize() {
    let h = Harness::start().await;
    killed_at(&h, TEN_PERCENT, (90, 10)).await;
    let before = h.releases("web").await;
    // The delayed finalize job of the cancelled pipeline, as GitLab runs it.
    let run = h.command("finalize", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("found an interrupted cutover from blue to green (ALB 90% on blue, 10% on green, Service web selects blue)")
            && run.stderr.contains("moving all traffic back to blue"),
        "{}",
        run.all()
    );
    assert!(!run.stderr.contains("completing it"), "{}", run.all());
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_eq!(
        h.image("web-blue").await.as_deref(),
        Some(h.images.v1.as_str())
    );
    assert_eq!(
        h.releases("web").await,
        before,
        "a cancelled release never becomes a release"
    );
    assert_eq!(
        h.replicas("web-green").await,
        Some(0),
        "the cancelled version is no rollback target: scaled down once it had no traffic"
    );
    assert_traffic_only_on_ready_slots(&h, "web");
}

#[tokio::test]
async fn a_new_revision_after_a_cancelled_cutover_moves_back_first_and_keeps_the_last_good_slot() {
    let h = Harness::start().await;
    killed_at(&h, TEN_PERCENT, (90, 10)).await;
    let quick = TEN_PERCENT.replace("stepPauseSeconds: 60", "stepPauseSeconds: 1");
    h.write_env("prod", &h.web(&h.images.v3, &quick)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("found an interrupted cutover from blue to green")
            && run.stderr.contains("moving all traffic back to blue"),
        "{}",
        run.all()
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
    assert_eq!(
        h.image("web-green").await.as_deref(),
        Some(h.images.v3.as_str())
    );
    assert_eq!(h.weights("web").await, Some((0, 100)));
    assert_eq!(
        h.image("web-blue").await.as_deref(),
        Some(h.images.v1.as_str()),
        "the last good release still runs for an instant rollback"
    );
    let images: Vec<String> = h
        .releases("web")
        .await
        .iter()
        .map(|r| r["image"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        images,
        [h.images.v3.clone(), h.images.v1.clone()],
        "the cancelled v2 was never a release"
    );
    assert_traffic_only_on_ready_slots(&h, "web");
}

#[tokio::test]
async fn a_retry_of_the_cancelled_commit_moves_the_traffic_back_before_it_waits_for_the_slot() {
    let h = Harness::start().await;
    if !h.is_tunable() {
        eprintln!(
            "not run: this test slows the node down, which only the double and the test control plane can"
        );
        return;
    }
    killed_at(&h, TEN_PERCENT, (90, 10)).await;
    // Green stops being ready while it has 10 %: its pods are replaced by ones that take
    // ten minutes to start.
    h.set_ready_after(Duration::from_secs(600)).await;
    for pod in h.pod_names("web-green").await {
        h.delete("Pod", &pod).await;
    }
    h.until("green not ready", 120, || async {
        h.get("Deployment", "web-green")
            .await
            .and_then(|d| {
                d.pointer("/status/availableReplicas")
                    .and_then(|a| a.as_i64())
            })
            .unwrap_or(0)
            < 2
    })
    .await;
    let timeout = if h.double.is_some() { "8s" } else { "40s" };
    let run = h.apply("prod", &["--timeout", timeout]).await;
    assert!(!run.ok, "green never gets ready: {}", run.all());
    let moved = run
        .stderr
        .find("moving all traffic back to blue")
        .unwrap_or_else(|| panic!("no move back: {}", run.all()));
    let waited = run
        .stderr
        .find("web-green: 0/2 available")
        .or_else(|| run.stderr.find("web-green: 1/2 available"))
        .unwrap_or_else(|| panic!("no wait: {}", run.all()));
    assert!(
        moved < waited,
        "traffic goes back before the wait, not after it: {}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));

    // Fixed (pods start quickly again): the same commit releases through the whole path.
    h.set_ready_after(Duration::from_millis(300)).await;
    let fixed = h.apply("prod", &[]).await;
    assert!(fixed.ok, "{}", fixed.all());
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
    assert_eq!(
        h.image("web-green").await.as_deref(),
        Some(h.images.v2.as_str())
    );
}

#[tokio::test]
async fn the_same_revision_after_a_killed_cutover_resumes_at_the_next_step() {
    let h = Harness::start().await;
    killed_at_half(&h).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(run.stderr.contains("completing it"), "{}", run.all());
    assert!(
        !run.stderr.contains("50% of ALB traffic"),
        "steps already taken are not repeated: {}",
        run.all()
    );
    assert!(
        run.stderr.contains("100% of ALB traffic on green"),
        "{}",
        run.all()
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
    assert_eq!(
        h.replicas("web-blue").await,
        Some(2),
        "kept for an instant rollback"
    );
    assert_traffic_only_on_ready_slots(&h, "web");
}

#[tokio::test]
async fn rollback_after_a_killed_cutover_returns_to_the_release_that_was_live_and_stays_there() {
    let h = Harness::start().await;
    killed_at_half(&h).await;
    let v2_revision = h.revision();
    let run = h.command("rollback", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_eq!(
        h.image("web-blue").await.as_deref(),
        Some(h.images.v1.as_str())
    );
    let releases = h.releases("web").await;
    assert_eq!(
        releases.len(),
        1,
        "v1 stays the newest release; v2 never was one: {releases:#?}"
    );
    assert_eq!(releases[0]["image"], h.images.v1.as_str());

    // The CI job retried (same pipeline, same commit): nothing happens.
    let again = h
        .command("rollback", "prod", &["--revision", &v2_revision])
        .await;
    assert!(again.ok, "{}", again.all());
    assert!(again.stderr.contains("is not live"), "{}", again.all());
    // By hand, without a revision: there is nothing earlier to go to, and it never flips
    // back to the version it left.
    let by_hand = h.command("rollback", "prod", &[]).await;
    assert!(!by_hand.ok, "{}", by_hand.all());
    assert!(
        by_hand
            .stderr
            .contains("no earlier release to roll back to"),
        "{}",
        by_hand.all()
    );
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_traffic_only_on_ready_slots(&h, "web");
}

#[tokio::test]
async fn a_tcp_deploy_killed_during_the_overlap_is_not_taken_for_a_first_deploy() {
    let h = Harness::start().await;
    let extra = "    autoscaling: {min: 2, max: 6}\n    rollout: {strategy: blue-green, overlapSeconds: 30}\n";
    h.write_env("prod", &h.tcp(&h.images.v1, extra)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.scale_like_the_hpa("game-blue", 4).await;
    h.write_env("prod", &h.tcp(&h.images.v2, extra)).await;
    let mut child = h.spawn_apply("prod", &[], &[]);
    // The overlap: green is ready and the NLB Service selects both slots (it does from the
    // start of the release too, before green has pods).
    h.until("the NLB overlap", 240, || async {
        let both = h
            .get("Service", "game")
            .await
            .is_some_and(|s| s.pointer("/spec/selector/infra-gen.dev~1slot").is_none());
        let ready = h.get("Deployment", "game-green").await.and_then(|d| {
            d.pointer("/status/availableReplicas")
                .and_then(|a| a.as_i64())
        }) == Some(4);
        both && ready
    })
    .await;
    Harness::kill(&mut child).await;

    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("found an interrupted cutover from blue to green"),
        "{}",
        run.all()
    );
    assert!(!run.stderr.contains("first deploy"), "{}", run.all());
    assert_eq!(h.live_slot("game").await.as_deref(), Some("green"));
    assert_eq!(
        h.replicas("game-green").await,
        Some(4),
        "sized from the live slot"
    );
    assert_eq!(
        h.image("game-blue").await.as_deref(),
        Some(h.images.v1.as_str()),
        "the slot that had traffic was not re-templated"
    );
    assert_eq!(
        h.replicas("game-blue").await,
        Some(4),
        "nor reset to the HPA minimum"
    );
    assert_traffic_only_on_ready_slots(&h, "game");
}

#[tokio::test]
async fn a_candidate_that_never_went_live_is_never_a_rollback_target() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, crate::BLUE_GREEN))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    let v1_revision = h.revision();
    h.write_env("prod", &h.web(&h.images.v2, crate::BLUE_GREEN))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.never_ready, crate::BLUE_GREEN))
        .await;
    assert!(
        !h.apply("prod", &["--timeout", "3s"]).await.ok,
        "never ready: aborted"
    );
    let run = h.command("rollback", "prod", &[]).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("which no longer runs in a slot")
            && run.stderr.contains(&format!("deploy commit {v1_revision}")),
        "{}",
        run.all()
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
    assert_eq!(h.weights("web").await, Some((0, 100)));
}

#[tokio::test]
async fn a_rollback_that_cannot_get_its_target_ready_leaves_its_pods_and_the_traffic() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, crate::BLUE_GREEN))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, crate::BLUE_GREEN))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    assert!(h.command("finalize", "prod", &["--now"]).await.ok);
    // The Secret blue's pods need is gone: they cannot start (running pods keep going).
    h.delete("Secret", "app-db").await;
    let timeout = if h.double.is_some() { "5s" } else { "30s" };
    let run = h.command("rollback", "prod", &["--timeout", timeout]).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("the rollback target web-blue did not become ready, so traffic stays as it was (all traffic on green)")
            && run.stderr.contains("CreateContainerConfigError"),
        "{}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((0, 100)));
    assert_eq!(
        h.replicas("web-blue").await,
        Some(2),
        "left as they are, not scaled to 0"
    );
    assert_eq!(h.replicas("web-green").await, Some(2));
}

#[tokio::test]
async fn the_new_slot_follows_the_live_load_until_the_last_step() {
    let h = Harness::start().await;
    let hpa = "    autoscaling: {min: 2, max: 8}\n    rollout: {strategy: blue-green, steps: [50, 100], stepPauseSeconds: 5}\n";
    h.write_env("prod", &h.web(&h.images.v1, hpa)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, hpa)).await;
    let child = h.spawn_apply("prod", &[], &[]);
    h.until("50% on green", 240, || async {
        h.weights("web").await == Some((50, 50))
    })
    .await;
    // The spike arrives during the cutover: the HPA scales the live slot up.
    h.scale_like_the_hpa("web-blue", 5).await;
    let run = Harness::finish(child).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("scaled web-green up from 2 to 5 to follow the live load"),
        "{}",
        run.all()
    );
    assert_eq!(h.replicas("web-green").await, Some(5));
    assert_eq!(h.weights("web").await, Some((0, 100)));
    assert_traffic_only_on_ready_slots(&h, "web");
}

#[tokio::test]
async fn rollback_resizes_a_previous_slot_to_the_live_load() {
    let h = Harness::start().await;
    let hpa = "    autoscaling: {min: 2, max: 8}\n    rollout: {strategy: blue-green}\n";
    h.write_env("prod", &h.web(&h.images.v1, hpa)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, hpa)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.scale_like_the_hpa("web-green", 6).await;
    let run = h.command("rollback", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("scaled web-blue up from 2 to 6 to take the live load back"),
        "{}",
        run.all()
    );
    assert_eq!(h.replicas("web-blue").await, Some(6));
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_traffic_only_on_ready_slots(&h, "web");
}

#[tokio::test]
async fn a_replicas_change_of_a_blue_green_workload_takes_effect() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, crate::BLUE_GREEN))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    let three = crate::BLUE_GREEN.replace("replicas: 2", "replicas: 3");
    h.write_env("prod", &h.web(&h.images.v1, &three)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("scaled web-blue from 2 to 3 replica(s)"),
        "{}",
        run.all()
    );
    assert_eq!(h.replicas("web-blue").await, Some(3));
    assert!(
        h.apply("prod", &[])
            .await
            .stdout
            .contains("already up to date")
    );
}

fn rolling(h: &Harness, image: &str, extra: &str) -> String {
    format!(
        "  web:\n    kind: web\n    image: {image}\n{}    port: 8080\n    resources: {{cpu: 100m, memory: 128Mi}}\n    probes: {{readiness: {}}}\n    http: {{host: web.e2e.test}}\n{extra}",
        h.args_line(image),
        h.images.ready_path
    )
}

#[tokio::test]
async fn adding_autoscaling_to_a_running_workload_keeps_its_replicas() {
    let h = Harness::start().await;
    h.write_env("prod", &rolling(&h, &h.images.v1, "    replicas: 3\n"))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    assert_eq!(h.replicas("web").await, Some(3));
    h.write_env(
        "prod",
        &rolling(&h, &h.images.v1, "    autoscaling: {min: 2, max: 10}\n"),
    )
    .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(
        h.replicas("web").await,
        Some(3),
        "not reset to 1: {}",
        run.all()
    );
    assert!(h.get("HorizontalPodAutoscaler", "web").await.is_some());
}

#[tokio::test]
async fn switching_between_rolling_and_blue_green_keeps_the_capacity() {
    let h = Harness::start().await;
    let hpa = "    autoscaling: {min: 2, max: 10}\n";
    h.write_env("prod", &rolling(&h, &h.images.v1, hpa)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.scale_like_the_hpa("web", 5).await;

    let blue_green = format!("{hpa}    rollout: {{strategy: blue-green}}\n");
    h.write_env("prod", &rolling(&h, &h.images.v1, &blue_green))
        .await;
    // Behind the ALB the switch moves every request at once to new target groups: refused
    // unless asked for, before anything is written.
    let refused = h.apply("prod", &[]).await;
    assert!(!refused.ok, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains("refusing to switch web from rolling to blue-green")
            && refused.stderr.contains("--allow-strategy-change"),
        "{}",
        refused.all()
    );
    assert!(h.get("Deployment", "web-blue").await.is_none());
    let run = h.apply("prod", &["--allow-strategy-change"]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.replicas("web-blue").await, Some(5), "{}", run.all());
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert!(
        h.get("Deployment", "web").await.is_none(),
        "the rolling Deployment is pruned"
    );

    h.write_env("prod", &rolling(&h, &h.images.v1, hpa)).await;
    let refused = h.apply("prod", &[]).await;
    assert!(
        refused
            .stderr
            .contains("refusing to switch web from blue-green to rolling"),
        "{}",
        refused.all()
    );
    let run = h.apply("prod", &["--allow-strategy-change"]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.replicas("web").await, Some(5), "{}", run.all());
    assert!(h.get("Deployment", "web-blue").await.is_none());
    assert!(h.get("Service", "web-preview").await.is_none());
}

#[tokio::test]
async fn dropping_http_and_autoscaling_prunes_the_ingress_and_the_hpa() {
    let h = Harness::start().await;
    let hpa = "    autoscaling: {min: 2, max: 4}\n    rollout: {strategy: blue-green}\n";
    h.write_env("prod", &h.web(&h.images.v1, hpa)).await;
    assert!(h.apply("prod", &[]).await.ok);
    assert!(h.get("Ingress", "web").await.is_some());
    let plain = h
        .web(&h.images.v1, crate::BLUE_GREEN)
        .replace("    http: {host: web.e2e.test}\n", "");
    h.write_env("prod", &plain).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("Ingress/web") && run.stderr.contains("HorizontalPodAutoscaler/web"),
        "{}",
        run.all()
    );
    assert!(h.get("Ingress", "web").await.is_none());
    assert!(h.get("HorizontalPodAutoscaler", "web").await.is_none());
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_eq!(h.replicas("web-blue").await, Some(2));
}

#[tokio::test]
async fn a_secret_a_running_slot_still_uses_is_kept_when_it_leaves_secrets() {
    let h = Harness::start().await;
    let uses_extra = h.web(&h.images.v1, crate::BLUE_GREEN).replace(
        "env: {DB: {secret: app-db, key: uri}}",
        "env: {DB: {secret: app-db, key: uri}, EXTRA: {secret: extra, key: token}}",
    );
    h.write_env_with_secrets(
        "prod",
        &uses_extra,
        "  extra: {token: {fromEnv: E2E_DB_URI}}\n",
    )
    .await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, crate::BLUE_GREEN))
        .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(
            "kept Secret/extra although it left `secrets:`: Deployment/web-blue still use(s) it"
        ),
        "{}",
        run.all()
    );
    assert!(h.get("Secret", "extra").await.is_some());
}

#[tokio::test]
async fn one_crash_during_start_up_is_not_an_abort() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, crate::BLUE_GREEN))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.crash_once, crate::BLUE_GREEN))
        .await;
    let run = h
        .apply(
            "prod",
            &["--timeout", if h.double.is_some() { "30s" } else { "240s" }],
        )
        .await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
}

#[tokio::test]
async fn a_scale_down_that_comes_due_later_is_done_by_the_next_apply() {
    let h = Harness::start().await;
    // A short delay needs a short drain: the old slot must outlive its targets' draining.
    // Long enough that the finalize right after the apply comes before it, on a loaded
    // machine too (4 s was not, once, beside a second full test run).
    let short = "    replicas: 2\n    shutdown: {preStopSeconds: 1, drainSeconds: 2}\n    rollout: {strategy: blue-green, scaleDownDelaySeconds: 15}\n";
    h.write_env("prod", &h.web(&h.images.v1, short)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, short)).await;
    assert!(h.apply("prod", &[]).await.ok);
    // The delay counts from the switch, before the apply ended.
    let due = tokio::time::Instant::now() + Duration::from_secs(16);
    let early = h.command("finalize", "prod", &[]).await;
    assert!(early.ok, "{}", early.all());
    assert!(
        early.stderr.contains("web-blue stays up until")
            && early
                .stderr
                .contains("(or any `apply`) after that time scales it down"),
        "{}",
        early.all()
    );
    assert_eq!(h.replicas("web-blue").await, Some(2));
    tokio::time::sleep_until(due).await;
    let status = h.command("status", "prod", &[]).await;
    assert!(
        status
            .stdout
            .contains("previous slot scaled down is due since"),
        "{}",
        status.stdout
    );
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("scaled web-blue to 0 (its scale-down delay ended at"),
        "{}",
        run.all()
    );
    assert_eq!(h.replicas("web-blue").await, Some(0));
    assert!(
        h.apply("prod", &[])
            .await
            .stdout
            .contains("already up to date")
    );
}
