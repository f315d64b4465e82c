//! What the mail tests share: a small SMTP responder on loopback that records what it is
//! told (and can refuse recipients, stall, or speak STARTTLS or implicit TLS with a
//! certificate from [`tls`]), a capture of the `tracing` log the worker writes, and a
//! bounded wait, so that no test can hang.

#![allow(dead_code)]

pub mod tls;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest any single wait in these tests may take.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long the responder waits for a client's next line before hanging up.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls `cond` until it holds or `timeout` passes; answers whether it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every log line of this test binary, from one global subscriber.
///
/// One global subscriber, as the gateway has, rather than a scoped one per test: the worker
/// logs on its own thread, and `tracing` caches per callsite whether anyone listens, so a
/// worker that logs before the subscriber is in place can leave a callsite silenced. Every
/// test therefore calls [`Logs::capture`] first. Tests run in parallel, so each one looks for
/// lines with markers of its own (its recipients, secrets, directories).
static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// The log written since [`Logs::capture`].
pub struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    start: usize,
}

impl Logs {
    pub fn capture() -> Logs {
        let buffer = LOG.get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(Writer(Arc::clone(&buffer)))
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in the mail tests");
            buffer
        });
        let start = lock(buffer).len();
        Logs {
            buffer: Arc::clone(buffer),
            start,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.buffer)[self.start..]).into_owned()
    }

    /// The lines holding every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

#[derive(Clone)]
struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Writer {
    type Writer = Writer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// What the responder does with a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Takes every mail.
    Accept,
    /// Answers every RCPT with a permanent 550.
    RejectRcpt,
    /// Accepts the connection and never says a word.
    Stall,
}

/// Whether and how the responder speaks TLS.
#[derive(Clone)]
pub enum ServerTls {
    None,
    /// Offers STARTTLS after EHLO and upgrades when asked.
    Starttls(Arc<rustls::ServerConfig>),
    /// TLS from the first byte.
    Wrapper(Arc<rustls::ServerConfig>),
}

/// One mail the responder took.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    /// Whether it came over TLS.
    pub tls: bool,
}

/// What the responder saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub connections: usize,
    pub rcpt_commands: usize,
    pub noops: usize,
    pub messages: Vec<Received>,
}

/// An SMTP responder on 127.0.0.1, speaking just enough SMTP for lettre; stops on drop.
pub struct SmtpServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl SmtpServer {
    pub fn start(behaviour: Behaviour) -> SmtpServer {
        SmtpServer::start_on(0, behaviour).expect("bind the SMTP responder to 127.0.0.1")
    }

    pub fn start_on(port: u16, behaviour: Behaviour) -> io::Result<SmtpServer> {
        SmtpServer::start_with(port, behaviour, ServerTls::None)
    }

    pub fn start_with(port: u16, behaviour: Behaviour, tls: ServerTls) -> io::Result<SmtpServer> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            thread::spawn(move || accept_loop(listener, behaviour, tls, seen, stop))
        };
        Ok(SmtpServer {
            addr,
            seen,
            stop,
            accept: Some(accept),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        lock(&self.seen)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.seen().messages.clone()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// A loopback port nobody listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn accept_loop(
    listener: TcpListener,
    behaviour: Behaviour,
    tls: ServerTls,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
) {
    let mut clients = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                lock(&seen).connections += 1;
                let (seen, stop, tls) = (Arc::clone(&seen), Arc::clone(&stop), tls.clone());
                clients.push(thread::spawn(move || {
                    // A client that misbehaves only ends its own conversation.
                    let _ = serve(stream, behaviour, &tls, &seen, &stop);
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => break,
        }
    }
    for client in clients {
        let _ = client.join();
    }
}

/// A connection the responder reads lines from and writes replies to, plain or TLS.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

type Conn = BufReader<Box<dyn Stream>>;

fn tls_over(config: &Arc<rustls::ServerConfig>, inner: Box<dyn Stream>) -> io::Result<Conn> {
    let session = rustls::ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
    Ok(BufReader::new(Box::new(rustls::StreamOwned::new(
        session, inner,
    ))))
}

fn reply(conn: &mut Conn, text: &str) -> io::Result<()> {
    conn.get_mut().write_all(text.as_bytes())?;
    conn.get_mut().flush()
}

fn serve(
    stream: TcpStream,
    behaviour: Behaviour,
    tls: &ServerTls,
    seen: &Mutex<Seen>,
    stop: &AtomicBool,
) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    if behaviour == Behaviour::Stall {
        let end = Instant::now() + WAIT;
        while !stop.load(Ordering::SeqCst) && Instant::now() < end {
            thread::sleep(Duration::from_millis(10));
        }
        return Ok(());
    }
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let (mut conn, mut secured) = match tls {
        ServerTls::Wrapper(config) => (tls_over(config, Box::new(stream))?, true),
        _ => (BufReader::new(Box::new(stream) as Box<dyn Stream>), false),
    };
    reply(&mut conn, "220 responder.test ESMTP\r\n")?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            if matches!(tls, ServerTls::Starttls(_)) && !secured {
                reply(
                    &mut conn,
                    "250-responder.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
                )?;
            } else {
                reply(&mut conn, "250-responder.test\r\n250 8BITMIME\r\n")?;
            }
        } else if upper == "STARTTLS" {
            let ServerTls::Starttls(config) = tls else {
                reply(&mut conn, "502 5.5.1 no TLS here\r\n")?;
                continue;
            };
            reply(&mut conn, "220 2.0.0 go ahead\r\n")?;
            // The client waits for the 220 before its handshake: nothing is buffered.
            conn = tls_over(config, conn.into_inner())?;
            secured = true;
        } else if upper.starts_with("MAIL FROM:") {
            from = command["MAIL FROM:".len()..].to_owned();
            to.clear();
            reply(&mut conn, "250 2.1.0 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            lock(seen).rcpt_commands += 1;
            if behaviour == Behaviour::RejectRcpt {
                reply(&mut conn, "550 5.1.1 no such user here\r\n")?;
            } else {
                to.push(command["RCPT TO:".len()..].to_owned());
                reply(&mut conn, "250 2.1.5 ok\r\n")?;
            }
        } else if upper == "DATA" {
            reply(&mut conn, "354 end with <CRLF>.<CRLF>\r\n")?;
            let mut data = String::new();
            loop {
                line.clear();
                if conn.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            lock(seen).messages.push(Received {
                from: from.clone(),
                to: to.clone(),
                data,
                tls: secured,
            });
            reply(&mut conn, "250 2.0.0 queued\r\n")?;
        } else if upper == "NOOP" {
            lock(seen).noops += 1;
            reply(&mut conn, "250 2.0.0 ok\r\n")?;
        } else if upper == "RSET" {
            reply(&mut conn, "250 2.0.0 ok\r\n")?;
        } else if upper == "QUIT" {
            reply(&mut conn, "221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            reply(&mut conn, "502 5.5.2 not implemented\r\n")?;
        }
    }
}

/// The header block and the body of a message, split at the first empty line, with the
/// header lines unfolded.
pub fn split_message(text: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim_start());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
    }
    (headers, body.to_owned())
}

/// The value of header `name` (case-insensitive), if present.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
