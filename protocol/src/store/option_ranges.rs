//! Ranges of the store's tuning options, in one place because two sides check them: the store's
//! command line, and the gateway's configuration (which starts the store as a child with them),
//! so a value `portcullis check-config` accepts never stops the child store from starting.

use std::ops::RangeInclusive;

/// `--sync-interval-ms` / `store.sync_interval_ms`: the WAL fsync interval.
pub const SYNC_INTERVAL_MS: RangeInclusive<u64> = 1..=60_000;
/// `--commit-window-us` / `store.commit_window_us`: how long a write group waits for more.
pub const COMMIT_WINDOW_US: RangeInclusive<u64> = 0..=10_000;
/// `--block-cache-mib` / `store.block_cache_mib`: RocksDB's block cache.
pub const BLOCK_CACHE_MIB: RangeInclusive<u64> = 1..=65_536;
/// `--history-retention-days`, per template too: about a hundred years at most.
pub const HISTORY_RETENTION_DAYS: RangeInclusive<u64> = 0..=36_500;
