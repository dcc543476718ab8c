//! The API-server double refuses what kube-apiserver refuses, with the same status code and
//! a message in the same words, so the end-to-end suite cannot pass on the double with a
//! request a real cluster would reject. Each rule has a test that the double rejects it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of the support code
mod support;

use serde_json::{Value as Json, json};
use support::apiserver::{ApiServer, Options};
use support::harness::Harness;

struct Client {
    http: reqwest::Client,
    url: String,
}

struct Answer {
    code: u16,
    body: Json,
}

impl Answer {
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }
}

impl Client {
    async fn start() -> (ApiServer, Client) {
        let double = ApiServer::start(Options::default()).await;
        let client = Client {
            http: reqwest::Client::new(),
            url: double.url.clone(),
        };
        let ns = client
            .send(
                "POST",
                "/api/v1/namespaces",
                "",
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t"}})
                    .to_string(),
            )
            .await;
        assert_eq!(ns.code, 201, "{}", ns.body);
        (double, client)
    }

    async fn send(&self, method: &str, path: &str, content_type: &str, body: &str) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let content_type = if content_type.is_empty() {
            "application/json"
        } else {
            content_type
        };
        let response = self
            .http
            .request(method, format!("{}{path}", self.url))
            .header("content-type", content_type)
            .header("user-agent", "tests/1.0")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let code = response.status().as_u16();
        let body = response.json().await.unwrap_or(Json::Null);
        Answer { code, body }
    }

    async fn create(&self, path: &str, object: &Json) -> Answer {
        self.send("POST", path, "", &object.to_string()).await
    }

    async fn apply(&self, path: &str, manager: &str, force: bool, object: &Json) -> Answer {
        let query = format!("?fieldManager={manager}&fieldValidation=Strict&force={force}");
        self.send(
            "PATCH",
            &format!("{path}{query}"),
            "application/apply-patch+yaml",
            &object.to_string(),
        )
        .await
    }
}

fn deployment(name: &str, app: &str) -> Json {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "t"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}},
        },
    })
}

fn lease(time: &str) -> Json {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l", "namespace": "t"},
        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 60, "acquireTime": time, "renewTime": time},
    })
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/t/leases";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/t/deployments";

#[tokio::test]
async fn micro_times_need_exactly_six_fractional_digits() {
    let (_d, c) = Client::start().await;
    let trimmed = c.create(LEASES, &lease("2026-12-01T07:49:16.02346Z")).await;
    assert_eq!(trimmed.code, 400);
    assert_eq!(
        trimmed.message(),
        "Lease in version \"v1\" cannot be handled as a Lease: parsing time \"2026-12-01T07:49:16.02346Z\" as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse \".02346Z\" as \".000000\""
    );
    let nanos = c
        .apply(
            &format!("{LEASES}/l"),
            "m",
            true,
            &lease("2026-12-01T07:49:16.023460123Z"),
        )
        .await;
    assert_eq!(
        nanos.code, 500,
        "an apply fails while building its typed patch: {}",
        nanos.body
    );
    let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "t"},
        "involvedObject": {"kind": "Pod", "name": "p"}, "eventTime": "2026-12-01T07:49:16Z"});
    assert_eq!(
        c.create("/api/v1/namespaces/t/events", &event).await.code,
        400
    );
    let exact = c
        .create(LEASES, &lease("2026-12-01T07:49:16.023460Z"))
        .await;
    assert_eq!(exact.code, 201, "{}", exact.body);
    let bad_time = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "t", "creationTimestamp": "yesterday"}});
    assert_eq!(
        c.create("/api/v1/namespaces/t/configmaps", &bad_time)
            .await
            .code,
        400
    );
}

#[tokio::test]
async fn names_must_be_what_their_kind_requires() {
    let (_d, c) = Client::start().await;
    let bad = c.create(DEPLOYMENTS, &deployment("Web_1", "w")).await;
    assert_eq!(bad.code, 422);
    assert!(
        bad.message().starts_with("Deployment.apps \"Web_1\" is invalid: metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"),
        "{}",
        bad.message()
    );
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1web", "namespace": "t"}, "spec": {"ports": [{"port": 80}]}});
    let bad = c.create("/api/v1/namespaces/t/services", &service).await;
    assert_eq!(bad.code, 422);
    assert!(bad.message().contains("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character"), "{}", bad.message());
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}});
    let bad = c.create("/api/v1/namespaces", &namespace).await;
    assert_eq!(bad.code, 422);
    assert!(
        bad.message().contains("a lowercase RFC 1123 label"),
        "{}",
        bad.message()
    );
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c".repeat(53), "namespace": "t"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}}});
    let bad = c
        .create("/apis/batch/v1/namespaces/t/cronjobs", &cron)
        .await;
    assert_eq!(bad.code, 422);
    assert!(
        bad.message().contains("must be no more than 52 characters"),
        "{}",
        bad.message()
    );
    assert_eq!(
        c.create(DEPLOYMENTS, &deployment("web-1.blue", "w"))
            .await
            .code,
        201
    );
}

#[tokio::test]
async fn label_keys_values_and_annotation_size_are_checked() {
    let (_d, c) = Client::start().await;
    let with = |labels: Json, annotations: Json| {
        let mut d = deployment("d", "w");
        d["metadata"]["labels"] = labels;
        d["metadata"]["annotations"] = annotations;
        d
    };
    let bad = c
        .create(DEPLOYMENTS, &with(json!({"bad key": "v"}), json!({})))
        .await;
    assert_eq!(bad.code, 422);
    assert!(bad.message().contains("metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters"), "{}", bad.message());
    let bad = c
        .create(
            DEPLOYMENTS,
            &with(json!({"app": "v".repeat(64)}), json!({})),
        )
        .await;
    assert_eq!(bad.code, 422);
    assert!(
        bad.message().contains("must be no more than 63 characters"),
        "{}",
        bad.message()
    );
    let bad = c
        .create(DEPLOYMENTS, &with(json!({"Example.com/x": "v"}), json!({})))
        .await;
    assert_eq!(bad.code, 422);
    assert!(
        bad.message()
            .contains("prefix part a lowercase RFC 1123 subdomain"),
        "{}",
        bad.message()
    );
    let bad = c
        .create(
            DEPLOYMENTS,
            &with(json!({}), json!({"big": "x".repeat(256 * 1024)})),
        )
        .await;
    assert_eq!(bad.code, 422);
    assert!(
        bad.message()
            .contains("metadata.annotations: Too long: must have at most 262144 bytes"),
        "{}",
        bad.message()
    );
    let ok = c
        .create(
            DEPLOYMENTS,
            &with(
                json!({"app.kubernetes.io/name": "web", "v": ""}),
                json!({"a": "x".repeat(1000)}),
            ),
        )
        .await;
    assert_eq!(ok.code, 201, "{}", ok.body);
}

#[tokio::test]
async fn immutable_fields_cannot_change() {
    let (_d, c) = Client::start().await;
    assert_eq!(
        c.apply(
            &format!("{DEPLOYMENTS}/d"),
            "m",
            true,
            &deployment("d", "a")
        )
        .await
        .code,
        201
    );
    let moved = c
        .apply(
            &format!("{DEPLOYMENTS}/d"),
            "m",
            true,
            &deployment("d", "b"),
        )
        .await;
    assert_eq!(moved.code, 422);
    assert!(
        moved.message().contains("spec.selector: Invalid value")
            && moved.message().contains("field is immutable"),
        "{}",
        moved.message()
    );

    let services = "/api/v1/namespaces/t/services";
    let service = |ip: Option<&str>| {
        let mut s = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "t"}, "spec": {"ports": [{"port": 80}], "selector": {"a": "b"}}});
        if let Some(ip) = ip {
            s["spec"]["clusterIP"] = json!(ip);
        }
        s
    };
    let created = c
        .apply(&format!("{services}/s"), "m", true, &service(None))
        .await;
    assert_eq!(created.code, 201);
    assert!(
        created.body["spec"]["clusterIP"].is_string(),
        "allocated: {}",
        created.body
    );
    let again = c
        .apply(&format!("{services}/s"), "m", true, &service(None))
        .await;
    assert_eq!(again.code, 200, "leaving clusterIP out keeps it");
    let changed = c
        .apply(&format!("{services}/s"), "m", true, &service(Some("None")))
        .await;
    assert_eq!(changed.code, 422);
    assert!(
        changed
            .message()
            .contains("spec.clusterIP: Invalid value: \"None\": field is immutable"),
        "{}",
        changed.message()
    );

    let jobs = "/apis/batch/v1/namespaces/t/jobs";
    let job = |image: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "t"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": image}]}}}})
    };
    assert_eq!(
        c.apply(&format!("{jobs}/j"), "m", true, &job("a"))
            .await
            .code,
        201
    );
    let changed = c.apply(&format!("{jobs}/j"), "m", true, &job("b")).await;
    assert_eq!(changed.code, 422);
    assert!(
        changed.message().contains("spec.template: Invalid value"),
        "{}",
        changed.message()
    );

    let sets = "/apis/apps/v1/namespaces/t/statefulsets";
    let set = |service: &str, replicas: i64| {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "s", "namespace": "t"},
        "spec": {"serviceName": service, "replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    };
    assert_eq!(
        c.apply(&format!("{sets}/s"), "m", true, &set("one", 1))
            .await
            .code,
        201
    );
    assert_eq!(
        c.apply(&format!("{sets}/s"), "m", true, &set("one", 3))
            .await
            .code,
        200,
        "replicas may change"
    );
    let changed = c
        .apply(&format!("{sets}/s"), "m", true, &set("two", 3))
        .await;
    assert_eq!(changed.code, 422);
    assert!(changed.message().contains("updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"), "{}", changed.message());
}

#[tokio::test]
async fn a_stale_resource_version_is_a_conflict() {
    let (_d, c) = Client::start().await;
    let created = c
        .create(LEASES, &lease("2026-12-01T07:49:16.000000Z"))
        .await;
    let rv = created.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut update = lease("2026-12-01T07:49:17.000000Z");
    update["metadata"]["resourceVersion"] = json!(rv);
    assert_eq!(
        c.send("PUT", &format!("{LEASES}/l"), "", &update.to_string())
            .await
            .code,
        200
    );
    let stale = c
        .send("PUT", &format!("{LEASES}/l"), "", &update.to_string())
        .await;
    assert_eq!(stale.code, 409);
    assert!(
        stale.message().contains("the object has been modified"),
        "{}",
        stale.message()
    );
    let patched = c
        .send(
            "PATCH",
            &format!("{LEASES}/l"),
            "application/merge-patch+json",
            &json!({"metadata": {"resourceVersion": rv}}).to_string(),
        )
        .await;
    assert_eq!(
        patched.code, 409,
        "a patch with a stale resourceVersion too"
    );
}

#[tokio::test]
async fn server_side_apply_conflicts_between_managers_unless_forced() {
    let (_d, c) = Client::start().await;
    let path = format!("{DEPLOYMENTS}/d");
    assert_eq!(
        c.apply(&path, "alice", false, &deployment("d", "a"))
            .await
            .code,
        201
    );
    let mut three = deployment("d", "a");
    three["spec"]["replicas"] = json!(3);
    let conflict = c.apply(&path, "bob", false, &three).await;
    assert_eq!(conflict.code, 409);
    assert_eq!(
        conflict.message(),
        "Apply failed with 1 conflict: conflict with \"alice\" using apps/v1: .spec.replicas"
    );
    let same = c.apply(&path, "bob", false, &deployment("d", "a")).await;
    assert_eq!(same.code, 200, "the same values are shared, not a conflict");
    let forced = c.apply(&path, "bob", true, &three).await;
    assert_eq!(forced.code, 200);
    assert_eq!(forced.body["spec"]["replicas"], 3);
    let managers: Vec<(String, String)> = forced.body["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap().to_owned(),
                m["operation"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        managers,
        [
            ("alice".to_owned(), "Apply".to_owned()),
            ("bob".to_owned(), "Apply".to_owned())
        ]
    );
    let bob = forced.body["metadata"]["managedFields"][1].clone();
    assert!(
        bob["fieldsV1"]["f:spec"]["f:replicas"].is_object(),
        "bob owns replicas now: {bob}"
    );
    let alice = forced.body["metadata"]["managedFields"][0].clone();
    assert!(
        alice["fieldsV1"]["f:spec"]["f:replicas"].is_null(),
        "alice lost it: {alice}"
    );
    assert!(
        alice["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && !t.contains('.'))
    );
}

#[tokio::test]
async fn unknown_and_duplicate_fields_are_refused_when_strict_and_dropped_otherwise() {
    let (_d, c) = Client::start().await;
    let mut typo = deployment("d", "a");
    typo["spec"]["replicaz"] = json!(2);
    let strict = c
        .send(
            "POST",
            &format!("{DEPLOYMENTS}?fieldValidation=Strict"),
            "",
            &typo.to_string(),
        )
        .await;
    assert_eq!(strict.code, 400);
    assert_eq!(
        strict.message(),
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.replicaz\""
    );
    let applied = c.apply(&format!("{DEPLOYMENTS}/d"), "m", true, &typo).await;
    assert_eq!(applied.code, 400);
    assert!(
        applied
            .message()
            .contains(".spec.replicaz: field not declared in schema"),
        "{}",
        applied.message()
    );
    let lenient = c.send("POST", DEPLOYMENTS, "", &typo.to_string()).await;
    assert_eq!(lenient.code, 201, "{}", lenient.body);
    assert!(
        lenient.body["spec"].get("replicaz").is_none(),
        "dropped, as a real server prunes it"
    );
    let duplicate = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "t"}, "data": {"a": "1", "a": "2"}}"#;
    let refused = c
        .send(
            "POST",
            "/api/v1/namespaces/t/configmaps?fieldValidation=Strict",
            "",
            duplicate,
        )
        .await;
    assert_eq!(refused.code, 400);
    assert!(
        refused.message().contains("duplicate field \"data.a\""),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn infra_gen_asks_for_strict_validation_on_every_write() {
    let h = Harness::double_only(Options::default()).await;
    h.write_env(
        "prod",
        &h.web(&h.images.v1, "    replicas: 2\n    rollout: {strategy: blue-green, steps: [50, 100], stepPauseSeconds: 1}\n"),
    )
    .await;
    assert!(h.apply("prod", &[]).await.ok);
    h.write_env(
        "prod",
        &h.web(
            &h.images.v2,
            "    replicas: 2\n    rollout: {strategy: blue-green}\n",
        ),
    )
    .await;
    assert!(h.apply("prod", &[]).await.ok);
    assert!(h.command("finalize", "prod", &["--now"]).await.ok);
    let writes: Vec<_> = h
        .double()
        .requests()
        .into_iter()
        .filter(|r| r.is_write() && r.method != "DELETE")
        .collect();
    assert!(writes.len() > 10, "{writes:#?}");
    let lax: Vec<_> = writes
        .iter()
        .filter(|r| !r.query.contains("fieldValidation=Strict"))
        .collect();
    assert!(
        lax.is_empty(),
        "writes without fieldValidation=Strict: {lax:#?}"
    );
}

#[tokio::test]
async fn the_traffic_check_of_the_suite_can_fail() {
    // The invariant the fault tests assert must notice traffic on a slot that is not ready.
    let h = Harness::double_only(Options::default()).await;
    let c = Client {
        http: reqwest::Client::new(),
        url: h.double().url.clone(),
    };
    let ns = h.namespace();
    assert_eq!(
        c.create(
            "/api/v1/namespaces",
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        )
        .await
        .code,
        201
    );
    let mut green = deployment("web-green", "w");
    green["metadata"]["namespace"] = json!(ns);
    green["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.test/web:never-ready");
    assert_eq!(
        c.create(
            &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            &green
        )
        .await
        .code,
        201
    );
    let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": ns, "annotations": {
        "alb.ingress.kubernetes.io/actions.web": infra_gen::render::context::forward_action("web", 50, 50)}}});
    assert_eq!(
        c.create(
            &format!("/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses"),
            &ingress
        )
        .await
        .code,
        201
    );
    let violations = h.traffic_violations("web");
    assert!(
        violations
            .iter()
            .any(|v| v.contains("green got traffic (weight 50")),
        "{violations:#?}"
    );
}

/// The objects of a defaulting check, as infra-gen writes them (no defaults filled in).
fn defaulting_objects(ns: &str) -> Vec<(&'static str, &'static str, Json)> {
    let mut deployment = deployment("web", "w");
    deployment["metadata"]["namespace"] = json!(ns);
    deployment["spec"]
        .as_object_mut()
        .unwrap()
        .remove("replicas");
    deployment["spec"]["template"]["spec"]["containers"][0]["env"] = json!([
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]);
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": {"app": "w"}, "ports": [{"name": "http", "port": 80}]}});
    vec![
        ("apps/v1", "deployments", deployment),
        ("v1", "services", service),
    ]
}

#[tokio::test]
async fn defaults_are_what_a_real_api_server_writes() {
    // What a real kube-apiserver fills in, checked on the double and — with a real cluster in
    // INFRA_GEN_E2E_KUBECONFIG — on that cluster by the same assertions.
    let mut targets = vec![Harness::double_only(Options::default()).await];
    if std::env::var_os("INFRA_GEN_E2E_KUBECONFIG").is_some() {
        targets.push(Harness::start().await);
    }
    for h in &targets {
        let client = h.client().await;
        let ns = h.namespace();
        let namespaces: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(
            client.clone(),
            &kube::api::ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk("", "v1", "Namespace"),
                "namespaces",
            ),
        );
        let namespace: kube::api::DynamicObject = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap();
        namespaces
            .patch(
                &ns,
                &kube::api::PatchParams::apply("defaults-test"),
                &kube::api::Patch::Apply(&namespace),
            )
            .await
            .unwrap();
        let mut read = Vec::new();
        for (api_version, plural, object) in defaulting_objects(&ns) {
            let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
            let kind = object["kind"].as_str().unwrap().to_owned();
            let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
                client.clone(),
                &ns,
                &kube::api::ApiResource::from_gvk_with_plural(
                    &kube::api::GroupVersionKind::gvk(group, version, &kind),
                    plural,
                ),
            );
            let name = object["metadata"]["name"].as_str().unwrap().to_owned();
            let typed: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
            let stored = api
                .patch(
                    &name,
                    &kube::api::PatchParams::apply("defaults-test"),
                    &kube::api::Patch::Apply(&typed),
                )
                .await
                .unwrap();
            read.push(serde_json::to_value(stored).unwrap());
        }
        let target = if h.double.is_some() {
            "the double"
        } else {
            "the real server"
        };
        let (deployment, service) = (&read[0], &read[1]);
        assert_eq!(deployment["spec"]["replicas"], 1, "{target}");
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"],
            json!({"apiVersion": "v1", "fieldPath": "metadata.name"}),
            "{target}"
        );
        assert_eq!(service["spec"]["type"], "ClusterIP", "{target}");
        assert_eq!(service["spec"]["ports"][0]["protocol"], "TCP", "{target}");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 80, "{target}");
        assert!(
            service["spec"]["clusterIP"]
                .as_str()
                .is_some_and(|ip| ip.starts_with("10.96.")),
            "{target}: {service}"
        );
    }
}
