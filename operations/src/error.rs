//! [`OperationError`], the one error every operation returns, and the details of its variants.
//! The top-level variant says whose fault a failure is ([`OperationError::fault`]), so each
//! interface can map it once (an exit code, an HTTP status, an app error code); the detail enums
//! say what exactly went wrong, in messages meant for the person who asked.
//!
//! Messages of store-side refusals keep the wording the admin CLI has always printed ("the store
//! refused the request: ..."), and link failures pass the client's own message through
//! unchanged, since scripts and operators read them.

use crate::password::PasswordError;
use crate::store_access::LinkError;
use portcullis_protocol::store::{DeviceId, Response, StoreError};
use portcullis_protocol::token::TokenError;
use std::fmt;
use std::path::PathBuf;
use thiserror::Error;

/// Names what does not exist, or what the principal may not see: both are reported with the
/// same value (the store answers a hidden thing exactly like a missing one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Device(DeviceId),
    /// A user, by normalized email.
    User(String),
    /// Anything else, in the store's own words (`org 4`, `template TMPL1`, `one-time token`).
    Named(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Device(id) => write!(f, "device {id} does not exist"),
            Missing::User(email) => write!(f, "no user has the email {email}"),
            Missing::Named(what) => write!(f, "{what} does not exist"),
        }
    }
}

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller named something missing or hidden, may not act, or sent bad input.
    Caller,
    /// The store could not be reached or the link broke: retry later.
    StoreUnavailable,
    /// The store failed the request or broke the wire contract.
    Store,
    /// This machine: no randomness, or the password hasher failed.
    Local,
}

/// Why an operation failed.
#[derive(Debug, Error)]
pub enum OperationError {
    /// The caller's fault: names something that does not exist or lies outside the principal's
    /// scope. One answer for both, on purpose.
    #[error("{0}")]
    NotFound(Missing),
    /// The caller's fault: the principal lacks a permission (named by its stable name, or
    /// "the operator") for something it may see.
    #[error("not permitted: needs {needs}")]
    NotPermitted { needs: String },
    /// The caller's fault: no valid session, key or password (one answer for every reason).
    #[error("not authenticated: {0}")]
    NotAuthenticated(&'static str),
    /// The caller's fault: the input breaks a rule, ours or the store's.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// Nobody's fault here: the store cannot be reached or the link failed. Carries the
    /// client's own error, message and sources unchanged.
    #[error(transparent)]
    StoreUnavailable(#[from] LinkError),
    /// The store's fault: it failed the request or answered out of contract.
    #[error(transparent)]
    StoreFailure(#[from] StoreFailure),
    /// This machine's fault.
    #[error(transparent)]
    Local(#[from] LocalFailure),
}

impl OperationError {
    pub fn fault(&self) -> Fault {
        match self {
            OperationError::NotFound(_)
            | OperationError::NotPermitted { .. }
            | OperationError::NotAuthenticated(_)
            | OperationError::Invalid(_) => Fault::Caller,
            OperationError::StoreUnavailable(_) => Fault::StoreUnavailable,
            OperationError::StoreFailure(_) => Fault::Store,
            OperationError::Local(_) => Fault::Local,
        }
    }

    /// A refusal from the store, by whose fault: a disk or engine failure is the store's, a
    /// broken rule or an unknown name the caller's. Operations that know what a `NotFound`
    /// means (a device lookup) map it to [`OperationError::NotFound`] before calling this.
    pub(crate) fn refused(error: StoreError) -> OperationError {
        match error {
            StoreError::Storage(_) => StoreFailure::Failed(error).into(),
            StoreError::NotPermitted(needs) => OperationError::NotPermitted { needs },
            StoreError::Invalid(_) => InvalidInput::RefusedByStore(error).into(),
            // The store words hidden and missing alike; keep its words.
            StoreError::NotFound(what) => OperationError::NotFound(Missing::Named(what)),
        }
    }

    /// The store answered `request` with a response of the wrong kind.
    pub(crate) fn unexpected(request: &'static str, answer: &Response) -> OperationError {
        StoreFailure::Unexpected {
            request,
            answer: format!("{answer:?}"),
        }
        .into()
    }
}

/// The caller's input breaks a rule.
#[derive(Debug, Error)]
pub enum InvalidInput {
    #[error("the email is longer than {max} bytes")]
    EmailTooLong { max: usize },
    #[error("{0:?} is not an email address")]
    NotAnEmail(String),
    #[error("{0}")]
    BadTemplateId(String),
    #[error("unknown permission {0:?}")]
    UnknownPermission(String),
    #[error("the password is longer than {max} bytes")]
    PasswordTooLong { max: usize },
    #[error("the password is shorter than {min} characters")]
    PasswordTooShort { min: usize },
    /// The store already has a user with this email; `why` is the store's own sentence.
    #[error("{why}")]
    UserExists { email: String, why: String },
    #[error("the start of the range ({from_ms}) must be before its end ({to_ms})")]
    EmptyRange { from_ms: u64, to_ms: u64 },
    /// A raw history read would return more points than one answer may hold.
    #[error("over {max} points in this range; narrow it or downsample it")]
    TooManyPoints { max: usize },
    #[error("the backup directory {} is not valid UTF-8", .0.display())]
    PathNotUtf8(PathBuf),
    /// The store refused the request as breaking one of its rules (a bad name or email, a
    /// directory that exists, ...).
    #[error("the store refused the request: {0}")]
    RefusedByStore(#[source] StoreError),
}

/// The store failed or broke the contract of the wire.
#[derive(Debug, Error)]
pub enum StoreFailure {
    /// Its disk or engine failed; the request had no effect.
    #[error("the store refused the request: {0}")]
    Failed(#[source] StoreError),
    #[error("the store answered {request} with an unexpected {answer}")]
    Unexpected {
        request: &'static str,
        answer: String,
    },
    #[error("the store answered {asked} requests with {answered} replies")]
    MissingReplies { asked: usize, answered: usize },
    /// A device page whose last id is not past the previous page's: paging would not end.
    #[error("the store returned a device page that does not advance (last id {last})")]
    PageDoesNotAdvance { last: DeviceId },
    #[error("the store repeated a history cursor; stopping")]
    RepeatedCursor,
}

/// This machine failed.
#[derive(Debug, Error)]
pub enum LocalFailure {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the system random generator failed: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The current directory is gone, or the path is empty.
    #[error("cannot make {} absolute", path.display())]
    AbsolutePath {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_refusals_are_sorted_by_fault_and_keep_their_wording() {
        let storage = OperationError::refused(StoreError::Storage("disk full".into()));
        assert_eq!(storage.fault(), Fault::Store);
        assert_eq!(
            storage.to_string(),
            "the store refused the request: storage failure: disk full"
        );
        let invalid = OperationError::refused(StoreError::Invalid("bad name".into()));
        assert_eq!(invalid.fault(), Fault::Caller);
        assert_eq!(
            std::error::Error::source(&invalid).map(ToString::to_string),
            Some("invalid request: bad name".to_owned())
        );
        assert_eq!(
            OperationError::NotFound(Missing::Device(3)).to_string(),
            "device 3 does not exist"
        );
        assert_eq!(
            OperationError::unexpected("Ping", &Response::Done).to_string(),
            "the store answered Ping with an unexpected Done"
        );
    }
}
