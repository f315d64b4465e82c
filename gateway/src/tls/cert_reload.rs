//! Certificate hot reload. The server configuration's certificate resolver serves whatever
//! [`CertifiedKey`] is current in an `ArcSwap`, so a new pair swapped in applies to the next
//! handshake while live connections keep the session they have. A reload (SIGHUP, a change of the
//! files on disk seen by the watcher thread, or new paths from a configuration reload) loads and
//! validates the pair first — parse, key matches certificate, currently valid — and only then
//! swaps; an invalid pair is refused, logged to the security log, and the old one stays in service.

use super::{TlsError, load_certified_key};
use crate::guard::security_log::{self as security, SecurityEvent};
use crate::metrics::GlobalMetrics;
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

/// Serves the current certified key to every new handshake.
#[derive(Debug)]
pub struct SwappableCert {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What made a reload happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChange,
    ConfigChange,
}

impl Trigger {
    fn label(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChange => "file change",
            Trigger::ConfigChange => "new tls.cert/tls.key paths",
        }
    }
}

/// The result of one reload attempt.
#[derive(Debug)]
pub enum ReloadOutcome {
    Reloaded {
        fingerprint: String,
    },
    /// The watcher saw no change since the last attempt.
    Unchanged,
    Refused(TlsError),
}

/// Security events about the served certificate.
#[derive(Debug)]
pub enum CertificateEvent<'a> {
    Reloaded {
        cert: &'a Path,
        trigger: Trigger,
        fingerprint: &'a str,
        not_after: String,
    },
    Refused {
        cert: &'a Path,
        trigger: Trigger,
        error: &'a TlsError,
    },
}

impl SecurityEvent for CertificateEvent<'_> {
    fn kind(&self) -> &'static str {
        match self {
            CertificateEvent::Reloaded { .. } => "certificate_reloaded",
            CertificateEvent::Refused { .. } => "certificate_reload_refused",
        }
    }
    fn source(&self) -> Option<std::net::IpAddr> {
        None
    }
    fn subject(&self) -> String {
        match self {
            CertificateEvent::Reloaded { cert, .. } | CertificateEvent::Refused { cert, .. } => {
                cert.display().to_string()
            }
        }
    }
    fn reason(&self) -> String {
        match self {
            CertificateEvent::Reloaded {
                trigger,
                fingerprint,
                not_after,
                ..
            } => format!(
                "{}: now serving sha256:{fingerprint}, valid until {not_after}",
                trigger.label()
            ),
            CertificateEvent::Refused { trigger, error, .. } => format!(
                "{}: {error}; the previous certificate stays in service",
                trigger.label()
            ),
        }
    }
    fn message(&self) -> &'static str {
        match self {
            CertificateEvent::Reloaded { .. } => "TLS certificate reloaded",
            CertificateEvent::Refused { .. } => "TLS certificate reload refused",
        }
    }
}

/// Identity of a file's current content, as cheaply as the file system tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    // `metadata` follows symlinks: a certbot `live/` link switched to a new archive file counts.
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

#[derive(Debug)]
struct WatchState {
    cert: PathBuf,
    key: PathBuf,
    /// Stamps of (cert, key) at the last attempt, successful or not: a refused pair is not
    /// retried (or logged again) until the files change once more.
    seen: (Option<FileStamp>, Option<FileStamp>),
}

/// Owns the served certificate: initial load, reloads, and the file watcher.
#[derive(Debug)]
pub struct CertReloader {
    resolver: Arc<SwappableCert>,
    state: Mutex<WatchState>,
    global: Arc<GlobalMetrics>,
}

/// SHA-256 of the leaf certificate, hex.
pub fn fingerprint(key: &CertifiedKey) -> String {
    let digest = key
        .cert
        .first()
        .map(|c| Sha256::digest(c.as_ref()))
        .unwrap_or_default();
    digest.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `notAfter` of the leaf, seconds since the Unix epoch, and as text.
fn leaf_not_after(key: &CertifiedKey) -> Option<(i64, String)> {
    let der = key.cert.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = parsed.validity().not_after;
    Some((not_after.timestamp(), not_after.to_string()))
}

impl CertReloader {
    /// Loads the initial pair; failing here fails start-up.
    pub fn new(cert: &Path, key: &Path, global: Arc<GlobalMetrics>) -> Result<Self, TlsError> {
        let seen = (stamp(cert), stamp(key));
        let certified = load_certified_key(cert, key)?;
        if let Some((not_after, _)) = leaf_not_after(&certified) {
            global.cert_not_after.store(not_after, Ordering::Relaxed);
        }
        Ok(Self {
            resolver: Arc::new(SwappableCert {
                current: ArcSwap::new(certified),
            }),
            state: Mutex::new(WatchState {
                cert: cert.to_owned(),
                key: key.to_owned(),
                seen,
            }),
            global,
        })
    }

    /// The server configuration for the public ports, resolving through this reloader. Shards
    /// keep this one `Arc<ServerConfig>` for their whole life.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        super::public_server_config(self.resolver.clone())
    }

    /// The pair now served.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.resolver.current.load_full()
    }

    /// Loads the configured pair and swaps it in if valid (SIGHUP).
    pub fn reload(&self, trigger: Trigger) -> ReloadOutcome {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.seen = (stamp(&state.cert), stamp(&state.key));
        self.load_and_swap(&state, trigger)
    }

    /// Reloads only if either file changed since the last attempt (the watcher's poll).
    pub fn reload_if_changed(&self) -> ReloadOutcome {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = (stamp(&state.cert), stamp(&state.key));
        if now == state.seen {
            return ReloadOutcome::Unchanged;
        }
        state.seen = now;
        self.load_and_swap(&state, Trigger::FileChange)
    }

    /// New paths from a configuration reload; loaded at once.
    pub fn set_paths(&self, cert: &Path, key: &Path) -> ReloadOutcome {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = (state.cert.clone(), state.key.clone());
        state.cert = cert.to_owned();
        state.key = key.to_owned();
        state.seen = (stamp(cert), stamp(key));
        let outcome = self.load_and_swap(&state, Trigger::ConfigChange);
        if matches!(outcome, ReloadOutcome::Refused(_)) {
            // Keep watching the files actually served.
            (state.cert, state.key) = previous;
            state.seen = (stamp(&state.cert), stamp(&state.key));
        }
        outcome
    }

    fn load_and_swap(&self, state: &WatchState, trigger: Trigger) -> ReloadOutcome {
        match load_certified_key(&state.cert, &state.key) {
            Ok(certified) => {
                let fingerprint = fingerprint(&certified);
                let (not_after, not_after_text) =
                    leaf_not_after(&certified).unwrap_or((0, "unknown".into()));
                self.resolver.current.store(certified);
                self.global
                    .cert_not_after
                    .store(not_after, Ordering::Relaxed);
                self.global.cert_reloads_ok.fetch_add(1, Ordering::Relaxed);
                security::record(
                    "tls::reload",
                    &CertificateEvent::Reloaded {
                        cert: &state.cert,
                        trigger,
                        fingerprint: &fingerprint,
                        not_after: not_after_text,
                    },
                );
                ReloadOutcome::Reloaded { fingerprint }
            }
            Err(error) => {
                self.global
                    .cert_reloads_refused
                    .fetch_add(1, Ordering::Relaxed);
                security::record(
                    "tls::reload",
                    &CertificateEvent::Refused {
                        cert: &state.cert,
                        trigger,
                        error: &error,
                    },
                );
                tracing::error!(error = %error, "TLS certificate reload refused; keeping the previous certificate");
                ReloadOutcome::Refused(error)
            }
        }
    }

    /// Polls the files' metadata every `interval` on a thread of its own.
    pub fn spawn_watcher(self: Arc<Self>, interval: Duration) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("cert-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    let _ = self.reload_if_changed();
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{crypto_provider, ensure_dev_certificate};

    /// A fresh development certificate in `dir`, issued by the CA already there (if any).
    fn issue(dir: &Path) -> crate::tls::CertPaths {
        let _ = std::fs::remove_file(dir.join("server.pem"));
        let _ = std::fs::remove_file(dir.join("server.key"));
        ensure_dev_certificate(dir, &[]).expect("issues")
    }

    #[test]
    fn a_valid_new_pair_is_swapped_in_and_a_bad_one_refused_keeping_the_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = issue(dir.path());
        let global = Arc::new(GlobalMetrics::default());
        let reloader = CertReloader::new(&paths.cert, &paths.key, global.clone()).expect("loads");
        let first = fingerprint(&reloader.current());
        assert!(global.cert_not_after.load(Ordering::Relaxed) > 0);
        assert!(matches!(
            reloader.reload_if_changed(),
            ReloadOutcome::Unchanged
        ));

        // Garbage in the certificate file: refused, the first pair still served.
        std::fs::write(&paths.cert, "-----BEGIN CERTIFICATE-----\n!!\n").expect("writes");
        assert!(matches!(
            reloader.reload(Trigger::Signal),
            ReloadOutcome::Refused(_)
        ));
        assert_eq!(fingerprint(&reloader.current()), first);
        assert!(
            matches!(reloader.reload_if_changed(), ReloadOutcome::Unchanged),
            "a refused pair is not retried until the files change again"
        );

        // A key that belongs to another certificate: refused.
        let other = tempfile::tempdir().expect("tempdir");
        let foreign = issue(other.path());
        std::fs::copy(&foreign.cert, &paths.cert).expect("copies");
        match reloader.reload_if_changed() {
            ReloadOutcome::Refused(TlsError::KeyMismatch { .. }) => {}
            other => panic!("expected a key mismatch, got {other:?}"),
        }
        assert_eq!(fingerprint(&reloader.current()), first);

        // A proper new pair: swapped in.
        let renewed = issue(dir.path());
        match reloader.reload_if_changed() {
            ReloadOutcome::Reloaded { fingerprint: new } => assert_ne!(new, first),
            other => panic!("expected a reload, got {other:?}"),
        }
        assert_ne!(fingerprint(&reloader.current()), first);
        assert_eq!(global.cert_reloads_ok.load(Ordering::Relaxed), 1);
        assert_eq!(global.cert_reloads_refused.load(Ordering::Relaxed), 2);

        // New paths that do not load leave the served pair and the watched paths alone.
        let served = fingerprint(&reloader.current());
        assert!(matches!(
            reloader.set_paths(Path::new("/nonexistent.pem"), &renewed.key),
            ReloadOutcome::Refused(TlsError::Read { .. })
        ));
        assert_eq!(fingerprint(&reloader.current()), served);
        assert!(matches!(
            reloader.reload(Trigger::Signal),
            ReloadOutcome::Reloaded { .. }
        ));
    }

    /// Runs a TLS handshake in memory; returns the leaf certificate the client was served.
    fn handshake(server_config: Arc<ServerConfig>, ca: &Path) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
            roots.add(cert.expect("pem")).expect("root");
        }
        let client_config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), name).expect("client");
        let mut server = rustls::ServerConnection::new(server_config).expect("server");
        let mut wire = Vec::new();
        for _ in 0..10 {
            wire.clear();
            client.write_tls(&mut wire).expect("client writes");
            server.read_tls(&mut wire.as_slice()).expect("server reads");
            server.process_new_packets().expect("server accepts");
            wire.clear();
            server.write_tls(&mut wire).expect("server writes");
            client.read_tls(&mut wire.as_slice()).expect("client reads");
            client.process_new_packets().expect("client accepts");
            if !client.is_handshaking() {
                break;
            }
        }
        assert!(!client.is_handshaking(), "handshake did not finish");
        client.peer_certificates().expect("served a certificate")[0]
            .as_ref()
            .to_vec()
    }

    #[test]
    fn new_handshakes_on_the_same_server_config_get_the_reloaded_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = issue(dir.path());
        let reloader = CertReloader::new(&paths.cert, &paths.key, Arc::default()).expect("loads");
        let config = reloader.server_config().expect("config");
        let first = handshake(config.clone(), &paths.ca);
        assert_eq!(first, reloader.current().cert[0].as_ref());
        issue(dir.path());
        assert!(matches!(
            reloader.reload(Trigger::Signal),
            ReloadOutcome::Reloaded { .. }
        ));
        let second = handshake(config, &paths.ca);
        assert_ne!(first, second);
        assert_eq!(second, reloader.current().cert[0].as_ref());
    }
}
