//! A minimal app for tests: a tungstenite WebSocket client on `/api/ws`, over plain TCP or TLS,
//! speaking the JSON messages of `portcullis_protocol::app`. Reads time out so a test never
//! hangs on a silent gateway.

use portcullis_protocol::app::{AppEvent, AppRequest, client_hash};
use rustls::pki_types::ServerName;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;
use tungstenite::{Message, WebSocket};

use crate::device::Stream;

/// How long a test waits for one message.
pub const APP_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct App {
    ws: WebSocket<Box<dyn Stream>>,
    next_id: u32,
}

impl App {
    pub fn plain(port: u16) -> App {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        App::over(tcp, None)
    }

    pub fn tls(port: u16, config: Arc<rustls::ClientConfig>) -> App {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        App::over(tcp, Some(config))
    }

    /// Opens the WebSocket over an already connected socket (e.g. from another source address).
    pub fn over(tcp: TcpStream, tls: Option<Arc<rustls::ClientConfig>>) -> App {
        tcp.set_read_timeout(Some(APP_READ_TIMEOUT)).unwrap();
        tcp.set_nodelay(true).unwrap();
        let (stream, url): (Box<dyn Stream>, &str) = match tls {
            Some(config) => {
                let name = ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(config, name).unwrap();
                (
                    Box::new(rustls::StreamOwned::new(conn, tcp)),
                    "wss://localhost/api/ws",
                )
            }
            None => (Box::new(tcp), "ws://localhost/api/ws"),
        };
        let (ws, response) = tungstenite::client(url, stream).expect("WebSocket upgrade");
        assert_eq!(response.status(), 101);
        App { ws, next_id: 1 }
    }

    /// Sends a request built with a fresh id; returns the id.
    pub fn request(&mut self, build: impl FnOnce(u32) -> AppRequest) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        let json = serde_json::to_string(&build(id)).unwrap();
        self.ws.send(Message::text(json)).unwrap();
        id
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    /// The next JSON event; `None` once the gateway closed the connection.
    pub fn next_event(&mut self) -> Option<AppEvent> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(text.as_str()).unwrap_or_else(|e| {
                        panic!("gateway sent JSON we cannot read ({e}): {text}")
                    }));
                }
                Ok(Message::Close(_)) => return None,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no message from the gateway within {APP_READ_TIMEOUT:?}")
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits for the gateway to close the WebSocket; returns the close frame's code (`None`
    /// when the connection ended without one). Panics if a message arrives first or the read
    /// times out.
    pub fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(Message::Text(text)) => panic!("expected the close, got {text}"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("the gateway did not close within {APP_READ_TIMEOUT:?}")
                }
                Err(_) => return None,
            }
        }
    }

    /// Logs in; returns the answer (`logged_in` or an error).
    pub fn login(&mut self, email: &str, password: &str) -> AppEvent {
        let hash = client_hash(password, email);
        self.request(|id| AppRequest::Login {
            id,
            email: email.into(),
            hash,
        });
        self.next_event().expect("an answer to login")
    }

    pub fn subscribe(&mut self, device: u64) -> AppEvent {
        self.request(|id| AppRequest::Subscribe { id, device });
        self.next_event().expect("an answer to subscribe")
    }
}
