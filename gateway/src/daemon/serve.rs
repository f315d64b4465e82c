//! `portcullis serve`: brings the pieces up in order — data directory, TLS certificate (and its
//! watcher), metrics port, store (child or external), this node's presence reset and the
//! revocation feed's starting point, listeners, shards, the revocation poller — then tells
//! systemd it is ready. SIGHUP reloads the certificate and the live parts of the configuration.
//! SIGINT/SIGTERM take it down in reverse: the revocation poller stops, listeners close,
//! connections are disconnected over the drain period, pending writes are flushed to the store,
//! the child store exits, and the process exits 0.

use super::config_reload;
use super::logging::LogControl;
use super::revocation_poller::{self, FeedState};
use super::store_supervisor::{StoreSupervisor, locate_store_binary};
use super::systemd;
use crate::config::limits::{guards, shard_limits};
use crate::config::{Config, LogFormat};
use crate::metrics::http::{self, BearerToken};
use crate::metrics::shard::{LoginResult, Rejection};
use crate::metrics::store::StoreStatsSource;
use crate::metrics::{GatewayMetrics, GlobalMetrics};
use crate::protocols::http::rest::RestEnv;
use crate::reactor::{Reactor, ReactorSetup, listener};
use crate::tls;
use crate::tls::cert_reload::{CertReloader, Trigger};
use anyhow::Context;
use arc_swap::ArcSwapOption;
use portcullis_operations::accounts::Links;
use portcullis_operations::users;
use portcullis_protocol::store::{ClientHello, ClientRole, Request, TrafficLink};
use portcullis_store_client::{StoreClient, StoreEndpoint};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long start-up waits for the store to answer.
const STORE_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Command-line values that override the configuration file; applied again to the re-read file
/// on SIGHUP so a reload never undoes them.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub tls_port: Option<u16>,
    pub plain_port: Option<u16>,
    pub metrics_port: Option<u16>,
    pub shards: Option<u16>,
    pub log_format: Option<LogFormat>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(port) = self.tls_port {
            config.server.tls_port = port;
            config.server.tls_fallback_port = port;
        }
        if let Some(port) = self.plain_port {
            config.server.plain_port = port;
            config.server.plain_fallback_port = port;
        }
        if let Some(port) = self.metrics_port {
            config.metrics.port = port;
        }
        if let Some(shards) = self.shards {
            config.server.shards = shards;
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
    }
}

/// What `serve` needs besides the configuration: where to re-read it and how to change logging.
pub struct ServeContext {
    pub config_path: Option<PathBuf>,
    pub overrides: Overrides,
    pub log: LogControl,
}

/// What a SIGHUP acts on.
struct Reloadables<'a> {
    context: &'a ServeContext,
    reactor: &'a Reactor,
    certificate: &'a CertReloader,
    bearer_token: &'a BearerToken,
    global: &'a GlobalMetrics,
}

/// Runs the gateway until SIGINT or SIGTERM; SIGHUP reloads the certificate and configuration.
pub fn serve(config: Config, context: ServeContext) -> anyhow::Result<()> {
    let mut config = config;
    let data_dir = config.data_dir.clone();
    create_private_dir(&data_dir)?;
    raise_descriptor_limit();
    let global = Arc::new(GlobalMetrics::default());

    let (cert, key) = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let paths = tls::ensure_dev_certificate(&config.tls_dir(), &config.tls.names)
                .context("generating the development certificate")?;
            tracing::info!(ca = %paths.ca.display(), "no certificate configured; serving the generated one (clients trust the CA file)");
            (paths.cert, paths.key)
        }
    };
    let certificate = Arc::new(CertReloader::new(&cert, &key, global.clone())?);
    let tls_config = certificate.server_config()?;
    if config.tls.watch_interval_ms > 0 {
        certificate
            .clone()
            .spawn_watcher(Duration::from_millis(config.tls.watch_interval_ms))
            .context("starting the certificate watcher")?;
    }
    // Bound before the store starts, so a taken metrics port fails start-up at once.
    let metrics_listener = if config.metrics.enabled {
        Some(http::bind(SocketAddr::new(
            config.metrics.bind_address,
            config.metrics.port,
        ))?)
    } else {
        None
    };

    let socket = config.store_socket_path();
    let store =
        StoreEndpoint::open(&config.store_endpoint_spec()).context("setting up the store link")?;
    let node = config.server.node_name.clone();
    let supervisor = if config.store_is_child() {
        let binary = locate_store_binary(config.store.binary.as_deref())?;
        Some(StoreSupervisor::start(
            &binary,
            &config.data_dir,
            &socket,
            config.store_child_args(),
            &node,
        )?)
    } else {
        None
    };
    // No session of this node survives its restart, so none of its devices is online yet; the
    // sessions of other gateways sharing the store are theirs and stay.
    tracing::info!(store = %store, %node, "store link");
    let control = ClientHello::new(
        node.clone(),
        ClientRole::DeviceTraffic(TrafficLink::Control),
    );
    let mut control_client = StoreClient::connect_to(&store, control, STORE_STARTUP_TIMEOUT)
        .context("connecting to the store")?;
    control_client
        .call(Request::ResetPresence { node: node.clone() })
        .context("resetting this node's device presence in the store")?;
    first_start(&mut control_client, &config.accounts.first_admin_email)?;
    // The revocation feed starts from the store's newest entry, taken before any session exists
    // (see `revocation_poller.rs`). A store that cannot answer it yet does not stop the start.
    let feed = match revocation_poller::baseline(&mut control_client) {
        Ok(feed) => feed,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the revocation feed's starting point at start-up; the poller takes it once the store answers");
            FeedState::new()
        }
    };
    drop(control_client);
    let mailer = Arc::new(
        portcullis_mail::Mailer::start(&config.mail, &config.data_dir)
            .context("starting the mailer (see [mail] in the configuration)")?,
    );
    let guards = Arc::new(guards(&config));

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

    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;
    let public_url = config.public_url(tls_ports.port);
    let reactor = Reactor::start(ReactorSetup {
        tls_listeners: tls_ports.listeners,
        plain_listeners: plain_ports.listeners,
        tls_config,
        store: store.clone(),
        node: node.clone(),
        limits: shard_limits(&config),
        guards: guards.clone(),
        password_workers: usize::from(config.app.password_workers),
        rest: Arc::new(RestEnv {
            guards,
            mail: mailer.clone(),
            links: Links { public_url },
            signup: config.accounts.signup,
            session_ttl: Duration::from_secs(config.accounts.session_ttl_secs),
            on_plain_port: config.accounts.rest_on_plain_port,
        }),
    })?;
    let poller = revocation_poller::spawn(
        store.clone(),
        node.clone(),
        feed,
        reactor.commands.clone(),
        global.clone(),
    )
    .context("starting the revocation poller")?;
    let bearer_token: BearerToken = Arc::new(ArcSwapOption::new(
        config.metrics.bearer_token.clone().map(Arc::new),
    ));
    let metrics_port = match metrics_listener {
        Some(listener) => {
            let port = listener.local_addr.port();
            let metrics = GatewayMetrics {
                global: global.clone(),
                shards: reactor.metrics.clone(),
                store: Some(Arc::new(StoreStatsSource::new(store.clone(), node.clone()))),
            };
            listener
                .serve(metrics, bearer_token.clone())
                .context("starting the metrics server")?;
            Some(port)
        }
        None => None,
    };
    listener::write_ports_file(&data_dir, tls_ports.port, plain_ports.port, metrics_port)?;
    global.listeners_bound.store(true, Ordering::Relaxed);
    tracing::info!(tls_port = tls_ports.port, plain_port = plain_ports.port, ?metrics_port, shards, %bind, "listening");
    systemd::ready("listening");
    systemd::spawn_watchdog(reactor.metrics.clone()).context("starting the watchdog")?;

    let reloadables = Reloadables {
        context: &context,
        reactor: &reactor,
        certificate: &certificate,
        bearer_token: &bearer_token,
        global: &global,
    };
    for signal in signals.forever() {
        if signal == SIGHUP {
            reload(&mut config, &reloadables);
            continue;
        }
        tracing::info!(
            signal,
            drain_ms = config.shutdown.drain_ms,
            "shutting down: listeners closed, disconnecting devices over the drain period, then flushing writes"
        );
        break;
    }
    global.draining.store(true, Ordering::Relaxed);
    systemd::stopping("draining connections");
    // Draining ends every session anyway; the feed stops before the store does.
    poller.stop();
    reactor.request_shutdown(Duration::from_millis(config.shutdown.drain_ms));
    // Read after the shards stopped, so the shutdown flush is counted too.
    let counters = GatewayMetrics {
        global: global.clone(),
        shards: reactor.metrics.clone(),
        store: None,
    };
    let joined = reactor.join();
    // Mail queued before the stop still goes out, within a grace period.
    match Arc::try_unwrap(mailer) {
        Ok(mailer) => {
            let outcome = mailer.shutdown(portcullis_mail::SHUTDOWN_GRACE);
            tracing::info!(?outcome, "mailer stopped");
        }
        Err(_) => tracing::warn!("the mailer is still in use by a worker; queued mail may be lost"),
    }
    if let Some(supervisor) = supervisor {
        supervisor.stop();
    }
    tracing::info!(
        logins = counters.sum(|m| m.logins(LoginResult::Ok)),
        pins_stored = counters.total(|m| &m.pins_stored),
        telemetry_dropped = counters.total(|m| &m.telemetry_dropped),
        connections_refused = counters.sum(|m| m.rejected(Rejection::AdmissionLimit)),
        logins_throttled = counters.sum(|m| m.logins(LoginResult::Throttled)),
        frames_over_quota = counters.total(|m| &m.frames_over_quota),
        "stopped"
    );
    joined.context("a shard failed")
}

/// SIGHUP: re-read and validate the configuration, apply what can change live, name what needs
/// a restart, and reload the certificate.
fn reload(running: &mut Config, r: &Reloadables<'_>) {
    systemd::reloading();
    if let Err(e) = r.context.log.reopen_security_log() {
        tracing::error!(error = %e, "cannot reopen the security log; events keep going to the old file");
    }
    let loaded = Config::load(r.context.config_path.as_deref()).and_then(|mut new| {
        r.context.overrides.apply(&mut new);
        new.validate(r.context.config_path.as_deref())?;
        Ok(new)
    });
    match loaded {
        Err(e) => {
            r.global
                .config_reloads_refused
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
            let _ = r.certificate.reload(Trigger::Signal);
        }
        Ok(new) => {
            let diff = config_reload::diff(running, &new);
            for key in &diff.need_restart {
                tracing::warn!(key = %key, "changed in the configuration file; takes effect after a restart");
            }
            if new.log.level != running.log.level
                && let Err(e) = r.context.log.set_level(&new.log.level)
            {
                tracing::error!(error = %e, "cannot apply log.level");
            }
            // Publish the limits of what the running configuration becomes (never a key that
            // needs a restart) whenever any live key changed: the shards copy them once.
            let applied = config_reload::apply_live(running, &new);
            if applied != *running {
                r.reactor.live_limits.publish(shard_limits(&applied));
            }
            match (&new.tls.cert, &new.tls.key) {
                (Some(cert), Some(key))
                    if new.tls.cert != running.tls.cert || new.tls.key != running.tls.key =>
                {
                    let _ = r.certificate.set_paths(cert, key);
                }
                (None, None) if running.tls.cert.is_some() => {
                    tracing::warn!(
                        "tls.cert/tls.key removed; the served certificate stays until a restart"
                    );
                    let _ = r.certificate.reload(Trigger::Signal);
                }
                _ => {
                    let _ = r.certificate.reload(Trigger::Signal);
                }
            }
            r.bearer_token
                .store(new.metrics.bearer_token.clone().map(Arc::new));
            *running = applied;
            r.global.config_reloads_ok.fetch_add(1, Ordering::Relaxed);
            tracing::info!(applied = ?diff.live, need_restart = ?diff.need_restart, "configuration reloaded");
        }
    }
    systemd::ready("listening (reloaded)");
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

/// On an empty data directory: the root organization's first Admin, whose one-time password is
/// printed here once (on standard output, not in the log) and written nowhere.
fn first_start(client: &mut StoreClient, email: &str) -> anyhow::Result<()> {
    match users::bootstrap(client, email).context("creating the first Admin account")? {
        Some(password) => {
            tracing::info!(%email, "first start: created the Admin account of the root organization; its password is printed once on standard output");
            println!(
                "\nFirst start: the Admin account of the root organization is {email}\n\
                 Its password, shown only this once, is: {}\n\
                 Log in with it and change it; it is stored only as a hash.\n",
                password.expose()
            );
        }
        None => tracing::debug!("accounts exist; no first Admin created"),
    }
    Ok(())
}
