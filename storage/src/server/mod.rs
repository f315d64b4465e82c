//! The store server: binds the Unix socket (`socket`) and, only when configured for remote
//! gateways, a mutual-TLS TCP listener (`remote`); accepts links and serves each on its own
//! threads (`conn`, the same code for both transports; there are few links: one per gateway
//! shard, a control link, the metrics scraper and the admin CLI), checks every request against
//! what its link's role may send (`permissions`), runs the group committer (`commit`) that
//! performs every write, runs the periodic WAL syncer, and shuts down gracefully.
//!
//! Durability contract (also in `portcullis-store --help` and `docs/store.md`):
//! - Sync class (device creation, presence, info, properties): the reply is sent only after the
//!   write's group is in the WAL and the WAL is fsynced. Survives power loss.
//! - Buffered class (`WritePins`: latest values and history): the reply is sent once the group is
//!   in the WAL (handed to the OS), so a crash of the store process loses nothing; the syncer
//!   fsyncs the WAL every `sync_interval` (100 ms by default), so a machine crash or power loss
//!   can lose at most the pin writes of the last interval plus one fsync's duration. A group that
//!   also holds a sync-class write is fsynced before any of its replies, telemetry included.
//! - A write is visible to readers once its group is applied, which may be just before the group's
//!   fsync completes; it is acknowledged only after.
//!
//! Shutdown (the flag is set by SIGINT/SIGTERM or stdin EOF in `main.rs`): the socket file is
//! removed and the listener closed, every link answers what it has already received and closes,
//! the committer commits what is queued and stops, the syncer stops, and a last WAL sync runs
//! before [`Server::run`] returns.

mod commit;
mod conn;
mod permissions;
mod remote;
#[cfg(test)]
mod remote_tests;
mod socket;
#[cfg(test)]
mod tests;

pub use commit::MAX_COMMIT_WINDOW;
pub use conn::MAX_OWED_REPLIES;
pub use remote::{HANDSHAKE_TIMEOUT, MAX_PENDING_HANDSHAKES, RemoteConfig, RemoteError};

use crate::engine::Engine;
use crate::schema::Store;
use commit::Committer;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use remote::RemoteListener;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Default period of the WAL syncer.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Default commit window: none. A group is whatever queued while the previous group committed,
/// which already batches as much as the disk's sync time allows without adding latency.
pub const DEFAULT_COMMIT_WINDOW: Duration = Duration::ZERO;
/// How often the accept loop looks at the shutdown flag.
const ACCEPT_TICK: u16 = 100;

/// Why the server could not start or stop cleanly.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Operator: another store already answers on the socket path.
    #[error("another store is already listening on {0}")]
    AlreadyServing(PathBuf),
    /// Operator: the socket path holds something that is not a socket; we will not delete it.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Store: a socket or filesystem call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Store: the WAL syncer or committer thread could not be started (out of resources).
    #[error("cannot start a store thread: {0}")]
    Spawn(#[source] io::Error),
    /// Operator: the remote-gateway listener could not start (certificates, address).
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// Store: the last WAL sync before exit failed; recent buffered writes may not be durable.
    #[error("final WAL sync failed: {0}")]
    FinalSync(String),
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Period of the WAL syncer (the durability window of buffered writes).
    pub sync_interval: Duration,
    /// How long the committer waits after the first write of a group for more to join it
    /// (at most [`MAX_COMMIT_WINDOW`]).
    pub commit_window: Duration,
    /// The only uid allowed to connect: by default the store's own effective uid.
    pub allowed_uid: u32,
    /// A link must send its hello within this time.
    pub hello_timeout: Duration,
    /// A remote (TCP) connection must complete its TLS handshake within this time.
    pub tls_handshake_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            sync_interval: DEFAULT_SYNC_INTERVAL,
            commit_window: DEFAULT_COMMIT_WINDOW,
            allowed_uid: nix::unistd::geteuid().as_raw(),
            hello_timeout: Duration::from_secs(5),
            tls_handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// A bound, not yet serving, store socket (and remote listener, if configured).
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    socket: socket::BoundSocket,
    remote: Option<RemoteListener>,
}

/// A connection accepted on one of the listeners.
enum Accepted {
    Local(UnixStream),
    Remote(TcpStream, SocketAddr),
}

impl Server {
    /// Binds `path` (mode 0600), clearing a stale socket file but refusing to start over a live
    /// store or over a file that is not a socket.
    pub fn bind(path: &Path) -> Result<Self, ServerError> {
        let (listener, socket) = socket::bind(path)?;
        listener
            .set_nonblocking(true)
            .map_err(|source| ServerError::Io {
                action: "configure",
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            listener,
            socket,
            remote: None,
        })
    }

    /// Also listens for remote gateways over mutual TLS on `config.listen`. Without this call the
    /// store has no TCP socket at all. The certificates are loaded and checked first; the
    /// returned address carries the actual port (for port 0).
    pub fn listen_remote(&mut self, config: &RemoteConfig) -> Result<SocketAddr, ServerError> {
        let remote = RemoteListener::bind(config)?;
        let addr = remote.addr;
        self.remote = Some(remote);
        Ok(addr)
    }

    /// The remote listener's address, when there is one.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote.as_ref().map(|r| r.addr)
    }

    pub fn path(&self) -> &Path {
        &self.socket.path
    }

    /// Serves until `shutdown` is set, then shuts down gracefully (see the module docs).
    pub fn run<E: Engine>(
        self,
        store: Arc<Store<E>>,
        config: ServerConfig,
        shutdown: Arc<AtomicBool>,
    ) -> Result<(), ServerError> {
        let config = Arc::new(config);
        // Without the syncer buffered writes would never be fsynced: refuse to serve.
        let syncer = match spawn_syncer(
            Arc::clone(&store),
            config.sync_interval,
            Arc::clone(&shutdown),
        ) {
            Ok(handle) => handle,
            Err(e) => {
                self.socket.remove();
                return Err(ServerError::Spawn(e));
            }
        };
        let (committer, committer_thread) =
            match Committer::start(Arc::clone(&store), config.commit_window) {
                Ok(started) => started,
                Err(e) => {
                    shutdown.store(true, Ordering::SeqCst);
                    syncer.thread().unpark();
                    let _ = syncer.join();
                    self.socket.remove();
                    return Err(ServerError::Spawn(e));
                }
            };
        let mut links: Vec<JoinHandle<()>> = Vec::new();
        let next_link = AtomicU64::new(1);
        let handshaking = Arc::new(AtomicUsize::new(0));
        let mut accept_error_logged = false;
        while !shutdown.load(Ordering::SeqCst) {
            let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            if let Some(remote) = &self.remote {
                fds.push(PollFd::new(remote.listener.as_fd(), PollFlags::POLLIN));
            }
            let ready = match poll(&mut fds, PollTimeout::from(ACCEPT_TICK)) {
                Ok(0) => continue,
                Ok(_) => fds
                    .iter()
                    .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                    .collect::<Vec<_>>(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "poll on the listeners failed");
                    thread::sleep(Duration::from_millis(u64::from(ACCEPT_TICK)));
                    continue;
                }
            };
            drop(fds);
            for (index, is_ready) in ready.into_iter().enumerate() {
                if !is_ready {
                    continue;
                }
                loop {
                    let accepted = if index == 0 {
                        self.listener.accept().map(|(s, _)| Accepted::Local(s))
                    } else if let Some(remote) = &self.remote {
                        remote
                            .listener
                            .accept()
                            .map(|(s, peer)| Accepted::Remote(s, peer))
                    } else {
                        break;
                    };
                    match accepted {
                        Ok(accepted) => {
                            accept_error_logged = false;
                            let id = next_link.fetch_add(1, Ordering::Relaxed);
                            let link = LinkStart {
                                id,
                                store: Arc::clone(&store),
                                committer: committer.clone(),
                                shutdown: Arc::clone(&shutdown),
                                config: Arc::clone(&config),
                            };
                            let spawned = match accepted {
                                Accepted::Local(stream) => thread::Builder::new()
                                    .name(format!("store-link-{id}"))
                                    .spawn(move || link.run_local(stream)),
                                Accepted::Remote(stream, peer) => {
                                    let Some(tls) =
                                        self.remote.as_ref().map(|r| Arc::clone(&r.tls))
                                    else {
                                        break;
                                    };
                                    // Counted here, released by the thread when its handshake
                                    // ends (or below, if the thread cannot start).
                                    if handshaking.fetch_add(1, Ordering::SeqCst)
                                        >= MAX_PENDING_HANDSHAKES
                                    {
                                        handshaking.fetch_sub(1, Ordering::SeqCst);
                                        tracing::warn!(%peer, limit = MAX_PENDING_HANDSHAKES, "remote connection refused: too many TLS handshakes in progress");
                                        continue;
                                    }
                                    let pending = Arc::clone(&handshaking);
                                    let spawned = thread::Builder::new()
                                        .name(format!("store-link-{id}"))
                                        .spawn(move || {
                                            link.run_remote(stream, peer, tls, &pending)
                                        });
                                    if spawned.is_err() {
                                        handshaking.fetch_sub(1, Ordering::SeqCst);
                                    }
                                    spawned
                                }
                            };
                            match spawned {
                                Ok(handle) => links.push(handle),
                                Err(err) => {
                                    tracing::error!(link = id, %err, "cannot spawn a link thread; connection dropped")
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            // EMFILE and friends: log once per streak, back off a tick, go on.
                            if !accept_error_logged {
                                tracing::error!(error = %e, "accept failed");
                                accept_error_logged = true;
                            }
                            thread::sleep(Duration::from_millis(u64::from(ACCEPT_TICK)));
                            break;
                        }
                    }
                }
            }
            links.retain(|h| !h.is_finished());
        }

        tracing::info!(links = links.len(), "shutting down: no longer accepting");
        self.socket.remove();
        drop(self.listener);
        drop(self.remote);
        for handle in links {
            if handle.join().is_err() {
                tracing::error!("a link thread panicked");
            }
        }
        committer.close();
        if !committer_thread.join() {
            tracing::error!("the group committer panicked");
        }
        syncer.thread().unpark();
        if syncer.join().is_err() {
            tracing::error!("the WAL syncer panicked");
        }
        store
            .sync()
            .map_err(|e| ServerError::FinalSync(e.to_string()))?;
        tracing::info!("WAL synced; store stopped");
        Ok(())
    }
}

/// What a link thread needs to serve one accepted connection.
struct LinkStart<E: Engine> {
    id: u64,
    store: Arc<Store<E>>,
    committer: Committer,
    shutdown: Arc<AtomicBool>,
    config: Arc<ServerConfig>,
}

impl<E: Engine> LinkStart<E> {
    /// A Unix-socket link: only a peer running as the allowed uid is served.
    fn run_local(self, stream: UnixStream) {
        let span = tracing::info_span!("link", id = self.id);
        let _enter = span.enter();
        let peer = match socket::peer_uid(&stream) {
            Ok(peer) => peer,
            Err(err) => return tracing::warn!(%err, "link dropped: cannot read the peer uid"),
        };
        if peer != self.config.allowed_uid {
            let err = conn::ConnError::ForeignUid {
                peer,
                ours: self.config.allowed_uid,
            };
            conn::refuse(&stream, &err);
            return tracing::warn!(%err, "link refused");
        }
        self.serve(stream);
    }

    /// A TCP link: served only after a TLS handshake in which the peer proved a gateway
    /// certificate from our CA. A failure is logged with the peer's address and ends only this
    /// connection.
    fn run_remote(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        handshaking: &AtomicUsize,
    ) {
        let span = tracing::info_span!("link", id = self.id, %peer);
        let _enter = span.enter();
        let shaken = remote::handshake(
            stream,
            tls,
            self.config.tls_handshake_timeout,
            &self.shutdown,
        );
        handshaking.fetch_sub(1, Ordering::SeqCst);
        match shaken {
            Ok(link) => {
                let gateway = link.peer_name().unwrap_or_else(|| "?".into());
                tracing::info!(%gateway, "remote gateway authenticated (mutual TLS)");
                self.serve(link);
            }
            Err(err) => tracing::warn!(%peer, reason = %err, "remote connection refused"),
        }
    }

    fn serve<S: conn::LinkStream>(&self, stream: S) {
        match conn::serve(
            stream,
            &self.store,
            &self.committer,
            &self.shutdown,
            &self.config,
        ) {
            Ok(conn::Closed::ByPeer) => tracing::info!("link closed by peer"),
            Ok(conn::Closed::Shutdown) => tracing::info!("link closed for shutdown"),
            Err(err) => tracing::warn!(%err, "link dropped"),
        }
    }
}

/// Calls [`Store::sync`] every `interval` until `shutdown` is set (the thread is unparked then).
fn spawn_syncer<E: Engine>(
    store: Arc<Store<E>>,
    interval: Duration,
    shutdown: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    let body = move || {
        let mut failing = false;
        loop {
            let deadline = Instant::now() + interval;
            loop {
                if shutdown.load(Ordering::SeqCst) {
                    return;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                thread::park_timeout(deadline - now);
            }
            match store.sync() {
                Ok(()) if failing => {
                    tracing::info!("WAL sync works again");
                    failing = false;
                }
                Ok(()) => {}
                Err(err) if !failing => {
                    tracing::error!(%err, "WAL sync failed; buffered writes are not durable until it works again");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    };
    thread::Builder::new()
        .name("store-wal-syncer".into())
        .spawn(body)
}
