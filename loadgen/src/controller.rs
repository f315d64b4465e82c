//! Runs one process's share of a scenario: starts one shard thread per core, watches their live
//! counters, moves the run through its phases (ramp → ready → measure → drain → done), and
//! collects the shards' tallies. What happens at the "ready" barrier and with each one-second
//! snapshot is up to the caller ([`Hooks`]): the top-level process prints a progress line and
//! measures the gateway; a worker process reports to its parent over a pipe and waits for its go.

use crate::plan::{Phase, PhaseCell, Plan, Scenario};
use crate::procfs;
use crate::shard::{Live, Shard, ShardResult, TelemetryProgress};
use crate::tally::Tally;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often the controller looks at the shards' counters.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How often a snapshot goes to the hooks.
pub const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// After telemetry, fanout or ping stop, how long replies (and pin events to the apps) in flight
/// may still arrive.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Cumulative state of one process at one moment (summed over workers by the main process).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub online: i64,
    pub failed: u64,
    pub logins: u64,
    pub writes_sent: u64,
    pub writes_acked: u64,
    pub pings: u64,
    pub failures: u64,
    pub disconnects: u64,
    /// CPU time of the load generator so far, microseconds.
    pub cpu_us: u64,
    pub rss_bytes: u64,
    /// Worst timer lateness since the previous snapshot, microseconds.
    pub max_lag_us: u64,
    pub processes: u32,
}

impl Snapshot {
    pub fn add(&mut self, other: &Snapshot) {
        self.online += other.online;
        self.failed += other.failed;
        self.logins += other.logins;
        self.writes_sent += other.writes_sent;
        self.writes_acked += other.writes_acked;
        self.pings += other.pings;
        self.failures += other.failures;
        self.disconnects += other.disconnects;
        self.cpu_us += other.cpu_us;
        self.rss_bytes += other.rss_bytes;
        self.max_lag_us = self.max_lag_us.max(other.max_lag_us);
        self.processes += other.processes;
    }
}

/// Timing of the phases, relative to the process start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseTimes {
    pub ramp_s: f64,
    pub measure_s: f64,
    /// Storm: from the disconnection to every device back online (None if they never were).
    pub storm_all_back_s: Option<f64>,
    /// Storm: from the first device logged in again (the gateway accepting again: after a
    /// restart, this leaves out the old gateway's drain and the restart itself) to every device
    /// back online.
    #[serde(default)]
    pub storm_back_after_return_s: Option<f64>,
    /// Devices online when the measured part began.
    pub online_at_measure: i64,
}

/// What one process's run produced.
pub struct LocalOutcome {
    pub tally: Tally,
    pub telemetry: Vec<TelemetryProgress>,
    pub times: PhaseTimes,
}

/// What the caller does at the barrier and with snapshots.
pub trait Hooks {
    /// Every device is online or has failed. Returns when the measured part may start.
    fn ready(&mut self, snapshot: &Snapshot);
    /// The measured part just ended (before the drain).
    fn measure_over(&mut self, snapshot: &Snapshot);
    /// Called once per [`SNAPSHOT_INTERVAL`] with the phase.
    fn snapshot(&mut self, phase: Phase, snapshot: &Snapshot);
}

pub fn run(
    plan: Arc<Plan>,
    ramp_timeout: Duration,
    hooks: &mut dyn Hooks,
) -> anyhow::Result<LocalOutcome> {
    let phase = Arc::new(PhaseCell::default());
    let shards = plan.shards.max(1);
    let per_shard_rate = plan.login_rate / shards as f64;
    let mut lives = Vec::new();
    let mut wakers = Vec::new();
    let mut threads = Vec::new();
    for s in 0..shards {
        let specs: Vec<usize> = (0..plan.devices.len())
            .filter(|i| i % shards == s)
            .collect();
        let live = Arc::new(Live::default());
        let (shard, waker) = Shard::new(
            Arc::clone(&plan),
            specs,
            per_shard_rate,
            Arc::clone(&phase),
            Arc::clone(&live),
        )?;
        lives.push(live);
        wakers.push(waker);
        threads.push(
            std::thread::Builder::new()
                .name(format!("loadgen-shard-{s}"))
                .spawn(move || shard.run())?,
        );
    }
    let set_phase = |p: Phase| {
        phase.set(p);
        for waker in &wakers {
            let _ = waker.wake();
        }
    };
    let total = plan.devices.len() as i64;
    let started = Instant::now();
    let mut next_snapshot = started + SNAPSHOT_INTERVAL;
    let mut times = PhaseTimes::default();
    let mut current = Phase::Ramp;
    let mut measure_started = started;
    let mut drain_started = started;
    let mut storm_started: Option<Instant> = None;
    let mut storm_returned: Option<Instant> = None;
    let mut logins_at_drop = 0;
    let mut disconnects_at_measure = 0;
    loop {
        std::thread::sleep(POLL_INTERVAL);
        let now = Instant::now();
        let snap = snapshot(&lives);
        if now >= next_snapshot {
            hooks.snapshot(current, &snap);
            next_snapshot += SNAPSHOT_INTERVAL;
            for live in &lives {
                live.max_lag_us.store(0, Ordering::Relaxed);
            }
        }
        match current {
            Phase::Ramp => {
                let settled = snap.online + snap.failed as i64 >= total;
                if settled || now.duration_since(started) >= ramp_timeout {
                    times.ramp_s = now.duration_since(started).as_secs_f64();
                    current = Phase::Ready;
                    set_phase(current);
                    hooks.ready(&snap);
                    // The barrier may have taken a while: no burst of catch-up snapshots.
                    next_snapshot = Instant::now() + SNAPSHOT_INTERVAL;
                    let snap = snapshot(&lives);
                    times.online_at_measure = snap.online;
                    disconnects_at_measure = snap.disconnects;
                    measure_started = Instant::now();
                    current = Phase::Measure;
                    set_phase(current);
                }
            }
            Phase::Measure => {
                let elapsed = now.duration_since(measure_started);
                let over = match &plan.scenario {
                    Scenario::Connect { hold } => elapsed >= *hold,
                    Scenario::Telemetry { duration, .. }
                    | Scenario::Fanout { duration, .. }
                    | Scenario::Ping { duration } => elapsed >= *duration,
                    Scenario::Storm { timeout, .. } => {
                        let dropped = snap.disconnects - disconnects_at_measure;
                        if storm_started.is_none() && dropped > 0 {
                            storm_started = Some(now);
                            logins_at_drop = snap.logins;
                        }
                        if storm_started.is_some()
                            && storm_returned.is_none()
                            && snap.logins > logins_at_drop
                        {
                            storm_returned = Some(now);
                        }
                        let back = dropped as i64 >= times.online_at_measure
                            && snap.online >= times.online_at_measure;
                        if let (true, Some(start)) = (back, storm_started) {
                            times.storm_all_back_s = Some(now.duration_since(start).as_secs_f64());
                            times.storm_back_after_return_s =
                                storm_returned.map(|r| now.duration_since(r).as_secs_f64());
                        }
                        back || elapsed >= *timeout
                    }
                };
                if over {
                    times.measure_s = now.duration_since(measure_started).as_secs_f64();
                    hooks.measure_over(&snap);
                    current = Phase::Drain;
                    set_phase(current);
                    drain_started = now;
                }
            }
            Phase::Drain => {
                let wait = match plan.scenario {
                    Scenario::Telemetry { .. }
                    | Scenario::Fanout { .. }
                    | Scenario::Ping { .. } => DRAIN_TIME,
                    Scenario::Connect { .. } | Scenario::Storm { .. } => Duration::ZERO,
                };
                if now.duration_since(drain_started) >= wait {
                    hooks.snapshot(current, &snapshot(&lives));
                    set_phase(Phase::Done);
                    break;
                }
            }
            Phase::Ready | Phase::Done => break,
        }
    }
    let mut tally = Tally::new();
    let mut telemetry = Vec::new();
    for thread in threads {
        let ShardResult {
            tally: shard_tally,
            telemetry: shard_telemetry,
        } = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a load generator shard panicked"))??;
        tally.merge(&shard_tally);
        telemetry.extend(shard_telemetry);
    }
    Ok(LocalOutcome {
        tally,
        telemetry,
        times,
    })
}

fn snapshot(lives: &[Arc<Live>]) -> Snapshot {
    let mut snap = Snapshot {
        cpu_us: u64::try_from(procfs::own_cpu_time().as_micros()).unwrap_or(u64::MAX),
        rss_bytes: procfs::own_rss_bytes().unwrap_or(0),
        processes: 1,
        ..Snapshot::default()
    };
    for live in lives {
        snap.online += live.online.load(Ordering::Relaxed);
        snap.failed += live.failed.load(Ordering::Relaxed);
        snap.logins += live.logins.load(Ordering::Relaxed);
        snap.writes_sent += live.writes_sent.load(Ordering::Relaxed);
        snap.writes_acked += live.writes_acked.load(Ordering::Relaxed);
        snap.pings += live.pings.load(Ordering::Relaxed);
        snap.failures += live.failures.load(Ordering::Relaxed);
        snap.disconnects += live.disconnects.load(Ordering::Relaxed);
        snap.max_lag_us = snap.max_lag_us.max(live.max_lag_us.load(Ordering::Relaxed));
    }
    snap
}
