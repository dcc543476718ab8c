//! Database outage while check-ins run: unregistered devices are still answered, registered
//! ones get 503, and nothing acknowledged is lost. The outage is a `failCommand` fail point
//! scoped to this test's MongoDB application name, so other tests on the same server are
//! untouched (SecantusDB and mongod both honour `appName`).

use std::time::Duration;

use futures::future::join_all;
use mongodb::bson::doc;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{Spawn, error_of, eventually, mongo_client, spawn_with};

async fn fail_point(app_name: &str, on: bool) {
    let client = mongo_client().await;
    let mode = if on {
        mongodb::bson::Bson::from("alwaysOn")
    } else {
        mongodb::bson::Bson::from("off")
    };
    client
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": mode,
            "data": {
                "failCommands": ["find", "insert", "update", "delete", "findAndModify", "aggregate", "getMore", "count", "createIndexes"],
                "errorCode": 91,
                "appName": app_name,
            },
        })
        .await
        .expect("configureFailPoint (start the server with --enable-test-commands)");
}

#[tokio::test]
async fn unregistered_devices_are_answered_while_the_database_is_down() {
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
