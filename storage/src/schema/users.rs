//! Users: the `users` family, keyed by normalized email. This module owns the rules a user
//! record must meet before the store keeps it — a plausible email address, an org name, and a
//! password that is an argon2id PHC string — and the two requests on it (`CreateUser`,
//! `GetUser`). The PHC rule is the store's own line of defence: whatever a buggy or hostile
//! client sends, the store never holds a plain or weakly hashed password.

use super::group::{Change, View};
use super::records::{StoredUser, decode, encode};
use super::{MAX_NAME_LEN, Result, SchemaError, check_text, keys, now_ms};
use crate::engine::{Cf, Durability};
use portcullis_protocol::app::{MAX_EMAIL_LEN, normalize_email};
use portcullis_protocol::store::UserRecord;

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
fn check_email(email: &str) -> Result<()> {
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
fn check_phc(phc: &str) -> Result<()> {
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

/// Validates a `CreateUser` against `view` and returns the synced write it wants: a user is
/// account data, durable before the reply.
pub(super) fn create_user(
    view: &impl View,
    email: &str,
    org: String,
    password_phc: String,
) -> Result<Change> {
    let email = normalize_email(email);
    check_email(&email)?;
    check_text("org", &org, MAX_NAME_LEN)?;
    check_phc(&password_phc)?;
    let key = keys::user(&email);
    if view.get(Cf::Users, key)?.is_some() {
        return Err(SchemaError::Invalid(format!(
            "a user with the email {email} already exists"
        )));
    }
    let record = StoredUser {
        org,
        password_phc,
        created_ms: now_ms(),
    };
    let mut change = Change::new(Durability::Sync);
    change.batch.put(Cf::Users, key, encode(&record)?);
    tracing::debug!(org = %record.org, "user created");
    Ok(change)
}

/// Looks a user up by email in any case. An email no user could have (one that
/// [`create_user`] would refuse) is simply not found: login treats it like any unknown email.
pub(super) fn get_user(view: &impl View, email: &str) -> Result<Option<UserRecord>> {
    let email = normalize_email(email);
    if check_email(&email).is_err() {
        return Ok(None);
    }
    let key = keys::user(&email);
    let Some(bytes) = view.get(Cf::Users, key)? else {
        return Ok(None);
    };
    let stored: StoredUser = decode("user", key, &bytes)?;
    Ok(Some(stored.to_wire(email)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_for_shape() {
        for good in ["a@b", "first.last+tag@example.co.uk", "ü@例え.jp"] {
            assert!(check_email(good).is_ok(), "{good}");
        }
        let long = format!("{}@example.com", "a".repeat(MAX_EMAIL_LEN));
        for bad in [
            "", "plain", "@b", "a@", "a@b@c", "a b@c", "a@b\tc", "a\u{7}@b", &long,
        ] {
            assert!(check_email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_bounded_argon2id_phc_strings_pass() {
        let good = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g";
        assert!(check_phc(good).is_ok());
        for bad in [
            "secret",
            "$argon2i$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            "$2b$12$abcdefghijklmnopqrstuv",
            "$argon2id$ with space",
        ] {
            assert!(check_phc(bad).is_err(), "{bad}");
        }
        let long = format!("{PHC_PREFIX}{}", "a".repeat(MAX_PHC_LEN));
        assert!(check_phc(&long).is_err());
    }
}
