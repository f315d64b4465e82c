//! The domain layer: [`Store`] turns every `portcullis_protocol::store::Request` into reads and
//! write batches on an [`Engine`], and owns the schema (key layouts in `keys`, value formats in
//! `records`, the migration from older formats in `migrate`), input validation, the permission
//! decision (`acting`: every request that acts for someone is decided again here, against the
//! store's own records) and the durability class of each request.
//!
//! Reads ([`Store::read`]) go straight to the engine from any thread. Writes go through
//! [`Store::commit_group`], one group at a time (a mutex makes the group writer the only writer,
//! so read-modify-write requests need no per-device locks): every request of a group is
//! decided, validated and turned into a `group::Change`, the changes become one engine batch, and
//! the group is synced once if any request in it is of the sync class. `dispatch` maps each
//! request to the module of its concept (`devices`, `orgs`, `roles`, `users`, `sessions`,
//! `templates`, `apikeys`, `audit`, `pins`, `presence`, `history`).
//!
//! Durability classes: device creation and every device or account change, presence, info and
//! property writes are `Durability::Sync` (WAL fsynced before the reply); `WritePins` (pin values
//! and their history) and an API key's `last_used_ms` touch are `Durability::Buffered` (in the
//! WAL, so a process crash loses nothing; fsynced by the server's periodic WAL sync).

#[cfg(test)]
mod account_tests;
mod acting;
mod apikeys;
mod audit;
mod devices;
#[cfg(test)]
mod devices_tests;
mod dispatch;
mod group;
pub mod history;
#[cfg(test)]
mod history_tests;
mod keys;
pub mod migrate;
#[cfg(test)]
mod migrate_tests;
mod orgs;
mod pins;
mod presence;
#[cfg(test)]
mod presence_tests;
mod records;
mod revocations;
#[cfg(test)]
mod revocations_tests;
mod roles;
mod sealing;
mod sessions;
pub mod stats;
mod templates;
#[cfg(test)]
mod tests;
mod user_changes;
mod users;
#[cfg(test)]
mod users_tests;

use crate::engine::{Cf, Durability, Engine, EngineError, unix_ms};
use group::{Change, Group, View};
use history::Retention;
use portcullis_protocol::body::{DeviceInfo, MAX_INFO_FIELD_LEN};
use portcullis_protocol::frame::MAX_WIRE_BODY_LEN;
use portcullis_protocol::store::{
    Acting, MAX_FRAME_LEN, Request, RequestEnvelope, Response, StoreError,
};
use std::path::Path;
use std::sync::atomic::AtomicU32;
use std::sync::{Mutex, PoisonError};
use thiserror::Error;

/// The data format this build reads and writes, stored under `meta/format_version`.
pub const FORMAT_VERSION: u32 = 2;
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
    /// Peer: the acting party may see the subject but lacks this permission (or the request
    /// names no party, or one that cannot act).
    #[error("not permitted: {0}")]
    NotPermitted(String),
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
    /// Store: the data directory was written by a newer (or unknown) format version.
    #[error(
        "the data directory has format version {found}; this build reads version {supported} and migrates older ones. A newer format needs a newer portcullis-store build"
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
            SchemaError::NotPermitted(what) => StoreError::NotPermitted(what),
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

/// Whether a request writes (and so must go through [`Store::commit_group`]). `UseApiKey` is a
/// write: it may touch the key's `last_used_ms`.
pub fn is_write(request: &Request) -> bool {
    match request {
        Request::CreateDevice { .. }
        | Request::WritePins { .. }
        | Request::WriteProperty { .. }
        | Request::SetPresence { .. }
        | Request::SetInfo { .. }
        | Request::ResetPresence { .. }
        | Request::Reseal { .. }
        | Request::CreateUser { .. }
        | Request::CreateOrg { .. }
        | Request::UpdateOrg { .. }
        | Request::CreateRole { .. }
        | Request::UpdateRole { .. }
        | Request::DeleteRole { .. }
        | Request::UpdateUser { .. }
        | Request::DeleteUser { .. }
        | Request::SignUp { .. }
        | Request::CreateToken { .. }
        | Request::ConsumeToken { .. }
        | Request::CreateSession { .. }
        | Request::RevokeSessions { .. }
        | Request::CreateTemplate { .. }
        | Request::UpdateTemplate { .. }
        | Request::DeleteTemplate { .. }
        | Request::ReprovisionDevice { .. }
        | Request::DeleteDevice { .. }
        | Request::TransferDevice { .. }
        | Request::CreateApiKey { .. }
        | Request::UseApiKey { .. }
        | Request::RevokeApiKey { .. }
        | Request::Bootstrap { .. } => true,
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
        | Request::GetUser { .. }
        | Request::GetOrg { .. }
        | Request::ListOrgs { .. }
        | Request::ListRoles { .. }
        | Request::FindUser { .. }
        | Request::ListUsers { .. }
        | Request::ResolveSession { .. }
        | Request::GetTemplate { .. }
        | Request::ListTemplates { .. }
        | Request::ListApiKeys { .. }
        | Request::ReadAudit { .. }
        | Request::Revocations { .. } => false,
    }
}

/// One request with the party it acts for, as the store executes it (the envelope without its
/// id).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub acting: Option<Acting>,
    pub request: Request,
}

impl Call {
    /// A request acting for nobody (device traffic, the login steps).
    pub fn nobody(request: Request) -> Self {
        Self {
            acting: None,
            request,
        }
    }

    pub fn new(acting: Option<Acting>, request: Request) -> Self {
        Self { acting, request }
    }
}

impl From<RequestEnvelope> for Call {
    fn from(envelope: RequestEnvelope) -> Self {
        Self {
            acting: envelope.acting,
            request: envelope.request,
        }
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

/// The counter under meta `key` as `view` sees it (absent: `first`).
fn counter(view: &impl View, key: &'static [u8], first: u64) -> Result<u64> {
    match view.get(Cf::Meta, key)? {
        None => Ok(first),
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| SchemaError::Corrupt {
                what: "counter",
                key: keys::hex(key),
                reason: "not 8 bytes".into(),
            }),
    }
}

/// Hands out the next value of the counter under meta `key` (absent: `first`): returns it and
/// puts its successor into `change`. Read through the group's view, so two requests of one
/// group never get the same value. One request takes at most one value of each counter.
fn next_id(view: &impl View, change: &mut Change, key: &'static [u8], first: u64) -> Result<u64> {
    let id = counter(view, key, first)?;
    let next = id.checked_add(1).ok_or_else(|| {
        SchemaError::Internal(format!(
            "the counter {} is exhausted",
            String::from_utf8_lossy(key)
        ))
    })?;
    change.batch.put(Cf::Meta, key, next.to_be_bytes());
    Ok(id)
}

/// An account change: synced before the reply.
fn synced() -> Change {
    Change::new(Durability::Sync)
}

impl<E: Engine> Store<E> {
    /// Opens the store over `engine` with default options; see [`Store::open_with`].
    pub fn open(engine: E) -> Result<Self> {
        Self::open_with(engine, StoreOptions::default())
    }

    /// Opens the store over `engine`: stamps a fresh database with [`FORMAT_VERSION`] and the
    /// root organization (synced), migrates one of an older format (`migrate`), and refuses one
    /// whose version is missing (with data present), unreadable or newer than ours.
    pub fn open_with(engine: E, options: StoreOptions) -> Result<Self> {
        migrate::prepare(&engine)?;
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

    /// Executes one request acting for nobody (device traffic, the login steps); see
    /// [`Store::handle_as`].
    pub fn handle(&self, request: Request) -> Result<Response, StoreError> {
        self.handle_as(None, request)
    }

    /// Executes one request on its own, acting for `acting`: a read directly, a write as a group
    /// of one. The server batches writes through [`Store::commit_group`] instead; tests and
    /// tools use this.
    pub fn handle_as(
        &self,
        acting: Option<&Acting>,
        request: Request,
    ) -> Result<Response, StoreError> {
        if is_write(&request) {
            self.commit_group(vec![Call::new(acting.cloned(), request)], || {})
                .pop()
                .unwrap_or_else(|| Err(StoreError::Storage("a group lost its request".into())))
        } else {
            self.read(acting, request)
        }
    }

    /// Answers a request that writes nothing (see [`is_write`]) for `acting`, after deciding
    /// whether that party may ask it; never waits for a writer.
    pub fn read(&self, acting: Option<&Acting>, request: Request) -> Result<Response, StoreError> {
        self.execute_read(acting, request).map_err(report)
    }

    /// Commits write requests as one group: [`Store::apply_group`], then the group's WAL sync if
    /// it needs one ([`Store::finish_sync`]). `on_applied` runs in between. Returns one result
    /// per request, in order; a sync-class result is only returned once its sync is done.
    pub fn commit_group(
        &self,
        calls: Vec<Call>,
        on_applied: impl FnOnce(),
    ) -> Vec<Result<Response, StoreError>> {
        let Applied {
            mut results,
            needs_sync,
        } = self.apply_group(calls);
        on_applied();
        if needs_sync {
            let synced = self.engine.sync_wal().map_err(SchemaError::from);
            finish_sync(&synced, &mut results);
        }
        results
    }

    /// Decides, validates and writes a group of write requests as one engine batch, without a
    /// WAL sync (a `ResetPresence`, which pages over a node's sessions, and a `Reseal` step split
    /// the group around themselves). The writes are visible to readers when this returns; the
    /// caller must sync the WAL before handing out any result when [`Applied::needs_sync`] says
    /// so.
    pub fn apply_group(&self, calls: Vec<Call>) -> Applied {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.counters.group(calls.len());
        let mut results: Vec<Result<Response, StoreError>> = Vec::with_capacity(calls.len());
        let mut group = Group::new(&self.engine);
        let mut members: Vec<usize> = Vec::new();
        let mut needs_sync = false;
        for Call { acting, request } in calls {
            if matches!(
                request,
                Request::ResetPresence { .. } | Request::Reseal { .. }
            ) {
                needs_sync |= finish(group, &mut members, &mut results);
                group = Group::new(&self.engine);
                let step = self.apart_from_groups(acting.as_ref(), &request);
                // A reset syncs the WAL itself; a reseal step is synced with the group.
                needs_sync |= step.is_ok() && matches!(request, Request::Reseal { .. });
                results.push(step.map_err(report));
                continue;
            }
            match self.prepare(&group, acting.as_ref(), request) {
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

    /// A `ResetPresence` or a `Reseal` step: alone between groups, under the writer lock, so
    /// nothing writes while it reads and rewrites. A reset pages over a node's sessions and
    /// syncs once at its end; a reseal step is synced before its reply (a key the reseal reports
    /// unused is unused on disk too).
    fn apart_from_groups(&self, acting: Option<&Acting>, request: &Request) -> Result<Response> {
        acting::decide(&group::Committed(&self.engine), acting, request, now_ms())?;
        match request {
            Request::ResetPresence { node } => self.reset_presence(node).map(|()| Response::Done),
            Request::Reseal { after } => self.reseal_step(after.as_deref()).map(Response::Resealed),
            other => Err(SchemaError::Internal(format!(
                "{} is not a step apart from groups",
                other.name()
            ))),
        }
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
    if !matches!(
        err,
        SchemaError::NotFound(_) | SchemaError::Invalid(_) | SchemaError::NotPermitted(_)
    ) {
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
