//! The request middleware, as one tower layer: each request gets its id (the client's
//! `x-request-id`, or a new UUID), runs inside a `request` span carrying it, is answered with
//! the id in `x-request-id`, and leaves one access-log line and its HTTP metrics.
//!
//! One hand-written layer instead of tower-http's `SetRequestId` + `PropagateRequestId` and an
//! `axum::middleware::from_fn`: those cloned the inner service into a boxed `Next`, boxed a
//! future, parsed the header name and stored the id in the request's extensions (which nothing
//! read) for every check-in of the spike, several percent of the service's CPU together.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Response;
use axum::http::{HeaderName, HeaderValue, Method};
use metrics::{Counter, Histogram};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::AccessLog;
use super::access::{self, Access};

/// The request-id header, read from the request and written on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static ONLY_ERRORS: AtomicBool = AtomicBool::new(false);

/// Chooses which requests get an access-log line (process-wide, like the subscriber).
pub fn set_access_log(mode: AccessLog) {
    ONLY_ERRORS.store(mode == AccessLog::Errors, Ordering::Relaxed);
}

/// The layer of [`Observe`]; apply it outermost, so a panic's 500 is logged and counted too.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner }
    }
}

/// Request id, span, access-log line and HTTP metrics around `inner`.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

impl<S, B> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .cloned()
            .unwrap_or_else(new_request_id);
        let method = request.method().clone();
        // MatchedPath is an Arc: cloning it does not copy the route text.
        let route = request.extensions().get::<MatchedPath>().cloned();
        let span = {
            // A plain `&str`, written as it is rather than formatted through `Display`.
            let request_id = span_request_id(&request_id);
            tracing::info_span!("request", request_id)
        };
        Observed {
            inner: self.inner.call(request).instrument(span),
            done: Some(Done {
                request_id,
                method,
                route,
                started,
            }),
        }
    }
}

/// What the response completes.
struct Done {
    request_id: HeaderValue,
    method: Method,
    route: Option<MatchedPath>,
    started: Instant,
}

pin_project_lite::pin_project! {
    /// The future of [`Observe`].
    pub struct Observed<F> {
        #[pin]
        inner: Instrumented<F>,
        done: Option<Done>,
    }
}

impl<F, B, E> Future for Observed<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = ready!(this.inner.as_mut().poll(cx));
        // axum's routes never fail (their error is `Infallible`): an error passes through.
        let mut response = match result {
            Ok(response) => response,
            Err(error) => return Poll::Ready(Err(error)),
        };
        let Some(done) = this.done.take() else {
            return Poll::Ready(Ok(response));
        };
        let took = done.started.elapsed();
        let status = response.status().as_u16();
        let route = done.route.as_ref().map_or("unmatched", MatchedPath::as_str);
        let quiet = status < 400 && ONLY_ERRORS.load(Ordering::Relaxed);
        if !quiet {
            let access = Access {
                method: done.method.as_str(),
                route,
                status,
                latency_ms: took.as_secs_f64() * 1000.0,
            };
            access::log(
                this.inner.span(),
                span_request_id(&done.request_id),
                &access,
            );
        }
        record_http(route, &done.method, status, took);
        // A handler's own id wins, like tower-http's PropagateRequestId.
        response
            .headers_mut()
            .entry(REQUEST_ID)
            .or_insert(done.request_id);
        Poll::Ready(Ok(response))
    }
}

/// The request id as the span and the log show it: `-` for an id that is not text.
fn span_request_id(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("-")
}

/// A new request id: a random (v4) UUID, formatted without an intermediate `String`.
fn new_request_id() -> HeaderValue {
    let mut buffer = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"))
}

/// The HTTP metric handles of one route and method, by status code.
struct Endpoint {
    method: Method,
    latency: Histogram,
    statuses: Vec<(u16, Counter)>,
}

/// Metric handles by route, created on first use and then only read: looking a handle up by
/// its labels on every request (allocating the label strings) cost more than the check-in.
fn record_http(route: &str, method: &Method, status: u16, took: Duration) {
    static ROUTES: OnceLock<RwLock<HashMap<String, Vec<Endpoint>>>> = OnceLock::new();
    let routes = ROUTES.get_or_init(Default::default);
    let record = |endpoints: &[Endpoint]| {
        let endpoint = endpoints.iter().find(|e| e.method == *method)?;
        let (_, counter) = endpoint.statuses.iter().find(|(s, _)| *s == status)?;
        counter.increment(1);
        endpoint.latency.record(took.as_secs_f64());
        Some(())
    };
    let found = routes
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(route)
        .and_then(|endpoints| record(endpoints));
    if found.is_some() {
        return;
    }
    let mut map = routes.write().unwrap_or_else(|p| p.into_inner());
    let endpoints = map.entry(route.to_owned()).or_default();
    if !endpoints.iter().any(|e| e.method == *method) {
        endpoints.push(Endpoint {
            method: method.clone(),
            latency: metrics::histogram!(
                "controltower_http_request_duration_seconds",
                "method" => method.to_string(),
                "route" => route.to_owned()
            ),
            statuses: Vec::new(),
        });
    }
    if let Some(endpoint) = endpoints.iter_mut().find(|e| e.method == *method)
        && !endpoint.statuses.iter().any(|(s, _)| *s == status)
    {
        let counter = metrics::counter!(
            "controltower_http_requests_total",
            "method" => method.to_string(),
            "route" => route.to_owned(),
            "status" => status.to_string()
        );
        endpoint.statuses.push((status, counter));
    }
    record(endpoints);
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;
    use crate::telemetry::captured::Captured;
    use axum::body::Body;
    use axum::http::StatusCode;
    use tower::{Layer, Service, ServiceExt};

    /// Answers with `status`, logging one line of its own inside the request's span.
    async fn answer(status: StatusCode, request: Request) -> Result<Response<Body>, Infallible> {
        tracing::info!(path = request.uri().path(), "handled");
        Ok(Response::builder()
            .status(status)
            .body(Body::empty())
            .unwrap())
    }

    async fn call(status: StatusCode, request: Request) -> Response<Body> {
        let mut service = ObserveLayer.layer(tower::service_fn(move |r| answer(status, r)));
        service.ready().await.unwrap().call(request).await.unwrap()
    }

    #[tokio::test]
    async fn each_answer_has_a_request_id_a_log_line_and_the_handlers_lines_in_its_span() {
        let lines = Captured::default();
        let _default = tracing::subscriber::set_default(lines.json_subscriber());

        // Without an id: a new v4 UUID, different for every request.
        let first = call(
            StatusCode::OK,
            Request::post("/v1/checkin").body(Body::empty()).unwrap(),
        )
        .await;
        let second = call(
            StatusCode::OK,
            Request::post("/v1/checkin").body(Body::empty()).unwrap(),
        )
        .await;
        let id = |r: &Response<Body>| r.headers()[REQUEST_ID].to_str().unwrap().to_owned();
        let (first_id, second_id) = (id(&first), id(&second));
        let parsed = uuid::Uuid::parse_str(&first_id).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_ne!(first_id, second_id);

        // With the client's id: the same id back, and in the log.
        let traced = call(
            StatusCode::NOT_FOUND,
            Request::get("/nowhere")
                .header("x-request-id", "trace-42")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(id(&traced), "trace-42");

        let lines = lines.json();
        assert_eq!(lines.len(), 6, "{lines:?}");
        // Per request: the handler's line, then the access-log line, both in its span.
        for (pair, (request_id, method, status, path)) in lines.chunks(2).zip([
            (first_id.as_str(), "POST", 200, "/v1/checkin"),
            (second_id.as_str(), "POST", 200, "/v1/checkin"),
            ("trace-42", "GET", 404, "/nowhere"),
        ]) {
            let (handler, access) = (&pair[0], &pair[1]);
            assert_eq!(handler["message"], "handled");
            assert_eq!(handler["path"], path);
            assert_eq!(handler["span"]["request_id"], request_id);
            assert_eq!(access["message"], "request");
            assert_eq!(access["span"]["request_id"], request_id);
            assert_eq!(access["span"]["name"], "request");
            assert_eq!(access["method"], method);
            assert_eq!(access["status"], status);
            // No MatchedPath outside a router: the route is named as unmatched.
            assert_eq!(access["route"], "unmatched");
            assert!(access["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0));
        }
    }

    #[tokio::test]
    async fn a_request_id_that_is_not_text_is_kept_on_the_answer_and_logged_as_a_dash() {
        let lines = Captured::default();
        let _default = tracing::subscriber::set_default(lines.json_subscriber());
        let odd = HeaderValue::from_bytes(b"caf\xe9").unwrap();
        let mut request = Request::get("/").body(Body::empty()).unwrap();
        request.headers_mut().insert(REQUEST_ID, odd.clone());
        let response = call(StatusCode::OK, request).await;
        assert_eq!(response.headers()[REQUEST_ID], odd);
        let lines = lines.json();
        assert_eq!(lines[1]["span"]["request_id"], "-");
    }
}
