//! The two files `[mail.smtp]` names, read for the mailer: the password file (one line,
//! never printed, a warning when others may read it) and the CA file (PEM certificates).
//! Both reads are bounded, so a path to the wrong, huge file is refused cheaply.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{ConfigError, MAX_CA_FILE_BYTES, MAX_PASSWORD_FILE_BYTES};

/// A password read from `password_file`; never printed.
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Reads at most `limit + 1` bytes, so a wrong path to a huge file is refused cheaply.
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<(Vec<u8>, fs::Metadata)> {
    let file = fs::File::open(path)?;
    let meta = file.metadata()?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    Ok((bytes, meta))
}

pub(crate) fn read_password(path: &Path) -> Result<Secret, ConfigError> {
    let content = |problem| ConfigError::PasswordFileContent {
        path: path.to_owned(),
        problem,
    };
    let (bytes, meta) = read_bounded(path, MAX_PASSWORD_FILE_BYTES).map_err(|source| {
        ConfigError::PasswordFile {
            path: path.to_owned(),
            source,
        }
    })?;
    if !meta.is_file() {
        return Err(content("is not a regular file"));
    }
    if bytes.len() as u64 > MAX_PASSWORD_FILE_BYTES {
        return Err(content(
            "is larger than 4 KiB: it should hold one line, the password",
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| content("is not UTF-8 text"))?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(content("is empty: it should hold the password"));
    }
    if password.contains('\n') {
        return Err(content(
            "holds more than one line: it should hold the password alone",
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "mail.smtp.password_file can be read by other users than its owner; chmod 600 it"
        );
    }
    Ok(Secret(password.to_owned()))
}

pub(crate) fn read_ca(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let content = |problem: &str| ConfigError::CaFileContent {
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let (bytes, _) =
        read_bounded(path, MAX_CA_FILE_BYTES).map_err(|source| ConfigError::CaFile {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_CA_FILE_BYTES {
        return Err(content("is larger than 1 MiB"));
    }
    if !bytes
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(content(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    lettre::transport::smtp::client::Certificate::from_pem(&bytes).map_err(|e| {
        ConfigError::CaFileContent {
            path: path.to_owned(),
            problem: format!("holds a certificate that cannot be decoded: {e}"),
        }
    })?;
    Ok(bytes)
}
