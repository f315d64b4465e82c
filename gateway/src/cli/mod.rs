//! The `portcullis admin` command line: [`admin`] parses it and opens the store link, one file per
//! noun runs its commands ([`device`], [`history`], [`user`], [`backup`]), [`render`] prints for
//! all of them. No command builds a store request or does a domain step itself: each calls
//! `portcullis_operations` as the operator, over the blocking store client (which implements
//! `StoreAccess`). Imports go one way: `admin` → nouns → `render`.

pub mod admin;
pub mod backup;
pub mod device;
pub mod history;
pub mod render;
pub mod user;
