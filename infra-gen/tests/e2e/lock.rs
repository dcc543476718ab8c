//! The deploy lock: a run that loses it stops before its next write, leaves the traffic where
//! it is, and names who holds the lock now.

use std::time::{Duration, Instant};

use crate::support::harness::Harness;

#[tokio::test]
async fn a_deploy_whose_lock_is_taken_over_stops_before_its_next_write_and_names_the_holder() {
    let h = Harness::start().await;
    let steps = "    replicas: 2\n    rollout: {strategy: blue-green, steps: [50, 100], stepPauseSeconds: 60}\n";
    h.write_env("prod", &h.web(&h.images.v1, steps)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, steps)).await;
    // A 4 s lock is renewed every second, so a takeover is noticed within a second.
    let child = h.spawn_apply("prod", &[], &[("INFRA_GEN_LOCK_SECONDS", "4")]);
    h.until("50% of the traffic on green", 240, || async {
        h.weights("web").await == Some((50, 50))
    })
    .await;
    let taken = Instant::now();
    h.hold_lease("https://gitlab.test/e2e/-/jobs/77", 0).await;
    let run = Harness::finish(child).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        taken.elapsed() < Duration::from_secs(30),
        "stopped at once, not after the 60 s pause"
    );
    assert!(
        run.stderr.contains("the deploy lock of namespace")
            && run
                .stderr
                .contains("was taken over by https://gitlab.test/e2e/-/jobs/77"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr.contains(
            "Traffic was left where it is: ALB 50% on blue, 50% on green, Service web selects blue"
        ),
        "{}",
        run.all()
    );
    assert_eq!(
        h.weights("web").await,
        Some((50, 50)),
        "no write after the takeover"
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    let lease = h
        .get("Lease", "infra-gen-deploy")
        .await
        .expect("the new holder's lease");
    assert_eq!(
        lease["spec"]["holderIdentity"], "https://gitlab.test/e2e/-/jobs/77",
        "the stopped run does not delete the other run's lock"
    );
}
