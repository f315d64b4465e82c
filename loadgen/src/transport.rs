//! One client socket, plain or TLS, non-blocking and driven by a mio shard: opening it from a
//! chosen loopback source address, noticing when the connect finished, moving bytes in both
//! directions until `WouldBlock`, and (for TLS) running the rustls client handshake. The device
//! logic never touches the socket; it hands bytes to [`Link::send`] and takes decoded plaintext
//! from [`Link::inbound`].

use mio::net::TcpStream;
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use thiserror::Error;

/// Bytes read from the socket per `read` call.
pub const READ_CHUNK: usize = 16 * 1024;

/// Why a link stopped, by whose doing.
#[derive(Debug, Error)]
pub enum LinkError {
    /// The connect failed (refused, no route, address in use, out of descriptors...).
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// The gateway closed the connection.
    #[error("closed by the gateway")]
    ClosedByPeer,
    /// The socket failed after connecting (reset, broken pipe).
    #[error("socket error: {0}")]
    Io(io::Error),
    /// The TLS layer refused the peer or the peer sent bad TLS.
    #[error("TLS error: {0}")]
    Tls(rustls::Error),
}

impl LinkError {
    /// A short, stable label for the failures-by-reason table.
    pub fn reason(&self) -> String {
        match self {
            LinkError::Connect(e) => format!("connect: {}", io_kind(e)),
            LinkError::ClosedByPeer => "closed by gateway".into(),
            LinkError::Io(e) => format!("socket: {}", io_kind(e)),
            LinkError::Tls(e) => format!("tls: {e}"),
        }
    }
}

fn io_kind(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => format!("{} (os error {code})", error.kind()),
        None => error.kind().to_string(),
    }
}

/// Whether the socket finished connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectState {
    InProgress,
    Connected,
}

/// Whether more bytes may still come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    Open,
    Eof,
}

/// TLS settings shared by every TLS device of a shard.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

pub struct Link {
    tcp: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// Plaintext received and not yet consumed by the device logic.
    inbound: Vec<u8>,
    /// Plain links only: bytes the socket did not take yet (TLS buffers inside rustls).
    outbound: Vec<u8>,
}

impl Link {
    /// Starts a non-blocking connect to `target`, from `source` if given (port chosen by the
    /// kernel). With TLS the handshake starts as soon as the socket is writable.
    pub fn open(
        target: SocketAddr,
        source: Option<IpAddr>,
        tls: Option<&TlsClient>,
    ) -> Result<Link, LinkError> {
        let socket = Socket::new(
            Domain::for_address(target),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(LinkError::Connect)?;
        socket.set_nonblocking(true).map_err(LinkError::Connect)?;
        socket.set_tcp_nodelay(true).map_err(LinkError::Connect)?;
        if let Some(source) = source {
            // Let connect() pick the port by the whole 4-tuple: without this, bind() reserves a
            // port per source address (one range for every destination) and its search for a
            // free one gets slow as the range fills.
            let _ = nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::IpBindAddressNoPort,
                &true,
            );
            socket
                .bind(&SockAddr::from(SocketAddr::new(source, 0)))
                .map_err(LinkError::Connect)?;
        }
        match socket.connect(&SockAddr::from(target)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
            Err(e) => return Err(LinkError::Connect(e)),
        }
        let tls = match tls {
            Some(client) => Some(Box::new(
                ClientConnection::new(client.config.clone(), client.server_name.clone())
                    .map_err(LinkError::Tls)?,
            )),
            None => None,
        };
        Ok(Link {
            tcp: TcpStream::from_std(socket.into()),
            tls,
            inbound: Vec::new(),
            outbound: Vec::new(),
        })
    }

    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Checks a connect in progress (call on a writable event).
    pub fn connect_state(&self) -> Result<ConnectState, LinkError> {
        match self.tcp.take_error() {
            Ok(Some(e)) | Err(e) => return Err(LinkError::Connect(e)),
            Ok(None) => {}
        }
        match self.tcp.peer_addr() {
            Ok(_) => Ok(ConnectState::Connected),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(ConnectState::InProgress),
            Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {
                Ok(ConnectState::InProgress)
            }
            Err(e) => Err(LinkError::Connect(e)),
        }
    }

    /// True while the TLS handshake has not finished (always false for plain links).
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Queues `bytes` and writes as much as the socket takes.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        match &mut self.tls {
            Some(tls) => {
                tls.writer().write_all(bytes).map_err(LinkError::Io)?;
            }
            None => self.outbound.extend_from_slice(bytes),
        }
        self.flush()
    }

    /// Writes pending bytes (and TLS records) until done or `WouldBlock`.
    pub fn flush(&mut self) -> Result<(), LinkError> {
        match &mut self.tls {
            Some(tls) => {
                while tls.wants_write() {
                    match tls.write_tls(&mut self.tcp) {
                        Ok(0) => return Err(LinkError::ClosedByPeer),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(LinkError::Io(e)),
                    }
                }
            }
            None => {
                let mut written = 0;
                while written < self.outbound.len() {
                    match self.tcp.write(&self.outbound[written..]) {
                        Ok(0) => return Err(LinkError::ClosedByPeer),
                        Ok(n) => written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(LinkError::Io(e)),
                    }
                }
                self.outbound.drain(..written);
                if self.outbound.is_empty() && self.outbound.capacity() > READ_CHUNK {
                    self.outbound = Vec::new();
                }
            }
        }
        Ok(())
    }

    /// Reads everything available; plaintext lands in [`Link::inbound`].
    pub fn read(&mut self, scratch: &mut [u8]) -> Result<ReadState, LinkError> {
        loop {
            let got = match &mut self.tls {
                Some(tls) => match tls.read_tls(&mut self.tcp) {
                    Ok(0) => return Ok(ReadState::Eof),
                    Ok(n) => {
                        let state = tls.process_new_packets().map_err(|e| {
                            // Send the alert rustls queued, so the gateway logs why.
                            let _ = tls.write_tls(&mut self.tcp);
                            LinkError::Tls(e)
                        })?;
                        let available = state.plaintext_bytes_to_read();
                        if available > 0 {
                            let start = self.inbound.len();
                            self.inbound.resize(start + available, 0);
                            tls.reader()
                                .read_exact(&mut self.inbound[start..])
                                .map_err(LinkError::Io)?;
                        }
                        if state.peer_has_closed() {
                            return Ok(ReadState::Eof);
                        }
                        Ok(n)
                    }
                    Err(e) => Err(e),
                },
                None => match self.tcp.read(scratch) {
                    Ok(0) => return Ok(ReadState::Eof),
                    Ok(n) => {
                        self.inbound.extend_from_slice(&scratch[..n]);
                        // A short read drained the socket; a later arrival raises a new edge,
                        // so the read that would only say `WouldBlock` is skipped.
                        if n < scratch.len() {
                            return Ok(ReadState::Open);
                        }
                        Ok(n)
                    }
                    Err(e) => Err(e),
                },
            };
            match got {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadState::Open),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
    }

    /// Plaintext received so far; the caller drains what it consumed.
    pub fn inbound(&mut self) -> &mut Vec<u8> {
        &mut self.inbound
    }
}
