//! Question: how fast does the store take telemetry and answer point reads through its link with
//! group commit, and how close is that to what RocksDB alone does on this machine? Targets (issue
//! 3): ≥ 150,000 pin writes/s with p99 write-to-acknowledged latency under 15 ms, ≥ 150,000 point
//! reads/s; also 100,000 pipelined device creations (sync class, one link) in well under a minute.
//!
//! One run measures, in order:
//! 1. raw RocksDB: batches of `PINS_PER_REQUEST` pin puts through `RocksEngine` (buffered, plus a
//!    WAL fsync every 100 ms, as the store does), writes/s;
//! 2. the real `portcullis-store` binary: `LINKS` links (like gateway shards) each pipelining
//!    `WritePins` requests of `PINS_PER_REQUEST` writes, `WINDOW` requests in flight per link;
//!    writes/s and per-request latency from send to acknowledgement (p50/p99);
//! 3. point reads: `ReadPins` of one pin of a random device, pipelined the same way; reads/s;
//! 4. provisioning: `PROVISION` `CreateDevice` requests (sync class: each acknowledged only after
//!    a WAL fsync) pipelined on one link, the load generator's `provision` scenario; seconds.
//!
//! Run: `cargo bench -p portcullis-bench --bench store_ingest` (release), or, without a release
//! build, the binary `cargo build --workspace --all-targets` leaves in `target/debug/deps/
//! store_ingest-*` (dependencies, RocksDB included, are optimized there; our crates are not).
//! Sizes: `INGEST_WRITES` (default 400000), `INGEST_WINDOW` (default 64) and `PROVISION`
//! (default 100000).

#![allow(clippy::unwrap_used)]

use portcullis_protocol::authz::OrgId;
use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{
    Acting, ClientHello, ClientRole, NodeName, Party, PinWrite, ReplyEnvelope, Request,
    RequestEnvelope, ServerHello, TemplateId, decode_frame, encode_frame,
};
use portcullis_storage::{Cf, Durability, Engine, RocksEngine, WriteBatch};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const LINKS: usize = 2;
/// Write requests in flight per link by default (`INGEST_WINDOW`): deep enough to saturate the
/// store; latency then mostly measures the queue, so a shallow window shows the store's own.
const WINDOW: usize = 64;
const PINS_PER_REQUEST: usize = 100;
const DEVICES: u64 = 1000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

fn raw_rocksdb(writes: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let engine = RocksEngine::open(dir.path()).unwrap();
    let started = Instant::now();
    let mut last_sync = Instant::now();
    let mut i = 0u64;
    while (i as usize) < writes {
        let mut batch = WriteBatch::new();
        for _ in 0..PINS_PER_REQUEST {
            let mut key = (i % DEVICES).to_be_bytes().to_vec();
            key.extend_from_slice(&[b'v', (i % 64) as u8]);
            batch.put(Cf::Pins, key, format!("{i}").into_bytes());
            i += 1;
        }
        engine.write(batch, Durability::Buffered).unwrap();
        if last_sync.elapsed() >= Duration::from_millis(100) {
            engine.sync_wal().unwrap();
            last_sync = Instant::now();
        }
    }
    engine.sync_wal().unwrap();
    i as f64 / started.elapsed().as_secs_f64()
}

struct Store {
    child: Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Store {
    fn start() -> Store {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("store.sock");
        let child = Command::new(portcullis_e2e::bin("portcullis-store"))
            .arg("--data-dir")
            .arg(dir.path().join("db"))
            .arg("--socket")
            .arg(&socket)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        portcullis_e2e::wait_for("the store socket", Duration::from_secs(30), || {
            UnixStream::connect(&socket).ok()
        });
        Store {
            child,
            socket,
            _dir: dir,
        }
    }

    fn link(&self) -> UnixStream {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        let mut out = Vec::new();
        encode_frame(
            &ClientHello::new(NodeName::from_static("bench"), ClientRole::Admin),
            &mut out,
        )
        .unwrap();
        s.write_all(&out).unwrap();
        let mut buf = Vec::new();
        let hello: ServerHello = read_one(&mut s, &mut buf);
        assert!(matches!(hello, ServerHello::Accepted { .. }));
        s
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_one<T: serde::de::DeserializeOwned>(s: &mut UnixStream, buf: &mut Vec<u8>) -> T {
    loop {
        if let Some((msg, used)) = decode_frame::<T>(buf).unwrap() {
            buf.drain(..used);
            return msg;
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "the store closed the link");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `requests` on `link` with at most `window` in flight; returns each one's latency.
fn pipeline(link: UnixStream, requests: Vec<Request>, window: usize) -> Vec<Duration> {
    let n = requests.len();
    let (sent_tx, sent_rx) = mpsc::sync_channel::<Instant>(window);
    let mut writer = link.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut out = Vec::new();
        for (id, request) in requests.into_iter().enumerate() {
            out.clear();
            encode_frame(
                &RequestEnvelope {
                    id: id as u64,
                    // Device traffic acts for nobody; provisioning acts as the operator, as the
                    // admin CLI does.
                    acting: needs_operator(&request).then(|| Acting {
                        party: Party::Operator,
                        from: "local".into(),
                    }),
                    request,
                },
                &mut out,
            )
            .unwrap();
            // Blocks while `window` requests are unanswered.
            sent_tx.send(Instant::now()).unwrap();
            writer.write_all(&out).unwrap();
        }
    });
    let mut reader = link;
    let mut buf = Vec::new();
    let mut latencies = Vec::with_capacity(n);
    for id in 0..n {
        let reply: ReplyEnvelope = read_one(&mut reader, &mut buf);
        let sent = sent_rx.recv().unwrap();
        latencies.push(sent.elapsed());
        assert_eq!(reply.id, id as u64);
        assert!(reply.result.is_ok(), "{:?}", reply.result);
    }
    sender.join().unwrap();
    latencies
}

fn run_links(store: &Store, per_link: Vec<Vec<Request>>, window: usize) -> (f64, Vec<Duration>) {
    let links: Vec<UnixStream> = per_link.iter().map(|_| store.link()).collect();
    let started = Instant::now();
    let handles: Vec<_> = links
        .into_iter()
        .zip(per_link)
        .map(|(link, reqs)| thread::spawn(move || pipeline(link, reqs, window)))
        .collect();
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    (secs, all)
}

fn needs_operator(request: &Request) -> bool {
    matches!(
        request,
        Request::CreateDevice { .. } | Request::CreateTemplate { .. }
    )
}

fn template() -> TemplateId {
    TemplateId::parse("TMPLBENCH").unwrap()
}

fn create(n: u64) -> Request {
    let mut token_hash = [0u8; 32];
    token_hash[..8].copy_from_slice(&n.to_be_bytes());
    Request::CreateDevice {
        org: OrgId::ROOT,
        template: template(),
        owner: None,
        name: format!("dev-{n}"),
        token_hash,
    }
}

fn main() {
    let writes = env_usize("INGEST_WRITES", 400_000);
    let provision = env_usize("PROVISION", 100_000);
    let window = env_usize("INGEST_WINDOW", WINDOW).max(1);

    let raw = raw_rocksdb(writes);
    println!(
        "raw RocksDB batched pin writes: {raw:.0}/s ({writes} writes, batches of {PINS_PER_REQUEST})"
    );

    let store = Store::start();
    let setup: Vec<Request> = std::iter::once(Request::CreateTemplate {
        org: OrgId::ROOT,
        id: template(),
        name: "bench".into(),
        datastreams: Vec::new(),
    })
    .chain((1..=DEVICES).map(create))
    .collect();
    run_links(&store, vec![setup], 1024);

    let now_ms = 1_700_000_000_000u64;
    let requests_per_link = writes / PINS_PER_REQUEST / LINKS;
    let per_link: Vec<Vec<Request>> = (0..LINKS)
        .map(|l| {
            (0..requests_per_link)
                .map(|r| Request::WritePins {
                    writes: (0..PINS_PER_REQUEST)
                        .map(|i| {
                            let n = ((l * requests_per_link + r) * PINS_PER_REQUEST + i) as u64;
                            PinWrite {
                                device: 1 + n % DEVICES,
                                pin: PinAddr::new(PinKind::Virtual, (n % 64) as u8),
                                value: n.to_string().into_bytes(),
                                at_ms: now_ms + n,
                            }
                        })
                        .collect(),
                })
                .collect()
        })
        .collect();
    let (secs, lat) = run_links(&store, per_link, window);
    let total = (requests_per_link * LINKS * PINS_PER_REQUEST) as f64;
    let rate = total / secs;
    println!(
        "store pin writes over {LINKS} links, {window} requests in flight each: {rate:.0}/s; per request of {PINS_PER_REQUEST}: p50 {:?}, p99 {:?} (send to acknowledged = in the WAL; fsynced within 100 ms)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!("ratio store / raw RocksDB: {:.2}", rate / raw);

    let reads_per_link = writes / LINKS;
    let per_link: Vec<Vec<Request>> = (0..LINKS)
        .map(|l| {
            (0..reads_per_link)
                .map(|r| {
                    let n = (l * reads_per_link + r) as u64 * 7919;
                    Request::ReadPins {
                        device: 1 + n % DEVICES,
                        pins: Some(vec![PinAddr::new(PinKind::Virtual, (n % 64) as u8)]),
                    }
                })
                .collect()
        })
        .collect();
    let (secs, lat) = run_links(&store, per_link, 1024);
    println!(
        "store point reads over {LINKS} links: {:.0}/s; p50 {:?}, p99 {:?}",
        (reads_per_link * LINKS) as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    let creations: Vec<Request> = (DEVICES + 1..=DEVICES + provision as u64)
        .map(create)
        .collect();
    let (secs, lat) = run_links(&store, vec![creations], 1024);
    println!(
        "provisioning {provision} devices pipelined on one link (each acknowledged after its WAL fsync): {secs:.1} s, {:.0}/s; p50 {:?}, p99 {:?}",
        provision as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
}
