//! A recording proxy in front of a real API server: infra-gen talks to it over plain HTTP on
//! loopback, it forwards every request with the cluster's own credentials (streaming watches
//! included), logs each one as the double logs them, and can fail chosen requests as the
//! double can. So "which requests did this command make" and injected faults work on a real
//! cluster too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::Request as HttpRequest;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::apiserver::{Fault, Request, fault_answer, take_fault};

#[derive(Default)]
struct Log {
    requests: Vec<Request>,
    faults: Vec<Fault>,
}

struct Shared {
    client: kube::Client,
    log: Mutex<Log>,
}

/// A running proxy.
pub struct ApiProxy {
    shared: Arc<Shared>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

async fn forward(State(shared): State<Arc<Shared>>, request: HttpRequest<Body>) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let fault = {
        let mut log = shared.log.lock().unwrap();
        let agent = parts
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let fault = take_fault(&mut log.faults, parts.method.as_str(), &path, &agent);
        if !watch {
            log.requests.push(Request {
                method: parts.method.to_string(),
                path: path.clone(),
                query: query.clone(),
                user_agent: agent,
                at: std::time::Instant::now(),
            });
        }
        fault
    };
    if let Some(answer) = fault_answer(fault).await {
        return answer;
    }
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response();
    };
    let mut upstream = HttpRequest::builder()
        .method(parts.method.clone())
        .uri(parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "authorization" | "content-length" | "connection"
        ) {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(upstream) = upstream.body(kube::client::Body::from(bytes.to_vec())) else {
        return (axum::http::StatusCode::BAD_REQUEST, "unforwardable request").into_response();
    };
    match shared.client.send(upstream).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            Response::from_parts(parts, Body::new(body))
        }
        Err(error) => (
            axum::http::StatusCode::BAD_GATEWAY,
            axum::Json(json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": format!("proxy: {error}"), "code": 502})),
        )
            .into_response(),
    }
}

impl ApiProxy {
    /// Starts a proxy on a free loopback port, forwarding with `client`.
    pub async fn start(client: kube::Client) -> Self {
        let shared = Arc::new(Shared {
            client,
            log: Mutex::new(Log::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { shared, url, task }
    }

    /// Writes a kubeconfig for the proxy into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": self.url}}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        });
        let path = dir.join("kubeconfig");
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        path
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().requests.clone()
    }

    /// How many writes are in the log.
    pub fn write_count(&self) -> usize {
        let log = self.shared.log.lock().unwrap();
        log.requests.iter().filter(|r| r.is_write()).count()
    }

    pub fn clear_requests(&self) {
        self.shared.log.lock().unwrap().requests.clear();
    }

    /// Whether every injected fault was used up.
    pub fn faults_used(&self) -> bool {
        self.shared
            .log
            .lock()
            .unwrap()
            .faults
            .iter()
            .all(|f| f.remaining == 0)
    }

    /// Makes the next `times` requests with `method` whose path contains `path_contains`
    /// fail with `status`.
    /// Adds an injected failure.
    pub fn fault(&self, fault: Fault) {
        self.shared.log.lock().unwrap().faults.push(fault);
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
