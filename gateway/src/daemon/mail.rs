//! The gateway's mailer as the REST API sees it: `portcullis_mail::Mailer` (the `.eml` outbox
//! in `<data-dir>/outbox/` by default, or an SMTP relay) behind the API's `MailSink`, turning
//! the operations' `OutgoingMail` into a `Mail` and the mailer's health and refusals into the
//! sentences the API logs.

use crate::protocols::http::rest::MailSink;
use portcullis_mail::{Health, Mail, Mailer};
use portcullis_operations::accounts::OutgoingMail;

impl MailSink for Mailer {
    fn health(&self) -> Result<(), String> {
        match Mailer::health(self) {
            Health::Healthy => Ok(()),
            Health::Failing { last_error, .. } => Err(last_error),
        }
    }

    fn submit(&self, mail: OutgoingMail) -> Result<(), String> {
        let to = mail
            .to
            .parse()
            .map_err(|e| format!("{:?} is not an address mail can go to: {e}", mail.to))?;
        let mail = Mail::new(mail.kind, to, mail.subject, mail.body).map_err(|e| e.to_string())?;
        Mailer::submit(self, mail).map_err(|e| e.to_string())
    }
}
