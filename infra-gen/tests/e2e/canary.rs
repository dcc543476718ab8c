//! Grey release on the ALB by request header: `apply` stops at the canary (the header rule
//! before the rule everyone reaches), `promote` moves everyone and removes it, `abort` and
//! `rollback` give it up, `finalize` leaves it alone, a newer apply replaces it. Everything is
//! read through the Kubernetes API, so these run unchanged against a real cluster.

use serde_json::Value as Json;

use crate::support::harness::Harness;

const CANARY: &str = "    replicas: 2\n    rollout: {strategy: blue-green, scaleDownDelaySeconds: 600, canary: {header: Version, values: [\"1.4.2\", \"1.5.*\"]}}\n";

/// The paths of the Ingress `web`: (backend Service, path, pathType), in order.
async fn paths(h: &Harness) -> Vec<(String, String, String)> {
    let ingress = h.get("Ingress", "web").await.expect("the Ingress");
    ingress["spec"]["rules"][0]["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let text = |ptr: &str| {
                p.pointer(ptr)
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            (
                text("/backend/service/name"),
                text("/path"),
                text("/pathType"),
            )
        })
        .collect()
}

/// The Ingress annotations of the grey release that are there.
async fn canary_annotations(h: &Harness) -> Vec<String> {
    let ingress = h.get("Ingress", "web").await.expect("the Ingress");
    ingress["metadata"]["annotations"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.ends_with(".web-canary"))
        .cloned()
        .collect()
}

/// v1 live on blue, then v2 applied: the canary on green.
async fn in_canary() -> Harness {
    let h = Harness::start().await;
    h.write_env("prod", &h.web(&h.images.v1, CANARY)).await;
    let first = h.apply("prod", &[]).await;
    assert!(first.ok, "{}", first.all());
    h.write_env("prod", &h.web(&h.images.v2, CANARY)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(
            "web: canary — requests with Version: 1.4.2 | 1.5.* go to web-green (the new version), every other request stays on web-blue"
        ) && run.stderr.contains("`infra-gen promote --env …` moves everyone"),
        "{}",
        run.all()
    );
    h
}

fn kubernetes_validate() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("KUBERNETES_VALIDATE") {
        return path.into();
    }
    let venv =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/kubernetes-validate");
    assert!(
        venv.exists(),
        "kubernetes-validate not found: run ./scripts/test (it installs it into .venv), or set KUBERNETES_VALIDATE"
    );
    venv
}

#[tokio::test]
async fn apply_stops_at_the_canary_with_the_header_rule_first() {
    let h = in_canary().await;
    assert_eq!(
        paths(&h).await,
        [
            ("web-canary".to_owned(), "/".to_owned(), "Prefix".to_owned()),
            ("web".to_owned(), "/".to_owned(), "Prefix".to_owned()),
        ],
        "the header path comes first, with the same host, path and pathType"
    );
    let ingress = h.get("Ingress", "web").await.unwrap();
    let annotation = |key: &str| -> Json {
        serde_json::from_str(
            ingress["metadata"]["annotations"][key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key}")),
        )
        .unwrap()
    };
    assert_eq!(
        annotation("alb.ingress.kubernetes.io/conditions.web-canary"),
        serde_json::json!([{"field": "http-header", "httpHeaderConfig": {"httpHeaderName": "Version", "values": ["1.4.2", "1.5.*"]}}])
    );
    assert_eq!(
        annotation("alb.ingress.kubernetes.io/actions.web-canary")["forwardConfig"]["targetGroups"],
        serde_json::json!([{"serviceName": "web-green", "servicePort": "http", "weight": 100}])
    );
    assert_eq!(
        h.weights("web").await,
        Some((100, 0)),
        "everyone else on blue"
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_eq!(
        h.image("web-green").await.as_deref(),
        Some(h.images.v2.as_str())
    );

    let releases = h.releases("web").await;
    assert_eq!(releases[0]["action"], "canary");
    assert_eq!(releases[0]["slot"], "green");
    assert_eq!(releases[1]["action"], "deploy");
    assert_eq!(releases[1]["slot"], "blue");

    let status = h.command("status", "prod", &[]).await;
    assert!(status.ok, "{}", status.all());
    assert!(
        status
            .stdout
            .contains("canary: requests with Version: 1.4.2 | 1.5.* go to green (revision"),
        "{}",
        status.stdout
    );

    // The Ingress as applied is valid for the API (kubernetes-validate --strict).
    let mut applied = ingress.clone();
    applied.as_object_mut().unwrap().remove("status");
    if let Some(meta) = applied["metadata"].as_object_mut() {
        for key in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            meta.remove(key);
        }
    }
    let file = h.root().join("ingress-in-canary.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&applied).unwrap()).unwrap();
    let out = std::process::Command::new(kubernetes_validate())
        .args(["--strict", "--quiet", "-k", "1.33"])
        .arg(&file)
        .output()
        .expect("run kubernetes-validate");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && !said.contains("WARN"), "{said}");
}

#[tokio::test]
async fn a_second_apply_of_the_same_revision_in_canary_writes_nothing() {
    let h = in_canary().await;
    let before = h.versions().await;
    let again = h.apply("prod", &[]).await;
    assert!(again.ok, "{}", again.all());
    assert!(
        again.all().contains("already up to date")
            && again
                .stderr
                .contains("web: the canary runs (Version: 1.4.2 | 1.5.* go to green)"),
        "{}",
        again.all()
    );
    assert_eq!(h.versions().await, before, "an object changed");
}

#[tokio::test]
async fn promote_moves_everyone_and_removes_the_header_rule() {
    let h = in_canary().await;
    let run = h.command("promote", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("switched web from blue to green"),
        "{}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((0, 100)));
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
    assert_eq!(
        paths(&h).await,
        [("web".to_owned(), "/".to_owned(), "Prefix".to_owned())]
    );
    assert!(
        canary_annotations(&h).await.is_empty(),
        "{:?}",
        canary_annotations(&h).await
    );
    let releases = h.releases("web").await;
    assert_eq!(releases[0]["action"], "deploy");
    assert_eq!(releases[0]["slot"], "green");
    assert_eq!(
        h.replicas("web-blue").await,
        Some(2),
        "blue stays for an instant rollback"
    );

    // Promoting again (a retried job) changes nothing.
    let before = h.versions().await;
    let again = h.command("promote", "prod", &[]).await;
    assert!(again.ok, "{}", again.all());
    assert!(
        again.stderr.contains("nothing to promote"),
        "{}",
        again.all()
    );
    let after: Vec<_> = h
        .versions()
        .await
        .into_iter()
        .filter(|(k, _)| !k.starts_with("Lease/"))
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(k, _)| !k.starts_with("Lease/"))
        .collect();
    assert_eq!(after, before);
}

#[tokio::test]
async fn promote_by_steps_keeps_the_header_rule_until_the_last_step() {
    let h = Harness::start().await;
    let steps = CANARY.replace(
        "scaleDownDelaySeconds: 600,",
        "scaleDownDelaySeconds: 600, steps: [50, 100], stepPauseSeconds: 1,",
    );
    h.write_env("prod", &h.web(&h.images.v1, &steps)).await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env("prod", &h.web(&h.images.v2, &steps)).await;
    assert!(h.apply("prod", &[]).await.ok);
    let mut child = {
        let kubeconfig = h.kubeconfig.to_string_lossy().to_string();
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_infra-gen"));
        c.arg("--root")
            .arg(h.root())
            .args([
                "promote",
                "--env",
                "prod",
                "--kubeconfig",
                &kubeconfig,
                "--any-cluster",
                "--no-verify-lb",
            ])
            .env_remove("KUBECONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        c.spawn().unwrap()
    };
    // Half-way: half of everyone on green, and the header requests still all on green.
    h.until("the 50% step", 60, || async {
        h.weights("web").await == Some((50, 50))
    })
    .await;
    assert_eq!(paths(&h).await[0].0, "web-canary");
    let out = child.wait().await.unwrap();
    assert!(out.success());
    assert_eq!(h.weights("web").await, Some((0, 100)));
    assert!(canary_annotations(&h).await.is_empty());
    let _ = child.kill().await;
}

#[tokio::test]
async fn abort_removes_the_header_rule_and_scales_the_canary_down() {
    let h = in_canary().await;
    let run = h.command("abort", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("aborted the canary: scaled web-green to 0; every request stays on web-blue"),
        "{}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(
        paths(&h).await,
        [("web".to_owned(), "/".to_owned(), "Prefix".to_owned())]
    );
    assert!(canary_annotations(&h).await.is_empty());
    assert_eq!(h.replicas("web-green").await, Some(0));
    assert_eq!(h.replicas("web-blue").await, Some(2));
    assert_eq!(h.releases("web").await[0]["action"], "abort");

    let again = h.command("abort", "prod", &[]).await;
    assert!(again.ok, "{}", again.all());
    assert!(
        again.stderr.contains("already scaled down"),
        "{}",
        again.all()
    );
}

#[tokio::test]
async fn rollback_during_the_canary_gives_it_up() {
    let h = in_canary().await;
    let live_revision = h.releases("web").await[1]["revision"]
        .as_str()
        .unwrap()
        .to_owned();
    let refused = h
        .command("rollback", "prod", &["--revision", &live_revision])
        .await;
    assert!(!refused.ok, "{}", refused.all());
    assert!(
        refused.stderr.contains("runs on top of revision")
            && refused.stderr.contains("`infra-gen abort`"),
        "{}",
        refused.all()
    );
    assert_eq!(paths(&h).await.len(), 2, "nothing changed");

    let run = h
        .command("rollback", "prod", &["--revision", &h.revision()])
        .await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("a canary runs: rolling it back gives it up"),
        "{}",
        run.all()
    );
    assert_eq!(paths(&h).await.len(), 1);
    assert!(canary_annotations(&h).await.is_empty());
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(h.replicas("web-green").await, Some(0));
}

#[tokio::test]
async fn finalize_leaves_a_canary_alone_and_a_newer_apply_replaces_it() {
    let h = in_canary().await;
    let finalize = h.command("finalize", "prod", &["--now"]).await;
    assert!(finalize.ok, "{}", finalize.all());
    assert!(
        finalize
            .stderr
            .contains("a canary runs in web-green (Version: 1.4.2 | 1.5.*)"),
        "{}",
        finalize.all()
    );
    assert_eq!(h.replicas("web-green").await, Some(2));
    assert_eq!(paths(&h).await.len(), 2);

    h.write_env("prod", &h.web(&h.images.v3, CANARY)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let removed = run
        .stderr
        .find("removed the header rule (Version: 1.4.2 | 1.5.*): every request goes to blue again")
        .unwrap_or_else(|| panic!("{}", run.all()));
    let started = run
        .stderr
        .find("started web-green")
        .unwrap_or_else(|| panic!("{}", run.all()));
    assert!(
        removed < started,
        "the rule went before green changed: {}",
        run.all()
    );
    assert_eq!(
        h.image("web-green").await.as_deref(),
        Some(h.images.v3.as_str())
    );
    assert_eq!(paths(&h).await[0].0, "web-canary");
    assert_eq!(h.weights("web").await, Some((100, 0)));
    let violations = h.traffic_violations("web");
    assert!(violations.is_empty(), "{violations:#?}");
}
