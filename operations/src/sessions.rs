//! Proving who one is: a login (an email and the Blynk client hash of the password, checked
//! against the argon2id PHC string the store keeps), the session it opens (a random token, shown
//! once, stored only hashed, with an expiry), resolving a session token or an API key into the
//! [`Principal`] of the requests that present it, and logout.
//!
//! An email nobody has is still checked, against a dummy hash of today's cost
//! ([`crate::password::check`]), so response time does not tell which emails exist, and the
//! answer to the client is the same for every refusal; only the caller's logs and failure
//! counters learn which one it was ([`LoginRefusal`]). A check costs tens of milliseconds of CPU
//! and 19 MiB by design: call [`verify`] and [`login`] from a bounded worker pool, never from an
//! event loop.

use crate::apikeys::parse_key;
use crate::error::OperationError;
use crate::password::{self, PasswordCheck};
use crate::principal::{Credential, Principal};
use crate::secrets::{self, Secret};
use crate::store_access::{StoreAccess, answer, ask};
use crate::users::done;
use portcullis_protocol::app::normalize_email;
use portcullis_protocol::store::{Credentials, Request, Response, UserStatus};
use std::time::Duration;

/// How long a session lives from its login (config: `accounts.session_ttl_secs`).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The verdict on a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The password matches and the account is active: the user, as the principal of what
    /// they do next.
    Verified(Principal),
    Refused(LoginRefusal),
}

/// Why a login was refused. Never tell the client which one: each is "wrong email or
/// password" to it (an inactive account too, so a probe learns nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    UnknownEmail,
    WrongPassword,
    /// The password matches, but the account is invited, unverified or suspended.
    Inactive(UserStatus),
    /// The stored PHC string does not parse, is not argon2id, or costs too much to check: the
    /// account cannot log in until its password is set again. Worth an error log line.
    UnusableHash,
}

impl LoginRefusal {
    /// Whether the email belongs to an account (to count failures per account).
    pub fn known_user(self) -> bool {
        !matches!(self, LoginRefusal::UnknownEmail)
    }

    /// For logs: what happened, in a few words.
    pub fn why(self) -> &'static str {
        match self {
            LoginRefusal::UnknownEmail => "no user with this email",
            LoginRefusal::WrongPassword => "wrong password",
            LoginRefusal::Inactive(UserStatus::Invited) => "invitation not accepted yet",
            LoginRefusal::Inactive(UserStatus::Unverified) => "email not verified yet",
            LoginRefusal::Inactive(_) => "account suspended",
            LoginRefusal::UnusableHash => "stored password hash unreadable",
        }
    }
}

/// Looks the user up and checks the client hash (blocking: a store round trip, then argon2id).
/// `email` may be in any case; `from` is the client's address. The error is the store's
/// (unreachable, failed), never a verdict.
pub fn verify(
    store: &mut impl StoreAccess,
    email: &str,
    client_hash: &str,
    from: &str,
) -> Result<LoginOutcome, OperationError> {
    let request = Request::GetUser {
        email: normalize_email(email),
    };
    let credentials = answer("GetUser", ask(store, request)?, |r| match r {
        Response::Credentials(c) => Ok(c),
        other => Err(Box::new(other)),
    })?;
    Ok(check(credentials.as_deref(), client_hash, from))
}

/// Checks the client hash against `credentials` as the store returned them (`None`: nobody
/// has that email, checked against the dummy hash at the same cost).
pub fn check(credentials: Option<&Credentials>, client_hash: &str, from: &str) -> LoginOutcome {
    let phc = credentials.and_then(|c| c.password_phc.as_deref());
    let verdict = password::check(phc, client_hash);
    let Some(credentials) = credentials else {
        return LoginOutcome::Refused(LoginRefusal::UnknownEmail);
    };
    match verdict {
        PasswordCheck::Matches if credentials.user.status == UserStatus::Active => {
            LoginOutcome::Verified(Principal::member(
                credentials.member.clone(),
                credentials.user.email.clone(),
                Credential::Session,
                from,
            ))
        }
        PasswordCheck::Matches => {
            LoginOutcome::Refused(LoginRefusal::Inactive(credentials.user.status))
        }
        // An invited user has no password: nothing matches it.
        PasswordCheck::Mismatch if credentials.password_phc.is_none() => {
            LoginOutcome::Refused(LoginRefusal::Inactive(credentials.user.status))
        }
        PasswordCheck::Mismatch => LoginOutcome::Refused(LoginRefusal::WrongPassword),
        PasswordCheck::Unusable => LoginOutcome::Refused(LoginRefusal::UnusableHash),
    }
}

/// A session opened by a login: its token (shown once) and when it expires.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    pub token: Secret,
    pub expires_ms: u64,
}

/// [`verify`], then a session of `ttl` for a verified user.
pub fn login(
    store: &mut impl StoreAccess,
    email: &str,
    client_hash: &str,
    from: &str,
    ttl: Duration,
    now_ms: u64,
) -> Result<Result<Session, LoginRefusal>, OperationError> {
    let principal = match verify(store, email, client_hash, from)? {
        LoginOutcome::Verified(principal) => principal,
        LoginOutcome::Refused(why) => return Ok(Err(why)),
    };
    let Some(member) = principal.as_member() else {
        return Err(OperationError::NotAuthenticated(
            "the operator has no session",
        ));
    };
    let token = Secret::generate()?;
    let expires_ms = now_ms.saturating_add(ttl.as_millis() as u64);
    let request = Request::CreateSession {
        user: member.user(),
        token_hash: token.hash(),
        expires_ms,
    };
    answer("CreateSession", ask(store, request)?, done)?;
    Ok(Ok(Session {
        principal,
        token,
        expires_ms,
    }))
}

/// The principal of a request presenting a bearer credential: a session token, or an API key
/// (`pk_<id>_<secret>`). Anything unknown, expired, revoked or malformed is one refusal.
pub fn authenticate(
    store: &mut impl StoreAccess,
    bearer: &str,
    from: &str,
) -> Result<Principal, OperationError> {
    const REFUSED: OperationError =
        OperationError::NotAuthenticated("the session or key is unknown, expired or revoked");
    if let Some((key, secret)) = parse_key(bearer) {
        let request = Request::UseApiKey {
            key,
            secret_hash: secrets::hash(secret),
        };
        let found = answer("UseApiKey", ask(store, request)?, |r| match r {
            Response::KeyUse(found) => Ok(found),
            other => Err(Box::new(other)),
        })?;
        let Some(found) = found else {
            return Err(REFUSED);
        };
        return Ok(Principal::member(
            found.member.clone(),
            format!("key {}", key.0),
            Credential::ApiKey(key),
            from,
        ));
    }
    if !secrets::plausible(bearer) {
        return Err(REFUSED);
    }
    let request = Request::ResolveSession {
        token_hash: secrets::hash(bearer),
    };
    let found = answer("ResolveSession", ask(store, request)?, |r| match r {
        Response::Session(found) => Ok(found),
        other => Err(Box::new(other)),
    })?;
    let Some(found) = found else {
        return Err(REFUSED);
    };
    Ok(Principal::member(
        found.member.clone(),
        found.user.email.clone(),
        Credential::Session,
        from,
    ))
}

/// Ends the session of this token (logout). An unknown token is not an error: it is ended.
pub fn logout(
    store: &mut impl StoreAccess,
    principal: &Principal,
    token: &str,
) -> Result<(), OperationError> {
    let Some(member) = principal.as_member() else {
        return Ok(());
    };
    let request = Request::RevokeSessions {
        user: member.user(),
        only: Some(secrets::hash(token)),
    };
    crate::store_access::act_for(store, principal, request, done)
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod tests;
