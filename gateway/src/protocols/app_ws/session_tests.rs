//! Tests of the app session, with a tungstenite client context framing the app's side.

use super::*;
use crate::conn::ws_test_client::WsTestClient;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// The app's end: frames requests as a client would and reads the session's answers.
struct App {
    ws: WsTestClient,
}

impl App {
    fn new() -> Self {
        Self {
            ws: WsTestClient::new(),
        }
    }

    fn frame(&mut self, message: Message) -> Vec<u8> {
        self.ws.frame(message)
    }

    fn text(&mut self, json: &str) -> Vec<u8> {
        self.ws.text(json)
    }

    /// Every text message in the session's output, decoded.
    fn events(&mut self, session: &mut AppSession) -> Vec<AppEvent> {
        self.ws.json(&session.take_output())
    }
}

const HASH: &str = "sarIrBXpL1J9u4eyaVI2t3+dc1TVYXbDGJjLzjY8+rw=";

fn login(app: &mut App, session: &mut AppSession) {
    let mut actions = Vec::new();
    let bytes = app.text(&format!(
        r#"{{"type":"login","id":1,"email":"a@b.c","hash":"{HASH}"}}"#
    ));
    session.receive(&bytes, 10, &mut actions);
    assert_eq!(
        actions,
        [AppAction::Login {
            id: 1,
            email: "a@b.c".into(),
            hash: HASH.into()
        }]
    );
    session.logged_in("a@b.c".into(), "acme".into());
    let events = app.events(session);
    assert!(matches!(&events[..], [AppEvent::LoggedIn { id: 1, org, .. }] if org == "acme"));
}

#[test]
fn only_login_is_accepted_before_login() {
    let (mut app, mut session) = (App::new(), AppSession::new());
    let mut actions = Vec::new();
    let bytes = app.text(r#"{"type":"subscribe","id":4,"device":1}"#);
    session.receive(&bytes, 10, &mut actions);
    assert!(actions.is_empty());
    let events = app.events(&mut session);
    assert!(matches!(
        &events[..],
        [AppEvent::Error {
            id: Some(4),
            code: AppErrorCode::LoginFirst,
            ..
        }]
    ));
}

#[test]
fn a_failed_login_may_be_retried_and_a_good_one_opens_the_api() {
    let (mut app, mut session) = (App::new(), AppSession::new());
    let mut actions = Vec::new();
    let bytes = app.text(&format!(
        r#"{{"type":"login","id":1,"email":"a@b.c","hash":"{HASH}"}}"#
    ));
    session.receive(&bytes, 10, &mut actions);
    session.login_failed(AppErrorCode::Unauthorized, "wrong email or password");
    let events = app.events(&mut session);
    assert!(matches!(
        &events[..],
        [AppEvent::Error {
            id: Some(1),
            code: AppErrorCode::Unauthorized,
            ..
        }]
    ));
    assert!(!session.is_logged_in());
    login(&mut app, &mut session);
    assert!(session.is_logged_in());
    actions.clear();
    let bytes = app.text(r#"{"type":"devices","id":2,"after":7}"#);
    session.receive(&bytes, 10, &mut actions);
    assert_eq!(
        actions,
        [AppAction::ListDevices {
            id: 2,
            org: "acme".into(),
            after: Some(7)
        }]
    );
}

#[test]
fn subscriptions_are_capped_and_remembered_for_the_close() {
    let (mut app, mut session) = (App::new(), AppSession::new());
    login(&mut app, &mut session);
    let mut actions = Vec::new();
    for device in 1..=3 {
        let bytes = app.text(&format!(
            r#"{{"type":"subscribe","id":{device},"device":{device}}}"#
        ));
        session.receive(&bytes, 2, &mut actions);
    }
    // Requests still waiting for the store count: the third is refused without a lookup.
    assert_eq!(actions.len(), 2);
    assert!(matches!(
        app.events(&mut session).last(),
        Some(AppEvent::Error {
            id: Some(3),
            code: AppErrorCode::LimitReached,
            ..
        })
    ));
    assert!(session.subscribed(1, 1, true));
    session.subscribe_failed(2, AppErrorCode::NotFound, "no such device");
    actions.clear();
    let bytes = app.text(r#"{"type":"subscribe","id":4,"device":2}"#);
    session.receive(&bytes, 2, &mut actions);
    assert_eq!(actions.len(), 1, "a failed request frees its place");
    assert!(session.subscribed(4, 2, false));
    actions.clear();
    let bytes = app.text(r#"{"type":"subscribe","id":9,"device":9}"#);
    session.receive(&bytes, 2, &mut actions);
    assert!(actions.is_empty());
    let events = app.events(&mut session);
    assert!(matches!(
        events.last(),
        Some(AppEvent::Error {
            id: Some(9),
            code: AppErrorCode::LimitReached,
            ..
        })
    ));
    let mut subscribed: Vec<DeviceId> = session.subscriptions().collect();
    subscribed.sort_unstable();
    assert_eq!(subscribed, [1, 2]);
    let bytes = app.text(r#"{"type":"unsubscribe","id":10,"device":1}"#);
    session.receive(&bytes, 2, &mut actions);
    assert_eq!(actions, [AppAction::Unsubscribe { device: 1 }]);
    assert_eq!(session.subscriptions().collect::<Vec<_>>(), [2]);
}

#[test]
fn bad_json_is_answered_and_the_connection_stays() {
    let (mut app, mut session) = (App::new(), AppSession::new());
    let mut actions = Vec::new();
    let bytes = app.text(r#"{"type":"dance","id":5}"#);
    session.receive(&bytes, 10, &mut actions);
    let bytes = app.frame(Message::binary(vec![1, 2, 3]));
    session.receive(&bytes, 10, &mut actions);
    assert!(actions.is_empty());
    let events = app.events(&mut session);
    assert!(matches!(
        &events[..],
        [
            AppEvent::Error {
                id: Some(5),
                code: AppErrorCode::BadRequest,
                ..
            },
            AppEvent::Error {
                id: None,
                code: AppErrorCode::BadRequest,
                ..
            }
        ]
    ));
}

#[test]
fn an_oversize_message_closes_and_pings_are_answered() {
    let (mut app, mut session) = (App::new(), AppSession::new());
    let mut actions = Vec::new();
    let bytes = app.frame(Message::Ping(vec![7].into()));
    // Delivered in two pieces: the session keeps the partial frame.
    session.receive(&bytes[..3], 10, &mut actions);
    session.receive(&bytes[3..], 10, &mut actions);
    assert!(actions.is_empty());
    assert_eq!(
        app.ws.messages(&session.take_output()),
        [Message::Pong(vec![7].into())]
    );
    let big = "x".repeat(MAX_APP_MESSAGE_BYTES + 1);
    let bytes = app.text(&big);
    session.receive(&bytes, 10, &mut actions);
    assert!(matches!(
        &actions[..],
        [AppAction::Close(CloseReason::Malformed(_))]
    ));
}

#[test]
fn a_login_with_a_malformed_hash_is_refused_before_any_lookup() {
    let (mut app, mut session) = (App::new(), AppSession::new());
    let mut actions = Vec::new();
    let bytes = app.text(r#"{"type":"login","id":1,"email":"a@b.c","hash":"password"}"#);
    session.receive(&bytes, 10, &mut actions);
    assert!(actions.is_empty());
    assert!(matches!(
        &app.events(&mut session)[..],
        [AppEvent::Error {
            code: AppErrorCode::BadRequest,
            ..
        }]
    ));
}

#[test]
fn a_gateway_side_close_says_why_in_a_close_frame() {
    let (mut app, mut session) = (App::new(), AppSession::new());
    session.close(&CloseReason::HeartbeatTimeout { secs: 120 });
    match app.ws.messages(&session.take_output()).as_slice() {
        [Message::Close(Some(frame))] => {
            assert_eq!(frame.code, CloseCode::Away);
            assert!(frame.reason.contains("120 s"), "{}", frame.reason);
        }
        other => panic!("{other:?}"),
    }
    // Nothing is said to a peer that already left.
    let mut session = AppSession::new();
    session.close(&CloseReason::PeerClosed);
    assert!(session.take_output().is_empty());
}
