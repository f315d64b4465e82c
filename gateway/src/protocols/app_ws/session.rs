//! The app WebSocket session (`/api/ws`), sans-IO: the app's login state and the JSON requests of
//! `portcullis_protocol::app`, over the WebSocket layer (`conn/ws.rs`). [`AppSession::receive`]
//! takes received bytes and returns what must be done for the app (check a password, read a page
//! of devices, subscribe); everything the session says is framed into the layer's output, which
//! the reactor sends (through TLS when there is some). The adapter (`app_ws/mod.rs`) turns the
//! actions into worker jobs and subscriptions.
//!
//! Before login only `login` is accepted; one login may be in flight at a time. After login the
//! session remembers its user's organization (every device lookup is checked against it) and the
//! devices it subscribed to, at most `max_subscriptions`.

use crate::conn::CloseReason;
use crate::conn::ws::{WsLayer, WsLimits, WsRead};
use portcullis_protocol::app::{
    AppErrorCode, AppEvent, AppRequest, CLIENT_HASH_LEN, MAX_APP_MESSAGE_BYTES, MAX_EMAIL_LEN,
    MAX_SESSION_TOKEN_LEN,
};
use portcullis_protocol::store::DeviceId;
use std::collections::HashSet;

/// Initial read buffer of a WebSocket; it grows to [`MAX_APP_MESSAGE_BYTES`] when a message
/// needs it. tungstenite's default (128 KiB) would make each app cost as much as 700 devices.
const WS_READ_BUFFER_BYTES: usize = 1024;

/// What the shard must do for the session.
#[derive(Debug, PartialEq, Eq)]
pub enum AppAction {
    /// Look the user up and check the client hash (store, then a password worker).
    Login {
        id: u32,
        email: String,
        hash: String,
    },
    /// Resolve a session token (store, on an operations worker).
    LoginToken {
        id: u32,
        token: String,
    },
    /// Read a page of the organization's devices.
    ListDevices {
        id: u32,
        org: String,
        after: Option<DeviceId>,
    },
    /// Check the device belongs to the organization, then subscribe.
    Subscribe {
        id: u32,
        device: DeviceId,
        org: String,
    },
    /// Stop delivering the device's events to this connection (already answered).
    Unsubscribe {
        device: DeviceId,
    },
    Close(CloseReason),
}

#[derive(Debug)]
enum AppState {
    Anonymous,
    /// The password check of request `id` is running.
    Authenticating {
        id: u32,
    },
    LoggedIn(AppUser),
}

#[derive(Debug)]
struct AppUser {
    org: String,
    subscriptions: HashSet<DeviceId>,
    /// Subscribe requests waiting for the store; they count against the cap, so an app cannot
    /// queue unbounded store lookups by asking faster than they are answered.
    pending: usize,
}

pub struct AppSession {
    /// The WebSocket under the JSON; it also holds what waits to be sent.
    ws: WsLayer,
    state: AppState,
}

impl std::fmt::Debug for AppSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSession")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl AppSession {
    pub fn new() -> Self {
        Self {
            ws: WsLayer::server(WsLimits {
                read_buffer_bytes: WS_READ_BUFFER_BYTES,
                max_message_bytes: MAX_APP_MESSAGE_BYTES,
            }),
            state: AppState::Anonymous,
        }
    }

    pub fn is_logged_in(&self) -> bool {
        matches!(self.state, AppState::LoggedIn(_))
    }

    /// The devices this connection is subscribed to (to unsubscribe them when it closes).
    pub fn subscriptions(&self) -> impl Iterator<Item = DeviceId> + '_ {
        match &self.state {
            AppState::LoggedIn(user) => Some(user.subscriptions.iter().copied()),
            _ => None,
        }
        .into_iter()
        .flatten()
    }

    /// The logged-in user's organization: the only one whose devices it may see.
    pub fn org(&self) -> Option<&str> {
        match &self.state {
            AppState::LoggedIn(user) => Some(&user.org),
            _ => None,
        }
    }

    /// Whether bytes wait to be sent.
    pub fn has_output(&self) -> bool {
        self.ws.has_output()
    }

    /// Takes the bytes waiting to be sent (WebSocket-framed).
    pub fn take_output(&mut self) -> Vec<u8> {
        self.ws.take_output()
    }

    /// Handles received bytes (all of them are consumed: the WebSocket layer keeps partial
    /// frames).
    pub fn receive(
        &mut self,
        bytes: &[u8],
        max_subscriptions: usize,
        actions: &mut Vec<AppAction>,
    ) {
        let mut input = bytes;
        loop {
            match self.ws.read(&mut input) {
                WsRead::Text(text) => self.on_text(text.as_str(), max_subscriptions, actions),
                WsRead::Binary(_) => self.error(
                    None,
                    AppErrorCode::BadRequest,
                    "binary messages are not part of the app API; send JSON text",
                ),
                WsRead::NeedMore => return,
                WsRead::Close(reason) => {
                    actions.push(AppAction::Close(reason));
                    return;
                }
            }
        }
    }

    fn on_text(&mut self, text: &str, max_subscriptions: usize, actions: &mut Vec<AppAction>) {
        let request: AppRequest = match serde_json::from_str(text) {
            Ok(request) => request,
            Err(e) => {
                let id = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.get("id")?.as_u64())
                    .and_then(|id| u32::try_from(id).ok());
                return self.error(id, AppErrorCode::BadRequest, &format!("bad request: {e}"));
            }
        };
        let id = request.id();
        match (&mut self.state, request) {
            (AppState::Anonymous, AppRequest::Login { id, email, hash }) => {
                if email.is_empty() || email.len() > MAX_EMAIL_LEN {
                    return self.error(Some(id), AppErrorCode::BadRequest, "email length");
                }
                if hash.len() != CLIENT_HASH_LEN {
                    return self.error(
                        Some(id),
                        AppErrorCode::BadRequest,
                        "hash must be Base64(SHA256(password + SHA256(lowercase(email))))",
                    );
                }
                self.state = AppState::Authenticating { id };
                actions.push(AppAction::Login { id, email, hash });
            }
            (AppState::Anonymous, AppRequest::LoginToken { id, token }) => {
                if token.is_empty() || token.len() > MAX_SESSION_TOKEN_LEN {
                    return self.error(Some(id), AppErrorCode::BadRequest, "token length");
                }
                self.state = AppState::Authenticating { id };
                actions.push(AppAction::LoginToken { id, token });
            }
            (AppState::Authenticating { .. }, _) => self.error(
                Some(id),
                AppErrorCode::LoginFirst,
                "wait for the answer to login",
            ),
            (AppState::Anonymous, _) => {
                self.error(Some(id), AppErrorCode::LoginFirst, "log in first")
            }
            (AppState::LoggedIn(_), AppRequest::Login { .. } | AppRequest::LoginToken { .. }) => {
                self.error(Some(id), AppErrorCode::BadRequest, "already logged in")
            }
            (AppState::LoggedIn(user), AppRequest::Devices { id, after }) => {
                actions.push(AppAction::ListDevices {
                    id,
                    org: user.org.clone(),
                    after,
                })
            }
            (AppState::LoggedIn(user), AppRequest::Subscribe { id, device }) => {
                if user.subscriptions.len() + user.pending >= max_subscriptions {
                    let message = format!("at most {max_subscriptions} subscriptions");
                    return self.error(Some(id), AppErrorCode::LimitReached, &message);
                }
                user.pending += 1;
                actions.push(AppAction::Subscribe {
                    id,
                    device,
                    org: user.org.clone(),
                })
            }
            (AppState::LoggedIn(user), AppRequest::Unsubscribe { id, device }) => {
                if user.subscriptions.remove(&device) {
                    actions.push(AppAction::Unsubscribe { device });
                }
                self.send(&AppEvent::Unsubscribed { id, device });
            }
        }
    }

    /// The password check of the pending login matched.
    pub fn logged_in(&mut self, email: String, org: String) {
        let AppState::Authenticating { id } = self.state else {
            return;
        };
        self.send(&AppEvent::LoggedIn {
            id,
            email,
            org: org.clone(),
        });
        self.state = AppState::LoggedIn(AppUser {
            org,
            subscriptions: HashSet::new(),
            pending: 0,
        });
    }

    /// The pending login failed; the app may try again.
    pub fn login_failed(&mut self, code: AppErrorCode, message: &str) {
        let AppState::Authenticating { id } = self.state else {
            return;
        };
        self.state = AppState::Anonymous;
        self.error(Some(id), code, message);
    }

    /// The device was found in the user's organization: from now on its events come here.
    /// `false` if the session is no longer logged in (nothing to subscribe).
    pub fn subscribed(&mut self, id: u32, device: DeviceId, online: bool) -> bool {
        let AppState::LoggedIn(user) = &mut self.state else {
            return false;
        };
        user.pending = user.pending.saturating_sub(1);
        let added = user.subscriptions.insert(device);
        self.send(&AppEvent::Subscribed { id, device, online });
        added
    }

    /// The subscribe request `id` failed (device unknown or outside the organization, store
    /// trouble).
    pub fn subscribe_failed(&mut self, id: u32, code: AppErrorCode, message: &str) {
        if let AppState::LoggedIn(user) = &mut self.state {
            user.pending = user.pending.saturating_sub(1);
        }
        self.error(Some(id), code, message);
    }

    pub fn send(&mut self, event: &AppEvent) {
        match serde_json::to_string(event) {
            Ok(json) => self.send_json(json),
            Err(e) => tracing::error!(error = %e, "cannot encode an app event"),
        }
    }

    /// Sends an already encoded event (pushed events are encoded once for all subscribers).
    pub fn send_json(&mut self, json: impl Into<tungstenite::Utf8Bytes>) {
        self.ws.send_text(json);
    }

    /// Says goodbye with a WebSocket close frame naming the reason, before the gateway closes
    /// the connection (not when the peer left or the socket failed: nobody would read it).
    pub fn close(&mut self, reason: &CloseReason) {
        self.ws.close(reason);
    }

    pub fn error(&mut self, id: Option<u32>, code: AppErrorCode, message: &str) {
        self.send(&AppEvent::Error {
            id,
            code,
            message: message.to_owned(),
        });
    }
}

impl Default for AppSession {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
