//! Behaviour of every store request, on the in-memory engine (which records durability classes)
//! and, for the persistence and format-version rules, on RocksDB.

use super::*;
use crate::engine::WriteBatch;
use crate::engine::memory::MemoryEngine;
use crate::engine::rocks::RocksEngine;
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{
    DeviceAuth, DeviceId, DeviceRecord, DeviceScope, MAX_LIST_PAGE, NodeName, Party, PinWrite,
    Presence, ReplyEnvelope, SessionTag, TemplateId, TokenHash, encode_frame,
};
use std::sync::Arc;

/// The local operator, whom the tests of device and store behaviour act for.
pub(super) fn operator() -> Acting {
    Acting {
        party: Party::Operator,
        from: "local".into(),
    }
}

/// Requests acting as the operator (who may send anything, device traffic included).
pub(super) trait AsOperator {
    fn op(&self, request: Request) -> Result<Response, StoreError>;
}

impl<E: Engine> AsOperator for Store<E> {
    fn op(&self, request: Request) -> Result<Response, StoreError> {
        self.handle_as(Some(&operator()), request)
    }
}

pub(super) fn tmpl(id: &str) -> TemplateId {
    TemplateId::parse(id).expect("a valid template id")
}

/// Creates template `id` of `org` as the operator, unless it exists.
pub(super) fn ensure_template(s: &Store<impl Engine>, org: OrgId, id: &str) {
    if s.op(Request::GetTemplate { id: tmpl(id) }).is_ok() {
        return;
    }
    let created = s.op(Request::CreateTemplate {
        org,
        id: tmpl(id),
        name: id.into(),
        datastreams: Vec::new(),
    });
    assert!(matches!(created, Ok(Response::Template(_))), "{created:?}");
}

/// A store on the in-memory engine with template `TMPL1` of the root.
pub(super) fn store() -> (Store<Arc<MemoryEngine>>, Arc<MemoryEngine>) {
    let engine = Arc::new(MemoryEngine::new());
    let s = Store::open(Arc::clone(&engine)).expect("open");
    ensure_template(&s, OrgId::ROOT, "TMPL1");
    (s, engine)
}

pub(super) fn hash(n: u8) -> TokenHash {
    [n; 32]
}

pub(super) fn create(s: &Store<impl Engine>, name: &str, token: u8) -> DeviceRecord {
    ensure_template(s, OrgId::ROOT, "TMPL1");
    let req = Request::CreateDevice {
        org: OrgId::ROOT,
        template: tmpl("TMPL1"),
        owner: None,
        name: name.into(),
        token_hash: hash(token),
    };
    match s.op(req) {
        Ok(Response::Device(d)) => d,
        other => panic!("create {name}: {other:?}"),
    }
}

pub(super) fn get(s: &Store<impl Engine>, id: DeviceId) -> DeviceRecord {
    match s.op(Request::GetDevice { device: id }) {
        Ok(Response::Device(d)) => d,
        other => panic!("get {id}: {other:?}"),
    }
}

pub(super) fn v(pin: u8) -> PinAddr {
    PinAddr::new(PinKind::Virtual, pin)
}

pub(super) fn pw(device: DeviceId, pin: PinAddr, value: &str, at_ms: u64) -> PinWrite {
    PinWrite {
        device,
        pin,
        value: value.as_bytes().to_vec(),
        at_ms,
    }
}

pub(super) fn read_pins(
    s: &Store<impl Engine>,
    device: DeviceId,
    pins: Option<Vec<PinAddr>>,
) -> Vec<(PinAddr, String, u64)> {
    match s.op(Request::ReadPins { device, pins }) {
        Ok(Response::Pins(p)) => p
            .into_iter()
            .map(|p| {
                (
                    p.pin,
                    String::from_utf8_lossy(&p.value).into_owned(),
                    p.at_ms,
                )
            })
            .collect(),
        other => panic!("read pins: {other:?}"),
    }
}

/// Session `local` of node `gw1`.
fn gw1_session(local: u64) -> SessionTag {
    SessionTag {
        node: NodeName::new("gw1").expect("valid name"),
        local,
    }
}

pub(super) fn invalid(result: Result<Response, StoreError>) -> String {
    match result {
        Err(StoreError::Invalid(msg)) => msg,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn ping_pongs() {
    assert_eq!(store().0.op(Request::Ping), Ok(Response::Pong));
}

#[test]
fn devices_get_consecutive_ids_and_authenticate_by_hash() {
    let (s, _) = store();
    let a = create(&s, "kitchen", 1);
    let b = create(&s, "garage", 2);
    assert_eq!((a.id, b.id), (1, 2));
    assert_eq!(
        (
            a.org,
            a.template.as_str(),
            a.owner,
            a.name.as_str(),
            a.sessions
        ),
        (OrgId::ROOT, "TMPL1", None, "kitchen", 0)
    );
    assert!(a.created_ms > 0 && !a.online() && a.last_seen_ms.is_none());
    assert_eq!(get(&s, 2), b);
    let auth = s.op(Request::Authenticate {
        token_hash: hash(2),
    });
    assert_eq!(
        auth,
        Ok(Response::Authenticated(Some(DeviceAuth {
            device: 2,
            org: OrgId::ROOT,
            template: tmpl("TMPL1")
        })))
    );
    assert_eq!(
        s.op(Request::Authenticate {
            token_hash: hash(9)
        }),
        Ok(Response::Authenticated(None))
    );
    assert!(matches!(
        s.op(Request::GetDevice { device: 3 }),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn a_reused_token_hash_is_refused_and_consumes_no_id() {
    let (s, _) = store();
    create(&s, "first", 1);
    let req = Request::CreateDevice {
        org: OrgId::ROOT,
        template: tmpl("TMPL1"),
        owner: None,
        name: "dup".into(),
        token_hash: hash(1),
    };
    assert!(invalid(s.op(req)).contains("token hash"));
    assert_eq!(create(&s, "second", 2).id, 2);
}

#[test]
fn names_are_validated() {
    let (s, _) = store();
    let try_create = |org: OrgId, template: &str, name: &str| {
        s.op(Request::CreateDevice {
            org,
            template: tmpl(template),
            owner: None,
            name: name.into(),
            token_hash: hash(7),
        })
    };
    let root = OrgId::ROOT;
    assert!(invalid(try_create(root, "TMPL1", "")).contains("device name must not be empty"));
    assert!(invalid(try_create(root, "TMPL1", "  \t")).contains("blank"));
    assert_eq!(
        try_create(OrgId(77), "TMPL1", "n"),
        Err(StoreError::NotFound("org 77".into()))
    );
    assert_eq!(
        try_create(root, "TMPL9", "n"),
        Err(StoreError::NotFound("template TMPL9".into()))
    );
    assert!(
        invalid(try_create(root, "TMPL1", &"x".repeat(129)))
            .contains("129 bytes long; the limit is 128")
    );
    assert!(invalid(try_create(root, "TMPL1", "bell\x07")).contains("control character at byte 4"));
    assert_eq!(
        s.engine().get(Cf::Meta, keys::NEXT_DEVICE_ID).expect("get"),
        None,
        "refusals write nothing"
    );
    assert!(matches!(
        try_create(root, "TMPL1", &"x".repeat(128)),
        Ok(Response::Device(_))
    ));
    assert!(
        matches!(
            try_create(root, "TMPL1", "Küche 🌡"),
            Err(StoreError::Invalid(_))
        ),
        "same token again"
    );
    let ok = s.op(Request::CreateDevice {
        org: root,
        template: tmpl("TMPL1"),
        owner: None,
        name: "Küche 🌡".into(),
        token_hash: hash(8),
    });
    assert!(
        matches!(ok, Ok(Response::Device(_))),
        "unicode names are printable: {ok:?}"
    );
}

#[test]
fn listing_pages_by_id() {
    let (s, _) = store();
    for i in 1..=5 {
        create(&s, &format!("d{i}"), i);
    }
    let list = |after, limit| match s.op(Request::ListDevices {
        after,
        limit,
        scope: DeviceScope::All,
    }) {
        Ok(Response::Devices(d)) => d.into_iter().map(|d| d.id).collect::<Vec<_>>(),
        other => panic!("list: {other:?}"),
    };
    assert_eq!(list(None, 2), vec![1, 2]);
    assert_eq!(list(Some(2), 2), vec![3, 4]);
    assert_eq!(list(Some(4), 2), vec![5]);
    assert_eq!(list(Some(5), 2), Vec::<u64>::new());
    assert_eq!(list(None, 0), Vec::<u64>::new());
    assert_eq!(list(Some(u64::MAX), 10), Vec::<u64>::new());
    assert_eq!(list(Some(0), 100), vec![1, 2, 3, 4, 5]);
}

#[test]
fn listing_caps_the_page_and_always_fits_a_frame() {
    let (s, _) = store();
    let long = "n".repeat(MAX_NAME_LEN);
    for i in 0..(MAX_LIST_PAGE + 5) {
        let mut token = [0u8; 32];
        token[..4].copy_from_slice(&i.to_be_bytes());
        let req = Request::CreateDevice {
            org: OrgId::ROOT,
            template: tmpl("TMPL1"),
            owner: None,
            name: long.clone(),
            token_hash: token,
        };
        let Ok(Response::Device(d)) = s.op(req) else {
            panic!("create")
        };
        // Large records: the byte budget, not the count, must end the page.
        let text = Some("i".repeat(MAX_INFO_STRING_LEN));
        let info = DeviceInfo {
            heartbeat_secs: None,
            buff_in: None,
            template: text.clone(),
            firmware: text.clone(),
            lib_version: text.clone(),
            device_type: text,
        };
        let set = Request::SetInfo {
            device: d.id,
            info,
            at_ms: 1,
        };
        assert_eq!(s.op(set), Ok(Response::Done));
    }
    let Ok(Response::Devices(page)) = s.op(Request::ListDevices {
        after: None,
        limit: u32::MAX,
        scope: DeviceScope::All,
    }) else {
        panic!("list failed")
    };
    assert!(
        !page.is_empty() && page.len() < MAX_LIST_PAGE as usize,
        "byte budget cuts the page: {}",
        page.len()
    );
    let mut frame = Vec::new();
    encode_frame(
        &ReplyEnvelope {
            id: 1,
            result: Ok(Response::Devices(page)),
        },
        &mut frame,
    )
    .expect("the page fits one frame");

    let (small, _) = store();
    for i in 0..(MAX_LIST_PAGE + 5) {
        let mut token = [0u8; 32];
        token[..4].copy_from_slice(&i.to_be_bytes());
        let req = Request::CreateDevice {
            org: OrgId::ROOT,
            template: tmpl("TMPL1"),
            owner: None,
            name: "n".into(),
            token_hash: token,
        };
        assert!(matches!(small.op(req), Ok(Response::Device(_))));
    }
    let Ok(Response::Devices(page)) = small.op(Request::ListDevices {
        after: None,
        limit: u32::MAX,
        scope: DeviceScope::All,
    }) else {
        panic!("list failed")
    };
    assert_eq!(page.len(), MAX_LIST_PAGE as usize, "limit is capped");
}

#[test]
fn pins_write_read_and_overwrite() {
    let (s, _) = store();
    let a = create(&s, "a", 1).id;
    let b = create(&s, "b", 2).id;
    let d13 = PinAddr::new(PinKind::Digital, 13);
    let a0 = PinAddr::new(PinKind::Analog, 0);
    let writes = vec![
        pw(a, v(5), "1", 10),
        pw(a, d13, "on", 11),
        pw(b, v(5), "other", 12),
        pw(a, v(5), "2", 13),
        pw(a, a0, "1\x003", 14),
    ];
    assert_eq!(s.op(Request::WritePins { writes }), Ok(Response::Done));
    let all = read_pins(&s, a, None);
    assert_eq!(
        all,
        vec![
            (a0, "1\x003".into(), 14),
            (d13, "on".into(), 11),
            (v(5), "2".into(), 13)
        ],
        "last write wins, key order"
    );
    assert_eq!(read_pins(&s, b, None), vec![(v(5), "other".into(), 12)]);
    let some = read_pins(&s, a, Some(vec![v(5), v(6), d13, v(5)]));
    assert_eq!(
        some,
        vec![(v(5), "2".into(), 13), (d13, "on".into(), 11)],
        "asked order, no missing, no duplicates"
    );
    assert!(read_pins(&s, a, Some(vec![])).is_empty());
    for pins in [None, Some(vec![v(5)])] {
        assert!(matches!(
            s.op(Request::ReadPins { device: 99, pins }),
            Err(StoreError::NotFound(_))
        ));
    }
    // A device without values is known, not missing.
    let quiet = create(&s, "quiet", 3).id;
    assert!(read_pins(&s, quiet, Some(vec![v(5)])).is_empty());
    assert!(read_pins(&s, quiet, None).is_empty());
}

#[test]
fn a_pin_batch_naming_an_unknown_device_has_no_effect() {
    let (s, engine) = store();
    let a = create(&s, "a", 1).id;
    let writes = vec![pw(a, v(1), "kept?", 1), pw(42, v(1), "x", 1)];
    assert!(
        matches!(s.op(Request::WritePins { writes }), Err(StoreError::NotFound(m)) if m.contains("42"))
    );
    assert!(read_pins(&s, a, None).is_empty());
    let big = PinWrite {
        device: a,
        pin: v(1),
        value: vec![b'x'; MAX_VALUE_LEN + 1],
        at_ms: 1,
    };
    assert!(
        invalid(s.op(Request::WritePins {
            writes: vec![pw(a, v(2), "ok", 1), big]
        }))
        .contains("limit")
    );
    assert!(read_pins(&s, a, None).is_empty());
    let before = engine.write_log().len();
    assert_eq!(
        s.op(Request::WritePins { writes: vec![] }),
        Ok(Response::Done)
    );
    assert_eq!(
        engine.write_log().len(),
        before,
        "an empty batch writes nothing"
    );
}

/// Every group is one buffered engine write; a group holding a sync-class request is followed by
/// one WAL sync before any of its results is returned.
#[test]
fn each_request_uses_its_durability_class() {
    let (s, engine) = store();
    assert_eq!(
        engine.write_log(),
        vec![Durability::Sync, Durability::Buffered],
        "format stamp, then the group that made the template (synced after it)"
    );
    let class_of = |req: Request| {
        let (writes, syncs) = (engine.write_log().len(), engine.sync_count());
        assert!(s.op(req.clone()).is_ok(), "{req:?}");
        (
            engine.write_log().len() - writes,
            engine.sync_count() - syncs,
        )
    };
    let create = Request::CreateDevice {
        org: OrgId::ROOT,
        template: tmpl("TMPL1"),
        owner: None,
        name: "a".into(),
        token_hash: hash(1),
    };
    assert_eq!(class_of(create), (1, 1), "device creation is synced");
    let id = 1;
    let writes = (0..50).map(|p| pw(id, v(p), "1", 1)).collect();
    assert_eq!(
        class_of(Request::WritePins { writes }),
        (1, 0),
        "telemetry: one batch, no sync"
    );
    let online = Request::SetPresence {
        device: id,
        presence: Presence::Online {
            addr: "1.2.3.4:5".into(),
            session: gw1_session(1),
        },
        at_ms: 1,
    };
    assert_eq!(class_of(online), (1, 1));
    let info = Request::SetInfo {
        device: id,
        info: DeviceInfo::default(),
        at_ms: 2,
    };
    assert_eq!(class_of(info), (1, 1));
    let prop = Request::WriteProperty {
        device: id,
        pin: v(1),
        property: "label".into(),
        value: b"x".to_vec(),
        at_ms: 3,
    };
    assert_eq!(class_of(prop), (1, 1));
    let syncs = engine.sync_count();
    assert!(
        s.op(Request::ResetPresence {
            node: NodeName::new("gw1").expect("valid name")
        })
        .is_ok()
    );
    assert_eq!(engine.sync_count(), syncs + 1, "reset ends with a WAL sync");
    assert_eq!(
        class_of(Request::GetDevice { device: id }),
        (0, 0),
        "reads write nothing"
    );
}

/// Many requests of mixed classes in one group: one engine write, one sync, each result in
/// order, later requests seeing earlier ones (ids, token uniqueness), a refused request leaving no
/// trace, and the sync happening after the applied callback.
#[test]
fn a_group_is_one_batch_and_one_sync() {
    let (s, engine) = store();
    let create = |token: u8, name: &str| Request::CreateDevice {
        org: OrgId::ROOT,
        template: tmpl("TMPL1"),
        owner: None,
        name: name.into(),
        token_hash: hash(token),
    };
    let requests = vec![
        create(1, "a"),
        create(2, "b"),
        create(1, "dup"),
        Request::WritePins {
            writes: vec![pw(2, v(1), "x", 5)],
        },
        create(3, " "),
        Request::SetPresence {
            device: 1,
            presence: Presence::Offline {
                session: gw1_session(1),
            },
            at_ms: 9,
        },
        create(4, "c"),
    ];
    let (writes, syncs) = (engine.write_log().len(), engine.sync_count());
    let mut syncs_when_applied = None;
    let calls = requests
        .into_iter()
        .map(|r| Call::new(Some(operator()), r))
        .collect();
    let results = s.commit_group(calls, || syncs_when_applied = Some(engine.sync_count()));
    assert_eq!(engine.write_log().len() - writes, 1, "one batch");
    assert_eq!(engine.sync_count() - syncs, 1, "one sync");
    assert_eq!(syncs_when_applied, Some(syncs), "applied before the sync");
    let ids: Vec<_> = results
        .iter()
        .map(|r| match r {
            Ok(Response::Device(d)) => Some(d.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [Some(1), Some(2), None, None, None, None, Some(3)]);
    assert!(invalid(results[2].clone()).contains("token hash"));
    assert_eq!(
        results[3],
        Ok(Response::Done),
        "pins of a device created in the same group"
    );
    assert!(invalid(results[4].clone()).contains("blank"));
    assert_eq!(results[5], Ok(Response::Done));
    assert_eq!(read_pins(&s, 2, None), vec![(v(1), "x".into(), 5)]);
    assert_eq!(get(&s, 3).name, "c");
    assert_eq!(get(&s, 1).last_seen_ms, Some(9));
}

/// An engine failure fails every request that was part of the failed batch, and only those.
#[test]
fn a_failed_group_write_fails_its_members() {
    let (s, engine) = store();
    create(&s, "a", 1);
    engine.set_fail_writes(true);
    let results = s.commit_group(
        vec![
            Call::nobody(Request::WritePins {
                writes: vec![pw(1, v(1), "x", 5)],
            }),
            Call::nobody(Request::WritePins {
                writes: vec![pw(99, v(1), "x", 5)],
            }),
        ],
        || {},
    );
    engine.set_fail_writes(false);
    assert!(matches!(&results[0], Err(StoreError::Storage(m)) if m.contains("injected")));
    assert!(matches!(&results[1], Err(StoreError::NotFound(_))));
    assert!(read_pins(&s, 1, None).is_empty());
}

#[test]
fn an_engine_failure_is_a_storage_error_with_no_effect() {
    let (s, engine) = store();
    engine.set_fail_writes(true);
    let req = Request::CreateDevice {
        org: OrgId::ROOT,
        template: tmpl("TMPL1"),
        owner: None,
        name: "n".into(),
        token_hash: hash(1),
    };
    assert!(matches!(s.op(req), Err(StoreError::Storage(m)) if m.contains("injected")));
    engine.set_fail_writes(false);
    assert_eq!(
        s.op(Request::Authenticate {
            token_hash: hash(1)
        }),
        Ok(Response::Authenticated(None))
    );
    assert_eq!(create(&s, "n", 1).id, 1, "the failed create consumed no id");
}

#[test]
fn corrupt_records_are_reported_as_storage_errors() {
    let (s, engine) = store();
    let mut batch = WriteBatch::new();
    batch.put(Cf::Devices, keys::device(5), vec![0xff; 3]);
    batch.put(Cf::TokenIndex, hash(3), keys::device(6));
    engine
        .write(batch, Durability::Sync)
        .expect("plant garbage");
    let err = s.op(Request::GetDevice { device: 5 });
    assert!(
        matches!(&err, Err(StoreError::Storage(m)) if m.contains("corrupt device record")),
        "{err:?}"
    );
    let err = s.op(Request::Authenticate {
        token_hash: hash(3),
    });
    assert!(
        matches!(&err, Err(StoreError::Storage(m)) if m.contains("missing device 6")),
        "{err:?}"
    );
}

#[test]
fn format_version_is_stamped_and_checked() {
    let engine = Arc::new(MemoryEngine::new());
    drop(Store::open(Arc::clone(&engine)).expect("fresh"));
    assert_eq!(
        engine.get(Cf::Meta, keys::FORMAT_VERSION).expect("get"),
        Some(2u32.to_be_bytes().to_vec())
    );
    drop(Store::open(Arc::clone(&engine)).expect("same version reopens"));

    let mut batch = WriteBatch::new();
    batch.put(Cf::Meta, keys::FORMAT_VERSION, 3u32.to_be_bytes());
    engine.write(batch, Durability::Sync).expect("write");
    let err = Store::open(Arc::clone(&engine)).err().expect("refused");
    assert_eq!(
        err.to_string(),
        "the data directory has format version 3; this build reads version 2 and migrates older ones. A newer format needs a newer portcullis-store build"
    );

    let unversioned = Arc::new(MemoryEngine::new());
    let mut batch = WriteBatch::new();
    batch.put(Cf::Devices, keys::device(1), b"old".to_vec());
    unversioned.write(batch, Durability::Sync).expect("write");
    let err = Store::open(unversioned).err().expect("refused");
    assert!(
        err.to_string()
            .contains("none (but the devices family holds data)"),
        "{err}"
    );
}

#[test]
fn rocksdb_store_persists_and_refuses_unknown_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let s = Store::open(RocksEngine::open(dir.path()).expect("open")).expect("store");
        create(&s, "kept", 1);
        s.op(Request::WritePins {
            writes: vec![pw(1, v(3), "7", 5)],
        })
        .expect("pins");
        s.sync().expect("sync");
    }
    {
        let s = Store::open(RocksEngine::open(dir.path()).expect("reopen")).expect("store");
        assert_eq!(get(&s, 1).name, "kept");
        assert_eq!(read_pins(&s, 1, None), vec![(v(3), "7".into(), 5)]);
        assert_eq!(create(&s, "next", 2).id, 2, "the id counter persisted");
        let mut batch = WriteBatch::new();
        batch.put(Cf::Meta, keys::FORMAT_VERSION, 99u32.to_be_bytes());
        s.engine().write(batch, Durability::Sync).expect("write");
    }
    let err = Store::open(RocksEngine::open(dir.path()).expect("reopen"))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("format version 99"), "{err}");
}
