//! The revocation poller: the starting-point rule without IO, then the poll loop against the
//! store client's fake store — it polls from its baseline, forwards pages, counts gaps, and
//! survives a store that is absent, then hangs up, without losing its cursor.

use super::*;
use portcullis_protocol::authz::UserId;
use portcullis_protocol::store::StoreError;
use portcullis_store_client::fake_store::serving;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

/// Long enough for a few polls and retries on a loaded test machine.
const WAIT: Duration = Duration::from_secs(10);

fn page(next: u64, revoked: Vec<Revoked>) -> RevocationPage {
    RevocationPage {
        next,
        revoked,
        gap: false,
    }
}

fn hello() -> ClientHello {
    ClientHello::new(
        NodeName::from_static("test"),
        ClientRole::DeviceTraffic(TrafficLink::Control),
    )
}

fn connect_to(path: PathBuf) -> Result<StoreClient, StoreClientError> {
    StoreClient::connect(&path, hello(), REVOCATION_CALL_TIMEOUT)
}

/// Runs a poller on its own thread; returns what it forwards and the handle that stops it.
fn run_poller(
    connect: impl FnMut() -> Result<StoreClient, StoreClientError> + Send + 'static,
    state: FeedState,
    metrics: Arc<GlobalMetrics>,
) -> (Receiver<Arc<[Revoked]>>, PollerHandle) {
    let (pages, forwarded) = mpsc::channel();
    let sink = move |page: Arc<[Revoked]>| {
        let _ = pages.send(page);
    };
    let (stop, stopped) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        RevocationPoller::new(connect, sink, state, metrics).run(&stopped)
    });
    (forwarded, PollerHandle { stop, thread })
}

#[test]
fn the_baseline_ignores_what_was_revoked_before_and_catches_up_through_full_pages() {
    let mut state = FeedState::new();
    assert_eq!(state.request(), Request::Revocations { after: 0 });
    let full = vec![Revoked::Device(1); MAX_REVOCATIONS_PAGE as usize];
    let outcome = state.on_page(page(10_000, full));
    assert_eq!(outcome.forward, Vec::new(), "older revocations end nothing");
    assert!(outcome.more, "a full page means more to read at once");
    assert_eq!(state.cursor(), Cursor::CatchingUp(10_000));
    assert!(!state.has_baseline());
    assert_eq!(state.request(), Request::Revocations { after: 10_000 });
    let outcome = state.on_page(page(10_004, vec![Revoked::Device(2)]));
    assert!(outcome.forward.is_empty() && !outcome.more);
    assert_eq!(state.cursor(), Cursor::At(10_004));
    // From here on every entry goes to the shards, a gap is reported, and the cursor moves.
    let mut gapped = page(10_006, vec![Revoked::Device(3), Revoked::User(UserId(9))]);
    gapped.gap = true;
    let outcome = state.on_page(gapped);
    assert_eq!(
        outcome.forward,
        vec![Revoked::Device(3), Revoked::User(UserId(9))]
    );
    assert!(outcome.gap && !outcome.more);
    assert_eq!(state.request(), Request::Revocations { after: 10_006 });
}

#[test]
fn baseline_on_the_start_up_link_takes_the_newest_sequence() {
    let (_dir, path, _server) = serving(|request| match request {
        Request::Revocations { after: 0 } => {
            Ok(Response::Revocations(page(41, vec![Revoked::Device(5)])))
        }
        other => Err(StoreError::Invalid(format!("unexpected {other:?}"))),
    });
    let mut client = connect_to(path).expect("connects");
    let state = baseline(&mut client).expect("baseline");
    assert_eq!(state.cursor(), Cursor::At(41));
}

#[test]
fn it_polls_from_the_baseline_forwards_pages_and_counts_gaps() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let (_dir, path, _server) = serving(move |request| {
        let Request::Revocations { after } = request else {
            return Err(StoreError::Invalid("only Revocations".into()));
        };
        seen.lock().expect("test lock").push(after);
        let answer = match after {
            0 => page(5, vec![Revoked::Device(1)]),
            5 => RevocationPage {
                next: 7,
                revoked: vec![Revoked::Device(42), Revoked::User(UserId(7))],
                gap: true,
            },
            n => page(n, Vec::new()),
        };
        Ok(Response::Revocations(answer))
    });
    let metrics = Arc::new(GlobalMetrics::default());
    let (forwarded, handle) = run_poller(
        move || connect_to(path.clone()),
        FeedState::new(),
        metrics.clone(),
    );
    let first = forwarded
        .recv_timeout(WAIT)
        .expect("a page reaches the shards");
    assert_eq!(
        &first[..],
        &[Revoked::Device(42), Revoked::User(UserId(7))],
        "the baseline's entries are not forwarded"
    );
    // Wait for a poll after the page, so the cursor is seen to have moved.
    let deadline = Instant::now() + WAIT;
    while !asked.lock().expect("test lock").contains(&7) {
        assert!(Instant::now() < deadline, "the cursor never moved to 7");
        std::thread::sleep(Duration::from_millis(20));
    }
    handle.stop();
    let asked = asked.lock().expect("test lock").clone();
    assert_eq!(&asked[..3], &[0, 5, 7]);
    assert!(asked[3..].iter().all(|&after| after == 7));
    assert!(forwarded.try_recv().is_err(), "empty pages are not sent");
    assert_eq!(metrics.revocation_gaps.load(Ordering::Relaxed), 1);
    assert_eq!(
        metrics.revocations_received[RevokedKind::Device as usize].load(Ordering::Relaxed),
        1
    );
    assert_eq!(
        metrics.revocations_received[RevokedKind::User as usize].load(Ordering::Relaxed),
        1
    );
    assert!(metrics.revocation_feed_up.load(Ordering::Relaxed));
}

#[test]
fn it_survives_an_absent_then_vanishing_store_and_keeps_its_cursor() {
    // Store A answers the baseline and one poll, then hangs up.
    let polls_a = Arc::new(AtomicUsize::new(0));
    let counted = polls_a.clone();
    let (_dir_a, path_a, _server_a) = portcullis_store_client::fake_store::spawn(
        portcullis_protocol::store::ServerHello::Accepted {
            version: portcullis_protocol::store::WIRE_VERSION,
        },
        move |envelope| {
            let reply = match envelope.request {
                Request::Revocations { after: 0 } => page(20, vec![Revoked::Device(1)]),
                Request::Revocations { after: 20 }
                    if counted.fetch_add(1, Ordering::SeqCst) == 0 =>
                {
                    page(20, Vec::new())
                }
                _ => return None,
            };
            Some(portcullis_protocol::store::ReplyEnvelope {
                id: envelope.id,
                result: Ok(Response::Revocations(reply)),
            })
        },
    );
    // Store B, reached after A is gone, must be asked from A's cursor, not from the start.
    let asked_b = Arc::new(Mutex::new(Vec::new()));
    let seen = asked_b.clone();
    let (_dir_b, path_b, _server_b) = serving(move |request| {
        let Request::Revocations { after } = request else {
            return Err(StoreError::Invalid("only Revocations".into()));
        };
        seen.lock().expect("test lock").push(after);
        Ok(Response::Revocations(if after == 20 {
            page(21, vec![Revoked::Device(42)])
        } else {
            page(after, Vec::new())
        }))
    });
    let attempts = Arc::new(AtomicUsize::new(0));
    let tried = attempts.clone();
    let missing = path_a.with_file_name("absent.sock");
    let connect = move || match tried.fetch_add(1, Ordering::SeqCst) {
        // Nothing listens yet: the store is down at the first attempt.
        0 => connect_to(missing.clone()),
        1 => connect_to(path_a.clone()),
        _ => connect_to(path_b.clone()),
    };
    let metrics = Arc::new(GlobalMetrics::default());
    let started = Instant::now();
    let (forwarded, handle) = run_poller(connect, FeedState::new(), metrics.clone());
    let first = forwarded
        .recv_timeout(WAIT)
        .expect("the page of store B reaches the shards");
    assert_eq!(&first[..], &[Revoked::Device(42)]);
    assert!(
        started.elapsed() < RETRY_MAX,
        "the back-off starts short: {:?}",
        started.elapsed()
    );
    handle.stop();
    assert!(attempts.load(Ordering::SeqCst) >= 3);
    assert_eq!(
        asked_b.lock().expect("test lock").first(),
        Some(&20),
        "the cursor survives the reconnect"
    );
    assert!(metrics.revocation_feed_up.load(Ordering::Relaxed));
}

#[test]
fn a_store_that_refuses_the_feed_is_retried_with_back_off() {
    let (_dir, path, _server) = serving(|_| Err(StoreError::Invalid("unknown request".into())));
    let metrics = Arc::new(GlobalMetrics::default());
    let mut poller = RevocationPoller::new(
        move || connect_to(path.clone()),
        |_page: Arc<[Revoked]>| panic!("nothing to forward"),
        FeedState::new(),
        metrics.clone(),
    );
    let waits: Vec<Duration> = (0..6).map(|_| poller.poll_once()).collect();
    assert_eq!(
        waits,
        [250, 500, 1000, 2000, 4000, 5000].map(Duration::from_millis)
    );
    assert!(!metrics.revocation_feed_up.load(Ordering::Relaxed));
}
