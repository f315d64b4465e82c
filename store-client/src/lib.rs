//! The one client of the Portcullis store, used by every process that talks to it: the gateway
//! (its shards, start-up, readiness probe, metrics scraper, supervisor and admin CLI), the
//! store's own commands and the load generator.
//!
//! - [`endpoint`]: where the store is ([`StoreEndpoint`]: a Unix socket, or a remote store over
//!   mutual TLS, built from a plain [`EndpointSpec`]), with [`pem`] decoding the TLS files;
//! - [`hello`]: the one hello exchange and version check every client runs;
//! - [`blocking`]: [`StoreClient`], for callers that may wait (pipelined `call_many`, timeouts);
//! - [`link`] over [`transport`]: [`StoreLink`], the non-blocking link a mio event loop
//!   registers in its own `Poll`, pipelined, re-sending what was in flight after a reconnect,
//!   and generic over the caller's continuation (`StoreLink<W>`: the link never looks inside
//!   a `W`, it hands it back with the reply).

pub mod blocking;
pub mod endpoint;
pub mod hello;
pub mod link;
pub mod pem;
pub mod transport;

#[cfg(any(test, feature = "test-util"))]
pub use blocking::fake_store;
pub use blocking::{StoreClient, StoreClientError};
pub use endpoint::{EndpointError, EndpointSpec, RemoteSpec, RemoteStore, StoreEndpoint};
pub use hello::HelloError;
pub use link::{Completion, LinkError, LinkState, StoreLink};
