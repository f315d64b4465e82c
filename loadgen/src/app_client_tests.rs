//! The app client against scripted gateways on 127.0.0.1: a tungstenite server in a test thread
//! answers (or refuses, or ignores) login and subscribe and pushes pin events carrying send
//! times; the tests check what the client made of it. One of them runs over `wss://` with a CA
//! made for the test. Every socket has a timeout, so a broken client fails a test, never hangs it.

use super::*;
use portcullis_protocol::app::client_hash;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::ServerConnection;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::net::TcpListener;
use std::thread::JoinHandle;

/// Longest any step of a test waits.
const WAIT: Duration = Duration::from_secs(10);

const EMAIL: &str = "app@example.com";
const PASSWORD: &str = "correct horse";

/// Accepts one connection, wraps it (`wrap`: plain or TLS), does the WebSocket handshake and runs
/// `script` on it.
fn serve<S, W, F>(wrap: W, script: F) -> (SocketAddr, JoinHandle<()>)
where
    S: Read + Write,
    W: FnOnce(TcpStream) -> S + Send + 'static,
    F: FnOnce(&mut WebSocket<S>) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let thread = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut ws = tungstenite::accept(wrap(tcp)).expect("server handshake");
        script(&mut ws);
    });
    (addr, thread)
}

/// The next request, `None` if the read timed out or the client went away.
fn request<S: Read + Write>(ws: &mut WebSocket<S>) -> Option<AppRequest> {
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                return Some(serde_json::from_str(text.as_str()).expect("a request"));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

fn push<S: Read + Write>(ws: &mut WebSocket<S>, event: &AppEvent) {
    let text = serde_json::to_string(event).expect("json");
    ws.send(Message::text(text)).expect("send");
}

/// Answers the login, checking it carries the email and the client hash of the password.
fn accept_login<S: Read + Write>(ws: &mut WebSocket<S>) {
    match request(ws) {
        Some(AppRequest::Login { id, email, hash }) => {
            assert_eq!(email, EMAIL);
            assert_eq!(hash, client_hash(PASSWORD, EMAIL));
            push(
                ws,
                &AppEvent::LoggedIn {
                    id,
                    email,
                    org: "default".into(),
                },
            );
        }
        other => panic!("expected a login, got {other:?}"),
    }
}

/// Reads until the client closes (or the read timeout), so the client's close is seen.
fn until_closed<S: Read + Write>(ws: &mut WebSocket<S>) {
    while request(ws).is_some() {}
}

fn pin(device: DeviceId, pin: &str, value: String) -> AppEvent {
    AppEvent::Pin {
        device,
        pin: pin.into(),
        values: vec![value],
        at_ms: 0,
    }
}

/// A send time `ago` before now, as a device writes it.
fn stamp(ago: Duration) -> String {
    sendtime::unix_micros(SystemTime::now() - ago).to_string()
}

fn config(target: SocketAddr, devices: Vec<DeviceId>) -> AppClientConfig {
    AppClientConfig {
        target,
        url: format!("ws://{target}/api/ws"),
        tls: None,
        email: EMAIL.into(),
        hash: client_hash(PASSWORD, EMAIL),
        devices,
        pin: "V1".into(),
        answer_timeout: WAIT,
        subscribe_timeout: WAIT,
        stop: Arc::new(AtomicBool::new(false)),
        give_up_at: Instant::now() + 3 * WAIT,
    }
}

/// Runs the client in a thread; once `until` holds (or after [`WAIT`]) sets its stop flag.
fn run_until(config: AppClientConfig, until: impl Fn(&AppLive) -> bool) -> (AppOutcome, AppLive) {
    let live = Arc::new(AppLive::default());
    let stop = Arc::clone(&config.stop);
    let client = {
        let live = Arc::clone(&live);
        std::thread::spawn(move || run(&config, &live))
    };
    let deadline = Instant::now() + WAIT;
    while !until(&live) && !client.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let outcome = client.join().expect("client thread");
    let live = Arc::try_unwrap(live).expect("the client is done with it");
    (outcome, live)
}

#[test]
fn logs_in_subscribes_and_times_pin_events() {
    let (addr, server) = serve(
        |tcp| tcp,
        |ws| {
            accept_login(ws);
            let mut ids = Vec::new();
            for _ in 0..2 {
                match request(ws) {
                    Some(AppRequest::Subscribe { id, device }) => ids.push((id, device)),
                    other => panic!("expected a subscribe, got {other:?}"),
                }
            }
            assert_eq!(ids.iter().map(|i| i.1).collect::<Vec<_>>(), vec![7, 8]);
            push(
                ws,
                &AppEvent::Subscribed {
                    id: ids[0].0,
                    device: 7,
                    online: false,
                },
            );
            push(
                ws,
                &AppEvent::Error {
                    id: Some(ids[1].0),
                    code: AppErrorCode::NotFound,
                    message: "no device 8 here".into(),
                },
            );
            push(ws, &AppEvent::Online { device: 7 });
            push(ws, &pin(7, "V1", stamp(Duration::from_millis(5))));
            push(ws, &pin(7, "V1", stamp(Duration::from_millis(40))));
            push(ws, &pin(7, "V1", "hello".into()));
            // Neither is what this app subscribed to.
            push(ws, &pin(7, "V2", stamp(Duration::ZERO)));
            push(ws, &pin(99, "V1", stamp(Duration::ZERO)));
            until_closed(ws);
        },
    );
    let (out, live) = run_until(config(addr, vec![7, 8]), |live| {
        live.events.load(Ordering::Relaxed) >= 3
    });
    server.join().expect("server");

    assert_eq!(out.subscribed, vec![7]);
    let t = &out.tally;
    assert_eq!(t.count(Count::AppsLoggedIn), 1);
    assert_eq!(t.count(Count::SubscriptionsOk), 1);
    assert_eq!(t.count(Count::SubscribeFailures), 1);
    assert_eq!(
        t.failures.get("app subscribe refused: not_found"),
        Some(&1),
        "{:?}",
        t.failures
    );
    assert_eq!(t.failure_total(), 1, "{:?}", t.failures);
    assert_eq!(t.count(Count::EventsReceived), 3);
    assert_eq!(t.count(Count::EventsUndecodable), 1);
    // The other pin and the unsubscribed device may or may not have been read before the stop.
    assert!(t.count(Count::UnexpectedFrames) <= 2);
    assert_eq!(t.count(Count::AppDisconnects), 0);
    let hist = t.get(Latency::EndToEnd).expect("end-to-end samples");
    assert_eq!(hist.len(), 2, "the two decodable events");
    assert!(
        hist.min() >= 4_900,
        "sent 5 ms ago at least: {} µs",
        hist.min()
    );
    assert!(
        hist.max() >= 39_900,
        "sent 40 ms ago at least: {} µs",
        hist.max()
    );
    assert!(hist.max() < 5_000_000, "{} µs", hist.max());
    assert_eq!(t.get(Latency::AppLogin).map(|h| h.len()), Some(1));
    assert!(out.busy_share.is_some_and(|b| (0.0..=1.5).contains(&b)));
    assert_eq!(live.logged_in.load(Ordering::Relaxed), 1);
    assert_eq!(live.subscribed.load(Ordering::Relaxed), 1);
    assert_eq!(live.subscribe_failures.load(Ordering::Relaxed), 1);
    assert_eq!(live.settled.load(Ordering::Relaxed), 1);
}

#[test]
fn a_refused_login_is_a_login_failure_with_the_gateways_message() {
    let (addr, server) = serve(
        |tcp| tcp,
        |ws| {
            match request(ws) {
                Some(AppRequest::Login { id, .. }) => push(
                    ws,
                    &AppEvent::Error {
                        id: Some(id),
                        code: AppErrorCode::Unauthorized,
                        message: "wrong email or password".into(),
                    },
                ),
                other => panic!("expected a login, got {other:?}"),
            }
            assert_eq!(request(ws), None, "nothing is sent after a refusal");
        },
    );
    let (out, live) = run_until(config(addr, vec![1, 2, 3]), |_| false);
    server.join().expect("server");

    let t = &out.tally;
    assert_eq!(
        t.failures
            .get("app login refused: unauthorized: wrong email or password"),
        Some(&1),
        "{:?}",
        t.failures
    );
    assert_eq!(t.count(Count::AppLoginFailures), 1);
    assert_eq!(t.count(Count::AppsLoggedIn), 0);
    assert!(out.subscribed.is_empty());
    assert_eq!(live.login_failures.load(Ordering::Relaxed), 1);
    assert_eq!(
        live.settled.load(Ordering::Relaxed),
        1,
        "settled, so the run does not wait"
    );
}

#[test]
fn an_unknown_error_code_still_refuses_the_login() {
    let (addr, server) = serve(
        |tcp| tcp,
        |ws| {
            assert!(matches!(request(ws), Some(AppRequest::Login { .. })));
            let text =
                r#"{"type":"error","id":1,"code":"account_locked","message":"ask an admin"}"#;
            ws.send(Message::text(text)).expect("send");
            until_closed(ws);
        },
    );
    let (out, _) = run_until(config(addr, vec![1]), |_| false);
    server.join().expect("server");
    assert_eq!(
        out.tally
            .failures
            .get("app login refused: account_locked: ask an admin"),
        Some(&1),
        "{:?}",
        out.tally.failures
    );
}

#[test]
fn a_silent_gateway_times_the_login_out() {
    let (addr, server) = serve(
        |tcp| tcp,
        |ws| {
            assert!(matches!(request(ws), Some(AppRequest::Login { .. })));
            until_closed(ws);
        },
    );
    let mut cfg = config(addr, vec![1]);
    cfg.answer_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let (out, _) = run_until(cfg, |_| false);
    server.join().expect("server");
    assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
    assert_eq!(
        out.tally.failures.get("app login: no answer in time"),
        Some(&1),
        "{:?}",
        out.tally.failures
    );
    assert_eq!(out.tally.count(Count::AppLoginFailures), 1);
}

#[test]
fn a_gateway_without_the_app_api_is_named_as_such() {
    // What a gateway that does not serve /api/ws does: reads the upgrade request, closes.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut request = [0u8; 1024];
        let n = tcp.read(&mut request).expect("request");
        assert!(request[..n].starts_with(b"GET /api/ws HTTP/1.1"));
    });
    let (out, _) = run_until(config(addr, vec![1]), |_| false);
    server.join().expect("server");
    assert_eq!(
        out.tally
            .failures
            .get("app handshake: the gateway closed the connection"),
        Some(&1),
        "{:?}",
        out.tally.failures
    );
}

#[test]
fn a_closed_port_is_a_connect_failure() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let (out, live) = run_until(config(addr, vec![1]), |_| false);
    let reasons: Vec<&String> = out.tally.failures.keys().collect();
    assert!(
        reasons.len() == 1 && reasons[0].starts_with("app connect: "),
        "{reasons:?}"
    );
    assert_eq!(out.tally.count(Count::AppLoginFailures), 1);
    assert_eq!(live.settled.load(Ordering::Relaxed), 1);
}

#[test]
fn subscriptions_are_pipelined_within_the_window() {
    let devices: Vec<DeviceId> = (1..=100).collect();
    let (addr, server) = serve(
        |tcp| tcp,
        |ws| {
            accept_login(ws);
            // Read what the client sends before it hears anything back: exactly one window.
            ws.get_ref()
                .set_read_timeout(Some(Duration::from_millis(500)))
                .expect("timeout");
            let mut open = Vec::new();
            while let Some(AppRequest::Subscribe { id, device }) = request(ws) {
                open.push((id, device));
            }
            assert_eq!(open.len(), SUBSCRIBE_WINDOW);
            ws.get_ref().set_read_timeout(Some(WAIT)).expect("timeout");
            let mut answered = 0;
            while answered < 100 {
                for (id, device) in open.drain(..) {
                    push(
                        ws,
                        &AppEvent::Subscribed {
                            id,
                            device,
                            online: true,
                        },
                    );
                    answered += 1;
                }
                if answered < 100 {
                    match request(ws) {
                        Some(AppRequest::Subscribe { id, device }) => open.push((id, device)),
                        other => panic!("expected a subscribe, got {other:?}"),
                    }
                }
            }
            until_closed(ws);
        },
    );
    let (out, _) = run_until(config(addr, devices.clone()), |live| {
        live.settled.load(Ordering::Relaxed) == 1
    });
    server.join().expect("server");
    let mut subscribed = out.subscribed.clone();
    subscribed.sort_unstable();
    assert_eq!(subscribed, devices);
    assert_eq!(out.tally.failure_total(), 0, "{:?}", out.tally.failures);
}

/// A CA, and a certificate for `localhost` it signed with its key.
fn test_pki() -> (
    CertificateDer<'static>,
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
) {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_key = KeyPair::generate().expect("key");
    let ca = params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("leaf");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (ca.der().clone(), leaf.der().clone(), key)
}

#[test]
fn wss_over_rustls_with_the_given_ca() {
    let (ca, leaf, key) = test_pki();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server_config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![leaf], key)
        .expect("server config");
    let server_config = Arc::new(server_config);
    let (addr, server) = serve(
        move |tcp| {
            let conn = ServerConnection::new(server_config).expect("server connection");
            StreamOwned::new(conn, tcp)
        },
        |ws| {
            accept_login(ws);
            match request(ws) {
                Some(AppRequest::Subscribe { id, device }) => {
                    push(
                        ws,
                        &AppEvent::Subscribed {
                            id,
                            device,
                            online: true,
                        },
                    );
                    push(ws, &pin(device, "V1", stamp(Duration::from_millis(2))));
                }
                other => panic!("expected a subscribe, got {other:?}"),
            }
            until_closed(ws);
        },
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut cfg = config(addr, vec![42]);
    cfg.url = format!("wss://localhost:{}/api/ws", addr.port());
    cfg.tls = Some(TlsClient {
        config: Arc::new(client_config),
        server_name: ServerName::try_from("localhost").expect("name"),
    });
    let (out, _) = run_until(cfg, |live| live.events.load(Ordering::Relaxed) >= 1);
    server.join().expect("server");
    assert_eq!(out.tally.failure_total(), 0, "{:?}", out.tally.failures);
    assert_eq!(out.subscribed, vec![42]);
    assert_eq!(out.tally.count(Count::EventsReceived), 1);
    assert_eq!(out.tally.get(Latency::EndToEnd).map(|h| h.len()), Some(1));
}
