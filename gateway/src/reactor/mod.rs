//! The sharded reactor: one thread per shard, each with its own `Poll`, listeners, connection
//! slab, timer wheel and store link (see `shard.rs`). It owns the loop, accepting, socket IO,
//! TLS, buffers and timers, and knows no protocol's business: what a connection's bytes mean is
//! decided by `crate::conn::select` and the sessions in `crate::protocols`. This module starts the
//! shards, the event bus between them and the worker pools, and hands the main thread what it
//! needs to stop them: a waker per shard and a shared shutdown flag.

pub mod accept;
pub mod commands;
pub mod connection;
mod dispatch;
pub mod drain;
pub mod listener;
pub mod live_limits;
pub mod shard;
pub mod store;
pub mod timer;
pub mod workers;

use crate::bus::Hub;
use crate::guard::admission::Guards;
use crate::metrics::shard::ShardMetrics;
use crate::protocols::ProtocolLimits;
use crate::protocols::http::rest::RestEnv;
use commands::ShardCommands;
use live_limits::LiveLimits;
use mio::{Poll, Waker};
use portcullis_store_client::StoreEndpoint;
use rustls::ServerConfig;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Limits a shard enforces, from the configuration (live-reloadable: see `live_limits.rs`).
#[derive(Debug, Clone)]
pub struct ShardLimits {
    /// What the protocol sessions enforce.
    pub protocol: ProtocolLimits,
    /// TLS handshake plus login must finish within this.
    pub login_timeout: Duration,
    /// This shard's share of `limits.output_budget_mib`, in bytes.
    pub output_budget_bytes: usize,
    /// SO_SNDBUF of every accepted connection (the kernel doubles it).
    pub socket_send_buffer_bytes: usize,
    /// `limits.store_queue_max_writes`: pin writes not yet acknowledged, at most.
    pub store_queue_max_writes: usize,
}

/// Everything needed to start the shards.
pub struct ReactorSetup {
    pub tls_listeners: Vec<std::net::TcpListener>,
    pub plain_listeners: Vec<std::net::TcpListener>,
    pub tls_config: Arc<ServerConfig>,
    pub store: StoreEndpoint,
    /// This gateway's node name (`server.node_name`): in the links' hello and the session tags.
    pub node: portcullis_protocol::store::NodeName,
    pub limits: ShardLimits,
    /// Connection admission and login throttling, shared by every shard.
    pub guards: Arc<Guards>,
    /// Threads checking app passwords (`app.password_workers`).
    pub password_workers: usize,
    /// What the REST API's calls need, shared by every shard.
    pub rest: Arc<RestEnv>,
}

/// Running shards.
pub struct Reactor {
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    pub shutdown: Arc<AtomicBool>,
    /// Drain period of the shutdown, in milliseconds, read by the shards when it starts.
    drain_ms: Arc<AtomicU64>,
    /// Each shard's counters, read by the metrics port and at exit.
    pub metrics: Vec<Arc<ShardMetrics>>,
    pub live_limits: Arc<LiveLimits>,
    /// Commands for every shard from other threads (the revocation feed).
    pub commands: ShardCommands,
}

impl Reactor {
    pub fn start(setup: ReactorSetup) -> io::Result<Self> {
        let shutdown = Arc::new(AtomicBool::new(false));
        // Every shard's waker exists before any shard starts: the bus, the workers and the
        // command channels need all of them.
        let mut polls = Vec::new();
        let mut wakers = Vec::new();
        for _ in 0..setup.tls_listeners.len() {
            let poll = Poll::new()?;
            wakers.push(Arc::new(shard::new_waker(&poll)?));
            polls.push(poll);
        }
        let (commands, command_inboxes) = ShardCommands::new(&wakers);
        let mut reactor = Reactor {
            wakers,
            threads: Vec::new(),
            shutdown: shutdown.clone(),
            drain_ms: Arc::new(AtomicU64::new(0)),
            metrics: Vec::new(),
            live_limits: Arc::new(LiveLimits::new(setup.limits.clone())),
            commands,
        };
        let (hub, bus_inboxes) = Hub::new(&reactor.wakers);
        let (workers, worker_inboxes) = workers::Workers::start(
            setup.password_workers,
            setup.store.clone(),
            &setup.node,
            &reactor.wakers,
        )?;
        for (
            index,
            (((((tls_listener, plain_listener), poll), bus_inbox), worker_inbox), command_inbox),
        ) in setup
            .tls_listeners
            .into_iter()
            .zip(setup.plain_listeners)
            .zip(polls)
            .zip(bus_inboxes)
            .zip(worker_inboxes)
            .zip(command_inboxes)
            .enumerate()
        {
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
                rest: setup.rest.clone(),
                metrics,
                live_limits: reactor.live_limits.clone(),
                shutdown: shutdown.clone(),
                drain_ms: reactor.drain_ms.clone(),
                hub: hub.clone(),
                bus_inbox,
                workers: workers.clone(),
                worker_inbox,
                command_inbox,
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
}
