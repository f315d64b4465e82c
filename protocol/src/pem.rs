//! Reading the PEM files of a remote store link's mutual TLS the same way at both ends (the
//! store's listener and the gateway's link): every certificate in a file, or its private key,
//! with a failure that names the file and what was wrong with it. Each end wraps [`PemError`]
//! in its own error, adding the setting the file came from and the hint to `gen-certs`.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a PEM file cannot be used (always the operator's: the file is theirs).
#[derive(Debug, Error)]
pub enum PemError {
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{} holds no usable PEM {kind} ({detail})", path.display())]
    Unusable {
        path: PathBuf,
        kind: &'static str,
        detail: String,
    },
}

/// Every certificate in `path`, in order; at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let unusable = |detail: String| PemError::Unusable {
        path: path.to_owned(),
        kind: "certificate",
        detail,
    };
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(e.to_string()))?;
    if certs.is_empty() {
        return Err(unusable("no `BEGIN CERTIFICATE` block".into()));
    }
    Ok(certs)
}

/// The first private key in `path`.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| PemError::Unusable {
        path: path.to_owned(),
        kind: "private key",
        detail: e.to_string(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|error| PemError::Read {
        path: path.to_owned(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_empty_and_garbage_files_say_which_and_why() {
        let dir = std::env::temp_dir().join(format!("portcullis-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let missing = dir.join("missing.pem");
        assert!(matches!(certificates(&missing), Err(PemError::Read { .. })));
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, b"").expect("write");
        let err = certificates(&empty).expect_err("no certificate");
        assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, b"-----BEGIN PRIVATE KEY-----\nnot base64!\n").expect("write");
        let err = private_key(&garbage).expect_err("garbage");
        assert!(
            matches!(
                err,
                PemError::Unusable {
                    kind: "private key",
                    ..
                }
            ),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
