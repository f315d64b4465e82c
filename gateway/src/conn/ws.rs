//! WebSocket framing as a byte layer under a protocol session, sans-IO: tungstenite's
//! `WebSocketContext` driven over in-memory bytes, never a socket. Received bytes go in and come
//! out as whole messages; what the session sends is framed into an output buffer the reactor
//! takes and writes (through TLS when there is some). Control frames are handled here: pings are
//! answered, a close is acknowledged. The app API (`protocols/app_ws`) runs its JSON over it; a
//! Blynk device over WebSocket will run the Blynk frame decoder over its binary messages.

use super::close::CloseReason;
use std::io::{self, Read, Write};
use tungstenite::Message;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

/// Longest reason text a close frame may carry (RFC 6455 §5.5: 125 bytes of payload, 2 of them
/// the code).
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// What one read of the layer yields.
#[derive(Debug, PartialEq, Eq)]
pub enum WsRead {
    /// A whole text message.
    Text(tungstenite::Utf8Bytes),
    /// A whole binary message.
    Binary(tungstenite::Bytes),
    /// Every received byte is used (a partial frame waits inside the layer).
    NeedMore,
    /// The connection ends: the peer closed (its close was acknowledged) or broke the protocol.
    Close(CloseReason),
}

/// Limits of one WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// Initial read buffer; it grows up to `max_message_bytes` when a message needs it.
    pub read_buffer_bytes: usize,
    /// Largest message (and frame) accepted; a bigger one closes the connection.
    pub max_message_bytes: usize,
}

/// The server end of one WebSocket.
pub struct WsLayer {
    ws: WebSocketContext,
    /// Framed bytes waiting to be sent.
    output: Vec<u8>,
}

impl std::fmt::Debug for WsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsLayer")
            .field("output", &self.output.len())
            .finish_non_exhaustive()
    }
}

/// The bytes tungstenite reads from and writes to: this call's input, and the layer's output.
pub(crate) struct Pipe<'i, 'o> {
    pub input: &'i [u8],
    pub output: &'o mut Vec<u8>,
}

impl Read for Pipe<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.input.len().min(buf.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Pipe<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl WsLayer {
    /// The server side of a WebSocket whose upgrade was just answered.
    pub fn server(limits: WsLimits) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(limits.read_buffer_bytes)
            .write_buffer_size(0)
            .max_message_size(Some(limits.max_message_bytes))
            .max_frame_size(Some(limits.max_message_bytes));
        Self {
            ws: WebSocketContext::new(Role::Server, Some(config)),
            output: Vec::new(),
        }
    }

    /// Reads the next whole message from `input`, which is advanced past what was used.
    pub fn read(&mut self, input: &mut &[u8]) -> WsRead {
        loop {
            let mut pipe = Pipe {
                input,
                output: &mut self.output,
            };
            let read = self.ws.read(&mut pipe);
            *input = pipe.input;
            return match read {
                Ok(Message::Text(text)) => WsRead::Text(text),
                Ok(Message::Binary(bytes)) => WsRead::Binary(bytes),
                // tungstenite queued the pong itself.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(_)) => {
                    // The acknowledgement tungstenite queued goes out before the close.
                    self.flush();
                    WsRead::Close(CloseReason::PeerClosed)
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.flush();
                    WsRead::NeedMore
                }
                Err(
                    WsError::ConnectionClosed
                    | WsError::AlreadyClosed
                    | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                ) => WsRead::Close(CloseReason::PeerClosed),
                Err(WsError::Capacity(e)) => WsRead::Close(CloseReason::Malformed(format!(
                    "WebSocket message too large: {e}"
                ))),
                Err(e) => WsRead::Close(CloseReason::Malformed(format!("WebSocket: {e}"))),
            };
        }
    }

    /// Frames a text message for sending.
    pub fn send_text(&mut self, text: impl Into<tungstenite::Utf8Bytes>) {
        self.send(Message::Text(text.into()));
    }

    /// Frames a binary message for sending.
    pub fn send_binary(&mut self, bytes: impl Into<tungstenite::Bytes>) {
        self.send(Message::Binary(bytes.into()));
    }

    fn send(&mut self, message: Message) {
        let mut pipe = Pipe {
            input: &[],
            output: &mut self.output,
        };
        if let Err(e) = self.ws.write(&mut pipe, message) {
            tracing::debug!(error = %e, "WebSocket no longer writable");
        }
        self.flush();
    }

    /// Says goodbye with a close frame naming the reason, before the gateway closes the
    /// connection (not when the peer left or the socket failed: nobody would read it).
    pub fn close(&mut self, reason: &CloseReason) {
        let code = match reason {
            CloseReason::PeerClosed | CloseReason::Io(_) | CloseReason::Tls(_) => return,
            CloseReason::Shutdown
            | CloseReason::HeartbeatTimeout { .. }
            | CloseReason::IdleTimeout { .. }
            | CloseReason::HttpTimeout { .. } => CloseCode::Away,
            CloseReason::Malformed(_) => CloseCode::Protocol,
            CloseReason::Internal(_) => CloseCode::Error,
            _ => CloseCode::Policy,
        };
        let mut text = reason.to_string();
        while text.len() > MAX_CLOSE_REASON_BYTES {
            text.pop();
        }
        let mut pipe = Pipe {
            input: &[],
            output: &mut self.output,
        };
        let frame = CloseFrame {
            code,
            reason: text.into(),
        };
        if self.ws.close(&mut pipe, Some(frame)).is_ok() {
            self.flush();
        }
    }

    /// Whether framed bytes wait to be sent.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Takes the framed bytes waiting to be sent.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    fn flush(&mut self) {
        let mut pipe = Pipe {
            input: &[],
            output: &mut self.output,
        };
        // Writing to memory cannot block; an error means the socket side closed already.
        let _ = self.ws.flush(&mut pipe);
    }
}

#[cfg(test)]
#[path = "ws_tests.rs"]
mod tests;
