//! The Blynk adapter: the device connection's state machine, the login policy, store replies
//! (refusals of a full store queue included), presence, and the template admission of a device's
//! info message.

use super::*;
use crate::conn::ConnId;
use crate::protocols::testkit::TestShard;
use crate::protocols::{Outbox, StoreRequest};
use portcullis_protocol::Command;
use portcullis_protocol::frame::{Payload, decode};
use portcullis_protocol::store::{DeviceAuth, TemplateId};

const TOKEN: &[u8; 32] = b"0123456789abcdef0123456789abcdef";
const PEER: &str = "192.0.2.7:4000";
/// The template the store holds for the test device.
const TEMPLATE: &str = "TMPL1";

fn login_frame(msg_id: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    frame::encode(&mut bytes, Command::HardwareLogin, msg_id, TOKEN).expect("test fixture");
    bytes
}

fn statuses(out: &Outbox) -> Vec<(u16, Status)> {
    out.frames()
        .map(|bytes| match decode(bytes, usize::MAX) {
            Ok(Decoded::Frame { frame, .. }) => match frame.payload {
                Payload::Status(status) => (frame.msg_id, status),
                other => panic!("not a response: {other:?}"),
            },
            other => panic!("not a frame: {other:?}"),
        })
        .collect()
}

fn authenticated(device: DeviceId) -> StoreReply {
    Ok(Response::Authenticated(Some(DeviceAuth {
        device,
        org: portcullis_protocol::authz::OrgId::ROOT,
        template: TemplateId::parse(TEMPLATE).expect("test fixture"),
    })))
}

/// A session past its login, as the shard would have it.
fn logged_in(shard: &mut TestShard) -> BlynkSession {
    let mut session = BlynkSession::new();
    session.receive(&login_frame(1), &mut shard.step(3, PEER));
    session.on_store_reply(
        Pending::Login { msg_id: 1 },
        authenticated(42),
        &mut shard.step(3, PEER),
    );
    assert!(session.is_logged_in());
    session
}

#[test]
fn device_states_only_move_forward() {
    let s = BlynkSession::new()
        .upgrade(BlynkTransition::LoginSent { msg_id: 1 })
        .expect("a login leaves Login");
    assert!(matches!(s, BlynkSession::Authenticating { msg_id: 1 }));
    let s = s
        .upgrade(BlynkTransition::Authenticated(DeviceSession::new(
            4,
            Arc::from("TMPL1"),
        )))
        .expect("the store's answer leaves Authenticating");
    assert!(s.is_logged_in());
    assert_eq!(s.device(), Some(4));
    // Going back is refused, as an internal error.
    assert!(matches!(
        s.upgrade(BlynkTransition::LoginSent { msg_id: 2 }),
        Err(CloseReason::Internal(_))
    ));
    assert!(
        BlynkSession::new()
            .upgrade(BlynkTransition::Authenticated(DeviceSession::new(
                4,
                Arc::from("TMPL1")
            )))
            .is_err(),
        "no device session without a login"
    );
}

#[test]
fn a_login_asks_the_store_and_holds_later_frames_until_the_answer() {
    let mut shard = TestShard::new();
    let mut session = BlynkSession::new();
    let mut input = login_frame(7);
    let login_len = input.len();
    frame::encode(&mut input, Command::Ping, 8, b"").expect("test fixture");
    let progress = session.receive(&input, &mut shard.step(3, PEER));
    assert_eq!(
        progress,
        Progress {
            used: login_len,
            paused: false
        },
        "the PING waits for the store's answer"
    );
    assert!(matches!(
        session,
        BlynkSession::Authenticating { msg_id: 7 }
    ));
    assert!(matches!(
        &shard.out.store[..],
        [StoreRequest::Call {
            request: Request::Authenticate { .. },
            then: Continuation::Blynk(Pending::Login { msg_id: 7 })
        }]
    ));
    assert!(
        !shard.out.has_frames(),
        "nothing is answered before the store"
    );

    session.on_store_reply(
        Pending::Login { msg_id: 7 },
        authenticated(42),
        &mut shard.step(3, PEER),
    );
    assert_eq!(statuses(&shard.out), vec![(7, Status::Ok)]);
    assert!(shard.out.authenticated);
    assert!(
        shard.out.deadline.is_some(),
        "the heartbeat deadline starts"
    );
    match &shard.out.store[..] {
        [
            StoreRequest::Record(Request::SetPresence {
                device: 42,
                presence: Presence::Online { addr, session },
                ..
            }),
        ] => {
            assert_eq!(addr, PEER);
            assert_eq!(
                *session,
                shard.services.session_tag(ConnId {
                    slot: 3,
                    generation: 1
                })
            );
        }
        other => panic!("{other:?}"),
    }
    // Now the held PING goes through.
    let progress = session.receive(&input[login_len..], &mut shard.step(3, PEER));
    assert_eq!(progress.used, input.len() - login_len);
    assert_eq!(statuses(&shard.out), vec![(8, Status::Ok)]);
}

#[test]
fn unknown_malformed_and_throttled_logins_are_refused_and_counted() {
    let mut shard = TestShard::new();
    // A token the store does not know.
    let mut session = BlynkSession::new();
    session.receive(&login_frame(1), &mut shard.step(1, PEER));
    session.on_store_reply(
        Pending::Login { msg_id: 1 },
        Ok(Response::Authenticated(None)),
        &mut shard.step(1, PEER),
    );
    assert_eq!(statuses(&shard.out), vec![(1, Status::InvalidToken)]);
    assert_eq!(shard.out.close, Some(CloseReason::InvalidToken));
    assert_eq!(shard.services.metrics.logins(LoginResult::InvalidToken), 1);
    // Not a token at all: refused without asking the store.
    let mut session = BlynkSession::new();
    let mut bad = Vec::new();
    frame::encode(&mut bad, Command::HardwareLogin, 2, b"short").expect("test fixture");
    session.receive(&bad, &mut shard.step(2, PEER));
    assert!(shard.out.store.is_empty());
    assert_eq!(shard.out.close, Some(CloseReason::InvalidToken));
    assert_eq!(
        shard.services.metrics.logins(LoginResult::MalformedToken),
        1
    );
    // Enough failures from one address and the next login is not even looked at.
    for _ in 0..20 {
        let ip = PEER.parse::<SocketAddr>().expect("test fixture").ip();
        shard
            .services
            .guards
            .throttle()
            .record_failure(ip, shard.services.now);
    }
    let mut session = BlynkSession::new();
    session.receive(&login_frame(3), &mut shard.step(3, PEER));
    assert!(
        shard.out.store.is_empty(),
        "a throttled login costs no store call"
    );
    assert_eq!(statuses(&shard.out), vec![(3, Status::QuotaLimit)]);
    assert!(matches!(
        shard.out.close,
        Some(CloseReason::LoginThrottled { .. })
    ));
    assert_eq!(shard.services.metrics.logins(LoginResult::Throttled), 1);
}

#[test]
fn a_full_store_queue_answers_what_waits_for_a_reply() {
    let mut shard = TestShard::new();
    let mut session = BlynkSession::new();
    session.receive(&login_frame(1), &mut shard.step(1, PEER));
    session.on_store_reply(
        Pending::Login { msg_id: 1 },
        Err(StoreFailure::QueueFull),
        &mut shard.step(1, PEER),
    );
    assert_eq!(statuses(&shard.out), vec![(1, Status::ServerError)]);
    assert_eq!(shard.out.close, Some(CloseReason::StoreUnavailable));
    assert_eq!(
        shard.services.metrics.logins(LoginResult::StoreError),
        0,
        "a refusal of our own queue is counted by the shard, not as a store failure"
    );

    let mut device = logged_in(&mut shard);
    for pending in [
        Pending::Sync {
            msg_id: 7,
            filter: SyncFilter::Everything,
        },
        Pending::Property { msg_id: 8 },
    ] {
        device.on_store_reply(
            pending,
            Err(StoreFailure::QueueFull),
            &mut shard.step(3, PEER),
        );
        assert_eq!(shard.out.close, None, "a logged-in device stays connected");
        assert!(matches!(
            &statuses(&shard.out)[..],
            [(_, Status::ServerError)]
        ));
    }
}

#[test]
fn frames_become_store_requests_by_class_and_the_close_takes_presence_away() {
    let mut shard = TestShard::new();
    let mut session = logged_in(&mut shard);
    let mut input = Vec::new();
    for (command, args) in [
        (Command::Hardware, vec![&b"vw"[..], b"5", b"42"]),
        (Command::HardwareSync, vec![&b"vr"[..], b"5"]),
        (Command::Property, vec![&b"5"[..], b"label", b"Temp"]),
        (
            Command::Internal,
            vec![&b"ver"[..], b"1.0", b"h-beat", b"30"],
        ),
    ] {
        frame::encode_args(&mut input, command, 9, &args).expect("test fixture");
    }
    session.receive(&input, &mut shard.step(3, PEER));
    let now_ms = shard.services.now_ms;
    match &shard.out.store[..] {
        [
            StoreRequest::Telemetry(PinWrite {
                device: 42,
                value,
                at_ms,
                ..
            }),
            StoreRequest::Call {
                request: Request::ReadPins { device: 42, .. },
                then: Continuation::Blynk(Pending::Sync { msg_id: 9, .. }),
            },
            StoreRequest::Call {
                request: Request::WriteProperty { device: 42, .. },
                then: Continuation::Blynk(Pending::Property { msg_id: 9 }),
            },
            StoreRequest::BestEffort(Request::SetInfo { device: 42, .. }),
        ] => assert_eq!((value.as_slice(), *at_ms), (&b"42"[..], now_ms)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        shard.out.deadline,
        Some(Duration::from_secs(69)),
        "activity moves the deadline to the announced heartbeat (30 s × 2.3)"
    );
    session.on_close(&mut shard.step(3, PEER));
    assert!(matches!(
        &shard.out.store[..],
        [StoreRequest::Record(Request::SetPresence {
            device: 42,
            presence: Presence::Offline { .. },
            ..
        })]
    ));
}

/// An info message announcing `args` (key, value, ...), as frame `msg_id`, then a PING.
fn info_then_ping(msg_id: u16, args: &[&[u8]]) -> Vec<u8> {
    let mut input = Vec::new();
    frame::encode_args(&mut input, Command::Internal, msg_id, args).expect("test fixture");
    frame::encode(&mut input, Command::Ping, msg_id + 1, b"").expect("test fixture");
    input
}

fn stores_info(out: &Outbox) -> bool {
    out.store
        .iter()
        .any(|r| matches!(r, StoreRequest::BestEffort(Request::SetInfo { .. })))
}

#[test]
fn an_info_announcing_the_devices_own_template_is_admitted() {
    let mut shard = TestShard::new();
    let mut session = logged_in(&mut shard);
    let input = info_then_ping(5, &[b"ver", b"1.3.2", b"tmpl", TEMPLATE.as_bytes()]);
    session.receive(&input, &mut shard.step(3, PEER));
    assert_eq!(shard.out.close, None);
    assert_eq!(statuses(&shard.out), vec![(5, Status::Ok), (6, Status::Ok)]);
    assert!(stores_info(&shard.out));
    assert_eq!(shard.services.metrics.template_mismatches.get(), 0);
}

#[test]
fn an_info_announcing_no_template_is_admitted() {
    let mut shard = TestShard::new();
    let mut session = logged_in(&mut shard);
    for args in [
        &[&b"ver"[..], b"0.6.1", b"h-beat", b"10"][..],
        // An empty `tmpl` announces none either.
        &[&b"ver"[..], b"0.6.1", b"tmpl", b""][..],
    ] {
        session.receive(&info_then_ping(5, args), &mut shard.step(3, PEER));
        assert_eq!(shard.out.close, None);
        assert_eq!(statuses(&shard.out), vec![(5, Status::Ok), (6, Status::Ok)]);
        assert!(stores_info(&shard.out));
    }
    assert_eq!(shard.services.metrics.template_mismatches.get(), 0);
}

#[test]
fn an_info_announcing_another_template_closes_without_storing_it() {
    let mut shard = TestShard::new();
    let mut session = logged_in(&mut shard);
    let input = info_then_ping(5, &[b"h-beat", b"60", b"tmpl", b"TMPLother\"\x1b[2J"]);
    let progress = session.receive(&input, &mut shard.step(3, PEER));
    assert_eq!(
        progress.used,
        input.len(),
        "nothing after the refusal is read"
    );
    match &shard.out.close {
        Some(CloseReason::TemplateMismatch(m)) => {
            // Control characters are gone already (the info parser drops them); quotes escaped.
            assert_eq!(m.announced, r#"TMPLother\"[2J"#, "peer text is escaped");
            assert_eq!(m.expected, TEMPLATE);
        }
        other => panic!("expected a template mismatch, got {other:?}"),
    }
    assert!(
        !stores_info(&shard.out),
        "the refused device's info is not stored"
    );
    assert!(
        statuses(&shard.out).is_empty(),
        "neither the info nor the PING after it is answered"
    );
    assert_eq!(shard.services.metrics.template_mismatches.get(), 1);
    // The close then takes the device's presence away as for any other close.
    session.on_close(&mut shard.step(3, PEER));
    assert!(matches!(
        &shard.out.store[..],
        [StoreRequest::Record(Request::SetPresence {
            presence: Presence::Offline { .. },
            ..
        })]
    ));
}
