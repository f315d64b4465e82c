//! The report of one run, as written to JSON and rendered into the dashboard: what was run and
//! where (command line, host limits, setup), what happened (counts, failures by reason, rates
//! over the measured part, latency percentiles, memory and CPU, the stored read-back, the
//! fan-out to app clients, a per-second timeline) and whether the load generator itself
//! saturated. Also the `compare`
//! table of two reports.

use crate::tally::Percentiles;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub scenario: String,
    pub command: Vec<String>,
    pub started_unix_ms: u64,
    pub host: Host,
    pub setup: Setup,
    pub result: Outcome,
    /// Percentiles per latency kind (connect, login, ping, write, reconnect).
    pub latency_ms: BTreeMap<String, Percentiles>,
    pub memory: Option<Memory>,
    pub cpu: Cpu,
    pub stored: Option<Stored>,
    /// `fanout` only: the app side.
    #[serde(default)]
    pub fanout: Option<Fanout>,
    pub saturated: bool,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
    pub timeline: Vec<TimelinePoint>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Host {
    pub cores: usize,
    pub kernel: String,
    /// Soft open-file limit after raising it to the hard limit.
    pub nofile_limit: u64,
    pub connections_per_process: u64,
    pub local_port_range: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Setup {
    pub devices: usize,
    pub tls_percent: u8,
    pub login_rate: f64,
    pub heartbeat_secs: u16,
    pub shards_per_process: usize,
    pub worker_processes: usize,
    pub source_addresses: Vec<String>,
    pub plain_target: String,
    pub tls_target: String,
    /// Scenario parameters (duration, rate, trigger...).
    pub params: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub online_at_measure: i64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub retried: BTreeMap<String, u64>,
    pub counts: BTreeMap<String, u64>,
    pub ramp_s: f64,
    pub measure_s: f64,
    /// Per second: `logins_during_ramp`, and over the measured part `writes_sent`,
    /// `writes_acked`, `pings`.
    pub rates: BTreeMap<String, f64>,
    pub storm_all_back_s: Option<f64>,
    /// Storm: from the first re-login (the gateway accepting again) to every device back.
    #[serde(default)]
    pub storm_back_after_return_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Memory {
    /// Connections online when memory was measured (after the ramp and a settle pause).
    pub connections: i64,
    pub gateway_rss_before: Option<u64>,
    pub gateway_rss_after: Option<u64>,
    pub gateway_bytes_per_connection: Option<f64>,
    pub loadgen_rss_before: u64,
    pub loadgen_rss_after: u64,
    pub loadgen_bytes_per_connection: f64,
    /// `/proc/net/sockstat` TCP memory growth; loopback: both ends of every connection.
    pub kernel_tcp_bytes_delta: Option<i64>,
    /// `/proc/meminfo` Slab growth (socket structures, epoll items...); machine-wide, both ends.
    pub kernel_slab_bytes_delta: Option<i64>,
    /// (TCP + slab growth) / connections / 2: the kernel's share of one end.
    pub kernel_bytes_per_connection_end: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cpu {
    /// Mean and peak CPU of the load generator over the measured part, in % of one core.
    pub loadgen_mean_pct: f64,
    pub loadgen_peak_pct: f64,
    /// What the load generator could use at most (its threads, capped by the cores), % of one core.
    pub loadgen_capacity_pct: f64,
    pub gateway_cpu_s_ramp: Option<f64>,
    pub gateway_cpu_s_measure: Option<f64>,
    pub store_cpu_s_measure: Option<f64>,
    /// Logins completed during the ramp per second of gateway CPU (TLS: full handshakes).
    pub logins_per_gateway_cpu_s: Option<f64>,
    /// PINGs answered or writes acknowledged during the measured part per second of gateway CPU:
    /// throughput normalised for a machine whose CPUs are shared with other work.
    #[serde(default)]
    pub requests_per_gateway_cpu_s: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stored {
    pub devices_read: usize,
    /// Sum over devices of the last write number the store holds.
    pub writes_stored: u64,
    pub writes_sent: u64,
    /// Devices whose stored value is their last write.
    pub devices_complete: usize,
    /// `writes_stored` over the measured part.
    pub stored_per_s: f64,
    pub how: String,
}

/// The app side of a `fanout` run (its counts are in `result.counts` too).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Fanout {
    pub apps: usize,
    /// Apps used `wss://` on the TLS port.
    pub app_tls: bool,
    pub subscriptions_planned: usize,
    /// Confirmed subscribers of the least and the most watched device.
    pub subscribers_per_device_min: u32,
    pub subscribers_per_device_max: u32,
    /// Writes sent × confirmed subscribers of the writing device.
    pub events_expected: u64,
    pub events_received: u64,
    /// Received over expected, %.
    pub delivered_pct: f64,
    /// The busiest app client thread's CPU while receiving, % of one core: near 100 means that
    /// thread, not the gateway, set the pace.
    pub busiest_app_thread_pct: Option<f64>,
    pub how: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub t_s: f64,
    pub phase: String,
    pub online: i64,
    pub logins_per_s: f64,
    pub writes_per_s: f64,
    pub acked_per_s: f64,
    pub pings_per_s: f64,
    /// `fanout`: pin events received by the apps.
    #[serde(default)]
    pub events_per_s: f64,
    pub failures: u64,
    pub disconnects: u64,
    pub loadgen_cpu_pct: f64,
    pub loadgen_rss_mb: f64,
    pub gateway_rss_mb: Option<f64>,
    pub gateway_cpu_pct: Option<f64>,
    pub lag_ms: f64,
}

impl Report {
    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let r = &self.result;
        let _ = writeln!(
            s,
            "{} — {} devices ({}% TLS), {} online at the measured part, {} failed; ramp {:.1}s, measured {:.1}s",
            self.scenario,
            self.setup.devices,
            self.setup.tls_percent,
            r.online_at_measure,
            r.failed,
            r.ramp_s,
            r.measure_s
        );
        for (name, rate) in &r.rates {
            let _ = writeln!(s, "  {name:<22} {rate:>12.0} /s");
        }
        if let Some(back) = r.storm_all_back_s {
            let _ = writeln!(s, "  all back after         {back:>12.3} s");
        }
        if let Some(back) = r.storm_back_after_return_s {
            let _ = writeln!(s, "  back after the return  {back:>12.3} s");
        }
        for (name, p) in &self.latency_ms {
            let _ = writeln!(
                s,
                "  {name:<10} n={:<9} p50 {:>8.3} p90 {:>8.3} p99 {:>8.3} p99.9 {:>8.3} max {:>8.3} ms",
                p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
            );
        }
        if let Some(m) = &self.memory {
            if let Some(per) = m.gateway_bytes_per_connection {
                let _ = writeln!(
                    s,
                    "  gateway RSS per connection {per:.0} B ({} connections)",
                    m.connections
                );
            }
            if let Some(k) = m.kernel_bytes_per_connection_end {
                let _ = writeln!(s, "  kernel per connection end  {k:.0} B");
            }
            let _ = writeln!(
                s,
                "  loadgen RSS per connection {:.0} B",
                m.loadgen_bytes_per_connection
            );
        }
        if let Some(st) = &self.stored {
            let _ = writeln!(
                s,
                "  stored {} of {} writes ({:.0}/s), {} of {} devices complete",
                st.writes_stored,
                st.writes_sent,
                st.stored_per_s,
                st.devices_complete,
                st.devices_read
            );
        }
        if let Some(f) = &self.fanout {
            let _ = writeln!(
                s,
                "  apps {} ({}), {} subscriptions planned, {}–{} subscribers per device",
                f.apps,
                if f.app_tls { "wss" } else { "ws" },
                f.subscriptions_planned,
                f.subscribers_per_device_min,
                f.subscribers_per_device_max
            );
            let _ = writeln!(
                s,
                "  events received {} of {} expected ({:.2}%)",
                f.events_received, f.events_expected, f.delivered_pct
            );
        }
        let _ = writeln!(
            s,
            "  loadgen CPU mean {:.0}% peak {:.0}% of {:.0}%",
            self.cpu.loadgen_mean_pct, self.cpu.loadgen_peak_pct, self.cpu.loadgen_capacity_pct
        );
        if let Some(l) = self.cpu.logins_per_gateway_cpu_s {
            let _ = writeln!(s, "  logins per gateway CPU-second {l:.0}");
        }
        if let Some(r) = self.cpu.requests_per_gateway_cpu_s {
            let _ = writeln!(s, "  requests per gateway CPU-second {r:.0}");
        }
        for (reason, n) in &r.failures {
            let _ = writeln!(s, "  FAILED {n} × {reason}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "  WARNING {w}");
        }
        s
    }
}

/// The headline figures of a report, by name, for `compare`.
pub fn figures(report: &Report) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    out.push((
        "online at measure".into(),
        report.result.online_at_measure as f64,
    ));
    out.push(("failed".into(), report.result.failed as f64));
    for (name, rate) in &report.result.rates {
        out.push((format!("{name} /s"), *rate));
    }
    if let Some(back) = report.result.storm_all_back_s {
        out.push(("storm all back s".into(), back));
    }
    if let Some(back) = report.result.storm_back_after_return_s {
        out.push(("storm back after return s".into(), back));
    }
    for (name, p) in &report.latency_ms {
        for (label, v) in [
            ("p50", p.p50_ms),
            ("p90", p.p90_ms),
            ("p99", p.p99_ms),
            ("p99.9", p.p999_ms),
            ("max", p.max_ms),
        ] {
            out.push((format!("{name} {label} ms"), v));
        }
    }
    if let Some(m) = &report.memory {
        if let Some(v) = m.gateway_bytes_per_connection {
            out.push(("gateway B/conn".into(), v));
        }
        if let Some(v) = m.kernel_bytes_per_connection_end {
            out.push(("kernel B/conn end".into(), v));
        }
        out.push(("loadgen B/conn".into(), m.loadgen_bytes_per_connection));
    }
    if let Some(st) = &report.stored {
        out.push(("stored /s".into(), st.stored_per_s));
    }
    if let Some(f) = &report.fanout {
        out.push(("events expected".into(), f.events_expected as f64));
        out.push(("events received".into(), f.events_received as f64));
        out.push(("events delivered %".into(), f.delivered_pct));
    }
    if let Some(v) = report.cpu.logins_per_gateway_cpu_s {
        out.push(("logins per gateway CPU-s".into(), v));
    }
    if let Some(v) = report.cpu.requests_per_gateway_cpu_s {
        out.push(("requests per gateway CPU-s".into(), v));
    }
    out.push(("loadgen CPU mean %".into(), report.cpu.loadgen_mean_pct));
    out
}

/// Two reports side by side with the ratio B/A.
pub fn compare(a: &Report, b: &Report, a_name: &str, b_name: &str) -> String {
    let fa = figures(a);
    let fb: BTreeMap<String, f64> = figures(b).into_iter().collect();
    let mut names: Vec<String> = fa.iter().map(|(n, _)| n.clone()).collect();
    for (name, _) in figures(b) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let fa: BTreeMap<String, f64> = fa.into_iter().collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "A = {a_name} ({}), B = {b_name} ({})",
        a.scenario, b.scenario
    );
    let _ = writeln!(s, "{:<28} {:>14} {:>14} {:>9}", "figure", "A", "B", "B/A");
    for name in names {
        let va = fa.get(&name).copied();
        let vb = fb.get(&name).copied();
        let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        let ratio = match (va, vb) {
            (Some(x), Some(y)) if x != 0.0 => format!("{:.2}×", y / x),
            _ => "-".into(),
        };
        let _ = writeln!(s, "{name:<28} {:>14} {:>14} {ratio:>9}", show(va), show(vb));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_shows_ratios_and_missing_figures() {
        let mut a = Report {
            scenario: "ping".into(),
            ..Report::default()
        };
        a.result.rates.insert("pings".into(), 50_000.0);
        let mut b = a.clone();
        b.result.rates.insert("pings".into(), 100_000.0);
        b.result.storm_all_back_s = Some(2.5);
        let table = compare(&a, &b, "a.json", "b.json");
        assert!(table.contains("pings /s"), "{table}");
        assert!(table.contains("2.00×"), "{table}");
        let storm = table
            .lines()
            .find(|l| l.starts_with("storm all back"))
            .expect("row present");
        assert!(storm.contains(" - "), "{storm}");
    }

    #[test]
    fn fanout_figures_compare_and_old_reports_still_read() {
        let mut a = Report {
            scenario: "fanout".into(),
            fanout: Some(Fanout {
                events_expected: 1000,
                events_received: 990,
                delivered_pct: 99.0,
                ..Fanout::default()
            }),
            ..Report::default()
        };
        a.result.rates.insert("events_received".into(), 99.0);
        let mut b = a.clone();
        if let Some(f) = b.fanout.as_mut() {
            f.events_received = 500;
            f.delivered_pct = 50.0;
        }
        let table = compare(&a, &b, "a.json", "b.json");
        let row = table
            .lines()
            .find(|l| l.starts_with("events delivered %"))
            .expect("row present");
        assert!(row.contains("0.51×"), "{row}");
        assert!(
            a.summary()
                .contains("events received 990 of 1000 expected (99.00%)")
        );
        // A report written before fanout existed has neither field.
        let mut old = serde_json::to_value(Report::default()).expect("json");
        if let Some(map) = old.as_object_mut() {
            map.remove("fanout");
        }
        let old: Report = serde_json::from_value(old).expect("an old report reads");
        assert!(old.fanout.is_none());
    }
}
