//! Backing the store up: the running store writes a consistent checkpoint of its database into
//! a new directory while it keeps serving. The directory is made absolute here, since the
//! store's working directory is not the caller's.

use crate::error::{InvalidInput, LocalFailure, OperationError};
use crate::principal::Principal;
use crate::store_access::{StoreAccess, act};
use portcullis_protocol::store::{Request, Response};
use std::path::Path;

/// A checkpoint the store wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Where, as the store names it (absolute).
    pub dir: String,
    /// Bytes of its files.
    pub bytes: u64,
}

/// Has the store write a checkpoint into `dir`, which must not exist yet (its parent must).
pub fn checkpoint(
    store: &mut impl StoreAccess,
    principal: &Principal,
    dir: &Path,
) -> Result<Backup, OperationError> {
    let absolute = std::path::absolute(dir).map_err(|source| LocalFailure::AbsolutePath {
        path: dir.to_owned(),
        source,
    })?;
    let Some(dir) = absolute.to_str() else {
        return Err(InvalidInput::PathNotUtf8(absolute).into());
    };
    match act(
        store,
        principal,
        Request::Backup {
            dir: dir.to_owned(),
        },
    )? {
        Ok(Response::BackedUp { dir, bytes }) => Ok(Backup { dir, bytes }),
        Ok(other) => Err(OperationError::unexpected("Backup", &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted::ScriptedStore;
    use portcullis_protocol::store::StoreError;

    #[test]
    fn the_store_gets_an_absolute_directory_and_members_get_nothing() {
        let mut store = ScriptedStore::new(|request| match request {
            Request::Backup { dir } => Ok(Response::BackedUp {
                dir: dir.clone(),
                bytes: 42,
            }),
            _ => Err(StoreError::Invalid("unexpected".into())),
        });
        let done = checkpoint(&mut store, &Principal::Operator, Path::new("bk")).expect("backs up");
        assert!(Path::new(&done.dir).is_absolute() && done.dir.ends_with("/bk"));
        assert_eq!(done.bytes, 42);

        let ann = crate::scripted::ann();
        let error = checkpoint(&mut store, &ann, Path::new("bk")).expect_err("operator only");
        assert!(
            matches!(error, OperationError::NotPermitted { .. }),
            "{error:?}"
        );
        assert_eq!(store.requests.len(), 1);
    }

    #[test]
    fn an_existing_directory_is_the_callers_fault_in_the_stores_words() {
        let mut store =
            ScriptedStore::new(|_| Err(StoreError::Invalid("/x/bk already exists".into())));
        let error =
            checkpoint(&mut store, &Principal::Operator, Path::new("/x/bk")).expect_err("exists");
        assert_eq!(error.fault(), crate::error::Fault::Caller);
        assert_eq!(
            error.to_string(),
            "the store refused the request: invalid request: /x/bk already exists"
        );
    }
}
