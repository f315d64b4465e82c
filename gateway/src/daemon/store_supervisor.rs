//! The child store: when no external store is configured, the gateway runs `portcullis-store` as
//! a child process and owns its life. [`StoreSupervisor::start`] spawns it and waits until it
//! answers a hello; a monitor thread restarts it with exponential backoff if it dies; and
//! [`StoreSupervisor::stop`] shuts it down in order (close its stdin, then SIGTERM, then SIGKILL).
//!
//! The child's stdin is a pipe that only the supervisor holds, and the store is started with
//! `--exit-on-stdin-eof`: if the gateway dies, even by SIGKILL, the kernel closes the pipe and the
//! store exits instead of lingering with the database locked. The child also runs in its own
//! process group, so a Ctrl-C in the terminal reaches only the gateway, which then stops the store
//! after its own last writes.

use portcullis_protocol::store::{ClientHello, ClientRole, NodeName, TrafficLink};
use portcullis_store_client::{StoreClient, StoreClientError};
use std::ffi::OsStr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use thiserror::Error;

/// File name of the store executable.
pub const STORE_BINARY_NAME: &str = "portcullis-store";

/// How long the store may take to open its database and answer a hello at start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of each readiness probe while waiting for the store to start.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// How often the monitor looks at the child; the worst-case delay before a restart begins.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// First restart delay; doubled after each failed restart up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A child that ran this long before dying counts as healthy: the backoff starts over.
const STABLE_RUN: Duration = Duration::from_secs(30);
/// At stop, time given to the store to exit after its stdin closes, and again after SIGTERM.
const GRACEFUL_STOP: Duration = Duration::from_secs(5);

#[derive(Debug, Error)]
pub enum SupervisorError {
    #[error("store.binary is set to {}, but no executable file is there", path.display())]
    ConfiguredBinaryMissing { path: PathBuf },
    #[error(
        "cannot find {STORE_BINARY_NAME}: looked next to this executable and on PATH ({}); install it \
         alongside portcullis (cargo build -p portcullis-storage builds it) or set store.binary",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    BinaryNotFound { searched: Vec<PathBuf> },
    #[error("cannot create the data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "a store is already answering on {}; another gateway is probably running with this data directory \
         (stop it, or set store.socket to share that store)",
        socket.display()
    )]
    AlreadyRunning { socket: PathBuf },
    #[error("{} exited during start-up ({status}); its log above says why", binary.display())]
    ExitedAtStart { binary: PathBuf, status: ExitStatus },
    #[error("the store did not answer on {} within {after:?} of starting; it was stopped", socket.display())]
    StartTimeout { socket: PathBuf, after: Duration },
    #[error("the store started but its hello failed: {0}")]
    Handshake(#[from] StoreClientError),
    #[error("cannot wait for the store process: {0}")]
    Wait(std::io::Error),
}

/// How to launch the store; kept to relaunch it after a crash.
#[derive(Debug, Clone)]
struct Launch {
    binary: PathBuf,
    store_dir: PathBuf,
    socket: PathBuf,
    /// Settings passed on the command line (see `Config::store_child_args`).
    extra_args: Vec<String>,
    /// This gateway's node, named in the readiness probes' hello.
    node: NodeName,
}

impl Launch {
    /// The hello of a readiness probe: the gateway's start-up control link.
    fn probe_hello(&self) -> ClientHello {
        probe_hello(&self.node)
    }
}

fn probe_hello(node: &NodeName) -> ClientHello {
    ClientHello::new(
        node.clone(),
        ClientRole::DeviceTraffic(TrafficLink::Control),
    )
}

impl Launch {
    fn spawn(&self) -> Result<RunningStore, SupervisorError> {
        let mut child = Command::new(&self.binary)
            .arg("--data-dir")
            .arg(&self.store_dir)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--exit-on-stdin-eof")
            .args(&self.extra_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|source| SupervisorError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        let stdin = child.stdin.take();
        tracing::info!(pid = child.id(), binary = %self.binary.display(), "started the store");
        Ok(RunningStore {
            child,
            stdin,
            started: Instant::now(),
        })
    }
}

#[derive(Debug)]
struct RunningStore {
    child: Child,
    /// Dropping this closes the pipe, which tells the store to exit.
    stdin: Option<ChildStdin>,
    started: Instant,
}

#[derive(Debug)]
struct Shared {
    launch: Launch,
    /// The current child. It is only reaped (by `try_wait`) under this lock, so while the lock is
    /// held and the child has not been seen to exit, its pid cannot have been reused: signals
    /// sent under the lock reach the store and nothing else.
    running: Mutex<Option<RunningStore>>,
    stopping: AtomicBool,
    restarts: AtomicU64,
}

impl Shared {
    fn running(&self) -> MutexGuard<'_, Option<RunningStore>> {
        // A panic elsewhere while holding the lock leaves the data consistent (an Option swap).
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Owns the child store process. Dropping it stops the store like [`StoreSupervisor::stop`].
#[derive(Debug)]
pub struct StoreSupervisor {
    shared: Arc<Shared>,
    monitor: Option<JoinHandle<()>>,
}

impl StoreSupervisor {
    /// Starts `binary` on `socket` with its database in `<data_dir>/store`, and returns once it
    /// answers a hello; the store is then restarted automatically whenever it dies.
    pub fn start(
        binary: &Path,
        data_dir: &Path,
        socket: &Path,
        extra_args: Vec<String>,
        node: &NodeName,
    ) -> Result<StoreSupervisor, SupervisorError> {
        let store_dir = data_dir.join("store");
        for dir in [data_dir, &store_dir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| SupervisorError::DataDir {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        // A second store on the same database would fail to lock it, but only after our hello
        // probe had already reached the first one: check up front instead.
        if StoreClient::connect(socket, probe_hello(node), PROBE_TIMEOUT).is_ok() {
            return Err(SupervisorError::AlreadyRunning {
                socket: socket.to_owned(),
            });
        }

        let launch = Launch {
            binary: binary.to_owned(),
            store_dir,
            socket: socket.to_owned(),
            extra_args,
            node: node.clone(),
        };
        let first = launch.spawn()?;
        let shared = Arc::new(Shared {
            launch,
            running: Mutex::new(Some(first)),
            stopping: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
        });
        if let Err(e) = wait_until_ready(&shared) {
            terminate(&shared);
            return Err(e);
        }
        let monitor_shared = shared.clone();
        let monitor = thread::Builder::new()
            .name("store-supervisor".into())
            .spawn(move || monitor(&monitor_shared))
            .map_err(|source| SupervisorError::Spawn {
                binary: binary.to_owned(),
                source,
            })?;
        Ok(StoreSupervisor {
            shared,
            monitor: Some(monitor),
        })
    }

    /// How many times the store was restarted after dying.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// The socket the store listens on.
    pub fn socket_path(&self) -> &Path {
        &self.shared.launch.socket
    }

    /// Process id of the current child, if one is running.
    pub fn child_pid(&self) -> Option<u32> {
        self.shared
            .running()
            .as_ref()
            .map(|running| running.child.id())
    }

    /// Stops the store: closes its stdin and waits, then SIGTERM and waits, then SIGKILL.
    /// Returns the store's exit status when it was running.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Option<ExitStatus> {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let status = terminate(&self.shared);
        if let Some(monitor) = self.monitor.take() {
            monitor.thread().unpark();
            if monitor.join().is_err() {
                tracing::error!("the store monitor thread panicked");
            }
        }
        status
    }
}

impl Drop for StoreSupervisor {
    fn drop(&mut self) {
        if self.monitor.is_some() {
            self.shutdown();
        }
    }
}

/// Probes the socket until the store answers, the child dies, or [`START_TIMEOUT`] passes.
fn wait_until_ready(shared: &Shared) -> Result<(), SupervisorError> {
    let launch = &shared.launch;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(running) = shared.running().as_mut() {
            match running.child.try_wait() {
                Ok(Some(status)) => {
                    return Err(SupervisorError::ExitedAtStart {
                        binary: launch.binary.clone(),
                        status,
                    });
                }
                Ok(None) => {}
                Err(e) => return Err(SupervisorError::Wait(e)),
            }
        }
        match StoreClient::connect(&launch.socket, launch.probe_hello(), PROBE_TIMEOUT)
            .and_then(|mut client| client.ping())
        {
            Ok(()) => return Ok(()),
            // Not listening yet (or a stale socket file from an earlier run): keep waiting.
            Err(e) if e.is_unavailable() => {}
            Err(e) => return Err(SupervisorError::Handshake(e)),
        }
        if Instant::now() >= deadline {
            return Err(SupervisorError::StartTimeout {
                socket: launch.socket.clone(),
                after: START_TIMEOUT,
            });
        }
        thread::sleep(PROBE_INTERVAL);
    }
}

/// Takes the child out of `shared` and stops it in order; returns its exit status.
fn terminate(shared: &Shared) -> Option<ExitStatus> {
    let mut running = shared.running().take()?;
    let pid = running.child.id();
    drop(running.stdin.take());
    if let Some(status) = wait_for_exit(&mut running.child, GRACEFUL_STOP) {
        return Some(status);
    }
    tracing::warn!(
        pid,
        "the store did not exit after its stdin closed; sending SIGTERM"
    );
    if let Ok(raw_pid) = i32::try_from(pid) {
        // The child is not reaped yet (we own it), so the pid is still the store's.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw_pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if let Some(status) = wait_for_exit(&mut running.child, GRACEFUL_STOP) {
        return Some(status);
    }
    tracing::error!(pid, "the store ignored SIGTERM; killing it");
    let _ = running.child.kill();
    running.child.wait().ok()
}

/// Polls until the child exits or `limit` passes.
fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            // Nothing left to wait for (already reaped elsewhere): treat as gone.
            Err(_) => return None,
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Watches the child and restarts it when it dies, until the supervisor stops.
fn monitor(shared: &Shared) {
    let mut backoff = INITIAL_BACKOFF;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let exited = {
            let mut guard = shared.running();
            let Some(running) = guard.as_mut() else {
                // `stop` took the child.
                return;
            };
            let outcome = match running.child.try_wait() {
                Ok(None) => None,
                Ok(Some(status)) => Some((Ok(status), running.started.elapsed())),
                Err(e) => Some((Err(e), running.started.elapsed())),
            };
            if outcome.is_some() {
                *guard = None;
            }
            outcome
        };
        let Some((status, ran_for)) = exited else {
            thread::park_timeout(POLL_INTERVAL);
            continue;
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        match status {
            Ok(status) => {
                tracing::warn!(%status, ?ran_for, "the store exited unexpectedly; restarting it")
            }
            Err(e) => {
                tracing::error!(error = %e, ?ran_for, "lost track of the store process; restarting it")
            }
        }
        if ran_for >= STABLE_RUN {
            backoff = INITIAL_BACKOFF;
        }
        loop {
            if !sleep_unless_stopping(shared, backoff) {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match shared.launch.spawn() {
                Ok(mut fresh) => {
                    let mut guard = shared.running();
                    // `stop` may have begun while we spawned; it will not see this child, so end it here.
                    if shared.stopping.load(Ordering::SeqCst) {
                        drop(guard);
                        drop(fresh.stdin.take());
                        let _ = fresh.child.kill();
                        let _ = fresh.child.wait();
                        return;
                    }
                    *guard = Some(fresh);
                    let restarts = shared.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::info!(restarts, "restarted the store");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?backoff, "cannot restart the store")
                }
            }
        }
    }
}

/// Sleeps for `duration` (waking early if the supervisor stops); returns false when stopping.
fn sleep_unless_stopping(shared: &Shared, duration: Duration) -> bool {
    let deadline = Instant::now() + duration;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return false;
        }
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => thread::park_timeout(left),
            _ => return true,
        }
    }
}

/// Finds the store executable: `configured` (which must exist), else next to the current
/// executable, else on `PATH`.
pub fn locate_store_binary(configured: Option<&Path>) -> Result<PathBuf, SupervisorError> {
    let current_exe = std::env::current_exe().ok();
    let path_var = std::env::var_os("PATH");
    locate_in(configured, current_exe.as_deref(), path_var.as_deref())
}

fn locate_in(
    configured: Option<&Path>,
    current_exe: Option<&Path>,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, SupervisorError> {
    if let Some(path) = configured {
        return if is_executable(path) {
            Ok(path.to_owned())
        } else {
            Err(SupervisorError::ConfiguredBinaryMissing {
                path: path.to_owned(),
            })
        };
    }
    let mut candidates = Vec::new();
    if let Some(dir) = current_exe.and_then(Path::parent) {
        candidates.push(dir.join(STORE_BINARY_NAME));
        // Test executables live in target/<profile>/deps, the binaries one level up.
        if dir.file_name() == Some(OsStr::new("deps"))
            && let Some(profile_dir) = dir.parent()
        {
            candidates.push(profile_dir.join(STORE_BINARY_NAME));
        }
    }
    if let Some(path_var) = path_var {
        candidates.extend(
            std::env::split_paths(path_var)
                .filter(|dir| !dir.as_os_str().is_empty())
                .map(|dir| dir.join(STORE_BINARY_NAME)),
        );
    }
    match candidates.iter().find(|candidate| is_executable(candidate)) {
        Some(found) => Ok(found.clone()),
        None => Err(SupervisorError::BinaryNotFound {
            searched: candidates,
        }),
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn fake_binary(dir: &Path, executable: bool) -> PathBuf {
        std::fs::create_dir_all(dir).expect("mkdir");
        let path = dir.join(STORE_BINARY_NAME);
        std::fs::write(&path, "#!/bin/sh\n").expect("writes");
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn a_configured_binary_must_exist_and_be_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope");
        assert!(matches!(
            locate_in(Some(&missing), None, None),
            Err(SupervisorError::ConfiguredBinaryMissing { .. })
        ));
        let plain_file = fake_binary(&dir.path().join("plain"), false);
        assert!(locate_in(Some(&plain_file), None, None).is_err());
        let good = fake_binary(&dir.path().join("good"), true);
        assert_eq!(locate_in(Some(&good), None, None).expect("found"), good);
    }

    #[test]
    fn the_binary_next_to_the_executable_wins_over_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let beside = fake_binary(&dir.path().join("bin"), true);
        let on_path = fake_binary(&dir.path().join("usr/bin"), true);
        let path_var = std::env::join_paths([dir.path().join("usr/bin")]).expect("joins");
        let exe = dir.path().join("bin/portcullis");
        assert_eq!(
            locate_in(None, Some(&exe), Some(&path_var)).expect("found"),
            beside
        );
        let elsewhere = dir.path().join("other/portcullis");
        assert_eq!(
            locate_in(None, Some(&elsewhere), Some(&path_var)).expect("found"),
            on_path
        );
    }

    #[test]
    fn test_executables_find_the_binary_in_the_profile_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let built = fake_binary(&dir.path().join("target/debug"), true);
        let test_exe = dir.path().join("target/debug/deps/portcullis_gateway-0123");
        assert_eq!(
            locate_in(None, Some(&test_exe), None).expect("found"),
            built
        );
    }

    #[test]
    fn a_missing_binary_lists_where_it_looked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path_var = OsString::from(format!("{}:", dir.path().join("empty").display()));
        let err = locate_in(
            None,
            Some(&dir.path().join("bin/portcullis")),
            Some(&path_var),
        )
        .expect_err("absent");
        let SupervisorError::BinaryNotFound { searched } = &err else {
            panic!("{err}")
        };
        assert_eq!(searched.len(), 2);
        assert!(err.to_string().contains("store.binary"), "{err}");
    }
}
