//! One mail as callers compose it ([`Mail`]: a kind label, a recipient, a subject, a plain-text
//! body) and its checks ([`InvalidMail`]), and the RFC 5322 message built from it for either
//! transport (Date, Message-ID, From, To, Subject, MIME text/plain in UTF-8). A mail's body
//! holds a secret link, so nothing here prints it: `Debug` shows its length only.

use std::time::SystemTime;

use lettre::Message;
use lettre::message::{Mailbox, SinglePart};

pub use lettre::Address;

/// Longest subject, in characters: subjects are short fixed phrases of the gateway.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Largest body, in bytes: the gateway's mails are a few lines and a link.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest kind label: it becomes part of an outbox file name.
pub const MAX_KIND_LEN: usize = 32;

/// A mail to send: what it is for (`kind`, for logs and outbox file names, such as
/// `"verify-email"`), whom to, its subject and its plain-text body.
#[derive(Clone)]
pub struct Mail {
    kind: String,
    to: Address,
    subject: String,
    body: String,
}

/// Why [`Mail::new`] refused a mail: always the calling code's doing, not the operator's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMail {
    #[error(
        "mail kind {0:?} must be 1 to 32 characters of a-z, 0-9 and '-' (it names outbox files)"
    )]
    Kind(String),
    #[error("mail subject is empty")]
    EmptySubject,
    #[error("mail subject holds a line break or another control character")]
    SubjectControl,
    #[error("mail subject is longer than {MAX_SUBJECT_CHARS} characters")]
    SubjectTooLong,
    #[error("mail body is larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
}

impl Mail {
    /// A mail of `kind` to `to`. The subject must be one line; the body is plain text whose
    /// lines end in `\n` or `\r\n`.
    pub fn new(
        kind: &str,
        to: Address,
        subject: impl Into<String>,
        body: impl Into<String>,
    ) -> Result<Mail, InvalidMail> {
        let kind_ok = !kind.is_empty()
            && kind.len() <= MAX_KIND_LEN
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !kind_ok {
            return Err(InvalidMail::Kind(kind.to_owned()));
        }
        let subject = subject.into();
        if subject.trim().is_empty() {
            return Err(InvalidMail::EmptySubject);
        }
        if subject.chars().any(char::is_control) {
            return Err(InvalidMail::SubjectControl);
        }
        if subject.chars().count() > MAX_SUBJECT_CHARS {
            return Err(InvalidMail::SubjectTooLong);
        }
        let body = body.into();
        if body.len() > MAX_BODY_BYTES {
            return Err(InvalidMail::BodyTooLarge);
        }
        Ok(Mail {
            kind: kind.to_owned(),
            to,
            subject,
            body,
        })
    }

    /// What the mail is for, as given to [`Mail::new`].
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The recipient.
    pub fn to(&self) -> &Address {
        &self.to
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The RFC 5322 message from `from`, dated `date` (when it was submitted).
    pub(crate) fn build(
        &self,
        from: &Mailbox,
        date: SystemTime,
    ) -> Result<Message, lettre::error::Error> {
        Message::builder()
            .from(from.clone())
            .to(Mailbox::new(None, self.to.clone()))
            .subject(self.subject.clone())
            .date(date)
            .message_id(None)
            .singlepart(SinglePart::plain(self.body.clone()))
    }
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mail")
            .field("kind", &self.kind)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .field(
                "body",
                &format_args!("<{} bytes, not shown>", self.body.len()),
            )
            .finish()
    }
}
