//! The domain layer: [`Store`] turns every `portcullis_protocol::store::Request` into reads and
//! write batches on an [`Engine`], and owns the schema (key layouts in `keys`, value formats in
//! `records`), input validation and the durability class of each request.
//!
//! Durability: device creation, presence, info and property writes are `Durability::Sync` (on
//! disk before the reply); `WritePins` is one `Durability::Buffered` batch per request, made
//! durable by the server's periodic WAL sync. Read-modify-write requests on a device hold one of
//! [`LOCK_STRIPES`] mutexes picked by device id, so concurrent links cannot lose each other's
//! updates while different devices still commit in parallel (and share RocksDB's group commit).

mod keys;
mod records;
#[cfg(test)]
mod tests;

use crate::engine::{Cf, Durability, Engine, EngineError, WriteBatch};
use portcullis_protocol::body::{DeviceInfo, MAX_INFO_FIELD_LEN, PinAddr};
use portcullis_protocol::frame::MAX_WIRE_BODY_LEN;
use portcullis_protocol::store::{
    DeviceAuth, DeviceId, DeviceRecord, MAX_FRAME_LEN, MAX_LIST_PAGE, PinValue, PinWrite, Presence,
    PropertyValue, Request, Response, StoreError, TokenHash,
};
use records::{StoredDevice, StoredInfo, StoredValue, decode, encode};
use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// The data format this build reads and writes, stored under `meta/format_version`.
pub const FORMAT_VERSION: u32 = 1;
/// Longest org, template or device name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Longest property name, in bytes.
pub const MAX_PROPERTY_NAME_LEN: usize = 64;
/// Longest connection address, in bytes.
pub const MAX_ADDR_LEN: usize = 128;
/// Longest pin or property value: a value never exceeds a device frame body.
pub const MAX_VALUE_LEN: usize = MAX_WIRE_BODY_LEN;
/// Longest device-info string in bytes: the gateway cuts fields to [`MAX_INFO_FIELD_LEN`] bytes,
/// and a lossy UTF-8 conversion may turn each byte into a 3-byte replacement character.
pub const MAX_INFO_STRING_LEN: usize = 3 * MAX_INFO_FIELD_LEN;
/// Number of per-device mutexes.
pub const LOCK_STRIPES: usize = 64;
/// A `ListDevices` page stops early once its records take this many bytes, so the reply always
/// fits in one frame (10 000 records at the maximum field sizes would not).
const LIST_PAGE_BYTES: usize = MAX_FRAME_LEN / 2;
/// Devices rewritten per batch by `ResetPresence`.
const RESET_CHUNK: usize = 1024;

/// Why a store operation failed, by whose fault.
#[derive(Debug, Error)]
pub enum SchemaError {
    /// Peer: the request names something that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Peer: the request breaks a rule.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Store: the engine failed; the request had no effect.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Store: a stored value does not decode.
    #[error("corrupt {what} record under key {key}: {reason}")]
    Corrupt {
        what: &'static str,
        key: String,
        reason: String,
    },
    /// Store: the data directory was written by another format version.
    #[error(
        "the data directory has format version {found}; this build reads only version {supported}"
    )]
    UnknownFormat { found: String, supported: u32 },
    /// Internal: a bug or an exhausted counter.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<SchemaError> for StoreError {
    fn from(err: SchemaError) -> Self {
        match err {
            SchemaError::NotFound(what) => StoreError::NotFound(what),
            SchemaError::Invalid(why) => StoreError::Invalid(why),
            other => StoreError::Storage(other.to_string()),
        }
    }
}

type Result<T, E = SchemaError> = std::result::Result<T, E>;

/// The store's domain operations over an engine. Shared by all connection threads.
pub struct Store<E: Engine> {
    engine: E,
    /// Serializes device creation (id counter and token index).
    create_lock: Mutex<()>,
    /// Read-modify-write of one device record holds `device_locks[id % LOCK_STRIPES]`.
    device_locks: Vec<Mutex<()>>,
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The mutexes guard no data, only ordering, so a panic elsewhere leaves nothing inconsistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(SchemaError::Invalid(format!(
            "{field} must not be empty or blank"
        )));
    }
    if value.len() > max {
        return Err(SchemaError::Invalid(format!(
            "{field} is {} bytes long; the limit is {max}",
            value.len()
        )));
    }
    if let Some((at, _)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(SchemaError::Invalid(format!(
            "{field} contains a control character at byte {at}"
        )));
    }
    Ok(())
}

fn check_value(what: &str, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(SchemaError::Invalid(format!(
            "{what} is {} bytes long; the limit is {MAX_VALUE_LEN}",
            value.len()
        )));
    }
    Ok(())
}

fn check_info(info: &DeviceInfo) -> Result<()> {
    let fields = [
        ("info template", &info.template),
        ("info firmware", &info.firmware),
        ("info library version", &info.lib_version),
        ("info device type", &info.device_type),
    ];
    for (field, value) in fields {
        let Some(value) = value else { continue };
        if value.len() > MAX_INFO_STRING_LEN {
            return Err(SchemaError::Invalid(format!(
                "{field} is {} bytes long; the limit is {MAX_INFO_STRING_LEN}",
                value.len()
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(SchemaError::Invalid(format!(
                "{field} contains a control character"
            )));
        }
    }
    Ok(())
}

impl<E: Engine> Store<E> {
    /// Opens the store over `engine`: stamps a fresh database with [`FORMAT_VERSION`] (synced),
    /// and refuses one whose version is missing (with data present) or not ours.
    pub fn open(engine: E) -> Result<Self> {
        match engine.get(Cf::Meta, keys::FORMAT_VERSION)? {
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_slice())
                    .ok()
                    .map(u32::from_be_bytes);
                if found != Some(FORMAT_VERSION) {
                    let found = found.map_or_else(
                        || format!("<unreadable: {}>", keys::hex(&bytes)),
                        |v| v.to_string(),
                    );
                    return Err(SchemaError::UnknownFormat {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
            }
            None => {
                for cf in Cf::ALL {
                    if !engine.scan_range(cf, b"", None, 1)?.is_empty() {
                        return Err(SchemaError::UnknownFormat {
                            found: format!("none (but the {} family holds data)", cf.name()),
                            supported: FORMAT_VERSION,
                        });
                    }
                }
                let mut batch = WriteBatch::new();
                batch.put(Cf::Meta, keys::FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
                engine.write(batch, Durability::Sync)?;
            }
        }
        Ok(Self {
            engine,
            create_lock: Mutex::new(()),
            device_locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Makes every acknowledged write durable (the periodic syncer and shutdown call this).
    pub fn sync(&self) -> Result<()> {
        Ok(self.engine.sync_wal()?)
    }

    /// Executes one request. `Done` means the change is durable to its class's promise.
    pub fn handle(&self, request: Request) -> Result<Response, StoreError> {
        self.execute(request).map_err(|err| {
            if !matches!(err, SchemaError::NotFound(_) | SchemaError::Invalid(_)) {
                tracing::error!(%err, "request failed on the store side");
            }
            StoreError::from(err)
        })
    }

    fn execute(&self, request: Request) -> Result<Response> {
        match request {
            Request::Ping => Ok(Response::Pong),
            Request::CreateDevice {
                org,
                template,
                name,
                token_hash,
            } => self
                .create_device(org, template, name, token_hash)
                .map(Response::Device),
            Request::ListDevices { after, limit } => {
                self.list_devices(after, limit).map(Response::Devices)
            }
            Request::GetDevice { device } => {
                Ok(Response::Device(self.load_device(device)?.to_wire(device)))
            }
            Request::Authenticate { token_hash } => {
                self.authenticate(&token_hash).map(Response::Authenticated)
            }
            Request::ReadPins { device, pins } => self.read_pins(device, pins).map(Response::Pins),
            Request::WritePins { writes } => self.write_pins(writes).map(|()| Response::Done),
            Request::WriteProperty {
                device,
                pin,
                property,
                value,
                at_ms,
            } => self
                .write_property(device, pin, &property, value, at_ms)
                .map(|()| Response::Done),
            Request::ReadProperties { device } => {
                self.read_properties(device).map(Response::Properties)
            }
            Request::SetPresence {
                device,
                presence,
                at_ms,
            } => self
                .set_presence(device, presence, at_ms)
                .map(|()| Response::Done),
            Request::SetInfo {
                device,
                info,
                at_ms,
            } => self.set_info(device, info, at_ms).map(|()| Response::Done),
            Request::ResetPresence => self.reset_presence().map(|()| Response::Done),
        }
    }

    fn device_lock(&self, id: DeviceId) -> MutexGuard<'_, ()> {
        lock(&self.device_locks[(id % LOCK_STRIPES as u64) as usize])
    }

    fn find_device(&self, id: DeviceId) -> Result<Option<StoredDevice>> {
        let key = keys::device(id);
        self.engine
            .get(Cf::Devices, &key)?
            .map(|bytes| decode("device", &key, &bytes))
            .transpose()
    }

    fn load_device(&self, id: DeviceId) -> Result<StoredDevice> {
        self.find_device(id)?
            .ok_or_else(|| SchemaError::NotFound(format!("device {id}")))
    }

    fn require_device(&self, id: DeviceId) -> Result<()> {
        match self.engine.get(Cf::Devices, &keys::device(id))? {
            Some(_) => Ok(()),
            None => Err(SchemaError::NotFound(format!("device {id}"))),
        }
    }

    fn create_device(
        &self,
        org: String,
        template: String,
        name: String,
        token_hash: TokenHash,
    ) -> Result<DeviceRecord> {
        check_text("org", &org, MAX_NAME_LEN)?;
        check_text("template", &template, MAX_NAME_LEN)?;
        check_text("device name", &name, MAX_NAME_LEN)?;
        let _guard = lock(&self.create_lock);
        if self.engine.get(Cf::TokenIndex, &token_hash)?.is_some() {
            return Err(SchemaError::Invalid(
                "the token hash already belongs to a device".into(),
            ));
        }
        let id = match self.engine.get(Cf::Meta, keys::NEXT_DEVICE_ID)? {
            None => 1,
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| SchemaError::Corrupt {
                    what: "device id counter",
                    key: keys::hex(keys::NEXT_DEVICE_ID),
                    reason: "not 8 bytes".into(),
                })?,
        };
        let next = id
            .checked_add(1)
            .ok_or_else(|| SchemaError::Internal("device ids are exhausted".into()))?;
        let record = StoredDevice {
            org,
            template,
            name,
            token_hash,
            created_ms: now_ms(),
            sessions: 0,
            last_seen_ms: None,
            last_addr: None,
            info: None,
        };
        let mut batch = WriteBatch::new();
        batch.put(Cf::Devices, keys::device(id), encode(&record)?);
        batch.put(Cf::TokenIndex, token_hash, keys::device(id));
        batch.put(Cf::Meta, keys::NEXT_DEVICE_ID, next.to_be_bytes());
        self.engine.write(batch, Durability::Sync)?;
        tracing::info!(device = id, org = %record.org, template = %record.template, "device created");
        Ok(record.to_wire(id))
    }

    fn list_devices(&self, after: Option<DeviceId>, limit: u32) -> Result<Vec<DeviceRecord>> {
        let start = match after {
            None => 0,
            Some(id) => match id.checked_add(1) {
                Some(next) => next,
                None => return Ok(Vec::new()),
            },
        };
        let limit = limit.min(MAX_LIST_PAGE) as usize;
        let mut out = Vec::new();
        let mut bytes = 0;
        for (key, value) in
            self.engine
                .scan_range(Cf::Devices, &keys::device(start), None, limit)?
        {
            bytes += value.len();
            if bytes > LIST_PAGE_BYTES && !out.is_empty() {
                break;
            }
            let id = keys::parse_device(&key).ok_or_else(|| SchemaError::Corrupt {
                what: "device key",
                key: keys::hex(&key),
                reason: "not 8 bytes".into(),
            })?;
            out.push(decode::<StoredDevice>("device", &key, &value)?.to_wire(id));
        }
        Ok(out)
    }

    fn authenticate(&self, token_hash: &TokenHash) -> Result<Option<DeviceAuth>> {
        let Some(bytes) = self.engine.get(Cf::TokenIndex, token_hash)? else {
            return Ok(None);
        };
        let id = keys::parse_device(&bytes).ok_or_else(|| SchemaError::Corrupt {
            what: "token index",
            key: keys::hex(token_hash),
            reason: "value is not a device id".into(),
        })?;
        let device = self.find_device(id)?.ok_or_else(|| SchemaError::Corrupt {
            what: "token index",
            key: keys::hex(token_hash),
            reason: format!("points at missing device {id}"),
        })?;
        Ok(Some(DeviceAuth {
            device: id,
            org: device.org,
            template: device.template,
        }))
    }

    fn read_pins(&self, device: DeviceId, pins: Option<Vec<PinAddr>>) -> Result<Vec<PinValue>> {
        self.require_device(device)?;
        let decode_pin = |key: &[u8], value: &[u8], pin: PinAddr| {
            decode::<StoredValue>("pin value", key, value).map(|v| PinValue {
                pin,
                value: v.value,
                at_ms: v.at_ms,
            })
        };
        match pins {
            None => self
                .engine
                .scan_prefix(Cf::Pins, &keys::device(device))?
                .into_iter()
                .map(|(key, value)| {
                    let pin = keys::parse_pin(&key).ok_or_else(|| SchemaError::Corrupt {
                        what: "pin key",
                        key: keys::hex(&key),
                        reason: "not a pin address".into(),
                    })?;
                    decode_pin(&key, &value, pin)
                })
                .collect(),
            Some(pins) => {
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for pin in pins {
                    if !seen.insert(pin) {
                        continue;
                    }
                    let key = keys::pin(device, pin);
                    if let Some(value) = self.engine.get(Cf::Pins, &key)? {
                        out.push(decode_pin(&key, &value, pin)?);
                    }
                }
                Ok(out)
            }
        }
    }

    fn write_pins(&self, writes: Vec<PinWrite>) -> Result<()> {
        let mut known = BTreeSet::new();
        for w in &writes {
            check_value(
                &format!("value of device {} pin {}", w.device, w.pin),
                &w.value,
            )?;
            if known.insert(w.device) {
                self.require_device(w.device)?;
            }
        }
        let mut batch = WriteBatch::new();
        for w in writes {
            batch.put(
                Cf::Pins,
                keys::pin(w.device, w.pin),
                encode(&StoredValue {
                    value: w.value,
                    at_ms: w.at_ms,
                })?,
            );
        }
        Ok(self.engine.write(batch, Durability::Buffered)?)
    }

    fn write_property(
        &self,
        device: DeviceId,
        pin: PinAddr,
        property: &str,
        value: Vec<u8>,
        at_ms: u64,
    ) -> Result<()> {
        check_text("property name", property, MAX_PROPERTY_NAME_LEN)?;
        check_value(&format!("property {property} of pin {pin}"), &value)?;
        self.require_device(device)?;
        let mut batch = WriteBatch::new();
        batch.put(
            Cf::Properties,
            keys::property(device, pin, property),
            encode(&StoredValue { value, at_ms })?,
        );
        Ok(self.engine.write(batch, Durability::Sync)?)
    }

    fn read_properties(&self, device: DeviceId) -> Result<Vec<PropertyValue>> {
        self.require_device(device)?;
        self.engine
            .scan_prefix(Cf::Properties, &keys::device(device))?
            .into_iter()
            .map(|(key, value)| {
                let (pin, property) =
                    keys::parse_property(&key).ok_or_else(|| SchemaError::Corrupt {
                        what: "property key",
                        key: keys::hex(&key),
                        reason: "not a pin and property name".into(),
                    })?;
                let v: StoredValue = decode("property value", &key, &value)?;
                Ok(PropertyValue {
                    pin,
                    property: property.to_owned(),
                    value: v.value,
                    at_ms: v.at_ms,
                })
            })
            .collect()
    }

    /// Loads a device, lets `change` edit it, and writes it back synced, under its stripe lock.
    fn update_device(&self, id: DeviceId, change: impl FnOnce(&mut StoredDevice)) -> Result<()> {
        let _guard = self.device_lock(id);
        let mut record = self.load_device(id)?;
        change(&mut record);
        let mut batch = WriteBatch::new();
        batch.put(Cf::Devices, keys::device(id), encode(&record)?);
        Ok(self.engine.write(batch, Durability::Sync)?)
    }

    fn set_presence(&self, device: DeviceId, presence: Presence, at_ms: u64) -> Result<()> {
        if let Presence::Online { addr } = &presence
            && addr.len() > MAX_ADDR_LEN
        {
            return Err(SchemaError::Invalid(format!(
                "address is {} bytes long; the limit is {MAX_ADDR_LEN}",
                addr.len()
            )));
        }
        self.update_device(device, |d| {
            d.last_seen_ms = Some(at_ms);
            match presence {
                Presence::Online { addr } => {
                    d.sessions = d.sessions.saturating_add(1);
                    d.last_addr = Some(addr);
                }
                Presence::Offline => d.sessions = d.sessions.saturating_sub(1),
            }
        })
    }

    fn set_info(&self, device: DeviceId, info: DeviceInfo, at_ms: u64) -> Result<()> {
        check_info(&info)?;
        self.update_device(device, |d| {
            d.info = Some(StoredInfo::from(info));
            d.last_seen_ms = Some(at_ms);
        })
    }

    /// Sets `sessions = 0` on every device, a chunk of devices per batch, then syncs the WAL once.
    /// Not atomic across chunks, but idempotent: after a crash the gateway simply resets again.
    fn reset_presence(&self) -> Result<()> {
        let _guards: Vec<_> = self.device_locks.iter().map(lock).collect();
        let mut start = keys::device(0).to_vec();
        let mut reset = 0u64;
        loop {
            let page = self
                .engine
                .scan_range(Cf::Devices, &start, None, RESET_CHUNK)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            let mut batch = WriteBatch::new();
            for (key, value) in &page {
                let mut record: StoredDevice = decode("device", key, value)?;
                if record.sessions != 0 {
                    record.sessions = 0;
                    batch.put(Cf::Devices, key.clone(), encode(&record)?);
                    reset += 1;
                }
            }
            self.engine.write(batch, Durability::Buffered)?;
        }
        self.engine.sync_wal()?;
        tracing::info!(devices = reset, "presence reset");
        Ok(())
    }
}
