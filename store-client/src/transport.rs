//! The byte stream under a [`crate::link::StoreLink`], non-blocking in the caller's own `Poll`: a
//! mio Unix stream to a local store, or a mio TCP stream carrying a rustls client session (our
//! gateway certificate, the store's CA) to a remote one. Both look the same to the link: `write`
//! takes plaintext and `read` gives plaintext, each returning `WouldBlock` when the socket would
//! block. For TLS the handshake advances inside those calls, driven by the link's read and write
//! turns.

use crate::endpoint::StoreEndpoint;
use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};
use rustls::ClientConnection;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// A connected (or connecting) transport to the store.
pub enum Transport {
    Unix(UnixStream),
    Tls(Box<TlsTransport>),
}

/// A TLS client session over a non-blocking TCP stream.
pub struct TlsTransport {
    sock: TcpStream,
    conn: ClientConnection,
    /// The peer closed TCP; no more records will come.
    eof: bool,
}

impl Transport {
    /// Starts connecting. A TCP connect completes later (the first writes would block until
    /// then); a refused connection shows as an error on the first read or write.
    pub fn connect(endpoint: &StoreEndpoint, attempt: u64) -> io::Result<Self> {
        match endpoint {
            StoreEndpoint::Unix(path) => UnixStream::connect(path).map(Transport::Unix),
            StoreEndpoint::Remote(remote) => {
                // Rotate through the resolved addresses, one per attempt.
                let count = remote.addrs.len().max(1) as u64;
                let index = usize::try_from(attempt % count).unwrap_or(0);
                let addr = remote.addrs.get(index).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the store address did not resolve")
                })?;
                let sock = TcpStream::connect(*addr)?;
                sock.set_nodelay(true)?;
                let conn =
                    ClientConnection::new(Arc::clone(&remote.tls), remote.server_name.clone())
                        .map_err(io::Error::other)?;
                Ok(Transport::Tls(Box::new(TlsTransport {
                    sock,
                    conn,
                    eof: false,
                })))
            }
        }
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Transport::Unix(s) => s,
            Transport::Tls(t) => &mut t.sock,
        }
    }

    /// Registers for both directions: a fresh link has its hello (and, over TLS, its handshake)
    /// to send, and a TCP connect completes with a writable event.
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            self.source(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Asks for writable events only while there is something left to write.
    pub fn set_writable_interest(
        &mut self,
        registry: &Registry,
        token: Token,
        writable: bool,
    ) -> io::Result<()> {
        let interest = if writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        registry.reregister(self.source(), token, interest)
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(self.source());
    }

    /// Takes plaintext; `WouldBlock` when nothing could be taken now.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Unix(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    /// Gives plaintext; `Ok(0)` when the store closed the link.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Unix(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }

    /// Sends TLS records queued by earlier calls, as far as the socket takes them.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Unix(_) => Ok(()),
            Transport::Tls(t) => t.send_records(),
        }
    }

    /// Whether bytes are still waiting inside the transport (TLS records not yet sent).
    pub fn has_pending(&self) -> bool {
        match self {
            Transport::Unix(_) => false,
            Transport::Tls(t) => t.conn.wants_write(),
        }
    }
}

impl TlsTransport {
    fn send_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Still connecting: the socket is not writable yet; its WRITABLE event comes.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // rustls buffers plaintext (until the handshake is done, then as records) up to its
        // buffer limit and takes nothing beyond it; sending records makes room.
        let mut taken = self.conn.writer().write(buf)?;
        self.send_records()?;
        if taken == 0 {
            taken = self.conn.writer().write(buf)?;
            self.send_records()?;
        }
        if taken == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                // Ok(0): the store's close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: for the link, the store went away.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.eof {
                return Ok(0);
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the store why (best effort), then fail the link with the reason: a
                // certificate problem shows here, e.g. "invalid peer certificate: UnknownIssuer".
                let _ = self.send_records();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            // Handshake messages (and key updates) the records asked for.
            self.send_records()?;
        }
    }
}
