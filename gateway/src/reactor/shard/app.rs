//! The shard's side of the app API: carrying out what an app session decided (user lookups and
//! password checks, device pages, subscriptions), the store replies and password verdicts coming
//! back, and the events of subscribed devices: published where the device is connected, batched
//! per loop turn, delivered on the shard where the app is.

use super::*;
use crate::password::PasswordCheck;
use crate::reactor::hub::{Control, PasswordChecked, Subscriber, Undelivered};
use crate::reactor::password_pool::PasswordJob;
use crate::session::{AppAction, AppSession};
use portcullis_protocol::app::{AppDevice, AppErrorCode, AppEvent, normalize_email};
use portcullis_protocol::body::PinAddr;
use portcullis_protocol::store::DeviceId;

/// Devices per `devices` answer.
pub const APP_DEVICE_PAGE: u32 = 100;

impl Shard {
    /// The WebSocket just opened: an app receives streams of events, so its socket gets a
    /// larger send buffer than a device's.
    pub(super) fn app_opened(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let size = self.limits.app_socket_send_buffer_bytes;
        if let Err(e) = socket2::SockRef::from(&conn.socket).set_send_buffer_size(size) {
            tracing::debug!(peer = %conn.peer, error = %e, "cannot enlarge an app's send buffer");
        }
    }

    /// Hands received bytes to the connection's app session and carries out its decisions.
    pub(super) fn app_receive(&mut self, key: usize, id: ConnId, bytes: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Stage::App(session) = &mut conn.stage else {
            return;
        };
        let mut actions = std::mem::take(&mut self.app_actions);
        session.receive(bytes, self.limits.app_max_subscriptions, &mut actions);
        if session.is_logged_in() {
            self.app_active(key, id);
        }
        self.app_flush(key);
        for action in actions.drain(..) {
            self.app_action(key, id, action);
        }
        self.app_actions = actions;
    }

    fn app_action(&mut self, key: usize, id: ConnId, action: AppAction) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let peer = conn.peer;
        let busy = self.link.outstanding() >= MAX_QUEUED_CALLS;
        match action {
            AppAction::Close(reason) => self.close(key, reason),
            AppAction::Unsubscribe { device } => {
                self.hub.broadcast(&Control::Unsubscribe {
                    device,
                    subscriber: self.subscriber(id),
                });
            }
            AppAction::Login { email, .. } if busy => {
                tracing::warn!(%peer, %email, "store queue full; app login answered busy");
                self.with_app(key, |s| {
                    s.login_failed(AppErrorCode::Busy, "gateway busy; retry")
                });
            }
            AppAction::Login {
                id: req,
                email,
                hash,
            } => {
                let gate = self.guards.app_throttle().check(peer.ip(), self.now);
                if let LoginGate::Blocked { remaining, .. } = gate {
                    let retry_in_secs = remaining.as_secs().max(1);
                    self.stats
                        .app_logins_refused
                        .fetch_add(1, Ordering::Relaxed);
                    self.pre_login_log.record(
                        self.now,
                        &ConnectionEvent::AppLoginThrottled {
                            peer,
                            email,
                            retry_in_secs,
                        },
                    );
                    let message = format!(
                        "too many failed logins from this address; retry in {retry_in_secs} s"
                    );
                    self.with_app(key, |s| s.login_failed(AppErrorCode::Throttled, &message));
                    return;
                }
                let email = normalize_email(&email);
                self.link.submit(
                    Request::GetUser {
                        email: email.clone(),
                    },
                    Waiter::AppUser {
                        conn: id,
                        id: req,
                        email,
                        client_hash: hash,
                    },
                );
            }
            AppAction::ListDevices { id: req, .. } if busy => self.with_app(key, |s| {
                s.error(Some(req), AppErrorCode::Busy, "gateway busy; retry")
            }),
            AppAction::Subscribe { id: req, .. } if busy => self.with_app(key, |s| {
                s.subscribe_failed(req, AppErrorCode::Busy, "gateway busy; retry")
            }),
            AppAction::ListDevices {
                id: req,
                org,
                after,
            } => self.link.submit(
                Request::ListDevices {
                    after,
                    limit: APP_DEVICE_PAGE,
                    org: Some(org),
                },
                Waiter::AppDevices { conn: id, id: req },
            ),
            AppAction::Subscribe {
                id: req, device, ..
            } => self.link.submit(
                Request::GetDevice { device },
                Waiter::AppSubscribe {
                    conn: id,
                    id: req,
                    device,
                },
            ),
        }
    }

    /// A store reply for an app request.
    pub(super) fn app_complete(&mut self, waiter: Waiter, result: Result<Response, StoreError>) {
        let (Waiter::AppUser { conn, .. }
        | Waiter::AppDevices { conn, .. }
        | Waiter::AppSubscribe { conn, .. }) = &waiter
        else {
            return;
        };
        let id = *conn;
        let key = id.slot as usize;
        let Some(conn) = self.live(id) else {
            return;
        };
        let peer = conn.peer;
        match (waiter, result) {
            (
                Waiter::AppUser {
                    id: req,
                    email,
                    client_hash,
                    ..
                },
                Ok(Response::User(user)),
            ) => {
                let (org, stored_phc) = match user {
                    Some(user) => (user.org, Some(user.password_phc)),
                    None => (String::new(), None),
                };
                let job = PasswordJob {
                    shard: self.index,
                    conn: id,
                    id: req,
                    email,
                    org,
                    stored_phc,
                    client_hash,
                };
                if self.passwords.submit(job).is_err() {
                    tracing::warn!(%peer, "password workers saturated; app login answered busy");
                    self.with_app(key, |s| {
                        s.login_failed(AppErrorCode::Busy, "too many logins being checked; retry")
                    });
                }
            }
            (Waiter::AppUser { .. }, other) => {
                tracing::error!(result = ?other, "store failed an app user lookup");
                self.with_app(key, |s| {
                    s.login_failed(AppErrorCode::Busy, "store unavailable; retry")
                });
            }
            (Waiter::AppDevices { id: req, .. }, Ok(Response::Devices(records))) => {
                let next = (records.len() >= APP_DEVICE_PAGE as usize)
                    .then(|| records.last().map(|d| d.id))
                    .flatten();
                let devices = records
                    .into_iter()
                    .map(|d| AppDevice {
                        online: d.online(),
                        id: d.id,
                        name: d.name,
                        template: d.template,
                    })
                    .collect();
                self.with_app(key, |s| {
                    s.send(&AppEvent::Devices {
                        id: req,
                        devices,
                        next,
                    })
                });
            }
            (
                Waiter::AppSubscribe {
                    id: req, device, ..
                },
                Ok(Response::Device(record)),
            ) => {
                let Stage::App(session) = &mut self.conns[key].stage else {
                    return;
                };
                if session.org() != Some(record.org.as_str()) {
                    session.subscribe_failed(req, AppErrorCode::NotFound, "no such device");
                } else if session.subscribed(req, device, record.online()) {
                    self.hub.broadcast(&Control::Subscribe {
                        device,
                        subscriber: self.subscriber(id),
                    });
                }
                self.app_flush(key);
            }
            (Waiter::AppSubscribe { id: req, .. }, Err(StoreError::NotFound(_))) => {
                self.with_app(key, |s| {
                    s.subscribe_failed(req, AppErrorCode::NotFound, "no such device")
                });
            }
            (Waiter::AppSubscribe { id: req, .. }, _) => self.with_app(key, |s| {
                s.subscribe_failed(req, AppErrorCode::Busy, "store unavailable; retry")
            }),
            (Waiter::AppDevices { id: req, .. }, _) => self.with_app(key, |s| {
                s.error(Some(req), AppErrorCode::Busy, "store unavailable; retry")
            }),
            _ => {}
        }
    }

    /// Subscription changes and password verdicts from the hub, and events for this shard's apps.
    pub(super) fn drain_hub(&mut self) {
        while let Some(message) = self.inbox.next_control() {
            match message {
                Control::PasswordChecked(done) => self.password_checked(done),
                Control::Subscribe { device, subscriber } => {
                    self.fanout.subscribe(device, subscriber)
                }
                Control::Unsubscribe { device, subscriber } => {
                    self.fanout.unsubscribe(device, subscriber)
                }
            }
        }
        while let Some(batch) = self.inbox.next_events() {
            self.deliver(batch);
        }
    }

    fn password_checked(&mut self, done: PasswordChecked) {
        let key = done.conn.slot as usize;
        // Field access, not `live()`: the guards and stats are used while `conn` is borrowed.
        let Some(conn) = self
            .conns
            .get_mut(key)
            .filter(|c| c.generation == done.conn.generation)
        else {
            return;
        };
        let peer = conn.peer;
        let Stage::App(session) = &mut conn.stage else {
            return;
        };
        match done.verdict {
            PasswordCheck::Matches => {
                tracing::info!(shard = self.index, %peer, email = %done.email, org = %done.org,
                    "app logged in");
                self.guards.app_accounts().clear(&done.email);
                session.logged_in(done.email, done.org);
                self.stats.app_logins_ok.fetch_add(1, Ordering::Relaxed);
                self.guards.admission().leave_unauthenticated();
                self.metrics.conn_moved(
                    transport(conn.port),
                    Some(ConnState::PreAuth),
                    Some(ConnState::Authenticated),
                );
                self.app_active(key, done.conn);
            }
            PasswordCheck::Mismatch | PasswordCheck::Unusable => {
                let why = if done.verdict == PasswordCheck::Unusable {
                    tracing::error!(email = %done.email,
                        "stored password hash unreadable; reset this user's password");
                    "stored password hash unreadable"
                } else if !done.known_user {
                    "no user with this email"
                } else {
                    "wrong password"
                };
                session.login_failed(AppErrorCode::Unauthorized, "wrong email or password");
                let account_failures = done
                    .known_user
                    .then(|| self.guards.app_accounts().record(&done.email, self.now));
                self.stats
                    .app_logins_refused
                    .fetch_add(1, Ordering::Relaxed);
                let gate = self
                    .guards
                    .app_throttle()
                    .record_failure(peer.ip(), self.now);
                self.pre_login_log.record(
                    self.now,
                    &ConnectionEvent::AppLoginFailed {
                        peer,
                        email: done.email,
                        why,
                        next: gate.name(),
                        account_failures,
                    },
                );
            }
        }
        self.app_flush(key);
    }

    /// A device's pin write, for the apps subscribed to it (a no-op unless some are).
    pub(super) fn publish_pin(&mut self, device: DeviceId, pin: PinAddr, value: &[u8]) {
        if !self.fanout.has_subscribers(device) {
            return;
        }
        let values = value
            .split(|&b| b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        self.publish(
            device,
            &AppEvent::Pin {
                device,
                pin: pin.to_string(),
                values,
                at_ms: self.now_ms,
            },
        );
    }

    /// A device's session started or ended, for the apps subscribed to it.
    pub(super) fn publish_presence(&mut self, device: DeviceId, online: bool) {
        if !self.fanout.has_subscribers(device) {
            return;
        }
        let event = if online {
            AppEvent::Online { device }
        } else {
            AppEvent::Offline { device }
        };
        self.publish(device, &event);
    }

    fn publish(&mut self, device: DeviceId, event: &AppEvent) {
        match serde_json::to_string(event) {
            Ok(json) => {
                self.fanout.publish(device, &Arc::from(json));
            }
            Err(e) => tracing::error!(error = %e, "cannot encode an app event"),
        }
    }

    /// Sends this loop turn's events: to other shards in one batch each, and to this shard's apps.
    pub(super) fn flush_fanout(&mut self) {
        if self.fanout.is_empty() {
            return;
        }
        let remote: Vec<_> = self.fanout.take_remote().collect();
        for (shard, batch) in remote {
            match self.hub.send_events(shard, batch) {
                Ok(()) => {}
                Err(Undelivered::QueueFull { events }) => {
                    if let Some(total) =
                        store_calls::count_sampled(&self.stats.app_events_dropped, events as u64)
                    {
                        tracing::warn!(
                            shard = self.index,
                            to = shard,
                            dropped = total,
                            "app event queue of a shard full; dropping events"
                        );
                    }
                }
                Err(Undelivered::ShardGone) => {}
            }
        }
        let local = self.fanout.take_local();
        self.deliver(local);
    }

    /// Writes a batch of events into the apps' sessions, then sends each app's share in one go:
    /// a busy device fleet costs an app one write per loop turn, not one per event.
    fn deliver(&mut self, batch: crate::reactor::hub::EventBatch) {
        let mut touched = std::mem::take(&mut self.app_touched);
        let mut sent = 0;
        for (id, json) in batch {
            let key = id.slot as usize;
            let Some(conn) = self.live(id) else {
                continue;
            };
            if let Stage::App(session) = &mut conn.stage {
                if !session.has_output() {
                    touched.push(key);
                }
                session.send_json(&*json);
                sent += 1;
            }
        }
        self.stats
            .app_events_sent
            .fetch_add(sent, Ordering::Relaxed);
        for key in touched.drain(..) {
            self.app_flush(key);
        }
        self.app_touched = touched;
    }

    /// Runs `f` on the connection's app session, then sends what it said.
    pub(super) fn with_app(&mut self, key: usize, f: impl FnOnce(&mut AppSession)) {
        if let Some(Conn {
            stage: Stage::App(session),
            ..
        }) = self.conns.get_mut(key)
        {
            f(session);
            self.app_flush(key);
        }
    }

    /// Sends the app session's pending output; a slow reader is closed at the queue bound.
    pub(super) fn app_flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Stage::App(session) = &mut conn.stage else {
            return;
        };
        let bytes = session.take_output();
        if bytes.is_empty() {
            return;
        }
        self.metrics.bytes_out(transport(conn.port), bytes.len());
        let before = conn.queued_bytes();
        let failure = match conn.send_frame(&bytes, &mut self.ciphertext) {
            Flush::Failed(e) => Some(CloseReason::Io(e)),
            Flush::Blocked if conn.queued_bytes() > self.limits.app_outbound_queue_bytes => {
                Some(CloseReason::SlowReader {
                    queued: conn.queued_bytes(),
                })
            }
            _ => None,
        };
        requeue(&mut self.queued_total, before, conn.queued_bytes());
        if let Some(reason) = failure {
            self.close(key, reason);
        }
    }

    /// Called when an app connection closes: its subscriptions end on every shard.
    pub(super) fn app_closed(&mut self, id: ConnId, subscriptions: Vec<DeviceId>) {
        for device in subscriptions {
            self.hub.broadcast(&Control::Unsubscribe {
                device,
                subscriber: self.subscriber(id),
            });
        }
    }

    /// A logged-in app did something: its idle deadline moves (and is armed sooner when the
    /// idle timeout is shorter than what the wheel holds for it, e.g. the login deadline).
    fn app_active(&mut self, key: usize, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(key) {
            let timeout = self.limits.app_idle_timeout;
            push_deadline(&mut self.timers, conn, id, self.now, timeout);
        }
    }

    fn subscriber(&self, conn: ConnId) -> Subscriber {
        Subscriber {
            shard: self.index,
            conn,
        }
    }
}
