//! The metrics port: a small blocking HTTP/1.1 server on its own thread (no async runtime, never
//! on a shard) answering `GET /metrics` (Prometheus text; bearer token when configured),
//! `GET /healthz` (the process is alive) and `GET /readyz` (listeners bound, store reachable from
//! every shard, not draining). Requests are parsed with `httparse`; each connection gets one
//! answer and is closed, and a client that sends nothing is dropped after a short timeout.

use super::{CONTENT_TYPE, GatewayMetrics, Readiness};
use arc_swap::ArcSwapOption;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Largest request head read; scrapers send a few hundred bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 32;
/// A connection must deliver its request head within this, and take its answer within it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Requests served at once, each on its own short-lived thread; beyond it a request is answered
/// 503 at once. A client that opens a connection and sends nothing then holds one slot for at
/// most `REQUEST_TIMEOUT` instead of stalling every scrape behind it.
pub const MAX_CONCURRENT_REQUESTS: usize = 4;

#[derive(Debug, Error)]
pub enum MetricsServerError {
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

impl MetricsListener {
    /// Serves on a thread of its own until the process exits.
    pub fn serve(self, metrics: GatewayMetrics, token: BearerToken) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || {
                let metrics = Arc::new(metrics);
                let busy = Arc::new(AtomicUsize::new(0));
                for stream in self.listener.incoming() {
                    match stream {
                        Ok(stream) => {
                            if busy.load(Ordering::Acquire) >= MAX_CONCURRENT_REQUESTS {
                                refuse_busy(stream);
                                continue;
                            }
                            busy.fetch_add(1, Ordering::AcqRel);
                            let (metrics, token, done) =
                                (Arc::clone(&metrics), token.clone(), Arc::clone(&busy));
                            let spawned = std::thread::Builder::new()
                                .name("metrics-request".into())
                                .spawn(move || {
                                    if let Err(e) = handle(stream, &metrics, &token) {
                                        tracing::debug!(error = %e, "metrics request failed");
                                    }
                                    done.fetch_sub(1, Ordering::AcqRel);
                                });
                            if let Err(e) = spawned {
                                busy.fetch_sub(1, Ordering::AcqRel);
                                tracing::warn!(error = %e, "cannot start a metrics request thread");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics accept failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
    }
}

/// Answers 503 without reading the request: every slot is taken.
fn refuse_busy(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
}

/// An answer: status line, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn handle(mut stream: TcpStream, metrics: &GatewayMetrics, token: &BearerToken) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let reply = loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let auth = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| h.value);
                let expected = token.load();
                break route(
                    request.method.unwrap_or(""),
                    request.path.unwrap_or(""),
                    auth,
                    expected.as_deref().map(String::as_str),
                    metrics,
                );
            }
            Ok(httparse::Status::Partial) if head.len() >= MAX_REQUEST_HEAD => {
                break Reply::text(431, "request head too large\n");
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => break Reply::text(400, format!("bad request: {e}\n")),
        }
        if Instant::now() >= deadline {
            return Ok(());
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let mut response = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    );
    if reply.status == 401 {
        response.push_str("WWW-Authenticate: Bearer realm=\"portcullis-metrics\"\r\n");
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes())?;
    stream.write_all(reply.body.as_bytes())?;
    stream.flush()
}

/// Decides the answer to one request (no IO, so it is tested directly).
pub fn route(
    method: &str,
    path: &str,
    authorization: Option<&[u8]>,
    token: Option<&str>,
    metrics: &GatewayMetrics,
) -> Reply {
    let path = path.split('?').next().unwrap_or(path);
    if method != "GET" {
        return Reply::text(405, "only GET is served here\n");
    }
    match path {
        "/healthz" => Reply::text(200, "ok\n"),
        "/readyz" => match metrics.readiness() {
            Readiness::Ready => Reply::text(200, "ready\n"),
            Readiness::Starting => Reply::text(503, "starting: listeners not bound yet\n"),
            Readiness::Draining => Reply::text(503, "draining: shutting down\n"),
            Readiness::StoreUnreachable { shards_down } => Reply::text(
                503,
                format!("store unreachable from {shards_down} shard(s)\n"),
            ),
        },
        "/metrics" => {
            if let Some(expected) = token
                && !bearer_matches(authorization, expected)
            {
                return Reply::text(401, "a bearer token is required\n");
            }
            Reply {
                status: 200,
                content_type: CONTENT_TYPE,
                body: metrics.render(),
            }
        }
        _ => Reply::text(404, "not found; try /metrics, /healthz or /readyz\n"),
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

    #[test]
    fn health_ready_and_unknown_paths() {
        let m = metrics();
        assert_eq!(route("GET", "/healthz", None, None, &m).status, 200);
        assert_eq!(route("GET", "/readyz", None, None, &m).status, 503);
        m.global
            .listeners_bound
            .store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(route("GET", "/readyz", None, None, &m).status, 200);
        assert_eq!(route("GET", "/nope", None, None, &m).status, 404);
        assert_eq!(route("POST", "/metrics", None, None, &m).status, 405);
    }

    #[test]
    fn metrics_need_the_configured_bearer_token() {
        let m = metrics();
        let token = Some("s3cret-token-0123456789");
        assert_eq!(route("GET", "/metrics", None, token, &m).status, 401);
        assert_eq!(
            route("GET", "/metrics", Some(b"Bearer wrong"), token, &m).status,
            401
        );
        let ok = route(
            "GET",
            "/metrics",
            Some(b"Bearer s3cret-token-0123456789"),
            token,
            &m,
        );
        assert_eq!(ok.status, 200);
        assert!(ok.body.contains("portcullis_draining"), "{}", ok.body);
        assert_eq!(route("GET", "/metrics", None, None, &m).status, 200);
    }

    /// A metrics listener on an ephemeral loopback port, serving on its own thread.
    fn serving() -> std::net::SocketAddr {
        let listener = bind("127.0.0.1:0".parse().expect("addr")).expect("binds");
        let addr = listener.local_addr;
        listener
            .serve(metrics(), Arc::new(ArcSwapOption::empty()))
            .expect("thread");
        addr
    }

    /// Sends `request` on a new connection and reads the answer until the server closes.
    fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).expect("connects");
        stream.write_all(request).expect("writes");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("reads");
        answer
    }

    #[test]
    fn serves_over_a_real_socket() {
        let addr = serving();
        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");

        let answer = exchange(addr, b"\x16\x03\x01garbage\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }

    #[test]
    fn a_silent_client_does_not_stall_other_scrapes() {
        let addr = serving();
        // Connections that send nothing hold their slots until the request timeout...
        let silent: Vec<TcpStream> = (0..MAX_CONCURRENT_REQUESTS - 1)
            .map(|_| TcpStream::connect(addr).expect("connects"))
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        // ...while a scrape is answered at once, not after REQUEST_TIMEOUT.
        let start = Instant::now();
        let mut stream = TcpStream::connect(addr).expect("connects");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("writes");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("reads");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(start.elapsed() < REQUEST_TIMEOUT, "{:?}", start.elapsed());
        // Once silent clients hold every slot, the next is refused at once with 503. (The
        // scrape's thread frees its slot a moment after its answer, so count until the refusal.)
        let mut held = Vec::new();
        let mut refused = None;
        for _ in 0..MAX_CONCURRENT_REQUESTS + 2 {
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
        assert!(held.len() + silent.len() >= MAX_CONCURRENT_REQUESTS - 1);
        drop(silent);
    }
}
