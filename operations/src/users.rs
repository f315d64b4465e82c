//! User accounts as an administrator manages them: create one with a password (the admin CLI,
//! first start), invite one (a single-use link to set a password), find, list, change (role,
//! suspension, name, password), force their logout, delete. The password never leaves this crate
//! in any reversible form: it becomes the Blynk client hash an app would compute at login
//! ([`portcullis_protocol::app::client_hash`], over the lower-cased email), that becomes an
//! argon2id PHC string ([`crate::password`]), and only the PHC string goes to the store. A
//! generated password comes back once for whoever created the user; nothing here ever returns a
//! hash. Sign-up, verification and password reset are in [`crate::accounts`]; logins in
//! [`crate::sessions`].

use crate::error::{InvalidInput, LocalFailure, Missing, OperationError};
use crate::password::hash_client_hash;
use crate::principal::Principal;
use crate::secrets::Secret;
use crate::store_access::{StoreAccess, act, act_for};
use base64::Engine as _;
use portcullis_protocol::app::{client_hash, normalize_email};
use portcullis_protocol::authz::{OrgId, RoleId, UserId};
use portcullis_protocol::store::{
    MAX_EMAIL_LEN, Request, Response, StoreError, UserChange, UserRecord, UserStatus,
};
use std::fmt;
use std::time::Duration;

/// How long an invitation link stays valid.
pub const INVITE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Random bytes of a generated password: 18 bytes are 144 bits, 24 base64url characters.
pub const GENERATED_PASSWORD_BYTES: usize = 18;

/// Shortest password accepted, in characters. A floor against typos and empty input, not a
/// strength meter.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Longest password accepted, in bytes: it is hashed into a fixed-size digest anyway.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Where a new user's password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordChoice {
    /// Generate one ([`GENERATED_PASSWORD_BYTES`] from the OS CSPRNG) and return it once.
    Generate,
    /// Use this one (checked against [`MIN_PASSWORD_CHARS`] and [`MAX_PASSWORD_BYTES`]).
    Given(String),
}

impl fmt::Debug for PasswordChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PasswordChoice::Generate => "Generate",
            PasswordChoice::Given(_) => "Given(…)",
        })
    }
}

/// A user to register with a password, active at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// The login name; stored normalized (trimmed, lower case).
    pub email: String,
    pub name: String,
    pub org: OrgId,
    pub role: RoleId,
    pub password: PasswordChoice,
}

/// A password generated for a new user. Shown once; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedPassword(String);

impl GeneratedPassword {
    /// The password, for the one place that hands it to the user.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GeneratedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GeneratedPassword(…)")
    }
}

/// A registered user, and the password when it was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedUser {
    pub user: UserRecord,
    pub generated_password: Option<GeneratedPassword>,
}

/// An invited user and the secret of their invitation link (mail it; it exists nowhere else).
#[derive(Debug, Clone)]
pub struct Invited {
    pub user: UserRecord,
    pub token: Secret,
}

/// Registers an active user with a password.
pub fn create(
    store: &mut impl StoreAccess,
    principal: &Principal,
    user: NewUser,
) -> Result<CreatedUser, OperationError> {
    let NewUser {
        email,
        name,
        org,
        role,
        password,
    } = user;
    let (plain, generated) = match password {
        PasswordChoice::Generate => {
            let password = generate_password()?;
            (password.clone(), Some(GeneratedPassword(password)))
        }
        PasswordChoice::Given(password) => (check_password(password)?, None),
    };
    let email = check_email(&email)?;
    let phc = password_phc(&plain, &email)?;
    let request = Request::CreateUser {
        email: email.clone(),
        name,
        org,
        role,
        status: UserStatus::Active,
        password_phc: Some(phc),
        invite: None,
    };
    let user = created_user(&email, act(store, principal, request)?)?;
    Ok(CreatedUser {
        user,
        generated_password: generated,
    })
}

/// Invites a user: an `Invited` account and a single-use link secret to set a password, valid
/// for [`INVITE_TTL`]. The caller mails it (see [`crate::accounts::invite_mail`]).
pub fn invite(
    store: &mut impl StoreAccess,
    principal: &Principal,
    email: &str,
    name: String,
    org: OrgId,
    role: RoleId,
    now_ms: u64,
) -> Result<Invited, OperationError> {
    let email = check_email(email)?;
    let token = Secret::generate()?;
    let expires_ms = now_ms.saturating_add(INVITE_TTL.as_millis() as u64);
    let request = Request::CreateUser {
        email: email.clone(),
        name,
        org,
        role,
        status: UserStatus::Invited,
        password_phc: None,
        invite: Some((token.hash(), expires_ms)),
    };
    let user = created_user(&email, act(store, principal, request)?)?;
    Ok(Invited { user, token })
}

fn created_user(
    email: &str,
    answer: Result<Response, StoreError>,
) -> Result<UserRecord, OperationError> {
    match answer {
        Ok(Response::User(Some(user))) => Ok(user),
        Ok(other) => Err(OperationError::unexpected("CreateUser", &other)),
        // The store says so in words only; this is the one place that reads them.
        Err(StoreError::Invalid(why)) if why.contains("already") => Err(InvalidInput::UserExists {
            email: email.to_owned(),
            why,
        }
        .into()),
        Err(error) => Err(OperationError::refused(error)),
    }
}

/// The normalized email, if it is one: text on both sides of one `@`, a dot in the domain, no
/// spaces or control characters, at most [`MAX_EMAIL_LEN`] bytes.
pub fn check_email(email: &str) -> Result<String, OperationError> {
    let email = normalize_email(email);
    if email.len() > MAX_EMAIL_LEN {
        return Err(InvalidInput::EmailTooLong { max: MAX_EMAIL_LEN }.into());
    }
    let shaped = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    };
    if !shaped || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidInput::NotAnEmail(email).into());
    }
    Ok(email)
}

/// The PHC string the store keeps for `password` of `email` (normalized): argon2id of the
/// client hash an app computes from what the user types.
pub fn password_phc(password: &str, email: &str) -> Result<String, OperationError> {
    Ok(hash_client_hash(&client_hash(password, email)).map_err(LocalFailure::Password)?)
}

/// The PHC string for a client hash an app or the console computed (the password never seen).
pub fn client_hash_phc(client_hash: &str) -> Result<String, OperationError> {
    if client_hash.is_empty() || client_hash.len() > MAX_PASSWORD_BYTES {
        return Err(InvalidInput::PasswordTooShort {
            min: MIN_PASSWORD_CHARS,
        }
        .into());
    }
    Ok(hash_client_hash(client_hash).map_err(LocalFailure::Password)?)
}

/// A fresh password: [`GENERATED_PASSWORD_BYTES`] from the OS CSPRNG, base64url.
fn generate_password() -> Result<String, OperationError> {
    let mut bytes = [0u8; GENERATED_PASSWORD_BYTES];
    getrandom::fill(&mut bytes).map_err(LocalFailure::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn check_password(password: String) -> Result<String, OperationError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(InvalidInput::PasswordTooLong {
            max: MAX_PASSWORD_BYTES,
        }
        .into());
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(InvalidInput::PasswordTooShort {
            min: MIN_PASSWORD_CHARS,
        }
        .into());
    }
    Ok(password)
}

/// First start: when the store has no user yet, creates the root organization's first Admin
/// with `email` and a generated password, returned once (print it, store it nowhere). `None`
/// when users existed already (nothing was written).
pub fn bootstrap(
    store: &mut impl StoreAccess,
    email: &str,
) -> Result<Option<GeneratedPassword>, OperationError> {
    let email = check_email(email)?;
    let password = generate_password()?;
    let request = Request::Bootstrap {
        password_phc: password_phc(&password, &email)?,
        email,
    };
    let created = crate::store_access::answer(
        "Bootstrap",
        crate::store_access::ask(store, request)?,
        |r| match r {
            Response::Bootstrapped(created) => Ok(created),
            other => Err(Box::new(other)),
        },
    )?;
    Ok(created.then_some(GeneratedPassword(password)))
}

/// A user by id, if the principal may see them (themselves, or with "view users").
pub fn find(
    store: &mut impl StoreAccess,
    principal: &Principal,
    user: UserId,
) -> Result<UserRecord, OperationError> {
    let missing = || OperationError::NotFound(Missing::Named(format!("user {}", user.0)));
    match act(store, principal, Request::FindUser { user })? {
        Ok(Response::User(Some(found))) => Ok(found),
        Ok(Response::User(None)) | Err(StoreError::NotFound(_)) => Err(missing()),
        Ok(other) => Err(OperationError::unexpected("FindUser", &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

/// A user by email (any case), for the operator (the admin CLI).
pub fn find_by_email(
    store: &mut impl StoreAccess,
    principal: &Principal,
    email: &str,
) -> Result<UserRecord, OperationError> {
    let missing = || OperationError::NotFound(Missing::User(normalize_email(email)));
    let request = Request::GetUser {
        email: email.to_owned(),
    };
    match act(store, principal, request)? {
        Ok(Response::Credentials(Some(credentials))) => Ok(credentials.user),
        Ok(Response::Credentials(None)) => Err(missing()),
        Ok(other) => Err(OperationError::unexpected("GetUser", &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

/// The users of `org`, by id after `after`, at most `limit`.
pub fn list(
    store: &mut impl StoreAccess,
    principal: &Principal,
    org: OrgId,
    after: Option<UserId>,
    limit: u32,
) -> Result<Vec<UserRecord>, OperationError> {
    let request = Request::ListUsers { org, after, limit };
    act_for(store, principal, request, |r| match r {
        Response::Users(users) => Ok(users),
        other => Err(Box::new(other)),
    })
}

/// A change an administrator or the user makes; a new password is given in plain here and
/// hashed before it leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub name: Option<String>,
    pub role: Option<RoleId>,
    pub status: Option<UserStatus>,
    pub password: Option<String>,
}

/// Applies `change` to `user`. Suspension and a new password revoke the user's sessions.
pub fn update(
    store: &mut impl StoreAccess,
    principal: &Principal,
    user: UserId,
    change: Change,
) -> Result<UserRecord, OperationError> {
    let password_phc = match change.password {
        None => None,
        Some(password) => {
            let password = check_password(password)?;
            let current = find(store, principal, user)?;
            Some(password_phc(&password, &current.email)?)
        }
    };
    let request = Request::UpdateUser {
        user,
        change: UserChange {
            name: change.name,
            role: change.role,
            status: change.status,
            password_phc,
        },
    };
    act_for(store, principal, request, |r| match r {
        Response::User(Some(user)) => Ok(user),
        other => Err(Box::new(other)),
    })
}

/// Deletes a user with their sessions and keys.
pub fn delete(
    store: &mut impl StoreAccess,
    principal: &Principal,
    user: UserId,
) -> Result<(), OperationError> {
    act_for(store, principal, Request::DeleteUser { user }, done)
}

/// Ends every session of `user` (their own logout everywhere, or an admin's force logout).
pub fn force_logout(
    store: &mut impl StoreAccess,
    principal: &Principal,
    user: UserId,
) -> Result<(), OperationError> {
    let request = Request::RevokeSessions { user, only: None };
    act_for(store, principal, request, done)
}

pub(crate) fn done(response: Response) -> Result<(), Box<Response>> {
    match response {
        Response::Done => Ok(()),
        other => Err(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::{PasswordCheck, verify};
    use crate::scripted::ScriptedStore;
    use portcullis_protocol::authz::BuiltInRole;

    #[test]
    fn emails_are_normalized_and_non_addresses_refused() {
        assert_eq!(
            check_email("  Ann@Example.COM ").expect("valid"),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "ann@example",
            "a b@c.d",
            "a@b@c.d",
            "a@.c",
        ] {
            assert!(
                matches!(
                    check_email(bad),
                    Err(OperationError::Invalid(InvalidInput::NotAnEmail(_)))
                ),
                "{bad:?}"
            );
        }
        let long = format!("{}@example.com", "a".repeat(MAX_EMAIL_LEN));
        assert!(matches!(
            check_email(&long),
            Err(OperationError::Invalid(InvalidInput::EmailTooLong { .. }))
        ));
    }

    #[test]
    fn a_created_user_sends_only_the_phc_of_the_client_hash() {
        let mut store = ScriptedStore::new(|request| match request {
            Request::CreateUser {
                email, org, role, ..
            } => Ok(Response::User(Some(UserRecord {
                id: UserId(3),
                email: email.clone(),
                name: "n".into(),
                org: *org,
                role: *role,
                status: UserStatus::Active,
                created_ms: 1,
            }))),
            _ => Err(StoreError::Invalid("unexpected".into())),
        });
        let new = NewUser {
            email: "Ann@Example.com".into(),
            name: "Ann".into(),
            org: OrgId(2),
            role: BuiltInRole::Staff.id(),
            password: PasswordChoice::Given("correct horse".into()),
        };
        let created = create(&mut store, &Principal::Operator, new).expect("created");
        assert_eq!(created.user.email, "ann@example.com");
        assert!(created.generated_password.is_none());
        let Request::CreateUser {
            password_phc: Some(phc),
            status,
            ..
        } = &store.requests[0]
        else {
            panic!("{:?}", store.requests[0]);
        };
        assert_eq!(*status, UserStatus::Active);
        let hash = client_hash("correct horse", "ann@example.com");
        assert_eq!(verify(phc, &hash), PasswordCheck::Matches);
        assert!(!format!("{:?}", store.requests).contains("correct horse"));

        let short = NewUser {
            email: "b@example.com".into(),
            name: "B".into(),
            org: OrgId(2),
            role: BuiltInRole::User.id(),
            password: PasswordChoice::Given("short".into()),
        };
        assert!(create(&mut store, &Principal::Operator, short).is_err());
        assert_eq!(store.requests.len(), 1, "refused before asking");
    }

    #[test]
    fn an_invitation_carries_a_token_hash_and_no_password() {
        let mut store = ScriptedStore::new(|request| match request {
            Request::CreateUser { email, .. } => Ok(Response::User(Some(UserRecord {
                id: UserId(4),
                email: email.clone(),
                name: "n".into(),
                org: OrgId(2),
                role: RoleId(3),
                status: UserStatus::Invited,
                created_ms: 1,
            }))),
            _ => Err(StoreError::Invalid("unexpected".into())),
        });
        let invited = invite(
            &mut store,
            &crate::scripted::ann(),
            "c@example.com",
            "C".into(),
            OrgId(2),
            RoleId(3),
            1000,
        )
        .expect("invited");
        let Request::CreateUser {
            password_phc,
            invite: Some((hash, expires)),
            status,
            ..
        } = &store.requests[0]
        else {
            panic!("{:?}", store.requests[0]);
        };
        assert_eq!((password_phc, *status), (&None, UserStatus::Invited));
        assert_eq!(*hash, invited.token.hash());
        assert_eq!(*expires, 1000 + INVITE_TTL.as_millis() as u64);
    }
}
