//! The development certificate: when no certificate is configured, the gateway issues itself one
//! on first start so that TLS works out of the box. It creates a small private CA (`ca.pem`, the
//! file clients are told to trust) and a server certificate signed by it for localhost, the
//! loopback addresses, the host name and any `tls.names`. Files are reused on later starts, so the
//! CA a client trusts stays the same; deleting `server.pem` re-issues the server certificate from
//! the same CA (for instance after adding names).

use super::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use std::collections::BTreeSet;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Server certificates live at most 825 days, the longest lifetime Apple platforms accept for a
/// TLS server certificate.
const SERVER_VALIDITY_DAYS: i64 = 825;

/// The development CA lives ten years, so trusting it is a one-time step.
const CA_VALIDITY_DAYS: i64 = 3650;

/// Certificates start a day in the past so a client with a slightly slow clock accepts them.
const CLOCK_SKEW_DAYS: i64 = 1;

/// Names every development certificate carries.
const DEFAULT_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

/// Where the development certificate files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// Server certificate followed by the CA certificate (the chain to serve).
    pub cert: PathBuf,
    /// Private key of the server certificate.
    pub key: PathBuf,
    /// The CA certificate clients should trust.
    pub ca: PathBuf,
    /// Whether this call created the server certificate (false: existing files were reused).
    pub generated: bool,
}

impl CertPaths {
    fn in_dir(tls_dir: &Path) -> Self {
        Self {
            cert: tls_dir.join("server.pem"),
            key: tls_dir.join("server.key"),
            ca: tls_dir.join("ca.pem"),
            generated: false,
        }
    }

    pub(super) fn ca_key(&self) -> PathBuf {
        self.ca.with_file_name("ca.key")
    }
}

/// Returns the development certificate in `tls_dir`, generating it first if `server.pem` or
/// `server.key` is missing. An existing CA (`ca.pem` + `ca.key`) is reused to sign a new server
/// certificate; otherwise a new CA is created too.
pub fn ensure_dev_certificate(
    tls_dir: &Path,
    extra_names: &[String],
) -> Result<CertPaths, TlsError> {
    let mut paths = CertPaths::in_dir(tls_dir);
    if paths.cert.is_file() && paths.key.is_file() {
        return Ok(paths);
    }
    create_private_dir(tls_dir)?;
    let names = certificate_names(extra_names, host_name().as_deref())?;
    let now = OffsetDateTime::now_utc();
    let ca = load_or_create_ca(&paths, now)?;

    let mut params = CertificateParams::new(names.clone())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis development server");
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::days(CLOCK_SKEW_DAYS);
    // A certificate outliving its CA would be rejected by clients once the CA expires anyway.
    params.not_after = (now + Duration::days(SERVER_VALIDITY_DAYS)).min(ca.not_after);
    let server_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let server_cert = params.signed_by(&server_key, &ca.issuer)?;

    // The key goes first: the certificate file is what marks the pair as complete.
    write_atomically(&paths.key, server_key.serialize_pem().as_bytes(), 0o600)?;
    let chain = format!("{}{}", server_cert.pem(), ca.pem);
    write_atomically(&paths.cert, chain.as_bytes(), 0o644)?;
    tracing::info!(
        cert = %paths.cert.display(),
        ca = %paths.ca.display(),
        names = ?names,
        "generated a development TLS certificate; clients must trust the CA in ca.pem"
    );
    paths.generated = true;
    Ok(paths)
}

struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    not_after: OffsetDateTime,
}

fn load_or_create_ca(paths: &CertPaths, now: OffsetDateTime) -> Result<DevCa, TlsError> {
    let ca_key_path = paths.ca_key();
    if paths.ca.is_file() && ca_key_path.is_file() {
        let bad_ca = |path: &Path, detail: String| TlsError::BadCa {
            path: path.to_owned(),
            detail,
        };
        let pem =
            std::fs::read_to_string(&paths.ca).map_err(|e| bad_ca(&paths.ca, e.to_string()))?;
        let key_pem = std::fs::read_to_string(&ca_key_path)
            .map_err(|e| bad_ca(&ca_key_path, e.to_string()))?;
        let not_after = ca_not_after(&paths.ca, &pem)?;
        // An expiring CA is replaced rather than used to sign a certificate that dies with it.
        if not_after > now + Duration::days(30) {
            let key =
                KeyPair::from_pem(&key_pem).map_err(|e| bad_ca(&ca_key_path, e.to_string()))?;
            let issuer = Issuer::from_ca_cert_pem(&pem, key)
                .map_err(|e| bad_ca(&paths.ca, e.to_string()))?;
            return Ok(DevCa {
                issuer,
                pem,
                not_after,
            });
        }
        tracing::warn!(ca = %paths.ca.display(), "the development CA expires within 30 days; generating a new one");
    }

    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis development CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Portcullis");
    // Path length 0: this CA signs server certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::days(CLOCK_SKEW_DAYS);
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    let pem = cert.pem();
    write_atomically(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomically(&paths.ca, pem.as_bytes(), 0o644)?;
    let not_after = params.not_after;
    Ok(DevCa {
        issuer: Issuer::new(params, key),
        pem,
        not_after,
    })
}

/// When the existing CA at `path` (its text is `pem`) expires. A CA that does not parse is a
/// local file someone changed: `BadCa` tells the operator to delete it to get a new one.
fn ca_not_after(path: &Path, pem: &str) -> Result<OffsetDateTime, TlsError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let bad_ca = |detail: String| TlsError::BadCa {
        path: path.to_owned(),
        detail,
    };
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| bad_ca(e.to_string()))?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| bad_ca(e.to_string()))?;
    Ok(parsed.validity().not_after.to_datetime())
}

/// The names for the server certificate, deduplicated (case-insensitively), defaults first.
/// The host name is added only when it is a valid DNS name; configured extra names must be valid.
fn certificate_names(extra_names: &[String], host: Option<&str>) -> Result<Vec<String>, TlsError> {
    let mut seen = BTreeSet::new();
    let mut names = Vec::new();
    let mut add = |name: &str| {
        if seen.insert(name.to_ascii_lowercase()) {
            names.push(name.to_owned());
        }
    };
    DEFAULT_NAMES.iter().for_each(|name| add(name));
    if let Some(host) = host.filter(|host| is_valid_name(host)) {
        add(host);
    }
    for name in extra_names {
        let name = name.trim();
        if !is_valid_name(name) {
            return Err(TlsError::BadName {
                name: name.to_owned(),
            });
        }
        add(name);
    }
    Ok(names)
}

/// Whether a client could ask for this name: a syntactically valid DNS name or an IP address.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && rustls_pki_types::ServerName::try_from(name).is_ok()
}

/// The machine's host name, if the kernel reports one.
fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Writes `bytes` to a temporary file created with `mode`, syncs it and renames it over `path`,
/// so a crash never leaves a half-written key or certificate behind, and a key is never readable
/// by others, not even for a moment.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let write_error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    // A leftover from a crashed run may carry another mode; `mode` applies only to new files.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deduplicated_and_validated() {
        let extra = vec![
            "LOCALHOST".to_owned(),
            "gw.example.com".to_owned(),
            "10.1.2.3".to_owned(),
        ];
        let names = certificate_names(&extra, Some("devbox")).expect("valid");
        assert_eq!(
            names,
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "devbox",
                "gw.example.com",
                "10.1.2.3"
            ]
        );
        let names =
            certificate_names(&[], Some("under_score host")).expect("bad host names are skipped");
        assert_eq!(names, DEFAULT_NAMES);
        assert!(matches!(
            certificate_names(&["no spaces".to_owned()], None),
            Err(TlsError::BadName { .. })
        ));
    }

    #[test]
    fn files_are_written_atomically_with_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret.key");
        write_atomically(&path, b"one", 0o600).expect("writes");
        write_atomically(&path, b"two", 0o600).expect("overwrites");
        assert_eq!(std::fs::read(&path).expect("reads"), b"two");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers = std::fs::read_dir(dir.path()).expect("lists").count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
