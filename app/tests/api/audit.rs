//! The audit log: who changed which registration, when, before and after.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{READ_TOKEN, error_of, spawn_app};

#[tokio::test]
async fn every_admin_change_is_audited_with_actor_and_before_after() {
    let app = spawn_app().await;
    app.register_ok("dev-audit", json!({"reason": "first"}))
        .await;
    app.register_ok("dev-audit", json!({"reason": "second"}))
        .await;
    app.revoke("dev-audit").await;
    app.delete("dev-audit").await;
    app.register_ok("dev-other", json!({"reason": "other"}))
        .await;

    let page: Value = app
        .admin_get("/v1/audit?device_id=dev-audit")
        .await
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["delete", "revoke", "update", "register"],
        "newest first"
    );
    assert!(items.iter().all(|e| e["actor"] == "admin"));
    assert_eq!(items[3]["before"], Value::Null);
    assert_eq!(items[3]["after"]["reason"], "first");
    assert_eq!(items[2]["before"]["reason"], "first");
    assert_eq!(items[2]["after"]["reason"], "second");
    assert_eq!(items[1]["before"]["status"], "active");
    assert_eq!(items[1]["after"]["status"], "revoked");
    assert_eq!(items[0]["before"]["status"], "revoked");
    assert_eq!(items[0]["after"], Value::Null);
    assert!(items[0]["at"].as_str().is_some());

    // Pagination over the whole log, with the read-only token.
    let first: Value = app
        .client
        .get(app.url("/v1/audit?limit=3"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 3);
    assert_eq!(first["items"][0]["device_id"], "dev-other");
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second: Value = app
        .admin_get(&format!("/v1/audit?limit=3&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 2);
    assert_eq!(second["items"][1]["action"], "register");
    assert!(second.get("next_cursor").is_none());

    let (code, _) = error_of(
        app.admin_get("/v1/audit?cursor=zzz").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(code, "invalid_cursor");
    error_of(
        app.client.get(app.url("/v1/audit")).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn refused_changes_leave_no_audit_entry() {
    let app = spawn_app().await;
    app.register("dev-refused", json!({"reason": ""})).await;
    let page: Value = app.admin_get("/v1/audit").await.json().await.unwrap();
    assert_eq!(page["items"], json!([]));
    app.stop().await;
}
