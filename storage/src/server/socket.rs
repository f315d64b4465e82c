//! The listening socket's life: refusing to start over a live store or a non-socket file, clearing
//! a stale socket, publishing the new one with mode 0600 and no window where it is reachable
//! with looser permissions, reading a peer's uid (`SO_PEERCRED`), and removing the socket file at
//! shutdown only if it is still ours. A Unix stream is also a [`LinkStream`] (split into two
//! handles on the same socket).

use super::ServerError;
use super::conn::{LinkStream, LinkWriter};
use nix::sys::socket::{getsockopt, sockopt};
use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket file we published, identified by device, inode and birth time (inode numbers are
/// reused at once), so shutdown never removes a socket someone else has since put at the path.
#[derive(Debug)]
pub(crate) struct BoundSocket {
    pub path: PathBuf,
    identity: Identity,
}

#[derive(Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    /// `None` where the filesystem keeps no birth time; then device and inode decide.
    born: Option<std::time::SystemTime>,
}

impl Identity {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            born: meta.created().ok(),
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ServerError + 'a {
    move |source| ServerError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Removes a socket file nothing listens on. Refuses if a store answers there, or if the path is
/// not a socket (we never delete a file we did not make).
fn clear_stale(path: &Path) -> Result<(), ServerError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket(path.to_owned()));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(ServerError::AlreadyServing(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path).map_err(io_err("remove stale socket", path))?;
            tracing::info!(path = %path.display(), "removed a stale socket file nothing listened on");
            Ok(())
        }
        Err(e) => Err(io_err("probe existing socket", path)(e)),
    }
}

/// Binds the listening socket at `path` with mode 0600.
///
/// Why a staging directory: `bind()` creates the socket file with mode `0777 & !umask`, and a
/// `chmod` afterwards leaves a window in which another user could connect. Changing the umask is
/// process-wide and would race with other threads creating files. Instead we bind inside a fresh
/// directory of mode 0700 next to the target (connecting needs search permission on every
/// directory of the path, so nobody but us can reach the socket there), set the socket to 0600,
/// then `rename()` it onto `path`, which publishes it atomically with its final mode. The peer
/// uid check on every accepted connection is the second wall.
pub(crate) fn bind(path: &Path) -> Result<(UnixListener, BoundSocket), ServerError> {
    clear_stale(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let staging = make_staging_dir(parent)?;
    let result = bind_in(&staging, path);
    if let Err(e) = fs::remove_dir(&staging) {
        tracing::warn!(dir = %staging.display(), error = %e, "could not remove the socket staging directory");
    }
    result
}

fn make_staging_dir(parent: &Path) -> Result<PathBuf, ServerError> {
    // Short names: a Unix socket path is limited to 107 bytes, and the staging path must fit too.
    let pid = std::process::id();
    let mut last_err = None;
    for attempt in 0..8 {
        let dir = parent.join(format!(".pcs{pid}-{attempt}"));
        // mkdir never follows a symlink at its last component, and the umask can only remove
        // permission bits, so this is a new directory of mode 0700 or stricter, owned by us.
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(io_err("create socket staging directory in", parent)(e)),
        }
    }
    let e = last_err.unwrap_or_else(|| io::Error::other("no attempt made"));
    Err(io_err("create socket staging directory in", parent)(e))
}

fn bind_in(staging: &Path, path: &Path) -> Result<(UnixListener, BoundSocket), ServerError> {
    let tmp = staging.join("s");
    let listener = UnixListener::bind(&tmp).map_err(io_err("bind", path))?;
    let published = fs::set_permissions(&tmp, Permissions::from_mode(0o600))
        .map_err(io_err("set permissions on", path))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err("publish socket at", path)))
        .and_then(|()| fs::symlink_metadata(path).map_err(io_err("inspect", path)));
    match published {
        Ok(meta) => Ok((
            listener,
            BoundSocket {
                path: path.to_owned(),
                identity: Identity::of(&meta),
            },
        )),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

impl BoundSocket {
    /// Removes the socket file if it is still the one we bound.
    pub(crate) fn remove(&self) {
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if Identity::of(&meta) == self.identity => match fs::remove_file(&self.path) {
                Ok(()) => tracing::debug!(path = %self.path.display(), "socket file removed"),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "could not remove the socket file")
                }
            },
            Ok(_) => {
                tracing::warn!(path = %self.path.display(), "socket file was replaced by another; leaving it")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not inspect the socket file")
            }
        }
    }
}

/// The uid of the process at the other end of a Unix stream (as it was at `connect()`).
pub(crate) fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let cred = getsockopt(stream, sockopt::PeerCredentials).map_err(io::Error::from)?;
    Ok(cred.uid())
}

impl LinkStream for UnixStream {
    type Reader = UnixStream;
    type Writer = UnixStream;

    fn split(self, read_tick: Duration, write_timeout: Duration) -> io::Result<(Self, Self)> {
        // Accepted from a non-blocking listener; the link's threads block with timeouts instead.
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(read_tick))?;
        self.set_write_timeout(Some(write_timeout))?;
        let writer = self.try_clone()?;
        Ok((self, writer))
    }
}

impl LinkWriter for UnixStream {
    fn abort(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_with_mode_0600_and_leaves_no_staging_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.sock");
        let (_listener, bound) = bind(&path).expect("bind");
        let meta = fs::symlink_metadata(&path).expect("stat");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("store.sock")]);
        let stream = UnixStream::connect(&path).expect("connect through the renamed socket");
        assert_eq!(
            peer_uid(&stream).expect("peer uid"),
            nix::unistd::geteuid().as_raw()
        );
        bound.remove();
        assert!(!path.exists());
    }

    #[test]
    fn refuses_a_live_socket_and_a_regular_file_but_clears_a_stale_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let (live, bound) = bind(&path).expect("bind");
        assert!(matches!(bind(&path), Err(ServerError::AlreadyServing(_))));
        drop(live); // the file stays, nothing listens: stale
        assert!(path.exists());
        let (_again, rebound) = bind(&path).expect("a stale socket is replaced");
        bound.remove(); // not ours any more: must not delete the new one
        assert!(
            path.exists(),
            "remove() left the socket another listener owns"
        );
        rebound.remove();

        let file = dir.path().join("plain");
        fs::write(&file, b"precious").expect("write");
        assert!(matches!(bind(&file), Err(ServerError::NotASocket(_))));
        assert_eq!(fs::read(&file).expect("read"), b"precious");
    }
}
