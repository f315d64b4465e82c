//! The random secrets accounts hand out: session tokens, one-time tokens (email verification,
//! invitation, password reset) and API key secrets. Each is [`SECRET_BYTES`] from the OS CSPRNG,
//! base64url without padding; only its SHA-256 hash ever reaches the store. `Debug` prints
//! nothing of it, so a secret cannot leak into a log by accident.

use crate::error::{LocalFailure, OperationError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_protocol::store::SecretHash;
use portcullis_protocol::token::token_hash;
use std::fmt;

/// Random bytes of a secret: 256 bits.
pub const SECRET_BYTES: usize = 32;

/// Characters of a secret once encoded (base64url of [`SECRET_BYTES`]).
pub const SECRET_CHARS: usize = 43;

/// A fresh secret. Shown once to whoever it is for; stored nowhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn generate() -> Result<Secret, OperationError> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(LocalFailure::Random)?;
        Ok(Secret(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The secret, for the one place that hands it over (a reply, a mail).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        hash(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// The hash the store keeps of a secret a client presents.
pub fn hash(presented: &str) -> SecretHash {
    token_hash(presented.as_bytes())
}

/// Whether a presented secret has the shape of one of ours (checked before any store lookup,
/// so garbage costs nothing).
pub fn plausible(presented: &str) -> bool {
    presented.len() == SECRET_CHARS
        && presented
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_plausible_and_never_printed() {
        let a = Secret::generate().expect("random");
        let b = Secret::generate().expect("random");
        assert_ne!(a, b);
        assert!(plausible(a.expose()), "{}", a.expose().len());
        assert!(!plausible("short"));
        assert!(!plausible(&"=".repeat(SECRET_CHARS)));
        assert_eq!(a.hash(), hash(a.expose()));
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
