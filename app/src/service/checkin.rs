//! Check-in and upload completion: the public, high-volume side.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::domain::{CheckinContext, Decision, DeviceId, Status, Ticket};
use crate::error::ApiError;
use crate::registry::Registry;
use crate::store::{CheckinRecord, Store, TicketCompletion, UploadReport};
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
    upload_url_template: Arc<str>,
}

impl CheckinService {
    /// A service answering from `registry` and recording in `store`.
    pub fn new(store: Store, registry: Arc<Registry>, upload_url_template: &str) -> Self {
        Self {
            store,
            registry,
            upload_url_template: upload_url_template.into(),
        }
    }

    /// Answers a check-in. An unregistered device is answered from memory; only a registered
    /// one costs database work (and gets 503 while the database is down).
    pub async fn check_in(
        &self,
        device: DeviceId,
        client: CheckinContext,
    ) -> Result<Answer, ApiError> {
        if !self.registry.contains(&device) {
            telemetry::checkin("no_upload", true);
            return Ok(Answer::NoUpload);
        }
        match self.check_in_registered(device, client).await {
            Ok(answer) => {
                let outcome = if matches!(answer, Answer::NoUpload) {
                    "no_upload"
                } else {
                    "upload"
                };
                telemetry::checkin(outcome, false);
                Ok(answer)
            }
            Err(error) => {
                telemetry::checkin("error", false);
                Err(error)
            }
        }
    }

    async fn check_in_registered(
        &self,
        device: DeviceId,
        client: CheckinContext,
    ) -> Result<Answer, ApiError> {
        let Some(registration) = self.store.get(&device).await? else {
            // The snapshot knew a registration the store no longer has (deleted by hand).
            self.registry.set_active(&device, false);
            return Ok(Answer::NoUpload);
        };
        let now = crate::domain::now();
        let record = |ticket: Option<Ticket>, outcome: &str| CheckinRecord {
            device_id: device.clone(),
            at: now,
            app_version: client.app_version.clone(),
            platform: client.platform.clone(),
            ticket,
            outcome: outcome.to_owned(),
            completed_at: None,
        };
        match registration.decide(&client, now) {
            Decision::Upload => {
                let ticket = Ticket::generate();
                // Recorded before answering: the ticket must exist when the client completes.
                self.store
                    .record_checkin(&record(Some(ticket.clone()), "upload"))
                    .await?;
                Ok(Answer::Upload {
                    upload_url: self.upload_url(&ticket, &device),
                    ticket,
                    reason: registration.spec.reason,
                    log_since: registration.spec.log_since,
                })
            }
            Decision::NotTargeted(why) => {
                self.store.record_checkin(&record(None, why)).await?;
                Ok(Answer::NoUpload)
            }
            Decision::Expired => {
                if self
                    .store
                    .transition(&device, Status::Active, Status::Expired, now)
                    .await?
                {
                    self.store.bump_generation().await?;
                }
                self.registry.set_active(&device, false);
                self.store.record_checkin(&record(None, "expired")).await?;
                Ok(Answer::NoUpload)
            }
            Decision::Inactive(_) => {
                self.registry.set_active(&device, false);
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
        let device = match self.store.complete_ticket(ticket, &report, now).await? {
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
            self.registry.set_active(&device, false);
            self.store.bump_generation().await?;
            tracing::info!(device_id = %device, uploads = registration.uploads, "registration fulfilled");
        }
        Ok(())
    }
}
