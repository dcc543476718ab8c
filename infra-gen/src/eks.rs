//! Amazon EKS: the cluster's endpoint and CA (DescribeCluster), its Fargate profiles, and the
//! bearer token `aws eks get-token` would make — a presigned STS GetCallerIdentity URL with
//! the signed `x-k8s-aws-id` header, as `k8s-aws-v1.` + unpadded base64url. The CI image then
//! needs neither the aws CLI nor kubectl.
//!
//! AWS credentials and region come from the usual chain (environment, profile, web identity
//! for GitLab OIDC, instance role). `AWS_ENDPOINT_URL` points it elsewhere (moto in tests).

use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// How long a presigned URL is valid for STS (`X-Amz-Expires`), as `aws eks get-token` sets it.
const PRESIGN_SECONDS: u64 = 60;
/// EKS accepts a token for 15 minutes; report a little less so clients refresh in time.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(14 * 60);
/// The header that binds a token to one cluster.
pub const CLUSTER_ID_HEADER: &str = "x-k8s-aws-id";
/// Token prefix.
pub const TOKEN_PREFIX: &str = "k8s-aws-v1.";

/// Why an EKS call failed.
#[derive(Debug, thiserror::Error)]
pub enum EksError {
    /// No usable AWS credentials.
    #[error(
        "no AWS credentials for EKS: {0}; in GitLab CI configure the job's OIDC role (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    )]
    Credentials(String),
    /// An EKS API call failed.
    #[error("EKS {operation} for cluster {cluster} in {region} failed: {message}")]
    Api {
        /// The operation.
        operation: &'static str,
        /// The cluster.
        cluster: String,
        /// The region.
        region: String,
        /// What AWS said.
        message: String,
    },
    /// The token could not be signed.
    #[error("cannot sign the EKS token: {0}")]
    Sign(String),
}

/// The cluster's API endpoint and CA bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterAccess {
    /// `https://…eks.amazonaws.com`.
    pub endpoint: String,
    /// Base64 PEM of the cluster CA, as DescribeCluster returns it.
    pub certificate_authority: String,
}

/// A Fargate profile: which namespaces (and pod labels) it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FargateProfile {
    /// Profile name.
    pub name: String,
    /// Its selectors.
    pub selectors: Vec<FargateSelector>,
}

/// One selector of a Fargate profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FargateSelector {
    /// Namespace pattern (`*` and `?` wildcards allowed).
    pub namespace: String,
    /// Labels a pod must carry.
    pub labels: Vec<(String, String)>,
}

async fn sdk_config(region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_owned()))
        .load()
        .await
}

fn api_error(
    operation: &'static str,
    cluster: &str,
    region: &str,
    error: impl std::fmt::Display,
) -> EksError {
    EksError::Api {
        operation,
        cluster: cluster.to_owned(),
        region: region.to_owned(),
        message: error.to_string(),
    }
}

/// DescribeCluster: endpoint and CA.
pub async fn describe_cluster(cluster: &str, region: &str) -> Result<ClusterAccess, EksError> {
    let client = aws_sdk_eks::Client::new(&sdk_config(region).await);
    let out = client
        .describe_cluster()
        .name(cluster)
        .send()
        .await
        .map_err(|e| {
            api_error(
                "DescribeCluster",
                cluster,
                region,
                aws_sdk_eks::error::DisplayErrorContext(e),
            )
        })?;
    let described = out.cluster.ok_or_else(|| {
        api_error(
            "DescribeCluster",
            cluster,
            region,
            "no cluster in the answer",
        )
    })?;
    let endpoint = described.endpoint.ok_or_else(|| {
        api_error(
            "DescribeCluster",
            cluster,
            region,
            "the cluster has no endpoint yet (still creating?)",
        )
    })?;
    let certificate_authority = described
        .certificate_authority
        .and_then(|c| c.data)
        .ok_or_else(|| {
            api_error(
                "DescribeCluster",
                cluster,
                region,
                "the cluster has no certificate authority data",
            )
        })?;
    Ok(ClusterAccess {
        endpoint,
        certificate_authority,
    })
}

/// Every Fargate profile of the cluster.
pub async fn fargate_profiles(
    cluster: &str,
    region: &str,
) -> Result<Vec<FargateProfile>, EksError> {
    let client = aws_sdk_eks::Client::new(&sdk_config(region).await);
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_fargate_profiles()
            .cluster_name(cluster)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| {
                api_error(
                    "ListFargateProfiles",
                    cluster,
                    region,
                    aws_sdk_eks::error::DisplayErrorContext(e),
                )
            })?;
        names.extend(page.fargate_profile_names.unwrap_or_default());
        match page.next_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let mut profiles = Vec::with_capacity(names.len());
    for name in names {
        let described = client
            .describe_fargate_profile()
            .cluster_name(cluster)
            .fargate_profile_name(&name)
            .send()
            .await
            .map_err(|e| {
                api_error(
                    "DescribeFargateProfile",
                    cluster,
                    region,
                    aws_sdk_eks::error::DisplayErrorContext(e),
                )
            })?;
        let selectors = described
            .fargate_profile
            .and_then(|p| p.selectors)
            .unwrap_or_default()
            .into_iter()
            .map(|s| FargateSelector {
                namespace: s.namespace.unwrap_or_default(),
                labels: s.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect();
        profiles.push(FargateProfile { name, selectors });
    }
    Ok(profiles)
}

/// Whether a pattern with `*` and `?` wildcards matches (EKS Fargate selector syntax).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// The profile that would run pods with `labels` in `namespace`, if any.
pub fn selecting_profile<'a>(
    profiles: &'a [FargateProfile],
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<&'a FargateProfile> {
    profiles.iter().find(|p| {
        p.selectors.iter().any(|s| {
            wildcard_match(&s.namespace, namespace)
                && s.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
    })
}

/// A bearer token for the cluster, and when it stops being valid.
pub async fn token(cluster: &str, region: &str) -> Result<(String, SystemTime), EksError> {
    let config = sdk_config(region).await;
    let provider = config
        .credentials_provider()
        .ok_or_else(|| EksError::Credentials("no credentials provider configured".into()))?;
    let credentials = provider.provide_credentials().await.map_err(|e| {
        EksError::Credentials(aws_sdk_eks::error::DisplayErrorContext(e).to_string())
    })?;
    let now = SystemTime::now();
    let token = presigned_token(cluster, region, credentials, now)?;
    Ok((token, now + TOKEN_LIFETIME))
}

/// The token for `credentials` at `time` (pure: no network).
pub fn presigned_token(
    cluster: &str,
    region: &str,
    credentials: aws_credential_types::Credentials,
    time: SystemTime,
) -> Result<String, EksError> {
    let identity = credentials.into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(PRESIGN_SECONDS));
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| EksError::Sign(e.to_string()))?
        .into();
    let host = sts_host(region)?;
    let url = format!("https://{host}/?Action=GetCallerIdentity&Version=2011-06-15");
    let headers = [("host", host.as_str()), (CLUSTER_ID_HEADER, cluster)];
    let request = SignableRequest::new(
        "GET",
        url.clone(),
        headers.into_iter(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| EksError::Sign(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| EksError::Sign(e.to_string()))?
        .into_parts();
    let (_, query) = instructions.into_parts();
    let mut signed = url;
    for (name, value) in query {
        signed.push('&');
        signed.push_str(name);
        signed.push('=');
        signed.push_str(&percent_encode(&value));
    }
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(signed)))
}

/// The regional STS host the token is presigned for, from the SDK's endpoint rules, so a
/// region of another partition gets its own domain (`sts.cn-north-1.amazonaws.com.cn`).
pub fn sts_host(region: &str) -> Result<String, EksError> {
    use aws_sdk_sts::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
    let params = Params::builder()
        .region(region)
        .use_fips(false)
        .use_dual_stack(false)
        .use_global_endpoint(false)
        .build()
        .map_err(|e| EksError::Sign(format!("STS endpoint of {region}: {e}")))?;
    let resolver = DefaultResolver::new();
    // The default rules resolve at once, without I/O.
    let endpoint = futures::executor::block_on(resolver.resolve_endpoint(&params))
        .map_err(|e| EksError::Sign(format!("no STS endpoint for region {region}: {e}")))?;
    let url = endpoint.url();
    Ok(url
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned())
}

/// Query-string encoding (RFC 3986 unreserved characters kept).
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `ExecCredential` a kubeconfig exec plugin prints.
pub fn exec_credential(token: &str, expires: SystemTime) -> serde_json::Value {
    // `expirationTimestamp` is a `Time`: RFC 3339 in seconds, as the library writes it.
    let expires = k8s_openapi::jiff::Timestamp::try_from(expires)
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "kind": "ExecCredential",
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "spec": {},
        "status": {"expirationTimestamp": expires, "token": token},
    })
}

/// A kubeconfig for the cluster whose user runs `infra-gen eks token` (so kubectl and
/// infra-gen use the same credentials path, refreshed before each token expires).
pub fn kubeconfig(
    cluster: &str,
    region: &str,
    access: &ClusterAccess,
    infra_gen: &str,
) -> serde_json::Value {
    let name = format!("eks-{region}-{cluster}");
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": access.endpoint, "certificate-authority-data": access.certificate_authority}}],
        "users": [{"name": name, "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": infra_gen,
            "args": ["eks", "token", "--cluster", cluster, "--region", region],
            "interactiveMode": "Never",
            "provideClusterInfo": false,
        }}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_the_fargate_selector_syntax() {
        assert!(wildcard_match("controltower-*", "controltower-9391"));
        assert!(wildcard_match("ct-????", "ct-9391"));
        assert!(!wildcard_match("ct-????", "ct-93910"));
        assert!(wildcard_match("*", "anything"));
        assert!(!wildcard_match("prod", "production"));
    }
}
