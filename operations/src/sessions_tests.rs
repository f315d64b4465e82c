//! Tests of [`crate::sessions`]: the login verdicts, their cost, sessions and bearer lookups.

use super::*;
use crate::error::Fault;
use crate::password::hash_client_hash;
use crate::scripted::ScriptedStore;
use crate::store_access::Answer;
use portcullis_protocol::app::client_hash;
use portcullis_protocol::authz::{self, BuiltInRole, OrgPath, RoleId, UserId};
use portcullis_protocol::store::{SessionSubject, StoreError, UserRecord};

fn ann(status: UserStatus) -> UserRecord {
    UserRecord {
        id: UserId(7),
        email: "ann@a.example".into(),
        name: "Ann".into(),
        org: portcullis_protocol::authz::OrgId::ROOT,
        role: RoleId(1),
        status,
        created_ms: 1,
    }
}

fn member() -> authz::Member {
    authz::Member {
        user: UserId(7),
        org: OrgPath::root(),
        permissions: BuiltInRole::Admin.default_permissions(),
    }
}

fn store_with(
    phc: Option<String>,
    status: UserStatus,
) -> ScriptedStore<impl FnMut(&Request) -> Answer> {
    ScriptedStore::new(move |request| match request {
        Request::GetUser { email } if email == "ann@a.example" => {
            Ok(Response::Credentials(Some(Box::new(Credentials {
                user: ann(status),
                password_phc: phc.clone(),
                member: member(),
            }))))
        }
        Request::GetUser { .. } => Ok(Response::Credentials(None)),
        Request::CreateSession { .. } => Ok(Response::Done),
        _ => Err(StoreError::Invalid("unexpected".into())),
    })
}

#[test]
fn a_matching_hash_of_an_active_user_makes_a_member_and_everything_else_is_refused() {
    let good = client_hash("correct horse", "ann@a.example");
    let phc = hash_client_hash(&good).expect("hashes");
    let mut store = store_with(Some(phc.clone()), UserStatus::Active);
    let LoginOutcome::Verified(principal) =
        verify(&mut store, " ANN@a.example", &good, "192.0.2.9").expect("checked")
    else {
        panic!("verified expected")
    };
    let member = principal.as_member().expect("a member");
    assert_eq!((member.user(), member.from()), (UserId(7), "192.0.2.9"));
    assert!(
        matches!(&store.requests[0], Request::GetUser { email } if email == "ann@a.example"),
        "the store is asked for the normalized email"
    );
    assert!(store.acting[0].is_none(), "a login acts for nobody");
    let wrong = client_hash("wrong horse", "ann@a.example");
    let refused = verify(&mut store, "ann@a.example", &wrong, "x").expect("checked");
    assert_eq!(refused, LoginOutcome::Refused(LoginRefusal::WrongPassword));
    let unknown = verify(&mut store, "nobody@a.example", &good, "x").expect("checked");
    assert_eq!(unknown, LoginOutcome::Refused(LoginRefusal::UnknownEmail));
    assert!(!LoginRefusal::UnknownEmail.known_user());

    for status in [UserStatus::Unverified, UserStatus::Suspended] {
        let mut inactive = store_with(Some(phc.clone()), status);
        let refused = verify(&mut inactive, "ann@a.example", &good, "x").expect("checked");
        assert_eq!(
            refused,
            LoginOutcome::Refused(LoginRefusal::Inactive(status))
        );
    }
    let mut invited = store_with(None, UserStatus::Invited);
    let refused = verify(&mut invited, "ann@a.example", &good, "x").expect("checked");
    assert_eq!(
        refused,
        LoginOutcome::Refused(LoginRefusal::Inactive(UserStatus::Invited))
    );
    let mut broken = store_with(Some("not a phc string".into()), UserStatus::Active);
    let unusable = verify(&mut broken, "ann@a.example", &good, "x").expect("checked");
    assert_eq!(unusable, LoginOutcome::Refused(LoginRefusal::UnusableHash));
}

/// The unknown email must cost what a wrong password costs. The bound is loose because a
/// shared machine is noisy; skipping argon2 would make it thousands of times faster.
#[test]
fn an_unknown_email_costs_a_full_check() {
    let good = client_hash("correct horse", "ann@a.example");
    let mut store = store_with(
        Some(hash_client_hash(&good).expect("hashes")),
        UserStatus::Active,
    );
    let started = std::time::Instant::now();
    verify(&mut store, "ann@a.example", "x", "x").expect("checked");
    let known = started.elapsed();
    let started = std::time::Instant::now();
    verify(&mut store, "nobody@a.example", "x", "x").expect("checked");
    let unknown = started.elapsed();
    assert!(
        unknown * 20 > known,
        "unknown {unknown:?} vs known {known:?}"
    );
}

#[test]
fn a_login_stores_only_the_hash_of_its_session_token() {
    let good = client_hash("correct horse", "ann@a.example");
    let mut store = store_with(
        Some(hash_client_hash(&good).expect("hashes")),
        UserStatus::Active,
    );
    let session = login(
        &mut store,
        "ann@a.example",
        &good,
        "x",
        DEFAULT_SESSION_TTL,
        1000,
    )
    .expect("store answers")
    .expect("logged in");
    assert_eq!(
        session.expires_ms,
        1000 + DEFAULT_SESSION_TTL.as_millis() as u64
    );
    let Request::CreateSession {
        user, token_hash, ..
    } = &store.requests[1]
    else {
        panic!("{:?}", store.requests[1]);
    };
    assert_eq!((*user, *token_hash), (UserId(7), session.token.hash()));
    assert!(!format!("{:?}", store.requests).contains(session.token.expose()));
    let refused = login(
        &mut store,
        "ann@a.example",
        "bad",
        "x",
        DEFAULT_SESSION_TTL,
        1000,
    )
    .expect("store answers");
    assert!(matches!(refused, Err(LoginRefusal::WrongPassword)));
}

#[test]
fn bearers_resolve_through_the_store_and_garbage_never_reaches_it() {
    let token = Secret::generate().expect("random");
    let hash = token.hash();
    let mut store = ScriptedStore::new(move |request| match request {
        Request::ResolveSession { token_hash } if *token_hash == hash => {
            Ok(Response::Session(Some(Box::new(SessionSubject {
                user: ann(UserStatus::Active),
                member: member(),
                expires_ms: 5,
            }))))
        }
        Request::ResolveSession { .. } | Request::UseApiKey { .. } => match request {
            Request::UseApiKey { .. } => Ok(Response::KeyUse(None)),
            _ => Ok(Response::Session(None)),
        },
        _ => Err(StoreError::Invalid("unexpected".into())),
    });
    let principal = authenticate(&mut store, token.expose(), "x").expect("a session");
    assert_eq!(principal.as_member().map(|m| m.user()), Some(UserId(7)));
    let other = Secret::generate().expect("random");
    let refused = authenticate(&mut store, other.expose(), "x").expect_err("unknown");
    assert_eq!(refused.fault(), Fault::Caller);
    let key = format!("pk_3_{}", other.expose());
    let refused_key = authenticate(&mut store, &key, "x").expect_err("unknown key");
    assert_eq!(
        refused.to_string(),
        refused_key.to_string(),
        "one refusal for all"
    );
    let asked = store.requests.len();
    assert!(authenticate(&mut store, "garbage", "x").is_err());
    assert_eq!(
        store.requests.len(),
        asked,
        "garbage is refused without a lookup"
    );
}

#[test]
fn a_store_failure_is_an_error_not_a_verdict() {
    let mut down = store_with(None, UserStatus::Active).down();
    let error = verify(&mut down, "ann@a.example", "x", "x").expect_err("down");
    assert_eq!(error.fault(), Fault::StoreUnavailable);
}
