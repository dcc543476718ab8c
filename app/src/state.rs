//! The state every handler can reach: the services, the snapshot, the admin tokens and the
//! lifecycle. Built once by `startup`, read by `routes`; it sits below both and knows
//! nothing of HTTP.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::auth::AdminTokens;
use crate::lifecycle::Lifecycle;
use crate::registry::Registry;
use crate::service::checkin::CheckinService;
use crate::service::registrations::RegistrationService;
use crate::store::Store;

/// What every handler can reach. Cloned for every request, so it is one `Arc`: cloning the
/// services one by one cost a few dozen atomic operations per check-in.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// Shares `services` between every request.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The shared services behind [`AppState`].
pub struct Services {
    /// Check-ins and upload completions.
    pub checkins: CheckinService,
    /// Registrations and audit.
    pub registrations: RegistrationService,
    /// Admin tokens.
    pub tokens: AdminTokens,
    /// Readiness and draining.
    pub lifecycle: Arc<Lifecycle>,
    /// The hot-path snapshot.
    pub registry: Arc<Registry>,
    /// The store.
    pub store: Store,
    /// Largest batch accepted.
    pub batch_max_items: usize,
}

/// What the admin extractor (`auth::Admin`) needs from the state: only the tokens.
impl FromRef<AppState> for AdminTokens {
    fn from_ref(state: &AppState) -> Self {
        state.tokens.clone()
    }
}
