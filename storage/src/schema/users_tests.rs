//! Users and the org filter of `ListDevices`, each behaviour run against both engines (the
//! in-memory one and RocksDB in a temporary directory), plus the RocksDB-only rules: a user
//! survives a reopen, and a data directory from before the `users` family gains it on open.

use super::tests::{hash, invalid};
use super::users::MAX_PHC_LEN;
use super::*;
use crate::engine::memory::MemoryEngine;
use crate::engine::rocks::RocksEngine;
use portcullis_protocol::app::MAX_EMAIL_LEN;
use portcullis_protocol::store::{DeviceId, UserRecord};
use std::sync::Arc;

/// A well-formed argon2id PHC string (the store checks its shape, not the hash).
const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";

fn create_user(email: &str, org: &str, phc: &str) -> Request {
    Request::CreateUser {
        email: email.into(),
        org: org.into(),
        password_phc: phc.into(),
    }
}

fn get_user(s: &Store<impl Engine>, email: &str) -> Option<UserRecord> {
    match s.handle(Request::GetUser {
        email: email.into(),
    }) {
        Ok(Response::User(user)) => user,
        other => panic!("get user {email}: {other:?}"),
    }
}

fn device_in(s: &Store<impl Engine>, org: &str, token: u8) -> DeviceId {
    let req = Request::CreateDevice {
        org: org.into(),
        template: "T".into(),
        name: format!("d{token}"),
        token_hash: hash(token),
    };
    match s.handle(req) {
        Ok(Response::Device(d)) => d.id,
        other => panic!("create device: {other:?}"),
    }
}

fn list(
    s: &Store<impl Engine>,
    after: Option<DeviceId>,
    limit: u32,
    org: Option<&str>,
) -> Vec<DeviceId> {
    match s.handle(Request::ListDevices {
        after,
        limit,
        org: org.map(str::to_owned),
    }) {
        Ok(Response::Devices(d)) => d.into_iter().map(|d| d.id).collect(),
        other => panic!("list: {other:?}"),
    }
}

fn created_user_is_found_in_any_case(s: &Store<impl Engine>) {
    assert_eq!(
        s.handle(create_user("  Alice@Example.COM ", "acme", PHC)),
        Ok(Response::Done)
    );
    let user = get_user(s, "alice@example.com").expect("found");
    assert_eq!(
        (
            user.email.as_str(),
            user.org.as_str(),
            user.password_phc.as_str()
        ),
        ("alice@example.com", "acme", PHC)
    );
    assert!(user.created_ms > 0);
    assert_eq!(get_user(s, "ALICE@example.com"), Some(user));
    assert_eq!(get_user(s, "bob@example.com"), None);
    assert_eq!(
        get_user(s, "not an email"),
        None,
        "unusable emails are not found"
    );
}

fn a_duplicate_email_is_refused(s: &Store<impl Engine>) {
    assert_eq!(
        s.handle(create_user("a@b.c", "one", PHC)),
        Ok(Response::Done)
    );
    let why = invalid(s.handle(create_user("A@B.C", "two", PHC)));
    assert!(why.contains("a@b.c already exists"), "{why}");
    assert_eq!(get_user(s, "a@b.c").expect("kept").org, "one");
    // Two creations in one group: the second sees the first (the group's overlay).
    let results = s.commit_group(
        vec![
            create_user("x@y.z", "o", PHC),
            create_user("X@y.z", "o", PHC),
        ],
        || {},
    );
    assert_eq!(results[0], Ok(Response::Done));
    assert!(invalid(results[1].clone()).contains("already exists"));
}

fn bad_emails_orgs_and_passwords_are_refused(s: &Store<impl Engine>) {
    let long = format!("{}@b.c", "a".repeat(MAX_EMAIL_LEN));
    for email in [
        "", "   ", "plain", "@b.c", "a@", "a@b@c", "a b@c", "a\n@b", &long,
    ] {
        let why = invalid(s.handle(create_user(email, "o", PHC)));
        assert!(why.contains("email"), "{email:?}: {why}");
    }
    assert!(invalid(s.handle(create_user("a@b.c", " ", PHC))).contains("org"));
    let long_phc = format!("{PHC}{}", "a".repeat(MAX_PHC_LEN));
    for phc in [
        "hunter2",
        "$argon2i$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        &long_phc,
    ] {
        let why = invalid(s.handle(create_user("a@b.c", "o", phc)));
        assert!(why.contains("password"), "{phc}: {why}");
    }
    assert_eq!(get_user(s, "a@b.c"), None, "nothing refused was stored");
}

fn listing_filters_by_org(s: &Store<impl Engine>) {
    // More devices than one scan chunk, the org's few spread among them.
    let mut mine = Vec::new();
    for i in 0..(LIST_SCAN_CHUNK + 300) {
        let org = if i % 500 == 7 { "mine" } else { "theirs" };
        let mut token = [0u8; 32];
        token[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let id = match s.handle(Request::CreateDevice {
            org: org.into(),
            template: "T".into(),
            name: "d".into(),
            token_hash: token,
        }) {
            Ok(Response::Device(d)) => d.id,
            other => panic!("{other:?}"),
        };
        if org == "mine" {
            mine.push(id);
        }
    }
    assert_eq!(mine.len(), 3);
    assert_eq!(list(s, None, 100, Some("mine")), mine);
    assert_eq!(list(s, None, 2, Some("mine")), mine[..2]);
    assert_eq!(list(s, Some(mine[1]), 2, Some("mine")), mine[2..]);
    assert_eq!(list(s, Some(mine[2]), 2, Some("mine")), Vec::<u64>::new());
    assert_eq!(list(s, None, 100, Some("nobody")), Vec::<u64>::new());
    assert_eq!(list(s, None, 0, Some("mine")), Vec::<u64>::new());
    let all = list(s, None, 5, None);
    assert_eq!(all, vec![1, 2, 3, 4, 5], "no filter lists every org");
    assert_eq!(list(s, Some(u64::MAX), 5, Some("mine")), Vec::<u64>::new());
}

/// One test per behaviour and engine, so a failure names both.
macro_rules! on_both_engines {
    ($($behaviour:ident),* $(,)?) => {
        mod memory {
            $(#[test]
            fn $behaviour() {
                let s = super::Store::open(super::MemoryEngine::new()).expect("open");
                super::$behaviour(&s);
            })*
        }
        mod rocksdb {
            $(#[test]
            fn $behaviour() {
                let dir = tempfile::tempdir().expect("tempdir");
                let engine = super::RocksEngine::open(dir.path()).expect("open");
                let s = super::Store::open(engine).expect("store");
                super::$behaviour(&s);
            })*
        }
    };
}

on_both_engines!(
    created_user_is_found_in_any_case,
    a_duplicate_email_is_refused,
    bad_emails_orgs_and_passwords_are_refused,
    listing_filters_by_org,
);

#[test]
fn user_creation_is_synced_before_the_reply() {
    let engine = Arc::new(MemoryEngine::new());
    let s = Store::open(Arc::clone(&engine)).expect("open");
    let (writes, syncs) = (engine.write_log().len(), engine.sync_count());
    assert_eq!(s.handle(create_user("a@b.c", "o", PHC)), Ok(Response::Done));
    assert_eq!(
        (
            engine.write_log().len() - writes,
            engine.sync_count() - syncs
        ),
        (1, 1)
    );
    let syncs = engine.sync_count();
    get_user(&s, "a@b.c");
    assert_eq!(engine.sync_count(), syncs, "a lookup writes nothing");
}

#[test]
fn a_user_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = Store::open(RocksEngine::open(dir.path()).expect("open")).expect("store");
        assert_eq!(
            s.handle(create_user("kept@b.c", "o", PHC)),
            Ok(Response::Done)
        );
        // No explicit sync: the sync class promised durability already.
    }
    let s = Store::open(RocksEngine::open(dir.path()).expect("reopen")).expect("store");
    let user = get_user(&s, "Kept@B.c").expect("still there");
    assert_eq!((user.org.as_str(), user.password_phc.as_str()), ("o", PHC));
    assert!(invalid(s.handle(create_user("kept@b.c", "o", PHC))).contains("already exists"));
}

/// A data directory written before the `users` family existed opens, gains the family, and
/// keeps its devices.
#[test]
fn an_older_data_dir_gains_the_users_family() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = Store::open(RocksEngine::open(dir.path()).expect("open")).expect("store");
        device_in(&s, "o", 1);
    }
    {
        // Drop the family, as if the directory predated it.
        let names =
            ::rocksdb::DB::list_cf(&::rocksdb::Options::default(), dir.path()).expect("list");
        let mut db = ::rocksdb::DB::open_cf(&::rocksdb::Options::default(), dir.path(), &names)
            .expect("raw");
        db.drop_cf(Cf::Users.name()).expect("drop users");
    }
    let names = ::rocksdb::DB::list_cf(&::rocksdb::Options::default(), dir.path()).expect("list");
    assert!(!names.iter().any(|n| n == "users"), "{names:?}");
    let s = Store::open(RocksEngine::open(dir.path()).expect("reopen")).expect("store");
    assert_eq!(list(&s, None, 10, None), vec![1]);
    assert_eq!(
        s.handle(create_user("new@b.c", "o", PHC)),
        Ok(Response::Done)
    );
    assert!(get_user(&s, "new@b.c").is_some());
}

/// With encryption at rest, a user record is sealed like any other value: the raw engine
/// never holds the PHC string in clear.
#[test]
fn users_are_sealed_at_rest() {
    use crate::engine::sealed::{Keyring, Sealed, rotate_key};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys");
    rotate_key(&path).expect("key");
    let raw = Arc::new(MemoryEngine::new());
    let engine = Sealed::open(Arc::clone(&raw), Keyring::load(&path).expect("load")).expect("seal");
    let s = Store::open(engine).expect("store");
    assert_eq!(s.handle(create_user("a@b.c", "o", PHC)), Ok(Response::Done));
    assert_eq!(get_user(&s, "a@b.c").expect("found").password_phc, PHC);
    let stored = raw.get(Cf::Users, b"a@b.c").expect("get").expect("stored");
    assert!(
        !stored.windows(PHC_MARK.len()).any(|w| w == PHC_MARK),
        "the PHC is not in clear"
    );
}

/// A distinctive piece of [`PHC`] to look for in raw bytes.
const PHC_MARK: &[u8] = b"c2FsdHNhbHRzYWx0";
