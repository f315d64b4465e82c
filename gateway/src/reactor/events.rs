//! Security events raised by the reactor about connections: refused TLS handshakes, invalid or
//! malformed device tokens, and peers turned away before login. Rendered by `crate::security`.

use crate::security::SecurityEvent;
use std::net::SocketAddr;

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
            | ConnectionEvent::RefusedAtAccept { peer, .. } => Some(peer.ip()),
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
        }
    }
}
