//! Check-in and upload completion: the public, high-volume side.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::domain::{CheckinContext, Decision, DeviceId, Status, Ticket};
use crate::error::ApiError;
use crate::recorder::Recorder;
use crate::registry::{Entry, Registry};
use crate::store::{CheckinRecord, Store, StoreError, TicketCompletion, UploadReport};
use crate::telemetry;

/// What a client is told at check-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Nothing to do.
    NoUpload,
    /// Upload logs.
    Upload {
        /// Ticket to quote when completing.
        ticket: Ticket,
        /// Where to upload.
        upload_url: String,
        /// Why (from the registration).
        reason: String,
        /// Logs written since then are wanted.
        log_since: Option<OffsetDateTime>,
    },
}

/// Check-ins and upload completions.
#[derive(Clone)]
pub struct CheckinService {
    store: Store,
    registry: Arc<Registry>,
    recorder: Recorder,
    upload_url_template: Arc<str>,
}

fn unavailable(why: &str) -> ApiError {
    ApiError::Unavailable(StoreError::Unavailable {
        action: "record the check-in of a registered device".into(),
        source: why.to_owned().into(),
    })
}

impl CheckinService {
    /// A service answering from `registry`, recording through `recorder`, completing uploads in
    /// `store`.
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        recorder: Recorder,
        upload_url_template: &str,
    ) -> Self {
        Self {
            store,
            registry,
            recorder,
            upload_url_template: upload_url_template.into(),
        }
    }

    /// The background writer of check-in records (flushed at shutdown).
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Answers a check-in from the snapshot, without a database round-trip. A registered
    /// device's check-in is queued for the recorder; while the store cannot be reached (or the
    /// recorder cannot write) registered devices get 503, so no ticket is handed out that could
    /// not be recorded.
    pub fn check_in(&self, device: DeviceId, client: CheckinContext) -> Result<Answer, ApiError> {
        let Some(entry) = self.registry.lookup(&device) else {
            telemetry::checkin("no_upload", false);
            return Ok(Answer::NoUpload);
        };
        let answer = self.check_in_registered(device, &client, &entry);
        let outcome = match &answer {
            Ok(Answer::NoUpload) => "no_upload",
            Ok(Answer::Upload { .. }) => "upload",
            Err(_) => "error",
        };
        telemetry::checkin(outcome, true);
        answer
    }

    fn check_in_registered(
        &self,
        device: DeviceId,
        client: &CheckinContext,
        entry: &Entry,
    ) -> Result<Answer, ApiError> {
        if !self.registry.is_store_reachable() {
            return Err(unavailable(
                "the database did not answer the registration feed",
            ));
        }
        if !self.recorder.is_healthy() {
            return Err(unavailable(
                "the last check-in records could not be written",
            ));
        }
        let now = crate::domain::now();
        let record = |ticket: Option<Ticket>, outcome: &str| {
            self.recorder
                .record(CheckinRecord {
                    device_id: device.clone(),
                    at: now,
                    app_version: client.app_version.clone(),
                    platform: client.platform.clone(),
                    ticket,
                    outcome: outcome.to_owned(),
                    completed_at: None,
                })
                .map_err(|full| unavailable(&full.to_string()))
        };
        match entry.decide(client, now) {
            Decision::Upload => {
                let ticket = Ticket::generate();
                record(Some(ticket.clone()), "upload")?;
                Ok(Answer::Upload {
                    upload_url: self.upload_url(&ticket, &device),
                    ticket,
                    reason: entry.reason.to_string(),
                    log_since: entry.log_since,
                })
            }
            Decision::NotTargeted(why) => {
                record(None, why)?;
                Ok(Answer::NoUpload)
            }
            Decision::Expired => {
                // The feed's expiry sweep marks it expired in the store; stop asking here now.
                self.registry.remove(&device);
                record(None, "expired")?;
                Ok(Answer::NoUpload)
            }
        }
    }

    fn upload_url(&self, ticket: &Ticket, device: &DeviceId) -> String {
        // Device ids and tickets are limited to URL-safe characters, so no escaping is needed.
        self.upload_url_template
            .replace("{ticket}", ticket.as_str())
            .replace("{device_id}", device.as_str())
    }

    /// Records that a ticket's upload finished. Completing the same ticket again (a client
    /// retry) succeeds without counting twice. When the registration has all the uploads it
    /// asked for it becomes fulfilled, and every replica stops asking that device.
    pub async fn complete_upload(
        &self,
        ticket: &Ticket,
        report: UploadReport,
    ) -> Result<(), ApiError> {
        let now = crate::domain::now();
        let mut completion = self.store.complete_ticket(ticket, &report, now).await?;
        if completion == TicketCompletion::Unknown {
            // The check-in that issued it may still be in this replica's queue.
            self.recorder.flush().await;
            completion = self.store.complete_ticket(ticket, &report, now).await?;
        }
        let device = match completion {
            TicketCompletion::Unknown => {
                return Err(ApiError::NotFound {
                    code: "ticket_not_found",
                    message: format!(
                        "ticket {ticket} was never issued or is older than the check-in retention"
                    ),
                });
            }
            TicketCompletion::AlreadyCompleted(_) => {
                telemetry::upload_completed(false);
                return Ok(());
            }
            TicketCompletion::Completed(device) => device,
        };
        telemetry::upload_completed(true);
        let Some(registration) = self.store.count_upload(&device).await? else {
            return Ok(());
        };
        if registration
            .spec
            .max_uploads
            .is_reached_by(registration.uploads)
            && self
                .store
                .transition(&device, Status::Active, Status::Fulfilled, now)
                .await?
        {
            self.registry.remove(&device);
            tracing::info!(device_id = %device, uploads = registration.uploads, "registration fulfilled");
        }
        Ok(())
    }
}
