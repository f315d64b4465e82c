//! The one protocol selector, end to end against the real binaries: an MQTT CONNECT is recognised
//! and closed with a log line saying MQTT is not served; a TLS handshake on the plain port and a
//! first Blynk frame that is not a login are closed with their own reasons; a TLS client offering
//! `http/1.1` by ALPN gets it and is served HTTP (keep-alive, a second request on the same
//! connection), while a device library that offers no ALPN still logs in over TLS.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::Gateway;
use portcullis_e2e::device::{Device, client_config};
use portcullis_e2e::hostile::{count_lines, peer_closed, plain_log};
use portcullis_protocol::{Command, Status, frame};
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// An MQTT 3.1.1 CONNECT: fixed header 0x10, remaining length, "MQTT", level 4, clean session,
/// keep-alive 60 s, client id "probe".
fn mqtt_connect() -> Vec<u8> {
    let mut variable = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c];
    variable.extend_from_slice(&[0x00, 0x05]);
    variable.extend_from_slice(b"probe");
    let mut packet = vec![0x10, variable.len() as u8];
    packet.extend_from_slice(&variable);
    packet
}

/// Waits until the gateway's log has a line with every needle, and returns how many there are.
fn wait_for_line(gw: &Gateway, needles: &[&str]) -> usize {
    portcullis_e2e::wait_for(
        &format!("a log line with {needles:?}"),
        Duration::from_secs(5),
        || {
            let count = count_lines(&plain_log(&gw.log()), needles);
            (count > 0).then_some(count)
        },
    )
}

#[test]
fn mqtt_tls_on_plain_and_non_login_frames_are_closed_with_their_reason() {
    let gw = Gateway::start("");

    // MQTT CONNECT: closed, and the log says why, naming the peer.
    let mut mqtt = TcpStream::connect(("127.0.0.1", gw.plain_port)).unwrap();
    let peer = mqtt.local_addr().unwrap();
    mqtt.write_all(&mqtt_connect()).unwrap();
    assert!(
        peer_closed(&mut mqtt, Duration::from_secs(5)),
        "an MQTT CONNECT must be closed while MQTT is not served"
    );
    wait_for_line(
        &gw,
        &[
            &format!("peer={peer}"),
            "MQTT is not served by this gateway",
        ],
    );

    // A TLS ClientHello on the plain port: closed, with a hint to use the TLS port.
    let mut tls_on_plain = TcpStream::connect(("127.0.0.1", gw.plain_port)).unwrap();
    let peer = tls_on_plain.local_addr().unwrap();
    tls_on_plain
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00])
        .unwrap();
    assert!(peer_closed(&mut tls_on_plain, Duration::from_secs(5)));
    wait_for_line(
        &gw,
        &[&format!("peer={peer}"), "TLS handshake on the plain port"],
    );

    // A Blynk frame below command 100 that is no login (the old "first byte below 100 means a
    // device" fallback would have taken it for one): closed as not a login.
    let mut ping_first = TcpStream::connect(("127.0.0.1", gw.plain_port)).unwrap();
    let peer = ping_first.local_addr().unwrap();
    let mut ping = Vec::new();
    frame::encode_args(&mut ping, Command::Ping, 1, &[]).unwrap();
    ping_first.write_all(&ping).unwrap();
    assert!(peer_closed(&mut ping_first, Duration::from_secs(5)));
    wait_for_line(
        &gw,
        &[&format!("peer={peer}"), "first frame is not a login"],
    );

    // None of that disturbed a device.
    let (_, token) = gw.create_device("bystander");
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    let id = dev.send(Command::Ping, &[]);
    dev.expect_status(id, Status::Ok);

    // Each refusal is counted by what it was.
    let scrape = gw.scrape();
    let rejected = |reason: &str| {
        scrape.value(
            "portcullis_connections_rejected_total",
            &[("reason", reason)],
        )
    };
    assert!(rejected("not_served") >= 1.0, "MQTT counted as not served");
    assert!(rejected("unknown_protocol") >= 1.0, "TLS on plain counted");
    assert!(rejected("not_a_login") >= 1.0, "a PING first counted");
}

/// Reads one HTTP answer (head and a `content-length` body) from `stream`.
fn read_answer(stream: &mut impl Read, pending: &mut Vec<u8>) -> String {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end + 4]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if pending.len() >= end + 4 + length {
                let answer = String::from_utf8_lossy(&pending[..end + 4 + length]).to_string();
                pending.drain(..end + 4 + length);
                return answer;
            }
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before a whole answer: {pending:?}");
        pending.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_tls_client_offering_http_1_1_gets_it_and_keep_alive_while_devices_offer_none() {
    let gw = Gateway::start("");
    let ca = gw.data_dir.join("tls").join("ca.pem");

    let mut config = Arc::unwrap_or_clone(client_config(&ca, &rustls::version::TLS13));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let server = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", gw.tls_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut pending = Vec::new();
    let first = read_answer(&mut tls, &mut pending);
    assert_eq!(
        tls.conn.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "the gateway picks http/1.1 from the offer (it does not speak h2)"
    );
    assert!(first.starts_with("HTTP/1.1 404"), "{first}");
    assert!(
        first.contains("/api/ws"),
        "the 404 says what is served: {first}"
    );
    // Keep-alive: a second request on the same connection is answered too.
    tls.write_all(b"GET /still-nothing HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let second = read_answer(&mut tls, &mut pending);
    assert!(second.starts_with("HTTP/1.1 404"), "{second}");
    assert!(second.contains("still-nothing"), "{second}");

    // A device library offers no ALPN and still logs in over TLS.
    let (_, token) = gw.create_device("no-alpn");
    let mut dev = Device::tls(gw.tls_port, client_config(&ca, &rustls::version::TLS13));
    dev.login(&token, Status::Ok);
    let id = dev.send(Command::Ping, &[]);
    dev.expect_status(id, Status::Ok);
}

#[test]
fn plain_http_keeps_alive_and_refuses_an_oversize_body_with_413() {
    let gw = Gateway::start("");
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.plain_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut pending = Vec::new();
    // Two pipelined requests in one write: both answered, in order.
    tcp.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let a = read_answer(&mut tcp, &mut pending);
    let b = read_answer(&mut tcp, &mut pending);
    assert!(a.starts_with("HTTP/1.1 404") && a.contains("\"/a\""), "{a}");
    assert!(b.starts_with("HTTP/1.1 404") && b.contains("/b"), "{b}");
    // A body over the limit is refused before it is read, and the connection closes.
    tcp.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    let refused = read_answer(&mut tcp, &mut pending);
    assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the refusal: {rest:?}");
}
