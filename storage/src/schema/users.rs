//! Users: `users` records by id, the `user_emails` index from the normalized email to the id
//! (so any case finds a user and two spellings are never two users), and the `org_index`
//! entries `u` listing an organization's users. This module owns the rules a user record must
//! meet — a plausible email address, a name, a password that is an argon2id PHC string — and the
//! requests that create users (`CreateUser`, `SignUp`, `Bootstrap`) and read them (`GetUser`,
//! the login check's input; `FindUser`, `ListUsers`). Changing and deleting users is
//! `user_changes.rs`. The PHC rule is the store's own line of defence: whatever a buggy or
//! hostile client sends, the store never holds a plain or weakly hashed password.

use super::acting::Who;
use super::acting::permissions_of_role;
use super::audit;
use super::group::{Change, View};
use super::orgs::{insert_org, load_path};
use super::records::{StoredStatus, StoredToken, StoredUser, decode, encode};
use super::roles::assignable;
use super::sessions::put_token;
use super::{MAX_NAME_LEN, Result, SchemaError, check_text, keys, next_id, synced};
use crate::engine::Cf;
use portcullis_protocol::app::normalize_email;
use portcullis_protocol::authz::{BuiltInRole, Member, OrgId, OrgPath, RoleId, UserId};
use portcullis_protocol::store::{
    Credentials, MAX_ACCOUNT_PAGE, MAX_EMAIL_LEN, Response, SecretHash, TokenPurpose, UserStatus,
};
/// How every accepted password hash begins: argon2id, in PHC string format. Other argon2
/// variants and other algorithms are refused, so a weak hash can never be stored by mistake.
pub const PHC_PREFIX: &str = "$argon2id$";

/// Longest PHC string accepted, in bytes. An argon2id PHC with a 16-byte salt and a 32-byte
/// hash at any sane parameters is about 100 bytes; this leaves room for larger salts or
/// outputs while keeping user records small and bounded.
pub const MAX_PHC_LEN: usize = 256;

/// Checks a normalized email: non-empty, at most [`MAX_EMAIL_LEN`] bytes, exactly one `@`
/// with text on both sides, and no whitespace or control characters. Deliberately not a full
/// RFC 5322 parser: the goal is a key that is unambiguous and safe to print, and verification
/// mail (later) proves the address is real.
pub(super) fn check_email(email: &str) -> Result<()> {
    if email.is_empty() {
        return Err(SchemaError::Invalid("the email must not be empty".into()));
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(SchemaError::Invalid(format!(
            "the email is {} bytes long; the limit is {MAX_EMAIL_LEN}",
            email.len()
        )));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SchemaError::Invalid(
            "the email must not contain spaces or control characters".into(),
        ));
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(())
        }
        _ => Err(SchemaError::Invalid(format!(
            "{email:?} is not an email address: it needs exactly one '@' with text on both sides"
        ))),
    }
}

/// Checks that `phc` is an argon2id PHC string of bounded length (printable ASCII, as PHC
/// strings are).
pub(super) fn check_phc(phc: &str) -> Result<()> {
    if !phc.starts_with(PHC_PREFIX) {
        return Err(SchemaError::Invalid(format!(
            "the password must be an argon2id PHC string (starting with {PHC_PREFIX}); the store keeps no other kind"
        )));
    }
    if phc.len() > MAX_PHC_LEN {
        return Err(SchemaError::Invalid(format!(
            "the password hash is {} bytes long; the limit is {MAX_PHC_LEN}",
            phc.len()
        )));
    }
    if !phc.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SchemaError::Invalid(
            "the password hash must be printable ASCII".into(),
        ));
    }
    Ok(())
}

pub(super) fn find_user(view: &impl View, id: UserId) -> Result<Option<StoredUser>> {
    let key = keys::user(id);
    view.get(Cf::Users, &key)?
        .map(|bytes| decode("user", &key, &bytes))
        .transpose()
}

pub(super) fn not_found(id: UserId) -> SchemaError {
    SchemaError::NotFound(format!("user {}", id.0))
}

pub(super) fn load_user(view: &impl View, id: UserId) -> Result<StoredUser> {
    find_user(view, id)?.ok_or_else(|| not_found(id))
}

/// The id of the user with this (normalized) email.
pub(super) fn user_by_email(view: &impl View, email: &str) -> Result<Option<UserId>> {
    let key = keys::email(email);
    view.get(Cf::UserEmails, key)?
        .map(|bytes| {
            keys::parse_user(&bytes).ok_or_else(|| SchemaError::Corrupt {
                what: "email index",
                key: keys::hex(key),
                reason: "value is not a user id".into(),
            })
        })
        .transpose()
}

/// What the user may do where: their organization's path and their role's permissions.
pub(super) fn member_of(view: &impl View, id: UserId, user: &StoredUser) -> Result<Member> {
    let org = load_path(view, OrgId(user.org)).map_err(|_| SchemaError::Corrupt {
        what: "user",
        key: keys::hex(&keys::user(id)),
        reason: format!("its organization {} does not exist", user.org),
    })?;
    Ok(Member {
        user: id,
        org,
        permissions: permissions_of_role(view, RoleId(user.role))?,
    })
}

/// Users of `org` by id after `after`, at most `limit`.
pub(super) fn org_users(
    view: &impl View,
    org: OrgId,
    after: Option<UserId>,
    limit: usize,
) -> Result<Vec<(UserId, StoredUser)>> {
    let prefix = keys::org_index_prefix(org, keys::ORG_USER);
    let start = match after {
        None => prefix.to_vec(),
        Some(after) => match after.0.checked_add(1) {
            Some(next) => keys::org_index(org, keys::ORG_USER, &keys::user(UserId(next))),
            None => return Ok(Vec::new()),
        },
    };
    let mut out = Vec::new();
    for (key, _) in view.scan(Cf::OrgIndex, &start, &keys::prefix_end(&prefix), limit)? {
        let id =
            keys::parse_user(keys::org_index_member(&key)).ok_or_else(|| SchemaError::Corrupt {
                what: "org index",
                key: keys::hex(&key),
                reason: "not a user id".into(),
            })?;
        if let Some(user) = find_user(view, id)? {
            out.push((id, user));
        }
    }
    Ok(out)
}

/// `GetUser`: the login check's input. An email no user could have is simply not found.
pub(super) fn credentials(view: &impl View, email: &str) -> Result<Response> {
    let email = normalize_email(email);
    if check_email(&email).is_err() {
        return Ok(Response::Credentials(None));
    }
    let Some(id) = user_by_email(view, &email)? else {
        return Ok(Response::Credentials(None));
    };
    let user = load_user(view, id)?;
    let member = member_of(view, id, &user)?;
    Ok(Response::Credentials(Some(Box::new(Credentials {
        user: user.to_wire(id),
        password_phc: user.password_phc,
        member,
    }))))
}

pub(super) fn find(view: &impl View, id: UserId) -> Result<Response> {
    Ok(Response::User(find_user(view, id)?.map(|u| u.to_wire(id))))
}

pub(super) fn list_users(
    view: &impl View,
    org: OrgId,
    after: Option<UserId>,
    limit: u32,
) -> Result<Response> {
    let limit = limit.min(MAX_ACCOUNT_PAGE) as usize;
    let users = org_users(view, org, after, limit)?;
    Ok(Response::Users(
        users.into_iter().map(|(id, u)| u.to_wire(id)).collect(),
    ))
}

/// A user about to be written.
pub(super) struct NewUser {
    pub email: String,
    pub name: String,
    pub org: OrgId,
    pub role: RoleId,
    pub status: StoredStatus,
    pub password_phc: Option<String>,
}

/// Checks `user` against the rules and the view (the email must be free) and adds it to
/// `change`.
pub(super) fn insert_user(
    view: &impl View,
    change: &mut Change,
    user: NewUser,
    now: u64,
) -> Result<(UserId, StoredUser)> {
    let email = normalize_email(&user.email);
    check_email(&email)?;
    check_text("user name", &user.name, MAX_NAME_LEN)?;
    if let Some(phc) = &user.password_phc {
        check_phc(phc)?;
    }
    if user_by_email(view, &email)?.is_some() {
        return Err(SchemaError::Invalid(format!(
            "a user with the email {email} already exists"
        )));
    }
    let id = UserId(next_id(view, change, keys::NEXT_USER_ID, 1)?);
    let record = StoredUser {
        email,
        name: user.name,
        org: user.org.0,
        role: user.role.0,
        status: user.status,
        password_phc: user.password_phc,
        created_ms: now,
    };
    change
        .batch
        .put(Cf::Users, keys::user(id), encode(&record)?);
    change
        .batch
        .put(Cf::UserEmails, keys::email(&record.email), keys::user(id));
    change.batch.put(
        Cf::OrgIndex,
        keys::org_index(user.org, keys::ORG_USER, &keys::user(id)),
        Vec::new(),
    );
    Ok((id, record))
}

/// `CreateUser` (see the request's doc): an invited user gets no password and an invitation
/// token; any other gets a password and no token. Suspended users are not created.
#[allow(clippy::too_many_arguments)]
pub(super) fn create_user(
    view: &impl View,
    who: &Who,
    email: String,
    name: String,
    org: OrgId,
    role: RoleId,
    status: UserStatus,
    password_phc: Option<String>,
    invite: Option<(SecretHash, u64)>,
) -> Result<(Response, Change)> {
    load_path(view, org)?;
    match (status, &password_phc, &invite) {
        (UserStatus::Invited, None, Some(_)) => {}
        (UserStatus::Invited, _, _) => {
            return Err(SchemaError::Invalid(
                "an invited user has no password and needs an invitation token".into(),
            ));
        }
        (UserStatus::Suspended, _, _) => {
            return Err(SchemaError::Invalid(
                "a user is created invited, unverified or active, never suspended".into(),
            ));
        }
        (UserStatus::Active | UserStatus::Unverified, Some(_), None) => {}
        (UserStatus::Active | UserStatus::Unverified, _, _) => {
            return Err(SchemaError::Invalid(format!(
                "a user created {} needs a password and no invitation token",
                status.name()
            )));
        }
    }
    let permissions = assignable(view, who, org, role)?;
    let mut change = synced();
    let (id, user) = insert_user(
        view,
        &mut change,
        NewUser {
            email,
            name,
            org,
            role,
            status: status.into(),
            password_phc,
        },
        who.now,
    )?;
    if let Some((hash, expires_ms)) = invite {
        let token = StoredToken {
            user: id.0,
            purpose: TokenPurpose::AcceptInvite.into(),
            expires_ms,
        };
        put_token(view, &mut change, id, &hash, &token)?;
    }
    audit::record(
        view,
        &mut change,
        who,
        org,
        format!("user {}", id.0),
        format!(
            "email {}, role {}, status {}, permissions {permissions}",
            user.email,
            role.0,
            status.name()
        ),
    )?;
    Ok((Response::User(Some(user.to_wire(id))), change))
}

/// `SignUp`: a new organization below the root, its unverified Admin and a verification token,
/// in one write.
#[allow(clippy::too_many_arguments)]
pub(super) fn sign_up(
    view: &impl View,
    who: &Who,
    email: String,
    name: String,
    org_name: String,
    password_phc: String,
    token_hash: SecretHash,
    expires_ms: u64,
) -> Result<(Response, Change)> {
    let mut change = synced();
    let org = insert_org(view, &mut change, &OrgPath::root(), org_name, who.now)?;
    let (id, user) = insert_user(
        view,
        &mut change,
        NewUser {
            email,
            name,
            org: org.id,
            role: BuiltInRole::Admin.id(),
            status: StoredStatus::Unverified,
            password_phc: Some(password_phc),
        },
        who.now,
    )?;
    let token = StoredToken {
        user: id.0,
        purpose: TokenPurpose::VerifyEmail.into(),
        expires_ms,
    };
    put_token(view, &mut change, id, &token_hash, &token)?;
    audit::record(
        view,
        &mut change,
        who,
        org.id,
        format!("user {}", id.0),
        format!("email {}, new {} {:?}", user.email, org.id, org.name),
    )?;
    Ok((Response::User(Some(user.to_wire(id))), change))
}

/// `Bootstrap`: the root's first Admin, only while no user exists.
pub(super) fn bootstrap(
    view: &impl View,
    who: &Who,
    email: String,
    password_phc: String,
) -> Result<(Response, Change)> {
    // User keys are 8-byte ids: this range holds them all.
    if !view.scan(Cf::Users, b"", &[0xff; 9], 1)?.is_empty() {
        // Nothing to write, nothing to sync.
        let nothing = Change::new(crate::engine::Durability::Buffered);
        return Ok((Response::Bootstrapped(false), nothing));
    }
    let mut change = synced();
    let name = normalize_email(&email);
    let (id, user) = insert_user(
        view,
        &mut change,
        NewUser {
            email,
            name,
            org: OrgId::ROOT,
            role: BuiltInRole::Admin.id(),
            status: StoredStatus::Active,
            password_phc: Some(password_phc),
        },
        who.now,
    )?;
    audit::record(
        view,
        &mut change,
        who,
        OrgId::ROOT,
        format!("user {}", id.0),
        format!("email {}, first Admin of the root", user.email),
    )?;
    Ok((Response::Bootstrapped(true), change))
}
