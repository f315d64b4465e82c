//! Pure codecs for Portcullis, with no IO: the app WebSocket API's messages (`app`), the Blynk
//! hardware frame (`frame`), its command and status tables (`command`), body parsing (`body`),
//! and the gateway <-> store wire (`store`: framing, hello with roles and nodes, requests,
//! records).
//! Everything here takes bytes and returns values or errors, so it can be unit-tested, fuzzed and
//! benchmarked without sockets.

pub mod app;
pub mod body;
pub mod command;
pub mod frame;
pub mod store;

pub use command::{Command, Status};
