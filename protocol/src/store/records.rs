//! The values the store wire carries inside requests and replies: devices, pins, properties,
//! presence and its session tags, history, key status and the store's counters.

use super::accounts::TemplateId;
use super::hello::NodeName;
use crate::authz::{OrgId, UserId};
use crate::body::{DeviceInfo, PinAddr};
use serde::{Deserialize, Serialize};

/// Numeric device id, assigned by the store.
pub type DeviceId = u64;

/// SHA-256 of a device token; the store never sees the token itself.
pub type TokenHash = [u8; 32];

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

/// A device as the store knows it. Never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub org: OrgId,
    pub template: TemplateId,
    /// The user it belongs to, for "own devices" permissions; `None`: nobody's in particular.
    pub owner: Option<UserId>,
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
    pub org: OrgId,
    /// The device is admitted only if the template its info announces (if any) is this one.
    pub template: TemplateId,
}

/// Names one device session for presence: the gateway node that holds it, and a number unique
/// among that node's live sessions of one run (`local`: the gateway uses its shard and the
/// connection's generation), so a change the link re-sends after a store restart is applied once,
/// not twice, and a starting node can end exactly its own sessions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionTag {
    pub node: NodeName,
    pub local: u64,
}

/// A presence change reported by the gateway. Both are idempotent: the store keeps the set of
/// live session tags per device and node, and the device's `sessions` counts them all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Presence {
    /// A session logged in from `addr`.
    Online { addr: String, session: SessionTag },
    /// A session ended.
    Offline { session: SessionTag },
}

impl Presence {
    /// The session the change is about.
    pub fn session(&self) -> &SessionTag {
        match self {
            Presence::Online { session, .. } | Presence::Offline { session } => session,
        }
    }
}

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
