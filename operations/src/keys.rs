//! The store's encryption keys, for the operator: have the running store re-read its key file,
//! count the values each key seals, and re-seal older values with the current key one bounded
//! step at a time. These are the requests `portcullis-store reload-keys`, `key-usage` and
//! `reseal` send today; they are here so every interface that offers them goes through one
//! permission check.

use crate::error::OperationError;
use crate::principal::Principal;
use crate::store_access::{StoreAccess, act};
use portcullis_protocol::store::{KeyStatus, Request, ResealProgress, Response};

/// Has the store re-read its key file (a broken file is refused and the store keeps its keys).
pub fn reload(
    store: &mut impl StoreAccess,
    principal: &Principal,
) -> Result<KeyStatus, OperationError> {
    keys_answer("ReloadKeys", act(store, principal, Request::ReloadKeys)?)
}

/// Counts the stored values sealed with each key id (a full read-only scan).
pub fn usage(
    store: &mut impl StoreAccess,
    principal: &Principal,
) -> Result<KeyStatus, OperationError> {
    keys_answer("KeyUsage", act(store, principal, Request::KeyUsage)?)
}

/// Re-seals one batch of values of older keys, from `after` (the previous step's `next`;
/// `None` starts over). Repeat while the answer's `next` is set.
pub fn reseal_step(
    store: &mut impl StoreAccess,
    principal: &Principal,
    after: Option<Vec<u8>>,
) -> Result<ResealProgress, OperationError> {
    match act(store, principal, Request::Reseal { after })? {
        Ok(Response::Resealed(progress)) => Ok(progress),
        Ok(other) => Err(OperationError::unexpected("Reseal", &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

fn keys_answer(
    request: &'static str,
    reply: Result<Response, portcullis_protocol::store::StoreError>,
) -> Result<KeyStatus, OperationError> {
    match reply {
        Ok(Response::Keys(status)) => Ok(status),
        Ok(other) => Err(OperationError::unexpected(request, &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted::ScriptedStore;
    use portcullis_protocol::store::StoreError;

    #[test]
    fn the_operator_manages_keys_and_members_reach_nothing() {
        let status = KeyStatus {
            current: 2,
            loaded: vec![1, 2],
            in_use: Vec::new(),
        };
        let answer = status.clone();
        let mut store = ScriptedStore::new(move |request| match request {
            Request::ReloadKeys | Request::KeyUsage => Ok(Response::Keys(answer.clone())),
            Request::Reseal { after: None } => Ok(Response::Resealed(ResealProgress {
                scanned: 3,
                resealed: 2,
                dropped: 1,
                next: None,
            })),
            _ => Err(StoreError::Invalid("unexpected".into())),
        });
        let operator = Principal::Operator;
        assert_eq!(reload(&mut store, &operator).expect("reloads"), status);
        assert_eq!(usage(&mut store, &operator).expect("counts"), status);
        assert_eq!(
            reseal_step(&mut store, &operator, None)
                .expect("reseals")
                .resealed,
            2
        );
        let ann = crate::scripted::ann();
        assert!(reload(&mut store, &ann).is_err());
        assert!(usage(&mut store, &ann).is_err());
        assert!(reseal_step(&mut store, &ann, None).is_err());
        assert_eq!(store.requests.len(), 3, "members reached nothing");
    }
}
