//! Registrations: the admin side. Every change is saved with its audit entry
//! (majority-acknowledged, one transaction), applied to this replica's snapshot at once, and
//! reaches the other replicas through the store's change feed.

use std::collections::HashMap;
use std::sync::Arc;

use crate::domain::{
    DeviceId, InvalidInput, Registration, RegistrationInput, RegistrationSpec, Status,
};
use crate::error::ApiError;
use crate::recorder::Recorder;
use crate::registry::Registry;
use crate::store::{AuditAction, AuditEntry, AuditQuery, CheckinRecord, DeviceQuery, Store};

/// How many recent check-ins a device's detail shows.
pub const RECENT_CHECKINS: usize = 20;

/// A registration with its recent check-ins.
#[derive(Debug, Clone)]
pub struct RegistrationDetail {
    /// The registration.
    pub registration: Registration,
    /// Newest first.
    pub recent_checkins: Vec<CheckinRecord>,
}

/// One item of a batch, as parsed from JSON or CSV.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// Where the item is, as the caller will look for it: `line 3` (CSV), `items[2]` (JSON).
    pub position: String,
    /// The device id, or why the item could not even name one.
    pub parsed: Result<(DeviceId, RegistrationInput), InvalidInput>,
    /// The raw id, for the report when it is invalid.
    pub raw_device_id: Option<String>,
}

/// The outcome of one batch item.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemOutcome {
    /// A new registration.
    Created,
    /// An existing one replaced.
    Updated,
    /// Refused; nothing written for this item.
    Failed(InvalidInput),
    /// Valid, but the database failed for this item.
    Unavailable,
}

/// Registrations saved per transaction in a batch: big enough that a 10 000-item batch takes
/// a few transactions, small enough to stay far below MongoDB's transaction limits (60 s,
/// 16 MiB per oplog entry before 4.2).
pub const BATCH_TRANSACTION: usize = 1000;

/// Registration use cases.
#[derive(Clone)]
pub struct RegistrationService {
    store: Store,
    registry: Arc<Registry>,
    recorder: Recorder,
}

impl RegistrationService {
    /// A service writing to `store`, patching `registry`; `recorder` is flushed before a
    /// device's check-ins are shown, so an operator sees the check-in they just triggered.
    pub fn new(store: Store, registry: Arc<Registry>, recorder: Recorder) -> Self {
        Self {
            store,
            registry,
            recorder,
        }
    }

    fn not_found(device: &DeviceId) -> ApiError {
        ApiError::NotFound {
            code: "device_not_found",
            message: format!(
                "device {device} has no registration; register it with PUT /v1/devices/{device}"
            ),
        }
    }

    /// Creates or replaces a registration. Returns it and whether it was created.
    pub async fn put(
        &self,
        device: DeviceId,
        input: RegistrationInput,
        actor: &str,
    ) -> Result<(Registration, bool), ApiError> {
        let now = crate::domain::now();
        let spec = RegistrationSpec::parse(input, now)?;
        let before = self.store.get(&device).await?;
        let created = before.is_none();
        let after = match before.clone() {
            Some(mut existing) => {
                existing.update(spec, actor, now);
                existing
            }
            None => Registration::new(device.clone(), spec, actor, now),
        };
        let action = if created {
            AuditAction::Register
        } else {
            AuditAction::Update
        };
        let entry = AuditEntry::new(
            actor,
            action,
            device.clone(),
            before,
            Some(after.clone()),
            now,
        );
        // Replaced with upsert whether new or not: a concurrent PUT of the same device just
        // makes this the later write, not an error.
        self.store
            .save_with_audit(&[(after.clone(), false)], &[entry])
            .await?;
        self.registry.upsert(&after);
        tracing::info!(device_id = %device, actor, created, "registration saved");
        Ok((after, created))
    }

    /// A registration and its recent check-ins.
    pub async fn get(&self, device: &DeviceId) -> Result<RegistrationDetail, ApiError> {
        self.recorder.flush().await;
        let mut registration = self
            .store
            .get(device)
            .await?
            .ok_or_else(|| Self::not_found(device))?;
        registration.status = registration.effective_status(crate::domain::now());
        let recent_checkins = self.store.recent_checkins(device, RECENT_CHECKINS).await?;
        Ok(RegistrationDetail {
            registration,
            recent_checkins,
        })
    }

    /// A page of registrations; the second value is the cursor of the next page.
    pub async fn list(
        &self,
        query: DeviceQuery,
    ) -> Result<(Vec<Registration>, Option<String>), ApiError> {
        let now = crate::domain::now();
        let limit = query.limit;
        // One more than asked tells whether a next page exists without a second query.
        let mut page = self
            .store
            .list(
                &DeviceQuery {
                    limit: limit + 1,
                    ..query
                },
                now,
            )
            .await?;
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|r| r.device_id.to_string())
        } else {
            None
        };
        for registration in &mut page {
            registration.status = registration.effective_status(now);
        }
        Ok((page, next))
    }

    /// Revokes a registration: it stays readable with status `revoked`. Revoking twice is
    /// not an error. Returns it.
    pub async fn revoke(&self, device: &DeviceId, actor: &str) -> Result<Registration, ApiError> {
        let now = crate::domain::now();
        let before = self
            .store
            .get(device)
            .await?
            .ok_or_else(|| Self::not_found(device))?;
        if before.status == Status::Revoked {
            return Ok(before);
        }
        let mut after = before.clone();
        after.status = Status::Revoked;
        after.updated_by = actor.to_owned();
        after.updated_at = now;
        self.store.save(&after).await?;
        self.store
            .append_audit(&[AuditEntry::new(
                actor,
                AuditAction::Revoke,
                device.clone(),
                Some(before),
                Some(after.clone()),
                now,
            )])
            .await?;
        self.registry.remove(device);
        tracing::info!(device_id = %device, actor, "registration revoked");
        Ok(after)
    }

    /// Deletes a registration: later reads answer 404; the audit log keeps what it was.
    pub async fn delete(&self, device: &DeviceId, actor: &str) -> Result<(), ApiError> {
        let now = crate::domain::now();
        let before = self
            .store
            .delete(device)
            .await?
            .ok_or_else(|| Self::not_found(device))?;
        self.store
            .append_audit(&[AuditEntry::new(
                actor,
                AuditAction::Delete,
                device.clone(),
                Some(before),
                None,
                now,
            )])
            .await?;
        self.registry.remove(device);
        tracing::info!(device_id = %device, actor, "registration deleted");
        Ok(())
    }

    /// Registers many devices. Each item succeeds or fails on its own: one bad line never
    /// drops the good ones. Returns one outcome per item, in order.
    pub async fn batch(
        &self,
        items: Vec<BatchItem>,
        actor: &str,
    ) -> Result<Vec<ItemOutcome>, ApiError> {
        let now = crate::domain::now();
        let mut outcomes: Vec<Option<ItemOutcome>> = vec![None; items.len()];
        let mut valid: Vec<(usize, DeviceId, RegistrationSpec)> = Vec::new();
        let mut first_seen: HashMap<DeviceId, String> = HashMap::new();
        for (slot, item) in items.into_iter().enumerate() {
            let checked = item.parsed.clone().and_then(|(device, input)| {
                if let Some(first) = first_seen.get(&device) {
                    return Err(InvalidInput::new(
                        "duplicate_device_id",
                        format!(
                            "device {device} already appears at {first} in this batch; keep one"
                        ),
                    ));
                }
                first_seen.insert(device.clone(), item.position.clone());
                Ok((device, RegistrationSpec::parse(input, now)?))
            });
            match checked {
                Ok((device, spec)) => valid.push((slot, device, spec)),
                Err(e) => {
                    let message = format!("{}: {}", item.position, e.message);
                    outcomes[slot] = Some(ItemOutcome::Failed(InvalidInput::new(e.code, message)));
                }
            }
        }

        let ids: Vec<DeviceId> = valid.iter().map(|(_, d, _)| d.clone()).collect();
        let mut existing: HashMap<DeviceId, Registration> = self
            .store
            .get_many(&ids)
            .await?
            .into_iter()
            .map(|r| (r.device_id.clone(), r))
            .collect();
        let mut planned = Vec::with_capacity(valid.len());
        for (slot, device, spec) in valid {
            let before = existing.remove(&device);
            let after = match before.clone() {
                Some(mut r) => {
                    r.update(spec, actor, now);
                    r
                }
                None => Registration::new(device, spec, actor, now),
            };
            planned.push((slot, before, after));
        }
        // Saved in chunks, each one transaction with its audit entries: a registration is never
        // stored without its entry, and a failure leaves whole chunks saved or not.
        let mut saved = 0;
        let mut failure: Option<crate::store::StoreError> = None;
        for chunk in planned.chunks(BATCH_TRANSACTION) {
            if failure.is_some() {
                for (slot, _, _) in chunk {
                    outcomes[*slot] = Some(ItemOutcome::Unavailable);
                }
                continue;
            }
            let writes: Vec<(Registration, bool)> = chunk
                .iter()
                .map(|(_, before, after)| (after.clone(), before.is_none()))
                .collect();
            let audit: Vec<AuditEntry> = chunk
                .iter()
                .map(|(_, before, after)| {
                    let action = if before.is_none() {
                        AuditAction::Register
                    } else {
                        AuditAction::Update
                    };
                    AuditEntry::new(
                        actor,
                        action,
                        after.device_id.clone(),
                        before.clone(),
                        Some(after.clone()),
                        now,
                    )
                })
                .collect();
            match self.store.save_with_audit(&writes, &audit).await {
                Ok(()) => {
                    for (slot, before, after) in chunk {
                        self.registry.upsert(after);
                        outcomes[*slot] = Some(if before.is_none() {
                            ItemOutcome::Created
                        } else {
                            ItemOutcome::Updated
                        });
                    }
                    saved += chunk.len();
                }
                Err(error) => {
                    tracing::warn!(error = %error, saved, "batch stopped: a chunk was not saved");
                    failure = Some(error);
                    for (slot, _, _) in chunk {
                        outcomes[*slot] = Some(ItemOutcome::Unavailable);
                    }
                }
            }
        }
        tracing::info!(actor, saved, "batch registration");
        if saved == 0
            && let Some(error) = failure
        {
            // Nothing of it was stored (a 503 says so): send it again as it is.
            return Err(ApiError::Unavailable(error));
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(ItemOutcome::Unavailable))
            .collect())
    }

    /// A page of the audit log, newest first, and the cursor of the next page.
    pub async fn audit(
        &self,
        query: AuditQuery,
    ) -> Result<(Vec<AuditEntry>, Option<String>), ApiError> {
        let limit = query.limit;
        let mut page = self
            .store
            .list_audit(&AuditQuery {
                limit: limit + 1,
                ..query
            })
            .await?;
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok((page, next))
    }
}
