//! Group commit: many write requests, from every link, become one engine batch and at most one
//! WAL sync. The [`Group`] collects each request's [`Change`] and lets later requests of the same
//! group read what earlier ones wrote (an overlay over the engine), so a read-modify-write such as
//! device creation (id counter, token index) stays correct without the group being written yet.
//!
//! A request that fails validation contributes nothing and gets its own error; an engine failure
//! fails every request of the group, since none of it was written.

use super::Result;
use crate::engine::{Cf, Durability, Engine, EngineError, Op, WriteBatch};
use std::collections::HashMap;

/// Where the schema's read-modify-write code reads from: the committed engine, or a group in the
/// making (its overlay first, then the engine).
pub(super) trait View {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError>;
}

/// Reads of committed data only.
pub(super) struct Committed<'a, E>(pub &'a E);

impl<E: Engine> View for Committed<'_, E> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.0.get(cf, key)
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
/// counter, users for the duplicate-email check). Only these are kept in the overlay: pin values and history are written blindly, and
/// copying every telemetry key into a map would cost more than the batch itself.
const fn read_while_writing(cf: Cf) -> bool {
    matches!(cf, Cf::Meta | Cf::Devices | Cf::TokenIndex | Cf::Users)
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
}
