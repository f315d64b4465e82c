//! Password hashing for user accounts. An app never sends the password, only its Blynk client hash
//! (`portcullis_protocol::app::client_hash`); this module turns that client hash into the argon2id
//! PHC string the store keeps, and checks a login's client hash against a stored one.
//!
//! Every function here is pure, blocking and `Send`: hashing deliberately costs tens of
//! milliseconds of CPU and 19 MiB of memory, so callers run them on a worker pool, never on a
//! shard's event loop. [`crate::users`] hashes with it, [`crate::login`] checks with it.
//! [`verify_against_nothing`] exists so a login for an unknown email costs as much as one with a
//! wrong password: response time must not tell which emails exist.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use portcullis_protocol::app::CLIENT_HASH_LEN;
use thiserror::Error;

/// Memory cost in KiB: 19 MiB, OWASP's recommended minimum for argon2id (Password Storage
/// Cheat Sheet). With [`T_COST`] = 2 this costs an attacker about as much per guess as larger
/// memory with fewer passes, while keeping one verify (a few tens of ms here) cheap enough for
/// a small worker pool to absorb login bursts.
pub const M_COST_KIB: u32 = 19 * 1024;

/// Passes over the memory (OWASP's pairing for 19 MiB).
pub const T_COST: u32 = 2;

/// Lanes. One: the gateway runs many logins in parallel on its worker pool, so parallelism
/// inside one hash would only make logins compete with each other.
pub const P_COST: u32 = 1;

/// Salt length in bytes: 16, the length argon2's authors and the PHC format recommend.
pub const SALT_LEN: usize = 16;

/// Hash output length in bytes (argon2's default and what the PHC format expects).
pub const OUTPUT_LEN: usize = 32;

/// Most a stored hash may cost to verify, as a multiple of today's parameters in each
/// dimension. Room to raise the parameters later without rehashing everyone first, but a PHC
/// string with absurd costs (planted in the store, or corrupted) can never make one login eat
/// gigabytes or minutes of a worker.
pub const MAX_COST_FACTOR: u32 = 4;

/// A PHC string with exactly today's parameters and an arbitrary salt and output, verified
/// against by [`verify_against_nothing`]. Nothing hashes to it on purpose; only its cost matters.
/// A test checks its parameters match the constants above.
const DUMMY_PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$bm90aGluZy10by1zZWUhIQ$bm8gdXNlciBoYXMgdGhpcyBoYXNoLCBub2JvZHkhISE";

/// Why a hash could not be made. Never the peer's fault: the caller gave a well-formed client
/// hash, so this is the machine (no randomness) or a bug.
#[derive(Debug, Error)]
pub enum PasswordError {
    /// The input is not a client hash (wrong length): refused so a plain password can never be
    /// hashed and stored by mistake.
    #[error("not a client hash: expected {CLIENT_HASH_LEN} characters, got {0}")]
    NotAClientHash(usize),
    /// The operating system's random generator failed.
    #[error("the system random generator failed: {0}")]
    Random(String),
    /// argon2 refused its parameters or input (a bug).
    #[error("argon2 failed: {0}")]
    Hash(String),
}

/// The outcome of checking a client hash against a stored PHC string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    Matches,
    Mismatch,
    /// The stored PHC string does not parse, is not argon2id, or asks for more than
    /// [`MAX_COST_FACTOR`] times today's cost: the account cannot log in until its password is
    /// set again. Worth logging; never tells the client more than a mismatch would.
    Unusable,
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN))
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a client hash into an argon2id PHC string with a fresh random salt and today's
/// parameters. The result is what `CreateUser` sends to the store.
pub fn hash_client_hash(client_hash: &str) -> Result<String, PasswordError> {
    if client_hash.len() != CLIENT_HASH_LEN {
        return Err(PasswordError::NotAClientHash(client_hash.len()));
    }
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let phc = hasher()?
        .hash_password(client_hash.as_bytes(), &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(phc.to_string())
}

/// Whether `phc` is something we are willing to spend a verify on: argon2id, with a salt and an
/// output, at no more than [`MAX_COST_FACTOR`] times today's cost.
fn usable(phc: &PasswordHash<'_>) -> bool {
    if phc.algorithm != Algorithm::Argon2id.ident() || phc.salt.is_none() || phc.hash.is_none() {
        return false;
    }
    Params::try_from(phc).is_ok_and(|p| {
        p.m_cost() <= M_COST_KIB.saturating_mul(MAX_COST_FACTOR)
            && p.t_cost() <= T_COST.saturating_mul(MAX_COST_FACTOR)
            && p.p_cost() <= P_COST.saturating_mul(MAX_COST_FACTOR)
    })
}

/// Checks a login's client hash against the user's stored PHC string, in constant time with
/// respect to the hash (argon2's output comparison is constant-time).
pub fn verify(phc: &str, client_hash: &str) -> PasswordCheck {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return PasswordCheck::Unusable;
    };
    if !usable(&parsed) {
        return PasswordCheck::Unusable;
    }
    match Argon2::default().verify_password(client_hash.as_bytes(), &parsed) {
        Ok(()) => PasswordCheck::Matches,
        Err(argon2::password_hash::Error::Password) => PasswordCheck::Mismatch,
        Err(_) => PasswordCheck::Unusable,
    }
}

/// Spends what a real [`verify`] costs, against a hash nobody has, and answers `Mismatch`: the
/// login path calls this when the email is unknown so that case takes as long as a wrong
/// password.
pub fn verify_against_nothing(client_hash: &str) -> PasswordCheck {
    // The result is ignored on purpose: whatever it is, no account matched.
    let _ = verify(DUMMY_PHC, client_hash);
    PasswordCheck::Mismatch
}

/// Checks a login against the user's stored PHC string, or, for an email no user has
/// (`None`), against a dummy one, so both failures take equally long.
pub fn check(stored_phc: Option<&str>, client_hash: &str) -> PasswordCheck {
    match stored_phc {
        Some(phc) => verify(phc, client_hash),
        None => verify_against_nothing(client_hash),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_protocol::app::client_hash;

    #[test]
    fn a_hash_verifies_its_own_client_hash_and_nothing_else() {
        let good = client_hash("correct horse", "a@b.c");
        let phc = hash_client_hash(&good).expect("hashes");
        assert!(
            phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "today's parameters: {phc}"
        );
        assert_eq!(verify(&phc, &good), PasswordCheck::Matches);
        let wrong = client_hash("correct horse!", "a@b.c");
        assert_eq!(verify(&phc, &wrong), PasswordCheck::Mismatch);
        let other = hash_client_hash(&good).expect("hashes");
        assert_ne!(phc, other, "each hash has its own salt");
        assert_eq!(verify(&other, &good), PasswordCheck::Matches);
    }

    #[test]
    fn unusable_hashes_and_non_client_hashes_are_refused() {
        let hash = client_hash("pw", "a@b.c");
        for phc in [
            "",
            "garbage",
            "$argon2i$v=19$m=19456,t=2,p=1$bm90aGluZy10by1zZWUhIQ$bm8gdXNlciBoYXMgdGhpcyBoYXNoLCBub2JvZHkhISE",
            "$argon2id$v=19$m=4194304,t=2,p=1$bm90aGluZy10by1zZWUhIQ$bm8gdXNlciBoYXMgdGhpcyBoYXNoLCBub2JvZHkhISE",
            "$argon2id$v=19$m=19456,t=2,p=1$bm90aGluZy10by1zZWUhIQ",
        ] {
            assert_eq!(verify(phc, &hash), PasswordCheck::Unusable, "{phc}");
        }
        assert!(matches!(
            hash_client_hash("plain password"),
            Err(PasswordError::NotAClientHash(14))
        ));
    }

    /// The dummy must cost what a real hash costs, or unknown emails answer faster.
    #[test]
    fn the_dummy_has_todays_parameters_and_matches_nothing() {
        let parsed = PasswordHash::new(DUMMY_PHC).expect("parses");
        assert!(usable(&parsed));
        let params = Params::try_from(&parsed).expect("params");
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (M_COST_KIB, T_COST, P_COST)
        );
        let hash = client_hash("pw", "a@b.c");
        assert_eq!(verify(DUMMY_PHC, &hash), PasswordCheck::Mismatch);
        assert_eq!(verify_against_nothing(&hash), PasswordCheck::Mismatch);
    }
}
