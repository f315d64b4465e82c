//! One shard: a thread with its own mio `Poll`, its own `SO_REUSEPORT` listeners, its own slab of
//! connections, timer wheel and store link. Nothing on the per-message path takes a lock or
//! blocks: sockets are edge-triggered and read until `WouldBlock` within a per-wake budget, store
//! calls are pipelined on a non-blocking link, and telemetry is batched once per loop turn.

mod accept;
mod app;
mod input;
mod ops;
mod store_calls;
use store_calls::{TelemetryFlush, Waiter};

use super::admission::{Admit, Guards, Refusal};
use super::conn::{Conn, ConnId, Flush, Port, ReadOutcome, Stage, Transition};
use super::drain::DrainPlan;
use super::events::{ConnectionEvent, PreLoginLog};
use super::hub::{Fanout, Hub, HubInbox};
use super::live::LiveLimits;
use super::log_budget::Budgeted;
use super::password_pool::PasswordPool;
use super::timer::{Tick, TimerWheel};
use super::tls_session::{TlsError, TlsSession};
use super::{ShardLimits, ShardStats};
use crate::metrics::shard::{ConnState, LoginResult, Rejection, ShardMetrics, TlsVersion};
use crate::security;
use crate::session::throttle::LoginGate;
use crate::session::{
    AppAction, CloseReason, DeviceSession, LoginDecision, Outbox, Sniffed, StoreCall, decide_login,
    sniff,
};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use ops::transport;
use portcullis_protocol::Status;
use portcullis_protocol::frame::{self, Decoded};
use portcullis_protocol::store::{
    ClientHello, ClientRole, NodeName, PinWrite, Presence, Request, Response, SessionTag,
    StoreError, TrafficLink,
};
use portcullis_store_client::{LinkState, StoreEndpoint, StoreLink};
use rustls::ServerConfig;
use slab::Slab;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const WAKER: Token = Token(0);
const STORE: Token = Token(1);
const LISTEN_TLS: Token = Token(2);
const LISTEN_PLAIN: Token = Token(3);
/// A store reply as the shard gets it: with the continuation of the call.
type Completion = portcullis_store_client::Completion<Waiter>;
/// Connection tokens are slab keys offset past the named tokens.
const CONN_BASE: usize = 16;

/// Size of the shard's shared read buffer; connections borrow it for the duration of a read.
const SCRATCH_LEN: usize = 64 * 1024;
/// Reads per connection per wake-up before others get their turn.
const READ_BUDGET: usize = 8;
/// Accepts per listener per wake-up.
const ACCEPT_BUDGET: usize = 256;
/// How long accepting pauses after the process ran out of file descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Pin writes per store request: one store write batch.
const MAX_WRITE_BATCH: usize = 4096;
/// How long a closing connection may take to flush its last frames.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Upper bound on the shutdown flush of pending writes to the store.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);
/// Longest sleep of a draining shard, so closes stay evenly paced.
const DRAIN_TICK: Duration = Duration::from_millis(20);
/// Store requests queued or in flight beyond which logins, syncs, property writes and info
/// updates are refused with an answer (telemetry has its own bound; presence changes are never
/// refused: each connection makes at most two, so the connection limits bound them).
const MAX_QUEUED_CALLS: usize = 65_536;

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
    pub stats: Arc<ShardStats>,
    pub metrics: Arc<ShardMetrics>,
    pub live_limits: Arc<LiveLimits>,
    pub shutdown: Arc<AtomicBool>,
    pub drain_ms: Arc<AtomicU64>,
    pub hub: Arc<Hub>,
    pub inbox: HubInbox,
    pub passwords: Arc<PasswordPool>,
}

pub struct Shard {
    index: u16,
    poll: Poll,
    listeners: Vec<(Token, TcpListener, Port)>,
    tls_config: Arc<ServerConfig>,
    conns: Slab<Conn>,
    next_generation: u32,
    timers: TimerWheel,
    link: StoreLink<Waiter>,
    /// This gateway's node, carried by every session tag.
    node: NodeName,
    limits: ShardLimits,
    guards: Arc<Guards>,
    stats: Arc<ShardStats>,
    metrics: Arc<ShardMetrics>,
    live_limits: Arc<LiveLimits>,
    limits_version: u64,
    shutdown: Arc<AtomicBool>,
    drain_ms: Arc<AtomicU64>,
    /// Set once shutdown started: connections are being closed on this schedule.
    drain: Option<DrainPlan>,
    scratch: Vec<u8>,
    /// Decrypted bytes of one TLS read, handed to the stage machine.
    plaintext: Vec<u8>,
    /// TLS records on their way to one socket (handshake, alerts, encrypted frames).
    ciphertext: Vec<u8>,
    outbox: Outbox,
    /// Security events caused before login, within a per-second budget.
    pre_login_log: PreLoginLog,
    telemetry: VecDeque<PinWrite>,
    /// Connections that still had bytes to read when their budget ran out.
    backlog: Vec<usize>,
    accept_paused_until: Option<Instant>,
    /// Accepting stopped because descriptors (or kernel memory) ran out; a close resumes it.
    accept_starved: bool,
    now: Instant,
    now_tick: Tick,
    now_ms: u64,
    /// Bytes waiting in the outbound queues of this shard's connections (each queued frame with
    /// its allocation overhead). Above `limits.output_budget_bytes` new connections are refused.
    queued_total: usize,
    hub: Arc<Hub>,
    inbox: HubInbox,
    /// Who subscribed to which device (every shard's apps), and this turn's events for them.
    fanout: Fanout,
    passwords: Arc<PasswordPool>,
    /// Decisions of one app session step (kept to reuse its allocation).
    app_actions: Vec<AppAction>,
    /// App connections with events written but not yet sent, during one delivery.
    app_touched: Vec<usize>,
}

/// Creates the waker before the shard thread starts, so the main thread can hold it.
pub fn new_waker(poll: &Poll) -> io::Result<Waker> {
    Waker::new(poll.registry(), WAKER)
}

impl Shard {
    pub fn new(setup: ShardSetup) -> io::Result<Self> {
        let registry = setup.poll.registry();
        let mut listeners = Vec::new();
        for (token, listener, port) in [
            (LISTEN_TLS, setup.tls_listener, Port::Tls),
            (LISTEN_PLAIN, setup.plain_listener, Port::Plain),
        ] {
            let mut listener = TcpListener::from_std(listener);
            registry.register(&mut listener, token, Interest::READABLE)?;
            listeners.push((token, listener, port));
        }
        let now = Instant::now();
        Ok(Self {
            index: setup.index,
            link: StoreLink::new(
                setup.store,
                ClientHello::new(
                    setup.node.clone(),
                    ClientRole::DeviceTraffic(TrafficLink::Shard(setup.index)),
                ),
                STORE,
            ),
            node: setup.node,
            poll: setup.poll,
            listeners,
            tls_config: setup.tls_config,
            conns: Slab::new(),
            next_generation: 1,
            timers: TimerWheel::new(now),
            limits: setup.limits,
            guards: setup.guards,
            stats: setup.stats,
            metrics: setup.metrics,
            live_limits: setup.live_limits,
            limits_version: 0,
            shutdown: setup.shutdown,
            drain_ms: setup.drain_ms,
            drain: None,
            scratch: vec![0; SCRATCH_LEN],
            plaintext: Vec::new(),
            ciphertext: Vec::new(),
            outbox: Outbox::default(),
            pre_login_log: PreLoginLog::new(setup.index, Instant::now()),
            telemetry: VecDeque::new(),
            backlog: Vec::new(),
            accept_paused_until: None,
            accept_starved: false,
            queued_total: 0,
            fanout: Fanout::new(setup.index, setup.hub.shards()),
            hub: setup.hub,
            inbox: setup.inbox,
            passwords: setup.passwords,
            app_actions: Vec::new(),
            app_touched: Vec::new(),
            now,
            now_tick: 0,
            now_ms: unix_ms(),
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
        self.flush_store();
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
            // Accepting resumes at this time (at once after a spent budget: the listener's edge
            // will not fire again for connections already waiting in its backlog).
            let timeout = match self.accept_paused_until {
                Some(until) => timeout.min(until.saturating_duration_since(now)),
                None => timeout,
            };
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(timeout.min(Duration::from_millis(200))))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            self.refresh_clock();
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    STORE => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.link.on_readable(
                                self.poll.registry(),
                                &mut self.scratch,
                                &mut completions,
                            );
                        }
                    }
                    LISTEN_TLS | LISTEN_PLAIN => self.accept(event.token()),
                    Token(t) => {
                        let read = input::ReadDepth::for_event(event);
                        self.conn_event(t - CONN_BASE, read, event.is_writable())
                    }
                }
            }
            self.turn(&mut expired, &mut completions);
            self.metrics.turn_done(
                self.now.elapsed(),
                self.telemetry.len() + self.link.unacked_writes(),
                self.link.outstanding(),
                self.link.state == LinkState::Up,
                self.now_ms,
            );
        }
        self.shut_down(&mut completions);
        Ok(())
    }

    /// Work done once per loop turn after the events: backlog, accept retries, completions,
    /// timers, and the telemetry batch for the store.
    fn turn(&mut self, expired: &mut Vec<ConnId>, completions: &mut Vec<Completion>) {
        if let Some(limits) = self.live_limits.changed_since(&mut self.limits_version) {
            self.limits = limits;
        }
        self.pre_login_log.flush(self.now);
        self.drain_hub();
        for key in std::mem::take(&mut self.backlog) {
            self.conn_event(key, Some(input::ReadDepth::UntilWouldBlock), false);
        }
        if self
            .accept_paused_until
            .is_some_and(|until| self.now >= until)
        {
            self.accept_paused_until = None;
            self.accept(LISTEN_TLS);
            self.accept(LISTEN_PLAIN);
        }
        for done in completions.drain(..) {
            self.complete(done);
        }
        self.timers.advance(self.now, expired);
        for id in expired.drain(..) {
            self.on_timer(id);
        }
        self.flush_fanout();
        self.flush_store();
    }

    fn refresh_clock(&mut self) {
        self.now = Instant::now();
        self.now_tick = self.timers.tick_of(self.now);
        self.now_ms = unix_ms();
    }

    fn flush_store(&mut self) {
        self.link.maintain(self.poll.registry(), self.now);
        if self.link.state == LinkState::Up {
            self.telemetry_to_link(TelemetryFlush::WithinBound);
        }
        let share = self.link_share();
        self.link.pump(self.poll.registry(), share);
    }

    /// The connection `id` names, unless its slot was reused since: late events (timers, store
    /// replies, password verdicts, app events) for a connection that is gone are dropped.
    fn live(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.slot as usize)
            .filter(|c| c.generation == id.generation)
    }

    fn on_timer(&mut self, id: ConnId) {
        let key = id.slot as usize;
        // Field access, not `live()`: the timers and clock are used while `conn` is borrowed.
        let Some(conn) = self
            .conns
            .get_mut(key)
            .filter(|c| c.generation == id.generation)
        else {
            return;
        };
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
            Stage::Device(session) => CloseReason::HeartbeatTimeout {
                secs: session.heartbeat_timeout(&self.limits.session).as_secs(),
            },
            Stage::App(session) if session.is_logged_in() => CloseReason::HeartbeatTimeout {
                secs: self.limits.app_idle_timeout.as_secs(),
            },
            _ => CloseReason::LoginTimeout,
        };
        self.close(key, reason);
    }

    /// Starts closing: records the reason, sends close_notify on TLS, flushes, and finalizes at
    /// once unless bytes are still queued (then on writable or after a short linger).
    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(conn.stage, Stage::Closing(_)) {
            return;
        }
        let id = ConnId {
            slot: key as u32,
            generation: conn.generation,
        };
        let device = match &conn.stage {
            Stage::Device(session) => Some(session.device),
            _ => None,
        };
        let peer = conn.peer;
        let logged_in = conn.stage.is_logged_in();
        if !logged_in {
            self.guards.admission().leave_unauthenticated();
        }
        let from = if logged_in {
            ConnState::Authenticated
        } else {
            ConnState::PreAuth
        };
        self.metrics
            .conn_moved(transport(conn.port), Some(from), Some(ConnState::Closing));
        let app_subscriptions = match &conn.stage {
            Stage::App(session) => Some(session.subscriptions().collect()),
            _ => None,
        };
        if let Some(subscriptions) = app_subscriptions {
            self.app_closed(id, subscriptions);
        }
        if !logged_in {
            self.rejected_before_login(peer, &reason);
        }
        let conn = &mut self.conns[key];
        if let Stage::App(session) = &mut conn.stage {
            session.close(&reason);
            let goodbye = session.take_output();
            // A failure shows in the flush below.
            let _ = tracked(&mut self.queued_total, conn, |c| {
                c.send_frame(&goodbye, &mut self.ciphertext)
            });
        }
        advance(&mut conn.stage, Transition::Close(reason.clone()));
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
            CloseReason::PeerClosed | CloseReason::Shutdown => {
                tracing::debug!(%peer, ?device, %reason, "connection closed")
            }
            // Strangers refused before login are logged within a per-second budget, the rest
            // summarised: a line each would let a flood of them flood the log.
            _ if !logged_in => match self.pre_login_log.close_line(self.now) {
                Budgeted::Write => tracing::info!(%peer, %reason, "closing connection"),
                Budgeted::Suppressed => tracing::debug!(%peer, %reason, "closing connection"),
            },
            _ => tracing::info!(%peer, ?device, %reason, "closing connection"),
        }
        if let Some(device) = device {
            let session = self.session_tag(id);
            self.submit(
                id,
                Some(device),
                StoreCall::Presence(Presence::Offline { session }),
            );
        }
        let conn = &mut self.conns[key];
        let peer_gone = matches!(reason, CloseReason::PeerClosed | CloseReason::Io(_));
        let flushed =
            peer_gone || tracked(&mut self.queued_total, conn, Conn::flush) != Flush::Blocked;
        if flushed {
            return self.finalize(key, None);
        }
        conn.deadline = self.timers.deadline_after(self.now, CLOSE_LINGER);
        conn.armed = conn.deadline;
        self.timers.schedule(id, conn.deadline);
    }

    /// Removes the connection for good.
    fn finalize(&mut self, key: usize, reason: Option<CloseReason>) {
        if let Some(reason) = reason
            && self
                .conns
                .get(key)
                .is_some_and(|c| !matches!(c.stage, Stage::Closing(_)))
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
        self.guards.admission().release(conn.peer.ip());
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        self.metrics
            .conn_moved(transport(conn.port), Some(ConnState::Closing), None);
        if self.accept_starved {
            // A descriptor just came free: try the backlog on this loop turn.
            self.accept_paused_until = Some(self.now);
        }
    }

    /// Stops accepting, closes every connection, and waits (bounded) until the store has
    /// acknowledged every pending write.
    fn shut_down(&mut self, completions: &mut Vec<Completion>) {
        for (_, listener, _) in &mut self.listeners {
            let _ = self.poll.registry().deregister(listener);
        }
        self.listeners.clear();
        self.pre_login_log.flush_at_shutdown();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, CloseReason::Shutdown);
            self.finalize(key, None);
        }
        let give_up = Instant::now() + SHUTDOWN_FLUSH;
        let mut events = Events::with_capacity(64);
        while (!self.telemetry.is_empty() || !self.link.is_idle()) && Instant::now() < give_up {
            self.refresh_clock();
            self.flush_store();
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(50)));
            for event in events.iter() {
                if event.token() == STORE {
                    self.link
                        .on_readable(self.poll.registry(), &mut self.scratch, completions);
                }
            }
            for done in completions.drain(..) {
                self.stats
                    .pins_stored
                    .fetch_add(done.pins_written as u64, Ordering::Relaxed);
            }
        }
        let unflushed = self.telemetry.len() + self.link.outstanding();
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

/// Records a login refused by the throttle in the security log and names the close reason.
fn throttled(
    log: &mut PreLoginLog,
    now: Instant,
    peer: std::net::SocketAddr,
    gate: LoginGate,
    what: &'static str,
) -> CloseReason {
    let (retry_in, failures) = match gate {
        LoginGate::Open => (Duration::ZERO, 0),
        LoginGate::BackingOff { retry_in, failures } => (retry_in, failures),
        LoginGate::Blocked {
            remaining,
            failures,
        } => (remaining, failures),
    };
    let retry_in_ms = retry_in.as_millis() as u64;
    log.record(
        now,
        &ConnectionEvent::LoginThrottled {
            peer,
            reason: format!(
                "{what}: {} after {failures} failures, retry in {retry_in_ms} ms",
                gate.name()
            ),
        },
    );
    CloseReason::LoginThrottled {
        gate: gate.name(),
        retry_in_ms,
    }
}

impl Shard {
    /// The presence tag of a connection's session: this gateway's node, and shard and generation,
    /// unique among the node's live sessions of this run (generations only repeat after 2^32
    /// connections on a shard).
    fn session_tag(&self, id: ConnId) -> SessionTag {
        SessionTag {
            node: self.node.clone(),
            local: (u64::from(self.index) << 32) | u64::from(id.generation),
        }
    }
}

/// Runs an operation that may grow or shrink a connection's outbound queue and carries the change
/// into the shard's queued-bytes total.
fn tracked<R>(total: &mut usize, conn: &mut Conn, op: impl FnOnce(&mut Conn) -> R) -> R {
    let before = conn.queued_bytes();
    let result = op(conn);
    requeue(total, before, conn.queued_bytes());
    result
}

/// Moves one connection's share of the shard's queued-bytes total from `before` to `after`.
fn requeue(total: &mut usize, before: usize, after: usize) {
    debug_assert!(
        *total >= before,
        "queued total {total} below a connection's {before}"
    );
    *total = total.saturating_sub(before) + after;
}

/// Moves a connection's deadline to `timeout` from now after activity. The wheel is armed again
/// only when the new deadline is nearer than the entry it holds; a later one is re-armed when
/// that entry fires (see `on_timer`), so steady traffic costs no wheel insert per message.
fn push_deadline(
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

fn advance(stage: &mut Stage, transition: Transition) {
    let current = std::mem::replace(stage, Stage::Sniff);
    *stage = current.upgrade(transition);
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
