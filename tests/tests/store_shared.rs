//! Two gateways on one store, as `docs/store.md` describes them: one externally managed
//! `portcullis-store`, two real gateways with distinct `[server] node_name`s reaching it over its
//! socket, a device online through each. One gateway is killed and started again: its start-up
//! presence reset ends its own node's sessions (its device shows offline until it logs in again)
//! and leaves the other node's device online. The store logs each link with its node and role,
//! and the metrics scraper's read-only link still gets the store's counters. Every wait is
//! bounded.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::device::Device;
use portcullis_e2e::store::ExternalStore;
use portcullis_e2e::{Gateway, admin_json, wait_for};
use portcullis_protocol::{Command, Status};
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `portcullis admin --config FILE device get ID --json`: the device as the store holds it,
/// through the gateway's configuration (so through the shared store).
fn device(gw: &Gateway, id: u64) -> Value {
    admin_json(
        &["--config".as_ref(), gw.config_path.as_os_str()],
        &["device", "get", &id.to_string()],
    )
    .unwrap()
}

fn online(gw: &Gateway, id: u64) -> bool {
    device(gw, id)["online"] == true
}

fn create_device(gw: &Gateway, name: &str) -> (u64, String) {
    let how = ["--config".as_ref(), gw.config_path.as_os_str()];
    let template = [
        "template", "create", "--org", "1", "--id", "TMPL0001", "--name", "t",
    ];
    if let Err(e) = admin_json(&how, &template) {
        assert!(e.contains("is taken"), "{e}");
    }
    let v = admin_json(
        &how,
        &["device", "create", "--name", name, "--template", "TMPL0001"],
    )
    .unwrap();
    (
        v["id"].as_u64().unwrap(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

/// Logs a device in through `gw` and waits until the store has it online.
fn connect(gw: &Gateway, id: u64, token: &str) -> Device {
    let mut dev = Device::plain(gw.plain_port);
    dev.login(token, Status::Ok);
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);
    wait_for("the device online in the store", WAIT, || {
        online(gw, id).then_some(())
    });
    dev
}

#[test]
fn restarting_one_gateway_leaves_the_other_gateways_devices_online() {
    let dir = tempfile::tempdir().unwrap();
    let store = ExternalStore::start(dir.path(), 0, None);
    let shared = format!(
        "[store]\nsocket = {:?}\n",
        ExternalStore::socket_in(dir.path()).display().to_string()
    );
    let a_dir = dir.path().join("gw-a");
    let mut gw_a = Gateway::start_node_in(&a_dir, "gw-a", &shared);
    let gw_b = Gateway::start_node_in(&dir.path().join("gw-b"), "gw-b", &shared);

    let (on_a, token_a) = create_device(&gw_a, "through-a");
    let (on_b, token_b) = create_device(&gw_b, "through-b");
    let dev_a = connect(&gw_a, on_a, &token_a);
    let mut dev_b = connect(&gw_b, on_b, &token_b);
    assert!(
        online(&gw_b, on_a) && online(&gw_a, on_b),
        "one store, one view"
    );

    // gw-a dies without a goodbye: no offline reaches the store, its session is still "live".
    gw_a.signal(nix::sys::signal::Signal::SIGKILL);
    gw_a.wait(WAIT);
    drop(dev_a);
    assert!(online(&gw_b, on_a), "nobody told the store yet");

    // Its restart resets its own node's sessions, and only those.
    let gw_a = Gateway::start_node_in(&a_dir, "gw-a", &shared);
    assert!(!online(&gw_b, on_a), "gw-a's device went offline");
    let b = device(&gw_a, on_b);
    assert_eq!(
        (b["online"].as_bool(), b["sessions"].as_u64()),
        (Some(true), Some(1)),
        "gw-b's device stays online: {b}"
    );
    // gw-b's session is untouched: it still carries traffic, and the device stays online.
    dev_b.virtual_write(1, "still-here");
    let ping = dev_b.send(Command::Ping, &[]);
    dev_b.expect_status(ping, Status::Ok);
    assert!(online(&gw_a, on_b));

    // The restarted gateway's device comes back when it reconnects.
    let _dev_a = connect(&gw_a, on_a, &token_a);
    assert_eq!(device(&gw_b, on_a)["sessions"].as_u64(), Some(1));

    let log = store.log();
    assert!(
        log.contains("node=gw-a") && log.contains("node=gw-b"),
        "the store logs each link's node: {log}"
    );
    assert!(
        log.contains("role=device traffic (shard 0)") && log.contains("role=admin"),
        "and its role: {log}"
    );
    // The metrics scraper's link holds the read-only role, which may still ask for the counters.
    wait_for("the store's counters in gw-b's metrics", WAIT, || {
        (gw_b.scrape().value("portcullis_store_up", &[]) == 1.0).then_some(())
    });
    assert!(store.log().contains("role=metrics (read-only)"));
}
