//! The device protocol end to end over plain TCP, against the real gateway and store: login,
//! info, ping, writes stored without acknowledgement, sync with the request's id, second login,
//! unknown commands, wrong tokens, garbage, and the login and heartbeat deadlines.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::device::{Device, Got};
use portcullis_e2e::{Gateway, wait_for};
use portcullis_protocol::{Command, Status};
use std::time::{Duration, Instant};

#[test]
fn login_write_sync_and_read_back() {
    let gw = Gateway::start("");
    let (id, token) = gw.create_device("kitchen");
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    dev.info(10);
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);

    dev.virtual_write(5, "42");
    dev.send(Command::Hardware, &[b"vw", b"6", b"1", b"2"]);
    // Writes are not acknowledged; the next reply is the PING's.
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);

    let sync = dev.send(Command::HardwareSync, &[b"vr", b"5"]);
    assert_eq!(
        dev.recv(),
        Got::Frame {
            command: Command::Hardware,
            id: sync,
            body: b"vw\x005\x0042".to_vec()
        }
    );

    wait_for("V5 in the store", Duration::from_secs(5), || {
        (gw.pin(id, "V5").as_deref() == Some("42")).then_some(())
    });
    let device = gw.device(id);
    assert_eq!(device["online"], true, "{device}");
    assert_eq!(device["info"]["heartbeat_secs"], 10, "{device}");

    // A second login on the same connection gets ALREADY_REGISTERED; the session stays usable.
    dev.login(&token, Status::AlreadyRegistered);
    // Unknown and malformed commands get ILLEGAL_COMMAND and the stream stays in step.
    let bad = dev.send(Command::Unknown(99), &[b"x"]);
    dev.expect_status(bad, Status::IllegalCommand);
    let bad = dev.send(Command::Hardware, &[b"vw", b"999", b"1"]);
    dev.expect_status(bad, Status::IllegalCommand);
    let ping = dev.send(Command::Ping, &[]);
    dev.expect_status(ping, Status::Ok);

    // A property is stored and answered.
    let prop = dev.send(Command::Property, &[b"5", b"label", b"Temp"]);
    dev.expect_status(prop, Status::Ok);
    // An unknown property name is refused (each name would be a stored row), the session goes on.
    let prop = dev.send(Command::Property, &[b"5", b"p17", b"x"]);
    dev.expect_status(prop, Status::IllegalCommandBody);

    // Reconnect: the value is replayed on sync of everything.
    drop(dev);
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    let sync = dev.send(Command::HardwareSync, &[]);
    let mut got = vec![dev.recv(), dev.recv()];
    got.sort_by_key(|g| format!("{g:?}"));
    assert_eq!(
        got,
        vec![
            Got::Frame {
                command: Command::Hardware,
                id: sync,
                body: b"vw\x005\x0042".to_vec()
            },
            Got::Frame {
                command: Command::Hardware,
                id: sync,
                body: b"vw\x006\x001\x002".to_vec()
            },
        ]
    );
}

#[test]
fn wrong_tokens_are_refused_and_closed() {
    let gw = Gateway::start("");
    // Plausible but unknown token: the store says no.
    let mut dev = Device::plain(gw.plain_port);
    dev.login("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Status::InvalidToken);
    dev.expect_closed();
    // Wrong length: refused without asking the store.
    let mut dev = Device::plain(gw.plain_port);
    dev.login("short", Status::InvalidToken);
    dev.expect_closed();
    // Legacy login command 2 with a good token works.
    let (_, token) = gw.create_device("legacy");
    let mut dev = Device::plain(gw.plain_port);
    let id = dev.send(Command::Login, &[token.as_bytes()]);
    dev.expect_status(id, Status::Ok);
    gw.wait_for_log("invalid device token", Duration::from_secs(5));
}

#[test]
fn non_login_first_frames_and_garbage_are_closed_without_disturbing_others() {
    let gw = Gateway::start("");
    let (id, token) = gw.create_device("steady");
    let mut good = Device::plain(gw.plain_port);
    good.login(&token, Status::Ok);
    good.info(10);

    // A PING before login: closed.
    let mut early = Device::plain(gw.plain_port);
    early.send(Command::Hardware, &[b"vw", b"1", b"1"]);
    early.expect_closed();
    // Random bytes: closed.
    let mut garbage = Device::plain(gw.plain_port);
    garbage
        .send_raw(b"\xff\xfe\xfd\xfc\xfb\xfa garbage")
        .unwrap();
    garbage.expect_closed();
    // An oversize login frame (length over the pre-login maximum): closed.
    let mut oversize = Device::plain(gw.plain_port);
    oversize.send_raw(&[29, 0, 1, 0x40, 0x00]).unwrap();
    oversize.expect_closed();
    // A logged-in device sending an oversize frame is closed too...
    let (_, token2) = gw.create_device("noisy");
    let mut noisy = Device::plain(gw.plain_port);
    noisy.login(&token2, Status::Ok);
    noisy.send_raw(&[20, 0, 9, 0xff, 0xff]).unwrap();
    noisy.expect_closed();

    // ...while the good device keeps working.
    good.virtual_write(1, "still-here");
    let ping = good.send(Command::Ping, &[]);
    good.expect_status(ping, Status::Ok);
    wait_for("V1 stored", Duration::from_secs(5), || {
        (gw.pin(id, "V1").as_deref() == Some("still-here")).then_some(())
    });
    gw.wait_for_log("first frame is not a login", Duration::from_secs(5));
    gw.wait_for_log("first bytes match no protocol", Duration::from_secs(5));
    gw.wait_for_log("exceeds the limit", Duration::from_secs(5));
}

#[test]
fn login_deadline_and_heartbeat_timeout_close_silent_connections() {
    let gw = Gateway::start("[limits]\nlogin_timeout_ms = 1000\n");
    let (id, token) = gw.create_device("sleepy");

    // Connects and sends nothing: closed at the login deadline.
    let mut silent = Device::plain(gw.plain_port);
    let start = Instant::now();
    silent.expect_closed();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );

    // Logs in, announces h-beat 1, then stays silent: closed after ceil(2.3 × 1) = 3 s.
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    dev.info(1);
    let start = Instant::now();
    dev.expect_closed();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(2800) && waited < Duration::from_secs(6),
        "closed after {waited:?}"
    );
    gw.wait_for_log("heartbeat timeout", Duration::from_secs(5));
    wait_for("device offline", Duration::from_secs(5), || {
        (gw.device(id)["online"] == false).then_some(())
    });

    // A device that keeps pinging within its heartbeat stays connected past the timeout.
    let mut alive = Device::plain(gw.plain_port);
    alive.login(&token, Status::Ok);
    alive.info(1);
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        let ping = alive.send(Command::Ping, &[]);
        alive.expect_status(ping, Status::Ok);
    }
}

/// The gateway skips the read that would only report `WouldBlock` after a short read; a peer's
/// last frame arriving together with its FIN must still be stored and the FIN seen at once, not
/// at the heartbeat deadline.
#[test]
fn a_last_write_sent_with_the_fin_is_stored_and_the_device_goes_offline_at_once() {
    let gw = Gateway::start("");
    let (id, token) = gw.create_device("porch");
    for round in 0..5 {
        let mut dev = Device::plain(gw.plain_port);
        dev.login(&token, Status::Ok);
        dev.info(60);
        let ping = dev.send(Command::Ping, &[]);
        dev.expect_status(ping, Status::Ok);
        let value = format!("last-{round}");
        let mut frame = Vec::new();
        portcullis_protocol::frame::encode_args(
            &mut frame,
            Command::Hardware,
            99,
            &[b"vw", b"7", value.as_bytes()],
        )
        .unwrap();
        dev.send_raw_then_fin(&frame);
        // Both within seconds; the heartbeat deadline of a 60 s heartbeat is minutes away.
        wait_for("the last value stored", Duration::from_secs(5), || {
            (gw.pin(id, "V7").as_deref() == Some(value.as_str())).then_some(())
        });
        wait_for("the device offline", Duration::from_secs(5), || {
            (gw.device(id)["online"] == false).then_some(())
        });
    }
}

/// The per-connection message quota (docs/reference/blynk-protocol.md §1.10) end to end: a device
/// sending faster than its quota has the excess frames dropped whole, is told once with
/// QUOTA_LIMIT carrying the first dropped frame's id, stays connected, and is served again once
/// its bucket refills.
#[test]
fn a_device_over_its_message_quota_is_told_once_and_its_excess_frames_are_dropped() {
    const BURST: usize = 20;
    // One message a second refills the bucket: the 60 frames below are sent in far less time,
    // so exactly the burst passes however slow the machine is.
    let gw = Gateway::start("[limits]\ndevice_messages_per_sec = 1\ndevice_message_burst = 20\n");
    let (id, token) = gw.create_device("chatty");
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    let ids: Vec<u16> = (0..3 * BURST)
        .map(|i| dev.send(Command::Hardware, &[b"vw", b"1", i.to_string().as_bytes()]))
        .collect();
    // The writes within the burst are stored silently; the first one over it is answered.
    dev.expect_status(ids[BURST], Status::QuotaLimit);

    std::thread::sleep(Duration::from_millis(1_200));
    let sync = dev.send(Command::HardwareSync, &[b"vr", b"1"]);
    assert_eq!(
        dev.recv(),
        Got::Frame {
            command: Command::Hardware,
            id: sync,
            body: format!("vw\x001\x00{}", BURST - 1).into_bytes(),
        },
        "the last write within the burst is the stored one"
    );
    assert_eq!(gw.pin(id, "V1"), Some((BURST - 1).to_string()));
    let s = gw.scrape();
    assert_eq!(
        s.value("portcullis_device_frames_over_quota_total", &[]) as usize,
        2 * BURST
    );
}
