//! Group commit: many write requests, from every link, become one engine batch and at most one
//! WAL sync. The [`Group`] collects each request's [`Change`] and lets later requests of the same
//! group read what earlier ones wrote (an overlay over the engine), so a read-modify-write such as
//! device creation (id counter, token index) stays correct without the group being written yet.
//!
//! Besides point reads, a view scans key ranges ([`View::scan`]) with the group's pending puts and
//! deletes merged in, so a rule that looks at every entry under a prefix (every session of a
//! user, every user of a role's organization) also sees what earlier requests of the group wrote.
//!
//! A request that fails validation contributes nothing and gets its own error; an engine failure
//! fails every request of the group, since none of it was written.

use super::Result;
use super::keys::prefix_end;
use crate::engine::{Cf, Durability, Engine, EngineError, KeyValue, Op, WriteBatch};
use std::collections::{BTreeMap, HashMap};

/// Where the schema's read-modify-write code reads from: the committed engine, or a group in the
/// making (its overlay first, then the engine).
pub(super) trait View {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;

    /// Up to `limit` entries with `start <= key < end`, in key order.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError>;

    /// Up to `limit` entries whose key starts with `prefix` (never empty), in key order.
    fn scan_prefix(
        &self,
        cf: Cf,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        self.scan(cf, prefix, &prefix_end(prefix), limit)
    }
}

/// Reads of committed data only.
pub(super) struct Committed<'a, E>(pub &'a E);

impl<E: Engine> View for Committed<'_, E> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.0.get(cf, key)
    }

    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        self.0.scan_range(cf, start, Some(end), limit)
    }
}

/// What one write request wants written, and how durably.
#[derive(Debug)]
pub(super) struct Change {
    pub batch: WriteBatch,
    pub durability: Durability,
}

impl Change {
    pub(super) fn new(durability: Durability) -> Self {
        Self {
            batch: WriteBatch::new(),
            durability,
        }
    }
}

/// Families the write path reads before writing (device records, the token index, the id
/// counters, every account family). Only these are kept in the overlay: pin values, properties
/// and history are written blindly (or range-deleted), and copying every telemetry key into a
/// map would cost more than the batch itself.
const fn read_while_writing(cf: Cf) -> bool {
    !matches!(cf, Cf::Pins | Cf::Properties | Cf::History)
}

/// The write batch of a group of requests in the making.
pub(super) struct Group<'a, E> {
    engine: &'a E,
    batch: WriteBatch,
    overlay: HashMap<Cf, HashMap<Vec<u8>, Option<Vec<u8>>>>,
    sync: bool,
}

impl<'a, E: Engine> Group<'a, E> {
    pub(super) fn new(engine: &'a E) -> Self {
        Self {
            engine,
            batch: WriteBatch::new(),
            overlay: HashMap::new(),
            sync: false,
        }
    }

    /// Adds a validated request's writes to the group.
    pub(super) fn absorb(&mut self, change: Change) {
        self.sync |= change.durability == Durability::Sync;
        for op in change.batch.into_ops() {
            match &op {
                Op::Put { cf, key, value } if read_while_writing(*cf) => {
                    self.overlay
                        .entry(*cf)
                        .or_default()
                        .insert(key.clone(), Some(value.clone()));
                }
                Op::Delete { cf, key } if read_while_writing(*cf) => {
                    self.overlay
                        .entry(*cf)
                        .or_default()
                        .insert(key.clone(), None);
                }
                // Range deletes are for telemetry families only, which the overlay does not
                // follow; the schema never range-deletes a family it reads while writing.
                Op::DeleteRange { cf, .. } => debug_assert!(!read_while_writing(*cf)),
                _ => {}
            }
            self.batch.push(op);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Whether a request of this group asked for a WAL sync before its reply.
    pub(super) fn needs_sync(&self) -> bool {
        self.sync
    }

    /// Writes the whole group as one batch into the WAL and memtables, without a sync: the caller
    /// syncs once ([`Engine::sync_wal`]) when [`Group::needs_sync`] says so, after letting readers
    /// see the group.
    pub(super) fn write(self) -> Result<(), EngineError> {
        self.engine.write(self.batch, Durability::Buffered)
    }
}

impl<E: Engine> View for Group<'_, E> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        if let Some(pending) = self.overlay.get(&cf).and_then(|t| t.get(key)) {
            return Ok(pending.clone());
        }
        self.engine.get(cf, key)
    }

    /// The engine's entries with the overlay's laid over them. At most `pending.len()` engine
    /// entries can be hidden or replaced by the overlay, so reading that many more than `limit`
    /// from the engine leaves at least `limit` entries, all known exactly up to the last one
    /// read: the first `limit` of the merge are right.
    fn scan(
        &self,
        cf: Cf,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<KeyValue>, EngineError> {
        let pending: BTreeMap<&[u8], &Option<Vec<u8>>> = self
            .overlay
            .get(&cf)
            .map(|t| {
                t.iter()
                    .filter(|(k, _)| start <= k.as_slice() && k.as_slice() < end)
                    .map(|(k, v)| (k.as_slice(), v))
                    .collect()
            })
            .unwrap_or_default();
        let committed =
            self.engine
                .scan_range(cf, start, Some(end), limit.saturating_add(pending.len()))?;
        if pending.is_empty() {
            return Ok(committed);
        }
        let complete = committed.len() < limit.saturating_add(pending.len());
        let horizon = committed.last().map(|(k, _)| k.clone());
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = committed
            .into_iter()
            .filter(|(k, _)| !pending.contains_key(k.as_slice()))
            .collect();
        for (key, value) in pending {
            let within = complete || horizon.as_deref().is_some_and(|h| key <= h);
            if let (Some(value), true) = (value, within) {
                merged.insert(key.to_vec(), value.clone());
            }
        }
        Ok(merged.into_iter().take(limit).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::memory::MemoryEngine;

    #[test]
    fn scans_see_the_groups_pending_puts_and_deletes() {
        let engine = MemoryEngine::new();
        let mut batch = WriteBatch::new();
        for k in [b"k1", b"k3", b"k5", b"k7"] {
            batch.put(Cf::Sessions, k.to_vec(), b"old".to_vec());
        }
        engine.write(batch, Durability::Sync).expect("write");
        let mut group = Group::new(&engine);
        let mut change = Change::new(Durability::Sync);
        change.batch.delete(Cf::Sessions, b"k1".to_vec());
        change.batch.delete(Cf::Sessions, b"k3".to_vec());
        change
            .batch
            .put(Cf::Sessions, b"k4".to_vec(), b"new".to_vec());
        change
            .batch
            .put(Cf::Sessions, b"k9".to_vec(), b"new".to_vec());
        group.absorb(change);
        let keys = |limit| {
            group
                .scan_prefix(Cf::Sessions, b"k", limit)
                .expect("scan")
                .into_iter()
                .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(usize::MAX), ["k4", "k5", "k7", "k9"]);
        assert_eq!(keys(1), ["k4"]);
        assert_eq!(keys(3), ["k4", "k5", "k7"]);
    }
}
