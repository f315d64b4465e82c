//! A small keep-alive HTTPS client for the REST API suites: HTTP/1.1 over one rustls connection
//! to the gateway's TLS port (trusting its generated CA), requests with a JSON body and an
//! optional bearer, answers read by their Content-Length. One connection carries hundreds of
//! calls, so a matrix of requests costs no process or handshake per call. The connection is
//! reopened when the gateway closes it (an answer with `Connection: close`, or a kept-alive
//! connection found closed before any byte of the answer arrived).

use rustls::pki_types::ServerName;
use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Value::Null` when it is empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A keep-alive HTTPS connection to `127.0.0.1:port`.
pub struct Client {
    port: u16,
    config: Arc<rustls::ClientConfig>,
    conn: Option<Tls>,
    /// Bytes read past the last answer (the gateway never sends any, but a reader must not
    /// lose them).
    buf: Vec<u8>,
    /// Connections opened so far (the first included).
    pub connects: u32,
}

impl Client {
    /// A client of the gateway whose data directory is `data_dir` (its CA is `tls/ca.pem`).
    pub fn new(port: u16, data_dir: &Path) -> Client {
        let ca: PathBuf = data_dir.join("tls").join("ca.pem");
        let config = crate::device::client_config(&ca, &rustls::version::TLS13);
        Client {
            port,
            config,
            conn: None,
            buf: Vec::new(),
            connects: 0,
        }
    }

    fn connect(&mut self) -> io::Result<&mut Tls> {
        if self.conn.is_none() {
            let tcp = TcpStream::connect(("127.0.0.1", self.port))?;
            tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
            let tls = rustls::ClientConnection::new(Arc::clone(&self.config), name)
                .map_err(io::Error::other)?;
            self.conn = Some(rustls::StreamOwned::new(tls, tcp));
            self.buf.clear();
            self.connects += 1;
        }
        self.conn
            .as_mut()
            .ok_or_else(|| io::Error::other("no connection"))
    }

    /// Sends one request and reads its answer. `body` goes as `application/json`.
    pub fn call(
        &mut self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let bytes = body.map(|v| serde_json::to_vec(v).expect("a JSON value serializes"));
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        if let Some(token) = bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(bytes) = &bytes {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                bytes.len()
            ));
        } else if matches!(method, "POST" | "PATCH" | "PUT") {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        let mut wire = head.into_bytes();
        wire.extend_from_slice(bytes.as_deref().unwrap_or_default());
        // A kept-alive connection the gateway closed in between fails before any answer byte:
        // then, and only then, the request is sent again on a new connection.
        let fresh = self.conn.is_none();
        match self.exchange(&wire) {
            Ok(reply) => reply,
            Err(Attempt::BeforeAnswer(first)) if !fresh => {
                self.conn = None;
                self.exchange(&wire).unwrap_or_else(|e| {
                    panic!("{method} {path}: {e:?} (after a reconnect; first: {first:?})")
                })
            }
            Err(e) => panic!("{method} {path}: {e:?}"),
        }
    }

    /// Writes `wire` as it is (several requests, pipelined) and reads `answers` answers.
    pub fn pipeline(&mut self, wire: &[u8], answers: usize) -> Vec<Reply> {
        let conn = self.connect().expect("connect");
        conn.write_all(wire).expect("write");
        conn.flush().expect("flush");
        (0..answers)
            .map(|i| {
                self.read_reply()
                    .unwrap_or_else(|e| panic!("pipelined answer {i}: {e:?}"))
            })
            .collect()
    }

    fn exchange(&mut self, wire: &[u8]) -> Result<Reply, Attempt> {
        let conn = self.connect().map_err(Attempt::BeforeAnswer)?;
        conn.write_all(wire).map_err(Attempt::BeforeAnswer)?;
        conn.flush().map_err(Attempt::BeforeAnswer)?;
        let reply = self.read_reply()?;
        if reply
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            self.conn = None;
        }
        Ok(reply)
    }

    fn fill(&mut self, got_any: bool) -> Result<(), Attempt> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Attempt::BeforeAnswer(io::Error::other("no connection")))?;
        let mut chunk = [0u8; 16 * 1024];
        match conn.read(&mut chunk) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the gateway closed");
                Err(if got_any {
                    Attempt::MidAnswer(e)
                } else {
                    Attempt::BeforeAnswer(e)
                })
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if got_any => Err(Attempt::MidAnswer(e)),
            Err(e) => Err(Attempt::BeforeAnswer(e)),
        }
    }

    fn read_reply(&mut self) -> Result<Reply, Attempt> {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            let got_any = !self.buf.is_empty();
            self.fill(got_any)?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Attempt::MidAnswer(io::Error::other(format!("bad head {head:?}"))))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let start = head_end + 4;
        while self.buf.len() < start + length {
            self.fill(true)?;
        }
        let body = self.buf[start..start + length].to_vec();
        self.buf.drain(..start + length);
        let reply = Reply {
            status,
            headers,
            body,
        };
        // An interim answer (100 Continue) is followed by the real one.
        if (100..200).contains(&status) {
            return self.read_reply();
        }
        Ok(reply)
    }
}

/// How a call failed: before any byte of its answer (safe to send again) or in the middle.
#[allow(dead_code)] // the errors are read through Debug, in the panic message
#[derive(Debug)]
enum Attempt {
    BeforeAnswer(io::Error),
    MidAnswer(io::Error),
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
