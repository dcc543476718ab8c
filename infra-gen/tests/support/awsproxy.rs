//! A proxy in front of moto for infra-gen's AWS calls, answering a share of them with
//! ELBv2's `Throttling` error, as an account whose Describe quota the AWS Load Balancer
//! Controller and other tools share does, or — once told to — every one of them with
//! `AccessDenied` (a role whose policy was changed under a running deploy). It counts what
//! it throttled.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// Which requests are throttled: the first `throttled` of every `of`.
#[derive(Debug, Clone, Copy)]
pub struct Throttle {
    pub throttled: u32,
    pub of: u32,
}

struct Shared {
    upstream: String,
    throttle: Throttle,
    deny: std::sync::atomic::AtomicBool,
    seen: AtomicU32,
    throttled: AtomicU32,
    http: reqwest::Client,
}

/// A running proxy.
pub struct AwsProxy {
    shared: Arc<Shared>,
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

async fn forward(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if shared.deny.load(Ordering::SeqCst) {
        let xml = "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User is not authorized to perform: elasticloadbalancing:DescribeRules</Message></Error><RequestId>denied</RequestId></ErrorResponse>";
        return (StatusCode::FORBIDDEN, [("content-type", "text/xml")], xml).into_response();
    }
    let n = shared.seen.fetch_add(1, Ordering::SeqCst);
    if n % shared.throttle.of.max(1) < shared.throttle.throttled {
        shared.throttled.fetch_add(1, Ordering::SeqCst);
        let xml = "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>throttled</RequestId></ErrorResponse>";
        return (StatusCode::BAD_REQUEST, [("content-type", "text/xml")], xml).into_response();
    }
    let mut request = shared.http.post(&shared.upstream).body(body);
    for (name, value) in &headers {
        if !matches!(name.as_str(), "host" | "content-length") {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status().as_u16())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let kind = answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/xml")
                .to_owned();
            let bytes = answer.bytes().await.unwrap_or_default();
            (status, [("content-type", kind)], bytes).into_response()
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

impl AwsProxy {
    pub async fn start(upstream: &str, throttle: Throttle) -> Self {
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            throttle,
            deny: Default::default(),
            seen: AtomicU32::new(0),
            throttled: AtomicU32::new(0),
            http: reqwest::Client::new(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the AWS proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { shared, url, task }
    }

    /// From now on every call is refused with `AccessDenied`.
    pub fn deny(&self) {
        self.shared.deny.store(true, Ordering::SeqCst);
    }

    /// How many requests were answered `Throttling`.
    pub fn throttled(&self) -> u32 {
        self.shared.throttled.load(Ordering::SeqCst)
    }
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
