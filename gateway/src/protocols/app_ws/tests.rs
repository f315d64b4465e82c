//! Tests of the app WebSocket adapter: what it hands the worker pools, what it makes of their
//! answers (a verified or refused login, a device outside the user's organization, a full
//! pool), the per-address block, and the subscriptions it ends on close. Jobs run here against a
//! scripted store, so the operation they carry is the real one.

use super::*;
use crate::conn::ws_test_client::WsTestClient;
use crate::guard::account_failures::ACCOUNT_FREE_FAILURES;
use crate::protocols::testkit::TestShard;
use crate::protocols::{Outbox, WorkerStore};
use portcullis_operations::{Credential, LinkError, StoreAccess};
use portcullis_protocol::authz::{self, BuiltInRole, OrgId, OrgPath, UserId};
use portcullis_protocol::store::{Acting, Party, Request, Response, StoreError, TemplateId};

const PEER: &str = "127.0.0.9:5000";
const HASH: &str = "sarIrBXpL1J9u4eyaVI2t3+dc1TVYXbDGJjLzjY8+rw=";

/// The app's end of the socket: frames requests as a client does and reads the answers.
struct App {
    ws: WsTestClient,
}

impl App {
    fn new() -> Self {
        Self {
            ws: WsTestClient::new(),
        }
    }

    fn text(&mut self, json: &str) -> Vec<u8> {
        self.ws.text(json)
    }

    /// The app events in what the adapter put in the outbox.
    fn events(&mut self, out: &Outbox) -> Vec<AppEvent> {
        let wire: Vec<u8> = out.frames().flatten().copied().collect();
        self.ws.json(&wire)
    }
}

/// A store with one user-less world and one device, 7, in organization 2 ("acme"), which
/// only user 1 (ann, a member of it) sees: it hides like the real store.
struct Scripted;

/// A member of organization `org` (below the root) with the Staff role.
fn member(user: u64, org: u32, email: &str) -> Principal {
    let path = OrgPath::new(vec![OrgId::ROOT, OrgId(org)]).expect("a path");
    let actor = authz::Member {
        user: UserId(user),
        org: path,
        permissions: BuiltInRole::Staff.default_permissions(),
    };
    Principal::member(actor, email, Credential::Session, "127.0.0.9")
}

impl StoreAccess for Scripted {
    fn call_many(
        &mut self,
        acting: Option<&Acting>,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, StoreError>>, LinkError> {
        let ann = acting.is_some_and(|a| a.party == Party::User(UserId(1)));
        Ok(requests
            .into_iter()
            .map(|request| match request {
                Request::GetUser { .. } => Ok(Response::Credentials(None)),
                Request::GetDevice { device: 7 } if ann => Ok(Response::Device(DeviceRecord {
                    id: 7,
                    org: OrgId(2),
                    template: TemplateId::parse("TMPL1").expect("valid"),
                    owner: None,
                    name: "pump".into(),
                    created_ms: 0,
                    sessions: 1,
                    last_seen_ms: None,
                    last_addr: None,
                    info: None,
                })),
                Request::GetDevice { device } => {
                    Err(StoreError::NotFound(format!("device {device}")))
                }
                _ => Err(StoreError::Invalid("unexpected".into())),
            })
            .collect())
    }
}

/// Runs every job the last step queued against the scripted store.
fn run_jobs(out: &mut Outbox) -> Vec<(Pool, Done)> {
    out.jobs
        .drain(..)
        .map(|job| {
            let pool = job.pool;
            let WorkDone::AppWs(done) = (job.run)(&mut WorkerStore(&mut Scripted)) else {
                panic!("an app job answers the app session");
            };
            (pool, *done)
        })
        .collect()
}

fn login_request(app: &mut App, id: u32, email: &str) -> Vec<u8> {
    app.text(&format!(
        r#"{{"type":"login","id":{id},"email":"{email}","hash":"{HASH}"}}"#
    ))
}

/// A session logged in as ann of acme (the worker's verdict given directly).
fn logged_in(shard: &mut TestShard, app: &mut App) -> AppWsSession {
    let mut session = AppWsSession::new();
    let bytes = login_request(app, 1, "ann@acme.example");
    session.receive(&bytes, &mut shard.step(1, PEER));
    assert_eq!(shard.out.jobs.len(), 1);
    shard.out.jobs.clear();
    let done = Done::Login {
        id: 1,
        email: "ann@acme.example".into(),
        outcome: Ok(LoginOutcome::Verified(member(1, 2, "ann@acme.example"))),
    };
    session.on_work_done(done, &mut shard.step(1, PEER));
    assert!(shard.out.authenticated, "a verified login authenticates");
    assert!(session.is_logged_in());
    let events = app.events(&shard.out);
    assert!(
        matches!(&events[..], [AppEvent::LoggedIn { id: 1, org, .. }] if org == "2"),
        "{events:?}"
    );
    session
}

#[test]
fn a_login_is_checked_on_a_password_worker_and_a_refusal_is_unauthorized() {
    let mut shard = TestShard::new();
    let mut app = App::new();
    let mut session = AppWsSession::new();
    let bytes = login_request(&mut app, 4, "Nobody@Example.com");
    session.receive(&bytes, &mut shard.step(1, PEER));
    assert!(
        app.events(&shard.out).is_empty(),
        "no answer before the check"
    );
    let done = run_jobs(&mut shard.out);
    let [(Pool::Passwords, done)] = <[_; 1]>::try_from(done).expect("one job") else {
        panic!("the password check goes to the password pool");
    };
    let Done::Login { email, outcome, .. } = &done else {
        panic!("a login verdict: {done:?}");
    };
    assert_eq!(email, "nobody@example.com", "emails are normalized first");
    assert!(matches!(
        outcome,
        Ok(LoginOutcome::Refused(LoginRefusal::UnknownEmail))
    ));
    session.on_work_done(done, &mut shard.step(1, PEER));
    assert!(!shard.out.authenticated);
    assert!(!session.is_logged_in());
    let events = app.events(&shard.out);
    assert!(
        matches!(
            &events[..],
            [AppEvent::Error {
                code: AppErrorCode::Unauthorized,
                ..
            }]
        ),
        "{events:?}"
    );
    assert_eq!(shard.services.metrics.app_logins_refused.get(), 1);
}

#[test]
fn an_address_with_too_many_failures_is_refused_without_a_password_check() {
    let mut shard = TestShard::new();
    let mut app = App::new();
    let mut session = AppWsSession::new();
    let block_after = crate::config::Config::default()
        .app
        .login_block_after_failures;
    for id in 0..block_after {
        let bytes = login_request(&mut app, id, "ann@acme.example");
        session.receive(&bytes, &mut shard.step(1, PEER));
        let [(_, done)] = <[_; 1]>::try_from(run_jobs(&mut shard.out)).expect("one job");
        session.on_work_done(done, &mut shard.step(1, PEER));
    }
    let bytes = login_request(&mut app, 99, "ann@acme.example");
    session.receive(&bytes, &mut shard.step(1, PEER));
    assert!(
        shard.out.jobs.is_empty(),
        "a blocked address costs no argon2id"
    );
    let events = app.events(&shard.out);
    assert!(
        matches!(
            events.last(),
            Some(AppEvent::Error {
                code: AppErrorCode::Throttled,
                ..
            })
        ),
        "{events:?}"
    );
    // Another address may still try ann's account, until the failures from all addresses reach
    // the account's own bound…
    for id in 0..ACCOUNT_FREE_FAILURES - block_after {
        let bytes = login_request(&mut app, 200 + id, "ann@acme.example");
        session.receive(&bytes, &mut shard.step(1, "127.0.0.11:5000"));
        let [(_, done)] = <[_; 1]>::try_from(run_jobs(&mut shard.out)).expect("one job");
        session.on_work_done(done, &mut shard.step(1, "127.0.0.11:5000"));
    }
    // …then, from a third address, the account itself backs off (ann never logged in there)…
    let bytes = login_request(&mut app, 100, "ann@acme.example");
    session.receive(&bytes, &mut shard.step(1, "127.0.0.10:5000"));
    assert!(shard.out.jobs.is_empty(), "the account backs off");
    let events = app.events(&shard.out);
    assert!(
        matches!(
            events.last(),
            Some(AppEvent::Error { code: AppErrorCode::Throttled, message, .. })
                if message.contains("of this account")
        ),
        "{events:?}"
    );
    // …while that address logs in to other accounts.
    let bytes = login_request(&mut app, 101, "bob@acme.example");
    session.receive(&bytes, &mut shard.step(1, "127.0.0.10:5000"));
    assert_eq!(shard.out.jobs.len(), 1);
}

#[test]
fn a_device_outside_the_organization_answers_like_one_that_does_not_exist() {
    let mut shard = TestShard::new();
    let mut app = App::new();
    let mut session = logged_in(&mut shard, &mut app);

    // Device 7 is acme's: subscribed, and the shard is asked to watch it.
    let bytes = app.text(r#"{"type":"subscribe","id":2,"device":7}"#);
    session.receive(&bytes, &mut shard.step(1, PEER));
    let [(Pool::Operations, done)] = <[_; 1]>::try_from(run_jobs(&mut shard.out)).expect("one")
    else {
        panic!("lookups go to the operations pool");
    };
    session.on_work_done(done, &mut shard.step(1, PEER));
    assert!(matches!(shard.out.watch[..], [Watch::Subscribe(7)]));
    assert!(matches!(
        app.events(&shard.out)[..],
        [AppEvent::Subscribed {
            id: 2,
            device: 7,
            online: true
        }]
    ));

    // Device 8 does not exist; device 7 seen by a member of another organization is refused by
    // the operations layer the same way. Both answers are identical but for the id.
    let answer = |shard: &mut TestShard, app: &mut App, session: &mut AppWsSession, done| {
        session.on_work_done(done, &mut shard.step(1, PEER));
        assert!(shard.out.watch.is_empty(), "nothing to watch");
        app.events(&shard.out)
    };
    let bytes = app.text(r#"{"type":"subscribe","id":3,"device":8}"#);
    session.receive(&bytes, &mut shard.step(1, PEER));
    let [(_, missing)] = <[_; 1]>::try_from(run_jobs(&mut shard.out)).expect("one");
    let missing = answer(&mut shard, &mut app, &mut session, missing);
    let bob = member(2, 3, "bob@other.example");
    let hidden = Done::Subscribe {
        id: 3,
        device: 7,
        found: devices::get(&mut Scripted, &bob, 7),
    };
    let bytes = app.text(r#"{"type":"subscribe","id":3,"device":7}"#);
    session.receive(&bytes, &mut shard.step(1, PEER));
    shard.out.jobs.clear();
    let hidden = answer(&mut shard, &mut app, &mut session, hidden);
    assert!(
        matches!(
            &missing[..],
            [AppEvent::Error {
                id: Some(3),
                code: AppErrorCode::NotFound,
                ..
            }]
        ),
        "{missing:?}"
    );
    assert_eq!(missing, hidden);

    // On close, every subscription ends.
    session.on_close(&CloseReason::PeerClosed, &mut shard.step(1, PEER));
    assert!(matches!(shard.out.watch[..], [Watch::Unsubscribe(7)]));
}

#[test]
fn a_full_pool_is_answered_busy_and_the_session_goes_on() {
    let mut shard = TestShard::new();
    let mut app = App::new();
    let mut session = AppWsSession::new();
    let bytes = login_request(&mut app, 5, "ann@acme.example");
    session.receive(&bytes, &mut shard.step(1, PEER));
    let job = shard.out.jobs.pop().expect("a login job");
    let WorkDone::AppWs(refused) = job.refused else {
        panic!("an app job answers the app session");
    };
    let refused = *refused;
    assert!(matches!(
        refused,
        Done::Busy {
            id: 5,
            what: BusyJob::Login
        }
    ));
    session.on_work_done(refused, &mut shard.step(1, PEER));
    let events = app.events(&shard.out);
    assert!(
        matches!(
            &events[..],
            [AppEvent::Error {
                code: AppErrorCode::Busy,
                ..
            }]
        ),
        "{events:?}"
    );
    // The app may try again: the next login is checked.
    let bytes = login_request(&mut app, 6, "ann@acme.example");
    session.receive(&bytes, &mut shard.step(1, PEER));
    assert_eq!(shard.out.jobs.len(), 1);
}

#[test]
fn device_events_reach_only_a_logged_in_app() {
    let mut shard = TestShard::new();
    let mut app = App::new();
    let event = BusEvent::new(DeviceEvent::Online { device: 7 });
    let mut anonymous = AppWsSession::new();
    assert!(matches!(anonymous.on_event(&event), Delivery::Ignored));
    let mut session = logged_in(&mut shard, &mut app);
    assert!(matches!(
        session.on_event(&event),
        Delivery::Queued { first: true }
    ));
    session.flush(&mut shard.step(1, PEER));
    assert_eq!(
        app.events(&shard.out),
        [AppEvent::Online { device: 7 }],
        "rendered as the app API's JSON"
    );
}
