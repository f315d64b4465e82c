//! PEM decoding for the mutual TLS of a remote store link, shared by both ends (the store's
//! listener and the gateway's link): every certificate of a PEM document, or its private key, with
//! an error saying what was wrong. No IO: each end reads its own files and adds the path and the
//! setting the file came from to the error.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

/// Why a PEM document cannot be used (always the operator's: the file is theirs).
#[derive(Debug, Error, PartialEq, Eq)]
#[error("no usable PEM {kind} ({detail})")]
pub struct PemError {
    pub kind: &'static str,
    pub detail: String,
}

/// Every certificate in `pem`, in order; at least one.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let unusable = |detail: String| PemError {
        kind: "certificate",
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(e.to_string()))?;
    if certs.is_empty() {
        return Err(unusable("no `BEGIN CERTIFICATE` block".into()));
    }
    Ok(certs)
}

/// The first private key in `pem`.
pub fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| PemError {
        kind: "private key",
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_documents_say_what_is_missing() {
        let err = certificates(b"").expect_err("no certificate");
        assert_eq!(err.kind, "certificate");
        assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");
        let key_only =
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        assert!(
            certificates(key_only).is_err(),
            "a key is not a certificate"
        );
        let err = private_key(b"-----BEGIN PRIVATE KEY-----\nnot base64!\n").expect_err("garbage");
        assert_eq!(err.kind, "private key");
        assert!(private_key(b"").is_err());
    }
}
