//! Key layouts of every column family. Keys are built so that the scans the store needs are
//! prefix or range scans: device ids are big-endian (numeric order is key order), and a device's
//! pins and properties all start with its id.
//!
//! | family        | key                                                   |
//! |---------------|-------------------------------------------------------|
//! | `meta`        | ASCII name (`format_version`, `next_device_id`, …), `node_presence/` · node · `/` · id, `presence/` · id (before wire version 3) |
//! | `devices`     | id (u64 BE)                                           |
//! | `token_index` | SHA-256 of the token (32 bytes)                       |
//! | `pins`        | id (u64 BE) · kind (`a`/`d`/`v`) · pin (u8)            |
//! | `properties`  | id (u64 BE) · kind · pin · property name (UTF-8)      |
//! | `pin_history` | id (u64 BE) · kind · pin · time ms (u64 BE) · seq (u32 BE) |
//! | `users`       | normalized email (UTF-8)                              |

use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{DeviceId, NodeName};

/// Meta key of the data format version (u32 BE).
pub(crate) const FORMAT_VERSION: &[u8] = b"format_version";
/// Meta key of the next device id to hand out (u64 BE). Absent means 1.
pub(crate) const NEXT_DEVICE_ID: &[u8] = b"next_device_id";
/// Meta keys `node_presence/<node>/<device id BE>`: the live sessions one gateway node has on
/// one device (the `local` parts of their tags, postcard `Vec<u64>`). Node names hold no `/`, so
/// a node's prefix covers exactly its own keys, and its reset visits only them.
pub(crate) const NODE_PRESENCE_PREFIX: &[u8] = b"node_presence/";

/// Meta keys `presence/<device id BE>`: a device's live session tags as wire version 2 and
/// before kept them, one set for every gateway, without the node (postcard `Vec<u64>`). Nothing
/// writes them any more; the first reset after an upgrade clears them.
pub(crate) const LEGACY_PRESENCE_PREFIX: &[u8] = b"presence/";

/// Meta key present once every device with live sessions has a presence entry: set by the first
/// full reset of a store whose writers keep those entries, so later resets visit only the
/// entries instead of every device.
pub(crate) const PRESENCE_INDEXED: &[u8] = b"presence_indexed";

/// The first key after every key starting with `prefix` (an exclusive scan end).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: no key follows; callers never pass such a prefix.
    Vec::new()
}

/// The prefix of every `node_presence/` key of `node`.
pub(crate) fn node_presence_prefix(node: &NodeName) -> Vec<u8> {
    let mut key = NODE_PRESENCE_PREFIX.to_vec();
    key.extend_from_slice(node.as_str().as_bytes());
    key.push(b'/');
    key
}

/// Where `node` keeps its live sessions on device `id`.
pub(crate) fn node_presence(node: &NodeName, id: DeviceId) -> Vec<u8> {
    let mut key = node_presence_prefix(node);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

/// The device id of a `node_presence/<node>/<id>` key, whatever the node.
pub(crate) fn parse_node_presence(key: &[u8]) -> Option<DeviceId> {
    let rest = key.strip_prefix(NODE_PRESENCE_PREFIX)?;
    let slash = rest.iter().position(|b| *b == b'/')?;
    parse_device(rest.get(slash + 1..)?)
}

/// The device id of a legacy `presence/<id>` meta key.
pub(crate) fn parse_legacy_presence(key: &[u8]) -> Option<DeviceId> {
    key.strip_prefix(LEGACY_PRESENCE_PREFIX)
        .and_then(parse_device)
}

/// A legacy `presence/<id>` key (for tests that write what an older store left).
#[cfg(test)]
pub(crate) fn legacy_presence(id: DeviceId) -> Vec<u8> {
    let mut key = LEGACY_PRESENCE_PREFIX.to_vec();
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
    fn node_presence_keys_stay_within_their_node() {
        let node = |n: &str| NodeName::new(n).expect("valid name");
        let gw = node_presence_prefix(&node("gw"));
        let gw1 = node_presence(&node("gw1"), 7);
        assert!(!gw1.starts_with(&gw), "node gw does not cover gw1's keys");
        // An id whose bytes hold '/' still parses: the node part ends at the first one.
        let id = u64::from_be_bytes(*b"\0\0//////");
        let key = node_presence(&node("gw"), id);
        assert!(key.starts_with(&gw));
        assert_eq!(parse_node_presence(&key), Some(id));
        assert_eq!(parse_node_presence(b"node_presence/gw"), None);
        assert_eq!(parse_legacy_presence(&legacy_presence(9)), Some(9));
        let end = prefix_end(&gw);
        assert!(key.as_slice() < end.as_slice() && gw.as_slice() < end.as_slice());
        assert_eq!(prefix_end(b"a\xff"), b"b");
        // Old and new presence keys never share a prefix, nor does the indexed marker.
        assert!(!NODE_PRESENCE_PREFIX.starts_with(LEGACY_PRESENCE_PREFIX));
        assert!(!PRESENCE_INDEXED.starts_with(LEGACY_PRESENCE_PREFIX));
    }

    #[test]
    fn one_device_prefix_never_covers_another() {
        // Device 1's prefix must not match device 256's keys (fixed-width ids guarantee it).
        assert!(!pin(256, PinAddr::new(PinKind::Virtual, 1)).starts_with(&device(1)));
    }
}
