//! The non-blocking link in a real mio `Poll`: over mutual TLS against a scripted TLS store on
//! loopback, requests written on the first connection and never answered (the store "dies") are
//! re-sent on the second connection and answered, so nothing in flight is lost across a
//! reconnect over TLS either; the telemetry accounting; the failure texts; a wrong reply id; and
//! a store of another wire version. The continuation here is `()`: the link never looks at it.

use super::*;
use crate::endpoint::RemoteStore;
use mio::{Events, Poll};
use portcullis_protocol::store::{ClientRole, NodeName, ServerHello, TrafficLink, WIRE_VERSION};
use portcullis_protocol::store::{decode_frame, encode_frame};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, ServerConnection, StreamOwned};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;

const REQUESTS: usize = 10;

fn shard_hello() -> ClientHello {
    ClientHello::new(
        NodeName::new("gw1").expect("valid name"),
        ClientRole::DeviceTraffic(TrafficLink::Shard(0)),
    )
}

fn node() -> NodeName {
    NodeName::new("gw1").expect("valid name")
}
const WAIT: Duration = Duration::from_secs(10);

struct Pki {
    ca: CertificateDer<'static>,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("signed");
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    };
    Pki {
        ca: ca_cert.der().clone(),
        server: leaf("localhost"),
        client: leaf("gw1"),
    }
}

fn roots(ca: &CertificateDer<'static>) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("ca");
    Arc::new(roots)
}

fn send<T: serde::Serialize>(stream: &mut impl Write, msg: &T) {
    let mut out = Vec::new();
    encode_frame(msg, &mut out).expect("encode");
    stream.write_all(&out).expect("send");
    stream.flush().expect("flush");
}

fn recv<T: serde::de::DeserializeOwned>(stream: &mut impl Read, buf: &mut Vec<u8>) -> T {
    loop {
        if let Some((msg, used)) = decode_frame::<T>(buf).expect("frame") {
            buf.drain(..used);
            return msg;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read");
        assert!(n > 0, "client closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A TLS store: the first link takes the requests and dies without answering; the second
/// answers everything.
fn scripted_store(pki: &Pki) -> (std::net::SocketAddr, thread::JoinHandle<usize>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&pki.ca), provider.clone())
        .build()
        .expect("verifier");
    let config = Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![pki.server.0.clone()], pki.server.1.clone_key())
            .expect("server config"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = thread::spawn(move || {
        let mut answered = 0;
        for round in 0..2 {
            let (sock, _) = listener.accept().expect("accept");
            sock.set_read_timeout(Some(WAIT)).expect("timeout");
            let conn = ServerConnection::new(Arc::clone(&config)).expect("conn");
            let mut tls = StreamOwned::new(conn, sock);
            let mut buf = Vec::new();
            let hello: ClientHello = recv(&mut tls, &mut buf);
            assert_eq!(hello.version, WIRE_VERSION);
            send(
                &mut tls,
                &ServerHello::Accepted {
                    version: WIRE_VERSION,
                },
            );
            for _ in 0..REQUESTS {
                let request: RequestEnvelope = recv(&mut tls, &mut buf);
                if round == 1 {
                    send(
                        &mut tls,
                        &ReplyEnvelope {
                            id: request.id,
                            result: Ok(Response::Pong),
                        },
                    );
                    answered += 1;
                }
            }
            // Round 0: dropped here with every request unanswered.
        }
        answered
    });
    (addr, server)
}

#[test]
fn requests_in_flight_when_a_tls_link_dies_are_resent_and_answered() {
    let pki = pki();
    let (addr, server) = scripted_store(&pki);
    let client =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_root_certificates(roots(&pki.ca))
            .with_client_auth_cert(vec![pki.client.0.clone()], pki.client.1.clone_key())
            .expect("client config");
    let endpoint = StoreEndpoint::Remote(Arc::new(RemoteStore {
        addr: addr.to_string(),
        addrs: vec![addr],
        server_name: ServerName::try_from("localhost").expect("name"),
        tls: Arc::new(client),
    }));

    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(16);
    let token = Token(1);
    let mut link = StoreLink::new(endpoint, shard_hello(), token);
    // Half of them telemetry: its count of unacknowledged writes must survive the requeue and
    // reach zero only when the second store answers.
    for i in 0..REQUESTS {
        let request = if i % 2 == 0 {
            Request::Ping
        } else {
            write_batch(3)
        };
        link.submit(request, ());
    }
    assert_eq!(link.unacked_writes(), 3 * REQUESTS / 2);
    let mut done = Vec::new();
    let mut scratch = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + WAIT;
    while done.len() < REQUESTS {
        assert!(
            Instant::now() < deadline,
            "answered {} of {REQUESTS}",
            done.len()
        );
        link.maintain(poll.registry(), Instant::now());
        link.pump(poll.registry(), usize::MAX);
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .expect("poll");
        if events.iter().any(|e| e.token() == token) {
            link.on_readable(poll.registry(), &mut scratch, &mut done);
        }
    }
    assert!(done.iter().all(|c| matches!(c.result, Ok(Response::Pong))));
    assert_eq!(link.connects, 2, "one link died, the second answered");
    assert_eq!(link.unacked_writes(), 0);
    assert!(link.is_idle());
    assert_eq!(server.join().expect("store thread"), REQUESTS);
}

fn write_batch(n: usize) -> Request {
    use portcullis_protocol::body::{PinAddr, PinKind};
    let writes = (0..n)
        .map(|i| portcullis_protocol::store::PinWrite {
            device: 1,
            pin: PinAddr::new(PinKind::Virtual, 1),
            value: i.to_string().into_bytes(),
            at_ms: 0,
        })
        .collect();
    Request::WritePins { writes }
}

#[test]
fn unacknowledged_writes_are_counted_and_only_queued_telemetry_is_dropped() {
    let endpoint = StoreEndpoint::Unix("/nonexistent/portcullis-store.sock".into());
    let mut link = StoreLink::new(endpoint, shard_hello(), Token(1));
    link.submit(Request::Ping, ());
    link.submit(write_batch(3), ());
    link.submit(Request::ResetPresence { node: node() }, ());
    link.submit(write_batch(5), ());
    assert_eq!(link.unacked_writes(), 8);
    assert_eq!(link.outstanding(), 4);

    // The oldest write batch goes first; requests that are not telemetry stay.
    assert_eq!(link.drop_oldest_queued_writes(), Some(3));
    assert_eq!(link.unacked_writes(), 5);
    assert_eq!(link.drop_oldest_queued_writes(), Some(5));
    assert_eq!(link.drop_oldest_queued_writes(), None);
    assert_eq!(link.unacked_writes(), 0);
    assert_eq!(
        link.outstanding(),
        2,
        "ping and presence reset still queued"
    );
}

/// The reasons the link logs read as they did when they were strings: operators grep for them,
/// and `last_failure` compares them to warn once per distinct reason.
#[test]
fn link_error_texts_name_the_failure() {
    let texts = [
        (LinkError::StoreClosed, "store closed the link"),
        (
            LinkError::ReadFailed(io::Error::from(io::ErrorKind::ConnectionReset)),
            "read failed: connection reset",
        ),
        (
            LinkError::Refused {
                version: 7,
                reason: "peer uid 1000 is not allowed".into(),
            },
            "store refused the link (its wire version 7): peer uid 1000 is not allowed",
        ),
        (
            LinkError::UnsolicitedReply { got: 4 },
            "store answered id 4 with nothing in flight",
        ),
        (
            LinkError::UnexpectedReply {
                got: 5,
                expected: 3,
            },
            "store answered id 5 but 3 was next",
        ),
    ];
    for (error, text) in texts {
        assert_eq!(error.to_string(), text);
    }
}

/// A store that answers the first link with a wrong reply id (a store bug): the link fails, and
/// the request it was waiting for is re-sent on the next link like every other unanswered one,
/// with its pin writes still counted until then.
#[test]
fn a_reply_with_the_wrong_id_requeues_its_request_instead_of_losing_it() {
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("store.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let store = thread::spawn(move || {
        for round in 0..2 {
            let (mut sock, _) = listener.accept().expect("accept");
            sock.set_read_timeout(Some(WAIT)).expect("timeout");
            let mut buf = Vec::new();
            let _: ClientHello = recv(&mut sock, &mut buf);
            send(
                &mut sock,
                &ServerHello::Accepted {
                    version: WIRE_VERSION,
                },
            );
            let request: RequestEnvelope = recv(&mut sock, &mut buf);
            let id = if round == 0 {
                request.id + 7
            } else {
                request.id
            };
            send(
                &mut sock,
                &ReplyEnvelope {
                    id,
                    result: Ok(Response::Done),
                },
            );
            if round == 0 {
                // Wait for the link to hang up after the bad reply.
                let mut rest = [0u8; 64];
                while matches!(sock.read(&mut rest), Ok(n) if n > 0) {}
            }
        }
    });

    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(16);
    let token = Token(1);
    let mut link = StoreLink::new(StoreEndpoint::Unix(path), shard_hello(), token);
    link.submit(write_batch(5), ());
    let mut done = Vec::new();
    let mut scratch = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + WAIT;
    while done.is_empty() {
        assert!(Instant::now() < deadline, "never answered");
        assert_eq!(
            link.unacked_writes(),
            5,
            "the writes stay counted until answered"
        );
        link.maintain(poll.registry(), Instant::now());
        link.pump(poll.registry(), usize::MAX);
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .expect("poll");
        if events.iter().any(|e| e.token() == token) {
            link.on_readable(poll.registry(), &mut scratch, &mut done);
        }
    }
    assert_eq!(link.connects, 2, "the bad reply ended the first link");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].pins_written, 5);
    assert_eq!(link.unacked_writes(), 0);
    store.join().expect("store thread");
}

/// A store that accepts our hello but speaks another wire version cannot serve us: the link
/// never comes up (today's store would have been taken at its word), and what was submitted
/// stays queued for a store that can.
#[test]
fn a_store_of_another_wire_version_is_not_taken_for_up() {
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("store.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let store = thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("accept");
        sock.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut buf = Vec::new();
        let hello: ClientHello = recv(&mut sock, &mut buf);
        assert_eq!(hello.node.as_str(), "gw1");
        send(
            &mut sock,
            &ServerHello::Accepted {
                version: WIRE_VERSION + 1,
            },
        );
        // Wait for the link to hang up.
        let mut rest = [0u8; 64];
        while matches!(sock.read(&mut rest), Ok(n) if n > 0) {}
    });

    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(16);
    let token = Token(1);
    let mut link = StoreLink::new(StoreEndpoint::Unix(path), shard_hello(), token);
    link.submit(Request::Ping, ());
    let mut done = Vec::new();
    let mut scratch = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + WAIT;
    let mut greeted = false;
    while !(greeted && link.state == LinkState::Down) {
        assert!(Instant::now() < deadline, "the link never judged the hello");
        link.maintain(poll.registry(), Instant::now());
        greeted |= link.state == LinkState::Greeting;
        link.pump(poll.registry(), usize::MAX);
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .expect("poll");
        if events.iter().any(|e| e.token() == token) {
            link.on_readable(poll.registry(), &mut scratch, &mut done);
        }
    }
    assert_eq!(link.connects, 0, "never up");
    assert!(done.is_empty());
    assert_eq!(
        link.outstanding(),
        1,
        "the ping waits for a store that can serve it"
    );
    drop(link);
    store.join().expect("store thread");
}

#[test]
fn a_version_mismatch_reads_as_in_every_client() {
    let error = LinkError::from(crate::hello::HelloError::VersionMismatch {
        ours: 3,
        theirs: 2,
        reason: None,
    });
    assert_eq!(
        error.to_string(),
        "the store speaks wire version 2, this program speaks 3; run a portcullis and \
         portcullis-store from the same release"
    );
}
