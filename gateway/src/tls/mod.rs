//! TLS for the gateway's public ports: loading and checking the server certificate and key
//! (PEM), building the rustls server configuration (ring provider, TLS 1.3 and 1.2 only, no client
//! certificates), and, in [`certgen`], the self-signed development certificate generated when no
//! certificate is configured. Every failure is a [`TlsError`] naming the file, what is wrong with
//! it and what to do, because a bad certificate is the most common reason a gateway will not start.

pub mod cert_reload;
pub mod certgen;

#[cfg(test)]
mod tests;

pub use certgen::{CertPaths, ensure_dev_certificate};

use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// A certificate expiring sooner than this is loaded, with a warning in the log.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// The protocol versions offered: TLS 1.3 preferred, TLS 1.2 for older clients (ESP8266 builds
/// of the Blynk library). Anything older is refused during the handshake.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} file {}: {source}; check the path (tls.cert / tls.key) and its permissions", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not valid PEM ({detail}); the {what} must be PEM-encoded", path.display())]
    BadPem {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "{} holds no certificate (no `BEGIN CERTIFICATE` block); tls.cert must be a PEM certificate chain, leaf \
         first (for Let's Encrypt, fullchain.pem)",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "{} holds no private key (no `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY` \
         block); tls.key must be the PEM private key of the certificate (for Let's Encrypt, privkey.pem)",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    #[error("the private key in {} cannot be used: {detail}; use an RSA, ECDSA (P-256/P-384) or Ed25519 key", path.display())]
    UnsupportedKey { path: PathBuf, detail: String },
    #[error("certificate #{index} in {} cannot be parsed: {detail}", path.display())]
    BadCertificate {
        path: PathBuf,
        index: usize,
        detail: String,
    },
    #[error(
        "the private key {} does not belong to the certificate {}; configure the key that was issued with \
         this certificate",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "certificate #{index} in {} expired at {not_after}; renew it (or, for a generated development \
         certificate, delete the files to have them re-generated)",
        path.display()
    )]
    Expired {
        path: PathBuf,
        index: usize,
        not_after: String,
    },
    #[error("certificate #{index} in {} is not valid before {not_before}; check the system clock", path.display())]
    NotYetValid {
        path: PathBuf,
        index: usize,
        not_before: String,
    },
    #[error("cannot generate the development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(
        "{name:?} cannot go in a certificate: it is neither a DNS name nor an IP address (see tls.names)"
    )]
    BadName { name: String },
    #[error("cannot write {}: {source}; check that the data directory is writable", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "existing {} cannot be used to issue a new certificate ({detail}); delete ca.pem and ca.key to \
         generate a new development CA",
        path.display()
    )]
    BadCa { path: PathBuf, detail: String },
    #[error("rustls refused the configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider used for every TLS configuration in the gateway: ring, with its default
/// cipher suites and key exchange groups.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads a certificate chain and its key, and checks that they belong together and that every
/// certificate is valid now. The result can back a fresh [`ServerConfig`] or a certificate
/// resolver that swaps keys on reload.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certificates(cert)?;
    check_validity_periods(cert, &chain, SystemTime::now())?;
    let private_key = read_private_key(key)?;
    let signing_key = crypto_provider()
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| TlsError::UnsupportedKey {
            path: key.to_owned(),
            detail: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // `Unknown`: the key type cannot report its public half; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
            Ok(Arc::new(certified))
        }
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
        }
        Err(other) => Err(TlsError::BadCertificate {
            path: cert.to_owned(),
            index: 1,
            detail: other.to_string(),
        }),
    }
}

/// The server configuration for the public ports: TLS 1.3 and 1.2, no client authentication, and
/// ALPN offering what `conn::select::OFFERED_ALPN` lists (HTTP/1.1; device libraries offer
/// nothing and are told apart by their first bytes).
pub fn server_config(certified_key: Arc<CertifiedKey>) -> Result<Arc<ServerConfig>, TlsError> {
    public_server_config(Arc::new(SingleCertAndKey::from(certified_key)))
}

/// The one place the public ports' TLS policy is decided, whichever resolver supplies the key.
///
/// - The server picks the cipher suite from [`SERVER_SUITE_ORDER`], not the client's list: most
///   clients (OpenSSL, rustls) list AES-256-GCM/SHA-384 first, but SHA-384 runs in software on
///   CPUs whose SHA extensions only cover SHA-256, and the handshake's key schedule hashes a lot;
///   AES-128-GCM/SHA-256 saves that per handshake at a security level no device threat model needs
///   more of.
/// - No TLS 1.3 session tickets: device libraries never resume, and each ticket is a random
///   value, a sealed record and a cache entry per handshake spent on nothing.
/// - ALPN: a client that offers protocols gets one we serve (the selector then knows the
///   protocol before any byte); rustls refuses a client whose offer has none of ours.
pub fn public_server_config(
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(server_crypto_provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.ignore_client_order = true;
    config.send_tls13_tickets = 0;
    config.alpn_protocols = crate::conn::select::OFFERED_ALPN
        .iter()
        .map(|protocol| protocol.to_vec())
        .collect();
    Ok(Arc::new(config))
}

/// Cipher suites in the order the server chooses them (see [`public_server_config`]).
pub static SERVER_SUITE_ORDER: &[rustls::CipherSuite] = &[
    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
];

/// The ring provider with its suites sorted by [`SERVER_SUITE_ORDER`]; a suite missing from that
/// list keeps its place after the listed ones, so a ring upgrade never silently drops one.
fn server_crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|suite| {
        SERVER_SUITE_ORDER
            .iter()
            .position(|&listed| listed == suite.suite())
            .unwrap_or(SERVER_SUITE_ORDER.len())
    });
    Arc::new(provider)
}

/// [`load_certified_key`] followed by [`server_config`].
pub fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    server_config(load_certified_key(cert, key)?)
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file, in order; other PEM blocks (a key bundled in) are skipped.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file("certificate", path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            what: "certificate",
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file("private key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => TlsError::BadPem {
            what: "private key",
            path: path.to_owned(),
            detail: other.to_string(),
        },
    })
}

/// Refuses a chain with a certificate outside its validity period at `now`; warns when the leaf
/// expires soon. Positions are 1-based in messages, as people count them in the file.
fn check_validity_periods(
    path: &Path,
    chain: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), TlsError> {
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    for (position, der) in chain.iter().enumerate() {
        let index = position + 1;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::BadCertificate {
                path: path.to_owned(),
                index,
                detail: e.to_string(),
            })?;
        let validity = parsed.validity();
        if validity.not_after.timestamp() < now_secs {
            return Err(TlsError::Expired {
                path: path.to_owned(),
                index,
                not_after: validity.not_after.to_string(),
            });
        }
        if validity.not_before.timestamp() > now_secs {
            return Err(TlsError::NotYetValid {
                path: path.to_owned(),
                index,
                not_before: validity.not_before.to_string(),
            });
        }
        let left = u64::try_from(validity.not_after.timestamp() - now_secs).unwrap_or(0);
        if index == 1 && left < EXPIRY_WARNING.as_secs() {
            tracing::warn!(
                cert = %path.display(),
                not_after = %validity.not_after,
                "the TLS certificate expires in less than {} days; renew it",
                EXPIRY_WARNING.as_secs() / 86_400
            );
        }
    }
    Ok(())
}
