//! Hostile input against the real gateway (issue 6): thousands of random and mutated frames from
//! many connections (no crash, each connection the gateway closes is logged with its reason, a good
//! device is unaffected), and an invalid-token brute force from one source that is slowed and then
//! refused while a device from another source logs in at once. Loopback only, bounded.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::Gateway;
use portcullis_e2e::device::{Device, Got};
use portcullis_e2e::hostile::{connect_from, count_lines, peer_closed, plain_log};
use portcullis_protocol::frame;
use portcullis_protocol::{Command, Status};
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift), so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One hostile frame: a valid frame with a flipped byte, a random header, a lying length, or
/// plain garbage.
fn hostile_frame(rng: &mut Rng, token: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let valid: [(Command, Vec<&[u8]>); 6] = [
        (Command::Hardware, vec![b"vw", b"5", b"42"]),
        (
            Command::Internal,
            vec![b"ver", b"1.0", b"h-beat", b"10", b"buff-in", b"1024"],
        ),
        (Command::HardwareSync, vec![b"vr", b"5"]),
        (Command::Property, vec![b"5", b"label", b"x"]),
        (Command::Ping, vec![]),
        (Command::HardwareLogin, vec![token.as_bytes()]),
    ];
    match rng.below(4) {
        0 => {
            let (command, args) = &valid[rng.below(valid.len())];
            frame::encode_args(&mut out, *command, (rng.next() as u16).max(1), args).unwrap();
            let at = rng.below(out.len());
            out[at] ^= 1 << rng.below(8);
        }
        1 => {
            let len = rng.below(64);
            out.push(rng.below(256) as u8);
            out.extend_from_slice(&(rng.next() as u16).to_be_bytes());
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend(rng.bytes(len));
        }
        2 => {
            // A header announcing far more than follows (or than any limit allows).
            out.push(20);
            out.extend_from_slice(&7u16.to_be_bytes());
            out.extend_from_slice(&(rng.next() as u16).to_be_bytes());
            let tail = rng.below(16);
            out.extend(rng.bytes(tail));
        }
        _ => {
            let len = 1 + rng.below(32);
            out.extend(rng.bytes(len));
        }
    }
    out
}

#[test]
fn random_and_mutated_frames_close_bad_connections_with_a_reason_and_spare_good_ones() {
    const CONNECTIONS: usize = 400;
    let gw = Gateway::start("[limits]\nlogin_timeout_ms = 2000\n");
    let (_, token) = gw.create_device("target");
    let (good_id, good_token) = gw.create_device("bystander");
    let mut good = Device::plain(gw.plain_port);
    good.login(&good_token, Status::Ok);
    good.info(10);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut frames_sent = 0;
    let mut closed_by_gateway = Vec::new();
    for n in 0..CONNECTIONS {
        // Spread over sources so the per-source accept rate and login throttle are not what is
        // being tested here.
        let source = Ipv4Addr::new(127, 0, 6, 1 + (n % 8) as u8);
        let mut stream = connect_from(source, gw.plain_port).unwrap();
        let local = stream.local_addr().unwrap();
        if n % 2 == 0 {
            // Half the connections log in first, so the frames reach the device session.
            let mut login = Vec::new();
            frame::encode_args(&mut login, Command::HardwareLogin, 1, &[token.as_bytes()]).unwrap();
            stream.write_all(&login).unwrap();
        }
        let burst: Vec<u8> = (0..12)
            .flat_map(|_| hostile_frame(&mut rng, &token))
            .collect();
        frames_sent += 12;
        // The gateway may hang up part-way through: that is the point.
        let _ = stream.write_all(&burst);
        if peer_closed(&mut stream, Duration::from_millis(30)) {
            closed_by_gateway.push(local);
        }
        if n % 50 == 0 {
            // The bystander keeps working throughout.
            let id = good.send(Command::Ping, &[]);
            good.expect_status(id, Status::Ok);
        }
    }
    println!(
        "fuzzed a live gateway with {frames_sent} frames on {CONNECTIONS} connections; {} closed by the gateway",
        closed_by_gateway.len()
    );
    assert!(frames_sent >= 4000);
    assert!(!closed_by_gateway.is_empty());

    // Still alive and serving: the bystander writes and reads back.
    good.virtual_write(9, "still-here");
    let sync = good.send(Command::HardwareSync, &[b"vr", b"9"]);
    assert_eq!(
        good.recv(),
        Got::Frame {
            command: Command::Hardware,
            id: sync,
            body: b"vw\x009\x00still-here".to_vec()
        }
    );
    assert_eq!(gw.device(good_id)["online"], true);
    // Every connection the gateway closed was logged with the peer and a reason.
    let log = plain_log(&gw.log());
    for local in &closed_by_gateway {
        let peer = format!("peer={local}");
        let logged = log.lines().any(|l| {
            l.contains(&peer)
                && (l.contains("closing connection") || l.contains("login refused"))
                && l.contains("reason")
        });
        assert!(logged, "no close reason logged for {peer}");
    }
    assert!(count_lines(&log, &["panicked"]) == 0, "a shard panicked");
}

/// A plausible (right length and alphabet) but wrong token.
fn guess(n: usize) -> String {
    format!("{:0>32}", format!("guess{n}"))
}

#[test]
fn a_token_brute_force_is_slowed_then_refused_while_another_source_logs_in() {
    let gw = Gateway::start(
        "[admission]\nlogin_free_failures = 3\nlogin_backoff_initial_ms = 400\nlogin_backoff_max_ms = 1600\nlogin_block_after_failures = 6\nlogin_block_secs = 60\n",
    );
    let (_, token) = gw.create_device("victim");
    let attacker = Ipv4Addr::new(127, 0, 7, 1);

    // Guess as fast as one connection at a time allows, for 4 seconds.
    let start = Instant::now();
    let mut checked = Vec::new(); // times of answers that came from the store (INVALID_TOKEN)
    let mut throttled = 0;
    let mut refused_at_accept = 0;
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(4) {
        let mut dev = Device::over(connect_from(attacker, gw.plain_port).unwrap());
        let id = 1;
        let mut login = Vec::new();
        frame::encode_args(
            &mut login,
            Command::HardwareLogin,
            id,
            &[guess(n).as_bytes()],
        )
        .unwrap();
        let answer = match dev.send_raw(&login) {
            Ok(()) => dev.recv(),
            Err(_) => Got::Closed,
        };
        match answer {
            Got::Status {
                id: got,
                status: Status::InvalidToken,
            } if got == id => checked.push(start.elapsed()),
            Got::Status {
                id: got,
                status: Status::QuotaLimit,
            } if got == id => throttled += 1,
            // Beyond the per-source accept rate the connection is closed before it is read.
            Got::Closed => {
                refused_at_accept += 1;
                n += 1;
                continue;
            }
            other => panic!("unexpected answer to guess {n}: {other:?}"),
        }
        dev.expect_closed();
        n += 1;
    }
    println!(
        "brute force: {n} guesses in 4 s, {} checked against the store at {checked:?}, {throttled} refused unchecked, {refused_at_accept} refused at accept",
        checked.len()
    );
    // Three free failures, then at most one check per back-off (400, 800 ms), then the block.
    assert!(checked.len() >= 3 && checked.len() <= 6, "{checked:?}");
    for pair in checked.windows(2).skip(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(390),
            "not slowed: {checked:?}"
        );
    }
    assert!(throttled > 20, "later guesses are refused without checking");

    // Blocked now: even the right token from that source is refused (after a pause, so the
    // source's accept-rate bucket has a token again and the connection gets as far as its login)...
    std::thread::sleep(Duration::from_millis(200));
    let mut dev = Device::over(connect_from(attacker, gw.plain_port).unwrap());
    dev.login(&token, Status::QuotaLimit);
    // ...while a device from another source logs in at once.
    let t = Instant::now();
    let mut dev = Device::over(connect_from(Ipv4Addr::new(127, 0, 7, 2), gw.plain_port).unwrap());
    dev.login(&token, Status::Ok);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );

    let log = plain_log(&gw.log());
    assert!(count_lines(&log, &["invalid_device_token", "127.0.7.1"]) >= 3);
    assert!(count_lines(&log, &["login_throttled", "login_backoff", "127.0.7.1"]) >= 1);
    assert!(count_lines(&log, &["login_throttled", "login_blocked", "127.0.7.1"]) >= 1);
    assert_eq!(count_lines(&log, &["login_throttled", "127.0.7.2"]), 0);
}
