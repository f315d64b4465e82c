//! Sessions and one-time tokens, both stored only as SHA-256 hashes of the secret.
//!
//! A session (`sessions/<hash>`: user, expiry) has a `user_index` entry `s · hash`, so revoking
//! every session of a user is a prefix scan ([`revoke_all`]; the scan reads through the group's
//! view, so a session created earlier in the same group is revoked too). `ResolveSession`
//! answers only for a session that has not expired by the store's clock and whose user is
//! active.
//!
//! A one-time token (`one_time_tokens/<hash>`: user, purpose, expiry) is used once: consuming it
//! deletes it in the same write as what it does. A user has at most one token per purpose: the
//! `user_index` entry `t · purpose` names it, and a new one replaces it. An unknown, expired,
//! used or other-purpose token, or one whose user is not in the state it applies to, is one and
//! the same `NotFound`.

use super::acting::Who;
use super::audit;
use super::group::{Change, View};
use super::records::{StoredSession, StoredStatus, StoredToken, StoredUser, decode, encode};
use super::users::{check_phc, find_user, load_user, member_of};
use super::{Result, SchemaError, keys, revocations, synced};
use crate::engine::Cf;
use portcullis_protocol::authz::{OrgId, UserId};
use portcullis_protocol::store::{
    Response, Revoked, SecretHash, SessionSubject, TokenPurpose, TokenUse,
};

/// What every failed `ConsumeToken` says, whatever the reason.
const NO_TOKEN: &str = "one-time token (unknown, expired, already used, or for something else)";

fn find_token(view: &impl View, hash: &SecretHash) -> Result<Option<StoredToken>> {
    view.get(Cf::Tokens, hash)?
        .map(|bytes| decode("one-time token", hash, &bytes))
        .transpose()
}

/// Adds the token to `change`, replacing the user's earlier token of the same purpose.
pub(super) fn put_token(
    view: &impl View,
    change: &mut Change,
    user: UserId,
    hash: &SecretHash,
    token: &StoredToken,
) -> Result<()> {
    if view.get(Cf::Tokens, hash)?.is_some() || view.get(Cf::Sessions, hash)?.is_some() {
        return Err(SchemaError::Invalid(
            "the token hash is already in use; generate a new token".into(),
        ));
    }
    let slot = keys::user_token(user, token.purpose.into());
    if let Some(old) = view.get(Cf::UserIndex, &slot)? {
        change.batch.delete(Cf::Tokens, old);
    }
    change.batch.put(Cf::Tokens, hash.to_vec(), encode(token)?);
    change.batch.put(Cf::UserIndex, slot, hash.to_vec());
    Ok(())
}

/// Deletes every one-time token of `user` (the user is being deleted).
pub(super) fn delete_tokens(view: &impl View, change: &mut Change, user: UserId) -> Result<()> {
    let prefix = keys::user_index_prefix(user, keys::USER_TOKEN);
    for (key, hash) in view.scan_prefix(Cf::UserIndex, &prefix, usize::MAX)? {
        change.batch.delete(Cf::Tokens, hash);
        change.batch.delete(Cf::UserIndex, key);
    }
    Ok(())
}

pub(super) fn create_token(
    view: &impl View,
    user: UserId,
    purpose: TokenPurpose,
    hash: SecretHash,
    expires_ms: u64,
) -> Result<(Response, Change)> {
    load_user(view, user)?;
    let mut change = synced();
    let token = StoredToken {
        user: user.0,
        purpose: purpose.into(),
        expires_ms,
    };
    put_token(view, &mut change, user, &hash, &token)?;
    Ok((Response::Done, change))
}

/// Whether a token of `purpose` still applies to a user in `status`: verification only while
/// unverified, an invitation only while invited, a reset only for an account that may log in
/// once verified (never a suspended or invited one).
fn applies(purpose: TokenPurpose, status: StoredStatus) -> bool {
    match purpose {
        TokenPurpose::VerifyEmail => status == StoredStatus::Unverified,
        TokenPurpose::AcceptInvite => status == StoredStatus::Invited,
        TokenPurpose::ResetPassword => {
            matches!(status, StoredStatus::Active | StoredStatus::Unverified)
        }
    }
}

pub(super) fn consume_token(
    view: &impl View,
    who: &Who,
    hash: SecretHash,
    using: TokenUse,
) -> Result<(Response, Change)> {
    let none = || SchemaError::NotFound(NO_TOKEN.into());
    let token = find_token(view, &hash)?.ok_or_else(none)?;
    let purpose = using.purpose();
    if TokenPurpose::from(token.purpose) != purpose || token.expires_ms <= who.now {
        return Err(none());
    }
    let id = UserId(token.user);
    let mut user = find_user(view, id)?.ok_or_else(none)?;
    if !applies(purpose, user.status) {
        return Err(none());
    }
    let mut change = synced();
    change.batch.delete(Cf::Tokens, hash.to_vec());
    change
        .batch
        .delete(Cf::UserIndex, keys::user_token(id, purpose));
    let detail = match using {
        TokenUse::VerifyEmail => {
            user.status = StoredStatus::Active;
            "email verified; active".to_owned()
        }
        TokenUse::AcceptInvite { password_phc } => {
            check_phc(&password_phc)?;
            user.password_phc = Some(password_phc);
            user.status = StoredStatus::Active;
            "invitation accepted, password set; active".to_owned()
        }
        TokenUse::ResetPassword { password_phc } => {
            check_phc(&password_phc)?;
            user.password_phc = Some(password_phc);
            let revoked = revoke_all(view, &mut change, id, who.now)?;
            format!("password reset; {revoked} session(s) revoked")
        }
    };
    change.batch.put(Cf::Users, keys::user(id), encode(&user)?);
    // The token proves the user: the entry names them, not "anonymous".
    let as_user = Who {
        label: format!("user {} ({})", id.0, user.email),
        user: Some(id),
        ..who.clone()
    };
    audit::record(
        view,
        &mut change,
        &as_user,
        OrgId(user.org),
        format!("user {}", id.0),
        detail,
    )?;
    Ok((Response::User(Some(user.to_wire(id))), change))
}

pub(super) fn create_session(
    view: &impl View,
    who: &Who,
    user: UserId,
    hash: SecretHash,
    expires_ms: u64,
) -> Result<(Response, Change)> {
    let record = load_user(view, user)?;
    if !record.active() {
        return Err(SchemaError::Invalid(format!(
            "user {} is not active; only an active user logs in",
            user.0
        )));
    }
    if expires_ms <= who.now {
        return Err(SchemaError::Invalid(
            "the session would expire before it starts".into(),
        ));
    }
    if view.get(Cf::Sessions, &hash)?.is_some() || view.get(Cf::Tokens, &hash)?.is_some() {
        return Err(SchemaError::Invalid(
            "the session token hash is already in use; generate a new token".into(),
        ));
    }
    let mut change = synced();
    let session = StoredSession {
        user: user.0,
        expires_ms,
    };
    change
        .batch
        .put(Cf::Sessions, hash.to_vec(), encode(&session)?);
    change
        .batch
        .put(Cf::UserIndex, keys::user_session(user, &hash), Vec::new());
    Ok((Response::Done, change))
}

/// The live session with this hash, with whom it acts as.
pub(super) fn resolve(view: &impl View, hash: &SecretHash, now: u64) -> Result<Response> {
    let Some(bytes) = view.get(Cf::Sessions, hash)? else {
        return Ok(Response::Session(None));
    };
    let session: StoredSession = decode("session", hash, &bytes)?;
    if session.expires_ms <= now {
        return Ok(Response::Session(None));
    }
    let id = UserId(session.user);
    let Some(user) = find_user(view, id)?.filter(StoredUser::active) else {
        return Ok(Response::Session(None));
    };
    let member = member_of(view, id, &user)?;
    Ok(Response::Session(Some(Box::new(SessionSubject {
        user: user.to_wire(id),
        member,
        expires_ms: session.expires_ms,
    }))))
}

/// Deletes every session of `user` in `change`; returns how many.
/// Every live app connection of the user ends too (the revocation feed).
pub(super) fn revoke_all(
    view: &impl View,
    change: &mut Change,
    user: UserId,
    now: u64,
) -> Result<usize> {
    revocations::record(view, change, now, Revoked::User(user))?;
    let prefix = keys::user_index_prefix(user, keys::USER_SESSION);
    let entries = view.scan_prefix(Cf::UserIndex, &prefix, usize::MAX)?;
    for (key, _) in &entries {
        let hash = keys::parse_user_session(key).ok_or_else(|| SchemaError::Corrupt {
            what: "user index",
            key: keys::hex(key),
            reason: "not a session entry".into(),
        })?;
        change.batch.delete(Cf::Sessions, hash.to_vec());
        change.batch.delete(Cf::UserIndex, key.clone());
    }
    Ok(entries.len())
}

/// `RevokeSessions`: logout (`only`) or force logout (every session).
pub(super) fn revoke_sessions(
    view: &impl View,
    who: &Who,
    user: UserId,
    only: Option<SecretHash>,
) -> Result<(Response, Change)> {
    let record = load_user(view, user)?;
    let mut change = synced();
    let revoked = match only {
        None => revoke_all(view, &mut change, user, who.now)?,
        Some(hash) => {
            let index = keys::user_session(user, &hash);
            if view.get(Cf::UserIndex, &index)?.is_some() {
                revocations::record(view, &mut change, who.now, Revoked::Session(hash))?;
                change.batch.delete(Cf::Sessions, hash.to_vec());
                change.batch.delete(Cf::UserIndex, index);
                1
            } else {
                0
            }
        }
    };
    audit::record(
        view,
        &mut change,
        who,
        OrgId(record.org),
        format!("user {}", user.0),
        format!("{revoked} session(s) revoked"),
    )?;
    Ok((Response::Done, change))
}
