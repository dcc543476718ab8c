//! Resilience against an unreliable API server. These need the in-repo double (fault
//! injection, expiring tokens, its change log), so they do not run against a real cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of the support code
mod support;

use std::time::Duration;

use serde_json::Value as Json;
use support::apiserver::Options;
use support::harness::Harness;

const BLUE_GREEN: &str = "    replicas: 2\n    rollout: {strategy: blue-green}\n";

#[tokio::test]
async fn server_errors_and_conflicts_are_retried() {
    let h = Harness::double_only(Options::default()).await;
    h.write_env("prod", &h.web(&h.images.v1, BLUE_GREEN)).await;
    let double = h.double();
    double.fail("PATCH", "/deployments/web-blue", 500, 2);
    double.fail("PATCH", "/services/web", 409, 1);
    double.fail("GET", "/ingresses/web", 503, 2);
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(double.faults_used(), "the faults were not hit");
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
}

#[tokio::test]
async fn dropped_watches_are_re_established_while_waiting() {
    let h = Harness::double_only(Options {
        ready_after: Duration::from_secs(3),
        drop_watches_after: Some(Duration::from_millis(300)),
        token_ttl: None,
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
        drop_watches_after: None,
        token_ttl: Some(Duration::from_secs(3)),
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

/// (blue, green) weights in an Ingress object.
fn weights(ingress: &Json) -> (u64, u64) {
    let action = ingress
        .pointer("/metadata/annotations/alb.ingress.kubernetes.io~1actions.web")
        .and_then(Json::as_str)
        .and_then(|a| serde_json::from_str::<Json>(a).ok())
        .unwrap_or_default();
    let groups = action
        .pointer("/forwardConfig/targetGroups")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let weight = |slot: &str| {
        groups
            .iter()
            .find(|g| g["serviceName"] == format!("web-{slot}"))
            .and_then(|g| g["weight"].as_u64())
            .unwrap_or(0)
    };
    (weight("blue"), weight("green"))
}

fn is_complete(deployment: &Json) -> bool {
    let int = |p: &str| deployment.pointer(p).and_then(Json::as_i64).unwrap_or(0);
    int("/spec/replicas") > 0 && int("/status/availableReplicas") == int("/spec/replicas")
}

#[tokio::test]
async fn killed_at_any_step_the_next_apply_converges_and_traffic_only_reaches_ready_slots() {
    let h = Harness::double_only(Options {
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
    let double = h.double().clone();
    for kill_after in 1..=9usize {
        let image = &images[kill_after % 3];
        h.write_env("prod", &h.web(image, steps)).await;
        let before = double.requests().iter().filter(|r| r.is_write()).count();
        let kubeconfig = h.kubeconfig.to_string_lossy().to_string();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_infra-gen"))
            .args([
                "--root",
                h.root().to_str().unwrap(),
                "apply",
                "--env",
                "prod",
                "--kubeconfig",
                &kubeconfig,
            ])
            .env("CI_REGISTRY_USER", "u")
            .env("CI_REGISTRY_PASSWORD", "p")
            .env("E2E_DB_URI", "mongodb://db")
            .env("CI_JOB_URL", "https://gitlab.test/e2e/-/jobs/1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let writes = double.requests().iter().filter(|r| r.is_write()).count() - before;
            if writes >= kill_after {
                child.start_kill().unwrap();
                break;
            }
            if child.try_wait().unwrap().is_some() || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = child.wait().await;
        // The same CI job runs again and finishes the deploy.
        let run = h.apply("prod", &[]).await;
        assert!(
            run.ok,
            "rerun after a kill at write {kill_after} failed: {}",
            run.all()
        );
        let live = h.live_slot("web").await.unwrap();
        assert_eq!(
            h.image(&format!("web-{live}")).await.as_deref(),
            Some(image.as_str()),
            "after a kill at write {kill_after}"
        );
        let (blue, green) = h.weights("web").await.unwrap();
        assert_eq!(if live == "blue" { blue } else { green }, 100);
    }
    // Over the whole history: whenever a slot had ALB weight, its Deployment was complete.
    let mut deployments: std::collections::HashMap<String, Json> = Default::default();
    for (rv, kind, name, object) in double.changes() {
        match kind.as_str() {
            "Deployment" => {
                deployments.insert(name, object);
            }
            "Ingress" => {
                let (blue, green) = weights(&object);
                for (slot, weight) in [("blue", blue), ("green", green)] {
                    if weight > 0 {
                        let deployment = deployments
                            .get(&format!("web-{slot}"))
                            .cloned()
                            .unwrap_or_default();
                        assert!(
                            is_complete(&deployment),
                            "at resourceVersion {rv} {slot} had {weight}% of the traffic but was not ready: {deployment}"
                        );
                    }
                }
            }
            _ => {}
        }
    }
}
