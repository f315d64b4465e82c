//! One shard: a thread with its own mio `Poll`, its own `SO_REUSEPORT` listeners, its own slab of
//! connections, timer wheel and store link. Nothing on the per-message path takes a lock or
//! blocks: sockets are edge-triggered and read until `WouldBlock` within a per-wake budget, store
//! calls are pipelined on a non-blocking link, and telemetry is batched once per loop turn.

mod ops;

use super::admission::{Admit, Guards, Refusal};
use super::conn::{Conn, ConnId, Flush, Port, ReadOutcome, Stage, Transition};
use super::drain::DrainPlan;
use super::events::ConnectionEvent;
use super::live::LiveLimits;
use super::store_link::{Completion, LinkState, StoreLink, Waiter};
use super::timer::{Tick, TimerWheel};
use super::tls_session::{TlsError, TlsSession};
use super::{ShardLimits, ShardStats};
use crate::metrics::shard::{ConnState, LoginResult, Rejection, ShardMetrics, TlsVersion};
use crate::security;
use crate::session::throttle::LoginGate;
use crate::session::{
    CloseReason, DeviceSession, LoginDecision, Outbox, Sniffed, StoreCall, decide_login, sniff,
};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use ops::transport;
use portcullis_protocol::Status;
use portcullis_protocol::frame::{self, Decoded};
use portcullis_protocol::store::{ClientRole, PinWrite, Presence, Request, Response, StoreError};
use rustls::ServerConfig;
use slab::Slab;
use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const WAKER: Token = Token(0);
const STORE: Token = Token(1);
const LISTEN_TLS: Token = Token(2);
const LISTEN_PLAIN: Token = Token(3);
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
/// Store calls (other than telemetry) queued while the store is away, at most.
const MAX_QUEUED_CALLS: usize = 65_536;

pub struct ShardSetup {
    pub index: u16,
    pub poll: Poll,
    pub tls_listener: std::net::TcpListener,
    pub plain_listener: std::net::TcpListener,
    pub tls_config: Arc<ServerConfig>,
    pub store_socket: PathBuf,
    pub limits: ShardLimits,
    pub guards: Arc<Guards>,
    pub stats: Arc<ShardStats>,
    pub metrics: Arc<ShardMetrics>,
    pub live_limits: Arc<LiveLimits>,
    pub shutdown: Arc<AtomicBool>,
    pub drain_ms: Arc<AtomicU64>,
}

pub struct Shard {
    index: u16,
    poll: Poll,
    listeners: Vec<(Token, TcpListener, Port)>,
    tls_config: Arc<ServerConfig>,
    conns: Slab<Conn>,
    next_generation: u32,
    timers: TimerWheel,
    link: StoreLink,
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
    telemetry: VecDeque<PinWrite>,
    /// Connections that still had bytes to read when their budget ran out.
    backlog: Vec<usize>,
    accept_paused_until: Option<Instant>,
    /// Accepting stopped because descriptors (or kernel memory) ran out; a close resumes it.
    accept_starved: bool,
    now: Instant,
    now_tick: Tick,
    now_ms: u64,
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
                setup.store_socket,
                ClientRole::GatewayShard(setup.index),
                STORE,
            ),
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
            telemetry: VecDeque::new(),
            backlog: Vec::new(),
            accept_paused_until: None,
            accept_starved: false,
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
        loop {
            if self.shutdown.load(Ordering::Acquire) && self.drain_step() {
                break;
            }
            let timeout = if !self.backlog.is_empty() {
                Duration::ZERO
            } else if self.drain.is_some() {
                DRAIN_TICK
            } else {
                self.timers.next_wakeup(Instant::now())
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
                        self.conn_event(t - CONN_BASE, event.is_readable(), event.is_writable())
                    }
                }
            }
            self.turn(&mut expired, &mut completions);
            self.metrics.turn_done(
                self.now.elapsed(),
                self.telemetry.len(),
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
        for key in std::mem::take(&mut self.backlog) {
            self.conn_event(key, true, false);
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
            self.telemetry_to_link();
        }
        self.link.pump(self.poll.registry());
    }

    /// Hands queued telemetry to the link as write batches. Also called before a read so the store
    /// sees a device's writes before its sync (the link keeps request order).
    fn telemetry_to_link(&mut self) {
        while !self.telemetry.is_empty() {
            let n = self.telemetry.len().min(MAX_WRITE_BATCH);
            let writes: Vec<PinWrite> = self.telemetry.drain(..n).collect();
            self.metrics.write_batch.observe(n as u64);
            self.link
                .submit(Request::WritePins { writes }, Waiter::None);
        }
    }

    fn accept(&mut self, token: Token) {
        if self.accept_paused_until.is_some() {
            return;
        }
        let Some(index) = self.listeners.iter().position(|(t, _, _)| *t == token) else {
            return;
        };
        for _ in 0..ACCEPT_BUDGET {
            let (stream, peer) = match self.listeners[index].1.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS/ENOMEM: the pending connection stays in the kernel
                    // backlog. Pause instead of spinning on it; the next close (or the pause
                    // timer, for descriptors freed elsewhere in the process) resumes accepting.
                    if !self.accept_starved {
                        tracing::warn!(target: "security", shard = self.index, error = %e, open = self.conns.len(), "accept failed; pausing accepts until a connection closes");
                        self.stats.accept_pauses.fetch_add(1, Ordering::Relaxed);
                        self.metrics.reject(Rejection::AcceptFailed);
                    }
                    self.accept_starved = true;
                    self.accept_paused_until = Some(self.now + ACCEPT_PAUSE);
                    return;
                }
            };
            if self.accept_starved {
                self.accept_starved = false;
                tracing::info!(
                    shard = self.index,
                    open = self.conns.len(),
                    "accepting again"
                );
            }
            let admitted = self.guards.admission().admit(peer.ip(), self.now);
            if let Admit::Refused(refusal) = admitted {
                self.refuse(peer, refusal);
                continue;
            }
            let port = self.listeners[index].2;
            self.open(stream, peer, port);
        }
        // Budget used up: more may be waiting, and edge-triggered readiness will not say so again.
        self.accept_paused_until = Some(self.now);
    }

    /// A connection refused at accept: its socket is dropped (closed) by the caller. Logged on the
    /// security target at powers of two per shard, so a flood cannot flood the log too.
    fn refuse(&mut self, peer: std::net::SocketAddr, refusal: Refusal) {
        let refused = self
            .stats
            .connections_refused
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        self.metrics.reject(Rejection::AdmissionLimit);
        if refused.is_power_of_two() {
            security::record(
                "reactor",
                &ConnectionEvent::RefusedAtAccept {
                    peer,
                    reason: format!(
                        "{} ({refusal:?}); {refused} refused by shard {} so far (logged at powers of two)",
                        refusal.name(),
                        self.index
                    ),
                },
            );
        } else {
            tracing::debug!(%peer, reason = refusal.name(), "connection refused at accept");
        }
    }

    /// Opens an admitted connection; releases its admission if it cannot be opened after all.
    fn open(&mut self, socket: mio::net::TcpStream, peer: std::net::SocketAddr, port: Port) {
        if !self.try_open(socket, peer, port) {
            let mut admission = self.guards.admission();
            admission.leave_unauthenticated();
            admission.release(peer.ip());
        }
    }

    fn try_open(
        &mut self,
        mut socket: mio::net::TcpStream,
        peer: std::net::SocketAddr,
        port: Port,
    ) -> bool {
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
        let (tls, stage) = match port {
            Port::Plain => (None, Stage::Sniff),
            Port::Tls => match TlsSession::new(self.tls_config.clone()) {
                Ok(tls) => (Some(Box::new(tls)), Stage::TlsHandshake),
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
            .deadline_after(self.now, self.limits.login_timeout);
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
            port,
            tls,
            stage,
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
        self.stats.connections_open.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .conn_moved(transport(port), None, Some(ConnState::PreAuth));
        tracing::debug!(shard = self.index, %peer, ?port, "accepted");
        true
    }

    fn conn_event(&mut self, key: usize, readable: bool, writable: bool) {
        if !self.conns.contains(key) {
            return;
        }
        if writable {
            let conn = &mut self.conns[key];
            match conn.flush() {
                Flush::Failed(e) => return self.finalize(key, Some(CloseReason::Io(e))),
                Flush::Done if matches!(conn.stage, Stage::Closing(_)) => {
                    return self.finalize(key, None);
                }
                _ => {}
            }
        }
        if readable {
            self.read(key);
        }
    }

    /// Reads until the socket is drained or the connection's budget for this wake-up is spent.
    fn read(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        for budget in (0..READ_BUDGET).rev() {
            let Some(conn) = self.conns.get_mut(key) else {
                break;
            };
            if matches!(conn.stage, Stage::Closing(_)) {
                break;
            }
            match conn.read_plain(&mut scratch) {
                ReadOutcome::Data(n) if conn.tls.is_some() => {
                    self.on_ciphertext(key, &mut scratch[..n])
                }
                ReadOutcome::Data(n) => self.on_bytes(key, &scratch[..n]),
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
    /// once, decrypted bytes go to the stage machine.
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
        let received = tls.receive(data, &mut plaintext, &mut self.ciphertext);
        let handshake_done = received.as_ref().is_ok_and(|r| r.handshake_done);
        let version = tls.protocol_version();
        // Whatever rustls produced (handshake records, or the fatal alert after an error) must
        // reach the peer before anything else happens to the connection.
        let sent = conn.send_bytes(&self.ciphertext);
        match received {
            Err(e) => {
                let refused_handshake = matches!(conn.stage, Stage::TlsHandshake);
                if refused_handshake {
                    security::record(
                        "reactor",
                        &ConnectionEvent::TlsRefused {
                            peer: conn.peer,
                            reason: e.to_string(),
                        },
                    );
                    self.stats.tls_refused.fetch_add(1, Ordering::Relaxed);
                    self.metrics.tls_handshake(TlsVersion::of(version), false);
                } else if !matches!(e, TlsError::Internal(_)) {
                    security::record(
                        "reactor",
                        &ConnectionEvent::TlsBroken {
                            peer: conn.peer,
                            reason: e.to_string(),
                        },
                    );
                }
                self.close(key, CloseReason::Tls(e.to_string()));
            }
            Ok(received) => {
                if handshake_done {
                    tracing::debug!(peer = %conn.peer, ?version, "TLS handshake done");
                    self.metrics.tls_handshake(TlsVersion::of(version), true);
                    advance(&mut conn.stage, Transition::HandshakeDone);
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

    /// Feeds received bytes to the connection's stage; keeps any incomplete tail.
    fn on_bytes(&mut self, key: usize, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        self.metrics.bytes_in(transport(conn.port), data.len());
        let mut held = std::mem::take(&mut conn.inbuf);
        if held.is_empty() {
            let used = self.process(key, data);
            held.extend_from_slice(&data[used..]);
        } else {
            held.extend_from_slice(data);
            let used = self.process(key, &held);
            held.drain(..used);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(conn.stage, Stage::Closing(_)) {
            return;
        }
        let limit = if conn.stage.is_logged_in() {
            frame::HEADER_LEN + self.limits.max_body
        } else {
            self.limits.preauth_buffer_bytes
        };
        if held.len() > limit {
            return self.close(key, CloseReason::PreAuthBufferFull { limit });
        }
        // Release the allocation once nothing is pending: idle connections hold no buffer.
        conn.inbuf = if held.is_empty() { Vec::new() } else { held };
    }

    /// Runs the stage machine over `input`; returns how many bytes it consumed. Answers are sent
    /// whenever a queue's worth has piled up, so a peer that pipelines requests and never reads is
    /// caught as a slow reader after one queue of answers, not after its whole input.
    fn process(&mut self, key: usize, input: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            let (used, outbox_full) = self.process_some(key, &input[pos..]);
            pos += used;
            let open = self
                .conns
                .get(key)
                .is_some_and(|c| !matches!(c.stage, Stage::Closing(_)));
            if !open {
                return input.len();
            }
            if !outbox_full {
                return pos;
            }
        }
    }

    /// One pass of [`Self::process`]: stops early (returning `true`) once the outbox holds more
    /// than the connection's outbound queue bound.
    fn process_some(&mut self, key: usize, input: &[u8]) -> (usize, bool) {
        let mut outbox_full = false;
        let mut pos = 0;
        let mut active = false;
        self.outbox.clear();
        let Some(conn) = self.conns.get_mut(key) else {
            return (input.len(), false);
        };
        let id = ConnId {
            slot: key as u32,
            generation: conn.generation,
        };
        loop {
            let rest = &input[pos..];
            match &mut conn.stage {
                Stage::Sniff => match sniff(rest) {
                    Sniffed::NeedMore => break,
                    Sniffed::Device => advance(&mut conn.stage, Transition::DeviceSniffed),
                    Sniffed::Http => {
                        self.outbox.close(CloseReason::NotALogin(
                            "HTTP is not served on this port yet".into(),
                        ));
                        break;
                    }
                    Sniffed::Tls | Sniffed::Unknown => {
                        self.outbox.close(CloseReason::UnknownProtocol);
                        break;
                    }
                },
                Stage::Login => match frame::decode(rest, self.limits.max_body_before_login) {
                    Ok(Decoded::NeedMore { .. }) => break,
                    Err(e) => {
                        self.outbox.close(CloseReason::Malformed(e.to_string()));
                        break;
                    }
                    Ok(Decoded::Frame { frame, consumed }) => {
                        pos += consumed;
                        match decide_login(&frame) {
                            LoginDecision::Authenticate { token_hash, msg_id } => {
                                let gate = self.guards.throttle().check(conn.peer.ip(), self.now);
                                if gate != LoginGate::Open {
                                    self.stats.logins_throttled.fetch_add(1, Ordering::Relaxed);
                                    self.metrics.login(LoginResult::Throttled);
                                    let reason = throttled(
                                        conn.peer,
                                        gate,
                                        "login refused without checking the token",
                                    );
                                    self.outbox.response(msg_id, Status::QuotaLimit);
                                    self.outbox.close(reason);
                                    break;
                                }
                                advance(&mut conn.stage, Transition::LoginSent { msg_id });
                                self.outbox
                                    .store
                                    .push(StoreCall::Authenticate { token_hash, msg_id });
                            }
                            LoginDecision::RefuseToken { msg_id, reason } => {
                                let gate = self
                                    .guards
                                    .throttle()
                                    .record_failure(conn.peer.ip(), self.now);
                                security::record(
                                    "reactor",
                                    &ConnectionEvent::MalformedToken {
                                        peer: conn.peer,
                                        reason: format!(
                                            "{reason}; next login from this address: {}",
                                            gate.name()
                                        ),
                                    },
                                );
                                self.stats.logins_refused.fetch_add(1, Ordering::Relaxed);
                                self.metrics.login(LoginResult::MalformedToken);
                                self.outbox.response(msg_id, Status::InvalidToken);
                                self.outbox.close(CloseReason::InvalidToken);
                                break;
                            }
                            LoginDecision::NotALogin { command } => {
                                let what = format!("command {command} before login");
                                self.outbox.close(CloseReason::NotALogin(what));
                                break;
                            }
                        }
                    }
                },
                Stage::Device(session) => match frame::decode(rest, self.limits.max_body) {
                    Ok(Decoded::NeedMore { .. }) => break,
                    Err(e) => {
                        self.outbox.close(CloseReason::Malformed(e.to_string()));
                        break;
                    }
                    Ok(Decoded::Frame { frame, consumed }) => {
                        pos += consumed;
                        active = true;
                        self.metrics.message_in(frame.command.code());
                        session.on_frame(&frame, &mut self.outbox);
                        if self.outbox.pending_bytes() > self.limits.outbound_queue_bytes {
                            outbox_full = true;
                            break;
                        }
                    }
                },
                Stage::TlsHandshake | Stage::Authenticating { .. } => break,
                Stage::Closing(_) => {
                    pos = input.len();
                    break;
                }
            }
        }
        if active && let Stage::Device(session) = &conn.stage {
            let timeout = session.heartbeat_timeout(&self.limits.session);
            conn.deadline = self.timers.deadline_after(self.now, timeout);
            if conn.deadline < conn.armed {
                conn.armed = conn.deadline;
                self.timers.schedule(id, conn.deadline);
            }
        }
        self.apply_outbox(key, id);
        (pos, outbox_full)
    }

    /// Carries out what a stage decided: frames to the socket, calls to the store, closing.
    fn apply_outbox(&mut self, key: usize, id: ConnId) {
        let mut outbox = std::mem::take(&mut self.outbox);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut failure = None;
        let via = transport(conn.port);
        for bytes in outbox.frames() {
            self.metrics.frame_out(bytes);
            self.metrics.bytes_out(via, bytes.len());
            match conn.send_frame(bytes, &mut self.ciphertext) {
                Flush::Failed(e) => {
                    failure = Some(CloseReason::Io(e));
                    break;
                }
                Flush::Blocked if conn.queued_bytes() > self.limits.outbound_queue_bytes => {
                    failure = Some(CloseReason::SlowReader {
                        queued: conn.queued_bytes(),
                    });
                    break;
                }
                _ => {}
            }
        }
        let device = match &conn.stage {
            Stage::Device(session) => Some(session.device),
            _ => None,
        };
        for call in outbox.store.drain(..) {
            self.submit(id, device, call);
        }
        let close = failure.or(outbox.close.take());
        outbox.clear();
        self.outbox = outbox;
        if let Some(reason) = close {
            self.close(key, reason);
        }
    }

    fn submit(&mut self, id: ConnId, device: Option<u64>, call: StoreCall) {
        let at_ms = self.now_ms;
        if let StoreCall::Authenticate { token_hash, msg_id } = call {
            self.link.submit(
                Request::Authenticate { token_hash },
                Waiter::Login { conn: id, msg_id },
            );
            return;
        }
        let Some(device) = device else { return };
        if self.link.outstanding() >= MAX_QUEUED_CALLS
            && !matches!(call, StoreCall::WritePin { .. })
        {
            tracing::warn!(shard = self.index, "store call queue full; refusing a call");
            self.stats
                .store_calls_refused
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        match call {
            StoreCall::Authenticate { .. } => {}
            StoreCall::WritePin { pin, value } => {
                if self.telemetry.len() >= self.limits.store_queue_max_writes {
                    self.telemetry.pop_front();
                    let dropped = self.stats.telemetry_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(
                            shard = self.index,
                            dropped,
                            "telemetry queue full; dropping the oldest values"
                        );
                    }
                }
                self.telemetry.push_back(PinWrite {
                    device,
                    pin,
                    value,
                    at_ms,
                });
            }
            StoreCall::Sync {
                msg_id,
                pins,
                filter,
            } => {
                self.telemetry_to_link();
                self.link.submit(
                    Request::ReadPins { device, pins },
                    Waiter::Sync {
                        conn: id,
                        msg_id,
                        filter,
                    },
                )
            }
            StoreCall::WriteProperty {
                msg_id,
                pin,
                property,
                value,
            } => self.link.submit(
                Request::WriteProperty {
                    device,
                    pin,
                    property,
                    value,
                    at_ms,
                },
                Waiter::Property { conn: id, msg_id },
            ),
            StoreCall::SetInfo(info) => self.link.submit(
                Request::SetInfo {
                    device,
                    info,
                    at_ms,
                },
                Waiter::None,
            ),
            StoreCall::Presence(presence) => self.link.submit(
                Request::SetPresence {
                    device,
                    presence,
                    at_ms,
                },
                Waiter::None,
            ),
        }
    }

    /// A store reply for a connection that may have gone (then it is dropped).
    fn complete(&mut self, done: Completion) {
        self.metrics.store_latency.observe_duration(done.elapsed);
        self.stats
            .pins_stored
            .fetch_add(done.pins_written as u64, Ordering::Relaxed);
        let (id, msg_id) = match &done.waiter {
            Waiter::None => {
                if let Err(e) = &done.result {
                    tracing::warn!(shard = self.index, error = %e, "store refused a write");
                }
                return;
            }
            Waiter::Login { conn, msg_id }
            | Waiter::Sync { conn, msg_id, .. }
            | Waiter::Property { conn, msg_id } => (*conn, *msg_id),
        };
        let key = id.slot as usize;
        if self
            .conns
            .get(key)
            .is_none_or(|c| c.generation != id.generation)
        {
            return;
        }
        self.outbox.clear();
        match (done.waiter, done.result) {
            (Waiter::Login { .. }, Ok(Response::Authenticated(Some(auth)))) => {
                return self.logged_in(key, id, msg_id, auth.device);
            }
            (Waiter::Login { .. }, Ok(Response::Authenticated(None))) => {
                let peer = self.conns[key].peer;
                let gate = self.guards.throttle().record_failure(peer.ip(), self.now);
                security::record(
                    "reactor",
                    &ConnectionEvent::InvalidToken {
                        peer,
                        next: gate.name(),
                    },
                );
                self.stats.logins_refused.fetch_add(1, Ordering::Relaxed);
                self.metrics.login(LoginResult::InvalidToken);
                self.outbox.response(msg_id, Status::InvalidToken);
                self.outbox.close(CloseReason::InvalidToken);
            }
            (Waiter::Login { .. }, other) => {
                tracing::error!(result = ?other, "store failed a login lookup");
                self.metrics.login(LoginResult::StoreError);
                self.outbox.response(msg_id, Status::ServerError);
                self.outbox.close(CloseReason::StoreUnavailable);
            }
            (Waiter::Sync { filter, .. }, Ok(Response::Pins(values))) => {
                if let Stage::Device(session) = &self.conns[key].stage {
                    let skipped = session.on_sync_reply(
                        msg_id,
                        filter,
                        &values,
                        &self.limits.session,
                        &mut self.outbox,
                    );
                    if skipped > 0 {
                        tracing::debug!(
                            skipped,
                            "sync values larger than the device buffer were skipped"
                        );
                    }
                }
            }
            (Waiter::Property { .. }, Ok(Response::Done)) => {
                self.outbox.response(msg_id, Status::Ok)
            }
            (_, Err(StoreError::Invalid(_))) => {
                self.outbox.response(msg_id, Status::IllegalCommandBody)
            }
            (_, _) => self.outbox.response(msg_id, Status::ServerError),
        }
        self.apply_outbox(key, id);
    }

    fn logged_in(&mut self, key: usize, id: ConnId, msg_id: u16, device: u64) {
        let conn = &mut self.conns[key];
        let session = DeviceSession::new(device);
        let timeout = session.heartbeat_timeout(&self.limits.session);
        advance(&mut conn.stage, Transition::Authenticated(session));
        self.guards.admission().leave_unauthenticated();
        conn.deadline = self.timers.deadline_after(self.now, timeout);
        self.stats.logins_ok.fetch_add(1, Ordering::Relaxed);
        self.metrics.login(LoginResult::Ok);
        self.metrics.conn_moved(
            transport(conn.port),
            Some(ConnState::PreAuth),
            Some(ConnState::Authenticated),
        );
        tracing::debug!(shard = self.index, peer = %conn.peer, device, "device logged in");
        let addr = conn.peer.to_string();
        self.outbox.clear();
        self.outbox.response(msg_id, Status::Ok);
        self.outbox
            .store
            .push(StoreCall::Presence(Presence::Online { addr }));
        self.apply_outbox(key, id);
        // Frames the device sent before the store answered (BlynkLib sends its info at once).
        if self.conns.get(key).is_some_and(|c| !c.inbuf.is_empty()) {
            self.on_bytes(key, &[]);
        }
    }

    fn on_timer(&mut self, id: ConnId) {
        let key = id.slot as usize;
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
        if !conn.stage.is_logged_in() {
            self.guards.admission().leave_unauthenticated();
        }
        let from = if device.is_some() {
            ConnState::Authenticated
        } else {
            ConnState::PreAuth
        };
        self.metrics
            .conn_moved(transport(conn.port), Some(from), Some(ConnState::Closing));
        if device.is_none() {
            self.rejected_before_login(peer, &reason);
        }
        let conn = &mut self.conns[key];
        advance(&mut conn.stage, Transition::Close(reason.clone()));
        if let Some(tls) = conn.tls.as_mut()
            && !matches!(reason, CloseReason::Tls(_))
        {
            self.ciphertext.clear();
            tls.close_notify(&mut self.ciphertext);
            // A failure shows in the flush below.
            let _ = conn.send_bytes(&self.ciphertext);
        }
        match &reason {
            CloseReason::PeerClosed | CloseReason::Shutdown => {
                tracing::debug!(%peer, ?device, %reason, "connection closed")
            }
            _ => tracing::info!(%peer, ?device, %reason, "closing connection"),
        }
        if let Some(device) = device {
            self.submit(id, Some(device), StoreCall::Presence(Presence::Offline));
        }
        let conn = &mut self.conns[key];
        let peer_gone = matches!(reason, CloseReason::PeerClosed | CloseReason::Io(_));
        if peer_gone || conn.flush() != Flush::Blocked {
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
fn throttled(peer: std::net::SocketAddr, gate: LoginGate, what: &'static str) -> CloseReason {
    let (retry_in, failures) = match gate {
        LoginGate::Open => (Duration::ZERO, 0),
        LoginGate::BackingOff { retry_in, failures } => (retry_in, failures),
        LoginGate::Blocked {
            remaining,
            failures,
        } => (remaining, failures),
    };
    let retry_in_ms = retry_in.as_millis() as u64;
    security::record(
        "reactor",
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

fn advance(stage: &mut Stage, transition: Transition) {
    let current = std::mem::replace(stage, Stage::Sniff);
    *stage = current.upgrade(transition);
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
