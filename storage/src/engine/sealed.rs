//! Encryption at rest: an [`Engine`] wrapper that seals every value with ChaCha20-Poly1305 (from
//! `ring`) before it reaches the engine below and opens it on the way back. Keys come from a key
//! file ([`Keyring`]); each sealed value names the id of the key that sealed it, so after a
//! rotation (`portcullis-store rotate-key` adds a key and makes it current) old values stay
//! readable with their old key while new writes use the new one. The keyring can be swapped while
//! the store runs, and old values re-sealed with the current key so an old key can go (`rekey`).
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

pub use super::keyring::{KEY_LEN, KeyError, Keyring, rotate_key};
pub use rekey::Sealing;

mod rekey;

use super::{Cf, Durability, EXPIRY_LEN, Engine, EngineError, KeyValue, Op, WriteBatch};
use ring::aead::{Aad, NONCE_LEN, Nonce};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
/// Format byte of a sealed value.
const SEALED_V1: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Meta key of the sealing check value (stored in clear by this wrapper).
pub const SEALING_KEY: &[u8] = b"sealing";
const SEALING_MARK: &[u8] = b"portcullis-sealed-v1";
const CHECK_PLAINTEXT: &[u8] = b"portcullis key check";

/// An engine whose values are sealed with a [`Keyring`] on the way down (see the module docs),
/// or, without a keyring, passed through in clear (after checking the database is not sealed).
pub struct Sealed<E> {
    inner: E,
    /// The keys in use; swapped whole by a reload. Each operation works with one snapshot.
    keys: Option<RwLock<Arc<Keyring>>>,
    /// Older key ids the last full count found no value sealed with: only these may leave the
    /// key file on a reload. (Nothing is sealed with an older key after a count, since writes
    /// always use the current key and the current key never goes back.)
    unused: Mutex<BTreeSet<u32>>,
    nonce_prefix: [u8; 4],
    counter: AtomicU64,
}

/// The values sealed with each key id, from a full count ([`Sealed::count_keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    pub current: u32,
    pub loaded: Vec<u32>,
    /// Values per key id (the sealing check value counts as one).
    pub counts: BTreeMap<u32, u64>,
}

/// What one [`Sealed::reseal_step`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResealStep {
    pub scanned: u64,
    pub resealed: u64,
    /// Expired history points under an old key, deleted rather than re-sealed.
    pub dropped: u64,
    /// The last entry looked at, where the next step continues; `None` once done.
    pub next: Option<(Cf, Vec<u8>)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A set of ids stays consistent across a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The key id of a stored value of `cf` (after the clear expiry of an expiring family).
fn key_id_of(cf: Cf, stored: &[u8]) -> Option<u32> {
    let sealed = if cf.expires() {
        stored.get(EXPIRY_LEN..)?
    } else {
        stored
    };
    if sealed.first() != Some(&SEALED_V1) {
        return None;
    }
    sealed
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
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
            unused: Mutex::default(),
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
        let keys = Arc::new(keys);
        let sealed = Self {
            inner,
            keys: Some(RwLock::new(Arc::clone(&keys))),
            unused: Mutex::default(),
            nonce_prefix,
            counter: AtomicU64::new(0),
        };
        match sealed.inner.get(Cf::Meta, SEALING_KEY)? {
            Some(mark) => sealed.check(&keys, &mark)?,
            None => {
                for cf in Cf::ALL {
                    if !sealed.inner.scan_range(cf, b"", None, 1)?.is_empty() {
                        return Err(EngineError::Sealing(
                            "this database was created without encryption at rest; it cannot be opened with a key file (start without store.key_file, or restore its data into a new encrypted store)".into(),
                        ));
                    }
                }
                let mut batch = WriteBatch::new();
                batch.put(Cf::Meta, SEALING_KEY, sealed.mark(&keys)?);
                sealed.inner.write(batch, Durability::Sync)?;
            }
        }
        Ok(sealed)
    }

    /// A fresh check value sealed with the current key.
    fn mark(&self, keys: &Keyring) -> Result<Vec<u8>, EngineError> {
        let mut mark = SEALING_MARK.to_vec();
        mark.extend(self.seal(keys, Cf::Meta, SEALING_KEY, CHECK_PLAINTEXT.to_vec())?);
        Ok(mark)
    }

    fn check(&self, keys: &Keyring, mark: &[u8]) -> Result<(), EngineError> {
        let sealed = mark
            .strip_prefix(SEALING_MARK)
            .ok_or_else(|| EngineError::Sealing("the sealing check value is damaged".into()))?;
        match self.open_value(keys, Cf::Meta, SEALING_KEY, sealed) {
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

    /// The keys in use now (`None` for a clear database).
    fn snapshot(&self) -> Option<Arc<Keyring>> {
        self.keys
            .as_ref()
            .map(|k| Arc::clone(&k.read().unwrap_or_else(PoisonError::into_inner)))
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

    fn seal(
        &self,
        keys: &Keyring,
        cf: Cf,
        key: &[u8],
        mut plain: Vec<u8>,
    ) -> Result<Vec<u8>, EngineError> {
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

    fn open_value(
        &self,
        keys: &Keyring,
        cf: Cf,
        key: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, EngineError> {
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

    fn seal_value(
        &self,
        keys: &Keyring,
        cf: Cf,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<Vec<u8>, EngineError> {
        if cf.expires() && value.len() >= EXPIRY_LEN {
            let mut out = value[..EXPIRY_LEN].to_vec();
            out.extend(self.seal(keys, cf, key, value[EXPIRY_LEN..].to_vec())?);
            return Ok(out);
        }
        self.seal(keys, cf, key, value)
    }

    fn unseal_value(
        &self,
        keys: &Keyring,
        cf: Cf,
        key: &[u8],
        value: &[u8],
    ) -> Result<Vec<u8>, EngineError> {
        if cf.expires() && value.len() >= EXPIRY_LEN {
            let mut out = value[..EXPIRY_LEN].to_vec();
            out.extend(self.open_value(keys, cf, key, &value[EXPIRY_LEN..])?);
            return Ok(out);
        }
        self.open_value(keys, cf, key, value)
    }

    fn is_mark(cf: Cf, key: &[u8]) -> bool {
        cf == Cf::Meta && key == SEALING_KEY
    }

    /// Whether values are sealed.
    pub fn is_sealed(&self) -> bool {
        self.keys.is_some()
    }

    fn sealed_keys(&self) -> Result<Arc<Keyring>, EngineError> {
        self.snapshot().ok_or(EngineError::Unsupported(
            "this store does not encrypt at rest (it was started without a key file)",
        ))
    }
}

impl<E: Engine> Engine for Sealed<E> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if Self::is_mark(cf, key) {
            return Ok(None);
        }
        let Some(value) = self.inner.get(cf, key)? else {
            return Ok(None);
        };
        match self.snapshot() {
            Some(keys) => self.unseal_value(&keys, cf, key, &value).map(Some),
            None => Ok(Some(value)),
        }
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), EngineError> {
        let Some(keys) = self.snapshot() else {
            return self.inner.write(batch, durability);
        };
        let mut sealed = WriteBatch::new();
        for op in batch.into_ops() {
            match op {
                Op::Put { cf, key, value } if !Self::is_mark(cf, &key) => {
                    let value = self.seal_value(&keys, cf, &key, value)?;
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
        let keys = self.snapshot();
        // The check value is this wrapper's own and invisible above it; ask for one more entry in
        // case it is among them.
        self.inner
            .scan_range(cf, start, end, limit.saturating_add(1))?
            .into_iter()
            .filter(|(k, _)| !Self::is_mark(cf, k))
            .take(limit)
            .map(|(k, v)| match &keys {
                Some(keys) => {
                    let v = self.unseal_value(keys, cf, &k, &v)?;
                    Ok((k, v))
                }
                None => Ok((k, v)),
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

    fn sealing(&self) -> Option<&dyn Sealing> {
        self.is_sealed().then_some(self as &dyn Sealing)
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
}
