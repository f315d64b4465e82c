//! Tests of certificate generation, loading and real in-memory handshakes against the generated
//! certificate, as a client trusting only `ca.pem` would do them.

use super::*;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConnection};
use rustls_pki_types::ServerName;
use std::io::{Read, Write};

fn generated() -> (tempfile::TempDir, CertPaths) {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = ensure_dev_certificate(&dir.path().join("tls"), &["gw.example.test".to_owned()])
        .expect("generates");
    (dir, paths)
}

fn client_config(
    ca: &Path,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(ca).expect("ca.pem") {
        roots.add(cert).expect("CA is a valid trust anchor");
    }
    let config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[version])
        .expect("version supported")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Moves every pending TLS record from one side to the other and lets the receiver process them.
fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut records = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut records).expect("writes to memory");
    }
    let mut pending = &records[..];
    while !pending.is_empty() {
        to.read_tls(&mut pending).expect("reads from memory");
        to.process_new_packets()?;
    }
    Ok(())
}

/// Runs a handshake between a client verifying `name` and the server, then sends a few bytes
/// through; returns the negotiated version.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    name: &str,
) -> Result<rustls::ProtocolVersion, rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).expect("valid name");
    let mut client = Connection::Client(ClientConnection::new(client, name)?);
    let mut server = Connection::Server(ServerConnection::new(server)?);
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
        transfer(&mut client, &mut server)?;
        transfer(&mut server, &mut client)?;
    }
    assert!(
        !client.is_handshaking() && !server.is_handshaking(),
        "handshake did not finish"
    );
    client.writer().write_all(b"login").expect("buffers");
    transfer(&mut client, &mut server)?;
    let mut received = [0u8; 5];
    server
        .reader()
        .read_exact(&mut received)
        .expect("plaintext arrives");
    assert_eq!(&received, b"login");
    Ok(client.protocol_version().expect("negotiated"))
}

#[test]
fn generated_certificate_is_complete_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, paths) = generated();
    assert!(paths.generated);
    for file in [&paths.cert, &paths.key, &paths.ca, &paths.ca_key()] {
        assert!(file.is_file(), "{} exists", file.display());
    }
    for key in [&paths.key, &paths.ca_key()] {
        let mode = std::fs::metadata(key)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{} is private", key.display());
    }
    let chain = read_certificates(&paths.cert).expect("chain");
    assert_eq!(
        chain.len(),
        2,
        "server.pem holds the server certificate, then the CA"
    );
    assert_eq!(chain[1], read_certificates(&paths.ca).expect("ca")[0]);
}

#[test]
fn existing_files_are_reused_byte_for_byte() {
    let (dir, first) = generated();
    let cert = std::fs::read(&first.cert).expect("cert");
    let key = std::fs::read(&first.key).expect("key");
    let again = ensure_dev_certificate(&dir.path().join("tls"), &[]).expect("reuses");
    assert!(!again.generated);
    assert_eq!(std::fs::read(&again.cert).expect("cert"), cert);
    assert_eq!(std::fs::read(&again.key).expect("key"), key);
}

#[test]
fn a_deleted_server_certificate_is_reissued_by_the_same_ca() {
    let (dir, first) = generated();
    let ca = std::fs::read(&first.ca).expect("ca");
    let old_cert = std::fs::read(&first.cert).expect("cert");
    std::fs::remove_file(&first.cert).expect("removes");
    let again = ensure_dev_certificate(&dir.path().join("tls"), &["other.example.test".to_owned()])
        .expect("reissues");
    assert!(again.generated);
    assert_eq!(
        std::fs::read(&again.ca).expect("ca"),
        ca,
        "the trusted CA is kept"
    );
    assert_ne!(std::fs::read(&again.cert).expect("cert"), old_cert);
    let server = load_server_config(&again.cert, &again.key).expect("loads");
    let client = client_config(&again.ca, &rustls::version::TLS13);
    handshake(client, server, "other.example.test")
        .expect("the old CA vouches for the new certificate");
}

#[test]
fn handshakes_complete_over_tls13_and_tls12_for_each_name() {
    let (_dir, paths) = generated();
    let server = load_server_config(&paths.cert, &paths.key).expect("loads");
    for (version, expected) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let client = client_config(&paths.ca, version);
        for name in ["localhost", "127.0.0.1", "::1", "gw.example.test"] {
            let negotiated =
                handshake(client.clone(), server.clone(), name).expect("handshake succeeds");
            assert_eq!(negotiated, expected, "{name}");
        }
        let refused = handshake(client, server.clone(), "not-in-the-certificate.test");
        assert!(
            refused.is_err(),
            "a name outside the certificate is refused"
        );
    }
}

#[test]
fn a_client_trusting_another_ca_refuses_the_certificate() {
    let (_dir, paths) = generated();
    let (_other_dir, other) = generated();
    let server = load_server_config(&paths.cert, &paths.key).expect("loads");
    let client = client_config(&other.ca, &rustls::version::TLS13);
    assert!(handshake(client, server, "localhost").is_err());
}

#[test]
fn a_key_from_another_certificate_is_rejected() {
    let (_dir, paths) = generated();
    let (_other_dir, other) = generated();
    let err = load_server_config(&paths.cert, &other.key).expect_err("mismatch");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&other.key.display().to_string()) && message.contains("does not belong"),
        "{message}"
    );
}

#[test]
fn swapped_missing_and_garbage_files_are_explained() {
    let (dir, paths) = generated();
    let err = load_server_config(&paths.key, &paths.cert).expect_err("swapped");
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    let err = load_server_config(&paths.cert, &paths.ca).expect_err("a certificate is not a key");
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    let missing = dir.path().join("missing.pem");
    let err = load_server_config(&missing, &paths.key).expect_err("missing");
    assert!(
        matches!(err, TlsError::Read { .. }) && err.to_string().contains("missing.pem"),
        "{err}"
    );
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("writes");
    let err = load_server_config(&garbage, &paths.key).expect_err("garbage");
    assert!(
        matches!(
            err,
            TlsError::BadPem { .. } | TlsError::BadCertificate { .. }
        ),
        "{err}"
    );
}

#[test]
fn an_expired_certificate_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params.self_signed(&key).expect("signs");
    let (cert_path, key_path) = (dir.path().join("old.pem"), dir.path().join("old.key"));
    std::fs::write(&cert_path, cert.pem()).expect("writes");
    std::fs::write(&key_path, key.serialize_pem()).expect("writes");
    let err = load_server_config(&cert_path, &key_path).expect_err("expired");
    assert!(matches!(err, TlsError::Expired { index: 1, .. }), "{err}");
    assert!(err.to_string().contains("2021"), "{err}");
}

#[test]
fn the_server_picks_aes128_sha256_over_the_clients_first_choice_and_sends_no_tickets() {
    let (_dir, paths) = generated();
    let server = load_server_config(&paths.cert, &paths.key).expect("loads");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = client_config(&paths.ca, version);
        let first_offered = client.crypto_provider().cipher_suites[0].suite();
        assert!(
            format!("{first_offered:?}").contains("AES_256_GCM_SHA384"),
            "the client offers AES-256/SHA-384 first ({first_offered:?}); the test needs that"
        );
        let name = ServerName::try_from("localhost").expect("valid name");
        let mut client = Connection::Client(ClientConnection::new(client, name).expect("client"));
        let mut server = Connection::Server(ServerConnection::new(server.clone()).expect("server"));
        for _ in 0..10 {
            transfer(&mut client, &mut server).expect("client to server");
            transfer(&mut server, &mut client).expect("server to client");
        }
        let suite = server
            .negotiated_cipher_suite()
            .expect("negotiated")
            .suite();
        assert!(
            format!("{suite:?}").contains("AES_128_GCM_SHA256"),
            "{version:?}: server chose {suite:?}"
        );
        if let Connection::Client(client) = &client {
            assert_eq!(
                client.tls13_tickets_received(),
                0,
                "no session tickets are issued"
            );
        }
    }
}
