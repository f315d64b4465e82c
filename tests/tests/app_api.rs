//! End-to-end tests of the app WebSocket API (`/api/ws`) against the real gateway and store: login
//! with the Blynk client hash checked by argon2id, the organization boundary, live events of
//! subscribed devices across shards, the login throttle, TLS, and the HTTP that is refused.

#![allow(clippy::unwrap_used)] // test: a failed unwrap is a failed test

use portcullis_e2e::app::App;
use portcullis_e2e::device::{Device, client_config};
use portcullis_e2e::hostile::{connect_from, plain_log};
use portcullis_e2e::{Gateway, json_lines};
use portcullis_protocol::Status;
use portcullis_protocol::app::{AppErrorCode, AppEvent, AppRequest};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

/// Creates a Staff user (who sees every device of their organization and below) with the admin
/// CLI; returns the one-time password it printed.
fn create_user(gw: &Gateway, email: &str, org: u32) -> String {
    let org = org.to_string();
    let created = gw
        .admin(&[
            "user", "create", "--email", email, "--org", &org, "--role", "staff",
        ])
        .unwrap();
    created["password"]
        .as_str()
        .unwrap_or_else(|| panic!("no password in {created}"))
        .to_owned()
}

fn error_code(event: &AppEvent) -> Option<AppErrorCode> {
    match event {
        AppEvent::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// The shard each device logged in on, from the gateway's debug log.
fn device_shards(log: &str) -> HashMap<u64, u64> {
    let mut shards = HashMap::new();
    for line in log.lines().filter(|l| l.contains("device logged in")) {
        let field = |name: &str| {
            let at = line.find(&format!("{name}="))? + name.len() + 1;
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        };
        if let (Some(shard), Some(device)) = (field("shard"), field("device")) {
            shards.insert(device, shard);
        }
    }
    shards
}

#[test]
fn an_app_sees_the_writes_of_its_organizations_devices_on_every_shard() {
    let gw = Gateway::start("");
    let ops = gw.create_org(1, "ops");
    let rival = gw.create_org(1, "rival");
    let password = create_user(&gw, "Ops@Example.com", ops);
    let devices: Vec<(u64, String)> = (0..16)
        .map(|n| gw.create_device_in(&format!("pump-{n}"), ops))
        .collect();
    let stranger = gw.create_device_in("other", rival).0;

    let mut app = App::plain(gw.plain_port);
    // Requests before login are refused; a wrong password is told apart from nothing.
    app.request(|id| AppRequest::Devices { id, after: None });
    assert_eq!(
        error_code(&app.next_event().unwrap()),
        Some(AppErrorCode::LoginFirst)
    );
    let wrong = app.login("ops@example.com", "not-the-password");
    assert_eq!(error_code(&wrong), Some(AppErrorCode::Unauthorized));
    let unknown = app.login("nobody@example.com", &password);
    assert_eq!(error_code(&unknown), Some(AppErrorCode::Unauthorized));
    // Any case of the email finds the user (the hash is computed over the lowercased email).
    match app.login("OPS@example.com", &password) {
        AppEvent::LoggedIn { email, org, .. } => {
            assert_eq!(email, "ops@example.com");
            assert_eq!(org, ops.to_string());
        }
        other => panic!("login failed: {other:?}"),
    }

    // The organization's devices, not the rival's.
    app.request(|id| AppRequest::Devices { id, after: None });
    let listed: HashSet<u64> = match app.next_event().unwrap() {
        AppEvent::Devices { devices, next, .. } => {
            assert_eq!(next, None, "16 devices fit one page");
            devices.iter().map(|d| d.id).collect()
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(listed, devices.iter().map(|(id, _)| *id).collect());
    assert_eq!(
        error_code(&app.subscribe(stranger)),
        Some(AppErrorCode::NotFound),
        "a device of another organization looks like no device"
    );
    assert_eq!(
        error_code(&app.subscribe(999_999)),
        Some(AppErrorCode::NotFound)
    );
    for (id, _) in &devices {
        match app.subscribe(*id) {
            AppEvent::Subscribed { device, online, .. } => {
                assert_eq!(device, *id);
                assert!(!online);
            }
            other => panic!("{other:?}"),
        }
    }
    // Subscriptions reach the other shard within a loop turn.
    std::thread::sleep(Duration::from_millis(200));

    let mut connected = Vec::new();
    for (n, (_, token)) in devices.iter().enumerate() {
        let mut device = Device::plain(gw.plain_port);
        device.login(token, Status::Ok);
        device.virtual_write(1, &format!("{n}.5"));
        connected.push(device);
    }
    let mut online = HashSet::new();
    let mut written = HashMap::new();
    while online.len() < devices.len() || written.len() < devices.len() {
        match app.next_event().expect("events until every device is seen") {
            AppEvent::Online { device } => {
                online.insert(device);
            }
            AppEvent::Pin {
                device,
                pin,
                values,
                ..
            } => {
                assert_eq!(pin, "V1");
                written.insert(device, values);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    for (n, (id, _)) in devices.iter().enumerate() {
        assert_eq!(written[id], vec![format!("{n}.5")]);
    }
    // The devices were spread over both shards (by the kernel's SO_REUSEPORT hash: all 16 on one
    // shard has a chance of 2^-15), so events crossed shards and stayed on one.
    let shards: HashSet<u64> = device_shards(&plain_log(&gw.log())).into_values().collect();
    assert_eq!(shards.len(), 2, "devices on both shards: {shards:?}");

    // Unsubscribed devices go quiet; a disconnect is announced.
    let (first, _) = devices[0];
    app.request(|id| AppRequest::Unsubscribe { id, device: first });
    assert!(
        matches!(app.next_event(), Some(AppEvent::Unsubscribed { device, .. }) if device == first)
    );
    std::thread::sleep(Duration::from_millis(200));
    connected[0].virtual_write(1, "ignored");
    drop(connected.remove(1));
    match app.next_event().unwrap() {
        AppEvent::Offline { device } => assert_eq!(device, devices[1].0),
        other => panic!("expected only the offline of device 1, got {other:?}"),
    }
    let metrics = gw.scrape();
    assert_eq!(
        metrics.get("portcullis_app_logins_ok_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        metrics.get("portcullis_app_logins_refused_total", &[]),
        Some(2.0)
    );
}

#[test]
fn a_source_guessing_passwords_is_blocked_and_logged_by_account() {
    let temp = tempfile::tempdir().unwrap();
    let security = temp.path().join("security.log");
    let gw = Gateway::start_in(
        &temp.path().join("data"),
        &format!(
            "[log]\nsecurity = {:?}\n[app]\nlogin_block_after_failures = 3\n",
            security.display().to_string()
        ),
    );
    let password = create_user(&gw, "ops@example.com", 1);
    let from = |last: u8| {
        let tcp = connect_from(Ipv4Addr::new(127, 0, 0, last), gw.plain_port).unwrap();
        App::over(tcp, None)
    };
    let mut guesser = from(7);
    for guess in 0..3 {
        let answer = guesser.login("ops@example.com", &format!("guess-{guess}"));
        assert_eq!(error_code(&answer), Some(AppErrorCode::Unauthorized));
    }
    // Blocked now, even with the right password and on a new connection.
    let answer = guesser.login("ops@example.com", &password);
    assert_eq!(error_code(&answer), Some(AppErrorCode::Throttled));
    let answer = from(7).login("ops@example.com", &password);
    match &answer {
        AppEvent::Error { code, message, .. } => {
            assert_eq!(*code, AppErrorCode::Throttled);
            assert!(message.contains("retry in"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Another address is not.
    assert!(matches!(
        from(8).login("ops@example.com", &password),
        AppEvent::LoggedIn { .. }
    ));
    let events = json_lines(&security);
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "app_login_failed")
        .collect();
    assert_eq!(failed.len(), 3, "{events:?}");
    assert!(failed.iter().all(|e| {
        e["subject"]
            .as_str()
            .is_some_and(|s| s.contains("ops@example.com") && s.contains("127.0.0.7"))
    }));
    // Counted per account as well, across addresses.
    assert!(
        failed[2]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("3 failed logins of this account")),
        "{:?}",
        failed[2]
    );
    assert!(
        events.iter().any(|e| e["kind"] == "app_login_throttled"),
        "{events:?}"
    );
}

#[test]
fn the_app_api_works_over_tls_and_other_http_is_refused() {
    let gw = Gateway::start("");
    let password = create_user(&gw, "ops@example.com", 1);
    let ca = gw.data_dir.join("tls").join("ca.pem");
    let mut app = App::tls(gw.tls_port, client_config(&ca, &rustls::version::TLS13));
    assert!(matches!(
        app.login("ops@example.com", &password),
        AppEvent::LoggedIn { .. }
    ));
    let (device, token) = gw.create_device("pump");
    assert!(matches!(app.subscribe(device), AppEvent::Subscribed { .. }));
    std::thread::sleep(Duration::from_millis(200));
    let mut dev = Device::tls(gw.tls_port, client_config(&ca, &rustls::version::TLS13));
    dev.login(&token, Status::Ok);
    dev.virtual_write(3, "on");
    let mut saw_pin = false;
    while !saw_pin {
        match app.next_event().unwrap() {
            AppEvent::Online { .. } => {}
            AppEvent::Pin { pin, values, .. } => {
                assert_eq!((pin.as_str(), values), ("V3", vec!["on".to_owned()]));
                saw_pin = true;
            }
            other => panic!("{other:?}"),
        }
    }

    // Any other HTTP gets a status that says why. A miss keeps an HTTP/1.1 connection alive
    // (protocol_selection.rs tests that), so these ask to close and read to the end.
    for (request, status) in [
        (
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "404",
        ),
        (
            "GET /api/ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "426",
        ),
    ] {
        let mut tcp = TcpStream::connect(("127.0.0.1", gw.plain_port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{request:?}: {answer}"
        );
    }
}

#[test]
fn an_idle_app_is_closed_and_bad_messages_are_answered() {
    let gw = Gateway::start("[app]\nidle_timeout_secs = 1\n");
    let password = create_user(&gw, "ops@example.com", 1);
    let mut app = App::plain(gw.plain_port);
    app.send_text("not json");
    assert_eq!(
        error_code(&app.next_event().unwrap()),
        Some(AppErrorCode::BadRequest)
    );
    assert!(matches!(
        app.login("ops@example.com", &password),
        AppEvent::LoggedIn { .. }
    ));
    // Silent past the idle timeout: the gateway closes (the timer wheel ticks in whole steps,
    // so allow a few seconds).
    let started = std::time::Instant::now();
    assert_eq!(app.next_event(), None, "closed, not another message");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_reloaded_app_idle_timeout_reaches_the_shards() {
    let gw = Gateway::start("");
    let password = create_user(&gw, "ops@example.com", 1);
    let mut app = App::plain(gw.plain_port);
    assert!(matches!(
        app.login("ops@example.com", &password),
        AppEvent::LoggedIn { .. }
    ));
    // Only an `app.*` key changes: it is documented as live, so the shards must get it.
    let config = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(
        &gw.config_path,
        format!("{config}\n[app]\nidle_timeout_secs = 1\n"),
    )
    .unwrap();
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    gw.wait_for_log("configuration reloaded", Duration::from_secs(10));
    // A message after the reload moves the deadline by the new timeout; then silence closes.
    app.send_text("not json");
    assert_eq!(
        error_code(&app.next_event().unwrap()),
        Some(AppErrorCode::BadRequest)
    );
    let started = std::time::Instant::now();
    assert_eq!(
        app.next_event(),
        None,
        "closed by the reloaded idle timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
