//! [`StoreAccess`]: the one thing operations need from a store link, one request or many
//! pipelined, so operations are written against no particular client. The blocking store client
//! implements it in `blocking_client.rs`; unit tests use a scripted fake.
//!
//! A call has two layers of failure, kept apart: the outer [`LinkError`] says the link itself
//! failed (nothing was answered, or the link is out of step), the inner [`StoreError`] is the
//! store's own answer to one request. The helpers here turn both into
//! [`OperationError`]s for the operations.

use crate::access::precheck;
use crate::error::{OperationError, StoreFailure};
use crate::principal::Principal;
use portcullis_protocol::store::{Acting, Request, Response, StoreError};
use std::error::Error;
use std::fmt;

/// The store's answer to one request: its response, or its refusal.
pub type Answer = Result<Response, StoreError>;

/// A link to the store that operations run against.
pub trait StoreAccess {
    /// Sends `requests` pipelined, each acting for `acting`, and returns the store's answers in
    /// the same order, one per request. An `Err` means the link failed and answers may be
    /// missing.
    fn call_many(
        &mut self,
        acting: Option<&Acting>,
        requests: Vec<Request>,
    ) -> Result<Vec<Answer>, LinkError>;

    /// Sends one request and returns the store's answer to it.
    fn call(&mut self, acting: Option<&Acting>, request: Request) -> Result<Answer, LinkError> {
        self.call_many(acting, vec![request])?
            .pop()
            .ok_or_else(|| LinkError::new(NoReply))
    }
}

/// The link to the store failed: it cannot be reached, it closed, it timed out, or it is out of
/// step. Wraps the client's own error so its message and sources reach the operator unchanged.
pub struct LinkError(Box<dyn Error + Send + Sync + 'static>);

impl LinkError {
    pub fn new(error: impl Error + Send + Sync + 'static) -> LinkError {
        LinkError(Box::new(error))
    }

    /// The client's error, e.g. to downcast it to the client's own type.
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Debug for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Transparent: the client's error's sources are this error's sources.
impl Error for LinkError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// A link implementation returned no answer for a single request.
#[derive(Debug)]
struct NoReply;

impl fmt::Display for NoReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the store link returned no reply for a request")
    }
}

impl Error for NoReply {}

/// One request acting for nobody (the login steps); the store's refusal is left for the
/// operation to classify.
pub(crate) fn ask(
    store: &mut impl StoreAccess,
    request: Request,
) -> Result<Answer, OperationError> {
    Ok(store.call(None, request)?)
}

/// One request on behalf of `principal`: checked by [`precheck`] first, then sent naming the
/// principal, so the store decides again.
pub(crate) fn act(
    store: &mut impl StoreAccess,
    principal: &Principal,
    request: Request,
) -> Result<Answer, OperationError> {
    precheck(principal, &request)?;
    Ok(store.call(Some(&principal.acting()), request)?)
}

/// [`act`] and the one response it should bring: `pick` takes it apart, anything else is the
/// store breaking the contract; a refusal is classified by [`OperationError::refused`].
pub(crate) fn act_for<T>(
    store: &mut impl StoreAccess,
    principal: &Principal,
    request: Request,
    pick: impl FnOnce(Response) -> Result<T, Box<Response>>,
) -> Result<T, OperationError> {
    let name = request.name();
    answer(name, act(store, principal, request)?, pick)
}

/// The one response `pick` wants out of an answer to the request called `name`.
pub(crate) fn answer<T>(
    name: &'static str,
    answer: Answer,
    pick: impl FnOnce(Response) -> Result<T, Box<Response>>,
) -> Result<T, OperationError> {
    match answer {
        Ok(response) => pick(response).map_err(|other| OperationError::unexpected(name, &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

/// Many requests pipelined on behalf of `principal`, each checked first.
pub(crate) fn act_many(
    store: &mut impl StoreAccess,
    principal: &Principal,
    requests: Vec<Request>,
) -> Result<Vec<Answer>, OperationError> {
    for request in &requests {
        precheck(principal, request)?;
    }
    many(store, Some(&principal.acting()), requests)
}

fn many(
    store: &mut impl StoreAccess,
    acting: Option<&Acting>,
    requests: Vec<Request>,
) -> Result<Vec<Answer>, OperationError> {
    let asked = requests.len();
    let replies = store.call_many(acting, requests)?;
    if replies.len() != asked {
        return Err(StoreFailure::MissingReplies {
            asked,
            answered: replies.len(),
        }
        .into());
    }
    Ok(replies)
}

/// Two requests pipelined on behalf of `principal`, with their two answers.
pub(crate) fn act_pair(
    store: &mut impl StoreAccess,
    principal: &Principal,
    first: Request,
    second: Request,
) -> Result<(Answer, Answer), OperationError> {
    let mut replies = act_many(store, principal, vec![first, second])?.into_iter();
    match (replies.next(), replies.next()) {
        (Some(first), Some(second)) => Ok((first, second)),
        _ => Err(StoreFailure::MissingReplies {
            asked: 2,
            answered: 0,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted::ScriptedStore;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_link_error_shows_the_clients_message_and_sources() {
        let error = LinkError::new(Outer(std::io::Error::other("inner")));
        assert_eq!(error.to_string(), "outer");
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("inner")
        );
        assert!(error.get_ref().downcast_ref::<Outer>().is_some());
        let operation = OperationError::from(error);
        assert_eq!(operation.to_string(), "outer");
        assert_eq!(
            operation.source().map(ToString::to_string).as_deref(),
            Some("inner")
        );
    }

    #[test]
    fn short_answers_are_the_stores_fault() {
        let mut store = ScriptedStore::new(|_| Ok(Response::Pong)).dropping_answers();
        let error = many(&mut store, None, vec![Request::Ping, Request::Ping]).expect_err("short");
        assert!(
            matches!(
                error,
                OperationError::StoreFailure(StoreFailure::MissingReplies {
                    asked: 2,
                    answered: 1
                })
            ),
            "{error:?}"
        );
        let error = store.call(None, Request::Ping).expect_err("none");
        assert!(error.to_string().contains("no reply"), "{error}");
    }
}
