//! The shard's side of the store: turning session decisions into store requests (telemetry batched
//! per loop turn and bounded while the store is slow or away), and the replies coming back —
//! logins, sync replays, property acknowledgements — delivered to connections that may have gone.
//!
//! The telemetry bound (`limits.store_queue_max_writes`) counts every pin write not yet
//! acknowledged by the store: the shard's own queue plus what the link holds queued or in flight.
//! A slow store therefore costs bounded memory; the oldest writes not yet sent are dropped first.
//! The link gets at most half the bound in flight: writes already sent cannot be taken back, so
//! the other half stays droppable, where the newest values wait and the oldest make room for
//! them. A sync moves everything to the link's queue first (its read must see the writes before
//! it); the link keeps those batches queued beyond its share, so they stay droppable too.
//!
//! [`Waiter`] is the continuation each call is submitted with: the link hands it back with the
//! reply, and `complete` (or `app_complete`, for the app API) picks up from it.

use super::*;
use crate::session::SyncFilter;
use portcullis_protocol::store::DeviceId;

/// Who is waiting for a store reply.
#[derive(Debug, Clone)]
pub(super) enum Waiter {
    /// Nobody: presence, info and telemetry batches only need to be stored.
    None,
    Login {
        conn: ConnId,
        msg_id: u16,
    },
    Sync {
        conn: ConnId,
        msg_id: u16,
        filter: SyncFilter,
    },
    Property {
        conn: ConnId,
        msg_id: u16,
    },
    /// An app's login: the user record, then the password check of `client_hash`.
    AppUser {
        conn: ConnId,
        id: u32,
        email: String,
        client_hash: String,
    },
    AppDevices {
        conn: ConnId,
        id: u32,
    },
    AppSubscribe {
        conn: ConnId,
        id: u32,
        device: DeviceId,
    },
}

/// How much queued telemetry to hand to the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TelemetryFlush {
    /// Everything: a read follows and must see the writes before it (the link keeps order).
    Everything,
    /// Only while the link's unacknowledged writes stay within its half of the bound; the rest
    /// waits in the shard's queue, where the bound drops the oldest.
    WithinBound,
}

impl Shard {
    /// The part of the telemetry bound the link may hold (and have in flight).
    pub(super) fn link_share(&self) -> usize {
        (self.limits.store_queue_max_writes / 2).max(1)
    }

    /// Hands queued telemetry to the link as write batches.
    pub(super) fn telemetry_to_link(&mut self, flush: TelemetryFlush) {
        let link_share = self.link_share();
        while !self.telemetry.is_empty() {
            let room = match flush {
                TelemetryFlush::Everything => MAX_WRITE_BATCH,
                // A partial batch when that is all the room left: a burst larger than the link's
                // share must not wait for a sync to move at all.
                TelemetryFlush::WithinBound => {
                    link_share.saturating_sub(self.link.unacked_writes())
                }
            };
            let n = self.telemetry.len().min(MAX_WRITE_BATCH).min(room);
            if n == 0 {
                return;
            }
            let writes: Vec<PinWrite> = self.telemetry.drain(..n).collect();
            self.metrics.write_batch.observe(n as u64);
            self.link
                .submit(Request::WritePins { writes }, Waiter::None);
        }
    }

    /// Makes room for one more pin write under the bound: drops the oldest batch the link has not
    /// written yet (only a sync moves more than the link's share there, and those are the oldest
    /// writes), else the oldest write in the shard's queue. `false` when everything
    /// unacknowledged is already in flight (then the new write is the one dropped).
    fn make_room_for_write(&mut self) -> bool {
        let unacked = self.telemetry.len() + self.link.unacked_writes();
        if unacked < self.limits.store_queue_max_writes {
            return true;
        }
        let (dropped, room) = if let Some(batch) = self.link.drop_oldest_queued_writes() {
            (batch as u64, true)
        } else if self.telemetry.pop_front().is_some() {
            (1, true)
        } else {
            (1, false)
        };
        if let Some(total) = count_sampled(&self.stats.telemetry_dropped, dropped) {
            tracing::warn!(
                shard = self.index,
                dropped = total,
                "telemetry queue full (store slow or away); dropping the oldest values"
            );
        }
        room
    }

    /// The store queue is full: the step's refusable calls are answered instead of queued.
    pub(super) fn refuse_for_full_queue(&mut self, outbox: &mut Outbox) {
        let refused = outbox.refuse_deferrable_calls() as u64;
        if refused == 0 {
            return;
        }
        if let Some(total) = count_sampled(&self.stats.store_calls_refused, refused) {
            tracing::warn!(
                shard = self.index,
                refused = total,
                limit = MAX_QUEUED_CALLS,
                "store queue full (store slow or away); answering logins, syncs and property \
                 writes with SERVER_ERROR"
            );
        }
    }

    pub(super) fn submit(&mut self, id: ConnId, device: Option<u64>, call: StoreCall) {
        let at_ms = self.now_ms;
        if let StoreCall::Authenticate { token_hash, msg_id } = call {
            self.link.submit(
                Request::Authenticate { token_hash },
                Waiter::Login { conn: id, msg_id },
            );
            return;
        }
        let Some(device) = device else { return };
        match call {
            StoreCall::Authenticate { .. } => {}
            StoreCall::WritePin { pin, value } => {
                self.publish_pin(device, pin, &value);
                if !self.make_room_for_write() {
                    return;
                }
                self.telemetry.push_back(PinWrite {
                    device,
                    pin,
                    value,
                    at_ms,
                });
            }
            StoreCall::Sync {
                msg_id,
                pins,
                filter,
            } => {
                self.telemetry_to_link(TelemetryFlush::Everything);
                self.link.submit(
                    Request::ReadPins { device, pins },
                    Waiter::Sync {
                        conn: id,
                        msg_id,
                        filter,
                    },
                )
            }
            StoreCall::WriteProperty {
                msg_id,
                pin,
                property,
                value,
            } => self.link.submit(
                Request::WriteProperty {
                    device,
                    pin,
                    property,
                    value,
                    at_ms,
                },
                Waiter::Property { conn: id, msg_id },
            ),
            StoreCall::SetInfo(info) => self.link.submit(
                Request::SetInfo {
                    device,
                    info,
                    at_ms,
                },
                Waiter::None,
            ),
            StoreCall::Presence(presence) => {
                self.publish_presence(device, matches!(presence, Presence::Online { .. }));
                self.link.submit(
                    Request::SetPresence {
                        device,
                        presence,
                        at_ms,
                    },
                    Waiter::None,
                )
            }
        }
    }

    /// A store reply for a connection that may have gone (then it is dropped).
    pub(super) fn complete(&mut self, done: Completion) {
        self.metrics.store_latency.observe_duration(done.elapsed);
        self.stats
            .pins_stored
            .fetch_add(done.pins_written as u64, Ordering::Relaxed);
        let (id, msg_id) = match &done.waiter {
            Waiter::None => {
                if let Err(e) = &done.result {
                    tracing::warn!(shard = self.index, error = %e, "store refused a write");
                }
                return;
            }
            Waiter::Login { conn, msg_id }
            | Waiter::Sync { conn, msg_id, .. }
            | Waiter::Property { conn, msg_id } => (*conn, *msg_id),
            Waiter::AppUser { .. } | Waiter::AppDevices { .. } | Waiter::AppSubscribe { .. } => {
                return self.app_complete(done.waiter, done.result);
            }
        };
        let key = id.slot as usize;
        if self
            .conns
            .get(key)
            .is_none_or(|c| c.generation != id.generation)
        {
            return;
        }
        self.outbox.clear();
        match (done.waiter, done.result) {
            (Waiter::Login { .. }, Ok(Response::Authenticated(Some(auth)))) => {
                return self.logged_in(key, id, msg_id, auth.device);
            }
            (Waiter::Login { .. }, Ok(Response::Authenticated(None))) => {
                let peer = self.conns[key].peer;
                let gate = self.guards.throttle().record_failure(peer.ip(), self.now);
                self.pre_login_log.record(
                    self.now,
                    &ConnectionEvent::InvalidToken {
                        peer,
                        next: gate.name(),
                    },
                );
                self.stats.logins_refused.fetch_add(1, Ordering::Relaxed);
                self.metrics.login(LoginResult::InvalidToken);
                self.outbox.response(msg_id, Status::InvalidToken);
                self.outbox.close(CloseReason::InvalidToken);
            }
            (Waiter::Login { .. }, other) => {
                tracing::error!(result = ?other, "store failed a login lookup");
                self.metrics.login(LoginResult::StoreError);
                self.outbox.response(msg_id, Status::ServerError);
                self.outbox.close(CloseReason::StoreUnavailable);
            }
            (Waiter::Sync { filter, .. }, Ok(Response::Pins(values))) => {
                if let Stage::Device(session) = &self.conns[key].stage {
                    let skipped = session.on_sync_reply(
                        msg_id,
                        filter,
                        &values,
                        &self.limits.session,
                        &mut self.outbox,
                    );
                    if skipped > 0 {
                        tracing::debug!(
                            skipped,
                            "sync values larger than the device buffer were skipped"
                        );
                    }
                }
            }
            (Waiter::Property { .. }, Ok(Response::Done)) => {
                self.outbox.response(msg_id, Status::Ok)
            }
            (_, Err(StoreError::Invalid(_))) => {
                self.outbox.response(msg_id, Status::IllegalCommandBody)
            }
            (_, _) => self.outbox.response(msg_id, Status::ServerError),
        }
        self.apply_outbox(key, id);
    }

    pub(super) fn logged_in(&mut self, key: usize, id: ConnId, msg_id: u16, device: u64) {
        let conn = &mut self.conns[key];
        let session = DeviceSession::new(device);
        let timeout = session.heartbeat_timeout(&self.limits.session);
        advance(&mut conn.stage, Transition::Authenticated(session));
        self.guards.admission().leave_unauthenticated();
        conn.deadline = self.timers.deadline_after(self.now, timeout);
        self.stats.logins_ok.fetch_add(1, Ordering::Relaxed);
        self.metrics.login(LoginResult::Ok);
        self.metrics.conn_moved(
            transport(conn.port),
            Some(ConnState::PreAuth),
            Some(ConnState::Authenticated),
        );
        tracing::debug!(shard = self.index, peer = %conn.peer, device, "device logged in");
        let addr = conn.peer.to_string();
        self.outbox.clear();
        self.outbox.response(msg_id, Status::Ok);
        self.outbox
            .store
            .push(StoreCall::Presence(Presence::Online {
                addr,
                session: self.session_tag(id),
            }));
        self.apply_outbox(key, id);
        // Frames the device sent before the store answered (BlynkLib sends its info at once).
        if self.conns.get(key).is_some_and(|c| !c.inbuf.is_empty()) {
            self.on_bytes(key, &[]);
        }
    }
}

/// Adds `n` to a shard counter; the new total when it crossed a power of two, the moments a
/// warning about it is logged: a sustained overload stays visible without a line per event.
pub(super) fn count_sampled(counter: &AtomicU64, n: u64) -> Option<u64> {
    let before = counter.fetch_add(n, Ordering::Relaxed);
    let total = before + n;
    (n > 0 && Some(total.ilog2()) != before.checked_ilog2()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_counts_are_reported_when_they_cross_a_power_of_two() {
        let counter = AtomicU64::new(0);
        let reported: Vec<Option<u64>> = [1, 1, 1, 1, 4, 100, 0]
            .into_iter()
            .map(|n| count_sampled(&counter, n))
            .collect();
        assert_eq!(
            reported,
            [Some(1), Some(2), None, Some(4), Some(8), Some(108), None]
        );
    }
}
