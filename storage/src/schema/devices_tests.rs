//! Device state through the store: live presence sessions (idempotent online/offline, resets,
//! concurrent updates), the device info record and pin properties, with their validation.

use super::tests::{create, get, invalid, store, v};
use super::*;
use portcullis_protocol::store::{MAX_LIST_PAGE, Presence};

#[test]
fn presence_counts_sessions_and_reset_clears_them() {
    let (s, _) = store();
    let a = create(&s, "a", 1).id;
    let b = create(&s, "b", 2).id;
    let online = |d, session, addr: &str, at| {
        s.handle(Request::SetPresence {
            device: d,
            presence: Presence::Online {
                addr: addr.into(),
                session,
            },
            at_ms: at,
        })
    };
    let offline = |d, session, at| {
        s.handle(Request::SetPresence {
            device: d,
            presence: Presence::Offline { session },
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
    assert_eq!(s.handle(Request::ResetPresence), Ok(Response::Done));
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
            org: "o".into(),
            template: "t".into(),
            name: "n".into(),
            token_hash: token,
        };
        let Ok(Response::Device(d)) = s.handle(req) else {
            panic!("create")
        };
        let req = Request::SetPresence {
            device: d.id,
            presence: Presence::Online {
                addr: "a".into(),
                session: 1,
            },
            at_ms: 1,
        };
        s.handle(req).expect("online");
    }
    let all_offline = |s: &Store<_>| {
        let Ok(Response::Devices(all)) = s.handle(Request::ListDevices {
            after: None,
            limit: MAX_LIST_PAGE,
            org: None,
        }) else {
            panic!("list")
        };
        assert_eq!(all.len() as u64, n);
        assert!(all.iter().all(|d| d.sessions == 0));
    };
    // The first reset scans every device; the second (indexed) visits the live session sets,
    // here also more than one chunk of them.
    s.handle(Request::ResetPresence).expect("reset");
    all_offline(&s);
    for id in 1..=n {
        s.handle(Request::SetPresence {
            device: id,
            presence: Presence::Online {
                addr: "a".into(),
                session: 2,
            },
            at_ms: 2,
        })
        .expect("online again");
    }
    s.handle(Request::ResetPresence).expect("indexed reset");
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
    s.handle(Request::SetPresence {
        device: online,
        presence: Presence::Online {
            addr: "a".into(),
            session: 7,
        },
        at_ms: 1,
    })
    .expect("online");
    s.handle(Request::ResetPresence).expect("first reset");
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
    s.handle(Request::SetPresence {
        device: online,
        presence: Presence::Online {
            addr: "a".into(),
            session: 8,
        },
        at_ms: 2,
    })
    .expect("online");
    s.handle(Request::ResetPresence).expect("indexed reset");
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
                            session: t * 1000 + i,
                        },
                        at_ms: i,
                    };
                    assert_eq!(s.handle(req), Ok(Response::Done));
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

#[test]
fn info_is_recorded_and_validated() {
    let (s, _) = store();
    let id = create(&s, "a", 1).id;
    let info = DeviceInfo {
        heartbeat_secs: Some(45),
        buff_in: Some(1024),
        firmware: Some("1.2".into()),
        ..DeviceInfo::default()
    };
    assert_eq!(
        s.handle(Request::SetInfo {
            device: id,
            info: info.clone(),
            at_ms: 9
        }),
        Ok(Response::Done)
    );
    let d = get(&s, id);
    assert_eq!((d.info, d.last_seen_ms), (Some(info), Some(9)));
    let long = DeviceInfo {
        device_type: Some("x".repeat(MAX_INFO_STRING_LEN + 1)),
        ..DeviceInfo::default()
    };
    assert!(
        invalid(s.handle(Request::SetInfo {
            device: id,
            info: long,
            at_ms: 1
        }))
        .contains("info device type")
    );
    let lossy = DeviceInfo {
        firmware: Some("\u{fffd}".repeat(MAX_INFO_FIELD_LEN)),
        ..DeviceInfo::default()
    };
    assert_eq!(
        s.handle(Request::SetInfo {
            device: id,
            info: lossy,
            at_ms: 1
        }),
        Ok(Response::Done),
        "what the parser may produce"
    );
}

#[test]
fn properties_write_read_and_validate() {
    let (s, _) = store();
    let a = create(&s, "a", 1).id;
    let b = create(&s, "b", 2).id;
    let prop = |device, pin, property: &str, value: &str, at_ms| {
        s.handle(Request::WriteProperty {
            device,
            pin,
            property: property.into(),
            value: value.as_bytes().to_vec(),
            at_ms,
        })
    };
    assert_eq!(prop(a, v(2), "label", "Temp", 1), Ok(Response::Done));
    assert_eq!(prop(a, v(1), "color", "#ff0000", 2), Ok(Response::Done));
    assert_eq!(prop(a, v(1), "color", "#00ff00", 3), Ok(Response::Done));
    assert_eq!(prop(b, v(1), "label", "B", 4), Ok(Response::Done));
    let Ok(Response::Properties(props)) = s.handle(Request::ReadProperties { device: a }) else {
        panic!("read")
    };
    let got: Vec<_> = props
        .iter()
        .map(|p| (p.pin, p.property.as_str(), p.value.as_slice(), p.at_ms))
        .collect();
    assert_eq!(
        got,
        vec![
            (v(1), "color", &b"#00ff00"[..], 3),
            (v(2), "label", &b"Temp"[..], 1)
        ]
    );
    assert!(invalid(prop(a, v(1), "", "x", 1)).contains("property name"));
    assert!(
        invalid(prop(
            a,
            v(1),
            &"p".repeat(MAX_PROPERTY_NAME_LEN + 1),
            "x",
            1
        ))
        .contains("limit is 64")
    );
    // Only known widget properties: each name is a stored row per pin.
    assert!(invalid(prop(a, v(1), "p17", "x", 1)).contains("unknown widget property \"p17\""));
    assert!(matches!(
        prop(9, v(1), "label", "x", 1),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.handle(Request::ReadProperties { device: 9 }),
        Err(StoreError::NotFound(_))
    ));
}
