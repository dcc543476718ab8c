//! Check-in and upload completion, as a game client sees them.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{error_of, spawn_app};

#[tokio::test]
async fn unregistered_device_is_told_nothing_to_do() {
    let app = spawn_app().await;
    let answer = app.checkin_ok("never-registered-1").await;
    assert_eq!(answer, json!({"upload": false}));
    app.stop().await;
}

#[tokio::test]
async fn registered_device_uploads_once_then_is_told_nothing() {
    let app = spawn_app().await;
    app.register_ok(
        "dev-once",
        json!({"reason": "crash on boss 3", "log_since": "2026-11-01T00:00:00Z"}),
    )
    .await;

    let answer = app.checkin_ok("dev-once").await;
    assert_eq!(answer["upload"], true);
    assert_eq!(answer["reason"], "crash on boss 3");
    assert_eq!(answer["log_since"], "2026-11-01T00:00:00Z");
    let ticket = answer["ticket"].as_str().expect("ticket").to_owned();
    assert_eq!(
        answer["upload_url"],
        format!("https://dump.test/upload/{ticket}?device=dev-once")
    );

    // Until the upload completes, the device is asked again (its upload may have failed).
    let again = app.checkin_ok("dev-once").await;
    assert_eq!(again["upload"], true);

    assert_eq!(app.complete(&ticket).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.checkin_ok("dev-once").await, json!({"upload": false}));

    let detail: serde_json::Value = app
        .admin_get("/v1/devices/dev-once")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["registration"]["status"], "fulfilled");
    assert_eq!(detail["registration"]["uploads"], 1);
    app.stop().await;
}

#[tokio::test]
async fn completing_a_ticket_twice_counts_once() {
    let app = spawn_app().await;
    app.register_ok("dev-twice", json!({"reason": "x", "max_uploads": 2}))
        .await;
    let ticket = app.checkin_ok("dev-twice").await["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.complete(&ticket).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.complete(&ticket).await.status(), StatusCode::NO_CONTENT);
    let detail: serde_json::Value = app
        .admin_get("/v1/devices/dev-twice")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["registration"]["uploads"], 1);
    assert_eq!(detail["registration"]["status"], "active");
    app.stop().await;
}

#[tokio::test]
async fn completion_bytes_may_be_sent_as_a_whole_float_but_not_a_fraction() {
    let app = spawn_app().await;
    app.register_ok("dev-bytes", json!({"reason": "x", "max_uploads": 3}))
        .await;
    let ticket = app.checkin_ok("dev-bytes").await["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    let send = |bytes: serde_json::Value| {
        app.client
            .post(app.url(&format!("/v1/uploads/{ticket}/complete")))
            .json(&json!({"bytes": bytes}))
            .send()
    };
    assert_eq!(
        send(json!(301.0)).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    for bad in [json!(301.5), json!(-1), json!(9_007_199_254_740_992u64)] {
        let (code, message) =
            error_of(send(bad.clone()).await.unwrap(), StatusCode::BAD_REQUEST).await;
        assert_eq!(code, "invalid_body", "{bad}: {message}");
        assert!(message.contains("bytes"), "{bad}: {message}");
    }
    app.stop().await;
}

#[tokio::test]
async fn max_uploads_n_asks_n_times() {
    let app = spawn_app().await;
    app.register_ok(
        "dev-three",
        json!({"reason": "flaky crash", "max_uploads": 3}),
    )
    .await;
    for round in 1..=3 {
        let answer = app.checkin_ok("dev-three").await;
        assert_eq!(answer["upload"], true, "round {round}");
        let ticket = answer["ticket"].as_str().unwrap();
        assert_eq!(app.complete(ticket).await.status(), StatusCode::NO_CONTENT);
    }
    assert_eq!(app.checkin_ok("dev-three").await["upload"], false);
    app.stop().await;
}

#[tokio::test]
async fn unlimited_uploads_until_expiry() {
    let app = spawn_app().await;
    let expires = (time::OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    app.register_ok(
        "dev-every",
        json!({"reason": "watch it", "max_uploads": "unlimited", "expires_at": expires}),
    )
    .await;
    for _ in 0..3 {
        let answer = app.checkin_ok("dev-every").await;
        assert_eq!(answer["upload"], true);
        app.complete(answer["ticket"].as_str().unwrap()).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(app.checkin_ok("dev-every").await["upload"], false);
    let detail: serde_json::Value = app
        .admin_get("/v1/devices/dev-every")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["registration"]["status"], "expired");
    assert_eq!(detail["registration"]["uploads"], 3);
    app.stop().await;
}

#[tokio::test]
async fn narrowing_by_platform_and_version_range() {
    let app = spawn_app().await;
    app.register_ok(
        "dev-narrow",
        json!({"reason": "ios 1.4 only", "platforms": ["ios"], "app_version": {"min": "1.4", "max": "1.4.99"}}),
    )
    .await;
    let ask = |platform: &'static str, version: &'static str| {
        app.checkin_body(
            json!({"device_id": "dev-narrow", "platform": platform, "app_version": version}),
        )
    };
    let android: serde_json::Value = ask("android", "1.4.2").await.json().await.unwrap();
    assert_eq!(android["upload"], false);
    let old: serde_json::Value = ask("ios", "1.3.9").await.json().await.unwrap();
    assert_eq!(old["upload"], false);
    let newer: serde_json::Value = ask("ios", "1.5.0").await.json().await.unwrap();
    assert_eq!(newer["upload"], false);
    let matching: serde_json::Value = ask("iOS", "1.4.2").await.json().await.unwrap();
    assert_eq!(matching["upload"], true);

    // The refused check-ins are on record with the reason, for the operator.
    let detail: serde_json::Value = app
        .admin_get("/v1/devices/dev-narrow")
        .await
        .json()
        .await
        .unwrap();
    let outcomes: Vec<&str> = detail["recent_checkins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["upload", "app_version", "app_version", "platform"]
    );
    app.stop().await;
}

#[tokio::test]
async fn invalid_device_ids_get_400_with_the_reason() {
    let app = spawn_app().await;
    for bad in ["", "has space", "slash/inside", &"x".repeat(129), "ünïcode"] {
        let (code, message) = error_of(app.checkin(bad).await, StatusCode::BAD_REQUEST).await;
        assert_eq!(code, "invalid_device_id", "{bad:?}");
        assert!(message.contains("device_id"), "{message}");
    }
    app.stop().await;
}

#[tokio::test]
async fn malformed_bodies_get_400_415_and_413() {
    let app = spawn_app().await;
    let raw = |body: &'static str, content_type: &'static str| {
        app.client
            .post(app.url("/v1/checkin"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let (code, _) = error_of(
        raw("{not json", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "invalid_json");

    let (code, message) = error_of(
        raw(r#"{"device_id": "a", "colour": "red"}"#, "application/json")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "invalid_body");
    assert!(message.contains("colour"), "{message}");

    let (code, message) = error_of(
        raw(r#"{"app_version": "1"}"#, "application/json")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "invalid_body");
    assert!(message.contains("device_id"), "{message}");

    let (code, _) = error_of(
        raw(r#"{"device_id": "a"}"#, "text/plain").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert_eq!(code, "unsupported_media_type");

    let huge = format!(
        r#"{{"device_id": "a", "platform": "{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let response = app
        .client
        .post(app.url("/v1/checkin"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let (code, _) = error_of(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(code, "payload_too_large");

    let long_platform = app
        .checkin_body(json!({"device_id": "a", "platform": "p".repeat(65)}))
        .await;
    error_of(long_platform, StatusCode::BAD_REQUEST).await;
    app.stop().await;
}

#[tokio::test]
async fn unknown_and_malformed_tickets_are_refused() {
    let app = spawn_app().await;
    let (code, _) = error_of(app.complete(&"a".repeat(32)).await, StatusCode::NOT_FOUND).await;
    assert_eq!(code, "ticket_not_found");
    let (code, _) = error_of(app.complete("not-a-ticket").await, StatusCode::BAD_REQUEST).await;
    assert_eq!(code, "invalid_ticket");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_error_shape() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/v1/nothing")).send().await.unwrap();
    let (code, _) = error_of(response, StatusCode::NOT_FOUND).await;
    assert_eq!(code, "route_not_found");
    let response = app.client.get(app.url("/v1/checkin")).send().await.unwrap();
    let (code, _) = error_of(response, StatusCode::METHOD_NOT_ALLOWED).await;
    assert_eq!(code, "method_not_allowed");
    app.stop().await;
}
