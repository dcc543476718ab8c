//! Device registrations through the admin API, as an operator uses them.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, READ_TOKEN, error_of, spawn_app};

#[tokio::test]
async fn admin_routes_need_a_valid_token_and_writes_a_write_token() {
    let app = spawn_app().await;
    let url = app.url("/v1/devices/dev-auth");
    let body = json!({"reason": "x"});

    let none = app.client.put(&url).json(&body).send().await.unwrap();
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let (code, message) = error_of(none, StatusCode::UNAUTHORIZED).await;
    assert_eq!(code, "unauthorized");
    assert!(message.contains("Authorization"), "{message}");

    let wrong = app
        .client
        .put(&url)
        .bearer_auth("not-the-token-at-all")
        .json(&body)
        .send()
        .await
        .unwrap();
    error_of(wrong, StatusCode::UNAUTHORIZED).await;

    let basic = app
        .client
        .get(app.url("/v1/devices"))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .send()
        .await
        .unwrap();
    error_of(basic, StatusCode::UNAUTHORIZED).await;

    let read_only = app
        .client
        .put(&url)
        .bearer_auth(READ_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (code, _) = error_of(read_only, StatusCode::FORBIDDEN).await;
    assert_eq!(code, "forbidden");

    let listing = app
        .client
        .get(app.url("/v1/devices"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn put_creates_then_replaces_and_records_the_token_name() {
    let app = spawn_app().await;
    let created = app
        .register(
            "dev-put",
            json!({"reason": "first", "ticket_ref": "GAME-1"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["device_id"], "dev-put");
    assert_eq!(created["created_by"], "admin");
    assert_eq!(created["status"], "active");
    assert_eq!(created["max_uploads"], 1);
    assert_eq!(created["ticket_ref"], "GAME-1");

    let replaced = app
        .register("dev-put", json!({"reason": "second", "max_uploads": 5}))
        .await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!(replaced["reason"], "second");
    assert_eq!(replaced["max_uploads"], 5);
    assert_eq!(replaced["created_at"], created["created_at"]);
    app.stop().await;
}

#[tokio::test]
async fn put_refuses_bad_input_with_precise_errors() {
    let app = spawn_app().await;
    // 400: the body breaks the schema in /openapi.json; 422: it fits the schema but
    // cannot be honoured (a date already past, a range upside down).
    let bad = StatusCode::BAD_REQUEST;
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let cases = [
        (json!({}), bad, "invalid_body", "reason"),
        (json!({"reason": ""}), bad, "invalid_reason", "reason"),
        (json!({"reason": "   "}), bad, "invalid_reason", "reason"),
        (
            json!({"reason": "x", "expires_at": "tomorrow"}),
            bad,
            "invalid_date",
            "expires_at",
        ),
        (
            json!({"reason": "x", "expires_at": "2001-01-01T00:00:00Z"}),
            unprocessable,
            "invalid_date",
            "in the past",
        ),
        (
            json!({"reason": "x", "max_uploads": 0}),
            bad,
            "invalid_max_uploads",
            "between 1 and",
        ),
        (
            json!({"reason": "x", "max_uploads": 1.5}),
            bad,
            "invalid_body",
            "max_uploads 1.5 is not a whole number",
        ),
        (
            json!({"reason": "x", "max_uploads": "unlimited"}),
            unprocessable,
            "invalid_max_uploads",
            "expires_at",
        ),
        (
            json!({"reason": "x", "app_version": {"min": "2.0", "max": "1.0"}}),
            unprocessable,
            "invalid_version_range",
            "swap",
        ),
        (
            json!({"reason": "x", "app_version": {"min": "one"}}),
            bad,
            "invalid_body",
            "app_version",
        ),
        (
            json!({"reason": "x", "platforms": ["i os"]}),
            bad,
            "invalid_platform",
            "i os",
        ),
        (
            json!({"reason": "x", "reasno": "typo"}),
            bad,
            "invalid_body",
            "reasno",
        ),
    ];
    for (body, status, want_code, want_text) in cases {
        let (code, message) = error_of(app.register("dev-bad", body.clone()).await, status).await;
        assert_eq!(code, want_code, "{body}: {message}");
        assert!(message.contains(want_text), "{body}: {message}");
    }
    // A whole-number float is a number the schema allows for an integer.
    let saved = app
        .register_ok("dev-float", json!({"reason": "x", "max_uploads": 2.0}))
        .await;
    assert_eq!(saved["max_uploads"], 2, "{saved}");
    let (code, _) = error_of(
        app.register("bad id", json!({"reason": "x"})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "invalid_device_id");
    // Nothing was stored by any of the refused calls.
    error_of(
        app.admin_get("/v1/devices/dev-bad").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn get_shows_the_registration_and_its_recent_checkins() {
    let app = spawn_app().await;
    app.register_ok("dev-get", json!({"reason": "x", "max_uploads": 2}))
        .await;
    app.checkin_body(
        json!({"device_id": "dev-get", "platform": "android", "app_version": "2.0.1"}),
    )
    .await;
    let detail: Value = app
        .admin_get("/v1/devices/dev-get")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["registration"]["device_id"], "dev-get");
    let checkins = detail["recent_checkins"].as_array().unwrap();
    assert_eq!(checkins.len(), 1);
    assert_eq!(checkins[0]["platform"], "android");
    assert_eq!(checkins[0]["app_version"], "2.0.1");
    assert_eq!(checkins[0]["outcome"], "upload");
    assert!(checkins[0]["ticket"].as_str().is_some());
    assert!(detail["registration"]["last_checkin_at"].as_str().is_some());

    let (code, message) = error_of(
        app.admin_get("/v1/devices/dev-unknown").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(code, "device_not_found");
    assert!(message.contains("PUT /v1/devices/dev-unknown"), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn revoke_stops_uploads_at_once_and_keeps_the_registration_readable() {
    let app = spawn_app().await;
    app.register_ok("dev-rev", json!({"reason": "x"})).await;
    assert_eq!(app.checkin_ok("dev-rev").await["upload"], true);
    let response = app.revoke("dev-rev").await;
    assert_eq!(response.status(), StatusCode::OK);
    let revoked: Value = response.json().await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["device_id"], "dev-rev");
    assert_eq!(app.checkin_ok("dev-rev").await["upload"], false);
    // Revoking twice is fine and changes nothing.
    assert_eq!(app.revoke("dev-rev").await.status(), StatusCode::OK);
    let detail: Value = app
        .admin_get("/v1/devices/dev-rev")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["registration"]["status"], "revoked");
    let (code, _) = error_of(app.revoke("dev-never").await, StatusCode::NOT_FOUND).await;
    assert_eq!(code, "device_not_found");

    // Registering again starts over.
    app.register_ok("dev-rev", json!({"reason": "again"})).await;
    assert_eq!(app.checkin_ok("dev-rev").await["upload"], true);
    app.stop().await;
}

#[tokio::test]
async fn delete_removes_the_registration_and_the_audit_keeps_what_it_was() {
    let app = spawn_app().await;
    app.register_ok("dev-del", json!({"reason": "keep me in the audit"}))
        .await;
    assert_eq!(app.checkin_ok("dev-del").await["upload"], true);
    assert_eq!(app.delete("dev-del").await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.checkin_ok("dev-del").await["upload"], false);
    let (code, message) = error_of(
        app.admin_get("/v1/devices/dev-del").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(code, "device_not_found");
    assert!(message.contains("dev-del"), "{message}");
    // Deleting what is gone is a 404, like any other missing resource.
    let (code, _) = error_of(app.delete("dev-del").await, StatusCode::NOT_FOUND).await;
    assert_eq!(code, "device_not_found");
    let listed: Value = app.admin_get("/v1/devices").await.json().await.unwrap();
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["device_id"] != "dev-del"),
        "{listed}"
    );
    let audit: Value = app
        .admin_get("/v1/audit?device_id=dev-del")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"][0]["action"], "delete");
    assert_eq!(
        audit["items"][0]["before"]["reason"],
        "keep me in the audit"
    );
    assert_eq!(audit["items"][0]["after"], Value::Null);

    app.register_ok("dev-del", json!({"reason": "again"})).await;
    assert_eq!(app.checkin_ok("dev-del").await["upload"], true);
    app.stop().await;
}

#[tokio::test]
async fn listing_pages_with_a_cursor_and_filters_by_status() {
    let app = spawn_app().await;
    for i in 0..7 {
        app.register_ok(&format!("dev-list-{i}"), json!({"reason": "x"}))
            .await;
    }
    app.revoke("dev-list-3").await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/devices?limit=3&cursor={c}"),
            None => "/v1/devices?limit=3".to_owned(),
        };
        let page: Value = app.admin_get(&path).await.json().await.unwrap();
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            seen.push(item["device_id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..7).map(|i| format!("dev-list-{i}")).collect();
    assert_eq!(seen, expected);

    let revoked: Value = app
        .admin_get("/v1/devices?status=revoked")
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = revoked["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["device_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dev-list-3"]);
    let active: Value = app
        .admin_get("/v1/devices?status=active")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(active["items"].as_array().unwrap().len(), 6);

    let (code, _) = error_of(
        app.admin_get("/v1/devices?status=done").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "invalid_status");
    let (code, _) = error_of(
        app.admin_get("/v1/devices?limit=0").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "invalid_limit");
    let (code, _) = error_of(
        app.admin_get("/v1/devices?limit=ten").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "invalid_query");
    app.stop().await;
}

#[tokio::test]
async fn json_batch_saves_good_items_and_reports_the_ones_it_cannot_register() {
    let app = spawn_app().await;
    app.register_ok("dev-b-existing", json!({"reason": "old"}))
        .await;
    let body = json!({"items": [
        {"device_id": "dev-b-1", "reason": "a"},
        {"device_id": "dev-b-2", "reason": "c", "max_uploads": 2},
        {"device_id": "dev-b-3", "reason": "d", "expires_at": "2001-01-01T00:00:00Z"},
        {"device_id": "dev-b-existing", "reason": "new"},
        {"device_id": "dev-b-1", "reason": "dup"},
        {"device_id": "dev-b-4", "reason": "e", "app_version": {"min": "2.0", "max": "1.0"}},
    ]});
    let response = app
        .client
        .post(app.url("/v1/devices/batch"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(
        (
            report["created"].as_u64(),
            report["updated"].as_u64(),
            report["failed"].as_u64()
        ),
        (Some(2), Some(1), Some(3))
    );
    let results: Vec<(&str, &str)> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["position"].as_str().unwrap(),
                i["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("items[0]", "created"),
            ("items[1]", "created"),
            ("items[2]", "error"),
            ("items[3]", "updated"),
            ("items[4]", "error"),
            ("items[5]", "error"),
        ]
    );
    assert_eq!(report["items"][2]["error"]["code"], "invalid_date");
    assert_eq!(report["items"][4]["error"]["code"], "duplicate_device_id");
    assert_eq!(report["items"][5]["error"]["code"], "invalid_version_range");

    for id in ["dev-b-1", "dev-b-2", "dev-b-existing"] {
        assert_eq!(app.checkin_ok(id).await["upload"], true, "{id}");
    }
    for id in ["dev-b-3", "dev-b-4"] {
        assert_eq!(app.checkin_ok(id).await["upload"], false, "{id}");
    }
    app.stop().await;
}

#[tokio::test]
async fn json_batch_with_items_that_break_the_schema_is_refused_whole_naming_them() {
    let app = spawn_app().await;
    let body = json!({"items": [
        {"device_id": "dev-s-1", "reason": "fine"},
        {"device_id": "bad id", "reason": "b"},
        {"device_id": {}, "reason": "object id"},
        {"device_id": "dev-s-3", "reason": "d", "expires_at": "nope"},
        {"reason": "no id"},
        "not an object",
        {"device_id": "dev-s-4", "reason": "e", "colour": "red"},
    ]});
    let response = app
        .client
        .post(app.url("/v1/devices/batch"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (code, message) = error_of(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(code, "invalid_device_id", "{message}");
    assert!(message.starts_with("6 item(s)"), "{message}");
    assert!(message.contains("nothing was saved"), "{message}");
    for position in [
        "items[1]", "items[2]", "items[3]", "items[4]", "items[5]", "items[6]",
    ] {
        assert!(message.contains(position), "{position} in {message}");
    }
    assert!(!message.contains("items[0]"), "{message}");
    assert!(message.contains("colour"), "{message}");
    // The good item was not saved either: the caller fixes the batch and sends it again.
    error_of(
        app.admin_get("/v1/devices/dev-s-1").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn csv_batch_reports_lines() {
    let app = spawn_app().await;
    let csv = "device_id,reason,max_uploads,platforms,app_version_min\n\
               dev-c-1,crash,1,ios;android,1.2\n\
               dev-c-2,,1,,\n\
               dev c 3,crash,1,,\n\
               dev-c-4,crash,lots,,\n\
               dev-c-5,crash,2,,\n";
    let response = app
        .client
        .post(app.url("/v1/devices/batch"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    let results: Vec<(&str, &str)> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["position"].as_str().unwrap(),
                i["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("line 2", "created"),
            ("line 3", "error"),
            ("line 4", "error"),
            ("line 5", "error"),
            ("line 6", "created")
        ]
    );
    assert!(
        report["items"][1]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 3:")
    );
    let detail: Value = app
        .admin_get("/v1/devices/dev-c-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        detail["registration"]["platforms"],
        json!(["ios", "android"])
    );
    assert_eq!(detail["registration"]["app_version"]["min"], "1.2");

    let bad_header = app
        .client
        .post(app.url("/v1/devices/batch"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/csv")
        .body("device,reason\nx,y\n")
        .send()
        .await
        .unwrap();
    let (code, message) = error_of(bad_header, StatusCode::BAD_REQUEST).await;
    assert_eq!(code, "invalid_csv");
    assert!(message.contains("\"device,reason\""), "{message}");
    app.stop().await;
}

#[tokio::test]
async fn batch_limits_and_content_types() {
    let app = spawn_app().await;
    let items: Vec<Value> = (0..10_001)
        .map(|i| json!({"device_id": format!("d{i}"), "reason": "x"}))
        .collect();
    let response = app
        .client
        .post(app.url("/v1/devices/batch"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    let (code, message) = error_of(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(code, "payload_too_large");
    assert!(message.contains("10001"), "{message}");

    let response = app
        .client
        .post(app.url("/v1/devices/batch"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/xml")
        .body("<items/>")
        .send()
        .await
        .unwrap();
    error_of(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    app.stop().await;
}

#[tokio::test]
async fn a_full_batch_of_ten_thousand_is_accepted() {
    let app = spawn_app().await;
    let mut csv = String::from("device_id,reason\n");
    for i in 0..10_000 {
        csv.push_str(&format!("bulk-{i:05},maintenance sweep\n"));
    }
    let response = app
        .client
        .post(app.url("/v1/devices/batch"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["created"], 10_000);
    assert_eq!(report["failed"], 0);
    assert_eq!(app.checkin_ok("bulk-09999").await["upload"], true);
    assert_eq!(app.state.registry.len(), 10_000);
    app.stop().await;
}
