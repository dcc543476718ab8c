//! Stateful game servers: one StatefulSet per version, versions side by side, new
//! connections on the newest, old pods never restarted, retire and rollback. Pod identity is
//! checked by UID, as an operator would with `kubectl get pods -o wide`; nothing here reads
//! the double's internals, so every test runs unchanged against a real cluster.

use serde_json::Value as Json;

use crate::support::harness::Harness;

const TWO: &str = "    replicas: 2\n    tcp: {}\n";

fn text<'a>(object: &'a Json, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_default()
}

/// Deploys `image` and asserts success.
async fn release(h: &Harness, image: &str, extra: &str) -> String {
    h.write_env("prod", &h.stateful(image, extra)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    run.stderr
}

#[tokio::test]
async fn first_deploy_starts_a_versioned_statefulset_with_stable_ids() {
    let h = Harness::start().await;
    let v1 = Harness::version_of(&h.images.v1);
    let out = release(&h, &h.images.v1, TWO).await;
    assert!(
        out.contains(&format!("connector: new connections go to {v1}")),
        "{out}"
    );

    let name = format!("connector-{v1}");
    let set = h.get("StatefulSet", &name).await.expect("the StatefulSet");
    assert_eq!(text(&set, "/spec/podManagementPolicy"), "Parallel");
    assert_eq!(text(&set, "/spec/updateStrategy/type"), "OnDelete");
    assert_eq!(text(&set, "/spec/serviceName"), name);
    assert_eq!(set["spec"]["replicas"], 2);
    let env = &set["spec"]["template"]["spec"]["containers"][0]["env"];
    let var = |name: &str| {
        env.as_array()
            .into_iter()
            .flatten()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {env}"))
    };
    assert_eq!(
        var("SERVER_ID")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name",
        "{env}"
    );
    assert_eq!(var("VERSION")["value"], v1.as_str(), "{env}");
    assert!(
        h.get("StatefulSet", "connector").await.is_none(),
        "the tree's StatefulSet is a template, not applied"
    );

    let headless = h.get("Service", &name).await.expect("the headless Service");
    assert_eq!(text(&headless, "/spec/clusterIP"), "None");
    assert_eq!(h.live_version("connector").await, Some(v1.clone()));
    assert!(h.get("PodDisruptionBudget", "connector").await.is_some());

    let pods = h.version_pods("connector", &v1).await;
    assert_eq!(
        pods.keys().cloned().collect::<Vec<_>>(),
        vec![format!("{name}-0"), format!("{name}-1")],
        "stable, ordinal pod names"
    );

    let releases = h.releases("connector").await;
    assert_eq!(releases.len(), 1);
    assert_eq!(releases[0]["slot"], v1.as_str());
    assert_eq!(releases[0]["image"], h.images.v1.as_str());

    // A second apply of the same tree changes nothing.
    let before = h.version_pods("connector", &v1).await;
    let again = h.apply("prod", &[]).await;
    assert!(again.ok, "{}", again.all());
    assert!(
        again.all().contains("already up to date"),
        "{}",
        again.all()
    );
    assert_eq!(h.version_pods("connector", &v1).await, before);
}

#[tokio::test]
async fn a_new_version_runs_beside_the_old_one_which_keeps_its_pods() {
    let h = Harness::start().await;
    let (v1, v2) = (
        Harness::version_of(&h.images.v1),
        Harness::version_of(&h.images.v2),
    );
    release(&h, &h.images.v1, TWO).await;
    let old_pods = h.version_pods("connector", &v1).await;
    assert_eq!(old_pods.len(), 2);

    let out = release(&h, &h.images.v2, TWO).await;
    assert!(
        out.contains(&format!(
            "connector: new connections go to {v2} now; {v1} keeps its players until it is retired"
        )),
        "{out}"
    );
    assert_eq!(
        h.version_pods("connector", &v1).await,
        old_pods,
        "the old version's pods were restarted"
    );
    assert_eq!(h.version_pods("connector", &v2).await.len(), 2);
    assert_eq!(h.live_version("connector").await, Some(v2.clone()));
    for version in [&v1, &v2] {
        assert!(
            h.get("StatefulSet", &format!("connector-{version}"))
                .await
                .is_some()
        );
        assert!(
            h.get("Service", &format!("connector-{version}"))
                .await
                .is_some()
        );
    }

    let status = h.command("status", "prod", &[]).await;
    assert!(status.ok, "{}", status.all());
    let line = |v: &str| {
        status
            .stdout
            .lines()
            .find(|l| l.contains(&format!("connector-{v} ")))
            .unwrap_or_else(|| panic!("no line for {v}: {}", status.stdout))
            .to_owned()
    };
    assert!(line(&v2).contains("2/2 ready"), "{}", status.stdout);
    assert!(
        line(&v2).contains("* ") && line(&v2).contains("takes new connections"),
        "{}",
        status.stdout
    );
    assert!(
        line(&v1).contains("keeps its players until `infra-gen retire`"),
        "{}",
        status.stdout
    );

    let releases = h.releases("connector").await;
    assert_eq!(releases[0]["slot"], v2.as_str());
    assert_eq!(releases[1]["slot"], v1.as_str());
}

#[tokio::test]
async fn rollback_points_new_connections_back_at_the_running_old_version() {
    let h = Harness::start().await;
    let (v1, v2) = (
        Harness::version_of(&h.images.v1),
        Harness::version_of(&h.images.v2),
    );
    release(&h, &h.images.v1, TWO).await;
    release(&h, &h.images.v2, TWO).await;
    let pods = (
        h.version_pods("connector", &v1).await,
        h.version_pods("connector", &v2).await,
    );

    let run = h.command("rollback", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.live_version("connector").await, Some(v1.clone()));
    assert_eq!(
        (
            h.version_pods("connector", &v1).await,
            h.version_pods("connector", &v2).await
        ),
        pods,
        "a rollback to a running version restarts nothing"
    );
    let releases = h.releases("connector").await;
    assert_eq!(releases[0]["action"], "rollback");
    assert_eq!(releases[0]["slot"], v1.as_str());
}

#[tokio::test]
async fn rollback_starts_a_retired_version_again_from_the_history() {
    let h = Harness::start().await;
    let (v1, v2) = (
        Harness::version_of(&h.images.v1),
        Harness::version_of(&h.images.v2),
    );
    release(&h, &h.images.v1, TWO).await;
    release(&h, &h.images.v2, TWO).await;
    let retire = h
        .command(
            "retire",
            "prod",
            &["--workload", "connector", "--version", &v1],
        )
        .await;
    assert!(retire.ok, "{}", retire.all());
    assert!(
        h.get("StatefulSet", &format!("connector-{v1}"))
            .await
            .is_none()
    );

    let run = h.command("rollback", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains(&format!("started connector-{v1} again (it was retired)")),
        "{}",
        run.all()
    );
    assert_eq!(h.live_version("connector").await, Some(v1.clone()));
    let set = h
        .get("StatefulSet", &format!("connector-{v1}"))
        .await
        .unwrap();
    assert_eq!(
        text(&set, "/spec/template/spec/containers/0/image"),
        h.images.v1
    );
    assert_eq!(h.version_pods("connector", &v1).await.len(), 2);
    assert_eq!(
        h.version_pods("connector", &v2).await.len(),
        2,
        "the version rolled back from keeps its players"
    );
}

#[tokio::test]
async fn retire_refuses_the_live_version_and_removes_an_old_one() {
    let h = Harness::start().await;
    let (v1, v2) = (
        Harness::version_of(&h.images.v1),
        Harness::version_of(&h.images.v2),
    );
    release(&h, &h.images.v1, TWO).await;
    release(&h, &h.images.v2, TWO).await;
    let live_pods = h.version_pods("connector", &v2).await;

    let refused = h
        .command(
            "retire",
            "prod",
            &["--workload", "connector", "--version", &v2],
        )
        .await;
    assert!(!refused.ok, "{}", refused.all());
    assert!(
        refused.stderr.contains(&format!(
            "connector-{v2} takes the new connections, so it cannot be retired"
        )),
        "{}",
        refused.all()
    );
    assert!(
        h.get("StatefulSet", &format!("connector-{v2}"))
            .await
            .is_some()
    );

    let unknown = h
        .command("retire", "prod", &["--workload", "lobby", "--version", &v1])
        .await;
    assert!(!unknown.ok);
    assert!(
        unknown
            .stderr
            .contains(r#"has no stateful workload "lobby" (stateful workloads: connector)"#),
        "{}",
        unknown.all()
    );

    let run = h
        .command(
            "retire",
            "prod",
            &["--workload", "connector", "--version", &v1],
        )
        .await;
    assert!(run.ok, "{}", run.all());
    assert!(
        h.get("StatefulSet", &format!("connector-{v1}"))
            .await
            .is_none()
    );
    assert!(h.get("Service", &format!("connector-{v1}")).await.is_none());
    h.until("the old version's pods to stop", 60, || async {
        h.version_pods("connector", &v1).await.is_empty()
    })
    .await;
    assert_eq!(h.version_pods("connector", &v2).await, live_pods);
    assert_eq!(h.live_version("connector").await, Some(v2.clone()));

    // The next apply does not bring it back, nor prune what runs.
    let again = h.apply("prod", &[]).await;
    assert!(again.ok, "{}", again.all());
    assert!(
        h.get("StatefulSet", &format!("connector-{v1}"))
            .await
            .is_none()
    );
    assert_eq!(h.version_pods("connector", &v2).await, live_pods);
}

#[tokio::test]
async fn a_version_that_never_gets_ready_is_given_up_and_connections_stay() {
    let h = Harness::start().await;
    let v1 = Harness::version_of(&h.images.v1);
    let bad = Harness::version_of(&h.images.never_ready);
    release(&h, &h.images.v1, TWO).await;
    let pods = h.version_pods("connector", &v1).await;

    h.write_env("prod", &h.stateful(&h.images.never_ready, TWO))
        .await;
    let timeout = if h.double.is_some() { "3s" } else { "60s" };
    let run = h.apply("prod", &["--timeout", timeout]).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "connector: the new version did not become ready, so traffic stays on version {v1} (connector-{v1})"
        )),
        "{}",
        run.all()
    );
    assert_eq!(h.live_version("connector").await, Some(v1.clone()));
    assert_eq!(h.version_pods("connector", &v1).await, pods);
    assert!(
        run.stderr.contains(&format!(
            "removed connector-{bad} (it never took connections)"
        )),
        "{}",
        run.all()
    );
    assert!(
        h.get("StatefulSet", &format!("connector-{bad}"))
            .await
            .is_none(),
        "a version that never went live is in no selector or action: removed"
    );
    assert_eq!(h.releases("connector").await.len(), 1, "nothing recorded");
}

#[tokio::test]
async fn a_template_change_keeps_running_pods_and_scaling_needs_no_new_version() {
    let h = Harness::start().await;
    let v1 = Harness::version_of(&h.images.v1);
    release(&h, &h.images.v1, TWO).await;
    let pods = h.version_pods("connector", &v1).await;

    // Same version, another environment variable: the running servers keep the old template.
    let changed = format!("{TWO}    env: {{MAP: forest}}\n");
    h.write_env_file("prod", &h.stateful(&h.images.v1, &changed), "");
    let plan = h.run(&["plan", "--env", "prod"], &[]).await;
    assert!(plan.ok, "{}", plan.all());
    assert!(
        plan.stdout.contains(&format!(
            "one-time change: connector keeps version {v1} but changes its pod template: the running pod(s) of connector-{v1} keep the old one (updateStrategy OnDelete)"
        )),
        "{}",
        plan.all()
    );
    h.write_env("prod", &h.stateful(&h.images.v1, &changed))
        .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "connector-{v1}: its pod template changed, but its 2 running pod(s) keep the old one (updateStrategy OnDelete)"
        )) && run.stderr.contains("release a new version"),
        "{}",
        run.all()
    );
    assert_eq!(h.version_pods("connector", &v1).await, pods);
    let set = h
        .get("StatefulSet", &format!("connector-{v1}"))
        .await
        .unwrap();
    assert!(set["spec"]["template"].to_string().contains("forest"));

    // Three replicas: one more server of the same version; the two running ones stay.
    let three = changed.replace("replicas: 2", "replicas: 3");
    let said = release(&h, &h.images.v1, &three).await;
    assert!(
        said.contains(&format!("connector-{v1}: 2 → 3 replica(s)")),
        "{said}"
    );
    let now = h.version_pods("connector", &v1).await;
    assert_eq!(now.len(), 3, "{now:?}");
    for (name, uid) in &pods {
        assert_eq!(now.get(name), Some(uid), "{name} was restarted");
    }
    assert_eq!(h.live_version("connector").await, Some(v1.clone()));

    // A later commit that leaves the workload as it is (here it only adds a comment): the
    // deploy log says so, not "updated".
    h.write_env(
        "prod",
        &format!("{}# another commit\n", h.stateful(&h.images.v1, &three)),
    )
    .await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains(&format!("connector-{v1} already runs this version"))
            && !run.stderr.contains("updated"),
        "{}",
        run.all()
    );
    assert_eq!(h.version_pods("connector", &v1).await.len(), 3);
}

#[tokio::test]
async fn finalize_retires_old_versions_after_retire_after_seconds() {
    let h = Harness::start().await;
    let (v1, v2) = (
        Harness::version_of(&h.images.v1),
        Harness::version_of(&h.images.v2),
    );
    // Long enough that the first finalize comes before it on a loaded machine.
    let extra =
        "    replicas: 1\n    tcp: {deregistrationDelaySeconds: 0}\n    retireAfterSeconds: 10\n";
    release(&h, &h.images.v1, extra).await;
    release(&h, &h.images.v2, extra).await;

    let early = h.command("finalize", "prod", &[]).await;
    assert!(early.ok, "{}", early.all());
    assert!(
        early
            .stderr
            .contains(&format!("connector-{v1} keeps its players until")),
        "{}",
        early.all()
    );
    assert!(
        h.get("StatefulSet", &format!("connector-{v1}"))
            .await
            .is_some()
    );

    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let due = h.command("finalize", "prod", &[]).await;
    assert!(due.ok, "{}", due.all());
    assert!(
        due.stderr.contains(&format!("retired connector-{v1}")),
        "{}",
        due.all()
    );
    assert!(
        h.get("StatefulSet", &format!("connector-{v1}"))
            .await
            .is_none()
    );
    assert!(
        h.get("StatefulSet", &format!("connector-{v2}"))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_workload_that_leaves_the_file_keeps_its_servers_until_they_are_retired() {
    let h = Harness::start().await;
    let (v1, v2) = (
        Harness::version_of(&h.images.v1),
        Harness::version_of(&h.images.v2),
    );
    release(&h, &h.images.v1, TWO).await;
    release(&h, &h.images.v2, TWO).await;
    let players = h.version_pods("connector", &v1).await;

    h.write_env("prod", &h.web(&h.images.v1, "")).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.all().contains(&format!(
            "kept every object of stateful workload connector: it left the tree, but connector-{v1}, connector-{v2} still run(s)"
        )),
        "{}",
        run.all()
    );
    assert_eq!(h.version_pods("connector", &v1).await, players);
    assert!(
        h.get("Service", "connector").await.is_some(),
        "its NLB stays"
    );

    for version in [&v1, &v2] {
        let retire = h
            .command(
                "retire",
                "prod",
                &["--workload", "connector", "--version", version],
            )
            .await;
        assert!(retire.ok, "{}", retire.all());
    }
    assert!(h.list("StatefulSet").await.is_empty());
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        h.get("Service", "connector").await.is_none(),
        "pruned once no version runs: {}",
        run.all()
    );
    assert!(h.get("PodDisruptionBudget", "connector").await.is_none());
}
