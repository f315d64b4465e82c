//! The optional remote-gateway listener: TCP, and only ever with mutual TLS (there is no plaintext
//! TCP mode). It loads the store's certificate and the CA that signs gateway client certificates,
//! builds a TLS 1.3-only rustls configuration (ring, as in the gateway) whose client verifier
//! requires a certificate from that CA, binds the listener, performs each handshake on the link's
//! own thread within [`HANDSHAKE_TIMEOUT`], and turns an established session into a
//! [`LinkStream`] so it is served exactly like a Unix-socket link. A failed handshake ends that
//! connection only, logged with the peer address and the reason.

use super::conn::{LinkStream, LinkWriter};
use portcullis_store_client::pem::{self, PemError};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConnection};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;

/// A TCP peer must finish the TLS handshake (including presenting a valid client certificate)
/// within this time; a peer that sends half a ClientHello and stalls holds a thread no longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once, at most. Anyone who can reach the port can open connections
/// before proving who they are, and each costs a thread until its handshake ends, so beyond this
/// new connections are closed at once (logged) instead of growing the thread count.
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// During the handshake a read gives up after this long, so the deadline is checked.
const HANDSHAKE_TICK: Duration = Duration::from_millis(100);

/// Bytes of TLS records read from the socket at once.
const TLS_READ_CHUNK: usize = 64 * 1024;

/// What an operator is told to do when the certificate files are missing or wrong.
const CERT_HINT: &str = "make them with `portcullis-store gen-certs DIR --store-name HOST --gateway NAME` \
and pass --remote-ca-file DIR/ca.pem --remote-cert-file DIR/store.pem --remote-key-file DIR/store.key \
(or drop --remote-listen to serve only the local Unix socket)";

/// Where and how to listen for remote gateways.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Address to listen on, e.g. a private interface's address and port 7701.
    pub listen: SocketAddr,
    /// PEM CA certificate(s) that sign the gateways' client certificates; nothing else is trusted.
    pub ca_file: PathBuf,
    /// PEM certificate chain of the store (leaf first), presented to gateways.
    pub cert_file: PathBuf,
    /// PEM private key of that certificate.
    pub key_file: PathBuf,
}

/// Why the remote listener could not start, or why one remote connection was refused.
#[derive(Debug, Error)]
pub enum RemoteError {
    /// Operator: a certificate or key file cannot be read.
    #[error("cannot read the {what} {}: {error}; {CERT_HINT}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// Operator: a file holds no usable PEM object of the expected kind.
    #[error("the {what} {} holds no usable PEM {kind} ({detail}); {CERT_HINT}", path.display())]
    BadPem {
        what: &'static str,
        kind: &'static str,
        path: PathBuf,
        detail: String,
    },
    /// Operator: rustls refused the certificates (key not matching the certificate, a CA file
    /// that is not a CA, ...).
    #[error("the remote TLS configuration is not usable: {0}; {CERT_HINT}")]
    Config(String),
    /// Operator: the listen address cannot be bound (in use, not an address of this host).
    #[error("cannot listen on {addr} for remote gateways: {error}")]
    Bind { addr: SocketAddr, error: io::Error },
    /// Peer: did not finish the handshake in time.
    #[error("no completed TLS handshake within {0:?}")]
    HandshakeTimeout(Duration),
    /// Peer: closed the connection during the handshake.
    #[error("peer closed the connection during the TLS handshake")]
    HandshakeEof,
    /// Peer: the handshake failed (no client certificate, one from another CA, not TLS, ...).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// Store: shutting down; the handshake was abandoned.
    #[error("the store is shutting down")]
    ShuttingDown,
    /// Store side: the accepted socket could not be set up.
    #[error("socket error during the handshake: {0}")]
    Io(io::Error),
}

/// The bound remote listener and the TLS configuration its connections use.
#[derive(Debug)]
pub(crate) struct RemoteListener {
    pub listener: TcpListener,
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ServerConfig>,
}

impl RemoteListener {
    /// Loads and checks the certificates first (so a mistake is reported before anything is
    /// bound), then binds a non-blocking listener.
    pub fn bind(config: &RemoteConfig) -> Result<Self, RemoteError> {
        let tls = tls_config(config)?;
        let bind_err = |error| RemoteError::Bind {
            addr: config.listen,
            error,
        };
        let listener = TcpListener::bind(config.listen).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        Ok(Self {
            listener,
            addr,
            tls,
        })
    }
}

/// Reads and decodes one PEM file; a failure names the option the file came from.
fn read_pem<T>(
    what: &'static str,
    path: &Path,
    decode: fn(&[u8]) -> Result<T, PemError>,
) -> Result<T, RemoteError> {
    let bytes = std::fs::read(path).map_err(|error| RemoteError::Read {
        what,
        path: path.to_owned(),
        error,
    })?;
    decode(&bytes).map_err(|e| RemoteError::BadPem {
        what,
        kind: e.kind,
        path: path.to_owned(),
        detail: e.detail,
    })
}

/// The rustls configuration: TLS 1.3 only (both ends are ours), a client certificate signed by
/// the configured CA required, no session tickets (links are few and long-lived).
pub(crate) fn tls_config(config: &RemoteConfig) -> Result<Arc<rustls::ServerConfig>, RemoteError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let ca_what = "gateway CA file (--remote-ca-file)";
    for ca in read_pem(ca_what, &config.ca_file, pem::certificates)? {
        roots.add(ca).map_err(|e| RemoteError::BadPem {
            what: ca_what,
            kind: "CA certificate",
            path: config.ca_file.clone(),
            detail: e.to_string(),
        })?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| RemoteError::Config(format!("gateway CA: {e}")))?;
    let chain = read_pem(
        "store certificate (--remote-cert-file)",
        &config.cert_file,
        pem::certificates,
    )?;
    let key = read_pem(
        "store key (--remote-key-file)",
        &config.key_file,
        pem::private_key,
    )?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| RemoteError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| RemoteError::Config(format!("store certificate and key: {e}")))?;
    tls.send_tls13_tickets = 0;
    Ok(Arc::new(tls))
}

/// Runs the server side of the handshake on an accepted connection, blocking for at most
/// `timeout` (or until `shutdown` is set). On success the link is authenticated: the client
/// presented a certificate chaining to the gateway CA.
pub(crate) fn handshake(
    sock: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    timeout: Duration,
    shutdown: &AtomicBool,
) -> Result<TlsLink, RemoteError> {
    // Accepted from a non-blocking listener; this thread blocks with a short read timeout.
    sock.set_nonblocking(false).map_err(RemoteError::Io)?;
    sock.set_nodelay(true).map_err(RemoteError::Io)?;
    sock.set_read_timeout(Some(HANDSHAKE_TICK))
        .map_err(RemoteError::Io)?;
    sock.set_write_timeout(Some(timeout))
        .map_err(RemoteError::Io)?;
    let mut conn = ServerConnection::new(tls).map_err(|e| RemoteError::Handshake(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    while conn.is_handshaking() {
        if Instant::now() >= deadline {
            return Err(RemoteError::HandshakeTimeout(timeout));
        }
        if shutdown.load(Ordering::SeqCst) {
            return Err(RemoteError::ShuttingDown);
        }
        match conn.complete_io(&mut &sock) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(RemoteError::HandshakeEof);
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(RemoteError::Handshake(e.to_string()));
            }
            Err(e) => return Err(RemoteError::Io(e)),
        }
    }
    Ok(TlsLink { sock, conn })
}

/// An authenticated TLS session over TCP, not yet split.
pub(crate) struct TlsLink {
    sock: TcpStream,
    conn: ServerConnection,
}

impl TlsLink {
    /// The common name of the client certificate the gateway proved (`gen-certs --gateway`
    /// NAME), for the log; `None` if it has none or it does not parse.
    pub fn peer_name(&self) -> Option<String> {
        let der = self.conn.peer_certificates()?.first()?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let name = cert.subject().iter_common_name().next()?.as_str().ok()?;
        Some(name.to_owned())
    }
}

/// The TLS state shared by the two halves: records must be produced and consumed by one
/// `ServerConnection`, so each half takes the lock for its (short) turn.
type Shared = Arc<Mutex<ServerConnection>>;

fn lock(conn: &Shared) -> io::Result<MutexGuard<'_, ServerConnection>> {
    conn.lock()
        .map_err(|_| io::Error::other("the other half of the TLS link panicked"))
}

/// Writes every TLS record rustls has queued (alerts, replies) to the socket.
fn send_queued(conn: &mut ServerConnection, sock: &TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(&mut &*sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl LinkStream for TlsLink {
    type Reader = TlsReader;
    type Writer = TlsWriter;

    fn split(
        self,
        read_tick: Duration,
        write_timeout: Duration,
    ) -> io::Result<(TlsReader, TlsWriter)> {
        self.sock.set_read_timeout(Some(read_tick))?;
        self.sock.set_write_timeout(Some(write_timeout))?;
        let writer_sock = self.sock.try_clone()?;
        let conn = Arc::new(Mutex::new(self.conn));
        Ok((
            TlsReader {
                sock: self.sock,
                conn: Arc::clone(&conn),
                raw: vec![0; TLS_READ_CHUNK],
                raw_start: 0,
                raw_end: 0,
            },
            TlsWriter {
                sock: writer_sock,
                conn,
            },
        ))
    }
}

/// Reading half: plaintext out of the TLS session, reading records from the socket as needed.
pub(crate) struct TlsReader {
    sock: TcpStream,
    conn: Shared,
    /// Records read from the socket but not yet taken by rustls (it takes less while its
    /// plaintext buffer is full).
    raw: Vec<u8>,
    raw_start: usize,
    raw_end: usize,
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let mut conn = lock(&self.conn)?;
            match conn.reader().read(buf) {
                // Ok(0) is the peer's close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: for the wire loop, the peer left.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.raw_start < self.raw_end {
                let mut pending = &self.raw[self.raw_start..self.raw_end];
                let taken = conn.read_tls(&mut pending)?;
                self.raw_start += taken;
                if let Err(e) = conn.process_new_packets() {
                    // Tell the peer why (best effort), then end the link with the reason.
                    let _ = send_queued(&mut conn, &self.sock);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                // Key updates and alerts the peer's records asked for.
                send_queued(&mut conn, &self.sock)?;
                continue;
            }
            drop(conn);
            // No lock held while blocked, so replies keep flowing. Times out every read tick.
            let n = self.sock.read(&mut self.raw)?;
            if n == 0 {
                return Ok(0);
            }
            self.raw_start = 0;
            self.raw_end = n;
        }
    }
}

/// Writing half: plaintext into the TLS session, records out to the socket at once.
pub(crate) struct TlsWriter {
    sock: TcpStream,
    conn: Shared,
}

impl Write for TlsWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut conn = lock(&self.conn)?;
        let n = conn.writer().write(buf)?;
        send_queued(&mut conn, &self.sock)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut conn = lock(&self.conn)?;
        conn.writer().flush()?;
        send_queued(&mut conn, &self.sock)
    }
}

impl LinkWriter for TlsWriter {
    fn abort(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}
