//! Portcullis operations: what can be done to organizations, roles, users, sessions, templates,
//! API keys, the audit log, devices, pins, history, backups and keys,
//! independent of the interface that asks (the admin CLI, the app WebSocket API, the REST API
//! to come, the load generator's provisioning) and of the store client that carries it.
//!
//! Every operation takes a link to the store (`&mut impl` [`StoreAccess`]), the acting
//! [`Principal`] and typed arguments, asks [`access`] whether the principal may see and do
//! it, and returns a typed result or an [`OperationError`] saying whose fault the failure is.
//! Domain steps live here and nowhere else: a device token is generated and hashed in
//! [`devices`], a password becomes a client hash and an argon2id PHC string in [`users`], a
//! login is checked in [`login`]. Operations block (store round trips, argon2id); event loops
//! call them from worker threads.

pub mod access;
pub mod accounts;
pub mod apikeys;
pub mod audit;
pub mod backup;
mod blocking_client;
pub mod devices;
pub mod error;
pub mod history;
pub mod keys;
pub mod orgs;
pub mod password;
pub mod pins;
pub mod principal;
pub mod roles;
pub mod secrets;
pub mod sessions;
pub mod store_access;
pub mod templates;
pub mod users;

#[cfg(test)]
mod devices_tests;
#[cfg(test)]
mod scripted;

pub use error::{Fault, Missing, OperationError};
pub use principal::{Credential, Member, Principal};
pub use store_access::{LinkError, StoreAccess};
