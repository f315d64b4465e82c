//! The Portcullis store: a separate process that owns the database and serves domain operations
//! to the gateway over a private Unix socket (DESIGN.md §4).
//!
//! So far: `engine`, the key-value boundary (the [`engine::Engine`] trait, RocksDB and an
//! in-memory engine for tests, and the conformance suite run against both).

pub mod engine;

pub use engine::rocks::RocksEngine;
pub use engine::{Cf, Durability, Engine, EngineError, WriteBatch};
