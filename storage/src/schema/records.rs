//! The persisted value formats (postcard over serde) and their conversion to wire types.
//!
//! These structs are the on-disk format, deliberately separate from the wire types in
//! `portcullis_protocol::store`: the wire may change without rewriting the database, and a change
//! here is a format change (bump `FORMAT_VERSION` and migrate). The golden test at the bottom
//! fails if an encoding changes by accident.

use super::SchemaError;
use super::keys::hex;
use portcullis_protocol::body::DeviceInfo;
use portcullis_protocol::store::{DeviceId, DeviceRecord, TokenHash, UserRecord};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A device as stored under `devices/<id>`. The id is the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredDevice {
    pub org: String,
    pub template: String,
    pub name: String,
    /// Kept so a future token re-provision can remove the old index entry.
    pub token_hash: TokenHash,
    pub created_ms: u64,
    pub sessions: u32,
    pub last_seen_ms: Option<u64>,
    pub last_addr: Option<String>,
    pub info: Option<StoredInfo>,
}

/// A user as stored under `users/<normalized email>`. The email is the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredUser {
    pub org: String,
    /// argon2id PHC string of the client hash; never the password or the client hash itself.
    pub password_phc: String,
    pub created_ms: u64,
}

impl StoredUser {
    pub(crate) fn to_wire(&self, email: String) -> UserRecord {
        UserRecord {
            email,
            org: self.org.clone(),
            password_phc: self.password_phc.clone(),
            created_ms: self.created_ms,
        }
    }
}

/// The stored copy of [`DeviceInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredInfo {
    pub heartbeat_secs: Option<u16>,
    pub buff_in: Option<u16>,
    pub template: Option<String>,
    pub firmware: Option<String>,
    pub lib_version: Option<String>,
    pub device_type: Option<String>,
}

/// A latest value (of a pin or of a property).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredValue {
    pub value: Vec<u8>,
    pub at_ms: u64,
}

impl StoredDevice {
    pub(crate) fn to_wire(&self, id: DeviceId) -> DeviceRecord {
        DeviceRecord {
            id,
            org: self.org.clone(),
            template: self.template.clone(),
            name: self.name.clone(),
            created_ms: self.created_ms,
            sessions: self.sessions,
            last_seen_ms: self.last_seen_ms,
            last_addr: self.last_addr.clone(),
            info: self.info.clone().map(DeviceInfo::from),
        }
    }
}

impl From<StoredInfo> for DeviceInfo {
    fn from(s: StoredInfo) -> Self {
        DeviceInfo {
            heartbeat_secs: s.heartbeat_secs,
            buff_in: s.buff_in,
            template: s.template,
            firmware: s.firmware,
            lib_version: s.lib_version,
            device_type: s.device_type,
        }
    }
}

impl From<DeviceInfo> for StoredInfo {
    fn from(i: DeviceInfo) -> Self {
        StoredInfo {
            heartbeat_secs: i.heartbeat_secs,
            buff_in: i.buff_in,
            template: i.template,
            firmware: i.firmware,
            lib_version: i.lib_version,
            device_type: i.device_type,
        }
    }
}

/// Serializes a record. Only fails on a bug (postcard cannot fail on these types into a `Vec`).
pub(crate) fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>, SchemaError> {
    postcard::to_stdvec(record)
        .map_err(|e| SchemaError::Internal(format!("cannot encode a record: {e}")))
}

/// Deserializes a record read from `what` under `key`; garbage there is a corrupt store.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, SchemaError> {
    postcard::from_bytes(bytes).map_err(|e| SchemaError::Corrupt {
        what,
        key: hex(key),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredDevice {
        StoredDevice {
            org: "o".into(),
            template: "T".into(),
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

    /// Guards the on-disk format: if this fails, an encoding changed and existing data dirs would
    /// no longer read. Bump the format version and write a migration instead of editing the bytes.
    #[test]
    fn device_encoding_is_stable() {
        let mut expected = vec![1, b'o', 1, b'T', 1, b'n'];
        expected.extend([7; 32]);
        expected.extend([0xac, 0x02, 2, 1, 1, 0, 1, 1, 45, 0, 0, 1, 1, b'f', 0, 0]);
        assert_eq!(encode(&sample()).expect("encodes"), expected);
        let value = StoredValue {
            value: b"42".to_vec(),
            at_ms: 5,
        };
        assert_eq!(encode(&value).expect("encodes"), vec![2, b'4', b'2', 5]);
    }

    #[test]
    fn user_encoding_is_stable() {
        let user = StoredUser {
            org: "o".into(),
            password_phc: "$p".into(),
            created_ms: 300,
        };
        assert_eq!(
            encode(&user).expect("encodes"),
            vec![1, b'o', 2, b'$', b'p', 0xac, 0x02]
        );
        let wire = user.to_wire("a@b.c".into());
        assert_eq!(
            (wire.email.as_str(), wire.org.as_str(), wire.created_ms),
            ("a@b.c", "o", 300)
        );
    }

    #[test]
    fn records_round_trip_and_garbage_is_corruption() {
        let bytes = encode(&sample()).expect("encodes");
        assert_eq!(
            decode::<StoredDevice>("device", b"k", &bytes).expect("decodes"),
            sample()
        );
        let err = decode::<StoredDevice>("device", &[0xab], &bytes[..10]).expect_err("truncated");
        assert!(
            matches!(err, SchemaError::Corrupt { what: "device", ref key, .. } if key == "ab"),
            "{err:?}"
        );
    }

    #[test]
    fn wire_conversion_keeps_every_field() {
        let wire = sample().to_wire(9);
        assert_eq!(
            (wire.id, wire.sessions, wire.created_ms, wire.last_seen_ms),
            (9, 2, 300, Some(1))
        );
        assert_eq!(
            (
                wire.org.as_str(),
                wire.template.as_str(),
                wire.name.as_str()
            ),
            ("o", "T", "n")
        );
        let info = wire.info.expect("info");
        assert_eq!(
            (info.heartbeat_secs, info.firmware.as_deref()),
            (Some(45), Some("f"))
        );
        assert_eq!(StoredInfo::from(info.clone()), sample().info.expect("info"));
    }
}
