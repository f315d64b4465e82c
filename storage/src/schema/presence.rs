//! Device presence, kept per gateway node: `node_presence/<node>/<id>` holds the live sessions
//! that node reported for the device (the `local` part of each [`SessionTag`]), and the device
//! record's `sessions` is the count over every node, moved in the same batch as the set. So a
//! node's reset ([`Store::reset_presence`], sent by a gateway when it starts) ends exactly its own
//! sessions and leaves the other gateways' devices online, at a cost that follows the devices
//! that node had online, not the fleet.
//!
//! Older data directories keep working: the node-less sets of wire version 2 and before are
//! cleared by the first reset of any node, and counts that predate the sets altogether are
//! recomputed once.
//!
//! [`SessionTag`]: portcullis_protocol::store::SessionTag

use super::devices::update_device;
use super::group::{Change, View};
use super::records::{StoredDevice, decode, encode};
use super::{MAX_ADDR_LEN, Result, SchemaError, Store, keys};
use crate::engine::{Cf, Durability, Engine, WriteBatch};
use portcullis_protocol::store::{DeviceId, NodeName, Presence};
use std::collections::HashMap;

/// Presence entries (or devices) rewritten per batch by `ResetPresence`.
pub(super) const RESET_CHUNK: usize = 1024;

/// Live sessions remembered per device and node, at most; beyond it the oldest tag is forgotten
/// (a device holding this many connections at once through one gateway is misbehaving, and each
/// set must stay small).
pub const MAX_LIVE_SESSIONS: usize = 256;

/// Adds or removes one session tag from the live set its node keeps for the device, moves the
/// device's `sessions` by the set's change, and records `last_seen_ms` (and the address, when
/// online). Applying the same change twice leaves the same state.
pub(super) fn set_presence(
    view: &impl View,
    device: DeviceId,
    presence: Presence,
    at_ms: u64,
) -> Result<Change> {
    if let Presence::Online { addr, .. } = &presence
        && addr.len() > MAX_ADDR_LEN
    {
        return Err(SchemaError::Invalid(format!(
            "address is {} bytes long; the limit is {MAX_ADDR_LEN}",
            addr.len()
        )));
    }
    let node = &presence.session().node;
    node.check()
        .map_err(|why| SchemaError::Invalid(format!("session tag: {why}")))?;
    let key = keys::node_presence(node, device);
    let mut live: Vec<u64> = match view.get(Cf::Meta, &key)? {
        Some(bytes) => decode("presence", &key, &bytes)?,
        None => Vec::new(),
    };
    let before = live.len();
    let addr = match presence {
        Presence::Online { addr, session } => {
            if !live.contains(&session.local) {
                if live.len() >= MAX_LIVE_SESSIONS {
                    live.remove(0);
                }
                live.push(session.local);
            }
            Some(addr)
        }
        Presence::Offline { session } => {
            live.retain(|s| *s != session.local);
            None
        }
    };
    let after = live.len();
    let mut change = update_device(view, device, |d| {
        d.last_seen_ms = Some(at_ms);
        d.sessions = moved_count(d.sessions, before, after);
        if addr.is_some() {
            d.last_addr = addr;
        }
    })?;
    if live.is_empty() {
        change.batch.delete(Cf::Meta, key);
    } else {
        change.batch.put(Cf::Meta, key, encode(&live)?);
    }
    Ok(change)
}

/// A device's session count after one of its sets went from `before` to `after` tags.
pub(super) fn moved_count(sessions: u32, before: usize, after: usize) -> u32 {
    let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    sessions
        .saturating_sub(clamp(before))
        .saturating_add(clamp(after))
}

impl<E: Engine> Store<E> {
    /// Ends every live session of gateway node `node`: deletes the node's session sets and moves
    /// their devices' `sessions` down by what each held, a chunk per batch, then syncs the WAL
    /// once. Other nodes' sessions stay. The cost follows the devices the node had online, not
    /// the fleet, with two one-time exceptions that keep older data directories right:
    ///
    /// - session sets of wire version 2 and before (`presence/<id>`, no node: those gateways
    ///   ran the binaries a store of this version no longer serves, so none of their sessions
    ///   is live) are cleared by the first reset of any node, and then there are none to visit;
    /// - a store whose counts predate the session sets (no `presence_indexed` marker) has every
    ///   device's count recomputed from the sets once.
    ///
    /// Not atomic across chunks, but idempotent: after a crash the gateway simply resets again.
    /// Runs under the group writer's lock, between groups.
    pub(super) fn reset_presence(&self, node: &NodeName) -> Result<()> {
        node.check()
            .map_err(|why| SchemaError::Invalid(format!("ResetPresence: {why}")))?;
        let indexed = self.engine.get(Cf::Meta, keys::PRESENCE_INDEXED)?.is_some();
        let legacy = self.clear_legacy_session_sets()?;
        let mut reset = if indexed {
            0
        } else {
            self.recount_every_device()?
        };
        reset += self.clear_session_sets(&keys::node_presence_prefix(node))?;
        if !indexed {
            let mut batch = WriteBatch::new();
            batch.put(Cf::Meta, keys::PRESENCE_INDEXED, Vec::new());
            self.engine.write(batch, Durability::Buffered)?;
        }
        self.engine.sync_wal()?;
        tracing::info!(
            %node,
            devices = reset,
            legacy_devices = legacy,
            full_scan = !indexed,
            "presence reset"
        );
        Ok(())
    }

    /// Sets every device's `sessions` to what the node session sets hold for it, a chunk per
    /// batch: the first reset of a store, which may hold counts written before the sets existed.
    /// Returns how many devices changed.
    fn recount_every_device(&self) -> Result<u64> {
        let mut live: HashMap<DeviceId, u32> = HashMap::new();
        let end = keys::prefix_end(keys::NODE_PRESENCE_PREFIX);
        let mut start = keys::NODE_PRESENCE_PREFIX.to_vec();
        loop {
            let page =
                self.engine
                    .scan_range(Cf::Meta, &start, Some(end.as_slice()), RESET_CHUNK)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for (key, value) in &page {
                let device = keys::parse_node_presence(key).ok_or_else(|| corrupt_presence(key))?;
                let tags: Vec<u64> = decode("presence", key, value)?;
                let count = live.entry(device).or_default();
                *count = moved_count(*count, 0, tags.len());
            }
        }
        let mut start = keys::device(0).to_vec();
        let mut changed = 0u64;
        loop {
            let page = self
                .engine
                .scan_range(Cf::Devices, &start, None, RESET_CHUNK)?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            let mut batch = WriteBatch::new();
            for (key, value) in &page {
                let device = keys::parse_device(key).ok_or_else(|| SchemaError::Corrupt {
                    what: "device key",
                    key: keys::hex(key),
                    reason: "not 8 bytes".into(),
                })?;
                let sessions = live.get(&device).copied().unwrap_or(0);
                changed += u64::from(set_sessions(&mut batch, key, value, |_| sessions)?);
            }
            self.engine.write(batch, Durability::Buffered)?;
        }
        Ok(changed)
    }

    /// Deletes every session set under `prefix` (one node's) and moves its device's `sessions`
    /// down by the tags it held, a chunk per batch. A device with live sessions of the node
    /// always has its set (both are written in one batch). Returns how many devices changed.
    fn clear_session_sets(&self, prefix: &[u8]) -> Result<u64> {
        self.clear_sets(prefix, keys::parse_node_presence)
    }

    /// Deletes the node-less session sets of wire version 2 and before, moving each device's
    /// `sessions` down by what its set held (their counts were exactly the set's size).
    fn clear_legacy_session_sets(&self) -> Result<u64> {
        self.clear_sets(keys::LEGACY_PRESENCE_PREFIX, keys::parse_legacy_presence)
    }

    fn clear_sets(&self, prefix: &[u8], device_of: fn(&[u8]) -> Option<DeviceId>) -> Result<u64> {
        let end = keys::prefix_end(prefix);
        let mut reset = 0u64;
        loop {
            let page =
                self.engine
                    .scan_range(Cf::Meta, prefix, Some(end.as_slice()), RESET_CHUNK)?;
            if page.is_empty() {
                break;
            }
            // One key per device under a prefix: each device is read and rewritten once per
            // page, and earlier pages are written before the next scan.
            let mut batch = WriteBatch::new();
            for (key, value) in page {
                let device = device_of(&key).ok_or_else(|| corrupt_presence(&key))?;
                let tags: Vec<u64> = decode("presence", &key, &value)?;
                let device_key = keys::device(device);
                if let Some(record) = self.engine.get(Cf::Devices, &device_key)? {
                    reset += u64::from(set_sessions(&mut batch, &device_key, &record, |n| {
                        moved_count(n, tags.len(), 0)
                    })?);
                }
                batch.delete(Cf::Meta, key);
            }
            self.engine.write(batch, Durability::Buffered)?;
        }
        Ok(reset)
    }
}

/// Adds to `batch` the device record `value` with `sessions` set to `count(sessions)`, unless
/// that is what it holds already; returns whether it did.
fn set_sessions(
    batch: &mut WriteBatch,
    key: &[u8],
    value: &[u8],
    count: impl FnOnce(u32) -> u32,
) -> Result<bool> {
    let mut record: StoredDevice = decode("device", key, value)?;
    let sessions = count(record.sessions);
    if record.sessions == sessions {
        return Ok(false);
    }
    record.sessions = sessions;
    batch.put(Cf::Devices, key.to_vec(), encode(&record)?);
    Ok(true)
}

fn corrupt_presence(key: &[u8]) -> SchemaError {
    SchemaError::Corrupt {
        what: "presence key",
        key: keys::hex(key),
        reason: "not a device id".into(),
    }
}
