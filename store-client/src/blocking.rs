//! A blocking client for the store, over its Unix socket or, for a remote store, TCP with mutual
//! TLS ([`StoreEndpoint`]), for callers that may wait: the admin CLIs (the gateway's and the
//! store's own), the gateway's start-up (presence reset, readiness probe), the metrics scraper,
//! the supervisor and the load generator. An event loop uses [`crate::link::StoreLink`] instead.
//! The client runs the hello exchange of [`crate::hello`], numbers requests, checks that each
//! reply echoes the id it expects, and pipelines batches with [`StoreClient::call_many`].

use crate::endpoint::{RemoteStore, StoreEndpoint};
use crate::hello::{self, HelloError, mismatch_text};
use portcullis_protocol::store::{
    Acting, ClientHello, ReplyEnvelope, Request, RequestEnvelope, Response, ServerHello,
    StoreError, WireError, decode_frame, encode_frame,
};
use rustls::{ClientConnection, StreamOwned};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Requests in flight at most during [`StoreClient::call_many`]. Writing a whole large batch
/// before reading any reply could deadlock once both socket buffers are full, so the client
/// stops writing and drains replies when this many requests or [`MAX_PIPELINED_BYTES`] are
/// outstanding.
const MAX_PIPELINED_REQUESTS: usize = 1024;

/// Request bytes in flight at most; well below the default Unix socket buffer (about 200 KiB).
const MAX_PIPELINED_BYTES: usize = 64 * 1024;

/// Bytes read from the socket per `read` call.
const READ_CHUNK: usize = 64 * 1024;

/// Why a store call failed, by whose fault.
#[derive(Debug, Error)]
pub enum StoreClientError {
    /// Nothing answers on the socket: the store is not running, or this is the wrong data dir.
    #[error(
        "cannot reach the store at {}: {source}; is `portcullis serve` running with this --data-dir \
         (or are store.socket / store.remote right)?",
        at
    )]
    Unreachable { at: String, source: io::Error },
    /// The store closed the link (it exited, restarted, or refused us).
    #[error(
        "the store at {} closed the connection; it may have exited or restarted",
        at
    )]
    Disconnected { at: String },
    /// The store speaks another version of the wire protocol: the binaries are from different builds.
    #[error("the store at {at} {}", mismatch_text(*ours, *theirs, reason.as_deref()))]
    VersionMismatch {
        at: String,
        ours: u16,
        theirs: u16,
        reason: Option<String>,
    },
    /// The store speaks our version but refused this client (its reason says why, e.g. a peer
    /// uid check).
    #[error("the store at {} refused the connection: {reason}", at)]
    Refused { at: String, reason: String },
    /// The store sent something that breaks the wire contract (a bug on one side).
    #[error("protocol error on the store link {}: {detail}", at)]
    Protocol { at: String, detail: String },
    /// The store answered the request with an error.
    #[error("the store refused the request: {0}")]
    Store(#[from] StoreError),
    /// The store did not answer in time.
    #[error(
        "the store at {} did not answer within {timeout:?} while {waiting_for}",
        at
    )]
    Timeout {
        at: String,
        timeout: Duration,
        waiting_for: &'static str,
    },
    /// The TLS session with a remote store failed: a certificate the other side does not
    /// accept, or not a store at that address.
    #[error(
        "TLS with the store at {} failed: {error}; check that store.remote_ca_file is the CA of the store's \
         certificate, store.remote_server_name one of its --store-name values, and that the store's \
         --remote-ca-file signed this gateway's certificate",
        at
    )]
    Tls { at: String, error: io::Error },
    /// Reading or writing the socket failed for another reason.
    #[error("I/O error on the store link {}: {source}", at)]
    Io { at: String, source: io::Error },
}

impl StoreClientError {
    /// Whether the failure means the store is absent or went away (worth retrying later), as
    /// opposed to a refusal or a bug.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreClientError::Unreachable { .. } | StoreClientError::Disconnected { .. }
        )
    }

    fn from_hello(at: String, error: HelloError) -> Self {
        match error {
            HelloError::VersionMismatch {
                ours,
                theirs,
                reason,
            } => StoreClientError::VersionMismatch {
                at,
                ours,
                theirs,
                reason,
            },
            HelloError::Refused { reason, .. } => StoreClientError::Refused { at, reason },
        }
    }
}

/// One blocking link to the store. After a transport or protocol failure the link is out of step
/// with the store, so every later call fails too: reconnect instead.
#[derive(Debug)]
pub struct StoreClient {
    /// The store's address, for messages.
    at: String,
    stream: Transport,
    timeout: Duration,
    next_id: u64,
    /// Bytes received but not yet decoded (a reply may arrive split or several at once).
    received: Vec<u8>,
    /// Set after a failure that desynchronised the link.
    broken: Option<String>,
}

impl StoreClient {
    /// Connects to a Unix socket and performs the hello exchange, saying `hello` (who we are).
    /// `timeout` bounds the connect, the hello and, later, each call.
    pub fn connect(
        socket: &Path,
        hello: ClientHello,
        timeout: Duration,
    ) -> Result<Self, StoreClientError> {
        Self::connect_to(&StoreEndpoint::Unix(socket.to_owned()), hello, timeout)
    }

    /// Connects to the store wherever it is (for a remote store: TCP, then the TLS handshake
    /// with our client certificate) and performs the hello exchange.
    pub fn connect_to(
        endpoint: &StoreEndpoint,
        hello: ClientHello,
        timeout: Duration,
    ) -> Result<Self, StoreClientError> {
        let at = endpoint.to_string();
        let stream = match endpoint {
            StoreEndpoint::Unix(path) => UnixStream::connect(path).map(Transport::Unix),
            StoreEndpoint::Remote(remote) => connect_tls(remote, timeout),
        }
        .map_err(|source| StoreClientError::Unreachable {
            at: at.clone(),
            source,
        })?;
        let mut client = StoreClient {
            at: at.clone(),
            stream,
            timeout,
            next_id: 1,
            received: Vec::with_capacity(READ_CHUNK),
            broken: None,
        };
        let deadline = Instant::now() + timeout;
        let mut frame = Vec::new();
        hello::encode_hello(&hello, &mut frame).map_err(|e| client.wire_error(e))?;
        client.write_all(&frame, deadline, "sending the hello")?;
        let answer = client.read_message::<ServerHello>(deadline, "waiting for the hello")?;
        hello::check_answer(answer).map_err(|e| StoreClientError::from_hello(at, e))?;
        Ok(client)
    }

    /// Where this client is connected to.
    pub fn store_address(&self) -> &str {
        &self.at
    }

    /// Sends one request and waits for its reply; a store-side refusal becomes
    /// [`StoreClientError::Store`].
    pub fn call(&mut self, request: Request) -> Result<Response, StoreClientError> {
        self.call_as(None, request)
    }

    /// [`StoreClient::call`] acting for `acting` (see `RequestEnvelope::acting`).
    pub fn call_as(
        &mut self,
        acting: Option<&Acting>,
        request: Request,
    ) -> Result<Response, StoreClientError> {
        let mut replies = self.call_many_as(acting, vec![request])?;
        match replies.pop() {
            Some(reply) => Ok(reply?),
            None => Err(self.protocol_error("no reply for a single request".into())),
        }
    }

    /// Sends many requests pipelined and returns their results in the same order. The outer
    /// error is a link failure (after which the link is unusable); the inner ones are the store's
    /// answers to individual requests.
    pub fn call_many(
        &mut self,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, StoreError>>, StoreClientError> {
        self.call_many_as(None, requests)
    }

    /// [`StoreClient::call_many`], every request acting for `acting`.
    pub fn call_many_as(
        &mut self,
        acting: Option<&Acting>,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, StoreError>>, StoreClientError> {
        if let Some(why) = &self.broken {
            return Err(self.protocol_error(format!(
                "link unusable after an earlier failure ({why}); reconnect"
            )));
        }
        let deadline = Instant::now() + self.timeout;
        let mut results = Vec::with_capacity(requests.len());
        let mut in_flight = std::collections::VecDeque::new();
        let mut pending_bytes = Vec::new();
        for request in requests {
            let id = self.next_id;
            self.next_id += 1;
            let envelope = RequestEnvelope {
                id,
                acting: acting.cloned(),
                request,
            };
            self.encode(&envelope, &mut pending_bytes)?;
            in_flight.push_back(id);
            if in_flight.len() >= MAX_PIPELINED_REQUESTS
                || pending_bytes.len() >= MAX_PIPELINED_BYTES
            {
                self.write_all(&pending_bytes, deadline, "sending requests")?;
                pending_bytes.clear();
                while let Some(id) = in_flight.pop_front() {
                    results.push(self.read_reply(id, deadline)?);
                }
            }
        }
        self.write_all(&pending_bytes, deadline, "sending requests")?;
        while let Some(id) = in_flight.pop_front() {
            results.push(self.read_reply(id, deadline)?);
        }
        Ok(results)
    }

    /// Liveness check: a `Ping` answered with `Pong`.
    pub fn ping(&mut self) -> Result<(), StoreClientError> {
        match self.call(Request::Ping)? {
            Response::Pong => Ok(()),
            other => Err(self.protocol_error(format!("expected Pong, got {other:?}"))),
        }
    }

    fn read_reply(
        &mut self,
        expected_id: u64,
        deadline: Instant,
    ) -> Result<Result<Response, StoreError>, StoreClientError> {
        let reply: ReplyEnvelope = self.read_message(deadline, "waiting for a reply")?;
        if reply.id != expected_id {
            return Err(self.protocol_error(format!(
                "reply carries id {} but request {expected_id} was next",
                reply.id
            )));
        }
        Ok(reply.result)
    }

    fn encode<T: Serialize>(
        &mut self,
        message: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), StoreClientError> {
        encode_frame(message, out).map_err(|e| self.wire_error(e))
    }

    fn write_all(
        &mut self,
        bytes: &[u8],
        deadline: Instant,
        doing: &'static str,
    ) -> Result<(), StoreClientError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut written = 0;
        while written < bytes.len() {
            let remaining = self.remaining(deadline, doing)?;
            if let Err(source) = self.stream.set_write_timeout(Some(remaining)) {
                return Err(self.io_error(source));
            }
            match self.stream.write(&bytes[written..]) {
                Ok(0) => return Err(self.disconnected()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.transport_error(e, doing)),
            }
        }
        // TLS: push out the records the plaintext became.
        match self.stream.flush() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.transport_error(e, doing)),
        }
    }

    fn read_message<T: DeserializeOwned>(
        &mut self,
        deadline: Instant,
        doing: &'static str,
    ) -> Result<T, StoreClientError> {
        loop {
            match decode_frame::<T>(&self.received) {
                Ok(Some((message, used))) => {
                    self.received.drain(..used);
                    return Ok(message);
                }
                Ok(None) => {}
                Err(e) => return Err(self.wire_error(e)),
            }
            let remaining = self.remaining(deadline, doing)?;
            if let Err(source) = self.stream.set_read_timeout(Some(remaining)) {
                return Err(self.io_error(source));
            }
            let start = self.received.len();
            self.received.resize(start + READ_CHUNK, 0);
            let outcome = self.stream.read(&mut self.received[start..]);
            let got = outcome.as_ref().map_or(0, |n| *n);
            self.received.truncate(start + got);
            match outcome {
                Ok(0) => return Err(self.disconnected()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.transport_error(e, doing)),
            }
        }
    }

    fn remaining(
        &mut self,
        deadline: Instant,
        doing: &'static str,
    ) -> Result<Duration, StoreClientError> {
        match deadline.checked_duration_since(Instant::now()) {
            // A zero timeout means "block forever" to the socket API, so treat it as expired.
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(self.timed_out(doing)),
        }
    }

    fn transport_error(&mut self, error: io::Error, doing: &'static str) -> StoreClientError {
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timed_out(doing),
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::UnexpectedEof => self.disconnected(),
            // rustls reports handshake and alert failures as invalid data.
            io::ErrorKind::InvalidData if matches!(self.stream, Transport::Tls(_)) => {
                self.broken = Some(error.to_string());
                StoreClientError::Tls {
                    at: self.at.clone(),
                    error,
                }
            }
            _ => self.io_error(error),
        }
    }

    fn timed_out(&mut self, waiting_for: &'static str) -> StoreClientError {
        self.broken = Some(format!("timed out {waiting_for}"));
        StoreClientError::Timeout {
            at: self.at.clone(),
            timeout: self.timeout,
            waiting_for,
        }
    }

    fn disconnected(&mut self) -> StoreClientError {
        self.broken = Some("the store closed the connection".into());
        StoreClientError::Disconnected {
            at: self.at.clone(),
        }
    }

    fn io_error(&mut self, source: io::Error) -> StoreClientError {
        self.broken = Some(source.to_string());
        StoreClientError::Io {
            at: self.at.clone(),
            source,
        }
    }

    fn wire_error(&mut self, error: WireError) -> StoreClientError {
        self.protocol_error(error.to_string())
    }

    fn protocol_error(&mut self, detail: String) -> StoreClientError {
        self.broken = Some(detail.clone());
        StoreClientError::Protocol {
            at: self.at.clone(),
            detail,
        }
    }
}

/// The blocking byte stream under a client.
#[derive(Debug)]
enum Transport {
    Unix(UnixStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

/// Opens TCP to the first address that answers within `timeout` and starts a TLS session; the
/// handshake itself runs on the first write (the hello), under the caller's deadline.
fn connect_tls(remote: &RemoteStore, timeout: Duration) -> io::Result<Transport> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in &remote.addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(sock) => {
                sock.set_nodelay(true)?;
                let conn = ClientConnection::new(
                    std::sync::Arc::clone(&remote.tls),
                    remote.server_name.clone(),
                )
                .map_err(io::Error::other)?;
                return Ok(Transport::Tls(Box::new(StreamOwned::new(conn, sock))));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Transport {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Transport::Unix(s) => s.set_read_timeout(timeout),
            Transport::Tls(s) => s.sock.set_read_timeout(timeout),
        }
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Transport::Unix(s) => s.set_write_timeout(timeout),
            Transport::Tls(s) => s.sock.set_write_timeout(timeout),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Unix(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Unix(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Unix(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// A scripted in-process store for unit tests of the client and its users (other crates get it
/// with the `test-util` feature).
#[cfg(any(test, feature = "test-util"))]
#[allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed expect is a failed test
pub mod fake_store {
    use super::*;
    use portcullis_protocol::store::{ClientRole, NodeName, WIRE_VERSION};
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::thread;

    /// Reads one framed message from a blocking stream (server side).
    fn read_frame<T: DeserializeOwned>(stream: &mut UnixStream, buf: &mut Vec<u8>) -> Option<T> {
        loop {
            if let Some((msg, used)) = decode_frame::<T>(buf).expect("valid frame") {
                buf.drain(..used);
                return Some(msg);
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn send<T: Serialize>(stream: &mut UnixStream, msg: &T) {
        let mut out = Vec::new();
        encode_frame(msg, &mut out).expect("encodes");
        // The client may have given up already (timeout tests); that is not the server's failure.
        let _ = stream.write_all(&out);
    }

    /// Accepts one link in a thread, answers the hello with `hello`, then answers each request
    /// with `answer` until it returns `None` or the client hangs up.
    pub fn spawn(
        hello: ServerHello,
        mut answer: impl FnMut(RequestEnvelope) -> Option<ReplyEnvelope> + Send + 'static,
    ) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut buf = Vec::new();
            let client_hello: ClientHello = read_frame(&mut stream, &mut buf).expect("hello");
            assert_eq!(client_hello.version, WIRE_VERSION);
            send(&mut stream, &hello);
            while let Some(request) = read_frame::<RequestEnvelope>(&mut stream, &mut buf) {
                match answer(request) {
                    Some(reply) => send(&mut stream, &reply),
                    None => return,
                }
            }
        });
        (dir, path, server)
    }

    /// The node of test clients.
    pub const TEST_NODE: NodeName = NodeName::from_static("test");

    /// The hello of a test client (an admin link of node `test`).
    pub fn admin_hello() -> ClientHello {
        ClientHello::new(TEST_NODE, ClientRole::Admin)
    }

    /// A store that accepts the hello and answers every request with `handle`.
    pub fn serving(
        mut handle: impl FnMut(Request) -> Result<Response, StoreError> + Send + 'static,
    ) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<()>) {
        spawn(
            ServerHello::Accepted {
                version: WIRE_VERSION,
            },
            move |env| {
                Some(ReplyEnvelope {
                    id: env.id,
                    result: handle(env.request),
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fake_store::{admin_hello, serving, spawn as fake_store};
    use super::*;
    use portcullis_protocol::store::{NodeName, WIRE_VERSION};
    use std::thread;

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn pipelined_calls_come_back_in_order() {
        let (_dir, path, server) = serving(|request| match request {
            Request::Ping => Ok(Response::Pong),
            Request::GetDevice { device } => Err(StoreError::NotFound(format!("device {device}"))),
            _ => Ok(Response::Done),
        });
        let mut client = StoreClient::connect(&path, admin_hello(), TIMEOUT).expect("connects");
        client.ping().expect("pong");
        let requests: Vec<Request> = (0..3000)
            .map(|i| {
                if i % 2 == 0 {
                    Request::ResetPresence {
                        node: NodeName::new("test").expect("valid name"),
                    }
                } else {
                    Request::GetDevice { device: i }
                }
            })
            .collect();
        let replies = client.call_many(requests).expect("link works");
        assert_eq!(replies.len(), 3000);
        for (i, reply) in replies.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(reply, &Ok(Response::Done));
            } else {
                assert_eq!(reply, &Err(StoreError::NotFound(format!("device {i}"))));
            }
        }
        let err = client
            .call(Request::GetDevice { device: 9 })
            .expect_err("not found");
        assert!(
            matches!(err, StoreClientError::Store(StoreError::NotFound(_))),
            "{err}"
        );
        drop(client);
        server.join().expect("server ok");
    }

    #[test]
    fn a_wrong_echoed_id_breaks_the_link() {
        let (_dir, path, _server) = fake_store(
            ServerHello::Accepted {
                version: WIRE_VERSION,
            },
            |env| {
                Some(ReplyEnvelope {
                    id: env.id + 7,
                    result: Ok(Response::Pong),
                })
            },
        );
        let mut client = StoreClient::connect(&path, admin_hello(), TIMEOUT).expect("connects");
        let err = client.call(Request::Ping).expect_err("bad id");
        assert!(matches!(err, StoreClientError::Protocol { .. }), "{err}");
        let err = client.call(Request::Ping).expect_err("link is broken");
        assert!(err.to_string().contains("reconnect"), "{err}");
    }

    #[test]
    fn another_wire_version_is_refused_clearly() {
        let (_dir, path, _server) = fake_store(
            ServerHello::Accepted {
                version: WIRE_VERSION + 1,
            },
            |_| None,
        );
        let err = StoreClient::connect(&path, admin_hello(), TIMEOUT).expect_err("version");
        assert!(
            matches!(err, StoreClientError::VersionMismatch { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("same release"), "{err}");

        let refused = ServerHello::Refused {
            version: WIRE_VERSION + 1,
            reason: "too old".into(),
        };
        let (_dir, path, _server) = fake_store(refused, |_| None);
        let err = StoreClient::connect(&path, admin_hello(), TIMEOUT).expect_err("refused");
        assert!(err.to_string().contains("too old"), "{err}");

        let refused = ServerHello::Refused {
            version: WIRE_VERSION,
            reason: "uid 1001 is not allowed".into(),
        };
        let (_dir, path, _server) = fake_store(refused, |_| None);
        let err = StoreClient::connect(&path, admin_hello(), TIMEOUT).expect_err("refused");
        assert!(matches!(err, StoreClientError::Refused { .. }), "{err}");
        assert!(err.to_string().contains("uid 1001"), "{err}");
    }

    #[test]
    fn a_missing_socket_is_unreachable_with_a_hint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = StoreClient::connect(&dir.path().join("store.sock"), admin_hello(), TIMEOUT)
            .expect_err("absent");
        assert!(err.is_unavailable());
        assert!(err.to_string().contains("portcullis serve"), "{err}");
    }

    #[test]
    fn silence_times_out_and_a_closed_link_is_reported() {
        let (_dir, path, _server) = fake_store(
            ServerHello::Accepted {
                version: WIRE_VERSION,
            },
            |env| {
                thread::sleep(Duration::from_millis(300));
                match env.request {
                    Request::Ping => None,
                    _ => Some(ReplyEnvelope {
                        id: env.id,
                        result: Ok(Response::Done),
                    }),
                }
            },
        );
        let mut client = StoreClient::connect(&path, admin_hello(), Duration::from_millis(100))
            .expect("connects");
        let err = client
            .call(Request::ResetPresence {
                node: NodeName::new("test").expect("valid name"),
            })
            .expect_err("slow");
        assert!(matches!(err, StoreClientError::Timeout { .. }), "{err}");

        let (_dir, path, _server) = fake_store(
            ServerHello::Accepted {
                version: WIRE_VERSION,
            },
            |_| None,
        );
        let mut client = StoreClient::connect(&path, admin_hello(), TIMEOUT).expect("connects");
        let err = client.call(Request::Ping).expect_err("closed");
        assert!(
            matches!(err, StoreClientError::Disconnected { .. }),
            "{err}"
        );
    }
}
