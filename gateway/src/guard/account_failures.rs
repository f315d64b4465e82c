//! Failed app logins counted per account, next to the per-address throttle: a slow guesser that
//! spreads its attempts over many addresses stays under every address's block, but its count on
//! the account it attacks keeps rising, and every failure's security event carries that count so
//! an operator can alert on it. Accounts are never locked by it: a lock anyone can trigger by
//! guessing would let an attacker shut a user out. Sans-IO: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A count starts over after this long without a failure.
pub const ACCOUNT_FAILURE_WINDOW: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    last: Instant,
}

#[derive(Debug)]
pub struct AccountFailures {
    counts: HashMap<String, Count>,
    /// Accounts tracked at once; bounds the table (unknown emails are never tracked).
    max_tracked: usize,
}

impl AccountFailures {
    pub fn new(max_tracked: usize) -> Self {
        Self {
            counts: HashMap::new(),
            max_tracked,
        }
    }

    /// Counts a failed login of an existing account; returns its failures within the window.
    pub fn record(&mut self, email: &str, now: Instant) -> u32 {
        if !self.counts.contains_key(email) && self.counts.len() >= self.max_tracked {
            self.counts
                .retain(|_, c| now.saturating_duration_since(c.last) < ACCOUNT_FAILURE_WINDOW);
            if self.counts.len() >= self.max_tracked {
                // Full of recent failures: still report this one, without remembering it.
                return 1;
            }
        }
        let count = self.counts.entry(email.to_owned()).or_insert(Count {
            failures: 0,
            last: now,
        });
        if now.saturating_duration_since(count.last) >= ACCOUNT_FAILURE_WINDOW {
            count.failures = 0;
        }
        count.failures = count.failures.saturating_add(1);
        count.last = now;
        count.failures
    }

    /// A successful login clears the account's count.
    pub fn clear(&mut self, email: &str) {
        self.counts.remove(email);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_add_up_per_account_until_a_success_or_a_quiet_day() {
        let mut table = AccountFailures::new(2);
        let t0 = Instant::now();
        assert_eq!(table.record("a@x", t0), 1);
        assert_eq!(table.record("a@x", t0 + Duration::from_secs(60)), 2);
        assert_eq!(table.record("b@x", t0), 1);
        table.clear("a@x");
        assert_eq!(table.record("a@x", t0 + Duration::from_secs(61)), 1);
        let later = t0 + Duration::from_secs(61) + ACCOUNT_FAILURE_WINDOW;
        assert_eq!(table.record("a@x", later), 1, "a quiet day starts over");
    }

    #[test]
    fn the_table_is_bounded() {
        let mut table = AccountFailures::new(1);
        let t0 = Instant::now();
        table.record("a@x", t0);
        assert_eq!(table.record("b@x", t0), 1);
        assert_eq!(table.record("b@x", t0), 1, "not remembered while full");
        assert_eq!(table.record("a@x", t0), 2);
        // Once a's failures are old they make room.
        let later = t0 + ACCOUNT_FAILURE_WINDOW;
        assert_eq!(table.record("b@x", later), 1);
        assert_eq!(table.record("b@x", later), 2);
    }
}
