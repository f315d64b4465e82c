//! Key rotation while the store runs: adopting a re-read key file ([`Sealing::reload_keys`]),
//! counting which key ids the stored values use ([`Sealing::count_keys`]), and re-sealing values
//! of older keys with the current one, a bounded step at a time ([`Sealing::reseal_step`]), so
//! an old key can leave the key file.
//!
//! Safety of dropping a key: a reload may drop a key id only if the last full count found no
//! value sealed with it. That count stays true afterwards, because every write seals with the
//! current key and a reload never makes an older key current again (it cannot drop the current
//! one, and a newer file only adds higher ids).

use super::{KeyError, KeyUse, Keyring, ResealStep, SEALING_KEY, SEALING_MARK, Sealed};
use super::{key_id_of, lock};
use crate::engine::{Cf, Durability, Engine, EngineError, WriteBatch, expired};
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

/// Entries read per engine call while counting.
const COUNT_CHUNK: usize = 4096;

/// Encryption at rest as the store drives it; an engine that seals values offers it through
/// [`Engine::sealing`].
pub trait Sealing {
    /// The current key id and every id held.
    fn key_status(&self) -> (u32, Vec<u32>);

    /// Re-reads the key file the keys came from, with the checks of start-up (mode, format),
    /// and adopts it if no stored value would become unreadable: every key id it lacks must have
    /// been found unused by a [`Sealing::count_keys`], no key may have changed under its id, and
    /// the sealing check value must open. Otherwise the current keys stay.
    fn reload_keys(&self) -> Result<(u32, Vec<u32>), KeyError>;

    /// Counts the stored values by key id (a read-only scan of every family; writers go on),
    /// and remembers which older ids no value uses any more.
    fn count_keys(&self) -> Result<KeyUse, EngineError>;

    /// Looks at up to `limit` entries after `after` (from the start when `None`) and re-seals
    /// those sealed with an older key with the current one; expired history points under an
    /// older key are deleted instead. After the last family it re-seals the check value too.
    /// Writes with [`Durability::Buffered`]: the caller syncs before calling the work done.
    ///
    /// The caller must keep every other writer out for the duration of a step (the store runs
    /// it as a member of the group committer): a value is read and rewritten with the same
    /// contents, and a device's write slipping in between would be overwritten with old data.
    fn reseal_step(
        &self,
        after: Option<(Cf, Vec<u8>)>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ResealStep, EngineError>;
}

fn damaged(cf: Cf) -> EngineError {
    EngineError::Sealing(format!(
        "a stored {} value does not carry a key id",
        cf.name()
    ))
}

impl<E: Engine> Sealing for Sealed<E> {
    fn key_status(&self) -> (u32, Vec<u32>) {
        self.snapshot()
            .map(|k| (k.current(), k.ids()))
            .unwrap_or_default()
    }

    fn reload_keys(&self) -> Result<(u32, Vec<u32>), KeyError> {
        // Held throughout: reloads and the end of a count must not interleave.
        let unused = lock(&self.unused);
        let (Some(slot), Some(old)) = (&self.keys, self.snapshot()) else {
            return Err(KeyError::NoKeyFile("this store does not encrypt at rest"));
        };
        let Some(path) = old.source().map(ToOwned::to_owned) else {
            return Err(KeyError::NoKeyFile(
                "the keys in use were not read from a file",
            ));
        };
        let new = Keyring::load(&path)?;
        let refuse = |reason: String| KeyError::Unsafe {
            path: path.display().to_string(),
            reason,
        };
        for id in old.ids() {
            if old.changed(&new, id) {
                return Err(refuse(format!(
                    "key id {id} holds other key bytes than the store uses; values sealed with it would not open"
                )));
            }
            if !new.keys.contains_key(&id) && !unused.contains(&id) {
                return Err(refuse(format!(
                    "it lacks key id {id}, which stored values may still use; run `portcullis-store reseal` until it reports the key unused before removing it"
                )));
            }
        }
        let mark = self
            .inner
            .get(Cf::Meta, SEALING_KEY)
            .map_err(|e| refuse(e.to_string()))?
            .ok_or_else(|| refuse("the database has no sealing check value".into()))?;
        self.check(&new, &mark).map_err(|e| refuse(e.to_string()))?;
        let adopted = (new.current(), new.ids());
        *slot.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        Ok(adopted)
    }

    fn count_keys(&self) -> Result<KeyUse, EngineError> {
        let keys = self.sealed_keys()?;
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        for cf in Cf::ALL {
            let mut start = Vec::new();
            loop {
                let page = self.inner.scan_range(cf, &start, None, COUNT_CHUNK)?;
                for (key, value) in &page {
                    let id = if Self::is_mark(cf, key) {
                        value
                            .strip_prefix(SEALING_MARK)
                            .and_then(|sealed| key_id_of(Cf::Meta, sealed))
                    } else {
                        key_id_of(cf, value)
                    };
                    *counts.entry(id.ok_or_else(|| damaged(cf))?).or_default() += 1;
                }
                match page.last() {
                    Some((last, _)) if page.len() == COUNT_CHUNK => {
                        start.clone_from(last);
                        start.push(0);
                    }
                    _ => break,
                }
            }
        }
        *lock(&self.unused) = keys
            .ids()
            .into_iter()
            .filter(|id| *id < keys.current() && !counts.contains_key(id))
            .collect();
        Ok(KeyUse {
            current: keys.current(),
            loaded: keys.ids(),
            counts,
        })
    }

    fn reseal_step(
        &self,
        after: Option<(Cf, Vec<u8>)>,
        limit: usize,
        now_ms: u64,
    ) -> Result<ResealStep, EngineError> {
        let keys = self.sealed_keys()?;
        let limit = limit.max(1);
        let (mut family, mut start) = match after {
            None => (0, Vec::new()),
            Some((cf, mut key)) => {
                key.push(0);
                (Cf::ALL.iter().position(|c| *c == cf).unwrap_or(0), key)
            }
        };
        let mut step = ResealStep::default();
        let mut batch = WriteBatch::new();
        while let Some(&cf) = Cf::ALL.get(family) {
            let budget = limit - usize::try_from(step.scanned).unwrap_or(limit);
            let page = self.inner.scan_range(cf, &start, None, budget)?;
            for (key, value) in &page {
                step.scanned += 1;
                if Self::is_mark(cf, key) {
                    continue; // re-sealed once every family is done, below
                }
                let id = key_id_of(cf, value).ok_or_else(|| damaged(cf))?;
                if id == keys.current() {
                    continue;
                }
                if cf.expires() && expired(value, now_ms) {
                    // Already invisible and soon compacted away: not worth a new seal.
                    batch.delete(cf, key.clone());
                    step.dropped += 1;
                    continue;
                }
                let plain = self.unseal_value(&keys, cf, key, value)?;
                batch.put(cf, key.clone(), self.seal_value(&keys, cf, key, plain)?);
                step.resealed += 1;
            }
            if page.len() == budget {
                step.next = page.last().map(|(key, _)| (cf, key.clone()));
                break;
            }
            family += 1;
            start.clear();
        }
        if step.next.is_none()
            && let Some(mark) = self.inner.get(Cf::Meta, SEALING_KEY)?
            && mark
                .strip_prefix(SEALING_MARK)
                .and_then(|sealed| key_id_of(Cf::Meta, sealed))
                != Some(keys.current())
        {
            batch.put(Cf::Meta, SEALING_KEY, self.mark(&keys)?);
            step.resealed += 1;
        }
        self.inner.write(batch, Durability::Buffered)?;
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::memory::MemoryEngine;
    use crate::engine::sealed::rotate_key;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn put(e: &impl Engine, cf: Cf, key: &[u8], value: &[u8]) {
        let mut b = WriteBatch::new();
        b.put(cf, key, value);
        e.write(b, Durability::Sync).expect("write");
    }

    fn get(e: &impl Engine, cf: Cf, key: &[u8]) -> Vec<u8> {
        e.get(cf, key).expect("get").expect("stored")
    }

    fn raw_id(raw: &MemoryEngine, cf: Cf, key: &[u8]) -> Option<u32> {
        key_id_of(cf, &get(raw, cf, key))
    }

    fn write_file(path: &Path, text: &str) {
        let tmp = path.with_extension("new");
        std::fs::write(&tmp, text).expect("write");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::rename(&tmp, path).expect("rename");
    }

    /// A sealed in-memory engine whose keys come from a file with one key, plus that file.
    fn sealed(
        dir: &Path,
    ) -> (
        Sealed<Arc<MemoryEngine>>,
        Arc<MemoryEngine>,
        std::path::PathBuf,
    ) {
        let path = dir.join("keys");
        rotate_key(&path).expect("first key");
        let raw = Arc::new(MemoryEngine::new());
        let s = Sealed::open(Arc::clone(&raw), Keyring::load(&path).expect("load")).expect("open");
        (s, raw, path)
    }

    fn reseal_all(s: &impl Sealing, limit: usize, now_ms: u64) -> (u64, u64, usize) {
        let (mut resealed, mut dropped, mut steps) = (0, 0, 0);
        let mut after = None;
        loop {
            let step = s.reseal_step(after, limit, now_ms).expect("step");
            resealed += step.resealed;
            dropped += step.dropped;
            steps += 1;
            after = step.next;
            if after.is_none() {
                return (resealed, dropped, steps);
            }
        }
    }

    #[test]
    fn a_reload_adopts_a_rotated_key_and_old_values_stay_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, raw, path) = sealed(dir.path());
        put(&s, Cf::Devices, b"old", b"one");
        assert_eq!(rotate_key(&path).expect("rotate"), 2);
        assert_eq!(
            Sealing::key_status(&s).0,
            1,
            "nothing changes before the reload"
        );
        assert_eq!(s.reload_keys().expect("reload"), (2, vec![1, 2]));
        put(&s, Cf::Devices, b"new", b"two");
        assert_eq!(raw_id(&raw, Cf::Devices, b"new"), Some(2));
        assert_eq!(raw_id(&raw, Cf::Devices, b"old"), Some(1));
        assert_eq!(get(&s, Cf::Devices, b"old"), b"one");
        assert_eq!(get(&s, Cf::Devices, b"new"), b"two");
    }

    #[test]
    fn a_reload_refuses_broken_or_unsafe_files_and_keeps_the_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, _raw, path) = sealed(dir.path());
        put(&s, Cf::Devices, b"k", b"v");
        rotate_key(&path).expect("rotate");
        let good = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = good.lines().collect();

        write_file(&path, "1 not-a-key\n");
        assert!(matches!(s.reload_keys(), Err(KeyError::Syntax { .. })));
        write_file(&path, &good);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(s.reload_keys(), Err(KeyError::Exposed { .. })));
        // Key 1 seals "k" and the check value: it may not go before a count says so.
        write_file(&path, &format!("{}\n", lines[1]));
        let err = s.reload_keys().expect_err("drops a key in use");
        assert!(err.to_string().contains("lacks key id 1"), "{err}");
        // Other key bytes under id 1.
        write_file(&path, &format!("1 {}\n{}\n", "07".repeat(32), lines[1]));
        let err = s.reload_keys().expect_err("changed key");
        assert!(err.to_string().contains("other key bytes"), "{err}");
        std::fs::remove_file(&path).expect("rm");
        assert!(matches!(s.reload_keys(), Err(KeyError::Read { .. })));

        assert_eq!(
            Sealing::key_status(&s),
            (1, vec![1]),
            "the keys in use stay"
        );
        assert_eq!(get(&s, Cf::Devices, b"k"), b"v");
        write_file(&path, &good);
        assert_eq!(s.reload_keys().expect("good file").0, 2);
    }

    #[test]
    fn reseal_moves_every_value_to_the_current_key_so_the_old_one_can_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (s, raw, path) = sealed(dir.path());
        let now = 1_000_000;
        for i in 0..10u8 {
            put(&s, Cf::Devices, &[i], &[i; 3]);
            put(&s, Cf::Pins, &[i], b"pin");
        }
        let mut live = (now + 10_000u64).to_be_bytes().to_vec();
        live.extend_from_slice(b"live");
        put(&s, Cf::History, b"h-live", &live);
        let mut gone = (now - 1u64).to_be_bytes().to_vec();
        gone.extend_from_slice(b"gone");
        put(&s, Cf::History, b"h-gone", &gone);
        rotate_key(&path).expect("rotate");
        s.reload_keys().expect("reload");
        put(&s, Cf::Devices, b"fresh", b"already key 2");

        let before = s.count_keys().expect("count");
        assert_eq!(
            before.counts,
            BTreeMap::from([(1, 23), (2, 1)]),
            "the check value counts"
        );

        let (resealed, dropped, steps) = reseal_all(&s, 4, now);
        assert_eq!(
            (resealed, dropped),
            (22, 1),
            "21 values and the check value; 1 expired"
        );
        assert!(steps > 5, "bounded steps: {steps}");
        assert_eq!(reseal_all(&s, 4, now).0, 0, "a rerun has nothing to do");
        assert_eq!(raw_id(&raw, Cf::Devices, &[3]), Some(2));
        assert!(raw.get(Cf::History, b"h-gone").expect("get").is_none());
        assert_eq!(
            &get(&raw, Cf::History, b"h-live")[..8],
            &live[..8],
            "expiry kept in clear"
        );

        let after = s.count_keys().expect("count");
        assert_eq!(after.counts, BTreeMap::from([(2, 23)]));
        // Now key 1 may leave the file, live and across a restart.
        let text = std::fs::read_to_string(&path).expect("read");
        let only_two = text.lines().nth(1).expect("key 2").to_owned();
        write_file(&path, &format!("{only_two}\n"));
        assert_eq!(s.reload_keys().expect("drop key 1"), (2, vec![2]));
        drop(s);
        let s =
            Sealed::open(Arc::clone(&raw), Keyring::load(&path).expect("load")).expect("reopen");
        for i in 0..10u8 {
            assert_eq!(get(&s, Cf::Devices, &[i]), [i; 3]);
        }
        assert_eq!(get(&s, Cf::History, b"h-live"), live);
        assert_eq!(get(&s, Cf::Devices, b"fresh"), b"already key 2");
    }

    #[test]
    fn a_clear_engine_offers_no_sealing() {
        let s = Sealed::clear(MemoryEngine::new()).expect("clear");
        assert!(s.sealing().is_none());
    }
}
