//! The Portcullis gateway library: configuration, TLS, the store link and supervisor, the admin
//! CLI (on the operations crate), the sharded mio reactor and the device sessions. The `portcullis` binary is a thin CLI over
//! this crate.

pub mod cli;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod reactor;
pub mod reload;
pub mod security;
pub mod serve;
pub mod session;
pub mod store_client;
pub mod store_endpoint;
pub mod supervisor;
pub mod systemd;
pub mod tls;

/// Password hashing lives in the operations crate; re-exported so `crate::password` keeps
/// naming it for the reactor's password workers until they call `portcullis_operations::login`.
pub use portcullis_operations::password;
