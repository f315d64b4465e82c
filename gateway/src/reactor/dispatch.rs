//! A connection's bytes through the shard: reading within a per-wake budget, TLS records through
//! the connection's session, the protocol selector while the connection has none, then the
//! protocol session; and carrying out what a session decided (`protocols::Outbox`): frames to the
//! socket, store requests to the store link, jobs to the worker pools, subscriptions to the bus,
//! and what happens to the connection. Answers go out whenever a queue's worth has piled up, so a
//! peer that pipelines and never reads is caught early. The reactor never looks inside a session.

use super::connection::{Flush, ReadOutcome};
use super::shard::{Shard, push_deadline, requeue, tracked};
use super::store::{Pending, Submitted};
use crate::bus::Subscriber;
use crate::conn::select::{Selection, select};
use crate::conn::stage::{Stage, Transition};
use crate::conn::tls::TlsSessionError;
use crate::conn::{CloseReason, ConnId};
use crate::guard::security_events::ConnectionEvent;
use crate::metrics::shard::{ConnState, TlsVersion};
use crate::protocols::{
    Continuation, InputLimit, Progress, Session, Step, StoreFailure, StoreReply, Watch,
};

/// Reads per connection per wake-up before others get their turn.
const READ_BUDGET: usize = 8;

/// How far one read pass goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadDepth {
    /// Stop after a read shorter than the buffer: the receive queue was empty at that moment and
    /// any later arrival raises a new edge, so the read that would only say `WouldBlock` is
    /// skipped (one syscall of the two per request at small request sizes).
    UntilShortRead,
    /// Read until `WouldBlock` or EOF: the event also reported the peer's FIN or an error, which
    /// raises no further edge, or the connection is being resumed from the backlog.
    UntilWouldBlock,
}

impl ReadDepth {
    pub(super) fn for_event(event: &mio::event::Event) -> Option<Self> {
        if !event.is_readable() {
            None
        } else if event.is_read_closed() || event.is_error() {
            Some(Self::UntilWouldBlock)
        } else {
            Some(Self::UntilShortRead)
        }
    }
}

/// What carrying out one step's outbox did to the connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Applied {
    /// Another protocol's session took the connection over.
    upgraded: bool,
}

impl Shard {
    pub(super) fn conn_event(&mut self, key: usize, read: Option<ReadDepth>, writable: bool) {
        if !self.conns.contains(key) {
            return;
        }
        if writable {
            let conn = &mut self.conns[key];
            let flushed = tracked(&mut self.queued_total, conn, |c| c.flush());
            match flushed {
                Flush::Failed(e) => return self.finalize(key, Some(CloseReason::Io(e))),
                Flush::Done if conn.stage.is_closing() => return self.finalize(key, None),
                _ => {}
            }
        }
        if let Some(depth) = read {
            self.read(key, depth);
        }
    }

    /// Reads until the socket is drained or the connection's budget for this wake-up is spent.
    fn read(&mut self, key: usize, depth: ReadDepth) {
        let mut scratch = std::mem::take(&mut self.scratch);
        for budget in (0..READ_BUDGET).rev() {
            let Some(conn) = self.conns.get_mut(key) else {
                break;
            };
            if conn.stage.is_closing() {
                break;
            }
            match conn.read_plain(&mut scratch) {
                ReadOutcome::Data(n) => {
                    if conn.tls.is_some() {
                        self.on_ciphertext(key, &mut scratch[..n]);
                    } else {
                        self.on_bytes(key, &scratch[..n]);
                    }
                    if depth == ReadDepth::UntilShortRead && n < scratch.len() {
                        break;
                    }
                }
                ReadOutcome::WouldBlock => break,
                ReadOutcome::Eof => {
                    self.close(key, CloseReason::PeerClosed);
                    break;
                }
                ReadOutcome::Failed(e) => {
                    self.close(key, CloseReason::Io(e));
                    break;
                }
            }
            if budget == 0 {
                self.backlog.push(key);
            }
        }
        self.scratch = scratch;
    }

    /// Runs received TLS records through the connection's session: handshake replies go out at
    /// once, decrypted bytes go to the stage.
    fn on_ciphertext(&mut self, key: usize, data: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(tls) = conn.tls.as_mut() else {
            return;
        };
        let mut plaintext = std::mem::take(&mut self.plaintext);
        plaintext.clear();
        self.ciphertext.clear();
        let was_handshaking = tls.is_handshaking();
        let received = tls.receive(data, &mut plaintext, &mut self.ciphertext);
        let handshake_done = received.as_ref().is_ok_and(|r| r.handshake_done);
        let version = tls.protocol_version();
        // Whatever rustls produced (handshake records, or the fatal alert after an error) must
        // reach the peer before anything else happens to the connection.
        let sent = tracked(&mut self.queued_total, conn, |c| {
            c.send_bytes(&self.ciphertext)
        });
        let peer = conn.peer;
        let metrics = &self.services.metrics;
        match received {
            Err(e) => {
                if was_handshaking {
                    self.services.security.record(
                        self.services.now,
                        &ConnectionEvent::TlsRefused {
                            peer,
                            reason: e.to_string(),
                        },
                    );
                    metrics.tls_handshake(TlsVersion::of(version), false);
                } else if !matches!(e, TlsSessionError::Internal(_)) {
                    self.services.security.record(
                        self.services.now,
                        &ConnectionEvent::TlsBroken {
                            peer,
                            reason: e.to_string(),
                        },
                    );
                }
                self.close(key, CloseReason::Tls(e.to_string()));
            }
            Ok(received) => {
                if handshake_done {
                    tracing::debug!(%peer, ?version, "TLS handshake done");
                    metrics.tls_handshake(TlsVersion::of(version), true);
                }
                if let Flush::Failed(e) = sent {
                    self.close(key, CloseReason::Io(e));
                } else {
                    if !plaintext.is_empty() {
                        self.on_bytes(key, &plaintext);
                    }
                    if received.peer_closed {
                        self.close(key, CloseReason::PeerClosed);
                    }
                }
            }
        }
        self.plaintext = plaintext;
    }

    /// Feeds received bytes to the connection's stage; keeps any incomplete tail, within what the
    /// stage allows.
    pub(super) fn on_bytes(&mut self, key: usize, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        self.services.metrics.bytes_in(conn.transport, data.len());
        let mut held = std::mem::take(&mut conn.inbuf);
        if held.is_empty() {
            let used = self.feed(key, data);
            held.extend_from_slice(&data[used..]);
        } else {
            held.extend_from_slice(data);
            let used = self.feed(key, &held);
            held.drain(..used);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let limit = match &conn.stage {
            Stage::Closing(_) => return,
            Stage::Selecting => InputLimit::PreAuth(self.services.limits.preauth_buffer_bytes),
            Stage::Serving(session) => session.input_limit(&self.services.limits),
        };
        if held.len() > limit.bytes() {
            return self.close(key, limit.exceeded());
        }
        // Release the allocation once nothing is pending: idle connections hold no buffer.
        conn.inbuf = if held.is_empty() { Vec::new() } else { held };
    }

    /// Runs the connection's stage over `input`: the selector until a protocol is chosen, then
    /// its session (and the session an upgrade hands over to). Returns the bytes used.
    fn feed(&mut self, key: usize, input: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return input.len();
            };
            let selection = match &conn.stage {
                Stage::Closing(_) => return input.len(),
                Stage::Selecting => {
                    let alpn = conn.tls.as_ref().and_then(|tls| tls.alpn_protocol());
                    Some(select(conn.transport, alpn, &input[pos..]))
                }
                Stage::Serving(_) => None,
            };
            match selection {
                Some(Selection::NeedMore) => return pos,
                Some(Selection::Refuse(reason)) => {
                    self.close(key, reason);
                    return input.len();
                }
                Some(Selection::Speak(protocol)) => {
                    match Session::start(protocol, &self.services.limits) {
                        Ok(session) => conn.stage.advance(Transition::Selected(session)),
                        Err(reason) => {
                            self.close(key, reason);
                            return input.len();
                        }
                    }
                }
                None => {
                    let rest = &input[pos..];
                    let Some((progress, applied)) =
                        self.step(key, |session, step| session.receive(rest, step))
                    else {
                        return input.len();
                    };
                    let Progress { used, paused } = progress;
                    pos += used;
                    let open = self.conns.get(key).is_some_and(|c| !c.stage.is_closing());
                    if !open {
                        return input.len();
                    }
                    // An upgrade hands what follows to the new session; a paused session sent
                    // its answers and goes on.
                    let more = pos < input.len() && (paused || applied.upgraded);
                    if !more {
                        return pos;
                    }
                }
            }
        }
    }

    /// Runs `f` on the connection's session with a clear outbox, then carries out what it
    /// decided. `None` when the connection has no session (selecting or closing).
    pub(super) fn step<R>(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut Session, &mut Step<'_>) -> R,
    ) -> Option<(R, Applied)> {
        let conn = self.conns.get_mut(key)?;
        let meta = conn.meta(key);
        let session = conn.stage.session_mut()?;
        self.outbox.clear();
        let mut step = Step {
            conn: meta,
            services: &mut self.services,
            out: &mut self.outbox,
        };
        let result = f(session, &mut step);
        let applied = self.apply(key);
        Some((result, applied))
    }

    /// A store reply for the session of connection `id`, if it is still there.
    pub(super) fn reply(&mut self, id: ConnId, then: Continuation, reply: StoreReply) {
        let Some(key) = self.live(id) else { return };
        self.step(key, |session, step| {
            session.on_store_reply(then, reply, step)
        });
        self.feed_held(key);
    }

    /// A worker's answer for the session of connection `id`, if it is still there.
    pub(super) fn work_done(&mut self, id: ConnId, done: crate::protocols::WorkDone) {
        let Some(key) = self.live(id) else { return };
        self.step(key, |session, step| session.on_work_done(done, step));
        // Requests pipelined behind the one on the worker that arrived in the same read are
        // still held: the answer lets the next one through.
        self.feed_held(key);
    }

    /// Feeds the bytes held for connection `key` again: they arrived while its session waited
    /// (for the store, as a device's info right after its login, or for a worker, as requests
    /// pipelined behind a REST call), and its state may let them through now.
    fn feed_held(&mut self, key: usize) {
        if self
            .conns
            .get(key)
            .is_some_and(|c| !c.inbuf.is_empty() && !c.stage.is_closing())
        {
            self.on_bytes(key, &[]);
        }
    }

    /// Carries out the outbox of the step just taken on connection `key`.
    fn apply(&mut self, key: usize) -> Applied {
        let mut out = std::mem::take(&mut self.outbox);
        let mut applied = Applied::default();
        let mut refused = Vec::new();
        if let Some(conn) = self.conns.get_mut(key) {
            let id = conn.id(key);
            let failure = self.send_frames(key, &out);
            let conn = &mut self.conns[key];
            if out.authenticated {
                self.services.guards.admission().leave_unauthenticated();
                self.services.metrics.conn_moved(
                    conn.transport,
                    Some(ConnState::PreAuth),
                    Some(ConnState::Authenticated),
                );
            }
            if let Some(timeout) = out.deadline {
                push_deadline(&mut self.timers, conn, id, self.services.now, timeout);
            }
            if let Some(size) = out.send_buffer
                && let Err(e) = socket2::SockRef::from(&conn.socket).set_send_buffer_size(size)
            {
                tracing::debug!(peer = %conn.peer, error = %e, "cannot resize a send buffer");
            }
            if let Some(session) = out.upgrade.take() {
                conn.stage.advance(Transition::Upgraded(session));
                applied.upgraded = true;
            }
            self.submit_store(id, &mut out, &mut refused);
            for job in out.jobs.drain(..) {
                if let Err(done) = self.workers.submit(self.index, id, job) {
                    refused.push(Refusal::Work(done));
                }
            }
            self.watch(id, &mut out);
            if let Some(reason) = failure.or(out.close.take()) {
                self.close(key, reason);
            }
        }
        out.clear();
        self.outbox = out;
        // What could not be queued is answered now, through the same session.
        for refusal in refused {
            match refusal {
                Refusal::Store(Pending { conn, then }) => {
                    self.reply(conn, then, Err(StoreFailure::QueueFull))
                }
                Refusal::Work(done) => {
                    self.step(key, |session, step| session.on_work_done(done, step));
                }
            }
        }
        applied
    }

    /// Sends the outbox's frames, each in its own write (one TLS record each); the reason to
    /// close when the socket failed or the peer stopped reading.
    fn send_frames(&mut self, key: usize, out: &crate::protocols::Outbox) -> Option<CloseReason> {
        if !out.has_frames() {
            return None;
        }
        let conn = &mut self.conns[key];
        let (limit, blynk_frames) = match conn.stage.session() {
            Some(session) => (
                session.outbound_limit(&self.services.limits),
                session.sends_blynk_frames(),
            ),
            None => (self.services.limits.outbound_queue_bytes, false),
        };
        let metrics = &self.services.metrics;
        let before = conn.queued_bytes();
        let mut failure = None;
        for bytes in out.frames() {
            if blynk_frames {
                metrics.frame_out(bytes);
            }
            metrics.bytes_out(conn.transport, bytes.len());
            match conn.send_frame(bytes, &mut self.ciphertext) {
                Flush::Failed(e) => {
                    failure = Some(CloseReason::Io(e));
                    break;
                }
                Flush::Blocked if conn.queued_bytes() > limit => {
                    failure = Some(CloseReason::SlowReader {
                        queued: conn.queued_bytes(),
                    });
                    break;
                }
                _ => {}
            }
        }
        requeue(&mut self.queued_total, before, conn.queued_bytes());
        failure
    }

    fn submit_store(
        &mut self,
        id: ConnId,
        out: &mut crate::protocols::Outbox,
        refused: &mut Vec<Refusal>,
    ) {
        for request in out.store.drain(..) {
            if let Submitted::Refused(pending) = self.store.submit(id, request) {
                refused.push(Refusal::Store(pending));
            }
        }
    }

    fn watch(&mut self, id: ConnId, out: &mut crate::protocols::Outbox) {
        let subscriber = Subscriber {
            shard: self.index,
            conn: id,
        };
        for watch in out.watch.drain(..) {
            match watch {
                Watch::Subscribe(device) => self.services.bus.watch(device, subscriber, true),
                Watch::Unsubscribe(device) => self.services.bus.watch(device, subscriber, false),
            }
        }
    }

    /// The session's last words as its connection closes: its goodbye bytes (a failure shows in
    /// the flush that follows), and what it must undo (presence, subscriptions).
    pub(super) fn last_words(&mut self, key: usize, reason: &CloseReason) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let meta = conn.meta(key);
        let Some(session) = conn.stage.session_mut() else {
            return;
        };
        self.outbox.clear();
        let mut step = Step {
            conn: meta,
            services: &mut self.services,
            out: &mut self.outbox,
        };
        session.on_close(reason, &mut step);
        let mut out = std::mem::take(&mut self.outbox);
        let _ = self.send_frames(key, &out);
        // Nothing waits for an answer any more: refusals have nobody to tell.
        let mut refused = Vec::new();
        self.submit_store(meta.id, &mut out, &mut refused);
        self.watch(meta.id, &mut out);
        out.clear();
        self.outbox = out;
    }
}

/// A decision that could not be queued, to be answered through its session at once.
enum Refusal {
    Store(Pending),
    Work(crate::protocols::WorkDone),
}
