//! A private CA and a relay certificate for `localhost`, made fresh per test, and the relay's
//! rustls configuration: what a self-hosted relay with its own CA looks like.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA (its PEM, for `mail.smtp.ca_file`) and a relay configuration whose certificate for
/// `localhost` that CA signed.
pub struct RelayPki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

impl RelayPki {
    pub fn new() -> RelayPki {
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().expect("relay key");
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("relay parameters")
            .signed_by(&key, &issuer)
            .expect("relay certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("relay TLS configuration");
        RelayPki {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        }
    }

    /// Writes the CA's PEM to `dir/ca.pem`.
    pub fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write the CA file");
        path
    }
}
