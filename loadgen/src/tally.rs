//! The mergeable result of one shard, one process or a whole run: latency histograms
//! (HdrHistogram, microseconds, 3 significant digits), event counters and failures by reason.
//! Shards fill their own tally without locks; the controller merges them at the end, and worker
//! processes send theirs to the main process as JSON (histograms as value/count pairs).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Largest latency a histogram records (one hour); longer values are clamped to it.
const MAX_RECORDED_MICROS: u64 = 3_600_000_000;

/// Significant decimal digits kept by every histogram.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The latencies a run can record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Latency {
    /// TCP connect (and, for TLS, the full handshake) from the first SYN.
    Connect,
    /// From the first SYN to the login's 200 reply.
    Login,
    /// PING round trip.
    Ping,
    /// From a write's scheduled send time to the reply of the PING sent right after it.
    Write,
    /// From a device's disconnection to its next successful login (storm).
    Reconnect,
    /// Fanout: from a write's scheduled send time on the device to its pin event at an app.
    EndToEnd,
    /// Fanout: an app's TCP connect to its `logged_in` answer (WebSocket handshake, login).
    AppLogin,
}

impl Latency {
    pub const ALL: [Latency; 7] = [
        Latency::Connect,
        Latency::Login,
        Latency::Ping,
        Latency::Write,
        Latency::Reconnect,
        Latency::EndToEnd,
        Latency::AppLogin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Latency::Connect => "connect",
            Latency::Login => "login",
            Latency::Ping => "ping",
            Latency::Write => "write",
            Latency::Reconnect => "reconnect",
            Latency::EndToEnd => "end_to_end",
            Latency::AppLogin => "app_login",
        }
    }
}

/// Events counted by a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Count {
    ConnectAttempts,
    LoginsOk,
    PingsOk,
    WritesSent,
    /// Writes followed by a PING whose reply came back: the gateway read and handled them.
    WritesAcked,
    /// Logged-in connections the gateway closed.
    Disconnects,
    /// Frames the gateway sent that the scenario did not expect (counted, not fatal).
    UnexpectedFrames,
    /// Fanout: apps that got `logged_in`.
    AppsLoggedIn,
    /// Fanout: apps that never logged in (connect, TLS, handshake, refusal or timeout).
    AppLoginFailures,
    /// Fanout: `subscribe` requests answered `subscribed`.
    SubscriptionsOk,
    /// Fanout: `subscribe` requests refused or left unanswered.
    SubscribeFailures,
    /// Fanout: pin events of subscribed devices that reached an app.
    EventsReceived,
    /// Fanout: writes sent × the apps subscribed to the writing device.
    EventsExpected,
    /// Fanout: pin events whose value was not a send time (received, but not timed).
    EventsUndecodable,
    /// Fanout: logged-in apps whose connection ended before the run did.
    AppDisconnects,
}

impl Count {
    /// The counts of the device side, reported by every scenario.
    pub const ALL: [Count; 7] = [
        Count::ConnectAttempts,
        Count::LoginsOk,
        Count::PingsOk,
        Count::WritesSent,
        Count::WritesAcked,
        Count::Disconnects,
        Count::UnexpectedFrames,
    ];

    /// The counts of the app side, reported by `fanout` only.
    pub const APP: [Count; 8] = [
        Count::AppsLoggedIn,
        Count::AppLoginFailures,
        Count::SubscriptionsOk,
        Count::SubscribeFailures,
        Count::EventsReceived,
        Count::EventsExpected,
        Count::EventsUndecodable,
        Count::AppDisconnects,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Count::ConnectAttempts => "connect_attempts",
            Count::LoginsOk => "logins_ok",
            Count::PingsOk => "pings_ok",
            Count::WritesSent => "writes_sent",
            Count::WritesAcked => "writes_acked",
            Count::Disconnects => "disconnects",
            Count::UnexpectedFrames => "unexpected_frames",
            Count::AppsLoggedIn => "apps_logged_in",
            Count::AppLoginFailures => "app_login_failures",
            Count::SubscriptionsOk => "subscriptions_ok",
            Count::SubscribeFailures => "subscribe_failures",
            Count::EventsReceived => "events_received",
            Count::EventsExpected => "events_expected",
            Count::EventsUndecodable => "events_undecodable",
            Count::AppDisconnects => "app_disconnects",
        }
    }
}

/// Histograms, counters and failures, owned by one shard or merged.
#[derive(Debug, Clone)]
pub struct Tally {
    histograms: BTreeMap<Latency, Histogram<u64>>,
    pub counts: BTreeMap<Count, u64>,
    pub failures: BTreeMap<String, u64>,
    /// Failed attempts that were retried (storm reconnects while the gateway is down).
    pub retried: BTreeMap<String, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Tally {
    pub fn new() -> Self {
        Tally {
            histograms: BTreeMap::new(),
            counts: BTreeMap::new(),
            failures: BTreeMap::new(),
            retried: BTreeMap::new(),
        }
    }

    /// Records one latency.
    pub fn record(&mut self, what: Latency, latency: Duration) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(MAX_RECORDED_MICROS)
            .clamp(1, MAX_RECORDED_MICROS);
        self.histogram(what).saturating_record(micros);
    }

    fn histogram(&mut self, what: Latency) -> &mut Histogram<u64> {
        self.histograms.entry(what).or_insert_with(new_histogram)
    }

    pub fn add(&mut self, what: Count, n: u64) {
        *self.counts.entry(what).or_insert(0) += n;
    }

    pub fn count(&self, what: Count) -> u64 {
        self.counts.get(&what).copied().unwrap_or(0)
    }

    pub fn fail(&mut self, reason: impl Into<String>) {
        *self.failures.entry(reason.into()).or_insert(0) += 1;
    }

    pub fn retry(&mut self, reason: impl Into<String>) {
        *self.retried.entry(reason.into()).or_insert(0) += 1;
    }

    pub fn failure_total(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn get(&self, what: Latency) -> Option<&Histogram<u64>> {
        self.histograms.get(&what).filter(|h| !h.is_empty())
    }

    /// Adds everything in `other` to this tally.
    pub fn merge(&mut self, other: &Tally) {
        for (what, hist) in &other.histograms {
            // Both use the same bounds, so adding cannot fail.
            let _ = self.histogram(*what).add(hist);
        }
        for (what, n) in &other.counts {
            self.add(*what, *n);
        }
        for (reason, n) in &other.failures {
            *self.failures.entry(reason.clone()).or_insert(0) += n;
        }
        for (reason, n) in &other.retried {
            *self.retried.entry(reason.clone()).or_insert(0) += n;
        }
    }

    /// The JSON-friendly form sent by worker processes.
    pub fn to_wire(&self) -> WireTally {
        WireTally {
            histograms: self
                .histograms
                .iter()
                .map(|(what, hist)| {
                    let values = hist
                        .iter_recorded()
                        .map(|v| [v.value_iterated_to(), v.count_at_value()])
                        .collect();
                    (*what, values)
                })
                .collect(),
            counts: self.counts.clone(),
            failures: self.failures.clone(),
            retried: self.retried.clone(),
        }
    }

    pub fn from_wire(wire: &WireTally) -> Tally {
        let mut tally = Tally::new();
        for (what, values) in &wire.histograms {
            let hist = tally.histogram(*what);
            for [value, count] in values {
                let _ = hist.record_n((*value).clamp(1, MAX_RECORDED_MICROS), *count);
            }
        }
        tally.counts = wire.counts.clone();
        tally.failures = wire.failures.clone();
        tally.retried = wire.retried.clone();
        tally
    }
}

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure would be a bug here.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_RECORDED_MICROS, SIGNIFICANT_DIGITS)
        .expect("valid histogram bounds")
}

/// A tally as JSON: each histogram as `[value_us, count]` pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireTally {
    pub histograms: BTreeMap<Latency, Vec<[u64; 2]>>,
    pub counts: BTreeMap<Count, u64>,
    pub failures: BTreeMap<String, u64>,
    #[serde(default)]
    pub retried: BTreeMap<String, u64>,
}

/// Percentiles of one latency, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// (percentile, ms) pairs for the distribution chart.
    pub distribution: Vec<(f64, f64)>,
}

/// Percentiles at which the distribution chart is drawn.
const DISTRIBUTION_POINTS: [f64; 12] = [
    0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
];

impl Percentiles {
    pub fn of(hist: &Histogram<u64>) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            count: hist.len(),
            mean_ms: hist.mean() / 1000.0,
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p90_ms: ms(hist.value_at_quantile(0.90)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
            distribution: DISTRIBUTION_POINTS
                .iter()
                .map(|&p| (p, ms(hist.value_at_quantile(p / 100.0))))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_wire_round_trip_keep_every_sample() {
        let mut a = Tally::new();
        let mut b = Tally::new();
        for i in 1..=1000u64 {
            a.record(Latency::Ping, Duration::from_micros(i));
            b.record(Latency::Ping, Duration::from_micros(i * 10));
        }
        a.add(Count::PingsOk, 1000);
        b.add(Count::PingsOk, 1000);
        b.fail("connect refused");
        a.merge(&b);
        let wire = serde_json::to_string(&a.to_wire()).expect("serializes");
        let back = Tally::from_wire(&serde_json::from_str(&wire).expect("parses"));
        let hist = back.get(Latency::Ping).expect("ping histogram");
        assert_eq!(hist.len(), 2000);
        assert_eq!(back.count(Count::PingsOk), 2000);
        assert_eq!(back.failure_total(), 1);
        let p = Percentiles::of(hist);
        // 1000 samples of 1..=1000 µs and 100 of the other 1000 are at most 1 ms: the median
        // sits where a's 910 and b's 90 samples below it make 1000, at about 0.91 ms.
        assert!((p.p50_ms - 0.91).abs() < 0.01, "p50 {}", p.p50_ms);
        assert!((p.max_ms - 10.0).abs() < 0.02, "max {}", p.max_ms);
        assert!(p.p50_ms <= p.p90_ms && p.p90_ms <= p.p99_ms && p.p99_ms <= p.max_ms);
    }
}
