//! Crash test: devices push uniquely numbered values through the gateway while the store (first
//! test) or the whole gateway (second test) is SIGKILLed at random moments; after every restart
//! every acknowledged value is in the store and no value appears that was never written.
//!
//! "Acknowledged", honestly: a writer sends a run of `V1 = "<writer>:<n>"` writes and then a
//! `HardwareSync` read of V1 on the same connection. The gateway answers that read only after the
//! store answered it, on the same pipelined store link, after the `WritePins` carrying the run; so
//! a sync reply showing the run's last value proves the whole run was acknowledged by the store
//! (telemetry class: in the WAL, which survives a store crash). Only then does the writer count the
//! run as acknowledged; a run cut short by a crash is not, and the next run goes on with new
//! numbers, so acknowledged numbers may have holes where such a run was lost. Every write,
//! acknowledged or not, is also appended to the pin's history, which is what the checker reads
//! (`portcullis admin device history --json`): it must contain every acknowledged number of every
//! writer, and only numbers the writer has sent.
//!
//! The random moments come from a seed printed at the start (set `CRASH_SEED` to replay one).

#![allow(clippy::unwrap_used)]

use portcullis_e2e::{Gateway, wait_for};
use portcullis_protocol::{Command, Status, frame};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const WRITERS: usize = 3;
const STORE_KILL_ROUNDS: usize = 5;
const GATEWAY_KILL_ROUNDS: usize = 3;
/// Writes per acknowledged run.
const RUN: u64 = 10;

/// A small xorshift generator: the test needs varied moments, not secrecy.
struct Moments(u64);

impl Moments {
    fn new() -> Self {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("crash test seed: CRASH_SEED={seed}");
        Self(seed)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(from + self.0 % (to - from))
    }
}

/// What one writer has sent and what the store has acknowledged, shared with the checker.
#[derive(Default)]
struct Progress {
    /// Highest number sent (possibly lost if not acknowledged).
    sent: AtomicU64,
    /// The acknowledged runs, `first..=last` each. A run cut short by a crash is never
    /// acknowledged and the next run starts after it, so these need not be contiguous.
    acked: Mutex<Vec<(u64, u64)>>,
}

impl Progress {
    fn acked_runs(&self) -> Vec<(u64, u64)> {
        self.acked.lock().unwrap().clone()
    }

    fn acked_count(&self) -> u64 {
        self.acked_runs().iter().map(|(a, b)| b - a + 1).sum()
    }
}

/// One frame from the gateway, owned.
struct Reply {
    id: u16,
    status: Option<Status>,
    body: Vec<u8>,
}

/// A device connection that reports failure instead of panicking (the gateway may die under it).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u16,
}

impl Conn {
    fn login(port: u16, token: &str) -> Option<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .ok()?;
        stream.set_nodelay(true).ok()?;
        let mut c = Conn {
            stream,
            buf: Vec::new(),
            next_id: 1,
        };
        let id = c.send(Command::HardwareLogin, &[token.as_bytes()])?;
        let reply = c.recv()?;
        if reply.id != id || reply.status != Some(Status::Ok) {
            return None;
        }
        // A long heartbeat, so a store outage never looks like a silent device.
        let id = c.send(
            Command::Internal,
            &[b"ver", b"1.0", b"h-beat", b"60", b"buff-in", b"1024"],
        )?;
        let reply = c.recv()?;
        (reply.id == id).then_some(c)
    }

    fn send(&mut self, command: Command, args: &[&[u8]]) -> Option<u16> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let mut out = Vec::new();
        frame::encode_args(&mut out, command, id, args).ok()?;
        self.stream.write_all(&out).ok()?;
        Some(id)
    }

    /// The next frame; `None` once the connection is gone.
    fn recv(&mut self) -> Option<Reply> {
        loop {
            if let Ok(frame::Decoded::Frame { frame, consumed }) = frame::decode(&self.buf, 65535) {
                let reply = match frame.payload {
                    frame::Payload::Status(status) => Reply {
                        id: frame.msg_id,
                        status: Some(status),
                        body: Vec::new(),
                    },
                    frame::Payload::Body(body) => Reply {
                        id: frame.msg_id,
                        status: None,
                        body: body.to_vec(),
                    },
                };
                self.buf.drain(..consumed);
                return Some(reply);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn value(writer: usize, n: u64) -> String {
    format!("{writer}:{n}")
}

/// Writes runs of numbered values and acknowledges each run with a sync read, until `stop` is set
/// or the connection dies. Numbering continues from `progress.sent`, so a value is never reused.
fn write_until_stopped(
    port: u16,
    token: &str,
    writer: usize,
    progress: &Progress,
    stop: &AtomicBool,
) {
    let Some(mut conn) = Conn::login(port, token) else {
        return;
    };
    while !stop.load(Ordering::SeqCst) {
        let first = progress.sent.load(Ordering::SeqCst) + 1;
        let last = first + RUN - 1;
        for n in first..=last {
            // `sent` is raised before the bytes leave, so the checker never sees a number the
            // writer has not counted as sent.
            progress.sent.store(n, Ordering::SeqCst);
            if conn
                .send(
                    Command::Hardware,
                    &[b"vw", b"1", value(writer, n).as_bytes()],
                )
                .is_none()
            {
                return;
            }
        }
        let Some(sync) = conn.send(Command::HardwareSync, &[b"vr", b"1"]) else {
            return;
        };
        loop {
            let Some(reply) = conn.recv() else { return };
            if reply.id != sync {
                continue;
            }
            let expected = format!("vw\x001\x00{}", value(writer, last));
            assert_eq!(
                String::from_utf8_lossy(&reply.body),
                expected,
                "the sync after a run must read the run's last value back"
            );
            progress.acked.lock().unwrap().push((first, last));
            break;
        }
        thread::sleep(Duration::from_millis(3));
    }
}

/// Checks every writer's history: all acknowledged numbers present, nothing unsent, nothing
/// malformed. Returns the number of distinct values checked.
fn check(gw: &Gateway, devices: &[(u64, String)], progress: &[Arc<Progress>]) -> usize {
    let mut checked = 0;
    for (writer, ((id, _), p)) in devices.iter().zip(progress).enumerate() {
        let acked = p.acked_runs();
        let history = wait_for("the store answers", Duration::from_secs(20), || {
            gw.admin(&["device", "history", &id.to_string(), "V1", "--from", "0"])
                .ok()
        });
        let sent = p.sent.load(Ordering::SeqCst);
        let mut seen = BTreeSet::new();
        for point in history["points"].as_array().unwrap() {
            let text = point["value"].as_str().unwrap();
            let (w, n) = text
                .split_once(':')
                .unwrap_or_else(|| panic!("malformed value {text:?} in the history"));
            assert_eq!(w, writer.to_string(), "value {text:?} of another writer");
            let n: u64 = n.parse().unwrap();
            assert!(
                (1..=sent).contains(&n),
                "value {text:?} was never written (writer {writer} sent up to {sent})"
            );
            seen.insert(n);
        }
        let missing: Vec<u64> = acked
            .iter()
            .flat_map(|&(first, last)| first..=last)
            .filter(|n| !seen.contains(n))
            .take(10)
            .collect();
        assert!(
            missing.is_empty(),
            "writer {writer}: acknowledged values lost, e.g. {missing:?}"
        );
        checked += seen.len();
    }
    checked
}

fn setup(gw: &Gateway) -> (Vec<(u64, String)>, Vec<Arc<Progress>>) {
    let devices: Vec<(u64, String)> = (0..WRITERS)
        .map(|w| gw.create_device(&format!("writer-{w}")))
        .collect();
    let progress = (0..WRITERS)
        .map(|_| Arc::new(Progress::default()))
        .collect();
    (devices, progress)
}

/// One writer thread per device, each writing until `stop`.
fn spawn_writers(
    port: u16,
    devices: &[(u64, String)],
    progress: &[Arc<Progress>],
    stop: &Arc<AtomicBool>,
) -> Vec<thread::JoinHandle<()>> {
    devices
        .iter()
        .zip(progress)
        .enumerate()
        .map(|(w, ((_, token), p))| {
            let (token, p, stop) = (token.clone(), Arc::clone(p), Arc::clone(stop));
            thread::spawn(move || write_until_stopped(port, &token, w, &p, &stop))
        })
        .collect()
}

#[test]
fn acknowledged_values_survive_store_kills() {
    let started = Instant::now();
    let mut moments = Moments::new();
    let gw = Gateway::start("");
    let (devices, progress) = setup(&gw);
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(gw.plain_port, &devices, &progress, &stop);
    let mut checked = 0;
    for round in 0..STORE_KILL_ROUNDS {
        thread::sleep(moments.millis(100, 600));
        let store = wait_for("a running store", Duration::from_secs(20), || {
            gw.store_pid()
        });
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(store),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_for("the store restarted", Duration::from_secs(20), || {
            gw.store_pid().filter(|&p| p != store)
        });
        checked = check(&gw, &devices, &progress);
        eprintln!("round {round}: store killed, {checked} values checked");
    }
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked: u64 = progress.iter().map(|p| p.acked_count()).sum();
    assert!(
        acked >= (WRITERS as u64) * RUN,
        "the writers got nothing acknowledged"
    );
    checked = checked.max(check(&gw, &devices, &progress));
    eprintln!(
        "{STORE_KILL_ROUNDS} store kills, {checked} values checked, {acked} acknowledged, {:?}",
        started.elapsed()
    );
}

#[test]
fn acknowledged_values_survive_gateway_kills() {
    let started = Instant::now();
    let mut moments = Moments::new();
    let temp = tempfile::tempdir().unwrap();
    let data_dir = temp.path().join("data");
    let mut gw = Gateway::start_in(&data_dir, "");
    let (devices, progress) = setup(&gw);
    let mut checked = 0;
    for round in 0..GATEWAY_KILL_ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = spawn_writers(gw.plain_port, &devices, &progress, &stop);
        thread::sleep(moments.millis(200, 700));
        let store = gw.store_pid();
        gw.signal(nix::sys::signal::Signal::SIGKILL);
        gw.wait(Duration::from_secs(10));
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            w.join().unwrap();
        }
        // The orphaned store sees its stdin close and shuts down cleanly; the next gateway may
        // only start its own store once that one has let go of the database.
        if let Some(store) = store {
            wait_for("the old store to exit", Duration::from_secs(20), || {
                // Gone, or a zombie nobody reaps: either way it holds no lock any more.
                let stat =
                    std::fs::read_to_string(format!("/proc/{store}/stat")).unwrap_or_default();
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next());
                matches!(state, None | Some("Z" | "X")).then_some(())
            });
        }
        drop(gw);
        gw = Gateway::start_in(&data_dir, "");
        checked = check(&gw, &devices, &progress);
        eprintln!("round {round}: gateway killed, {checked} values checked");
    }
    let acked: u64 = progress.iter().map(|p| p.acked_count()).sum();
    assert!(
        acked >= (WRITERS as u64) * RUN,
        "the writers got nothing acknowledged"
    );
    eprintln!(
        "{GATEWAY_KILL_ROUNDS} gateway kills, {checked} values checked, {acked} acknowledged, {:?}",
        started.elapsed()
    );
}
