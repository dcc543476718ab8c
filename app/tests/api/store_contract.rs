//! The store contract: MongoDB and the embedded store behave the same. One scenario, run
//! against both.

use std::time::Duration;

use controltower::domain::{
    AppVersion, DeviceId, MaxUploadsInput, Registration, RegistrationInput, RegistrationSpec,
    Status, Ticket, VersionRange,
};
use controltower::store::memory::MemoryStore;
use controltower::store::mongo::{MongoConfig, MongoStore};
use controltower::store::{
    ActiveRegistration, AuditAction, AuditEntry, AuditQuery, Change, CheckinRecord, DeviceQuery,
    FeedError, Store, TicketCompletion, UploadReport,
};
use time::OffsetDateTime;

use crate::helpers::{mongodb_uri, unique_database};

fn id(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn registration(
    device: &str,
    now: OffsetDateTime,
    expires_in: Option<time::Duration>,
) -> Registration {
    let input = RegistrationInput {
        reason: format!("why {device}"),
        ticket_ref: Some("GAME-7".into()),
        expires_at: expires_in.map(|d| {
            (now + d)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        }),
        max_uploads: Some(MaxUploadsInput::Count(2)),
        log_since: Some("2026-11-01T00:00:00.123Z".into()),
        platforms: Some(vec!["ios".into(), "android".into()]),
        app_version: Some(VersionRange {
            min: Some(AppVersion::parse("1.4").unwrap()),
            max: Some(AppVersion::parse("1.9.9").unwrap()),
        }),
    };
    let spec = RegistrationSpec::parse(input, now).unwrap();
    Registration::new(id(device), spec, "contract", now)
}

async fn contract(store: Store) {
    let now = controltower::domain::now();
    store.prepare().await.unwrap();
    store.prepare().await.expect("prepare is idempotent");

    // Save and read back, field for field.
    let a = registration("dev-a", now, None);
    store.save(&a).await.unwrap();
    assert_eq!(store.get(&id("dev-a")).await.unwrap().as_ref(), Some(&a));
    assert_eq!(store.get(&id("dev-none")).await.unwrap(), None);
    let mut a2 = a.clone();
    a2.spec.reason = "changed".into();
    store.save(&a2).await.unwrap();
    assert_eq!(
        store.get(&id("dev-a")).await.unwrap().unwrap().spec.reason,
        "changed"
    );

    let b = registration("dev-b", now, Some(time::Duration::hours(1)));
    let c = registration("dev-c", now, Some(time::Duration::milliseconds(200)));
    store
        .save_with_audit(&[(b.clone(), true), (c.clone(), true)], &[])
        .await
        .unwrap();
    let many = store
        .get_many(&[id("dev-b"), id("dev-c"), id("dev-none")])
        .await
        .unwrap();
    assert_eq!(many.len(), 2);

    // The active registrations, with what the snapshot needs of them.
    let mut active = Vec::new();
    store
        .load_active(now, &mut |r| active.push(r))
        .await
        .unwrap();
    active.sort_by(|x, y| x.device_id.cmp(&y.device_id));
    let ids: Vec<&str> = active.iter().map(|r| r.device_id.as_str()).collect();
    assert_eq!(ids, ["dev-a", "dev-b", "dev-c"]);
    assert_eq!(active[0], ActiveRegistration::of(&a2), "read back whole");
    assert_eq!(active[2].expires_at, c.spec.expires_at);
    let later = now + time::Duration::seconds(1);
    let mut still = 0;
    store.load_active(later, &mut |_| still += 1).await.unwrap();
    assert_eq!(still, 2);
    assert_eq!(store.expire_due(later).await.unwrap(), 1);
    assert_eq!(
        store.get(&id("dev-c")).await.unwrap().unwrap().status,
        Status::Expired
    );

    // Listing: order, cursor, status.
    let all = store
        .list(
            &DeviceQuery {
                limit: 10,
                ..Default::default()
            },
            now,
        )
        .await
        .unwrap();
    let names: Vec<String> = all.iter().map(|r| r.device_id.to_string()).collect();
    assert_eq!(names, ["dev-a", "dev-b", "dev-c"]);
    let after = store
        .list(
            &DeviceQuery {
                after: Some("dev-a".into()),
                limit: 1,
                ..Default::default()
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(after[0].device_id.as_str(), "dev-b");
    let expired = store
        .list(
            &DeviceQuery {
                status: Some(Status::Expired),
                limit: 10,
                ..Default::default()
            },
            later,
        )
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);

    // Compare-and-set transitions.
    assert!(
        store
            .transition(&id("dev-b"), Status::Active, Status::Revoked, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition(&id("dev-b"), Status::Active, Status::Fulfilled, now)
            .await
            .unwrap()
    );

    // Check-ins and tickets.
    let ticket = Ticket::generate();
    let checkin = |ticket: Option<Ticket>, at: OffsetDateTime, outcome: &str| CheckinRecord {
        device_id: id("dev-a"),
        at,
        app_version: Some("1.5".into()),
        platform: Some("ios".into()),
        ticket,
        outcome: outcome.into(),
        completed_at: None,
    };
    store
        .record_checkins(&[
            checkin(None, now, "platform"),
            checkin(
                Some(ticket.clone()),
                now + time::Duration::milliseconds(5),
                "upload",
            ),
        ])
        .await
        .unwrap();
    store
        .record_checkins(&[])
        .await
        .expect("an empty batch is no error");
    // The recorder's retry of a batch whose first answer was lost (a cut connection, the
    // operation deadline): no error, and the ticketed check-in is stored once.
    store
        .record_checkins(&[checkin(
            Some(ticket.clone()),
            now + time::Duration::milliseconds(5),
            "upload",
        )])
        .await
        .expect("a batch written before is no error");
    let recent = store.recent_checkins(&id("dev-a"), 10).await.unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].outcome, "upload", "newest first");
    assert_eq!(
        store
            .get(&id("dev-a"))
            .await
            .unwrap()
            .unwrap()
            .last_checkin_at,
        Some(now + time::Duration::milliseconds(5))
    );
    let report = UploadReport {
        bytes: Some(10),
        dump_id: Some("d1".into()),
    };
    assert_eq!(
        store.complete_ticket(&ticket, &report, now).await.unwrap(),
        TicketCompletion::Completed(id("dev-a"))
    );
    assert_eq!(
        store.complete_ticket(&ticket, &report, now).await.unwrap(),
        TicketCompletion::AlreadyCompleted(id("dev-a"))
    );
    assert_eq!(
        store
            .complete_ticket(&Ticket::generate(), &report, now)
            .await
            .unwrap(),
        TicketCompletion::Unknown
    );
    assert_eq!(
        store.recent_checkins(&id("dev-a"), 1).await.unwrap()[0].completed_at,
        Some(now)
    );

    // Upload counting only on active registrations.
    assert_eq!(
        store
            .count_upload(&id("dev-a"))
            .await
            .unwrap()
            .map(|r| r.uploads),
        Some(1)
    );
    assert_eq!(
        store.count_upload(&id("dev-b")).await.unwrap(),
        None,
        "revoked"
    );

    // Delete hands back what it removed, once; the registration is then gone.
    let removed = store.delete(&id("dev-b")).await.unwrap();
    assert_eq!(removed.map(|r| r.device_id), Some(id("dev-b")));
    assert_eq!(store.get(&id("dev-b")).await.unwrap(), None);
    assert_eq!(store.delete(&id("dev-b")).await.unwrap(), None);

    // Audit.
    let entries: Vec<AuditEntry> = ["dev-a", "dev-b", "dev-a"]
        .iter()
        .map(|d| {
            AuditEntry::new(
                "alice",
                AuditAction::Update,
                id(d),
                Some(a.clone()),
                Some(a2.clone()),
                now,
            )
        })
        .collect();
    store.append_audit(&entries).await.unwrap();
    let log = store
        .list_audit(&AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0], entries[2], "newest first, read back whole");
    let only_a = store
        .list_audit(&AuditQuery {
            device_id: Some(id("dev-a")),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only_a.len(), 2);
    let older = store
        .list_audit(&AuditQuery {
            before: Some(log[0].id.clone()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(older.len(), 2);
}

/// The next change of `feed` (waiting a few seconds at most).
async fn next_change(feed: &mut controltower::store::Feed) -> Change {
    for _ in 0..20 {
        if let Some(change) = feed.next(Duration::from_millis(250)).await.unwrap() {
            return change;
        }
    }
    panic!("no change came");
}

/// The change feed: opened before the changes, it tells each one in order, with what the
/// snapshot must hold for the device now; changes the snapshot does not use (an upload
/// count, a check-in time) are not sent.
async fn feed_contract(store: Store) {
    let now = controltower::domain::now();
    store.prepare().await.unwrap();
    let mut feed = store.watch(None, Duration::from_millis(250)).await.unwrap();
    let ended = |device: &str| Change::Ended(device.to_owned());

    let a = registration("feed-a", now, None);
    store.save(&a).await.unwrap();
    assert_eq!(
        next_change(&mut feed).await,
        Change::Active(ActiveRegistration::of(&a))
    );

    // Uploads and check-in times are not the snapshot's business.
    store.count_upload(&id("feed-a")).await.unwrap();
    store
        .record_checkins(&[CheckinRecord {
            device_id: id("feed-a"),
            at: now,
            app_version: None,
            platform: None,
            ticket: None,
            outcome: "upload".into(),
            completed_at: None,
        }])
        .await
        .unwrap();
    // Fulfilled, then registered again with other settings.
    store
        .transition(&id("feed-a"), Status::Active, Status::Fulfilled, now)
        .await
        .unwrap();
    assert_eq!(next_change(&mut feed).await, ended("feed-a"));
    let mut again = registration("feed-a", now, None);
    again.spec.reason = "again".into();
    store.save(&again).await.unwrap();
    assert_eq!(
        next_change(&mut feed).await,
        Change::Active(ActiveRegistration::of(&again))
    );

    // Batch, revoke, expiry, delete.
    // feed-c expires soon after it is saved (counted from now, not from the test's start:
    // on a loaded machine the test may have taken longer than the expiry to get here).
    let batch_now = controltower::domain::now();
    let expiry = time::Duration::seconds(3);
    let batch = [
        registration("feed-b", now, None),
        registration("feed-c", batch_now, Some(expiry)),
    ];
    let writes: Vec<(Registration, bool)> = batch.iter().map(|r| (r.clone(), true)).collect();
    store.save_with_audit(&writes, &[]).await.unwrap();
    let mut seen = vec![next_change(&mut feed).await, next_change(&mut feed).await];
    seen.sort_by_key(|c| format!("{c:?}"));
    let mut expected: Vec<Change> = batch
        .iter()
        .map(|r| Change::Active(ActiveRegistration::of(r)))
        .collect();
    expected.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(seen, expected);
    store
        .transition(&id("feed-b"), Status::Active, Status::Revoked, now)
        .await
        .unwrap();
    assert_eq!(next_change(&mut feed).await, ended("feed-b"));
    let left = (batch_now + expiry) - controltower::domain::now();
    tokio::time::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_millis(100))
        .await;
    assert_eq!(
        store.expire_due(controltower::domain::now()).await.unwrap(),
        1
    );
    assert_eq!(next_change(&mut feed).await, ended("feed-c"));
    store.delete(&id("feed-a")).await.unwrap();
    assert_eq!(next_change(&mut feed).await, ended("feed-a"));
    assert_eq!(
        feed.next(Duration::from_millis(600)).await.unwrap(),
        None,
        "nothing else was sent"
    );

    // A second feed resumed from the first one's position replays what came after it.
    let Some(position) = feed.position() else {
        // The embedded store's feed has no position: one process is the whole deployment.
        assert!(matches!(store, Store::Memory(_)));
        return;
    };
    let d = registration("feed-d", now, None);
    store.save(&d).await.unwrap();
    drop(feed);
    let mut resumed = store
        .watch(Some(&position), Duration::from_millis(250))
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut resumed).await,
        Change::Active(ActiveRegistration::of(&d))
    );
}

/// A MongoDB store on a database of its own, connecting as `app_name`.
async fn mongo_store(app_name: &str) -> Store {
    let store = MongoStore::connect(&MongoConfig {
        uri: mongodb_uri(),
        database: unique_database(),
        app_name: app_name.to_owned(),
        server_selection_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(10),
        checkin_retention: Duration::from_secs(86_400),
        heartbeat: Duration::from_secs(1),
    })
    .await
    .unwrap();
    Store::Mongo(store)
}

#[tokio::test]
async fn memory_store_honours_the_contract() {
    contract(Store::Memory(MemoryStore::new(Duration::from_secs(86_400)))).await;
}

#[tokio::test]
async fn mongo_store_honours_the_contract() {
    contract(mongo_store("ct-contract").await).await;
}

#[tokio::test]
async fn memory_store_feed_honours_the_contract() {
    feed_contract(Store::Memory(MemoryStore::new(Duration::from_secs(86_400)))).await;
}

#[tokio::test]
async fn mongo_store_feed_honours_the_contract() {
    feed_contract(mongo_store("ct-feed-contract").await).await;
}

/// A change stream the server cannot go on with (`ChangeStreamHistoryLost`: the resume point
/// fell off the oplog) is a gap, which the reader bridges with a reload; an outage is not.
#[tokio::test]
async fn a_mongo_feed_whose_history_is_lost_reports_a_gap_and_an_outage_does_not() {
    let _fail_point = crate::helpers::fail_point_lock().await;
    let app_name = format!("ct-feed-gap-{}", std::process::id());
    let store = mongo_store(&app_name).await;
    store.prepare().await.unwrap();
    let client = crate::helpers::mongo_client().await;
    let fail_get_more = |code: i32| {
        mongodb::bson::doc! {
            "configureFailPoint": "failCommand",
            "mode": {"times": 1},
            "data": {"failCommands": ["getMore"], "errorCode": code, "appName": app_name.clone()},
        }
    };
    // What a fresh feed answers once its next getMore fails with `code`.
    let after_failure = |code: i32| {
        let (store, client, fail) = (&store, &client, fail_get_more(code));
        async move {
            let mut feed = store.watch(None, Duration::from_millis(250)).await.unwrap();
            client.database("admin").run_command(fail).await.unwrap();
            let mut outcome = feed.next(Duration::from_millis(250)).await;
            for _ in 0..10 {
                if !matches!(outcome, Ok(None)) {
                    break;
                }
                outcome = feed.next(Duration::from_millis(250)).await;
            }
            outcome
        }
    };
    let lost = after_failure(286).await;
    assert!(matches!(lost, Err(FeedError::Gap(_))), "{lost:?}");
    let refused = after_failure(2).await;
    assert!(matches!(refused, Err(FeedError::Store(_))), "{refused:?}");
}
