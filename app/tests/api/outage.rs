//! Database outage while check-ins run: unregistered devices are still answered, registered
//! ones get 503, and nothing acknowledged is lost. The outage is a `failCommand` fail point
//! scoped to this test's MongoDB application name, so other tests on the same server are
//! untouched (SecantusDB and mongod both honour `appName`).

use std::time::{Duration, Instant};

use futures::future::join_all;
use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Spawn, error_of, eventually, mongo_client, spawn_with};

/// Sends one `configureFailPoint` command (the server's single `failCommand` fail point).
async fn configure_fail_point(command: mongodb::bson::Document) {
    mongo_client()
        .await
        .database("admin")
        .run_command(command)
        .await
        .expect("configureFailPoint (start the server with --enable-test-commands)");
}

async fn fail_point(app_name: &str, on: bool) {
    let mode = if on { "alwaysOn" } else { "off" };
    configure_fail_point(doc! {
        "configureFailPoint": "failCommand",
        "mode": mode,
        "data": {
            "failCommands": ["find", "insert", "update", "delete", "findAndModify", "aggregate", "getMore", "count", "createIndexes"],
            "errorCode": 91,
            "appName": app_name,
        },
    })
    .await;
}

/// Makes the server hold every read and write of `app_name`'s connections for `ms` before
/// it looks at them: a database that takes commands and does not answer.
async fn hold_commands(app_name: &str, ms: i32) {
    configure_fail_point(doc! {
        "configureFailPoint": "failCommand",
        "mode": "alwaysOn",
        "data": {
            "failCommands": ["find", "insert", "update", "delete", "findAndModify", "commitTransaction"],
            "blockConnection": true,
            "blockTimeMS": ms,
            "appName": app_name,
        },
    })
    .await;
}

/// A database that accepts a command and then does not answer (hung, or restarted behind a
/// connection that was not reset) costs an admin request or a registered device's check-in
/// at most `MONGODB_OPERATION_TIMEOUT`, answered 503, and unregistered devices nothing; once
/// it answers again, so does the service, and the refused write can simply be sent again.
#[tokio::test]
async fn requests_get_their_503_within_the_operation_timeout_when_the_database_stops_answering() {
    let _fail_point = crate::helpers::fail_point_lock().await;
    let app = spawn_with(Spawn {
        operation_timeout: "1s",
        ..Spawn::default()
    })
    .await;
    app.register_ok("dev-held", json!({"reason": "before"}))
        .await;

    hold_commands(&app.app_name, 6_000).await;
    let timed = |name: &'static str, response: reqwest::Response, started: Instant| async move {
        let took = started.elapsed();
        let (code, message) = error_of(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(code, "dependency_unavailable", "{name}: {message}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(3),
            "{name} answered after {took:?}; the operation timeout is 1 s and the server holds \
             commands for 6 s"
        );
    };
    let started = Instant::now();
    timed("GET", app.admin_get("/v1/devices/dev-held").await, started).await;
    let started = Instant::now();
    let written = app
        .register("dev-during", json!({"reason": "during"}))
        .await;
    timed("PUT", written, started).await;
    // Check-ins are answered from the snapshot; a registered one's record is queued for the
    // recorder, whose write now hits the deadline too — from then on registered devices get
    // 503 (their records cannot be written), as in an outage, instead of piling up behind a
    // write that never ends.
    let started = Instant::now();
    assert_eq!(app.checkin("anon-held").await.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_millis(500));
    let refused = eventually(Duration::from_secs(4), || async {
        app.checkin("dev-held").await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(
        refused,
        "registered check-ins still accepted while their records cannot be written"
    );
    assert_eq!(app.checkin("anon-held").await.status(), StatusCode::OK);

    fail_point(&app.app_name, false).await;
    let back = eventually(Duration::from_secs(5), || async {
        app.admin_get("/v1/devices/dev-held").await.status() == StatusCode::OK
    })
    .await;
    assert!(back, "reads still failing after the database answers again");
    let recording = eventually(Duration::from_secs(10), || async {
        app.checkin("dev-held").await.status() == StatusCode::OK
    })
    .await;
    assert!(
        recording,
        "registered check-ins still refused after the database answers again"
    );
    // The PUT cut off by the deadline may or may not have been applied; sending it again is
    // what a caller does, and it leaves the registration as asked.
    let again = app
        .register("dev-during", json!({"reason": "during"}))
        .await;
    assert!(again.status().is_success(), "{}", again.status());
    let detail: serde_json::Value = app
        .admin_get("/v1/devices/dev-during")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["registration"]["reason"], "during", "{detail}");
    app.stop().await;
}

#[tokio::test]
async fn unregistered_devices_are_answered_while_the_database_is_down() {
    let _fail_point = crate::helpers::fail_point_lock().await;
    let app = spawn_with(Spawn {
        poll: "200ms",
        extra: vec!["--mongodb-timeout".into(), "500ms".into()],
        ..Spawn::default()
    })
    .await;
    let registered: Vec<String> = (0..5).map(|i| format!("dev-outage-{i}")).collect();
    for id in &registered {
        app.register_ok(id, json!({"reason": "before the outage"}))
            .await;
    }

    fail_point(&app.app_name, true).await;
    // Let the refresher hit the failure at least once.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let unregistered = join_all((0..200).map(|i| {
        let app = &app;
        async move { app.checkin(&format!("anon-{i}")).await.status() }
    }))
    .await;
    assert!(
        unregistered.iter().all(|s| *s == StatusCode::OK),
        "{unregistered:?}"
    );

    let (code, _) = error_of(
        app.checkin(&registered[0]).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(code, "dependency_unavailable");
    let (code, _) = error_of(
        app.register("dev-during", json!({"reason": "x"})).await,
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert_eq!(code, "dependency_unavailable");
    // Readiness stays 200: taking every replica out of the load balancer would turn a
    // database outage into a full outage.
    let ready = app
        .client
        .get(app.url("/healthz/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    fail_point(&app.app_name, false).await;
    let recovered = eventually(Duration::from_secs(3), || async {
        app.checkin(&registered[0]).await.status() == StatusCode::OK
    })
    .await;
    assert!(
        recovered,
        "registered device still failing after the database came back"
    );
    for id in &registered {
        let detail = app.admin_get(&format!("/v1/devices/{id}")).await;
        assert_eq!(detail.status(), StatusCode::OK, "{id} lost");
    }
    let page: serde_json::Value = app
        .admin_get("/v1/audit?limit=1000")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), registered.len());
    app.stop().await;
}

/// A batch whose database writes fail part-way (a fail point on the second chunk's insert)
/// leaves whole chunks saved, each registration with its audit entry, says which items were
/// saved, and the same batch sent again completes it.
#[tokio::test]
async fn a_batch_that_fails_part_way_keeps_registrations_with_their_audit_and_can_be_repeated() {
    let _fail_point = crate::helpers::fail_point_lock().await;
    let database = crate::helpers::unique_database();
    let app = spawn_with(Spawn {
        database: database.clone(),
        extra: vec!["--mongodb-timeout".into(), "1s".into()],
        ..Spawn::default()
    })
    .await;
    let total = 2500;
    let items: Vec<serde_json::Value> = (0..total)
        .map(|i| json!({"device_id": format!("fp-{i:04}"), "reason": "cohort"}))
        .collect();
    // Items 0–999 already exist, so the repeat below has updates as well as creations.
    let send = |items: Vec<serde_json::Value>| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/v1/devices/batch"))
                .bearer_auth(crate::helpers::ADMIN_TOKEN)
                .json(&json!({"items": items}))
                .send()
                .await
                .unwrap()
        }
    };

    // Each chunk of 1000 is one transaction of two inserts (registrations, audit): skipping
    // two inserts fails the second chunk's first one.
    configure_fail_point(doc! {
        "configureFailPoint": "failCommand",
        "mode": {"skip": 2, "times": 1},
        "data": {"failCommands": ["insert"], "errorCode": 91, "appName": app.app_name.clone()},
    })
    .await;
    let response = send(items.clone()).await;
    fail_point(&app.app_name, false).await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(report["created"], 1000, "{}", report["items"][1000]);
    assert_eq!(report["failed"], total - 1000);
    let results = report["items"].as_array().unwrap();
    assert!(results[..1000].iter().all(|r| r["result"] == "created"));
    assert!(
        results[1000..]
            .iter()
            .all(|r| r["result"] == "error" && r["error"]["code"] == "dependency_unavailable")
    );
    assert!(
        results[1000]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sending the whole batch again is safe")
    );

    // In the database: a registration exists exactly where its audit entry does.
    let db = mongo_client().await.database(&database);
    let devices = db.collection::<mongodb::bson::Document>("devices");
    let audit = db.collection::<mongodb::bson::Document>("audit");
    let ids =
        |docs: Vec<mongodb::bson::Document>, key: &str| -> std::collections::BTreeSet<String> {
            docs.iter()
                .map(|d| d.get_str(key).unwrap().to_owned())
                .collect()
        };
    use futures::TryStreamExt;
    let stored = ids(
        devices
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap(),
        "_id",
    );
    let audited = ids(
        audit
            .find(doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap(),
        "device_id",
    );
    assert_eq!(stored.len(), 1000);
    assert_eq!(
        stored, audited,
        "no registration without its audit entry, nor the reverse"
    );

    // The same batch again: the saved ones are updated, the rest created, nothing fails.
    let response = send(items).await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        (
            report["created"].as_u64(),
            report["updated"].as_u64(),
            report["failed"].as_u64()
        ),
        (Some(1500), Some(1000), Some(0))
    );
    assert_eq!(devices.count_documents(doc! {}).await.unwrap(), 2500);
    assert_eq!(audit.count_documents(doc! {}).await.unwrap(), 3500);
    assert_eq!(app.checkin_ok("fp-2499").await["upload"], true);
    app.stop().await;
}

/// A batch the database refuses from the start saves nothing and says so with a 503.
#[tokio::test]
async fn a_batch_the_database_refuses_saves_nothing_and_answers_503() {
    let _fail_point = crate::helpers::fail_point_lock().await;
    let app = spawn_with(Spawn {
        extra: vec!["--mongodb-timeout".into(), "1s".into()],
        ..Spawn::default()
    })
    .await;
    configure_fail_point(doc! {
        "configureFailPoint": "failCommand",
        "mode": "alwaysOn",
        "data": {"failCommands": ["insert"], "errorCode": 91, "appName": app.app_name.clone()},
    })
    .await;
    let response = app
        .client
        .post(app.url("/v1/devices/batch"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"items": [{"device_id": "refused-1", "reason": "x"}]}))
        .send()
        .await
        .unwrap();
    fail_point(&app.app_name, false).await;
    let (code, _) = error_of(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(code, "dependency_unavailable");
    error_of(
        app.admin_get("/v1/devices/refused-1").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    app.stop().await;
}
