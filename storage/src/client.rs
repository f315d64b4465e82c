//! A small blocking admin link to a running store, for the `portcullis-store` commands that talk
//! to one (`rotate-key --socket`, `reseal`, `key-usage`): connect, hello as
//! [`ClientRole::Admin`], then one request at a time. The gateway has its own pipelined client;
//! this one exists so the store binary needs nothing from the gateway crate.

use portcullis_protocol::store::{
    ClientHello, ClientRole, ReplyEnvelope, Request, RequestEnvelope, Response, ServerHello,
    StoreError, WIRE_VERSION, WireError, decode_frame, encode_frame,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// How long one request may take before the link gives up: a reseal step or a key count of a
/// large store can take a while, a hung store should not hang the operator forever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes read per socket read.
const READ_CHUNK: usize = 64 * 1024;

/// Why talking to the store failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Operator: no store answers on that socket (not running, or another path).
    #[error("cannot connect to the store at {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The link broke or timed out.
    #[error("talking to the store failed: {0}")]
    Io(#[from] std::io::Error),
    /// Store or us: a frame did not encode or decode.
    #[error("bad frame on the store link: {0}")]
    Wire(#[from] WireError),
    /// Store: refused our hello (another wire version).
    #[error("the store refused the link: {0}")]
    Refused(String),
    /// Store: closed the link before answering.
    #[error("the store closed the link before answering")]
    Closed,
    /// Store: answered another request than ours (a bug).
    #[error("the store answered request {got}, not {sent}")]
    WrongReply { sent: u64, got: u64 },
    /// Store: refused or failed the request.
    #[error("the store refused: {0}")]
    Store(#[from] StoreError),
}

/// An open admin link.
pub struct AdminLink {
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
}

impl AdminLink {
    /// Connects to the store at `socket` and says hello as an admin.
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
            path: socket.to_owned(),
            source,
        })?;
        stream.set_read_timeout(Some(CALL_TIMEOUT))?;
        stream.set_write_timeout(Some(CALL_TIMEOUT))?;
        let mut link = Self {
            stream,
            buf: Vec::new(),
            next_id: 1,
        };
        link.send(&ClientHello {
            version: WIRE_VERSION,
            role: ClientRole::Admin,
        })?;
        match link.recv::<ServerHello>()? {
            ServerHello::Accepted { .. } => Ok(link),
            ServerHello::Refused { reason, .. } => Err(ClientError::Refused(reason)),
        }
    }

    /// Sends one request and waits for its reply.
    pub fn call(&mut self, request: Request) -> Result<Response, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&RequestEnvelope { id, request })?;
        let reply: ReplyEnvelope = self.recv()?;
        if reply.id != id {
            return Err(ClientError::WrongReply {
                sent: id,
                got: reply.id,
            });
        }
        Ok(reply.result?)
    }

    fn send<T: serde::Serialize>(&mut self, msg: &T) -> Result<(), ClientError> {
        let mut out = Vec::new();
        encode_frame(msg, &mut out)?;
        self.stream.write_all(&out)?;
        Ok(())
    }

    fn recv<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, ClientError> {
        loop {
            if let Some((msg, used)) = decode_frame::<T>(&self.buf)? {
                self.buf.drain(..used);
                return Ok(msg);
            }
            let mut chunk = vec![0u8; READ_CHUNK];
            match self.stream.read(&mut chunk)? {
                0 => return Err(ClientError::Closed),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
