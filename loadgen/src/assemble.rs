//! Turns what a run measured (merged tally, phase times, the observer's gauges and timeline, the
//! stored read-back) into a [`Report`]: rates over the right interval, memory per connection
//! with the kernel's share apart, CPU use, the fan-out figures, and the saturation verdict — the
//! load generator says when the numbers show its own limit rather than the gateway's.

use crate::cli::Common;
use crate::controller::PhaseTimes;
use crate::observer::Observer;
use crate::plan::{Scenario, StormTrigger};
use crate::report::{Cpu, Fanout, Host, Memory, Outcome, Report, Setup, Stored};
use crate::tally::{Count, Latency, Percentiles, Tally};
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

/// The load generator counts as saturated above this share of the CPU it could use.
const SATURATED_CPU_SHARE: f64 = 0.9;
/// ... or when its timers fire this late (milliseconds) during the measured part.
const SATURATED_LAG_MS: f64 = 100.0;
/// ... or when telemetry (or fanout) sent less than this share of its schedule.
const SATURATED_SCHEDULE_SHARE: f64 = 0.95;
/// ... or when one app client thread was busy this share of the time it was receiving (it reads
/// and parses alone; at this point events wait for it, not for the gateway).
const SATURATED_APP_THREAD_SHARE: f64 = 0.9;
/// Fanout: fewer events received than this share of those expected earns a warning.
const DELIVERED_SHARE_WARNING: f64 = 0.999;
/// The machine is CPU-bound when load generator, gateway and store together use this share.
const MACHINE_BUSY_SHARE: f64 = 0.9;

pub struct RunFacts<'a> {
    pub scenario: &'a Scenario,
    pub common: &'a Common,
    pub params: serde_json::Map<String, serde_json::Value>,
    pub host: Host,
    pub devices: usize,
    pub shards: usize,
    pub processes: usize,
    pub sources: &'a [IpAddr],
    pub plain_target: SocketAddr,
    pub tls_target: SocketAddr,
}

pub fn build(
    facts: &RunFacts<'_>,
    tally: &Tally,
    times: &PhaseTimes,
    observer: &Observer,
    stored: Option<Stored>,
    fanout: Option<Fanout>,
) -> Report {
    let common = facts.common;
    let mut report = Report {
        tool: format!("portcullis-loadgen {}", env!("CARGO_PKG_VERSION")),
        scenario: facts.scenario.name().into(),
        command: std::env::args().collect(),
        started_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        host: facts.host.clone(),
        setup: Setup {
            devices: facts.devices,
            tls_percent: common.tls_percent,
            login_rate: common.login_rate,
            heartbeat_secs: common.heartbeat,
            shards_per_process: facts.shards,
            worker_processes: facts.processes,
            source_addresses: facts.sources.iter().map(|a| a.to_string()).collect(),
            plain_target: facts.plain_target.to_string(),
            tls_target: facts.tls_target.to_string(),
            params: facts.params.clone().into_iter().collect(),
        },
        stored,
        fanout,
        timeline: observer.timeline.clone(),
        ..Report::default()
    };
    for what in Latency::ALL {
        if let Some(hist) = tally.get(what) {
            report
                .latency_ms
                .insert(what.name().into(), Percentiles::of(hist));
        }
    }
    report.result = outcome(facts.scenario, tally, times, observer);
    report.memory = memory(observer);
    report.cpu = cpu(facts, observer, &report.result);
    judge(facts, &mut report);
    report
}

fn outcome(scenario: &Scenario, tally: &Tally, times: &PhaseTimes, observer: &Observer) -> Outcome {
    let mut out = Outcome {
        online_at_measure: times.online_at_measure,
        failed: tally.failure_total(),
        failures: tally.failures.clone(),
        retried: tally.retried.clone(),
        counts: Count::ALL
            .iter()
            .chain(match scenario {
                Scenario::Fanout { .. } => &Count::APP[..],
                _ => &[],
            })
            .map(|c| (c.name().to_string(), tally.count(*c)))
            .collect(),
        ramp_s: times.ramp_s,
        measure_s: times.measure_s,
        storm_all_back_s: times.storm_all_back_s,
        storm_back_after_return_s: times.storm_back_after_return_s,
        ..Outcome::default()
    };
    let ramp_logins = observer
        .ready_snapshot
        .as_ref()
        .map_or(tally.count(Count::LoginsOk), |s| s.logins);
    out.rates.insert(
        "logins_during_ramp".into(),
        ramp_logins as f64 / times.ramp_s.max(1e-3),
    );
    let per_s = |n: u64| n as f64 / times.measure_s.max(1e-3);
    match scenario {
        Scenario::Telemetry { .. } | Scenario::Fanout { .. } => {
            out.rates
                .insert("writes_sent".into(), per_s(tally.count(Count::WritesSent)));
            out.rates.insert(
                "writes_acked".into(),
                per_s(tally.count(Count::WritesAcked)),
            );
            if let Scenario::Fanout { .. } = scenario {
                out.rates.insert(
                    "events_received".into(),
                    per_s(tally.count(Count::EventsReceived)),
                );
            }
        }
        Scenario::Ping { .. } => {
            out.rates
                .insert("pings".into(), per_s(tally.count(Count::PingsOk)));
        }
        Scenario::Connect { .. } | Scenario::Storm { .. } => {}
    }
    out
}

fn memory(observer: &Observer) -> Option<Memory> {
    let after = observer.at_ready.as_ref()?;
    let before = &observer.before;
    let connections = after.online;
    let per = |delta: f64| delta / (connections.max(1) as f64);
    let signed = |a: Option<u64>, b: Option<u64>| Some(a? as i64 - b? as i64);
    let gateway_delta = signed(after.gateway_rss, before.gateway_rss);
    let tcp = signed(after.kernel_tcp, before.kernel_tcp);
    let slab = signed(after.kernel_slab, before.kernel_slab);
    let kernel = match (tcp, slab) {
        (Some(t), Some(s)) => Some(per((t + s) as f64) / 2.0),
        _ => None,
    };
    Some(Memory {
        connections,
        gateway_rss_before: before.gateway_rss,
        gateway_rss_after: after.gateway_rss,
        gateway_bytes_per_connection: gateway_delta.map(|d| per(d as f64)),
        loadgen_rss_before: before.loadgen_rss,
        loadgen_rss_after: after.loadgen_rss,
        loadgen_bytes_per_connection: per(after.loadgen_rss as f64 - before.loadgen_rss as f64),
        kernel_tcp_bytes_delta: tcp,
        kernel_slab_bytes_delta: slab,
        kernel_bytes_per_connection_end: kernel,
    })
}

fn cpu(facts: &RunFacts<'_>, observer: &Observer, result: &Outcome) -> Cpu {
    let measured: Vec<f64> = observer
        .timeline
        .iter()
        .filter(|p| p.phase == "measure")
        .map(|p| p.loadgen_cpu_pct)
        .collect();
    let mean = if measured.is_empty() {
        0.0
    } else {
        measured.iter().sum::<f64>() / measured.len() as f64
    };
    let peak = measured.iter().copied().fold(0.0, f64::max);
    let threads = (facts.shards * facts.processes)
        .min(facts.host.cores)
        .max(1);
    let secs = |a: Option<std::time::Duration>, b: Option<std::time::Duration>| {
        Some(a?.saturating_sub(b?).as_secs_f64())
    };
    let before = &observer.before;
    let ready = observer.at_ready.as_ref();
    let end = observer.at_measure_end.as_ref();
    let gateway_ramp = ready.and_then(|r| secs(r.gateway_cpu, before.gateway_cpu));
    let ramp_logins = result
        .rates
        .get("logins_during_ramp")
        .copied()
        .unwrap_or(0.0)
        * result.ramp_s;
    let gateway_measure = match (end, ready) {
        (Some(e), Some(r)) => secs(e.gateway_cpu, r.gateway_cpu),
        _ => None,
    };
    let requests = result.counts.get("pings_ok").copied().unwrap_or(0)
        + result.counts.get("writes_acked").copied().unwrap_or(0);
    Cpu {
        loadgen_mean_pct: mean,
        loadgen_peak_pct: peak,
        loadgen_capacity_pct: threads as f64 * 100.0,
        gateway_cpu_s_ramp: gateway_ramp,
        gateway_cpu_s_measure: gateway_measure,
        store_cpu_s_measure: match (end, ready) {
            (Some(e), Some(r)) => secs(e.store_cpu, r.store_cpu),
            _ => None,
        },
        logins_per_gateway_cpu_s: gateway_ramp.filter(|&s| s > 0.0).map(|s| ramp_logins / s),
        requests_per_gateway_cpu_s: gateway_measure
            .filter(|&s| s > 0.0 && requests > 0)
            .map(|s| requests as f64 / s),
    }
}

/// Sets `saturated` and the warnings.
fn judge(facts: &RunFacts<'_>, report: &mut Report) {
    let capacity = report.cpu.loadgen_capacity_pct;
    if report.cpu.loadgen_peak_pct >= capacity * SATURATED_CPU_SHARE {
        report.saturated = true;
        report.warnings.push(format!(
            "load generator CPU peaked at {:.0}% of the {capacity:.0}% it can use",
            report.cpu.loadgen_peak_pct
        ));
    }
    let worst_lag = report
        .timeline
        .iter()
        .filter(|p| p.phase == "measure")
        .map(|p| p.lag_ms)
        .fold(0.0, f64::max);
    if worst_lag >= SATURATED_LAG_MS {
        report.saturated = true;
        report.warnings.push(format!(
            "load generator timers fired up to {worst_lag:.0} ms late during the measured part"
        ));
    }
    if let Scenario::Telemetry { rate, .. } | Scenario::Fanout { rate, .. } = facts.scenario {
        let planned = report.result.online_at_measure as f64 * rate * report.result.measure_s;
        let sent = report
            .result
            .counts
            .get("writes_sent")
            .copied()
            .unwrap_or(0) as f64;
        if planned > 0.0 && sent < planned * SATURATED_SCHEDULE_SHARE {
            report.saturated = true;
            report.warnings.push(format!(
                "telemetry sent {sent:.0} writes of the {planned:.0} its schedule asked for"
            ));
        }
    }
    judge_fanout(report);
    let machine = facts.host.cores as f64 * 100.0;
    let busiest = report
        .timeline
        .iter()
        .filter(|p| p.phase == "measure")
        .map(|p| p.loadgen_cpu_pct + p.gateway_cpu_pct.unwrap_or(0.0))
        .fold(0.0, f64::max);
    if busiest >= machine * MACHINE_BUSY_SHARE {
        report.warnings.push(format!(
            "the machine's {} cores were busy ({busiest:.0}% of {machine:.0}% for load generator + gateway): \
             the load generator and the gateway compete for the same CPUs, so these figures are a lower bound",
            facts.host.cores
        ));
    }
    if let Scenario::Storm {
        trigger: StormTrigger::Server,
        ..
    } = facts.scenario
        && report.result.storm_all_back_s.is_none()
    {
        report.warnings.push(
            "not every device was back before the timeout (or the gateway never dropped them)"
                .into(),
        );
    }
    if report.memory.is_some() {
        report.notes.push(
            "Memory per connection: gateway RSS growth from before the first connection to after the ramp \
             and a settle pause, divided by the connections online then. The kernel's share comes from \
             /proc/net/sockstat (TCP) plus /proc/meminfo (Slab); over loopback both ends of each connection \
             are on this machine, so it is halved, and it is machine-wide, so other activity adds noise."
                .into(),
        );
    }
}

/// The app side's share of the verdict: a saturated app thread, events missing, apps or
/// subscriptions that failed.
fn judge_fanout(report: &mut Report) {
    let Some(f) = report.fanout.clone() else {
        return;
    };
    if let Some(busy) = f.busiest_app_thread_pct
        && busy >= SATURATED_APP_THREAD_SHARE * 100.0
    {
        report.saturated = true;
        report.warnings.push(format!(
            "an app client thread was busy {busy:.0}% of the time it was receiving: events queued for \
             the load generator's app side, so end-to-end latency and delivery show its limit; use more --apps"
        ));
    }
    if f.events_expected > 0
        && (f.events_received as f64) < f.events_expected as f64 * DELIVERED_SHARE_WARNING
    {
        report.warnings.push(format!(
            "the apps received {} of the {} pin events expected ({:.2}%)",
            f.events_received, f.events_expected, f.delivered_pct
        ));
    }
    let count = |name: &str| report.result.counts.get(name).copied().unwrap_or(0);
    let (login_failures, subscribe_failures) =
        (count("app_login_failures"), count("subscribe_failures"));
    if login_failures > 0 {
        report.warnings.push(format!(
            "{login_failures} of {} apps did not log in (reasons under failures)",
            f.apps
        ));
    }
    if subscribe_failures > 0 {
        report.warnings.push(format!(
            "{subscribe_failures} of {} subscriptions were refused or unanswered (reasons under failures)",
            f.subscriptions_planned
        ));
    }
    report.notes.push(f.how);
}
