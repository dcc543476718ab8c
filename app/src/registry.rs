//! The hot-path snapshot: every active registration, in memory, with what its check-ins
//! need (expiry, narrowing, reason, `log_since`).
//!
//! Every check-in is answered from this snapshot, without a database read: an unregistered
//! device (almost all of them) costs nothing but a hash lookup, and a registered one is
//! decided here too, its check-in record being written in batches by the
//! [`crate::recorder::Recorder`]. That is what lets a replica absorb the start-up spike after
//! maintenance and keep answering while MongoDB is down.
//!
//! The snapshot is loaded once, then kept current by the store's change feed ([`follow`]):
//! each change costs one document, whatever the size of the set; only a gap in the feed
//! costs a full reload. The replica that served an admin write patches its snapshot at once
//! too. Reasons are interned: a batch of ten thousand registrations usually shares one
//! reason, stored once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::domain::{CheckinContext, Decision, DeviceId, VersionRange, narrowing_excludes};
use crate::store::{ActiveRegistration, Change, FeedError, FeedPosition, Store, StoreResult};

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
    loaded: bool,
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

/// What the registry reports (the service passes its metrics; the registry knows nothing of
/// them).
#[derive(Debug, Clone, Copy)]
pub struct Observer {
    /// A full reload: active registrations, how long it took.
    pub reloaded: fn(usize, Duration),
    /// Registration documents read from the store (a reload's, or one per change).
    pub documents_read: fn(u64),
    /// A gap in the feed (a full reload follows).
    pub gap: fn(),
}

impl Default for Observer {
    fn default() -> Self {
        Self {
            reloaded: |_, _| {},
            documents_read: |_| {},
            gap: || {},
        }
    }
}

/// The in-memory set of active registrations.
pub struct Registry {
    snapshot: RwLock<Snapshot>,
    next_expiry: RwLock<Option<OffsetDateTime>>,
    store_reachable: AtomicBool,
    /// Reasons of the entries the feed added since the last reload, each stored once.
    interner: Mutex<Interner>,
    /// Full reloads so far.
    reloads: AtomicU64,
    observer: Observer,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            snapshot: RwLock::default(),
            next_expiry: RwLock::default(),
            store_reachable: AtomicBool::new(true),
            interner: Mutex::default(),
            reloads: AtomicU64::new(0),
            observer: Observer::default(),
        }
    }
}

impl Registry {
    /// An empty, not-yet-loaded registry.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// An empty snapshot that reports reloads, reads and gaps to `observer`.
    pub fn observed(observer: Observer) -> Arc<Self> {
        Arc::new(Self {
            observer,
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
        self.read().loaded
    }

    /// Number of active registrations in the snapshot.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    /// Full reloads this replica made (the first load, then one per gap in the feed).
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
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

    /// Applies one change from the feed.
    pub fn apply(&self, change: Change) {
        (self.observer.documents_read)(1);
        match change {
            Change::Active(registration) => {
                let (key, entry) = self
                    .interner
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(registration);
                self.change(key, Some(entry));
            }
            Change::Ended(id) => self.change(id.into_boxed_str(), None),
        }
    }

    /// Replaces the snapshot with every active registration of the store (the first load,
    /// and after a gap in the feed). Local changes made meanwhile are kept. Returns how many
    /// registrations are active.
    pub async fn reload(&self, store: &Store) -> StoreResult<usize> {
        let now = crate::domain::now();
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
        if let Err(error) = loaded {
            self.store_reachable.store(false, Ordering::Relaxed);
            return Err(error);
        }
        (self.observer.documents_read)(entries.len() as u64);
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
        snap.loaded = true;
        snap.verified_at = Some(Instant::now());
        let next = snap.next_expiry();
        drop(snap);
        *self.interner.lock().unwrap_or_else(|p| p.into_inner()) = interner;
        *self.next_expiry.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.store_reachable.store(true, Ordering::Relaxed);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        (self.observer.reloaded)(active, started.elapsed());
        Ok(active)
    }

    /// Marks expired, in the store, the registrations whose `expires_at` has passed, when
    /// one is due (the feed then tells every replica). Returns how many.
    pub async fn sweep(&self, store: &Store) -> StoreResult<u64> {
        let now = crate::domain::now();
        let next_expiry = *self.next_expiry.read().unwrap_or_else(|p| p.into_inner());
        if next_expiry.is_none_or(|at| at > now) {
            return Ok(0);
        }
        let expired = store.expire_due(now).await?;
        // Entries past their time answer "expired" already; dropping them here keeps the
        // set small even before the feed brings the store's changes back.
        let mut snap = self.write();
        snap.entries
            .retain(|_, e| e.expires_at.is_none_or(|at| at > now));
        let next = snap.next_expiry();
        drop(snap);
        *self.next_expiry.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(expired)
    }

    /// Confirms the snapshot matches the store as of now (the feed is alive and has nothing
    /// more).
    fn verified(&self) {
        self.write().verified_at = Some(Instant::now());
        self.store_reachable.store(true, Ordering::Relaxed);
    }
}

/// How [`follow`] waits and retries.
#[derive(Debug, Clone, Copy)]
pub struct Follow {
    /// Longest wait for a change before the snapshot is confirmed and a sweep considered.
    pub wait: Duration,
    /// First retry delay after the store failed (doubled up to [`Follow::max_backoff`]).
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for Follow {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(1),
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Keeps the snapshot equal to the store until `stop` fires: opens the store's change feed,
/// loads everything once (the feed is opened first, so nothing changed during the load is
/// missed), calls `on_ready`, then applies each change as it comes. When the feed cannot go
/// on from where it was (a gap: the resume point is gone, the stream was invalidated), it
/// reloads everything once — logged and counted. When the store does not answer, the
/// snapshot keeps answering check-ins and the feed is resumed from its position once the
/// store is back.
pub async fn follow(
    registry: Arc<Registry>,
    store: Store,
    options: Follow,
    mut stop: tokio::sync::watch::Receiver<bool>,
    on_ready: impl FnOnce(usize),
) {
    let mut on_ready = Some(on_ready);
    let mut position: Option<FeedPosition> = None;
    let mut backoff = options.backoff;
    let mut failing = false;
    loop {
        let opened = tokio::select! {
            opened = store.watch(position.as_ref(), options.wait) => opened,
            _ = stop.changed() => return,
        };
        let mut feed = match opened {
            Ok(feed) => feed,
            Err(FeedError::Gap(reason)) => {
                registry.gap(&reason);
                position = None;
                continue;
            }
            Err(FeedError::Store(error)) => {
                registry.store_reachable.store(false, Ordering::Relaxed);
                failing = report_failure(failing, &error, backoff);
                if pause(&mut stop, &mut backoff, options).await {
                    return;
                }
                continue;
            }
        };
        if position.is_none() {
            let loaded = tokio::select! {
                loaded = registry.reload(&store) => loaded,
                _ = stop.changed() => return,
            };
            match loaded {
                Ok(active) => {
                    if let Some(ready) = on_ready.take() {
                        ready(active);
                    }
                }
                Err(error) => {
                    failing = report_failure(failing, &error, backoff);
                    if pause(&mut stop, &mut backoff, options).await {
                        return;
                    }
                    continue;
                }
            }
            position = feed.position();
        }
        if failing {
            tracing::info!("the database answers again: following registration changes");
            failing = false;
        }
        backoff = options.backoff;
        loop {
            let next = tokio::select! {
                next = feed.next(options.wait) => next,
                _ = stop.changed() => return,
            };
            match next {
                Ok(Some(change)) => registry.apply(change),
                Ok(None) => {
                    registry.verified();
                    if let Err(error) = registry.sweep(&store).await {
                        tracing::warn!(error = %error, "could not mark expired registrations; retrying at the next sweep");
                    }
                }
                Err(FeedError::Gap(reason)) => {
                    registry.gap(&reason);
                    position = None;
                    break;
                }
                Err(FeedError::Store(error)) => {
                    registry.store_reachable.store(false, Ordering::Relaxed);
                    failing = report_failure(failing, &error, backoff);
                    if pause(&mut stop, &mut backoff, options).await {
                        return;
                    }
                    break;
                }
            }
            if let Some(now) = feed.position() {
                position = Some(now);
            }
        }
    }
}

/// Logs a store failure once when it starts (not at every retry); returns `true`.
fn report_failure(already: bool, error: &dyn std::fmt::Display, retry_in: Duration) -> bool {
    if !already {
        tracing::warn!(
            error = %error,
            retry_in_ms = retry_in.as_millis() as u64,
            "cannot follow registration changes; check-ins are answered from the snapshot, registered devices get 503"
        );
    }
    true
}

/// Sleeps `backoff` (then doubles it); `true` when `stop` fired meanwhile.
async fn pause(
    stop: &mut tokio::sync::watch::Receiver<bool>,
    backoff: &mut Duration,
    options: Follow,
) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(*backoff) => false,
        _ = stop.changed() => true,
    };
    *backoff = (*backoff * 2).min(options.max_backoff);
    stopped
}

impl Registry {
    /// A gap in the feed: the next open reloads everything.
    fn gap(&self, reason: &str) {
        tracing::warn!(
            reason,
            "the registration feed lost changes: reloading every registration once"
        );
        (self.observer.gap)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Registration, RegistrationInput, RegistrationSpec, Status};
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
    }

    fn memory() -> Store {
        Store::Memory(MemoryStore::new(Duration::from_secs(3600)))
    }

    /// Follows `store` in the background; returns the stop switch.
    fn following(registry: &Arc<Registry>, store: &Store) -> tokio::sync::watch::Sender<bool> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let options = Follow {
            wait: Duration::from_millis(50),
            backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        };
        tokio::spawn(follow(
            registry.clone(),
            store.clone(),
            options,
            stopped,
            |_| {},
        ));
        stop
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    static RELOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static GAPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn counted() -> Arc<Registry> {
        Registry::observed(Observer {
            reloaded: |_, _| {
                RELOADS.fetch_add(1, Ordering::SeqCst);
            },
            documents_read: |n| {
                READS.fetch_add(n, Ordering::SeqCst);
            },
            gap: || {
                GAPS.fetch_add(1, Ordering::SeqCst);
            },
        })
    }

    /// One test uses the counters (they are process-wide).
    #[tokio::test]
    async fn loads_once_then_applies_changes_and_reloads_once_after_a_gap() {
        let store = memory();
        for i in 0..50 {
            register(&store, &format!("dev-{i}"), None).await;
        }
        let registry = counted();
        let stop = following(&registry, &store);
        until("the first load", || registry.is_loaded()).await;
        assert_eq!(registry.len(), 50);
        assert_eq!(RELOADS.load(Ordering::SeqCst), 1);
        assert_eq!(READS.load(Ordering::SeqCst), 50);

        // Each change costs one document, whatever the size of the set.
        register(&store, "dev-new", None).await;
        until("the new registration", || {
            registry.lookup(&id("dev-new")).is_some()
        })
        .await;
        store
            .transition(
                &id("dev-3"),
                Status::Active,
                Status::Revoked,
                crate::domain::now(),
            )
            .await
            .unwrap();
        until("the revocation", || registry.lookup(&id("dev-3")).is_none()).await;
        store.delete(&id("dev-4")).await.unwrap();
        until("the deletion", || registry.lookup(&id("dev-4")).is_none()).await;
        assert_eq!(READS.load(Ordering::SeqCst), 53);
        assert_eq!(RELOADS.load(Ordering::SeqCst), 1, "no reload for a change");

        // A gap: exactly one full reload, and what changed in the gap is there after it.
        if let Store::Memory(memory) = &store {
            memory.interrupt_feeds("test");
        }
        register(&store, "dev-after-gap", None).await;
        until("the reload after the gap", || {
            RELOADS.load(Ordering::SeqCst) == 2 && registry.lookup(&id("dev-after-gap")).is_some()
        })
        .await;
        assert_eq!(GAPS.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(RELOADS.load(Ordering::SeqCst), 2, "one reload per gap");
        assert_eq!(registry.len(), 50);
        stop.send(true).unwrap();
    }

    #[tokio::test]
    async fn local_updates_apply_at_once() {
        let store = memory();
        let registry = Registry::new();
        registry.reload(&store).await.unwrap();
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
        registry.reload(&store).await.unwrap();
        let a = registry.lookup(&id("dev-1")).unwrap().reason;
        let b = registry.lookup(&id("dev-99")).unwrap().reason;
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[tokio::test]
    async fn sweeps_expired_registrations_out_of_the_snapshot() {
        let store = memory();
        let registry = Registry::new();
        let soon = (crate::domain::now() + time::Duration::milliseconds(300))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        register(&store, "dev-3", Some(&soon)).await;
        let stop = following(&registry, &store);
        until("the registration", || {
            registry.lookup(&id("dev-3")).is_some()
        })
        .await;
        until("the expiry", || registry.lookup(&id("dev-3")).is_none()).await;
        let stored = store.get(&id("dev-3")).await.unwrap().unwrap();
        assert_eq!(stored.status, crate::domain::Status::Expired);
        stop.send(true).unwrap();
    }
}
