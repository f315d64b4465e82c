//! Golden encodings of every stored record: if one of these fails, an encoding changed and
//! existing data directories would no longer read. Bump the format version and migrate instead
//! of editing the bytes.

use super::*;
use portcullis_protocol::authz::Permission;

fn device() -> StoredDevice {
    StoredDevice {
        org: 2,
        template: "TMPL1".into(),
        owner: Some(7),
        name: "n".into(),
        token_hash: [7; 32],
        created_ms: 300,
        sessions: 2,
        last_seen_ms: Some(1),
        last_addr: None,
        info: Some(StoredInfo {
            heartbeat_secs: Some(45),
            buff_in: None,
            template: None,
            firmware: Some("f".into()),
            lib_version: None,
            device_type: None,
        }),
    }
}

fn permissions() -> StoredPermissions {
    StoredPermissions::of(
        [Permission::UsersView, Permission::AuditLogView]
            .into_iter()
            .collect(),
    )
}

fn golden<T: Serialize>(record: &T) -> Vec<u8> {
    encode(record).expect("encodes")
}

#[test]
fn device_and_value_encodings_are_stable() {
    let mut expected = vec![2, 5, b'T', b'M', b'P', b'L', b'1', 1, 7, 1, b'n'];
    expected.extend([7; 32]);
    expected.extend([0xac, 0x02, 2, 1, 1, 0, 1, 1, 45, 0, 0, 1, 1, b'f', 0, 0]);
    assert_eq!(golden(&device()), expected);
    let value = StoredValue {
        value: b"42".to_vec(),
        at_ms: 5,
    };
    assert_eq!(golden(&value), [2, b'4', b'2', 5]);
}

#[test]
fn account_encodings_are_stable() {
    let org = StoredOrg {
        parent: Some(1),
        name: "o".into(),
        created_ms: 300,
    };
    assert_eq!(golden(&org), [1, 1, 1, b'o', 0xac, 0x02]);
    let role = StoredRole {
        org: 2,
        name: "r".into(),
        permissions: permissions(),
    };
    let mut expected = vec![2, 1, b'r', 2, 10];
    expected.extend(b"users.view");
    expected.push(14);
    expected.extend(b"audit_log.view");
    assert_eq!(golden(&role), expected);
    let user = StoredUser {
        email: "a@b".into(),
        name: "A".into(),
        org: 2,
        role: 3,
        status: StoredStatus::Suspended,
        password_phc: Some("$p".into()),
        created_ms: 300,
    };
    assert_eq!(
        golden(&user),
        [
            3, b'a', b'@', b'b', 1, b'A', 2, 3, 3, 1, 2, b'$', b'p', 0xac, 0x02
        ]
    );
    let session = StoredSession {
        user: 7,
        expires_ms: 300,
    };
    assert_eq!(golden(&session), [7, 0xac, 0x02]);
    let token = StoredToken {
        user: 7,
        purpose: StoredPurpose::ResetPassword,
        expires_ms: 1,
    };
    assert_eq!(golden(&token), [7, 2, 1]);
}

#[test]
fn template_key_and_audit_encodings_are_stable() {
    let template = StoredTemplate {
        org: 2,
        name: "t".into(),
        datastreams: vec![StoredDatastream {
            name: "temp".into(),
            pin_kind: b'v',
            pin: 1,
            value_type: StoredValueType::Double,
            min: Some(0.5),
            max: None,
            units: Some("C".into()),
            default: None,
        }],
        created_ms: 300,
    };
    let mut expected = vec![2, 1, b't', 1, 4, b't', b'e', b'm', b'p', b'v', 1, 1, 1];
    expected.extend(0.5f64.to_le_bytes());
    expected.extend([0, 1, 1, b'C', 0, 0xac, 0x02]);
    assert_eq!(golden(&template), expected);
    let key = StoredApiKey {
        name: "k".into(),
        creator: 7,
        org: 2,
        permissions: StoredPermissions(Vec::new()),
        secret_hash: [9; 32],
        created_ms: 300,
        expires_ms: None,
        last_used_ms: Some(1),
        revoked: true,
    };
    let mut expected = vec![1, b'k', 7, 2, 0];
    expected.extend([9; 32]);
    expected.extend([0xac, 0x02, 0, 1, 1, 1]);
    assert_eq!(golden(&key), expected);
    let entry = StoredAudit {
        at_ms: 300,
        actor: "operator".into(),
        actor_user: None,
        org: 1,
        action: "A".into(),
        target: "t".into(),
        from: "f".into(),
        detail: String::new(),
    };
    let mut expected = vec![0xac, 0x02, 8];
    expected.extend(b"operator");
    expected.extend([0, 1, 1, b'A', 1, b't', 1, b'f', 0]);
    assert_eq!(golden(&entry), expected);
}

#[test]
fn records_round_trip_and_garbage_is_corruption() {
    let bytes = golden(&device());
    assert_eq!(
        decode::<StoredDevice>("device", b"k", &bytes).expect("decodes"),
        device()
    );
    let err = decode::<StoredDevice>("device", &[0xab], &bytes[..10]).expect_err("truncated");
    assert!(
        matches!(err, SchemaError::Corrupt { what: "device", ref key, .. } if key == "ab"),
        "{err:?}"
    );
    let wire = device().to_wire(9).expect("valid");
    assert_eq!(
        (wire.id, wire.org.0, wire.owner.map(|u| u.0)),
        (9, 2, Some(7))
    );
    let bad = StoredDevice {
        template: "nope".into(),
        ..device()
    };
    assert!(matches!(bad.to_wire(9), Err(SchemaError::Corrupt { .. })));
    let unknown = StoredPermissions(vec!["root.everything".into()]);
    assert!(unknown.to_set().is_err());
    assert_eq!(
        permissions().to_set().expect("known"),
        [Permission::UsersView, Permission::AuditLogView]
            .into_iter()
            .collect()
    );
}
