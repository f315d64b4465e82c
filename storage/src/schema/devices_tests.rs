//! Device state through the store: the device info record and pin properties, with their
//! validation (presence is `presence_tests.rs`).

use super::tests::{AsOperator, create, get, invalid, store, v};
use super::*;

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
        s.op(Request::SetInfo {
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
        invalid(s.op(Request::SetInfo {
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
        s.op(Request::SetInfo {
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
        s.op(Request::WriteProperty {
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
    let Ok(Response::Properties(props)) = s.op(Request::ReadProperties { device: a }) else {
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
        s.op(Request::ReadProperties { device: 9 }),
        Err(StoreError::NotFound(_))
    ));
}
