//! The key file of encryption at rest: reading it ([`Keyring::load`]: lines `ID HEX`, mode
//! 0600/0400), and adding a key to it ([`rotate_key`]). The highest id is the current key, the
//! one new values are sealed with; older ids stay to open older values until they are re-sealed.
//!
//! A keyring remembers the file it came from, so the running store can re-read it on a reload,
//! and a fingerprint of every key, so a reload can tell a key that *changed* under an id it has
//! (which would make that id's values unreadable) from the same key read again.

use ring::aead::{CHACHA20_POLY1305, LessSafeKey, UnboundKey};
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;

/// Why a key file cannot be used, or cannot replace the keys in use. All are the operator's to fix.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read the key file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("key file {path}, line {line}: {reason}")]
    Syntax {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("the key file {0} holds no key")]
    Empty(String),
    #[error(
        "the key file {path} may be read by others (mode {mode:o}); make it 0600 or 0400 and owned by the store's user"
    )]
    Exposed { path: String, mode: u32 },
    #[error("cannot write the key file {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("the system random generator failed")]
    Random,
    /// A reload would lose access to stored values, so the store keeps its keys.
    #[error("the key file {path} cannot replace the keys in use: {reason}")]
    Unsafe { path: String, reason: String },
    /// The store is not encrypted at rest, or its keys came from no file.
    #[error("there is no key file to reload: {0}")]
    NoKeyFile(&'static str),
}

/// The keys of a key file, by id; the highest id is current.
pub struct Keyring {
    pub(super) keys: BTreeMap<u32, LessSafeKey>,
    /// SHA-256 of each key's bytes, to notice a key that changed under its id.
    fingerprints: BTreeMap<u32, [u8; 32]>,
    pub(super) current: u32,
    /// The file the keys were read from (`None` for keys parsed from text in tests).
    source: Option<PathBuf>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .field("source", &self.source)
            .finish()
    }
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Keyring {
    /// Reads a key file: one key per line, `ID HEX` (a decimal id and 64 hex digits), `#`
    /// comments and blank lines ignored. The file must not be readable by group or others.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let read_err = |e: std::io::Error| KeyError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let mode = std::fs::metadata(path)
            .map_err(read_err)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: shown,
                mode: mode & 0o777,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let mut keys = Self::parse(&text, &shown)?;
        keys.source = Some(path.to_owned());
        Ok(keys)
    }

    pub(super) fn parse(text: &str, path: &str) -> Result<Self, KeyError> {
        let mut keys = BTreeMap::new();
        let mut fingerprints = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |reason: String| KeyError::Syntax {
                path: path.to_owned(),
                line: n + 1,
                reason,
            };
            let (id, hex) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| syntax("expected `ID HEX`".into()))?;
            let id: u32 = id
                .parse()
                .map_err(|_| syntax(format!("{id:?} is not a key id")))?;
            let bytes = hex_decode(hex.trim())
                .filter(|b| b.len() == KEY_LEN)
                .ok_or_else(|| syntax(format!("the key must be {} hex digits", KEY_LEN * 2)))?;
            let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
                .map_err(|_| syntax("not a usable key".into()))?;
            if keys.insert(id, LessSafeKey::new(key)).is_some() {
                return Err(syntax(format!("key id {id} appears twice")));
            }
            let mut print = [0u8; 32];
            print.copy_from_slice(digest(&SHA256, &bytes).as_ref());
            fingerprints.insert(id, print);
        }
        let current = *keys
            .keys()
            .next_back()
            .ok_or_else(|| KeyError::Empty(path.to_owned()))?;
        Ok(Self {
            keys,
            fingerprints,
            current,
            source: None,
        })
    }

    /// The id new values are sealed with.
    pub fn current(&self) -> u32 {
        self.current
    }

    /// Every key id, ascending.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// The key file these keys were read from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Whether `id` is in both keyrings but with different key bytes.
    pub(super) fn changed(&self, other: &Keyring, id: u32) -> bool {
        matches!(
            (self.fingerprints.get(&id), other.fingerprints.get(&id)),
            (Some(a), Some(b)) if a != b
        )
    }
}

/// Adds a fresh random key to the key file (creating it, mode 0600, if missing) and makes it the
/// current one. Returns its id. Written to a temporary file, synced, then renamed over, so a
/// store reloading at the same moment reads either the old file or the new one, never half.
pub fn rotate_key(path: &Path) -> Result<u32, KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display().to_string();
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => {
            Keyring::load(path)?;
            text
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(KeyError::Read {
                path: shown,
                reason: e.to_string(),
            });
        }
    };
    let next = if existing.trim().is_empty() {
        1
    } else {
        Keyring::parse(&existing, &shown)?.current + 1
    };
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| KeyError::Random)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{next} {hex}\n"));
    let tmp = path.with_extension("tmp");
    let write_err = |e: std::io::Error| KeyError::Write {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_err)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(write_err)?;
    std::fs::rename(&tmp, path).map_err(write_err)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "1 0101010101010101010101010101010101010101010101010101010101010101";
    const K2: &str = "2 0202020202020202020202020202020202020202020202020202020202020202";

    #[test]
    fn key_files_are_checked_and_rotate_key_appends() {
        assert!(Keyring::parse("", "f").is_err());
        assert!(Keyring::parse("1 abcd", "f").is_err());
        assert!(Keyring::parse(&format!("{K1}\n{K1}"), "f").is_err());
        let both = Keyring::parse(&format!("# c\n\n{K2}\n{K1}"), "f").expect("keys");
        assert_eq!((both.current(), both.ids()), (2, vec![1, 2]));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        assert_eq!(rotate_key(&path).expect("first"), 1);
        assert_eq!(rotate_key(&path).expect("second"), 2);
        let keys = Keyring::load(&path).expect("load");
        assert_eq!(keys.current(), 2);
        assert_eq!(keys.source(), Some(path.as_path()));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            Keyring::load(&path),
            Err(KeyError::Exposed { .. })
        ));
    }

    #[test]
    fn a_key_that_changed_under_its_id_is_noticed() {
        let a = Keyring::parse(&format!("{K1}\n{K2}"), "f").expect("keys");
        let b = Keyring::parse(
            &format!("{K1}\n2 0303030303030303030303030303030303030303030303030303030303030303"),
            "f",
        )
        .expect("keys");
        assert!(!a.changed(&b, 1));
        assert!(a.changed(&b, 2));
        assert!(!a.changed(&b, 3), "an id only one side has did not change");
    }
}
