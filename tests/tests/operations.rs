//! Operations, end to end with the real binaries: the metrics port (scraped and parsed; values
//! move when devices connect and write; health and readiness; bearer token), certificate hot
//! reload (a replaced certificate is served to new TLS clients while a device connected before
//! keeps writing; a broken file leaves the old certificate in service; SIGHUP reloads when the
//! watcher is off), the security event log, graceful SIGTERM (exits 0 within the drain period,
//! every value written before it is in the store after a restart) and `check-config`.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::device::{Device, client_config};
use portcullis_e2e::{Gateway, bin, json_lines, wait_for};
use portcullis_protocol::{Command, Status};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::ServerName;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn metrics_are_scraped_and_move_when_devices_connect_and_write() {
    let gw = Gateway::start("");
    assert_ne!(gw.metrics_port, 0, "ports.json names the metrics port");
    assert_eq!(gw.http_get("/healthz", None).0, 200);
    wait_for("readyz 200", WAIT, || {
        (gw.http_get("/readyz", None).0 == 200).then_some(())
    });
    let (id, token) = gw.create_device("metered");
    let before = gw.scrape();
    assert!(
        before.value("portcullis_tls_certificate_expiry_days", &[]) > 1.0,
        "the generated certificate is valid for a while"
    );

    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    dev.info(10);
    for value in ["1", "2", "3"] {
        dev.virtual_write(4, value);
    }
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);
    wait_for("V4 stored", WAIT, || {
        (gw.pin(id, "V4").as_deref() == Some("3")).then_some(())
    });
    let after = wait_for("pins counted", WAIT, || {
        let s = gw.scrape();
        (s.value("portcullis_pins_stored_total", &[]) >= 3.0).then_some(s)
    });
    let authenticated = [("transport", "plain"), ("state", "authenticated")];
    assert_eq!(after.value("portcullis_connections", &authenticated), 1.0);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.get(name, labels).unwrap_or(0.0)
    };
    assert_eq!(
        delta("portcullis_device_logins_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        delta(
            "portcullis_messages_received_total",
            &[("command", "hardware")]
        ),
        3.0
    );
    assert_eq!(
        delta("portcullis_messages_received_total", &[("command", "ping")]),
        1.0
    );
    assert!(delta("portcullis_messages_sent_total", &[("command", "response")]) >= 3.0);
    assert!(delta("portcullis_bytes_received_total", &[("transport", "plain")]) > 30.0);
    assert!(delta("portcullis_store_request_duration_seconds_count", &[]) >= 1.0);
    assert!(after.value("portcullis_store_write_batch_pins_count", &[]) >= 1.0);
    assert!(after.value("portcullis_shard_loop_turn_seconds_count", &[]) > 0.0);
    assert_eq!(
        after.value("portcullis_store_link_up", &[]),
        2.0,
        "both shards"
    );
    // The store's own counters: its write groups and the fsyncs that acknowledged the login's
    // presence write (a sync-class write) come through the gateway's scrape.
    assert_eq!(after.value("portcullis_store_up", &[]), 1.0);
    assert!(delta("portcullis_store_write_groups_total", &[]) >= 1.0);
    assert!(after.value("portcullis_store_write_group_requests_count", &[]) >= 1.0);
    assert!(delta("portcullis_store_wal_fsync_seconds_count", &[]) >= 1.0);
    assert!(after.value("portcullis_store_wal_fsync_seconds_sum", &[]) > 0.0);

    // A wrong token is counted by result and as a rejection, and logged as a security event.
    let mut bad = Device::plain(gw.plain_port);
    bad.login("BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", Status::InvalidToken);
    bad.expect_closed();
    dev.virtual_write(4, "4");
    drop(dev);
    let last = wait_for("the device's close counted", WAIT, || {
        let s = gw.scrape();
        (s.value("portcullis_connections", &authenticated) == 0.0).then_some(s)
    });
    assert_eq!(
        last.value(
            "portcullis_device_logins_total",
            &[("result", "invalid_token")]
        ),
        1.0
    );
    assert_eq!(
        last.value(
            "portcullis_connections_rejected_total",
            &[("reason", "invalid_token")]
        ),
        1.0
    );
    gw.wait_for_log("\"kind\":\"invalid_device_token\"", WAIT);
}

#[test]
fn the_metrics_port_can_require_a_bearer_token() {
    let token = "metrics-token-0123456789";
    let gw = Gateway::start(&format!("[metrics]\nbearer_token = \"{token}\"\n"));
    assert_eq!(gw.http_get("/metrics", None).0, 401);
    assert_eq!(
        gw.http_get("/metrics", Some("wrong-token-0123456789")).0,
        401
    );
    let (status, body) = gw.http_get("/metrics", Some(token));
    assert_eq!(status, 200);
    assert!(body.contains("portcullis_connections"), "{body}");
    assert_eq!(gw.http_get("/healthz", None).0, 200, "health stays open");
}

/// A CA and leaf certificates for localhost signed by it.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl TestCa {
    fn new(dir: &Path) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "reload test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        TestCa {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
        }
    }

    fn leaf(&self) -> Leaf {
        let params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// Replaces a file the way deploy tools do: write aside, then rename over it.
    fn replace(path: &Path, content: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn install(&self, leaf: &Leaf) {
        TestCa::replace(&self.key_path(), &leaf.key_pem);
        TestCa::replace(&self.cert_path(), &leaf.cert_pem);
    }

    fn client(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.dir.join("ca.pem"), &rustls::version::TLS13)
    }
}

/// The leaf certificate a new TLS client is served.
fn served_certificate(port: u16, config: Arc<rustls::ClientConfig>) -> Vec<u8> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn gateway_with_certificate(ca: &TestCa, watch_interval_ms: u64) -> Gateway {
    Gateway::start(&format!(
        "[tls]\ncert = {:?}\nkey = {:?}\nwatch_interval_ms = {watch_interval_ms}\n",
        ca.cert_path().display().to_string(),
        ca.key_path().display().to_string()
    ))
}

#[test]
fn a_certificate_replaced_on_disk_is_served_to_new_clients_and_live_devices_keep_writing() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let first = ca.leaf();
    ca.install(&first);
    let gw = gateway_with_certificate(&ca, 100);
    assert_eq!(served_certificate(gw.tls_port, ca.client()), first.der);

    let (id, token) = gw.create_device("long-lived");
    let mut dev = Device::tls(gw.tls_port, ca.client());
    dev.login(&token, Status::Ok);
    dev.info(10);
    dev.virtual_write(1, "before");
    wait_for("V1 before", WAIT, || {
        (gw.pin(id, "V1").as_deref() == Some("before")).then_some(())
    });

    let second = ca.leaf();
    ca.install(&second);
    wait_for("the new certificate served", WAIT, || {
        (served_certificate(gw.tls_port, ca.client()) == second.der).then_some(())
    });
    // The device connected before the swap is still on its session and keeps writing.
    dev.virtual_write(1, "after");
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);
    wait_for("V1 after", WAIT, || {
        (gw.pin(id, "V1").as_deref() == Some("after")).then_some(())
    });
    gw.wait_for_log("\"kind\":\"certificate_reloaded\"", WAIT);

    // A broken certificate file is refused; the second certificate stays in service.
    TestCa::replace(
        &ca.cert_path(),
        "-----BEGIN CERTIFICATE-----\nnot base64!\n",
    );
    gw.wait_for_log("TLS certificate reload refused", WAIT);
    assert_eq!(served_certificate(gw.tls_port, ca.client()), second.der);
    // So is a valid certificate with somebody else's key.
    let third = ca.leaf();
    TestCa::replace(&ca.cert_path(), &third.cert_pem);
    wait_for("the mismatched pair refused twice", WAIT, || {
        let s = gw.scrape();
        (s.value(
            "portcullis_tls_certificate_reloads_total",
            &[("result", "refused")],
        ) >= 2.0)
            .then_some(())
    });
    assert_eq!(served_certificate(gw.tls_port, ca.client()), second.der);
    dev.virtual_write(1, "still");
    wait_for("V1 still", WAIT, || {
        (gw.pin(id, "V1").as_deref() == Some("still")).then_some(())
    });
}

#[test]
fn sighup_reloads_the_certificate_when_the_watcher_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let first = ca.leaf();
    ca.install(&first);
    let gw = gateway_with_certificate(&ca, 0);
    let second = ca.leaf();
    ca.install(&second);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        served_certificate(gw.tls_port, ca.client()),
        first.der,
        "no watcher: nothing changes until SIGHUP"
    );
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the new certificate served after SIGHUP", WAIT, || {
        (served_certificate(gw.tls_port, ca.client()) == second.der).then_some(())
    });
    gw.wait_for_log("configuration reloaded", WAIT);
}

#[test]
fn sigterm_drains_within_the_period_exits_0_and_keeps_every_value() {
    let drain_ms = 1500;
    let extra = format!("[shutdown]\ndrain_ms = {drain_ms}\n");
    let mut gw = Gateway::start(&extra);
    let devices: Vec<(u64, String)> = (0..4)
        .map(|i| gw.create_device(&format!("drain-{i}")))
        .collect();
    let mut connected: Vec<Device> = devices
        .iter()
        .map(|(_, token)| {
            let mut dev = Device::plain(gw.plain_port);
            dev.login(token, Status::Ok);
            dev.info(10);
            dev
        })
        .collect();
    // Writes sent right before the signal, without waiting for them to be stored.
    for (n, dev) in connected.iter_mut().enumerate() {
        for pin in 0..5u8 {
            dev.virtual_write(pin, &format!("{n}-{pin}"));
        }
    }
    let ping = connected[3].send(Command::Ping, &[]);
    connected[3].expect_status(ping, Status::Ok);
    let sent = Instant::now();
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    // Each device notes when the gateway closed it: the drain spreads the closes out.
    let closed_at: Vec<Instant> = std::thread::scope(|scope| {
        let waiters: Vec<_> = connected
            .iter_mut()
            .map(|dev| {
                scope.spawn(move || {
                    dev.expect_closed();
                    Instant::now()
                })
            })
            .collect();
        waiters.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let status = gw.wait(Duration::from_secs(20));
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status}; log:\n{}", gw.log());
    // Drain period plus the linger of the last close and the store flush, with slack for a
    // loaded test machine.
    assert!(
        took < Duration::from_millis(drain_ms + 4000),
        "shutdown took {took:?}"
    );
    // However the 4 connections fell on the 2 shards, a shard closing its share evenly over
    // 1.5 s leaves at least 750 ms between the first close and the last.
    let first = closed_at.iter().min().unwrap();
    let last = closed_at.iter().max().unwrap();
    assert!(
        *last - *first >= Duration::from_millis(500),
        "closes were not spread over the drain period: {:?}",
        *last - *first
    );
    assert!(
        gw.log().contains("every write acknowledged"),
        "{}",
        gw.log()
    );

    let data_dir = gw.data_dir.clone();
    let again = Gateway::start_in(&data_dir, &extra);
    for (n, (id, _)) in devices.iter().enumerate() {
        for pin in 0..5u8 {
            assert_eq!(
                again.pin(*id, &format!("V{pin}")),
                Some(format!("{n}-{pin}")),
                "device {id} V{pin} lost over the restart"
            );
        }
    }
}

#[test]
fn check_config_names_a_typo() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, "[metrics]\nprot = 9100\n").unwrap();
    let out = std::process::Command::new(bin("portcullis"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("prot"), "{err}");
    assert!(err.contains("portcullis.toml"), "{err}");

    std::fs::write(
        &path,
        "[metrics]\nport = 9100\n[shutdown]\ndrain_ms = 2000\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin("portcullis"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What the gateway told a fake systemd on `NOTIFY_SOCKET`, one datagram per entry.
fn notifications(socket: &std::os::unix::net::UnixDatagram) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    out
}

#[test]
fn systemd_hears_ready_watchdog_reloading_and_stopping() {
    let temp = tempfile::tempdir().unwrap();
    let socket_path = temp.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut gw = Gateway::start_with_env(
        &temp.path().join("data"),
        "[shutdown]\ndrain_ms = 200\n",
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            // 600 ms: the gateway pings every 200 ms while its shards keep turning.
            ("WATCHDOG_USEC", "600000"),
        ],
    );
    let mut seen = Vec::new();
    wait_for("READY=1 and watchdog pings", WAIT, || {
        seen.extend(notifications(&socket));
        let pings = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
        (seen.iter().any(|m| m.contains("READY=1")) && pings >= 3).then_some(())
    });
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("RELOADING=1 then READY=1", WAIT, || {
        seen.extend(notifications(&socket));
        let reloading = seen.iter().position(|m| m.contains("RELOADING=1"))?;
        seen[reloading..]
            .iter()
            .any(|m| m.contains("READY=1"))
            .then_some(())
    });
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(gw.wait(WAIT).success());
    seen.extend(notifications(&socket));
    assert!(
        seen.iter().any(|m| m.contains("STOPPING=1")),
        "no STOPPING=1 in {seen:?}"
    );
}

#[test]
fn security_events_go_to_their_own_file_as_json_lines_and_survive_rotation() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("security.log");
    let gw = Gateway::start_in(
        &temp.path().join("data"),
        &format!("[log]\nsecurity = {:?}\n", path.display().to_string()),
    );
    let mut bad = Device::plain(gw.plain_port);
    bad.login("CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC", Status::InvalidToken);
    bad.expect_closed();
    let event = wait_for("the invalid token event", WAIT, || {
        json_lines(&path)
            .into_iter()
            .find(|e| e["kind"] == "invalid_device_token")
    });
    assert_eq!(event["source"], "127.0.0.1");
    assert_eq!(event["target"], "security");
    assert!(event["timestamp"].is_string() && event["reason"].is_string());
    assert!(
        !gw.log().contains("invalid_device_token"),
        "security events stay out of the diagnostics"
    );

    // logrotate moves the file away; SIGHUP makes the gateway write to a new one.
    let rotated = temp.path().join("security.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    gw.wait_for_log("configuration reloaded", WAIT);
    let mut bad = Device::plain(gw.plain_port);
    bad.send_raw(b"GARBAGE!").unwrap();
    bad.expect_closed();
    wait_for("the rejection in the new file", WAIT, || {
        json_lines(&path)
            .iter()
            .any(|e| e["kind"] == "pre_auth_rejected")
            .then_some(())
    });
    assert!(
        json_lines(&rotated)
            .iter()
            .all(|e| e["kind"] != "pre_auth_rejected"),
        "the rotated file gets nothing new"
    );
}
