//! Key layouts of every column family. Keys are built so that the scans the store needs are
//! prefix or range scans: device ids are big-endian (numeric order is key order), and a device's
//! pins and properties all start with its id.
//!
//! | family        | key                                                   |
//! |---------------|-------------------------------------------------------|
//! | `meta`        | ASCII name (`format_version`, `next_device_id`, …), `presence/` · id |
//! | `devices`     | id (u64 BE)                                           |
//! | `token_index` | SHA-256 of the token (32 bytes)                       |
//! | `pins`        | id (u64 BE) · kind (`a`/`d`/`v`) · pin (u8)            |
//! | `properties`  | id (u64 BE) · kind · pin · property name (UTF-8)      |
//! | `pin_history` | id (u64 BE) · kind · pin · time ms (u64 BE) · seq (u32 BE) |
//! | `users`       | normalized email (UTF-8)                              |

use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::DeviceId;

/// Meta key of the data format version (u32 BE).
pub(crate) const FORMAT_VERSION: &[u8] = b"format_version";
/// Meta key of the next device id to hand out (u64 BE). Absent means 1.
pub(crate) const NEXT_DEVICE_ID: &[u8] = b"next_device_id";
/// Meta keys `presence/<device id BE>`: the device's live session tags (postcard `Vec<u64>`).
pub(crate) const PRESENCE_PREFIX: &[u8] = b"presence/";

/// Meta key present once every device with live sessions has a `presence/` entry: set by the
/// first full reset of a store whose writers keep those entries, so later resets visit only the
/// devices that have one instead of every device. (Sorts after every `presence/` key.)
pub(crate) const PRESENCE_INDEXED: &[u8] = b"presence_indexed";

/// The device id of a `presence/<id>` meta key.
pub(crate) fn parse_presence(key: &[u8]) -> Option<DeviceId> {
    key.strip_prefix(PRESENCE_PREFIX).and_then(parse_device)
}

pub(crate) fn presence(id: DeviceId) -> Vec<u8> {
    let mut key = PRESENCE_PREFIX.to_vec();
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The key of a user: the normalized email itself, so a lookup in any case finds it and two
/// spellings of one address can never be two users.
pub(crate) fn user(normalized_email: &str) -> &[u8] {
    normalized_email.as_bytes()
}

const ID_LEN: usize = 8;
const PIN_KEY_LEN: usize = ID_LEN + 2;

pub(crate) fn device(id: DeviceId) -> [u8; ID_LEN] {
    id.to_be_bytes()
}

pub(crate) fn parse_device(key: &[u8]) -> Option<DeviceId> {
    key.try_into().ok().map(u64::from_be_bytes)
}

fn kind_byte(kind: PinKind) -> u8 {
    match kind {
        PinKind::Analog => b'a',
        PinKind::Digital => b'd',
        PinKind::Virtual => b'v',
    }
}

fn kind_from_byte(b: u8) -> Option<PinKind> {
    match b {
        b'a' => Some(PinKind::Analog),
        b'd' => Some(PinKind::Digital),
        b'v' => Some(PinKind::Virtual),
        _ => None,
    }
}

pub(crate) fn pin(id: DeviceId, pin: PinAddr) -> [u8; PIN_KEY_LEN] {
    let mut key = [0; PIN_KEY_LEN];
    key[..ID_LEN].copy_from_slice(&id.to_be_bytes());
    key[ID_LEN] = kind_byte(pin.kind);
    key[ID_LEN + 1] = pin.pin;
    key
}

/// The pin of a `pins` key (the device part is not checked: the caller scanned its prefix).
pub(crate) fn parse_pin(key: &[u8]) -> Option<PinAddr> {
    match key {
        [_, _, _, _, _, _, _, _, kind, pin] => Some(PinAddr::new(kind_from_byte(*kind)?, *pin)),
        _ => None,
    }
}

pub(crate) fn property(id: DeviceId, pin_addr: PinAddr, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(PIN_KEY_LEN + name.len());
    key.extend_from_slice(&pin(id, pin_addr));
    key.extend_from_slice(name.as_bytes());
    key
}

/// The pin and property name of a `properties` key.
pub(crate) fn parse_property(key: &[u8]) -> Option<(PinAddr, &str)> {
    let (head, name) = key.split_at_checked(PIN_KEY_LEN)?;
    Some((parse_pin(head)?, std::str::from_utf8(name).ok()?))
}

/// Length of a `pin_history` key.
pub(crate) const HISTORY_KEY_LEN: usize = PIN_KEY_LEN + 8 + 4;

/// A history key: the pin's key, then the time (so one pin's points sort by time), then a
/// sequence number that keeps two writes of the same millisecond apart.
pub(crate) fn history(id: DeviceId, pin_addr: PinAddr, at_ms: u64, seq: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(HISTORY_KEY_LEN);
    key.extend_from_slice(&pin(id, pin_addr));
    key.extend_from_slice(&at_ms.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The first key of `pin_addr`'s history at or after `at_ms`.
pub(crate) fn history_from(id: DeviceId, pin_addr: PinAddr, at_ms: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(PIN_KEY_LEN + 8);
    key.extend_from_slice(&pin(id, pin_addr));
    key.extend_from_slice(&at_ms.to_be_bytes());
    key
}

/// The time of a history key.
pub(crate) fn parse_history_time(key: &[u8]) -> Option<u64> {
    if key.len() != HISTORY_KEY_LEN {
        return None;
    }
    key.get(PIN_KEY_LEN..PIN_KEY_LEN + 8)
        .and_then(|t| t.try_into().ok())
        .map(u64::from_be_bytes)
}

/// The time and the sequence (the place within that millisecond) of a history key.
pub(crate) fn parse_history_position(key: &[u8]) -> Option<(u64, u32)> {
    let at_ms = parse_history_time(key)?;
    let seq = key
        .get(PIN_KEY_LEN + 8..)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)?;
    Some((at_ms, seq))
}

/// Lower-case hex, for naming keys in error messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_keys_sort_numerically() {
        let mut ids = [300u64, 2, 1 << 40, 255, 256, 0, u64::MAX];
        let mut keys: Vec<_> = ids.iter().map(|&id| device(id)).collect();
        keys.sort_unstable();
        ids.sort_unstable();
        assert_eq!(
            keys.iter()
                .map(|k| parse_device(k).expect("8 bytes"))
                .collect::<Vec<_>>(),
            ids
        );
        assert_eq!(parse_device(&[1, 2, 3]), None);
    }

    #[test]
    fn pin_and_property_keys_round_trip_under_the_device_prefix() {
        for kind in [PinKind::Analog, PinKind::Digital, PinKind::Virtual] {
            for p in [0u8, 7, 255] {
                let addr = PinAddr::new(kind, p);
                let k = pin(42, addr);
                assert!(k.starts_with(&device(42)));
                assert_eq!(parse_pin(&k), Some(addr));
                let pk = property(42, addr, "label");
                assert!(pk.starts_with(&k));
                assert_eq!(parse_property(&pk), Some((addr, "label")));
            }
        }
        assert_eq!(parse_pin(&[0; 9]), None);
        assert_eq!(parse_pin(&[0, 0, 0, 0, 0, 0, 0, 1, b'x', 1]), None);
        assert_eq!(parse_property(&[0; 5]), None);
    }

    #[test]
    fn history_keys_sort_by_time_within_a_pin() {
        let p = PinAddr::new(PinKind::Virtual, 3);
        let a = history(7, p, 255, 9);
        let b = history(7, p, 256, 0);
        assert!(a < b && a.starts_with(&pin(7, p)));
        assert!(history_from(7, p, 256) <= b && history_from(7, p, 256) > a);
        assert_eq!(parse_history_time(&b), Some(256));
        assert_eq!(parse_history_time(&b[1..]), None);
        assert_eq!(parse_history_position(&a), Some((255, 9)));
        assert_eq!(parse_history_position(&a[1..]), None);
    }

    #[test]
    fn one_device_prefix_never_covers_another() {
        // Device 1's prefix must not match device 256's keys (fixed-width ids guarantee it).
        assert!(!pin(256, PinAddr::new(PinKind::Virtual, 1)).starts_with(&device(1)));
    }
}
