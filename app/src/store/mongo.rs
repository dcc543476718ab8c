//! MongoDB persistence: the only module that imports `mongodb`.
//!
//! Collections: `devices` (`_id` = device id), `checkins` (TTL on `at`) and `audit`. Writes
//! that an operator is told succeeded use write concern majority, so an acknowledged
//! registration survives a primary failover.
//!
//! Replicas learn of registration changes from a change stream on `devices` (see
//! [`MongoStore::watch`]). A change stream, rather than a change-sequence field on each
//! document, because the server keeps the order and the resume point (the oplog) for us: no
//! write has to remember to bump a sequence (expiry sweeps, upload counts and batch writes
//! all reach the replicas the same way), no extra index or counter document is written on
//! every change, and a resume point the server no longer has is reported as an error
//! (`ChangeStreamHistoryLost`) instead of a silent hole. The cost is that MongoDB must run as
//! a replica set (Atlas and DocumentDB do; SecantusDB supports change streams too).

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{self, DateTime, Document, doc, oid::ObjectId};
use mongodb::change_stream::ChangeStream;
use mongodb::change_stream::event::{ChangeStreamEvent, OperationType, ResumeToken};
use mongodb::error::{ErrorKind, InsertManyError};
use mongodb::options::{
    ClientOptions, CollectionOptions, FullDocumentType, IndexOptions, ReturnDocument, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    ActiveRegistration, AuditAction, AuditEntry, AuditQuery, Change, CheckinRecord, DeviceQuery,
    FeedError, StoreError, StoreResult, TicketCompletion, UploadReport,
};
use crate::domain::{
    AppVersion, DeviceId, Registration, RegistrationSpec, Status, Ticket, UploadLimit, VersionRange,
};

/// Longest wait for a heartbeat reply before the driver's monitor gives a server up.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(10);
/// Server errors that mean a change stream cannot go on from where it was: the resume point
/// fell off the oplog (`ChangeStreamHistoryLost`), the token is not one
/// (`InvalidResumeToken`, or `FailedToParse` from servers that parse it first), the stream
/// died (`ChangeStreamFatalError`), or the cursor's position is gone (`CappedPositionLost`).
const FEED_GAP_CODES: [i32; 5] = [286, 260, 9, 280, 136];
/// Fields of a registration that the snapshot uses: an update that changes none of them
/// (a check-in's `last_checkin_at`, an upload count) is not sent to the replicas.
const SNAPSHOT_FIELDS: [&str; 7] = [
    "status",
    "expires_at",
    "reason",
    "log_since",
    "platforms",
    "app_version_min",
    "app_version_max",
];

/// Connection settings for [`MongoStore::connect`].
#[derive(Debug, Clone)]
pub struct MongoConfig {
    /// Connection string (a secret: never logged).
    pub uri: String,
    /// Database name.
    pub database: String,
    /// Application name sent in the handshake (shows up in the server's logs).
    pub app_name: String,
    /// How long an operation may wait for a usable server before failing. Short, so a
    /// registered device gets its 503 quickly while the database is down.
    pub server_selection_timeout: Duration,
    /// The longest one operation of a request may take in all (see [`MongoStore::bounded`]).
    pub operation_timeout: Duration,
    /// How long check-ins are kept (TTL index).
    pub checkin_retention: Duration,
    /// How often the driver checks the server. It bounds how fast the service notices that
    /// MongoDB is back after an outage (the driver's default, 10 s, is too slow).
    pub heartbeat: Duration,
}

/// MongoDB-backed store.
#[derive(Clone)]
pub struct MongoStore {
    db: Database,
    devices: Collection<DeviceDoc>,
    checkins: Collection<CheckinDoc>,
    audit: Collection<AuditDoc>,
    retention: Duration,
    operation_timeout: Duration,
}

/// An operation that got no answer within `MONGODB_OPERATION_TIMEOUT`.
#[derive(Debug, thiserror::Error)]
#[error(
    "no answer from MongoDB within {0:?} (MONGODB_OPERATION_TIMEOUT); a write cut off here may \
     still have been applied"
)]
pub struct OperationTimedOut(Duration);

/// A change stream's resume token.
#[derive(Debug, Clone)]
pub struct FeedPosition(ResumeToken);

/// The change stream on `devices`, as [`Change`]s.
pub struct Feed {
    stream: ChangeStream<ChangeStreamEvent<FeedDoc>>,
}

/// What a change event carries of the registration (the snapshot's fields and the status).
#[derive(Debug, Deserialize)]
struct FeedDoc {
    #[serde(rename = "_id")]
    id: String,
    /// Text, not [`Status`]: a document this version cannot read must end its entry, not
    /// stop the feed.
    #[serde(default)]
    status: String,
    expires_at: Option<DateTime>,
    #[serde(default)]
    reason: String,
    log_since: Option<DateTime>,
    #[serde(default)]
    platforms: Vec<String>,
    app_version_min: Option<String>,
    app_version_max: Option<String>,
}

/// `The $changeStream stage is only supported on replica sets`.
const NOT_A_REPLICA_SET: i32 = 40573;

fn feed_error(action: &str) -> impl FnOnce(mongodb::error::Error) -> FeedError + '_ {
    move |error| {
        if let ErrorKind::Command(command) = error.kind.as_ref() {
            if FEED_GAP_CODES.contains(&command.code) {
                return FeedError::Gap(format!("{action}: {error}"));
            }
            if command.code == NOT_A_REPLICA_SET {
                return FeedError::Store(unavailable(format!(
                    "{action} — MongoDB runs as a standalone server, which has no change streams: run it as a replica set (a one-member set is enough: mongod --replSet rs0, then rs.initiate()), or use Atlas or DocumentDB"
                ))(error));
            }
        }
        FeedError::Store(unavailable(action)(error))
    }
}

impl Feed {
    /// One getMore at most, which the server holds open for the `max_await_time` set at
    /// open when nothing changed (so `_wait` needs no timer here: cancelling a getMore
    /// half-way would leave the stream unusable).
    pub(super) async fn next(&mut self, _wait: Duration) -> Result<Option<Change>, FeedError> {
        let event = self
            .stream
            .next_if_any()
            .await
            .map_err(feed_error("follow the registration changes"))?;
        let Some(event) = event else {
            return Ok(None);
        };
        let id_of = |event: &ChangeStreamEvent<FeedDoc>| {
            event
                .document_key
                .as_ref()
                .and_then(|k| k.get_str("_id").ok())
                .map(str::to_owned)
        };
        match event.operation_type {
            OperationType::Insert | OperationType::Update | OperationType::Replace => {
                match event.full_document {
                    Some(doc) => Ok(Some(change_of(doc))),
                    // Deleted between the change and the lookup: the delete event follows.
                    None => Ok(id_of(&event).map(Change::Ended)),
                }
            }
            OperationType::Delete => Ok(id_of(&event).map(Change::Ended)),
            other => Err(FeedError::Gap(format!(
                "the change stream on devices ended with a {other:?} event"
            ))),
        }
    }

    pub(super) fn position(&self) -> Option<FeedPosition> {
        self.stream.resume_token().map(FeedPosition)
    }
}

/// What the snapshot should hold for a device after a change.
fn change_of(doc: FeedDoc) -> Change {
    let now = crate::domain::now();
    let expired = doc.expires_at.is_some_and(|at| from_bson_time(at) <= now);
    if doc.status != Status::Active.as_str() || expired {
        return Change::Ended(doc.id);
    }
    let version = |v: Option<String>| v.and_then(|v| AppVersion::parse(&v).ok());
    let (min, max) = (version(doc.app_version_min), version(doc.app_version_max));
    Change::Active(ActiveRegistration {
        device_id: doc.id,
        expires_at: doc.expires_at.map(from_bson_time),
        reason: doc.reason,
        log_since: doc.log_since.map(from_bson_time),
        platforms: doc.platforms,
        app_version: (min.is_some() || max.is_some()).then_some(VersionRange { min, max }),
    })
}

/// MongoDB's `DuplicateKey` error code.
const DUPLICATE_KEY: i32 = 11000;

/// Whether every write error of an unordered insert is a duplicate key (and the write concern
/// was met): everything else of the insert was written.
fn only_duplicate_keys(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::InsertMany(InsertManyError {
            write_errors: Some(errors),
            write_concern_error: None,
            ..
        }) => !errors.is_empty() && errors.iter().all(|e| e.code == DUPLICATE_KEY),
        _ => false,
    }
}

fn unavailable(action: impl Into<String>) -> impl FnOnce(mongodb::error::Error) -> StoreError {
    let action = action.into();
    move |source| StoreError::Unavailable {
        action,
        source: Box::new(source),
    }
}

impl MongoStore {
    /// Parses the connection string and builds the client. It does not wait for the server:
    /// the service starts (and is live) while MongoDB is still unreachable.
    pub async fn connect(config: &MongoConfig) -> StoreResult<Self> {
        let mut options = ClientOptions::parse(&config.uri)
            .await
            .map_err(unavailable("parse MONGODB_URI"))?;
        options.app_name = Some(config.app_name.clone());
        options.server_selection_timeout = Some(config.server_selection_timeout);
        // The connect timeout is also how long the driver's monitor waits for a heartbeat
        // reply, and a monitor timeout interrupts every connection in use — the first load
        // of a million registrations among them, started again from zero. A server busy
        // streaming that load may answer a heartbeat late; it is not down. So the monitor
        // gets 10 s, while an operation still gives up after `server_selection_timeout`.
        options.connect_timeout = Some(config.server_selection_timeout.max(MONITOR_TIMEOUT));
        options.heartbeat_freq = Some(config.heartbeat.max(Duration::from_millis(500)));
        let client =
            Client::with_options(options).map_err(unavailable("create the MongoDB client"))?;
        let db = client.database(&config.database);
        let majority = CollectionOptions::builder()
            .write_concern(WriteConcern::majority())
            .build();
        Ok(Self {
            devices: db.collection_with_options("devices", majority.clone()),
            checkins: db.collection("checkins"),
            audit: db.collection_with_options("audit", majority),
            retention: config.checkin_retention,
            operation_timeout: config.operation_timeout,
            db,
        })
    }

    /// Runs `operation` (one store operation of a request) for at most the operation timeout.
    /// The driver bounds only the wait for a server (`server_selection_timeout`): a server
    /// that accepted the command and then stops answering — hung, or restarted behind a
    /// connection that was not reset — would hold the request, and the admin's terminal or
    /// the registered device, for as long as the connection lives. Past the deadline the
    /// operation is dropped (the driver closes its connection and aborts a transaction in
    /// progress) and the caller gets `Unavailable`, a 503.
    pub(super) async fn bounded<T>(
        &self,
        action: &'static str,
        operation: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(self.operation_timeout, operation).await {
            Ok(result) => result,
            Err(_elapsed) => Err(StoreError::Unavailable {
                action: action.to_owned(),
                source: Box::new(OperationTimedOut(self.operation_timeout)),
            }),
        }
    }

    pub(super) async fn prepare(&self) -> StoreResult<()> {
        let devices = [
            IndexModel::builder()
                .keys(doc! {"status": 1, "_id": 1})
                .build(),
            IndexModel::builder()
                .keys(doc! {"status": 1, "expires_at": 1})
                .build(),
        ];
        self.devices
            .create_indexes(devices)
            .await
            .map_err(unavailable("create indexes on devices"))?;
        let checkins = [
            IndexModel::builder()
                .keys(doc! {"at": 1})
                .options(
                    IndexOptions::builder()
                        .name("checkins_ttl".to_owned())
                        .expire_after(self.retention)
                        .build(),
                )
                .build(),
            IndexModel::builder()
                .keys(doc! {"ticket": 1})
                .options(IndexOptions::builder().unique(true).sparse(true).build())
                .build(),
            IndexModel::builder()
                .keys(doc! {"device_id": 1, "at": -1})
                .build(),
        ];
        self.checkins
            .create_indexes(checkins)
            .await
            .map_err(unavailable("create indexes on checkins"))?;
        self.audit
            .create_index(
                IndexModel::builder()
                    .keys(doc! {"device_id": 1, "_id": -1})
                    .build(),
            )
            .await
            .map_err(unavailable("create indexes on audit"))?;
        Ok(())
    }

    /// Opens the change stream on `devices`: inserts, replaces and deletes, and the updates
    /// that change a field the snapshot uses, each with the document as it is now
    /// (`updateLookup`). Each getMore waits at most `wait` for a change, so the reader
    /// notices a dead server within it and can confirm the snapshot's age.
    pub(super) async fn watch(
        &self,
        from: Option<&FeedPosition>,
        wait: Duration,
    ) -> Result<Feed, FeedError> {
        let mut relevant = vec![doc! {"operationType": {"$in": [
            "insert", "replace", "delete", "drop", "rename", "dropDatabase", "invalidate",
        ]}}];
        for field in SNAPSHOT_FIELDS {
            relevant
                .push(doc! {format!("updateDescription.updatedFields.{field}"): {"$exists": true}});
        }
        relevant.push(doc! {"updateDescription.removedFields.0": {"$exists": true}});
        let stream = self
            .db
            .collection::<FeedDoc>("devices")
            .watch()
            .pipeline([doc! {"$match": {"$or": relevant}}])
            .full_document(FullDocumentType::UpdateLookup)
            .max_await_time(wait)
            .batch_size(1000)
            .resume_after(from.map(|p| p.0.clone()))
            .await
            .map_err(feed_error("open the change stream on devices"))?;
        Ok(Feed { stream })
    }

    pub(super) async fn load_active(
        &self,
        now: OffsetDateTime,
        sink: &mut (dyn FnMut(ActiveRegistration) + Send),
    ) -> StoreResult<()> {
        let fields = doc! {
            "_id": 1, "expires_at": 1, "reason": 1, "log_since": 1, "platforms": 1,
            "app_version_min": 1, "app_version_max": 1,
        };
        let mut cursor = self
            .db
            .collection::<ActiveDoc>("devices")
            .find(active_filter(now))
            .projection(fields)
            .batch_size(10_000)
            .await
            .map_err(unavailable("load active registrations"))?;
        while let Some(d) = cursor
            .try_next()
            .await
            .map_err(unavailable("load active registrations"))?
        {
            let version = |v: Option<String>| v.and_then(|v| AppVersion::parse(&v).ok());
            let (min, max) = (version(d.app_version_min), version(d.app_version_max));
            sink(ActiveRegistration {
                device_id: d.id,
                expires_at: d.expires_at.map(from_bson_time),
                reason: d.reason,
                log_since: d.log_since.map(from_bson_time),
                platforms: d.platforms,
                app_version: (min.is_some() || max.is_some()).then_some(VersionRange { min, max }),
            });
        }
        Ok(())
    }

    pub(super) async fn get(&self, id: &DeviceId) -> StoreResult<Option<Registration>> {
        self.devices
            .find_one(doc! {"_id": id.as_str()})
            .await
            .map_err(unavailable(format!("read registration {id}")))?
            .map(Registration::try_from)
            .transpose()
    }

    pub(super) async fn get_many(&self, ids: &[DeviceId]) -> StoreResult<Vec<Registration>> {
        let ids: Vec<&str> = ids.iter().map(DeviceId::as_str).collect();
        let docs: Vec<DeviceDoc> = self
            .devices
            .find(doc! {"_id": {"$in": ids}})
            .await
            .map_err(unavailable("read registrations"))?
            .try_collect()
            .await
            .map_err(unavailable("read registrations"))?;
        docs.into_iter().map(Registration::try_from).collect()
    }

    pub(super) async fn save(&self, registration: &Registration) -> StoreResult<()> {
        let doc = DeviceDoc::from(registration);
        self.devices
            .replace_one(doc! {"_id": registration.device_id.as_str()}, doc)
            .upsert(true)
            .await
            .map_err(unavailable(format!(
                "save registration {}",
                registration.device_id
            )))?;
        Ok(())
    }

    pub(super) async fn delete(&self, id: &DeviceId) -> StoreResult<Option<Registration>> {
        self.devices
            .find_one_and_delete(doc! {"_id": id.as_str()})
            .await
            .map_err(unavailable(format!("delete registration {id}")))?
            .map(Registration::try_from)
            .transpose()
    }

    /// One transaction: the new registrations in one `insert_many`, the others replaced one
    /// by one, then the audit entries in one `insert_many`; committed with write concern
    /// majority, or aborted as a whole.
    pub(super) async fn save_with_audit(
        &self,
        registrations: &[(Registration, bool)],
        audit: &[AuditEntry],
    ) -> StoreResult<()> {
        let action = format!(
            "save {} registration(s) with their audit entries",
            registrations.len()
        );
        let docs = audit
            .iter()
            .map(AuditDoc::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut session = self
            .db
            .client()
            .start_session()
            .await
            .map_err(unavailable(action.clone()))?;
        session
            .start_transaction()
            .write_concern(WriteConcern::majority())
            .await
            .map_err(unavailable(action.clone()))?;
        let written: mongodb::error::Result<()> = async {
            let new: Vec<DeviceDoc> = registrations
                .iter()
                .filter(|(_, new)| *new)
                .map(|(r, _)| DeviceDoc::from(r))
                .collect();
            if !new.is_empty() {
                self.devices.insert_many(new).session(&mut session).await?;
            }
            for (registration, _) in registrations.iter().filter(|(_, new)| !*new) {
                self.devices
                    .replace_one(
                        doc! {"_id": registration.device_id.as_str()},
                        DeviceDoc::from(registration),
                    )
                    .upsert(true)
                    .session(&mut session)
                    .await?;
            }
            if !docs.is_empty() {
                self.audit.insert_many(&docs).session(&mut session).await?;
            }
            session.commit_transaction().await
        }
        .await;
        if let Err(error) = written {
            // Nothing of it is kept (aborting fails only if the server is gone, and then the
            // transaction dies with it).
            let _aborted = session.abort_transaction().await;
            return Err(unavailable(action)(error));
        }
        Ok(())
    }

    pub(super) async fn list(
        &self,
        query: &DeviceQuery,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Registration>> {
        let mut filter = match query.status {
            None => doc! {},
            Some(Status::Active) => active_filter(now),
            Some(Status::Expired) => doc! {"$or": [
                {"status": "expired"},
                {"status": "active", "expires_at": {"$lte": to_bson_time(now)}},
            ]},
            Some(other) => doc! {"status": other.as_str()},
        };
        if let Some(after) = &query.after {
            filter.insert("_id", doc! {"$gt": after});
        }
        let docs: Vec<DeviceDoc> = self
            .devices
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(i64::try_from(query.limit).unwrap_or(i64::MAX))
            .await
            .map_err(unavailable("list registrations"))?
            .try_collect()
            .await
            .map_err(unavailable("list registrations"))?;
        docs.into_iter().map(Registration::try_from).collect()
    }

    pub(super) async fn transition(
        &self,
        id: &DeviceId,
        from: Status,
        to: Status,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut set = doc! {"status": to.as_str()};
        if to == Status::Revoked {
            set.insert("updated_at", to_bson_time(now));
        }
        let result = self
            .devices
            .update_one(
                doc! {"_id": id.as_str(), "status": from.as_str()},
                doc! {"$set": set},
            )
            .await
            .map_err(unavailable(format!("mark registration {id} {to}")))?;
        Ok(result.modified_count > 0)
    }

    pub(super) async fn expire_due(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let result = self
            .devices
            .update_many(
                doc! {"status": "active", "expires_at": {"$lte": to_bson_time(now)}},
                doc! {"$set": {"status": "expired"}},
            )
            .await
            .map_err(unavailable("mark expired registrations"))?;
        Ok(result.modified_count)
    }

    /// One insert for the batch and one update of the devices' `last_checkin_at`, whatever
    /// the batch size: registered check-ins of a spike cost the database a few writes a second.
    pub(super) async fn record_checkins(&self, checkins: &[CheckinRecord]) -> StoreResult<()> {
        let Some(latest) = checkins.iter().map(|c| c.at).max() else {
            return Ok(());
        };
        let inserted = self
            .checkins
            .insert_many(checkins.iter().map(CheckinDoc::from))
            .ordered(false)
            .await;
        // Duplicate keys alone: a retry of a batch an earlier try wrote without its answer
        // arriving (a cut connection, the operation deadline) — the ticketed records are there
        // already and the rest were inserted now. Refusing it would keep the recorder retrying
        // forever.
        if let Err(error) = inserted
            && !only_duplicate_keys(&error)
        {
            return Err(unavailable(format!("record {} check-ins", checkins.len()))(
                error,
            ));
        }
        let devices: Vec<&str> = checkins.iter().map(|c| c.device_id.as_str()).collect();
        self.devices
            .update_many(
                doc! {"_id": {"$in": devices}},
                doc! {"$max": {"last_checkin_at": to_bson_time(latest)}},
            )
            .await
            .map_err(unavailable("record the check-in times"))?;
        Ok(())
    }

    pub(super) async fn recent_checkins(
        &self,
        id: &DeviceId,
        limit: usize,
    ) -> StoreResult<Vec<CheckinRecord>> {
        let docs: Vec<CheckinDoc> = self
            .checkins
            .find(doc! {"device_id": id.as_str()})
            .sort(doc! {"at": -1, "_id": -1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(unavailable(format!("read check-ins of {id}")))?
            .try_collect()
            .await
            .map_err(unavailable(format!("read check-ins of {id}")))?;
        docs.into_iter().map(CheckinRecord::try_from).collect()
    }

    pub(super) async fn complete_ticket(
        &self,
        ticket: &Ticket,
        report: &UploadReport,
        at: OffsetDateTime,
    ) -> StoreResult<TicketCompletion> {
        let mut set = doc! {"completed_at": to_bson_time(at)};
        if let Some(bytes) = report.bytes {
            set.insert("bytes", i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Some(dump_id) = &report.dump_id {
            set.insert("dump_id", dump_id);
        }
        let action = || format!("complete ticket {ticket}");
        let first = self
            .checkins
            .find_one_and_update(
                doc! {"ticket": ticket.as_str(), "completed_at": {"$exists": false}},
                doc! {"$set": set},
            )
            .await
            .map_err(unavailable(action()))?;
        if let Some(doc) = first {
            return Ok(TicketCompletion::Completed(parse_device_id(
                "checkins",
                &doc.device_id,
            )?));
        }
        let seen = self
            .checkins
            .find_one(doc! {"ticket": ticket.as_str()})
            .await
            .map_err(unavailable(action()))?;
        match seen {
            Some(doc) => Ok(TicketCompletion::AlreadyCompleted(parse_device_id(
                "checkins",
                &doc.device_id,
            )?)),
            None => Ok(TicketCompletion::Unknown),
        }
    }

    pub(super) async fn count_upload(&self, id: &DeviceId) -> StoreResult<Option<Registration>> {
        self.devices
            .find_one_and_update(
                doc! {"_id": id.as_str(), "status": "active"},
                doc! {"$inc": {"uploads": 1_i64}},
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(unavailable(format!("count an upload of {id}")))?
            .map(Registration::try_from)
            .transpose()
    }

    pub(super) async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let docs = entries
            .iter()
            .map(AuditDoc::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        self.audit
            .insert_many(docs)
            .await
            .map_err(unavailable("write the audit log"))?;
        Ok(())
    }

    pub(super) async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let mut filter = doc! {};
        if let Some(device) = &query.device_id {
            filter.insert("device_id", device.as_str());
        }
        if let Some(before) = &query.before {
            // The cursor was produced by this service; a foreign value just yields no page.
            let oid = ObjectId::parse_str(before).unwrap_or(ObjectId::from_bytes([0; 12]));
            filter.insert("_id", doc! {"$lt": oid});
        }
        let docs: Vec<AuditDoc> = self
            .audit
            .find(filter)
            .sort(doc! {"_id": -1})
            .limit(i64::try_from(query.limit).unwrap_or(i64::MAX))
            .await
            .map_err(unavailable("read the audit log"))?
            .try_collect()
            .await
            .map_err(unavailable("read the audit log"))?;
        docs.into_iter().map(AuditEntry::try_from).collect()
    }
}

fn active_filter(now: OffsetDateTime) -> Document {
    doc! {"status": "active", "$or": [
        {"expires_at": null},
        {"expires_at": {"$gt": to_bson_time(now)}},
    ]}
}

fn to_bson_time(at: OffsetDateTime) -> DateTime {
    let millis = at.unix_timestamp_nanos() / 1_000_000;
    DateTime::from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
}

fn from_bson_time(at: DateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(at.timestamp_millis()) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn parse_device_id(collection: &'static str, raw: &str) -> StoreResult<DeviceId> {
    DeviceId::parse(raw).map_err(|e| StoreError::Corrupt {
        collection,
        id: raw.to_owned(),
        reason: e.message,
    })
}

/// A registration as stored: dates as BSON dates so range queries and the sweep work.
#[derive(Debug, Serialize, Deserialize)]
struct DeviceDoc {
    #[serde(rename = "_id")]
    id: String,
    reason: String,
    ticket_ref: Option<String>,
    expires_at: Option<DateTime>,
    max_uploads: UploadLimit,
    log_since: Option<DateTime>,
    #[serde(default)]
    platforms: Vec<String>,
    app_version_min: Option<String>,
    app_version_max: Option<String>,
    status: Status,
    uploads: i64,
    created_by: String,
    updated_by: String,
    created_at: DateTime,
    updated_at: DateTime,
    last_checkin_at: Option<DateTime>,
}

impl From<&Registration> for DeviceDoc {
    fn from(r: &Registration) -> Self {
        let range = r.spec.app_version.as_ref();
        Self {
            id: r.device_id.to_string(),
            reason: r.spec.reason.clone(),
            ticket_ref: r.spec.ticket_ref.clone(),
            expires_at: r.spec.expires_at.map(to_bson_time),
            max_uploads: r.spec.max_uploads,
            log_since: r.spec.log_since.map(to_bson_time),
            platforms: r.spec.platforms.clone(),
            app_version_min: range.and_then(|v| v.min.as_ref()).map(ToString::to_string),
            app_version_max: range.and_then(|v| v.max.as_ref()).map(ToString::to_string),
            status: r.status,
            uploads: i64::from(r.uploads),
            created_by: r.created_by.clone(),
            updated_by: r.updated_by.clone(),
            created_at: to_bson_time(r.created_at),
            updated_at: to_bson_time(r.updated_at),
            last_checkin_at: r.last_checkin_at.map(to_bson_time),
        }
    }
}

impl TryFrom<DeviceDoc> for Registration {
    type Error = StoreError;

    fn try_from(d: DeviceDoc) -> StoreResult<Self> {
        let corrupt = |reason: String| StoreError::Corrupt {
            collection: "devices",
            id: d.id.clone(),
            reason,
        };
        let version = |v: &Option<String>| {
            v.as_deref()
                .map(AppVersion::parse)
                .transpose()
                .map_err(|e| corrupt(e.message))
        };
        let min = version(&d.app_version_min)?;
        let max = version(&d.app_version_max)?;
        let app_version = (min.is_some() || max.is_some()).then_some(VersionRange { min, max });
        Ok(Registration {
            device_id: parse_device_id("devices", &d.id)?,
            spec: RegistrationSpec {
                reason: d.reason,
                ticket_ref: d.ticket_ref,
                expires_at: d.expires_at.map(from_bson_time),
                max_uploads: d.max_uploads,
                log_since: d.log_since.map(from_bson_time),
                platforms: d.platforms,
                app_version,
            },
            status: d.status,
            uploads: u32::try_from(d.uploads).unwrap_or(0),
            created_by: d.created_by,
            updated_by: d.updated_by,
            created_at: from_bson_time(d.created_at),
            updated_at: from_bson_time(d.updated_at),
            last_checkin_at: d.last_checkin_at.map(from_bson_time),
        })
    }
}

/// The fields of a device document the snapshot needs.
#[derive(Debug, Deserialize)]
struct ActiveDoc {
    #[serde(rename = "_id")]
    id: String,
    expires_at: Option<DateTime>,
    reason: String,
    log_since: Option<DateTime>,
    #[serde(default)]
    platforms: Vec<String>,
    app_version_min: Option<String>,
    app_version_max: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CheckinDoc {
    device_id: String,
    at: DateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<String>,
    /// Absent (not null) when no ticket was issued: the unique index is sparse.
    #[serde(skip_serializing_if = "Option::is_none")]
    ticket: Option<String>,
    outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<DateTime>,
}

impl From<&CheckinRecord> for CheckinDoc {
    fn from(c: &CheckinRecord) -> Self {
        Self {
            device_id: c.device_id.to_string(),
            at: to_bson_time(c.at),
            app_version: c.app_version.clone(),
            platform: c.platform.clone(),
            ticket: c.ticket.as_ref().map(ToString::to_string),
            outcome: c.outcome.clone(),
            completed_at: c.completed_at.map(to_bson_time),
        }
    }
}

impl TryFrom<CheckinDoc> for CheckinRecord {
    type Error = StoreError;

    fn try_from(d: CheckinDoc) -> StoreResult<Self> {
        let ticket = d
            .ticket
            .as_deref()
            .map(Ticket::parse)
            .transpose()
            .map_err(|e| StoreError::Corrupt {
                collection: "checkins",
                id: d.device_id.clone(),
                reason: e.message,
            })?;
        Ok(CheckinRecord {
            device_id: parse_device_id("checkins", &d.device_id)?,
            at: from_bson_time(d.at),
            app_version: d.app_version,
            platform: d.platform,
            ticket,
            outcome: d.outcome,
            completed_at: d.completed_at.map(from_bson_time),
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct AuditDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    at: DateTime,
    actor: String,
    action: AuditAction,
    device_id: String,
    before: Option<Document>,
    after: Option<Document>,
}

impl TryFrom<&AuditEntry> for AuditDoc {
    type Error = StoreError;

    fn try_from(e: &AuditEntry) -> StoreResult<Self> {
        let corrupt = |reason: String| StoreError::Corrupt {
            collection: "audit",
            id: e.id.clone(),
            reason,
        };
        let snapshot = |r: &Option<Registration>| {
            r.as_ref()
                .map(|r| bson::to_document(&DeviceDoc::from(r)))
                .transpose()
                .map_err(|err| corrupt(err.to_string()))
        };
        Ok(Self {
            id: ObjectId::parse_str(&e.id).map_err(|err| corrupt(err.to_string()))?,
            at: to_bson_time(e.at),
            actor: e.actor.clone(),
            action: e.action,
            device_id: e.device_id.to_string(),
            before: snapshot(&e.before)?,
            after: snapshot(&e.after)?,
        })
    }
}

impl TryFrom<AuditDoc> for AuditEntry {
    type Error = StoreError;

    fn try_from(d: AuditDoc) -> StoreResult<Self> {
        let id = d.id.to_hex();
        let snapshot = |doc: Option<Document>| -> StoreResult<Option<Registration>> {
            doc.map(|doc| {
                bson::from_document::<DeviceDoc>(doc)
                    .map_err(|err| StoreError::Corrupt {
                        collection: "audit",
                        id: id.clone(),
                        reason: err.to_string(),
                    })
                    .and_then(Registration::try_from)
            })
            .transpose()
        };
        Ok(AuditEntry {
            before: snapshot(d.before)?,
            after: snapshot(d.after)?,
            device_id: parse_device_id("audit", &d.device_id)?,
            id,
            at: from_bson_time(d.at),
            actor: d.actor,
            action: d.action,
        })
    }
}
