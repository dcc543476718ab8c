//! Two replicas on one database: every registration change made through one reaches the
//! other through the change feed, long before a poll interval, and without a reload.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{Spawn, eventually, spawn_with, unique_database};

#[tokio::test]
async fn a_registration_on_one_replica_reaches_the_other_within_the_poll_interval() {
    let database = unique_database();
    let a = spawn_with(Spawn {
        database: database.clone(),
        poll: "300ms",
        ..Spawn::default()
    })
    .await;
    let b = spawn_with(Spawn {
        database,
        poll: "300ms",
        ..Spawn::default()
    })
    .await;

    assert_eq!(b.checkin_ok("dev-shared").await["upload"], false);
    a.register_ok("dev-shared", json!({"reason": "seen everywhere"}))
        .await;
    let registered = Instant::now();
    // At once on the replica that served the write.
    assert_eq!(a.checkin_ok("dev-shared").await["upload"], true);
    // On the other one within the poll interval (plus a reload's worth of slack).
    let seen = eventually(Duration::from_millis(1500), || async {
        b.checkin_ok("dev-shared").await["upload"] == true
    })
    .await;
    assert!(seen, "replica B never saw the registration");
    let took = registered.elapsed();
    assert!(
        took < Duration::from_millis(900),
        "took {took:?} for a 300ms poll interval"
    );

    // A revocation travels the same way.
    assert_eq!(
        b.delete("dev-shared").await.status(),
        reqwest::StatusCode::NO_CONTENT
    );
    let gone = eventually(Duration::from_millis(1500), || async {
        a.checkin_ok("dev-shared").await["upload"] == false
    })
    .await;
    assert!(gone, "replica A kept asking a revoked device");
    a.stop().await;
    b.stop().await;
}

/// Whether the replica tells the device to upload.
async fn upload(app: &crate::helpers::TestApp, device: &str) -> bool {
    app.checkin_ok(device).await["upload"] == true
}

/// The ticket of a check-in that was told to upload.
async fn ticket_of(app: &crate::helpers::TestApp, device: &str) -> String {
    app.checkin_ok(device).await["ticket"]
        .as_str()
        .expect("a ticket")
        .to_owned()
}

#[tokio::test]
async fn every_kind_of_change_reaches_the_other_replica_as_a_delta() {
    let database = unique_database();
    // A poll interval far longer than the waits below: only the feed can be this fast.
    let spawn = || Spawn {
        database: database.clone(),
        poll: "10s",
        ..Spawn::default()
    };
    let a = spawn_with(spawn()).await;
    let b = spawn_with(spawn()).await;
    let reloads = b.state.registry.reloads();
    let within = Duration::from_millis(3000);

    // Created.
    a.register_ok("dev-d-1", json!({"reason": "create"})).await;
    assert!(eventually(within, || upload(&b, "dev-d-1")).await, "create");
    // Updated: narrowed to android, B stops asking an iOS client.
    a.register_ok(
        "dev-d-1",
        json!({"reason": "update", "platforms": ["android"]}),
    )
    .await;
    assert!(
        eventually(within, || async {
            b.checkin_body(json!({"device_id": "dev-d-1", "platform": "ios"}))
                .await
                .json::<serde_json::Value>()
                .await
                .unwrap()["upload"]
                == false
        })
        .await,
        "update"
    );
    // Revoked.
    a.register_ok("dev-d-2", json!({"reason": "revoke"})).await;
    assert!(eventually(within, || upload(&b, "dev-d-2")).await);
    a.revoke("dev-d-2").await;
    assert!(
        eventually(within, || async { !upload(&b, "dev-d-2").await }).await,
        "revoke"
    );
    // Deleted.
    a.register_ok("dev-d-3", json!({"reason": "delete"})).await;
    assert!(eventually(within, || upload(&b, "dev-d-3")).await);
    a.delete("dev-d-3").await;
    assert!(
        eventually(within, || async { !upload(&b, "dev-d-3").await }).await,
        "delete"
    );
    // Fulfilled on A (one upload, completed): B stops asking.
    a.register_ok("dev-d-4", json!({"reason": "fulfil", "max_uploads": 1}))
        .await;
    assert!(eventually(within, || upload(&b, "dev-d-4")).await);
    let ticket = ticket_of(&a, "dev-d-4").await;
    assert_eq!(
        a.complete(&ticket).await.status(),
        reqwest::StatusCode::NO_CONTENT
    );
    assert!(
        eventually(within, || async { !upload(&b, "dev-d-4").await }).await,
        "fulfil"
    );
    // Expired: swept by whichever replica's deadline comes first, in the store.
    let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    a.register_ok("dev-d-5", json!({"reason": "expire", "expires_at": soon}))
        .await;
    assert!(eventually(within, || upload(&b, "dev-d-5")).await);
    assert!(
        eventually(within, || async { !upload(&b, "dev-d-5").await }).await,
        "expire"
    );
    // A batch.
    let items: Vec<serde_json::Value> = (0..50)
        .map(|i| json!({"device_id": format!("dev-d-batch-{i}"), "reason": "batch"}))
        .collect();
    let response = a
        .client
        .post(a.url("/v1/devices/batch"))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"items": items}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(
        eventually(within, || upload(&b, "dev-d-batch-49")).await,
        "batch"
    );

    assert_eq!(
        b.state.registry.reloads(),
        reloads,
        "every change arrived as a delta, none as a reload"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_gap_in_the_feed_costs_exactly_one_reload_and_loses_nothing() {
    let _fail_point = crate::helpers::fail_point_lock().await;
    let database = unique_database();
    let a = spawn_with(Spawn {
        database: database.clone(),
        ..Spawn::default()
    })
    .await;
    let b = spawn_with(Spawn {
        database,
        ..Spawn::default()
    })
    .await;
    let reloads = b.state.registry.reloads();
    assert_eq!(reloads, 1, "the first load");
    // B's change stream loses its history once (as when its resume point fell off the
    // oplog); meanwhile a registration is made through A.
    let client = crate::helpers::mongo_client().await;
    client
        .database("admin")
        .run_command(mongodb::bson::doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["getMore"], "errorCode": 286, "appName": b.app_name.clone()},
        })
        .await
        .unwrap();
    a.register_ok("dev-gap", json!({"reason": "made during the gap"}))
        .await;
    let seen = eventually(Duration::from_secs(5), || async {
        b.checkin_ok("dev-gap").await["upload"] == true
    })
    .await;
    assert!(seen, "B never saw the registration made during the gap");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        b.state.registry.reloads(),
        reloads + 1,
        "exactly one reload"
    );
    // And deltas flow again after it.
    a.register_ok("dev-after", json!({"reason": "after"})).await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            b.checkin_ok("dev-after").await["upload"] == true
        })
        .await
    );
    assert_eq!(b.state.registry.reloads(), reloads + 1);
    a.stop().await;
    b.stop().await;
}
