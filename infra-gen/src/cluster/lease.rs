//! The deploy lock: a `coordination.k8s.io` Lease in the namespace, so two applies never
//! interleave. The holder is named (the CI job URL in GitLab) so a refused run can say who
//! holds it. A holder renews it while it runs; a lease left by a killed process stops being
//! renewed, expires and is taken over.
//!
//! A holder that loses the lease — another run took it over, or renewals kept failing until it
//! expired — must not write again: the renewer marks the connection's [`LockWatch`] lost, and
//! every later write of the [`Cluster`] fails before it is sent.
//!
//! The Lease is built from the typed k8s-openapi struct: `acquireTime`/`renewTime` are
//! `MicroTime`, which the API server only accepts with exactly six fractional digits.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease as LeaseObject, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{Cluster, ClusterError, ClusterResult, Kind, LockWatch, typed_to_json};

/// The Lease name.
pub const LEASE_NAME: &str = "infra-gen-deploy";
/// How long a lease stays valid without renewal, unless `INFRA_GEN_LOCK_SECONDS` says
/// otherwise.
pub const LEASE_SECONDS: i32 = 60;

/// Seconds a lease stays valid without renewal: `INFRA_GEN_LOCK_SECONDS` (2–3600), else 60.
/// The holder renews it every quarter of that.
pub fn lease_seconds() -> i32 {
    std::env::var("INFRA_GEN_LOCK_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .filter(|s| (2..=3600).contains(s))
        .unwrap_or(LEASE_SECONDS)
}

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

fn holder_of(lease: &LeaseObject) -> &str {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default()
}

fn renewed_at(lease: &LeaseObject) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    spec.renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0)
}

fn expires_at(lease: &LeaseObject) -> Option<Timestamp> {
    let seconds = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(LEASE_SECONDS);
    renewed_at(lease)?
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .ok()
}

/// Whether a lease is still valid at `now`.
pub fn is_live(lease: &LeaseObject, now: Timestamp) -> bool {
    !holder_of(lease).is_empty() && expires_at(lease).is_some_and(|e| e > now)
}

fn lease_object(
    namespace: &str,
    holder: &str,
    seconds: i32,
    now: Timestamp,
    resource_version: Option<String>,
) -> LeaseObject {
    LeaseObject {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "infra-gen".to_owned(),
                )]
                .into(),
            ),
            resource_version,
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

async fn read(cluster: &Cluster) -> ClusterResult<Option<LeaseObject>> {
    match cluster.get(Kind::Lease, LEASE_NAME).await? {
        None => Ok(None),
        Some(json) => serde_json::from_value(json)
            .map(Some)
            .map_err(|e| ClusterError::Transport {
                action: format!("read Lease/{LEASE_NAME}"),
                message: format!("the Lease cannot be read as one: {e}"),
            }),
    }
}

/// A held lease; renewed in the background until [`Lease::release`].
pub struct Lease {
    cluster: Cluster,
    holder: String,
    watch: std::sync::Arc<LockWatch>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the lease, or fails at once naming the holder. An expired lease is taken over;
    /// a race with another run is settled by the API server (resourceVersion precondition).
    /// From then on the writes of `cluster` (and of its clones) stop once the lease is lost.
    pub async fn acquire(cluster: &Cluster, holder: &str) -> Result<Lease, LeaseError> {
        let namespace = cluster.namespace().to_owned();
        let seconds = lease_seconds();
        // Taken before the renewTime it writes: the deadline counts from no later than the
        // time others count the lease's validity from.
        let now_instant = std::time::Instant::now();
        let now = Timestamp::now();
        let own = cluster.unguarded();
        match read(cluster).await? {
            None => {
                let lease = lease_object(&namespace, holder, seconds, now, None);
                own.create(&typed_to_json(&lease)?)
                    .await
                    .map_err(|e| held_if_conflict(e, &namespace))?;
            }
            Some(current) if is_live(&current, now) && holder_of(&current) != holder => {
                let since = current
                    .spec
                    .as_ref()
                    .and_then(|s| s.acquire_time.as_ref())
                    .map_or_else(|| "?".to_owned(), |t| t.0.to_string());
                return Err(LeaseError::Held {
                    namespace,
                    holder: holder_of(&current).to_owned(),
                    since,
                    until: expires_at(&current).map_or_else(|| "?".to_owned(), |t| t.to_string()),
                });
            }
            Some(current) => {
                let rv = current.metadata.resource_version.clone();
                let lease = lease_object(&namespace, holder, seconds, now, rv);
                own.replace(&typed_to_json(&lease)?)
                    .await
                    .map_err(|e| held_if_conflict(e, &namespace))?;
            }
        }
        let watch = cluster.lock_watch();
        watch.hold_until(
            renew_deadline(now_instant, seconds),
            deadline_reason(&namespace, seconds),
        );
        let renewer = tokio::spawn(renew(
            own.clone(),
            holder.to_owned(),
            watch.clone(),
            seconds,
        ));
        Ok(Lease {
            cluster: own,
            holder: holder.to_owned(),
            watch,
            renewer,
        })
    }

    /// Gives the lease back (unless it was lost: then it is the new holder's). The delete
    /// carries the uid and resourceVersion it read, so a lease another run took over in
    /// between is never deleted.
    pub async fn release(self) -> ClusterResult<()> {
        self.renewer.abort();
        if self.watch.lost().is_some() {
            return Ok(());
        }
        if let Some(current) = read(&self.cluster).await?
            && holder_of(&current) == self.holder
            && let (Some(uid), Some(rv)) = (
                current.metadata.uid.as_deref(),
                current.metadata.resource_version.as_deref(),
            )
        {
            match self
                .cluster
                .delete_exactly(Kind::Lease, LEASE_NAME, uid, rv)
                .await
            {
                Err(e) if e.code() == Some(409) => {}
                other => other?,
            }
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

/// Until when the holder may write after a renewal (or the acquisition) taken at `at`: two
/// thirds of the lease's lifetime later. The last third is left for clock skew between the
/// machines and for a write already in flight; another run takes the lease over only after
/// the whole lifetime.
fn renew_deadline(at: std::time::Instant, seconds: i32) -> std::time::Instant {
    at + Duration::from_millis(u64::try_from(seconds).unwrap_or(60) * 2000 / 3)
}

fn deadline_reason(namespace: &str, seconds: i32) -> String {
    format!(
        "the deploy lock of namespace {namespace} could not be renewed within two thirds of its {seconds} s lifetime, so this run stopped writing before another may take it over"
    )
}

/// Renews every quarter of the lease time, each attempt cut off after that quarter (a renewal
/// that hangs must not hold the next one up). Stops, marking the lock lost, when another run
/// holds the lease or it is gone; the watch's deadline stops the writes meanwhile if no
/// renewal succeeds in time, whatever the attempt in flight is doing.
async fn renew(cluster: Cluster, holder: String, watch: std::sync::Arc<LockWatch>, seconds: i32) {
    let every = Duration::from_millis(u64::try_from(seconds).unwrap_or(60) * 250);
    let namespace = cluster.namespace().to_owned();
    loop {
        tokio::time::sleep(every).await;
        let started = std::time::Instant::now();
        let attempt = tokio::time::timeout(every, async {
            let Some(mut current) = read(&cluster).await? else {
                return Ok(Some(format!(
                    "the deploy lock of namespace {namespace} was deleted while this run held it"
                )));
            };
            if holder_of(&current) != holder {
                let since = current
                    .spec
                    .as_ref()
                    .and_then(|s| s.acquire_time.as_ref())
                    .map_or_else(|| "?".to_owned(), |t| t.0.to_string());
                return Ok(Some(format!(
                    "the deploy lock of namespace {namespace} was taken over by {} (since {since})",
                    holder_of(&current)
                )));
            }
            if let Some(spec) = current.spec.as_mut() {
                spec.renew_time = Some(MicroTime(Timestamp::now()));
            }
            // Left out, the server keeps the managed fields as they are.
            current.metadata.managed_fields = None;
            cluster.replace(&typed_to_json(&current)?).await?;
            ClusterResult::Ok(None)
        })
        .await;
        match attempt {
            Ok(Ok(None)) => {
                watch.hold_until(
                    renew_deadline(started, seconds),
                    deadline_reason(&namespace, seconds),
                );
            }
            Ok(Ok(Some(reason))) => {
                tracing::warn!(%reason, "lost the deploy lock");
                watch.lose(reason);
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot renew the deploy lock");
                watch.note_failure(error.to_string());
            }
            Err(_) => {
                tracing::warn!("renewing the deploy lock took longer than {every:?}; trying again");
                watch.note_failure(format!("a renewal took longer than {every:?}"));
            }
        }
        if watch.lost().is_some() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_times_are_micro_times_with_six_fractional_digits() {
        // A time whose microseconds end in zeros: trimming them made the API server refuse it.
        let at: Timestamp = "2026-12-01T07:49:16.023460Z".parse().unwrap();
        let json = typed_to_json(&lease_object("ns", "me", 60, at, None)).unwrap();
        assert_eq!(json["spec"]["renewTime"], "2026-12-01T07:49:16.023460Z");
        assert_eq!(json["spec"]["acquireTime"], "2026-12-01T07:49:16.023460Z");
        assert_eq!(json["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(json["kind"], "Lease");
    }

    #[test]
    fn a_lease_is_live_until_its_duration_after_the_last_renewal() {
        let at: Timestamp = "2026-12-01T07:00:00Z".parse().unwrap();
        let lease = lease_object("ns", "me", 60, at, None);
        assert!(is_live(&lease, at + SignedDuration::from_secs(59)));
        assert!(!is_live(&lease, at + SignedDuration::from_secs(60)));
        let mut nobody = lease.clone();
        if let Some(spec) = nobody.spec.as_mut() {
            spec.holder_identity = None;
        }
        assert!(!is_live(&nobody, at));
    }
}
