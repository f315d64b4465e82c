//! Device tokens: generation (24 bytes from the OS CSPRNG, base64url without padding, 32
//! characters), the SHA-256 hash that is the only form the store ever sees, the plausibility check
//! done before asking the store, and the short prefix that is the only part ever logged.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::fmt;
use thiserror::Error;

/// Random bytes in a token; base64url turns 24 bytes into exactly [`TOKEN_LEN`] characters.
const TOKEN_RANDOM_BYTES: usize = 24;

/// Length of a device token in characters (new base64url tokens and legacy 32-hex ones alike).
pub const TOKEN_LEN: usize = 32;

/// How many leading characters of a token may appear in logs: enough to tell tokens apart when
/// debugging, far too few to guess the rest.
pub const LOGGED_PREFIX_LEN: usize = 6;

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("the operating system's random number generator failed: {0}")]
    Random(getrandom::Error),
}

/// A freshly generated device token. It is shown once to whoever created the device and never
/// stored: `Debug` and `Display` print only its prefix, so it cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceToken(String);

impl DeviceToken {
    /// 24 bytes from the OS CSPRNG, base64url-encoded without padding.
    pub fn generate() -> Result<DeviceToken, TokenError> {
        let mut random = [0u8; TOKEN_RANDOM_BYTES];
        getrandom::fill(&mut random).map_err(TokenError::Random)?;
        Ok(DeviceToken(URL_SAFE_NO_PAD.encode(random)))
    }

    /// The full token, for the one place that shows it to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 hash the store keeps.
    pub fn hash(&self) -> [u8; 32] {
        token_hash(self.0.as_bytes())
    }

    /// The loggable prefix.
    pub fn prefix(&self) -> String {
        token_prefix(self.0.as_bytes())
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceToken({}…)", self.prefix())
    }
}

impl fmt::Display for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.prefix())
    }
}

/// A token as sent by a client, without the surrounding ASCII whitespace (the Blynk server trims
/// login bodies, and some client libraries send a trailing newline).
pub fn trim_token(token: &[u8]) -> &[u8] {
    token.trim_ascii()
}

/// SHA-256 of the trimmed token: the key the store looks devices up by.
pub fn token_hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(trim_token(token)).into()
}

/// Whether the trimmed bytes could be a token: exactly 32 characters of the base64url alphabet
/// (`A-Z a-z 0-9 - _`), which also admits legacy 32-digit hex tokens. Checked before the store is
/// asked, so garbage never costs a lookup.
pub fn is_plausible_token(token: &[u8]) -> bool {
    let token = trim_token(token);
    token.len() == TOKEN_LEN
        && token
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The first few characters of a token, for logs. Non-printable bytes are escaped so a hostile
/// "token" cannot forge log lines.
pub fn token_prefix(token: &[u8]) -> String {
    let token = trim_token(token);
    let head = &token[..token.len().min(LOGGED_PREFIX_LEN)];
    head.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_tokens_are_32_base64url_chars_and_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let token = DeviceToken::generate().expect("OS randomness");
            assert_eq!(token.expose().len(), TOKEN_LEN);
            assert!(
                is_plausible_token(token.expose().as_bytes()),
                "{}",
                token.expose()
            );
            assert!(seen.insert(token.expose().to_owned()), "tokens repeat");
        }
    }

    #[test]
    fn hash_is_sha256_of_the_trimmed_token() {
        // SHA-256("abc") from FIPS 180-2.
        let abc = [
            0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
            0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61,
            0xf2, 0x00, 0x15, 0xad,
        ];
        assert_eq!(token_hash(b"abc"), abc);
        assert_eq!(token_hash(b" abc\r\n"), abc);
        let token = DeviceToken::generate().expect("OS randomness");
        assert_eq!(
            token.hash(),
            token_hash(format!("{}\n", token.expose()).as_bytes())
        );
    }

    #[test]
    fn plausibility_accepts_base64url_and_legacy_hex_only() {
        assert!(is_plausible_token(b"0123456789abcdef0123456789ABCDEF"));
        assert!(is_plausible_token(b"Ab-_0123456789abcdef0123456789xy"));
        assert!(is_plausible_token(b"0123456789abcdef0123456789abcdef\n"));
        assert!(!is_plausible_token(b"0123456789abcdef0123456789abcde"));
        assert!(!is_plausible_token(b"0123456789abcdef0123456789abcdef0"));
        assert!(!is_plausible_token(b"0123456789abcdef0123456789abcd+/"));
        assert!(!is_plausible_token(b"0123456789abcdef01234567\x0089abcdef"));
        assert!(!is_plausible_token(b""));
    }

    #[test]
    fn only_the_prefix_is_ever_printed() {
        let token = DeviceToken::generate().expect("OS randomness");
        let full = token.expose();
        for printed in [format!("{token:?}"), format!("{token}"), token.prefix()] {
            assert!(printed.contains(&full[..LOGGED_PREFIX_LEN]), "{printed}");
            assert!(
                !printed.contains(&full[..LOGGED_PREFIX_LEN + 1]),
                "{printed}"
            );
        }
        assert_eq!(token_prefix(b"ab"), "ab");
        assert_eq!(token_prefix(b"\n\x1b[2Jxyz"), "\\x1b[2Jxy");
    }
}
