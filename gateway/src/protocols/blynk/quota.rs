//! Per-connection message quota (`docs/reference/blynk-protocol.md` §1.10; the legacy server's
//! `user.message.quota.limit`): without it one logged-in device could flood its shard with frames
//! (every HARDWARE_SYNC a store request) and crowd out the other devices' store calls. A token
//! bucket per connection: `burst` messages at once, refilled at `per_sec` messages a second. A
//! frame over the quota is dropped whole, and at most once a minute the device is told so with
//! RESPONSE 1 (QUOTA_LIMIT) carrying the dropped frame's id; the connection stays open, as in the
//! reference server.
//!
//! Sans-IO and small: the caller passes its millisecond clock, the state is 12 bytes per connection
//! (idle memory per connection is a product goal), and the math is integer only.

/// How often, at most, a device over its quota is answered QUOTA_LIMIT (the legacy server's 60 s;
/// `docs/reference/blynk-protocol.md` §1.10).
pub const QUOTA_ANSWER_INTERVAL_MS: u32 = 60_000;

/// One message in the bucket's unit: the bucket counts thousandths of a message, so that a
/// refill of `elapsed_ms × per_sec` is exact whatever the rate.
const MILLI: u64 = 1000;

/// Largest `per_sec` and `burst` the configuration accepts: keeps `burst × 1000` within the
/// 32-bit bucket.
pub const MAX_QUOTA: u32 = 1_000_000;

/// The quota's settings, from `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Messages per second the bucket refills with; 0 turns the quota off.
    pub per_sec: u32,
    /// Messages the bucket holds: how many a device may send at once.
    pub burst: u32,
}

impl QuotaLimits {
    /// No quota at all.
    pub const UNLIMITED: QuotaLimits = QuotaLimits {
        per_sec: 0,
        burst: 0,
    };
}

impl Default for QuotaLimits {
    /// The reference server's 100 messages a second, with two seconds' worth of burst so a device
    /// catching up after a reconnect (info, sync, a batch of writes) is not cut short.
    fn default() -> Self {
        QuotaLimits {
            per_sec: 100,
            burst: 200,
        }
    }
}

/// What to do with one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaVerdict {
    /// Within the quota: process it.
    Allow,
    /// Over the quota: drop it without an answer (the device was told within the last minute).
    Drop,
    /// Over the quota: drop it and answer QUOTA_LIMIT with its id.
    DropAndAnswer,
}

/// A connection's quota state. Starts with a full bucket.
///
/// Times are the low 32 bits of the caller's millisecond clock, compared with wrapping
/// arithmetic: exact for gaps under 49 days, and a frame arrives at least once per heartbeat
/// timeout or the connection is closed. A clock stepping backwards reads as a long gap and
/// refills the bucket, so clock trouble errs in the device's favour rather than dropping frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageQuota {
    /// Thousandths of a message taken out of the full bucket (0 = full). Counting what is missing
    /// rather than what is left lets a new session start full without knowing the limits, and a
    /// burst lowered by a live reload applies at once.
    debt: u32,
    /// Clock (low 32 bits, ms) when `debt` was last brought up to date.
    checked_at: u32,
    /// Clock (low 32 bits, ms) of the last QUOTA_LIMIT answer; 0 = never (a real answer at clock 0
    /// is stored as 1, one millisecond off).
    answered_at: u32,
}

impl MessageQuota {
    /// Counts one received frame at `now_ms` and says whether it may be processed.
    pub fn check(&mut self, limits: QuotaLimits, now_ms: u64) -> QuotaVerdict {
        if limits.per_sec == 0 {
            return QuotaVerdict::Allow;
        }
        // Truncation is the point: the state keeps the low 32 bits and compares by wrapping.
        let now = now_ms as u32;
        let elapsed = u64::from(now.wrapping_sub(self.checked_at));
        let refill = elapsed.saturating_mul(u64::from(limits.per_sec));
        let debt = u64::from(self.debt).saturating_sub(refill);
        self.checked_at = now;
        let capacity = u64::from(limits.burst) * MILLI;
        if debt + MILLI <= capacity {
            // Within the bucket, so below `MAX_QUOTA × 1000` and within u32.
            self.debt = u32::try_from(debt + MILLI).unwrap_or(u32::MAX);
            return QuotaVerdict::Allow;
        }
        self.debt = u32::try_from(debt).unwrap_or(u32::MAX);
        if self.answered_at == 0 || now.wrapping_sub(self.answered_at) >= QUOTA_ANSWER_INTERVAL_MS {
            self.answered_at = now.max(1);
            QuotaVerdict::DropAndAnswer
        } else {
            QuotaVerdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: QuotaLimits = QuotaLimits {
        per_sec: 100,
        burst: 200,
    };
    /// A realistic wall clock, so a zero "never answered" cannot be confused with a time.
    const T0: u64 = 1_790_000_000_000;

    /// Sends `n` frames at `now_ms`; returns how many were allowed.
    fn send(q: &mut MessageQuota, limits: QuotaLimits, now_ms: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| q.check(limits, now_ms) == QuotaVerdict::Allow)
            .count()
    }

    #[test]
    fn the_whole_burst_is_allowed_at_once_and_the_next_frame_dropped() {
        let mut q = MessageQuota::default();
        assert_eq!(send(&mut q, LIMITS, T0, 200), 200);
        assert_eq!(q.check(LIMITS, T0), QuotaVerdict::DropAndAnswer);
        assert_eq!(q.check(LIMITS, T0), QuotaVerdict::Drop);
    }

    #[test]
    fn a_steady_rate_at_the_limit_is_never_dropped() {
        let mut q = MessageQuota::default();
        // One frame every 10 ms is exactly 100 a second, for a minute.
        for i in 0..6000 {
            assert_eq!(
                q.check(LIMITS, T0 + i * 10),
                QuotaVerdict::Allow,
                "frame {i}"
            );
        }
        // And a rate that does not divide 1000 evenly is refilled exactly too.
        let three = QuotaLimits {
            per_sec: 3,
            burst: 1,
        };
        let mut q = MessageQuota::default();
        for i in 0..300 {
            assert_eq!(
                q.check(three, T0 + i * 334),
                QuotaVerdict::Allow,
                "frame {i}"
            );
        }
    }

    #[test]
    fn excess_is_dropped_and_the_bucket_refills_over_time() {
        let mut q = MessageQuota::default();
        // 500 frames in one instant: the burst passes, the rest is dropped.
        assert_eq!(send(&mut q, LIMITS, T0, 500), 200);
        // 50 ms later five messages' worth has come back, no more.
        assert_eq!(send(&mut q, LIMITS, T0 + 50, 10), 5);
        // Dropped frames cost nothing: after 2 s the bucket is full again.
        assert_eq!(send(&mut q, LIMITS, T0 + 2_050, 300), 200);
        // A long silence does not overfill it.
        assert_eq!(send(&mut q, LIMITS, T0 + 3_600_000, 300), 200);
    }

    #[test]
    fn quota_limit_is_answered_at_most_once_a_minute() {
        let mut q = MessageQuota::default();
        send(&mut q, LIMITS, T0, 200);
        let mut answers = Vec::new();
        // Flood at 1,000 frames a second for three minutes.
        for ms in 0..180_000 {
            if q.check(LIMITS, T0 + ms) == QuotaVerdict::DropAndAnswer {
                answers.push(ms);
            }
        }
        // At 60,000 ms the refill lets a frame through (one every 10 ms), so the first drop of
        // the second minute, answered, is the next one.
        assert_eq!(answers, vec![0, 60_001, 120_001]);
    }

    #[test]
    fn rate_zero_means_unlimited() {
        let mut q = MessageQuota::default();
        assert_eq!(send(&mut q, QuotaLimits::UNLIMITED, T0, 100_000), 100_000);
        assert_eq!(
            q,
            MessageQuota::default(),
            "an unlimited quota keeps no state"
        );
    }

    #[test]
    fn a_lowered_burst_applies_at_once_and_the_clock_may_wrap_or_step_back() {
        let mut q = MessageQuota::default();
        send(&mut q, LIMITS, T0, 150);
        let small = QuotaLimits {
            per_sec: 100,
            burst: 100,
        };
        assert_eq!(q.check(small, T0), QuotaVerdict::DropAndAnswer);
        // Across the 32-bit wrap of the millisecond clock, 1 s of refill is 1 s.
        let wrap = (T0 | u64::from(u32::MAX)) - 499;
        let mut q = MessageQuota::default();
        assert_eq!(send(&mut q, LIMITS, wrap, 300), 200);
        assert_eq!(send(&mut q, LIMITS, wrap + 1_000, 300), 100);
        // A clock stepped backwards refills rather than drops.
        assert_eq!(send(&mut q, LIMITS, wrap - 5_000, 300), 200);
    }

    #[test]
    fn the_state_is_at_most_twelve_bytes() {
        assert!(std::mem::size_of::<MessageQuota>() <= 12);
    }
}
