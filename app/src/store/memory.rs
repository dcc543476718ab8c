//! The embedded store: everything in one mutex-guarded structure. It exists so
//! `cargo run -p controltower` works with no database; it keeps nothing across restarts.
//! Its change feed is an in-process broadcast of every registration change: one process is
//! the whole deployment, so there is nothing to resume.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use time::{Duration, OffsetDateTime};
use tokio::sync::broadcast;

use super::{
    ActiveRegistration, AuditEntry, AuditQuery, Change, CheckinRecord, DeviceQuery, FeedError,
    StoreResult, TicketCompletion, UploadReport,
};
use crate::domain::{DeviceId, Registration, Status, Ticket};

#[derive(Default)]
struct Data {
    devices: BTreeMap<String, Registration>,
    checkins: Vec<CheckinRecord>,
    tickets: HashMap<Ticket, usize>,
    audit: Vec<AuditEntry>,
}

/// Changes a feed may fall behind by before it has a gap (and its reader reloads).
const FEED_CAPACITY: usize = 65_536;

/// What the in-process feed carries: a change, or (tests) a simulated loss of changes.
type Published = Result<Change, String>;

/// In-memory store.
#[derive(Clone)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
    retention: Duration,
    changes: broadcast::Sender<Published>,
}

/// The embedded store's change feed.
pub struct Feed {
    changes: broadcast::Receiver<Published>,
}

impl Feed {
    pub(super) async fn next(
        &mut self,
        wait: std::time::Duration,
    ) -> Result<Option<Change>, FeedError> {
        match tokio::time::timeout(wait, self.changes.recv()).await {
            Err(_) => Ok(None),
            Ok(Ok(Ok(change))) => Ok(Some(change)),
            Ok(Ok(Err(reason))) => Err(FeedError::Gap(reason)),
            Ok(Err(broadcast::error::RecvError::Lagged(missed))) => Err(FeedError::Gap(format!(
                "the reader fell {missed} changes behind"
            ))),
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                Err(FeedError::Gap("the store was dropped".into()))
            }
        }
    }
}

impl MemoryStore {
    /// An empty store keeping check-ins for `retention`.
    pub fn new(retention: std::time::Duration) -> Self {
        Self::with_feed_capacity(retention, FEED_CAPACITY)
    }

    /// An empty store whose feed readers have a gap once `capacity` changes behind.
    pub fn with_feed_capacity(retention: std::time::Duration, capacity: usize) -> Self {
        Self {
            data: Arc::default(),
            retention: Duration::try_from(retention).unwrap_or(Duration::days(30)),
            changes: broadcast::channel(capacity.max(1)).0,
        }
    }

    pub(super) fn watch(&self) -> Feed {
        Feed {
            changes: self.changes.subscribe(),
        }
    }

    /// Makes every open feed report a gap, as a MongoDB change stream does when it is
    /// invalidated or its resume point is gone (tests of the reload that follows).
    pub fn interrupt_feeds(&self, reason: &str) {
        let _no_reader = self.changes.send(Err(reason.to_owned()));
    }

    /// Tells the feeds what the device's registration is now.
    fn publish(&self, data: &Data, id: &str) {
        let now = crate::domain::now();
        let change = match data.devices.get(id) {
            Some(reg) if reg.effective_status(now) == Status::Active => {
                Change::Active(ActiveRegistration::of(reg))
            }
            _ => Change::Ended(id.to_owned()),
        };
        let _no_reader = self.changes.send(Ok(change));
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        // A panic while holding the lock cannot leave `Data` half-updated in a way that
        // matters more than losing the whole in-memory store, so keep serving.
        self.data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) async fn prepare(&self) -> StoreResult<()> {
        Ok(())
    }

    pub(super) async fn load_active(
        &self,
        now: OffsetDateTime,
        sink: &mut (dyn FnMut(ActiveRegistration) + Send),
    ) -> StoreResult<()> {
        let data = self.data();
        for reg in data.devices.values() {
            if reg.effective_status(now) == Status::Active {
                sink(ActiveRegistration::of(reg));
            }
        }
        Ok(())
    }

    pub(super) async fn get(&self, id: &DeviceId) -> StoreResult<Option<Registration>> {
        Ok(self.data().devices.get(id.as_str()).cloned())
    }

    pub(super) async fn get_many(&self, ids: &[DeviceId]) -> StoreResult<Vec<Registration>> {
        let data = self.data();
        Ok(ids
            .iter()
            .filter_map(|id| data.devices.get(id.as_str()).cloned())
            .collect())
    }

    pub(super) async fn save(&self, registration: &Registration) -> StoreResult<()> {
        let mut data = self.data();
        let id = registration.device_id.to_string();
        data.devices.insert(id.clone(), registration.clone());
        self.publish(&data, &id);
        Ok(())
    }

    pub(super) async fn delete(&self, id: &DeviceId) -> StoreResult<Option<Registration>> {
        let mut data = self.data();
        let removed = data.devices.remove(id.as_str());
        if removed.is_some() {
            self.publish(&data, id.as_str());
        }
        Ok(removed)
    }

    pub(super) async fn save_with_audit(
        &self,
        registrations: &[(Registration, bool)],
        audit: &[AuditEntry],
    ) -> StoreResult<()> {
        let mut data = self.data();
        for (registration, _) in registrations {
            let id = registration.device_id.to_string();
            data.devices.insert(id.clone(), registration.clone());
            self.publish(&data, &id);
        }
        data.audit.extend_from_slice(audit);
        Ok(())
    }

    pub(super) async fn list(
        &self,
        query: &DeviceQuery,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Registration>> {
        let data = self.data();
        let start = match &query.after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        Ok(data
            .devices
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| query.status.is_none_or(|s| r.effective_status(now) == s))
            .take(query.limit)
            .cloned()
            .collect())
    }

    pub(super) async fn transition(
        &self,
        id: &DeviceId,
        from: Status,
        to: Status,
        now: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut data = self.data();
        match data.devices.get_mut(id.as_str()) {
            Some(reg) if reg.status == from => {
                reg.status = to;
                if to == Status::Revoked {
                    reg.updated_at = now;
                }
                self.publish(&data, id.as_str());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub(super) async fn expire_due(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let mut data = self.data();
        let mut expired = Vec::new();
        for (id, reg) in data.devices.iter_mut() {
            if reg.status == Status::Active && reg.effective_status(now) == Status::Expired {
                reg.status = Status::Expired;
                expired.push(id.clone());
            }
        }
        for id in &expired {
            self.publish(&data, id);
        }
        Ok(expired.len() as u64)
    }

    pub(super) async fn record_checkins(&self, checkins: &[CheckinRecord]) -> StoreResult<()> {
        let mut data = self.data();
        for checkin in checkins {
            let cutoff = checkin.at - self.retention;
            if data.checkins.first().is_some_and(|c| c.at < cutoff) {
                data.checkins.retain(|c| c.at >= cutoff);
                let tickets = data
                    .checkins
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| c.ticket.clone().map(|t| (t, i)))
                    .collect();
                data.tickets = tickets;
            }
            if let Some(ticket) = &checkin.ticket {
                // Recorded already (the same batch again): a ticket is stored once, as on MongoDB.
                if data.tickets.contains_key(ticket) {
                    continue;
                }
                let index = data.checkins.len();
                data.tickets.insert(ticket.clone(), index);
            }
            data.checkins.push(checkin.clone());
            if let Some(reg) = data.devices.get_mut(checkin.device_id.as_str()) {
                reg.last_checkin_at = reg.last_checkin_at.max(Some(checkin.at));
            }
        }
        Ok(())
    }

    pub(super) async fn recent_checkins(
        &self,
        id: &DeviceId,
        limit: usize,
    ) -> StoreResult<Vec<CheckinRecord>> {
        let data = self.data();
        Ok(data
            .checkins
            .iter()
            .rev()
            .filter(|c| &c.device_id == id)
            .take(limit)
            .cloned()
            .collect())
    }

    pub(super) async fn complete_ticket(
        &self,
        ticket: &Ticket,
        _report: &UploadReport,
        at: OffsetDateTime,
    ) -> StoreResult<TicketCompletion> {
        let mut data = self.data();
        let Some(&index) = data.tickets.get(ticket) else {
            return Ok(TicketCompletion::Unknown);
        };
        let Some(checkin) = data.checkins.get_mut(index) else {
            return Ok(TicketCompletion::Unknown);
        };
        if checkin.completed_at.is_some() {
            return Ok(TicketCompletion::AlreadyCompleted(
                checkin.device_id.clone(),
            ));
        }
        checkin.completed_at = Some(at);
        Ok(TicketCompletion::Completed(checkin.device_id.clone()))
    }

    pub(super) async fn count_upload(&self, id: &DeviceId) -> StoreResult<Option<Registration>> {
        let mut data = self.data();
        Ok(match data.devices.get_mut(id.as_str()) {
            Some(reg) if reg.status == Status::Active => {
                reg.uploads += 1;
                Some(reg.clone())
            }
            _ => None,
        })
    }

    pub(super) async fn append_audit(&self, entries: &[AuditEntry]) -> StoreResult<()> {
        self.data().audit.extend_from_slice(entries);
        Ok(())
    }

    pub(super) async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let data = self.data();
        Ok(data
            .audit
            .iter()
            .rev()
            .filter(|e| query.before.as_ref().is_none_or(|b| &e.id < b))
            .filter(|e| query.device_id.as_ref().is_none_or(|d| &e.device_id == d))
            .take(query.limit)
            .cloned()
            .collect())
    }
}
