//! TLS on the gateway: TLS 1.3 and 1.2 clients trusting the generated CA log in and work; a client
//! offering only TLS 1.1 gets a fatal alert on the wire and the connection is closed (the alert
//! reaches the wire before the socket closes); the generated certificate names localhost and
//! 127.0.0.1.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::Gateway;
use portcullis_e2e::device::{Device, client_config};
use portcullis_protocol::{Command, Status};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn tls13_and_tls12_clients_log_in() {
    let gw = Gateway::start("");
    let (id, token) = gw.create_device("secure");
    let ca = gw.data_dir.join("tls").join("ca.pem");
    for (version, value) in [
        (&rustls::version::TLS13, "13"),
        (&rustls::version::TLS12, "12"),
    ] {
        let mut dev = Device::tls(gw.tls_port, client_config(&ca, version));
        dev.login(&token, Status::Ok);
        dev.info(10);
        dev.virtual_write(3, value);
        let ping = dev.send(Command::Ping, &[]);
        dev.expect_status(ping, Status::Ok);
        portcullis_e2e::wait_for("V3 stored", Duration::from_secs(5), || {
            (gw.pin(id, "V3").as_deref() == Some(value)).then_some(())
        });
    }
    // A wrong token over TLS: status 9 and closed.
    let mut dev = Device::tls(gw.tls_port, client_config(&ca, &rustls::version::TLS13));
    dev.login("BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", Status::InvalidToken);
    dev.expect_closed();
}

/// A TLS 1.1 ClientHello (no supported_versions extension, legacy version 0x0302).
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02];
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // session id
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // two CBC suites
    hello.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[test]
fn tls11_only_client_gets_a_fatal_alert_and_is_closed() {
    let gw = Gateway::start("");
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.tls_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(&tls11_client_hello()).unwrap();
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).unwrap();
    // One alert record: type 21, then level fatal (2) and a refusal: protocol_version (70) or
    // handshake_failure (40, what rustls sends when no offered version is one it speaks).
    assert!(
        reply.len() >= 7,
        "expected an alert record, got {reply:02x?}"
    );
    assert_eq!(reply[0], 0x15, "not an alert record: {reply:02x?}");
    assert_eq!(reply[5], 2, "alert is not fatal: {reply:02x?}");
    assert!(
        [40, 70].contains(&reply[6]),
        "unexpected alert description: {reply:02x?}"
    );
    assert_eq!(
        reply.len(),
        7,
        "nothing but the alert may follow: {reply:02x?}"
    );
    gw.wait_for_log("TLS handshake refused", Duration::from_secs(5));

    // The gateway keeps serving TLS 1.3 after refusing it.
    let (_, token) = gw.create_device("after");
    let ca = gw.data_dir.join("tls").join("ca.pem");
    let mut dev = Device::tls(gw.tls_port, client_config(&ca, &rustls::version::TLS13));
    dev.login(&token, Status::Ok);
}
