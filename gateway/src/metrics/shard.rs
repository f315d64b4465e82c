//! The counters one shard updates, the only set it keeps: plain atomics in fixed arrays indexed
//! by small enums, written only by the shard's own thread with `Relaxed` stores, so the
//! per-message path never takes a lock or allocates. The scrape thread reads them (see
//! `metrics/mod.rs`); a scrape may see one counter a moment before another, which Prometheus
//! tolerates.

pub use crate::conn::Transport;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A count of events one shard adds to.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `n`; returns the new total when it crossed a power of two, the moments a warning
    /// about it is logged: a sustained overload stays visible without a line per event.
    pub fn add_sampled(&self, n: u64) -> Option<u64> {
        let before = self.0.fetch_add(n, Ordering::Relaxed);
        let total = before + n;
        (n > 0 && Some(total.ilog2()) != before.checked_ilog2()).then_some(total)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where a connection is in its life, as far as operators care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Accepted, not logged in yet (TLS handshake, sniffing, login in flight).
    PreAuth = 0,
    /// A device session.
    Authenticated = 1,
    /// Closing: last bytes are being flushed.
    Closing = 2,
}

impl ConnState {
    pub const ALL: [ConnState; 3] = [
        ConnState::PreAuth,
        ConnState::Authenticated,
        ConnState::Closing,
    ];
    pub fn label(self) -> &'static str {
        match self {
            ConnState::PreAuth => "pre_auth",
            ConnState::Authenticated => "authenticated",
            ConnState::Closing => "closing",
        }
    }
}

/// How a device login ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginResult {
    Ok = 0,
    /// Well-formed token the store does not know.
    InvalidToken = 1,
    /// Not a token at all (wrong length or alphabet).
    MalformedToken = 2,
    /// The store failed the lookup.
    StoreError = 3,
    /// The login throttle refused the attempt before it reached the store.
    Throttled = 4,
}

impl LoginResult {
    pub const ALL: [LoginResult; 5] = [
        LoginResult::Ok,
        LoginResult::InvalidToken,
        LoginResult::MalformedToken,
        LoginResult::StoreError,
        LoginResult::Throttled,
    ];
    pub fn label(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::InvalidToken => "invalid_token",
            LoginResult::MalformedToken => "malformed_token",
            LoginResult::StoreError => "store_error",
            LoginResult::Throttled => "throttled",
        }
    }
}

/// Why a connection was turned away before it became a device session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The TLS handshake failed (old protocol version, bad record, no shared cipher).
    TlsHandshake = 0,
    /// Bytes that are no protocol this port serves.
    UnknownProtocol = 1,
    /// The first frame was not a login.
    NotALogin = 2,
    Malformed = 3,
    InvalidToken = 4,
    LoginTimeout = 5,
    PreAuthBufferFull = 6,
    StoreUnavailable = 7,
    /// `accept` failed (out of file descriptors): the kernel kept the connection queued.
    AcceptFailed = 8,
    /// Admission control (accept-rate or per-IP cap) refused the connection.
    AdmissionLimit = 9,
    /// The login throttle blocked the source address.
    LoginThrottled = 10,
    /// A protocol recognised but not served (an MQTT CONNECT).
    NotServed = 11,
    /// An HTTP request answered with an error status and closed.
    HttpRefused = 12,
}

impl Rejection {
    pub const ALL: [Rejection; 13] = [
        Rejection::TlsHandshake,
        Rejection::UnknownProtocol,
        Rejection::NotALogin,
        Rejection::Malformed,
        Rejection::InvalidToken,
        Rejection::LoginTimeout,
        Rejection::PreAuthBufferFull,
        Rejection::StoreUnavailable,
        Rejection::AcceptFailed,
        Rejection::AdmissionLimit,
        Rejection::LoginThrottled,
        Rejection::NotServed,
        Rejection::HttpRefused,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Rejection::TlsHandshake => "tls_handshake",
            Rejection::UnknownProtocol => "unknown_protocol",
            Rejection::NotALogin => "not_a_login",
            Rejection::Malformed => "malformed",
            Rejection::InvalidToken => "invalid_token",
            Rejection::LoginTimeout => "login_timeout",
            Rejection::PreAuthBufferFull => "preauth_buffer_full",
            Rejection::StoreUnavailable => "store_unavailable",
            Rejection::AcceptFailed => "accept_failed",
            Rejection::AdmissionLimit => "admission_limit",
            Rejection::LoginThrottled => "login_throttled",
            Rejection::NotServed => "not_served",
            Rejection::HttpRefused => "http_refused",
        }
    }
}

/// The TLS version a handshake ended with (`None` when it failed before one was agreed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12 = 0,
    Tls13 = 1,
    None = 2,
}

impl TlsVersion {
    pub const ALL: [TlsVersion; 3] = [TlsVersion::Tls12, TlsVersion::Tls13, TlsVersion::None];
    pub fn label(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
            TlsVersion::None => "none",
        }
    }
    pub fn of(version: Option<rustls::ProtocolVersion>) -> TlsVersion {
        match version {
            Some(rustls::ProtocolVersion::TLSv1_2) => TlsVersion::Tls12,
            Some(rustls::ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
            _ => TlsVersion::None,
        }
    }
}

/// Fixed-bucket histogram over integer observations, one writer (its shard), any readers.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Upper bounds in observation units, ascending; a last `+Inf` bucket is implied.
    bounds: &'static [u64],
    /// Count per bucket (not cumulative); `bounds.len() + 1` entries.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: u64) {
        let index = self.bounds.partition_point(|&bound| bound < value);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// `(upper bound, cumulative count)` pairs including `+Inf`, the sum and the count, each bound
    /// and the sum multiplied by `scale` (1e-6 turns microseconds into seconds).
    pub fn snapshot(&self, scale: f64) -> (Vec<(f64, u64)>, f64, u64) {
        let counts = self.buckets.iter().map(|b| b.load(Ordering::Relaxed));
        let (buckets, count) = cumulative_buckets(self.bounds, counts, scale);
        let sum = self.sum.load(Ordering::Relaxed) as f64 * scale;
        (buckets, sum, count)
    }
}

/// Per-bucket counts (the last one above every bound) as Prometheus wants them: `(upper bound ×
/// scale, cumulative count)` pairs ending with `+Inf`, and the total count.
pub fn cumulative_buckets(
    bounds: &[u64],
    counts: impl IntoIterator<Item = u64>,
    scale: f64,
) -> (Vec<(f64, u64)>, u64) {
    let mut cumulative = 0;
    let buckets = counts
        .into_iter()
        .enumerate()
        .map(|(index, count)| {
            cumulative += count;
            let bound = bounds
                .get(index)
                .map_or(f64::INFINITY, |&b| b as f64 * scale);
            (bound, cumulative)
        })
        .collect();
    (buckets, cumulative)
}

/// Microsecond bounds for the event loop turn and the store round trip: 50 µs to 5 s.
pub const LATENCY_BOUNDS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 5_000_000,
];

/// Pin writes per store write batch.
pub const BATCH_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Everything one shard counts. Owned by the shard through an `Arc`; read by the scrape thread.
#[derive(Debug)]
pub struct ShardMetrics {
    pub index: u16,
    connections: [[AtomicI64; 3]; 2],
    logins: [AtomicU64; 5],
    rejected: [AtomicU64; 13],
    tls_handshakes_ok: [AtomicU64; 3],
    tls_handshakes_failed: [AtomicU64; 3],
    /// Frames by command code, received from devices.
    pub messages_in: [AtomicU64; 256],
    /// Frames by command code, sent to devices.
    pub messages_out: [AtomicU64; 256],
    bytes_in: [AtomicU64; 2],
    bytes_out: [AtomicU64; 2],
    /// Pin writes waiting for the store link (gauge, set once per loop turn).
    pub telemetry_queue: AtomicU64,
    /// Store requests sent and not yet answered (gauge, set once per loop turn).
    pub store_in_flight: AtomicU64,
    /// 1 while the shard's store link is up.
    pub store_link_up: AtomicU64,
    pub store_latency: AtomicHistogram,
    pub write_batch: AtomicHistogram,
    pub loop_turn: AtomicHistogram,
    /// Milliseconds since the Unix epoch at the end of the last loop turn; the systemd watchdog
    /// is fed only while every shard's heartbeat is fresh.
    pub heartbeat_ms: AtomicU64,
    /// Pin writes acknowledged by the store.
    pub pins_stored: Counter,
    /// Pin writes dropped because the store queue was full.
    pub telemetry_dropped: Counter,
    /// Frames from logged-in devices dropped for being over the connection's message quota.
    pub frames_over_quota: Counter,
    /// Store calls answered at once because the shard's store queue was full.
    pub store_calls_refused: Counter,
    /// App logins that passed the password check.
    pub app_logins_ok: Counter,
    /// App logins refused: unknown email, wrong password, or throttled.
    pub app_logins_refused: Counter,
    /// Events (pin writes, presence) written to subscribed apps.
    pub app_events_sent: Counter,
    /// Events dropped because the app's shard had fallen too far behind.
    pub app_events_dropped: Counter,
    /// Logged-in devices closed because their info announced another template than theirs.
    pub template_mismatches: Counter,
    /// Connections closed because the store's revocation feed named their device, user or
    /// session.
    pub sessions_revoked: Counter,
}

impl ShardMetrics {
    pub fn new(index: u16) -> Self {
        Self {
            index,
            connections: Default::default(),
            logins: Default::default(),
            rejected: Default::default(),
            tls_handshakes_ok: Default::default(),
            tls_handshakes_failed: Default::default(),
            messages_in: std::array::from_fn(|_| AtomicU64::new(0)),
            messages_out: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes_in: Default::default(),
            bytes_out: Default::default(),
            telemetry_queue: AtomicU64::new(0),
            store_in_flight: AtomicU64::new(0),
            store_link_up: AtomicU64::new(0),
            store_latency: AtomicHistogram::new(LATENCY_BOUNDS_US),
            write_batch: AtomicHistogram::new(BATCH_BOUNDS),
            loop_turn: AtomicHistogram::new(LATENCY_BOUNDS_US),
            heartbeat_ms: AtomicU64::new(0),
            pins_stored: Counter::default(),
            telemetry_dropped: Counter::default(),
            frames_over_quota: Counter::default(),
            store_calls_refused: Counter::default(),
            app_logins_ok: Counter::default(),
            app_logins_refused: Counter::default(),
            app_events_sent: Counter::default(),
            app_events_dropped: Counter::default(),
            template_mismatches: Counter::default(),
            sessions_revoked: Counter::default(),
        }
    }

    /// Connections open right now, in any state.
    pub fn open_connections(&self) -> i64 {
        self.connections
            .iter()
            .flat_map(|row| row.iter())
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// A connection moved from `from` (or nowhere) to `to` (or gone).
    pub fn conn_moved(&self, transport: Transport, from: Option<ConnState>, to: Option<ConnState>) {
        let row = &self.connections[transport as usize];
        if let Some(from) = from {
            row[from as usize].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(to) = to {
            row[to as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn connections(&self, transport: Transport, state: ConnState) -> i64 {
        self.connections[transport as usize][state as usize].load(Ordering::Relaxed)
    }

    pub fn login(&self, result: LoginResult) {
        self.logins[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn logins(&self, result: LoginResult) -> u64 {
        self.logins[result as usize].load(Ordering::Relaxed)
    }

    pub fn reject(&self, reason: Rejection) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, reason: Rejection) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }

    pub fn tls_handshake(&self, version: TlsVersion, ok: bool) {
        let row = if ok {
            &self.tls_handshakes_ok
        } else {
            &self.tls_handshakes_failed
        };
        row[version as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn tls_handshakes(&self, version: TlsVersion, ok: bool) -> u64 {
        let row = if ok {
            &self.tls_handshakes_ok
        } else {
            &self.tls_handshakes_failed
        };
        row[version as usize].load(Ordering::Relaxed)
    }

    pub fn message_in(&self, command: u8) {
        self.messages_in[usize::from(command)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one outgoing frame by the command byte it starts with.
    pub fn frame_out(&self, frame: &[u8]) {
        if let Some(&command) = frame.first() {
            self.messages_out[usize::from(command)].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn bytes_in(&self, transport: Transport, n: usize) {
        self.bytes_in[transport as usize].fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn bytes_out(&self, transport: Transport, n: usize) {
        self.bytes_out[transport as usize].fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn bytes(&self, transport: Transport) -> (u64, u64) {
        (
            self.bytes_in[transport as usize].load(Ordering::Relaxed),
            self.bytes_out[transport as usize].load(Ordering::Relaxed),
        )
    }

    /// End of a loop turn: its duration, the queue gauges and the watchdog heartbeat.
    pub fn turn_done(
        &self,
        busy: Duration,
        telemetry_queue: usize,
        in_flight: usize,
        link_up: bool,
        now_ms: u64,
    ) {
        self.loop_turn.observe_duration(busy);
        self.telemetry_queue
            .store(telemetry_queue as u64, Ordering::Relaxed);
        self.store_in_flight
            .store(in_flight as u64, Ordering::Relaxed);
        self.store_link_up
            .store(u64::from(link_up), Ordering::Relaxed);
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let h = AtomicHistogram::new(&[10, 100]);
        for v in [1, 10, 11, 100, 1000] {
            h.observe(v);
        }
        let (buckets, sum, count) = h.snapshot(1.0);
        assert_eq!(buckets, vec![(10.0, 2), (100.0, 4), (f64::INFINITY, 5)]);
        assert_eq!((sum, count), (1122.0, 5));
    }

    #[test]
    fn connection_states_move() {
        let m = ShardMetrics::new(0);
        m.conn_moved(Transport::Tls, None, Some(ConnState::PreAuth));
        m.conn_moved(
            Transport::Tls,
            Some(ConnState::PreAuth),
            Some(ConnState::Authenticated),
        );
        assert_eq!(m.connections(Transport::Tls, ConnState::PreAuth), 0);
        assert_eq!(m.connections(Transport::Tls, ConnState::Authenticated), 1);
        m.conn_moved(Transport::Tls, Some(ConnState::Authenticated), None);
        assert_eq!(m.connections(Transport::Tls, ConnState::Authenticated), 0);
    }

    #[test]
    fn sampled_counts_are_reported_when_they_cross_a_power_of_two() {
        let counter = Counter::default();
        let reported: Vec<Option<u64>> = [1, 1, 1, 1, 4, 100, 0]
            .into_iter()
            .map(|n| counter.add_sampled(n))
            .collect();
        assert_eq!(
            reported,
            [Some(1), Some(2), None, Some(4), Some(8), Some(108), None]
        );
        assert_eq!(counter.get(), 108);
    }
}
