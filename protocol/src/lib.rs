//! Pure codecs for Portcullis, with no IO: the app WebSocket API's messages (`app`), the permission
//! decision with its organizations, roles and permissions (`authz`), the Blynk hardware frame
//! (`frame`), its command and status tables (`command`), body parsing (`body`), HTTP/1.1 requests,
//! answers and routes (`http`), the device token's shape, generation and hash (`token`) and the
//! gateway <-> store wire (`store`: framing, hello with roles and nodes, requests, records).
//! Everything here takes bytes and returns values or errors, so it can be unit-tested, fuzzed and
//! benchmarked without sockets; the one thing that touches the operating system is the random
//! generator a new token is drawn from.

pub mod app;
pub mod authz;
pub mod body;
pub mod command;
pub mod frame;
pub mod http;
pub mod store;
pub mod token;

pub use command::{Command, Status};
