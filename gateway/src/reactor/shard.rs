//! One shard: a thread with its own mio `Poll`, its own `SO_REUSEPORT` listeners, its own slab of
//! connections, timer wheel and store link. Nothing on the per-message path takes a lock or
//! blocks: sockets are edge-triggered and read until `WouldBlock` within a per-wake budget, store
//! calls are pipelined on a non-blocking link, telemetry is batched once per loop turn, and slow
//! work goes to the worker pools.
//!
//! This file is the shard's life: the loop and its turn, opening connections, timers, closing,
//! the shutdown drain. What a connection's bytes do — TLS, the protocol selector, the session, and
//! carrying out the session's decisions — is in `dispatch.rs`.

use super::ShardLimits;
use super::accept::{AcceptContext, Accepted, Acceptor};
use super::commands::CommandInbox;
use super::connection::{Conn, Flush};
use super::dispatch::ReadDepth;
use super::drain::DrainPlan;
use super::live_limits::LiveLimits;
use super::store::{Pending, StoreCompletion, StoreTraffic};
use super::timer::{Tick, TimerWheel};
use super::workers::{WorkerInbox, Workers};
use crate::bus::{Bus, Hub, HubInbox};
use crate::conn::stage::{Stage, Transition};
use crate::conn::tls::TlsSession;
use crate::conn::{CloseReason, ConnId, Transport};
use crate::guard::admission::Guards;
use crate::guard::log_budget::Budgeted;
use crate::guard::security_events::{ConnectionEvent, SecurityEvents};
use crate::metrics::shard::{ConnState, Rejection, ShardMetrics};
use crate::protocols::http::rest::RestEnv;
use crate::protocols::{Outbox, Services, StoreFailure};
use mio::{Events, Interest, Poll, Token, Waker};
use portcullis_protocol::store::NodeName;
use portcullis_store_client::StoreEndpoint;
use rustls::ServerConfig;
use slab::Slab;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const WAKER: Token = Token(0);
pub(super) const STORE: Token = Token(1);
const LISTEN_TLS: Token = Token(2);
const LISTEN_PLAIN: Token = Token(3);
/// Connection tokens are slab keys offset past the named tokens.
pub(super) const CONN_BASE: usize = 16;

/// Size of the shard's shared read buffer; connections borrow it for the duration of a read.
const SCRATCH_LEN: usize = 64 * 1024;
/// How long a closing connection may take to flush its last frames.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Upper bound on the shutdown flush of pending writes to the store.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// Longest sleep of a draining shard, so closes stay evenly paced.
const DRAIN_TICK: Duration = Duration::from_millis(20);
/// Longest sleep of the loop: the clock and the live limits are looked at this often anyway.
const MAX_POLL_WAIT: Duration = Duration::from_millis(200);

pub struct ShardSetup {
    pub index: u16,
    pub poll: Poll,
    pub tls_listener: std::net::TcpListener,
    pub plain_listener: std::net::TcpListener,
    pub tls_config: Arc<ServerConfig>,
    pub store: StoreEndpoint,
    /// This gateway's node: in the link's hello and in every session tag.
    pub node: NodeName,
    pub limits: ShardLimits,
    pub guards: Arc<Guards>,
    pub rest: Arc<RestEnv>,
    pub metrics: Arc<ShardMetrics>,
    pub live_limits: Arc<LiveLimits>,
    pub shutdown: Arc<AtomicBool>,
    pub drain_ms: Arc<AtomicU64>,
    pub hub: Arc<Hub>,
    pub bus_inbox: HubInbox,
    pub workers: Arc<Workers>,
    pub worker_inbox: WorkerInbox,
    pub command_inbox: CommandInbox,
}

pub struct Shard {
    pub(super) index: u16,
    pub(super) poll: Poll,
    pub(super) acceptor: Acceptor,
    tls_config: Arc<ServerConfig>,
    pub(super) conns: Slab<Conn>,
    next_generation: u32,
    pub(super) timers: TimerWheel,
    pub(super) store: StoreTraffic,
    /// What the shard lends the protocol sessions.
    pub(super) services: Services,
    /// The decisions of one session step (reused; see `dispatch.rs`).
    pub(super) outbox: Outbox,
    pub(super) limits: ShardLimits,
    live_limits: Arc<LiveLimits>,
    limits_version: u64,
    shutdown: Arc<AtomicBool>,
    drain_ms: Arc<AtomicU64>,
    /// Set once shutdown started: connections are being closed on this schedule.
    drain: Option<DrainPlan>,
    pub(super) scratch: Vec<u8>,
    /// Decrypted bytes of one TLS read, handed to the connection's stage.
    pub(super) plaintext: Vec<u8>,
    /// TLS records on their way to one socket (handshake, alerts, encrypted frames).
    pub(super) ciphertext: Vec<u8>,
    /// Connections that still had bytes to read when their budget ran out.
    pub(super) backlog: Vec<usize>,
    pub(super) now_tick: Tick,
    /// Bytes waiting in the outbound queues of this shard's connections (each queued frame with
    /// its allocation overhead). Above `limits.output_budget_bytes` new connections are refused.
    pub(super) queued_total: usize,
    bus_inbox: HubInbox,
    pub(super) workers: Arc<Workers>,
    worker_inbox: WorkerInbox,
    /// Commands from other threads (`commands.rs`).
    command_inbox: CommandInbox,
    /// Connections given events but not yet flushed, during one delivery.
    touched: Vec<usize>,
    /// Admitted connections of one accept pass.
    accepted: Vec<Accepted>,
}

/// Creates the waker before the shard thread starts, so the main thread can hold it.
pub fn new_waker(poll: &Poll) -> io::Result<Waker> {
    Waker::new(poll.registry(), WAKER)
}

impl Shard {
    pub fn new(setup: ShardSetup) -> io::Result<Self> {
        let acceptor = Acceptor::new(
            setup.index,
            setup.poll.registry(),
            vec![
                (LISTEN_TLS, setup.tls_listener, Transport::Tls),
                (LISTEN_PLAIN, setup.plain_listener, Transport::Plain),
            ],
        )?;
        let now = Instant::now();
        let services = Services {
            shard: setup.index,
            node: setup.node.clone(),
            now,
            now_ms: unix_ms(),
            limits: setup.limits.protocol.clone(),
            guards: setup.guards,
            security: SecurityEvents::new(setup.index, now),
            metrics: setup.metrics.clone(),
            bus: Bus::new(setup.index, setup.hub),
            rest: setup.rest,
            template_names: Default::default(),
        };
        Ok(Self {
            index: setup.index,
            store: StoreTraffic::new(
                setup.index,
                setup.store,
                setup.node.clone(),
                STORE,
                setup.limits.store_queue_max_writes,
                setup.metrics,
            ),
            poll: setup.poll,
            acceptor,
            tls_config: setup.tls_config,
            conns: Slab::new(),
            next_generation: 1,
            timers: TimerWheel::new(now),
            services,
            outbox: Outbox::default(),
            limits: setup.limits,
            live_limits: setup.live_limits,
            limits_version: 0,
            shutdown: setup.shutdown,
            drain_ms: setup.drain_ms,
            drain: None,
            scratch: vec![0; SCRATCH_LEN],
            plaintext: Vec::new(),
            ciphertext: Vec::new(),
            backlog: Vec::new(),
            now_tick: 0,
            queued_total: 0,
            bus_inbox: setup.bus_inbox,
            workers: setup.workers,
            worker_inbox: setup.worker_inbox,
            command_inbox: setup.command_inbox,
            touched: Vec::new(),
            accepted: Vec::new(),
        })
    }

    /// Runs until shutdown is requested and drained (see `drain.rs`), then flushes to the store.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut expired = Vec::new();
        let mut completions = Vec::new();
        // Dial the store now rather than after the first poll's timeout: after a restart, the
        // devices' reconnect storm arrives within milliseconds and every login waits for the link.
        self.refresh_clock();
        self.store.flush(self.poll.registry(), self.services.now);
        loop {
            if self.shutdown.load(Ordering::Acquire) && self.drain_step() {
                break;
            }
            let now = Instant::now();
            let timeout = if !self.backlog.is_empty() {
                Duration::ZERO
            } else if self.drain.is_some() {
                DRAIN_TICK
            } else {
                self.timers.next_wakeup(now)
            };
            let timeout = match self.acceptor.paused_until() {
                Some(until) => timeout.min(until.saturating_duration_since(now)),
                None => timeout,
            };
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(timeout.min(MAX_POLL_WAIT)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            self.refresh_clock();
            // Limits published (SIGHUP) before this wake-up apply to the events it brought.
            if let Some(limits) = self.live_limits.changed_since(&mut self.limits_version) {
                self.services.limits = limits.protocol.clone();
                self.store.set_max_writes(limits.store_queue_max_writes);
                self.limits = limits;
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    STORE => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.store.on_readable(
                                self.poll.registry(),
                                &mut self.scratch,
                                &mut completions,
                            );
                        }
                    }
                    LISTEN_TLS | LISTEN_PLAIN => self.accept(event.token()),
                    Token(t) => {
                        let read = ReadDepth::for_event(event);
                        self.conn_event(t - CONN_BASE, read, event.is_writable())
                    }
                }
            }
            self.turn(&mut expired, &mut completions);
            self.services.metrics.turn_done(
                self.services.now.elapsed(),
                self.store.unacked_writes(),
                self.store.outstanding(),
                self.store.is_up(),
                self.services.now_ms,
            );
        }
        self.shut_down(&mut completions);
        Ok(())
    }

    /// Work done once per loop turn after the events: inboxes, backlog, accept retries, store
    /// replies, timers, this turn's device events, and the telemetry batch for the store.
    fn turn(&mut self, expired: &mut Vec<ConnId>, completions: &mut Vec<StoreCompletion>) {
        self.services.security.flush(self.services.now);
        self.drain_inboxes();
        for key in std::mem::take(&mut self.backlog) {
            self.conn_event(
                key,
                Some(super::dispatch::ReadDepth::UntilWouldBlock),
                false,
            );
        }
        if self.acceptor.resume_due(self.services.now) {
            self.accept(LISTEN_TLS);
            self.accept(LISTEN_PLAIN);
        }
        for done in completions.drain(..) {
            self.on_store_reply(done);
        }
        self.timers.advance(self.services.now, expired);
        for id in expired.drain(..) {
            self.on_timer(id);
        }
        let (local, flushed) = self.services.bus.flush();
        if flushed.dropped > 0
            && let Some(total) = self
                .services
                .metrics
                .app_events_dropped
                .add_sampled(flushed.dropped)
        {
            tracing::warn!(
                shard = self.index,
                dropped = total,
                "device event queue of a shard full; dropping events"
            );
        }
        self.deliver(local);
        self.store.flush(self.poll.registry(), self.services.now);
    }

    fn refresh_clock(&mut self) {
        self.services.now = Instant::now();
        self.now_tick = self.timers.tick_of(self.services.now);
        self.services.now_ms = unix_ms();
    }

    /// The connection `id` names, unless its slot was reused since: late events (timers, store
    /// replies, worker answers, device events) for a connection that is gone are dropped.
    pub(super) fn live(&self, id: ConnId) -> Option<usize> {
        let key = id.slot as usize;
        self.conns
            .get(key)
            .is_some_and(|c| c.generation == id.generation)
            .then_some(key)
    }

    /// Commands (revocations first: nothing more is done for a revoked session), subscription
    /// changes, worker answers and device events from other threads.
    fn drain_inboxes(&mut self) {
        while let Some(command) = self.command_inbox.next() {
            self.on_command(command);
        }
        while let Some(message) = self.bus_inbox.next_control() {
            self.services.bus.apply(message);
        }
        while let Some((id, done)) = self.worker_inbox.next() {
            self.work_done(id, done);
        }
        while let Some(batch) = self.bus_inbox.next_events() {
            self.deliver(batch);
        }
    }

    /// A store reply, for the session that asked (dropped if its connection has gone).
    fn on_store_reply(&mut self, done: StoreCompletion) {
        let metrics = &self.services.metrics;
        metrics.store_latency.observe_duration(done.elapsed);
        metrics.pins_stored.add(done.pins_written as u64);
        match done.waiter {
            None => {
                if let Err(e) = &done.result {
                    tracing::warn!(shard = self.index, error = %e, "store refused a write");
                }
            }
            Some(Pending { conn, then }) => {
                let reply = done.result.map_err(StoreFailure::Store);
                self.reply(conn, then, reply);
            }
        }
    }

    /// Writes a batch of device events into the watching sessions, then sends each one's share in
    /// one go: a busy device fleet costs an app one write per loop turn, not one per event.
    fn deliver(&mut self, batch: crate::bus::EventBatch) {
        let mut touched = std::mem::take(&mut self.touched);
        let mut sent = 0;
        for (id, event) in batch {
            let Some(key) = self.live(id) else { continue };
            let Some(session) = self.conns[key].stage.session_mut() else {
                continue;
            };
            if let crate::protocols::Delivery::Queued { first } = session.on_event(&event) {
                sent += 1;
                if first {
                    touched.push(key);
                }
            }
        }
        self.services.metrics.app_events_sent.add(sent);
        for key in touched.drain(..) {
            self.step(key, |session, step| session.flush(step));
        }
        self.touched = touched;
    }

    fn accept(&mut self, token: Token) {
        let context = AcceptContext {
            now: self.services.now,
            output_full: self.queued_total > self.limits.output_budget_bytes,
            open: self.conns.len(),
        };
        let mut accepted = std::mem::take(&mut self.accepted);
        self.acceptor.accept(
            token,
            context,
            &self.services.guards,
            &self.services.metrics,
            &mut accepted,
        );
        for connection in accepted.drain(..) {
            self.open(connection);
        }
        self.accepted = accepted;
    }

    /// Opens an admitted connection; releases its admission if it cannot be opened after all.
    fn open(&mut self, accepted: Accepted) {
        let peer = accepted.peer;
        if !self.try_open(accepted) {
            let mut admission = self.services.guards.admission();
            admission.leave_unauthenticated();
            admission.release(peer.ip());
        }
    }

    fn try_open(&mut self, accepted: Accepted) -> bool {
        let Accepted {
            mut socket,
            peer,
            transport,
        } = accepted;
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        // A fixed kernel send buffer: autotuning would let a peer that never reads park megabytes
        // of our answers in the kernel (tiny writes coalesce there), so the outbound queue bound
        // would never be reached while the shard spent a syscall on every answer.
        if let Err(e) = socket2::SockRef::from(&socket)
            .set_send_buffer_size(self.limits.socket_send_buffer_bytes)
        {
            tracing::debug!(%peer, error = %e, "cannot set SO_SNDBUF");
        }
        let tls = match transport {
            Transport::Plain => None,
            Transport::Tls => match TlsSession::new(self.tls_config.clone()) {
                Ok(tls) => Some(Box::new(tls)),
                Err(e) => {
                    tracing::error!(%peer, error = %e, "cannot start a TLS session");
                    return false;
                }
            },
        };
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let deadline = self
            .timers
            .deadline_after(self.services.now, self.limits.login_timeout);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(key + CONN_BASE),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%peer, error = %e, "cannot register a new connection");
            return false;
        }
        entry.insert(Conn {
            generation,
            socket,
            peer,
            transport,
            tls,
            stage: Stage::Selecting,
            inbuf: Vec::new(),
            outq: None,
            deadline,
            armed: deadline,
        });
        self.timers.schedule(
            ConnId {
                slot: key as u32,
                generation,
            },
            deadline,
        );
        self.services
            .metrics
            .conn_moved(transport, None, Some(ConnState::PreAuth));
        tracing::debug!(shard = self.index, %peer, ?transport, "accepted");
        true
    }

    fn on_timer(&mut self, id: ConnId) {
        let Some(key) = self.live(id) else { return };
        let conn = &mut self.conns[key];
        if conn.deadline > self.now_tick {
            // Activity moved the deadline: re-arm unless a nearer entry is already live.
            if conn.armed <= self.now_tick {
                conn.armed = conn.deadline;
                self.timers.schedule(id, conn.deadline);
            }
            return;
        }
        let reason = match &conn.stage {
            Stage::Closing(_) => return self.finalize(key, None),
            Stage::Selecting => CloseReason::LoginTimeout,
            Stage::Serving(session) => session.on_deadline(&self.services.limits),
        };
        self.close(key, reason);
    }

    /// Starts closing: the session's last words (a close frame, presence, unsubscribing), the
    /// log line, close_notify on TLS, then the connection is finalized at once unless bytes are
    /// still queued (then on writable or after a short linger).
    pub(super) fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.stage.is_closing() {
            return;
        }
        let id = conn.id(key);
        let peer = conn.peer;
        let transport = conn.transport;
        let logged_in = conn.is_logged_in();
        let device = conn.stage.session().and_then(|s| s.device());
        if !logged_in {
            self.services.guards.admission().leave_unauthenticated();
        }
        let from = if logged_in {
            ConnState::Authenticated
        } else {
            ConnState::PreAuth
        };
        self.services
            .metrics
            .conn_moved(transport, Some(from), Some(ConnState::Closing));
        self.last_words(key, &reason);
        if !logged_in {
            self.rejected_before_login(peer, &reason);
        }
        let conn = &mut self.conns[key];
        conn.stage.advance(Transition::Close(reason.clone()));
        if let Some(tls) = conn.tls.as_mut()
            && !matches!(reason, CloseReason::Tls(_))
        {
            self.ciphertext.clear();
            tls.close_notify(&mut self.ciphertext);
            // A failure shows in the flush below.
            let _ = tracked(&mut self.queued_total, conn, |c| {
                c.send_bytes(&self.ciphertext)
            });
        }
        match &reason {
            CloseReason::PeerClosed | CloseReason::Shutdown | CloseReason::Finished(_) => {
                tracing::debug!(%peer, ?device, %reason, "connection closed")
            }
            // Strangers refused before login are logged within a per-second budget, the rest
            // summarised: a line each would let a flood of them flood the log.
            _ if !logged_in => match self.services.security.close_line(self.services.now) {
                Budgeted::Write => tracing::info!(%peer, %reason, "closing connection"),
                Budgeted::Suppressed => tracing::debug!(%peer, %reason, "closing connection"),
            },
            _ => tracing::info!(%peer, ?device, %reason, "closing connection"),
        }
        let peer_gone = matches!(reason, CloseReason::PeerClosed | CloseReason::Io(_));
        let flushed =
            peer_gone || tracked(&mut self.queued_total, conn, Conn::flush) != Flush::Blocked;
        if flushed {
            return self.finalize(key, None);
        }
        conn.deadline = self.timers.deadline_after(self.services.now, CLOSE_LINGER);
        conn.armed = conn.deadline;
        self.timers.schedule(id, conn.deadline);
    }

    /// Removes the connection for good.
    pub(super) fn finalize(&mut self, key: usize, reason: Option<CloseReason>) {
        if let Some(reason) = reason
            && self.conns.get(key).is_some_and(|c| !c.stage.is_closing())
        {
            self.close(key, reason);
            if !self.conns.contains(key) {
                return;
            }
        }
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.socket);
        requeue(&mut self.queued_total, conn.queued_bytes(), 0);
        self.services.guards.admission().release(conn.peer.ip());
        self.services
            .metrics
            .conn_moved(conn.transport, Some(ConnState::Closing), None);
        // A descriptor just came free: if accepting starved, try the backlog on this turn.
        self.acceptor.descriptor_freed(self.services.now);
    }

    /// Counts (and, for the reasons worth an operator's eye, logs to the security log) a
    /// connection closed before it logged in.
    fn rejected_before_login(&mut self, peer: std::net::SocketAddr, reason: &CloseReason) {
        let rejection = match reason {
            CloseReason::Tls(_) => Rejection::TlsHandshake,
            CloseReason::UnknownProtocol | CloseReason::TlsOnPlainPort => {
                Rejection::UnknownProtocol
            }
            CloseReason::NotServed(_) => Rejection::NotServed,
            CloseReason::NotALogin(_) => Rejection::NotALogin,
            CloseReason::HttpRefused { .. } => Rejection::HttpRefused,
            CloseReason::Malformed(_) => Rejection::Malformed,
            CloseReason::InvalidToken => Rejection::InvalidToken,
            CloseReason::LoginTimeout | CloseReason::HttpTimeout { .. } => Rejection::LoginTimeout,
            CloseReason::PreAuthBufferFull { .. } => Rejection::PreAuthBufferFull,
            CloseReason::StoreUnavailable => Rejection::StoreUnavailable,
            CloseReason::LoginThrottled { .. } => Rejection::LoginThrottled,
            // Not a rejection: the peer left, the socket failed, we are shutting down, or a
            // reason only a logged-in connection has.
            CloseReason::PeerClosed
            | CloseReason::Io(_)
            | CloseReason::Internal(_)
            | CloseReason::Shutdown
            | CloseReason::Finished(_)
            | CloseReason::HeartbeatTimeout { .. }
            | CloseReason::IdleTimeout { .. }
            | CloseReason::InputBufferFull { .. }
            | CloseReason::SlowReader { .. }
            | CloseReason::TemplateMismatch(_)
            | CloseReason::Revoked { .. } => return,
        };
        self.services.metrics.reject(rejection);
        // TLS refusals and token failures have their own, more specific events.
        if !matches!(
            rejection,
            Rejection::TlsHandshake
                | Rejection::InvalidToken
                | Rejection::StoreUnavailable
                | Rejection::LoginThrottled
        ) {
            self.services.security.record(
                self.services.now,
                &ConnectionEvent::PreAuthRejected {
                    peer,
                    reason: reason.to_string(),
                },
            );
        }
    }

    /// One step of the shutdown drain: on the first call the listeners close and the plan is
    /// made; each call closes the connections due by now. True once none is left (or the
    /// period is over, when the rest are closed at once).
    fn drain_step(&mut self) -> bool {
        if self.drain.is_none() {
            self.acceptor.close(self.poll.registry());
            let period = Duration::from_millis(self.drain_ms.load(Ordering::Acquire));
            tracing::info!(
                shard = self.index,
                connections = self.conns.len(),
                ?period,
                "draining: listeners closed, disconnecting devices"
            );
            self.drain = Some(DrainPlan::new(Instant::now(), period, self.conns.len()));
        }
        let Some(plan) = self.drain.as_mut() else {
            return true;
        };
        let due = plan.due(Instant::now());
        let deadline = plan.deadline();
        let open: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.stage.is_closing())
            .map(|(k, _)| k)
            .take(due)
            .collect();
        for key in open {
            self.close_for_shutdown(key);
        }
        self.conns.is_empty() || Instant::now() >= deadline + CLOSE_LINGER
    }

    /// Closes a connection for the shutdown after one last read, so that what the peer sent
    /// before its turn came (a device's last writes, still in the socket because the drain step
    /// runs before the loop polls) is carried out and reaches the store, not dropped with the
    /// socket.
    fn close_for_shutdown(&mut self, key: usize) {
        self.conn_event(key, Some(ReadDepth::UntilWouldBlock), false);
        if self.conns.get(key).is_some_and(|c| !c.stage.is_closing()) {
            self.close(key, CloseReason::Shutdown);
        }
    }

    /// Stops accepting, closes every connection, and waits (bounded) until the store has
    /// acknowledged every pending write.
    fn shut_down(&mut self, completions: &mut Vec<StoreCompletion>) {
        self.acceptor.close(self.poll.registry());
        self.services.security.flush_at_shutdown();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_for_shutdown(key);
            self.finalize(key, None);
        }
        let give_up = Instant::now() + SHUTDOWN_FLUSH;
        let mut events = Events::with_capacity(64);
        while !self.store.is_idle() && Instant::now() < give_up {
            self.refresh_clock();
            self.store.flush(self.poll.registry(), self.services.now);
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(50)));
            for event in events.iter() {
                if event.token() == STORE {
                    self.store
                        .on_readable(self.poll.registry(), &mut self.scratch, completions);
                }
            }
            for done in completions.drain(..) {
                self.services
                    .metrics
                    .pins_stored
                    .add(done.pins_written as u64);
            }
        }
        let unflushed = self.store.unacked_writes() + self.store.outstanding();
        if unflushed > 0 {
            tracing::error!(
                shard = self.index,
                unflushed,
                "store did not acknowledge every write before shutdown"
            );
        } else {
            tracing::info!(
                shard = self.index,
                "shard stopped; every write acknowledged by the store"
            );
        }
    }
}

/// Runs an operation that may grow or shrink a connection's outbound queue and carries the change
/// into the shard's queued-bytes total.
pub(super) fn tracked<R>(total: &mut usize, conn: &mut Conn, op: impl FnOnce(&mut Conn) -> R) -> R {
    let before = conn.queued_bytes();
    let result = op(conn);
    requeue(total, before, conn.queued_bytes());
    result
}

/// Moves one connection's share of the shard's queued-bytes total from `before` to `after`.
pub(super) fn requeue(total: &mut usize, before: usize, after: usize) {
    debug_assert!(
        *total >= before,
        "queued total {total} below a connection's {before}"
    );
    *total = total.saturating_sub(before) + after;
}

/// Moves a connection's deadline to `timeout` from now after activity. The wheel is armed again
/// only when the new deadline is nearer than the entry it holds; a later one is re-armed when
/// that entry fires (see `on_timer`), so steady traffic costs no wheel insert per message.
pub(super) fn push_deadline(
    timers: &mut TimerWheel,
    conn: &mut Conn,
    id: ConnId,
    now: Instant,
    timeout: Duration,
) {
    conn.deadline = timers.deadline_after(now, timeout);
    if conn.deadline < conn.armed {
        conn.armed = conn.deadline;
        timers.schedule(id, conn.deadline);
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
