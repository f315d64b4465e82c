//! The metrics port: a small blocking HTTP/1.1 server on threads of its own (no async runtime,
//! never on a shard) answering `GET /metrics` (Prometheus text; bearer token when configured),
//! `GET /healthz` (the process is alive) and `GET /readyz` (listeners bound, store reachable from
//! every shard, not draining). HEAD is answered like GET, without the body.
//!
//! Requests are read with `protocol::http`'s reader and every answer, refusals included, is
//! written by its writer, the same codec the public ports use. A connection may carry several
//! requests (keep-alive, pipelining), each under a header deadline and a body deadline; what one
//! client can cost is bounded: one of [`MAX_CONCURRENT_CONNECTIONS`] slots, for at most
//! [`MAX_REQUESTS_PER_CONNECTION`] requests or [`MAX_CONNECTION_AGE`], and a buffer bounded by
//! [`REQUEST_LIMITS`].

use super::{CONTENT_TYPE, GatewayMetrics, Readiness};
use arc_swap::ArcSwapOption;
use portcullis_protocol::http::{
    DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_HEADERS, Limits, Method, Miss, Parsed, Phase, Request,
    RequestError, RequestReader, Response, RouteError, Router, WriteMode,
};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;

/// What one request may cost. Heads as before (scrapers send a few hundred bytes); nothing here
/// takes a body, so a body is small, read and dropped, only so the next request is framed right.
pub const REQUEST_LIMITS: Limits = Limits {
    max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
    max_headers: DEFAULT_MAX_HEADERS,
    max_body_bytes: 1024,
    accept_chunked: true,
};
/// A request head must arrive within this: from the accept for a connection's first request,
/// from its first byte for the later ones. The answer is 408, or silence if nothing came.
pub const HEADER_DEADLINE: Duration = Duration::from_secs(2);
/// A request body must arrive within this after its head.
pub const BODY_DEADLINE: Duration = Duration::from_secs(2);
/// A kept-alive connection waits this long for the next request, then closes.
pub const IDLE_DEADLINE: Duration = Duration::from_secs(5);
/// An answer must be taken within this.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// Requests one connection may carry; the last answer says `Connection: close`.
pub const MAX_REQUESTS_PER_CONNECTION: usize = 100;
/// After this, the next answer on a connection says `Connection: close`, so no client keeps a
/// slot for long.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(30);
/// Connections served at once, each on its own thread; beyond it a connection is answered 503 at
/// once. A client that opens a connection and sends nothing holds one slot for at most
/// [`HEADER_DEADLINE`] instead of stalling every scrape behind it.
pub const MAX_CONCURRENT_CONNECTIONS: usize = 4;
/// After a closing answer, unread request bytes are drained for at most this long (and
/// [`CLOSE_DRAIN_BYTES`]), so the close is a FIN, not a reset that could destroy the answer.
const CLOSE_DRAIN_TIME: Duration = Duration::from_millis(200);
const CLOSE_DRAIN_BYTES: usize = 64 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 4096;

#[derive(Debug, Error)]
pub enum MetricsServerError {
    /// The operator's: the port is taken or not ours to bind.
    #[error(
        "cannot bind the metrics port {addr}: {source}; set metrics.port (or metrics.enabled = false)"
    )]
    Bind { addr: SocketAddr, source: io::Error },
}

/// The bearer token `/metrics` requires, replaceable at run time (SIGHUP).
pub type BearerToken = Arc<ArcSwapOption<String>>;

/// A bound metrics listener, not yet serving.
pub struct MetricsListener {
    listener: TcpListener,
    pub local_addr: SocketAddr,
}

pub fn bind(addr: SocketAddr) -> Result<MetricsListener, MetricsServerError> {
    let listener =
        TcpListener::bind(addr).map_err(|source| MetricsServerError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| MetricsServerError::Bind { addr, source })?;
    Ok(MetricsListener {
        listener,
        local_addr,
    })
}

/// The deadlines and quotas of one connection (the constants above; shorter in tests).
#[derive(Debug, Clone, Copy)]
struct Pacing {
    header: Duration,
    body: Duration,
    idle: Duration,
    write: Duration,
    max_requests: usize,
    max_age: Duration,
}

const PACING: Pacing = Pacing {
    header: HEADER_DEADLINE,
    body: BODY_DEADLINE,
    idle: IDLE_DEADLINE,
    write: WRITE_DEADLINE,
    max_requests: MAX_REQUESTS_PER_CONNECTION,
    max_age: MAX_CONNECTION_AGE,
};

/// What the port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Metrics,
    Health,
    Ready,
}

/// The port's routes.
fn routes() -> Result<Router<Endpoint>, RouteError> {
    Router::new()
        .with(Method::Get, "/metrics", Endpoint::Metrics)?
        .with(Method::Get, "/healthz", Endpoint::Health)?
        .with(Method::Get, "/readyz", Endpoint::Ready)
}

/// What every connection thread shares.
struct Served {
    metrics: GatewayMetrics,
    token: BearerToken,
    routes: Router<Endpoint>,
    pacing: Pacing,
}

impl MetricsListener {
    /// Serves on a thread of its own until the process exits.
    pub fn serve(self, metrics: GatewayMetrics, token: BearerToken) -> io::Result<JoinHandle<()>> {
        self.serve_paced(metrics, token, PACING)
    }

    fn serve_paced(
        self,
        metrics: GatewayMetrics,
        token: BearerToken,
        pacing: Pacing,
    ) -> io::Result<JoinHandle<()>> {
        let served = Arc::new(Served {
            metrics,
            token,
            routes: routes().map_err(io::Error::other)?,
            pacing,
        });
        std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || accept_loop(&self.listener, &served))
    }
}

fn accept_loop(listener: &TcpListener, served: &Arc<Served>) {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                if busy.load(Ordering::Acquire) >= MAX_CONCURRENT_CONNECTIONS {
                    refuse_busy(stream);
                    continue;
                }
                busy.fetch_add(1, Ordering::AcqRel);
                let (served, done) = (Arc::clone(served), Arc::clone(&busy));
                let spawned = std::thread::Builder::new()
                    .name("metrics-conn".into())
                    .spawn(move || {
                        if let Err(e) = serve_connection(stream, &served) {
                            tracing::debug!(error = %e, "metrics connection failed");
                        }
                        done.fetch_sub(1, Ordering::AcqRel);
                    });
                if let Err(e) = spawned {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    tracing::warn!(error = %e, "cannot start a metrics connection thread");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Answers 503 without reading the request: every slot is taken. On the accept thread, so it
/// never waits long.
fn refuse_busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let text = format!("all {MAX_CONCURRENT_CONNECTIONS} metrics connections are busy\n");
    let _ = stream.write_all(&Response::text(503, text).to_bytes(WriteMode::CLOSE));
}

/// Reads requests off one connection and answers each, until either side closes or a deadline
/// passes.
fn serve_connection(mut stream: TcpStream, served: &Served) -> io::Result<()> {
    let pacing = served.pacing;
    let accepted = Instant::now();
    stream.set_write_timeout(Some(pacing.write))?;
    let mut reader = RequestReader::new(REQUEST_LIMITS);
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut chunk = [0u8; READ_CHUNK];
    let mut answers = 0usize;
    // When the current request's head started (the accept, for the first), once it has.
    let mut head_since = Some(accepted);
    let mut body_since = None;
    let mut idle_since = accepted;
    let mut continue_sent = false;
    loop {
        let phase = match reader.read(&buf) {
            Err(refusal) => return refuse(stream, &refusal),
            Ok(Parsed::Complete { request, used }) => {
                buf.drain(..used);
                answers += 1;
                let server_closes =
                    answers >= pacing.max_requests || accepted.elapsed() >= pacing.max_age;
                let mode = WriteMode::answering(&request, server_closes);
                let response = answer(served, &request);
                stream.write_all(&response.to_bytes(mode))?;
                if mode.close {
                    close_gracefully(stream);
                    return Ok(());
                }
                let now = Instant::now();
                (idle_since, body_since, continue_sent) = (now, None, false);
                head_since = (!buf.is_empty()).then_some(now);
                continue;
            }
            Ok(Parsed::NeedMore(phase)) => phase,
        };
        if reader.awaits_continue() && !continue_sent {
            stream.write_all(&Response::new(100).to_bytes(WriteMode::KEEP_ALIVE))?;
            continue_sent = true;
        }
        let deadline = match (phase, head_since) {
            (Phase::Body, _) => *body_since.get_or_insert_with(Instant::now) + pacing.body,
            (Phase::Head, Some(since)) => since + pacing.header,
            (Phase::Head, None) => idle_since + pacing.idle,
        };
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return time_out(stream, phase, !buf.is_empty());
        };
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                head_since.get_or_insert_with(Instant::now);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Answers a refused request and closes: its framing cannot be trusted, so nothing after it is
/// read.
fn refuse(mut stream: TcpStream, refusal: &RequestError) -> io::Result<()> {
    tracing::debug!(status = refusal.status(), why = %refusal, "metrics request refused");
    stream.write_all(&refusal.response().to_bytes(WriteMode::CLOSE))?;
    close_gracefully(stream);
    Ok(())
}

/// A deadline passed: 408 if part of a request came, silence if the connection was idle.
fn time_out(mut stream: TcpStream, phase: Phase, partial: bool) -> io::Result<()> {
    if phase == Phase::Body || partial {
        let what = match phase {
            Phase::Head => "request head",
            Phase::Body => "request body",
        };
        let response = Response::text(408, format!("{what} not received in time\n"));
        stream.write_all(&response.to_bytes(WriteMode::CLOSE))?;
        close_gracefully(stream);
    }
    Ok(())
}

/// Closes after the last answer: stops sending, then reads and drops what the client still sends
/// for a moment, so unread bytes do not turn the close into a reset that destroys the answer.
fn close_gracefully(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + CLOSE_DRAIN_TIME;
    let mut sink = [0u8; 1024];
    let mut drained = 0;
    while drained < CLOSE_DRAIN_BYTES {
        let Some(left) = until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return;
        };
        if stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Decides the answer to one request (no IO, so it is tested directly).
fn answer(served: &Served, request: &Request) -> Response {
    let endpoint = match served.routes.route(request.method, &request.path) {
        Ok(found) => *found.value,
        Err(miss @ Miss::MethodNotAllowed { .. }) => {
            return miss.response("only GET is served here\n");
        }
        Err(miss) => return miss.response("not found; try /metrics, /healthz or /readyz\n"),
    };
    match endpoint {
        Endpoint::Health => Response::text(200, "ok\n"),
        Endpoint::Ready => match served.metrics.readiness() {
            Readiness::Ready => Response::text(200, "ready\n"),
            Readiness::Starting => Response::text(503, "starting: listeners not bound yet\n"),
            Readiness::Draining => Response::text(503, "draining: shutting down\n"),
            Readiness::StoreUnreachable { shards_down } => Response::text(
                503,
                format!("store unreachable from {shards_down} shard(s)\n"),
            ),
        },
        Endpoint::Metrics => {
            let expected = served.token.load();
            if let Some(expected) = expected.as_deref()
                && !bearer_matches(request.header("authorization"), expected)
            {
                return Response::text(401, "a bearer token is required\n")
                    .with_header("WWW-Authenticate", "Bearer realm=\"portcullis-metrics\"");
            }
            Response::new(200).with_body(CONTENT_TYPE, served.metrics.render())
        }
    }
}

/// Compares digests, so the time taken does not depend on how much of the token was right.
fn bearer_matches(authorization: Option<&[u8]>, expected: &str) -> bool {
    let Some(presented) = authorization.and_then(|v| v.strip_prefix(b"Bearer ")) else {
        return false;
    };
    Sha256::digest(presented.trim_ascii()) == Sha256::digest(expected.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GlobalMetrics;

    fn metrics() -> GatewayMetrics {
        GatewayMetrics {
            global: Arc::new(GlobalMetrics::default()),
            shards: Vec::new(),
            store: None,
        }
    }

    fn served(metrics: GatewayMetrics, token: Option<&str>) -> Served {
        Served {
            metrics,
            token: Arc::new(ArcSwapOption::new(token.map(|t| Arc::new(t.to_owned())))),
            routes: routes().expect("the routes are constants"),
            pacing: PACING,
        }
    }

    /// The answer to `request` (written as text), read with the port's own reader.
    fn ask(served: &Served, request: &str) -> Response {
        match RequestReader::new(REQUEST_LIMITS).read(request.as_bytes()) {
            Ok(Parsed::Complete { request, .. }) => answer(served, &request),
            other => panic!("{other:?}"),
        }
    }

    fn get(served: &Served, path: &str, authorization: Option<&str>) -> Response {
        let authorization = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        ask(
            served,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{authorization}\r\n"),
        )
    }

    #[test]
    fn health_ready_and_unknown_paths() {
        let m = metrics();
        let s = served(m.clone(), None);
        assert_eq!(get(&s, "/healthz", None).status(), 200);
        assert_eq!(get(&s, "/readyz", None).status(), 503);
        m.global
            .listeners_bound
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(get(&s, "/readyz", None).status(), 200);
        assert_eq!(get(&s, "/readyz?verbose", None).status(), 200);
        assert_eq!(get(&s, "/nope", None).status(), 404);
        let post = ask(&s, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(post.status(), 405);
        assert_eq!(post.header("allow"), Some("GET, HEAD"));
        let head = ask(&s, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((head.status(), head.body()), (200, &b"ok\n"[..]));
    }

    #[test]
    fn metrics_need_the_configured_bearer_token() {
        let token = "s3cret-token-0123456789";
        let s = served(metrics(), Some(token));
        let refused = get(&s, "/metrics", None);
        assert_eq!(refused.status(), 401);
        assert_eq!(
            refused.header("www-authenticate"),
            Some("Bearer realm=\"portcullis-metrics\"")
        );
        assert_eq!(get(&s, "/metrics", Some("Bearer wrong")).status(), 401);
        let ok = get(&s, "/metrics", Some(&format!("Bearer {token}")));
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.header("content-type"), Some(CONTENT_TYPE));
        let body = String::from_utf8_lossy(ok.body());
        assert!(body.contains("portcullis_draining"), "{body}");
        assert_eq!(
            get(&served(metrics(), None), "/metrics", None).status(),
            200
        );
        assert_eq!(get(&s, "/healthz", None).status(), 200, "health stays open");
    }

    /// A metrics listener on an ephemeral loopback port, serving on its own thread.
    fn serving_paced(pacing: Pacing) -> SocketAddr {
        let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("binds");
        let addr = listener.local_addr;
        listener
            .serve_paced(metrics(), Arc::new(ArcSwapOption::empty()), pacing)
            .expect("thread");
        addr
    }

    fn serving() -> SocketAddr {
        serving_paced(PACING)
    }

    /// Sends `request` on a new connection and reads the answer until the server closes.
    fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(request).expect("writes");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("reads");
        answer
    }

    /// Reads one answer (head and Content-Length body) off a kept-alive connection.
    fn read_answer(stream: &mut TcpStream, pending: &mut Vec<u8>) -> String {
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(pending).into_owned();
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if rest.len() >= length {
                    let used = head.len() + 4 + length;
                    pending.drain(..used);
                    return text[..used].to_owned();
                }
            }
            let n = stream.read(&mut chunk).expect("reads");
            assert!(n > 0, "closed before a whole answer: {text:?}");
            pending.extend_from_slice(&chunk[..n]);
        }
    }

    #[test]
    fn serves_over_a_real_socket() {
        let addr = serving();
        let answer = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("Connection: close\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");

        let answer = exchange(addr, b"\x16\x03\x01garbage\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let answer = exchange(addr, b"GET /healthz HTTP/1.0\r\n\r\n");
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "HTTP/1.0 closes: {answer}"
        );
    }

    #[test]
    fn keep_alive_and_pipelining_on_one_connection() {
        let addr = serving();
        let mut stream = TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut pending = Vec::new();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("writes");
        let first = read_answer(&mut stream, &mut pending);
        assert!(
            first.starts_with("HTTP/1.1 200 OK\r\n") && !first.contains("close"),
            "{first}"
        );
        // Three pipelined requests in one write, answered in order; the last closes.
        stream
            .write_all(
                b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
                  POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
                  GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .expect("writes");
        let statuses: Vec<String> = (0..3)
            .map(|_| read_answer(&mut stream, &mut pending)[9..12].to_owned())
            .collect();
        assert_eq!(statuses, ["404", "405", "503"]);
        let mut rest = String::new();
        stream.read_to_string(&mut rest).expect("closes");
        assert_eq!(rest, "");
    }

    #[test]
    fn refusals_answer_with_their_status_and_close() {
        let addr = serving();
        let too_large = format!(
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            REQUEST_LIMITS.max_body_bytes + 1
        );
        for (request, status) in [
            (too_large.as_str(), "413"),
            ("GET / HTTP/2.0\r\n\r\n", "505"),
            ("GET / HTTP/1.1\r\n\r\n", "400"),
            ("BREW / HTTP/1.1\r\nHost: x\r\n\r\n", "501"),
            (
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "400",
            ),
        ] {
            let answer = exchange(addr, request.as_bytes());
            assert_eq!(&answer[9..12], status, "{answer}");
            assert!(answer.contains("Connection: close\r\n"), "{answer}");
        }
        let head = format!(
            "GET /{} HTTP/1.1\r\n",
            "a".repeat(REQUEST_LIMITS.max_head_bytes)
        );
        assert!(exchange(addr, head.as_bytes()).starts_with("HTTP/1.1 414"));
    }

    fn quick() -> Pacing {
        Pacing {
            header: Duration::from_millis(300),
            body: Duration::from_millis(300),
            idle: Duration::from_millis(300),
            write: Duration::from_millis(300),
            max_requests: 2,
            max_age: Duration::from_secs(30),
        }
    }

    #[test]
    fn deadlines_408_for_a_partial_request_silence_when_idle() {
        let addr = serving_paced(quick());
        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let answer = exchange(
            addr,
            b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab",
        );
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request body"), "{answer}");
        // Idle after an answer: closed without a word once the idle deadline passes.
        let started = Instant::now();
        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(exchange(addr, b""), "", "silent client, silent close");
    }

    #[test]
    fn the_request_quota_closes_the_connection() {
        let addr = serving_paced(quick());
        let two =
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let answer = exchange(addr, two);
        assert_eq!(answer.matches("200 OK").count(), 2, "{answer}");
        assert_eq!(answer.matches("Connection: close").count(), 1, "{answer}");
    }

    #[test]
    fn expect_continue_gets_100_before_the_body() {
        let addr = serving();
        let mut stream = TcpStream::connect(addr).expect("connects");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
            .write_all(
                b"POST /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
                  Content-Length: 2\r\nConnection: close\r\n\r\n",
            )
            .expect("writes");
        let mut pending = Vec::new();
        let interim = read_answer(&mut stream, &mut pending);
        assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
        stream.write_all(b"ab").expect("writes");
        let last = read_answer(&mut stream, &mut pending);
        assert!(last.starts_with("HTTP/1.1 405"), "{last}");
    }

    #[test]
    fn a_silent_client_does_not_stall_other_scrapes() {
        let addr = serving();
        // Connections that send nothing hold their slots until the header deadline...
        let silent: Vec<TcpStream> = (0..MAX_CONCURRENT_CONNECTIONS - 1)
            .map(|_| TcpStream::connect(addr).expect("connects"))
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        // ...while a scrape is answered at once, not after HEADER_DEADLINE.
        let start = Instant::now();
        let answer = exchange(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(start.elapsed() < HEADER_DEADLINE, "{:?}", start.elapsed());
        // Once silent clients hold every slot, the next is refused at once with 503. (The
        // scrape's thread frees its slot a moment after its answer, so count until the refusal.)
        let mut held = Vec::new();
        let mut refused = None;
        for _ in 0..MAX_CONCURRENT_CONNECTIONS + 2 {
            let mut probe = TcpStream::connect(addr).expect("connects");
            probe
                .set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            let mut answer = String::new();
            let _ = probe.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 503") {
                refused = Some(answer);
                break;
            }
            held.push(probe);
        }
        assert!(refused.is_some(), "no 503 with {} clients held", held.len());
        assert!(held.len() + silent.len() >= MAX_CONCURRENT_CONNECTIONS - 1);
        drop(silent);
    }
}
