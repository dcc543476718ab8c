//! `spawn_app()` and typed request helpers.

use std::time::Duration;

use clap::Parser;
use controltower::config::Settings;
use controltower::startup::Application;
use controltower::state::AppState;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const READ_TOKEN: &str = "test-read-token-0123456789";

/// The MongoDB server the tests use. `./scripts/test` starts SecantusDB and sets it.
pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI").unwrap_or_else(|_| {
        panic!(
            "MONGODB_URI is not set. Run ./scripts/test (it installs and starts SecantusDB), \
             or point MONGODB_URI at a MongoDB server started with enableTestCommands=1"
        )
    })
}

/// A fresh database name, so tests never see each other's data.
pub fn unique_database() -> String {
    format!("ct_test_{}", uuid::Uuid::new_v4().simple())
}

/// Options of a spawned service.
pub struct Spawn {
    pub database: String,
    /// The deadline of each database operation. A test's, not production's 5 s: SecantusDB
    /// shares two cores with the rest of the test command (and CI with other jobs), where a
    /// 10 000-item batch can take longer; tests of the deadline set their own.
    pub operation_timeout: &'static str,
    pub poll: &'static str,
    pub app_name: String,
    pub extra: Vec<String>,
    pub embedded: bool,
}

impl Default for Spawn {
    fn default() -> Self {
        Self {
            database: unique_database(),
            operation_timeout: "60s",
            poll: "200ms",
            app_name: format!("ct-test-{}", uuid::Uuid::new_v4().simple()),
            extra: Vec::new(),
            embedded: false,
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub app_name: String,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Spawn::default()).await
}

pub async fn spawn_with(options: Spawn) -> TestApp {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        // The log writer lives as long as the test process.
        std::mem::forget(controltower::telemetry::init_tracing(
            controltower::telemetry::LogFormat::Text,
            &filter,
        ));
    }
    let mut args: Vec<String> = [
        "controltower",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--admin-tokens",
        &format!("admin={ADMIN_TOKEN},reader={READ_TOKEN}:read"),
        "--snapshot-poll-interval",
        options.poll,
        "--drain",
        "0s",
        "--mongodb-database",
        &options.database,
        "--mongodb-app-name",
        &options.app_name,
        "--upload-url-template",
        "https://dump.test/upload/{ticket}?device={device_id}",
        "--mongodb-operation-timeout",
        options.operation_timeout,
    ]
    .into_iter()
    .map(String::from)
    .collect();
    // An empty --mongodb-uri overrides a MONGODB_URI in the environment.
    let uri = if options.embedded {
        String::new()
    } else {
        mongodb_uri()
    };
    args.extend(["--mongodb-uri".to_owned(), uri]);
    args.extend(options.extra);
    let settings = Settings::try_parse_from(args).expect("test settings parse");
    let app = Application::build(settings)
        .await
        .expect("application builds");
    let base = format!("http://{}", app.addr());
    let state = app.state().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let test_app = TestApp {
        base,
        client: reqwest::Client::new(),
        app_name: options.app_name,
        state,
        stop: Some(stop),
        task: Some(task),
    };
    test_app.wait_ready().await;
    test_app
}

impl TestApp {
    pub async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self.client.get(self.url("/healthz/ready")).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("service at {} never became ready", self.base);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the service and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }

    pub async fn checkin(&self, device_id: &str) -> Response {
        self.checkin_body(json!({"device_id": device_id})).await
    }

    pub async fn checkin_body(&self, body: Value) -> Response {
        self.client
            .post(self.url("/v1/checkin"))
            .json(&body)
            .send()
            .await
            .expect("check-in request")
    }

    /// Check-in, asserting 200, returning the answer.
    pub async fn checkin_ok(&self, device_id: &str) -> Value {
        let response = self.checkin(device_id).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("check-in JSON")
    }

    pub async fn complete(&self, ticket: &str) -> Response {
        self.client
            .post(self.url(&format!("/v1/uploads/{ticket}/complete")))
            .json(&json!({"bytes": 1024, "dump_id": "dump-1"}))
            .send()
            .await
            .expect("complete request")
    }

    pub async fn register(&self, device_id: &str, body: Value) -> Response {
        self.client
            .put(self.url(&format!("/v1/devices/{device_id}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("register request")
    }

    /// Registration, asserting 201 or 200.
    pub async fn register_ok(&self, device_id: &str, body: Value) -> Value {
        let response = self.register(device_id, body).await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status == StatusCode::CREATED || status == StatusCode::OK,
            "{status}: {text}"
        );
        serde_json::from_str(&text).expect("registration JSON")
    }

    pub async fn admin_get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin GET")
    }

    pub async fn revoke(&self, device_id: &str) -> Response {
        self.client
            .post(self.url(&format!("/v1/devices/{device_id}/revoke")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("POST revoke")
    }

    pub async fn delete(&self, device_id: &str) -> Response {
        self.client
            .delete(self.url(&format!("/v1/devices/{device_id}")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("DELETE")
    }
}

/// Asserts the one error shape and returns `(code, message)`.
pub async fn error_of(response: Response, status: StatusCode) -> (String, String) {
    assert_eq!(response.status(), status, "unexpected status");
    let body: Value = response.json().await.expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned();
    let message = body["error"]["message"]
        .as_str()
        .expect("error.message")
        .to_owned();
    assert!(!message.is_empty());
    (code, message)
}

/// A MongoDB client for test set-up (fail points, direct reads).
/// The server has one `failCommand` fail point (a new configuration replaces the last, and
/// "off" turns off everyone's), so tests that set it hold this for their whole run.
pub async fn fail_point_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

pub async fn mongo_client() -> mongodb::Client {
    mongodb::Client::with_uri_str(mongodb_uri())
        .await
        .expect("mongo client")
}

/// Waits until `check` is true, up to `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
