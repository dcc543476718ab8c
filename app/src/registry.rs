//! The hot-path snapshot: the ids of the active registrations, in memory.
//!
//! Almost every check-in comes from a device nobody registered. Answering those from this
//! set, without a database round-trip, is what lets a replica absorb the start-up spike after
//! maintenance and keep answering while MongoDB is down. The set is reloaded when the
//! store's generation changes (see [`Registry::refresh`]) and patched at once on the replica
//! that served an admin write.

use std::collections::HashSet;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::domain::DeviceId;
use crate::store::{Store, StoreResult};
use crate::telemetry;

#[derive(Default)]
struct Snapshot {
    ids: HashSet<Box<str>>,
    next_expiry: Option<OffsetDateTime>,
    generation: Option<u64>,
    verified_at: Option<Instant>,
    /// While a reload runs, local changes are journalled here and replayed over the freshly
    /// loaded set, so a reload that started before an admin write cannot undo it.
    journal: Option<Vec<(Box<str>, bool)>>,
}

/// What one [`Registry::refresh`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// The generation had not changed: nothing loaded.
    Unchanged,
    /// The set was reloaded.
    Reloaded {
        /// Active registrations now in the set.
        active: usize,
    },
}

/// The in-memory set of active registrations.
#[derive(Default)]
pub struct Registry {
    snapshot: RwLock<Snapshot>,
}

impl Registry {
    /// An empty, not-yet-loaded registry.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        // Every write below leaves the snapshot consistent before it can panic, so a
        // poisoned lock still guards usable data.
        self.snapshot.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.snapshot.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the device has an active registration (as far as this replica knows).
    pub fn contains(&self, id: &DeviceId) -> bool {
        self.read().ids.contains(id.as_str())
    }

    /// Whether the first load has happened.
    pub fn is_loaded(&self) -> bool {
        self.read().generation.is_some()
    }

    /// Number of active registrations in the snapshot.
    pub fn len(&self) -> usize {
        self.read().ids.len()
    }

    /// Whether the snapshot holds no registration.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Time since the snapshot was last confirmed to match the store.
    pub fn age(&self) -> Option<Duration> {
        self.read().verified_at.map(|at| at.elapsed())
    }

    /// Records, on this replica, that a registration became active (`true`) or ended.
    pub fn set_active(&self, id: &DeviceId, active: bool) {
        let mut snap = self.write();
        let key: Box<str> = id.as_str().into();
        if let Some(journal) = &mut snap.journal {
            journal.push((key.clone(), active));
        }
        if active {
            snap.ids.insert(key);
        } else {
            snap.ids.remove(&key);
        }
    }

    /// Brings the snapshot up to date: sweeps expired registrations when one is due, then
    /// reloads if the store's generation changed (or `force`).
    pub async fn refresh(&self, store: &Store, force: bool) -> StoreResult<Refresh> {
        let now = crate::domain::now();
        let sweep_due = self.read().next_expiry.is_some_and(|at| at <= now);
        if sweep_due && store.expire_due(now).await? > 0 {
            store.bump_generation().await?;
        }
        let generation = store.generation().await?;
        if !force && !sweep_due && self.read().generation == Some(generation) {
            self.write().verified_at = Some(Instant::now());
            return Ok(Refresh::Unchanged);
        }
        let started = Instant::now();
        self.write().journal = Some(Vec::new());
        let loaded = store.load_active(now).await;
        let mut snap = self.write();
        let journal = snap.journal.take().unwrap_or_default();
        let set = loaded?;
        let mut ids: HashSet<Box<str>> = set.ids.into_iter().map(String::into_boxed_str).collect();
        for (id, active) in journal {
            if active {
                ids.insert(id);
            } else {
                ids.remove(&id);
            }
        }
        let active = ids.len();
        snap.ids = ids;
        snap.next_expiry = set.next_expiry;
        snap.generation = Some(generation);
        snap.verified_at = Some(Instant::now());
        drop(snap);
        telemetry::snapshot_reloaded(active, started.elapsed());
        Ok(Refresh::Reloaded { active })
    }
}

/// Runs [`Registry::refresh`] every `interval` until `stop` fires. Errors are logged once
/// when the store becomes unreachable and once when it is back, not at every poll.
pub async fn run_refresher(
    registry: Arc<Registry>,
    store: Store,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        match registry.refresh(&store, false).await {
            Ok(outcome) => {
                if failing {
                    tracing::info!("snapshot refresh recovered: the database answers again");
                    failing = false;
                }
                if let Refresh::Reloaded { active } = outcome {
                    tracing::debug!(active, "snapshot reloaded");
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(
                        error = %error,
                        "snapshot refresh failed; unregistered devices are still answered from the last snapshot"
                    );
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Registration, RegistrationInput, RegistrationSpec};
    use crate::store::memory::MemoryStore;

    fn id(s: &str) -> DeviceId {
        DeviceId::parse(s).unwrap()
    }

    async fn register(store: &Store, device: &str, expires_at: Option<&str>) {
        let now = crate::domain::now();
        let input = RegistrationInput {
            reason: "test".into(),
            expires_at: expires_at.map(Into::into),
            ..Default::default()
        };
        let spec = RegistrationSpec::parse(input, now).unwrap();
        store
            .save(&Registration::new(id(device), spec, "t", now))
            .await
            .unwrap();
        store.bump_generation().await.unwrap();
    }

    #[tokio::test]
    async fn reloads_only_when_the_generation_changes() {
        let store = Store::Memory(MemoryStore::new(Duration::from_secs(3600)));
        let registry = Registry::new();
        assert!(!registry.is_loaded());
        assert_eq!(
            registry.refresh(&store, false).await.unwrap(),
            Refresh::Reloaded { active: 0 }
        );
        assert_eq!(
            registry.refresh(&store, false).await.unwrap(),
            Refresh::Unchanged
        );
        register(&store, "dev-1", None).await;
        assert_eq!(
            registry.refresh(&store, false).await.unwrap(),
            Refresh::Reloaded { active: 1 }
        );
        assert!(registry.contains(&id("dev-1")));
    }

    #[tokio::test]
    async fn local_updates_apply_at_once_and_survive_a_reload() {
        let store = Store::Memory(MemoryStore::new(Duration::from_secs(3600)));
        let registry = Registry::new();
        registry.refresh(&store, false).await.unwrap();
        registry.set_active(&id("dev-2"), true);
        assert!(registry.contains(&id("dev-2")));
        registry.set_active(&id("dev-2"), false);
        assert!(!registry.contains(&id("dev-2")));
    }

    #[tokio::test]
    async fn sweeps_expired_registrations_out_of_the_snapshot() {
        let store = Store::Memory(MemoryStore::new(Duration::from_secs(3600)));
        let registry = Registry::new();
        let soon = (crate::domain::now() + time::Duration::milliseconds(300))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        register(&store, "dev-3", Some(&soon)).await;
        registry.refresh(&store, false).await.unwrap();
        assert!(registry.contains(&id("dev-3")));
        tokio::time::sleep(Duration::from_millis(400)).await;
        registry.refresh(&store, false).await.unwrap();
        assert!(!registry.contains(&id("dev-3")));
        let stored = store.get(&id("dev-3")).await.unwrap().unwrap();
        assert_eq!(stored.status, crate::domain::Status::Expired);
    }
}
