//! Persistence. [`Store`] is the one door to the data: MongoDB in production
//! ([`mongo::MongoStore`], the only module that imports `mongodb`) or, for a zero-set-up
//! local run, the embedded [`memory::MemoryStore`]. Both pass the same contract suite
//! (`tests/store_contract.rs`), so behaviour does not depend on which one runs.
//!
//! The store persists; it does not decide. Use cases (who may upload, when a registration is
//! fulfilled) live in `service` and `domain`.

pub mod memory;
pub mod mongo;

use time::OffsetDateTime;

use crate::domain::{DeviceId, Registration, Status, Ticket};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer or refused the operation; callers answer 503.
    #[error("database unavailable while trying to {action}: {source}")]
    Unavailable {
        /// What was being done, e.g. "save registration dev-1".
        action: String,
        /// The driver's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored document does not match the schema this version expects.
    #[error("stored document {id} in {collection} is unreadable: {reason}")]
    Corrupt {
        /// Collection name.
        collection: &'static str,
        /// Document id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// What the hot-path snapshot needs of one active registration: enough to answer its
/// check-ins without the database.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveRegistration {
    /// The device.
    pub device_id: String,
    /// When it stops asking.
    pub expires_at: Option<OffsetDateTime>,
    /// Why the logs are wanted (told to the client).
    pub reason: String,
    /// Logs since then are wanted.
    pub log_since: Option<OffsetDateTime>,
    /// Platforms that upload; empty = any.
    pub platforms: Vec<String>,
    /// Client versions that upload.
    pub app_version: Option<crate::domain::VersionRange>,
}

impl ActiveRegistration {
    /// The snapshot's view of a registration.
    pub fn of(registration: &Registration) -> Self {
        Self {
            device_id: registration.device_id.to_string(),
            expires_at: registration.spec.expires_at,
            reason: registration.spec.reason.clone(),
            log_since: registration.spec.log_since,
            platforms: registration.spec.platforms.clone(),
            app_version: registration.spec.app_version.clone(),
        }
    }
}

/// One change of the registrations, as the snapshot sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The device's registration is active, with these settings (new or changed).
    Active(ActiveRegistration),
    /// The device has no active registration any more (revoked, fulfilled, expired, deleted).
    Ended(String),
}

/// Why the change feed stopped.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Changes were lost and cannot be replayed (the resume point is gone, the stream was
    /// invalidated, the reader fell behind): only a full reload brings the snapshot back.
    #[error("the change feed lost changes: {0}")]
    Gap(String),
    /// The store did not answer; the feed can resume from its position once it does.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a feed stands: resuming from it replays every change after it.
#[derive(Debug, Clone)]
pub enum FeedPosition {
    /// A MongoDB change stream's resume token.
    Mongo(mongo::FeedPosition),
}

/// The registrations' changes, in the order they were made, from when it was opened.
pub enum Feed {
    /// A MongoDB change stream.
    Mongo(Box<mongo::Feed>),
    /// The embedded store's in-process feed.
    Memory(memory::Feed),
}

impl Feed {
    /// The next change, waiting at most `wait`: `Ok(None)` when none came in that time (the
    /// feed is alive and nothing changed).
    pub async fn next(&mut self, wait: std::time::Duration) -> Result<Option<Change>, FeedError> {
        match self {
            Feed::Mongo(feed) => feed.next(wait).await,
            Feed::Memory(feed) => feed.next(wait).await,
        }
    }

    /// Where the feed stands now (`None`: it cannot be resumed, e.g. the embedded store's).
    pub fn position(&self) -> Option<FeedPosition> {
        match self {
            Feed::Mongo(feed) => feed.position().map(FeedPosition::Mongo),
            Feed::Memory(_) => None,
        }
    }
}

/// One check-in of a registered device.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct CheckinRecord {
    /// The device.
    #[schema(value_type = String)]
    #[serde(serialize_with = "serialize_display")]
    pub device_id: DeviceId,
    /// When it checked in.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Client version it sent.
    pub app_version: Option<String>,
    /// Client platform it sent.
    pub platform: Option<String>,
    /// Ticket issued (absent when the device was told not to upload).
    #[schema(value_type = Option<String>)]
    #[serde(serialize_with = "serialize_opt_display")]
    pub ticket: Option<Ticket>,
    /// What it was told: `upload`, or why not (`platform`, `app_version`, `expired`, …).
    pub outcome: String,
    /// When its upload completed, if it did.
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
}

fn serialize_display<T: std::fmt::Display, S: serde::Serializer>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn serialize_opt_display<T: std::fmt::Display, S: serde::Serializer>(
    v: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// What completing a ticket found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketCompletion {
    /// First completion of this ticket: it counts as an upload of this device.
    Completed(DeviceId),
    /// The ticket was completed before (a client retry): nothing more to count.
    AlreadyCompleted(DeviceId),
    /// No such ticket (never issued, or older than the check-in retention).
    Unknown,
}

/// Upload details a client reports with its completion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// Size of the upload in bytes.
    pub bytes: Option<u64>,
    /// Id the dump service gave the upload.
    pub dump_id: Option<String>,
}

/// The admin action an audit entry records.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A new registration.
    Register,
    /// A registration replaced (or re-activated).
    Update,
    /// A registration revoked by an operator (it stays readable).
    Revoke,
    /// A registration deleted by an operator (`before` holds what it was).
    Delete,
}

/// One admin change: who, what, when, and the registration before and after.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Time-ordered id; also the pagination cursor.
    pub id: String,
    /// When the change was made.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Name of the admin token that made it.
    pub actor: String,
    /// What was done.
    pub action: AuditAction,
    /// The device it concerns.
    #[serde(serialize_with = "serialize_display")]
    #[schema(value_type = String)]
    pub device_id: DeviceId,
    /// Registration before the change (absent for a new one).
    pub before: Option<Registration>,
    /// Registration after the change.
    pub after: Option<Registration>,
}

impl AuditEntry {
    /// A new entry with a fresh time-ordered id.
    pub fn new(
        actor: &str,
        action: AuditAction,
        device_id: DeviceId,
        before: Option<Registration>,
        after: Option<Registration>,
        at: OffsetDateTime,
    ) -> Self {
        Self {
            id: mongodb::bson::oid::ObjectId::new().to_hex(),
            at,
            actor: actor.to_owned(),
            action,
            device_id,
            before,
            after,
        }
    }
}

/// Filter and page of a registration listing.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    /// Only registrations with this (effective) status.
    pub status: Option<Status>,
    /// Only ids after this one (the cursor).
    pub after: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// Filter and page of the audit log (newest first).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only entries about this device.
    pub device_id: Option<DeviceId>,
    /// Only entries older than this id (the cursor).
    pub before: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// The store the service runs on.
#[derive(Clone)]
pub enum Store {
    /// MongoDB (production).
    Mongo(mongo::MongoStore),
    /// Embedded, in memory (local runs; nothing survives a restart).
    Memory(memory::MemoryStore),
}

/// Calls the same method on whichever store it is. With an action (what the operation does,
/// for the error), a MongoDB operation is bounded by `MONGODB_OPERATION_TIMEOUT`
/// ([`mongo::MongoStore::bounded`]); without, it is not: the start-up work and the snapshot's
/// full load, which take as long as the data needs.
macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Mongo($store) => $call,
            Store::Memory($store) => $call,
        }
    };
    ($self:ident, $action:literal, $store:ident => $call:expr) => {
        match $self {
            Store::Mongo($store) => $store.bounded($action, async { $call }).await,
            Store::Memory($store) => $call,
        }
    };
}

impl Store {
    /// A short name for logs and `/healthz/ready`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Mongo(_) => "mongodb",
            Store::Memory(_) => "memory",
        }
    }

    /// Creates indexes (idempotent).
    pub async fn prepare(&self) -> StoreResult<()> {
        dispatch!(self, s => s.prepare().await)
    }

    /// Opens the feed of registration changes: from now, or, with `from`, from a position an
    /// earlier feed reached (every change since is replayed). Open it *before* a full load,
    /// so no change made during the load is missed (one seen twice is harmless: a change
    /// carries the registration's whole state). `Err(FeedError::Gap)` when `from` can no
    /// longer be resumed. `wait` is the longest a read of the feed waits when nothing
    /// changes (so a dead store is noticed within it).
    pub async fn watch(
        &self,
        from: Option<&FeedPosition>,
        wait: std::time::Duration,
    ) -> Result<Feed, FeedError> {
        match (self, from) {
            (Store::Mongo(s), from) => Ok(Feed::Mongo(Box::new(
                s.watch(from.map(|FeedPosition::Mongo(p)| p), wait).await?,
            ))),
            (Store::Memory(s), None) => Ok(Feed::Memory(s.watch())),
            (Store::Memory(_), Some(_)) => Err(FeedError::Gap(
                "the embedded store's feed cannot be resumed".into(),
            )),
        }
    }

    /// Streams the active, unexpired registrations into `sink` (a million of them must not
    /// be held twice in memory while the snapshot is built).
    pub async fn load_active(
        &self,
        now: OffsetDateTime,
        sink: &mut (dyn FnMut(ActiveRegistration) + Send),
    ) -> StoreResult<()> {
        dispatch!(self, s => s.load_active(now, sink).await)
    }

    /// One registration.
    pub async fn get(&self, id: &DeviceId) -> StoreResult<Option<Registration>> {
        dispatch!(self, "read a registration", s => s.get(id).await)
    }

    /// Several registrations at once (batch registration).
    pub async fn get_many(&self, ids: &[DeviceId]) -> StoreResult<Vec<Registration>> {
        dispatch!(self, "read registrations", s => s.get_many(ids).await)
    }

    /// Writes a registration (insert or replace), acknowledged by a majority.
    pub async fn save(&self, registration: &Registration) -> StoreResult<()> {
        dispatch!(self, "save a registration", s => s.save(registration).await)
    }

    /// Deletes a registration; returns what was deleted.
    pub async fn delete(&self, id: &DeviceId) -> StoreResult<Option<Registration>> {
        dispatch!(self, "delete a registration", s => s.delete(id).await)
    }

    /// Writes registrations and their audit entries atomically (one transaction on
    /// MongoDB): either all of them are stored or none is. `new` says, per registration,
    /// whether it is expected not to exist yet (on MongoDB it is inserted, and if one appeared
    /// meanwhile nothing is written and the error says so; the embedded store, one process,
    /// just writes it).
    pub async fn save_with_audit(
        &self,
        registrations: &[(Registration, bool)],
        audit: &[AuditEntry],
    ) -> StoreResult<()> {
        dispatch!(self, "save registrations with their audit entries", s => s.save_with_audit(registrations, audit).await)
    }

    /// A page of registrations ordered by device id.
    pub async fn list(
        &self,
        query: &DeviceQuery,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Registration>> {
        dispatch!(self, "list registrations", s => s.list(query, now).await)
    }

    /// Sets the status if it still is `from` (compare-and-set); true when it changed.
    pub async fn transition(
        &self,
        id: &DeviceId,
        from: Status,
        to: Status,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        dispatch!(self, "change a registration's status", s => s.transition(id, from, to, now).await)
    }

    /// Marks active registrations past `expires_at` as expired; returns how many.
    pub async fn expire_due(&self, now: OffsetDateTime) -> StoreResult<u64> {
        dispatch!(self, "expire registrations past their time", s => s.expire_due(now).await)
    }

    /// Records check-ins of registered devices (written in batches by the recorder) and sets
    /// their devices' `last_checkin_at`.
    pub async fn record_checkins(&self, checkins: &[CheckinRecord]) -> StoreResult<()> {
        dispatch!(self, "record check-ins", s => s.record_checkins(checkins).await)
    }

    /// The device's latest check-ins, newest first.
    pub async fn recent_checkins(
        &self,
        id: &DeviceId,
        limit: usize,
    ) -> StoreResult<Vec<CheckinRecord>> {
        dispatch!(self, "read a device's check-ins", s => s.recent_checkins(id, limit).await)
    }

    /// Marks a ticket's upload complete (once).
    pub async fn complete_ticket(
        &self,
        ticket: &Ticket,
        report: &UploadReport,
        at: OffsetDateTime,
    ) -> StoreResult<TicketCompletion> {
        dispatch!(self, "complete an upload ticket", s => s.complete_ticket(ticket, report, at).await)
    }

    /// Adds one upload to an active registration; returns it after the increment, or
    /// `None` when it is no longer active.
    pub async fn count_upload(&self, id: &DeviceId) -> StoreResult<Option<Registration>> {
        dispatch!(self, "count an upload", s => s.count_upload(id).await)
    }

    /// Appends audit entries, acknowledged by a majority.
    pub async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<()> {
        dispatch!(self, "append audit entries", s => s.append_audit(entries).await)
    }

    /// A page of the audit log, newest first.
    pub async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        dispatch!(self, "list the audit log", s => s.list_audit(query).await)
    }
}
