//! Values the main thread can change while the shards run (SIGHUP): the limits, published with a
//! version number so a shard notices a change with one atomic load per loop turn and copies the
//! new limits only then.

use super::ShardLimits;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct LiveLimits {
    version: AtomicU64,
    current: ArcSwap<ShardLimits>,
}

impl LiveLimits {
    pub fn new(limits: ShardLimits) -> Self {
        Self {
            version: AtomicU64::new(0),
            current: ArcSwap::from_pointee(limits),
        }
    }

    /// Publishes new limits to every shard.
    pub fn publish(&self, limits: ShardLimits) {
        self.current.store(Arc::new(limits));
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The new limits if they changed since `seen` (which is updated).
    pub fn changed_since(&self, seen: &mut u64) -> Option<ShardLimits> {
        let version = self.version.load(Ordering::Acquire);
        if version == *seen {
            return None;
        }
        *seen = version;
        Some(ShardLimits::clone(&self.current.load()))
    }
}
