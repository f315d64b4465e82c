//! How the load generator checks the gateway's certificate: the chain is verified in full (rustls'
//! webpki verifier against the given CA) the first time, and afterwards recognised by its exact
//! bytes, since every one of thousands of simulated devices is shown the same chain. The
//! handshake's own signature (TLS 1.3 CertificateVerify, which proves the server holds the key
//! for *this* session) is still checked on every handshake.
//!
//! Why: a 100 % TLS storm on one machine is two TLS stacks sharing the cores, and re-verifying
//! the same chain (an ECDSA verification plus certificate parsing per handshake) was about a
//! sixth of the load generator's CPU, time the gateway under test then did not get. The gateway
//! does the same work either way. A run is bounded in time, so the chain's validity period is
//! judged once, at the first handshake.

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::{Arc, Mutex, PoisonError};

/// A chain that passed full verification for a server name.
#[derive(Debug, PartialEq, Eq)]
struct VerifiedChain {
    end_entity: Vec<u8>,
    intermediates: Vec<Vec<u8>>,
    server_name: String,
}

impl VerifiedChain {
    fn of(
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
    ) -> Self {
        Self {
            end_entity: end_entity.to_vec(),
            intermediates: intermediates.iter().map(|c| c.to_vec()).collect(),
            server_name: server_name.to_str().into_owned(),
        }
    }

    fn is(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
    ) -> bool {
        self.end_entity == end_entity.as_ref()
            && self.intermediates.len() == intermediates.len()
            && self
                .intermediates
                .iter()
                .zip(intermediates)
                .all(|(known, shown)| known.as_slice() == shown.as_ref())
            && self.server_name == server_name.to_str()
    }
}

/// Full webpki verification once per distinct chain, then recognition by bytes.
#[derive(Debug)]
pub struct ChainVerifiedOnce {
    webpki: Arc<WebPkiServerVerifier>,
    verified: Mutex<Vec<VerifiedChain>>,
}

/// Distinct chains remembered at most (a certificate reload during a run adds one).
const MAX_REMEMBERED_CHAINS: usize = 4;

impl ChainVerifiedOnce {
    pub fn new(webpki: Arc<WebPkiServerVerifier>) -> Self {
        Self {
            webpki,
            verified: Mutex::new(Vec::new()),
        }
    }
}

impl ServerCertVerifier for ChainVerifiedOnce {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified
            .iter()
            .any(|chain| chain.is(end_entity, intermediates, server_name))
        {
            return Ok(ServerCertVerified::assertion());
        }
        let result = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        if verified.len() < MAX_REMEMBERED_CHAINS {
            verified.push(VerifiedChain::of(end_entity, intermediates, server_name));
        }
        Ok(result)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    fn ca() -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        (cert.der().clone(), Issuer::new(params, key))
    }

    fn leaf(issuer: &Issuer<'static, KeyPair>) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&key, issuer)
            .expect("leaf")
            .der()
            .clone()
    }

    fn verifier(ca: &CertificateDer<'static>) -> ChainVerifiedOnce {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
        ChainVerifiedOnce::new(webpki)
    }

    fn check(v: &ChainVerifiedOnce, cert: &CertificateDer<'_>, name: &str) -> bool {
        let name = ServerName::try_from(name.to_owned()).expect("name");
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn a_good_chain_is_verified_once_then_recognised() {
        let (ca_cert, issuer) = ca();
        let v = verifier(&ca_cert);
        let good = leaf(&issuer);
        assert!(check(&v, &good, "localhost"));
        assert_eq!(v.verified.lock().expect("lock").len(), 1);
        assert!(check(&v, &good, "localhost"));
        assert_eq!(
            v.verified.lock().expect("lock").len(),
            1,
            "recognised, not added"
        );
    }

    #[test]
    fn anything_else_is_verified_in_full_and_refused() {
        let (ca_cert, issuer) = ca();
        let (_, stranger) = ca();
        let v = verifier(&ca_cert);
        let good = leaf(&issuer);
        assert!(check(&v, &good, "localhost"));
        // Another CA's certificate, before and after a good chain was remembered.
        let forged = leaf(&stranger);
        assert!(!check(&v, &forged, "localhost"));
        assert!(!check(&v, &forged, "localhost"));
        // The remembered chain for another name: the name is part of what was verified.
        assert!(!check(&v, &good, "gateway.example"));
        assert_eq!(v.verified.lock().expect("lock").len(), 1);
    }
}
