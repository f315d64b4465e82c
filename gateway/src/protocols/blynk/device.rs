//! The logged-in device session (docs/reference/blynk-protocol.md §7): PING → 200, INTERNAL info
//! → 200 and its heartbeat and buffer size adopted, HARDWARE writes stored without
//! acknowledgement, HARDWARE_SYNC answered from the store with the request's id, PROPERTY stored
//! and answered, a second login answered 4, and anything unknown or malformed answered 2 without
//! losing the stream. The device is never PINGed. Every frame first passes the connection's
//! message quota ([`DeviceSession::receive`]); frames over it are dropped before they can cost a
//! store call. Sans-IO: answers go into the step's outbox, and the one store call a frame may
//! need is returned for the adapter (`blynk/mod.rs`) to turn into a store request.

use super::quota::{MessageQuota, QuotaLimits, QuotaVerdict};
use crate::conn::CloseReason;
use crate::conn::close::TemplateMismatch;
use crate::protocols::Outbox;
use portcullis_protocol::body::{
    self, DeviceInfo, Hardware, Internal, PinAddr, PinKind, SyncRequest,
};
use portcullis_protocol::frame::{Frame, Payload};
use portcullis_protocol::store::{DeviceId, PinValue};
use portcullis_protocol::{Command, Status};
use std::sync::Arc;
use std::time::Duration;

/// A store operation one device frame needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreCall {
    /// Telemetry: batched per shard and loop turn, never answered to the device.
    WritePin {
        pin: PinAddr,
        value: Vec<u8>,
    },
    /// Answered with HARDWARE frames carrying `msg_id`.
    Sync {
        msg_id: u16,
        pins: Option<Vec<PinAddr>>,
        filter: SyncFilter,
    },
    /// Answered with a RESPONSE once stored.
    WriteProperty {
        msg_id: u16,
        pin: PinAddr,
        property: String,
        value: Vec<u8>,
    },
    SetInfo(DeviceInfo),
}

/// Session limits taken from the configuration.
#[derive(Debug, Clone)]
pub struct SessionLimits {
    /// Heartbeat assumed until the device's info message says otherwise.
    pub default_heartbeat_secs: u16,
    /// A device silent for `ceil(factor × h-beat)` seconds is closed.
    pub heartbeat_factor: f64,
    /// Largest frame sent to a device that announced no `buff-in`.
    pub default_buff_in: u16,
    /// Largest heartbeat a device may announce: a device announcing more is held to this, so one
    /// silently gone behind a NAT does not keep its slot for up to `65535 × factor` seconds.
    pub max_heartbeat_secs: u16,
    /// Frames a logged-in device may send (docs/reference/blynk-protocol.md §1.10).
    pub quota: QuotaLimits,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            default_heartbeat_secs: 10,
            heartbeat_factor: 2.3,
            default_buff_in: 255,
            max_heartbeat_secs: 3600,
            quota: QuotaLimits::default(),
        }
    }
}

/// Which stored values a sync reply should carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFilter {
    Everything,
    Kind(PinKind),
    /// Exactly the pins asked for (the store request names them).
    Named,
}

/// Smallest `buff-in` we honour: anything smaller could not carry a single pin write.
const MIN_BUFF_IN: u16 = 32;

#[derive(Debug, Clone)]
pub struct DeviceSession {
    pub device: DeviceId,
    /// The template the store holds for the device (`DeviceAuth::template`): an info message
    /// announcing another one closes the connection. Shared text rather than a `TemplateId`
    /// (a `String`), so an idle session holds 16 bytes and one small allocation for it.
    template: Arc<str>,
    /// Heartbeat from the info message, 0 until it arrives.
    heartbeat_secs: u16,
    /// Largest frame the device accepts, 0 until announced.
    buff_in: u16,
    quota: MessageQuota,
}

impl DeviceSession {
    /// The session of `device`, admitted for `template` (its template's id, from the store).
    pub fn new(device: DeviceId, template: Arc<str>) -> Self {
        Self {
            device,
            template,
            heartbeat_secs: 0,
            buff_in: 0,
            quota: MessageQuota::default(),
        }
    }

    /// How long the device may stay silent before it is closed. An announced heartbeat is held
    /// to `max_heartbeat_secs` here rather than when it arrives, so a lowered maximum (a live
    /// reload) applies to the devices already connected.
    pub fn heartbeat_timeout(&self, limits: &SessionLimits) -> Duration {
        let beat = if self.heartbeat_secs > 0 {
            self.heartbeat_secs.min(limits.max_heartbeat_secs)
        } else {
            limits.default_heartbeat_secs
        };
        Duration::from_secs((f64::from(beat) * limits.heartbeat_factor).ceil() as u64)
    }

    /// Largest frame (header included) we may send to this device.
    pub fn max_outbound_frame(&self, limits: &SessionLimits) -> usize {
        usize::from(if self.buff_in > 0 {
            self.buff_in
        } else {
            limits.default_buff_in
        })
    }

    /// Handles one frame received at `now_ms` (the caller's clock, milliseconds): counts it
    /// against the quota, and processes it only if it is within (`Allow`); for `DropAndAnswer`
    /// the QUOTA_LIMIT answer is in the outbox. Every frame counts, PING and replies included,
    /// as in the reference server.
    pub fn receive(
        &mut self,
        frame: &Frame<'_>,
        now_ms: u64,
        limits: &SessionLimits,
        out: &mut Outbox,
    ) -> (QuotaVerdict, Option<StoreCall>) {
        let verdict = self.quota.check(limits.quota, now_ms);
        let call = match verdict {
            QuotaVerdict::Allow => self.on_frame(frame, out),
            QuotaVerdict::DropAndAnswer => {
                out.response(frame.msg_id, Status::QuotaLimit);
                None
            }
            QuotaVerdict::Drop => None,
        };
        (verdict, call)
    }

    /// Handles one frame from the device, whatever the quota says (see [`Self::receive`]);
    /// returns the store call it needs, if any.
    pub fn on_frame(&mut self, frame: &Frame<'_>, out: &mut Outbox) -> Option<StoreCall> {
        let id = frame.msg_id;
        let body = match frame.payload {
            // Replies to what we sent (we send no requests yet): nothing to do.
            Payload::Status(_) => return None,
            Payload::Body(body) => body,
        };
        let refused = |out: &mut Outbox, status| {
            out.response(id, status);
            None
        };
        match frame.command {
            Command::Ping => refused(out, Status::Ok),
            Command::Login | Command::HardwareLogin => refused(out, Status::AlreadyRegistered),
            Command::Internal => self.on_internal(id, body, out),
            Command::Hardware => match body::parse_hardware(body) {
                Ok(Hardware::Write { pin, value }) => Some(StoreCall::WritePin {
                    pin,
                    value: value.to_vec(),
                }),
                Ok(Hardware::Read { pin }) => Some(StoreCall::Sync {
                    msg_id: id,
                    pins: Some(vec![pin]),
                    filter: SyncFilter::Named,
                }),
                Ok(Hardware::PinMode) => None,
                Err(_) => refused(out, Status::IllegalCommand),
            },
            Command::HardwareSync => match body::parse_sync(body) {
                Ok(SyncRequest::All) => Some(StoreCall::Sync {
                    msg_id: id,
                    pins: None,
                    filter: SyncFilter::Everything,
                }),
                Ok(SyncRequest::Pins { kind, pins }) if pins.is_empty() => Some(StoreCall::Sync {
                    msg_id: id,
                    pins: None,
                    filter: SyncFilter::Kind(kind),
                }),
                Ok(SyncRequest::Pins { kind, pins }) => Some(StoreCall::Sync {
                    msg_id: id,
                    pins: Some(pins.into_iter().map(|p| PinAddr::new(kind, p)).collect()),
                    filter: SyncFilter::Named,
                }),
                Err(_) => refused(out, Status::IllegalCommand),
            },
            Command::Property => match body::parse_property(body) {
                Ok(update) => Some(StoreCall::WriteProperty {
                    msg_id: id,
                    pin: update.pin,
                    property: String::from_utf8_lossy(update.property).into_owned(),
                    value: update.value.to_vec(),
                }),
                Err(_) => refused(out, Status::IllegalCommandBody),
            },
            _ => refused(out, Status::IllegalCommand),
        }
    }

    /// The template the device was admitted for.
    pub fn template(&self) -> &str {
        &self.template
    }

    fn on_internal(&mut self, id: u16, body: &[u8], out: &mut Outbox) -> Option<StoreCall> {
        match body::parse_internal(body) {
            Internal::Info(info) => {
                // A device is admitted only as its own template's kind (an info without `tmpl`,
                // or with an empty one, announces none): otherwise it is refused, unanswered,
                // and its info is not stored.
                if let Some(announced) = info.template.as_deref().filter(|t| !t.is_empty())
                    && announced != &*self.template
                {
                    out.close(CloseReason::TemplateMismatch(Box::new(
                        TemplateMismatch::new(announced, &self.template),
                    )));
                    return None;
                }
                if let Some(beat) = info.heartbeat_secs.filter(|&b| b > 0) {
                    self.heartbeat_secs = beat;
                }
                if let Some(buff_in) = info.buff_in {
                    self.buff_in = buff_in.max(MIN_BUFF_IN);
                }
                // blynklib blocks until this 200 arrives, so it comes first and alone.
                out.response(id, Status::Ok);
                Some(StoreCall::SetInfo(info))
            }
            Internal::Other(_) => {
                out.response(id, Status::IllegalCommand);
                None
            }
        }
    }

    /// Answers a sync with one HARDWARE frame per stored value (same id as the request). Values that
    /// would not fit the device's buffer are skipped and counted.
    pub fn on_sync_reply(
        &self,
        msg_id: u16,
        filter: SyncFilter,
        values: &[PinValue],
        limits: &SessionLimits,
        out: &mut Outbox,
    ) -> usize {
        let max = self.max_outbound_frame(limits);
        let mut skipped = 0;
        for value in values {
            if let SyncFilter::Kind(kind) = filter
                && value.pin.kind != kind
            {
                continue;
            }
            let op = value.pin.write_op();
            let pin = value.pin.pin.to_string();
            if out
                .frame_args(
                    Command::Hardware,
                    msg_id,
                    &[&op, pin.as_bytes(), &value.value],
                    max,
                )
                .is_err()
            {
                skipped += 1;
            }
        }
        skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_protocol::frame::{Decoded, decode};

    /// A device session admitted for template `TMPL1`.
    fn session(device: DeviceId) -> DeviceSession {
        DeviceSession::new(device, Arc::from("TMPL1"))
    }

    /// The answers of one frame, and the store calls it needs (at most one).
    struct Stepped {
        out: Outbox,
        store: Vec<StoreCall>,
    }

    impl std::ops::Deref for Stepped {
        type Target = Outbox;
        fn deref(&self) -> &Outbox {
            &self.out
        }
    }

    fn step(session: &mut DeviceSession, command: Command, id: u16, body: &[u8]) -> Stepped {
        let mut out = Outbox::default();
        let call = session.on_frame(
            &Frame {
                command,
                msg_id: id,
                payload: Payload::Body(body),
            },
            &mut out,
        );
        Stepped {
            out,
            store: call.into_iter().collect(),
        }
    }

    /// Feeds one frame through the quota, collecting its store call into `store`.
    fn receive(
        s: &mut DeviceSession,
        frame: &Frame<'_>,
        now_ms: u64,
        limits: &SessionLimits,
        out: &mut Outbox,
        store: &mut Vec<StoreCall>,
    ) -> QuotaVerdict {
        let (verdict, call) = s.receive(frame, now_ms, limits, out);
        store.extend(call);
        verdict
    }

    fn frames(out: &Outbox) -> Vec<(Command, u16, Payload<'_>)> {
        out.frames()
            .map(|bytes| match decode(bytes, 65535) {
                Ok(Decoded::Frame { frame, consumed }) if consumed == bytes.len() => {
                    (frame.command, frame.msg_id, frame.payload)
                }
                other => panic!("outbox holds a bad frame: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn ping_info_and_second_login() {
        let mut s = session(1);
        let out = step(&mut s, Command::Ping, 5, b"");
        assert_eq!(
            frames(&out),
            vec![(Command::Response, 5, Payload::Status(Status::Ok))]
        );
        let out = step(
            &mut s,
            Command::HardwareLogin,
            6,
            b"0123456789abcdef0123456789abcdef",
        );
        assert_eq!(
            frames(&out),
            vec![(
                Command::Response,
                6,
                Payload::Status(Status::AlreadyRegistered)
            )]
        );
        let limits = SessionLimits::default();
        assert_eq!(s.heartbeat_timeout(&limits), Duration::from_secs(23));
        let out = step(
            &mut s,
            Command::Internal,
            2,
            b"ver\x000.2.6\x00buff-in\x001024\x00h-beat\x0045\x00dev\x00python",
        );
        assert_eq!(
            frames(&out),
            vec![(Command::Response, 2, Payload::Status(Status::Ok))]
        );
        assert!(matches!(out.store[0], StoreCall::SetInfo(_)));
        assert_eq!(s.heartbeat_timeout(&limits), Duration::from_secs(104));
        assert_eq!(s.max_outbound_frame(&limits), 1024);
    }

    #[test]
    fn hardware_writes_are_stored_silently_and_errors_answered() {
        let mut s = session(1);
        let out = step(&mut s, Command::Hardware, 3, b"vw\x005\x0042");
        assert!(!out.has_frames());
        assert_eq!(
            out.store,
            vec![StoreCall::WritePin {
                pin: PinAddr::new(PinKind::Virtual, 5),
                value: b"42".to_vec()
            }]
        );
        let out = step(&mut s, Command::Hardware, 4, b"vw\x00999\x001");
        assert_eq!(
            frames(&out),
            vec![(
                Command::Response,
                4,
                Payload::Status(Status::IllegalCommand)
            )]
        );
        let out = step(&mut s, Command::Unknown(99), 0, b"whatever");
        // Id 0 is never sent back.
        assert_eq!(
            frames(&out),
            vec![(
                Command::Response,
                1,
                Payload::Status(Status::IllegalCommand)
            )]
        );
    }

    #[test]
    fn sync_replays_values_with_the_request_id_within_buff_in() {
        let mut s = session(1);
        let out = step(&mut s, Command::HardwareSync, 9, b"vr\x005");
        let StoreCall::Sync {
            msg_id: 9, filter, ..
        } = out.store[0].clone()
        else {
            panic!("no sync call")
        };
        let values = vec![
            PinValue {
                pin: PinAddr::new(PinKind::Virtual, 5),
                value: b"42".to_vec(),
                at_ms: 1,
            },
            PinValue {
                pin: PinAddr::new(PinKind::Virtual, 6),
                value: vec![b'x'; 400],
                at_ms: 1,
            },
        ];
        let mut out = Outbox::default();
        let skipped = s.on_sync_reply(9, filter, &values, &SessionLimits::default(), &mut out);
        assert_eq!(
            skipped, 1,
            "a 400-byte value does not fit the default 255-byte buffer"
        );
        assert_eq!(
            frames(&out),
            vec![(Command::Hardware, 9, Payload::Body(b"vw\x005\x0042"))]
        );
    }

    #[test]
    fn property_is_stored_and_bad_property_answered() {
        let mut s = session(1);
        let out = step(&mut s, Command::Property, 7, b"1\x00label\x00Temp");
        assert!(
            matches!(&out.store[0], StoreCall::WriteProperty { msg_id: 7, property, .. } if property == "label")
        );
        let out = step(&mut s, Command::Property, 8, b"1");
        assert_eq!(
            frames(&out),
            vec![(
                Command::Response,
                8,
                Payload::Status(Status::IllegalCommandBody)
            )]
        );
    }

    #[test]
    fn an_announced_heartbeat_is_held_to_the_maximum() {
        let limits = SessionLimits {
            max_heartbeat_secs: 3600,
            ..SessionLimits::default()
        };
        let mut s = session(1);
        step(&mut s, Command::Internal, 1, b"h-beat\x0065535");
        // 3600 × 2.3, not the ~42 hours 65535 would give.
        assert_eq!(s.heartbeat_timeout(&limits), Duration::from_secs(8280));
        // Below the maximum the announcement stands.
        step(&mut s, Command::Internal, 2, b"h-beat\x0045");
        assert_eq!(s.heartbeat_timeout(&limits), Duration::from_secs(104));
        // A maximum lowered later (live reload) applies to a device already connected.
        let lowered = SessionLimits {
            max_heartbeat_secs: 20,
            ..limits
        };
        assert_eq!(s.heartbeat_timeout(&lowered), Duration::from_secs(46));
    }

    #[test]
    fn an_idle_device_session_stays_small() {
        // Device id 8, template 16 (`Arc<str>`), heartbeat and buffer 4, quota 12: 40 bytes.
        // With the template the Blynk session went from 32 to 48 bytes and `Conn` from 152 to
        // 160 (plus the template's one allocation of 16 + its length bytes); keep it there.
        assert!(std::mem::size_of::<DeviceSession>() <= 40);
        assert!(std::mem::size_of::<super::super::BlynkSession>() <= 48);
    }

    #[test]
    fn a_sync_over_the_quota_costs_no_store_call() {
        let limits = SessionLimits {
            quota: QuotaLimits {
                per_sec: 10,
                burst: 2,
            },
            ..SessionLimits::default()
        };
        let now = 1_790_000_000_000;
        let mut s = session(1);
        let sync = |id| Frame {
            command: Command::HardwareSync,
            msg_id: id,
            payload: Payload::Body(b"vr\x005"),
        };
        let mut out = Outbox::default();
        let mut store = Vec::new();
        for id in 1..=2 {
            assert_eq!(
                receive(&mut s, &sync(id), now, &limits, &mut out, &mut store),
                QuotaVerdict::Allow
            );
        }
        assert_eq!(store.len(), 2);
        // The third is dropped: no store call, QUOTA_LIMIT with its id.
        let mut out = Outbox::default();
        let mut store = Vec::new();
        assert_eq!(
            receive(&mut s, &sync(3), now, &limits, &mut out, &mut store),
            QuotaVerdict::DropAndAnswer
        );
        assert!(store.is_empty());
        assert_eq!(
            frames(&out),
            vec![(Command::Response, 3, Payload::Status(Status::QuotaLimit))]
        );
        // The next within the minute is dropped silently, a PING too.
        let mut out = Outbox::default();
        let mut store = Vec::new();
        assert_eq!(
            receive(&mut s, &sync(4), now + 50, &limits, &mut out, &mut store),
            QuotaVerdict::Drop
        );
        let ping = Frame {
            command: Command::Ping,
            msg_id: 5,
            payload: Payload::Body(b""),
        };
        assert_eq!(
            receive(&mut s, &ping, now + 50, &limits, &mut out, &mut store),
            QuotaVerdict::Drop
        );
        assert!(store.is_empty() && !out.has_frames());
        // 100 ms refills one message at 10 a second.
        assert_eq!(
            receive(&mut s, &sync(6), now + 150, &limits, &mut out, &mut store),
            QuotaVerdict::Allow
        );
        assert!(matches!(store[..], [StoreCall::Sync { msg_id: 6, .. }]));
    }
}
