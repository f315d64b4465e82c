//! The revocation feed through the store: every revoking change appends its entry in order, a
//! refused change appends none, and a reader that missed entries (expired, or a cursor from
//! another data directory) is told so with `gap`.

use super::account_tests::{as_, user, world};
use super::tests::{AsOperator, hash};
use super::*;
use portcullis_protocol::store::{REVOCATION_RETENTION_MS, Revoked, UserChange, UserStatus};

#[test]
fn every_revocation_is_in_the_feed_in_order_and_a_missed_entry_is_a_gap() {
    let w = world();
    let feed = |after: u64| match w.s.handle(Request::Revocations { after }) {
        Ok(Response::Revocations(page)) => page,
        other => panic!("{other:?}"),
    };
    let baseline = feed(0);
    assert_eq!((baseline.next, baseline.gap), (0, false));
    assert!(baseline.revoked.is_empty());
    let (_, staff, plain) = w.users[0];
    let reprovision = Request::ReprovisionDevice {
        device: w.dev_a,
        token_hash: hash(9),
    };
    assert!(as_(&w.s, &user(staff), reprovision).is_ok());
    let suspend = Request::UpdateUser {
        user: plain,
        change: UserChange {
            status: Some(UserStatus::Suspended),
            ..UserChange::default()
        },
    };
    assert!(as_(&w.s, &user(staff), suspend).is_ok());
    w.s.handle(Request::CreateSession {
        user: staff,
        token_hash: [60; 32],
        expires_ms: unix_ms() + 60_000,
    })
    .expect("session");
    let logout = Request::RevokeSessions {
        user: staff,
        only: Some([60; 32]),
    };
    assert!(as_(&w.s, &user(staff), logout).is_ok());
    // A refused change revokes nothing.
    let refused = Request::DeleteDevice { device: w.dev_b };
    assert!(as_(&w.s, &user(staff), refused).is_err());
    assert_eq!(
        w.s.op(Request::DeleteDevice { device: w.dev_a1 }),
        Ok(Response::Done)
    );
    let page = feed(0);
    assert_eq!(
        page.revoked,
        vec![
            Revoked::Device(w.dev_a),
            Revoked::User(plain),
            Revoked::Session([60; 32]),
            Revoked::Device(w.dev_a1),
        ]
    );
    assert_eq!((page.next, page.gap), (4, false));
    let rest = feed(2);
    assert_eq!(rest.revoked, page.revoked[2..].to_vec());
    assert_eq!((rest.next, rest.gap), (4, false));
    let caught_up = feed(4);
    assert!(caught_up.revoked.is_empty() && !caught_up.gap && caught_up.next == 4);
    // A cursor from beyond this store's feed missed everything it cannot know.
    let foreign = feed(40);
    assert!(foreign.gap && foreign.next == 4);
    // Past the retention, a reader that had not read them yet learns it missed them.
    let later = unix_ms() + REVOCATION_RETENTION_MS + 1;
    let view = group::Committed(w.s.engine());
    let stale = revocations::read(&view, 1, later).expect("read");
    assert!(stale.revoked.is_empty() && stale.gap && stale.next == 4);
    assert!(!revocations::read(&view, 0, later).expect("read").gap);
}
