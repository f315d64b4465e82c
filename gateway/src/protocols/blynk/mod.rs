//! The Blynk device protocol (docs/reference/blynk-protocol.md): binary frames, a login first,
//! then the logged-in device session. This file is the adapter the reactor calls: the device
//! connection's own state machine ([`BlynkSession`]: `Login → Authenticating → Device`), the
//! login policy (the throttle, the security log, the counters), the store requests a device's
//! frames turn into and the replies coming back, and presence. The sans-IO pieces it drives are
//! [`login`] (is the first frame a plausible login), [`device`] (a logged-in device's frames) and
//! [`quota`] (the per-connection message budget).

pub mod device;
pub mod login;
pub mod quota;
pub mod template_names;

use super::{Continuation, InputLimit, Progress, ProtocolLimits, Step, StoreFailure, StoreReply};
use super::{Services, StoreRequest};
use crate::conn::CloseReason;
use crate::guard::login_throttle::LoginGate;
use crate::guard::security_events::{ConnectionEvent, SecurityEvents};
use crate::metrics::shard::LoginResult;
use device::{DeviceSession, StoreCall, SyncFilter};
use login::{LoginDecision, decide_login};
use portcullis_protocol::Status;
use portcullis_protocol::frame::{self, Decoded, Frame};
use portcullis_protocol::store::{DeviceId, PinWrite, Presence, Request, Response, StoreError};
use quota::QuotaVerdict;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A Blynk device connection's state machine, advanced only through [`BlynkSession::upgrade`].
#[derive(Debug)]
pub enum BlynkSession {
    /// The first frame must be a login.
    Login,
    /// The token went to the store; frames that arrive meanwhile wait in the connection's input.
    Authenticating { msg_id: u16 },
    /// Logged in.
    Device(DeviceSession),
}

/// What moves a device connection on.
#[derive(Debug)]
pub enum BlynkTransition {
    LoginSent { msg_id: u16 },
    Authenticated(DeviceSession),
}

/// Continuations of a device's store requests: what to answer the device when the reply comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// The token lookup of a login.
    Login { msg_id: u16 },
    /// A HARDWARE_SYNC (or a read), answered with HARDWARE frames carrying `msg_id`.
    Sync { msg_id: u16, filter: SyncFilter },
    /// A PROPERTY write, answered with a RESPONSE once stored.
    Property { msg_id: u16 },
}

impl Default for BlynkSession {
    fn default() -> Self {
        Self::new()
    }
}

impl BlynkSession {
    pub fn new() -> Self {
        BlynkSession::Login
    }

    /// Consumes the state and returns the next one; a transition the state does not allow is a
    /// bug of ours, reported as `Err` so the caller closes the connection.
    pub fn upgrade(self, transition: BlynkTransition) -> Result<BlynkSession, CloseReason> {
        match (self, transition) {
            (BlynkSession::Login, BlynkTransition::LoginSent { msg_id }) => {
                Ok(BlynkSession::Authenticating { msg_id })
            }
            (BlynkSession::Authenticating { .. }, BlynkTransition::Authenticated(session)) => {
                Ok(BlynkSession::Device(session))
            }
            (state, transition) => Err(CloseReason::Internal(format!(
                "device connection: {transition:?} is not valid in {state:?}"
            ))),
        }
    }

    fn advance(&mut self, transition: BlynkTransition, step: &mut Step<'_>) {
        let current = std::mem::replace(self, BlynkSession::Login);
        match current.upgrade(transition) {
            Ok(next) => *self = next,
            Err(reason) => step.out.close(reason),
        }
    }

    pub fn is_logged_in(&self) -> bool {
        matches!(self, BlynkSession::Device(_))
    }

    /// The logged-in device.
    pub fn device(&self) -> Option<DeviceId> {
        match self {
            BlynkSession::Device(session) => Some(session.device),
            _ => None,
        }
    }

    pub fn input_limit(&self, limits: &ProtocolLimits) -> InputLimit {
        match self {
            BlynkSession::Device(_) => InputLimit::Message(frame::HEADER_LEN + limits.max_body),
            _ => InputLimit::PreAuth(limits.preauth_buffer_bytes),
        }
    }

    pub fn on_deadline(&self, limits: &ProtocolLimits) -> CloseReason {
        match self {
            BlynkSession::Device(session) => CloseReason::HeartbeatTimeout {
                secs: session.heartbeat_timeout(&limits.device).as_secs(),
            },
            _ => CloseReason::LoginTimeout,
        }
    }

    /// Decodes frames from `input`: the login, then a logged-in device's frames.
    pub fn receive(&mut self, input: &[u8], step: &mut Step<'_>) -> Progress {
        let mut pos = 0;
        let mut active = false;
        let mut paused = false;
        while step.out.close.is_none() {
            let rest = &input[pos..];
            match self {
                BlynkSession::Login => {
                    match frame::decode(rest, step.services.limits.max_body_before_login) {
                        Ok(Decoded::NeedMore { .. }) => break,
                        Err(e) => step.out.close(CloseReason::Malformed(e.to_string())),
                        Ok(Decoded::Frame { frame, consumed }) => {
                            pos += consumed;
                            self.on_login_frame(&frame, step);
                        }
                    }
                }
                // Frames wait until the store has answered the login.
                BlynkSession::Authenticating { .. } => break,
                BlynkSession::Device(session) => {
                    match frame::decode(rest, step.services.limits.max_body) {
                        Ok(Decoded::NeedMore { .. }) => break,
                        Err(e) => step.out.close(CloseReason::Malformed(e.to_string())),
                        Ok(Decoded::Frame { frame, consumed }) => {
                            pos += consumed;
                            active = true;
                            on_device_frame(session, &frame, step);
                            if step.out.pending_bytes() > step.services.limits.outbound_queue_bytes
                            {
                                paused = true;
                                break;
                            }
                        }
                    }
                }
            }
        }
        if active && let BlynkSession::Device(session) = self {
            step.out.deadline = Some(session.heartbeat_timeout(&step.services.limits.device));
        }
        if step.out.close.is_some() {
            pos = input.len();
        }
        Progress { used: pos, paused }
    }

    /// The first frame: a login is checked against the throttle and sent to the store; anything
    /// else closes.
    fn on_login_frame(&mut self, frame: &Frame<'_>, step: &mut Step<'_>) {
        let peer = step.conn.peer;
        let services = &mut *step.services;
        match decide_login(frame) {
            LoginDecision::Authenticate { token_hash, msg_id } => {
                let gate = services.guards.throttle().check(peer.ip(), services.now);
                if gate != LoginGate::Open {
                    services.metrics.login(LoginResult::Throttled);
                    let reason = throttled(
                        &mut services.security,
                        services.now,
                        peer,
                        gate,
                        "login refused without checking the token",
                    );
                    step.out.response(msg_id, Status::QuotaLimit);
                    step.out.close(reason);
                    return;
                }
                self.advance(BlynkTransition::LoginSent { msg_id }, step);
                step.out.store.push(StoreRequest::Call {
                    request: Request::Authenticate { token_hash },
                    then: Continuation::Blynk(Pending::Login { msg_id }),
                });
            }
            LoginDecision::RefuseToken { msg_id, reason } => {
                let gate = services
                    .guards
                    .throttle()
                    .record_failure(peer.ip(), services.now);
                services.security.record(
                    services.now,
                    &ConnectionEvent::MalformedToken {
                        peer,
                        reason: format!("{reason}; next login from this address: {}", gate.name()),
                    },
                );
                services.metrics.login(LoginResult::MalformedToken);
                step.out.response(msg_id, Status::InvalidToken);
                step.out.close(CloseReason::InvalidToken);
            }
            LoginDecision::NotALogin { command } => {
                let what = format!("command {command} before login");
                step.out.close(CloseReason::NotALogin(what));
            }
        }
    }

    /// A store reply to one of this connection's requests.
    pub fn on_store_reply(&mut self, pending: Pending, reply: StoreReply, step: &mut Step<'_>) {
        match (pending, reply) {
            (Pending::Login { msg_id }, Ok(Response::Authenticated(Some(auth)))) => {
                let template = step.services.template_names.intern(auth.template.as_str());
                self.logged_in(auth.device, template, msg_id, step)
            }
            (Pending::Login { msg_id }, Ok(Response::Authenticated(None))) => {
                let services = &mut *step.services;
                let peer = step.conn.peer;
                let gate = services
                    .guards
                    .throttle()
                    .record_failure(peer.ip(), services.now);
                services.security.record(
                    services.now,
                    &ConnectionEvent::InvalidToken {
                        peer,
                        next: gate.name(),
                    },
                );
                services.metrics.login(LoginResult::InvalidToken);
                step.out.response(msg_id, Status::InvalidToken);
                step.out.close(CloseReason::InvalidToken);
            }
            // The shard's store queue was full: answered at once, counted by the shard.
            (Pending::Login { msg_id }, Err(StoreFailure::QueueFull)) => {
                step.out.response(msg_id, Status::ServerError);
                step.out.close(CloseReason::StoreUnavailable);
            }
            (Pending::Login { msg_id }, other) => {
                tracing::error!(result = ?other, "store failed a login lookup");
                step.services.metrics.login(LoginResult::StoreError);
                step.out.response(msg_id, Status::ServerError);
                step.out.close(CloseReason::StoreUnavailable);
            }
            (Pending::Sync { msg_id, filter }, Ok(Response::Pins(values))) => {
                if let BlynkSession::Device(session) = self {
                    let skipped = session.on_sync_reply(
                        msg_id,
                        filter,
                        &values,
                        &step.services.limits.device,
                        step.out,
                    );
                    if skipped > 0 {
                        tracing::debug!(
                            skipped,
                            "sync values larger than the device buffer were skipped"
                        );
                    }
                }
            }
            (Pending::Property { msg_id }, Ok(Response::Done)) => {
                step.out.response(msg_id, Status::Ok)
            }
            (
                Pending::Sync { msg_id, .. } | Pending::Property { msg_id },
                Err(StoreFailure::Store(StoreError::Invalid(_))),
            ) => step.out.response(msg_id, Status::IllegalCommandBody),
            (Pending::Sync { msg_id, .. } | Pending::Property { msg_id }, _) => {
                step.out.response(msg_id, Status::ServerError)
            }
        }
    }

    /// The store knows the token: the device session starts, and the device is online.
    fn logged_in(
        &mut self,
        device: DeviceId,
        template: Arc<str>,
        msg_id: u16,
        step: &mut Step<'_>,
    ) {
        let session = DeviceSession::new(device, template);
        let timeout = session.heartbeat_timeout(&step.services.limits.device);
        self.advance(BlynkTransition::Authenticated(session), step);
        if !self.is_logged_in() {
            return;
        }
        let services = &mut *step.services;
        step.out.authenticated = true;
        step.out.deadline = Some(timeout);
        services.metrics.login(LoginResult::Ok);
        tracing::debug!(shard = services.shard, peer = %step.conn.peer, device, "device logged in");
        step.out.response(msg_id, Status::Ok);
        let presence = Presence::Online {
            addr: step.conn.peer.to_string(),
            session: services.session_tag(step.conn.id),
        };
        record_presence(device, presence, services, &mut step.out.store);
    }

    /// The connection closes: a logged-in device goes offline.
    pub fn on_close(&mut self, step: &mut Step<'_>) {
        if let Some(device) = self.device() {
            let session = step.services.session_tag(step.conn.id);
            record_presence(
                device,
                Presence::Offline { session },
                step.services,
                &mut step.out.store,
            );
        }
    }
}

/// One frame of a logged-in device, within its quota; its store call, if any, is queued.
fn on_device_frame(session: &mut DeviceSession, frame: &Frame<'_>, step: &mut Step<'_>) {
    let services = &mut *step.services;
    // Received counts every frame, dropped ones too: it is what devices send.
    services.metrics.message_in(frame.command.code());
    let (verdict, call) =
        session.receive(frame, services.now_ms, &services.limits.device, step.out);
    if verdict != QuotaVerdict::Allow {
        over_quota(services, session.device, step.conn.peer, verdict);
    }
    if let Some(CloseReason::TemplateMismatch(mismatch)) = &step.out.close {
        services.metrics.template_mismatches.add(1);
        services.security.record(
            services.now,
            &ConnectionEvent::TemplateMismatch {
                peer: step.conn.peer,
                device: session.device,
                announced: mismatch.announced.clone(),
                expected: mismatch.expected.clone(),
            },
        );
    }
    let Some(call) = call else { return };
    let device = session.device;
    let at_ms = services.now_ms;
    let request = match call {
        StoreCall::WritePin { pin, value } => {
            services.bus.publish_pin(device, pin, &value, at_ms);
            StoreRequest::Telemetry(PinWrite {
                device,
                pin,
                value,
                at_ms,
            })
        }
        StoreCall::Sync {
            msg_id,
            pins,
            filter,
        } => StoreRequest::Call {
            request: Request::ReadPins { device, pins },
            then: Continuation::Blynk(Pending::Sync { msg_id, filter }),
        },
        StoreCall::WriteProperty {
            msg_id,
            pin,
            property,
            value,
        } => StoreRequest::Call {
            request: Request::WriteProperty {
                device,
                pin,
                property,
                value,
                at_ms,
            },
            then: Continuation::Blynk(Pending::Property { msg_id }),
        },
        StoreCall::SetInfo(info) => StoreRequest::BestEffort(Request::SetInfo {
            device,
            info,
            at_ms,
        }),
    };
    step.out.store.push(request);
}

/// A presence change: stored (never refused) and told to the apps watching the device.
fn record_presence(
    device: DeviceId,
    presence: Presence,
    services: &mut Services,
    store: &mut Vec<StoreRequest>,
) {
    services
        .bus
        .publish_presence(device, matches!(presence, Presence::Online { .. }));
    store.push(StoreRequest::Record(Request::SetPresence {
        device,
        presence,
        at_ms: services.now_ms,
    }));
}

/// Counts a frame dropped for the message quota; warns on the first drop of the shard and then
/// at powers of two, so a flood is visible in the log without flooding it.
fn over_quota(services: &Services, device: DeviceId, peer: SocketAddr, verdict: QuotaVerdict) {
    if let Some(dropped) = services.metrics.frames_over_quota.add_sampled(1) {
        tracing::warn!(
            shard = services.shard,
            device,
            %peer,
            dropped,
            answered = verdict == QuotaVerdict::DropAndAnswer,
            "device over its message quota; dropping its frames"
        );
    }
}

/// Records a login refused by the throttle in the security log and names the close reason.
fn throttled(
    log: &mut SecurityEvents,
    now: Instant,
    peer: SocketAddr,
    gate: LoginGate,
    what: &'static str,
) -> CloseReason {
    let (retry_in, failures) = match gate {
        LoginGate::Open => (Duration::ZERO, 0),
        LoginGate::BackingOff { retry_in, failures } => (retry_in, failures),
        LoginGate::Blocked {
            remaining,
            failures,
        } => (remaining, failures),
    };
    let retry_in_ms = retry_in.as_millis() as u64;
    log.record(
        now,
        &ConnectionEvent::LoginThrottled {
            peer,
            reason: format!(
                "{what}: {} after {failures} failures, retry in {retry_in_ms} ms",
                gate.name()
            ),
        },
    );
    CloseReason::LoginThrottled {
        gate: gate.name(),
        retry_in_ms,
    }
}

#[cfg(test)]
mod tests;
