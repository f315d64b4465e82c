//! Why the gateway closes a connection, whichever protocol it spoke. Each reason says what really
//! happened (who left, what limit was hit, what the peer sent), because the text is the log line an
//! operator reads and the variant is the rejection metric a dashboard counts.

use std::fmt;

/// Why a connection closes; logged with the peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its end (FIN, close_notify, a WebSocket close).
    PeerClosed,
    /// A read or write on the socket failed (reset, broken pipe): the network's or the peer's
    /// doing.
    Io(String),
    /// The connection's state machine was asked to do something its stage does not allow: a bug
    /// of ours, closed rather than carried on.
    Internal(String),
    /// The first bytes are a Blynk frame, but not a login (command 29 or 2).
    NotALogin(String),
    /// The first bytes match no protocol served on this port.
    UnknownProtocol,
    /// A TLS handshake arrived on the plain port.
    TlsOnPlainPort,
    /// A protocol this gateway recognises but does not serve (yet).
    NotServed(&'static str),
    /// The peer broke its protocol's framing (a bad frame, an oversize message).
    Malformed(String),
    /// An HTTP request that is answered with an error status and closed (not a route, wrong
    /// method, a bad upgrade). `why` is for the log.
    HttpRefused {
        status: u16,
        why: String,
    },
    InvalidToken,
    /// The source failed too many logins: refused without checking the token (`gate` names the
    /// phase: back-off or block), for `retry_in_ms` more.
    LoginThrottled {
        gate: &'static str,
        retry_in_ms: u64,
    },
    /// No login within the deadline (TLS handshake included).
    LoginTimeout,
    /// A device silent for longer than its heartbeat allows.
    HeartbeatTimeout {
        secs: u64,
    },
    /// An HTTP connection past a deadline: a request's head or body too slow, or idle between
    /// requests for too long.
    HttpTimeout {
        what: &'static str,
        secs: u64,
    },
    /// A logged-in app silent for longer than `app.idle_timeout_secs`.
    IdleTimeout {
        secs: u64,
    },
    /// More bytes buffered before login than `limits.preauth_buffer_bytes`.
    PreAuthBufferFull {
        limit: usize,
    },
    /// A logged-in peer left more than a whole message's worth of bytes undecoded.
    InputBufferFull {
        limit: usize,
    },
    /// Its outbound queue hit the bound: it does not read what we send.
    SlowReader {
        queued: usize,
    },
    Tls(String),
    /// The store refused or failed the login lookup.
    StoreUnavailable,
    Shutdown,
    /// The exchange is over in good order (an HTTP client that asked to close).
    Finished(&'static str),
    /// A logged-in device announced (in its info message) a template other than its own: its
    /// token is valid, but it is not the kind of device the token was provisioned for. Boxed:
    /// rare, and every connection's stage is as large as the largest reason.
    TemplateMismatch(Box<TemplateMismatch>),
    /// The store's revocation feed named this connection's device, user or session (the device
    /// was re-provisioned or deleted, the user suspended or logged out): its credential no
    /// longer holds. `what` says which kind of revocation it was. A device is closed without a
    /// word; its next login meets the store's answer (status 9 for a replaced token).
    Revoked {
        what: &'static str,
    },
}

/// Longest part of a peer's announced template shown in logs: a real template id is at most
/// `MAX_TEMPLATE_ID_LEN` (32) characters, so anything beyond is cut and marked.
pub const MAX_LOGGED_TEMPLATE_CHARS: usize = 40;

/// What a device announced and what its token's template is, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateMismatch {
    /// The `tmpl` of the info message: peer input, made printable and cut to
    /// [`MAX_LOGGED_TEMPLATE_CHARS`] when built ([`TemplateMismatch::new`]).
    pub announced: String,
    /// The template the store holds for the device.
    pub expected: String,
}

impl TemplateMismatch {
    /// Keeps at most [`MAX_LOGGED_TEMPLATE_CHARS`] of `announced`, escaped (quotes, backslashes
    /// and anything unprintable), with `…` when it was longer.
    pub fn new(announced: &str, expected: &str) -> Self {
        let mut shown: String = announced
            .chars()
            .take(MAX_LOGGED_TEMPLATE_CHARS)
            .flat_map(char::escape_debug)
            .collect();
        if announced.chars().nth(MAX_LOGGED_TEMPLATE_CHARS).is_some() {
            shown.push('…');
        }
        Self {
            announced: shown,
            expected: expected.escape_debug().collect(),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed the connection"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::Internal(e) => write!(f, "internal error: {e}"),
            CloseReason::NotALogin(what) => write!(f, "first frame is not a login ({what})"),
            CloseReason::UnknownProtocol => {
                f.write_str("first bytes match no protocol served on this port")
            }
            CloseReason::TlsOnPlainPort => {
                f.write_str("a TLS handshake on the plain port (connect to the TLS port)")
            }
            CloseReason::NotServed(what) => write!(f, "{what} is not served by this gateway"),
            CloseReason::Malformed(e) => write!(f, "malformed frame: {e}"),
            CloseReason::HttpRefused { status, why } => {
                write!(f, "HTTP request answered {status}: {why}")
            }
            CloseReason::InvalidToken => f.write_str("invalid device token"),
            CloseReason::LoginThrottled { gate, retry_in_ms } => write!(
                f,
                "login refused without checking ({gate}: too many failed logins from this source; retry in {retry_in_ms} ms)"
            ),
            CloseReason::LoginTimeout => f.write_str("no login before the deadline"),
            CloseReason::HeartbeatTimeout { secs } => {
                write!(f, "silent for {secs} s (heartbeat timeout)")
            }
            CloseReason::HttpTimeout { what, secs } => {
                write!(f, "HTTP {what} not complete within {secs} s")
            }
            CloseReason::IdleTimeout { secs } => {
                write!(f, "silent for {secs} s (app idle timeout)")
            }
            CloseReason::PreAuthBufferFull { limit } => {
                write!(f, "more than {limit} bytes before login completed")
            }
            CloseReason::InputBufferFull { limit } => {
                write!(f, "more than {limit} bytes of an unfinished message")
            }
            CloseReason::SlowReader { queued } => write!(
                f,
                "outbound queue full ({queued} bytes): peer does not read"
            ),
            CloseReason::Tls(e) => write!(f, "TLS error: {e}"),
            CloseReason::StoreUnavailable => f.write_str("store could not check the login"),
            CloseReason::Shutdown => f.write_str("gateway shutting down"),
            CloseReason::Finished(what) => write!(f, "done: {what}"),
            CloseReason::TemplateMismatch(m) => write!(
                f,
                "device announced template \"{}\", but its token belongs to template {}",
                m.announced, m.expected
            ),
            CloseReason::Revoked { what } => write!(f, "credential revoked: {what}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announced_template_is_logged_printable_and_bounded() {
        let m = TemplateMismatch::new("TMPLother\"\u{1b}[2J", "TMPLmine");
        assert_eq!(m.announced, "TMPLother\\\"\\u{1b}[2J");
        let long = "X".repeat(10_000);
        let m = TemplateMismatch::new(&long, "TMPLmine");
        assert_eq!(m.announced.chars().count(), MAX_LOGGED_TEMPLATE_CHARS + 1);
        assert!(m.announced.ends_with('…'));
        let reason = CloseReason::TemplateMismatch(Box::new(m));
        assert!(reason.to_string().contains("TMPLmine"));
    }
}
