//! Resilience against an unreliable API server and against runs killed at any write. Failed
//! requests are injected by the double, or by the harness's proxy in front of a real API
//! server; writes are counted the same way, so the kill matrices run on both. Dropped watches
//! and expiring tokens need the double.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of the support code
mod support;

use std::time::Duration;

use support::apiserver::Options;
use support::harness::Harness;

const BLUE_GREEN: &str = "    replicas: 2\n    rollout: {strategy: blue-green}\n";

#[tokio::test]
async fn server_errors_and_conflicts_are_retried() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    h.fail("PATCH", "/deployments/web-blue", 500, 2);
    h.fail("PATCH", "/services/web", 409, 1);
    h.fail("GET", "/ingresses/web", 503, 2);
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(h.faults_used(), "the faults were not hit");
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
}

#[tokio::test]
async fn dropped_watches_are_re_established_while_waiting() {
    let h = Harness::double_only(Options {
        ready_after: Duration::from_secs(3),
        drop_watches_after: Some(Duration::from_millis(300)),
        ..Options::default()
    })
    .await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let watches = h.double().changes().len();
    assert!(watches > 0);
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
}

fn token_plugin(dir: &std::path::Path, ttl_seconds: u64) -> std::path::PathBuf {
    let path = dir.join("token-plugin.sh");
    let script = format!(
        "#!/bin/sh\nnow=$(date +%s)\nexp=$(date -u -d \"@$((now + {ttl_seconds}))\" +%Y-%m-%dT%H:%M:%SZ)\nprintf '{{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"test-token-%s\",\"expirationTimestamp\":\"%s\"}}}}' \"$now\" \"$exp\"\n"
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn a_wait_longer_than_a_token_lives_refreshes_the_token() {
    let options = Options {
        ready_after: Duration::from_secs(6),
        token_ttl: Some(Duration::from_secs(3)),
        ..Options::default()
    };
    // With a fixed token the long wait fails with 401: the test can tell.
    let fixed = Harness::double_only(options.clone()).await;
    fixed
        .write_env("prod", &fixed.web(&fixed.images.v1, BLUE_GREEN))
        .await;
    let run = fixed.apply("prod", &[]).await;
    assert!(!run.ok, "a 3 s token cannot last a 6 s wait");
    assert!(
        run.stderr.contains("401") || run.stderr.contains("Unauthorized"),
        "{}",
        run.all()
    );

    // With an exec plugin (what EKS uses: `infra-gen eks token`), kube refreshes it. kube
    // refreshes 60 s before the reported expiry; the plugin reports 62 s, so kube fetches a new
    // token every 2 s while the double accepts each for 3 s — like 15-minute EKS tokens during
    // a wait of more than 15 minutes, compressed.
    let h = Harness::double_only(options).await;
    let plugin = token_plugin(h.root(), 62);
    let kubeconfig = h.double().kubeconfig(h.root(), Some(&plugin));
    assert_eq!(kubeconfig, h.kubeconfig);
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
}

#[tokio::test]
async fn a_lock_that_cannot_be_renewed_until_it_expires_stops_the_deploy() {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.never_ready, BLUE_GREEN))
        .await;
    h.fail("PUT", "/leases/infra-gen-deploy", 500, 10_000);
    let started = std::time::Instant::now();
    let child = h.spawn_apply(
        "prod",
        &["--timeout", "60s"],
        &[("INFRA_GEN_LOCK_SECONDS", "3")],
    );
    let run = Harness::finish(child).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped once the lock expired, not at the 60 s timeout"
    );
    assert!(
        run.stderr.contains(
            "could not be renewed within two thirds of its 3 s lifetime, so this run stopped writing before another may take it over"
        ),
        "{}",
        run.all()
    );
    // Each failed renewal is logged as it happens (warnings are shown by default).
    assert!(
        run.stderr.contains("WARN") && run.stderr.contains("cannot renew the deploy lock"),
        "{}",
        run.all()
    );
    assert_eq!(
        h.weights("web").await,
        Some((100, 0)),
        "traffic never moved"
    );
}

#[tokio::test]
async fn a_holder_whose_renewals_hang_stops_writing_before_another_run_may_take_the_lock() {
    let h = Harness::start().await;
    let steps = "    replicas: 2\n    rollout: {strategy: blue-green, steps: [50, 100], stepPauseSeconds: 10}\n";
    h.write_env("prod", &h.web(&h.images.v1, steps)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, steps)).await;
    let (job1, job2) = (
        "https://gitlab.test/e2e/-/jobs/41",
        "https://gitlab.test/e2e/-/jobs/42",
    );
    let lease = [("INFRA_GEN_LOCK_SECONDS", "6")];
    let first = h.spawn_apply("prod", &[], &[lease[0], ("CI_JOB_URL", job1)]);
    // The first job splits the traffic and pauses 10 s (however long a loaded machine takes
    // to get there) …
    h.until("the 50% step", 180, || async {
        h.weights("web").await == Some((50, 50))
    })
    .await;
    // … and from now on every renewal of it hangs (a connection that stopped answering): it
    // never learns that it failed, while its lease runs out 6 s after the last renewal.
    h.fault(support::apiserver::Fault {
        method: "PUT".into(),
        path_contains: "/leases/infra-gen-deploy".into(),
        agent_contains: job1.into(),
        status: None,
        remaining: 10_000,
    });
    tokio::time::sleep(Duration::from_secs(7)).await;
    let second = h.spawn_apply("prod", &[], &[lease[0], ("CI_JOB_URL", job2)]);
    let (first, second) = (Harness::finish(first).await, Harness::finish(second).await);
    assert!(!first.ok, "{}", first.all());
    assert!(
        first
            .stderr
            .contains("so this run stopped writing before another may take it over"),
        "{}",
        first.all()
    );
    assert!(second.ok, "{}", second.all());
    let writes = |job: &str| -> Vec<std::time::Instant> {
        h.requests()
            .into_iter()
            .filter(|r| r.is_write() && r.user_agent.contains(job))
            .map(|r| r.at)
            .collect()
    };
    let last_of_first = writes(job1).into_iter().max().expect("the first job wrote");
    let first_of_second = writes(job2)
        .into_iter()
        .min()
        .expect("the second job wrote");
    assert!(
        last_of_first + Duration::from_secs(1) <= first_of_second,
        "the first job wrote {:?} after the second began",
        last_of_first.saturating_duration_since(first_of_second)
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
}

/// Writes infra-gen has made so far (seen by the double, or by the harness's proxy in front
/// of a real API server).
fn writes(h: &Harness) -> usize {
    h.write_count()
}

/// Starts a command with `spawn` and kills it once it has made `kill_after` writes (as a
/// cancelled CI job or a lost runner would), then waits until it is gone; a command that
/// finishes first (or hangs for 30 s) is just waited for.
async fn kill_after_writes(
    h: &Harness,
    spawn: impl FnOnce() -> tokio::process::Child,
    kill_after: usize,
) {
    let before = writes(h);
    let mut child = spawn();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if writes(h) - before >= kill_after {
            Harness::kill(&mut child).await;
            break;
        }
        if child.try_wait().unwrap().is_some() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = child.wait().await;
}

/// What runs after a deploy was killed.
#[derive(Debug, Clone, Copy)]
enum After {
    /// The same CI job again.
    SameApply,
    /// A pipeline of a newer commit.
    NewApply,
    /// The delayed finalize job, forced.
    FinalizeNow,
    /// The manual rollback job of the killed deploy's pipeline.
    Rollback,
}

/// Kills a deploy after each of its first writes (as a cancelled CI job or a lost runner
/// would), runs `after`, and checks the result: the run converges, and over the whole change
/// log no slot ever got traffic while not ready, nor lost pods or its template under it.
async fn kill_at_every_write_then(after: After) {
    let h = Harness::start_with(Options {
        ready_after: Duration::from_millis(400),
        ..Options::default()
    })
    .await;
    let steps = "    replicas: 2\n    rollout: {strategy: blue-green, steps: [50, 100], stepPauseSeconds: 1}\n";
    let images = [
        h.images.v1.clone(),
        h.images.v2.clone(),
        h.images.v3.clone(),
    ];
    h.write_env("prod", &h.web(&images[0], steps)).await;
    assert!(h.apply("prod", &[]).await.ok);
    let mut live_image = images[0].clone();
    for kill_after in 1..=10usize {
        let image = images[kill_after % 3].clone();
        let image = if image == live_image {
            images[(kill_after + 1) % 3].clone()
        } else {
            image
        };
        h.write_env("prod", &h.web(&image, steps)).await;
        let candidate = h.revision();
        kill_after_writes(&h, || h.spawn_apply("prod", &[], &[]), kill_after).await;
        let context = format!("after a kill at write {kill_after} then {after:?}");
        // The stable Service moves last: the slot it selects after the kill is the release
        // that went live (the new one only if its cutover had finished).
        let switched = match h.live_slot("web").await {
            Some(slot) => h.image(&format!("web-{slot}")).await,
            None => None,
        };
        let expected = match after {
            After::SameApply => {
                let run = h.apply("prod", &[]).await;
                assert!(run.ok, "{context}: {}", run.all());
                image.clone()
            }
            After::NewApply => {
                let newer = images
                    .iter()
                    .find(|i| **i != image && **i != live_image)
                    .cloned()
                    .unwrap();
                h.write_env("prod", &h.web(&newer, steps)).await;
                let run = h.apply("prod", &[]).await;
                assert!(run.ok, "{context}: {}", run.all());
                newer
            }
            After::FinalizeNow => {
                let run = h.command("finalize", "prod", &["--now"]).await;
                assert!(run.ok, "{context}: {}", run.all());
                let live = h.live_slot("web").await.unwrap();
                let other = if live == "blue" { "green" } else { "blue" };
                assert_eq!(
                    h.replicas(&format!("web-{other}")).await.unwrap_or(0),
                    0,
                    "{context}"
                );
                // An unattended finalize never completes a cutover that was stopped.
                switched.clone().unwrap_or_else(|| live_image.clone())
            }
            After::Rollback => {
                let run = h
                    .command("rollback", "prod", &["--revision", &candidate])
                    .await;
                assert!(run.ok, "{context}: {}", run.all());
                live_image.clone()
            }
        };
        let live = h.live_slot("web").await.unwrap();
        assert_eq!(
            h.image(&format!("web-{live}")).await.as_deref(),
            Some(expected.as_str()),
            "{context}"
        );
        let (blue, green) = h.weights("web").await.unwrap();
        assert_eq!(if live == "blue" { blue } else { green }, 100, "{context}");
        // Whatever the command left, a deploy of the file converges from there.
        let settled = h.apply("prod", &[]).await;
        assert!(settled.ok, "{context}: {}", settled.all());
        let live = h.live_slot("web").await.unwrap();
        live_image = h.image(&format!("web-{live}")).await.unwrap();
    }
    let violations = h.traffic_violations("web");
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn killed_at_any_write_the_same_apply_converges() {
    kill_at_every_write_then(After::SameApply).await;
}

#[tokio::test]
async fn killed_at_any_write_a_newer_revision_converges() {
    kill_at_every_write_then(After::NewApply).await;
}

#[tokio::test]
async fn killed_at_any_write_finalize_never_scales_a_slot_with_traffic() {
    kill_at_every_write_then(After::FinalizeNow).await;
}

#[tokio::test]
async fn killed_at_any_write_rollback_returns_to_what_was_live() {
    kill_at_every_write_then(After::Rollback).await;
}

/// What runs after a stateful release was killed.
#[derive(Debug, Clone, Copy)]
enum AfterStateful {
    /// The same CI job again.
    SameApply,
    /// The manual rollback job of the killed release's pipeline.
    Rollback,
    /// The delayed finalize job (`retireAfterSeconds` has passed for every old version).
    Finalize,
}

/// Kills a release of a new stateful version after each of its first writes, runs `after`,
/// and checks: new connections go where the command says, the servers that took connections
/// before still run (same pod UIDs), and over the whole change log no server with players
/// was restarted or removed and new connections only reached ready versions.
async fn stateful_kill_at_every_write_then(after: AfterStateful) {
    let h = Harness::start_with(Options {
        ready_after: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let file = |version: &str| {
        let image = if version.ends_with(['1', '3', '5', '7', '9']) {
            h.images.v1.clone()
        } else {
            h.images.v2.clone()
        };
        let retire = match after {
            AfterStateful::Finalize => "    retireAfterSeconds: 1\n",
            _ => "",
        };
        h.stateful(
            &image,
            &format!(
                "    replicas: 2\n    version: {version}\n    tcp: {{deregistrationDelaySeconds: 0}}\n{retire}"
            ),
        )
    };
    h.write_env("prod", &file("r0")).await;
    assert!(h.apply("prod", &[]).await.ok);
    for kill_after in 1..=9usize {
        let version = format!("r{kill_after}");
        let live = h.live_version("connector").await.unwrap();
        let players = h.version_pods("connector", &live).await;
        h.write_env("prod", &file(&version)).await;
        let candidate = h.revision();
        kill_after_writes(&h, || h.spawn_apply("prod", &[], &[]), kill_after).await;
        let context = format!("after a kill at write {kill_after} then {after:?}");
        match after {
            AfterStateful::SameApply => {
                let run = h.apply("prod", &[]).await;
                assert!(run.ok, "{context}: {}", run.all());
                assert_eq!(
                    h.live_version("connector").await,
                    Some(version.clone()),
                    "{context}"
                );
            }
            AfterStateful::Rollback => {
                let run = h
                    .command("rollback", "prod", &["--revision", &candidate])
                    .await;
                assert!(run.ok, "{context}: {}", run.all());
                assert_eq!(
                    h.live_version("connector").await,
                    Some(live.clone()),
                    "{context}"
                );
            }
            AfterStateful::Finalize => {
                tokio::time::sleep(Duration::from_millis(1100)).await;
                let run = h.command("finalize", "prod", &[]).await;
                assert!(run.ok, "{context}: {}", run.all());
                let now = h.live_version("connector").await.unwrap();
                assert!(
                    h.get("StatefulSet", &format!("connector-{now}"))
                        .await
                        .is_some(),
                    "{context}: finalize retired the live version"
                );
            }
        }
        // The servers that had players before still run, untouched, unless retired.
        if h.get("StatefulSet", &format!("connector-{live}"))
            .await
            .is_some()
        {
            assert_eq!(
                h.version_pods("connector", &live).await,
                players,
                "{context}"
            );
        }
        // Whatever the command left, a deploy of the file converges, then old versions go.
        let settled = h.apply("prod", &[]).await;
        assert!(settled.ok, "{context}: {}", settled.all());
        assert_eq!(
            h.live_version("connector").await,
            Some(version.clone()),
            "{context}"
        );
        for set in h.list("StatefulSet").await {
            let old = set["metadata"]["labels"]["infra-gen.dev/version"]
                .as_str()
                .unwrap()
                .to_owned();
            if old != version {
                let run = h
                    .command(
                        "retire",
                        "prod",
                        &["--workload", "connector", "--version", &old],
                    )
                    .await;
                assert!(run.ok, "{context}: {}", run.all());
            }
        }
    }
    let violations = h.stateful_violations("connector");
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn stateful_killed_at_any_write_the_same_apply_converges() {
    stateful_kill_at_every_write_then(AfterStateful::SameApply).await;
}

#[tokio::test]
async fn stateful_killed_at_any_write_rollback_returns_to_what_was_live() {
    stateful_kill_at_every_write_then(AfterStateful::Rollback).await;
}

#[tokio::test]
async fn stateful_killed_at_any_write_finalize_never_retires_the_live_version() {
    stateful_kill_at_every_write_then(AfterStateful::Finalize).await;
}

/// Kills `promote` (or `abort`) after each of its first writes, runs it again, and checks:
/// it converges (promote: everyone on the new version; abort: everyone on the old one, the
/// canary slot scaled down), the header rule is gone either way, and over the whole change
/// log no slot got traffic (weights, selector or header rule) while not every replica was
/// available.
async fn canary_kill_at_every_write_of(command: &str) {
    let h = Harness::start_with(Options {
        ready_after: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let extra = "    replicas: 2\n    rollout: {strategy: blue-green, steps: [50, 100], stepPauseSeconds: 1, canary: {header: Version, values: [\"2.0.0\"]}}\n";
    let images = [
        h.images.v1.clone(),
        h.images.v2.clone(),
        h.images.v3.clone(),
    ];
    h.write_env("prod", &h.web(&images[0], extra)).await;
    assert!(h.apply("prod", &[]).await.ok);
    for kill_after in 1..=8usize {
        let live_slot = h.live_slot("web").await.unwrap();
        let live_image = h.image(&format!("web-{live_slot}")).await.unwrap();
        let image = images
            .iter()
            .find(|i| {
                **i != live_image && images.iter().position(|x| x == *i) != Some(kill_after % 3)
            })
            .or_else(|| images.iter().find(|i| **i != live_image))
            .cloned()
            .unwrap();
        h.write_env("prod", &h.web(&image, extra)).await;
        let canary = h.apply("prod", &[]).await;
        assert!(canary.ok, "{}", canary.all());
        kill_after_writes(&h, || h.spawn_command(command, "prod", &[]), kill_after).await;
        let context = format!("after a kill of {command} at write {kill_after}");
        let run = h.command(command, "prod", &[]).await;
        assert!(run.ok, "{context}: {}", run.all());
        let live = h.live_slot("web").await.unwrap();
        let ingress = h.get("Ingress", "web").await.unwrap();
        assert!(
            !ingress.to_string().contains("web-canary"),
            "{context}: the header rule is left: {ingress}"
        );
        let (blue, green) = h.weights("web").await.unwrap();
        assert_eq!(if live == "blue" { blue } else { green }, 100, "{context}");
        match command {
            "promote" => assert_eq!(
                h.image(&format!("web-{live}")).await.as_deref(),
                Some(image.as_str()),
                "{context}"
            ),
            _ => {
                assert_eq!(live, live_slot, "{context}");
                let other = if live == "blue" { "green" } else { "blue" };
                assert_eq!(
                    h.replicas(&format!("web-{other}")).await,
                    Some(0),
                    "{context}"
                );
            }
        }
    }
    let violations = h.traffic_violations("web");
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn promote_killed_at_any_write_converges_when_run_again() {
    canary_kill_at_every_write_of("promote").await;
}

#[tokio::test]
async fn abort_killed_at_any_write_converges_when_run_again() {
    canary_kill_at_every_write_of("abort").await;
}

/// The first apply after an upgrade labels every object of an environment applied before
/// ApplySets; killed at any of its writes, the next apply finishes the migration, and nothing
/// is ever deleted or recreated on the way.
#[tokio::test]
async fn killed_at_any_write_of_the_applyset_migration_the_next_apply_finishes_it() {
    let h = Harness::start_with(Options::default()).await;
    let worker = "  jobs:\n    kind: worker\n    image: registry.test/jobs:v1\n    replicas: 1\n    resources: {cpu: 100m, memory: 128Mi}\n";
    let steps =
        "    replicas: 2\n    rollout: {strategy: blue-green, scaleDownDelaySeconds: 600}\n";
    h.write_env("prod", &format!("{}{worker}", h.web(&h.images.v1, steps)))
        .await;
    assert!(h.apply("prod", &[]).await.ok);
    let uids = |managed: Vec<(String, String, Option<String>)>| {
        managed
            .into_iter()
            .map(|(object, uid, _)| (object, uid))
            .collect::<Vec<_>>()
    };
    let before = uids(h.managed("prod").await);
    for kill_after in [1usize, 2, 3, 5, 8, 13] {
        h.as_before_applysets("prod").await;
        kill_after_writes(&h, || h.spawn_apply("prod", &[], &[]), kill_after).await;
        let context = format!("after a kill at write {kill_after}");
        assert_eq!(
            uids(h.managed("prod").await),
            before,
            "{context}: nothing deleted"
        );
        let run = h.apply("prod", &[]).await;
        assert!(run.ok, "{context}: {}", run.all());
        assert!(!run.stderr.contains("pruning"), "{context}: {}", run.all());
        let managed = h.managed("prod").await;
        assert!(
            managed.iter().all(|(_, _, p)| p.is_some()),
            "{context}: every object labelled: {managed:?}"
        );
        assert_eq!(uids(managed), before, "{context}: nothing recreated");
        assert!(
            h.get("ConfigMap", "infra-gen-applyset").await.is_some(),
            "{context}"
        );
    }
}

/// The images of the pods a `tcp` workload's NLB Service selects at every change of it or
/// of a pod in the log from `since` on: (resourceVersion, images of running selected pods).
fn nlb_exposure(h: &Harness, since: usize) -> Vec<(u64, Vec<String>)> {
    let mut selector = serde_json::Value::Null;
    let mut pods: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    let mut out = Vec::new();
    for (i, (rv, event, kind, name, object)) in h.events().into_iter().enumerate() {
        match kind.as_str() {
            "Service" if name == "game" => selector = object["spec"]["selector"].clone(),
            "Pod" if event == "DELETED" => {
                pods.remove(&name);
            }
            "Pod" => {
                pods.insert(name, object);
            }
            _ => continue,
        }
        if i < since {
            continue;
        }
        let mut images: Vec<String> = pods
            .values()
            .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
            .filter(|p| {
                selector.as_object().is_some_and(|s| {
                    !s.is_empty()
                        && s.iter()
                            .all(|(k, v)| p["metadata"]["labels"].get(k) == Some(v))
                })
            })
            .filter_map(|p| {
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        images.sort();
        images.dedup();
        out.push((rv, images));
    }
    out
}

/// Kills a `tcp` deploy into the slot that still runs the previous version (kept for an
/// instant rollback) after each of its first writes, runs `after`, and checks at every step
/// of the log: the NLB only ever selected pods of the version that was live or the one being
/// released (never the old version in the slot being replaced), and the follow-up converges.
async fn tcp_kill_into_a_running_slot_then(after: After) {
    let h = Harness::start_with(Options {
        ready_after: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let file = |image: &str| {
        h.tcp(
            image,
            "    replicas: 2\n    rollout: {strategy: blue-green, scaleDownDelaySeconds: 600, overlapSeconds: 0}\n",
        )
    };
    let images = [
        h.images.v1.clone(),
        h.images.v2.clone(),
        h.images.v3.clone(),
    ];
    h.write_env("prod", &file(&images[0])).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &file(&images[1])).await;
    assert!(h.apply("prod", &[]).await.ok);
    for kill_after in 1..=8usize {
        let live = h.live_slot("game").await.unwrap();
        let live_image = h.image(&format!("game-{live}")).await.unwrap();
        let other = if live == "blue" { "green" } else { "blue" };
        let kept = h.image(&format!("game-{other}")).await.unwrap_or_default();
        let candidate = images
            .iter()
            .find(|i| **i != live_image && **i != kept)
            .cloned()
            .unwrap();
        let since = h.events().len();
        h.write_env("prod", &file(&candidate)).await;
        let revision = h.revision();
        kill_after_writes(&h, || h.spawn_apply("prod", &[], &[]), kill_after).await;
        let context = format!("after a kill at write {kill_after} then {after:?}");
        let run = match after {
            After::SameApply | After::NewApply => h.apply("prod", &[]).await,
            After::FinalizeNow => h.command("finalize", "prod", &["--now"]).await,
            After::Rollback => {
                h.command("rollback", "prod", &["--revision", &revision])
                    .await
            }
        };
        assert!(run.ok, "{context}: {}", run.all());
        let settled = h.apply("prod", &[]).await;
        assert!(settled.ok, "{context}: {}", settled.all());
        for (rv, selected) in nlb_exposure(&h, since) {
            assert!(
                selected.iter().all(|i| *i == live_image || *i == candidate),
                "{context}: rv {rv}: the NLB selected {selected:?}, but only {live_image} (live) and {candidate} (released) may take new players"
            );
        }
        let now = h.live_slot("game").await.unwrap();
        assert_eq!(
            h.image(&format!("game-{now}")).await.as_deref(),
            Some(candidate.as_str()),
            "{context}"
        );
    }
    let violations = h.traffic_violations("game");
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn tcp_killed_at_any_write_into_a_running_slot_the_same_apply_converges() {
    tcp_kill_into_a_running_slot_then(After::SameApply).await;
}

#[tokio::test]
async fn tcp_killed_at_any_write_into_a_running_slot_finalize_moves_back_first() {
    tcp_kill_into_a_running_slot_then(After::FinalizeNow).await;
}

#[tokio::test]
async fn tcp_killed_at_any_write_into_a_running_slot_rollback_returns_to_what_was_live() {
    tcp_kill_into_a_running_slot_then(After::Rollback).await;
}

/// Kills `rollback` (or `retire`) of a stateful workload after each of its first writes,
/// runs it again, and checks: it converges (rollback: new connections on the version before;
/// retire: the old version gone), the live version's servers were never restarted, and new
/// connections only reached ready versions.
async fn stateful_kill_at_every_write_of(command: &str) {
    let h = Harness::start_with(Options {
        ready_after: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let file = |version: &str| {
        h.stateful(
            &h.images.v1,
            &format!("    replicas: 2\n    version: {version}\n    tcp: {{deregistrationDelaySeconds: 0}}\n"),
        )
    };
    for kill_after in 1..=6usize {
        let (old, new) = (format!("a{kill_after}"), format!("b{kill_after}"));
        for version in [&old, &new] {
            h.write_env("prod", &file(version)).await;
            let run = h.apply("prod", &[]).await;
            assert!(run.ok, "{}", run.all());
        }
        // As the CI jobs run them: the rollback job names the commit it undoes.
        let revision = h.revision();
        let args: Vec<&str> = match command {
            "retire" => vec!["--workload", "connector", "--version", &old],
            _ => vec!["--revision", &revision],
        };
        kill_after_writes(&h, || h.spawn_command(command, "prod", &args), kill_after).await;
        let context = format!("after a kill of {command} at write {kill_after}");
        let run = h.command(command, "prod", &args).await;
        assert!(run.ok, "{context}: {}", run.all());
        match command {
            "retire" => {
                assert_eq!(
                    h.live_version("connector").await,
                    Some(new.clone()),
                    "{context}"
                );
                assert!(
                    h.get("StatefulSet", &format!("connector-{old}"))
                        .await
                        .is_none(),
                    "{context}"
                );
            }
            _ => assert_eq!(
                h.live_version("connector").await,
                Some(old.clone()),
                "{context}"
            ),
        }
        // Leave one version for the next round.
        for set in h.list("StatefulSet").await {
            let version = set["metadata"]["labels"]["infra-gen.dev/version"]
                .as_str()
                .unwrap()
                .to_owned();
            if Some(&version) != h.live_version("connector").await.as_ref() {
                let retire = h
                    .command(
                        "retire",
                        "prod",
                        &["--workload", "connector", "--version", &version],
                    )
                    .await;
                assert!(retire.ok, "{context}: {}", retire.all());
            }
        }
    }
    let violations = h.stateful_violations("connector");
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn stateful_rollback_killed_at_any_write_converges_when_run_again() {
    stateful_kill_at_every_write_of("rollback").await;
}

#[tokio::test]
async fn stateful_retire_killed_at_any_write_converges_when_run_again() {
    stateful_kill_at_every_write_of("retire").await;
}
