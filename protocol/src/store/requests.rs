//! The requests a client may send and the store's replies: [`RequestEnvelope`]s numbered by the
//! client, each answered by a [`ReplyEnvelope`] echoing its id, in the order the requests arrived.
//! What each role may send is the store's rule (see [`super::ClientRole`]).

use super::accounts::{
    Acting, ApiKeyId, ApiKeyRecord, AuditEntry, Credentials, Datastream, DeviceScope, KeySubject,
    OrgRecord, RevocationPage, RoleRecord, SecretHash, SessionSubject, TemplateId, TemplateRecord,
    TokenPurpose, TokenUse, UserChange, UserRecord, UserStatus,
};
use super::hello::NodeName;
use super::records::{
    DeviceAuth, DeviceId, DeviceRecord, History, HistoryCursor, KeyStatus, PinValue, PinWrite,
    Presence, PropertyValue, ResealProgress, StoreStats, TokenHash,
};
use crate::authz::{OrgId, Permissions, RoleId, UserId};
use crate::body::{DeviceInfo, PinAddr};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest page a `ListDevices` request may ask for, so a reply always fits in one frame.
pub const MAX_LIST_PAGE: u32 = 10_000;

/// Most raw points one `ReadHistory` reply carries; a longer range is paged (`more`).
pub const MAX_HISTORY_POINTS: u32 = 10_000;

/// Most buckets one downsampled `ReadHistory` may ask for ((to - from) / step).
pub const MAX_HISTORY_BUCKETS: u64 = 10_000;

// Not `Eq`: templates carry floats (datastream bounds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEnvelope {
    pub id: u64,
    /// Whom the request acts for. Device traffic and the login steps act for nobody; every
    /// account and management request must name its party, which the store resolves and
    /// decides on again ([`Request::needs`]).
    pub acting: Option<Acting>,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyEnvelope {
    pub id: u64,
    pub result: Result<Response, StoreError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check; answered with `Pong`.
    Ping,
    /// Registers a device of `template` (which must belong to `org` or an organization above
    /// it); the caller generated the token and sends only its hash.
    CreateDevice {
        org: OrgId,
        template: TemplateId,
        owner: Option<UserId>,
        name: String,
        token_hash: TokenHash,
    },
    /// Devices ordered by id, starting after `after`, at most `limit` (capped at [`MAX_LIST_PAGE`]),
    /// within `scope`, and of those only the ones the acting party may see.
    ListDevices {
        after: Option<DeviceId>,
        limit: u32,
        scope: DeviceScope,
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
    /// Registers a user of `org` with `role`. `email` is stored normalized
    /// ([`crate::app::normalize_email`]); `password_phc`, when given, is the argon2id PHC string
    /// of the user's client hash (the store refuses anything else, so it never holds a plain or
    /// weakly hashed password). An `Invited` user has none and gets an `AcceptInvite` token
    /// (`invite`: its hash and expiry) in the same write. Answered with `User`; an email already
    /// registered is `Invalid`.
    CreateUser {
        email: String,
        name: String,
        org: OrgId,
        role: RoleId,
        status: UserStatus,
        password_phc: Option<String>,
        invite: Option<(SecretHash, u64)>,
    },
    /// The login check's input for an email (normalized by the store, so any case finds it):
    /// answered with `Credentials`, `None` when nobody has it. Acts for nobody.
    GetUser {
        email: String,
    },
    /// Creates an organization below `parent` (at most [`crate::authz::MAX_ORG_DEPTH`] deep).
    CreateOrg {
        parent: OrgId,
        name: String,
    },
    GetOrg {
        org: OrgId,
    },
    /// `org` and every organization below it the acting party may see, in id order.
    ListOrgs {
        org: OrgId,
    },
    /// Renames an organization and/or moves it below another (never below itself, never past
    /// the depth limit). Nothing that refers to it is rewritten: everything holds its id.
    UpdateOrg {
        org: OrgId,
        name: Option<String>,
        parent: Option<OrgId>,
    },
    /// A custom role of `org`; only permissions the acting party holds may be granted.
    CreateRole {
        org: OrgId,
        name: String,
        permissions: Permissions,
    },
    /// The built-in roles and the custom roles of `org`.
    ListRoles {
        org: OrgId,
    },
    UpdateRole {
        role: RoleId,
        name: Option<String>,
        permissions: Option<Permissions>,
    },
    /// Deletes a custom role nobody holds (built-in roles are never deleted).
    DeleteRole {
        role: RoleId,
    },
    /// A user by id; `None` when there is none (or the acting party may not see them).
    FindUser {
        user: UserId,
    },
    /// The users of `org`, by id after `after`, at most `limit` (capped at [`MAX_ACCOUNT_PAGE`]).
    ListUsers {
        org: OrgId,
        after: Option<UserId>,
        limit: u32,
    },
    /// Changes a user (role, status, name, password); suspension and a new password revoke the
    /// user's sessions in the same write.
    UpdateUser {
        user: UserId,
        change: UserChange,
    },
    /// Deletes a user, their sessions and their keys; the devices they owned keep no owner.
    DeleteUser {
        user: UserId,
    },
    /// Sign-up, acting for nobody: a new organization `org_name` below the root, its first user
    /// (`Unverified`, role Admin) and a `VerifyEmail` token, in one write.
    SignUp {
        email: String,
        name: String,
        org_name: String,
        password_phc: String,
        token_hash: SecretHash,
        expires_ms: u64,
        /// The client's address as the gateway saw it, for the audit entry (a request acting
        /// for nobody has no `Acting` to carry it).
        from: String,
    },
    /// A one-time token for `user` (a password reset, a new verification mail), replacing any
    /// earlier token of the same purpose. Acts for nobody: the caller proved nothing, and the
    /// token goes only to the user's own address.
    CreateToken {
        user: UserId,
        purpose: TokenPurpose,
        token_hash: SecretHash,
        expires_ms: u64,
    },
    /// Uses a one-time token once: an unknown, expired or already used token, or one of
    /// another purpose, is `NotFound`. Answered with the `User` it was for.
    ConsumeToken {
        token_hash: SecretHash,
        using: TokenUse,
        /// The client's address as the gateway saw it, for the audit entry.
        from: String,
    },
    /// Records a new session of an active user (the token's hash, never the token).
    CreateSession {
        user: UserId,
        token_hash: SecretHash,
        expires_ms: u64,
    },
    /// The session with this hash, if it exists, has not expired and its user is active.
    ResolveSession {
        token_hash: SecretHash,
    },
    /// Revokes one session (`only`: logout) or every session of `user` (force logout).
    RevokeSessions {
        user: UserId,
        only: Option<SecretHash>,
    },
    /// Creates a template of `org` with its datastreams; the id is unique store-wide.
    CreateTemplate {
        org: OrgId,
        id: TemplateId,
        name: String,
        datastreams: Vec<Datastream>,
    },
    GetTemplate {
        id: TemplateId,
    },
    /// The templates of `org` and of the organizations above it (which its devices may use).
    ListTemplates {
        org: OrgId,
    },
    UpdateTemplate {
        id: TemplateId,
        name: Option<String>,
        datastreams: Option<Vec<Datastream>>,
    },
    /// Deletes a template no device uses.
    DeleteTemplate {
        id: TemplateId,
    },
    /// Gives the device a new token: the old hash leaves the index in the same write, so the
    /// old token stops authenticating at once. Answered with the `Device`.
    ReprovisionDevice {
        device: DeviceId,
        token_hash: TokenHash,
    },
    /// Deletes a device with its token, pins, properties and history.
    DeleteDevice {
        device: DeviceId,
    },
    /// Moves a device to another organization of the acting party's subtree and/or gives it
    /// another owner (a user of its new organization).
    TransferDevice {
        device: DeviceId,
        org: Option<OrgId>,
        owner: Option<Option<UserId>>,
    },
    /// A key of the acting user, in their organization, with a subset of their permissions.
    CreateApiKey {
        name: String,
        permissions: Permissions,
        secret_hash: SecretHash,
        expires_ms: Option<u64>,
    },
    /// Finds a key by its id and secret hash for a request, acting for nobody: `None` when
    /// either is wrong or the key is revoked or expired. Touches `last_used_ms` (see
    /// [`super::accounts::API_KEY_TOUCH_INTERVAL_MS`]).
    UseApiKey {
        key: ApiKeyId,
        secret_hash: SecretHash,
    },
    ListApiKeys {
        org: OrgId,
    },
    RevokeApiKey {
        key: ApiKeyId,
    },
    /// Audit entries of `org` (with `subtree`, of the organizations below it too), by sequence
    /// after `after`, at most `limit`.
    ReadAudit {
        org: OrgId,
        subtree: bool,
        after: Option<u64>,
        limit: u32,
    },
    /// First start, acting as the operator: when no user exists yet, creates the root's first
    /// Admin with this email and password. Answered with `Bootstrapped(true)` when it did,
    /// `Bootstrapped(false)` when users already existed (nothing written).
    Bootstrap {
        email: String,
        password_phc: String,
    },
    /// What was revoked after sequence `after` (0: from the start of what is kept): devices
    /// re-provisioned or deleted, users suspended, deleted or logged out everywhere, single
    /// sessions ended. Every gateway polls this on its control link and closes the live sessions
    /// it holds of what is named, so a revocation reaches every shard of every node within a
    /// poll interval. Acts for nobody.
    Revocations {
        after: u64,
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
            Request::CreateOrg { .. } => "CreateOrg",
            Request::GetOrg { .. } => "GetOrg",
            Request::ListOrgs { .. } => "ListOrgs",
            Request::UpdateOrg { .. } => "UpdateOrg",
            Request::CreateRole { .. } => "CreateRole",
            Request::ListRoles { .. } => "ListRoles",
            Request::UpdateRole { .. } => "UpdateRole",
            Request::DeleteRole { .. } => "DeleteRole",
            Request::FindUser { .. } => "FindUser",
            Request::ListUsers { .. } => "ListUsers",
            Request::UpdateUser { .. } => "UpdateUser",
            Request::DeleteUser { .. } => "DeleteUser",
            Request::SignUp { .. } => "SignUp",
            Request::CreateToken { .. } => "CreateToken",
            Request::ConsumeToken { .. } => "ConsumeToken",
            Request::CreateSession { .. } => "CreateSession",
            Request::ResolveSession { .. } => "ResolveSession",
            Request::RevokeSessions { .. } => "RevokeSessions",
            Request::CreateTemplate { .. } => "CreateTemplate",
            Request::GetTemplate { .. } => "GetTemplate",
            Request::ListTemplates { .. } => "ListTemplates",
            Request::UpdateTemplate { .. } => "UpdateTemplate",
            Request::DeleteTemplate { .. } => "DeleteTemplate",
            Request::ReprovisionDevice { .. } => "ReprovisionDevice",
            Request::DeleteDevice { .. } => "DeleteDevice",
            Request::TransferDevice { .. } => "TransferDevice",
            Request::CreateApiKey { .. } => "CreateApiKey",
            Request::UseApiKey { .. } => "UseApiKey",
            Request::ListApiKeys { .. } => "ListApiKeys",
            Request::RevokeApiKey { .. } => "RevokeApiKey",
            Request::ReadAudit { .. } => "ReadAudit",
            Request::Bootstrap { .. } => "Bootstrap",
            Request::Revocations { .. } => "Revocations",
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
    Credentials(Option<Box<Credentials>>),
    /// A user (`FindUser`: `None` when there is none or it is hidden).
    User(Option<UserRecord>),
    Users(Vec<UserRecord>),
    Org(OrgRecord),
    Orgs(Vec<OrgRecord>),
    Role(RoleRecord),
    Roles(Vec<RoleRecord>),
    /// `ResolveSession`: `None` when the session is unknown, expired or its user inactive.
    Session(Option<Box<SessionSubject>>),
    Template(TemplateRecord),
    Templates(Vec<TemplateRecord>),
    ApiKey(ApiKeyRecord),
    ApiKeys(Vec<ApiKeyRecord>),
    /// `UseApiKey`: `None` when the id or secret is wrong, or the key revoked or expired.
    KeyUse(Option<Box<KeySubject>>),
    Audit(Vec<AuditEntry>),
    Bootstrapped(bool),
    Revocations(RevocationPage),
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
    /// The acting party may see the thing but lacks this permission (never said of something
    /// hidden from it: that is `NotFound`).
    #[error("not permitted: {0}")]
    NotPermitted(String),
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
            name: "A".into(),
            org: crate::authz::OrgId(1),
            role: crate::authz::RoleId(1),
            status: UserStatus::Active,
            password_phc: Some("$argon2id$".into()),
            invite: None,
        };
        assert_eq!(first_byte(&create), 18);
        assert_eq!(
            first_byte(&Request::GetUser {
                email: "a@b.c".into()
            }),
            19
        );
        let user = postcard::to_stdvec(&Response::Credentials(None)).expect("encodes");
        assert_eq!(user, [12, 0]);
        let bootstrap = Request::Bootstrap {
            email: "a@b.c".into(),
            password_phc: "$argon2id$".into(),
        };
        assert_eq!(first_byte(&bootstrap), 51);
    }
}
