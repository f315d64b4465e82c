//! The gateway's outgoing mail (issue 13: sign-up verification, invitations, password
//! resets, each a single-use link). A [`Mailer`] owns one worker thread behind a bounded
//! queue, so no event loop ever waits on a relay; the worker retries with back-off and the
//! mailer's [`Health`] tells callers, before they write anything, whether mail is going out.
//!
//! - [`config`]: the `[mail]` section ([`MailConfig`], [`SmtpConfig`]), its defaults, bounds
//!   and checks ([`ConfigError`]);
//! - [`message`]: one [`Mail`] as callers compose it, and the RFC 5322 message built from it;
//! - [`mailer`]: [`Mailer`] (start, submit, health, shutdown) and its refusals ([`Refused`]);
//! - `worker`: the thread, its retry list and schedule; `transport`, `outbox` and `smtp`:
//!   where mail goes (the `.eml` outbox, the embedded default, or an SMTP relay by lettre
//!   over rustls on ring); `health`: the state the handle and the worker share.
//!
//! ```no_run
//! use portcullis_mail::{Address, Health, Mail, MailConfig, Mailer};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mailer = Mailer::start(&MailConfig::default(), std::path::Path::new("/var/lib/portcullis"))?;
//! if let Health::Failing { .. } = mailer.health() {
//!     // Refuse the sign-up now (503), before an account is written.
//! }
//! let to: Address = "ada@example.org".parse()?;
//! let mail = Mail::new("verify-email", to, "Confirm your address", "Open https://…/verify?t=…\n")?;
//! mailer.submit(mail)?;
//! # Ok(()) }
//! ```

pub mod config;
mod health;
pub mod mailer;
pub mod message;
mod outbox;
mod smtp;
mod transport;
mod worker;

pub use config::{ConfigError, MailConfig, Security, SmtpConfig, TransportKind};
pub use health::Health;
pub use mailer::{MailError, Mailer, Refused, SHUTDOWN_GRACE, ShutdownOutcome};
pub use message::{Address, InvalidMail, Mail};
pub use outbox::{OUTBOX_DIR_MODE, OUTBOX_DIR_NAME, OUTBOX_FILE_MODE};
