//! Where a client reaches the store: its local Unix socket (a child store or an externally
//! managed one), or a remote store over mutual TLS. [`StoreEndpoint::open`] turns a plain
//! [`EndpointSpec`] (the gateway's configuration builds one from `[store]`) into an endpoint,
//! loading for a remote store the CA that signed its certificate and this gateway's client
//! certificate into one rustls client configuration (ring, TLS 1.3 only, as the store requires)
//! that every link of the process shares. [`split_host_port`] and [`server_name`] are the checks
//! the gateway's configuration validation runs on `store.remote` and `store.remote_server_name`.
//!
//! The messages name the gateway's settings (`store.remote_ca_file`, ...): that is where an
//! operator fixes a file, and the only place a remote endpoint comes from.

use crate::pem::{self, PemError};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// How the operator is told to get the files of a remote store link.
pub const CERT_HINT: &str = "make them on the store host with `portcullis-store gen-certs DIR --store-name HOST \
--gateway NAME` and copy ca.pem and gateway-NAME.pem/.key here";

/// The gateway settings the files of a [`RemoteSpec`] come from, named in messages.
const CA_FILE_SETTING: &str = "store.remote_ca_file";
const CERT_FILE_SETTING: &str = "store.remote_cert_file";
const KEY_FILE_SETTING: &str = "store.remote_key_file";

/// A way to reach the store. Cheap to clone (the TLS material is shared).
#[derive(Debug, Clone)]
pub enum StoreEndpoint {
    /// A Unix socket on this host (mode 0600, same uid).
    Unix(PathBuf),
    /// A store on another host, over TCP with mutual TLS.
    Remote(Arc<RemoteStore>),
}

/// Where the store is, as plain settings; [`StoreEndpoint::open`] makes an endpoint of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSpec {
    /// A Unix socket on this host.
    Unix(PathBuf),
    /// A store on another host, over mutual TLS.
    Remote(RemoteSpec),
}

/// A remote store's settings (`store.remote*` in the gateway's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSpec {
    /// `HOST:PORT` (`[v6]:PORT` too); resolved once, when the endpoint is opened.
    pub addr: String,
    /// The name the store's certificate must carry; `None`: the host part of `addr`.
    pub server_name: Option<String>,
    /// CA certificate (PEM) that signed the store's certificate.
    pub ca_file: PathBuf,
    /// This client's certificate chain (PEM).
    pub cert_file: PathBuf,
    /// The private key of `cert_file` (PEM).
    pub key_file: PathBuf,
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
pub fn split_host_port(addr: &str) -> Result<(&str, u16), EndpointError> {
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

/// The name the store's certificate must carry: `configured` (`remote_server_name`), else the
/// host of `addr`.
pub fn server_name(
    addr: &str,
    configured: Option<&str>,
) -> Result<ServerName<'static>, EndpointError> {
    let name = match configured {
        Some(name) => name.to_owned(),
        None => split_host_port(addr)?.0.to_owned(),
    };
    // rustls' error only says "invalid DNS name"; ours names the value.
    ServerName::try_from(name.clone()).map_err(|_| EndpointError::BadServerName { name })
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
    /// The endpoint of `spec`, loading the TLS files of a remote store and resolving its
    /// address (once: a shard must never wait on DNS).
    pub fn open(spec: &EndpointSpec) -> Result<Self, EndpointError> {
        let remote = match spec {
            EndpointSpec::Unix(path) => return Ok(StoreEndpoint::Unix(path.clone())),
            EndpointSpec::Remote(remote) => remote,
        };
        let RemoteSpec {
            addr,
            server_name: configured_name,
            ca_file: ca,
            cert_file: cert,
            key_file: key,
        } = remote;
        let resolve_err = |detail: String| EndpointError::Resolve {
            addr: addr.clone(),
            detail,
        };
        // Validation already refused a bad address or name; should one get here anyway, the
        // message still says it is store.remote that cannot be used.
        let server_name = server_name(addr, configured_name.as_deref())
            .map_err(|e| resolve_err(e.to_string()))?;
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| resolve_err(e.to_string()))?
            .collect();
        if addrs.is_empty() {
            return Err(resolve_err("no addresses".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca_cert in read_pem(CA_FILE_SETTING, ca, pem::certificates)? {
            roots.add(ca_cert).map_err(|e| EndpointError::BadPem {
                key: CA_FILE_SETTING,
                kind: "CA certificate",
                path: ca.clone(),
                detail: e.to_string(),
            })?;
        }
        let chain = read_pem(CERT_FILE_SETTING, cert, pem::certificates)?;
        let private_key = read_pem(KEY_FILE_SETTING, key, pem::private_key)?;
        let tls = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| EndpointError::Identity(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, private_key)
            .map_err(|e| EndpointError::Identity(e.to_string()))?;
        Ok(StoreEndpoint::Remote(Arc::new(RemoteStore {
            addr: addr.clone(),
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
