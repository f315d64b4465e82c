//! Checking a login: an email and the Blynk client hash of the password, against the argon2id
//! PHC string the store keeps. An email nobody has is still checked, against a dummy hash of
//! today's cost ([`crate::password::check`]), so response time does not tell which emails
//! exist, and the answer to the client is the same for both failures; only the caller's logs
//! and failure counters learn which one it was ([`LoginRefusal`]).
//!
//! A check costs tens of milliseconds of CPU and 19 MiB by design: call [`verify`] (or
//! [`check`], when the user record was fetched elsewhere) from a bounded worker pool, never from
//! an event loop. There is no acting principal yet; a successful login is what makes one.

use crate::error::OperationError;
use crate::password::{self, PasswordCheck};
use crate::principal::Principal;
use crate::store_access::{StoreAccess, ask};
use portcullis_protocol::app::normalize_email;
use portcullis_protocol::store::{Request, Response, UserRecord};

/// The verdict on a login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The password matches: the user, as the principal of what they do next.
    Verified(Principal),
    Refused(LoginRefusal),
}

/// Why a login was refused. Never tell the client which one: each is "wrong email or
/// password" to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    UnknownEmail,
    WrongPassword,
    /// The stored PHC string does not parse, is not argon2id, or costs too much to check: the
    /// account cannot log in until its password is set again. Worth an error log line.
    UnusableHash,
}

impl LoginRefusal {
    /// Whether the email belongs to an account (to count failures per account).
    pub fn known_user(self) -> bool {
        !matches!(self, LoginRefusal::UnknownEmail)
    }

    /// For logs: what happened, in a few words.
    pub fn why(self) -> &'static str {
        match self {
            LoginRefusal::UnknownEmail => "no user with this email",
            LoginRefusal::WrongPassword => "wrong password",
            LoginRefusal::UnusableHash => "stored password hash unreadable",
        }
    }
}

/// Looks the user up and checks the client hash (blocking: a store round trip, then argon2id).
/// `email` may be in any case. The error is the store's (unreachable, failed), never a verdict.
pub fn verify(
    store: &mut impl StoreAccess,
    email: &str,
    client_hash: &str,
) -> Result<LoginOutcome, OperationError> {
    let request = Request::GetUser {
        email: normalize_email(email),
    };
    match ask(store, request)? {
        Ok(Response::User(user)) => Ok(check(user.as_ref(), client_hash)),
        Ok(other) => Err(OperationError::unexpected("GetUser", &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

/// Checks the client hash against `user` as the store returned it (`None`: nobody has that
/// email, checked against the dummy hash at the same cost).
pub fn check(user: Option<&UserRecord>, client_hash: &str) -> LoginOutcome {
    let verdict = password::check(user.map(|u| u.password_phc.as_str()), client_hash);
    match (user, verdict) {
        (Some(user), PasswordCheck::Matches) => {
            LoginOutcome::Verified(Principal::member(&user.email, &user.org))
        }
        (None, _) => LoginOutcome::Refused(LoginRefusal::UnknownEmail),
        (Some(_), PasswordCheck::Mismatch) => LoginOutcome::Refused(LoginRefusal::WrongPassword),
        (Some(_), PasswordCheck::Unusable) => LoginOutcome::Refused(LoginRefusal::UnusableHash),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Fault;
    use crate::password::hash_client_hash;
    use crate::scripted::ScriptedStore;
    use crate::store_access::Answer;
    use portcullis_protocol::app::client_hash;
    use portcullis_protocol::store::StoreError;

    fn store_with(phc: String) -> ScriptedStore<impl FnMut(&Request) -> Answer> {
        ScriptedStore::new(move |request| match request {
            Request::GetUser { email } if email == "ann@a.example" => {
                Ok(Response::User(Some(UserRecord {
                    email: email.clone(),
                    org: "a".into(),
                    password_phc: phc.clone(),
                    created_ms: 1,
                })))
            }
            Request::GetUser { .. } => Ok(Response::User(None)),
            _ => Err(StoreError::Invalid("unexpected".into())),
        })
    }

    #[test]
    fn a_matching_hash_makes_a_member_and_everything_else_is_refused() {
        let good = client_hash("correct horse", "ann@a.example");
        let phc = hash_client_hash(&good).expect("hashes");
        let mut store = store_with(phc);
        assert_eq!(
            verify(&mut store, " ANN@a.example", &good).expect("checked"),
            LoginOutcome::Verified(Principal::member("ann@a.example", "a"))
        );
        assert!(
            matches!(&store.requests[0], Request::GetUser { email } if email == "ann@a.example"),
            "the store is asked for the normalized email"
        );
        let wrong = client_hash("wrong horse", "ann@a.example");
        let refused = verify(&mut store, "ann@a.example", &wrong).expect("checked");
        assert_eq!(refused, LoginOutcome::Refused(LoginRefusal::WrongPassword));
        let unknown = verify(&mut store, "nobody@a.example", &good).expect("checked");
        assert_eq!(unknown, LoginOutcome::Refused(LoginRefusal::UnknownEmail));
        assert!(!LoginRefusal::UnknownEmail.known_user());
        assert!(LoginRefusal::WrongPassword.known_user());

        let mut broken = store_with("not a phc string".into());
        let unusable = verify(&mut broken, "ann@a.example", &good).expect("checked");
        assert_eq!(unusable, LoginOutcome::Refused(LoginRefusal::UnusableHash));
    }

    /// The unknown email must cost what a wrong password costs. The bound is loose because a
    /// shared machine is noisy; skipping argon2 would make it thousands of times faster.
    #[test]
    fn an_unknown_email_costs_a_full_check() {
        let good = client_hash("correct horse", "ann@a.example");
        let mut store = store_with(hash_client_hash(&good).expect("hashes"));
        let started = std::time::Instant::now();
        verify(&mut store, "ann@a.example", "x").expect("checked");
        let known = started.elapsed();
        let started = std::time::Instant::now();
        verify(&mut store, "nobody@a.example", "x").expect("checked");
        let unknown = started.elapsed();
        assert!(
            unknown * 20 > known,
            "unknown {unknown:?} vs known {known:?}"
        );
    }

    #[test]
    fn a_store_failure_is_an_error_not_a_verdict() {
        let mut down = store_with(String::new()).down();
        let error = verify(&mut down, "ann@a.example", "x").expect_err("down");
        assert_eq!(error.fault(), Fault::StoreUnavailable);
    }
}
