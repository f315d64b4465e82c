//! The store's own counters, for the gateway's metrics: write groups and their sizes, and how long
//! each WAL fsync takes. Plain atomics, bumped by the group writer and the syncers without locks,
//! read by a `Stats` request.

use portcullis_protocol::store::{StatsHistogram, StoreStats};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the requests-per-group histogram.
pub const GROUP_SIZE_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16_384];
/// Upper bounds of the fsync-duration histogram, in microseconds: 100 µs to 1 s.
pub const FSYNC_BOUNDS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Counts per bucket for fixed bounds, plus the sum.
struct Recorder {
    bounds: &'static [u64],
    /// `bounds.len() + 1` buckets; the last holds what is above every bound.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Recorder {
    fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: u64) {
        let index = self.bounds.partition_point(|&bound| bound < value);
        self.counts[index].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StatsHistogram {
        StatsHistogram {
            bounds: self.bounds.to_vec(),
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

pub(crate) struct StoreCounters {
    groups: AtomicU64,
    group_requests: Recorder,
    fsync_micros: Recorder,
}

impl Default for StoreCounters {
    fn default() -> Self {
        Self {
            groups: AtomicU64::new(0),
            group_requests: Recorder::new(GROUP_SIZE_BOUNDS),
            fsync_micros: Recorder::new(FSYNC_BOUNDS_US),
        }
    }
}

impl StoreCounters {
    pub(crate) fn group(&self, requests: usize) {
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.group_requests.observe(requests as u64);
    }

    pub(crate) fn fsync(&self, took: Duration) {
        self.fsync_micros
            .observe(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            groups: self.groups.load(Ordering::Relaxed),
            group_requests: self.group_requests.snapshot(),
            fsync_micros: self.fsync_micros.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_buckets() {
        let c = StoreCounters::default();
        c.group(1);
        c.group(3);
        c.group(100_000);
        c.fsync(Duration::from_micros(90));
        c.fsync(Duration::from_millis(3));
        let s = c.snapshot();
        assert_eq!(s.groups, 3);
        assert_eq!(s.group_requests.counts.len(), GROUP_SIZE_BOUNDS.len() + 1);
        assert_eq!(s.group_requests.counts[0], 1, "1 ≤ 1");
        assert_eq!(s.group_requests.counts[2], 1, "3 ≤ 4");
        assert_eq!(
            *s.group_requests.counts.last().unwrap_or(&0),
            1,
            "above all"
        );
        assert_eq!(s.group_requests.sum, 100_004);
        assert_eq!(s.fsync_micros.counts[0], 1);
        assert_eq!(s.fsync_micros.counts[5], 1, "3000 µs ≤ 5000");
        assert_eq!(s.fsync_micros.sum, 3_090);
    }
}
