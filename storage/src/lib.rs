//! The Portcullis store: a separate process that owns the database and serves domain operations
//! to the gateway over a private Unix socket, or to remote gateways over mutual TLS when
//! configured (why: `docs/reference/decisions.md` §1; the contract: `docs/store.md`).
//!
//! Layers, bottom up: `engine` (the key-value boundary: the [`engine::Engine`] trait, RocksDB and
//! an in-memory engine for tests), `schema` (the [`Store`]: key layouts, record formats,
//! validation and durability classes for every `portcullis_protocol::store::Request`) and
//! `server` (the socket, the peer check, the per-connection wire loop, the periodic WAL syncer and
//! graceful shutdown; `certs` makes the mutual-TLS certificates for remote gateways). `main.rs`
//! is the `portcullis-store` command line; `key_tools` holds its commands that talk to a running
//! store (key reload, reseal, key usage) through `portcullis-store-client`, as an admin link.

pub mod certs;
pub mod datadir;
pub mod engine;
pub mod key_tools;
pub mod schema;
pub mod server;

pub use engine::rocks::RocksEngine;
pub use engine::{Cf, Durability, Engine, EngineError, EngineOptions, WriteBatch};
pub use schema::history::Retention;
pub use schema::{Applied, SchemaError, Store, StoreOptions};
pub use server::{RemoteConfig, Server, ServerConfig, ServerError};
