//! The baseline of `scripts/bench`: the least work a check-in server can do for the same
//! request on the same stack (tokio, axum, serde_json) — parse the JSON body, look the id up
//! in a `HashSet`, write the same JSON answer. No store, no snapshot, no logs, no metrics.
//! What controltower does beyond this is what the benchmark prices.
//!
//! `PORT` (default 8081); `REGISTERED` = how many ids `bench-reg-0…N-1` answer `upload: true`.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Checkin {
    device_id: String,
    #[serde(default)]
    #[allow(dead_code)] // parsed like controltower parses it, then not needed
    app_version: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    platform: Option<String>,
}

async fn check_in(
    State(registered): State<Arc<HashSet<String>>>,
    Json(request): Json<Checkin>,
) -> Json<Value> {
    if registered.contains(&request.device_id) {
        Json(json!({
            "upload": true,
            "ticket": "00000000000000000000000000000000",
            "upload_url": format!("https://appdump.example.com/v1/dumps/0?device={}", request.device_id),
            "reason": "bench",
        }))
    } else {
        Json(json!({"upload": false}))
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8081);
    let count: usize = std::env::var("REGISTERED")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1000);
    let registered: HashSet<String> = (0..count).map(|i| format!("bench-reg-{i}")).collect();
    let app = Router::new()
        .route("/v1/checkin", post(check_in))
        .with_state(Arc::new(registered));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await
}
