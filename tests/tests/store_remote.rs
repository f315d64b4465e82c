//! The store as a remote gateway's store, over mutual TLS on loopback: certificates made with
//! `portcullis-store gen-certs`, the real store with `--remote-listen`, the real gateway with
//! `[store] remote`. A device logs in and writes a pin that the admin CLI (also over TLS) reads
//! back; a plaintext connection is refused and logged while the gateway keeps working; the store
//! killed and restarted on the same port is reconnected, and writes made meanwhile arrive. And a
//! store started without remote configuration has no TCP socket at all. Every wait is bounded.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::device::Device;
use portcullis_e2e::store::ExternalStore as Store;
use portcullis_e2e::{Gateway, admin_json, bin, wait_for};
use portcullis_protocol::{Command, Status};
use serde_json::Value;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn gen_certs(dir: &Path) -> PathBuf {
    let certs = dir.join("certs");
    let out = Process::new(bin("portcullis-store"))
        .arg("gen-certs")
        .arg(&certs)
        .args(["--store-name", "127.0.0.1", "--gateway", "gw1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen-certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    certs
}

/// `portcullis admin --config FILE ARGS --json`: the admin CLI reaching the store the way the
/// gateway's configuration says (here: over mutual TLS).
fn admin(gw: &Gateway, args: &[&str]) -> Result<Value, String> {
    admin_json(&["--config".as_ref(), gw.config_path.as_os_str()], args)
}

fn pin(gw: &Gateway, device: u64, name: &str) -> Option<String> {
    let pins = admin(gw, &["device", "pins", &device.to_string()]).ok()?;
    pins.as_array()?
        .iter()
        .find(|p| p["pin"] == name)
        .and_then(|p| p["value"].as_str().map(str::to_owned))
}

#[test]
fn a_gateway_uses_a_remote_store_over_mutual_tls_and_survives_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let certs = gen_certs(dir.path());
    let port = free_port();
    let mut store = Store::start(dir.path(), 0, Some((port, &certs)));

    let gw = Gateway::start(&format!(
        "[store]\nremote = \"127.0.0.1:{port}\"\nremote_ca_file = {:?}\nremote_cert_file = {:?}\nremote_key_file = {:?}\n",
        certs.join("ca.pem").display().to_string(),
        certs.join("gateway-gw1.pem").display().to_string(),
        certs.join("gateway-gw1.key").display().to_string(),
    ));
    assert_eq!(
        gw.store_pid(),
        None,
        "a remote store must not be started as a child"
    );

    admin(
        &gw,
        &[
            "template", "create", "--org", "1", "--id", "TMPL0001", "--name", "far",
        ],
    )
    .unwrap();
    let created = admin(
        &gw,
        &[
            "device",
            "create",
            "--name",
            "far",
            "--template",
            "TMPL0001",
        ],
    )
    .unwrap();
    let (id, token) = (
        created["id"].as_u64().unwrap(),
        created["token"].as_str().unwrap().to_owned(),
    );
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    dev.virtual_write(1, "over-tls");
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);
    wait_for("the pin stored in the remote store", WAIT, || {
        (pin(&gw, id, "V1").as_deref() == Some("over-tls")).then_some(())
    });

    // Plaintext on the TLS port: refused and logged with the peer address, nothing else hurt.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(b"\x00\x00\x00\x05hello").unwrap();
    let mut sink = Vec::new();
    let _ = plain.read_to_end(&mut sink);
    wait_for("the refusal in the store log", WAIT, || {
        let log = store.log();
        (log.contains("remote connection refused") && log.contains("peer=127.0.0.1:")).then_some(())
    });
    dev.virtual_write(2, "after-refusal");
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);
    wait_for("a write after the refusal", WAIT, || {
        (pin(&gw, id, "V2").as_deref() == Some("after-refusal")).then_some(())
    });

    // Kill the store; writes made while it is down are queued by the shard and resent.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(store.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = store.child.wait();
    dev.virtual_write(3, "during-outage");
    gw.wait_for_log("store link down", WAIT);
    store = Store::start(dir.path(), 1, Some((port, &certs)));
    wait_for("the write made during the outage", WAIT, || {
        (pin(&gw, id, "V3").as_deref() == Some("during-outage")).then_some(())
    });
    assert_eq!(pin(&gw, id, "V1").as_deref(), Some("over-tls"));
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);
    assert!(
        store
            .log()
            .contains("remote gateway authenticated (mutual TLS) gateway=gw1"),
        "{}",
        store.log()
    );
    // The link that went down came back up (the write above already proved it carries data).
    wait_for("a shard relinked", WAIT, || {
        let log = gw.log();
        (log.rfind("store link up") > log.rfind("store link down")).then_some(())
    });
}

/// The inodes of the TCP sockets in this network namespace (IPv4 and IPv6).
fn tcp_socket_inodes() -> HashSet<String> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                inodes.insert(inode.to_owned());
            }
        }
    }
    inodes
}

#[test]
fn without_remote_configuration_the_store_has_no_tcp_socket() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::start(dir.path(), 0, None);
    let tcp = tcp_socket_inodes();
    let mut sockets = 0;
    for fd in std::fs::read_dir(format!("/proc/{}/fd", store.pid())).unwrap() {
        let target = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            sockets += 1;
            assert!(
                !tcp.contains(inode),
                "the store holds a TCP socket without remote configuration"
            );
        }
    }
    assert!(
        sockets >= 1,
        "the Unix listener should be among the store's sockets"
    );
}

#[test]
fn a_gateway_certificate_from_another_ca_is_refused_with_reasons_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let certs = gen_certs(dir.path());
    let other = dir.path().join("other");
    let out = Process::new(bin("portcullis-store"))
        .arg("gen-certs")
        .arg(&other)
        .args(["--gateway", "gw1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let port = free_port();
    let store = Store::start(dir.path(), 0, Some((port, &certs)));
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[store]\nremote = \"127.0.0.1:{port}\"\nremote_ca_file = {:?}\nremote_cert_file = {:?}\nremote_key_file = {:?}\n",
            dir.path().join("gw-data").display().to_string(),
            certs.join("ca.pem").display().to_string(),
            other.join("gateway-gw1.pem").display().to_string(),
            other.join("gateway-gw1.key").display().to_string(),
        ),
    )
    .unwrap();
    let out = Process::new(bin("portcullis"))
        .args(["admin", "--config"])
        .arg(&config)
        .args(["device", "list", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "served with a foreign certificate");
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
    wait_for("the refusal in the store log", WAIT, || {
        let log = store.log();
        (log.contains("remote connection refused") && log.contains("UnknownIssuer")).then_some(())
    });
}
