//! The deploy lock: a `coordination.k8s.io` Lease in the namespace, so two applies never
//! interleave. The holder is named (the CI job URL in GitLab) so a refused run can say who
//! holds it. A holder renews it while it runs; a lease left by a killed process stops being
//! renewed, expires and is taken over.

use std::time::Duration;

use serde_json::{Value as Json, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Cluster, ClusterError, ClusterResult, Kind, name_of};

/// The Lease name.
pub const LEASE_NAME: &str = "infra-gen-deploy";
/// How long a lease stays valid without renewal.
pub const LEASE_SECONDS: i64 = 60;
/// How often the holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(15);

/// Why the lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another run holds it.
    #[error(
        "another deploy holds the lock of namespace {namespace}: {holder} (since {since}, valid until {until}); wait for it to finish, or for the lock to expire if it was killed"
    )]
    Held {
        /// Namespace.
        namespace: String,
        /// Holder identity.
        holder: String,
        /// When it was taken.
        since: String,
        /// When it expires unless renewed.
        until: String,
    },
    /// The cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Who we are: the CI job URL when in GitLab, else user@host.
pub fn identity() -> String {
    if let Ok(url) = std::env::var("CI_JOB_URL")
        && !url.is_empty()
    {
        return url;
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "somewhere".into());
    format!("{user}@{host} (pid {})", std::process::id())
}

fn micro_time(at: OffsetDateTime) -> String {
    let at = at
        .replace_nanosecond(at.nanosecond() / 1000 * 1000)
        .unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_default()
}

fn parse_time(value: Option<&Json>) -> Option<OffsetDateTime> {
    value
        .and_then(Json::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

/// Whether a lease is still valid at `now`.
pub fn is_live(lease: &Json, now: OffsetDateTime) -> bool {
    let renewed = parse_time(lease.pointer("/spec/renewTime"))
        .or_else(|| parse_time(lease.pointer("/spec/acquireTime")));
    let seconds = lease
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Json::as_i64)
        .unwrap_or(LEASE_SECONDS);
    let holder = lease
        .pointer("/spec/holderIdentity")
        .and_then(Json::as_str)
        .unwrap_or_default();
    !holder.is_empty() && renewed.is_some_and(|r| r + time::Duration::seconds(seconds) > now)
}

fn lease_object(
    namespace: &str,
    holder: &str,
    now: OffsetDateTime,
    resource_version: Option<&str>,
) -> Json {
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE_NAME, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "infra-gen"}},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": LEASE_SECONDS,
            "acquireTime": micro_time(now),
            "renewTime": micro_time(now),
        },
    });
    if let Some(rv) = resource_version {
        lease["metadata"]["resourceVersion"] = rv.into();
    }
    lease
}

/// A held lease; renewed in the background until [`Lease::release`].
pub struct Lease {
    cluster: Cluster,
    holder: String,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the lease, or fails at once naming the holder. An expired lease is taken over;
    /// a race with another run is settled by the API server (resourceVersion precondition).
    pub async fn acquire(cluster: &Cluster, holder: &str) -> Result<Lease, LeaseError> {
        let namespace = cluster.namespace().to_owned();
        let now = OffsetDateTime::now_utc();
        match cluster.get(Kind::Lease, LEASE_NAME).await? {
            None => {
                cluster
                    .create(&lease_object(&namespace, holder, now, None))
                    .await
                    .map_err(|e| held_if_conflict(e, &namespace))?;
            }
            Some(current)
                if is_live(&current, now)
                    && current
                        .pointer("/spec/holderIdentity")
                        .and_then(Json::as_str)
                        != Some(holder) =>
            {
                let text = |p: &str| {
                    current
                        .pointer(p)
                        .and_then(Json::as_str)
                        .unwrap_or("?")
                        .to_owned()
                };
                let until = parse_time(current.pointer("/spec/renewTime"))
                    .map(|r| micro_time(r + time::Duration::seconds(LEASE_SECONDS)))
                    .unwrap_or_else(|| "?".into());
                return Err(LeaseError::Held {
                    namespace,
                    holder: text("/spec/holderIdentity"),
                    since: text("/spec/acquireTime"),
                    until,
                });
            }
            Some(current) => {
                let rv = current
                    .pointer("/metadata/resourceVersion")
                    .and_then(Json::as_str);
                cluster
                    .replace(&lease_object(&namespace, holder, now, rv))
                    .await
                    .map_err(|e| held_if_conflict(e, &namespace))?;
            }
        }
        let renewer = tokio::spawn(renew(cluster.clone(), holder.to_owned()));
        Ok(Lease {
            cluster: cluster.clone(),
            holder: holder.to_owned(),
            renewer,
        })
    }

    /// Gives the lease back.
    pub async fn release(self) -> ClusterResult<()> {
        self.renewer.abort();
        if let Some(current) = self.cluster.get(Kind::Lease, LEASE_NAME).await?
            && current
                .pointer("/spec/holderIdentity")
                .and_then(Json::as_str)
                == Some(self.holder.as_str())
        {
            self.cluster.delete(Kind::Lease, name_of(&current)).await?;
        }
        Ok(())
    }
}

fn held_if_conflict(error: ClusterError, namespace: &str) -> LeaseError {
    match error.code() {
        Some(409) => LeaseError::Held {
            namespace: namespace.to_owned(),
            holder: "another run (it took the lock at the same moment)".into(),
            since: "now".into(),
            until: "?".into(),
        },
        _ => LeaseError::Cluster(error),
    }
}

async fn renew(cluster: Cluster, holder: String) {
    let mut ticker = tokio::time::interval(RENEW_EVERY);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Ok(Some(mut current)) = cluster.get(Kind::Lease, LEASE_NAME).await else {
            continue;
        };
        if current
            .pointer("/spec/holderIdentity")
            .and_then(Json::as_str)
            != Some(holder.as_str())
        {
            tracing::warn!("the deploy lock was taken over by another run");
            return;
        }
        current["spec"]["renewTime"] = micro_time(OffsetDateTime::now_utc()).into();
        if let Err(error) = cluster.replace(&current).await {
            tracing::warn!(%error, "cannot renew the deploy lock");
        }
    }
}
