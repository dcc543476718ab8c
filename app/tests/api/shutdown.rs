//! SIGTERM under load: readiness turns 503 at once, every request sent during the drain
//! window succeeds, a slow in-flight request finishes, and the process exits 0 in time.
//! This runs the real binary, since signals are per process.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, mongodb_uri, unique_database};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test]
async fn sigterm_under_load_fails_no_request_and_exits_zero_within_the_drain_window() {
    let port = free_port();
    let drain = Duration::from_secs(3);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_controltower"))
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .env("MONGODB_URI", mongodb_uri())
        .env("MONGODB_DATABASE", unique_database())
        .env("ADMIN_TOKENS", format!("admin={ADMIN_TOKEN}"))
        .env("DRAIN_SECONDS", "3s")
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn controltower");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/healthz/ready")).send().await
            && r.status() == StatusCode::OK
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "controltower never became ready");
    let registered = client
        .put(format!("{base}/v1/devices/dev-sigterm"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"reason": "x", "max_uploads": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), StatusCode::CREATED);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (stop, ok, failed, client, base) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                client.clone(),
                base.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let device = if i.is_multiple_of(50) {
                        "dev-sigterm".to_owned()
                    } else {
                        format!("anon-{w}-{i}")
                    };
                    let result = client
                        .post(format!("{base}/v1/checkin"))
                        .json(&json!({"device_id": device}))
                        .send()
                        .await;
                    match result {
                        Ok(r) if r.status() == StatusCode::OK => ok.fetch_add(1, Ordering::SeqCst),
                        _ => failed.fetch_add(1, Ordering::SeqCst),
                    };
                    i += 1;
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = child.id().expect("pid").to_string();
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());

    // Readiness turns 503 at once.
    let mut not_ready_after = None;
    for _ in 0..40 {
        let r = client
            .get(format!("{base}/healthz/ready"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            not_ready_after = Some(signalled.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let not_ready_after = not_ready_after.expect("readiness never turned 503");
    assert!(
        not_ready_after < Duration::from_millis(500),
        "{not_ready_after:?}"
    );

    // A slow request that is still running when the listener closes must complete.
    let mut csv = String::from("device_id,reason\n");
    for i in 0..300 {
        csv.push_str(&format!("late-{i},x\n"));
    }
    tokio::time::sleep(
        drain
            .saturating_sub(signalled.elapsed())
            .saturating_sub(Duration::from_millis(400)),
    )
    .await;
    let slow = tokio::spawn({
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .post(format!("{base}/v1/devices/batch"))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "text/csv")
                .body(csv)
                .send()
                .await
        }
    });
    // The load balancer stops sending before the drain window ends (preStop already
    // removed the pod); model that by stopping new requests just before.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }

    let slow = match slow.await.unwrap() {
        Ok(r) => r,
        Err(e) => panic!("in-flight batch got no answer: {e:?}"),
    };
    assert_eq!(slow.status(), StatusCode::OK);
    let report: serde_json::Value = slow.json().await.unwrap();
    assert_eq!(report["created"], 300);

    let status = tokio::time::timeout(drain + Duration::from_secs(8), child.wait())
        .await
        .expect("controltower did not exit in time")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests during shutdown"
    );
    assert!(
        ok.load(Ordering::SeqCst) > 100,
        "the load did not run: {}",
        ok.load(Ordering::SeqCst)
    );
}
