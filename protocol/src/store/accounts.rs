//! The account records the store wire carries: organizations, roles, users and their
//! credentials, sessions, one-time tokens (email verification, invitation, password reset),
//! templates with their datastreams, API keys and audit entries, plus [`Acting`], the party a
//! request acts for, which the store resolves against its own records and decides on again with
//! `crate::authz::allows`.
//!
//! Secrets never cross this wire in the clear: session tokens, one-time tokens and API key
//! secrets travel as SHA-256 hashes ([`SecretHash`]), passwords as argon2id PHC strings of the
//! client hash, and only [`Credentials`] (the login check's input) carries one of those.

use super::records::DeviceId;
use crate::authz::{Member, OrgId, OrgPath, Permissions, RoleId, UserId};
use crate::body::PinAddr;
use serde::{Deserialize, Serialize};
use std::fmt;

/// SHA-256 of a random secret (session token, one-time token, API key secret).
pub type SecretHash = [u8; 32];

/// Longest template id, `TMPL` included (Blynk's are 12–16 characters).
pub const MAX_TEMPLATE_ID_LEN: usize = 32;
/// Datastreams one template may declare.
pub const MAX_DATASTREAMS: usize = 256;
/// Longest datastream units or default value, in bytes.
pub const MAX_DATASTREAM_TEXT_LEN: usize = 64;
/// Largest page of users, roles, templates, API keys, organizations or audit entries.
pub const MAX_ACCOUNT_PAGE: u32 = 1000;
/// Longest email address: the app API's limit, one constant for both.
pub use crate::app::MAX_EMAIL_LEN;

/// Whom a request acts for, with where the request came from (for the audit log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acting {
    pub party: Party,
    /// The client's address as the gateway saw it (`local` for the admin CLI).
    pub from: String,
}

/// The acting party as the store resolves it: it reads the user's organization and role (or the
/// key's permissions, cut to what its creator holds now) from its own records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Party {
    /// The local operator. Only an admin link may claim it.
    Operator,
    /// A logged-in user (by session).
    User(UserId),
    /// An API key (its creator acts, limited to the key's permissions).
    ApiKey(ApiKeyId),
}

/// An API key's public id (the part of the key before its secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ApiKeyId(pub u64);

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {}", self.0)
    }
}

/// An organization: a node of the tree under the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgRecord {
    pub id: OrgId,
    /// `None` only for the root.
    pub parent: Option<OrgId>,
    pub name: String,
    /// From the root down to this organization (resolved by the store when it answers).
    pub path: OrgPath,
    pub created_ms: u64,
}

/// A role: a built-in one (`org: None`, fixed permissions) or a custom role of one organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    pub id: RoleId,
    pub org: Option<OrgId>,
    pub name: String,
    pub permissions: Permissions,
}

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UserStatus {
    /// Invited by an admin; no password yet. Cannot log in.
    Invited,
    /// Signed up; the email is not verified yet. Cannot log in.
    Unverified,
    Active,
    /// Suspended by an admin: cannot log in, every session revoked.
    Suspended,
}

impl UserStatus {
    pub fn name(self) -> &'static str {
        match self {
            UserStatus::Invited => "invited",
            UserStatus::Unverified => "unverified",
            UserStatus::Active => "active",
            UserStatus::Suspended => "suspended",
        }
    }
}

/// A user as the store answers about them: never their password hash (see [`Credentials`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: UserId,
    /// Normalized ([`crate::app::normalize_email`]); unique.
    pub email: String,
    pub name: String,
    pub org: OrgId,
    pub role: RoleId,
    pub status: UserStatus,
    pub created_ms: u64,
}

/// What a login check needs: the user, the argon2id PHC string of their client hash (absent
/// while invited), and what they may do where (their organization path and role permissions).
/// Only the login check should look at `password_phc`, and nothing should print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub user: UserRecord,
    pub password_phc: Option<String>,
    pub member: Member,
}

/// A live session as [`super::Request::ResolveSession`] finds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSubject {
    pub user: UserRecord,
    pub member: Member,
    pub expires_ms: u64,
}

/// What a one-time token is for; a token found under another purpose does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TokenPurpose {
    /// Sign-up: verifying the email makes the account active.
    VerifyEmail,
    /// An invitation: setting a password makes the account active.
    AcceptInvite,
    /// A forgotten password: setting a new one revokes every session.
    ResetPassword,
}

/// The type of a datastream's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueType {
    Integer,
    Double,
    String,
}

/// A named value of a template, on a pin (Blynk's datastream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Datastream {
    /// Unique within its template; MQTT topics address it (`ds/<name>`).
    pub name: String,
    pub pin: PinAddr,
    pub value_type: ValueType,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub units: Option<String>,
    pub default: Option<String>,
}

/// A template id in Blynk's form: `TMPL` followed by 1 to 28 ASCII letters, digits, `_` or `-`,
/// as firmware declares it in `BLYNK_TEMPLATE_ID`. Built only through [`TemplateId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TemplateId(String);

impl TemplateId {
    /// Checks the form; the error says what is wrong with it.
    pub fn parse(id: &str) -> Result<TemplateId, String> {
        let Some(rest) = id.strip_prefix("TMPL") else {
            return Err(format!("template id {id:?} does not start with TMPL"));
        };
        if rest.is_empty() || id.len() > MAX_TEMPLATE_ID_LEN {
            return Err(format!(
                "template id {id:?} must be TMPL and 1 to {} more characters",
                MAX_TEMPLATE_ID_LEN - 4
            ));
        }
        if let Some(bad) = rest
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!(
                "template id {id:?} holds {bad:?}; only letters, digits, _ and - may follow TMPL"
            ));
        }
        Ok(TemplateId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TemplateId {
    type Error = String;
    fn try_from(id: String) -> Result<Self, String> {
        TemplateId::parse(&id)
    }
}

impl From<TemplateId> for String {
    fn from(id: TemplateId) -> String {
        id.0
    }
}

impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A template (Blynk's "product"): what devices of one kind declare and store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub id: TemplateId,
    pub org: OrgId,
    pub name: String,
    pub datastreams: Vec<Datastream>,
    pub created_ms: u64,
}

/// An API key as the store answers about it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub name: String,
    /// The creator: the key acts as them, limited to `permissions`.
    pub creator: UserId,
    pub org: OrgId,
    /// A subset of what the creator held when the key was made; at use, also cut to what the
    /// creator holds then.
    pub permissions: Permissions,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    /// Updated at most once a minute ([`API_KEY_TOUCH_INTERVAL_MS`]).
    pub last_used_ms: Option<u64>,
    pub revoked: bool,
}

/// A key's `last_used_ms` is rewritten only when it is older than this, so a busy key does not
/// cost a write per request.
pub const API_KEY_TOUCH_INTERVAL_MS: u64 = 60_000;

/// A key as [`super::Request::UseApiKey`] finds it: the record and whom it acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySubject {
    pub key: ApiKeyRecord,
    pub member: Member,
}

/// One line of the audit log, written by the store in the same batch as the change it records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1, without gaps; the log is append-only.
    pub seq: u64,
    pub at_ms: u64,
    /// Who: `operator`, `user 7 (a@b.c)`, `key 3 of user 7`, or `anonymous` for a sign-up.
    pub actor: String,
    pub actor_user: Option<UserId>,
    /// The organization the change happened in (what "view audit log" is checked against).
    pub org: OrgId,
    /// The request's name (`CreateDevice`, `UpdateUser`, ...).
    pub action: String,
    /// What it changed: `device 12`, `user 4`, `template TMPL1`, ...
    pub target: String,
    /// From which address.
    pub from: String,
    /// Details that are not secrets (new role, new name, permissions granted).
    pub detail: String,
}

/// How a one-time token is used by [`super::Request::ConsumeToken`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenUse {
    /// Verify the email of an unverified account: it becomes active.
    VerifyEmail,
    /// Accept an invitation by setting a password: the account becomes active.
    AcceptInvite { password_phc: String },
    /// Set a new password; every session of the user is revoked.
    ResetPassword { password_phc: String },
}

impl TokenUse {
    pub fn purpose(&self) -> TokenPurpose {
        match self {
            TokenUse::VerifyEmail => TokenPurpose::VerifyEmail,
            TokenUse::AcceptInvite { .. } => TokenPurpose::AcceptInvite,
            TokenUse::ResetPassword { .. } => TokenPurpose::ResetPassword,
        }
    }
}

/// Which devices a `ListDevices` covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceScope {
    /// Every device (the operator).
    All,
    /// The devices of one organization, or with `subtree` of it and every organization below.
    Org { org: OrgId, subtree: bool },
}

/// A change to a user ([`super::Request::UpdateUser`]); `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserChange {
    pub name: Option<String>,
    pub role: Option<RoleId>,
    /// Only `Active` and `Suspended` may be set this way; suspending revokes every session.
    pub status: Option<UserStatus>,
    /// A new password (the user's own change); revokes every other session.
    pub password_phc: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_ids_have_blynks_form() {
        assert!(TemplateId::parse("TMPL4f1kA5dE3").is_ok());
        assert!(TemplateId::parse("TMPL_a-1").is_ok());
        for bad in ["", "TMPL", "tmpl123", "XTMPL1", "TMPL 1", "TMPLé"] {
            assert!(TemplateId::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("TMPL{}", "a".repeat(MAX_TEMPLATE_ID_LEN - 3));
        assert!(TemplateId::parse(&long).is_err());
        assert!(TemplateId::parse(&long[..MAX_TEMPLATE_ID_LEN]).is_ok());
    }

    #[test]
    fn template_ids_are_checked_when_decoded() {
        let good = postcard::to_stdvec(&"TMPL1".to_owned()).expect("encodes");
        assert_eq!(
            postcard::from_bytes::<TemplateId>(&good).expect("decodes"),
            TemplateId::parse("TMPL1").expect("valid")
        );
        let bad = postcard::to_stdvec(&"nope".to_owned()).expect("encodes");
        assert!(postcard::from_bytes::<TemplateId>(&bad).is_err());
    }
}

/// How long the store keeps revocations for gateways to poll (`Request::Revocations`).
pub const REVOCATION_RETENTION_MS: u64 = 3_600_000;

/// Revocations polled at most per answer.
pub const MAX_REVOCATIONS_PAGE: u32 = 10_000;

/// Something whose live sessions must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Revoked {
    /// Re-provisioned or deleted: every live session of the device.
    Device(DeviceId),
    /// Suspended, deleted, password changed or logged out everywhere: every app session.
    User(UserId),
    /// One session ended (logout): the app connections logged in with it.
    Session(SecretHash),
}

/// An answer to `Request::Revocations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationPage {
    /// Ask again with `after: next`.
    pub next: u64,
    pub revoked: Vec<Revoked>,
    /// Set when entries after `after` were already dropped (older than
    /// [`REVOCATION_RETENTION_MS`]): the poller missed some and should end every session it
    /// cannot vouch for (a gateway that was cut off from the store that long).
    pub gap: bool,
}
