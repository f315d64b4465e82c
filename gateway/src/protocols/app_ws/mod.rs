//! The app WebSocket API (`/api/ws`, docs/app-api.md): people's apps log in with email and
//! password hash (or a session token of the REST login), page through the devices they may see and watch them live. This file is the
//! adapter the reactor calls: it turns what the sans-IO [`session::AppSession`] decided into jobs
//! for the worker pools (the password check, device pages and lookups, each an operation on
//! behalf of the logged-in principal, so the visibility rule is the operations layer's), the
//! answers coming back, the subscriptions, and the login policy (the per-address block, the
//! per-account count, the security log, the counters). Events of watched devices arrive from the
//! bus and are rendered once per event for every app that gets them.

pub mod session;
#[cfg(test)]
mod tests;

use super::{
    Delivery, InputLimit, Job, Outbox, Pool, Progress, ProtocolLimits, Step, Watch, WorkDone,
};
use crate::bus::{BusEvent, DeviceEvent};
use crate::conn::CloseReason;
use crate::guard::security_events::ConnectionEvent;
use portcullis_operations::devices::{self, DevicePage};
use portcullis_operations::sessions::{self, LoginOutcome, LoginRefusal};
use portcullis_operations::{Credential, OperationError, Principal, secrets};
use portcullis_protocol::app::{AppDevice, AppErrorCode, AppEvent, normalize_email};
use portcullis_protocol::store::{DeviceId, DeviceRecord, SecretHash};

use session::{AppAction, AppSession};

/// Devices per `devices` answer.
pub const APP_DEVICE_PAGE: u32 = 100;

/// What the security log names as the account of a token login (the token itself is a secret).
const SESSION_TOKEN_ACCOUNT: &str = "(session token)";

/// An app connection: its sans-IO session, who logged in, and the actions of the last step.
#[derive(Debug)]
pub struct AppWsSession {
    session: AppSession,
    /// The logged-in user, on whose behalf every operation runs.
    principal: Option<Principal>,
    /// The hash of the session token it logged in with (`login_token`), so a logout of that
    /// session ends this connection.
    session_hash: Option<SecretHash>,
    /// Decisions of one session step (kept to reuse the allocation).
    actions: Vec<AppAction>,
}

/// A worker's answer to one of this connection's jobs.
#[derive(Debug)]
pub enum Done {
    /// The password check of login request `id`.
    Login {
        id: u32,
        email: String,
        outcome: Result<LoginOutcome, OperationError>,
    },
    /// The session lookup of token login request `id`.
    LoginToken {
        id: u32,
        outcome: Result<Principal, OperationError>,
    },
    /// A page of devices for request `id`.
    Devices {
        id: u32,
        page: Result<DevicePage, OperationError>,
    },
    /// The device a subscribe request `id` asked for, as the principal may see it.
    Subscribe {
        id: u32,
        device: DeviceId,
        found: Result<DeviceRecord, OperationError>,
    },
    /// The job was not queued: its pool was full.
    Busy { id: u32, what: BusyJob },
}

/// Which kind of job found its pool full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusyJob {
    Login,
    Devices,
    Subscribe,
}

/// A worker's answer for the app session, boxed: app answers are rare, and a device's store
/// continuation must not pay for their size in the shard's queues.
fn answer(done: Done) -> WorkDone {
    WorkDone::AppWs(Box::new(done))
}

impl AppWsSession {
    pub fn new() -> Self {
        Self {
            session: AppSession::new(),
            principal: None,
            session_hash: None,
            actions: Vec::new(),
        }
    }

    pub fn is_logged_in(&self) -> bool {
        self.session.is_logged_in()
    }

    /// The user this app logged in as (`None` before login, or for the operator), so the shard
    /// can end the sessions of a user the store revoked.
    pub fn user(&self) -> Option<portcullis_protocol::authz::UserId> {
        self.principal
            .as_ref()
            .and_then(|p| p.as_member())
            .map(|m| m.user())
    }

    /// The hash of the session token this app logged in with, if it used one.
    pub fn session_hash(&self) -> Option<&SecretHash> {
        self.session_hash.as_ref()
    }

    pub fn on_deadline(&self, limits: &ProtocolLimits) -> CloseReason {
        if self.is_logged_in() {
            CloseReason::IdleTimeout {
                secs: limits.app_idle_timeout.as_secs(),
            }
        } else {
            CloseReason::LoginTimeout
        }
    }

    pub fn input_limit(&self) -> InputLimit {
        // The WebSocket layer keeps partial frames itself, within its message limit.
        InputLimit::Message(0)
    }

    /// WebSocket bytes from the app.
    pub fn receive(&mut self, input: &[u8], step: &mut Step<'_>) -> Progress {
        let mut actions = std::mem::take(&mut self.actions);
        self.session.receive(
            input,
            step.services.limits.app_max_subscriptions,
            &mut actions,
        );
        if self.is_logged_in() {
            step.out.deadline = Some(step.services.limits.app_idle_timeout);
        }
        self.flush(step);
        for action in actions.drain(..) {
            self.act(action, step);
        }
        self.actions = actions;
        self.flush(step);
        Progress {
            used: input.len(),
            paused: false,
        }
    }

    fn act(&mut self, action: AppAction, step: &mut Step<'_>) {
        let principal = self.principal.clone();
        match action {
            AppAction::Close(reason) => step.out.close(reason),
            AppAction::Unsubscribe { device } => step.out.watch.push(Watch::Unsubscribe(device)),
            AppAction::Login { id, email, hash } => self.login(id, email, hash, step),
            AppAction::LoginToken { id, token } => self.login_token(id, token, step),
            AppAction::ListDevices { id, after, .. } => {
                let Some(principal) = principal else { return };
                step.out.jobs.push(Job {
                    pool: Pool::Operations,
                    run: Box::new(move |store| {
                        let scope = devices::home_scope(&principal);
                        let page =
                            devices::list_page(store, &principal, scope, after, APP_DEVICE_PAGE);
                        answer(Done::Devices { id, page })
                    }),
                    refused: answer(Done::Busy {
                        id,
                        what: BusyJob::Devices,
                    }),
                });
            }
            AppAction::Subscribe { id, device, .. } => {
                let Some(principal) = principal else { return };
                step.out.jobs.push(Job {
                    pool: Pool::Operations,
                    run: Box::new(move |store| {
                        let found = devices::get(store, &principal, device);
                        answer(Done::Subscribe { id, device, found })
                    }),
                    refused: answer(Done::Busy {
                        id,
                        what: BusyJob::Subscribe,
                    }),
                });
            }
        }
    }

    /// Whether the login must wait (the address blocked, or the account `email` backing off);
    /// if so the pending login is answered `throttled` and the security log says so. `who`
    /// names the account tried in the log.
    fn throttled(&mut self, who: String, email: Option<&str>, step: &mut Step<'_>) -> bool {
        let services = &mut *step.services;
        let peer = step.conn.peer;
        let Some(wait) = services
            .guards
            .app_login_wait(email, peer.ip(), services.now)
        else {
            return false;
        };
        let retry_in_secs = wait.retry_in_secs();
        services.metrics.app_logins_refused.add(1);
        services.security.record(
            services.now,
            &ConnectionEvent::AppLoginThrottled {
                peer,
                email: who,
                retry_in_secs,
            },
        );
        let message = format!(
            "too many failed logins {}; retry in {retry_in_secs} s",
            wait.whose()
        );
        self.session.login_failed(AppErrorCode::Throttled, &message);
        true
    }

    /// A token login: throttled like a password login, then the session resolved on an
    /// operations worker (a lookup, no argon2id).
    fn login_token(&mut self, id: u32, token: String, step: &mut Step<'_>) {
        if self.throttled(SESSION_TOKEN_ACCOUNT.into(), None, step) {
            return;
        }
        let from = step.conn.peer.ip().to_string();
        self.session_hash = Some(secrets::hash(&token));
        step.out.jobs.push(Job {
            pool: Pool::Operations,
            run: Box::new(move |store| {
                let outcome = sessions::authenticate(store, &token, &from);
                answer(Done::LoginToken { id, outcome })
            }),
            refused: answer(Done::Busy {
                id,
                what: BusyJob::Login,
            }),
        });
    }

    /// A login request: refused at once from a blocked address, otherwise checked on a password
    /// worker (argon2id never runs on a shard).
    fn login(&mut self, id: u32, email: String, hash: String, step: &mut Step<'_>) {
        let email = normalize_email(&email);
        if self.throttled(email.clone(), Some(&email), step) {
            return;
        }
        let peer = step.conn.peer;
        let checked = email.clone();
        let from = peer.ip().to_string();
        step.out.jobs.push(Job {
            pool: Pool::Passwords,
            run: Box::new(move |store| {
                let outcome = sessions::verify(store, &checked, &hash, &from);
                answer(Done::Login {
                    id,
                    email: checked,
                    outcome,
                })
            }),
            refused: answer(Done::Busy {
                id,
                what: BusyJob::Login,
            }),
        });
    }

    /// A worker's answer.
    pub fn on_work_done(&mut self, done: Done, step: &mut Step<'_>) {
        match done {
            Done::Login { email, outcome, .. } => self.login_checked(email, outcome, step),
            Done::LoginToken { outcome, .. } => self.token_checked(outcome, step),
            Done::Devices { id, page: Ok(page) } => {
                let DevicePage { devices, next } = page;
                let devices = devices
                    .into_iter()
                    .map(|d| AppDevice {
                        online: d.online(),
                        id: d.id,
                        name: d.name,
                        template: d.template.to_string(),
                    })
                    .collect();
                self.session.send(&AppEvent::Devices { id, devices, next });
            }
            Done::Devices { id, page: Err(e) } => {
                tracing::warn!(error = %e, "an app's device page failed");
                self.session
                    .error(Some(id), AppErrorCode::Busy, "store unavailable; retry");
            }
            Done::Subscribe {
                id,
                device,
                found: Ok(record),
            } => {
                if self.session.subscribed(id, device, record.online()) {
                    step.out.watch.push(Watch::Subscribe(device));
                }
            }
            // Outside the user's organization reads exactly like a device that does not exist.
            Done::Subscribe {
                id,
                found: Err(OperationError::NotFound(_)),
                ..
            } => self
                .session
                .subscribe_failed(id, AppErrorCode::NotFound, "no such device"),
            Done::Subscribe {
                id, found: Err(e), ..
            } => {
                tracing::warn!(error = %e, "an app's device lookup failed");
                self.session
                    .subscribe_failed(id, AppErrorCode::Busy, "store unavailable; retry")
            }
            Done::Busy { id, what } => match what {
                BusyJob::Login => {
                    tracing::warn!(peer = %step.conn.peer, "password workers saturated; app login answered busy");
                    self.session
                        .login_failed(AppErrorCode::Busy, "too many logins being checked; retry")
                }
                BusyJob::Devices => {
                    self.session
                        .error(Some(id), AppErrorCode::Busy, "gateway busy; retry")
                }
                BusyJob::Subscribe => {
                    self.session
                        .subscribe_failed(id, AppErrorCode::Busy, "gateway busy; retry")
                }
            },
        }
        self.flush(step);
    }

    /// The verdict of a token login. Only a session token logs an app in: an API key is for
    /// scripts calling REST, and a connection could outlive its revocation.
    fn token_checked(&mut self, outcome: Result<Principal, OperationError>, step: &mut Step<'_>) {
        match outcome {
            Ok(principal)
                if principal
                    .as_member()
                    .is_some_and(|m| m.credential() == Credential::Session) =>
            {
                let email = principal
                    .as_member()
                    .map(|m| m.email().to_owned())
                    .unwrap_or_default();
                self.logged_in(email, principal, step);
            }
            Ok(_) | Err(OperationError::NotAuthenticated(_)) => {
                self.session_hash = None;
                self.session.login_failed(
                    AppErrorCode::Unauthorized,
                    "unknown, expired or revoked session",
                );
                let services = &mut *step.services;
                let peer = step.conn.peer;
                services.metrics.app_logins_refused.add(1);
                let (_, gate) = services
                    .guards
                    .app_login_failed(None, peer.ip(), services.now);
                services.security.record(
                    services.now,
                    &ConnectionEvent::AppLoginFailed {
                        peer,
                        email: SESSION_TOKEN_ACCOUNT.into(),
                        why: "unknown, expired or revoked session token",
                        next: gate.name(),
                        account_failures: None,
                    },
                );
            }
            Err(e) => {
                self.session_hash = None;
                tracing::error!(error = %e, "store failed an app session lookup");
                self.session
                    .login_failed(AppErrorCode::Busy, "store unavailable; retry");
            }
        }
    }

    /// A login succeeded: the session answers, and every later operation acts for `principal`.
    fn logged_in(&mut self, email: String, principal: Principal, step: &mut Step<'_>) {
        let services = &mut *step.services;
        let peer = step.conn.peer;
        let org = principal
            .as_member()
            .map(|member| member.org().org().0.to_string())
            .unwrap_or_default();
        tracing::info!(shard = services.shard, %peer, %email, %org, "app logged in");
        services.guards.app_accounts().succeeded(&email, peer.ip());
        self.session.logged_in(email, org);
        self.principal = Some(principal);
        services.metrics.app_logins_ok.add(1);
        step.out.authenticated = true;
        step.out.deadline = Some(services.limits.app_idle_timeout);
    }

    /// The verdict of a password check.
    fn login_checked(
        &mut self,
        email: String,
        outcome: Result<LoginOutcome, OperationError>,
        step: &mut Step<'_>,
    ) {
        let refusal = match outcome {
            Ok(LoginOutcome::Verified(principal)) => {
                self.logged_in(email, principal, step);
                return;
            }
            Ok(LoginOutcome::Refused(refusal)) => refusal,
            Err(e) => {
                tracing::error!(error = %e, "store failed an app user lookup");
                self.session
                    .login_failed(AppErrorCode::Busy, "store unavailable; retry");
                return;
            }
        };
        let services = &mut *step.services;
        let peer = step.conn.peer;
        if refusal == LoginRefusal::UnusableHash {
            tracing::error!(%email, "stored password hash unreadable; reset this user's password");
        }
        self.session
            .login_failed(AppErrorCode::Unauthorized, "wrong email or password");
        services.metrics.app_logins_refused.add(1);
        let (account_failures, gate) =
            services
                .guards
                .app_login_failed(Some(&email), peer.ip(), services.now);
        services.security.record(
            services.now,
            &ConnectionEvent::AppLoginFailed {
                peer,
                email,
                why: refusal.why(),
                next: gate.name(),
                account_failures,
            },
        );
    }

    /// An event of a watched device: rendered once for every app that gets it.
    pub fn on_event(&mut self, event: &BusEvent) -> Delivery {
        if !self.is_logged_in() {
            return Delivery::Ignored;
        }
        let first = !self.session.has_output();
        self.session.send_json(event.rendered(render));
        Delivery::Queued { first }
    }

    /// Moves what the session framed into the outbox.
    pub fn flush(&mut self, step: &mut Step<'_>) {
        flush_into(&mut self.session, step.out);
    }

    /// The connection closes: a close frame saying why, and every subscription ends.
    pub fn on_close(&mut self, reason: &CloseReason, step: &mut Step<'_>) {
        self.session.close(reason);
        flush_into(&mut self.session, step.out);
        step.out
            .watch
            .extend(self.session.subscriptions().map(Watch::Unsubscribe));
    }
}

impl Default for AppWsSession {
    fn default() -> Self {
        Self::new()
    }
}

fn flush_into(session: &mut AppSession, out: &mut Outbox) {
    if session.has_output() {
        out.raw(&session.take_output());
    }
}

/// The app API's JSON form of a device event.
fn render(event: &DeviceEvent) -> String {
    let event = match event {
        DeviceEvent::Pin {
            device,
            pin,
            value,
            at_ms,
        } => AppEvent::Pin {
            device: *device,
            pin: pin.to_string(),
            values: value
                .split(|&b| b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
            at_ms: *at_ms,
        },
        DeviceEvent::Online { device } => AppEvent::Online { device: *device },
        DeviceEvent::Offline { device } => AppEvent::Offline { device: *device },
    };
    serde_json::to_string(&event).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode an app event");
        String::new()
    })
}
