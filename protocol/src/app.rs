//! The app WebSocket API at [`APP_WS_PATH`]: the JSON messages an app or console exchanges with
//! the gateway once the WebSocket is open, and the Blynk client-side password hash it logs in
//! with. One definition for both ends, so the gateway and the load generator cannot drift apart.
//! `docs/app-api.md` documents the same messages for people writing a client.
//!
//! Every message is one WebSocket text frame holding one JSON object whose `type` names it.
//! Requests carry a client-chosen `id` that the answer echoes; events pushed by the gateway
//! (`pin`, `online`, `offline`) carry none.

use crate::store::DeviceId;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the gateway serves the app WebSocket (on the same ports as devices).
pub const APP_WS_PATH: &str = "/api/ws";

/// Longest text message the gateway accepts from an app, in bytes.
pub const MAX_APP_MESSAGE_BYTES: usize = 4096;

/// Longest email address accepted anywhere (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// Length of a client hash: Base64 (with padding) of a SHA-256 digest.
pub const CLIENT_HASH_LEN: usize = 44;

/// Longest session token a `login_token` may carry (they are 43 characters today; the bound
/// only keeps garbage off the store link).
pub const MAX_SESSION_TOKEN_LEN: usize = 128;

/// What an app sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AppRequest {
    /// Logs in with an email address and the client hash of the password ([`client_hash`]).
    Login {
        id: u32,
        email: String,
        hash: String,
    },
    /// Logs in with a session token that `POST /api/v1/auth/login` returned. The connection lasts
    /// as long as the session: a logout, password change, suspension or force-logout ends it.
    LoginToken { id: u32, token: String },
    /// The devices of the user's organization, ordered by id, starting after `after`.
    Devices {
        id: u32,
        #[serde(default)]
        after: Option<DeviceId>,
    },
    /// Starts pushing the device's pin writes and presence changes to this connection.
    Subscribe { id: u32, device: DeviceId },
    /// Stops pushing the device's events.
    Unsubscribe { id: u32, device: DeviceId },
}

impl AppRequest {
    pub fn id(&self) -> u32 {
        match self {
            AppRequest::Login { id, .. }
            | AppRequest::LoginToken { id, .. }
            | AppRequest::Devices { id, .. }
            | AppRequest::Subscribe { id, .. }
            | AppRequest::Unsubscribe { id, .. } => *id,
        }
    }
}

/// One device as an app sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDevice {
    pub id: DeviceId,
    pub name: String,
    pub template: String,
    pub online: bool,
}

/// Why a request failed; the snake_case name is the `code` field on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppErrorCode {
    /// Not JSON, not a known message, or a field out of range. The app's fault.
    BadRequest,
    /// Wrong email or password hash.
    Unauthorized,
    /// Too many failed logins from this address; try again later.
    Throttled,
    /// Only `login` is allowed before logging in.
    LoginFirst,
    /// The device exists but is outside the user's organization, or does not exist: the two are
    /// answered alike so an app cannot probe for device ids.
    NotFound,
    /// A per-connection limit (subscriptions) was reached.
    LimitReached,
    /// The gateway or its store is overloaded or unreachable; retry later.
    Busy,
}

/// What the gateway sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AppEvent {
    /// Answer to `login` and `login_token`.
    LoggedIn { id: u32, email: String, org: String },
    /// Answer to `devices`; `next` is the `after` of the following page, absent on the last one.
    Devices {
        id: u32,
        devices: Vec<AppDevice>,
        next: Option<DeviceId>,
    },
    /// Answer to `subscribe`: from now on the device's events are pushed.
    Subscribed {
        id: u32,
        device: DeviceId,
        online: bool,
    },
    /// Answer to `unsubscribe`.
    Unsubscribed { id: u32, device: DeviceId },
    /// A request failed; `id` is absent when the request could not be read at all.
    Error {
        id: Option<u32>,
        code: AppErrorCode,
        message: String,
    },
    /// A subscribed device wrote a pin (`pin` as `V5`, `D3`, `A0`; several values for a
    /// multi-value write). `at_ms` is when the gateway received it, Unix ms.
    Pin {
        device: DeviceId,
        pin: String,
        values: Vec<String>,
        at_ms: u64,
    },
    /// A subscribed device logged in.
    Online { device: DeviceId },
    /// A subscribed device's last session ended.
    Offline { device: DeviceId },
}

/// The Blynk client-side password hash: `Base64(SHA256(password ‖ SHA256(lowercase(email))))`.
/// Apps send this instead of the password; the server stores only an argon2id hash of it.
pub fn client_hash(password: &str, email: &str) -> String {
    let salt = Sha256::digest(email.to_lowercase().as_bytes());
    let mut digest = Sha256::new();
    digest.update(password.as_bytes());
    digest.update(salt);
    base64::engine::general_purpose::STANDARD.encode(digest.finalize())
}

/// The form emails are stored and compared in.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hash_follows_the_blynk_scheme() {
        // Computed independently: python3 -c "import hashlib,base64; s=hashlib.sha256(b'a@b.c').digest();
        // print(base64.b64encode(hashlib.sha256(b'secret'+s).digest()).decode())"
        let hash = client_hash("secret", "A@B.c");
        assert_eq!(hash.len(), CLIENT_HASH_LEN);
        assert_eq!(hash, client_hash("secret", "a@b.c"));
        assert_ne!(hash, client_hash("Secret", "a@b.c"));
        assert_eq!(hash, "sarIrBXpL1J9u4eyaVI2t3+dc1TVYXbDGJjLzjY8+rw=");
    }

    #[test]
    fn requests_and_events_use_the_documented_json() {
        let login: AppRequest =
            serde_json::from_str(r#"{"type":"login","id":1,"email":"a@b.c","hash":"h"}"#)
                .expect("a login");
        assert_eq!(
            login,
            AppRequest::Login {
                id: 1,
                email: "a@b.c".into(),
                hash: "h".into()
            }
        );
        let resume: AppRequest =
            serde_json::from_str(r#"{"type":"login_token","id":4,"token":"t"}"#)
                .expect("a token login");
        assert_eq!(
            resume,
            AppRequest::LoginToken {
                id: 4,
                token: "t".into()
            }
        );
        let devices: AppRequest =
            serde_json::from_str(r#"{"type":"devices","id":2}"#).expect("a devices request");
        assert_eq!(devices, AppRequest::Devices { id: 2, after: None });
        assert!(serde_json::from_str::<AppRequest>(r#"{"type":"subscribe","id":3}"#).is_err());
        let event = AppEvent::Pin {
            device: 7,
            pin: "V1".into(),
            values: vec!["42".into()],
            at_ms: 5,
        };
        assert_eq!(
            serde_json::to_string(&event).expect("serializes"),
            r#"{"type":"pin","device":7,"pin":"V1","values":["42"],"at_ms":5}"#
        );
        let error = AppEvent::Error {
            id: None,
            code: AppErrorCode::LoginFirst,
            message: "m".into(),
        };
        assert_eq!(
            serde_json::to_string(&error).expect("serializes"),
            r#"{"type":"error","id":null,"code":"login_first","message":"m"}"#
        );
    }
}
