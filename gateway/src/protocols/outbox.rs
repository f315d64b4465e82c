//! What one step of a protocol session decides, for the reactor to carry out: bytes to send (each
//! frame written with its own `write` — old Python clients parse one frame per `recv` —, through
//! TLS when there is some), store requests with the continuation their reply goes back to, jobs
//! for the worker pools, subscriptions to devices' events, and what happens to the connection
//! (authenticated, its deadline moved, handed to another protocol, closed). One `Outbox` per shard
//! is reused for every step, so a step does not allocate in the common case.

use super::{Continuation, Session, WorkDone};
use crate::conn::CloseReason;
use portcullis_operations::{LinkError, StoreAccess};
use portcullis_protocol::frame::{self, EncodeError};
use portcullis_protocol::store::{Acting, DeviceId, PinWrite, Request, Response, StoreError};
use portcullis_protocol::{Command, Status};
use std::time::Duration;

/// A store request a session needs, by what it may cost when the store is slow or away.
#[derive(Debug)]
pub enum StoreRequest {
    /// A request whose reply the session waits for. When the shard's store queue is full it is
    /// not queued: its continuation gets an error reply at once.
    Call {
        request: Request,
        then: Continuation,
    },
    /// One pin write: batched per loop turn with the shard's other telemetry and bounded by
    /// `limits.store_queue_max_writes` (the oldest is dropped first).
    Telemetry(PinWrite),
    /// A change that must reach the store and needs no reply (presence): never refused, since
    /// each connection makes at most two and the connection limits bound them.
    Record(Request),
    /// Worth storing, not worth a reply (a device's info, which it re-sends at every login):
    /// dropped when the store queue is full.
    BestEffort(Request),
}

/// Which bounded worker pool a job runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Password checks: argon2id, tens of milliseconds and 19 MiB each on purpose.
    Passwords,
    /// Operations on behalf of a principal (device pages, lookups): short store round trips.
    Operations,
}

/// A worker's link to the store, as a job sees it: whatever link the worker holds, behind one
/// concrete type that the operations' functions take.
pub struct WorkerStore<'a>(pub &'a mut dyn StoreAccess);

impl StoreAccess for WorkerStore<'_> {
    fn call_many(
        &mut self,
        acting: Option<&Acting>,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, StoreError>>, LinkError> {
        self.0.call_many(acting, requests)
    }
}

/// Slow or blocking work for a worker thread; its answer comes back to the session that asked,
/// through the shard's inbox.
pub struct Job {
    pub pool: Pool,
    pub run: Box<dyn FnOnce(&mut WorkerStore<'_>) -> WorkDone + Send>,
    /// Delivered instead, at once, when the pool's queue is full.
    pub refused: WorkDone,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// A change to the devices whose events this connection receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    Subscribe(DeviceId),
    Unsubscribe(DeviceId),
}

/// Decisions of one session step.
#[derive(Debug, Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    /// End offset in `bytes` of each frame.
    ends: Vec<usize>,
    pub close: Option<CloseReason>,
    /// The peer proved who it is during this step (a device token, an app password).
    pub authenticated: bool,
    /// The peer was active: its deadline moves to this long from now.
    pub deadline: Option<Duration>,
    /// The connection is handed to another protocol's session (HTTP → WebSocket).
    pub upgrade: Option<Session>,
    /// The socket's send buffer should become this size (an app receives streams of events).
    pub send_buffer: Option<usize>,
    pub store: Vec<StoreRequest>,
    pub jobs: Vec<Job>,
    pub watch: Vec<Watch>,
}

/// Message ids sent to a device are never 0: the libraries drop the connection on it, and
/// blynklib's counter sticks at 0 after 65535 frames, so a reply to id 0 goes out as id 1.
pub fn reply_id(msg_id: u16) -> u16 {
    msg_id.max(1)
}

impl Outbox {
    /// Queues a Blynk status reply.
    pub fn response(&mut self, msg_id: u16, status: Status) {
        frame::encode_response(&mut self.bytes, reply_id(msg_id), status);
        self.ends.push(self.bytes.len());
    }

    /// Queues a Blynk frame from NUL-joined `args`, unless it would exceed `max_frame` bytes on
    /// the wire.
    pub fn frame_args(
        &mut self,
        command: Command,
        msg_id: u16,
        args: &[&[u8]],
        max_frame: usize,
    ) -> Result<(), EncodeError> {
        let len = frame::HEADER_LEN
            + args
                .iter()
                .map(|a| a.len() + 1)
                .sum::<usize>()
                .saturating_sub(1);
        if len > max_frame {
            return Err(EncodeError::BodyTooLarge {
                len: len - frame::HEADER_LEN,
            });
        }
        frame::encode_args(&mut self.bytes, command, reply_id(msg_id), args)?;
        self.ends.push(self.bytes.len());
        Ok(())
    }

    /// Queues bytes that are not a Blynk frame (an HTTP answer, WebSocket frames).
    pub fn raw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.bytes.extend_from_slice(bytes);
        self.ends.push(self.bytes.len());
    }

    /// Closes the connection once this step's frames are out; the first reason given stands.
    pub fn close(&mut self, reason: CloseReason) {
        self.close.get_or_insert(reason);
    }

    /// The queued frames, one slice each.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let frame = &self.bytes[start..end];
            start = end;
            frame
        })
    }

    /// Bytes of the queued frames.
    pub fn pending_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn has_frames(&self) -> bool {
        !self.ends.is_empty()
    }

    /// Forgets the queued frames (they were sent), keeping the other decisions.
    pub fn clear_frames(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Forgets everything, keeping the allocations.
    pub fn clear(&mut self) {
        self.clear_frames();
        self.close = None;
        self.authenticated = false;
        self.deadline = None;
        self.upgrade = None;
        self.send_buffer = None;
        self.store.clear();
        self.jobs.clear();
        self.watch.clear();
    }
}
