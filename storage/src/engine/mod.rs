//! The key-value engine boundary: what the schema layer may ask of a storage engine, with no
//! RocksDB type in sight. It owns the column-family list ([`Cf`]), our own owned write batch
//! ([`WriteBatch`]: puts, deletes and range deletes), the two durability classes ([`Durability`]) and the [`Engine`] trait.
//!
//! `rocks` is the real engine; `memory` is a `BTreeMap` engine for unit tests (and, behind the
//! `test-util` feature, for other crates' tests). `conformance` holds one generic test per
//! behaviour and runs it against both, so the in-memory engine cannot quietly drift from RocksDB.

#[cfg(test)]
mod conformance;
mod keyring;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod rocks;
pub mod sealed;

use thiserror::Error;

/// The column families of the store. Adding one is backwards compatible (RocksDB creates missing
/// families on open); renaming or removing one is a format change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Store-wide metadata: the format version, the device id counter.
    Meta,
    /// Device id (8 bytes, big-endian) -> device record.
    Devices,
    /// SHA-256 of a device token (32 bytes) -> device id.
    TokenIndex,
    /// (device id, pin kind, pin) -> latest pin value.
    Pins,
    /// (device id, pin kind, pin, property name) -> latest property value.
    Properties,
    /// (device id, pin kind, pin, time ms, sequence) -> one historic pin value. An expiring
    /// family: see [`Cf::expires`].
    History,
    /// User id (u64 BE) -> user record (format 1: normalized email -> user record). Account
    /// data, like every family below: sealed like every other family when the store encrypts at
    /// rest.
    Users,
    /// Organization id (u32 BE) -> organization record.
    Orgs,
    /// What belongs to an organization: org id (u32 BE) · kind · member id -> empty (child
    /// organizations, users, roles, devices, templates, API keys; see `schema::keys`).
    OrgIndex,
    /// Custom role id (u32 BE) -> role record.
    Roles,
    /// Normalized email (UTF-8) -> user id (u64 BE).
    UserEmails,
    /// What belongs to a user: user id (u64 BE) · kind · rest (sessions, one-time tokens).
    UserIndex,
    /// SHA-256 of a session token -> session record.
    Sessions,
    /// SHA-256 of a one-time token -> token record.
    Tokens,
    /// Template id (UTF-8) -> template record.
    Templates,
    /// Template id length (u8) · template id · device id (u64 BE) -> empty: who uses a template.
    TemplateDevices,
    /// API key id (u64 BE) -> key record.
    ApiKeys,
    /// Audit sequence (u64 BE) -> audit entry. Append-only.
    Audit,
    /// Revocation sequence (u64 BE) -> expiry · revoked device, user or session (the feed
    /// gateways poll). An expiring family: see [`Cf::expires`].
    Revocations,
}

impl Cf {
    /// Every column family, in a fixed order. New families go at the end: a family's index
    /// here is part of the `Reseal` cursor a client may hold across an upgrade.
    pub const ALL: [Cf; 19] = [
        Cf::Meta,
        Cf::Devices,
        Cf::TokenIndex,
        Cf::Pins,
        Cf::Properties,
        Cf::History,
        Cf::Users,
        Cf::Orgs,
        Cf::OrgIndex,
        Cf::Roles,
        Cf::UserEmails,
        Cf::UserIndex,
        Cf::Sessions,
        Cf::Tokens,
        Cf::Templates,
        Cf::TemplateDevices,
        Cf::ApiKeys,
        Cf::Audit,
        Cf::Revocations,
    ];

    /// The on-disk name. Never change one: it is part of the data format.
    pub const fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Devices => "devices",
            Cf::TokenIndex => "token_index",
            Cf::Pins => "pins",
            Cf::Properties => "properties",
            Cf::History => "pin_history",
            Cf::Users => "users",
            Cf::Orgs => "orgs",
            Cf::OrgIndex => "org_index",
            Cf::Roles => "roles",
            Cf::UserEmails => "user_emails",
            Cf::UserIndex => "user_index",
            Cf::Sessions => "sessions",
            Cf::Tokens => "one_time_tokens",
            Cf::Templates => "templates",
            Cf::TemplateDevices => "template_devices",
            Cf::ApiKeys => "api_keys",
            Cf::Audit => "audit",
            Cf::Revocations => "revocations",
        }
    }

    /// Whether every value of this family starts with its expiry time (u64 big-endian, Unix
    /// milliseconds). An engine may then drop an entry once that time has passed, during its own
    /// background maintenance (RocksDB: a compaction filter), so retention never needs a scan;
    /// until it does, readers skip expired entries themselves ([`expired`]).
    pub const fn expires(self) -> bool {
        matches!(self, Cf::History | Cf::Revocations)
    }
}

/// Length of the expiry prefix of values in an expiring family ([`Cf::expires`]).
pub const EXPIRY_LEN: usize = 8;

/// Whether a value of an expiring family has expired at `now_ms`. A value too short to carry an
/// expiry is kept: dropping data we cannot interpret is never the engine's call.
pub fn expired(value: &[u8], now_ms: u64) -> bool {
    value
        .first_chunk::<EXPIRY_LEN>()
        .is_some_and(|e| u64::from_be_bytes(*e) <= now_ms)
}

/// Unix time in milliseconds (0 before 1970, saturating far in the future).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Engine settings from the store's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineOptions {
    /// Bytes of the block cache shared by every column family (uncompressed data blocks of the
    /// SST files: what point reads of cold keys hit).
    pub block_cache_bytes: usize,
    /// Whether opening may create a new, empty database. The store allows it only for a new
    /// data directory, so a database that went missing is never silently replaced.
    pub create_if_missing: bool,
}

/// Default block cache: 64 MiB.
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 64 * 1024 * 1024;

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            create_if_missing: true,
        }
    }
}

/// How durable a write must be before [`Engine::write`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The WAL is written and fsynced before the call returns: survives power loss.
    Sync,
    /// The WAL is written (the bytes are in the OS, so a process crash loses nothing) but fsynced
    /// later by the periodic syncer ([`Engine::sync_wal`]): a machine crash may lose the last
    /// sync interval of such writes.
    Buffered,
}

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        cf: Cf,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: Cf,
        key: Vec<u8>,
    },
    /// Deletes every key with `start <= key < end` (`start <= end`, or RocksDB refuses it).
    DeleteRange {
        cf: Cf,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

/// An owned list of puts and deletes applied atomically, in order (a later op on the same key
/// wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, cf: Cf, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Put {
            cf,
            key: key.into(),
            value: value.into(),
        });
    }

    pub fn delete(&mut self, cf: Cf, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Delete {
            cf,
            key: key.into(),
        });
    }

    /// Deletes every key of `cf` in `[start, end)` (a device's pins or history), at the cost of
    /// one operation whatever the number of keys.
    pub fn delete_range(&mut self, cf: Cf, start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) {
        self.ops.push(Op::DeleteRange {
            cf,
            start: start.into(),
            end: end.into(),
        });
    }

    /// Appends an operation built elsewhere (group commit moves ops between batches).
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }
}

/// A key and its value, both owned.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Engine failures. Always the store's fault (disk, engine, or a bug), never the peer's.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The engine reported an error (IO, corruption, a failed fsync, ...).
    #[error("engine failure: {0}")]
    Backend(String),
    /// The engine refused to open its data directory.
    #[error("cannot open {path}: {reason}")]
    Open { path: String, reason: String },
    /// A column family the schema needs is missing from an open engine (a bug).
    #[error("column family {0:?} is not open")]
    MissingCf(&'static str),
    /// Encryption at rest refused the database or a value (wrong or missing key, tampering).
    #[error("encryption at rest: {0}")]
    Sealing(String),
    /// The engine cannot do this at all (the in-memory engine has no files to checkpoint).
    #[error("not supported by this engine: {0}")]
    Unsupported(&'static str),
}

/// A sorted key-value store with column families, atomic batches and an explicit WAL sync.
///
/// Implementations are shared between connection threads, hence `Send + Sync`; every method takes
/// `&self`. Reads see every write that returned before they started.
pub trait Engine: Send + Sync + 'static {
    /// The value under `key`, if any.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Applies `batch` atomically with the given durability. An empty batch is a no-op.
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), EngineError>;

    /// Up to `limit` entries with `start <= key` and, when `end` is given, `key < end`, in
    /// ascending key order. This is the paging primitive.
    fn scan_range(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError>;

    /// Every entry whose key starts with `prefix`, in ascending key order. Callers use it only for
    /// bounded prefixes (one device's pins), never for a whole column family.
    fn scan_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<KeyValue>, EngineError> {
        let end = prefix_successor(prefix);
        self.scan_range(cf, prefix, end.as_deref(), usize::MAX)
    }

    /// Makes every write that returned so far durable (fsyncs the WAL).
    fn sync_wal(&self) -> Result<(), EngineError>;

    /// Runs the engine's maintenance over all of `cf` now (RocksDB: a manual compaction), which
    /// among other things drops expired entries of an expiring family. For tests and operators;
    /// the engine also does this on its own schedule.
    fn compact(&self, cf: Cf) -> Result<(), EngineError>;

    /// Writes a consistent copy of the whole database, as of one instant, into `dir`, which must
    /// not exist yet. Writers are not stopped. The copy opens as a database of its own.
    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), EngineError>;

    /// Encryption at rest, when this engine seals values (only [`sealed::Sealed`] with a key
    /// file does): key reloads, key counts and re-sealing.
    fn sealing(&self) -> Option<&dyn sealed::Sealing> {
        None
    }
}

/// A shared engine is an engine (tests keep a handle to inspect it; tools may share one).
impl<E: Engine> Engine for std::sync::Arc<E> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        (**self).get(cf, key)
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), EngineError> {
        (**self).write(batch, durability)
    }

    fn scan_range(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        (**self).scan_range(cf, start, end, limit)
    }

    fn scan_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<KeyValue>, EngineError> {
        (**self).scan_prefix(cf, prefix)
    }

    fn sync_wal(&self) -> Result<(), EngineError> {
        (**self).sync_wal()
    }

    fn compact(&self, cf: Cf) -> Result<(), EngineError> {
        (**self).compact(cf)
    }

    fn checkpoint(&self, dir: &std::path::Path) -> Result<(), EngineError> {
        (**self).checkpoint(dir)
    }

    fn sealing(&self) -> Option<&dyn sealed::Sealing> {
        (**self).sealing()
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None` when no such key
/// exists (the prefix is empty or all `0xff`).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last != u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_handles_carry_and_saturation() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
        assert_eq!(prefix_successor(&[]), None);
    }

    #[test]
    fn cf_names_are_distinct() {
        let mut names: Vec<_> = Cf::ALL.iter().map(|cf| cf.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Cf::ALL.len());
    }
}
