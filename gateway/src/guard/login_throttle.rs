//! Token-guessing defence: device logins that fail (unknown or malformed token) are counted per
//! source, and a source that keeps failing is first slowed down (each further attempt must wait an
//! exponentially growing back-off after its last failure) and then refused outright for a period.
//! Sans-IO: the caller passes the source address and the time and gets a [`LoginGate`] back; the
//! shards share one `LoginThrottle` behind a mutex taken once per login, not per message.
//!
//! Failures are counted per source, never per token, so a device behind the same address with a
//! good token is slowed along with the attacker: the price of a per-source defence, which the
//! documentation states. Sources with no failure for `forget_after` are forgotten.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The unit every per-source limit counts in: an IPv4 address, or the /64 prefix of an IPv6
/// address (one subscriber usually gets a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => SourceKey(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SourceKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    SourceKey(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

/// Throttle settings, from the `[limits]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Failures a source may have before back-off starts.
    pub free_failures: u32,
    /// Wait imposed after the first failure beyond the free ones; doubles with each further one.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Failures after which the source is refused outright for `block_for`.
    pub block_after_failures: u32,
    pub block_for: Duration,
    /// A source with no failure for this long starts from zero again.
    pub forget_after: Duration,
    /// Sources tracked at once; bounds the table's memory.
    pub max_tracked_ips: usize,
}

/// Whether a login from a source may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginGate {
    Open,
    /// Too soon after the last failure: try again in `retry_in`.
    BackingOff {
        retry_in: Duration,
        failures: u32,
    },
    /// Refused outright for `remaining`.
    Blocked {
        remaining: Duration,
        failures: u32,
    },
}

/// Whole seconds a refused client should wait before trying again (`Retry-After`, "retry in N
/// s"): rounded up, at least 1, so a client that waits exactly that long finds the block over
/// (rounding down sends it back while the address is still blocked).
pub fn retry_after_secs(remaining: Duration) -> u64 {
    let whole = remaining.as_secs();
    let up = if remaining.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    up.max(1)
}

impl LoginGate {
    /// A stable, short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            LoginGate::Open => "open",
            LoginGate::BackingOff { .. } => "login_backoff",
            LoginGate::Blocked { .. } => "login_blocked",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
pub struct LoginThrottle {
    limits: ThrottleLimits,
    sources: HashMap<SourceKey, Record>,
}

impl LoginThrottle {
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            limits,
            sources: HashMap::new(),
        }
    }

    /// May a login from `ip` be checked now?
    pub fn check(&self, ip: IpAddr, now: Instant) -> LoginGate {
        match self.sources.get(&SourceKey::of(ip)) {
            Some(record) if !self.forgotten(record, now) => self.gate(record, now),
            _ => LoginGate::Open,
        }
    }

    /// Counts a failed login from `ip`; returns what the source's next attempt faces.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> LoginGate {
        let key = SourceKey::of(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= self.limits.max_tracked_ips {
            self.sweep(now);
            if self.sources.len() >= self.limits.max_tracked_ips {
                // Fail open: the table is full of sources already being throttled, and refusing
                // every new source would lock out the whole fleet.
                return LoginGate::Open;
            }
        }
        let forget_after = self.limits.forget_after;
        let record = self.sources.entry(key).or_insert(Record {
            failures: 0,
            last_failure: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(record.last_failure) >= forget_after
            && record.blocked_until.is_none_or(|until| until <= now)
        {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        if record.failures >= self.limits.block_after_failures {
            record.blocked_until = Some(now + self.limits.block_for);
        }
        let record = *record;
        self.gate(&record, now)
    }

    /// Forgets sources whose failures have expired.
    pub fn sweep(&mut self, now: Instant) {
        let forget_after = self.limits.forget_after;
        self.sources.retain(|_, r| {
            r.blocked_until.is_some_and(|until| until > now)
                || now.saturating_duration_since(r.last_failure) < forget_after
        });
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    fn forgotten(&self, record: &Record, now: Instant) -> bool {
        record.blocked_until.is_none_or(|until| until <= now)
            && now.saturating_duration_since(record.last_failure) >= self.limits.forget_after
    }

    fn gate(&self, record: &Record, now: Instant) -> LoginGate {
        if let Some(until) = record.blocked_until
            && until > now
        {
            return LoginGate::Blocked {
                remaining: until - now,
                failures: record.failures,
            };
        }
        if record.failures < self.limits.free_failures {
            return LoginGate::Open;
        }
        let next = record.last_failure + self.backoff(record.failures);
        if next > now {
            LoginGate::BackingOff {
                retry_in: next - now,
                failures: record.failures,
            }
        } else {
            LoginGate::Open
        }
    }

    /// Back-off after `failures` failures: initial for the first beyond the free ones, doubling.
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(self.limits.free_failures).min(20);
        self.limits
            .backoff_initial
            .saturating_mul(1 << doublings)
            .min(self.limits.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_a_whole_second_of_at_least_one() {
        assert_eq!(retry_after_secs(Duration::from_millis(2960)), 3);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
    use std::net::Ipv4Addr;

    fn limits() -> ThrottleLimits {
        ThrottleLimits {
            free_failures: 3,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            block_after_failures: 8,
            block_for: Duration::from_secs(60),
            forget_after: Duration::from_secs(600),
            max_tracked_ips: 2,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn free_failures_then_doubling_backoff_then_a_block() {
        let mut t = Instant::now();
        let mut throttle = LoginThrottle::new(limits());
        for _ in 0..2 {
            assert_eq!(throttle.record_failure(ip(1), t), LoginGate::Open);
        }
        // The third failure starts the back-off: 100 ms, then 200, 400, 800, capped at 1000.
        let mut expected_waits = [100, 200, 400, 800, 1000].into_iter();
        for failures in 3..8 {
            let gate = throttle.record_failure(ip(1), t);
            let wait = Duration::from_millis(expected_waits.next().expect("wait"));
            assert_eq!(
                gate,
                LoginGate::BackingOff {
                    retry_in: wait,
                    failures
                }
            );
            assert!(matches!(
                throttle.check(ip(1), t + wait / 2),
                LoginGate::BackingOff { .. }
            ));
            t += wait;
            assert_eq!(throttle.check(ip(1), t), LoginGate::Open);
        }
        // The eighth failure blocks for a minute, whatever the back-off says.
        assert_eq!(
            throttle.record_failure(ip(1), t),
            LoginGate::Blocked {
                remaining: Duration::from_secs(60),
                failures: 8
            }
        );
        assert!(matches!(
            throttle.check(ip(1), t + Duration::from_secs(59)),
            LoginGate::Blocked { .. }
        ));
        // Other sources are untouched.
        assert_eq!(throttle.check(ip(2), t), LoginGate::Open);
        // After the block and the forget period the source starts afresh.
        let later = t + Duration::from_secs(601);
        assert_eq!(throttle.check(ip(1), later), LoginGate::Open);
        assert_eq!(throttle.record_failure(ip(1), later), LoginGate::Open);
    }

    #[test]
    fn the_table_is_bounded_and_fails_open_when_full() {
        let t = Instant::now();
        let mut throttle = LoginThrottle::new(limits());
        throttle.record_failure(ip(1), t);
        throttle.record_failure(ip(2), t);
        assert_eq!(throttle.record_failure(ip(3), t), LoginGate::Open);
        assert_eq!(throttle.tracked(), 2);
        // Expired sources are swept to make room.
        let later = t + Duration::from_secs(601);
        throttle.record_failure(ip(3), later);
        assert_eq!(throttle.tracked(), 1);
    }

    #[test]
    fn source_keys_group_ipv6_by_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(SourceKey::of(a), SourceKey::of(b));
        assert_ne!(SourceKey::of(a), SourceKey::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(SourceKey::of(mapped), SourceKey::of(ip(1)));
    }
}
