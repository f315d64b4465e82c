//! What a session step decides: frames to send (each written with its own `write` so old Python
//! clients, which parse one frame per `recv`, see every one), calls to the store, and why a
//! connection must close. One `Outbox` per shard is reused for every connection, so a step does
//! not allocate in the common case.

use portcullis_protocol::body::{DeviceInfo, PinAddr};
use portcullis_protocol::frame::{self, EncodeError};
use portcullis_protocol::store::{Presence, TokenHash};
use portcullis_protocol::{Command, Status};
use std::fmt;

/// A store operation a session needs; the shard turns it into a request and routes the reply back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCall {
    Authenticate {
        token_hash: TokenHash,
        msg_id: u16,
    },
    /// Telemetry: batched per shard and loop turn, never answered to the device.
    WritePin {
        pin: PinAddr,
        value: Vec<u8>,
    },
    /// Answered with HARDWARE frames carrying `msg_id`.
    Sync {
        msg_id: u16,
        pins: Option<Vec<PinAddr>>,
        filter: super::SyncFilter,
    },
    /// Answered with a RESPONSE once stored.
    WriteProperty {
        msg_id: u16,
        pin: PinAddr,
        property: String,
        value: Vec<u8>,
    },
    SetInfo(DeviceInfo),
    Presence(Presence),
}

/// Why the gateway closes a connection; logged with the peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    PeerClosed,
    /// A read or write failed (reset, broken pipe).
    Io(String),
    /// The first frame was not a login.
    NotALogin(String),
    /// Bytes that are no protocol this port serves.
    UnknownProtocol,
    Malformed(String),
    InvalidToken,
    /// The source failed too many logins: refused without checking the token (`gate` names the
    /// phase: back-off or block), for `retry_in_ms` more.
    LoginThrottled {
        gate: &'static str,
        retry_in_ms: u64,
    },
    /// No login within the deadline (TLS handshake included).
    LoginTimeout,
    /// Silent for longer than its heartbeat allows.
    HeartbeatTimeout {
        secs: u64,
    },
    PreAuthBufferFull {
        limit: usize,
    },
    /// Its outbound queue hit the bound: it does not read what we send.
    SlowReader {
        queued: usize,
    },
    Tls(String),
    /// The store refused or failed the login lookup.
    StoreUnavailable,
    Shutdown,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed the connection"),
            CloseReason::Io(e) => write!(f, "socket error: {e}"),
            CloseReason::NotALogin(what) => write!(f, "first frame is not a login ({what})"),
            CloseReason::UnknownProtocol => {
                f.write_str("first bytes match no protocol served on this port")
            }
            CloseReason::Malformed(e) => write!(f, "malformed frame: {e}"),
            CloseReason::InvalidToken => f.write_str("invalid device token"),
            CloseReason::LoginThrottled { gate, retry_in_ms } => write!(
                f,
                "login refused without checking ({gate}: too many failed logins from this source; retry in {retry_in_ms} ms)"
            ),
            CloseReason::LoginTimeout => f.write_str("no login before the deadline"),
            CloseReason::HeartbeatTimeout { secs } => {
                write!(f, "silent for {secs} s (heartbeat timeout)")
            }
            CloseReason::PreAuthBufferFull { limit } => {
                write!(f, "more than {limit} bytes before login completed")
            }
            CloseReason::SlowReader { queued } => write!(
                f,
                "outbound queue full ({queued} bytes): peer does not read"
            ),
            CloseReason::Tls(e) => write!(f, "TLS error: {e}"),
            CloseReason::StoreUnavailable => f.write_str("store could not check the login"),
            CloseReason::Shutdown => f.write_str("gateway shutting down"),
        }
    }
}

/// Decisions of one session step.
#[derive(Debug, Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    /// End offset in `bytes` of each frame.
    ends: Vec<usize>,
    pub store: Vec<StoreCall>,
    pub close: Option<CloseReason>,
}

/// Message ids sent to a device are never 0: the libraries drop the connection on it, and
/// blynklib's counter sticks at 0 after 65535 frames, so a reply to id 0 goes out as id 1.
pub fn reply_id(msg_id: u16) -> u16 {
    msg_id.max(1)
}

impl Outbox {
    pub fn response(&mut self, msg_id: u16, status: Status) {
        frame::encode_response(&mut self.bytes, reply_id(msg_id), status);
        self.ends.push(self.bytes.len());
    }

    /// Queues a frame from NUL-joined `args`, unless it would exceed `max_frame` bytes on the wire.
    pub fn frame_args(
        &mut self,
        command: Command,
        msg_id: u16,
        args: &[&[u8]],
        max_frame: usize,
    ) -> Result<(), EncodeError> {
        let len = frame::HEADER_LEN
            + args
                .iter()
                .map(|a| a.len() + 1)
                .sum::<usize>()
                .saturating_sub(1);
        if len > max_frame {
            return Err(EncodeError::BodyTooLarge {
                len: len - frame::HEADER_LEN,
            });
        }
        frame::encode_args(&mut self.bytes, command, reply_id(msg_id), args)?;
        self.ends.push(self.bytes.len());
        Ok(())
    }

    /// Replaces the store calls that can be refused when the shard's store queue is full with
    /// their answers: a login is answered SERVER_ERROR and the connection closed, a sync or a
    /// property write answered SERVER_ERROR, an info update dropped (it is re-sent at every
    /// login). Telemetry (bounded on its own) and presence changes are kept. Returns how many
    /// calls were refused.
    pub fn refuse_deferrable_calls(&mut self) -> usize {
        let calls = std::mem::take(&mut self.store);
        let mut refused = 0;
        for call in calls {
            match call {
                StoreCall::Authenticate { msg_id, .. } => {
                    self.response(msg_id, Status::ServerError);
                    self.close(CloseReason::StoreUnavailable);
                }
                StoreCall::Sync { msg_id, .. } | StoreCall::WriteProperty { msg_id, .. } => {
                    self.response(msg_id, Status::ServerError)
                }
                StoreCall::SetInfo(_) => {}
                kept @ (StoreCall::WritePin { .. } | StoreCall::Presence(_)) => {
                    self.store.push(kept);
                    continue;
                }
            }
            refused += 1;
        }
        refused
    }

    /// Queues bytes that are not a Blynk frame (the HTTP answer that opens a WebSocket).
    pub fn raw(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
        self.ends.push(self.bytes.len());
    }

    pub fn close(&mut self, reason: CloseReason) {
        self.close.get_or_insert(reason);
    }

    /// The queued frames, one slice each.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let frame = &self.bytes[start..end];
            start = end;
            frame
        })
    }

    /// Bytes of the queued frames.
    pub fn pending_bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn has_frames(&self) -> bool {
        !self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.store.clear();
        self.close = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_protocol::body::PinKind;
    use portcullis_protocol::frame::{Decoded, Payload, decode};
    use portcullis_protocol::store::{NodeName, Presence, SessionTag};

    fn statuses(outbox: &Outbox) -> Vec<(u16, Status)> {
        outbox
            .frames()
            .map(|bytes| match decode(bytes, usize::MAX) {
                Ok(Decoded::Frame { frame, .. }) => match frame.payload {
                    Payload::Status(status) => (frame.msg_id, status),
                    other => panic!("not a response: {other:?}"),
                },
                other => panic!("not a frame: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_full_store_queue_answers_what_waits_for_a_reply_and_keeps_telemetry_and_presence() {
        let pin = PinAddr::new(PinKind::Virtual, 1);
        let mut outbox = Outbox {
            store: vec![
                StoreCall::WritePin {
                    pin,
                    value: b"1".to_vec(),
                },
                StoreCall::Sync {
                    msg_id: 7,
                    pins: None,
                    filter: super::super::SyncFilter::Everything,
                },
                StoreCall::WriteProperty {
                    msg_id: 8,
                    pin,
                    property: "label".into(),
                    value: b"x".to_vec(),
                },
                StoreCall::SetInfo(DeviceInfo::default()),
                StoreCall::Presence(Presence::Offline {
                    session: SessionTag {
                        node: NodeName::new("gw1").expect("valid name"),
                        local: 1,
                    },
                }),
            ],
            ..Outbox::default()
        };
        assert_eq!(outbox.refuse_deferrable_calls(), 3);
        assert_eq!(
            statuses(&outbox),
            vec![(7, Status::ServerError), (8, Status::ServerError)]
        );
        assert!(matches!(outbox.store[0], StoreCall::WritePin { .. }));
        assert!(matches!(outbox.store[1], StoreCall::Presence(_)));
        assert_eq!(outbox.store.len(), 2);
        assert_eq!(outbox.close, None, "a logged-in device stays connected");

        outbox.clear();
        outbox.store = vec![StoreCall::Authenticate {
            token_hash: [0; 32],
            msg_id: 1,
        }];
        assert_eq!(outbox.refuse_deferrable_calls(), 1);
        assert_eq!(statuses(&outbox), vec![(1, Status::ServerError)]);
        assert_eq!(outbox.close, Some(CloseReason::StoreUnavailable));
        assert!(outbox.store.is_empty());
    }
}
