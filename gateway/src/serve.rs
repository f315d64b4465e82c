//! `portcullis serve`: brings the pieces up in order — data directory, TLS certificate, store
//! (child or external), presence reset, listeners, shards — and takes them down in reverse on
//! SIGINT/SIGTERM: listeners close, connections close, pending writes are flushed to the store, and
//! the child store exits.

use crate::config::Config;
use crate::reactor::admission::{Admission, AdmissionLimits, Guards};
use crate::reactor::{Reactor, ReactorSetup, ShardLimits, listener};
use crate::session::SessionLimits;
use crate::session::throttle::{LoginThrottle, ThrottleLimits};
use crate::store_client::StoreClient;
use crate::supervisor::{StoreSupervisor, locate_store_binary};
use crate::tls;
use anyhow::Context;
use portcullis_protocol::store::{ClientRole, Request};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long start-up waits for the store to answer.
const STORE_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn limits_from(config: &Config) -> ShardLimits {
    let l = &config.limits;
    ShardLimits {
        session: SessionLimits {
            default_heartbeat_secs: l.default_heartbeat_secs,
            heartbeat_factor: l.heartbeat_factor,
            default_buff_in: l.default_buff_in,
        },
        login_timeout: Duration::from_millis(l.login_timeout_ms),
        max_body_before_login: l.max_body_before_login as usize,
        max_body: l.max_body as usize,
        preauth_buffer_bytes: l.preauth_buffer_bytes as usize,
        outbound_queue_bytes: l.outbound_queue_bytes as usize,
        socket_send_buffer_bytes: l.socket_send_buffer_bytes as usize,
        store_queue_max_writes: l.store_queue_max_writes as usize,
    }
}

/// The shared admission and login-throttle tables, sized from `[admission]`.
pub fn guards_from(config: &Config) -> Guards {
    let a = &config.admission;
    let admission = Admission::new(
        AdmissionLimits {
            max_connections_per_ip: a.max_connections_per_ip,
            accept_rate: a.accept_rate,
            accept_burst: a.accept_burst,
            accept_rate_per_ip: a.accept_rate_per_ip,
            accept_burst_per_ip: a.accept_burst_per_ip,
            max_tracked_ips: a.max_tracked_ips as usize,
            max_unauthenticated: a.max_unauthenticated,
        },
        Instant::now(),
    );
    let throttle = LoginThrottle::new(ThrottleLimits {
        free_failures: a.login_free_failures,
        backoff_initial: Duration::from_millis(a.login_backoff_initial_ms),
        backoff_max: Duration::from_millis(a.login_backoff_max_ms),
        block_after_failures: a.login_block_after_failures,
        block_for: Duration::from_secs(a.login_block_secs),
        forget_after: Duration::from_secs(a.login_failure_forget_secs),
        max_tracked_ips: a.max_tracked_ips as usize,
    });
    Guards::new(admission, throttle)
}

/// Runs the gateway until SIGINT or SIGTERM.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let data_dir = &config.data_dir;
    create_private_dir(data_dir)?;
    raise_descriptor_limit();

    let (cert, key) = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let paths = tls::ensure_dev_certificate(&config.tls_dir(), &config.tls.names)
                .context("generating the development certificate")?;
            tracing::info!(ca = %paths.ca.display(), "no certificate configured; serving the generated one (clients trust the CA file)");
            (paths.cert, paths.key)
        }
    };
    let tls_config = tls::load_server_config(&cert, &key)?;

    let socket = config.store_socket_path();
    let supervisor = if config.store_is_child() {
        let binary = locate_store_binary(config.store.binary.as_deref())?;
        Some(StoreSupervisor::start(
            &binary,
            &config.data_dir,
            &socket,
            config.store_child_args(),
        )?)
    } else {
        None
    };
    // No session survives a gateway restart, so no device is online yet.
    StoreClient::connect(&socket, ClientRole::GatewayControl, STORE_STARTUP_TIMEOUT)
        .and_then(|mut client| client.call(Request::ResetPresence))
        .context("resetting device presence in the store")?;

    let shards = config.effective_shards();
    let backlog = config.server.listen_backlog as i32;
    let bind = config.server.bind_address;
    let tls_ports = listener::bind_port(
        "TLS",
        bind,
        config.server.tls_port,
        config.server.tls_fallback_port,
        shards,
        backlog,
    )?;
    let plain_ports = listener::bind_port(
        "plain",
        bind,
        config.server.plain_port,
        config.server.plain_fallback_port,
        shards,
        backlog,
    )?;
    listener::write_ports_file(data_dir, tls_ports.port, plain_ports.port)?;
    tracing::info!(tls_port = tls_ports.port, plain_port = plain_ports.port, shards, %bind, "listening");

    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let reactor = Reactor::start(ReactorSetup {
        tls_listeners: tls_ports.listeners,
        plain_listeners: plain_ports.listeners,
        tls_config,
        store_socket: socket,
        limits: limits_from(&config),
        guards: Arc::new(guards_from(&config)),
    })?;

    if let Some(signal) = signals.forever().next() {
        tracing::info!(
            signal,
            "shutting down: closing listeners and connections, flushing writes"
        );
    }
    reactor.request_shutdown();
    let logins = reactor.total(|s| &s.logins_ok);
    let pins = reactor.total(|s| &s.pins_stored);
    let dropped = reactor.total(|s| &s.telemetry_dropped);
    let refused = reactor.total(|s| &s.connections_refused);
    let throttled = reactor.total(|s| &s.logins_throttled);
    let joined = reactor.join();
    if let Some(supervisor) = supervisor {
        supervisor.stop();
    }
    tracing::info!(
        logins,
        pins_stored = pins,
        telemetry_dropped = dropped,
        connections_refused = refused,
        logins_throttled = throttled,
        "stopped"
    );
    joined.context("a shard failed")
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))
}

/// Each connection is a file descriptor: raise the soft limit to the hard one and say what it is,
/// so an operator sees the ceiling before the fleet hits it.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            };
            tracing::info!(
                limit,
                "file descriptor limit (one per connection; see tuning/README.md to raise it)"
            );
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the file descriptor limit"),
    }
}
