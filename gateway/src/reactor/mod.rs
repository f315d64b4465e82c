//! The sharded reactor: one thread per shard, each with its own `Poll`, listeners, connection slab,
//! timer wheel and store link (see `shard.rs`). This module starts the shards and hands the main
//! thread what it needs to stop them: a waker and a shared shutdown flag.

pub mod admission;
pub mod conn;
pub mod drain;
pub mod events;
pub mod hub;
pub mod listener;
pub mod live;
pub mod log_budget;
pub mod password_pool;
pub mod shard;
pub mod timer;
pub mod tls_session;

use crate::metrics::shard::ShardMetrics;
use crate::session::SessionLimits;
use live::LiveLimits;
use mio::{Poll, Waker};
use rustls::ServerConfig;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Limits a shard enforces, from the configuration.
#[derive(Debug, Clone)]
pub struct ShardLimits {
    pub session: SessionLimits,
    /// TLS handshake plus login must finish within this.
    pub login_timeout: Duration,
    pub max_body_before_login: usize,
    pub max_body: usize,
    /// Bytes buffered from a peer that has not logged in yet.
    pub preauth_buffer_bytes: usize,
    pub outbound_queue_bytes: usize,
    /// This shard's share of `limits.output_budget_mib`, in bytes.
    pub output_budget_bytes: usize,
    /// SO_SNDBUF of every accepted connection (the kernel doubles it).
    pub socket_send_buffer_bytes: usize,
    pub store_queue_max_writes: usize,
    /// Devices one app connection may subscribe to (`app.max_subscriptions`).
    pub app_max_subscriptions: usize,
    /// A logged-in app silent for this long is closed (`app.idle_timeout_secs`).
    pub app_idle_timeout: Duration,
    /// An app's outbound bound (`app.outbound_queue_bytes`).
    pub app_outbound_queue_bytes: usize,
    /// SO_SNDBUF of an app connection (`app.socket_send_buffer_bytes`).
    pub app_socket_send_buffer_bytes: usize,
}

/// Counters a shard updates and the main thread (and later the metrics endpoint) reads.
#[derive(Debug, Default)]
pub struct ShardStats {
    pub connections_open: AtomicU64,
    pub logins_ok: AtomicU64,
    pub logins_refused: AtomicU64,
    pub tls_refused: AtomicU64,
    pub pins_stored: AtomicU64,
    pub telemetry_dropped: AtomicU64,
    /// Frames from logged-in devices dropped for being over the connection's message quota.
    pub frames_over_quota: AtomicU64,
    pub store_calls_refused: AtomicU64,
    /// New connections closed at accept by the admission limits (per-source cap, accept rates).
    pub connections_refused: AtomicU64,
    /// Logins refused without checking because their source is backing off or blocked.
    pub logins_throttled: AtomicU64,
    /// Times accepting paused because the process ran out of file descriptors (or memory).
    pub accept_pauses: AtomicU64,
    /// App logins that passed the password check.
    pub app_logins_ok: AtomicU64,
    /// App logins refused: unknown email, wrong password, or throttled.
    pub app_logins_refused: AtomicU64,
    /// Events (pin writes, presence) written to subscribed apps.
    pub app_events_sent: AtomicU64,
    /// Events dropped because the app's shard had fallen too far behind.
    pub app_events_dropped: AtomicU64,
}

/// Everything needed to start the shards.
pub struct ReactorSetup {
    pub tls_listeners: Vec<std::net::TcpListener>,
    pub plain_listeners: Vec<std::net::TcpListener>,
    pub tls_config: Arc<ServerConfig>,
    pub store: portcullis_store_client::StoreEndpoint,
    /// This gateway's node name (`server.node_name`): in the links' hello and the session tags.
    pub node: portcullis_protocol::store::NodeName,
    pub limits: ShardLimits,
    /// Connection admission and login throttling, shared by every shard.
    pub guards: Arc<admission::Guards>,
    /// Threads checking app passwords (`app.password_workers`).
    pub password_workers: usize,
    pub verify_password: password_pool::Verifier,
}

/// Running shards.
pub struct Reactor {
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    pub shutdown: Arc<AtomicBool>,
    /// Drain period of the shutdown, in milliseconds, read by the shards when it starts.
    drain_ms: Arc<AtomicU64>,
    pub stats: Vec<Arc<ShardStats>>,
    pub metrics: Vec<Arc<ShardMetrics>>,
    pub live_limits: Arc<LiveLimits>,
}

impl Reactor {
    pub fn start(setup: ReactorSetup) -> io::Result<Self> {
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut reactor = Reactor {
            wakers: Vec::new(),
            threads: Vec::new(),
            shutdown: shutdown.clone(),
            drain_ms: Arc::new(AtomicU64::new(0)),
            stats: Vec::new(),
            metrics: Vec::new(),
            live_limits: Arc::new(LiveLimits::new(setup.limits.clone())),
        };
        // Every shard's waker exists before any shard starts: the hub needs all of them.
        let mut polls = Vec::new();
        for _ in 0..setup.tls_listeners.len() {
            let poll = Poll::new()?;
            reactor.wakers.push(Arc::new(shard::new_waker(&poll)?));
            polls.push(poll);
        }
        let (hub, inboxes) = hub::Hub::new(&reactor.wakers);
        let passwords = Arc::new(password_pool::PasswordPool::start(
            setup.password_workers,
            hub.clone(),
            setup.verify_password,
        )?);
        for (index, (((tls_listener, plain_listener), poll), inbox)) in setup
            .tls_listeners
            .into_iter()
            .zip(setup.plain_listeners)
            .zip(polls)
            .zip(inboxes)
            .enumerate()
        {
            let stats = Arc::new(ShardStats::default());
            reactor.stats.push(stats.clone());
            let metrics = Arc::new(ShardMetrics::new(index as u16));
            reactor.metrics.push(metrics.clone());
            let shard_setup = shard::ShardSetup {
                index: index as u16,
                poll,
                tls_listener,
                plain_listener,
                tls_config: setup.tls_config.clone(),
                store: setup.store.clone(),
                node: setup.node.clone(),
                limits: setup.limits.clone(),
                guards: setup.guards.clone(),
                stats,
                metrics,
                live_limits: reactor.live_limits.clone(),
                shutdown: shutdown.clone(),
                drain_ms: reactor.drain_ms.clone(),
                hub: hub.clone(),
                inbox,
                passwords: passwords.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("shard-{index}"))
                .spawn(move || {
                    let shard = shard::Shard::new(shard_setup)?;
                    shard.run()
                })?;
            reactor.threads.push(thread);
        }
        Ok(reactor)
    }

    /// Asks every shard to stop, disconnecting its connections over `drain`; `join` waits.
    pub fn request_shutdown(&self, drain: Duration) {
        self.drain_ms
            .store(drain.as_millis() as u64, Ordering::Release);
        self.shutdown.store(true, Ordering::Release);
        for waker in &self.wakers {
            if let Err(e) = waker.wake() {
                tracing::warn!(error = %e, "cannot wake a shard");
            }
        }
    }

    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        for thread in self.threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("a shard thread panicked")),
            }
        }
        result
    }

    /// Sum of one counter over all shards.
    pub fn total(&self, pick: impl Fn(&ShardStats) -> &AtomicU64) -> u64 {
        self.stats
            .iter()
            .map(|s| pick(s).load(Ordering::Relaxed))
            .sum()
    }
}
