//! An in-memory [`Engine`] over `BTreeMap`s, for unit tests only: nothing survives the process.
//!
//! Besides the engine behaviour (checked by the conformance suite against RocksDB), it records the
//! durability class of every write and the number of WAL syncs, and can be told to fail writes, so
//! schema tests can check which durability each request uses and that a failed write has no
//! effect.

use super::{Cf, Durability, Engine, EngineError, KeyValue, Op, WriteBatch, expired, unix_ms};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

type Table = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Default)]
pub struct MemoryEngine {
    tables: RwLock<BTreeMap<Cf, Table>>,
    writes: Mutex<Vec<Durability>>,
    syncs: AtomicU64,
    fail_writes: AtomicBool,
}

impl MemoryEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Durability classes of every non-empty batch written so far, in order.
    pub fn write_log(&self) -> Vec<Durability> {
        self.writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Number of [`Engine::sync_wal`] calls so far.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    /// While set, every write fails with [`EngineError::Backend`] and changes nothing.
    pub fn set_fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }
}

impl Engine for MemoryEngine {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        Ok(tables.get(&cf).and_then(|t| t.get(key)).cloned())
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), EngineError> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(EngineError::Backend("injected write failure".into()));
        }
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        for op in batch.into_ops() {
            match op {
                Op::Put { cf, key, value } => {
                    tables.entry(cf).or_default().insert(key, value);
                }
                Op::Delete { cf, key } => {
                    if let Some(t) = tables.get_mut(&cf) {
                        t.remove(&key);
                    }
                }
                Op::DeleteRange { cf, start, end } => {
                    if let Some(t) = tables.get_mut(&cf) {
                        t.retain(|k, _| {
                            !(start.as_slice() <= k.as_slice() && k.as_slice() < end.as_slice())
                        });
                    }
                }
            }
        }
        self.writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(durability);
        Ok(())
    }

    fn scan_range(
        &self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let Some(table) = tables.get(&cf) else {
            return Ok(Vec::new());
        };
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(table
            .range::<[u8], _>((Bound::Included(start), upper))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn sync_wal(&self) -> Result<(), EngineError> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn compact(&self, cf: Cf) -> Result<(), EngineError> {
        if cf.expires() {
            let now = unix_ms();
            let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(t) = tables.get_mut(&cf) {
                t.retain(|_, v| !expired(v, now));
            }
        }
        Ok(())
    }

    fn checkpoint(&self, _dir: &std::path::Path) -> Result<(), EngineError> {
        Err(EngineError::Unsupported(
            "the in-memory engine has no files to checkpoint",
        ))
    }
}
