//! The Portcullis gateway library: configuration, TLS, the store supervisor, the admin CLI, the
//! sharded mio reactor and the device sessions (the store client is `portcullis-store-client`). The `portcullis` binary is a thin CLI over
//! this crate.

pub mod admin;
pub mod admin_store;
pub mod admin_user;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod password;
pub mod reactor;
pub mod reload;
pub mod security;
pub mod serve;
pub mod session;
pub mod supervisor;
pub mod systemd;
pub mod tls;
pub mod token;
