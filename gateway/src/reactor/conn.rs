//! One client connection as the shard sees it: its socket, its TLS session if any, its stage, and
//! the few bytes it holds while they are in flight. This file owns the socket IO of a connection;
//! the stages in `session/` and the TLS session never see the socket.
//!
//! An idle logged-in connection holds no buffer: `inbuf` only keeps the tail of a frame that
//! arrived in pieces, the TLS session only the tail of an incomplete record, and `outq` only
//! exists while the kernel refuses our writes.

use super::tls_session::TlsSession;
use crate::session::{AppSession, CloseReason, DeviceSession};
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use super::timer::Tick;

/// A connection's identity: its slab slot and that slot's generation when it was opened. Late
/// events (store replies, timers) carry it and are dropped if the slot was reused since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    pub slot: u32,
    pub generation: u32,
}

/// Which listener accepted the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Tls,
    Plain,
}

/// The connection state machine: `Sniff → TlsHandshake → Sniff → Login → Authenticating → Device`
/// for devices, `Sniff → (TlsHandshake → Sniff →) Http → App` for the app WebSocket, or `Closing`
/// from anywhere. Advanced only through [`Stage::upgrade`].
#[derive(Debug)]
pub enum Stage {
    /// Waiting for the first bytes (or the first bytes after a TLS handshake).
    Sniff,
    /// rustls is negotiating.
    TlsHandshake,
    /// A device protocol was sniffed; the first frame must be a login.
    Login,
    /// The token went to the store; frames that arrive meanwhile wait in `inbuf`.
    Authenticating {
        msg_id: u16,
    },
    Device(DeviceSession),
    /// An HTTP request head is arriving (only the app WebSocket upgrade is served).
    Http,
    /// The app WebSocket is open; the session tracks its login. Boxed: apps are few, and an
    /// idle device connection must not pay for a WebSocket context.
    App(Box<AppSession>),
    Closing(CloseReason),
}

/// What moves a connection from one stage to the next.
#[derive(Debug)]
pub enum Transition {
    HandshakeDone,
    DeviceSniffed,
    LoginSent { msg_id: u16 },
    Authenticated(DeviceSession),
    HttpSniffed,
    WebSocketOpened(Box<AppSession>),
    Close(CloseReason),
}

impl Stage {
    /// Consumes the stage and returns the next one; a transition that makes no sense for the
    /// current stage is an internal error and closes the connection.
    pub fn upgrade(self, transition: Transition) -> Stage {
        match (self, transition) {
            (Stage::Closing(reason), _) => Stage::Closing(reason),
            (_, Transition::Close(reason)) => Stage::Closing(reason),
            (Stage::TlsHandshake, Transition::HandshakeDone) => Stage::Sniff,
            (Stage::Sniff, Transition::DeviceSniffed) => Stage::Login,
            (Stage::Login, Transition::LoginSent { msg_id }) => Stage::Authenticating { msg_id },
            (Stage::Authenticating { .. }, Transition::Authenticated(session)) => {
                Stage::Device(session)
            }
            (Stage::Sniff, Transition::HttpSniffed) => Stage::Http,
            (Stage::Http, Transition::WebSocketOpened(session)) => Stage::App(session),
            (stage, transition) => Stage::Closing(CloseReason::Io(format!(
                "internal: {transition:?} is not valid in stage {stage:?}"
            ))),
        }
    }

    /// A device past its login, or an app past its password check.
    pub fn is_logged_in(&self) -> bool {
        match self {
            Stage::Device(_) => true,
            Stage::App(session) => session.is_logged_in(),
            _ => false,
        }
    }
}

/// Heap cost of one queued frame beyond its bytes: its `Vec` in the deque plus the allocator's
/// minimum chunk overhead.
const QUEUED_FRAME_OVERHEAD: usize = std::mem::size_of::<Vec<u8>>() + 16;

/// Frames the kernel has not taken yet, kept whole so each still goes out in its own `write`.
#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<Vec<u8>>,
    /// Bytes of the front frame already written.
    offset: usize,
    bytes: usize,
}

/// Result of pushing bytes towards the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Flush {
    /// Everything is written.
    Done,
    /// The kernel buffer is full; the rest waits for a writable event.
    Blocked,
    Failed(String),
}

/// Result of reading from the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// `n` bytes are in the scratch buffer.
    Data(usize),
    WouldBlock,
    Eof,
    Failed(String),
}

pub struct Conn {
    pub generation: u32,
    pub socket: TcpStream,
    pub peer: SocketAddr,
    pub port: Port,
    /// TLS state, boxed so plain connections pay one pointer for it.
    pub tls: Option<Box<TlsSession>>,
    pub stage: Stage,
    /// Tail of a partially received frame; empty (no allocation) otherwise.
    pub inbuf: Vec<u8>,
    pub outq: Option<Box<OutQueue>>,
    /// When this connection must be looked at: login deadline, then heartbeat deadline.
    pub deadline: Tick,
    /// Tick of this connection's live timer-wheel entry.
    pub armed: Tick,
}

impl Conn {
    /// Memory held by the outbound queue: its bytes plus a per-frame overhead, so a reader that
    /// lets thousands of 5-byte answers pile up is bounded by what they cost, not by their payload.
    pub fn queued_bytes(&self) -> usize {
        self.outq
            .as_ref()
            .map_or(0, |q| q.bytes + q.frames.len() * QUEUED_FRAME_OVERHEAD)
    }

    /// Reads plain bytes into `scratch`.
    pub fn read_plain(&mut self, scratch: &mut [u8]) -> ReadOutcome {
        loop {
            match self.socket.read(scratch) {
                Ok(0) => return ReadOutcome::Eof,
                Ok(n) => return ReadOutcome::Data(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return ReadOutcome::Failed(e.to_string()),
            }
        }
    }

    /// Sends one frame: plain frames each get their own `write`, TLS frames each become one record
    /// (encrypted into `cipher_scratch`, which the shard lends to avoid an allocation per frame).
    pub fn send_frame(&mut self, frame: &[u8], cipher_scratch: &mut Vec<u8>) -> Flush {
        if let Some(tls) = self.tls.as_mut() {
            cipher_scratch.clear();
            if let Err(e) = tls.encrypt(frame, cipher_scratch) {
                return Flush::Failed(e.to_string());
            }
            return self.send_bytes(cipher_scratch);
        }
        self.send_bytes(frame)
    }

    /// Writes `bytes` at once if nothing is queued before them, and queues what the kernel does
    /// not take. Each call's bytes go out in a `write` of their own.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Flush {
        if bytes.is_empty() {
            return self.flush();
        }
        if self.outq.is_none() {
            match write_some(&mut self.socket, bytes) {
                Ok(n) if n == bytes.len() => return Flush::Done,
                Ok(n) => self.outq.get_or_insert_default().push(bytes[n..].to_vec()),
                Err(e) => return Flush::Failed(e.to_string()),
            }
            return Flush::Blocked;
        }
        // Bytes are already waiting, so the kernel refused our last write: queue without another
        // write attempt. The writable event flushes; a peer that never reads then fills its queue
        // bound without costing a syscall (and a tiny TCP segment) per answer.
        self.outq.get_or_insert_default().push(bytes.to_vec());
        Flush::Blocked
    }

    /// Writes whatever is queued, in order, one queued piece per `write`.
    pub fn flush(&mut self) -> Flush {
        let Some(queue) = self.outq.as_mut() else {
            return Flush::Done;
        };
        while let Some(front) = queue.frames.front() {
            match write_some(&mut self.socket, &front[queue.offset..]) {
                Ok(n) => {
                    queue.offset += n;
                    queue.bytes -= n;
                    if queue.offset < front.len() {
                        return Flush::Blocked;
                    }
                    queue.frames.pop_front();
                    queue.offset = 0;
                }
                Err(e) => return Flush::Failed(e.to_string()),
            }
        }
        self.outq = None;
        Flush::Done
    }
}

impl OutQueue {
    fn push(&mut self, frame: Vec<u8>) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }
}

/// One `write`; `Ok(0)` means the kernel took nothing (would block). Any error left is the
/// peer's or the network's (reset, broken pipe); callers turn it into `Flush::Failed`, whose text
/// becomes the `CloseReason::Io` label.
fn write_some(socket: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    loop {
        match socket.write(bytes) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_only_move_forward() {
        let s = Stage::Sniff.upgrade(Transition::DeviceSniffed);
        assert!(matches!(s, Stage::Login));
        let s = s.upgrade(Transition::LoginSent { msg_id: 1 });
        assert!(matches!(s, Stage::Authenticating { msg_id: 1 }));
        let s = s.upgrade(Transition::Authenticated(DeviceSession::new(4)));
        assert!(s.is_logged_in());
        // Going back is refused and closes.
        let s = s.upgrade(Transition::DeviceSniffed);
        assert!(matches!(s, Stage::Closing(_)));
        // Closing is final.
        let s = s.upgrade(Transition::HandshakeDone);
        assert!(matches!(s, Stage::Closing(_)));
        // The app path: HTTP first, then the WebSocket; a device frame cannot follow.
        let s = Stage::Sniff.upgrade(Transition::HttpSniffed);
        assert!(matches!(s, Stage::Http));
        let s = s.upgrade(Transition::WebSocketOpened(Box::default()));
        assert!(matches!(s, Stage::App(_)));
        assert!(
            !s.is_logged_in(),
            "an app is logged in only after its password check"
        );
        let s = s.upgrade(Transition::DeviceSniffed);
        assert!(matches!(s, Stage::Closing(_)));
    }

    #[test]
    fn idle_connection_state_is_small() {
        // The memory budget: an idle logged-in plain connection costs at most 512 bytes of gateway
        // memory, slab slot and timer entry included. Keep the struct far below that.
        assert!(
            std::mem::size_of::<Conn>() <= 192,
            "Conn grew to {} bytes",
            std::mem::size_of::<Conn>()
        );
    }
}
