//! The store dies and the gateway shuts down: a SIGKILLed store is restarted by the gateway while
//! devices stay connected and keep writing, and every value the store acknowledged is still there;
//! SIGINT with connected devices exits 0 and every value written before it survives a restart.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::device::Device;
use portcullis_e2e::{Gateway, wait_for};
use portcullis_protocol::{Command, Status};
use std::time::Duration;

#[test]
fn killed_store_is_restarted_and_devices_stay_connected() {
    let gw = Gateway::start("");
    let (id, token) = gw.create_device("survivor");
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    dev.info(30);
    for i in 0..50 {
        dev.virtual_write(i, &format!("before-{i}"));
    }
    // The sync comes back only after the store has answered: the writes before it are stored.
    let sync = dev.send(Command::HardwareSync, &[b"vr", b"49"]);
    assert_eq!(
        dev.recv(),
        portcullis_e2e::device::Got::Frame {
            command: Command::Hardware,
            id: sync,
            body: b"vw\x0049\x00before-49".to_vec()
        }
    );

    let store = gw.store_pid().expect("the gateway runs a child store");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(store),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Writes while the store is down are queued in the shard and flushed when it is back.
    for i in 50..60 {
        dev.virtual_write(i, &format!("during-{i}"));
    }
    wait_for("a new store process", Duration::from_secs(20), || {
        gw.store_pid().filter(|&p| p != store)
    });
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);

    wait_for(
        "the restarted store answers",
        Duration::from_secs(20),
        || gw.admin(&["device", "get", &id.to_string()]).ok(),
    );
    for i in 0..50u8 {
        assert_eq!(
            gw.pin(id, &format!("V{i}")),
            Some(format!("before-{i}")),
            "acknowledged value V{i} lost"
        );
    }
    wait_for(
        "values written during the outage",
        Duration::from_secs(10),
        || {
            (50..60u8)
                .all(|i| gw.pin(id, &format!("V{i}")) == Some(format!("during-{i}")))
                .then_some(())
        },
    );
    gw.wait_for_log("store link down", Duration::from_secs(1));
    // Presence survived the restart as one live session, however the link replayed it.
    let device = gw.device(id);
    assert_eq!(
        (device["online"].clone(), device["sessions"].clone()),
        (true.into(), 1.into()),
        "{device}"
    );
    drop(dev);
    wait_for(
        "offline after the device left",
        Duration::from_secs(10),
        || (gw.device(id)["sessions"] == 0).then_some(()),
    );
}

#[test]
fn sigint_closes_connections_flushes_writes_and_exits_zero() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let mut gw = Gateway::start_in(&data_dir, "");
    let (id, token) = gw.create_device("flushed");
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    for i in 0..200u16 {
        dev.virtual_write((i % 100) as u8, &format!("v{i}"));
    }
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);
    let status = gw.stop();
    assert!(status.success(), "exit status {status}; log:\n{}", gw.log());
    dev.expect_closed();
    assert!(
        gw.log().contains("every write acknowledged"),
        "{}",
        gw.log()
    );
    drop(gw);

    let gw = Gateway::start_in(&data_dir, "");
    for i in 100..200u16 {
        assert_eq!(gw.pin(id, &format!("V{}", i % 100)), Some(format!("v{i}")));
    }
    assert_eq!(gw.device(id)["online"], false);
}

/// A store that stops answering but keeps its link open (SIGSTOP) costs the gateway bounded
/// memory: pin writes the store has not acknowledged, queued in the shard or on its link, stay
/// within `limits.store_queue_max_writes`; beyond it the oldest unsent ones are dropped and
/// counted, and once the store resumes the newest value is the one stored, even when a sync in
/// the middle of the stall pushed everything the shard held towards the link.
#[test]
fn a_stalled_store_costs_bounded_memory_and_the_newest_values_survive() {
    const BOUND: usize = 1000;
    const WRITES: usize = 6000;
    let gw = Gateway::start(&format!("[limits]\nstore_queue_max_writes = {BOUND}\n"));
    let (id, token) = gw.create_device("stalled");
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    dev.info(60);
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);

    let store = nix::unistd::Pid::from_raw(gw.store_pid().expect("a child store"));
    nix::sys::signal::kill(store, nix::sys::signal::Signal::SIGSTOP).unwrap();
    // SIGSTOP reaches each thread when it next runs: wait until every one is stopped, or a
    // first write could still be acknowledged.
    wait_for("every store thread stopped", Duration::from_secs(5), || {
        let tasks = std::fs::read_dir(format!("/proc/{store}/task")).ok()?;
        tasks
            .filter_map(Result::ok)
            .all(|task| {
                std::fs::read_to_string(task.path().join("stat"))
                    .ok()
                    .and_then(|stat| {
                        stat.rsplit_once(')')
                            .map(|(_, rest)| rest.trim_start().starts_with('T'))
                    })
                    .unwrap_or(false)
            })
            .then_some(())
    });
    let mut mid_sync = None;
    for i in 0..WRITES {
        dev.virtual_write(1, &format!("w{i}"));
        if i == WRITES / 2 {
            // Not answered until the store resumes; its reply is skipped below.
            mid_sync = Some(dev.send(Command::HardwareSync, &[b"vr", b"1"]));
        }
        if i % 500 == 499 {
            // A round trip per step: the shard handles the writes over many loop turns.
            let ping = dev.send(Command::Ping, &[]);
            dev.expect_status(ping, Status::Ok);
        }
    }
    // Every write is held for the store, counted as dropped, or (had the store still answered a
    // first batch) counted as stored.
    let (held, dropped, stored) = wait_for("the shard's counters", Duration::from_secs(10), || {
        let s = gw.scrape();
        let held = s.value("portcullis_telemetry_queue_writes", &[]) as usize;
        let dropped = s.value("portcullis_telemetry_dropped_total", &[]) as usize;
        let stored = s.value("portcullis_pins_stored_total", &[]) as usize;
        (held + dropped + stored == WRITES).then_some((held, dropped, stored))
    });
    nix::sys::signal::kill(store, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(held <= BOUND, "{held} writes held for a stalled store");
    assert!(
        dropped + stored >= WRITES - BOUND,
        "only {dropped} dropped ({stored} stored)"
    );

    // The newest write was never the one dropped: it is what the resumed store has.
    let sync = dev.send(Command::HardwareSync, &[b"vr", b"1"]);
    let reply = loop {
        match dev.recv() {
            portcullis_e2e::device::Got::Frame { id, .. } if Some(id) == mid_sync => continue,
            other => break other,
        }
    };
    assert_eq!(
        reply,
        portcullis_e2e::device::Got::Frame {
            command: Command::Hardware,
            id: sync,
            body: format!("vw\x001\x00w{}", WRITES - 1).into_bytes()
        }
    );
    assert_eq!(gw.pin(id, "V1"), Some(format!("w{}", WRITES - 1)));
}

/// A burst larger than the link's share of `store_queue_max_writes`, arriving in one read while
/// the store is healthy, still reaches the store on its own (in partial batches), not only when a
/// sync forces it out.
#[test]
fn a_burst_larger_than_the_links_share_is_stored_without_a_sync() {
    const BOUND: usize = 1000;
    const WRITES: usize = 1500;
    let gw = Gateway::start(&format!("[limits]\nstore_queue_max_writes = {BOUND}\n"));
    let (id, token) = gw.create_device("bursty");
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    let mut burst = Vec::new();
    for i in 0..WRITES {
        let pin = (i % 10).to_string();
        let value = format!("b{i}");
        portcullis_protocol::frame::encode_args(
            &mut burst,
            Command::Hardware,
            (i % 60_000 + 1) as u16,
            &[b"vw", pin.as_bytes(), value.as_bytes()],
        )
        .unwrap();
    }
    dev.send_raw(&burst).unwrap();
    // Read back through the admin link, not the device: no HARDWARE_SYNC pushes the queue out.
    let last = format!("b{}", WRITES - 1);
    wait_for(
        "the burst's last value stored",
        Duration::from_secs(10),
        || (gw.pin(id, "V9").as_deref() == Some(last.as_str())).then_some(()),
    );
}
