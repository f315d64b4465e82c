//! The mutual-TLS listener in-process, over the in-memory engine: a gateway with a certificate
//! from our CA is served exactly like a Unix link; no certificate, a certificate from another
//! CA, plaintext bytes and a stalled half handshake are each refused without disturbing a link
//! that is already being served; without remote configuration there is no TCP listener.

use super::*;
use crate::certs;

/// Only pings and device traffic here: they act for nobody.
fn acting_for(_request: &Request) -> Option<portcullis_protocol::store::Acting> {
    None
}
use crate::engine::memory::MemoryEngine;
use portcullis_protocol::store::{
    ClientHello, ClientRole, NodeName, ReplyEnvelope, Request, RequestEnvelope, Response,
    ServerHello, TrafficLink, decode_frame, encode_frame,
};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{Read, Write};

const WAIT: Duration = Duration::from_secs(10);
/// Short, so the stalled-handshake case is quick.
const TEST_HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);

struct Remote {
    _dir: tempfile::TempDir,
    certs: PathBuf,
    other_ca: PathBuf,
    addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Remote {
    fn start() -> Self {
        Self::start_with(TEST_HANDSHAKE_TIMEOUT)
    }

    fn start_with(handshake_timeout: Duration) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        certs::generate(&certs, &["localhost".into()], &["gw1".into()]).expect("certs");
        let other_ca = dir.path().join("other");
        certs::generate(&other_ca, &["localhost".into()], &["gw1".into()]).expect("other CA");
        let engine = Arc::new(MemoryEngine::new());
        let store = Arc::new(Store::open(engine).expect("store"));
        let mut server = Server::bind(&dir.path().join("store.sock")).expect("bind");
        let addr = server
            .listen_remote(&RemoteConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                ca_file: certs.join("ca.pem"),
                cert_file: certs.join("store.pem"),
                key_file: certs.join("store.key"),
            })
            .expect("remote listener");
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&shutdown);
        let config = ServerConfig {
            tls_handshake_timeout: handshake_timeout,
            ..ServerConfig::default()
        };
        let handle = thread::spawn(move || server.run(store, config, flag));
        Self {
            _dir: dir,
            certs,
            other_ca,
            addr,
            shutdown,
            handle: Some(handle),
        }
    }

    /// A TLS client trusting our CA, presenting `gateway-gw1` from `client_dir` (or nothing).
    fn tls_client(&self, client_dir: Option<&Path>) -> Result<Link, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(self.certs.join("ca.pem")).expect("ca") {
            roots.add(ca.expect("ca cert")).expect("add");
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let config = match client_dir {
            Some(dir) => {
                let chain = CertificateDer::pem_file_iter(dir.join("gateway-gw1.pem"))
                    .expect("cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certs");
                let key = PrivateKeyDer::from_pem_file(dir.join("gateway-gw1.key")).expect("key");
                builder
                    .with_client_auth_cert(chain, key)
                    .expect("client cert")
            }
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from("localhost").expect("name");
        let conn = ClientConnection::new(Arc::new(config), name).expect("client");
        let sock = TcpStream::connect(self.addr).expect("connect");
        sock.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut link = Link {
            stream: Box::new(StreamOwned::new(conn, sock)),
            buf: Vec::new(),
        };
        // In TLS 1.3 the server judges the client certificate after the client's handshake
        // ends, so a refusal shows on the first exchange: our hello goes unanswered.
        link.send(&ClientHello::new(
            NodeName::from_static("gw1"),
            ClientRole::DeviceTraffic(TrafficLink::Shard(0)),
        ))?;
        match link.recv::<ServerHello>()? {
            Some(ServerHello::Accepted { .. }) => Ok(link),
            other => Err(format!("hello answered with {other:?}")),
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

struct Link {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Link {
    fn send<T: serde::Serialize>(&mut self, msg: &T) -> Result<(), String> {
        let mut out = Vec::new();
        encode_frame(msg, &mut out).expect("encode");
        self.stream.write_all(&out).map_err(|e| e.to_string())?;
        self.stream.flush().map_err(|e| e.to_string())
    }

    /// The next message; `Ok(None)` once the server closed the link.
    fn recv<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, String> {
        loop {
            if let Some((msg, used)) = decode_frame::<T>(&self.buf).map_err(|e| e.to_string())? {
                self.buf.drain(..used);
                return Ok(Some(msg));
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn ping(&mut self, id: u64) {
        self.send(&RequestEnvelope {
            id,
            acting: acting_for(&Request::Ping),
            request: Request::Ping,
        })
        .expect("send ping");
        let reply: ReplyEnvelope = self.recv().expect("reply").expect("not closed");
        assert_eq!(reply.id, id);
        assert_eq!(reply.result, Ok(Response::Pong));
    }
}

#[test]
fn a_gateway_with_a_certificate_from_our_ca_is_served_like_a_unix_link() {
    let remote = Remote::start();
    let mut link = remote
        .tls_client(Some(&remote.certs))
        .expect("valid client served");
    // Pipelined: many requests written before any reply is read, answered in order.
    for id in 1..=200 {
        link.send(&RequestEnvelope {
            id,
            acting: acting_for(&Request::Ping),
            request: Request::Ping,
        })
        .expect("send");
    }
    for id in 1..=200 {
        let reply: ReplyEnvelope = link.recv().expect("reply").expect("open");
        assert_eq!((reply.id, reply.result), (id, Ok(Response::Pong)));
    }
}

#[test]
fn bad_peers_are_refused_while_a_valid_link_keeps_working() {
    let remote = Remote::start();
    let mut good = remote.tls_client(Some(&remote.certs)).expect("valid");
    good.ping(1);

    let no_cert = remote.tls_client(None);
    assert!(
        no_cert.is_err(),
        "a client without a certificate was served"
    );
    good.ping(2);

    let other_ca = remote.tls_client(Some(&remote.other_ca));
    assert!(
        other_ca.is_err(),
        "a certificate from another CA was served"
    );
    good.ping(3);

    // Plaintext: the store protocol's own hello, unencrypted, on the TCP port.
    let mut plain = TcpStream::connect(remote.addr).expect("connect");
    plain.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut hello = Vec::new();
    encode_frame(
        &ClientHello::new(NodeName::from_static("test"), ClientRole::Admin),
        &mut hello,
    )
    .expect("encode");
    plain.write_all(&hello).expect("send plaintext");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        decode_frame::<ServerHello>(&answer).is_err() || answer.is_empty() || answer[0] == 0x15,
        "plaintext got a store answer: {answer:?}"
    );
    good.ping(4);

    // Half a ClientHello, then silence: closed once the handshake deadline passes.
    let mut stalled = TcpStream::connect(remote.addr).expect("connect");
    stalled.set_read_timeout(Some(WAIT)).expect("timeout");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .expect("half hello");
    let started = Instant::now();
    let mut sink = Vec::new();
    let _ = stalled.read_to_end(&mut sink);
    let waited = started.elapsed();
    assert!(
        waited >= TEST_HANDSHAKE_TIMEOUT / 2 && waited < WAIT,
        "stalled handshake closed after {waited:?}"
    );
    good.ping(5);
}

#[test]
fn handshakes_beyond_the_limit_are_closed_at_once() {
    let handshake_timeout = Duration::from_secs(5);
    let remote = Remote::start_with(handshake_timeout);
    // Connected in order and silent: each holds a handshake slot until the timeout.
    let stalled: Vec<TcpStream> = (0..MAX_PENDING_HANDSHAKES)
        .map(|_| TcpStream::connect(remote.addr).expect("connect"))
        .collect();
    let mut over = TcpStream::connect(remote.addr).expect("connect");
    over.set_read_timeout(Some(WAIT)).expect("timeout");
    let started = Instant::now();
    let mut sink = Vec::new();
    let _ = over.read_to_end(&mut sink);
    assert!(
        started.elapsed() < handshake_timeout / 2,
        "the connection over the limit waited {:?}",
        started.elapsed()
    );
    drop(stalled);
    // Slots come back as the stalled peers leave: a real gateway is served again.
    let deadline = Instant::now() + WAIT;
    let mut link = loop {
        match remote.tls_client(Some(&remote.certs)) {
            Ok(link) => break link,
            Err(e) => assert!(Instant::now() < deadline, "never served again: {e}"),
        }
        thread::sleep(Duration::from_millis(50));
    };
    link.ping(1);
}

#[test]
fn without_remote_configuration_there_is_no_tcp_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::bind(&dir.path().join("store.sock")).expect("bind");
    assert!(server.remote_addr().is_none());
}

#[test]
fn missing_certificate_files_fail_with_a_message_saying_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::bind(&dir.path().join("store.sock")).expect("bind");
    let err = server
        .listen_remote(&RemoteConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ca_file: dir.path().join("missing-ca.pem"),
            cert_file: dir.path().join("store.pem"),
            key_file: dir.path().join("store.key"),
        })
        .expect_err("missing files refused");
    let text = err.to_string();
    assert!(text.contains("missing-ca.pem"), "{text}");
    assert!(text.contains("gen-certs"), "{text}");
    assert!(server.remote_addr().is_none());
}
