//! The store server: binds the Unix socket (`socket`), accepts links and serves each on its own
//! threads (`conn`; there are few links: one per gateway shard, a control link and the admin
//! CLI), runs the group committer (`commit`) that performs every write, runs the periodic WAL
//! syncer, and shuts down gracefully.
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
mod socket;
#[cfg(test)]
mod tests;

pub use commit::MAX_COMMIT_WINDOW;
pub use conn::MAX_OWED_REPLIES;

use crate::engine::Engine;
use crate::schema::Store;
use commit::Committer;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            sync_interval: DEFAULT_SYNC_INTERVAL,
            commit_window: DEFAULT_COMMIT_WINDOW,
            allowed_uid: nix::unistd::geteuid().as_raw(),
            hello_timeout: Duration::from_secs(5),
        }
    }
}

/// A bound, not yet serving, store socket.
#[derive(Debug)]
pub struct Server {
    listener: UnixListener,
    socket: socket::BoundSocket,
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
        Ok(Self { listener, socket })
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
        let mut accept_error_logged = false;
        while !shutdown.load(Ordering::SeqCst) {
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ACCEPT_TICK)) {
                Ok(0) => {}
                Ok(_) => loop {
                    match self.listener.accept() {
                        Ok((stream, _)) => {
                            accept_error_logged = false;
                            let id = next_link.fetch_add(1, Ordering::Relaxed);
                            let (store, committer, shutdown, config) = (
                                Arc::clone(&store),
                                committer.clone(),
                                Arc::clone(&shutdown),
                                Arc::clone(&config),
                            );
                            let spawned = thread::Builder::new()
                                .name(format!("store-link-{id}"))
                                .spawn(move || {
                                    run_link(id, stream, &store, &committer, &shutdown, &config)
                                });
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
                },
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!(error = %e, "poll on the listener failed");
                    thread::sleep(Duration::from_millis(u64::from(ACCEPT_TICK)));
                }
            }
            links.retain(|h| !h.is_finished());
        }

        tracing::info!(links = links.len(), "shutting down: no longer accepting");
        self.socket.remove();
        drop(self.listener);
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

fn run_link<E: Engine>(
    id: u64,
    stream: std::os::unix::net::UnixStream,
    store: &Store<E>,
    committer: &Committer,
    shutdown: &AtomicBool,
    config: &ServerConfig,
) {
    let span = tracing::info_span!("link", id);
    let _enter = span.enter();
    match conn::serve(stream, store, committer, shutdown, config) {
        Ok(conn::Closed::ByPeer) => tracing::info!("link closed by peer"),
        Ok(conn::Closed::Shutdown) => tracing::info!("link closed for shutdown"),
        Err(err @ conn::ConnError::ForeignUid { .. }) => tracing::warn!(%err, "link refused"),
        Err(err) => tracing::warn!(%err, "link dropped"),
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
