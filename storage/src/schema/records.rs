//! The persisted value formats (postcard over serde) and their conversion to wire types.
//!
//! These structs are the on-disk format (version 2), deliberately separate from the wire types in
//! `portcullis_protocol::store`: the wire may change without rewriting the database, and a change
//! here is a format change (bump `FORMAT_VERSION` and migrate, as `migrate` does from version 1,
//! whose structs it keeps frozen). Enums are stored as their own enums, permissions as their
//! stable names, pins as a kind byte and a number, so no wire type's encoding leaks in. The
//! golden tests (`records_tests`) fail if an encoding changes by accident.

use super::SchemaError;
use super::keys::hex;
use portcullis_protocol::authz::{BuiltInRole, OrgId, Permission, Permissions, RoleId, UserId};
use portcullis_protocol::body::{DeviceInfo, PinAddr, PinKind};
use portcullis_protocol::store::{
    ApiKeyId, ApiKeyRecord, AuditEntry, Datastream, DeviceId, DeviceRecord, TemplateId,
    TemplateRecord, TokenHash, TokenPurpose, UserRecord, UserStatus, ValueType,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A device as stored under `devices/<id>`. The id is the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredDevice {
    pub org: u32,
    /// A template id (`TMPL…`), checked when read back.
    pub template: String,
    pub owner: Option<u64>,
    pub name: String,
    /// Kept so a re-provision or a deletion can remove the old index entry.
    pub token_hash: TokenHash,
    pub created_ms: u64,
    pub sessions: u32,
    pub last_seen_ms: Option<u64>,
    pub last_addr: Option<String>,
    pub info: Option<StoredInfo>,
}

/// The stored copy of [`DeviceInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredInfo {
    pub heartbeat_secs: Option<u16>,
    pub buff_in: Option<u16>,
    pub template: Option<String>,
    pub firmware: Option<String>,
    pub lib_version: Option<String>,
    pub device_type: Option<String>,
}

/// A latest value (of a pin or of a property).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredValue {
    pub value: Vec<u8>,
    pub at_ms: u64,
}

/// An organization under `orgs/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredOrg {
    pub parent: Option<u32>,
    pub name: String,
    pub created_ms: u64,
}

/// A set of permissions by stable name ([`Permission::name`]); an unknown name is corruption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredPermissions(pub Vec<String>);

impl StoredPermissions {
    pub(crate) fn of(permissions: Permissions) -> Self {
        Self(permissions.iter().map(|p| p.name().to_owned()).collect())
    }

    pub(crate) fn to_set(&self) -> Result<Permissions, SchemaError> {
        self.0
            .iter()
            .map(|name| {
                Permission::from_name(name).ok_or_else(|| SchemaError::Corrupt {
                    what: "permission set",
                    key: String::new(),
                    reason: format!("unknown permission {name:?}"),
                })
            })
            .collect()
    }
}

/// A custom role under `roles/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredRole {
    pub org: u32,
    pub name: String,
    pub permissions: StoredPermissions,
}

/// [`UserStatus`] on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredStatus {
    Invited,
    Unverified,
    Active,
    Suspended,
}

impl From<UserStatus> for StoredStatus {
    fn from(s: UserStatus) -> Self {
        match s {
            UserStatus::Invited => StoredStatus::Invited,
            UserStatus::Unverified => StoredStatus::Unverified,
            UserStatus::Active => StoredStatus::Active,
            UserStatus::Suspended => StoredStatus::Suspended,
        }
    }
}

impl From<StoredStatus> for UserStatus {
    fn from(s: StoredStatus) -> Self {
        match s {
            StoredStatus::Invited => UserStatus::Invited,
            StoredStatus::Unverified => UserStatus::Unverified,
            StoredStatus::Active => UserStatus::Active,
            StoredStatus::Suspended => UserStatus::Suspended,
        }
    }
}

/// A user under `users/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredUser {
    /// Normalized; `user_emails` maps it back to the id.
    pub email: String,
    pub name: String,
    pub org: u32,
    pub role: u32,
    pub status: StoredStatus,
    /// argon2id PHC string of the client hash; never the password or the client hash itself.
    pub password_phc: Option<String>,
    pub created_ms: u64,
}

impl StoredUser {
    pub(crate) fn to_wire(&self, id: UserId) -> UserRecord {
        UserRecord {
            id,
            email: self.email.clone(),
            name: self.name.clone(),
            org: OrgId(self.org),
            role: RoleId(self.role),
            status: self.status.into(),
            created_ms: self.created_ms,
        }
    }

    pub(crate) fn active(&self) -> bool {
        self.status == StoredStatus::Active
    }
}

/// A session under `sessions/<token hash>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSession {
    pub user: u64,
    pub expires_ms: u64,
}

/// [`TokenPurpose`] on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredPurpose {
    VerifyEmail,
    AcceptInvite,
    ResetPassword,
}

impl From<TokenPurpose> for StoredPurpose {
    fn from(p: TokenPurpose) -> Self {
        match p {
            TokenPurpose::VerifyEmail => StoredPurpose::VerifyEmail,
            TokenPurpose::AcceptInvite => StoredPurpose::AcceptInvite,
            TokenPurpose::ResetPassword => StoredPurpose::ResetPassword,
        }
    }
}

impl From<StoredPurpose> for TokenPurpose {
    fn from(p: StoredPurpose) -> Self {
        match p {
            StoredPurpose::VerifyEmail => TokenPurpose::VerifyEmail,
            StoredPurpose::AcceptInvite => TokenPurpose::AcceptInvite,
            StoredPurpose::ResetPassword => TokenPurpose::ResetPassword,
        }
    }
}

/// A one-time token under `one_time_tokens/<hash>`: used once, then deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredToken {
    pub user: u64,
    pub purpose: StoredPurpose,
    pub expires_ms: u64,
}

/// [`ValueType`] on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredValueType {
    Integer,
    Double,
    String,
}

/// A [`Datastream`] on disk: the pin as its kind byte (`a`/`d`/`v`) and number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredDatastream {
    pub name: String,
    pub pin_kind: u8,
    pub pin: u8,
    pub value_type: StoredValueType,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub units: Option<String>,
    pub default: Option<String>,
}

fn pin_kind_byte(kind: PinKind) -> u8 {
    match kind {
        PinKind::Analog => b'a',
        PinKind::Digital => b'd',
        PinKind::Virtual => b'v',
    }
}

impl From<&Datastream> for StoredDatastream {
    fn from(d: &Datastream) -> Self {
        StoredDatastream {
            name: d.name.clone(),
            pin_kind: pin_kind_byte(d.pin.kind),
            pin: d.pin.pin,
            value_type: match d.value_type {
                ValueType::Integer => StoredValueType::Integer,
                ValueType::Double => StoredValueType::Double,
                ValueType::String => StoredValueType::String,
            },
            min: d.min,
            max: d.max,
            units: d.units.clone(),
            default: d.default.clone(),
        }
    }
}

impl StoredDatastream {
    fn to_wire(&self) -> Result<Datastream, SchemaError> {
        let kind = match self.pin_kind {
            b'a' => PinKind::Analog,
            b'd' => PinKind::Digital,
            b'v' => PinKind::Virtual,
            other => {
                return Err(SchemaError::Corrupt {
                    what: "datastream",
                    key: self.name.clone(),
                    reason: format!("pin kind byte {other}"),
                });
            }
        };
        Ok(Datastream {
            name: self.name.clone(),
            pin: PinAddr::new(kind, self.pin),
            value_type: match self.value_type {
                StoredValueType::Integer => ValueType::Integer,
                StoredValueType::Double => ValueType::Double,
                StoredValueType::String => ValueType::String,
            },
            min: self.min,
            max: self.max,
            units: self.units.clone(),
            default: self.default.clone(),
        })
    }
}

/// A template under `templates/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredTemplate {
    pub org: u32,
    pub name: String,
    pub datastreams: Vec<StoredDatastream>,
    pub created_ms: u64,
}

impl StoredTemplate {
    pub(crate) fn to_wire(&self, id: TemplateId) -> Result<TemplateRecord, SchemaError> {
        Ok(TemplateRecord {
            id,
            org: OrgId(self.org),
            name: self.name.clone(),
            datastreams: self
                .datastreams
                .iter()
                .map(StoredDatastream::to_wire)
                .collect::<Result<_, _>>()?,
            created_ms: self.created_ms,
        })
    }
}

/// An API key under `api_keys/<id>`: its secret only as a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredApiKey {
    pub name: String,
    pub creator: u64,
    pub org: u32,
    pub permissions: StoredPermissions,
    pub secret_hash: [u8; 32],
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub last_used_ms: Option<u64>,
    pub revoked: bool,
}

impl StoredApiKey {
    pub(crate) fn to_wire(&self, id: ApiKeyId) -> Result<ApiKeyRecord, SchemaError> {
        Ok(ApiKeyRecord {
            id,
            name: self.name.clone(),
            creator: UserId(self.creator),
            org: OrgId(self.org),
            permissions: self.permissions.to_set()?,
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            last_used_ms: self.last_used_ms,
            revoked: self.revoked,
        })
    }
}

/// One audit entry under `audit/<seq>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredAudit {
    pub at_ms: u64,
    pub actor: String,
    pub actor_user: Option<u64>,
    pub org: u32,
    pub action: String,
    pub target: String,
    pub from: String,
    pub detail: String,
}

impl StoredAudit {
    pub(crate) fn to_wire(&self, seq: u64) -> AuditEntry {
        AuditEntry {
            seq,
            at_ms: self.at_ms,
            actor: self.actor.clone(),
            actor_user: self.actor_user.map(UserId),
            org: OrgId(self.org),
            action: self.action.clone(),
            target: self.target.clone(),
            from: self.from.clone(),
            detail: self.detail.clone(),
        }
    }
}

/// The permissions a user's role gives: a built-in role's fixed set, or a custom role's record
/// (read by the caller).
pub(crate) fn builtin_permissions(role: RoleId) -> Option<Permissions> {
    BuiltInRole::from_id(role).map(BuiltInRole::default_permissions)
}

impl StoredDevice {
    pub(crate) fn to_wire(&self, id: DeviceId) -> Result<DeviceRecord, SchemaError> {
        Ok(DeviceRecord {
            id,
            org: OrgId(self.org),
            template: self.template_id(id)?,
            owner: self.owner.map(UserId),
            name: self.name.clone(),
            created_ms: self.created_ms,
            sessions: self.sessions,
            last_seen_ms: self.last_seen_ms,
            last_addr: self.last_addr.clone(),
            info: self.info.clone().map(DeviceInfo::from),
        })
    }

    pub(crate) fn template_id(&self, id: DeviceId) -> Result<TemplateId, SchemaError> {
        TemplateId::parse(&self.template).map_err(|reason| SchemaError::Corrupt {
            what: "device",
            key: hex(&id.to_be_bytes()),
            reason,
        })
    }
}

impl From<StoredInfo> for DeviceInfo {
    fn from(s: StoredInfo) -> Self {
        DeviceInfo {
            heartbeat_secs: s.heartbeat_secs,
            buff_in: s.buff_in,
            template: s.template,
            firmware: s.firmware,
            lib_version: s.lib_version,
            device_type: s.device_type,
        }
    }
}

impl From<DeviceInfo> for StoredInfo {
    fn from(i: DeviceInfo) -> Self {
        StoredInfo {
            heartbeat_secs: i.heartbeat_secs,
            buff_in: i.buff_in,
            template: i.template,
            firmware: i.firmware,
            lib_version: i.lib_version,
            device_type: i.device_type,
        }
    }
}

/// Serializes a record. Only fails on a bug (postcard cannot fail on these types into a `Vec`).
pub(crate) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, SchemaError> {
    postcard::to_stdvec(record)
        .map_err(|e| SchemaError::Internal(format!("cannot encode a record: {e}")))
}

/// Deserializes a record read from `what` under `key`; garbage there is a corrupt store.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, SchemaError> {
    postcard::from_bytes(bytes).map_err(|e| SchemaError::Corrupt {
        what,
        key: hex(key),
        reason: e.to_string(),
    })
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
