//! Migration from format 1: a database written with the frozen format-1 encodings opens as
//! format 2 with everything carried over, its pins and history untouched; a newer format is
//! refused.

use super::migrate::{V1Device, V1User, VIEWER_ROLE, viewer_permissions};
use super::records::encode;
use super::tests::AsOperator;
use super::*;
use crate::engine::WriteBatch;
use crate::engine::memory::MemoryEngine;
use portcullis_protocol::authz::{OrgId, UserId};
use portcullis_protocol::store::DeviceScope;
use std::sync::Arc;

const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

fn v1_device(org: &str, template: &str, token: u8) -> V1Device {
    V1Device {
        org: org.into(),
        template: template.into(),
        name: format!("d{token}"),
        token_hash: [token; 32],
        created_ms: 5,
        sessions: 0,
        last_seen_ms: Some(7),
        last_addr: None,
        info: None,
    }
}

fn v1_store() -> Arc<MemoryEngine> {
    let engine = Arc::new(MemoryEngine::new());
    let mut batch = WriteBatch::new();
    batch.put(Cf::Meta, keys::FORMAT_VERSION, 1u32.to_be_bytes());
    let devices = [
        v1_device("acme", "TMPL1", 1),
        v1_device("acme", "weather station", 2),
        v1_device("zeta", "TMPL1", 3),
    ];
    for (i, d) in devices.iter().enumerate() {
        let id = i as u64 + 1;
        batch.put(Cf::Devices, keys::device(id), encode(d).expect("encode"));
        batch.put(Cf::TokenIndex, d.token_hash, keys::device(id));
    }
    batch.put(Cf::Meta, keys::NEXT_DEVICE_ID, 4u64.to_be_bytes());
    let user = V1User {
        org: "acme".into(),
        password_phc: PHC.into(),
        created_ms: 9,
    };
    batch.put(
        Cf::Users,
        b"bob@acme.io".to_vec(),
        encode(&user).expect("encode"),
    );
    let pin = keys::pin(
        1,
        portcullis_protocol::body::PinAddr::new(portcullis_protocol::body::PinKind::Virtual, 1),
    );
    batch.put(Cf::Pins, pin.to_vec(), b"pin value".to_vec());
    batch.put(
        Cf::History,
        b"history key".to_vec(),
        b"history value".to_vec(),
    );
    engine.write(batch, Durability::Sync).expect("write");
    engine
}

#[test]
fn a_format_1_store_migrates_at_open() {
    let engine = v1_store();
    let s = Store::open(Arc::clone(&engine)).expect("migrates");
    assert_eq!(
        engine.get(Cf::Meta, keys::FORMAT_VERSION).expect("get"),
        Some(2u32.to_be_bytes().to_vec())
    );
    let Ok(Response::Orgs(orgs)) = s.op(Request::ListOrgs { org: OrgId::ROOT }) else {
        panic!("orgs")
    };
    let names: Vec<_> = orgs.iter().map(|o| (o.id.0, o.name.as_str())).collect();
    assert_eq!(names, [(1, "root"), (2, "acme"), (3, "zeta")]);
    let Ok(Response::Devices(devices)) = s.op(Request::ListDevices {
        after: None,
        limit: 10,
        scope: DeviceScope::All,
    }) else {
        panic!("devices")
    };
    let shapes: Vec<_> = devices
        .iter()
        .map(|d| (d.id, d.org.0, d.template.as_str().to_owned(), d.owner))
        .collect();
    // TMPL1 is acme's (first valid claimant); zeta's TMPL1 and acme's "weather station" get
    // generated ids.
    assert_eq!(shapes[0], (1, 2, "TMPL1".to_owned(), None));
    assert!(shapes[1].2.starts_with("TMPL") && shapes[1].2 != "TMPL1");
    assert!(shapes[2].2.starts_with("TMPL") && shapes[2].2 != "TMPL1");
    assert_eq!(shapes[2].1, 3);
    let Ok(Response::Template(t)) = s.op(Request::GetTemplate {
        id: devices[1].template.clone(),
    }) else {
        panic!("template")
    };
    assert_eq!((t.name.as_str(), t.org), ("weather station", OrgId(2)));
    assert_eq!(devices[0].last_seen_ms, Some(7));
    let Ok(Response::Credentials(Some(c))) = s.handle(Request::GetUser {
        email: "BOB@acme.io".into(),
    }) else {
        panic!("user")
    };
    assert_eq!(c.user.id, UserId(1));
    assert_eq!(c.user.org, OrgId(2));
    assert_eq!(
        c.user.status,
        portcullis_protocol::store::UserStatus::Active
    );
    assert_eq!(c.password_phc.as_deref(), Some(PHC));
    assert_eq!(c.member.permissions, viewer_permissions());
    let Ok(Response::Roles(roles)) = s.op(Request::ListRoles { org: OrgId(2) }) else {
        panic!("roles")
    };
    assert!(
        roles
            .iter()
            .any(|r| r.name == VIEWER_ROLE && r.id == c.user.role)
    );
    // The migrated user sees their org's devices, not the other org's.
    let bob = Acting {
        party: portcullis_protocol::store::Party::User(UserId(1)),
        from: "t".into(),
    };
    assert!(
        s.handle_as(Some(&bob), Request::GetDevice { device: 1 })
            .is_ok()
    );
    assert_eq!(
        s.handle_as(Some(&bob), Request::GetDevice { device: 3 }),
        Err(StoreError::NotFound("device 3".into()))
    );
    // Untouched: pins, history, the token index and the device counter.
    let auth = s.op(Request::Authenticate {
        token_hash: [3; 32],
    });
    assert!(
        matches!(auth, Ok(Response::Authenticated(Some(_)))),
        "the migrated token still logs in: {auth:?}"
    );
    assert_eq!(engine.scan_prefix(Cf::Pins, b"").expect("scan").len(), 1);
    assert_eq!(
        engine.get(Cf::History, b"history key").expect("get"),
        Some(b"history value".to_vec())
    );
    assert_eq!(engine.get(Cf::Users, b"bob@acme.io").expect("get"), None);
    // New ids continue after the migrated ones.
    let Ok(Response::Org(o)) = s.op(Request::CreateOrg {
        parent: OrgId::ROOT,
        name: "new".into(),
    }) else {
        panic!("org")
    };
    assert_eq!(o.id, OrgId(4));
    drop(s);
    Store::open(Arc::clone(&engine)).expect("reopens as format 2");
}

#[test]
fn a_newer_format_is_refused_with_what_to_do() {
    let engine = Arc::new(MemoryEngine::new());
    let mut batch = WriteBatch::new();
    batch.put(Cf::Meta, keys::FORMAT_VERSION, 3u32.to_be_bytes());
    engine.write(batch, Durability::Sync).expect("write");
    let err = Store::open(engine).err().expect("refused");
    assert!(matches!(err, SchemaError::UnknownFormat { .. }));
    assert!(err.to_string().contains("newer portcullis-store"), "{err}");
}

#[test]
fn a_fresh_store_holds_the_root_only() {
    let s = Store::open(Arc::new(MemoryEngine::new())).expect("fresh");
    let Ok(Response::Org(root)) = s.op(Request::GetOrg { org: OrgId::ROOT }) else {
        panic!("root")
    };
    assert_eq!((root.name.as_str(), root.parent), ("root", None));
}
