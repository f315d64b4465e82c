//! The Portcullis gateway library; the `portcullis` binary is a thin CLI over it. The folders
//! show the architecture (docs/architecture.md):
//!
//! - `reactor/`: the sharded mio event loop: accept, socket IO, TLS, buffers, timers, the store
//!   link and the worker pools. It knows no protocol's business.
//! - `conn/`: a connection below any protocol: its state machine, the protocol selector, close
//!   reasons, and the TLS and WebSocket byte layers.
//! - `protocols/`: one folder per protocol served (Blynk device, HTTP, app WebSocket), each a
//!   sans-IO session plus the adapter the reactor calls; `protocols/mod.rs` is the registry.
//! - `bus`: device events across shards (who watches which device).
//! - `guard/`: abuse defences (admission, login throttles) and the security log.
//! - `config/`, `tls/`, `metrics/`: configuration, certificates, counters and the metrics port.
//! - `daemon/`: the process's life (start-up order, signals, the child store, systemd, logging).
//! - `cli/`: the admin CLI, one file per noun, on the operations crate (`portcullis_operations`).

pub mod bus;
pub mod cli;
pub mod config;
pub mod conn;
pub mod daemon;
pub mod guard;
pub mod metrics;
pub mod protocols;
pub mod reactor;
pub mod tls;
