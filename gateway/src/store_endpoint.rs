//! Where the gateway reaches the store: its local Unix socket (a child store or an externally
//! managed one), or a remote store over mutual TLS (`[store] remote`). This module checks the
//! `store.remote*` keys when the configuration is validated, and at start loads the CA that
//! signed the store's certificate and this gateway's client certificate into one rustls client
//! configuration (ring, TLS 1.3 only, as the store requires) that every store link shares: the
//! shards' non-blocking links, the control link, the metrics scraper and the admin CLI.

use crate::config::{Config, StoreSection};
use portcullis_protocol::pem::{self, PemError};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// How the operator is told to get the files.
const CERT_HINT: &str = "make them on the store host with `portcullis-store gen-certs DIR --store-name HOST \
--gateway NAME` and copy ca.pem and gateway-NAME.pem/.key here";

/// A way to reach the store. Cheap to clone (the TLS material is shared).
#[derive(Debug, Clone)]
pub enum StoreEndpoint {
    /// A Unix socket on this host (mode 0600, same uid).
    Unix(PathBuf),
    /// A store on another host, over TCP with mutual TLS.
    Remote(Arc<RemoteStore>),
}

/// A remote store: where it is, what name its certificate must carry, and our TLS identity.
pub struct RemoteStore {
    /// `host:port` as configured, for messages.
    pub addr: String,
    /// Resolved once at start (a shard must never wait on DNS), tried in order.
    pub addrs: Vec<SocketAddr>,
    pub server_name: ServerName<'static>,
    pub tls: Arc<ClientConfig>,
}

impl fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStore")
            .field("addr", &self.addr)
            .field("addrs", &self.addrs)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for StoreEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreEndpoint::Unix(path) => write!(f, "{}", path.display()),
            StoreEndpoint::Remote(remote) => write!(f, "{} (mutual TLS)", remote.addr),
        }
    }
}

/// Why the remote store's TLS material or address cannot be used (all operator mistakes).
#[derive(Debug, Error)]
pub enum EndpointError {
    #[error("cannot read {key} {}: {error}; {CERT_HINT}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{key} {} holds no usable PEM {kind} ({detail}); {CERT_HINT}", path.display())]
    BadPem {
        key: &'static str,
        kind: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("store.remote_cert_file and store.remote_key_file cannot be used together: {0}")]
    Identity(String),
    #[error("store.remote {addr:?} does not resolve to an address: {detail}")]
    Resolve { addr: String, detail: String },
    /// `store.remote` has no `:PORT`. The texts of this and the next variants name the value, not
    /// the key: validation adds the key (`store.remote` or `store.remote_server_name`).
    #[error("{addr:?} is not HOST:PORT")]
    NotHostPort { addr: String },
    /// The port of `store.remote` is not a number from 1 to 65535.
    #[error("{addr:?}: the port must be 1 to 65535")]
    BadPort { addr: String },
    /// The host of `store.remote` is empty or has spaces.
    #[error("{addr:?}: the host is missing or has spaces")]
    BadHost { addr: String },
    /// The name the store's certificate must carry is neither a DNS name nor an IP address.
    #[error("{name:?} is not a DNS name or IP address")]
    BadServerName { name: String },
}

/// Splits `host:port` (`[v6]:port` too) and checks both halves; the error says what is wrong.
fn split_host_port(addr: &str) -> Result<(&str, u16), EndpointError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| EndpointError::NotHostPort {
            addr: addr.to_owned(),
        })?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 =
        port.parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| EndpointError::BadPort {
                addr: addr.to_owned(),
            })?;
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(EndpointError::BadHost {
            addr: addr.to_owned(),
        });
    }
    Ok((host, port))
}

/// The name the store's certificate must carry: `remote_server_name`, else the host of `remote`.
fn server_name(section: &StoreSection, remote: &str) -> Result<ServerName<'static>, EndpointError> {
    let name = match &section.remote_server_name {
        Some(name) => name.clone(),
        None => split_host_port(remote)?.0.to_owned(),
    };
    // rustls' error only says "invalid DNS name"; ours names the value.
    ServerName::try_from(name.clone()).map_err(|_| EndpointError::BadServerName { name })
}

/// Checks the `store.remote*` keys; on failure names the key and the rule.
pub fn validate(section: &StoreSection) -> Result<(), (&'static str, String)> {
    let files = [
        ("store.remote_ca_file", &section.remote_ca_file),
        ("store.remote_cert_file", &section.remote_cert_file),
        ("store.remote_key_file", &section.remote_key_file),
    ];
    let Some(remote) = &section.remote else {
        for (key, value) in files {
            if value.is_some() {
                return Err((key, "is only used with store.remote; set that too".into()));
            }
        }
        if section.remote_server_name.is_some() {
            return Err((
                "store.remote_server_name",
                "is only used with store.remote; set that too".into(),
            ));
        }
        return Ok(());
    };
    split_host_port(remote).map_err(|why| ("store.remote", why.to_string()))?;
    for (key, value) in files {
        match value {
            None => {
                return Err((
                    key,
                    format!("is required with store.remote (mutual TLS only); {CERT_HINT}"),
                ));
            }
            Some(path) if path.as_os_str().is_empty() => {
                return Err((key, "must not be empty".into()));
            }
            Some(_) => {}
        }
    }
    // The remote store is not ours to start or configure: keys for a local store would be
    // silently ignored, so they are refused.
    for (key, set) in [
        ("store.socket", section.socket.is_some()),
        ("store.binary", section.binary.is_some()),
        ("store.key_file", section.key_file.is_some()),
    ] {
        if set {
            return Err((
                key,
                "cannot be combined with store.remote (that store is configured on its own host)"
                    .into(),
            ));
        }
    }
    server_name(section, remote).map_err(|why| ("store.remote_server_name", why.to_string()))?;
    Ok(())
}

/// Reads and decodes one PEM file; a failure names the setting the file came from.
fn read_pem<T>(
    key: &'static str,
    path: &Path,
    decode: fn(&[u8]) -> Result<T, PemError>,
) -> Result<T, EndpointError> {
    let bytes = std::fs::read(path).map_err(|error| EndpointError::Read {
        key,
        path: path.to_owned(),
        error,
    })?;
    decode(&bytes).map_err(|e| EndpointError::BadPem {
        key,
        kind: e.kind,
        path: path.to_owned(),
        detail: e.detail,
    })
}

impl StoreEndpoint {
    /// The endpoint of a validated configuration, loading the TLS files of a remote store.
    pub fn from_config(config: &Config) -> Result<Self, EndpointError> {
        let section = &config.store;
        let (Some(remote), Some(ca), Some(cert), Some(key)) = (
            &section.remote,
            &section.remote_ca_file,
            &section.remote_cert_file,
            &section.remote_key_file,
        ) else {
            return Ok(StoreEndpoint::Unix(config.store_socket_path()));
        };
        let resolve_err = |detail: String| EndpointError::Resolve {
            addr: remote.clone(),
            detail,
        };
        // Validation already refused a bad address or name; should one get here anyway, the
        // message still says it is store.remote that cannot be used.
        let server_name = server_name(section, remote).map_err(|e| resolve_err(e.to_string()))?;
        let addrs: Vec<SocketAddr> = remote
            .to_socket_addrs()
            .map_err(|e| resolve_err(e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(resolve_err("no addresses".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca_cert in read_pem("store.remote_ca_file", ca, pem::certificates)? {
            roots.add(ca_cert).map_err(|e| EndpointError::BadPem {
                key: "store.remote_ca_file",
                kind: "CA certificate",
                path: ca.clone(),
                detail: e.to_string(),
            })?;
        }
        let chain = read_pem("store.remote_cert_file", cert, pem::certificates)?;
        let private_key = read_pem("store.remote_key_file", key, pem::private_key)?;
        let tls = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| EndpointError::Identity(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private_key)
            .map_err(|e| EndpointError::Identity(e.to_string()))?;
        Ok(StoreEndpoint::Remote(Arc::new(RemoteStore {
            addr: remote.clone(),
            addrs,
            server_name,
            tls: Arc::new(tls),
        })))
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, StoreEndpoint::Remote(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("store.lan:7701").ok(),
            Some(("store.lan", 7701))
        );
        assert_eq!(split_host_port("[::1]:7701").ok(), Some(("::1", 7701)));
        assert!(matches!(
            split_host_port("store.lan"),
            Err(EndpointError::NotHostPort { .. })
        ));
        assert!(matches!(
            split_host_port("store.lan:0"),
            Err(EndpointError::BadPort { .. })
        ));
        assert!(matches!(
            split_host_port(":7701"),
            Err(EndpointError::BadHost { .. })
        ));
        // The text validation puts after the key is unchanged.
        let err = split_host_port("store.lan:0").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("\"store.lan:0\": the port must be 1 to 65535")
        );
    }
}
