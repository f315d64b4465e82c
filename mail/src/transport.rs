//! The two ways a mail leaves ([`Transport`]: the outbox or the SMTP relay) behind one
//! `deliver`/`probe` pair for the worker, and [`DeliveryError`], which sorts every failure
//! by whose it is and whether trying again can help.

use lettre::message::Mailbox;

use crate::outbox::Outbox;
use crate::smtp::Relay;
use crate::worker::Job;

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// The relay could not be reached or answered "not now" (connect, TLS, timeout, 4xx):
    /// worth trying again later.
    #[error("the mail relay failed: {0}")]
    RelayUnavailable(String),
    /// The relay refused this mail for good (a 5xx to the sender, recipient or data).
    #[error("the mail relay refused the mail for good: {0}")]
    Rejected(String),
    /// The relay refuses us, not the mail (5xx on authentication or encryption): every mail
    /// would fail the same way until the operator fixes `[mail.smtp]`.
    #[error(
        "the mail relay refuses this gateway (check mail.smtp.username, password_file and security): {0}"
    )]
    RelayRefusesUs(String),
    /// The outbox directory cannot be written (full disk, permissions): the operator's.
    #[error("the mail outbox cannot be written: {0}")]
    Outbox(std::io::Error),
    /// The message could not be built: a bug here.
    #[error("internal: the message could not be built: {0}")]
    Internal(String),
}

impl DeliveryError {
    /// Whether the same mail may go through on a later attempt.
    pub(crate) fn is_retryable(&self) -> bool {
        matches!(self, Self::RelayUnavailable(_) | Self::Outbox(_))
    }

    /// Whether the failure says mail in general cannot go (so the health turns `Failing`),
    /// rather than this one mail.
    pub(crate) fn is_transport_wide(&self) -> bool {
        matches!(
            self,
            Self::RelayUnavailable(_) | Self::RelayRefusesUs(_) | Self::Outbox(_)
        )
    }
}

/// Where mail goes.
pub(crate) enum Transport {
    Outbox(Outbox),
    Smtp(Relay),
}

impl Transport {
    /// Delivers one mail; on success answers where it went, for the log.
    pub(crate) fn deliver(&mut self, job: &Job, from: &Mailbox) -> Result<String, DeliveryError> {
        let message = job
            .mail
            .build(from, job.queued_at)
            .map_err(|e| DeliveryError::Internal(e.to_string()))?;
        match self {
            Transport::Outbox(outbox) => outbox
                .write(job.mail.kind(), &message.formatted())
                .map(|name| format!("written to the outbox as {name}"))
                .map_err(DeliveryError::Outbox),
            Transport::Smtp(relay) => relay.send(&message).map(|()| relay.describe()),
        }
    }

    /// Checks, without a mail, whether delivery would work now.
    pub(crate) fn probe(&mut self) -> Result<(), DeliveryError> {
        match self {
            Transport::Outbox(outbox) => outbox.probe().map_err(DeliveryError::Outbox),
            Transport::Smtp(relay) => relay.probe(),
        }
    }
}
