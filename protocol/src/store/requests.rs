//! The requests a client may send and the store's replies: [`RequestEnvelope`]s numbered by the
//! client, each answered by a [`ReplyEnvelope`] echoing its id, in the order the requests arrived.
//! What each role may send is the store's rule (see [`super::ClientRole`]).

use super::hello::NodeName;
use super::records::{
    DeviceAuth, DeviceId, DeviceRecord, History, HistoryCursor, KeyStatus, PinValue, PinWrite,
    Presence, PropertyValue, ResealProgress, StoreStats, TokenHash, UserRecord,
};
use crate::body::{DeviceInfo, PinAddr};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest page a `ListDevices` request may ask for, so a reply always fits in one frame.
pub const MAX_LIST_PAGE: u32 = 10_000;

/// Most raw points one `ReadHistory` reply carries; a longer range is paged (`more`).
pub const MAX_HISTORY_POINTS: u32 = 10_000;

/// Most buckets one downsampled `ReadHistory` may ask for ((to - from) / step).
pub const MAX_HISTORY_BUCKETS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub id: u64,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyEnvelope {
    pub id: u64,
    pub result: Result<Response, StoreError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check; answered with `Pong`.
    Ping,
    /// Registers a device; the caller generated the token and sends only its hash.
    CreateDevice {
        org: String,
        template: String,
        name: String,
        token_hash: TokenHash,
    },
    /// Devices ordered by id, starting after `after`, at most `limit` (capped at [`MAX_LIST_PAGE`]).
    /// With `org`, only the devices of that organization (what a user of it may see).
    ListDevices {
        after: Option<DeviceId>,
        limit: u32,
        org: Option<String>,
    },
    GetDevice {
        device: DeviceId,
    },
    /// Looks a token up; `Authenticated(None)` when no device has it.
    Authenticate {
        token_hash: TokenHash,
    },
    /// Latest values; `pins: None` means every stored pin of the device.
    ReadPins {
        device: DeviceId,
        pins: Option<Vec<PinAddr>>,
    },
    /// A batch of telemetry writes from one gateway shard (one store write batch).
    WritePins {
        writes: Vec<PinWrite>,
    },
    WriteProperty {
        device: DeviceId,
        pin: PinAddr,
        property: String,
        value: Vec<u8>,
        at_ms: u64,
    },
    ReadProperties {
        device: DeviceId,
    },
    /// Presence change; `at_ms` becomes `last_seen_ms`.
    SetPresence {
        device: DeviceId,
        presence: Presence,
        at_ms: u64,
    },
    /// Records the info message of a device.
    SetInfo {
        device: DeviceId,
        info: DeviceInfo,
        at_ms: u64,
    },
    /// Ends every live session of gateway node `node` (a node starting fresh has none); the
    /// other nodes' sessions stay. A device-traffic link may name only its own node.
    ResetPresence {
        node: NodeName,
    },
    /// Stored values of one pin with `from_ms <= at_ms < to_ms`, oldest first. Without `step_ms`,
    /// raw points (at most `limit`, capped at [`MAX_HISTORY_POINTS`]); when the range holds
    /// more, the reply's `next` is a cursor: ask again with the same range and `after: next`.
    /// (Several points may share one millisecond, so the next page cannot start at a time.)
    /// With `step_ms`, one bucket per `step_ms` starting at `from_ms` with the min/max/avg of the
    /// numeric values in it (empty buckets are left out; at most [`MAX_HISTORY_BUCKETS`]);
    /// `after` must then be `None`.
    ReadHistory {
        device: DeviceId,
        pin: PinAddr,
        from_ms: u64,
        to_ms: u64,
        step_ms: Option<u64>,
        limit: u32,
        after: Option<HistoryCursor>,
    },
    /// Writes a consistent checkpoint of the whole database into `dir` (an absolute path that
    /// must not exist yet; its parent must) while the store keeps serving.
    Backup {
        dir: String,
    },
    /// The store's own counters: write groups, their sizes and WAL fsync latency.
    Stats,
    /// Admin links only. Re-reads the store's key file (same checks as at start) and adopts it:
    /// new writes are sealed with its current key. A file that is broken, or that drops a key
    /// some values may still need, is refused and the store keeps its keys.
    ReloadKeys,
    /// Admin links only. Counts the stored values sealed with each key id (a full read-only
    /// scan; serving goes on) and records which older keys no value needs any more.
    KeyUsage,
    /// Admin links only. Re-seals with the current key up to [`MAX_RESEAL_BATCH`] values sealed
    /// with an older one, from `after` (a cursor from the previous reply; `None` starts over),
    /// as one write of the group committer. Repeat with the reply's `next` until it is `None`.
    Reseal {
        after: Option<Vec<u8>>,
    },
    /// Registers a user. `email` is stored normalized ([`crate::app::normalize_email`]);
    /// `password_phc` is the argon2id PHC string of the user's client hash (the store refuses
    /// anything else, so it never holds a plain or weakly hashed password). Answered with `Done`;
    /// an email already registered is `Invalid`.
    CreateUser {
        email: String,
        org: String,
        password_phc: String,
    },
    /// Looks a user up by email (normalized by the store, so any case finds it).
    GetUser {
        email: String,
    },
}

impl Request {
    /// The variant's name, for messages and logs (never its contents, which may be secrets).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "Ping",
            Request::CreateDevice { .. } => "CreateDevice",
            Request::ListDevices { .. } => "ListDevices",
            Request::GetDevice { .. } => "GetDevice",
            Request::Authenticate { .. } => "Authenticate",
            Request::ReadPins { .. } => "ReadPins",
            Request::WritePins { .. } => "WritePins",
            Request::WriteProperty { .. } => "WriteProperty",
            Request::ReadProperties { .. } => "ReadProperties",
            Request::SetPresence { .. } => "SetPresence",
            Request::SetInfo { .. } => "SetInfo",
            Request::ResetPresence { .. } => "ResetPresence",
            Request::ReadHistory { .. } => "ReadHistory",
            Request::Backup { .. } => "Backup",
            Request::Stats => "Stats",
            Request::ReloadKeys => "ReloadKeys",
            Request::KeyUsage => "KeyUsage",
            Request::Reseal { .. } => "Reseal",
            Request::CreateUser { .. } => "CreateUser",
            Request::GetUser { .. } => "GetUser",
        }
    }
}

/// Most entries one `Reseal` step looks at: each step holds the store's single writer for as
/// long as reading and rewriting this many values takes.
pub const MAX_RESEAL_BATCH: u32 = 1024;

/// Longest `Reseal` cursor the store accepts (a column family byte and one row key).
pub const MAX_RESEAL_CURSOR_LEN: usize = 1024;

// Not `Eq`: history buckets carry floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Pong,
    /// The request was applied and is durable to its class's promise.
    Done,
    Device(DeviceRecord),
    Devices(Vec<DeviceRecord>),
    Authenticated(Option<DeviceAuth>),
    Pins(Vec<PinValue>),
    Properties(Vec<PropertyValue>),
    History(History),
    /// A checkpoint was written: where, and the bytes of its files.
    BackedUp {
        dir: String,
        bytes: u64,
    },
    Stats(StoreStats),
    /// The keys after `ReloadKeys`, or with their use after `KeyUsage`.
    Keys(KeyStatus),
    Resealed(ResealProgress),
    /// The answer to `GetUser`: `None` when no user has that email.
    User(Option<UserRecord>),
}

/// Why the store refused or failed a request, saying whose fault it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum StoreError {
    /// The caller asked for something that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The caller sent a request that breaks a rule (bad name, duplicate token, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The store's disk or engine failed; the request had no effect.
    #[error("storage failure: {0}")]
    Storage(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postcard encodes an enum variant as its index: new variants go at the end, so every
    /// older one keeps the bytes it had. This pins a few indices, old and new.
    #[test]
    fn variant_indices_stay_put() {
        let first_byte = |r: &Request| postcard::to_stdvec(r).expect("encodes")[0];
        assert_eq!(first_byte(&Request::Ping), 0);
        assert_eq!(first_byte(&Request::Reseal { after: None }), 17);
        let create = Request::CreateUser {
            email: "a@b.c".into(),
            org: "o".into(),
            password_phc: "$argon2id$".into(),
        };
        assert_eq!(first_byte(&create), 18);
        assert_eq!(
            first_byte(&Request::GetUser {
                email: "a@b.c".into()
            }),
            19
        );
        let user = postcard::to_stdvec(&Response::User(None)).expect("encodes");
        assert_eq!(user, [12, 0]);
    }
}
