//! Key layouts of every column family (format version 2). Keys are built so that the scans the
//! store needs are prefix or range scans: ids are big-endian (numeric order is key order), a
//! device's pins and properties all start with its id, and what belongs to one organization or
//! one user starts with its id and a kind byte.
//!
//! | family             | key -> value                                                   |
//! |--------------------|----------------------------------------------------------------|
//! | `meta`             | ASCII name (`format_version`, `next_device_id`, `next_org_id`, `next_role_id`, `next_user_id`, `next_key_id`, `next_audit_seq`, …) -> counter; `node_presence/` · node · `/` · id; `presence/` · id (before wire version 3) |
//! | `devices`          | device id (u64 BE) -> device                                   |
//! | `token_index`      | SHA-256 of the device token (32 bytes) -> device id            |
//! | `pins`             | device id (u64 BE) · kind (`a`/`d`/`v`) · pin (u8) -> value     |
//! | `properties`       | device id (u64 BE) · kind · pin · property name (UTF-8) -> value |
//! | `pin_history`      | device id (u64 BE) · kind · pin · time ms (u64 BE) · seq (u32 BE) -> point |
//! | `users`            | user id (u64 BE) -> user (format 1: normalized email -> user)  |
//! | `orgs`             | org id (u32 BE) -> organization                                |
//! | `org_index`        | org id (u32 BE) · kind · member -> empty: `c` child org (u32 BE), `d` device (u64 BE), `k` API key (u64 BE), `r` custom role (u32 BE), `t` template (id, UTF-8), `u` user (u64 BE) |
//! | `roles`            | custom role id (u32 BE) -> role                                |
//! | `user_emails`      | normalized email (UTF-8) -> user id (u64 BE)                   |
//! | `user_index`       | user id (u64 BE) · `s` · session hash (32) -> empty; user id · `t` · purpose (u8) -> one-time token hash |
//! | `sessions`         | SHA-256 of the session token -> session                        |
//! | `one_time_tokens`  | SHA-256 of the one-time token -> token                         |
//! | `templates`        | template id (UTF-8) -> template                                |
//! | `template_devices` | id length (u8) · template id · device id (u64 BE) -> empty     |
//! | `api_keys`         | key id (u64 BE) -> API key                                     |
//! | `audit`            | sequence (u64 BE, from 1, no gaps) -> audit entry              |

use portcullis_protocol::authz::{OrgId, RoleId, UserId};
use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{ApiKeyId, DeviceId, NodeName, TemplateId, TokenPurpose};

/// Meta key of the data format version (u32 BE).
pub(crate) const FORMAT_VERSION: &[u8] = b"format_version";
/// Meta key of the next device id to hand out (u64 BE). Absent means 1.
pub(crate) const NEXT_DEVICE_ID: &[u8] = b"next_device_id";
/// Meta key of the next organization id (u64 BE). Absent means 2 (the root is 1).
pub(crate) const NEXT_ORG_ID: &[u8] = b"next_org_id";
/// Meta key of the next custom role id (u64 BE). Absent means `RoleId::FIRST_CUSTOM`.
pub(crate) const NEXT_ROLE_ID: &[u8] = b"next_role_id";
/// Meta key of the next user id (u64 BE). Absent means 1.
pub(crate) const NEXT_USER_ID: &[u8] = b"next_user_id";
/// Meta key of the next API key id (u64 BE). Absent means 1.
pub(crate) const NEXT_KEY_ID: &[u8] = b"next_key_id";
/// Meta key of the next audit sequence number (u64 BE). Absent means 1.
pub(crate) const NEXT_AUDIT_SEQ: &[u8] = b"next_audit_seq";
/// Meta key of the next revocation sequence number (u64 BE). Absent means 1.
pub(crate) const NEXT_REVOCATION_SEQ: &[u8] = b"next_revocation_seq";
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

/// The `user_emails` key of a user: the normalized email itself, so a lookup in any case finds
/// it and two spellings of one address can never be two users.
pub(crate) fn email(normalized_email: &str) -> &[u8] {
    normalized_email.as_bytes()
}

pub(crate) fn org(id: OrgId) -> [u8; 4] {
    id.0.to_be_bytes()
}

pub(crate) fn parse_org(key: &[u8]) -> Option<OrgId> {
    key.try_into().ok().map(u32::from_be_bytes).map(OrgId)
}

pub(crate) fn role(id: RoleId) -> [u8; 4] {
    id.0.to_be_bytes()
}

pub(crate) fn user(id: UserId) -> [u8; 8] {
    id.0.to_be_bytes()
}

pub(crate) fn parse_user(key: &[u8]) -> Option<UserId> {
    key.try_into().ok().map(u64::from_be_bytes).map(UserId)
}

pub(crate) fn api_key(id: ApiKeyId) -> [u8; 8] {
    id.0.to_be_bytes()
}

pub(crate) fn audit(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn revocation(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

pub(crate) fn template(id: &TemplateId) -> &[u8] {
    id.as_str().as_bytes()
}

/// Kinds of `org_index` entries.
pub(crate) const ORG_CHILD: u8 = b'c';
pub(crate) const ORG_DEVICE: u8 = b'd';
pub(crate) const ORG_KEY: u8 = b'k';
pub(crate) const ORG_ROLE: u8 = b'r';
pub(crate) const ORG_TEMPLATE: u8 = b't';
pub(crate) const ORG_USER: u8 = b'u';

/// The prefix of every `org_index` entry of one kind of `org`.
pub(crate) fn org_index_prefix(org: OrgId, kind: u8) -> [u8; 5] {
    let mut key = [0; 5];
    key[..4].copy_from_slice(&org.0.to_be_bytes());
    key[4] = kind;
    key
}

/// An `org_index` entry: `member` is the member's own key (an id BE, a template id).
pub(crate) fn org_index(org: OrgId, kind: u8, member: &[u8]) -> Vec<u8> {
    let mut key = org_index_prefix(org, kind).to_vec();
    key.extend_from_slice(member);
    key
}

/// The member part of an `org_index` key.
pub(crate) fn org_index_member(key: &[u8]) -> &[u8] {
    key.get(5..).unwrap_or_default()
}

/// Kinds of `user_index` entries.
pub(crate) const USER_SESSION: u8 = b's';
pub(crate) const USER_TOKEN: u8 = b't';

pub(crate) fn user_index_prefix(user: UserId, kind: u8) -> [u8; 9] {
    let mut key = [0; 9];
    key[..8].copy_from_slice(&user.0.to_be_bytes());
    key[8] = kind;
    key
}

/// A user's session entry in `user_index`.
pub(crate) fn user_session(user: UserId, hash: &[u8; 32]) -> Vec<u8> {
    let mut key = user_index_prefix(user, USER_SESSION).to_vec();
    key.extend_from_slice(hash);
    key
}

/// The session hash of a `user_index` session key.
pub(crate) fn parse_user_session(key: &[u8]) -> Option<[u8; 32]> {
    key.get(9..).and_then(|h| h.try_into().ok())
}

fn purpose_byte(purpose: TokenPurpose) -> u8 {
    match purpose {
        TokenPurpose::VerifyEmail => b'v',
        TokenPurpose::AcceptInvite => b'i',
        TokenPurpose::ResetPassword => b'r',
    }
}

/// Where a user's one token of `purpose` is named (the value is its hash).
pub(crate) fn user_token(user: UserId, purpose: TokenPurpose) -> Vec<u8> {
    let mut key = user_index_prefix(user, USER_TOKEN).to_vec();
    key.push(purpose_byte(purpose));
    key
}

/// The prefix of every `template_devices` entry of a template.
pub(crate) fn template_devices_prefix(id: &TemplateId) -> Vec<u8> {
    let bytes = id.as_str().as_bytes();
    let mut key = Vec::with_capacity(1 + bytes.len() + ID_LEN);
    // Template ids are at most MAX_TEMPLATE_ID_LEN (32) bytes.
    key.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(bytes);
    key
}

pub(crate) fn template_device(id: &TemplateId, device: DeviceId) -> Vec<u8> {
    let mut key = template_devices_prefix(id);
    key.extend_from_slice(&device.to_be_bytes());
    key
}

/// The range `[start, end)` of every key of device `id` in `pins`, `properties` and
/// `pin_history`.
pub(crate) fn device_range(id: DeviceId) -> (Vec<u8>, Vec<u8>) {
    let start = device(id).to_vec();
    let end = prefix_end(&start);
    (start, end)
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
    fn account_keys_sort_by_id_and_stay_within_their_owner() {
        let a = org_index(OrgId(1), ORG_DEVICE, &device(300));
        let b = org_index(OrgId(1), ORG_DEVICE, &device(2));
        assert!(b < a && a.starts_with(&org_index_prefix(OrgId(1), ORG_DEVICE)));
        assert!(!org_index(OrgId(256), ORG_DEVICE, &device(1)).starts_with(&org(OrgId(1))));
        assert_eq!(parse_device(org_index_member(&a)), Some(300));
        let t1 = TemplateId::parse("TMPL1").expect("id");
        let t12 = TemplateId::parse("TMPL12").expect("id");
        assert!(!template_device(&t12, 1).starts_with(&template_devices_prefix(&t1)));
        let session = user_session(UserId(7), &[3; 32]);
        assert_eq!(parse_user_session(&session), Some([3; 32]));
        assert!(session.starts_with(&user_index_prefix(UserId(7), USER_SESSION)));
        assert_ne!(
            user_token(UserId(7), TokenPurpose::VerifyEmail),
            user_token(UserId(7), TokenPurpose::ResetPassword)
        );
        let (start, end) = device_range(u64::MAX);
        assert!(start < end || end.is_empty());
        assert_eq!(device_range(1).1, device(2).to_vec());
    }

    #[test]
    fn one_device_prefix_never_covers_another() {
        // Device 1's prefix must not match device 256's keys (fixed-width ids guarantee it).
        assert!(!pin(256, PinAddr::new(PinKind::Virtual, 1)).starts_with(&device(1)));
    }
}
