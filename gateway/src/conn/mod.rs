//! What a client connection is made of below any protocol, all of it sans-IO: its identity
//! ([`ConnId`]), the listener it came in on ([`Transport`]), the connection state machine
//! ([`stage::Stage`]), why it closes ([`close::CloseReason`]), the choice of the protocol it speaks
//! ([`select`]), and the byte layers a protocol may sit on: the TLS session ([`tls`]) and
//! WebSocket framing ([`ws`]). The socket itself belongs to the reactor
//! (`reactor/connection.rs`); the protocols (`crate::protocols`) build on these pieces.

pub mod close;
pub mod select;
pub mod stage;
pub mod tls;
pub mod ws;
#[cfg(test)]
pub(crate) mod ws_test_client;

use std::net::SocketAddr;

pub use close::CloseReason;

/// A connection's identity: its slab slot and that slot's generation when it was opened. Late
/// events (store replies, timers, worker answers, app events) carry it and are dropped if the
/// slot was reused since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub slot: u32,
    pub generation: u32,
}

/// Which listener accepted the connection: the TLS port or the plain one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tls = 0,
    Plain = 1,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::Tls, Transport::Plain];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Tls => "tls",
            Transport::Plain => "plain",
        }
    }
}

/// What a protocol handler knows of the connection it serves: enough to name it in logs, in
/// presence and in the security log, nothing to do IO with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnMeta {
    pub id: ConnId,
    pub peer: SocketAddr,
    pub transport: Transport,
}
