//! A minimal Blynk device for tests, over plain TCP or TLS (rustls client), built on the real
//! frame codec. It reads with a timeout so a test never hangs on a silent gateway.

use portcullis_protocol::frame::{self, Decoded, Payload};
use portcullis_protocol::{Command, Status};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A decoded frame, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Status {
        id: u16,
        status: Status,
    },
    Frame {
        command: Command,
        id: u16,
        body: Vec<u8>,
    },
    /// The gateway closed the connection.
    Closed,
}

pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub struct Device {
    stream: Box<dyn Stream>,
    tcp: TcpStream,
    buf: Vec<u8>,
    next_id: u16,
}

/// A rustls client config trusting the gateway's generated CA, limited to one TLS version.
pub fn client_config(
    ca_pem: &Path,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl Device {
    pub fn plain(port: u16) -> Device {
        Device::over(TcpStream::connect(("127.0.0.1", port)).unwrap())
    }

    /// A plain device over an already connected socket (e.g. one bound to another loopback source).
    pub fn over(tcp: TcpStream) -> Device {
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.set_nodelay(true).unwrap();
        Device {
            stream: Box::new(tcp.try_clone().unwrap()),
            tcp,
            buf: Vec::new(),
            next_id: 1,
        }
    }

    /// Connects over TLS and completes the handshake; returns the negotiated version too.
    pub fn tls(port: u16, config: Arc<rustls::ClientConfig>) -> Device {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp.try_clone().unwrap());
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        Device {
            stream: Box::new(stream),
            tcp,
            buf: Vec::new(),
            next_id: 1,
        }
    }

    pub fn set_read_timeout(&self, timeout: Duration) {
        self.tcp.set_read_timeout(Some(timeout)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends a frame with the next message id; returns the id.
    pub fn send(&mut self, command: Command, args: &[&[u8]]) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let mut out = Vec::new();
        frame::encode_args(&mut out, command, id, args).unwrap();
        self.send_raw(&out).unwrap();
        id
    }

    /// Reads the next frame (or `Closed`); panics on timeout.
    pub fn recv(&mut self) -> Got {
        loop {
            match frame::decode(&self.buf, 65535).unwrap() {
                Decoded::Frame { frame, consumed } => {
                    let got = match frame.payload {
                        Payload::Status(status) => Got::Status {
                            id: frame.msg_id,
                            status,
                        },
                        Payload::Body(body) => Got::Frame {
                            command: frame.command,
                            id: frame.msg_id,
                            body: body.to_vec(),
                        },
                    };
                    self.buf.drain(..consumed);
                    return got;
                }
                Decoded::NeedMore { .. } => {}
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("no frame from the gateway within the read timeout")
                }
                // A reset or a TLS close without close_notify: closed all the same.
                Err(_) => return Got::Closed,
            }
        }
    }

    /// Expects a RESPONSE with `status` for message `id`.
    pub fn expect_status(&mut self, id: u16, status: Status) {
        assert_eq!(self.recv(), Got::Status { id, status });
    }

    /// Logs in with command 29 and expects `status`.
    pub fn login(&mut self, token: &str, status: Status) {
        let id = self.send(Command::HardwareLogin, &[token.as_bytes()]);
        self.expect_status(id, status);
    }

    /// Sends an info message like blynklib's and expects 200.
    pub fn info(&mut self, heartbeat: u16) {
        let hb = heartbeat.to_string();
        let id = self.send(
            Command::Internal,
            &[
                b"ver",
                b"0.2.6",
                b"buff-in",
                b"1024",
                b"h-beat",
                hb.as_bytes(),
                b"dev",
                b"python",
            ],
        );
        self.expect_status(id, Status::Ok);
    }

    pub fn virtual_write(&mut self, pin: u8, value: &str) {
        let pin = pin.to_string();
        self.send(
            Command::Hardware,
            &[b"vw", pin.as_bytes(), value.as_bytes()],
        );
    }

    /// Half-closes the connection with `bytes` as its last data: the socket is corked first, so
    /// the kernel puts the FIN on the same segment as the data and the gateway sees both in one
    /// readiness event.
    pub fn send_raw_then_fin(&mut self, bytes: &[u8]) {
        let sock = socket2::SockRef::from(&self.tcp);
        sock.set_tcp_cork(true).unwrap();
        self.send_raw(bytes).unwrap();
        self.tcp.shutdown(std::net::Shutdown::Write).unwrap();
    }

    /// Waits until the gateway closes the connection; panics if a frame arrives or time runs out.
    pub fn expect_closed(&mut self) {
        match self.recv() {
            Got::Closed => {}
            other => panic!("expected the gateway to close the connection, got {other:?}"),
        }
    }
}
