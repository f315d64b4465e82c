//! The protocols the gateway serves, one folder each (its sans-IO session plus the adapter the
//! reactor calls), and the contract between them and the reactor. This file is the registry:
//! [`Session`] has one variant per protocol, [`Continuation`] one per protocol that waits for store
//! replies, [`WorkDone`] one per protocol that hands work to the worker pools. Adding a protocol
//! means a new folder, a variant in each enum that applies, and an arm in `conn/select.rs`.
//!
//! The contract: the reactor owns sockets, TLS, buffers and timers and calls a session with the
//! bytes that arrived, a store reply, a worker's answer or a device event; the session decides
//! through an [`Outbox`] (bytes to send, store requests, jobs, subscriptions, what happens to the
//! connection) and may use what the shard lends it in [`Services`]. A session never touches a
//! socket and never blocks.

pub mod app_ws;
pub mod blynk;
pub mod http;
pub mod outbox;
pub mod revocation;

use crate::bus::{Bus, BusEvent};
use crate::conn::select::Protocol;
use crate::conn::{CloseReason, ConnId, ConnMeta};
use crate::guard::admission::Guards;
use crate::guard::security_events::SecurityEvents;
use crate::metrics::shard::ShardMetrics;
use portcullis_protocol::store::{DeviceId, NodeName, Response, SessionTag, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use outbox::{Job, Outbox, Pool, StoreRequest, Watch, WorkerStore};

/// Limits the protocol sessions enforce, from the configuration (live-reloadable).
#[derive(Debug, Clone)]
pub struct ProtocolLimits {
    pub device: blynk::device::SessionLimits,
    /// Largest frame body before a device logged in.
    pub max_body_before_login: usize,
    /// Largest frame body of a logged-in device.
    pub max_body: usize,
    /// Bytes buffered from a peer that has not logged in yet.
    pub preauth_buffer_bytes: usize,
    /// A device's outbound bound: beyond it the connection is a slow reader.
    pub outbound_queue_bytes: usize,
    /// Devices one app connection may subscribe to (`app.max_subscriptions`).
    pub app_max_subscriptions: usize,
    /// A logged-in app silent for this long is closed (`app.idle_timeout_secs`).
    pub app_idle_timeout: Duration,
    /// An app's outbound bound (`app.outbound_queue_bytes`).
    pub app_outbound_queue_bytes: usize,
    /// SO_SNDBUF of an app connection (`app.socket_send_buffer_bytes`).
    pub app_socket_send_buffer_bytes: usize,
}

/// What the shard lends a session for one step: its clock, limits, the shared abuse guards, the
/// security log, the counters and the event bus.
pub struct Services {
    pub shard: u16,
    /// This gateway's node (`server.node_name`), carried by every session tag.
    pub node: NodeName,
    pub now: Instant,
    /// Unix time in milliseconds, read once per loop turn.
    pub now_ms: u64,
    pub limits: ProtocolLimits,
    pub guards: Arc<Guards>,
    /// Security events caused by outsiders, within a per-second budget.
    pub security: SecurityEvents,
    pub metrics: Arc<ShardMetrics>,
    /// Who watches which device, and this turn's events for them.
    pub bus: Bus,
    /// What the REST API's calls need (mail, links, the session lifetime).
    pub rest: Arc<http::rest::RestEnv>,
    /// The template ids the shard's device sessions share.
    pub template_names: blynk::template_names::TemplateNames,
}

impl Services {
    /// The presence tag of a connection's session: this gateway's node, and shard and
    /// generation, unique among the node's live sessions of this run (generations only repeat
    /// after 2^32 connections on a shard).
    pub fn session_tag(&self, conn: ConnId) -> SessionTag {
        SessionTag {
            node: self.node.clone(),
            local: (u64::from(self.shard) << 32) | u64::from(conn.generation),
        }
    }
}

/// One call into a session: which connection, what the shard lends, where decisions go.
pub struct Step<'a> {
    pub conn: ConnMeta,
    pub services: &'a mut Services,
    pub out: &'a mut Outbox,
}

/// How far a session got through the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes used; the rest is kept and offered again with what arrives next.
    pub used: usize,
    /// The session stopped early because its outbox holds a queue's worth of answers: the reactor
    /// sends them and calls again, so a peer that pipelines and never reads is caught early.
    pub paused: bool,
}

/// How much undecoded input a session may leave with the connection, and what exceeding it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputLimit {
    /// Before login: `limits.preauth_buffer_bytes`.
    PreAuth(usize),
    /// After login: one whole message.
    Message(usize),
}

impl InputLimit {
    pub fn bytes(self) -> usize {
        match self {
            InputLimit::PreAuth(n) | InputLimit::Message(n) => n,
        }
    }

    pub fn exceeded(self) -> CloseReason {
        match self {
            InputLimit::PreAuth(limit) => CloseReason::PreAuthBufferFull { limit },
            InputLimit::Message(limit) => CloseReason::InputBufferFull { limit },
        }
    }
}

/// Whether an event reached a session, and whether it is the first output the session holds
/// this turn (the reactor then remembers to send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Ignored,
    Queued { first: bool },
}

/// A store request's outcome, as the session that asked sees it.
#[derive(Debug)]
pub enum StoreFailure {
    /// The store answered with an error.
    Store(StoreError),
    /// Never sent: the shard's store queue was full.
    QueueFull,
}

pub type StoreReply = Result<Response, StoreFailure>;

/// A connection's protocol session: one variant per protocol.
#[derive(Debug)]
pub enum Session {
    /// The Blynk device protocol. Inline: an idle device connection must stay small.
    Blynk(blynk::BlynkSession),
    /// HTTP/1.1 requests until one upgrades the connection.
    Http(Box<http::HttpSession>),
    /// The app WebSocket API. Boxed: apps are few, and a device must not pay for its size.
    AppWs(Box<app_ws::AppWsSession>),
}

/// Where a store reply goes back to: one variant per protocol that waits for replies.
#[derive(Debug)]
pub enum Continuation {
    Blynk(blynk::Pending),
}

/// A worker's answer for the session that handed it the job: one variant per protocol.
#[derive(Debug)]
pub enum WorkDone {
    AppWs(Box<app_ws::Done>),
    /// A REST call's answer.
    Http(Box<http::rest::Done>),
}

impl Session {
    /// The session for a protocol the selector picked, or the reason it cannot be served.
    pub fn start(protocol: Protocol, limits: &ProtocolLimits) -> Result<Session, CloseReason> {
        match protocol {
            Protocol::Blynk => Ok(Session::Blynk(blynk::BlynkSession::new())),
            // The configured pre-login buffer bounds a request head too.
            Protocol::Http => Ok(Session::Http(Box::new(http::HttpSession::new(
                limits.preauth_buffer_bytes,
            )))),
            Protocol::Mqtt => Err(CloseReason::NotServed("MQTT")),
        }
    }

    /// Bytes from the peer (decrypted when TLS).
    pub fn receive(&mut self, input: &[u8], step: &mut Step<'_>) -> Progress {
        match self {
            Session::Blynk(s) => s.receive(input, step),
            Session::Http(s) => s.receive(input, step),
            Session::AppWs(s) => s.receive(input, step),
        }
    }

    /// The reply to a store request this session made.
    pub fn on_store_reply(&mut self, then: Continuation, reply: StoreReply, step: &mut Step<'_>) {
        match (self, then) {
            (Session::Blynk(s), Continuation::Blynk(pending)) => {
                s.on_store_reply(pending, reply, step)
            }
            // The connection was handed to another protocol since: nobody waits any more.
            (_, then) => tracing::debug!(?then, "store reply for a session that moved on"),
        }
    }

    /// A worker's answer to a job this session handed out.
    pub fn on_work_done(&mut self, done: WorkDone, step: &mut Step<'_>) {
        match (self, done) {
            (Session::AppWs(s), WorkDone::AppWs(done)) => s.on_work_done(*done, step),
            (Session::Http(s), WorkDone::Http(done)) => s.on_work_done(*done, step),
            (_, done) => tracing::debug!(?done, "worker answer for a session that moved on"),
        }
    }

    /// An event of a device this connection watches. Queued output is sent once the whole
    /// batch of the loop turn is in ([`Session::flush`]).
    pub fn on_event(&mut self, event: &BusEvent) -> Delivery {
        match self {
            Session::AppWs(s) => s.on_event(event),
            Session::Blynk(_) | Session::Http(_) => Delivery::Ignored,
        }
    }

    /// Moves output the session held back (events batched per loop turn) into the outbox.
    pub fn flush(&mut self, step: &mut Step<'_>) {
        if let Session::AppWs(s) = self {
            s.flush(step)
        }
    }

    /// The connection's deadline passed with no activity that moved it.
    pub fn on_deadline(&self, limits: &ProtocolLimits) -> CloseReason {
        match self {
            Session::Blynk(s) => s.on_deadline(limits),
            Session::Http(s) => s.on_deadline(),
            Session::AppWs(s) => s.on_deadline(limits),
        }
    }

    /// The connection is closing for `reason`: last words to the peer, and what must be undone
    /// (presence, subscriptions).
    pub fn on_close(&mut self, reason: &CloseReason, step: &mut Step<'_>) {
        match self {
            Session::Blynk(s) => s.on_close(step),
            Session::Http(_) => {}
            Session::AppWs(s) => s.on_close(reason, step),
        }
    }

    /// A device past its login, or an app past its password check.
    pub fn is_logged_in(&self) -> bool {
        match self {
            Session::Blynk(s) => s.is_logged_in(),
            Session::Http(_) => false,
            Session::AppWs(s) => s.is_logged_in(),
        }
    }

    /// How much undecoded input the connection may hold for this session.
    pub fn input_limit(&self, limits: &ProtocolLimits) -> InputLimit {
        match self {
            Session::Blynk(s) => s.input_limit(limits),
            Session::Http(s) => s.input_limit(limits),
            Session::AppWs(s) => s.input_limit(),
        }
    }

    /// Bytes that may wait in the connection's outbound queue before it counts as a slow reader.
    pub fn outbound_limit(&self, limits: &ProtocolLimits) -> usize {
        match self {
            Session::AppWs(_) => limits.app_outbound_queue_bytes,
            Session::Blynk(_) | Session::Http(_) => limits.outbound_queue_bytes,
        }
    }

    /// Whether what the session sends are Blynk frames (counted by command in the metrics).
    pub fn sends_blynk_frames(&self) -> bool {
        matches!(self, Session::Blynk(_))
    }

    /// The device this connection is, when it is a logged-in device (for the log).
    pub fn device(&self) -> Option<DeviceId> {
        match self {
            Session::Blynk(s) => s.device(),
            Session::Http(_) | Session::AppWs(_) => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod testkit;
