//! Several load-generator processes for one run, when the devices need more descriptors than one
//! process may open. The main process starts copies of itself, each with a slice of the token
//! file (`--worker-slice FIRST:END`) and its share of the login rate, and talks to them over
//! pipes with JSON lines: a worker sends a snapshot every second, `ready` when its devices are
//! all up (then waits for `go` on stdin, so every worker starts its measured part together),
//! `measure_over`, and finally `done` with its tally. The main process sums the snapshots for the
//! progress line and merges the tallies.

use crate::controller::{Hooks, PhaseTimes, Snapshot};
use crate::plan::Phase;
use crate::shard::TelemetryProgress;
use crate::tally::{Tally, WireTally};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The main process tells a waiting worker to start its measured part with this line.
const GO: &str = "go";

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerMessage {
    Snapshot {
        phase: u8,
        snapshot: Snapshot,
    },
    Ready(Snapshot),
    MeasureOver(Snapshot),
    Done {
        tally: WireTally,
        telemetry: Vec<TelemetryProgress>,
        times: PhaseTimes,
    },
}

/// The worker side of the pipe.
pub struct WorkerPipe;

impl WorkerPipe {
    fn send(message: &WorkerMessage) {
        if let Ok(line) = serde_json::to_string(message) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    pub fn done(tally: &Tally, telemetry: Vec<TelemetryProgress>, times: PhaseTimes) {
        Self::send(&WorkerMessage::Done {
            tally: tally.to_wire(),
            telemetry,
            times,
        });
    }
}

impl Hooks for WorkerPipe {
    fn ready(&mut self, snapshot: &Snapshot) {
        Self::send(&WorkerMessage::Ready(snapshot.clone()));
        let mut line = String::new();
        // A closed stdin means the main process is gone: go on rather than hang.
        let _ = std::io::stdin().lock().read_line(&mut line);
    }

    fn measure_over(&mut self, snapshot: &Snapshot) {
        Self::send(&WorkerMessage::MeasureOver(snapshot.clone()));
    }

    fn snapshot(&mut self, phase: Phase, snapshot: &Snapshot) {
        Self::send(&WorkerMessage::Snapshot {
            phase: phase as u8,
            snapshot: snapshot.clone(),
        });
    }
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    latest: Snapshot,
    ready: Option<Snapshot>,
    measure_over: Option<Snapshot>,
    done: Option<(Tally, Vec<TelemetryProgress>, PhaseTimes)>,
}

/// What the workers produced together.
pub struct Merged {
    pub tally: Tally,
    pub telemetry: Vec<TelemetryProgress>,
    pub times: PhaseTimes,
}

/// Starts one worker per slice with `args` (this program's own arguments) plus the slice, and
/// runs them to the end, feeding `hooks` as if they were one process.
pub fn run(
    args: &[String],
    slices: &[(usize, usize)],
    hooks: &mut dyn Hooks,
) -> anyhow::Result<Merged> {
    let exe = std::env::current_exe().context("cannot find this program's executable")?;
    let (tx, rx) = mpsc::channel::<(usize, Option<WorkerMessage>)>();
    let mut workers = Vec::new();
    for (i, (first, end)) in slices.iter().enumerate() {
        let mut child = Command::new(&exe)
            .args(args)
            .arg("--worker-slice")
            .arg(format!("{first}:{end}"))
            .arg("--worker-count")
            .arg(slices.len().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start worker process {i}"))?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let stdin = child.stdin.take();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<WorkerMessage>(&line) {
                    Ok(message) => {
                        if tx.send((i, Some(message))).is_err() {
                            return;
                        }
                    }
                    Err(_) => eprintln!("worker {i}: {line}"),
                }
            }
            let _ = tx.send((i, None));
        });
        workers.push(Worker {
            child,
            stdin,
            latest: Snapshot::default(),
            ready: None,
            measure_over: None,
            done: None,
        });
    }
    drop(tx);
    let mut phase = Phase::Ramp;
    let mut next_tick = Instant::now() + crate::controller::SNAPSHOT_INTERVAL;
    let mut finished = 0;
    while finished < workers.len() {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
            Ok((i, Some(message))) => match message {
                WorkerMessage::Snapshot { snapshot, .. } => workers[i].latest = snapshot,
                WorkerMessage::Ready(snapshot) => workers[i].ready = Some(snapshot),
                WorkerMessage::MeasureOver(snapshot) => workers[i].measure_over = Some(snapshot),
                WorkerMessage::Done {
                    tally,
                    telemetry,
                    times,
                } => workers[i].done = Some((Tally::from_wire(&tally), telemetry, times)),
            },
            Ok((i, None)) => {
                finished += 1;
                if workers[i].done.is_none() {
                    let status = workers[i].child.wait().ok();
                    bail!("worker process {i} ended without a report ({status:?})");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if phase == Phase::Ramp && workers.iter().all(|w| w.ready.is_some()) {
            let sum = sum(workers.iter().filter_map(|w| w.ready.as_ref()));
            hooks.ready(&sum);
            for worker in &mut workers {
                if let Some(stdin) = worker.stdin.as_mut() {
                    let _ = writeln!(stdin, "{GO}");
                    let _ = stdin.flush();
                }
            }
            phase = Phase::Measure;
        }
        if phase == Phase::Measure && workers.iter().all(|w| w.measure_over.is_some()) {
            let sum = sum(workers.iter().filter_map(|w| w.measure_over.as_ref()));
            hooks.measure_over(&sum);
            phase = Phase::Drain;
        }
        if Instant::now() >= next_tick {
            hooks.snapshot(phase, &sum(workers.iter().map(|w| &w.latest)));
            next_tick += crate::controller::SNAPSHOT_INTERVAL;
        }
    }
    let mut merged = Merged {
        tally: Tally::new(),
        telemetry: Vec::new(),
        times: PhaseTimes {
            storm_all_back_s: Some(0.0),
            storm_back_after_return_s: Some(0.0),
            ..PhaseTimes::default()
        },
    };
    for mut worker in workers {
        let _ = worker.child.wait();
        let Some((tally, telemetry, times)) = worker.done else {
            bail!("a worker process ended without a report");
        };
        merged.tally.merge(&tally);
        merged.telemetry.extend(telemetry);
        let t = &mut merged.times;
        t.ramp_s = t.ramp_s.max(times.ramp_s);
        t.measure_s = t.measure_s.max(times.measure_s);
        t.online_at_measure += times.online_at_measure;
        // All back only when every worker's devices are back: the slowest worker decides.
        t.storm_all_back_s = slowest(t.storm_all_back_s, times.storm_all_back_s);
        t.storm_back_after_return_s =
            slowest(t.storm_back_after_return_s, times.storm_back_after_return_s);
    }
    Ok(merged)
}

/// The later of two workers' storm times; none if either worker's devices never all came back.
fn slowest(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a?.max(b?))
}

fn sum<'a>(snapshots: impl Iterator<Item = &'a Snapshot>) -> Snapshot {
    let mut total = Snapshot::default();
    for s in snapshots {
        total.add(s);
    }
    total
}
