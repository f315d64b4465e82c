//! Failed logins counted per account, next to the per-address throttle: a slow guesser that
//! spreads its attempts over many addresses stays under every address's block, but its count on
//! the account it attacks keeps rising. Past [`ACCOUNT_FREE_FAILURES`] the account backs off:
//! each further attempt from an address the account has not logged in from must wait
//! [`ACCOUNT_BACKOFF_BASE`], doubling per failure up to [`ACCOUNT_BACKOFF_MAX`], after the last
//! failure. It never locks the owner out: the addresses the account last logged in from
//! ([`KNOWN_ADDRESSES_PER_ACCOUNT`]) are not slowed, and from anywhere else the wait is bounded.
//! Every email is counted, existing or not, so the back-off says nothing about which accounts
//! exist. Every failure's security event carries the count so an operator can alert on it.
//! Sans-IO: the caller passes the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A count starts over after this long without a failure.
pub const ACCOUNT_FAILURE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Failures of one account before it backs off: twice what blocks one address (`[app]
/// login_block_after_failures`, default 5), so a guesser on one address meets the address block
/// and the owner elsewhere logs in, and only guesses spread over several addresses slow the
/// account.
pub const ACCOUNT_FREE_FAILURES: u32 = 10;

/// The wait after the first failure beyond [`ACCOUNT_FREE_FAILURES`]; doubled per failure.
pub const ACCOUNT_BACKOFF_BASE: Duration = Duration::from_secs(1);

/// The longest wait the back-off asks for.
pub const ACCOUNT_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Addresses remembered per account as ones it logged in from (the newest kept).
pub const KNOWN_ADDRESSES_PER_ACCOUNT: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    last: Instant,
}

/// Whether a login of an account may be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountGate {
    Open,
    /// The account is backing off: try again after this long.
    Wait(Duration),
}

#[derive(Debug)]
pub struct AccountFailures {
    counts: HashMap<String, Count>,
    /// Addresses each account last logged in from, newest last.
    known: HashMap<String, Vec<IpAddr>>,
    /// Accounts tracked at once, in each table; bounds them.
    max_tracked: usize,
}

impl AccountFailures {
    pub fn new(max_tracked: usize) -> Self {
        Self {
            counts: HashMap::new(),
            known: HashMap::new(),
            max_tracked,
        }
    }

    /// Counts a failed login of `email` (an existing account or not); returns its failures
    /// within the window.
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

    /// Whether a login of `email` from `from` may be checked at `now`.
    pub fn gate(&self, email: &str, from: IpAddr, now: Instant) -> AccountGate {
        let Some(count) = self.counts.get(email) else {
            return AccountGate::Open;
        };
        if count.failures < ACCOUNT_FREE_FAILURES
            || self.known.get(email).is_some_and(|k| k.contains(&from))
        {
            return AccountGate::Open;
        }
        let doublings = (count.failures - ACCOUNT_FREE_FAILURES).min(16);
        let wait = ACCOUNT_BACKOFF_BASE
            .saturating_mul(1 << doublings)
            .min(ACCOUNT_BACKOFF_MAX);
        let since = now.saturating_duration_since(count.last);
        if since >= wait || since >= ACCOUNT_FAILURE_WINDOW {
            AccountGate::Open
        } else {
            AccountGate::Wait(wait - since)
        }
    }

    /// A successful login from `from`: the account's count is cleared and the address is
    /// remembered as the owner's.
    pub fn succeeded(&mut self, email: &str, from: IpAddr) {
        self.counts.remove(email);
        if !self.known.contains_key(email) && self.known.len() >= self.max_tracked {
            // Forget one account's addresses to make room: at worst its owner waits out a
            // bounded back-off once.
            if let Some(victim) = self.known.keys().next().cloned() {
                self.known.remove(&victim);
            }
        }
        let known = self.known.entry(email.to_owned()).or_default();
        known.retain(|a| *a != from);
        known.push(from);
        if known.len() > KNOWN_ADDRESSES_PER_ACCOUNT {
            known.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const OWNER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const GUESSER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 66));

    #[test]
    fn an_account_under_attack_backs_off_except_for_its_owners_address() {
        let mut table = AccountFailures::new(8);
        let t0 = Instant::now();
        table.succeeded("a@x", OWNER);
        for n in 1..ACCOUNT_FREE_FAILURES {
            assert_eq!(table.record("a@x", t0), n);
            assert_eq!(table.gate("a@x", GUESSER, t0), AccountGate::Open);
        }
        table.record("a@x", t0);
        assert_eq!(
            table.gate("a@x", GUESSER, t0),
            AccountGate::Wait(ACCOUNT_BACKOFF_BASE)
        );
        assert_eq!(table.gate("a@x", OWNER, t0), AccountGate::Open, "the owner");
        let after = t0 + ACCOUNT_BACKOFF_BASE;
        assert_eq!(table.gate("a@x", GUESSER, after), AccountGate::Open);
        table.record("a@x", after);
        assert_eq!(
            table.gate("a@x", GUESSER, after),
            AccountGate::Wait(ACCOUNT_BACKOFF_BASE * 2),
            "doubles"
        );
        for _ in 0..30 {
            table.record("a@x", after);
        }
        assert_eq!(
            table.gate("a@x", GUESSER, after),
            AccountGate::Wait(ACCOUNT_BACKOFF_MAX),
            "bounded"
        );
        // Unknown accounts back off alike (the gate tells nothing about which exist).
        for _ in 0..ACCOUNT_FREE_FAILURES {
            table.record("nobody@x", t0);
        }
        assert!(matches!(
            table.gate("nobody@x", GUESSER, t0),
            AccountGate::Wait(_)
        ));
        table.succeeded("a@x", GUESSER);
        assert_eq!(table.gate("a@x", GUESSER, after), AccountGate::Open);
    }

    #[test]
    fn an_account_remembers_its_newest_addresses_only() {
        let mut table = AccountFailures::new(8);
        let t0 = Instant::now();
        for last in 1..=KNOWN_ADDRESSES_PER_ACCOUNT as u8 + 1 {
            table.succeeded("a@x", IpAddr::V4(Ipv4Addr::new(10, 1, 0, last)));
        }
        for _ in 0..ACCOUNT_FREE_FAILURES {
            table.record("a@x", t0);
        }
        let oldest = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
        let newest = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2));
        assert!(matches!(
            table.gate("a@x", oldest, t0),
            AccountGate::Wait(_)
        ));
        assert_eq!(table.gate("a@x", newest, t0), AccountGate::Open);
    }

    #[test]
    fn failures_add_up_per_account_until_a_success_or_a_quiet_day() {
        let mut table = AccountFailures::new(2);
        let t0 = Instant::now();
        assert_eq!(table.record("a@x", t0), 1);
        assert_eq!(table.record("a@x", t0 + Duration::from_secs(60)), 2);
        assert_eq!(table.record("b@x", t0), 1);
        table.succeeded("a@x", OWNER);
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
