//! End-to-end: the real `portcullis-loadgen` binary against the real `portcullis` gateway (which
//! starts the real `portcullis-store`), at a few hundred devices so each scenario takes seconds.
//! Provision through the store socket, then connect (plain and TLS mixed, split over two worker
//! processes), ping, telemetry with the store read back, a client-side storm, a storm across a
//! real gateway restart, compare and index — each checked on its JSON report.
//!
//! The gateway binaries are looked up next to this test's target directory (`cargo build
//! --workspace --bins` puts them there) or in `PORTCULLIS_BIN_DIR`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOADGEN: &str = env!("CARGO_BIN_EXE_portcullis-loadgen");

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PORTCULLIS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn gateway_bin() -> PathBuf {
    let path = bin_dir().join("portcullis");
    assert!(
        path.exists() && bin_dir().join("portcullis-store").exists(),
        "{} (and portcullis-store) missing: run `cargo build --workspace --bins` first or set PORTCULLIS_BIN_DIR",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Gateway {
    child: Option<Child>,
    data_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Gateway {
    /// Starts `portcullis serve` on fixed ports (so a restart keeps them) in `dir`.
    fn start(dir: &Path, plain: u16, tls: u16) -> Gateway {
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let config = dir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = {:?}\n[server]\nshards = 2\nbind_address = \"127.0.0.1\"\ntls_port = {tls}\n\
                 tls_fallback_port = {tls}\nplain_port = {plain}\nplain_fallback_port = {plain}\n\
                 # Every simulated device comes from loopback: lift the per-source admission limits.\n\
                 [admission]\nmax_connections_per_ip = 100000\naccept_rate_per_ip = 100000\n\
                 accept_burst_per_ip = 100000\n\
                 # Closed-loop scenarios send faster than the per-device message quota: off.\n\
                 [limits]\ndevice_messages_per_sec = 0\n\
                 # Tests run side by side: no fixed metrics port.\n\
                 [metrics]\nport = 0\n",
                data_dir.display().to_string()
            ),
        )
        .unwrap();
        let mut gw = Gateway {
            child: None,
            data_dir,
            config,
            log: dir.join("gateway.log"),
        };
        gw.spawn();
        gw
    }

    fn spawn(&mut self) {
        let ports = self.data_dir.join("ports.json");
        let _ = std::fs::remove_file(&ports);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(gateway_bin())
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ports.exists() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gateway exited at start ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "gateway did not stop");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- gateway log ----\n{}", self.log_text());
        }
    }
}

/// Runs the load generator to completion (bounded) and returns its stdout.
fn loadgen(args: &[&str]) -> String {
    let out = run_bounded(Command::new(LOADGEN).args(args), Duration::from_secs(120));
    assert!(
        out.0,
        "portcullis-loadgen {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        out.1, out.2
    );
    out.1
}

fn run_bounded(cmd: &mut Command, limit: Duration) -> (bool, String, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("portcullis-loadgen ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.success(), out.join().unwrap(), err.join().unwrap())
}

fn report(prefix: &Path) -> Value {
    let text = std::fs::read_to_string(prefix.with_extension("json")).unwrap();
    let html = std::fs::read_to_string(prefix.with_extension("html")).unwrap();
    assert!(html.contains("<svg"), "dashboard has charts");
    serde_json::from_str(&text).unwrap()
}

fn assert_no_failures(r: &Value) {
    assert_eq!(
        r["result"]["failed"], 0,
        "failures: {}",
        r["result"]["failures"]
    );
    assert_eq!(r["result"]["failures"], serde_json::json!({}));
}

#[test]
fn scenarios_against_the_real_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), free_port(), free_port());
    let data = gw.data_dir.to_str().unwrap().to_owned();
    let tokens = dir.path().join("tokens.txt");
    let tokens_s = tokens.to_str().unwrap();
    let pid = gw.pid().to_string();

    let out = loadgen(&[
        "provision",
        "--data-dir",
        &data,
        "--count",
        "300",
        "--tokens",
        tokens_s,
        "--batch",
        "128",
    ]);
    assert!(out.contains("created 300 devices"), "{out}");
    let lines: Vec<String> = std::fs::read_to_string(&tokens)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 300);

    // Connect: half TLS, split over two worker processes by a per-process cap.
    let prefix = dir.path().join("connect");
    loadgen(&[
        "connect",
        "--tokens",
        tokens_s,
        "--data-dir",
        &data,
        "--tls-percent",
        "50",
        "--login-rate",
        "1000",
        "--hold",
        "1",
        "--gateway-pid",
        &pid,
        "--per-process",
        "150",
        "--settle-ms",
        "200",
        "--out",
        prefix.to_str().unwrap(),
    ]);
    let r = report(&prefix);
    assert_no_failures(&r);
    assert_eq!(r["setup"]["worker_processes"], 2);
    assert_eq!(r["result"]["online_at_measure"], 300);
    assert_eq!(r["result"]["counts"]["logins_ok"], 300);
    assert_eq!(r["latency_ms"]["login"]["count"], 300);
    assert_eq!(r["latency_ms"]["connect"]["count"], 300);
    assert_eq!(r["result"]["counts"]["disconnects"], 0);
    assert!(
        r["memory"]["gateway_bytes_per_connection"].is_number(),
        "{}",
        r["memory"]
    );
    assert!(r["cpu"]["logins_per_gateway_cpu_s"].as_f64().unwrap() > 0.0);

    // Ping: 200 devices, one PING in flight each, spread over two loopback source addresses.
    let prefix = dir.path().join("ping");
    loadgen(&[
        "ping",
        "--source-addrs",
        "2",
        "--tokens",
        tokens_s,
        "--devices",
        "200",
        "--data-dir",
        &data,
        "--duration",
        "2",
        "--settle-ms",
        "0",
        "--out",
        prefix.to_str().unwrap(),
    ]);
    let r = report(&prefix);
    assert_no_failures(&r);
    assert_eq!(
        r["setup"]["source_addresses"],
        serde_json::json!(["127.0.0.2", "127.0.0.3"])
    );
    let pings = r["result"]["counts"]["pings_ok"].as_u64().unwrap();
    assert!(pings > 200, "only {pings} pings");
    assert_eq!(r["latency_ms"]["ping"]["count"].as_u64().unwrap(), pings);
    assert!(r["result"]["rates"]["pings"].as_f64().unwrap() > 0.0);

    // Telemetry: every write stored, proven by reading the store back.
    let prefix = dir.path().join("telemetry");
    loadgen(&[
        "telemetry",
        "--tokens",
        tokens_s,
        "--devices",
        "200",
        "--data-dir",
        &data,
        "--tls-percent",
        "25",
        "--duration",
        "2",
        "--rate",
        "5",
        "--sample-every",
        "2",
        "--settle-ms",
        "0",
        "--out",
        prefix.to_str().unwrap(),
    ]);
    let r = report(&prefix);
    assert_no_failures(&r);
    let sent = r["result"]["counts"]["writes_sent"].as_u64().unwrap();
    assert!(sent >= 200 * 5 * 2 * 9 / 10, "sent only {sent}");
    assert_eq!(r["stored"]["writes_sent"].as_u64().unwrap(), sent);
    assert_eq!(
        r["stored"]["writes_stored"].as_u64().unwrap(),
        sent,
        "{}",
        r["stored"]
    );
    assert_eq!(r["stored"]["devices_complete"], 200);
    assert!(r["latency_ms"]["write"]["count"].as_u64().unwrap() >= sent / 2 - 200);

    // Storm from this side: everyone drops and comes back.
    let prefix = dir.path().join("storm");
    loadgen(&[
        "storm",
        "--tokens",
        tokens_s,
        "--devices",
        "200",
        "--data-dir",
        &data,
        "--tls-percent",
        "50",
        "--timeout",
        "30",
        "--settle-ms",
        "0",
        "--out",
        prefix.to_str().unwrap(),
    ]);
    let r = report(&prefix);
    assert_no_failures(&r);
    assert!(r["result"]["storm_all_back_s"].as_f64().unwrap() > 0.0);
    assert_eq!(r["latency_ms"]["reconnect"]["count"], 200);
    assert_eq!(r["result"]["counts"]["logins_ok"], 400);

    let table = loadgen(&[
        "compare",
        dir.path().join("connect.json").to_str().unwrap(),
        dir.path().join("storm.json").to_str().unwrap(),
    ]);
    assert!(table.contains("login p99 ms"), "{table}");
    let out = loadgen(&["index", dir.path().to_str().unwrap()]);
    assert!(out.contains("4 reports indexed"), "{out}");
    let index = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(index.contains("href=\"telemetry.html\""));
}

/// `fanout` against the real app WebSocket API: a user created with the admin CLI, apps over
/// TLS watching every device (some devices by two apps), and every write arriving at every
/// subscriber.
#[test]
fn fanout_delivers_every_write_to_every_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(dir.path(), free_port(), free_port());
    let data = gw.data_dir.to_str().unwrap().to_owned();
    let tokens = dir.path().join("tokens.txt");
    let tokens_s = tokens.to_str().unwrap();
    loadgen(&[
        "provision",
        "--data-dir",
        &data,
        "--count",
        "60",
        "--tokens",
        tokens_s,
    ]);
    let created = Command::new(gateway_bin())
        .args(["admin", "--data-dir", &data, "user", "create"])
        .args([
            "--email",
            "bench@example.com",
            "--org",
            "1",
            "--role",
            "staff",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, created["password"].as_str().unwrap()).unwrap();

    let prefix = dir.path().join("fanout");
    let ca = gw.data_dir.join("tls").join("ca.pem");
    loadgen(&[
        "fanout",
        "--tokens",
        tokens_s,
        "--devices",
        "60",
        "--data-dir",
        &data,
        "--apps",
        "3",
        // 3 x 30 = 90 subscriptions over 60 devices: half of them have two subscribers.
        "--subscriptions-per-app",
        "30",
        "--app-tls",
        "--ca",
        ca.to_str().unwrap(),
        "--email",
        "bench@example.com",
        "--password-file",
        password_file.to_str().unwrap(),
        "--rate",
        "5",
        "--duration",
        "2",
        "--settle-ms",
        "0",
        "--out",
        prefix.to_str().unwrap(),
    ]);
    let r = report(&prefix);
    assert_no_failures(&r);
    let f = &r["fanout"];
    assert_eq!(f["subscribers_per_device_min"], 1, "{f}");
    assert_eq!(f["subscribers_per_device_max"], 2, "{f}");
    let expected = f["events_expected"].as_u64().unwrap();
    assert!(expected >= 60 * 5 * 2 * 3 / 2 * 9 / 10, "{f}");
    assert_eq!(f["events_received"].as_u64().unwrap(), expected, "{f}");
    assert_eq!(
        r["latency_ms"]["end_to_end"]["count"].as_u64().unwrap(),
        expected
    );
    assert_eq!(
        r["result"]["counts"]["apps_logged_in"], 3,
        "{}",
        r["result"]
    );
}

#[test]
fn storm_across_a_gateway_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(dir.path(), free_port(), free_port());
    let data = gw.data_dir.to_str().unwrap().to_owned();
    let tokens = dir.path().join("tokens.txt");
    loadgen(&[
        "provision",
        "--data-dir",
        &data,
        "--count",
        "200",
        "--tokens",
        tokens.to_str().unwrap(),
    ]);
    let prefix = dir.path().join("restart");
    let mut storm = Command::new(LOADGEN)
        .args([
            "storm",
            "--trigger",
            "server",
            "--timeout",
            "60",
            "--tls-percent",
            "50",
            "--settle-ms",
            "0",
        ])
        .args([
            "--tokens",
            tokens.to_str().unwrap(),
            "--data-dir",
            &data,
            "--out",
        ])
        .arg(&prefix)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the measured part (every device online), then restart the gateway.
    let stderr = storm.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("progress");
        if line.contains("measure") {
            break;
        }
    }
    gw.stop();
    std::thread::sleep(Duration::from_millis(300));
    gw.spawn();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = storm.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "storm did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let r = report(&prefix);
    assert_no_failures(&r);
    let all_back = r["result"]["storm_all_back_s"].as_f64().unwrap();
    assert!(all_back > 0.0, "{}", r["result"]);
    // Counted from the new gateway's first login, which leaves out the drain and the restart.
    let after_return = r["result"]["storm_back_after_return_s"].as_f64().unwrap();
    assert!((0.0..all_back).contains(&after_return), "{}", r["result"]);
    assert_eq!(r["latency_ms"]["reconnect"]["count"], 200);
    assert_eq!(r["result"]["counts"]["disconnects"], 200);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.txt");
    std::fs::write(&tokens, "1 not-a-token\n").unwrap();
    let (ok, _, err) = run_bounded(
        Command::new(LOADGEN).args([
            "connect",
            "--plain-port",
            "1",
            "--tokens",
            tokens.to_str().unwrap(),
        ]),
        Duration::from_secs(10),
    );
    assert!(!ok);
    assert!(
        err.contains("line 1") && err.contains("32 base64url"),
        "{err}"
    );
    let (ok, _, err) = run_bounded(
        Command::new(LOADGEN).args([
            "provision",
            "--count",
            "1",
            "--tokens",
            tokens.to_str().unwrap(),
        ]),
        Duration::from_secs(10),
    );
    assert!(!ok);
    assert!(err.contains("--data-dir"), "{err}");

    // Seconds that `Duration` cannot hold are refused by name, not a panic.
    let good = dir.path().join("good.txt");
    std::fs::write(&good, format!("1 {}\n", "A".repeat(32))).unwrap();
    for (flag, value) in [
        ("--login-timeout", "inf"),
        ("--ramp-timeout", "-1"),
        ("--ramp-timeout", "NaN"),
        ("--ramp-timeout", "1e300"),
    ] {
        let (ok, _, err) = run_bounded(
            Command::new(LOADGEN).args([
                "connect",
                "--plain-port",
                "1",
                "--tokens",
                good.to_str().unwrap(),
                &format!("{flag}={value}"),
            ]),
            Duration::from_secs(10),
        );
        assert!(!ok, "{flag} {value} accepted");
        assert!(
            err.contains(flag) && !err.contains("panicked"),
            "{flag} {value}: {err}"
        );
    }
}
