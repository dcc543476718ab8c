//! The embedded store: everything in one mutex-guarded structure. It exists so
//! `cargo run -p controltower` works with no database; it keeps nothing across restarts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use time::{Duration, OffsetDateTime};

use super::{
    ActiveRegistration, AuditEntry, AuditQuery, CheckinRecord, DeviceQuery, StoreResult,
    TicketCompletion, UploadReport,
};
use crate::domain::{DeviceId, Registration, Status, Ticket};

#[derive(Default)]
struct Data {
    generation: u64,
    devices: BTreeMap<String, Registration>,
    checkins: Vec<CheckinRecord>,
    tickets: HashMap<Ticket, usize>,
    audit: Vec<AuditEntry>,
}

/// In-memory store.
#[derive(Clone)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
    retention: Duration,
}

impl MemoryStore {
    /// An empty store keeping check-ins for `retention`.
    pub fn new(retention: std::time::Duration) -> Self {
        Self {
            data: Arc::default(),
            retention: Duration::try_from(retention).unwrap_or(Duration::days(30)),
        }
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

    pub(super) async fn generation(&self) -> StoreResult<u64> {
        Ok(self.data().generation)
    }

    pub(super) async fn bump_generation(&self) -> StoreResult<u64> {
        let mut data = self.data();
        data.generation += 1;
        Ok(data.generation)
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
        self.data()
            .devices
            .insert(registration.device_id.to_string(), registration.clone());
        Ok(())
    }

    pub(super) async fn delete(&self, id: &DeviceId) -> StoreResult<Option<Registration>> {
        Ok(self.data().devices.remove(id.as_str()))
    }

    pub(super) async fn save_many(&self, registrations: &[Registration]) -> Vec<StoreResult<()>> {
        let mut data = self.data();
        registrations
            .iter()
            .map(|r| {
                data.devices.insert(r.device_id.to_string(), r.clone());
                Ok(())
            })
            .collect()
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
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub(super) async fn expire_due(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let mut data = self.data();
        let mut count = 0;
        for reg in data.devices.values_mut() {
            if reg.status == Status::Active && reg.effective_status(now) == Status::Expired {
                reg.status = Status::Expired;
                count += 1;
            }
        }
        Ok(count)
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
