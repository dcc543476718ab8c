//! Scheduled capacity and `infra-gen scale`: windows raise the HPA in the cluster, deploys keep
//! what is in force, an operator's raise ends at its time, a missing metrics API is reported.

use serde_json::json;
use std::time::Duration;

use crate::support::harness::Harness;

/// A blue-green web workload autoscaled 1..4 with the given windows (YAML list items).
fn autoscaled(h: &Harness, image: &str, windows: &str) -> String {
    let schedule = if windows.is_empty() {
        String::new()
    } else {
        format!("\n      schedule:\n{windows}")
    };
    h.web(
        image,
        &format!(
            "    autoscaling:\n      min: 1\n      max: 4{schedule}\n    rollout: {{strategy: blue-green, scaleDownDelaySeconds: 600}}\n"
        ),
    )
}

/// A daily window `rush` in UTC starting `from_now` from now (negative: already started),
/// lasting `duration`, with min 3.
fn daily_window(from_now: jiff::SignedDuration, duration: &str, lead: &str) -> String {
    let start = jiff::Timestamp::now()
        .checked_add(from_now)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::UTC);
    format!(
        "        - {{name: rush, cron: \"{} {} * * *\", timeZone: UTC, duration: {duration}, lead: {lead}, min: 3}}\n",
        start.minute(),
        start.hour()
    )
}

fn min_max(hpa: &serde_json::Value) -> (i64, i64) {
    (
        hpa["spec"]["minReplicas"].as_i64().unwrap(),
        hpa["spec"]["maxReplicas"].as_i64().unwrap(),
    )
}

async fn hpa_bounds(h: &Harness) -> (i64, i64) {
    min_max(&h.get("HorizontalPodAutoscaler", "web").await.unwrap())
}

/// Where an HPA controller runs (not on the double), the live slot follows a raised minimum.
async fn live_slot_follows(h: &Harness, deployment: &str, replicas: i64) {
    if h.double.is_none() {
        h.until(
            &format!("{deployment} scaled to {replicas} by the HPA"),
            60,
            || async { h.replicas(deployment).await == Some(replicas) },
        )
        .await;
    }
}

#[tokio::test]
async fn a_window_in_force_sizes_the_first_deploy_and_a_cutover_keeps_it() {
    let h = Harness::start().await;
    // Started two minutes ago, for an hour.
    let window = daily_window(jiff::SignedDuration::from_mins(-2), "1h", "1m");
    h.write_env("prod", &autoscaled(&h, &h.images.v1, &window))
        .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("web: HPA bounds 3..4 in force: window rush until"),
        "{}",
        run.all()
    );
    assert_eq!(hpa_bounds(&h).await, (3, 4));
    assert_eq!(h.replicas("web-blue").await, Some(3));

    // A release inside the window: the new slot starts with the window's minimum and the
    // re-pointed HPA keeps it.
    h.write_env("prod", &autoscaled(&h, &h.images.v2, &window))
        .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
    assert!(h.replicas("web-green").await.unwrap() >= 3);
    let hpa = h.get("HorizontalPodAutoscaler", "web").await.unwrap();
    assert_eq!(min_max(&hpa), (3, 4));
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "web-green");

    let status = h.command("status", "prod", &[]).await;
    assert!(status.ok, "{}", status.all());
    assert!(
        status.stdout.contains("min 3 in force: window rush until"),
        "{}",
        status.all()
    );
}

#[tokio::test]
async fn the_window_cronjobs_raise_the_live_slot_and_lower_it_again() {
    let h = Harness::start().await;
    // Three hours from now: not in force during the test.
    let window = daily_window(jiff::SignedDuration::from_hours(3), "1h", "5m");
    h.write_env("prod", &autoscaled(&h, &h.images.v1, &window))
        .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(hpa_bounds(&h).await, (1, 4));
    let up = h.get("CronJob", "web-capacity-rush-up").await.unwrap();
    assert_eq!(up["spec"]["timeZone"], "UTC");

    // The window opens: its CronJob (with its own service account and Role) raises the HPA,
    // and the HPA the live slot.
    assert!(h.run_cronjob("web-capacity-rush-up").await);
    assert_eq!(hpa_bounds(&h).await, (3, 4));
    live_slot_follows(&h, "web-blue", 3).await;

    // It closes: back to the file's bounds (the HPA's scale-down policy takes the pods away).
    assert!(h.run_cronjob("web-capacity-rush-down").await);
    assert_eq!(hpa_bounds(&h).await, (1, 4));
}

#[tokio::test]
async fn scale_until_is_kept_by_deploys_and_ended_in_the_cluster_at_its_time() {
    let h = Harness::start().await;
    // A window open now that closes in 30 minutes: its closing CronJob would lower the HPA
    // while the operator's raise holds.
    let window = daily_window(jiff::SignedDuration::from_mins(-30), "1h", "1m");
    h.write_env("prod", &autoscaled(&h, &h.images.v1, &window))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    assert_eq!(hpa_bounds(&h).await, (3, 4));

    let run = h
        .command("scale", "prod", &["--min", "4", "--until", "2h"])
        .await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stdout.contains("web: HPA bounds 4..4 until"),
        "{}",
        run.all()
    );
    assert_eq!(hpa_bounds(&h).await, (4, 4));
    live_slot_follows(&h, "web-blue", 4).await;
    let down = h.get("CronJob", "web-capacity-rush-down").await.unwrap();
    assert_eq!(
        down["spec"]["suspend"], true,
        "the window's end would undo it"
    );
    let status = h.command("status", "prod", &[]).await;
    assert!(
        status.stdout.contains("scale --min 4 until"),
        "{}",
        status.all()
    );

    // A release meanwhile keeps the raise.
    h.write_env("prod", &autoscaled(&h, &h.images.v2, &window))
        .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(h.replicas("web-green").await.unwrap() >= 4, "{}", run.all());
    assert_eq!(hpa_bounds(&h).await, (4, 4));
    let down = h.get("CronJob", "web-capacity-rush-down").await.unwrap();
    assert_eq!(
        down["spec"]["suspend"], true,
        "the deploy left it suspended"
    );

    // Its time comes: the expiry CronJob sets the bounds in force then (the window closed by
    // then), resumes the window's CronJobs, and removes itself and the record.
    assert!(h.run_cronjob("web-capacity-expire").await);
    assert_eq!(hpa_bounds(&h).await, (1, 4));
    let down = h.get("CronJob", "web-capacity-rush-down").await.unwrap();
    assert_eq!(down["spec"]["suspend"], false);
    h.until("the override's objects to go", 30, || async {
        h.get("CronJob", "web-capacity-expire").await.is_none()
            && h.get("ConfigMap", "web-capacity-override").await.is_none()
    })
    .await;
}

#[tokio::test]
async fn a_raise_past_its_time_is_ended_by_the_next_deploy_and_clear_ends_one_early() {
    let h = Harness::start().await;
    h.write_env("prod", &autoscaled(&h, &h.images.v1, "")).await;
    assert!(h.apply("prod", &[]).await.ok);
    let run = h
        .command("scale", "prod", &["--min", "3", "--until", "3s"])
        .await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(hpa_bounds(&h).await, (3, 4));
    // The expiry CronJob fires on the minute at or after the time: on a real cluster, when
    // that minute falls within the next seconds, it ends the raise before the deploy can.
    // Held, as a cluster whose CronJob controller or pods lag would hold it, it leaves the
    // deploy's own check to end it.
    h.merge_patch(
        "CronJob",
        "web-capacity-expire",
        json!({"spec": {"suspend": true}}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // A deploy after the time ends it, whether or not the CronJob has fired.
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(run.stderr.contains("ended at"), "{}", run.all());
    assert_eq!(hpa_bounds(&h).await, (1, 4));
    assert!(h.get("ConfigMap", "web-capacity-override").await.is_none());
    assert!(h.get("CronJob", "web-capacity-expire").await.is_none());

    let run = h
        .command("scale", "prod", &["--min", "2", "--until", "1h"])
        .await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(hpa_bounds(&h).await, (2, 4));
    let run = h.command("scale", "prod", &["--clear"]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stdout.contains("raise ended; HPA bounds 1..4"),
        "{}",
        run.all()
    );
    assert_eq!(hpa_bounds(&h).await, (1, 4));
    assert!(h.get("ConfigMap", "web-capacity-override").await.is_none());

    // Bad input is refused before anything is written.
    let run = h
        .command("scale", "prod", &["--min", "2", "--until", "yesterday"])
        .await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("\"yesterday\" is neither a time"),
        "{}",
        run.all()
    );
}

#[tokio::test]
async fn a_missing_metrics_api_is_reported_with_the_fix() {
    let h = Harness::start().await;
    h.write_env("prod", &autoscaled(&h, &h.images.v1, "")).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(
            "warning: the metrics API (v1beta1.metrics.k8s.io) is not registered: HPAs cannot read CPU or memory and never scale"
        ),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains("--set containerPort=4443"),
        "{}",
        run.all()
    );
    let status = h.command("status", "prod", &[]).await;
    assert!(
        status
            .stdout
            .contains("! the metrics API (v1beta1.metrics.k8s.io) is not registered"),
        "{}",
        status.all()
    );
}

#[tokio::test]
async fn a_one_off_window_that_ended_leaves_no_cronjob_in_the_cluster() {
    let h = Harness::start().await;
    let windows = concat!(
        "        - {name: launch, at: \"2020-01-01T10:00\", until: \"2020-01-01T12:00\", timeZone: UTC, min: 3}\n",
        "        - {name: weekly, cron: \"0 11 * * wed\", timeZone: Asia/Tokyo, duration: 2h, min: 2}\n",
    );
    h.write_env("prod", &autoscaled(&h, &h.images.v1, windows))
        .await;
    // The tree has them (render is the same whenever it runs) …
    let tree = h.root().join("manifests/prod");
    assert!(tree.join("cronjob-web-capacity-launch-up.yaml").exists());
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    // … the cluster does not: next year they would fire again on that date.
    assert!(h.get("CronJob", "web-capacity-launch-up").await.is_none());
    assert!(h.get("CronJob", "web-capacity-launch-down").await.is_none());
    assert!(h.get("CronJob", "web-capacity-weekly-up").await.is_some());
}
