//! Probes, metrics, the OpenAPI document and the embedded docs page.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{Spawn, spawn_app, spawn_with};

#[tokio::test]
async fn probes_report_store_and_snapshot() {
    let app = spawn_app().await;
    let live: Value = app
        .client
        .get(app.url("/healthz/live"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live["status"], "live");
    let ready = app
        .client
        .get(app.url("/healthz/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["store"], "mongodb");
    assert!(ready["snapshot_age_seconds"].as_f64().is_some());
    app.stop().await;
}

#[tokio::test]
async fn metrics_count_checkins_and_expose_the_snapshot() {
    let app = spawn_app().await;
    app.checkin_ok("metrics-dev").await;
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("controltower_checkins_total{")
                && l.contains("outcome=\"no_upload\"")
                && l.contains("registered=\"false\"")),
        "{text}"
    );
    assert!(text.contains("controltower_snapshot_age_seconds"), "{text}");
    assert!(text.contains("controltower_http_requests_total{"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for (path, method) in [
        ("/v1/checkin", "post"),
        ("/v1/uploads/{ticket}/complete", "post"),
        ("/v1/devices", "get"),
        ("/v1/devices/batch", "post"),
        ("/v1/devices/{device_id}", "put"),
        ("/v1/devices/{device_id}", "get"),
        ("/v1/devices/{device_id}", "delete"),
        ("/v1/devices/{device_id}/revoke", "post"),
        ("/v1/audit", "get"),
        ("/healthz/live", "get"),
        ("/healthz/ready", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from /openapi.json"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    app.stop().await;
}

#[tokio::test]
async fn docs_page_and_its_assets_are_served_from_the_binary() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("cdn"),
        "the page must not load anything from a CDN"
    );
    let bundle = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), StatusCode::OK);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
    let init = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert!(init.text().await.unwrap().contains("/openapi.json"));
    app.stop().await;
}

#[tokio::test]
async fn embedded_store_runs_without_mongodb() {
    let app = spawn_with(Spawn {
        embedded: true,
        ..Spawn::default()
    })
    .await;
    let ready: Value = app
        .client
        .get(app.url("/healthz/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["store"], "memory");
    app.register_ok("dev-local", serde_json::json!({"reason": "try-out"}))
        .await;
    assert_eq!(app.checkin_ok("dev-local").await["upload"], true);
    app.stop().await;
}

/// The patterns in `/openapi.json` are the ones the handlers enforce: a value the schema
/// allows is accepted, one it refuses gets a 400 (what a generated client relies on).
#[tokio::test]
async fn openapi_patterns_agree_with_what_the_handlers_accept() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    let device_pattern = schemas["CheckinRequest"]["properties"]["device_id"]["pattern"]
        .as_str()
        .expect("check-in device_id has a pattern");
    let device_re = regex::Regex::new(device_pattern).unwrap();
    let long = "x".repeat(129);
    for id in [
        "dev-1",
        "a.b:c_d-e",
        "",
        "has space",
        "slash/inside",
        "ünïcode",
        &long,
    ] {
        let status = app.checkin(id).await.status();
        let allowed = device_re.is_match(id);
        assert_eq!(
            status == StatusCode::OK,
            allowed,
            "{id:?}: schema allows={allowed}, handler answered {status}"
        );
    }

    let params = doc["paths"]["/v1/audit"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let cursor = params.iter().find(|p| p["name"] == "cursor").unwrap();
    let cursor_re = regex::Regex::new(cursor["schema"]["pattern"].as_str().unwrap()).unwrap();
    for value in [
        "",
        "zzz",
        "0123456789abcdef01234567",
        "0123456789abcdef0123456",
    ] {
        let status = app
            .admin_get(&format!("/v1/audit?cursor={value}"))
            .await
            .status();
        let allowed = cursor_re.is_match(value);
        assert_eq!(
            status == StatusCode::OK,
            allowed,
            "cursor {value:?}: schema allows={allowed}, handler answered {status}"
        );
    }
    app.stop().await;
}
