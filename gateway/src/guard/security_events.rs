//! Security events about connections, raised by the reactor and the protocol sessions: refused
//! TLS handshakes, invalid or malformed device tokens, failed app logins, and peers turned away
//! before login. Written to the security log (`security_log.rs`) through a shard's
//! [`SecurityEvents`], so that a flood of them is summarised, not written line by line.

use super::log_budget::{Budgeted, LogBudget, PRE_LOGIN_EVENTS_PER_SEC, Suppressed};
use super::security_log::{self as security, SecurityEvent};
use std::net::SocketAddr;
use std::time::Instant;

/// Which budget an event spends: login attempts (bad, malformed or throttled tokens, which name
/// the guessing source) have their own, so a flood of garbage connections cannot use up the
/// budget and hide them in a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventClass {
    /// TLS refusals and connections rejected before a login was even tried.
    Stranger,
    /// Device login attempts that failed or were throttled.
    Login,
}

impl EventClass {
    fn name(self) -> &'static str {
        match self {
            EventClass::Stranger => "pre-login rejection",
            EventClass::Login => "failed-login",
        }
    }
}

/// A shard's way into the logs for what outsiders cause before logging in, within
/// [`LogBudget`]s: each second the first [`PRE_LOGIN_EVENTS_PER_SEC`] security events of each
/// [`EventClass`] and as many "closing connection" lines are written, the rest summarised in
/// one line each when the second is over.
#[derive(Debug)]
pub struct SecurityEvents {
    shard: u16,
    epoch: Instant,
    strangers: LogBudget,
    logins: LogBudget,
    closes: LogBudget,
}

impl SecurityEvents {
    pub fn new(shard: u16, now: Instant) -> Self {
        Self {
            shard,
            epoch: now,
            strangers: LogBudget::new(PRE_LOGIN_EVENTS_PER_SEC),
            logins: LogBudget::new(PRE_LOGIN_EVENTS_PER_SEC),
            closes: LogBudget::new(PRE_LOGIN_EVENTS_PER_SEC),
        }
    }

    pub fn record(&mut self, now: Instant, event: &ConnectionEvent) {
        self.flush(now);
        let now_s = self.seconds(now);
        let budget = match event.class() {
            EventClass::Stranger => &mut self.strangers,
            EventClass::Login => &mut self.logins,
        };
        if budget.admit(now_s) == Budgeted::Write {
            security::record("reactor", event);
        }
    }

    /// Whether the close of a connection that never logged in gets its own log line.
    pub fn close_line(&mut self, now: Instant) -> Budgeted {
        self.flush(now);
        let now_s = self.seconds(now);
        self.closes.admit(now_s)
    }

    /// Writes the summaries of a past second's suppressed events and lines, if any are owed.
    pub fn flush(&mut self, now: Instant) {
        let now_s = self.seconds(now);
        let strangers = self.strangers.summary_due(now_s);
        let logins = self.logins.summary_due(now_s);
        let closes = self.closes.summary_due(now_s);
        self.summarise(strangers, logins, closes);
    }

    /// Writes whatever is still owed, the current second included (the shard is stopping).
    pub fn flush_at_shutdown(&mut self) {
        let strangers = self.strangers.take_all();
        let logins = self.logins.take_all();
        let closes = self.closes.take_all();
        self.summarise(strangers, logins, closes);
    }

    fn summarise(
        &self,
        strangers: Option<Suppressed>,
        logins: Option<Suppressed>,
        closes: Option<Suppressed>,
    ) {
        for (class, suppressed) in [
            (EventClass::Stranger, strangers),
            (EventClass::Login, logins),
        ] {
            if let Some(suppressed) = suppressed {
                security::record(
                    "reactor",
                    &ConnectionEvent::Suppressed {
                        shard: self.shard,
                        class,
                        events: suppressed.events,
                    },
                );
            }
        }
        if let Some(suppressed) = closes {
            tracing::info!(
                shard = self.shard,
                closes = suppressed.events,
                "more connections closed before login in one second than are logged one by one"
            );
        }
    }

    fn seconds(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }
}

#[derive(Debug, Clone)]
pub enum ConnectionEvent {
    /// The TLS handshake failed (e.g. a TLS 1.1 client, or garbage on the TLS port).
    TlsRefused { peer: SocketAddr, reason: String },
    /// An established TLS session was broken by the peer (bad record, protocol violation).
    TlsBroken { peer: SocketAddr, reason: String },
    /// A well-formed token the store does not know; `next` is what the login throttle will do
    /// with the address's next attempt.
    InvalidToken {
        peer: SocketAddr,
        next: &'static str,
    },
    /// A login whose token is not a token at all.
    MalformedToken { peer: SocketAddr, reason: String },
    /// Closed before login for another reason (not a login, unknown protocol, deadline, buffer).
    PreAuthRejected { peer: SocketAddr, reason: String },
    /// Admission control refused the connection at accept (per-source cap, accept rate,
    /// pre-login cap). Raised at powers of two per shard so a flood cannot flood the log.
    RefusedAtAccept { peer: SocketAddr, reason: String },
    /// The login throttle blocked an attempt from this address (raised by the throttle, with
    /// `ShardMetrics::login_throttled` for the counters).
    LoginThrottled { peer: SocketAddr, reason: String },
    /// An app login with an unknown email or a wrong password (told apart only here, never to
    /// the app); `next` is what the app login throttle does with the address's next attempt.
    AppLoginFailed {
        peer: SocketAddr,
        email: String,
        why: &'static str,
        next: &'static str,
        /// Failures of this account within a day, from any address (`None`: no such account).
        account_failures: Option<u32>,
    },
    /// The app login throttle refused an attempt from this address without checking it.
    AppLoginThrottled {
        peer: SocketAddr,
        email: String,
        retry_in_secs: u64,
    },
    /// A device with a valid token announced a template other than its own and was closed
    /// (`announced` is already printable and bounded: `conn::close::TemplateMismatch`).
    TemplateMismatch {
        peer: SocketAddr,
        device: portcullis_protocol::store::DeviceId,
        announced: String,
        expected: String,
    },
    /// More events of a class than the shard's per-second budget: this many were counted, not
    /// written.
    Suppressed {
        shard: u16,
        class: EventClass,
        events: u64,
    },
}

impl ConnectionEvent {
    /// The log budget this event spends.
    pub fn class(&self) -> EventClass {
        match self {
            ConnectionEvent::InvalidToken { .. }
            | ConnectionEvent::MalformedToken { .. }
            | ConnectionEvent::LoginThrottled { .. }
            | ConnectionEvent::AppLoginFailed { .. }
            | ConnectionEvent::AppLoginThrottled { .. }
            | ConnectionEvent::TemplateMismatch { .. } => EventClass::Login,
            ConnectionEvent::TlsRefused { .. }
            | ConnectionEvent::TlsBroken { .. }
            | ConnectionEvent::PreAuthRejected { .. }
            | ConnectionEvent::RefusedAtAccept { .. }
            | ConnectionEvent::Suppressed { .. } => EventClass::Stranger,
        }
    }
}

impl SecurityEvent for ConnectionEvent {
    fn kind(&self) -> &'static str {
        match self {
            ConnectionEvent::TlsRefused { .. } => "tls_refused",
            ConnectionEvent::TlsBroken { .. } => "tls_broken",
            ConnectionEvent::InvalidToken { .. } => "invalid_device_token",
            ConnectionEvent::MalformedToken { .. } => "malformed_device_token",
            ConnectionEvent::PreAuthRejected { .. } => "pre_auth_rejected",
            ConnectionEvent::LoginThrottled { .. } => "login_throttled",
            ConnectionEvent::RefusedAtAccept { .. } => "connection_refused",
            ConnectionEvent::AppLoginFailed { .. } => "app_login_failed",
            ConnectionEvent::AppLoginThrottled { .. } => "app_login_throttled",
            ConnectionEvent::TemplateMismatch { .. } => "device_template_mismatch",
            ConnectionEvent::Suppressed { .. } => "events_suppressed",
        }
    }

    fn source(&self) -> Option<std::net::IpAddr> {
        match self {
            ConnectionEvent::TlsRefused { peer, .. }
            | ConnectionEvent::TlsBroken { peer, .. }
            | ConnectionEvent::InvalidToken { peer, .. }
            | ConnectionEvent::MalformedToken { peer, .. }
            | ConnectionEvent::PreAuthRejected { peer, .. }
            | ConnectionEvent::LoginThrottled { peer, .. }
            | ConnectionEvent::RefusedAtAccept { peer, .. }
            | ConnectionEvent::AppLoginFailed { peer, .. }
            | ConnectionEvent::AppLoginThrottled { peer, .. }
            | ConnectionEvent::TemplateMismatch { peer, .. } => Some(peer.ip()),
            ConnectionEvent::Suppressed { .. } => None,
        }
    }

    fn subject(&self) -> String {
        match self {
            ConnectionEvent::TlsRefused { peer, .. }
            | ConnectionEvent::TlsBroken { peer, .. }
            | ConnectionEvent::PreAuthRejected { peer, .. }
            | ConnectionEvent::RefusedAtAccept { peer, .. } => format!("connection from {peer}"),
            ConnectionEvent::InvalidToken { peer, .. }
            | ConnectionEvent::MalformedToken { peer, .. }
            | ConnectionEvent::LoginThrottled { peer, .. } => {
                format!("device login from {peer}")
            }
            ConnectionEvent::AppLoginFailed { peer, email, .. }
            | ConnectionEvent::AppLoginThrottled { peer, email, .. } => {
                format!("app login as {email:?} from {peer}")
            }
            ConnectionEvent::TemplateMismatch { peer, device, .. } => {
                format!("device {device} from {peer}")
            }
            ConnectionEvent::Suppressed { shard, .. } => format!("shard {shard}"),
        }
    }

    fn reason(&self) -> String {
        match self {
            ConnectionEvent::TlsRefused { reason, .. }
            | ConnectionEvent::TlsBroken { reason, .. }
            | ConnectionEvent::MalformedToken { reason, .. }
            | ConnectionEvent::PreAuthRejected { reason, .. }
            | ConnectionEvent::LoginThrottled { reason, .. }
            | ConnectionEvent::RefusedAtAccept { reason, .. } => reason.clone(),
            ConnectionEvent::InvalidToken { next, .. } => {
                format!("no device has this token; next login from this address: {next}")
            }
            ConnectionEvent::AppLoginFailed {
                why,
                next,
                account_failures,
                ..
            } => match account_failures {
                Some(n) => format!(
                    "{why} ({n} failed logins of this account within a day); next app login \
                     from this address: {next}"
                ),
                None => format!("{why}; next app login from this address: {next}"),
            },
            ConnectionEvent::AppLoginThrottled { retry_in_secs, .. } => format!(
                "too many failed app logins from this address; refused without checking, retry \
                 in {retry_in_secs} s"
            ),
            ConnectionEvent::TemplateMismatch {
                announced,
                expected,
                ..
            } => format!(
                "its info announced template \"{announced}\", but its token belongs to template \
                 {expected}; closed, its info not stored (firmware built for another template, \
                 or a token copied onto another kind of device)"
            ),
            ConnectionEvent::Suppressed { events, class, .. } => format!(
                "{events} more {} events in one second than the {PRE_LOGIN_EVENTS_PER_SEC} \
                 written in full (the rejection metrics count every one)",
                class.name()
            ),
        }
    }

    fn message(&self) -> &'static str {
        match self {
            ConnectionEvent::TlsRefused { .. } => "TLS handshake refused",
            ConnectionEvent::TlsBroken { .. } => "TLS session broken by the peer",
            ConnectionEvent::InvalidToken { .. } => "device login with an unknown token",
            ConnectionEvent::MalformedToken { .. } => "device login refused",
            ConnectionEvent::PreAuthRejected { .. } => "connection rejected before login",
            ConnectionEvent::LoginThrottled { .. } => "device login throttled",
            ConnectionEvent::RefusedAtAccept { .. } => "connection refused at accept",
            ConnectionEvent::AppLoginFailed { .. } => "app login refused",
            ConnectionEvent::AppLoginThrottled { .. } => "app login throttled",
            ConnectionEvent::TemplateMismatch { .. } => "device refused: not its template",
            ConnectionEvent::Suppressed { .. } => "security events summarised",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_mismatch_names_the_device_and_both_templates() {
        let event = ConnectionEvent::TemplateMismatch {
            peer: "192.0.2.7:4000".parse().expect("test fixture"),
            device: 42,
            announced: "TMPLother".into(),
            expected: "TMPLmine".into(),
        };
        assert_eq!(event.kind(), "device_template_mismatch");
        assert_eq!(event.class(), EventClass::Login);
        assert_eq!(event.source(), "192.0.2.7".parse().ok());
        assert_eq!(event.subject(), "device 42 from 192.0.2.7:4000");
        let reason = event.reason();
        assert!(
            reason.contains("\"TMPLother\"") && reason.contains("TMPLmine"),
            "{reason}"
        );
    }
}
