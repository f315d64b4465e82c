//! Presence through the store: live sessions per gateway node (idempotent online/offline, a
//! node's reset leaving the other nodes' sessions, resets over many chunks, concurrent updates),
//! and the data directories of older versions: counts written before session sets existed, and
//! the node-less sets of wire version 2, cleared by the first reset of any node.

use super::presence::{MAX_LIVE_SESSIONS, RESET_CHUNK};
use super::tests::{AsOperator, create, get, invalid, store, tmpl};
use super::*;
use crate::engine::WriteBatch;
use crate::engine::memory::MemoryEngine;
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::store::DeviceScope;
use portcullis_protocol::store::{DeviceId, MAX_LIST_PAGE, NodeName, Presence, SessionTag};
use std::sync::Arc;

fn node(name: &str) -> NodeName {
    NodeName::new(name).expect("valid node name")
}

fn tag(name: &str, local: u64) -> SessionTag {
    SessionTag {
        node: node(name),
        local,
    }
}

fn reset(name: &str) -> Request {
    Request::ResetPresence { node: node(name) }
}

fn online(s: &Store<impl Engine>, device: DeviceId, name: &str, local: u64) {
    let request = Request::SetPresence {
        device,
        presence: Presence::Online {
            addr: format!("10.0.0.1:{local}"),
            session: tag(name, local),
        },
        at_ms: 1,
    };
    assert_eq!(s.op(request), Ok(Response::Done));
}

fn offline(s: &Store<impl Engine>, device: DeviceId, name: &str, local: u64) {
    let request = Request::SetPresence {
        device,
        presence: Presence::Offline {
            session: tag(name, local),
        },
        at_ms: 2,
    };
    assert_eq!(s.op(request), Ok(Response::Done));
}

#[test]
fn presence_counts_sessions_and_reset_clears_them() {
    let (s, _) = store();
    let a = create(&s, "a", 1).id;
    let b = create(&s, "b", 2).id;
    let online = |d, session, addr: &str, at| {
        s.op(Request::SetPresence {
            device: d,
            presence: Presence::Online {
                addr: addr.into(),
                session: tag("gw1", session),
            },
            at_ms: at,
        })
    };
    let offline = |d, session, at| {
        s.op(Request::SetPresence {
            device: d,
            presence: Presence::Offline {
                session: tag("gw1", session),
            },
            at_ms: at,
        })
    };
    assert_eq!(online(a, 1, "10.0.0.1:1000", 100), Ok(Response::Done));
    assert_eq!(online(a, 2, "10.0.0.2:2000", 200), Ok(Response::Done));
    // A change the gateway re-sends after a store restart is applied once.
    assert_eq!(online(a, 2, "10.0.0.2:2000", 200), Ok(Response::Done));
    let d = get(&s, a);
    assert_eq!(
        (d.sessions, d.last_seen_ms, d.last_addr.as_deref()),
        (2, Some(200), Some("10.0.0.2:2000"))
    );
    assert!(d.online());
    assert_eq!(offline(a, 1, 300), Ok(Response::Done));
    assert_eq!(offline(a, 1, 301), Ok(Response::Done));
    let d = get(&s, a);
    assert_eq!(
        (d.sessions, d.last_seen_ms, d.last_addr.as_deref()),
        (1, Some(301), Some("10.0.0.2:2000")),
        "a repeated offline does not end another session"
    );
    assert!(d.online());
    for at in 0..3 {
        assert_eq!(offline(a, 9, 400 + at), Ok(Response::Done));
    }
    assert_eq!(get(&s, a).sessions, 1, "an unknown session changes nothing");
    assert_eq!(offline(a, 2, 450), Ok(Response::Done));
    assert_eq!(get(&s, a).sessions, 0);
    online(a, 3, "x", 500).expect("online");
    online(b, 4, "y", 500).expect("online");
    online(b, 5, "y", 501).expect("online");
    assert_eq!(s.op(reset("gw1")), Ok(Response::Done));
    assert_eq!((get(&s, a).sessions, get(&s, b).sessions), (0, 0));
    assert_eq!(get(&s, b).last_seen_ms, Some(501), "reset keeps last_seen");
    // The live sets went with the reset: an offline for an old session changes nothing, and a
    // new session counts from zero.
    offline(b, 4, 600).expect("offline");
    online(b, 6, "y", 601).expect("online");
    assert_eq!(get(&s, b).sessions, 1);
    assert!(matches!(
        online(77, 7, "z", 1),
        Err(StoreError::NotFound(_))
    ));
    assert!(invalid(online(a, 8, &"1".repeat(MAX_ADDR_LEN + 1), 1)).contains("address"));
}

#[test]
fn reset_presence_covers_more_than_one_chunk() {
    let (s, _) = store();
    let n = RESET_CHUNK as u64 * 2 + 3;
    for i in 0..n {
        let mut token = [0u8; 32];
        token[..8].copy_from_slice(&i.to_be_bytes());
        let req = Request::CreateDevice {
            org: OrgId::ROOT,
            template: tmpl("TMPL1"),
            owner: None,
            name: "n".into(),
            token_hash: token,
        };
        let Ok(Response::Device(d)) = s.op(req) else {
            panic!("create")
        };
        let req = Request::SetPresence {
            device: d.id,
            presence: Presence::Online {
                addr: "a".into(),
                session: tag("gw1", 1),
            },
            at_ms: 1,
        };
        s.op(req).expect("online");
    }
    let all_offline = |s: &Store<_>| {
        let Ok(Response::Devices(all)) = s.op(Request::ListDevices {
            after: None,
            limit: MAX_LIST_PAGE,
            scope: DeviceScope::All,
        }) else {
            panic!("list")
        };
        assert_eq!(all.len() as u64, n);
        assert!(all.iter().all(|d| d.sessions == 0));
    };
    // The first reset scans every device; the second (indexed) visits the live session sets,
    // here also more than one chunk of them.
    s.op(reset("gw1")).expect("reset");
    all_offline(&s);
    for id in 1..=n {
        s.op(Request::SetPresence {
            device: id,
            presence: Presence::Online {
                addr: "a".into(),
                session: tag("gw1", 2),
            },
            at_ms: 2,
        })
        .expect("online again");
    }
    s.op(reset("gw1")).expect("indexed reset");
    all_offline(&s);
}

/// A count written before live session sets existed has no set to find it by: the first reset
/// scans every device and marks the store indexed; later resets visit only the sets.
#[test]
fn the_first_reset_scans_every_device_and_later_ones_only_the_live_sets() {
    let (s, engine) = store();
    let legacy = create(&s, "legacy", 1).id;
    let online = create(&s, "online", 2).id;
    let set_legacy_count = |sessions: u32| {
        let key = keys::device(legacy);
        let value = engine.get(Cf::Devices, &key).expect("get").expect("exists");
        let mut record: records::StoredDevice =
            records::decode("device", &key, &value).expect("decode");
        record.sessions = sessions;
        let mut batch = WriteBatch::new();
        batch.put(
            Cf::Devices,
            key.to_vec(),
            records::encode(&record).expect("encode"),
        );
        engine.write(batch, Durability::Sync).expect("write");
    };
    set_legacy_count(3);
    s.op(Request::SetPresence {
        device: online,
        presence: Presence::Online {
            addr: "a".into(),
            session: tag("gw1", 7),
        },
        at_ms: 1,
    })
    .expect("online");
    s.op(reset("gw1")).expect("first reset");
    assert_eq!(
        get(&s, legacy).sessions,
        0,
        "the full scan finds the legacy count"
    );
    assert_eq!(get(&s, online).sessions, 0);
    assert!(
        engine
            .get(Cf::Meta, keys::PRESENCE_INDEXED)
            .expect("get")
            .is_some()
    );
    // Once indexed, a count without a set is not visited: proof the reset no longer scans.
    set_legacy_count(5);
    s.op(Request::SetPresence {
        device: online,
        presence: Presence::Online {
            addr: "a".into(),
            session: tag("gw1", 8),
        },
        at_ms: 2,
    })
    .expect("online");
    s.op(reset("gw1")).expect("indexed reset");
    assert_eq!(
        get(&s, online).sessions,
        0,
        "the live set is found and cleared"
    );
    assert_eq!(get(&s, legacy).sessions, 5, "no full scan once indexed");
}

#[test]
fn concurrent_presence_updates_are_not_lost() {
    let (s, _) = store();
    let id = create(&s, "busy", 1).id;
    std::thread::scope(|scope| {
        for t in 0..8 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..30 {
                    let req = Request::SetPresence {
                        device: id,
                        presence: Presence::Online {
                            addr: format!("{t}:{i}"),
                            session: tag("gw1", t * 1000 + i),
                        },
                        at_ms: i,
                    };
                    assert_eq!(s.op(req), Ok(Response::Done));
                }
            });
        }
    });
    assert_eq!(
        get(&s, id).sessions,
        240,
        "every distinct session counted once"
    );
}

/// Two gateways on one store: restarting one (its reset) ends its own sessions only. A device
/// connected through both stays online through the other.
#[test]
fn a_nodes_reset_ends_only_its_own_sessions() {
    let (s, _) = store();
    let on_a = create(&s, "on-a", 1).id;
    let on_b = create(&s, "on-b", 2).id;
    let on_both = create(&s, "on-both", 3).id;
    online(&s, on_a, "gw-a", 1);
    online(&s, on_b, "gw-b", 1);
    online(&s, on_both, "gw-a", 2);
    online(&s, on_both, "gw-b", 2);
    // The same local number on another node is another session.
    assert_eq!(get(&s, on_both).sessions, 2);

    assert_eq!(s.op(reset("gw-a")), Ok(Response::Done));
    assert_eq!(get(&s, on_a).sessions, 0, "gw-a's device went offline");
    assert_eq!(get(&s, on_b).sessions, 1, "gw-b's device stays online");
    assert_eq!(get(&s, on_both).sessions, 1, "still online through gw-b");

    // gw-a's old sessions are gone: a late offline for one changes nothing; gw-b's still end.
    offline(&s, on_both, "gw-a", 2);
    assert_eq!(get(&s, on_both).sessions, 1);
    offline(&s, on_both, "gw-b", 2);
    assert_eq!(get(&s, on_both).sessions, 0);

    // A node whose name prefixes another's ("gw" of "gw-b") resets only its own.
    online(&s, on_a, "gw", 5);
    assert_eq!(s.op(reset("gw")), Ok(Response::Done));
    assert_eq!((get(&s, on_a).sessions, get(&s, on_b).sessions), (0, 1));
    assert_eq!(s.op(reset("gw-b")), Ok(Response::Done));
    assert_eq!(get(&s, on_b).sessions, 0);
}

/// A reset visits the node's own session sets and nothing else: a count it has no set for
/// (written by hand here) is not looked at, proof that the cost follows that node's online
/// devices rather than the fleet.
#[test]
fn a_reset_visits_only_the_nodes_sets() {
    let (s, engine) = store();
    let mine = create(&s, "mine", 1).id;
    let other = create(&s, "other", 2).id;
    let unvisited = create(&s, "unvisited", 3).id;
    s.op(reset("gw-a"))
        .expect("first reset marks the store indexed");
    online(&s, mine, "gw-a", 1);
    online(&s, other, "gw-b", 1);
    set_count(&engine, unvisited, 5);
    s.op(reset("gw-a")).expect("reset");
    assert_eq!((get(&s, mine).sessions, get(&s, other).sessions), (0, 1));
    assert_eq!(get(&s, unvisited).sessions, 5, "not visited");
}

#[test]
fn presence_refuses_a_malformed_node_name() {
    let (s, _) = store();
    let id = create(&s, "a", 1).id;
    let bad = SessionTag {
        node: serde_roundtrip_node("gw/1"),
        local: 1,
    };
    let request = Request::SetPresence {
        device: id,
        presence: Presence::Online {
            addr: "a".into(),
            session: bad,
        },
        at_ms: 1,
    };
    assert!(invalid(s.op(request)).contains("node name"));
    let request = Request::ResetPresence {
        node: serde_roundtrip_node(""),
    };
    assert!(invalid(s.op(request)).contains("node name"));
}

/// A node name as a peer could send it: decoded from the wire, so not checked by the type.
fn serde_roundtrip_node(name: &str) -> NodeName {
    let bytes = postcard::to_stdvec(name).expect("encodes");
    postcard::from_bytes(&bytes).expect("decodes")
}

/// What a store of wire version 2 left: one node-less session set per online device
/// (`presence/<id>`, the device's count being its size), already indexed. The first reset of any
/// node after the upgrade clears them all (their gateways ran binaries this store no longer
/// serves), leaves the sessions new gateways reported since, and later resets find none.
#[test]
fn the_first_reset_after_an_upgrade_clears_the_node_less_sets() {
    let (s, engine) = store();
    let old_a = create(&s, "old-a", 1).id;
    let old_b = create(&s, "old-b", 2).id;
    let newer = create(&s, "newer", 3).id;
    s.op(reset("gw-a")).expect("indexed");
    write_legacy_set(&engine, old_a, &[1, 2]);
    write_legacy_set(&engine, old_b, &[(1 << 32) | 7]);
    // A gateway of this version already reported a session on one of them, and on another.
    online(&s, old_b, "gw-b", 9);
    online(&s, newer, "gw-b", 9);
    assert_eq!((get(&s, old_a).sessions, get(&s, old_b).sessions), (2, 2));

    s.op(reset("gw-a")).expect("first reset after the upgrade");
    assert_eq!(get(&s, old_a).sessions, 0, "the old sessions ended");
    assert_eq!(get(&s, old_b).sessions, 1, "gw-b's session stays");
    assert_eq!(get(&s, newer).sessions, 1);
    assert!(legacy_sets(&engine).is_empty(), "no node-less set is left");

    s.op(reset("gw-b")).expect("gw-b restarts");
    assert_eq!((get(&s, old_b).sessions, get(&s, newer).sessions), (0, 0));
}

/// Counts written before session sets existed (no `presence_indexed` marker), a node-less set
/// and a node set, all in one store: the first reset recomputes every count from the node sets,
/// so only the other node's session is left.
#[test]
fn the_first_reset_of_an_unindexed_store_recounts_from_the_node_sets() {
    let (s, engine) = store();
    let counted = create(&s, "counted", 1).id;
    let legacy = create(&s, "legacy", 2).id;
    let elsewhere = create(&s, "elsewhere", 3).id;
    set_count(&engine, counted, 4);
    write_legacy_set(&engine, legacy, &[1]);
    online(&s, elsewhere, "gw-b", 1);
    online(&s, counted, "gw-a", 1);
    s.op(reset("gw-a")).expect("first reset");
    assert_eq!(get(&s, counted).sessions, 0);
    assert_eq!(get(&s, legacy).sessions, 0);
    assert_eq!(
        get(&s, elsewhere).sessions,
        1,
        "another node's session stays"
    );
    assert!(legacy_sets(&engine).is_empty());
    assert!(
        engine
            .get(Cf::Meta, keys::PRESENCE_INDEXED)
            .expect("get")
            .is_some()
    );
}

/// Many online devices of one node, more than a chunk of them, among another node's.
#[test]
fn a_nodes_reset_covers_more_than_one_chunk_of_its_devices() {
    let (s, _) = store();
    let n = RESET_CHUNK as u64 + 5;
    for i in 0..n {
        let mut token = [0u8; 32];
        token[..8].copy_from_slice(&i.to_be_bytes());
        let Ok(Response::Device(d)) = s.op(Request::CreateDevice {
            org: OrgId::ROOT,
            template: tmpl("TMPL1"),
            owner: None,
            name: "n".into(),
            token_hash: token,
        }) else {
            panic!("create")
        };
        online(&s, d.id, if i % 3 == 0 { "gw-b" } else { "gw-a" }, i);
    }
    s.op(reset("gw-a")).expect("reset");
    for id in 1..=n {
        let expected = u32::from((id - 1) % 3 == 0);
        assert_eq!(get(&s, id).sessions, expected, "device {id}");
    }
}

#[test]
fn each_node_keeps_at_most_its_cap_of_sessions_per_device() {
    let (s, _) = store();
    let id = create(&s, "busy", 1).id;
    for local in 0..(MAX_LIVE_SESSIONS as u64 + 10) {
        online(&s, id, "gw-a", local);
    }
    online(&s, id, "gw-b", 1);
    assert_eq!(get(&s, id).sessions, MAX_LIVE_SESSIONS as u32 + 1);
    s.op(reset("gw-a")).expect("reset");
    assert_eq!(get(&s, id).sessions, 1);
}

/// Writes a wire-version-2 session set for `device` and the count that went with it.
fn write_legacy_set(engine: &Arc<MemoryEngine>, device: DeviceId, tags: &[u64]) {
    let mut batch = WriteBatch::new();
    batch.put(
        Cf::Meta,
        keys::legacy_presence(device),
        records::encode(&tags.to_vec()).expect("encode"),
    );
    engine.write(batch, Durability::Sync).expect("write");
    let current = records_sessions(engine, device);
    set_count(engine, device, current + tags.len() as u32);
}

fn records_sessions(engine: &Arc<MemoryEngine>, device: DeviceId) -> u32 {
    let key = keys::device(device);
    let value = engine.get(Cf::Devices, &key).expect("get").expect("exists");
    let record: records::StoredDevice = records::decode("device", &key, &value).expect("decode");
    record.sessions
}

/// Overwrites a device's stored `sessions` (what an older store may have left).
fn set_count(engine: &Arc<MemoryEngine>, device: DeviceId, sessions: u32) {
    let key = keys::device(device);
    let value = engine.get(Cf::Devices, &key).expect("get").expect("exists");
    let mut record: records::StoredDevice =
        records::decode("device", &key, &value).expect("decode");
    record.sessions = sessions;
    let mut batch = WriteBatch::new();
    batch.put(
        Cf::Devices,
        key.to_vec(),
        records::encode(&record).expect("encode"),
    );
    engine.write(batch, Durability::Sync).expect("write");
}

fn legacy_sets(engine: &Arc<MemoryEngine>) -> Vec<crate::engine::KeyValue> {
    engine
        .scan_prefix(Cf::Meta, keys::LEGACY_PRESENCE_PREFIX)
        .expect("scan")
}
