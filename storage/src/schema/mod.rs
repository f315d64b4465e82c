//! The domain layer: [`Store`] turns every `portcullis_protocol::store::Request` into reads and
//! write batches on an [`Engine`], and owns the schema (key layouts in `keys`, value formats in
//! `records`), input validation and the durability class of each request.
//!
//! Reads ([`Store::read`]) go straight to the engine from any thread. Writes go through
//! [`Store::commit_group`], one group at a time (a mutex makes the group writer the only writer,
//! so read-modify-write requests need no per-device locks): every request of a group is
//! validated and turned into a `group::Change`, the changes become one engine batch, and the
//! group is synced once if any request in it is of the sync class.
//!
//! Durability classes: device and user creation, presence, info and property writes are
//! `Durability::Sync` (WAL fsynced before the reply); `WritePins` (pin values and their history)
//! is `Durability::Buffered` (in the WAL, so a process crash loses nothing; fsynced by the
//! server's periodic WAL sync).

mod devices;
#[cfg(test)]
mod devices_tests;
mod group;
pub mod history;
#[cfg(test)]
mod history_tests;
mod keys;
mod pins;
mod presence;
#[cfg(test)]
mod presence_tests;
mod records;
mod sealing;
pub mod stats;
#[cfg(test)]
mod tests;
mod users;
#[cfg(test)]
mod users_tests;

use crate::engine::{Cf, Durability, Engine, EngineError, WriteBatch, unix_ms};
use devices::{find_device, list_devices, load_device, require_device, set_info, write_property};
use group::{Change, Committed, Group, View};
use history::Retention;
use portcullis_protocol::body::{DeviceInfo, MAX_INFO_FIELD_LEN};
use portcullis_protocol::frame::MAX_WIRE_BODY_LEN;
use portcullis_protocol::store::{
    DeviceAuth, DeviceRecord, MAX_FRAME_LEN, Request, Response, StoreError, TokenHash,
};
use presence::set_presence;
use records::{StoredDevice, encode};
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::sync::{Mutex, PoisonError};
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
/// A `ListDevices` page stops early once its records take this many bytes, so the reply always
/// fits in one frame (10 000 records at the maximum field sizes would not).
const LIST_PAGE_BYTES: usize = MAX_FRAME_LEN / 2;
/// Device records read per engine scan while an org-filtered `ListDevices` looks for matches
/// (the page limit bounds the matches, not the records skipped, so the scan goes in chunks).
const LIST_SCAN_CHUNK: usize = 1024;

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

/// Store settings from the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long pin history is kept.
    pub retention: Retention,
}

/// The store's domain operations over an engine. Shared by all connection threads.
pub struct Store<E: Engine> {
    engine: E,
    options: StoreOptions,
    /// Held while a group is built and written: the group writer is the only writer.
    writer: Mutex<()>,
    /// Tells apart history points of one pin written in the same millisecond. It starts at a
    /// value of the process's own (`pins::history_seq_start`), not at 0: a point written after a
    /// restart must not land on the key of a point of the same pin and millisecond written by
    /// an earlier process, which would silently replace it.
    history_seq: AtomicU32,
    counters: stats::StoreCounters,
}

/// Whether a request writes (and so must go through [`Store::commit_group`]).
pub fn is_write(request: &Request) -> bool {
    match request {
        Request::CreateDevice { .. }
        | Request::WritePins { .. }
        | Request::WriteProperty { .. }
        | Request::SetPresence { .. }
        | Request::SetInfo { .. }
        | Request::ResetPresence { .. }
        | Request::Reseal { .. }
        | Request::CreateUser { .. } => true,
        Request::Ping
        | Request::ListDevices { .. }
        | Request::GetDevice { .. }
        | Request::Authenticate { .. }
        | Request::ReadPins { .. }
        | Request::ReadProperties { .. }
        | Request::ReadHistory { .. }
        | Request::Backup { .. }
        | Request::Stats
        | Request::ReloadKeys
        | Request::KeyUsage
        | Request::GetUser { .. } => false,
    }
}

/// Whether only an admin link (`ClientRole::Admin`) may send a request: the key operations and
/// backups, which an operator runs, never a gateway (a backup writes a directory of the
/// requester's choosing as the store's user; a gateway shard, possibly remote, has no business
/// asking for that). The server's rule of what each role may send builds on it
/// (`server::permissions`).
pub fn admin_only(request: &Request) -> bool {
    matches!(
        request,
        Request::ReloadKeys | Request::KeyUsage | Request::Reseal { .. } | Request::Backup { .. }
    )
}

fn now_ms() -> u64 {
    unix_ms()
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
    /// Opens the store over `engine` with default options; see [`Store::open_with`].
    pub fn open(engine: E) -> Result<Self> {
        Self::open_with(engine, StoreOptions::default())
    }

    /// Opens the store over `engine`: stamps a fresh database with [`FORMAT_VERSION`] (synced),
    /// and refuses one whose version is missing (with data present) or not ours.
    pub fn open_with(engine: E, options: StoreOptions) -> Result<Self> {
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
            options,
            writer: Mutex::new(()),
            history_seq: AtomicU32::new(pins::history_seq_start()),
            counters: stats::StoreCounters::default(),
        })
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Makes every acknowledged write durable (the periodic syncer and shutdown call this).
    pub fn sync(&self) -> Result<()> {
        let start = std::time::Instant::now();
        let synced = self.engine.sync_wal();
        self.counters.fsync(start.elapsed());
        Ok(synced?)
    }

    /// Executes one request on its own: a read directly, a write as a group of one. The server
    /// batches writes through [`Store::commit_group`] instead; tests and tools use this.
    pub fn handle(&self, request: Request) -> Result<Response, StoreError> {
        if is_write(&request) {
            self.commit_group(vec![request], || {})
                .pop()
                .unwrap_or_else(|| Err(StoreError::Storage("a group lost its request".into())))
        } else {
            self.read(request)
        }
    }

    /// Answers a request that writes nothing (see [`is_write`]); never waits for a writer.
    pub fn read(&self, request: Request) -> Result<Response, StoreError> {
        self.execute_read(request).map_err(report)
    }

    /// Commits write requests as one group: [`Store::apply_group`], then the group's WAL sync if
    /// it needs one ([`Store::finish_sync`]). `on_applied` runs in between. Returns one result
    /// per request, in order; a sync-class result is only returned once its sync is done.
    pub fn commit_group(
        &self,
        requests: Vec<Request>,
        on_applied: impl FnOnce(),
    ) -> Vec<Result<Response, StoreError>> {
        let Applied {
            mut results,
            needs_sync,
        } = self.apply_group(requests);
        on_applied();
        if needs_sync {
            let synced = self.engine.sync_wal().map_err(SchemaError::from);
            finish_sync(&synced, &mut results);
        }
        results
    }

    /// Validates and writes a group of write requests as one engine batch, without a WAL sync (a
    /// `ResetPresence`, which pages over a node's sessions, splits the group around itself). The
    /// writes are visible to readers when this returns; the caller must sync the WAL before
    /// handing out any result when [`Applied::needs_sync`] says so.
    pub fn apply_group(&self, requests: Vec<Request>) -> Applied {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.counters.group(requests.len());
        let mut results: Vec<Result<Response, StoreError>> = Vec::with_capacity(requests.len());
        let mut group = Group::new(&self.engine);
        let mut members: Vec<usize> = Vec::new();
        let mut needs_sync = false;
        for request in requests {
            if let Request::ResetPresence { node } = &request {
                needs_sync |= finish(group, &mut members, &mut results);
                group = Group::new(&self.engine);
                results.push(
                    self.reset_presence(node)
                        .map(|()| Response::Done)
                        .map_err(report),
                );
                continue;
            }
            if let Request::Reseal { after } = &request {
                // Alone between groups, under the writer lock: nothing writes while a step reads
                // and rewrites its values. Synced before its reply, so a key the reseal reports
                // unused is unused on disk too.
                needs_sync |= finish(group, &mut members, &mut results);
                group = Group::new(&self.engine);
                let step = self.reseal_step(after.as_deref());
                needs_sync |= step.is_ok();
                results.push(step.map(Response::Resealed).map_err(report));
                continue;
            }
            match self.prepare(&group, request) {
                Ok((response, change)) => {
                    group.absorb(change);
                    members.push(results.len());
                    results.push(Ok(response));
                }
                Err(err) => results.push(Err(report(err))),
            }
        }
        needs_sync |= finish(group, &mut members, &mut results);
        Applied {
            results,
            needs_sync,
        }
    }

    fn execute_read(&self, request: Request) -> Result<Response> {
        let view = Committed(&self.engine);
        match request {
            Request::Ping => Ok(Response::Pong),
            Request::ListDevices { after, limit, org } => {
                list_devices(&self.engine, after, limit, org.as_deref()).map(Response::Devices)
            }
            Request::GetDevice { device } => Ok(Response::Device(
                load_device(&view, device)?.to_wire(device),
            )),
            Request::Authenticate { token_hash } => {
                self.authenticate(&token_hash).map(Response::Authenticated)
            }
            Request::ReadPins { device, pins } => self.read_pins(device, pins).map(Response::Pins),
            Request::ReadProperties { device } => {
                self.read_properties(device).map(Response::Properties)
            }
            Request::ReadHistory {
                device,
                pin,
                from_ms,
                to_ms,
                step_ms,
                limit,
                after,
            } => {
                require_device(&view, device)?;
                let query = history::Query {
                    device,
                    pin,
                    from_ms,
                    to_ms,
                    step_ms,
                    limit,
                    after,
                };
                history::read(&self.engine, query, now_ms()).map(Response::History)
            }
            Request::Backup { dir } => self.backup(&dir),
            Request::Stats => Ok(Response::Stats(self.counters.snapshot())),
            Request::ReloadKeys => self.reload_keys().map(Response::Keys),
            Request::KeyUsage => self.key_usage().map(Response::Keys),
            Request::GetUser { email } => users::get_user(&view, &email).map(Response::User),
            write => Err(SchemaError::Internal(format!(
                "a write reached the read path: {write:?}"
            ))),
        }
    }

    /// Validates one write request against `view` and says what it would write.
    fn prepare(&self, view: &Group<'_, E>, request: Request) -> Result<(Response, Change)> {
        match request {
            Request::CreateDevice {
                org,
                template,
                name,
                token_hash,
            } => self
                .create_device(view, org, template, name, token_hash)
                .map(|(record, change)| (Response::Device(record), change)),
            Request::WritePins { writes } => {
                self.write_pins(view, writes).map(|c| (Response::Done, c))
            }
            Request::WriteProperty {
                device,
                pin,
                property,
                value,
                at_ms,
            } => write_property(view, device, pin, &property, value, at_ms)
                .map(|c| (Response::Done, c)),
            Request::SetPresence {
                device,
                presence,
                at_ms,
            } => set_presence(view, device, presence, at_ms).map(|c| (Response::Done, c)),
            Request::SetInfo {
                device,
                info,
                at_ms,
            } => set_info(view, device, info, at_ms).map(|c| (Response::Done, c)),
            Request::CreateUser {
                email,
                org,
                password_phc,
            } => users::create_user(view, &email, org, password_phc).map(|c| (Response::Done, c)),
            read => Err(SchemaError::Internal(format!(
                "a read reached the write path: {read:?}"
            ))),
        }
    }

    fn create_device(
        &self,
        view: &impl View,
        org: String,
        template: String,
        name: String,
        token_hash: TokenHash,
    ) -> Result<(DeviceRecord, Change)> {
        check_text("org", &org, MAX_NAME_LEN)?;
        check_text("template", &template, MAX_NAME_LEN)?;
        check_text("device name", &name, MAX_NAME_LEN)?;
        if view.get(Cf::TokenIndex, &token_hash)?.is_some() {
            return Err(SchemaError::Invalid(
                "the token hash already belongs to a device".into(),
            ));
        }
        let id = match view.get(Cf::Meta, keys::NEXT_DEVICE_ID)? {
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
        let mut change = Change::new(Durability::Sync);
        change
            .batch
            .put(Cf::Devices, keys::device(id), encode(&record)?);
        change
            .batch
            .put(Cf::TokenIndex, token_hash, keys::device(id));
        change
            .batch
            .put(Cf::Meta, keys::NEXT_DEVICE_ID, next.to_be_bytes());
        tracing::debug!(device = id, org = %record.org, template = %record.template, "device created");
        Ok((record.to_wire(id), change))
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
        let device =
            find_device(&Committed(&self.engine), id)?.ok_or_else(|| SchemaError::Corrupt {
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

    /// Writes a checkpoint of the database into `dir` (absolute, new, parent existing).
    fn backup(&self, dir: &str) -> Result<Response> {
        let path = Path::new(dir);
        if !path.is_absolute() {
            return Err(SchemaError::Invalid(format!(
                "the backup directory {dir:?} must be an absolute path"
            )));
        }
        if path.symlink_metadata().is_ok() {
            return Err(SchemaError::Invalid(format!(
                "{dir} already exists; a backup goes into a new directory"
            )));
        }
        if !path.parent().is_some_and(Path::is_dir) {
            return Err(SchemaError::Invalid(format!(
                "the parent directory of {dir} does not exist"
            )));
        }
        self.engine.checkpoint(path)?;
        let bytes = std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        tracing::info!(dir, bytes, "backup written");
        Ok(Response::BackedUp {
            dir: dir.to_owned(),
            bytes,
        })
    }
}

/// A group written by [`Store::apply_group`].
#[derive(Debug)]
pub struct Applied {
    /// One result per request, in order.
    pub results: Vec<Result<Response, StoreError>>,
    /// Whether a request of the group is of the sync class: no result may be handed out before a
    /// WAL sync.
    pub needs_sync: bool,
}

/// After a WAL sync for some groups: a failed sync turns every successful result into the
/// failure, since the promise of the sync class cannot be kept (the writes are in the WAL but
/// maybe not on disk).
pub fn finish_sync(synced: &Result<()>, results: &mut [Result<Response, StoreError>]) {
    if let Err(err) = synced {
        tracing::error!(%err, "WAL sync of a group failed");
        let why = format!("written but not synced to disk: {err}");
        for r in results.iter_mut().filter(|r| r.is_ok()) {
            *r = Err(StoreError::Storage(why.clone()));
        }
    }
}

/// Logs store-side failures (the peer's own mistakes are not news) and converts for the wire.
fn report(err: SchemaError) -> StoreError {
    if !matches!(err, SchemaError::NotFound(_) | SchemaError::Invalid(_)) {
        tracing::error!(%err, "request failed on the store side");
    }
    StoreError::from(err)
}

/// Writes the group (if it holds anything). On failure every member's result becomes the error.
/// Returns whether the group needs a WAL sync.
fn finish<E: Engine>(
    group: Group<'_, E>,
    members: &mut Vec<usize>,
    results: &mut [Result<Response, StoreError>],
) -> bool {
    if group.is_empty() {
        members.clear();
        return false;
    }
    let sync = group.needs_sync();
    match group.write() {
        Ok(()) => {
            members.clear();
            sync
        }
        Err(err) => {
            let err = report(SchemaError::from(err));
            for i in members.drain(..) {
                if let Some(r) = results.get_mut(i) {
                    *r = Err(err.clone());
                }
            }
            false
        }
    }
}
