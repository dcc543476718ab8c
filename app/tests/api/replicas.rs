//! Two replicas on one database: a registration made through one reaches the other within
//! the snapshot poll interval.

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
