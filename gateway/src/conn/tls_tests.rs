//! `TlsSession` against a real rustls client in memory: handshakes over TLS 1.3 and 1.2, records
//! split at every byte, several records in one read, the fatal alert for a TLS 1.1-only client,
//! close_notify both ways, and no buffer held between records.

use super::*;
use crate::tls::{crypto_provider, ensure_dev_certificate, load_server_config, read_certificates};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use rustls_pki_types::ServerName;
use std::io::{Read, Write};

struct Pair {
    _dir: tempfile::TempDir,
    client: ClientConnection,
    server: TlsSession,
}

fn pair(version: &'static rustls::SupportedProtocolVersion) -> Pair {
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = ensure_dev_certificate(&dir.path().join("tls"), &[]).expect("generates");
    let server = load_server_config(&paths.cert, &paths.key).expect("loads");
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(&paths.ca).expect("ca.pem") {
        roots.add(cert).expect("trust anchor");
    }
    let client = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[version])
        .expect("version")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    Pair {
        _dir: dir,
        client: ClientConnection::new(Arc::new(client), name).expect("client"),
        server: TlsSession::new(server).expect("server"),
    }
}

fn client_output(client: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut out).expect("to memory");
    }
    out
}

fn to_client(client: &mut ClientConnection, mut records: &[u8]) -> Result<(), rustls::Error> {
    while !records.is_empty() {
        client.read_tls(&mut records).expect("from memory");
        client.process_new_packets()?;
    }
    Ok(())
}

/// Runs the handshake, feeding the server `chunk` bytes at a time; returns the plaintext the
/// server saw and whether it reported the handshake done exactly once.
fn handshake(p: &mut Pair, chunk: usize) {
    let mut done = 0;
    for _ in 0..10 {
        let mut input = client_output(&mut p.client);
        let mut outgoing = Vec::new();
        let mut plaintext = Vec::new();
        for piece in input.chunks_mut(chunk.max(1)) {
            let got = p
                .server
                .receive(piece, &mut plaintext, &mut outgoing)
                .expect("handshake proceeds");
            done += usize::from(got.handshake_done);
        }
        assert!(plaintext.is_empty());
        to_client(&mut p.client, &outgoing).expect("client accepts");
        if !p.client.is_handshaking() && !p.server.is_handshaking() {
            break;
        }
    }
    assert!(!p.server.is_handshaking() && !p.client.is_handshaking());
    assert_eq!(done, 1, "handshake_done is reported once");
    assert_eq!(
        p.server.held_bytes(),
        0,
        "no buffer held after the handshake"
    );
}

#[test]
fn handshakes_and_exchanges_data_over_tls13_and_tls12() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut p = pair(version);
        handshake(&mut p, usize::MAX);
        assert_eq!(p.server.protocol_version(), Some(version.version));

        // Client → server: two messages in one read.
        p.client.writer().write_all(b"hello ").expect("buffers");
        p.client.writer().write_all(b"gateway").expect("buffers");
        let mut input = client_output(&mut p.client);
        let (mut plaintext, mut outgoing) = (Vec::new(), Vec::new());
        p.server
            .receive(&mut input, &mut plaintext, &mut outgoing)
            .expect("data");
        assert_eq!(plaintext, b"hello gateway");
        to_client(&mut p.client, &outgoing).expect("tickets are fine");

        // Server → client: one record per message.
        let mut records = Vec::new();
        p.server
            .encrypt(b"frame one", &mut records)
            .expect("encrypts");
        p.server
            .encrypt(b"frame two", &mut records)
            .expect("encrypts");
        to_client(&mut p.client, &records).expect("client decrypts");
        let mut got = String::new();
        let _ = p.client.reader().read_to_string(&mut got);
        assert_eq!(got, "frame oneframe two");
        assert_eq!(p.server.held_bytes(), 0);
    }
}

#[test]
fn records_split_at_every_byte_arrive_whole() {
    let mut p = pair(&rustls::version::TLS13);
    handshake(&mut p, 1);
    // Decryption is sequenced, so each split point gets its own record on the same session.
    let record_len = {
        p.client.writer().write_all(b"split me").expect("buffers");
        client_output(&mut p.client)
    };
    let (mut plaintext, mut outgoing) = (Vec::new(), Vec::new());
    let mut first = record_len;
    p.server
        .receive(&mut first, &mut plaintext, &mut outgoing)
        .expect("whole record");
    assert_eq!(plaintext, b"split me");
    for split in 1..first.len() {
        p.client.writer().write_all(b"split me").expect("buffers");
        let mut record = client_output(&mut p.client);
        let (head, tail) = record.split_at_mut(split);
        plaintext.clear();
        p.server
            .receive(head, &mut plaintext, &mut outgoing)
            .expect("first part");
        assert!(plaintext.is_empty(), "nothing before the record is whole");
        assert!(p.server.held_bytes() >= split);
        p.server
            .receive(tail, &mut plaintext, &mut outgoing)
            .expect("second part");
        assert_eq!(plaintext, b"split me", "split at {split}");
        assert_eq!(p.server.held_bytes(), 0, "released after the record");
    }
}

#[test]
fn a_broken_client_hello_gets_a_fatal_alert_in_the_output() {
    // (A real TLS 1.1-only client is refused in tests/tests/tls.rs; rustls' client cannot be made
    // to speak 1.1.) A ClientHello whose body is cut short is a decode error.
    let mut p = pair(&rustls::version::TLS13);
    let hello = client_output(&mut p.client);
    let mut broken = hello[..9].to_vec();
    broken[3..5].copy_from_slice(&4u16.to_be_bytes());
    broken[6..9].copy_from_slice(&[0, 0, 0]);
    let (mut plaintext, mut outgoing) = (Vec::new(), Vec::new());
    let err = p
        .server
        .receive(&mut broken, &mut plaintext, &mut outgoing)
        .expect_err("refused");
    assert!(matches!(err, TlsSessionError::Peer(_)), "{err}");
    // An alert record: content type 21, then level fatal (2).
    assert!(outgoing.len() >= 7, "the alert is queued: {outgoing:?}");
    assert_eq!(outgoing[0], 21);
    assert_eq!(outgoing[5], 2);
}

#[test]
fn close_notify_both_ways_and_garbage_is_refused() {
    let mut p = pair(&rustls::version::TLS13);
    handshake(&mut p, usize::MAX);
    p.client.send_close_notify();
    let mut input = client_output(&mut p.client);
    let (mut plaintext, mut outgoing) = (Vec::new(), Vec::new());
    let got = p
        .server
        .receive(&mut input, &mut plaintext, &mut outgoing)
        .expect("close");
    assert!(got.peer_closed);
    let mut notify = Vec::new();
    p.server.close_notify(&mut notify);
    assert!(!notify.is_empty());
    to_client(&mut p.client, &notify).expect("client reads close_notify");

    let mut q = pair(&rustls::version::TLS13);
    handshake(&mut q, usize::MAX);
    let mut garbage = vec![23u8, 3, 3, 0, 40];
    garbage.extend([0xAB; 40]);
    let err = q
        .server
        .receive(&mut garbage, &mut plaintext, &mut outgoing)
        .expect_err("undecryptable record");
    assert!(matches!(err, TlsSessionError::Peer(_)));
}

#[test]
fn a_record_announcing_too_much_is_refused_without_buffering_it() {
    let mut p = pair(&rustls::version::TLS13);
    handshake(&mut p, usize::MAX);
    let mut header = vec![23u8, 3, 3, 0xFF, 0xFF];
    let (mut plaintext, mut outgoing) = (Vec::new(), Vec::new());
    // rustls itself refuses a record length over the protocol maximum.
    assert!(
        p.server
            .receive(&mut header, &mut plaintext, &mut outgoing)
            .is_err()
    );
}

#[test]
fn writing_before_the_handshake_is_refused() {
    let mut p = pair(&rustls::version::TLS13);
    let mut out = Vec::new();
    assert!(matches!(
        p.server.encrypt(b"too early", &mut out),
        Err(TlsSessionError::NotWritable)
    ));
}

#[test]
fn closing_mid_handshake_with_bytes_held_does_not_panic() {
    // The login deadline can close a connection whose ClientHello is half here; rustls must be
    // shown the held bytes, not an empty buffer (the fuzzer found the panic in the error path).
    let mut p = pair(&rustls::version::TLS13);
    let mut hello = client_output(&mut p.client);
    let half = hello.len() / 2;
    let (mut plaintext, mut outgoing) = (Vec::new(), Vec::new());
    p.server
        .receive(&mut hello[..half], &mut plaintext, &mut outgoing)
        .expect("half a hello is fine");
    assert!(p.server.held_bytes() >= half);
    let mut notify = Vec::new();
    p.server.close_notify(&mut notify);
    assert!(matches!(
        p.server.encrypt(b"x", &mut notify),
        Err(TlsSessionError::NotWritable)
    ));
}

#[test]
fn a_handshake_message_split_over_records_then_garbage_is_refused_cleanly() {
    // A ClientHello fragmented into two records keeps rustls' handshake joiner pointing into our
    // buffer; a broken record after it must produce an error (and an alert), not a panic.
    let mut p = pair(&rustls::version::TLS13);
    let hello = client_output(&mut p.client);
    let body = &hello[5..];
    let (a, b) = body.split_at(body.len() / 2);
    let mut input = Vec::new();
    for part in [a, b] {
        input.extend_from_slice(&[22, 3, 1]);
        input.extend_from_slice(&(part.len() as u16).to_be_bytes());
        input.extend_from_slice(part);
    }
    // Cut the second record short and corrupt its header, after the first one is whole.
    let first_len = 5 + a.len();
    input.truncate(first_len + 8);
    input[first_len] = 99;
    let (mut plaintext, mut outgoing) = (Vec::new(), Vec::new());
    let result = p.server.receive(&mut input, &mut plaintext, &mut outgoing);
    assert!(result.is_err(), "{result:?}");
}
