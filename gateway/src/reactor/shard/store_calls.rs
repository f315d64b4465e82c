//! The shard's side of the store: turning session decisions into store requests (telemetry batched
//! per loop turn and bounded while the store is away), and the replies coming back — logins,
//! sync replays, property acknowledgements — delivered to connections that may have gone.

use super::*;

impl Shard {
    /// Hands queued telemetry to the link as write batches. Also called before a read so the store
    /// sees a device's writes before its sync (the link keeps request order).
    pub(super) fn telemetry_to_link(&mut self) {
        while !self.telemetry.is_empty() {
            let n = self.telemetry.len().min(MAX_WRITE_BATCH);
            let writes: Vec<PinWrite> = self.telemetry.drain(..n).collect();
            self.metrics.write_batch.observe(n as u64);
            self.link
                .submit(Request::WritePins { writes }, Waiter::None);
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
        if self.link.outstanding() >= MAX_QUEUED_CALLS
            && !matches!(call, StoreCall::WritePin { .. })
        {
            tracing::warn!(shard = self.index, "store call queue full; refusing a call");
            self.stats
                .store_calls_refused
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        match call {
            StoreCall::Authenticate { .. } => {}
            StoreCall::WritePin { pin, value } => {
                if self.telemetry.len() >= self.limits.store_queue_max_writes {
                    self.telemetry.pop_front();
                    let dropped = self.stats.telemetry_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(
                            shard = self.index,
                            dropped,
                            "telemetry queue full; dropping the oldest values"
                        );
                    }
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
                self.telemetry_to_link();
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
            StoreCall::Presence(presence) => self.link.submit(
                Request::SetPresence {
                    device,
                    presence,
                    at_ms,
                },
                Waiter::None,
            ),
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
                security::record(
                    "reactor",
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
