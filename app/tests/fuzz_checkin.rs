//! Property test: whatever a client sends to `POST /v1/checkin` — arbitrary bytes, arbitrary
//! JSON, well-formed requests with arbitrary values — the answer is a 2xx/4xx with one of the
//! two documented JSON shapes, never a 5xx or a dropped connection. Runs against the embedded
//! store (the decision logic is the same); `PROPTEST_CASES` raises the count (`scripts/soak`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use clap::Parser;
use controltower::config::Settings;
use controltower::startup::Application;
use proptest::prelude::*;
use serde_json::{Value, json};

struct Service {
    runtime: tokio::runtime::Runtime,
    base: String,
    client: reqwest::Client,
}

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let base = runtime.block_on(async {
            let settings = Settings::try_parse_from([
                "controltower",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--mongodb-uri",
                "",
                "--admin-tokens",
                "fuzz=fuzz-token-0123456789abcdef",
            ])
            .unwrap();
            let app = Application::build(settings).await.unwrap();
            let base = format!("http://{}", app.addr());
            tokio::spawn(app.run_until_stopped(std::future::pending()));
            base
        });
        Service {
            runtime,
            base,
            client: reqwest::Client::new(),
        }
    })
}

fn post(body: Vec<u8>, content_type: &str) -> (u16, Value) {
    let s = service();
    s.runtime.block_on(async {
        let response = s
            .client
            .post(format!("{}/v1/checkin", s.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the connection must not be dropped");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("every answer is JSON");
        (status, body)
    })
}

fn assert_documented(status: u16, body: &Value) {
    assert!(status < 500, "server error {status}: {body}");
    match status {
        200 => assert!(body["upload"].is_boolean(), "{body}"),
        400 | 413 | 415 => {
            assert!(
                body["error"]["code"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty()),
                "{body}"
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{body}"
            );
        }
        other => panic!("undocumented status {other}: {body}"),
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_get_a_documented_answer(body in prop::collection::vec(any::<u8>(), 0..300)) {
        let (status, answer) = post(body, "application/json");
        assert_documented(status, &answer);
    }

    #[test]
    fn arbitrary_json_gets_a_documented_answer(value in json_value()) {
        let (status, answer) = post(serde_json::to_vec(&value).unwrap(), "application/json");
        assert_documented(status, &answer);
    }

    #[test]
    fn well_formed_requests_with_arbitrary_values_get_a_documented_answer(
        device_id in "\\PC{0,140}",
        app_version in proptest::option::of("\\PC{0,70}"),
        platform in proptest::option::of("\\PC{0,70}"),
    ) {
        let mut body = json!({"device_id": device_id});
        if let Some(v) = app_version { body["app_version"] = json!(v); }
        if let Some(p) = platform { body["platform"] = json!(p); }
        let (status, answer) = post(serde_json::to_vec(&body).unwrap(), "application/json");
        assert_documented(status, &answer);
        let valid_id = !device_id.is_empty() && device_id.len() <= 128
            && device_id.chars().all(|c| c.is_ascii_alphanumeric() || ".:_-".contains(c));
        if !valid_id {
            prop_assert_eq!(answer["error"]["code"].as_str(), Some("invalid_device_id"));
        }
    }
}
