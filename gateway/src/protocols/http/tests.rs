//! The HTTP stage: keep-alive and pipelining, the phases its deadlines follow, refusals, and the
//! public ports' answers (404, the upgrade to the app WebSocket).

use super::*;
use crate::protocols::testkit::TestShard;

const PEER: &str = "192.0.2.9:5000";

/// A route table of one test route that answers 200 and keeps the connection when it may.
fn ok(_: &Request) -> Answer {
    Answer::Served(Response::text(200, "ok\n"))
}

fn status_of(answer: &[u8]) -> &str {
    std::str::from_utf8(&answer[9..12]).expect("a status line")
}

#[test]
fn pipelined_requests_are_each_answered_on_a_kept_connection() {
    let mut session = HttpSession::new(4096);
    let two = "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HT";
    let exchange = session.exchange(two.as_bytes(), ok);
    assert_eq!(exchange.answers.len(), 2);
    assert!(exchange.answers.iter().all(|a| status_of(a) == "200"));
    assert_eq!(
        exchange.used,
        two.len() - "GET /c HT".len(),
        "the third waits"
    );
    assert_eq!(
        exchange.outcome,
        Outcome::Waiting(Waiting::Request(Phase::Head))
    );
    // Nothing left over: the connection is idle between requests.
    let exchange = session.exchange(b"", ok);
    assert_eq!(exchange.outcome, Outcome::Waiting(Waiting::Idle));
    // A body is waited for, then the request is answered.
    let post = "POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab";
    let exchange = session.exchange(post.as_bytes(), ok);
    assert_eq!(
        exchange.outcome,
        Outcome::Waiting(Waiting::Request(Phase::Body))
    );
    let whole = format!("{post}cde");
    let exchange = session.exchange(whole.as_bytes(), ok);
    assert_eq!((exchange.answers.len(), exchange.used), (1, whole.len()));
}

#[test]
fn a_client_that_asks_to_close_gets_its_answer_then_the_close() {
    let mut session = HttpSession::new(4096);
    let request = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let exchange = session.exchange(request.as_bytes(), ok);
    let answer = String::from_utf8(exchange.answers[0].clone()).expect("ASCII");
    assert!(answer.contains("Connection: close\r\n"), "{answer}");
    assert!(matches!(
        exchange.outcome,
        Outcome::Close(CloseReason::Finished(_))
    ));
}

#[test]
fn a_refused_request_is_answered_with_its_status_and_closes() {
    let mut session = HttpSession::new(64);
    let exchange = session.exchange(b"GET / HTTP/1.1\r\n\r\n", ok);
    assert_eq!(status_of(&exchange.answers[0]), "400", "no Host header");
    assert!(matches!(
        exchange.outcome,
        Outcome::Close(CloseReason::HttpRefused { status: 400, .. })
    ));
    // A head over the limit is refused before it is complete.
    let mut session = HttpSession::new(64);
    let long = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n", "y".repeat(100));
    let exchange = session.exchange(long.as_bytes(), ok);
    assert_eq!(status_of(&exchange.answers[0]), "431");
    assert_eq!(exchange.used, long.len());
}

#[test]
fn expect_continue_is_answered_once() {
    let mut session = HttpSession::new(4096);
    let head = "PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    let exchange = session.exchange(head.as_bytes(), ok);
    assert_eq!(exchange.answers.len(), 1);
    assert_eq!(status_of(&exchange.answers[0]), "100");
    let again = session.exchange(head.as_bytes(), ok);
    assert!(again.answers.is_empty(), "100 Continue goes out once");
    let exchange = session.exchange(format!("{head}hi").as_bytes(), ok);
    assert_eq!(status_of(&exchange.answers[0]), "200");
}

#[test]
fn later_requests_follow_their_deadlines_and_a_trickle_cannot_extend_them() {
    let mut shard = TestShard::new();
    let mut session = HttpSession::new(4096);
    let request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    // The first request is under the connection's login deadline: nothing moves it.
    session.receive_with(&request.as_bytes()[..5], &mut shard.step(1, PEER), ok);
    assert_eq!(shard.out.deadline, None);
    assert_eq!(session.on_deadline(), CloseReason::LoginTimeout);
    session.receive_with(request.as_bytes(), &mut shard.step(1, PEER), ok);
    assert_eq!(shard.out.deadline, Some(KEEP_ALIVE_IDLE));
    // The next request's first bytes start its head deadline; more bytes of the same head
    // do not move it again.
    session.receive_with(b"GET /", &mut shard.step(1, PEER), ok);
    assert_eq!(shard.out.deadline, Some(HEAD_DEADLINE));
    session.receive_with(b"GET /slow", &mut shard.step(1, PEER), ok);
    assert_eq!(shard.out.deadline, None);
    assert!(matches!(
        session.on_deadline(),
        CloseReason::HttpTimeout {
            what: "request head",
            ..
        }
    ));
}

#[test]
fn the_public_ports_upgrade_to_the_app_websocket_and_refuse_anything_else() {
    let mut shard = TestShard::new();
    let upgrade = "GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let mut bytes = upgrade.as_bytes().to_vec();
    bytes.extend_from_slice(b"\x81\x85first-frame");
    let mut session = HttpSession::new(4096);
    let progress = session.receive(&bytes, &mut shard.step(1, PEER));
    assert_eq!(
        progress.used,
        upgrade.len(),
        "the WebSocket bytes are the app session's"
    );
    assert!(matches!(shard.out.upgrade, Some(Session::AppWs(_))));
    assert_eq!(
        shard.out.send_buffer,
        Some(shard.services.limits.app_socket_send_buffer_bytes)
    );
    assert!(shard.out.close.is_none());

    // A bad upgrade is refused and closes.
    for (request, status) in [
        ("GET /api/ws HTTP/1.1\r\nHost: x\r\n\r\n", 426),
        (
            "GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
            400,
        ),
    ] {
        let mut session = HttpSession::new(4096);
        session.receive(request.as_bytes(), &mut shard.step(2, PEER));
        let answer: Vec<&[u8]> = shard.out.frames().collect();
        assert_eq!(status_of(answer[0]), status.to_string(), "{request}");
        assert!(
            matches!(&shard.out.close, Some(CloseReason::HttpRefused { status: s, .. }) if *s == status),
            "{request}: {:?}",
            shard.out.close
        );
    }
}

#[test]
fn paths_not_served_are_answered_on_a_kept_connection_up_to_a_bound() {
    let mut shard = TestShard::new();
    let mut session = HttpSession::new(4096);
    let misses = [
        ("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
        (
            "POST /api/ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "405",
        ),
    ];
    for n in 1..MAX_MISSES_PER_CONNECTION {
        let (request, status) = misses[n as usize % 2];
        session.receive(request.as_bytes(), &mut shard.step(2, PEER));
        let answer = String::from_utf8(shard.out.frames().flatten().copied().collect::<Vec<u8>>())
            .expect("ASCII");
        assert_eq!(status_of(answer.as_bytes()), status, "{answer}");
        assert!(!answer.contains("Connection: close"), "kept: {answer}");
        assert!(shard.out.close.is_none(), "miss {n} keeps the connection");
    }
    session.receive(misses[0].0.as_bytes(), &mut shard.step(2, PEER));
    let answer = String::from_utf8(shard.out.frames().flatten().copied().collect::<Vec<u8>>())
        .expect("ASCII");
    assert!(answer.contains("Connection: close"), "{answer}");
    assert!(
        matches!(&shard.out.close, Some(CloseReason::HttpRefused { status: 404, why }) if why.contains("not served")),
        "{:?}",
        shard.out.close
    );
}

/// A route table whose every request goes to a worker (a REST call).
fn work(request: &Request) -> Answer {
    super::rest::call(super::rest::Endpoint::Me, &[], request)
}

/// A request the reader refuses behind one on a worker is answered after that one's answer,
/// and so is `100 Continue`: HTTP answers go out in order.
#[test]
fn a_refusal_behind_a_call_on_a_worker_waits_for_its_answer() {
    let mut shard = TestShard::new();
    let mut session = HttpSession::new(4096);
    let first = "GET /me HTTP/1.1\r\nHost: x\r\n\r\n";
    let exchange = session.exchange(first.as_bytes(), work);
    assert!(matches!(exchange.outcome, Outcome::Working(_)));
    let continued =
        "PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    let exchange = session.exchange(continued.as_bytes(), work);
    assert!(
        exchange.answers.is_empty(),
        "no 100 Continue before the answer"
    );
    // The held bytes come again with more: the PUT is complete (queued), then a request
    // without a Host is refused.
    let more = format!("{continued}hiGET / HTTP/1.1\r\n\r\n");
    let exchange = session.exchange(more.as_bytes(), work);
    assert!(exchange.answers.is_empty(), "the 400 waits for the answer");
    assert_eq!(
        exchange.outcome,
        Outcome::Waiting(Waiting::Request(Phase::Head))
    );
    let done = super::rest::Done {
        response: Response::text(200, "me\n"),
    };
    session.on_work_done(done, &mut shard.step(1, PEER));
    let sent: Vec<String> = shard
        .out
        .frames()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent[0].starts_with("HTTP/1.1 200"), "{sent:?}");
    assert!(
        sent[1].starts_with("HTTP/1.1 404"),
        "the PUT, not served: {sent:?}"
    );
    assert!(sent[2].starts_with("HTTP/1.1 400"), "{sent:?}");
    assert!(shard.out.close.is_some(), "then the connection closes");
}
