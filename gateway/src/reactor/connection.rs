//! One client connection as the shard sees it: its socket, its TLS session if any, its stage,
//! and the few bytes it holds while they are in flight. This file owns the socket IO of a
//! connection; the TLS session (`conn/tls.rs`) and the protocol sessions (`crate::protocols`)
//! never see the socket.
//!
//! An idle logged-in connection holds no buffer: `inbuf` only keeps the tail of a message that
//! arrived in pieces, the TLS session only the tail of an incomplete record, and `outq` only
//! exists while the kernel refuses our writes.

use super::timer::Tick;
use crate::conn::stage::Stage;
use crate::conn::tls::TlsSession;
use crate::conn::{ConnId, ConnMeta, Transport};
use crate::protocols::Session;
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

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
    pub transport: Transport,
    /// TLS state, boxed so plain connections pay one pointer for it.
    pub tls: Option<Box<TlsSession>>,
    pub stage: Stage<Session>,
    /// Tail of a partially received frame; empty (no allocation) otherwise.
    pub inbuf: Vec<u8>,
    pub outq: Option<Box<OutQueue>>,
    /// When this connection must be looked at: login deadline, then heartbeat deadline.
    pub deadline: Tick,
    /// Tick of this connection's live timer-wheel entry.
    pub armed: Tick,
}

impl Conn {
    /// The connection's identity, given its slab key.
    pub fn id(&self, key: usize) -> ConnId {
        ConnId {
            slot: key as u32,
            generation: self.generation,
        }
    }

    /// What a protocol session may know of this connection.
    pub fn meta(&self, key: usize) -> ConnMeta {
        ConnMeta {
            id: self.id(key),
            peer: self.peer,
            transport: self.transport,
        }
    }

    /// A device past its login, or an app past its password check.
    pub fn is_logged_in(&self) -> bool {
        self.stage.session().is_some_and(Session::is_logged_in)
    }

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
