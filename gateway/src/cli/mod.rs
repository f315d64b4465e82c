//! The `portcullis admin` command line: [`admin`] parses it and opens the store link, one file per
//! noun runs its commands ([`org`], [`user`], [`role`], [`template`], [`device`] with
//! [`history`], [`apikey`], [`audit`], [`backup`]), [`args`] reads ids, [`render`] prints and
//! [`events`] writes the security log for all of them. No command builds a store request or does
//! a domain step itself: each calls `portcullis_operations` as the operator, over the blocking
//! store client (which implements `StoreAccess`). Imports go one way: `admin` → nouns → `args`,
//! `render`, `events`.

pub mod admin;
pub mod apikey;
pub mod args;
pub mod audit;
pub mod backup;
pub mod device;
pub mod events;
pub mod history;
pub mod org;
pub mod render;
pub mod role;
pub mod template;
#[cfg(test)]
mod test_store;
pub mod user;
