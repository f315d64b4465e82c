//! The sans-IO life of one simulated device up to being online: connect, (TLS handshake), login
//! with command 29, info message with its heartbeat, then online. One enum, advanced by a
//! consuming [`DeviceState::upgrade`] that takes an event and returns the next state, an
//! [`Outcome`] for the scenario and the frames to send (appended to a caller-owned buffer).
//! What an online device does (heartbeat, telemetry, pings) is the scenario's business
//! (`activity.rs`); this module only hands it the replies.

use portcullis_protocol::frame;
use portcullis_protocol::{Command, Status};
use std::time::{Duration, Instant};

/// Message ids of one connection: 1..=65535, never 0 (the gateway would drop a frame with id 0).
#[derive(Debug, Clone, Copy)]
pub struct MsgIds(u16);

impl Default for MsgIds {
    fn default() -> Self {
        MsgIds(1)
    }
}

impl MsgIds {
    pub fn next(&mut self) -> u16 {
        let id = self.0;
        self.0 = self.0.checked_add(1).unwrap_or(1);
        id
    }
}

/// What a device says about itself at login.
#[derive(Debug, Clone)]
pub struct Identity<'a> {
    pub token: &'a str,
    /// Heartbeat interval announced in the info message (`h-beat`), seconds.
    pub heartbeat_secs: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// No socket (before the first attempt, after a failure, between storm reconnects).
    Offline,
    /// TCP connect in flight since `started`.
    Connecting { started: Instant },
    /// TCP up, TLS handshake in flight.
    Handshaking { started: Instant },
    /// Login sent with `msg_id`.
    LoggingIn { started: Instant, msg_id: u16 },
    /// Logged in; info sent with `msg_id`.
    SendingInfo { started: Instant, msg_id: u16 },
    /// Logged in and info acknowledged.
    Online { since: Instant },
}

/// Something that happened to the device's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The socket was opened (connect started).
    Dialed { now: Instant },
    /// The TCP connect completed.
    TcpConnected { now: Instant, tls: bool },
    /// The TLS handshake completed.
    HandshakeDone { now: Instant },
    /// A RESPONSE frame arrived.
    Response {
        now: Instant,
        msg_id: u16,
        status: Status,
    },
    /// Another frame arrived (server-originated HARDWARE, INTERNAL...).
    Frame { command: Command },
}

/// What the scenario should do about the step just taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Nothing,
    /// Transport (and TLS) up after `took`.
    Connected {
        took: Duration,
    },
    /// Login answered 200, `took` after the first SYN.
    LoggedIn {
        took: Duration,
    },
    /// Info answered 200: the device is online and belongs to the scenario now.
    Online,
    /// The gateway refused something; the connection should be closed.
    Refused {
        reason: String,
    },
    /// A reply for the scenario (only while online).
    Reply {
        msg_id: u16,
        status: Status,
    },
    /// A frame nobody asked for.
    Unexpected {
        command: Command,
    },
}

impl DeviceState {
    /// Advances the state by one event, appending frames to send to `out`.
    pub fn upgrade(
        self,
        event: Event,
        who: &Identity<'_>,
        ids: &mut MsgIds,
        out: &mut Vec<u8>,
    ) -> (DeviceState, Outcome) {
        use DeviceState as S;
        use Event as E;
        match (self, event) {
            (_, E::Dialed { now }) => (S::Connecting { started: now }, Outcome::Nothing),
            (S::Connecting { started }, E::TcpConnected { tls: true, .. }) => {
                (S::Handshaking { started }, Outcome::Nothing)
            }
            (S::Connecting { started }, E::TcpConnected { now, tls: false })
            | (S::Handshaking { started }, E::HandshakeDone { now }) => {
                let msg_id = ids.next();
                encode(out, Command::HardwareLogin, msg_id, &[who.token.as_bytes()]);
                (
                    S::LoggingIn { started, msg_id },
                    Outcome::Connected {
                        took: now.saturating_duration_since(started),
                    },
                )
            }
            (
                S::LoggingIn { started, msg_id },
                E::Response {
                    now,
                    msg_id: got,
                    status,
                },
            ) if got == msg_id => {
                if status != Status::Ok {
                    return (
                        S::Offline,
                        Outcome::Refused {
                            reason: format!("login refused: status {}", status.code()),
                        },
                    );
                }
                let info_id = ids.next();
                let beat = who.heartbeat_secs.to_string();
                encode(
                    out,
                    Command::Internal,
                    info_id,
                    &[
                        b"ver",
                        b"1.4.0",
                        b"h-beat",
                        beat.as_bytes(),
                        b"buff-in",
                        b"1024",
                        b"dev",
                        b"portcullis-loadgen",
                    ],
                );
                (
                    S::SendingInfo {
                        started,
                        msg_id: info_id,
                    },
                    Outcome::LoggedIn {
                        took: now.saturating_duration_since(started),
                    },
                )
            }
            (
                S::SendingInfo { msg_id, .. },
                E::Response {
                    now,
                    msg_id: got,
                    status,
                },
            ) if got == msg_id => {
                if status == Status::Ok {
                    (S::Online { since: now }, Outcome::Online)
                } else {
                    (
                        S::Offline,
                        Outcome::Refused {
                            reason: format!("info refused: status {}", status.code()),
                        },
                    )
                }
            }
            (S::Online { since }, E::Response { msg_id, status, .. }) => {
                (S::Online { since }, Outcome::Reply { msg_id, status })
            }
            (state, E::Frame { command }) => (state, Outcome::Unexpected { command }),
            (state, E::Response { .. }) => (
                state,
                Outcome::Unexpected {
                    command: Command::Response,
                },
            ),
            (state, E::TcpConnected { .. } | E::HandshakeDone { .. }) => (state, Outcome::Nothing),
        }
    }

    pub fn is_online(&self) -> bool {
        matches!(self, DeviceState::Online { .. })
    }

    /// A short name for failure reasons ("timeout while logging in").
    pub fn stage(&self) -> &'static str {
        match self {
            DeviceState::Offline => "offline",
            DeviceState::Connecting { .. } => "connecting",
            DeviceState::Handshaking { .. } => "tls handshake",
            DeviceState::LoggingIn { .. } => "logging in",
            DeviceState::SendingInfo { .. } => "sending info",
            DeviceState::Online { .. } => "online",
        }
    }
}

/// Appends one frame. Every body here is far below the 16-bit length limit.
pub fn encode(out: &mut Vec<u8>, command: Command, msg_id: u16, args: &[&[u8]]) {
    // Only fixed, short bodies are encoded here; an error would be a bug in this file.
    let _ = frame::encode_args(out, command, msg_id, args);
}

/// Every whole frame in `bytes` as (command, id, body), for tests of what a device sent.
#[cfg(test)]
pub(crate) fn frames(bytes: &[u8]) -> Vec<(Command, u16, Vec<u8>)> {
    use portcullis_protocol::frame::{Decoded, decode};
    let mut rest = bytes;
    let mut got = Vec::new();
    while let Ok(Decoded::Frame { frame, consumed }) = decode(rest, 65535) {
        got.push((frame.command, frame.msg_id, frame.body().to_vec()));
        rest = &rest[consumed..];
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_login_then_info_then_online() {
        let who = Identity {
            token: "0123456789abcdef0123456789abcdef",
            heartbeat_secs: 30,
        };
        let mut ids = MsgIds::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        let (s, o) =
            DeviceState::Offline.upgrade(Event::Dialed { now: t0 }, &who, &mut ids, &mut out);
        assert_eq!(o, Outcome::Nothing);
        let t1 = t0 + Duration::from_millis(2);
        let (s, o) = s.upgrade(
            Event::TcpConnected {
                now: t1,
                tls: false,
            },
            &who,
            &mut ids,
            &mut out,
        );
        assert_eq!(
            o,
            Outcome::Connected {
                took: Duration::from_millis(2)
            }
        );
        let sent = frames(&out);
        assert_eq!(
            sent,
            vec![(Command::HardwareLogin, 1, who.token.as_bytes().to_vec())]
        );
        out.clear();
        // A reply to another id is not the login's answer.
        let (s, o) = s.upgrade(
            Event::Response {
                now: t1,
                msg_id: 9,
                status: Status::Ok,
            },
            &who,
            &mut ids,
            &mut out,
        );
        assert!(matches!(o, Outcome::Unexpected { .. }));
        let t2 = t0 + Duration::from_millis(5);
        let (s, o) = s.upgrade(
            Event::Response {
                now: t2,
                msg_id: 1,
                status: Status::Ok,
            },
            &who,
            &mut ids,
            &mut out,
        );
        assert_eq!(
            o,
            Outcome::LoggedIn {
                took: Duration::from_millis(5)
            }
        );
        let sent = frames(&out);
        assert_eq!(sent[0].0, Command::Internal);
        assert!(
            sent[0].2.windows(9).any(|w| w == b"h-beat\x0030"),
            "{:?}",
            sent[0].2
        );
        let (s, o) = s.upgrade(
            Event::Response {
                now: t2,
                msg_id: 2,
                status: Status::Ok,
            },
            &who,
            &mut ids,
            &mut out,
        );
        assert_eq!(o, Outcome::Online);
        assert!(s.is_online());
    }

    #[test]
    fn a_refused_token_is_reported_with_its_status() {
        let who = Identity {
            token: "x",
            heartbeat_secs: 10,
        };
        let mut ids = MsgIds::default();
        let mut out = Vec::new();
        let now = Instant::now();
        let (s, _) = DeviceState::Offline.upgrade(Event::Dialed { now }, &who, &mut ids, &mut out);
        let (s, _) = s.upgrade(
            Event::TcpConnected { now, tls: true },
            &who,
            &mut ids,
            &mut out,
        );
        assert!(out.is_empty(), "nothing is sent before the TLS handshake");
        let (s, _) = s.upgrade(Event::HandshakeDone { now }, &who, &mut ids, &mut out);
        let (s, o) = s.upgrade(
            Event::Response {
                now,
                msg_id: 1,
                status: Status::InvalidToken,
            },
            &who,
            &mut ids,
            &mut out,
        );
        assert_eq!(s, DeviceState::Offline);
        assert_eq!(
            o,
            Outcome::Refused {
                reason: "login refused: status 9".into()
            }
        );
    }

    #[test]
    fn message_ids_skip_zero() {
        let mut ids = MsgIds(u16::MAX);
        assert_eq!(ids.next(), u16::MAX);
        assert_eq!(ids.next(), 1);
    }
}
