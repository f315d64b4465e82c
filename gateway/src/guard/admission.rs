//! Admission control for new connections, decided before a connection costs more than its file
//! descriptor: a per-source cap on concurrent connections, a per-source accept-rate token bucket
//! and a gateway-wide accept-rate token bucket. Sans-IO: callers pass the source address and the
//! current time and get a decision back; the shards share one `Admission` behind a mutex that is
//! only taken on accept and on close, never on the per-message path.
//!
//! A source is an IPv4 address or an IPv6 /64 (see [`SourceKey`]), so an attacker with one IPv6
//! prefix cannot multiply its allowance by rotating addresses.

use super::account_failures::{AccountFailures, AccountGate};
use super::login_throttle::{self, LoginGate, LoginThrottle, SourceKey};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often idle source entries are swept from the table.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The per-source state every shard consults: taken on accept, on close and once per login.
#[derive(Debug)]
pub struct Guards {
    pub admission: Mutex<Admission>,
    pub throttle: Mutex<LoginThrottle>,
    /// Failed app logins (email and password), counted apart from device tokens: a source
    /// guessing passwords is blocked after a few tries, a device fleet behind one NAT address
    /// with one bad token does not lock its people out of the app.
    pub app_throttle: Mutex<LoginThrottle>,
    /// Failed app logins per account, with the back-off of an account under attack (never
    /// locking its owner out).
    pub app_accounts: Mutex<AccountFailures>,
}

/// Why a person's login is refused before it is checked, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginWait {
    /// The address failed too often.
    Address(Duration),
    /// The account is backing off (failures from several addresses).
    Account(Duration),
}

impl LoginWait {
    /// Whole seconds to wait, rounded up.
    pub fn retry_in_secs(self) -> u64 {
        match self {
            LoginWait::Address(wait) | LoginWait::Account(wait) => {
                login_throttle::retry_after_secs(wait)
            }
        }
    }

    /// What failed too often, for messages: "from this address", "of this account".
    pub fn whose(self) -> &'static str {
        match self {
            LoginWait::Address(_) => "from this address",
            LoginWait::Account(_) => "of this account",
        }
    }
}

/// Accounts whose failed logins are tracked at once.
pub const MAX_TRACKED_ACCOUNTS: usize = 100_000;

impl Guards {
    pub fn new(admission: Admission, throttle: LoginThrottle, app_throttle: LoginThrottle) -> Self {
        Self {
            admission: Mutex::new(admission),
            throttle: Mutex::new(throttle),
            app_throttle: Mutex::new(app_throttle),
            app_accounts: Mutex::new(AccountFailures::new(MAX_TRACKED_ACCOUNTS)),
        }
    }

    pub fn app_accounts(&self) -> MutexGuard<'_, AccountFailures> {
        self.app_accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a person's login from `ip` (of `email`, normalized, when the login names one)
    /// must wait: the address's block first, then the account's back-off. Every interface asks
    /// this before checking a credential.
    pub fn app_login_wait(
        &self,
        email: Option<&str>,
        ip: IpAddr,
        now: Instant,
    ) -> Option<LoginWait> {
        if let LoginGate::Blocked { remaining, .. } = self.app_throttle().check(ip, now) {
            return Some(LoginWait::Address(remaining));
        }
        match email.map(|e| self.app_accounts().gate(e, ip, now)) {
            Some(AccountGate::Wait(wait)) => Some(LoginWait::Account(wait)),
            _ => None,
        }
    }

    /// Counts a refused login from `ip` (of `email`, when it named one) against the address
    /// and the account; returns the account's failures and what the address faces next.
    pub fn app_login_failed(
        &self,
        email: Option<&str>,
        ip: IpAddr,
        now: Instant,
    ) -> (Option<u32>, LoginGate) {
        let account_failures = email.map(|e| self.app_accounts().record(e, now));
        (
            account_failures,
            self.app_throttle().record_failure(ip, now),
        )
    }

    pub fn app_throttle(&self) -> MutexGuard<'_, LoginThrottle> {
        self.app_throttle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The admission table. A shard that panicked while holding it left counts that are at worst
    /// off by one, so a poisoned lock is used as is rather than taking every shard down.
    pub fn admission(&self) -> MutexGuard<'_, Admission> {
        self.admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn throttle(&self) -> MutexGuard<'_, LoginThrottle> {
        self.throttle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A token bucket: `burst` tokens at most, refilled at `rate_per_sec`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        Self {
            rate_per_sec: f64::from(rate_per_sec),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely (then forgetting it loses nothing).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// The admission limits, from the `[limits]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub max_connections_per_ip: u32,
    pub accept_rate: u32,
    pub accept_burst: u32,
    pub accept_rate_per_ip: u32,
    pub accept_burst_per_ip: u32,
    /// Sources tracked at once; bounds the table's memory.
    pub max_tracked_ips: usize,
    /// Connections that have not logged in yet, gateway-wide. Bounds the memory pre-login state
    /// (TLS handshakes, buffered login bytes) can take, so new work is refused before the
    /// sessions that did log in suffer.
    pub max_unauthenticated: u32,
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source already has this many connections open.
    SourceConnections { open: u32 },
    /// The source opens connections faster than its bucket allows.
    SourceRate,
    /// The whole gateway accepts faster than its bucket allows.
    GlobalRate,
    /// The source table is full of sources with open connections.
    TooManySources,
    /// Too many connections are still before their login.
    TooManyUnauthenticated,
    /// The shard's outbound queues hold its whole share of `limits.output_budget_mib`.
    OutputBudget,
}

impl Refusal {
    /// A stable, short name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::SourceConnections { .. } => "per_ip_connection_cap",
            Refusal::SourceRate => "per_ip_accept_rate",
            Refusal::GlobalRate => "global_accept_rate",
            Refusal::TooManySources => "source_table_full",
            Refusal::TooManyUnauthenticated => "unauthenticated_cap",
            Refusal::OutputBudget => "output_budget",
        }
    }
}

/// The decision for one new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Admitted; the caller must call [`Admission::release`] with the same address when it closes.
    Accepted,
    Refused(Refusal),
}

#[derive(Debug)]
struct Source {
    open: u32,
    bucket: TokenBucket,
}

/// Connection counts and accept-rate buckets for every source that has connected recently.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    global: TokenBucket,
    sources: HashMap<SourceKey, Source>,
    /// Admitted connections that have not logged in (or closed) yet.
    unauthenticated: u32,
    last_sweep: Instant,
}

impl Admission {
    pub fn new(limits: AdmissionLimits, now: Instant) -> Self {
        Self {
            global: TokenBucket::new(limits.accept_rate, limits.accept_burst, now),
            limits,
            sources: HashMap::new(),
            unauthenticated: 0,
            last_sweep: now,
        }
    }

    /// Decides whether a connection from `ip` may be opened now. The per-source checks come first
    /// so that a flood from one source is refused without spending the gateway-wide allowance.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Admit {
        self.maybe_sweep(now);
        if self.unauthenticated >= self.limits.max_unauthenticated {
            return Admit::Refused(Refusal::TooManyUnauthenticated);
        }
        let key = SourceKey::of(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= self.limits.max_tracked_ips {
            self.sweep(now);
            if self.sources.len() >= self.limits.max_tracked_ips {
                return Admit::Refused(Refusal::TooManySources);
            }
        }
        let limits = &self.limits;
        let source = self.sources.entry(key).or_insert_with(|| Source {
            open: 0,
            bucket: TokenBucket::new(limits.accept_rate_per_ip, limits.accept_burst_per_ip, now),
        });
        if source.open >= limits.max_connections_per_ip {
            return Admit::Refused(Refusal::SourceConnections { open: source.open });
        }
        if !source.bucket.try_take(now) {
            return Admit::Refused(Refusal::SourceRate);
        }
        if !self.global.try_take(now) {
            return Admit::Refused(Refusal::GlobalRate);
        }
        source.open += 1;
        self.unauthenticated += 1;
        Admit::Accepted
    }

    /// A connection admitted earlier has left the pre-login stages: it logged in, or it is closing
    /// before it did. Called exactly once per admitted connection.
    pub fn leave_unauthenticated(&mut self) {
        self.unauthenticated = self.unauthenticated.saturating_sub(1);
    }

    /// A connection admitted from `ip` has closed.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(source) = self.sources.get_mut(&SourceKey::of(ip)) {
            source.open = source.open.saturating_sub(1);
        }
    }

    /// Connections admitted that have not logged in yet.
    pub fn unauthenticated(&self) -> u32 {
        self.unauthenticated
    }

    /// Open connections counted for the source of `ip`.
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        self.sources.get(&SourceKey::of(ip)).map_or(0, |s| s.open)
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.sources.len()
    }

    fn maybe_sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) >= SWEEP_INTERVAL {
            self.sweep(now);
        }
    }

    /// Forgets sources with nothing open and a full bucket: they would be recreated identical.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        self.sources
            .retain(|_, s| s.open > 0 || !s.bucket.is_full(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_connections_per_ip: 3,
            accept_rate: 100,
            accept_burst: 10,
            accept_rate_per_ip: 10,
            accept_burst_per_ip: 5,
            max_tracked_ips: 4,
            max_unauthenticated: 1000,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 2, t0);
        assert!(bucket.try_take(t0));
        assert!(bucket.try_take(t0));
        assert!(!bucket.try_take(t0));
        assert!(!bucket.try_take(t0 + Duration::from_millis(50)));
        assert!(bucket.try_take(t0 + Duration::from_millis(100)));
        assert!(bucket.is_full(t0 + Duration::from_secs(60)));
        assert!(bucket.try_take(t0 + Duration::from_secs(60)));
        assert!(bucket.try_take(t0 + Duration::from_secs(60)));
        assert!(!bucket.try_take(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn caps_concurrent_connections_per_source_only() {
        let t0 = Instant::now();
        let mut adm = Admission::new(limits(), t0);
        for _ in 0..3 {
            assert_eq!(adm.admit(ip(1), t0), Admit::Accepted);
        }
        assert_eq!(
            adm.admit(ip(1), t0),
            Admit::Refused(Refusal::SourceConnections { open: 3 })
        );
        // Another source is unaffected.
        assert_eq!(adm.admit(ip(2), t0), Admit::Accepted);
        // A close makes room again.
        adm.release(ip(1));
        assert_eq!(adm.open_from(ip(1)), 2);
        assert_eq!(adm.admit(ip(1), t0), Admit::Accepted);
    }

    #[test]
    fn limits_the_accept_rate_per_source_then_globally() {
        let t0 = Instant::now();
        let mut adm = Admission::new(
            AdmissionLimits {
                max_connections_per_ip: 1000,
                ..limits()
            },
            t0,
        );
        for _ in 0..5 {
            assert_eq!(adm.admit(ip(1), t0), Admit::Accepted);
            adm.release(ip(1));
        }
        assert_eq!(adm.admit(ip(1), t0), Admit::Refused(Refusal::SourceRate));
        // The per-source refusal did not spend global tokens: 5 of 10 are left.
        for _ in 0..5 {
            assert_eq!(adm.admit(ip(2), t0), Admit::Accepted);
        }
        assert_eq!(adm.admit(ip(3), t0), Admit::Refused(Refusal::GlobalRate));
        // 100 ms later source 1 has one token again and the gateway ten.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(adm.admit(ip(1), t1), Admit::Accepted);
        assert_eq!(adm.admit(ip(1), t1), Admit::Refused(Refusal::SourceRate));
    }

    #[test]
    fn the_source_table_is_bounded_and_swept() {
        let t0 = Instant::now();
        let mut adm = Admission::new(limits(), t0);
        for n in 1..=4 {
            assert_eq!(adm.admit(ip(n), t0), Admit::Accepted);
        }
        assert_eq!(
            adm.admit(ip(5), t0),
            Admit::Refused(Refusal::TooManySources)
        );
        // Sources that closed everything and refilled are forgotten, making room.
        for n in 1..=4 {
            adm.release(ip(n));
        }
        let later = t0 + Duration::from_secs(5);
        assert_eq!(adm.admit(ip(5), later), Admit::Accepted);
        assert_eq!(adm.tracked(), 1);
    }

    #[test]
    fn connections_before_login_are_capped_gateway_wide() {
        let t0 = Instant::now();
        let mut adm = Admission::new(
            AdmissionLimits {
                max_unauthenticated: 2,
                ..limits()
            },
            t0,
        );
        assert_eq!(adm.admit(ip(1), t0), Admit::Accepted);
        assert_eq!(adm.admit(ip(2), t0), Admit::Accepted);
        assert_eq!(
            adm.admit(ip(3), t0),
            Admit::Refused(Refusal::TooManyUnauthenticated)
        );
        // A login frees a place; the logged-in connection keeps its per-source count.
        adm.leave_unauthenticated();
        assert_eq!(adm.admit(ip(3), t0), Admit::Accepted);
        assert_eq!(adm.unauthenticated(), 2);
        assert_eq!(adm.open_from(ip(1)), 1);
        // A pending connection that closes frees its place and its source count.
        adm.leave_unauthenticated();
        adm.release(ip(2));
        assert_eq!(adm.unauthenticated(), 1);
        assert_eq!(adm.open_from(ip(2)), 0);
    }

    #[test]
    fn an_ipv6_prefix_is_one_source() {
        let t0 = Instant::now();
        let mut adm = Admission::new(limits(), t0);
        for host in 1..=3u16 {
            let addr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, host));
            assert_eq!(adm.admit(addr, t0), Admit::Accepted);
        }
        let other_host = "2001:db8:0:1::ffff".parse().expect("ip");
        assert!(matches!(
            adm.admit(other_host, t0),
            Admit::Refused(Refusal::SourceConnections { .. })
        ));
        let other_prefix = "2001:db8:0:2::1".parse().expect("ip");
        assert_eq!(adm.admit(other_prefix, t0), Admit::Accepted);
    }
}
