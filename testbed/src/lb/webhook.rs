//! The stand-in controller's pod webhook on a real API server: a mutating admission webhook
//! (HTTPS on loopback, registered as the real one is, `aws-load-balancer-webhook` /
//! `mpod.elbv2.k8s.aws`, `failurePolicy: Fail`) that gives a pod being created one readiness
//! gate per TargetGroupBinding whose Service selects it — decided from the controller's cache,
//! so a pod created before its binding was seen gets none, as with the real controller.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value as Json_, json};

use super::cluster::Cluster;
use super::kube::KubeCluster;
use super::{gates_for, text};

/// The webhook configuration's name, the real controller's.
pub const CONFIGURATION: &str = "aws-load-balancer-webhook";

async fn mutate(State(cluster): State<Arc<KubeCluster>>, Json(review): Json<Json_>) -> Json<Json_> {
    let uid = review
        .pointer("/request/uid")
        .cloned()
        .unwrap_or(Json_::Null);
    let pod = review
        .pointer("/request/object")
        .cloned()
        .unwrap_or_default();
    let namespace = review
        .pointer("/request/namespace")
        .and_then(Json_::as_str)
        .unwrap_or_default()
        .to_owned();
    let snap = cluster.snapshot().await;
    let mut response = json!({"uid": uid, "allowed": true});
    if snap
        .settings
        .get(&namespace)
        .is_some_and(|s| s.inject_gates)
    {
        let existing: Vec<&str> = pod
            .pointer("/spec/readinessGates")
            .and_then(Json_::as_array)
            .into_iter()
            .flatten()
            .map(|g| text(g, "/conditionType"))
            .collect();
        let gates: Vec<String> = gates_for(&snap, &namespace, pod.pointer("/metadata/labels"))
            .into_iter()
            .filter(|g| !existing.contains(&g.as_str()))
            .collect();
        if !gates.is_empty() {
            let patch: Vec<Json_> = if pod.pointer("/spec/readinessGates").is_some() {
                gates
                    .iter()
                    .map(|g| json!({"op": "add", "path": "/spec/readinessGates/-", "value": {"conditionType": g}}))
                    .collect()
            } else {
                let value: Vec<Json_> = gates.iter().map(|g| json!({"conditionType": g})).collect();
                vec![json!({"op": "add", "path": "/spec/readinessGates", "value": value})]
            };
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(
                base64::engine::general_purpose::STANDARD.encode(Json_::Array(patch).to_string())
            );
        }
    }
    Json(
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
    )
}

/// Serves the webhook on a free loopback port with `cert`/`key` (PEM), and returns its address.
pub async fn serve(
    cluster: Arc<KubeCluster>,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<SocketAddr> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("read the webhook certificate {}", cert.display()))?
        .collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("read the webhook key {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/mutate-v1-pod", post(mutate))
        .with_state(cluster);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(address)
}

/// Registers the webhook at `address` with the API server, trusting `ca` (PEM).
pub async fn register(client: &kube::Client, address: SocketAddr, ca: &[u8]) -> anyhow::Result<()> {
    let configuration = MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(CONFIGURATION.into()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: "mpod.elbv2.k8s.aws".into(),
            admission_review_versions: vec!["v1".into()],
            client_config: WebhookClientConfig {
                url: Some(format!("https://{address}/mutate-v1-pod")),
                ca_bundle: Some(ByteString(ca.to_vec())),
                service: None,
            },
            failure_policy: Some("Fail".into()),
            match_policy: Some("Equivalent".into()),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "elbv2.k8s.aws/pod-readiness-gate-inject".into(),
                    operator: "In".into(),
                    values: Some(vec!["enabled".into()]),
                }]),
                match_labels: None,
            }),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: None,
            }]),
            side_effects: "None".into(),
            timeout_seconds: Some(10),
            ..MutatingWebhook::default()
        }]),
    };
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .patch(
            CONFIGURATION,
            &PatchParams::apply("testbed").force(),
            &Patch::Apply(&configuration),
        )
        .await
        .context("register the pod webhook")?;
    Ok(())
}

/// Removes the registration (pods could not be created with a webhook that no longer answers).
pub async fn unregister(client: &kube::Client) {
    let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete(CONFIGURATION, &DeleteParams::default())
        .await;
}
