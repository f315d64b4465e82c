//! The top-level process's view of a run: turns one-second snapshots into the live progress line
//! and the report's timeline, samples the gateway (and its store child) for memory and CPU, and
//! takes the memory gauges before the first connection and after the ramp has settled. Used the
//! same way whether the devices run in this process or in worker processes. In a `fanout` run it
//! also reads the app clients' counters (the apps always run in this process).

use crate::app_client::AppLive;
use crate::controller::{Hooks, Snapshot};
use crate::plan::Phase;
use crate::procfs;
use crate::report::TimelinePoint;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The gateway process being measured, if its pid was given.
#[derive(Debug, Clone, Copy)]
pub struct GatewayProbe {
    pub pid: Option<u32>,
    pub store_pid: Option<u32>,
}

impl GatewayProbe {
    pub fn new(pid: Option<u32>) -> GatewayProbe {
        let store_pid = pid.and_then(|p| procfs::child_named(p, "portcullis-store"));
        GatewayProbe { pid, store_pid }
    }

    pub fn rss(&self) -> Option<u64> {
        procfs::rss_bytes(self.pid?)
    }

    pub fn cpu(&self) -> Option<Duration> {
        procfs::cpu_time(self.pid?)
    }

    pub fn store_cpu(&self) -> Option<Duration> {
        procfs::cpu_time(self.store_pid?)
    }
}

/// Memory and CPU readings at one moment.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub gateway_rss: Option<u64>,
    pub gateway_cpu: Option<Duration>,
    pub store_cpu: Option<Duration>,
    pub kernel_tcp: Option<u64>,
    pub kernel_slab: Option<u64>,
    pub loadgen_rss: u64,
    pub online: i64,
}

impl Gauges {
    pub fn take(probe: &GatewayProbe, snapshot: &Snapshot) -> Gauges {
        Gauges {
            gateway_rss: probe.rss(),
            gateway_cpu: probe.cpu(),
            store_cpu: probe.store_cpu(),
            kernel_tcp: procfs::kernel_tcp_bytes(),
            kernel_slab: procfs::kernel_slab_bytes(),
            loadgen_rss: snapshot.rss_bytes,
            online: snapshot.online,
        }
    }
}

pub struct Observer {
    started: Instant,
    probe: GatewayProbe,
    settle: Duration,
    devices: usize,
    pub before: Gauges,
    pub at_ready: Option<Gauges>,
    pub at_measure_end: Option<Gauges>,
    pub ready_snapshot: Option<Snapshot>,
    last: Option<(Instant, Snapshot, Option<Duration>)>,
    pub timeline: Vec<TimelinePoint>,
    tty: bool,
    apps: Option<WatchedApps>,
}

/// The app clients of a `fanout` run, as the progress line sees them.
struct WatchedApps {
    live: Arc<AppLive>,
    /// The devices run in worker processes, so this process's CPU (the apps' threads) is not in
    /// the snapshots and is added here.
    add_own_cpu: bool,
    last_events: u64,
}

impl Observer {
    pub fn new(probe: GatewayProbe, settle: Duration, devices: usize, before: Gauges) -> Observer {
        Observer {
            started: Instant::now(),
            probe,
            settle,
            devices,
            before,
            at_ready: None,
            at_measure_end: None,
            ready_snapshot: None,
            last: None,
            timeline: Vec::new(),
            tty: std::io::stderr().is_terminal(),
            apps: None,
        }
    }

    /// Fanout: shows the apps' events in the progress line and the timeline, and counts their
    /// CPU as the load generator's (`add_own_cpu` when the devices run in worker processes).
    pub fn watch_apps(&mut self, live: Arc<AppLive>, add_own_cpu: bool) {
        self.apps = Some(WatchedApps {
            live,
            add_own_cpu,
            last_events: 0,
        });
    }

    /// Ends the progress line on a terminal.
    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Ramp => "ramp",
        Phase::Ready => "ready",
        Phase::Measure => "measure",
        Phase::Drain => "drain",
        Phase::Done => "done",
    }
}

impl Hooks for Observer {
    fn ready(&mut self, snapshot: &Snapshot) {
        // Let the gateway free handshake state and the allocator settle before measuring.
        std::thread::sleep(self.settle);
        self.at_ready = Some(Gauges::take(&self.probe, snapshot));
        self.ready_snapshot = Some(snapshot.clone());
    }

    fn measure_over(&mut self, snapshot: &Snapshot) {
        self.at_measure_end = Some(Gauges::take(&self.probe, snapshot));
    }

    fn snapshot(&mut self, phase: Phase, snap: &Snapshot) {
        let mut snap = snap.clone();
        let mut events_per_s = None;
        if let Some(apps) = &self.apps
            && apps.add_own_cpu
        {
            snap.cpu_us += u64::try_from(procfs::own_cpu_time().as_micros()).unwrap_or(0);
        }
        let snap = &snap;
        let now = Instant::now();
        let gateway_cpu = self.probe.cpu();
        let (dt, prev, prev_cpu) = match &self.last {
            Some((at, prev, cpu)) => (now.duration_since(*at).as_secs_f64(), prev.clone(), *cpu),
            None => (
                now.duration_since(self.started).as_secs_f64(),
                Snapshot::default(),
                None,
            ),
        };
        let dt = dt.max(1e-3);
        let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
        if let Some(apps) = self.apps.as_mut() {
            let events = apps.live.events.load(Ordering::Relaxed);
            events_per_s = Some(rate(events, apps.last_events));
            apps.last_events = events;
        }
        let point = TimelinePoint {
            t_s: now.duration_since(self.started).as_secs_f64(),
            phase: phase_name(phase).into(),
            online: snap.online,
            logins_per_s: rate(snap.logins, prev.logins),
            writes_per_s: rate(snap.writes_sent, prev.writes_sent),
            acked_per_s: rate(snap.writes_acked, prev.writes_acked),
            pings_per_s: rate(snap.pings, prev.pings),
            events_per_s: events_per_s.unwrap_or(0.0),
            failures: snap.failures,
            disconnects: snap.disconnects,
            loadgen_cpu_pct: snap.cpu_us.saturating_sub(prev.cpu_us) as f64 / 1e6 / dt * 100.0,
            loadgen_rss_mb: snap.rss_bytes as f64 / 1e6,
            gateway_rss_mb: self.probe.rss().map(|b| b as f64 / 1e6),
            gateway_cpu_pct: match (gateway_cpu, prev_cpu) {
                (Some(c), Some(p)) => Some(c.saturating_sub(p).as_secs_f64() / dt * 100.0),
                _ => None,
            },
            lag_ms: snap.max_lag_us as f64 / 1000.0,
        };
        let line = format!(
            "[{:>5.0}s] {:<7} online {:>7}/{:<7} logins {:>6.0}/s writes {:>7.0}/s acked {:>7.0}/s pings {:>7.0}/s{} fail {:>5} cpu {:>4.0}%{}{}",
            point.t_s,
            point.phase,
            point.online,
            self.devices,
            point.logins_per_s,
            point.writes_per_s,
            point.acked_per_s,
            point.pings_per_s,
            events_per_s.map_or(String::new(), |e| format!(" events {e:>7.0}/s")),
            point.failures,
            point.loadgen_cpu_pct,
            point
                .gateway_rss_mb
                .map_or(String::new(), |m| format!(" gw-rss {m:.0}MB")),
            point
                .gateway_cpu_pct
                .map_or(String::new(), |c| format!(" gw-cpu {c:.0}%")),
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.timeline.push(point);
        self.last = Some((now, snap.clone(), gateway_cpu));
    }
}
