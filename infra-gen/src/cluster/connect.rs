//! Credentials: a kubeconfig (`--kubeconfig` or `$KUBECONFIG`), or the environment's EKS
//! cluster through a kubeconfig whose exec plugin is `infra-gen eks token` — the same path
//! `infra-gen eks kubeconfig` writes for kubectl users. kube runs the plugin again shortly
//! before each token expires (EKS tokens live 15 minutes), so a long wait never fails with 401.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::{ClusterError, ClusterResult};
use crate::eks;

/// Where the cluster is.
#[derive(Debug, Clone)]
pub enum Target {
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// An EKS cluster by name and region.
    Eks {
        /// Cluster name.
        cluster: String,
        /// AWS region.
        region: String,
    },
}

impl Target {
    /// `--kubeconfig`, else `$KUBECONFIG`, else the EKS cluster of the environment.
    pub fn choose(flag: Option<&Path>, cluster: &str, region: &str) -> Target {
        let from_env = std::env::var_os("KUBECONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        match flag.map(Path::to_path_buf).or(from_env) {
            Some(path) => Target::Kubeconfig(path),
            None => Target::Eks {
                cluster: cluster.to_owned(),
                region: region.to_owned(),
            },
        }
    }

    /// For messages: where we connect.
    pub fn describe(&self) -> String {
        match self {
            Target::Kubeconfig(path) => format!("kubeconfig {}", path.display()),
            Target::Eks { cluster, region } => format!("EKS cluster {cluster} ({region})"),
        }
    }
}

/// `infra-gen/<version> (<who>)`: the API server's audit log then names the CI job (or
/// user and host) behind every write.
fn user_agent() -> http::HeaderValue {
    let who: String = super::lease::identity()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    http::HeaderValue::from_str(&format!("infra-gen/{} ({who})", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|_| http::HeaderValue::from_static("infra-gen"))
}

/// A client for the target.
/// The API server the last client was made for, and how it was chosen (for messages about a
/// connection that failed).
static SERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `https://… (from kubeconfig …)`, once a client was made.
pub fn server() -> Option<&'static str> {
    SERVER.get().map(String::as_str)
}

pub async fn client(target: &Target) -> ClusterResult<kube::Client> {
    let kubeconfig = match target {
        Target::Kubeconfig(path) => Kubeconfig::read_from(path).map_err(|e| {
            ClusterError::Config(format!("cannot read kubeconfig {}: {e}", path.display()))
        })?,
        Target::Eks { cluster, region } => {
            let access = eks::describe_cluster(cluster, region)
                .await
                .map_err(|e| ClusterError::Config(e.to_string()))?;
            let me = std::env::current_exe().map_err(|e| {
                ClusterError::Config(format!(
                    "cannot find the infra-gen executable for the token plugin: {e}"
                ))
            })?;
            let document = eks::kubeconfig(cluster, region, &access, &me.to_string_lossy());
            serde_json::from_value(document).map_err(|e| {
                ClusterError::Config(format!("cannot build the EKS kubeconfig: {e}"))
            })?
        }
    };
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| ClusterError::Config(format!("cannot use {}: {e}", target.describe())))?;
    config
        .headers
        .push((http::header::USER_AGENT, user_agent()));
    let _ = SERVER.set(format!("{} ({})", config.cluster_url, target.describe()));
    kube::Client::try_from(config)
        .map_err(|e| ClusterError::Config(format!("cannot connect to {}: {e}", target.describe())))
}
