//! Encryption at rest: an [`Engine`] wrapper that seals every value with ChaCha20-Poly1305 (from
//! `ring`) before it reaches the engine below and opens it on the way back. Keys come from a key
//! file ([`Keyring`]); each sealed value names the id of the key that sealed it, so after a
//! rotation (`portcullis-store rotate-key` adds a key and makes it current) old values stay
//! readable with their old key while new writes use the new one.
//!
//! Sealed value: `[0x01][key id u32 BE][nonce 12][ciphertext + 16-byte tag]`, with the column
//! family name and the key as associated data, so a value cannot be moved to another key or
//! family unnoticed. In an expiring family ([`Cf::expires`]) the 8-byte expiry stays in clear in
//! front, since the engine's compaction filter must read it without the key. Keys (row keys) are
//! not encrypted: they hold ids, pin numbers, times and token hashes, never secrets.
//!
//! Nonces are a random 32-bit prefix drawn at start-up followed by a 64-bit counter, so one
//! process never repeats a nonce and two processes collide only if their prefixes do.
//!
//! A sealed database carries a check value under `meta/sealing` written in clear: `SEALING_MARK`,
//! then the key id, then a sealed known plaintext. Opening it without a key, with a key file
//! lacking that key id, or with a wrong key fails with a message that says which; opening a clear
//! database with a key is refused too, never half-encrypting it.

use super::{Cf, Durability, EXPIRY_LEN, Engine, EngineError, KeyValue, Op, WriteBatch};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

/// Bytes of a key.
pub const KEY_LEN: usize = 32;
/// Format byte of a sealed value.
const SEALED_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Meta key of the sealing check value (stored in clear by this wrapper).
pub const SEALING_KEY: &[u8] = b"sealing";
const SEALING_MARK: &[u8] = b"portcullis-sealed-v1";
const CHECK_PLAINTEXT: &[u8] = b"portcullis key check";

/// Why a key file or a sealed database cannot be used. All are the operator's to fix.
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
}

/// The keys of a key file, by id; the highest id is current.
pub struct Keyring {
    keys: BTreeMap<u32, LessSafeKey>,
    current: u32,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
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
        Self::parse(&text, &shown)
    }

    fn parse(text: &str, path: &str) -> Result<Self, KeyError> {
        let mut keys = BTreeMap::new();
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
        }
        let current = *keys
            .keys()
            .next_back()
            .ok_or_else(|| KeyError::Empty(path.to_owned()))?;
        Ok(Self { keys, current })
    }

    pub fn current(&self) -> u32 {
        self.current
    }
}

/// Adds a fresh random key to the key file (creating it, mode 0600, if missing) and makes it the
/// current one. Returns its id. Written to a temporary file, synced, then renamed over.
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

/// An engine whose values are sealed with a [`Keyring`] on the way down (see the module docs),
/// or, without a keyring, passed through in clear (after checking the database is not sealed).
pub struct Sealed<E> {
    inner: E,
    keys: Option<Keyring>,
    nonce_prefix: [u8; 4],
    counter: AtomicU64,
}

impl<E: Engine> Sealed<E> {
    /// Wraps `inner` without encryption; refuses a sealed database.
    pub fn clear(inner: E) -> Result<Self, EngineError> {
        if inner.get(Cf::Meta, SEALING_KEY)?.is_some() {
            return Err(EngineError::Sealing(
                "this database is encrypted at rest; start the store with its key file (store.key_file / --key-file)".into(),
            ));
        }
        Ok(Self {
            inner,
            keys: None,
            nonce_prefix: [0; 4],
            counter: AtomicU64::new(0),
        })
    }

    /// Wraps `inner`: stamps an empty database as sealed, and refuses a clear database or one
    /// sealed with a key this keyring lacks or does not match.
    pub fn open(inner: E, keys: Keyring) -> Result<Self, EngineError> {
        let mut nonce_prefix = [0u8; 4];
        SystemRandom::new()
            .fill(&mut nonce_prefix)
            .map_err(|_| EngineError::Backend("the system random generator failed".into()))?;
        let sealed = Self {
            inner,
            keys: Some(keys),
            nonce_prefix,
            counter: AtomicU64::new(0),
        };
        match sealed.inner.get(Cf::Meta, SEALING_KEY)? {
            Some(mark) => sealed.check(&mark)?,
            None => {
                for cf in Cf::ALL {
                    if !sealed.inner.scan_range(cf, b"", None, 1)?.is_empty() {
                        return Err(EngineError::Sealing(
                            "this database was created without encryption at rest; it cannot be opened with a key file (start without store.key_file, or restore its data into a new encrypted store)".into(),
                        ));
                    }
                }
                let mut mark = SEALING_MARK.to_vec();
                mark.extend(sealed.seal(Cf::Meta, SEALING_KEY, CHECK_PLAINTEXT.to_vec())?);
                let mut batch = WriteBatch::new();
                batch.put(Cf::Meta, SEALING_KEY, mark);
                sealed.inner.write(batch, Durability::Sync)?;
            }
        }
        Ok(sealed)
    }

    fn check(&self, mark: &[u8]) -> Result<(), EngineError> {
        let sealed = mark
            .strip_prefix(SEALING_MARK)
            .ok_or_else(|| EngineError::Sealing("the sealing check value is damaged".into()))?;
        match self.open_value(Cf::Meta, SEALING_KEY, sealed) {
            Ok(plain) if plain == CHECK_PLAINTEXT => Ok(()),
            Ok(_) => Err(EngineError::Sealing(
                "the sealing check value is damaged".into(),
            )),
            Err(err) => Err(err),
        }
    }

    pub fn inner(&self) -> &E {
        &self.inner
    }

    fn nonce(&self) -> [u8; NONCE_LEN] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.nonce_prefix);
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        nonce
    }

    fn aad(cf: Cf, key: &[u8]) -> Vec<u8> {
        let mut aad = cf.name().as_bytes().to_vec();
        aad.push(0);
        aad.extend_from_slice(key);
        aad
    }

    fn seal(&self, cf: Cf, key: &[u8], mut plain: Vec<u8>) -> Result<Vec<u8>, EngineError> {
        let Some(keys) = &self.keys else {
            return Ok(plain);
        };
        let id = keys.current;
        let sealing_key = keys
            .keys
            .get(&id)
            .ok_or_else(|| EngineError::Sealing(format!("no key {id}")))?;
        let nonce = self.nonce();
        sealing_key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(cf, key)),
                &mut plain,
            )
            .map_err(|_| EngineError::Sealing("sealing a value failed".into()))?;
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend(plain);
        Ok(out)
    }

    fn open_value(&self, cf: Cf, key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, EngineError> {
        let Some(keys) = &self.keys else {
            return Ok(sealed.to_vec());
        };
        let damaged = || EngineError::Sealing(format!("a sealed {} value is damaged", cf.name()));
        let (header, body) = sealed.split_at_checked(HEADER_LEN).ok_or_else(damaged)?;
        if header[0] != SEALED_V1 {
            return Err(damaged());
        }
        let id = u32::from_be_bytes(header[1..5].try_into().map_err(|_| damaged())?);
        let nonce: [u8; NONCE_LEN] = header[5..].try_into().map_err(|_| damaged())?;
        let key_for_id = keys.keys.get(&id).ok_or_else(|| {
            EngineError::Sealing(format!(
                "the database needs key id {id}, which the key file does not hold (was an old key removed from it?)"
            ))
        })?;
        let mut buf = body.to_vec();
        let plain_len = key_for_id
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(Self::aad(cf, key)),
                &mut buf,
            )
            .map_err(|_| {
                EngineError::Sealing(format!(
                    "key id {id} of the key file does not open this database's values: wrong key file, or the data was tampered with"
                ))
            })?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }

    fn seal_value(&self, cf: Cf, key: &[u8], value: Vec<u8>) -> Result<Vec<u8>, EngineError> {
        if cf.expires() && value.len() >= EXPIRY_LEN {
            let mut out = value[..EXPIRY_LEN].to_vec();
            out.extend(self.seal(cf, key, value[EXPIRY_LEN..].to_vec())?);
            return Ok(out);
        }
        self.seal(cf, key, value)
    }

    fn unseal_value(&self, cf: Cf, key: &[u8], value: &[u8]) -> Result<Vec<u8>, EngineError> {
        if cf.expires() && value.len() >= EXPIRY_LEN {
            let mut out = value[..EXPIRY_LEN].to_vec();
            out.extend(self.open_value(cf, key, &value[EXPIRY_LEN..])?);
            return Ok(out);
        }
        self.open_value(cf, key, value)
    }

    fn is_mark(cf: Cf, key: &[u8]) -> bool {
        cf == Cf::Meta && key == SEALING_KEY
    }

    /// Whether values are sealed.
    pub fn is_sealed(&self) -> bool {
        self.keys.is_some()
    }
}

impl<E: Engine> Engine for Sealed<E> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if Self::is_mark(cf, key) {
            return Ok(None);
        }
        self.inner
            .get(cf, key)?
            .map(|v| self.unseal_value(cf, key, &v))
            .transpose()
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), EngineError> {
        let mut sealed = WriteBatch::new();
        for op in batch.into_ops() {
            match op {
                Op::Put { cf, key, value } if !Self::is_mark(cf, &key) => {
                    let value = self.seal_value(cf, &key, value)?;
                    sealed.put(cf, key, value);
                }
                other => sealed.push(other),
            }
        }
        self.inner.write(sealed, durability)
    }

    fn scan_range(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        // The check value is this wrapper's own and invisible above it; ask for one more entry in
        // case it is among them.
        self.inner
            .scan_range(cf, start, end, limit.saturating_add(1))?
            .into_iter()
            .filter(|(k, _)| !Self::is_mark(cf, k))
            .take(limit)
            .map(|(k, v)| {
                let v = self.unseal_value(cf, &k, &v)?;
                Ok((k, v))
            })
            .collect()
    }

    fn sync_wal(&self) -> Result<(), EngineError> {
        self.inner.sync_wal()
    }

    fn compact(&self, cf: Cf) -> Result<(), EngineError> {
        self.inner.compact(cf)
    }

    fn checkpoint(&self, dir: &Path) -> Result<(), EngineError> {
        self.inner.checkpoint(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::memory::MemoryEngine;
    use std::sync::Arc;

    fn ring(lines: &str) -> Keyring {
        Keyring::parse(lines, "test").expect("keys")
    }

    const K1: &str = "1 0101010101010101010101010101010101010101010101010101010101010101";
    const K2: &str = "2 0202020202020202020202020202020202020202020202020202020202020202";

    fn put(e: &impl Engine, cf: Cf, key: &[u8], value: &[u8]) {
        let mut b = WriteBatch::new();
        b.put(cf, key, value);
        e.write(b, Durability::Sync).expect("write");
    }

    #[test]
    fn values_are_sealed_below_and_clear_above() {
        let raw = Arc::new(MemoryEngine::new());
        let sealed = Sealed::open(Arc::clone(&raw), ring(K1)).expect("open");
        put(&sealed, Cf::Devices, b"k", b"secret name");
        assert_eq!(
            sealed.get(Cf::Devices, b"k").expect("get"),
            Some(b"secret name".to_vec())
        );
        let below = raw.get(Cf::Devices, b"k").expect("get").expect("stored");
        assert!(!below.windows(6).any(|w| w == b"secret"), "stored in clear");
        assert_eq!(
            &below[1..5],
            &1u32.to_be_bytes(),
            "key id stored with the value"
        );
        // An expiring family keeps its expiry readable for the compaction filter.
        let mut v = 42u64.to_be_bytes().to_vec();
        v.extend_from_slice(b"point");
        put(&sealed, Cf::History, b"h", &v);
        let below = raw.get(Cf::History, b"h").expect("get").expect("stored");
        assert_eq!(&below[..8], &42u64.to_be_bytes());
        assert_eq!(
            sealed.scan_prefix(Cf::History, b"").expect("scan"),
            vec![(b"h".to_vec(), v)]
        );
        // A value moved to another key does not open.
        put(
            &*raw,
            Cf::Devices,
            b"other",
            &raw.get(Cf::Devices, b"k").expect("get").expect("v"),
        );
        assert!(matches!(
            sealed.get(Cf::Devices, b"other"),
            Err(EngineError::Sealing(_))
        ));
    }

    #[test]
    fn rotation_keeps_old_values_readable_and_wrong_or_missing_keys_fail_clearly() {
        let raw = Arc::new(MemoryEngine::new());
        {
            let s = Sealed::open(Arc::clone(&raw), ring(K1)).expect("open");
            put(&s, Cf::Devices, b"old", b"one");
        }
        let both = format!("{K1}\n{K2}\n");
        let s = Sealed::open(Arc::clone(&raw), ring(&both)).expect("rotated");
        put(&s, Cf::Devices, b"new", b"two");
        assert_eq!(
            s.get(Cf::Devices, b"old").expect("get"),
            Some(b"one".to_vec())
        );
        assert_eq!(
            s.get(Cf::Devices, b"new").expect("get"),
            Some(b"two".to_vec())
        );
        let new = raw.get(Cf::Devices, b"new").expect("get").expect("v");
        assert_eq!(
            &new[1..5],
            &2u32.to_be_bytes(),
            "new writes use the new key"
        );

        let wrong = "1 0909090909090909090909090909090909090909090909090909090909090909";
        let err = Sealed::open(Arc::clone(&raw), ring(wrong))
            .err()
            .expect("wrong key");
        assert!(err.to_string().contains("does not open"), "{err}");
        let err = Sealed::open(Arc::clone(&raw), ring(K2))
            .err()
            .expect("missing key");
        assert!(err.to_string().contains("key id 1"), "{err}");

        let err = Sealed::clear(Arc::clone(&raw))
            .err()
            .expect("no key for a sealed db");
        assert!(err.to_string().contains("key file"), "{err}");

        let clear = Arc::new(MemoryEngine::new());
        put(&*clear, Cf::Devices, b"k", b"v");
        let passthrough = Sealed::clear(Arc::clone(&clear)).expect("clear");
        assert_eq!(
            passthrough.get(Cf::Devices, b"k").expect("get"),
            Some(b"v".to_vec())
        );
        let err = Sealed::open(clear, ring(K1)).err().expect("clear db");
        assert!(err.to_string().contains("without encryption"), "{err}");
    }

    #[test]
    fn key_files_are_checked_and_rotate_key_appends() {
        assert!(Keyring::parse("", "f").is_err());
        assert!(Keyring::parse("1 abcd", "f").is_err());
        assert!(Keyring::parse(&format!("{K1}\n{K1}"), "f").is_err());
        assert_eq!(ring(&format!("# c\n\n{K2}\n{K1}")).current(), 2);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        assert_eq!(rotate_key(&path).expect("first"), 1);
        assert_eq!(rotate_key(&path).expect("second"), 2);
        let keys = Keyring::load(&path).expect("load");
        assert_eq!(keys.current(), 2);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            Keyring::load(&path),
            Err(KeyError::Exposed { .. })
        ));
    }
}
