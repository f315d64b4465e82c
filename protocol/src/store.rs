//! The gateway <-> store wire: message types and their framing.
//!
//! A frame is a 4-byte big-endian length followed by a postcard-encoded message. The length is
//! checked against [`MAX_FRAME_LEN`] before anything is allocated. A link opens with a
//! [`ClientHello`] / [`ServerHello`] exchange carrying [`WIRE_VERSION`]; after that the client sends
//! [`RequestEnvelope`]s and the server answers each with a [`ReplyEnvelope`] echoing the request id.
//! Many requests may be in flight on one link; replies come back in the order requests arrived.
//!
//! The store exposes domain operations, not raw key-value access: the schema is the store's.

use crate::body::{DeviceInfo, PinAddr};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use thiserror::Error;

/// Version of this wire format; both sides refuse a peer that speaks another one. Version 2
/// added users (`CreateUser`, `GetUser`) and the org filter of `ListDevices`.
pub const WIRE_VERSION: u16 = 2;

/// Size of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Largest frame either side accepts (the length prefix excluded).
pub const MAX_FRAME_LEN: usize = 4 * 1024 * 1024;

/// Largest page a `ListDevices` request may ask for, so a reply always fits in one frame.
pub const MAX_LIST_PAGE: u32 = 10_000;

/// Most raw points one `ReadHistory` reply carries; a longer range is paged (`more`).
pub const MAX_HISTORY_POINTS: u32 = 10_000;

/// Most buckets one downsampled `ReadHistory` may ask for ((to - from) / step).
pub const MAX_HISTORY_BUCKETS: u64 = 10_000;

/// Ranges of the store's tuning options, in one place because two sides check them: the store's
/// command line, and the gateway's configuration (which starts the store as a child with them),
/// so a value `portcullis check-config` accepts never stops the child store from starting.
pub mod option_ranges {
    use std::ops::RangeInclusive;

    /// `--sync-interval-ms` / `store.sync_interval_ms`: the WAL fsync interval.
    pub const SYNC_INTERVAL_MS: RangeInclusive<u64> = 1..=60_000;
    /// `--commit-window-us` / `store.commit_window_us`: how long a write group waits for more.
    pub const COMMIT_WINDOW_US: RangeInclusive<u64> = 0..=10_000;
    /// `--block-cache-mib` / `store.block_cache_mib`: RocksDB's block cache.
    pub const BLOCK_CACHE_MIB: RangeInclusive<u64> = 1..=65_536;
    /// `--history-retention-days`, per template too: about a hundred years at most.
    pub const HISTORY_RETENTION_DAYS: RangeInclusive<u64> = 0..=36_500;
}

/// Numeric device id, assigned by the store.
pub type DeviceId = u64;

/// SHA-256 of a device token; the store never sees the token itself.
pub type TokenHash = [u8; 32];

/// Who opens the link; the store logs it and may treat roles differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRole {
    /// A gateway shard (its index).
    GatewayShard(u16),
    /// The gateway's control thread (start-up, presence reset).
    GatewayControl,
    /// `portcullis admin`.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    pub version: u16,
    pub role: ClientRole,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerHello {
    Accepted { version: u16 },
    Refused { version: u16, reason: String },
}

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

/// One latest-value write of a device pin. `value` holds NUL-separated values for multi-value pins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinWrite {
    pub device: DeviceId,
    pub pin: PinAddr,
    pub value: Vec<u8>,
    /// Unix time in milliseconds when the gateway received it.
    pub at_ms: u64,
}

/// A stored pin value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinValue {
    pub pin: PinAddr,
    pub value: Vec<u8>,
    pub at_ms: u64,
}

/// A stored widget property of a pin (`label`, `color`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropertyValue {
    pub pin: PinAddr,
    pub property: String,
    pub value: Vec<u8>,
    pub at_ms: u64,
}

/// A user as the store knows it. `password_phc` is the argon2id PHC string of the client hash:
/// only the gateway's login check should ever look at it, and nothing should print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Normalized ([`crate::app::normalize_email`]); the user's key.
    pub email: String,
    /// The organization whose devices the user sees.
    pub org: String,
    pub password_phc: String,
    pub created_ms: u64,
}

/// A device as the store knows it. Never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub org: String,
    pub template: String,
    pub name: String,
    pub created_ms: u64,
    /// Live sessions the gateway reported; the device is online while this is above zero.
    pub sessions: u32,
    /// Last time the device was seen (login, info or disconnect), Unix ms.
    pub last_seen_ms: Option<u64>,
    /// Address of its last connection.
    pub last_addr: Option<String>,
    /// What its last info message said.
    pub info: Option<DeviceInfo>,
}

impl DeviceRecord {
    pub fn online(&self) -> bool {
        self.sessions > 0
    }
}

/// What a successful token lookup grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAuth {
    pub device: DeviceId,
    pub org: String,
    pub template: String,
}

/// Names one device session for presence: unique among the live sessions of one gateway run
/// (shard and connection generation), so a change the link re-sends after a store restart is
/// applied once, not twice.
pub type SessionTag = u64;

/// A presence change reported by the gateway. Both are idempotent: the store keeps the set of
/// live session tags per device, and the device's `sessions` is the size of that set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Presence {
    /// A session logged in from `addr`.
    Online { addr: String, session: SessionTag },
    /// A session ended.
    Offline { session: SessionTag },
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
    /// Marks every device offline (a gateway starting fresh has no sessions).
    ResetPresence,
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

/// Most entries one `Reseal` step looks at: each step holds the store's single writer for as
/// long as reading and rewriting this many values takes.
pub const MAX_RESEAL_BATCH: u32 = 1024;

/// Longest `Reseal` cursor the store accepts (a column family byte and one row key).
pub const MAX_RESEAL_CURSOR_LEN: usize = 1024;

/// How many stored values one key id seals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCount {
    pub id: u32,
    pub values: u64,
}

/// The encryption keys of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyStatus {
    /// The key new writes are sealed with (the highest id of the key file).
    pub current: u32,
    /// Every key id the store holds, ascending.
    pub loaded: Vec<u32>,
    /// Values sealed with each key id, ascending by id (only after a count: `KeyUsage`).
    pub in_use: Vec<KeyCount>,
}

/// What one `Reseal` step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResealProgress {
    /// Entries looked at.
    pub scanned: u64,
    /// Values re-sealed with the current key.
    pub resealed: u64,
    /// Expired history points (sealed with an older key) deleted instead of re-sealed.
    pub dropped: u64,
    /// Where the next step starts; `None` once every family was gone through.
    pub next: Option<Vec<u8>>,
}

/// Where a paged raw `ReadHistory` continues: just after the point at `at_ms` with sequence
/// `seq` (its place among the points of that millisecond). Clients pass back what they got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryCursor {
    pub at_ms: u64,
    pub seq: u32,
}

/// A histogram as the store reports it: per-bucket counts (not cumulative) for the ascending
/// upper `bounds`, plus one last bucket above the highest bound, and the sum of observations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsHistogram {
    pub bounds: Vec<u64>,
    pub counts: Vec<u64>,
    pub sum: u64,
}

/// The answer to `Stats`, counted since the store started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Write groups applied (one engine batch each).
    pub groups: u64,
    /// Requests per write group.
    pub group_requests: StatsHistogram,
    /// Duration of each WAL fsync that acknowledged sync-class writes, in microseconds.
    pub fsync_micros: StatsHistogram,
}

/// One stored historic value of a pin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub at_ms: u64,
    pub value: Vec<u8>,
}

/// The numeric values of one pin within `[start_ms, start_ms + step)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryBucket {
    pub start_ms: u64,
    /// Values in the bucket that parse as numbers (the first value of a multi-value write).
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
}

/// The answer to `ReadHistory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum History {
    Points {
        points: Vec<HistoryPoint>,
        /// Set when the range holds more points: pass it as `after` to get the next page.
        next: Option<HistoryCursor>,
    },
    Buckets(Vec<HistoryBucket>),
}

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

/// Framing failures. `TooLarge` and `Malformed` are the peer's fault.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Appends one framed message to `out`.
pub fn encode_frame<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    let mut body = postcard::to_extend(msg, std::mem::take(out))?;
    let len = body.len() - start - LENGTH_PREFIX;
    if len > MAX_FRAME_LEN {
        body.truncate(start);
        *out = body;
        return Err(WireError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    body[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    *out = body;
    Ok(())
}

/// Length of the frame at the front of `buf`, once its prefix is there; refuses oversize frames
/// before their bytes arrive.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(WireError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    Ok(Some(len))
}

/// Decodes the frame at the front of `buf`: `Ok(None)` while it is incomplete, otherwise the
/// message and the number of bytes it used.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, WireError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    let Some(payload) = buf.get(LENGTH_PREFIX..LENGTH_PREFIX + len) else {
        return Ok(None);
    };
    Ok(Some((postcard::from_bytes(payload)?, LENGTH_PREFIX + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::PinKind;

    #[test]
    fn frames_round_trip_in_any_fragmentation() {
        let msgs = vec![
            RequestEnvelope {
                id: 1,
                request: Request::Ping,
            },
            RequestEnvelope {
                id: 2,
                request: Request::WritePins {
                    writes: vec![PinWrite {
                        device: 7,
                        pin: PinAddr::new(PinKind::Virtual, 5),
                        value: b"42".to_vec(),
                        at_ms: 1,
                    }],
                },
            },
        ];
        let mut stream = Vec::new();
        for m in &msgs {
            encode_frame(m, &mut stream).expect("encodes");
        }
        for cut in 0..=stream.len() {
            let mut pending = stream[..cut].to_vec();
            let mut got = Vec::new();
            let mut rest = &stream[cut..];
            loop {
                match decode_frame::<RequestEnvelope>(&pending).expect("valid") {
                    Some((m, used)) => {
                        got.push(m);
                        pending.drain(..used);
                    }
                    None if !rest.is_empty() => {
                        pending.extend_from_slice(rest);
                        rest = &[];
                    }
                    None => break,
                }
            }
            assert_eq!(got, msgs);
        }
    }

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

    #[test]
    fn oversize_and_garbage_are_refused() {
        let huge = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
        assert!(matches!(
            decode_frame::<RequestEnvelope>(&huge),
            Err(WireError::TooLarge { .. })
        ));
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            decode_frame::<RequestEnvelope>(&garbage),
            Err(WireError::Malformed(_))
        ));
    }
}
