//! A connection's input: reading within a per-wake budget, TLS records through the connection's
//! session, and the stage machine over the bytes (sniff, login, device frames), whose decisions
//! (frames out, store calls, closing) are carried out here. Answers go out whenever a queue's
//! worth has piled up, so a peer that pipelines and never reads is caught early.

use super::*;
use crate::session::AppSession;
use crate::session::QuotaVerdict;
use crate::session::http::{self, HttpHead};
use portcullis_protocol::store::DeviceId;
use std::net::SocketAddr;

/// How far one read pass goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadDepth {
    /// Stop after a read shorter than the buffer: the receive queue was empty at that moment and
    /// any later arrival raises a new edge, so the read that would only say `WouldBlock` is
    /// skipped (one syscall of the two per request at small request sizes).
    UntilShortRead,
    /// Read until `WouldBlock` or EOF: the event also reported the peer's FIN or an error, which
    /// raises no further edge, or the connection is being resumed from the backlog.
    UntilWouldBlock,
}

impl ReadDepth {
    pub(super) fn for_event(event: &mio::event::Event) -> Option<Self> {
        if !event.is_readable() {
            None
        } else if event.is_read_closed() || event.is_error() {
            Some(Self::UntilWouldBlock)
        } else {
            Some(Self::UntilShortRead)
        }
    }
}

impl Shard {
    pub(super) fn conn_event(&mut self, key: usize, read: Option<ReadDepth>, writable: bool) {
        if !self.conns.contains(key) {
            return;
        }
        if writable {
            let conn = &mut self.conns[key];
            let flushed = tracked(&mut self.queued_total, conn, Conn::flush);
            match flushed {
                Flush::Failed(e) => return self.finalize(key, Some(CloseReason::Io(e))),
                Flush::Done if matches!(conn.stage, Stage::Closing(_)) => {
                    return self.finalize(key, None);
                }
                _ => {}
            }
        }
        if let Some(depth) = read {
            self.read(key, depth);
        }
    }

    /// Reads until the socket is drained or the connection's budget for this wake-up is spent.
    pub(super) fn read(&mut self, key: usize, depth: ReadDepth) {
        let mut scratch = std::mem::take(&mut self.scratch);
        for budget in (0..READ_BUDGET).rev() {
            let Some(conn) = self.conns.get_mut(key) else {
                break;
            };
            if matches!(conn.stage, Stage::Closing(_)) {
                break;
            }
            match conn.read_plain(&mut scratch) {
                ReadOutcome::Data(n) => {
                    if conn.tls.is_some() {
                        self.on_ciphertext(key, &mut scratch[..n]);
                    } else {
                        self.on_bytes(key, &scratch[..n]);
                    }
                    if depth == ReadDepth::UntilShortRead && n < scratch.len() {
                        break;
                    }
                }
                ReadOutcome::WouldBlock => break,
                ReadOutcome::Eof => {
                    self.close(key, CloseReason::PeerClosed);
                    break;
                }
                ReadOutcome::Failed(e) => {
                    self.close(key, CloseReason::Io(e));
                    break;
                }
            }
            if budget == 0 {
                self.backlog.push(key);
            }
        }
        self.scratch = scratch;
    }

    /// Runs received TLS records through the connection's session: handshake replies go out at
    /// once, decrypted bytes go to the stage machine.
    pub(super) fn on_ciphertext(&mut self, key: usize, data: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(tls) = conn.tls.as_mut() else {
            return;
        };
        let mut plaintext = std::mem::take(&mut self.plaintext);
        plaintext.clear();
        self.ciphertext.clear();
        let received = tls.receive(data, &mut plaintext, &mut self.ciphertext);
        let handshake_done = received.as_ref().is_ok_and(|r| r.handshake_done);
        let version = tls.protocol_version();
        // Whatever rustls produced (handshake records, or the fatal alert after an error) must
        // reach the peer before anything else happens to the connection.
        let sent = tracked(&mut self.queued_total, conn, |c| {
            c.send_bytes(&self.ciphertext)
        });
        match received {
            Err(e) => {
                let refused_handshake = matches!(conn.stage, Stage::TlsHandshake);
                if refused_handshake {
                    self.pre_login_log.record(
                        self.now,
                        &ConnectionEvent::TlsRefused {
                            peer: conn.peer,
                            reason: e.to_string(),
                        },
                    );
                    self.stats.tls_refused.fetch_add(1, Ordering::Relaxed);
                    self.metrics.tls_handshake(TlsVersion::of(version), false);
                } else if !matches!(e, TlsError::Internal(_)) {
                    self.pre_login_log.record(
                        self.now,
                        &ConnectionEvent::TlsBroken {
                            peer: conn.peer,
                            reason: e.to_string(),
                        },
                    );
                }
                self.close(key, CloseReason::Tls(e.to_string()));
            }
            Ok(received) => {
                if handshake_done {
                    tracing::debug!(peer = %conn.peer, ?version, "TLS handshake done");
                    self.metrics.tls_handshake(TlsVersion::of(version), true);
                    advance(&mut conn.stage, Transition::HandshakeDone);
                }
                if let Flush::Failed(e) = sent {
                    self.close(key, CloseReason::Io(e));
                } else {
                    if !plaintext.is_empty() {
                        self.on_bytes(key, &plaintext);
                    }
                    if received.peer_closed {
                        self.close(key, CloseReason::PeerClosed);
                    }
                }
            }
        }
        self.plaintext = plaintext;
    }

    /// Feeds received bytes to the connection's stage; keeps any incomplete tail.
    pub(super) fn on_bytes(&mut self, key: usize, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        self.metrics.bytes_in(transport(conn.port), data.len());
        let mut held = std::mem::take(&mut conn.inbuf);
        if held.is_empty() {
            let used = self.process(key, data);
            held.extend_from_slice(&data[used..]);
        } else {
            held.extend_from_slice(data);
            let used = self.process(key, &held);
            held.drain(..used);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(conn.stage, Stage::Closing(_)) {
            return;
        }
        let limit = if conn.stage.is_logged_in() {
            frame::HEADER_LEN + self.limits.max_body
        } else {
            self.limits.preauth_buffer_bytes
        };
        if held.len() > limit {
            return self.close(key, CloseReason::PreAuthBufferFull { limit });
        }
        // Release the allocation once nothing is pending: idle connections hold no buffer.
        conn.inbuf = if held.is_empty() { Vec::new() } else { held };
    }

    /// Runs the stage machine over `input`; returns how many bytes it consumed. Answers are sent
    /// whenever a queue's worth has piled up, so a peer that pipelines requests and never reads is
    /// caught as a slow reader after one queue of answers, not after its whole input.
    pub(super) fn process(&mut self, key: usize, input: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            let (used, outbox_full) = self.process_some(key, &input[pos..]);
            pos += used;
            let open = self
                .conns
                .get(key)
                .is_some_and(|c| !matches!(c.stage, Stage::Closing(_)));
            if !open {
                return input.len();
            }
            if !outbox_full {
                return pos;
            }
        }
    }

    /// One pass of [`Self::process`]: stops early (returning `true`) once the outbox holds more
    /// than the connection's outbound queue bound.
    pub(super) fn process_some(&mut self, key: usize, input: &[u8]) -> (usize, bool) {
        let mut outbox_full = false;
        let mut pos = 0;
        let mut active = false;
        // Where the app WebSocket's bytes start, when this step reached that stage.
        let mut app_input = None;
        let mut opened_app = false;
        self.outbox.clear();
        let Some(conn) = self.conns.get_mut(key) else {
            return (input.len(), false);
        };
        let id = ConnId {
            slot: key as u32,
            generation: conn.generation,
        };
        loop {
            let rest = &input[pos..];
            match &mut conn.stage {
                Stage::Sniff => match sniff(rest) {
                    Sniffed::NeedMore => break,
                    Sniffed::Device => advance(&mut conn.stage, Transition::DeviceSniffed),
                    Sniffed::Http => advance(&mut conn.stage, Transition::HttpSniffed),
                    Sniffed::Tls | Sniffed::Unknown => {
                        self.outbox.close(CloseReason::UnknownProtocol);
                        break;
                    }
                },
                Stage::Login => match frame::decode(rest, self.limits.max_body_before_login) {
                    Ok(Decoded::NeedMore { .. }) => break,
                    Err(e) => {
                        self.outbox.close(CloseReason::Malformed(e.to_string()));
                        break;
                    }
                    Ok(Decoded::Frame { frame, consumed }) => {
                        pos += consumed;
                        match decide_login(&frame) {
                            LoginDecision::Authenticate { token_hash, msg_id } => {
                                let gate = self.guards.throttle().check(conn.peer.ip(), self.now);
                                if gate != LoginGate::Open {
                                    self.stats.logins_throttled.fetch_add(1, Ordering::Relaxed);
                                    self.metrics.login(LoginResult::Throttled);
                                    let reason = throttled(
                                        &mut self.pre_login_log,
                                        self.now,
                                        conn.peer,
                                        gate,
                                        "login refused without checking the token",
                                    );
                                    self.outbox.response(msg_id, Status::QuotaLimit);
                                    self.outbox.close(reason);
                                    break;
                                }
                                advance(&mut conn.stage, Transition::LoginSent { msg_id });
                                self.outbox
                                    .store
                                    .push(StoreCall::Authenticate { token_hash, msg_id });
                            }
                            LoginDecision::RefuseToken { msg_id, reason } => {
                                let gate = self
                                    .guards
                                    .throttle()
                                    .record_failure(conn.peer.ip(), self.now);
                                self.pre_login_log.record(
                                    self.now,
                                    &ConnectionEvent::MalformedToken {
                                        peer: conn.peer,
                                        reason: format!(
                                            "{reason}; next login from this address: {}",
                                            gate.name()
                                        ),
                                    },
                                );
                                self.stats.logins_refused.fetch_add(1, Ordering::Relaxed);
                                self.metrics.login(LoginResult::MalformedToken);
                                self.outbox.response(msg_id, Status::InvalidToken);
                                self.outbox.close(CloseReason::InvalidToken);
                                break;
                            }
                            LoginDecision::NotALogin { command } => {
                                let what = format!("command {command} before login");
                                self.outbox.close(CloseReason::NotALogin(what));
                                break;
                            }
                        }
                    }
                },
                Stage::Device(session) => match frame::decode(rest, self.limits.max_body) {
                    Ok(Decoded::NeedMore { .. }) => break,
                    Err(e) => {
                        self.outbox.close(CloseReason::Malformed(e.to_string()));
                        break;
                    }
                    Ok(Decoded::Frame { frame, consumed }) => {
                        pos += consumed;
                        active = true;
                        // Received counts every frame, dropped ones too: it is what devices send.
                        self.metrics.message_in(frame.command.code());
                        let verdict = session.receive(
                            &frame,
                            self.now_ms,
                            &self.limits.session,
                            &mut self.outbox,
                        );
                        if verdict != QuotaVerdict::Allow {
                            over_quota(&self.stats, self.index, session.device, conn.peer, verdict);
                        }
                        if self.outbox.pending_bytes() > self.limits.outbound_queue_bytes {
                            outbox_full = true;
                            break;
                        }
                    }
                },
                Stage::Http => match http::read_head(rest) {
                    HttpHead::NeedMore => break,
                    HttpHead::Upgrade { response, consumed } => {
                        pos += consumed;
                        self.outbox.raw(&response);
                        opened_app = true;
                        let session = Box::new(AppSession::new());
                        advance(&mut conn.stage, Transition::WebSocketOpened(session));
                    }
                    HttpHead::Refuse { response, why } => {
                        self.outbox.raw(&response);
                        self.outbox.close(CloseReason::NotALogin(why));
                        break;
                    }
                },
                Stage::App(_) => {
                    app_input = Some(pos);
                    pos = input.len();
                    break;
                }
                Stage::TlsHandshake | Stage::Authenticating { .. } => break,
                Stage::Closing(_) => {
                    pos = input.len();
                    break;
                }
            }
        }
        if active && let Stage::Device(session) = &conn.stage {
            let timeout = session.heartbeat_timeout(&self.limits.session);
            push_deadline(&mut self.timers, conn, id, self.now, timeout);
        }
        self.apply_outbox(key, id);
        if opened_app {
            self.app_opened(key);
        }
        if let Some(start) = app_input {
            self.app_receive(key, id, &input[start..]);
        }
        (pos, outbox_full)
    }

    /// Carries out what a stage decided: frames to the socket, calls to the store, closing.
    pub(super) fn apply_outbox(&mut self, key: usize, id: ConnId) {
        let mut outbox = std::mem::take(&mut self.outbox);
        if !outbox.store.is_empty() && self.link.outstanding() >= MAX_QUEUED_CALLS {
            self.refuse_for_full_queue(&mut outbox);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut failure = None;
        let via = transport(conn.port);
        let before = conn.queued_bytes();
        // The HTTP answer that opens (or refuses) a WebSocket is no Blynk frame to count.
        let blynk_frames = !matches!(conn.stage, Stage::Http | Stage::App(_));
        for bytes in outbox.frames() {
            if blynk_frames {
                self.metrics.frame_out(bytes);
            }
            self.metrics.bytes_out(via, bytes.len());
            match conn.send_frame(bytes, &mut self.ciphertext) {
                Flush::Failed(e) => {
                    failure = Some(CloseReason::Io(e));
                    break;
                }
                Flush::Blocked if conn.queued_bytes() > self.limits.outbound_queue_bytes => {
                    failure = Some(CloseReason::SlowReader {
                        queued: conn.queued_bytes(),
                    });
                    break;
                }
                _ => {}
            }
        }
        requeue(&mut self.queued_total, before, conn.queued_bytes());
        let device = match &conn.stage {
            Stage::Device(session) => Some(session.device),
            _ => None,
        };
        for call in outbox.store.drain(..) {
            self.submit(id, device, call);
        }
        let close = failure.or(outbox.close.take());
        outbox.clear();
        self.outbox = outbox;
        if let Some(reason) = close {
            self.close(key, reason);
        }
    }
}

/// Counts a frame dropped for the message quota; warns on the first drop of the shard and then
/// at powers of two, so a flood is visible in the log without flooding it.
fn over_quota(
    stats: &ShardStats,
    shard: u16,
    device: DeviceId,
    peer: SocketAddr,
    verdict: QuotaVerdict,
) {
    if let Some(dropped) = super::store_calls::count_sampled(&stats.frames_over_quota, 1) {
        tracing::warn!(
            shard,
            device,
            %peer,
            dropped,
            answered = verdict == QuotaVerdict::DropAndAnswer,
            "device over its message quota; dropping its frames"
        );
    }
}
