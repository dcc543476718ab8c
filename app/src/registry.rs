//! The hot-path snapshot: every active registration, in memory, with what its check-ins
//! need (expiry, narrowing, reason, `log_since`).
//!
//! Every check-in is answered from this snapshot, without a database read: an unregistered
//! device (almost all of them) costs nothing but a hash lookup, and a registered one is
//! decided here too, its check-in record being written in batches by the
//! [`crate::recorder::Recorder`]. That is what lets a replica absorb the start-up spike after
//! maintenance and keep answering while MongoDB is down.
//!
//! The snapshot is reloaded when the store's generation changes (see [`Registry::refresh`])
//! and patched at once on the replica that served an admin write. Reasons are interned: a
//! batch of ten thousand registrations usually shares one reason, stored once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::domain::{CheckinContext, Decision, DeviceId, VersionRange, narrowing_excludes};
use crate::store::{ActiveRegistration, Store, StoreResult};

/// Platforms and version range of a registration that narrows (most do not).
#[derive(Debug, PartialEq)]
struct Narrowing {
    platforms: Vec<String>,
    app_version: Option<VersionRange>,
}

/// One active registration, as the hot path needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When it stops asking for uploads.
    pub expires_at: Option<OffsetDateTime>,
    /// Why the logs are wanted.
    pub reason: Arc<str>,
    /// Logs since then are wanted.
    pub log_since: Option<OffsetDateTime>,
    narrowing: Option<Arc<Narrowing>>,
}

impl Entry {
    /// Decides what to tell a checking-in client (the registration is active by construction).
    pub fn decide(&self, client: &CheckinContext, now: OffsetDateTime) -> Decision {
        if self.expires_at.is_some_and(|at| at <= now) {
            return Decision::Expired;
        }
        let excluded = self
            .narrowing
            .as_deref()
            .and_then(|n| narrowing_excludes(&n.platforms, n.app_version.as_ref(), client));
        match excluded {
            Some(why) => Decision::NotTargeted(why),
            None => Decision::Upload,
        }
    }
}

/// Builds entries, storing each distinct reason once.
#[derive(Default)]
struct Interner {
    reasons: HashSet<Arc<str>>,
}

impl Interner {
    fn entry(&mut self, registration: ActiveRegistration) -> (Box<str>, Entry) {
        let reason = match self.reasons.get(registration.reason.as_str()) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Arc<str> = registration.reason.into();
                self.reasons.insert(shared.clone());
                shared
            }
        };
        let narrows = !registration.platforms.is_empty() || registration.app_version.is_some();
        let entry = Entry {
            expires_at: registration.expires_at,
            reason,
            log_since: registration.log_since,
            narrowing: narrows.then(|| {
                Arc::new(Narrowing {
                    platforms: registration.platforms,
                    app_version: registration.app_version,
                })
            }),
        };
        (registration.device_id.into_boxed_str(), entry)
    }
}

#[derive(Default)]
struct Snapshot {
    entries: HashMap<Box<str>, Entry>,
    generation: Option<u64>,
    verified_at: Option<Instant>,
    /// While a reload runs, local changes are journalled here and replayed over the freshly
    /// loaded set, so a reload that started before an admin write cannot undo it.
    journal: Option<Vec<(Box<str>, Option<Entry>)>>,
}

impl Snapshot {
    fn next_expiry(&self) -> Option<OffsetDateTime> {
        self.entries.values().filter_map(|e| e.expires_at).min()
    }
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
pub struct Registry {
    snapshot: RwLock<Snapshot>,
    next_expiry: RwLock<Option<OffsetDateTime>>,
    store_reachable: AtomicBool,
    /// Told of every full reload: how many active registrations, how long it took.
    on_reload: fn(usize, Duration),
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            snapshot: RwLock::default(),
            next_expiry: RwLock::default(),
            store_reachable: AtomicBool::new(true),
            on_reload: |_, _| {},
        }
    }
}

impl Registry {
    /// An empty, not-yet-loaded registry.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// An empty snapshot that reports every full reload to `on_reload` (the service passes
    /// its metrics; the snapshot itself knows nothing of them).
    pub fn observed(on_reload: fn(usize, Duration)) -> Arc<Self> {
        Arc::new(Self {
            on_reload,
            ..Self::default()
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        // Every write below leaves the snapshot consistent before it can panic, so a
        // poisoned lock still guards usable data.
        self.snapshot.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.snapshot.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The device's active registration, if any (as far as this replica knows).
    pub fn lookup(&self, id: &DeviceId) -> Option<Entry> {
        self.read().entries.get(id.as_str()).cloned()
    }

    /// Whether the first load has happened.
    pub fn is_loaded(&self) -> bool {
        self.read().generation.is_some()
    }

    /// Number of active registrations in the snapshot.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Whether the snapshot holds no registration.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Time since the snapshot was last confirmed to match the store.
    pub fn age(&self) -> Option<Duration> {
        self.read().verified_at.map(|at| at.elapsed())
    }

    /// Whether the last look at the store succeeded. Registered devices get 503 while it
    /// does not: their check-ins could not be recorded.
    pub fn is_store_reachable(&self) -> bool {
        self.store_reachable.load(Ordering::Relaxed)
    }

    fn change(&self, key: Box<str>, entry: Option<Entry>) {
        let expires = entry.as_ref().and_then(|e| e.expires_at);
        let mut snap = self.write();
        if let Some(journal) = &mut snap.journal {
            journal.push((key.clone(), entry.clone()));
        }
        match entry {
            Some(entry) => {
                snap.entries.insert(key, entry);
            }
            None => {
                snap.entries.remove(&key);
            }
        }
        drop(snap);
        // Only ever moved earlier here (no scan of a million entries per admin write); a
        // deadline left by a removed entry just makes one sweep find nothing.
        if let Some(at) = expires {
            let mut next = self.next_expiry.write().unwrap_or_else(|p| p.into_inner());
            *next = Some(next.map_or(at, |n| n.min(at)));
        }
    }

    /// Records, on this replica, that a registration is now active with these settings.
    pub fn upsert(&self, registration: &crate::domain::Registration) {
        let (key, entry) = Interner::default().entry(ActiveRegistration::of(registration));
        self.change(key, Some(entry));
    }

    /// Records, on this replica, that a device's registration ended.
    pub fn remove(&self, id: &DeviceId) {
        self.change(id.as_str().into(), None);
    }

    /// Brings the snapshot up to date: sweeps expired registrations when one is due, then
    /// reloads if the store's generation changed (or `force`). Remembers whether the store
    /// answered.
    pub async fn refresh(&self, store: &Store, force: bool) -> StoreResult<Refresh> {
        let result = self.refresh_inner(store, force).await;
        self.store_reachable
            .store(result.is_ok(), Ordering::Relaxed);
        result
    }

    async fn refresh_inner(&self, store: &Store, force: bool) -> StoreResult<Refresh> {
        let now = crate::domain::now();
        let next_expiry = *self.next_expiry.read().unwrap_or_else(|p| p.into_inner());
        let sweep_due = next_expiry.is_some_and(|at| at <= now);
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
        let mut interner = Interner::default();
        let mut entries = HashMap::new();
        let loaded = store
            .load_active(now, &mut |registration| {
                let (key, entry) = interner.entry(registration);
                entries.insert(key, entry);
            })
            .await;
        let mut snap = self.write();
        let journal = snap.journal.take().unwrap_or_default();
        loaded?;
        for (key, entry) in journal {
            match entry {
                Some(entry) => {
                    entries.insert(key, entry);
                }
                None => {
                    entries.remove(&key);
                }
            }
        }
        let active = entries.len();
        snap.entries = entries;
        snap.generation = Some(generation);
        snap.verified_at = Some(Instant::now());
        let next = snap.next_expiry();
        drop(snap);
        *self.next_expiry.write().unwrap_or_else(|p| p.into_inner()) = next;
        (self.on_reload)(active, started.elapsed());
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
                        "snapshot refresh failed; check-ins are still answered from the last snapshot, registered devices get 503"
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

    fn registration(device: &str, input: RegistrationInput) -> Registration {
        let now = crate::domain::now();
        let spec = RegistrationSpec::parse(input, now).unwrap();
        Registration::new(id(device), spec, "t", now)
    }

    fn reason(text: &str) -> RegistrationInput {
        RegistrationInput {
            reason: text.into(),
            ..Default::default()
        }
    }

    async fn register(store: &Store, device: &str, expires_at: Option<&str>) {
        let input = RegistrationInput {
            expires_at: expires_at.map(Into::into),
            ..reason("test")
        };
        store.save(&registration(device, input)).await.unwrap();
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
        assert_eq!(
            registry.lookup(&id("dev-1")).unwrap().reason.as_ref(),
            "test"
        );
    }

    #[tokio::test]
    async fn local_updates_apply_at_once() {
        let store = Store::Memory(MemoryStore::new(Duration::from_secs(3600)));
        let registry = Registry::new();
        registry.refresh(&store, false).await.unwrap();
        registry.upsert(&registration("dev-2", reason("local")));
        assert!(registry.lookup(&id("dev-2")).is_some());
        registry.remove(&id("dev-2"));
        assert!(registry.lookup(&id("dev-2")).is_none());
    }

    #[tokio::test]
    async fn entries_decide_expiry_and_narrowing() {
        let registry = Registry::new();
        let now = crate::domain::now();
        let expires = (now + time::Duration::hours(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let narrowed = RegistrationInput {
            platforms: Some(vec!["ios".into()]),
            expires_at: Some(expires),
            ..reason("narrow")
        };
        registry.upsert(&registration("dev-n", narrowed));
        let entry = registry.lookup(&id("dev-n")).unwrap();
        let client = |platform: Option<&str>| CheckinContext {
            platform: platform.map(Into::into),
            app_version: None,
        };
        assert_eq!(entry.decide(&client(Some("iOS")), now), Decision::Upload);
        assert_eq!(
            entry.decide(&client(Some("android")), now),
            Decision::NotTargeted("platform")
        );
        assert_eq!(
            entry.decide(&client(None), now),
            Decision::NotTargeted("platform")
        );
        let later = now + time::Duration::hours(1);
        assert_eq!(entry.decide(&client(Some("ios")), later), Decision::Expired);
    }

    #[tokio::test]
    async fn one_reason_is_stored_once_for_many_registrations() {
        let store = Store::Memory(MemoryStore::new(Duration::from_secs(3600)));
        for i in 0..100 {
            store
                .save(&registration(&format!("dev-{i}"), reason("same reason")))
                .await
                .unwrap();
        }
        let registry = Registry::new();
        registry.refresh(&store, true).await.unwrap();
        let a = registry.lookup(&id("dev-1")).unwrap().reason;
        let b = registry.lookup(&id("dev-99")).unwrap().reason;
        assert!(Arc::ptr_eq(&a, &b));
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
        assert!(registry.lookup(&id("dev-3")).is_some());
        tokio::time::sleep(Duration::from_millis(400)).await;
        registry.refresh(&store, false).await.unwrap();
        assert!(registry.lookup(&id("dev-3")).is_none());
        let stored = store.get(&id("dev-3")).await.unwrap().unwrap();
        assert_eq!(stored.status, crate::domain::Status::Expired);
    }
}
