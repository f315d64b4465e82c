//! Resource attacks against the real gateway (issue 6): slowloris connections closed at the login
//! deadline, a connection flood from one source capped while another source connects, a client
//! that never reads disconnected with the gateway's memory bounded, and running out of file
//! descriptors without spinning and with accepts resuming after closes, and a flood of strangers
//! summarised in the logs instead of written line by line. Loopback only; attackers bind their
//! own 127.x source addresses. Every wait is bounded.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::device::{Device, Got};
use portcullis_e2e::hostile::{
    connect_from, connect_from_small_rcvbuf, count_lines, cpu_ticks, open_fds, peer_closed,
    plain_log, rss_kib,
};
use portcullis_e2e::{Gateway, json_lines, wait_for};
use portcullis_protocol::frame;
use portcullis_protocol::{Command, Status};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

/// Sends a PING and returns how long the answer took.
fn ping(dev: &mut Device) -> Duration {
    let start = Instant::now();
    let id = dev.send(Command::Ping, &[]);
    dev.expect_status(id, Status::Ok);
    start.elapsed()
}

#[test]
fn slowloris_connections_close_at_the_login_deadline_while_a_device_works() {
    const ATTACKERS: usize = 300;
    const DEADLINE: Duration = Duration::from_millis(2000);
    let gw = Gateway::start("[limits]\nlogin_timeout_ms = 2000\n");
    let (_, token) = gw.create_device("victim");

    // A login frame whose bytes trickle in at one per second never completes within 2 s.
    let mut login = Vec::new();
    frame::encode_args(&mut login, Command::HardwareLogin, 1, &[token.as_bytes()]).unwrap();
    let mut attackers: Vec<(TcpStream, Instant, Option<Instant>)> = (0..ATTACKERS)
        .map(|i| {
            let source = Ipv4Addr::new(127, 0, 1, 1 + (i % 4) as u8);
            let s = connect_from(source, gw.plain_port).unwrap();
            s.set_nonblocking(true).unwrap();
            (s, Instant::now(), None)
        })
        .collect();

    let device = std::thread::spawn({
        let port = gw.plain_port;
        move || {
            std::thread::sleep(Duration::from_millis(500));
            let start = Instant::now();
            let mut dev = Device::plain(port);
            dev.login(&token, Status::Ok);
            let login = start.elapsed();
            dev.info(10);
            let pings: Vec<Duration> = (0..10)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(200));
                    ping(&mut dev)
                })
                .collect();
            (login, pings)
        }
    });

    let attack_start = Instant::now();
    let mut sent = 0;
    while attackers.iter().any(|a| a.2.is_none()) && attack_start.elapsed() < Duration::from_secs(8)
    {
        let due = (attack_start.elapsed().as_secs() as usize + 1).min(login.len() - 1);
        for (stream, _, closed) in attackers.iter_mut().filter(|a| a.2.is_none()) {
            let mut buf = [0u8; 64];
            let gone = match stream.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != io::ErrorKind::WouldBlock,
            };
            let write_failed = sent < due
                && matches!(stream.write(&login[sent..sent + 1]), Err(e) if e.kind() != io::ErrorKind::WouldBlock);
            if gone || write_failed {
                *closed = Some(Instant::now());
            }
        }
        sent = sent.max(due);
        std::thread::sleep(Duration::from_millis(20));
    }

    let (login_time, pings) = device.join().unwrap();
    let lifetimes: Vec<Duration> = attackers
        .iter()
        .map(|(_, opened, closed)| closed.expect("every slowloris connection is closed") - *opened)
        .collect();
    let shortest = lifetimes.iter().min().unwrap();
    let longest = lifetimes.iter().max().unwrap();
    println!(
        "slowloris: {ATTACKERS} connections closed after {shortest:?}..{longest:?}; device login {login_time:?}, pings {:?}",
        pings
    );
    assert!(
        *shortest >= DEADLINE - Duration::from_millis(150),
        "closed early: {shortest:?}"
    );
    assert!(
        *longest <= DEADLINE + Duration::from_millis(1500),
        "closed late: {longest:?}"
    );
    assert!(
        login_time < Duration::from_secs(1),
        "device login took {login_time:?}"
    );
    assert!(
        pings.iter().all(|p| *p < Duration::from_millis(500)),
        "{pings:?}"
    );
    let log = plain_log(&gw.log());
    assert!(
        count_lines(
            &log,
            &["closing connection", "no login before the deadline"]
        ) >= ATTACKERS,
        "every slowloris close is logged with its reason"
    );
}

#[test]
fn a_flood_from_one_source_is_capped_while_another_source_connects() {
    let gw = Gateway::start(
        "[admission]\nmax_connections_per_ip = 50\naccept_rate_per_ip = 1000\naccept_burst_per_ip = 1000\n",
    );
    let (_, token) = gw.create_device("neighbour");
    let flooder = Ipv4Addr::new(127, 0, 2, 1);
    let mut flood: Vec<TcpStream> = (0..200)
        .map(|_| connect_from(flooder, gw.plain_port).unwrap())
        .collect();

    // A device from another source logs in at once, during the flood.
    let start = Instant::now();
    let mut dev = Device::over(connect_from(Ipv4Addr::new(127, 0, 2, 2), gw.plain_port).unwrap());
    dev.login(&token, Status::Ok);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    ping(&mut dev);

    std::thread::sleep(Duration::from_millis(300));
    flood.retain_mut(|s| !peer_closed(s, Duration::from_millis(20)));
    assert_eq!(flood.len(), 50, "exactly the cap stays open");
    assert!(
        plain_log(&gw.log()).contains("per_ip_connection_cap"),
        "refusal is logged with its reason"
    );

    // Closing some makes room for as many again, and no more.
    flood.truncate(40);
    std::thread::sleep(Duration::from_millis(300));
    let mut again: Vec<TcpStream> = (0..20)
        .map(|_| connect_from(flooder, gw.plain_port).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    again.retain_mut(|s| !peer_closed(s, Duration::from_millis(20)));
    assert_eq!(again.len(), 10);
    ping(&mut dev);
}

#[test]
fn the_accept_rate_per_source_is_limited() {
    let gw = Gateway::start("[admission]\naccept_rate_per_ip = 20\naccept_burst_per_ip = 20\n");
    let (_, token) = gw.create_device("neighbour");
    let start = Instant::now();
    let mut flood: Vec<TcpStream> = (0..100)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 3, 1), gw.plain_port).unwrap())
        .collect();
    let elapsed = start.elapsed();
    let mut dev = Device::over(connect_from(Ipv4Addr::new(127, 0, 3, 2), gw.plain_port).unwrap());
    dev.login(&token, Status::Ok);
    std::thread::sleep(Duration::from_millis(300));
    flood.retain_mut(|s| !peer_closed(s, Duration::from_millis(20)));
    // The burst, plus what the rate refilled while the flood was being opened.
    let allowed = 20 + (elapsed.as_secs_f64() * 20.0).ceil() as usize + 1;
    println!(
        "accept rate: {} of 100 accepted in {elapsed:?} (allowed {allowed})",
        flood.len()
    );
    assert!(
        (20..=allowed).contains(&flood.len()),
        "{} open",
        flood.len()
    );
    assert!(plain_log(&gw.log()).contains("per_ip_accept_rate"));
}

#[test]
fn a_client_that_never_reads_is_disconnected_and_memory_stays_bounded() {
    const CLIENTS: usize = 20;
    const PUSH: usize = 4 << 20;
    let gw = Gateway::start("[limits]\noutbound_queue_bytes = 65536\n");
    let (_, token) = gw.create_device("sink");
    let pid = gw.pid();
    let baseline = rss_kib(pid);

    let mut pings = Vec::with_capacity(64 * 1024);
    for id in 0..(64 * 1024 / 5) {
        frame::encode_args(&mut pings, Command::Ping, (id % 60_000 + 1) as u16, &[]).unwrap();
    }
    // Every client logs in first; then all of them push at once and never read.
    let logged_in: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let tcp = connect_from_small_rcvbuf(Ipv4Addr::new(127, 0, 4, 1), gw.plain_port, 4096)
                .unwrap();
            let mut dev = Device::over(tcp.try_clone().unwrap());
            dev.login(&token, Status::Ok);
            tcp
        })
        .collect();
    let mut bystander = Device::plain(gw.plain_port);
    bystander.login(&token, Status::Ok);
    let clients: Vec<_> = logged_in
        .into_iter()
        .map(|tcp| {
            let pings = pings.clone();
            std::thread::spawn(move || {
                // Never read; keep asking for answers until the gateway hangs up.
                let mut tcp = tcp;
                tcp.set_write_timeout(Some(Duration::from_secs(15)))
                    .unwrap();
                let start = Instant::now();
                let mut pushed = 0;
                while pushed < PUSH {
                    if tcp.write_all(&pings).is_err() {
                        return Some((pushed, start.elapsed()));
                    }
                    pushed += pings.len();
                }
                // Everything was taken: the hang-up must still come (the gateway closes it).
                let mut probe = [0u8; 1];
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                loop {
                    match tcp.read(&mut probe) {
                        Ok(0) | Err(_) => return Some((pushed, start.elapsed())),
                        Ok(_) => continue,
                    }
                }
            })
        })
        .collect();

    let mut peak = baseline;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut slowest_ping = Duration::ZERO;
    while clients.iter().any(|c| !c.is_finished()) && Instant::now() < deadline {
        peak = peak.max(rss_kib(pid));
        // A device on the same gateway keeps being answered (measured, reported).
        bystander.set_read_timeout(Duration::from_secs(20));
        slowest_ping = slowest_ping.max(ping(&mut bystander));
    }
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let growth_kib = peak.saturating_sub(baseline);
    println!(
        "never-reading clients: {CLIENTS} x {} KiB of pings; gateway RSS {baseline} KiB -> peak {peak} KiB (+{growth_kib} KiB); slowest bystander ping {slowest_ping:?}; (pushed, disconnected after) {results:?}",
        PUSH >> 10
    );
    assert!(results.iter().all(Option::is_some));
    wait_for(
        "slow-reader closes in the log",
        Duration::from_secs(5),
        || (count_lines(&plain_log(&gw.log()), &["outbound queue full"]) >= CLIENTS).then_some(()),
    );
    // Each client could have made the gateway queue 4 MiB of answers (16 MiB of frames in
    // allocations); the bound is 64 KiB of queue per connection. Allow 512 KiB per client for
    // allocator overhead and kernel-side bookkeeping counted in RSS.
    assert!(
        growth_kib < (CLIENTS as u64) * 512,
        "gateway grew by {growth_kib} KiB"
    );
    // The gateway still serves.
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    ping(&mut dev);
}

#[test]
fn running_out_of_descriptors_pauses_accepting_and_resumes_after_closes() {
    let gw = Gateway::start("");
    let (_, token) = gw.create_device("survivor");
    let pid = gw.pid();
    let mut devices: Vec<Device> = (0..3)
        .map(|_| {
            let mut d = Device::plain(gw.plain_port);
            d.login(&token, Status::Ok);
            d
        })
        .collect();
    let limit = open_fds(pid) + 10;
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit (util-linux) is installed");
    assert!(status.success());

    // More connections than descriptors left: some are accepted, the rest wait in the backlog.
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 5, 1), gw.plain_port).unwrap())
        .collect();
    gw.wait_for_log("accept failed; pausing accepts", Duration::from_secs(5));

    // Starved, the gateway must not spin: measure its CPU time over a second.
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(pid) - before;
    println!("fd exhaustion: {spent} CPU ticks in 1 s while starved at {limit} descriptors");
    assert!(
        spent < 30,
        "gateway burned {spent} ticks/s while out of descriptors"
    );

    // Connections it has keep working.
    for d in &mut devices {
        ping(d);
    }
    // A new device waits in the backlog; once the idle ones go, it is accepted and logs in.
    let waiting = std::thread::spawn({
        let port = gw.plain_port;
        let token = token.clone();
        move || {
            let mut d = Device::plain(port);
            d.set_read_timeout(Duration::from_secs(15));
            d.login(&token, Status::Ok);
            let id = d.send(Command::Ping, &[]);
            d.recv()
                == Got::Status {
                    id,
                    status: Status::Ok,
                }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    drop(idle);
    assert!(
        waiting.join().unwrap(),
        "a device connects after descriptors are freed"
    );
    gw.wait_for_log("accepting again", Duration::from_secs(5));
    let mut d = Device::plain(gw.plain_port);
    d.login(&token, Status::Ok);
    ping(&mut d);
}

#[test]
fn connections_before_login_are_capped_and_logged_in_devices_keep_working() {
    let gw = Gateway::start("[admission]\nmax_unauthenticated = 20\n");
    let (_, token) = gw.create_device("established");
    let mut established = Device::plain(gw.plain_port);
    established.login(&token, Status::Ok);

    // Many sources, so the per-source limits are not what refuses them.
    let mut idle: Vec<TcpStream> = (0..40)
        .map(|i| connect_from(Ipv4Addr::new(127, 0, 8, 1 + (i % 10) as u8), gw.plain_port).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    idle.retain_mut(|s| !peer_closed(s, Duration::from_millis(20)));
    assert_eq!(idle.len(), 20, "exactly the pre-login cap stays open");
    assert!(plain_log(&gw.log()).contains("unauthenticated_cap"));
    // The session that had logged in is untouched.
    ping(&mut established);

    // Once the pending ones are gone, new devices get in again.
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    let mut late = Device::plain(gw.plain_port);
    late.login(&token, Status::Ok);
    ping(&mut late);
}

#[test]
fn new_connections_wait_while_the_output_budget_is_spent_on_existing_ones() {
    // A 1 MiB budget for all outbound queues (512 KiB per shard; the harness runs two) and a
    // per-connection bound far above it, so one client that never reads can spend its shard's
    // whole share without being cut off as a slow reader.
    let gw = Gateway::start(
        "[limits]\noutput_budget_mib = 1\noutbound_queue_bytes = 8388608\nsocket_send_buffer_bytes = 4096\n",
    );
    let (_, token) = gw.create_device("hog");
    let mut bystander = Device::plain(gw.plain_port);
    bystander.login(&token, Status::Ok);

    let hog = connect_from_small_rcvbuf(Ipv4Addr::new(127, 0, 5, 1), gw.plain_port, 4096).unwrap();
    Device::over(hog.try_clone().unwrap()).login(&token, Status::Ok);
    // 60,000 PINGs whose answers (5 bytes + 40 of queue overhead each, ~2.7 MB) it never reads.
    let mut pings = Vec::new();
    for id in 0..60_000u32 {
        frame::encode_args(&mut pings, Command::Ping, (id % 60_000 + 1) as u16, &[]).unwrap();
    }
    let mut writer = hog.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    writer.write_all(&pings).unwrap();

    // New connections that land on the hog's shard are refused (closed at accept)...
    wait_for(
        "a connection refused for the budget",
        Duration::from_secs(10),
        || {
            let mut probe = connect_from(Ipv4Addr::new(127, 0, 5, 2), gw.plain_port).ok()?;
            peer_closed(&mut probe, Duration::from_millis(500)).then_some(())
        },
    );
    gw.wait_for_log("output_budget", Duration::from_secs(5));
    // ...while the device already connected is served as before.
    bystander.set_read_timeout(Duration::from_secs(5));
    ping(&mut bystander);

    // The hog leaves; its queue is freed and every new device gets in again, on either shard.
    drop(writer);
    drop(hog);
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..8 {
        let tcp = connect_from(Ipv4Addr::new(127, 0, 5, 3), gw.plain_port).unwrap();
        let mut dev = Device::over(tcp);
        dev.login(&token, Status::Ok);
    }
}

/// Strangers sending garbage as fast as they can connect: each shard writes the first 100
/// security events and "closing connection" lines of a second, then one summary line with the
/// count of the rest, so every rejection is accounted for without a line per attempt.
#[test]
fn a_flood_of_strangers_is_summarised_in_the_logs_not_written_line_by_line() {
    const STRANGERS: usize = 600;
    let temp = tempfile::tempdir().unwrap();
    let security = temp.path().join("security.log");
    let gw = Gateway::start_in(
        &temp.path().join("data"),
        &format!(
            "[log]\nsecurity = {:?}\n[admission]\naccept_rate_per_ip = 100000\n\
             accept_burst_per_ip = 100000\n",
            security.display().to_string()
        ),
    );
    let mut strangers = Vec::with_capacity(STRANGERS);
    for i in 0..STRANGERS {
        let source = Ipv4Addr::new(127, 0, 4, 1 + (i % 4) as u8);
        let mut stream = connect_from(source, gw.plain_port).unwrap();
        stream.write_all(b"GARBAGE!").unwrap();
        strangers.push(stream);
    }
    // Failed logins in the same second have a budget of their own: the flood cannot hide them.
    const GUESSES: usize = 3;
    for n in 0..GUESSES {
        let mut guesser = Device::plain(gw.plain_port);
        guesser.login(
            &format!("{:0>32}", format!("guess{n}")),
            Status::InvalidToken,
        );
    }
    let events = || json_lines(&security);
    let (written, summarised) = wait_for(
        "every rejection written or summarised",
        Duration::from_secs(10),
        || {
            let events = events();
            let written = events
                .iter()
                .filter(|e| e["kind"] == "pre_auth_rejected")
                .count();
            let summarised: usize = events
                .iter()
                .filter(|e| e["kind"] == "events_suppressed")
                .map(|e| {
                    let reason = e["reason"].as_str().unwrap();
                    reason.split(' ').next().unwrap().parse::<usize>().unwrap()
                })
                .sum();
            (written + summarised == STRANGERS).then_some((written, summarised))
        },
    );
    assert!(summarised > 0 && written < STRANGERS, "{written} written");
    wait_for("every failed login written", Duration::from_secs(5), || {
        let guesses = events()
            .iter()
            .filter(|e| e["kind"] == "invalid_device_token")
            .count();
        (guesses == GUESSES).then_some(())
    });
    let log = plain_log(&gw.log());
    let close_lines = count_lines(&log, &[" INFO ", "closing connection"]);
    assert!(
        (100..STRANGERS).contains(&close_lines),
        "{close_lines} info lines for {STRANGERS} strangers (the harness also logs debug, where \
         the rest go)"
    );
    gw.wait_for_log(
        "more connections closed before login in one second",
        Duration::from_secs(5),
    );
}
