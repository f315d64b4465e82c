//! The hello that opens every store link: the client's [`ClientHello`] names the wire version,
//! its [`ClientRole`] and the gateway node it belongs to ([`NodeName`]); the store answers with a
//! [`ServerHello`]. The store logs who opened the link and decides by the role what the link may
//! send, and by the node whose device sessions its presence changes may touch.
//!
//! Every version's hello starts with the version, and a store reads that field alone first
//! ([`decode_client_hello`]), so a client of another version is told which version the store
//! speaks even when the rest of its hello would not decode as ours.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use thiserror::Error;

use super::framing::{WireError, frame_payload};

/// Version of this wire format; both sides refuse a peer that speaks another one. Version 2
/// added users (`CreateUser`, `GetUser`) and the org filter of `ListDevices`; version 3 named
/// the gateway node and the client's role in the hello, and the node in session tags and in
/// `ResetPresence`; version 4 added accounts (organizations, roles, users by id, sessions,
/// templates, API keys, the audit log) and the acting party of each request.
pub const WIRE_VERSION: u16 = 4;

/// Longest gateway node name, in bytes.
pub const MAX_NODE_NAME_LEN: usize = 32;

/// The name of one gateway node (`[server] node_name`), or of a tool that is not a gateway
/// (`portcullis-store`, the load generator): 1 to [`MAX_NODE_NAME_LEN`] bytes of ASCII letters,
/// digits, `.`, `_` and `-`. It is part of stored keys (each node's live sessions), so it has no
/// separator, space or control character.
///
/// [`NodeName::new`] checks the rule, and so does [`NodeName::from_static`], at compile time
/// when it initialises a `const`; a name decoded from the wire is not checked, so the store calls
/// [`NodeName::check`] on what a peer sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeName(Cow<'static, str>);

/// Why a node name is not one (whoever chose the name: an operator's config, or a peer).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodeNameError {
    #[error("a node name must not be empty")]
    Empty,
    #[error("node name {name:?} is {len} bytes long; the limit is {MAX_NODE_NAME_LEN}")]
    TooLong { name: String, len: usize },
    #[error(
        "node name {name:?} contains {bad:?}; use only ASCII letters, digits, '.', '_' and '-'"
    )]
    BadCharacter { name: String, bad: char },
}

impl NodeName {
    /// A checked node name.
    pub fn new(name: impl Into<String>) -> Result<Self, NodeNameError> {
        let name = NodeName(Cow::Owned(name.into()));
        name.check()?;
        Ok(name)
    }

    /// A name fixed in the source (a default, a tool's own name). Use it to initialise a
    /// `const`, so a name that breaks the rule fails the build instead of panicking.
    pub const fn from_static(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(
            !bytes.is_empty() && bytes.len() <= MAX_NODE_NAME_LEN,
            "a node name is 1 to 32 bytes"
        );
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            assert!(
                b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-',
                "a node name holds only ASCII letters, digits, '.', '_' and '-'"
            );
            i += 1;
        }
        NodeName(Cow::Borrowed(name))
    }

    /// Checks the rule (for a name that came from the wire).
    pub fn check(&self) -> Result<(), NodeNameError> {
        let name = &self.0;
        if name.is_empty() {
            return Err(NodeNameError::Empty);
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(NodeNameError::BadCharacter {
                name: name.chars().take(MAX_NODE_NAME_LEN * 2).collect(),
                bad,
            });
        }
        if name.len() > MAX_NODE_NAME_LEN {
            return Err(NodeNameError::TooLong {
                name: name.to_string(),
                len: name.len(),
            });
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who opens the link, which decides what it may send (the store's rule, one function in
/// `storage/src/server/permissions.rs`). New variants go at the end: postcard encodes the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRole {
    /// A gateway's device traffic: logins, telemetry, presence (its own node's only), the app
    /// API's reads and the operations it runs. Not the key and backup requests.
    DeviceTraffic(TrafficLink),
    /// `portcullis admin`, the store's own commands, the load generator: everything.
    Admin,
    /// The gateway's metrics scraper: `Ping` and `Stats`, nothing that reads or changes data.
    Metrics,
}

/// Which of a gateway's device-traffic links this is (for the store's log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficLink {
    /// A reactor shard (its index).
    Shard(u16),
    /// The control link of the gateway's start-up (presence reset, readiness probe).
    Control,
    /// An operation worker (its index).
    Worker(u16),
}

impl fmt::Display for ClientRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientRole::DeviceTraffic(TrafficLink::Shard(i)) => {
                write!(f, "device traffic (shard {i})")
            }
            ClientRole::DeviceTraffic(TrafficLink::Control) => {
                f.write_str("device traffic (control)")
            }
            ClientRole::DeviceTraffic(TrafficLink::Worker(i)) => {
                write!(f, "device traffic (worker {i})")
            }
            ClientRole::Admin => f.write_str("admin"),
            ClientRole::Metrics => f.write_str("metrics (read-only)"),
        }
    }
}

/// The client's first frame. The field order is part of the contract: `version` first (see the
/// module header), then `role` before `node`, so a store of version 2, which reads a version and
/// a role, still decodes it and answers with its own version instead of dropping the link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    pub version: u16,
    pub role: ClientRole,
    /// The gateway node the client belongs to (or the tool's own name).
    pub node: NodeName,
}

impl ClientHello {
    /// The hello of this wire version.
    pub fn new(node: NodeName, role: ClientRole) -> Self {
        Self {
            version: WIRE_VERSION,
            role,
            node,
        }
    }
}

/// The store's answer. Its shape must not change between versions: it is how a client learns
/// that the store speaks another one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerHello {
    Accepted { version: u16 },
    Refused { version: u16, reason: String },
}

/// A client hello as the store reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHelloFrame {
    /// A hello of this version.
    Ours(ClientHello),
    /// A client of another wire version; the rest of its hello is not ours to read.
    OtherVersion(u16),
}

/// The leading field of every version's hello.
#[derive(Deserialize)]
struct VersionOnly {
    version: u16,
}

/// Decodes the client hello at the front of `buf`: `Ok(None)` while it is incomplete, otherwise
/// the hello and the bytes it used. The version is read first, so another version is reported
/// as such instead of as a malformed frame.
pub fn decode_client_hello(buf: &[u8]) -> Result<Option<(ClientHelloFrame, usize)>, WireError> {
    let Some((payload, used)) = frame_payload(buf)? else {
        return Ok(None);
    };
    // postcard reads what the type needs and leaves the rest of the payload alone.
    let VersionOnly { version } = postcard::from_bytes(payload)?;
    if version != WIRE_VERSION {
        return Ok(Some((ClientHelloFrame::OtherVersion(version), used)));
    }
    let hello = postcard::from_bytes(payload)?;
    Ok(Some((ClientHelloFrame::Ours(hello), used)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::encode_frame;

    fn node(name: &str) -> NodeName {
        NodeName::new(name).expect("valid node name")
    }

    #[test]
    fn node_names_are_short_and_plain() {
        for good in [
            "gw1",
            "gateway",
            "edge-2.eu_west",
            "A",
            &"x".repeat(MAX_NODE_NAME_LEN),
        ] {
            assert!(NodeName::new(good).is_ok(), "{good:?}");
        }
        assert_eq!(NodeName::new(""), Err(NodeNameError::Empty));
        let long = "x".repeat(MAX_NODE_NAME_LEN + 1);
        assert!(matches!(
            NodeName::new(long),
            Err(NodeNameError::TooLong { len: 33, .. })
        ));
        for (bad, ch) in [("gw/1", '/'), ("gw 1", ' '), ("gw\n", '\n'), ("gwé", 'é')] {
            let err = NodeName::new(bad).expect_err(bad);
            assert_eq!(
                err,
                NodeNameError::BadCharacter {
                    name: bad.into(),
                    bad: ch
                }
            );
            assert!(err.to_string().contains("ASCII letters"), "{err}");
        }
    }

    #[test]
    fn a_static_name_is_the_same_name() {
        const TOOL: NodeName = NodeName::from_static("portcullis-store");
        assert_eq!(TOOL, node("portcullis-store"));
        assert_eq!(TOOL.check(), Ok(()));
        let bytes = postcard::to_stdvec(&TOOL).expect("encodes");
        let back: NodeName = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, TOOL);
    }

    #[test]
    fn a_hello_of_this_version_decodes_whole() {
        let hello = ClientHello::new(
            node("gw1"),
            ClientRole::DeviceTraffic(TrafficLink::Shard(3)),
        );
        let mut frame = Vec::new();
        encode_frame(&hello, &mut frame).expect("encodes");
        assert_eq!(
            decode_client_hello(&frame[..frame.len() - 1]).expect("valid"),
            None,
            "incomplete"
        );
        let (got, used) = decode_client_hello(&frame)
            .expect("valid")
            .expect("complete");
        assert_eq!((got, used), (ClientHelloFrame::Ours(hello), frame.len()));
    }

    /// A hello of another version whose rest would not decode as ours is still recognised by its
    /// version, so the store can answer which version it speaks.
    #[test]
    fn another_version_is_recognised_by_its_first_field() {
        #[derive(Serialize)]
        struct FutureHello {
            version: u16,
            something_new: Vec<u64>,
        }
        let mut frame = Vec::new();
        let future = FutureHello {
            version: WIRE_VERSION + 1,
            something_new: vec![u64::MAX; 3],
        };
        encode_frame(&future, &mut frame).expect("encodes");
        let (got, _) = decode_client_hello(&frame)
            .expect("valid")
            .expect("complete");
        assert_eq!(got, ClientHelloFrame::OtherVersion(WIRE_VERSION + 1));

        // A version 2 hello: a version and a role of the old enum (index 2 was `Admin`).
        let mut frame = Vec::new();
        encode_frame(&(2u16, 2u8), &mut frame).expect("encodes");
        let (got, _) = decode_client_hello(&frame)
            .expect("valid")
            .expect("complete");
        assert_eq!(got, ClientHelloFrame::OtherVersion(2));
    }

    /// What a version 2 store reads from our hello: a version and its own role enum
    /// (`GatewayShard(u16)`, `GatewayControl`, `Admin`). Every role of ours must decode as one of
    /// those, so such a store answers "I speak version 2" instead of dropping a malformed frame.
    #[test]
    fn a_version_2_store_can_read_our_hello_far_enough_to_refuse_it() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)] // read by the decoder only
        enum OldRole {
            GatewayShard(u16),
            GatewayControl,
            Admin,
        }
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct OldHello {
            version: u16,
            role: OldRole,
        }
        for role in [
            ClientRole::DeviceTraffic(TrafficLink::Shard(7)),
            ClientRole::DeviceTraffic(TrafficLink::Control),
            ClientRole::DeviceTraffic(TrafficLink::Worker(1)),
            ClientRole::Admin,
            ClientRole::Metrics,
        ] {
            let bytes =
                postcard::to_stdvec(&ClientHello::new(node("gw1"), role.clone())).expect("encodes");
            let old: OldHello = postcard::from_bytes(&bytes).expect("an old store decodes it");
            assert_eq!(old.version, WIRE_VERSION, "{role:?}");
        }
    }

    #[test]
    fn roles_read_well_in_the_log() {
        let shard = ClientRole::DeviceTraffic(TrafficLink::Shard(2));
        assert_eq!(shard.to_string(), "device traffic (shard 2)");
        assert_eq!(ClientRole::Metrics.to_string(), "metrics (read-only)");
    }
}
