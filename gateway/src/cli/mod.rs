//! The `portcullis` command line beyond `serve`: today the admin commands' link to the store.
//! Every admin command runs an operation of `portcullis_operations` as the operator.

pub mod store_access;
