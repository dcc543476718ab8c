//! Start-up and shutdown. [`Application::build`] binds the listener (port 0 picks a free
//! one, which the tests use) and wires state and router; [`Application::run_until_stopped`]
//! serves until the shutdown future fires, then drains:
//! readiness 503 at once → requests still served for the drain window → listener closed →
//! in-flight requests finished → return.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::{AdminTokens, TokenSpecError};
use crate::config::{ConfigError, Settings};
use crate::error::ApiError;
use crate::lifecycle::Lifecycle;
use crate::recorder::Recorder;
use crate::registry::{self, Follow, Observer, Registry};
use crate::service::checkin::CheckinService;
use crate::service::registrations::RegistrationService;
use crate::state::{AppState, Services};
use crate::store::memory::MemoryStore;
use crate::store::mongo::{MongoConfig, MongoStore};
use crate::store::{Store, StoreError};
use crate::telemetry;

/// How long in-flight requests may take to finish once the listener is closed.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(5);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An admin token entry is malformed.
    #[error(transparent)]
    Tokens(#[from] TokenSpecError),
    /// The MongoDB client could not be created (e.g. a malformed connection string).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A built, not yet running, service.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    state: AppState,
    settings: Settings,
}

impl Application {
    /// Validates settings, opens the store, binds the listener and starts the background
    /// preparation (indexes, first snapshot). It does not wait for MongoDB: the process is
    /// live at once and ready when preparation succeeds.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let entries = settings.validate()?;
        let mut tokens = AdminTokens::parse(entries.spec.expose(), &entries.source)?;
        // Install the metrics recorder before anything counts.
        telemetry::prometheus();
        telemetry::set_access_log(settings.access_log);
        let uri = settings
            .mongodb_uri
            .as_ref()
            .filter(|u| !u.expose().trim().is_empty());
        let store = match uri {
            Some(uri) => Store::Mongo(
                MongoStore::connect(&MongoConfig {
                    uri: uri.expose().to_owned(),
                    database: settings.mongodb_database.clone(),
                    app_name: settings.mongodb_app_name.clone(),
                    server_selection_timeout: settings.mongodb_timeout,
                    operation_timeout: settings.mongodb_operation_timeout,
                    checkin_retention: settings.checkin_retention(),
                    heartbeat: settings.snapshot_poll_interval.min(Duration::from_secs(10)),
                })
                .await?,
            ),
            None => {
                tracing::warn!(
                    "MONGODB_URI is not set: running on the EMBEDDED IN-MEMORY STORE. \
                     Registrations are lost when the process stops and are not shared between \
                     replicas. Fine for a local try-out; set MONGODB_URI in any deployment."
                );
                Store::Memory(MemoryStore::new(settings.checkin_retention()))
            }
        };
        if tokens.is_empty() {
            if matches!(store, Store::Memory(_)) {
                let token = uuid::Uuid::new_v4().simple().to_string();
                tokens = AdminTokens::parse(&format!("local={token}"), "generated")?;
                tracing::warn!(
                    "ADMIN_TOKENS is not set: generated a throw-away admin token for this local run: \
                     Authorization: Bearer {token}"
                );
            } else {
                tracing::warn!("ADMIN_TOKENS is not set: every admin request will get 401");
            }
        } else {
            tracing::info!(tokens = ?tokens.names(), "admin tokens loaded");
        }

        let registry = Registry::observed(Observer {
            reloaded: telemetry::snapshot_reloaded,
            documents_read: telemetry::snapshot_documents_read,
            gap: telemetry::snapshot_feed_gap,
        });
        let lifecycle = Arc::new(Lifecycle::default());
        let (recorder, _writer) = Recorder::start(store.clone(), settings.checkin_batch_linger);
        let state = AppState::new(Services {
            checkins: CheckinService::new(
                store.clone(),
                registry.clone(),
                recorder.clone(),
                &settings.upload_url_template,
            ),
            registrations: RegistrationService::new(store.clone(), registry.clone(), recorder),
            tokens,
            lifecycle,
            registry,
            store,
            batch_max_items: settings.batch_max_items,
        });

        let addr = settings.listen_addr();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;
        let router = router(state.clone(), settings.body_limit_bytes);
        Ok(Self {
            listener,
            addr,
            router,
            state,
            settings,
        })
    }

    /// The bound address (its port is the real one when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (tests inspect the registry and the store through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains as described in the module docs.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Application {
            listener,
            addr,
            router,
            state,
            settings,
        } = self;
        tokio::spawn(prepare(state.clone(), settings.snapshot_poll_interval));
        tracing::info!(
            "listening on http://{addr} (API docs at http://{addr}/docs, OpenAPI at http://{addr}/openapi.json)"
        );
        let lifecycle = state.lifecycle.clone();
        let drain = settings.drain;
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        let graceful = async move {
            shutdown.await;
            lifecycle.start_draining();
            tracing::info!(
                drain_seconds = drain.as_secs_f64(),
                "shutdown requested: readiness is now 503; still serving during the drain window"
            );
            tokio::time::sleep(drain).await;
            lifecycle.stop_background();
            tracing::info!("drain window over: closing the listener, finishing in-flight requests");
            let _ = closed_tx.send(());
        };
        let server = axum::serve(listener, router).with_graceful_shutdown(graceful);
        let server = std::pin::pin!(server.into_future());
        let hard_stop = async {
            if closed_rx.await.is_ok() {
                tokio::time::sleep(IN_FLIGHT_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            result = server => result?,
            () = hard_stop => tracing::warn!(
                "in-flight requests still running {IN_FLIGHT_GRACE:?} after the listener closed; exiting anyway"
            ),
        }
        // Check-ins answered before the listener closed are written before the process exits.
        if tokio::time::timeout(IN_FLIGHT_GRACE, state.checkins.recorder().flush())
            .await
            .is_err()
        {
            tracing::warn!(
                "check-in records still queued after {IN_FLIGHT_GRACE:?}; exiting anyway"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Creates the indexes (retrying until the store answers), then follows the registrations:
/// the first full load marks the service ready, the change feed keeps the snapshot current.
async fn prepare(state: AppState, poll_interval: Duration) {
    let mut backoff = Duration::from_millis(200);
    let mut stop = state.lifecycle.stop_signal();
    while let Err(error) = state.store.prepare().await {
        tracing::warn!(
            error = %error,
            retry_in_ms = backoff.as_millis() as u64,
            "not ready yet: cannot prepare the store"
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
    let lifecycle = state.lifecycle.clone();
    let kind = state.store.kind();
    registry::follow(
        state.registry.clone(),
        state.store.clone(),
        Follow {
            wait: poll_interval,
            // Retried at least once a poll interval while the store is down, so registered
            // devices are answered again within about one interval of its return.
            max_backoff: poll_interval.max(Duration::from_millis(200)),
            ..Follow::default()
        },
        state.lifecycle.stop_signal(),
        move |active| {
            lifecycle.set_ready();
            tracing::info!(
                store = kind,
                registrations = active,
                "ready: indexes exist and the registration snapshot is loaded"
            );
        },
    )
    .await;
}

fn router(state: AppState, body_limit: usize) -> Router {
    let (api, openapi) = crate::routes::router().split_for_parts();
    // One `layer` call with the whole stack, outermost first: each `Router::layer` call wraps
    // every route in one more boxed service, cloned for every request. The request layer is
    // outside the panic guard, so a panic's 500 has its request id, log line and metrics like
    // any other answer.
    let stack = tower::ServiceBuilder::new()
        .layer(telemetry::ObserveLayer)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(DefaultBodyLimit::max(body_limit));
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(stack)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound {
        code: "route_not_found",
        message: format!("no route {}; the API is described at /docs", uri.path()),
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{method} is not allowed on {}; see /docs for the methods of each route",
        uri.path()
    ))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let mut response = ApiError::Internal("a handler panicked".into()).into_response();
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
