//! A non-blocking link to the store for a mio event loop (a gateway shard): a transport
//! registered in the caller's own `Poll` (a Unix socket, or TCP with mutual TLS to a remote
//! store, see [`crate::transport`]), with requests pipelined and replies matched by id. The
//! caller never waits on it.
//!
//! The link is generic over the caller's continuation `W`: each request is submitted with a `W`
//! saying who waits for the reply, and the reply comes back as a [`Completion<W>`] carrying it.
//! The link never looks inside a `W`; what a reply means is the caller's business.
//!
//! Every request stays in `in_flight` until its reply arrives. If the store dies, the link goes
//! down, the requests still in flight are moved back to the front of the send queue and re-sent
//! when the restarted store answers the hello again, so nothing acknowledged is lost and nothing
//! unacknowledged is forgotten. Telemetry waiting for the link is bounded by the caller, which
//! counts the pin writes the link holds unacknowledged (queued or in flight) against its bound and
//! can drop the oldest batch not yet written when the store falls behind.

use crate::endpoint::StoreEndpoint;
use crate::hello::{self, HelloError, mismatch_text};
use crate::transport::Transport;
use mio::{Registry, Token};
use portcullis_protocol::store::{
    self, ClientHello, ReplyEnvelope, Request, RequestEnvelope, Response, StoreError, WireError,
};
use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Delay between reconnection attempts while the store is unreachable.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// Requests written but not yet answered, at most; more wait in the queue.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Why the link went down, by whose fault. None of these is the shard's to fix: the link logs
/// the reason and reconnects, and requests in flight are re-sent. The Display text is the logged
/// reason, and also what `last_failure` compares so a repeated failure is not warned twice.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The store closed its end: it exited, restarted or dropped us (the store's doing).
    #[error("store closed the link")]
    StoreClosed,
    /// Reading the transport failed (reset, TLS alert): the network's or the store's fault.
    #[error("read failed: {0}")]
    ReadFailed(#[source] io::Error),
    /// Writing the transport failed (broken pipe, TLS alert): the network's or the store's fault.
    #[error("write failed: {0}")]
    WriteFailed(#[source] io::Error),
    /// The store refused our hello: another wire version or a client it does not accept (the
    /// store's decision; an operator's deployment to fix).
    #[error("store refused the link (its wire version {version}): {reason}")]
    Refused { version: u16, reason: String },
    /// The store speaks another wire version (whether it accepted us or not): the binaries are
    /// from different builds, an operator's deployment to fix.
    #[error("the store {}", mismatch_text(*ours, *theirs, reason.as_deref()))]
    VersionMismatch {
        ours: u16,
        theirs: u16,
        reason: Option<String>,
    },
    /// The store's hello does not decode: the store broke the wire contract.
    #[error("bad hello from the store: {0}")]
    BadHello(#[source] WireError),
    /// A reply does not decode: the store broke the wire contract.
    #[error("bad reply from the store: {0}")]
    BadReply(#[source] WireError),
    /// A reply came while nothing was in flight: the store broke the wire contract.
    #[error("store answered id {got} with nothing in flight")]
    UnsolicitedReply { got: u64 },
    /// A reply answered another request than the oldest in flight (replies come in order): the
    /// store broke the wire contract.
    #[error("store answered id {got} but {expected} was next")]
    UnexpectedReply { got: u64, expected: u64 },
}

impl From<HelloError> for LinkError {
    fn from(error: HelloError) -> Self {
        match error {
            HelloError::VersionMismatch {
                ours,
                theirs,
                reason,
            } => LinkError::VersionMismatch {
                ours,
                theirs,
                reason,
            },
            HelloError::Refused { version, reason } => LinkError::Refused { version, reason },
        }
    }
}

#[derive(Debug)]
struct Call<W> {
    request: Request,
    waiter: W,
    /// When the shard submitted it, for the round-trip metric.
    submitted: Instant,
}

/// A reply delivered to the caller, with the continuation it submitted the request with.
#[derive(Debug)]
pub struct Completion<W> {
    pub waiter: W,
    pub result: Result<Response, StoreError>,
    /// Pin writes confirmed by this reply (for the caller's counters).
    pub pins_written: usize,
    /// From submission (queueing included) to the reply.
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Down,
    /// Connected, hello sent, waiting for the store's hello.
    Greeting,
    Up,
}

/// One non-blocking link; `W` is the caller's continuation type.
pub struct StoreLink<W> {
    endpoint: StoreEndpoint,
    /// What the link says in its hello, again on every reconnect.
    hello: ClientHello,
    token: Token,
    stream: Option<Transport>,
    pub state: LinkState,
    retry_at: Instant,
    next_id: u64,
    queue: VecDeque<Call<W>>,
    in_flight: VecDeque<(u64, Call<W>)>,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    /// Times the link was (re)established, for logs and tests.
    pub connects: u64,
    /// Connection attempts so far (picks the next address of a remote store).
    attempts: u64,
    /// Pin writes in `WritePins` requests still in the queue (droppable).
    queued_writes: usize,
    /// Pin writes in `WritePins` requests written (or in the send buffer) and not yet answered.
    in_flight_writes: usize,
    /// Whether the transport is registered for writable events. Only while bytes wait: a Unix
    /// socket reports "writable" again each time the store drains what we wrote, and that
    /// wake-up of the shard per request batch would be for nothing.
    writable_interest: bool,
    /// The last failure logged as a warning: a store that stays unreachable, or keeps refusing
    /// our certificate, is reported once per distinct reason rather than every retry.
    last_failure: Option<String>,
}

impl<W> StoreLink<W> {
    /// A link (down until [`StoreLink::maintain`] connects it) that registers under `token` and
    /// says `hello`.
    pub fn new(endpoint: StoreEndpoint, hello: ClientHello, token: Token) -> Self {
        Self {
            endpoint,
            hello,
            token,
            stream: None,
            state: LinkState::Down,
            retry_at: Instant::now(),
            next_id: 1,
            queue: VecDeque::new(),
            in_flight: VecDeque::new(),
            out: Vec::new(),
            inbuf: Vec::new(),
            connects: 0,
            attempts: 0,
            last_failure: None,
            queued_writes: 0,
            in_flight_writes: 0,
            writable_interest: false,
        }
    }

    /// Requests not yet answered (queued or in flight).
    pub fn outstanding(&self) -> usize {
        self.queue.len() + self.in_flight.len()
    }

    /// Pin writes handed to the link and not yet answered by the store (queued or in flight).
    pub fn unacked_writes(&self) -> usize {
        self.queued_writes + self.in_flight_writes
    }

    /// Drops the oldest telemetry batch still waiting to be written (never one in flight: the
    /// store may already have it); returns how many pin writes it held, or `None` when no batch
    /// waits. Only telemetry is ever dropped: its bound is the shard's promise for a slow store.
    pub fn drop_oldest_queued_writes(&mut self) -> Option<usize> {
        let index = self
            .queue
            .iter()
            .position(|call| matches!(call.request, Request::WritePins { .. }))?;
        let call = self.queue.remove(index)?;
        let dropped = write_count(&call.request);
        self.queued_writes -= dropped;
        Some(dropped)
    }

    /// Queues a request; its reply comes back with `waiter`.
    pub fn submit(&mut self, request: Request, waiter: W) {
        self.queued_writes += write_count(&request);
        self.queue.push_back(Call {
            request,
            waiter,
            submitted: Instant::now(),
        });
    }

    /// Connects if the link is down and the retry delay has passed.
    pub fn maintain(&mut self, registry: &Registry, now: Instant) {
        if self.state != LinkState::Down || now < self.retry_at {
            return;
        }
        self.retry_at = now + RECONNECT_DELAY;
        self.attempts += 1;
        let mut stream = match Transport::connect(&self.endpoint, self.attempts) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(store = %self.endpoint, error = %e, "store not reachable yet");
                return;
            }
        };
        if let Err(e) = stream.register(registry, self.token) {
            tracing::warn!(error = %e, "cannot register the store link");
            return;
        }
        self.writable_interest = true;
        self.out.clear();
        self.inbuf.clear();
        if let Err(e) = hello::encode_hello(&self.hello, &mut self.out) {
            tracing::error!(error = %e, "cannot encode the store hello");
            return;
        }
        self.stream = Some(stream);
        self.state = LinkState::Greeting;
    }

    /// Moves queued requests into the send buffer and writes what the socket takes. At most
    /// `max_in_flight_writes` pin writes go in flight (one batch always may): once sent they
    /// cannot be dropped, so telemetry beyond that waits in the queue, where the shard's bound
    /// can still drop the oldest, and so does everything behind it (the link keeps order).
    pub fn pump(&mut self, registry: &Registry, max_in_flight_writes: usize) {
        if self.state == LinkState::Up {
            while self.in_flight.len() < MAX_IN_FLIGHT
                && let Some(next) = self.queue.front()
            {
                let writes = write_count(&next.request);
                if writes > 0
                    && self.in_flight_writes > 0
                    && self.in_flight_writes + writes > max_in_flight_writes
                {
                    break;
                }
                let Some(call) = self.queue.pop_front() else {
                    break;
                };
                self.queued_writes -= writes;
                let id = self.next_id;
                self.next_id += 1;
                // Shards send device traffic, which acts for nobody.
                let envelope = RequestEnvelope {
                    id,
                    acting: None,
                    request: call.request,
                };
                match store::encode_frame(&envelope, &mut self.out) {
                    Ok(()) => {
                        self.in_flight_writes += writes;
                        self.in_flight.push_back((
                            id,
                            Call {
                                request: envelope.request,
                                waiter: call.waiter,
                                submitted: call.submitted,
                            },
                        ))
                    }
                    Err(e) => {
                        // Only an oversize batch can fail here; the shard caps batches well below it.
                        tracing::error!(error = %e, "dropping a store request that cannot be encoded");
                    }
                }
            }
        }
        self.write_out(registry);
    }

    fn write_out(&mut self, registry: &Registry) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut written = 0;
        let mut failed = None;
        while written < self.out.len() {
            match stream.write(&self.out[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // TLS records left over from a handshake step or an earlier would-block.
        if failed.is_none()
            && let Err(e) = stream.flush()
        {
            failed = Some(e);
        }
        self.out.drain(..written);
        if failed.is_none() {
            let pending = !self.out.is_empty() || stream.has_pending();
            if pending != self.writable_interest {
                match stream.set_writable_interest(registry, self.token, pending) {
                    Ok(()) => self.writable_interest = pending,
                    Err(e) => failed = Some(e),
                }
            }
        }
        if let Some(e) = failed {
            self.fail(registry, &LinkError::WriteFailed(e));
        }
    }

    /// Reads replies; returns the completed calls.
    pub fn on_readable(
        &mut self,
        registry: &Registry,
        scratch: &mut [u8],
        done: &mut Vec<Completion<W>>,
    ) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let mut closed = None;
        loop {
            match stream.read(scratch) {
                Ok(0) => {
                    closed = Some(LinkError::StoreClosed);
                    break;
                }
                Ok(n) => self.inbuf.extend_from_slice(&scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    closed = Some(LinkError::ReadFailed(e));
                    break;
                }
            }
        }
        // Replies that arrived before a read failure still complete; a decode failure is the
        // more telling reason, so it wins over the read error it usually causes.
        if let Err(reason) = self.decode_replies(done) {
            closed = Some(reason);
        }
        if let Some(reason) = closed {
            self.fail(registry, &reason);
        }
    }

    fn decode_replies(&mut self, done: &mut Vec<Completion<W>>) -> Result<(), LinkError> {
        let mut used = 0;
        let result = loop {
            let rest = &self.inbuf[used..];
            if self.state == LinkState::Greeting {
                match hello::decode_answer(rest) {
                    Ok(Some((Ok(()), n))) => {
                        used += n;
                        self.state = LinkState::Up;
                        self.connects += 1;
                        self.last_failure = None;
                        tracing::info!(
                            node = %self.hello.node,
                            role = %self.hello.role,
                            "store link up"
                        );
                        continue;
                    }
                    Ok(Some((Err(refused), _))) => break Err(refused.into()),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(LinkError::BadHello(e)),
                }
            }
            match store::decode_frame::<ReplyEnvelope>(rest) {
                Ok(Some((reply, n))) => {
                    used += n;
                    let Some((id, call)) = self.in_flight.pop_front() else {
                        break Err(LinkError::UnsolicitedReply { got: reply.id });
                    };
                    if id != reply.id {
                        // Back in flight, so the link's failure requeues it with the others.
                        self.in_flight.push_front((id, call));
                        break Err(LinkError::UnexpectedReply {
                            got: reply.id,
                            expected: id,
                        });
                    }
                    let answered_writes = write_count(&call.request);
                    self.in_flight_writes -= answered_writes;
                    let pins_written = if reply.result.is_ok() {
                        answered_writes
                    } else {
                        0
                    };
                    done.push(Completion {
                        waiter: call.waiter,
                        result: reply.result,
                        pins_written,
                        elapsed: call.submitted.elapsed(),
                    });
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(LinkError::BadReply(e)),
            }
        };
        self.inbuf.drain(..used);
        if self.inbuf.is_empty() {
            self.inbuf = Vec::new();
        }
        result
    }

    /// Marks the link down; unanswered requests go back to the front of the queue, in order.
    fn fail(&mut self, registry: &Registry, reason: &LinkError) {
        if let Some(mut stream) = self.stream.take() {
            stream.deregister(registry);
        }
        if self.state != LinkState::Down {
            // Compared as text: the same variant with another detail (a different io error, a
            // different refusal reason) is news worth a warning; `io::Error` has no equality anyway.
            let reason = reason.to_string();
            if self.last_failure.as_deref() == Some(reason.as_str()) {
                tracing::debug!(reason, store = %self.endpoint, "store link down again; will reconnect");
            } else {
                tracing::warn!(
                    reason,
                    store = %self.endpoint,
                    requeued = self.in_flight.len(),
                    "store link down; will reconnect"
                );
                self.last_failure = Some(reason);
            }
        }
        self.state = LinkState::Down;
        while let Some((_, call)) = self.in_flight.pop_back() {
            self.queue.push_front(call);
        }
        self.queued_writes += std::mem::take(&mut self.in_flight_writes);
        self.out.clear();
        self.inbuf.clear();
    }

    /// True when every request has been answered and nothing waits to be written.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty()
            && self.in_flight.is_empty()
            && self.out.is_empty()
            && !self.stream.as_ref().is_some_and(Transport::has_pending)
    }
}

/// Pin writes a request carries (0 for anything but telemetry).
fn write_count(request: &Request) -> usize {
    match request {
        Request::WritePins { writes } => writes.len(),
        _ => 0,
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
