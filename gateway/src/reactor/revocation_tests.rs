//! A shard ends revoked sessions: a real one-shard reactor over the fake store, a Blynk device
//! logged in on its plain port, and revocations handed to it as the poller hands them (a page
//! naming another device leaves it alone; one naming it closes it within a second), then the
//! whole road from the store's feed through the poller thread to the socket.

use super::ShardCommand;
use crate::config::Config;
use crate::config::limits::{guards, shard_limits};
use crate::daemon::revocation_poller::{self, FeedState};
use crate::reactor::{Reactor, ReactorSetup, listener};
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::frame;
use portcullis_protocol::store::{
    DeviceAuth, NodeName, Request, Response, RevocationPage, Revoked, TemplateId,
};
use portcullis_protocol::{Command, Status};
use portcullis_store_client::StoreEndpoint;
use portcullis_store_client::fake_store::serving;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
/// The bound: a revoked device is gone within a second.
const WITHIN: Duration = Duration::from_secs(1);

/// Reads one Blynk response (a 5-byte frame) and returns its message id and status code.
fn read_response(device: &mut TcpStream) -> (u16, u16) {
    let mut header = [0u8; 5];
    device.read_exact(&mut header).expect("a response");
    assert_eq!(header[0], Command::Response.code());
    (
        u16::from_be_bytes([header[1], header[2]]),
        u16::from_be_bytes([header[3], header[4]]),
    )
}

fn send(device: &mut TcpStream, command: Command, msg_id: u16, body: &[u8]) {
    let mut bytes = Vec::new();
    frame::encode(&mut bytes, command, msg_id, body).expect("test fixture");
    device.write_all(&bytes).expect("sent");
}

/// What the running reactor needs kept alive: the fake store, the certificate directory.
struct Running {
    reactor: Reactor,
    plain_port: u16,
    _store: (tempfile::TempDir, std::thread::JoinHandle<()>),
    _tls: tempfile::TempDir,
}

/// A one-shard reactor whose store knows every token as device 42 of template TMPL1.
fn start_reactor() -> Running {
    let (store_dir, socket, store) = serving(|request| match request {
        Request::Authenticate { .. } => Ok(Response::Authenticated(Some(DeviceAuth {
            device: 42,
            org: OrgId(1),
            template: TemplateId::parse("TMPL1").expect("test fixture"),
        }))),
        _ => Ok(Response::Done),
    });
    let tls_dir = tempfile::tempdir().expect("tempdir");
    let paths = crate::tls::ensure_dev_certificate(&tls_dir.path().join("tls"), &[])
        .expect("test certificate");
    let tls_config =
        crate::tls::load_server_config(&paths.cert, &paths.key).expect("test certificate");
    let config = Config::default();
    let loopback = std::net::Ipv4Addr::LOCALHOST.into();
    let bind = |what| listener::bind_port(what, loopback, 0, 0, 1, 16).expect("binds");
    let (tls, plain) = (bind("TLS"), bind("plain"));
    let plain_port = plain.port;
    let reactor = Reactor::start(ReactorSetup {
        tls_listeners: tls.listeners,
        plain_listeners: plain.listeners,
        tls_config,
        store: StoreEndpoint::Unix(socket),
        node: NodeName::from_static("test"),
        limits: shard_limits(&config),
        guards: Arc::new(guards(&config)),
        password_workers: 1,
        rest: Arc::new(crate::protocols::testkit::test_rest_env(guards(&config))),
    })
    .expect("reactor starts");
    Running {
        reactor,
        plain_port,
        _store: (store_dir, store),
        _tls: tls_dir,
    }
}

/// A device logged in on the plain port.
fn logged_in_device(port: u16) -> TcpStream {
    let mut device = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    device
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    send(&mut device, Command::HardwareLogin, 1, TOKEN);
    assert_eq!(read_response(&mut device), (1, Status::Ok.code()));
    device
}

/// Reads until the gateway closes the connection.
fn wait_closed(device: &mut TcpStream) {
    let mut rest = [0u8; 64];
    loop {
        match device.read(&mut rest) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the revoked device was not closed: {e}"),
        }
    }
}

fn stop(running: Running) {
    running.reactor.request_shutdown(Duration::ZERO);
    running.reactor.join().expect("the shard stops cleanly");
}

#[test]
fn a_revoked_device_is_closed_within_a_second_and_others_stay() {
    let running = start_reactor();
    let commands = &running.reactor.commands;
    let mut device = logged_in_device(running.plain_port);
    // Another device's revocation leaves this one connected.
    let other: Arc<[Revoked]> = Arc::from(vec![Revoked::Device(43)]);
    assert_eq!(commands.broadcast(&ShardCommand::EndSessions(other)), 1);
    send(&mut device, Command::Ping, 2, b"");
    assert_eq!(read_response(&mut device), (2, Status::Ok.code()));

    let revoked: Arc<[Revoked]> = Arc::from(vec![Revoked::Device(42)]);
    let sent = Instant::now();
    commands.broadcast(&ShardCommand::EndSessions(revoked));
    wait_closed(&mut device);
    assert!(sent.elapsed() < WITHIN, "closed after {:?}", sent.elapsed());
    assert_eq!(running.reactor.metrics[0].sessions_revoked.get(), 1);
    stop(running);
}

#[test]
fn a_revocation_in_the_stores_feed_closes_the_live_device_within_a_second() {
    let running = start_reactor();
    let mut device = logged_in_device(running.plain_port);
    // The feed's store: the device is re-provisioned once `reprovisioned` is set.
    let reprovisioned = Arc::new(AtomicBool::new(false));
    let flag = reprovisioned.clone();
    let (_feed_dir, feed_socket, _feed) = serving(move |request| {
        let Request::Revocations { after } = request else {
            return Ok(Response::Done);
        };
        let page = match (after, flag.load(Ordering::SeqCst)) {
            (0, _) => (1, vec![Revoked::Device(42)]),
            (1, true) => (2, vec![Revoked::Device(42)]),
            (n, _) => (n, Vec::new()),
        };
        Ok(Response::Revocations(RevocationPage {
            next: page.0,
            revoked: page.1,
            gap: false,
        }))
    });
    let global = Arc::new(crate::metrics::GlobalMetrics::default());
    let poller = revocation_poller::spawn(
        StoreEndpoint::Unix(feed_socket),
        NodeName::from_static("test"),
        FeedState::new(),
        running.reactor.commands.clone(),
        global.clone(),
    )
    .expect("poller starts");
    // The baseline's entry (revoked before this session) ends nothing.
    std::thread::sleep(revocation_poller::REVOCATION_POLL_INTERVAL * 2);
    send(&mut device, Command::Ping, 2, b"");
    assert_eq!(read_response(&mut device), (2, Status::Ok.code()));

    let revoked_at = Instant::now();
    reprovisioned.store(true, Ordering::SeqCst);
    wait_closed(&mut device);
    assert!(
        revoked_at.elapsed() < WITHIN,
        "closed {:?} after the store revoked it",
        revoked_at.elapsed()
    );
    poller.stop();
    assert_eq!(
        global.revocations_received[crate::metrics::RevokedKind::Device as usize]
            .load(Ordering::Relaxed),
        1
    );
    stop(running);
}
