//! The Gateway API provider (`traffic.provider: gateway-api`): the same releases as on the ALB
//! — blue-green with steps, header canary, promote, abort, rollback, a cutover killed half-way
//! — moved through the HTTPRoute's weighted backends and header rule, each move checked by the
//! route's status (a Gateway controller stand-in writes it, on the double and on the test
//! control plane, with the CRDs installed there), and a Gateway that refuses the route.

use serde_json::json;

use crate::support::apiserver::Options;
use crate::support::harness::{GATEWAY, Harness};

fn gateway() -> Options {
    Options {
        gateway: true,
        ..Options::default()
    }
}

const STEPS: &str = "    replicas: 2\n    rollout: {strategy: blue-green, steps: [50, 100], stepPauseSeconds: 1, scaleDownDelaySeconds: 600}\n";
const CANARY: &str = "    replicas: 2\n    rollout: {strategy: blue-green, scaleDownDelaySeconds: 600, canary: {header: X-Canary, values: [qa, beta]}}\n";

/// The route's rules: (header matches as `name=value`, backends as (Service, weight)).
async fn rules(h: &Harness) -> Vec<(Vec<String>, Vec<(String, i64)>)> {
    let route = h.get("HTTPRoute", "web").await.expect("the HTTPRoute");
    route["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let headers = r["matches"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|m| m["headers"].as_array().cloned().unwrap_or_default())
                .map(|h| {
                    format!(
                        "{}={}",
                        h["name"].as_str().unwrap(),
                        h["value"].as_str().unwrap()
                    )
                })
                .collect();
            let backends = r["backendRefs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| {
                    (
                        b["name"].as_str().unwrap().to_owned(),
                        b["weight"].as_i64().unwrap_or(1),
                    )
                })
                .collect();
            (headers, backends)
        })
        .collect()
}

fn backends(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(s, w)| ((*s).to_owned(), *w)).collect()
}

/// v1 live on blue through the route.
async fn live_on_blue(extra: &str) -> Harness {
    let h = Harness::start_with(gateway()).await;
    h.write_env("prod", &h.web(&h.images.v1, extra)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    h
}

#[tokio::test]
async fn a_blue_green_release_moves_the_route_weights_step_by_step_each_confirmed_by_the_gateway() {
    let h = live_on_blue(STEPS).await;
    assert!(
        h.get("Ingress", "web").await.is_none(),
        "no ALB Ingress with the Gateway API"
    );
    let route = h.get("HTTPRoute", "web").await.unwrap();
    assert_eq!(route["spec"]["parentRefs"][0]["name"], GATEWAY);
    assert_eq!(route["spec"]["hostnames"], json!(["web.e2e.test"]));
    assert_eq!(
        rules(&h).await,
        [(vec![], backends(&[("web-blue", 100), ("web-green", 0)]))]
    );

    h.write_env("prod", &h.web(&h.images.v2, STEPS)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let confirmations = run.stderr.matches("HTTPRoute web: generation").count();
    assert!(
        confirmations >= 2
            && run
                .stderr
                .contains(&format!("accepted by Gateway {}/{GATEWAY}", h.namespace())),
        "each step is confirmed by the route's status:\n{}",
        run.all()
    );
    assert!(!run.stderr.contains("--no-verify-lb"), "{}", run.all());
    assert!(
        run.stderr
            .contains("web-green: every pod is a ready endpoint (2)"),
        "traffic moves once the slot's pods are endpoints the Gateway sends to:\n{}",
        run.all()
    );
    assert_eq!(
        rules(&h).await,
        [(vec![], backends(&[("web-blue", 0), ("web-green", 100)]))]
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));
    let releases = h.releases("web").await;
    assert_eq!(releases[0]["slot"], "green");
    assert_eq!(releases[0]["lbVerified"], true);
    let status = h.command("status", "prod", &[]).await;
    assert!(
        status.ok && status.stdout.contains("green"),
        "{}",
        status.all()
    );
    let violations = h.traffic_violations("web");
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn a_header_canary_is_a_route_rule_promote_moves_everyone_and_abort_gives_it_up() {
    let h = live_on_blue(CANARY).await;
    h.write_env("prod", &h.web(&h.images.v2, CANARY)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr
            .contains("requests with X-Canary: qa | beta go to web-green"),
        "{}",
        run.all()
    );
    assert_eq!(
        rules(&h).await,
        [
            (
                vec!["X-Canary=qa".to_owned(), "X-Canary=beta".to_owned()],
                backends(&[("web-green", 100)])
            ),
            (vec![], backends(&[("web-blue", 100), ("web-green", 0)])),
        ],
        "the header rule comes first; everyone else stays on blue"
    );
    let route = h.get("HTTPRoute", "web").await.unwrap();
    assert_eq!(
        route["spec"]["rules"][0]["matches"][0]["path"],
        route["spec"]["rules"][1]["matches"][0]["path"],
        "the header rule matches the same path"
    );
    assert_eq!(
        route["spec"]["rules"][0]["matches"][0]["headers"][0]["type"],
        "Exact"
    );

    let promote = h.command("promote", "prod", &[]).await;
    assert!(promote.ok, "{}", promote.all());
    assert_eq!(
        rules(&h).await,
        [(vec![], backends(&[("web-blue", 0), ("web-green", 100)]))]
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("green"));

    // The next version's canary, given up.
    h.write_env("prod", &h.web(&h.images.v3, CANARY)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(rules(&h).await[0].1, backends(&[("web-blue", 100)]));
    let abort = h.command("abort", "prod", &[]).await;
    assert!(abort.ok, "{}", abort.all());
    assert_eq!(
        rules(&h).await,
        [(vec![], backends(&[("web-blue", 0), ("web-green", 100)]))]
    );
    assert_eq!(
        h.image("web-green").await.as_deref(),
        Some(h.images.v2.as_str())
    );
    let violations = h.traffic_violations("web");
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn rollback_and_a_cancelled_cutover_are_moved_back_through_the_route() {
    let slow = STEPS.replace("stepPauseSeconds: 1", "stepPauseSeconds: 60");
    let h = live_on_blue(&slow).await;
    h.write_env("prod", &h.web(&h.images.v2, &slow)).await;
    let mut child = h.spawn_apply("prod", &[], &[]);
    h.until("50/50 on the route", 240, || async {
        h.weights("web").await == Some((50, 50))
    })
    .await;
    Harness::kill(&mut child).await;
    // The unattended finalize of the cancelled pipeline moves everything back.
    let run = h.command("finalize", "prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains("found an interrupted cutover from blue to green (HTTPRoute 50% on blue, 50% on green, Service web selects blue)")
            && run.stderr.contains("moving all traffic back to blue"),
        "{}",
        run.all()
    );
    assert_eq!(h.weights("web").await, Some((100, 0)));

    // A release, then a rollback to the previous one.
    let quick = slow.replace("stepPauseSeconds: 60", "stepPauseSeconds: 1");
    h.write_env("prod", &h.web(&h.images.v3, &quick)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.weights("web").await, Some((0, 100)));
    let rollback = h.command("rollback", "prod", &[]).await;
    assert!(rollback.ok, "{}", rollback.all());
    assert_eq!(h.weights("web").await, Some((100, 0)));
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_eq!(
        h.image("web-blue").await.as_deref(),
        Some(h.images.v1.as_str())
    );
    let violations = h.traffic_violations("web");
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn a_gateway_that_refuses_the_route_stops_the_release_with_traffic_where_it_was() {
    let h = live_on_blue(STEPS).await;
    // The platform team narrows the listener to namespaces labelled for it: this one is not.
    h.put_gateway(
        json!({"from": "Selector", "selector": {"matchLabels": {"gateway-access": "granted"}}}),
    )
    .await;
    h.write_env("prod", &h.web(&h.images.v2, STEPS)).await;
    let run = h.apply("prod", &[]).await;
    assert!(!run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "Gateway {}/{GATEWAY} does not accept HTTPRoute web: NotAllowedByListeners",
            h.namespace()
        )),
        "{}",
        run.all()
    );
    assert!(
        run.stderr
            .contains("the Gateway is not ready for web-green")
            && run.stderr.contains("moving every request back to blue")
            && run
                .stderr
                .contains("every request was moved back to web-blue in the HTTPRoute"),
        "{}",
        run.all()
    );
    assert_eq!(
        h.weights("web").await,
        Some((100, 0)),
        "every request given back to the live slot in the route"
    );
    assert_eq!(h.live_slot("web").await.as_deref(), Some("blue"));
    assert_eq!(
        h.image("web-blue").await.as_deref(),
        Some(h.images.v1.as_str())
    );
    assert_eq!(
        h.releases("web").await.len(),
        1,
        "the refused release never went live"
    );

    // Access granted again: the same commit releases.
    h.put_gateway(json!({"from": "Same"})).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert_eq!(h.weights("web").await, Some((0, 100)));
    let violations = h.traffic_violations("web");
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn a_tcp_workload_gets_the_clusters_own_load_balancer_and_no_nlb_checks() {
    let h = Harness::start_with(gateway()).await;
    let game = "    replicas: 2\n    rollout: {strategy: blue-green, scaleDownDelaySeconds: 600}\n";
    h.write_env("prod", &h.tcp(&h.images.v1, game)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let service = h.get("Service", "game").await.unwrap();
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert!(
        service["spec"].get("loadBalancerClass").is_none(),
        "{service}"
    );
    let annotations = service["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        !annotations.keys().any(|k| k.contains("aws-load-balancer")),
        "{annotations:?}"
    );
    h.write_env("prod", &h.tcp(&h.images.v2, game)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(
            "game: every pod is a ready endpoint (2), which is what the Gateway sends requests to"
        ) && run
            .stderr
            .contains("the LoadBalancer Service selects both slots")
            && !run.stderr.contains("NLB"),
        "{}",
        run.all()
    );
    assert_eq!(h.live_slot("game").await.as_deref(), Some("green"));
}

#[tokio::test]
async fn a_cluster_without_the_gateway_api_is_refused_before_any_write() {
    // The double without the Gateway API's CRDs (the test control plane always has them).
    let mut h = Harness::double_only(Options::default()).await;
    h.gateway = true;
    h.write_env("prod", &h.web(&h.images.v1, STEPS)).await;
    let run = h.apply("prod", &[]).await;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("this cluster serves no HTTPRoutes (gateway.networking.k8s.io/v1): the Gateway API's CRDs are not installed"),
        "{}",
        run.all()
    );
    assert!(
        h.get("Deployment", "web-blue").await.is_none(),
        "nothing written"
    );
}

#[tokio::test]
async fn stateful_game_servers_release_behind_the_clusters_own_load_balancer() {
    let h = Harness::start_with(gateway()).await;
    let (v1, v2) = (
        Harness::version_of(&h.images.v1),
        Harness::version_of(&h.images.v2),
    );
    let two = "    replicas: 2\n    tcp: {}\n";
    h.write_env("prod", &h.stateful(&h.images.v1, two)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    let service = h.get("Service", "connector").await.unwrap();
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert!(
        service["spec"].get("loadBalancerClass").is_none(),
        "{service}"
    );
    let old_pods = h.version_pods("connector", &v1).await;

    h.write_env("prod", &h.stateful(&h.images.v2, two)).await;
    let run = h.apply("prod", &[]).await;
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stderr.contains(&format!(
            "connector: new connections go to {v2} now; {v1} keeps its players until it is retired"
        )),
        "{}",
        run.all()
    );
    assert_eq!(h.live_version("connector").await, Some(v2));
    assert_eq!(
        h.version_pods("connector", &v1).await,
        old_pods,
        "players on the old version keep their servers"
    );
}
