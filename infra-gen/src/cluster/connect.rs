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
    /// Kubeconfig files, merged as kubectl merges a `KUBECONFIG` list (the first file that
    /// sets a value wins), and the context to use (default: the current one).
    Kubeconfig {
        /// The files.
        paths: Vec<PathBuf>,
        /// `--context`.
        context: Option<String>,
    },
    /// An EKS cluster by name and region.
    Eks {
        /// Cluster name.
        cluster: String,
        /// AWS region.
        region: String,
    },
}

impl Target {
    /// `--kubeconfig`, else `$KUBECONFIG` (a list, as kubectl reads it), else the EKS cluster
    /// of the environment; `--context` picks a context of the kubeconfig, else the context
    /// the environment file names (`cluster.context`), else the current one.
    pub fn choose(
        flag: Option<&Path>,
        context: Option<&str>,
        file_context: Option<&str>,
        cluster: &str,
        region: &str,
    ) -> Target {
        let from_env: Vec<PathBuf> = std::env::var_os("KUBECONFIG")
            .map(|v| {
                std::env::split_paths(&v)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let paths = match flag {
            Some(path) => vec![path.to_path_buf()],
            None => from_env,
        };
        if paths.is_empty() && context.is_none() {
            return Target::Eks {
                cluster: cluster.to_owned(),
                region: region.to_owned(),
            };
        }
        let paths = if paths.is_empty() {
            // A context with neither flag nor variable: kubectl's default file.
            std::env::var_os("HOME")
                .map(|h| vec![PathBuf::from(h).join(".kube/config")])
                .unwrap_or_default()
        } else {
            paths
        };
        Target::Kubeconfig {
            paths,
            context: context.or(file_context).map(str::to_owned),
        }
    }

    /// For messages: where we connect.
    pub fn describe(&self) -> String {
        match self {
            Target::Kubeconfig { paths, context } => {
                let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                let context = context
                    .as_deref()
                    .map_or(String::new(), |c| format!(", context {c}"));
                format!("kubeconfig {}{context}", files.join(":"))
            }
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

/// The API server the last client was made for, and how it was chosen (for messages about a
/// connection that failed).
static SERVER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `https://… (from kubeconfig …)`, once a client was made.
pub fn server() -> Option<&'static str> {
    SERVER.get().map(String::as_str)
}

/// A client for the target. With `expect` (the environment's EKS cluster and region), a
/// kubeconfig's server must be that cluster: its endpoint and CA are compared with what
/// `DescribeCluster` answers, before anything is read or written.
pub async fn client(target: &Target, expect: Option<(&str, &str)>) -> ClusterResult<kube::Client> {
    let mut options = KubeConfigOptions::default();
    let kubeconfig = match target {
        Target::Kubeconfig { paths, context } => {
            options.context = context.clone();
            let mut merged: Option<Kubeconfig> = None;
            for path in paths {
                let next = Kubeconfig::read_from(path).map_err(|e| {
                    ClusterError::Config(format!("cannot read kubeconfig {}: {e}", path.display()))
                })?;
                merged = Some(match merged {
                    None => next,
                    Some(done) => done.merge(next).map_err(|e| {
                        ClusterError::Config(format!(
                            "cannot merge kubeconfig {}: {e}",
                            path.display()
                        ))
                    })?,
                });
            }
            merged.ok_or_else(|| {
                ClusterError::Config(
                    "no kubeconfig: set --kubeconfig or KUBECONFIG, or drop --context to use the environment's EKS cluster".into(),
                )
            })?
        }
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
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| ClusterError::Config(format!("cannot use {}: {e}", target.describe())))?;
    config
        .headers
        .push((http::header::USER_AGENT, user_agent()));
    let _ = SERVER.set(format!("{} ({})", config.cluster_url, target.describe()));
    if let (Target::Kubeconfig { .. }, Some((cluster, region))) = (target, expect) {
        check_identity(&config, target, cluster, region).await?;
    }
    kube::Client::try_from(config)
        .map_err(|e| ClusterError::Config(format!("cannot connect to {}: {e}", target.describe())))
}

/// The DER bytes of the first certificate of a PEM text.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()
        .filter(|der| !der.is_empty())
}

fn normalize_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Refuses a kubeconfig whose server is not the environment's EKS cluster.
async fn check_identity(
    config: &kube::Config,
    target: &Target,
    cluster: &str,
    region: &str,
) -> ClusterResult<()> {
    use base64::Engine;
    let reached = config.cluster_url.to_string();
    let how = "pass --any-cluster to use this kubeconfig anyway (a local cluster), or connect without --kubeconfig/KUBECONFIG to reach the environment's cluster";
    let access = eks::describe_cluster(cluster, region).await.map_err(|e| {
        ClusterError::Identity(format!(
            "cannot confirm that {reached} ({}) is EKS cluster {cluster} ({region}), which the environment file names: {e}; {how}",
            target.describe()
        ))
    })?;
    if normalize_url(&access.endpoint) != normalize_url(&reached) {
        return Err(ClusterError::Identity(format!(
            "{} reaches {reached}, but the environment file names EKS cluster {cluster} ({region}) at {}: refusing to touch another cluster; {how}",
            target.describe(),
            access.endpoint
        )));
    }
    let expected_ca = base64::engine::general_purpose::STANDARD
        .decode(access.certificate_authority.trim())
        .ok()
        .and_then(|pem| pem_der(&String::from_utf8_lossy(&pem)));
    let configured = config.root_cert.as_ref().and_then(|certs| certs.first());
    if let (Some(expected), Some(configured)) = (expected_ca, configured)
        && &expected != configured
    {
        return Err(ClusterError::Identity(format!(
            "{} trusts another certificate authority for {reached} than EKS cluster {cluster} ({region}) has: refusing; {how}",
            target.describe()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_compare_without_case_or_trailing_slash_and_pem_gives_its_der() {
        assert_eq!(
            normalize_url("https://ABC.gr7.ap-northeast-1.eks.amazonaws.com/"),
            normalize_url("https://abc.gr7.ap-northeast-1.eks.amazonaws.com")
        );
        assert_ne!(
            normalize_url("https://127.0.0.1:6443"),
            normalize_url("https://127.0.0.1:6444")
        );
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\nAwQ=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_der(pem), Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(pem_der("not a pem"), None);
    }
}
