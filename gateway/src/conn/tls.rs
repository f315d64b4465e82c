//! One server-side TLS session over rustls' unbuffered API, without IO: ciphertext goes in,
//! plaintext and the ciphertext to send come out. The caller owns every buffer, so an idle TLS
//! connection holds only rustls' key schedule and this struct: the tail of a record that arrived
//! in pieces is kept in `partial_record`, which is released as soon as the record is complete.
//!
//! rustls' buffered `ServerConnection` keeps a receive buffer and a plaintext buffer alive for the
//! life of the connection; at 10,000 idle connections that was ~7.6 KB each, twice the budget.

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{ProtocolVersion, ServerConfig};
use std::sync::Arc;

/// Largest TLS record we hold while waiting for its end: the 16 KiB plaintext limit plus the
/// largest expansion the protocol allows (RFC 8446 §5.2; TLS 1.2 allows 2 KiB). Anything longer
/// is a peer that lies about its record length.
pub const MAX_PARTIAL_RECORD: usize = 5 + 16_384 + 2_048;

/// Bytes reserved per record beyond its plaintext when encrypting: header, tag, content type and
/// TLS 1.2's explicit nonce all fit.
const RECORD_OVERHEAD: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsSessionError {
    /// The peer broke the protocol (wrong version, bad record, failed handshake). The fatal alert
    /// rustls queued for it is already in the output.
    #[error("{0}")]
    Peer(rustls::Error),
    #[error("a TLS record longer than {MAX_PARTIAL_RECORD} bytes is announced")]
    RecordTooLong,
    /// Application data was offered before the handshake finished or after close_notify.
    #[error("the TLS session cannot send application data now")]
    NotWritable,
    #[error("internal TLS error: {0}")]
    Internal(String),
}

/// What one call to [`TlsSession::receive`] brought.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The handshake completed during this call.
    pub handshake_done: bool,
    /// The peer sent close_notify.
    pub peer_closed: bool,
}

pub struct TlsSession {
    conn: UnbufferedServerConnection,
    /// Ciphertext of a record still incomplete; empty (no allocation) between records.
    partial_record: Vec<u8>,
}

impl TlsSession {
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, TlsSessionError> {
        Ok(Self {
            conn: UnbufferedServerConnection::new(config)
                .map_err(|e| TlsSessionError::Internal(e.to_string()))?,
            partial_record: Vec::new(),
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The application protocol agreed by ALPN, once the handshake is done (`None` when the
    /// client offered none; see `conn/select.rs`).
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Bytes held for an incomplete record (the idle memory test checks this is zero).
    pub fn held_bytes(&self) -> usize {
        self.partial_record.capacity()
    }

    /// Feeds received ciphertext. Decrypted application data is appended to `plaintext`, TLS
    /// records to send (handshake, alerts, tickets) to `outgoing`; on error `outgoing` holds the
    /// fatal alert, which should reach the peer before the socket closes.
    pub fn receive(
        &mut self,
        ciphertext: &mut [u8],
        plaintext: &mut Vec<u8>,
        outgoing: &mut Vec<u8>,
    ) -> Result<Received, TlsSessionError> {
        let was_handshaking = self.conn.is_handshaking();
        let mut received = Received::default();
        let result = if self.partial_record.is_empty() {
            let used = self.process(ciphertext, plaintext, outgoing, &mut received);
            if let Ok(used) = used {
                self.partial_record.extend_from_slice(&ciphertext[used..]);
            }
            used.map(|_| ())
        } else {
            let mut held = std::mem::take(&mut self.partial_record);
            held.extend_from_slice(ciphertext);
            let used = self.process(&mut held, plaintext, outgoing, &mut received);
            if let Ok(used) = used {
                held.drain(..used);
                // Keep the allocation only while a record is still incomplete.
                self.partial_record = if held.is_empty() { Vec::new() } else { held };
            }
            used.map(|_| ())
        };
        result?;
        if self.partial_record.len() > MAX_PARTIAL_RECORD {
            return Err(TlsSessionError::RecordTooLong);
        }
        received.handshake_done = was_handshaking && !self.conn.is_handshaking();
        Ok(received)
    }

    /// Runs rustls over `buf` until it needs more bytes; returns how many bytes it consumed. On
    /// error, the fatal alert rustls queued is appended to `outgoing`.
    fn process(
        &mut self,
        buf: &mut [u8],
        plaintext: &mut Vec<u8>,
        outgoing: &mut Vec<u8>,
        received: &mut Received,
    ) -> Result<usize, TlsSessionError> {
        let mut consumed = 0;
        let result = self.process_records(buf, &mut consumed, plaintext, outgoing, received);
        if result.is_err() {
            // rustls remembers how far into this buffer it got, so the alert must be drained
            // with the same (undiscarded) bytes in front of it, never an empty slice.
            let rest = consumed.min(buf.len());
            self.drain_outgoing(&mut buf[rest..], outgoing);
        }
        result.map(|()| consumed)
    }

    fn process_records(
        &mut self,
        buf: &mut [u8],
        consumed: &mut usize,
        plaintext: &mut Vec<u8>,
        outgoing: &mut Vec<u8>,
        received: &mut Received,
    ) -> Result<(), TlsSessionError> {
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut buf[*consumed..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    *consumed += discard;
                    return Err(TlsSessionError::Peer(e));
                }
            };
            let step = match state {
                ConnectionState::ReadTraffic(mut records) => {
                    let mut result = Ok(true);
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                plaintext.extend_from_slice(record.payload);
                            }
                            Err(e) => {
                                result = Err(TlsSessionError::Peer(e));
                                break;
                            }
                        }
                    }
                    result
                }
                // Our config accepts no early data; rustls only reports it when it is enabled.
                ConnectionState::ReadEarlyData(_) => Err(TlsSessionError::Internal(
                    "early data although the config accepts none".into(),
                )),
                ConnectionState::EncodeTlsData(mut encoder) => {
                    append_encoded(outgoing, |dst| encoder.encode(dst)).map(|()| true)
                }
                // The bytes are in `outgoing`, in order; the caller writes them before anything
                // queued later.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    Ok(true)
                }
                ConnectionState::PeerClosed => {
                    received.peer_closed = true;
                    Ok(true)
                }
                _ => Ok(false),
            };
            *consumed += discard;
            if !step? {
                return Ok(());
            }
        }
    }

    /// Encrypts one message into one record appended to `outgoing`.
    pub fn encrypt(
        &mut self,
        message: &[u8],
        outgoing: &mut Vec<u8>,
    ) -> Result<(), TlsSessionError> {
        self.with_write_traffic(outgoing, |writer, outgoing| {
            append_encrypted(outgoing, message.len() + RECORD_OVERHEAD, |dst| {
                writer.encrypt(message, dst)
            })
        })
    }

    /// Appends close_notify to `outgoing`. Nothing happens if the session cannot write any more.
    pub fn close_notify(&mut self, outgoing: &mut Vec<u8>) {
        let _ = self.with_write_traffic(outgoing, |writer, outgoing| {
            append_encrypted(outgoing, RECORD_OVERHEAD, |dst| {
                writer.queue_close_notify(dst)
            })
        });
    }

    /// Flushes pending TLS output (the fatal alert after an error) into `outgoing`. rustls hands
    /// out queued records before it looks at input again, so asking only while it wants to write
    /// never re-reads the bad bytes (which would raise a second alert). `buf` is still the bytes
    /// it was last given: it remembers positions in them.
    fn drain_outgoing(&mut self, buf: &mut [u8], outgoing: &mut Vec<u8>) {
        for _ in 0..16 {
            if !self.conn.wants_write() {
                return;
            }
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(buf);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut encoder)) => {
                    if append_encoded(outgoing, |dst| encoder.encode(dst)).is_err() {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    /// Drives rustls to the state where application data may be written, then runs `write`.
    fn with_write_traffic(
        &mut self,
        outgoing: &mut Vec<u8>,
        write: impl FnOnce(
            &mut rustls::unbuffered::WriteTraffic<'_, rustls::server::ServerConnectionData>,
            &mut Vec<u8>,
        ) -> Result<(), TlsSessionError>,
    ) -> Result<(), TlsSessionError> {
        // Each pass either emits pending output or reaches a final state; the bound only guards
        // against a rustls state we do not know. rustls is always shown the bytes it holds
        // (an incomplete record, or handshake fragments) — never an empty slice in their place.
        let mut write = Some(write);
        for _ in 0..16 {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.partial_record);
            let done = match state.map_err(TlsSessionError::Peer)? {
                ConnectionState::EncodeTlsData(mut encoder) => {
                    append_encoded(outgoing, |dst| encoder.encode(dst))?;
                    None
                }
                ConnectionState::TransmitTlsData(mut transmit) => {
                    match (transmit.may_encrypt_app_data(), write.take()) {
                        (Some(mut writer), Some(write)) => Some(write(&mut writer, outgoing)),
                        (_, taken) => {
                            write = taken;
                            transmit.done();
                            None
                        }
                    }
                }
                ConnectionState::WriteTraffic(mut writer) => match write.take() {
                    Some(write) => Some(write(&mut writer, outgoing)),
                    None => Some(Err(TlsSessionError::Internal("write ran twice".into()))),
                },
                ConnectionState::ReadTraffic(_) | ConnectionState::ReadEarlyData(_) => {
                    // `receive` always drains application data, so none can be pending here.
                    Some(Err(TlsSessionError::Internal(
                        "undelivered application data while writing".into(),
                    )))
                }
                _ => Some(Err(TlsSessionError::NotWritable)),
            };
            self.partial_record
                .drain(..discard.min(self.partial_record.len()));
            if let Some(result) = done {
                return result;
            }
        }
        Err(TlsSessionError::Internal("rustls did not settle".into()))
    }
}

/// Appends what `encode` writes, growing `outgoing` to the size rustls asks for.
fn append_encoded(
    outgoing: &mut Vec<u8>,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<(), TlsSessionError> {
    append_with(outgoing, 512, |dst| match encode(dst) {
        Ok(n) => Ok(Ok(n)),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            Ok(Err(required_size))
        }
        Err(e) => Err(TlsSessionError::Internal(e.to_string())),
    })
}

fn append_encrypted(
    outgoing: &mut Vec<u8>,
    guess: usize,
    mut encrypt: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), TlsSessionError> {
    append_with(outgoing, guess, |dst| match encrypt(dst) {
        Ok(n) => Ok(Ok(n)),
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
            Ok(Err(required_size))
        }
        Err(e) => Err(TlsSessionError::Internal(e.to_string())),
    })
}

/// Runs `fill` on `guess` spare bytes at the end of `outgoing`; if it asks for more (`Ok(Err(n))`)
/// it runs once more with `n` bytes.
fn append_with(
    outgoing: &mut Vec<u8>,
    guess: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<Result<usize, usize>, TlsSessionError>,
) -> Result<(), TlsSessionError> {
    let start = outgoing.len();
    let mut room = guess;
    for _ in 0..2 {
        outgoing.resize(start + room, 0);
        match fill(&mut outgoing[start..]) {
            Ok(Ok(written)) => {
                outgoing.truncate(start + written);
                return Ok(());
            }
            Ok(Err(required)) => room = required,
            Err(e) => {
                outgoing.truncate(start);
                return Err(e);
            }
        }
    }
    outgoing.truncate(start);
    Err(TlsSessionError::Internal(
        "rustls asked for more room twice".into(),
    ))
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
