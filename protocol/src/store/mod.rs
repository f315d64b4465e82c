//! The gateway <-> store wire, by concern:
//!
//! - `framing`: a frame is a 4-byte big-endian length followed by a postcard-encoded message,
//!   checked against [`MAX_FRAME_LEN`] before anything is allocated;
//! - `hello`: a link opens with a [`ClientHello`] (wire version, the client's [`ClientRole`] and
//!   its gateway [`NodeName`]) answered by a [`ServerHello`];
//! - `requests`: after that the client sends [`RequestEnvelope`]s and the server answers each
//!   with a [`ReplyEnvelope`] echoing the request id. Many requests may be in flight on one link;
//!   replies come back in the order requests arrived;
//! - `records`: the values requests and replies carry (devices, pins, presence, history, ...);
//! - `accounts`: organizations, roles, users, sessions, templates, API keys, audit entries, and
//!   [`Acting`], whom a request acts for;
//! - `needs`: what each request needs of its acting party ([`Request::needs`]), the one mapping
//!   the operations layer and the store both decide with;
//! - `option_ranges`: the store's tuning ranges, checked by both the store and the gateway.
//!
//! The store exposes domain operations, not raw key-value access: the schema is the store's.
//! Everything is re-exported here, so users name `portcullis_protocol::store::X`.

mod accounts;
mod framing;
mod hello;
mod needs;
pub mod option_ranges;
mod records;
mod requests;

pub use accounts::*;
pub use framing::{
    LENGTH_PREFIX, MAX_FRAME_LEN, WireError, decode_frame, encode_frame, frame_len, frame_payload,
};
pub use hello::{
    ClientHello, ClientHelloFrame, ClientRole, MAX_NODE_NAME_LEN, NodeName, NodeNameError,
    ServerHello, TrafficLink, WIRE_VERSION, decode_client_hello,
};
pub use needs::{Check, Needs, Subject};
pub use records::*;
pub use requests::*;
