//! One app WebSocket client of the `fanout` scenario: connects to the gateway's app API
//! (`ws://…/api/ws`, or `wss://` over rustls on the TLS port), logs in with an email and the Blynk
//! client hash, subscribes to its devices, then turns every `pin` event into an end-to-end
//! latency sample (the value is the write's send time, `sendtime.rs`) until told to stop.
//!
//! Unlike the devices, an app client is a plain blocking thread over `std::net::TcpStream` with
//! `tungstenite` doing the WebSocket framing, not a connection in a mio shard: a run has tens of
//! apps against thousands of devices, so a thread each costs nothing worth measuring, and a
//! blocking session reads as the protocol it follows. Every wait is bounded: the socket has a
//! short read timeout, so the thread sees its stop flag and its deadlines without any help, and
//! each stage (connect, handshake, login, subscribing) has a time limit.

use crate::sendtime;
use crate::tally::{Count, Latency, Tally};
use crate::transport::TlsClient;
use portcullis_protocol::app::{AppErrorCode, AppEvent, AppRequest};
use portcullis_protocol::store::DeviceId;
use rustls::{ClientConnection, StreamOwned};
use serde::Deserialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{HandshakeError, Message, WebSocket};

/// Time for the TCP connect to the gateway.
pub const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Time for each answer the app waits for (TLS and WebSocket handshake, `logged_in`): long,
/// because the gateway hashes the login with argon2id on a bounded worker pool that a burst of
/// apps logging in at once queues on.
pub const APP_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time for all of one app's subscriptions to be answered.
pub const APP_SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one blocking read waits before the thread looks at its stop flag and deadlines.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long one blocking write may take; a gateway that stops reading fails the app, not hangs it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// `subscribe` requests in flight per app at most. Pipelining saves round trips, but answers to
/// thousands of requests sent before reading any would pile up in the gateway's bounded outbound
/// queue, which disconnects a reader that slow.
const SUBSCRIBE_WINDOW: usize = 64;

/// Largest message or frame accepted from the gateway: a pin event is under 200 bytes, a page of
/// `devices` a few kilobytes; anything this big is a broken peer.
const MAX_INBOUND_MESSAGE: usize = 256 * 1024;

/// The id of the login request; subscriptions count up from the next one.
const LOGIN_ID: u32 = 1;

/// Where in its life an app was when something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Handshake,
    Login,
    Subscribe,
    Events,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::Handshake => "handshake",
            Stage::Login => "login",
            Stage::Subscribe => "subscribe",
            Stage::Events => "events",
        })
    }
}

#[derive(Debug, Error)]
pub enum AppClientError {
    #[error("app connect: {0}")]
    Connect(io::Error),
    #[error("app TLS: {0}")]
    Tls(rustls::Error),
    #[error("app {stage}: {error}")]
    WebSocket {
        stage: Stage,
        error: tungstenite::Error,
    },
    #[error("app {stage} refused: {code}: {message}")]
    Refused {
        stage: Stage,
        code: String,
        message: String,
    },
    #[error("app {0}: no answer in time")]
    Timeout(Stage),
    #[error("app {0}: the gateway closed the connection")]
    Closed(Stage),
    #[error("app request not encodable: {0}")]
    Encode(serde_json::Error),
}

impl AppClientError {
    /// A short label for the failures-by-reason table: like the message, minus details that
    /// differ from one connection to the next.
    pub fn reason(&self) -> String {
        match self {
            AppClientError::Connect(e) => format!("app connect: {}", e.kind()),
            AppClientError::WebSocket {
                stage,
                error: tungstenite::Error::Io(e),
            } => format!("app {stage}: socket: {}", e.kind()),
            other => other.to_string(),
        }
    }

    fn websocket(stage: Stage) -> impl FnOnce(tungstenite::Error) -> AppClientError {
        move |error| match error {
            // HandshakeIncomplete: the connection ended before the HTTP answer did, which is how
            // a gateway without the app API (or refusing the upgrade outright) shows itself.
            tungstenite::Error::ConnectionClosed
            | tungstenite::Error::AlreadyClosed
            | tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::HandshakeIncomplete,
            ) => AppClientError::Closed(stage),
            error => AppClientError::WebSocket { stage, error },
        }
    }
}

/// What one app is asked to do.
#[derive(Clone)]
pub struct AppClientConfig {
    pub target: SocketAddr,
    /// `ws://host:port/api/ws` or `wss://…`; the host part becomes the `Host` header.
    pub url: String,
    pub tls: Option<TlsClient>,
    pub email: String,
    /// [`portcullis_protocol::app::client_hash`] of the password.
    pub hash: String,
    pub devices: Vec<DeviceId>,
    /// The pin the devices write, as events name it (`V1`).
    pub pin: String,
    pub answer_timeout: Duration,
    pub subscribe_timeout: Duration,
    /// Set when the run is over; the thread closes its WebSocket and returns.
    pub stop: Arc<AtomicBool>,
    /// The thread returns by then even if nobody sets `stop`.
    pub give_up_at: Instant,
}

/// Counters every app of a run adds to while it runs, for the progress line.
#[derive(Debug, Default)]
pub struct AppLive {
    pub logged_in: AtomicU64,
    pub login_failures: AtomicU64,
    pub subscribed: AtomicU64,
    pub subscribe_failures: AtomicU64,
    pub events: AtomicU64,
    /// Apps done with logging in and subscribing, whether they succeeded or not.
    pub settled: AtomicU64,
}

/// What one app hands back.
#[derive(Debug, Default)]
pub struct AppOutcome {
    pub tally: Tally,
    /// Devices whose subscription the gateway confirmed.
    pub subscribed: Vec<DeviceId>,
    /// The share of one core this app's thread used while receiving events: near 1.0 means the
    /// thread, not the gateway, limited what it received.
    pub busy_share: Option<f64>,
    settled: bool,
}

/// Runs one app from connect to stop; everything that went wrong is in the outcome's tally.
pub fn run(config: &AppClientConfig, live: &AppLive) -> AppOutcome {
    let mut out = AppOutcome::default();
    if let Err(error) = session(config, live, &mut out) {
        out.tally.fail(error.reason());
    }
    if !out.settled {
        live.settled.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// The socket under the WebSocket.
enum AppStream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for AppStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            AppStream::Plain(s) => s.read(buf),
            AppStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for AppStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            AppStream::Plain(s) => s.write(buf),
            AppStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            AppStream::Plain(s) => s.flush(),
            AppStream::Tls(s) => s.flush(),
        }
    }
}

/// An `error` whose code this build does not know: still a refusal, so it is read loosely rather
/// than left to time out.
#[derive(Debug, Deserialize)]
struct LooseError {
    #[serde(rename = "type")]
    kind: String,
    id: Option<u32>,
    code: String,
    #[serde(default)]
    message: String,
}

/// A message from the gateway as far as the app cares.
enum Incoming {
    Event(AppEvent),
    Refusal {
        id: Option<u32>,
        code: String,
        message: String,
    },
}

fn code_name(code: AppErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{code:?}"))
}

struct Session<'a> {
    ws: WebSocket<AppStream>,
    config: &'a AppClientConfig,
    live: &'a AppLive,
    out: &'a mut AppOutcome,
    /// Devices this app subscribed to (asked for): pin events of others are unexpected.
    planned: HashSet<DeviceId>,
}

fn session(
    config: &AppClientConfig,
    live: &AppLive,
    out: &mut AppOutcome,
) -> Result<(), AppClientError> {
    let started = Instant::now();
    let ws = match connect(config) {
        Ok(ws) => ws,
        Err(error) => {
            out.tally.add(Count::AppLoginFailures, 1);
            live.login_failures.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
    };
    let mut s = Session {
        ws,
        config,
        live,
        out,
        planned: config.devices.iter().copied().collect(),
    };
    if let Err(error) = s.login() {
        s.out.tally.add(Count::AppLoginFailures, 1);
        live.login_failures.fetch_add(1, Ordering::Relaxed);
        return Err(error);
    }
    s.out.tally.record(Latency::AppLogin, started.elapsed());
    s.out.tally.add(Count::AppsLoggedIn, 1);
    live.logged_in.fetch_add(1, Ordering::Relaxed);
    s.subscribe_all()?;
    s.out.settled = true;
    live.settled.fetch_add(1, Ordering::Relaxed);
    let result = s.receive();
    // A courtesy close; the run is over either way.
    let _ = s.ws.close(None);
    let _ = s.ws.flush();
    result
}

/// TCP, then TLS if asked, then the WebSocket handshake, all within the answer timeout.
fn connect(config: &AppClientConfig) -> Result<WebSocket<AppStream>, AppClientError> {
    let tcp = TcpStream::connect_timeout(&config.target, APP_CONNECT_TIMEOUT)
        .map_err(AppClientError::Connect)?;
    // Short reads, so no wait below is longer than its own deadline allows.
    tcp.set_read_timeout(Some(POLL_INTERVAL))
        .and_then(|()| tcp.set_write_timeout(Some(WRITE_TIMEOUT)))
        .and_then(|()| tcp.set_nodelay(true))
        .map_err(AppClientError::Connect)?;
    let stream = match &config.tls {
        None => AppStream::Plain(tcp),
        Some(tls) => {
            let conn = ClientConnection::new(Arc::clone(&tls.config), tls.server_name.clone())
                .map_err(AppClientError::Tls)?;
            AppStream::Tls(Box::new(StreamOwned::new(conn, tcp)))
        }
    };
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_INBOUND_MESSAGE))
        .max_frame_size(Some(MAX_INBOUND_MESSAGE));
    let deadline = Instant::now() + config.answer_timeout;
    let mut attempt =
        tungstenite::client::client_with_config(config.url.as_str(), stream, Some(ws_config));
    loop {
        match attempt {
            Ok((ws, _response)) => return Ok(ws),
            // A read timed out mid-handshake (TLS or HTTP): go on where it stopped.
            Err(HandshakeError::Interrupted(mid)) => {
                if Instant::now() >= deadline {
                    return Err(AppClientError::Timeout(Stage::Handshake));
                }
                attempt = mid.handshake();
            }
            Err(HandshakeError::Failure(error)) => {
                return Err(AppClientError::websocket(Stage::Handshake)(error));
            }
        }
    }
}

impl Session<'_> {
    fn send(&mut self, request: &AppRequest, stage: Stage) -> Result<(), AppClientError> {
        let text = serde_json::to_string(request).map_err(AppClientError::Encode)?;
        self.ws
            .send(Message::text(text))
            .map_err(AppClientError::websocket(stage))
    }

    /// The next message, or `None` when the read timed out (or the message was not for us).
    fn next(&mut self, stage: Stage) -> Result<Option<Incoming>, AppClientError> {
        let text = match self.ws.read() {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) => return Err(AppClientError::Closed(stage)),
            // Pings are answered by tungstenite itself.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => return Ok(None),
            Ok(Message::Binary(_)) => {
                self.out.tally.add(Count::UnexpectedFrames, 1);
                return Ok(None);
            }
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(error) => return Err(AppClientError::websocket(stage)(error)),
        };
        if let Ok(event) = serde_json::from_str::<AppEvent>(text.as_str()) {
            return Ok(Some(match event {
                AppEvent::Error { id, code, message } => Incoming::Refusal {
                    id,
                    code: code_name(code),
                    message,
                },
                event => Incoming::Event(event),
            }));
        }
        match serde_json::from_str::<LooseError>(text.as_str()) {
            Ok(e) if e.kind == "error" => Ok(Some(Incoming::Refusal {
                id: e.id,
                code: e.code,
                message: e.message,
            })),
            _ => {
                self.out.tally.add(Count::UnexpectedFrames, 1);
                Ok(None)
            }
        }
    }

    fn login(&mut self) -> Result<(), AppClientError> {
        let request = AppRequest::Login {
            id: LOGIN_ID,
            email: self.config.email.clone(),
            hash: self.config.hash.clone(),
        };
        self.send(&request, Stage::Login)?;
        let deadline = Instant::now() + self.config.answer_timeout;
        while Instant::now() < deadline {
            match self.next(Stage::Login)? {
                Some(Incoming::Event(AppEvent::LoggedIn { id, .. })) if id == LOGIN_ID => {
                    return Ok(());
                }
                // An error without an id answers the only request there is.
                Some(Incoming::Refusal { id, code, message })
                    if id.is_none() || id == Some(LOGIN_ID) =>
                {
                    return Err(AppClientError::Refused {
                        stage: Stage::Login,
                        code,
                        message,
                    });
                }
                Some(other) => self.other(other),
                None => {}
            }
        }
        Err(AppClientError::Timeout(Stage::Login))
    }

    /// Subscribes to every device, at most [`SUBSCRIBE_WINDOW`] requests in flight. A refusal
    /// fails that subscription only; running out of time fails the ones still open.
    fn subscribe_all(&mut self) -> Result<(), AppClientError> {
        let mut waiting: VecDeque<DeviceId> = self.config.devices.iter().copied().collect();
        let mut in_flight: HashMap<u32, DeviceId> = HashMap::new();
        let mut next_id = LOGIN_ID;
        let deadline = Instant::now() + self.config.subscribe_timeout;
        while !waiting.is_empty() || !in_flight.is_empty() {
            while in_flight.len() < SUBSCRIBE_WINDOW {
                let Some(device) = waiting.pop_front() else {
                    break;
                };
                // Ids stay unique among those in flight: the window is far below u32's range.
                next_id = next_id.checked_add(1).unwrap_or(LOGIN_ID + 1);
                self.send(
                    &AppRequest::Subscribe {
                        id: next_id,
                        device,
                    },
                    Stage::Subscribe,
                )?;
                in_flight.insert(next_id, device);
            }
            if Instant::now() >= deadline {
                let open = (waiting.len() + in_flight.len()) as u64;
                self.subscribe_failed("app subscribe: no answer in time", open);
                return Ok(());
            }
            match self.next(Stage::Subscribe)? {
                Some(Incoming::Event(AppEvent::Subscribed { id, .. })) => {
                    match in_flight.remove(&id) {
                        Some(device) => {
                            self.out.subscribed.push(device);
                            self.out.tally.add(Count::SubscriptionsOk, 1);
                            self.live.subscribed.fetch_add(1, Ordering::Relaxed);
                        }
                        None => self.out.tally.add(Count::UnexpectedFrames, 1),
                    }
                }
                Some(Incoming::Refusal {
                    id: Some(id), code, ..
                }) if in_flight.contains_key(&id) => {
                    in_flight.remove(&id);
                    // The code only: messages name the device, and one line per device would
                    // bury the table.
                    self.subscribe_failed(&format!("app subscribe refused: {code}"), 1);
                }
                Some(other) => self.other(other),
                None => {}
            }
        }
        Ok(())
    }

    fn subscribe_failed(&mut self, reason: &str, n: u64) {
        for _ in 0..n {
            self.out.tally.fail(reason);
        }
        self.out.tally.add(Count::SubscribeFailures, n);
        self.live.subscribe_failures.fetch_add(n, Ordering::Relaxed);
    }

    /// Receives pin events until the stop flag or the deadline.
    fn receive(&mut self) -> Result<(), AppClientError> {
        let cpu_before = thread_cpu();
        let started = Instant::now();
        let result = loop {
            if self.config.stop.load(Ordering::Relaxed) || Instant::now() >= self.config.give_up_at
            {
                break Ok(());
            }
            match self.next(Stage::Events) {
                Ok(Some(incoming)) => self.other(incoming),
                Ok(None) => {}
                Err(error) => {
                    self.out.tally.add(Count::AppDisconnects, 1);
                    break Err(error);
                }
            }
        };
        let wall = started.elapsed().as_secs_f64();
        if let (Some(before), Some(after)) = (cpu_before, thread_cpu())
            && wall > 0.0
        {
            self.out.busy_share = Some(after.saturating_sub(before).as_secs_f64() / wall);
        }
        result
    }

    /// Anything not awaited at the moment: pin events are timed, the rest is counted or ignored.
    fn other(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Event(AppEvent::Pin {
                device,
                pin,
                values,
                ..
            }) if pin == self.config.pin && self.planned.contains(&device) => {
                let received = sendtime::unix_micros(SystemTime::now());
                self.out.tally.add(Count::EventsReceived, 1);
                self.live.events.fetch_add(1, Ordering::Relaxed);
                match values.first().and_then(|v| sendtime::decode(v)) {
                    Some(sent) => self
                        .out
                        .tally
                        .record(Latency::EndToEnd, sendtime::latency(sent, received)),
                    None => self.out.tally.add(Count::EventsUndecodable, 1),
                }
            }
            // Devices going on- and offline is part of the traffic, not a surprise.
            Incoming::Event(AppEvent::Online { .. } | AppEvent::Offline { .. }) => {}
            Incoming::Event(_) | Incoming::Refusal { .. } => {
                self.out.tally.add(Count::UnexpectedFrames, 1);
            }
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Option<Duration> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .ok()
        .map(Duration::from)
}

#[cfg(test)]
#[path = "app_client_tests.rs"]
mod tests;
