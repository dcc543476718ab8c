//! Pods of kubectl images (`…/kubectl:<tag>`): the node agent runs a real kubectl binary with
//! each container's arguments (the image's entrypoint is kubectl), init containers first, as
//! the pod's service account — a token from the TokenRequest API, as the kubelet projects one
//! — against the API server. So a CronJob that patches objects with kubectl is tested with its
//! own arguments and its own RBAC.

use std::path::PathBuf;
use std::process::Stdio;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::Value as Json;

/// Whether a pod of `image` is run with kubectl.
pub fn is_kubectl(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    last == "kubectl" || last.starts_with("kubectl:") || last.starts_with("kubectl@")
}

/// The arguments of kubectl of each container of `pod`, init containers first (a `command`
/// replaces the entrypoint kubectl: its first word is left out).
fn container_args(pod: &Json) -> Vec<Vec<String>> {
    let words = |value: Option<&Json>, skip: usize| -> Vec<String> {
        value
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .skip(skip)
                    .filter_map(Json::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for list in ["/spec/initContainers", "/spec/containers"] {
        for container in pod
            .pointer(list)
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let mut args = words(container.get("command"), 1);
            args.extend(words(container.get("args"), 0));
            out.push(args);
        }
    }
    out
}

/// Runs the containers of kubectl pods.
#[derive(Clone)]
pub struct Runner {
    /// The kubectl binary.
    pub binary: PathBuf,
    /// The API server's URL.
    pub server: String,
    /// Its CA certificate.
    pub ca: PathBuf,
    /// An admin client, to request the service account's token.
    pub client: kube::Client,
}

impl Runner {
    /// Runs every container of `pod` in order; the first exit code other than 0, or 0.
    pub async fn run(&self, pod: &Json) -> i64 {
        match self.try_run(pod).await {
            Ok(code) => code,
            Err(error) => {
                tracing::warn!(%error, "kubectl pod could not run");
                1
            }
        }
    }

    async fn try_run(&self, pod: &Json) -> anyhow::Result<i64> {
        let namespace = pod
            .pointer("/metadata/namespace")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let name = pod
            .pointer("/metadata/name")
            .and_then(Json::as_str)
            .unwrap_or_default();
        let account = pod
            .pointer("/spec/serviceAccountName")
            .and_then(Json::as_str)
            .unwrap_or("default");
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace)
            .create_token_request(account, &PostParams::default(), &request)
            .await?
            .status
            .map(|s| s.token)
            .unwrap_or_default();
        let home = std::env::temp_dir().join(format!("testbed-kubectl-{name}"));
        std::fs::create_dir_all(&home)?;
        for container_args in container_args(pod) {
            let mut args = vec![
                format!("--server={}", self.server),
                format!("--certificate-authority={}", self.ca.display()),
                format!("--token={token}"),
            ];
            args.extend(container_args);
            let output = tokio::process::Command::new(&self.binary)
                .args(&args[..])
                .env("HOME", &home)
                .env("KUBECONFIG", home.join("none"))
                .stdin(Stdio::null())
                .output()
                .await?;
            let code = i64::from(output.status.code().unwrap_or(137));
            tracing::info!(
                pod = name,
                namespace,
                code,
                stdout = %String::from_utf8_lossy(&output.stdout).trim(),
                stderr = %String::from_utf8_lossy(&output.stderr).trim(),
                "kubectl container ran"
            );
            if code != 0 {
                let _ = std::fs::remove_dir_all(&home);
                return Ok(code);
            }
        }
        let _ = std::fs::remove_dir_all(&home);
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_images_are_recognised_by_their_name() {
        assert!(is_kubectl("registry.k8s.io/kubectl:v1.36.3"));
        assert!(is_kubectl("mirror.example.cn/k8s/kubectl@sha256:abc"));
        assert!(!is_kubectl("registry.example.com/kubectl-plugins/app:1"));
        assert!(!is_kubectl("example.com/controltower:1"));
    }
}
