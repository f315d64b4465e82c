//! `portcullis-store gen-certs`: the certificates for remote gateways (mutual TLS). A private CA
//! of our own (`ca.pem`, `ca.key`) signs the store's server certificate (`store.pem`,
//! `store.key`) and one client certificate per gateway (`gateway-NAME.pem`, `gateway-NAME.key`).
//! Both sides trust only this CA. Running it again in the same directory reuses the CA, so new
//! gateways can be added later; existing files are never overwritten. Keys are written with mode
//! 0600 before their certificates, and every file is created exclusively.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// The CA lives ten years: trusting it is set up once per deployment.
const CA_VALIDITY_DAYS: i64 = 3650;
/// Store and gateway certificates live two years; re-issue them from the same CA (delete the
/// pair and run `gen-certs` again) before they expire.
const LEAF_VALIDITY_DAYS: i64 = 730;
/// Certificates start a day in the past so a peer with a slightly slow clock accepts them.
const CLOCK_SKEW_DAYS: i64 = 1;
/// Longest gateway name (it becomes part of a file name and a certificate name).
const MAX_NAME_LEN: usize = 63;

/// Why the certificates could not be made, by whose fault.
#[derive(Debug, Error)]
pub enum CertsError {
    /// Operator: a name that cannot go in a certificate or a file name.
    #[error("{name:?} is not a usable {what}: {why}")]
    BadName {
        what: &'static str,
        name: String,
        why: &'static str,
    },
    /// Operator: a file that would be written exists already.
    #[error("{} exists already; delete it first to re-issue it (existing files are never overwritten)", .0.display())]
    Exists(PathBuf),
    /// Operator: only half of the CA is there, so it can neither be reused nor replaced safely.
    #[error("{} exists without {}; restore the missing file or delete both to make a new CA (every certificate must then be re-issued)", have.display(), missing.display())]
    HalfCa { have: PathBuf, missing: PathBuf },
    /// Operator: the existing CA files cannot be used to sign.
    #[error("cannot use the existing CA in {}: {detail}", path.display())]
    BadCa { path: PathBuf, detail: String },
    /// Operator: the directory or a file cannot be written.
    #[error("cannot write {}: {error}", path.display())]
    Write { path: PathBuf, error: io::Error },
    /// Internal: rcgen refused the parameters.
    #[error("cannot generate a certificate: {0}")]
    Generate(rcgen::Error),
}

/// What was written, for the report printed to the operator.
impl From<rcgen::Error> for CertsError {
    fn from(error: rcgen::Error) -> Self {
        CertsError::Generate(error)
    }
}

#[derive(Debug, Default)]
pub struct Written {
    pub ca_reused: bool,
    pub files: Vec<PathBuf>,
}

/// Makes (or reuses) the CA in `dir`, then the store certificate for `store_names` (if any) and
/// one client certificate per gateway name.
pub fn generate(
    dir: &Path,
    store_names: &[String],
    gateways: &[String],
) -> Result<Written, CertsError> {
    for name in gateways {
        check_gateway_name(name)?;
    }
    for name in store_names {
        check_host_name(name)?;
    }
    // Refuse before writing anything, so a run either does all of its work or none.
    let store_files = [dir.join("store.pem"), dir.join("store.key")];
    let gateway_files = |name: &str| {
        [
            dir.join(format!("gateway-{name}.pem")),
            dir.join(format!("gateway-{name}.key")),
        ]
    };
    let mut planned: Vec<PathBuf> = Vec::new();
    if !store_names.is_empty() {
        planned.extend(store_files.iter().cloned());
    }
    for name in gateways {
        planned.extend(gateway_files(name));
    }
    if let Some(existing) = planned.iter().find(|p| p.exists()) {
        return Err(CertsError::Exists(existing.clone()));
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| CertsError::Write {
            path: dir.to_owned(),
            error,
        })?;

    let now = OffsetDateTime::now_utc();
    let mut written = Written::default();
    let issuer = load_or_create_ca(dir, now, &mut written)?;
    if !store_names.is_empty() {
        let mut params = leaf_params(store_names.to_vec(), "Portcullis store", now)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        issue(&params, &issuer, &store_files, &mut written)?;
    }
    for name in gateways {
        let mut params = leaf_params(vec![name.clone()], name, now)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        issue(&params, &issuer, &gateway_files(name), &mut written)?;
    }
    Ok(written)
}

fn check_gateway_name(name: &str) -> Result<(), CertsError> {
    let bad = |why| CertsError::BadName {
        what: "gateway name",
        name: name.to_owned(),
        why,
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(bad("it must be 1 to 63 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        || name.starts_with(['-', '.'])
    {
        return Err(bad(
            "use letters, digits, '-' and '.' only, starting with a letter or digit",
        ));
    }
    Ok(())
}

fn check_host_name(name: &str) -> Result<(), CertsError> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(valid_label) {
        Ok(())
    } else {
        Err(CertsError::BadName {
            what: "store name",
            name: name.to_owned(),
            why: "give the DNS name or IP address gateways use to reach the store",
        })
    }
}

fn leaf_params(
    names: Vec<String>,
    common_name: &str,
    now: OffsetDateTime,
) -> Result<CertificateParams, CertsError> {
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::days(CLOCK_SKEW_DAYS);
    params.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
    Ok(params)
}

fn issue(
    params: &CertificateParams,
    issuer: &Issuer<'static, KeyPair>,
    [cert_path, key_path]: &[PathBuf; 2],
    written: &mut Written,
) -> Result<(), CertsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = params.signed_by(&key, issuer)?;
    write_new(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert_path, cert.pem().as_bytes(), 0o644)?;
    written.files.extend([cert_path.clone(), key_path.clone()]);
    Ok(())
}

fn load_or_create_ca(
    dir: &Path,
    now: OffsetDateTime,
    written: &mut Written,
) -> Result<Issuer<'static, KeyPair>, CertsError> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let bad = |path: &Path, detail: String| CertsError::BadCa {
                path: path.to_owned(),
                detail,
            };
            let pem =
                std::fs::read_to_string(&cert_path).map_err(|e| bad(&cert_path, e.to_string()))?;
            let key_pem =
                std::fs::read_to_string(&key_path).map_err(|e| bad(&key_path, e.to_string()))?;
            let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(&key_path, e.to_string()))?;
            written.ca_reused = true;
            Issuer::from_ca_cert_pem(&pem, key).map_err(|e| bad(&cert_path, e.to_string()))
        }
        (true, false) => Err(CertsError::HalfCa {
            have: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(CertsError::HalfCa {
            have: key_path,
            missing: cert_path,
        }),
        (false, false) => {
            let mut params = CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            // A random tag in the name: peers find a certificate's issuer by name, so with two
            // deployments' CAs in play a foreign certificate is "unknown issuer", not a
            // confusing "bad signature".
            let mut tag = [0u8; 6];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut tag)
                .map_err(|_| CertsError::Generate(rcgen::Error::RingUnspecified))?;
            let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
            params
                .distinguished_name
                .push(DnType::CommonName, format!("Portcullis store CA {tag}"));
            // Path length 0: it signs the store and gateway certificates, never another CA.
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
            write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
            written.files.extend([cert_path, key_path]);
            Ok(Issuer::new(params, key))
        }
    }
}

/// Creates `path` exclusively with `mode` (never replacing a file, never following a symlink at
/// the last component) and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertsError> {
    let write_err = |error| CertsError::Write {
        path: path.to_owned(),
        error,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                CertsError::Exists(path.to_owned())
            } else {
                write_err(e)
            }
        })?;
    file.write_all(bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn writes_a_ca_a_store_pair_and_gateway_pairs_then_reuses_the_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("certs");
        let first = generate(&out, &["store.internal".into()], &["gw1".into()]).expect("generate");
        assert!(!first.ca_reused);
        assert_eq!(first.files.len(), 6);
        for key in ["ca.key", "store.key", "gateway-gw1.key"] {
            let mode = std::fs::metadata(out.join(key))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let ca_before = std::fs::read(out.join("ca.pem")).expect("ca");
        let second = generate(&out, &[], &["gw2".into()]).expect("add a gateway");
        assert!(second.ca_reused);
        assert!(out.join("gateway-gw2.pem").exists());
        assert_eq!(std::fs::read(out.join("ca.pem")).expect("ca"), ca_before);
        assert!(matches!(
            generate(&out, &[], &["gw1".into()]),
            Err(CertsError::Exists(_))
        ));
    }

    #[test]
    fn refuses_names_that_cannot_be_files_or_hosts() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["", "../x", "a/b", "-x", "a b"] {
            assert!(
                matches!(
                    generate(dir.path(), &[], &[bad.into()]),
                    Err(CertsError::BadName { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            generate(dir.path(), &["bad name".into()], &[]),
            Err(CertsError::BadName { .. })
        ));
        assert!(generate(dir.path(), &["10.0.0.5".into()], &[]).is_ok());
    }
}
