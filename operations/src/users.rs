//! User accounts: create one and get one. The password never leaves this crate in any
//! reversible form: it becomes the Blynk client hash an app would compute at login
//! ([`portcullis_protocol::app::client_hash`], over the lower-cased email), that becomes an
//! argon2id PHC string ([`crate::password`]), and only the PHC string goes to the store. A
//! generated password comes back once for whoever created the user; [`get`] never returns the
//! hash. Checking a login is in [`crate::login`].

use crate::access::{self, Action, Target};
use crate::error::{InvalidInput, LocalFailure, Missing, OperationError};
use crate::password::hash_client_hash;
use crate::principal::Principal;
use crate::store_access::{StoreAccess, ask};
use base64::Engine as _;
use portcullis_protocol::app::{MAX_EMAIL_LEN, client_hash, normalize_email};
use portcullis_protocol::store::{Request, Response, StoreError};
use std::fmt;

/// Random bytes of a generated password: 18 bytes are 144 bits, 24 base64url characters.
pub const GENERATED_PASSWORD_BYTES: usize = 18;

/// Shortest password accepted, in characters. A floor against typos and empty input, not a
/// strength meter.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Longest password accepted, in bytes: it is hashed into a fixed-size digest anyway.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Where a new user's password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordChoice {
    /// Generate one ([`GENERATED_PASSWORD_BYTES`] from the OS CSPRNG) and return it once.
    Generate,
    /// Use this one (checked against [`MIN_PASSWORD_CHARS`] and [`MAX_PASSWORD_BYTES`]).
    Given(String),
}

impl fmt::Debug for PasswordChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PasswordChoice::Generate => "Generate",
            PasswordChoice::Given(_) => "Given(…)",
        })
    }
}

/// A user to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    /// The login name; stored normalized (trimmed, lower case).
    pub email: String,
    /// The organization whose devices the user sees.
    pub org: String,
    pub password: PasswordChoice,
}

/// A password generated for a new user. Shown once; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedPassword(String);

impl GeneratedPassword {
    /// The password, for the one place that hands it to the user.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for GeneratedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GeneratedPassword(…)")
    }
}

/// A user as operations show it: never the password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub email: String,
    pub org: String,
    pub created_ms: u64,
}

/// A registered user, and the password when it was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedUser {
    /// Normalized.
    pub email: String,
    pub org: String,
    pub generated_password: Option<GeneratedPassword>,
}

/// Registers a user. Checks run in this order: the password, then the email; the store then
/// refuses an address that is not one, or one already registered.
pub fn create(
    store: &mut impl StoreAccess,
    principal: &Principal,
    user: NewUser,
) -> Result<CreatedUser, OperationError> {
    let NewUser {
        email,
        org,
        password,
    } = user;
    access::require(principal, Action::CreateUser, Target::Org(&org), || {
        Missing::Org(org.clone())
    })?;
    let (plain, generated) = match password {
        PasswordChoice::Generate => {
            let password = generate_password()?;
            (password.clone(), Some(GeneratedPassword(password)))
        }
        PasswordChoice::Given(password) => (check_password(password)?, None),
    };
    let email = normalize_email(&email);
    if email.len() > MAX_EMAIL_LEN {
        return Err(InvalidInput::EmailTooLong { max: MAX_EMAIL_LEN }.into());
    }
    // The same hash an app computes at login from what the user types (the email lower-cased).
    let phc = hash_client_hash(&client_hash(&plain, &email)).map_err(LocalFailure::Password)?;
    let request = Request::CreateUser {
        email: email.clone(),
        org: org.clone(),
        password_phc: phc,
    };
    match ask(store, request)? {
        Ok(Response::Done) => Ok(CreatedUser {
            email,
            org,
            generated_password: generated,
        }),
        Ok(other) => Err(OperationError::unexpected("CreateUser", &other)),
        // The store says so in words only; this is the one place that reads them.
        Err(StoreError::Invalid(why)) if why.contains("already exists") => {
            Err(InvalidInput::UserExists { email, why }.into())
        }
        Err(error) => Err(OperationError::refused(error)),
    }
}

/// A fresh password: [`GENERATED_PASSWORD_BYTES`] from the OS CSPRNG, base64url.
fn generate_password() -> Result<String, OperationError> {
    let mut bytes = [0u8; GENERATED_PASSWORD_BYTES];
    getrandom::fill(&mut bytes).map_err(LocalFailure::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn check_password(password: String) -> Result<String, OperationError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(InvalidInput::PasswordTooLong {
            max: MAX_PASSWORD_BYTES,
        }
        .into());
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(InvalidInput::PasswordTooShort {
            min: MIN_PASSWORD_CHARS,
        }
        .into());
    }
    Ok(password)
}

/// A user by email (any case), if the principal sees it.
pub fn get(
    store: &mut impl StoreAccess,
    principal: &Principal,
    email: &str,
) -> Result<User, OperationError> {
    let missing = || Missing::User(normalize_email(email));
    let request = Request::GetUser {
        email: email.to_owned(),
    };
    match ask(store, request)? {
        Ok(Response::User(Some(user))) => {
            access::require(principal, Action::ViewUser, Target::Org(&user.org), missing)?;
            Ok(User {
                email: user.email,
                org: user.org,
                created_ms: user.created_ms,
            })
        }
        Ok(Response::User(None)) => Err(OperationError::NotFound(missing())),
        Ok(other) => Err(OperationError::unexpected("GetUser", &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::{PasswordCheck, verify};
    use crate::scripted::{ScriptedStore, fleet};
    use crate::store_access::Answer;
    use portcullis_protocol::store::UserRecord;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// The users a test store holds, shared with the test.
    type Users = Rc<RefCell<Vec<UserRecord>>>;

    /// A store keeping users in a list, refusing duplicates like the real one.
    fn store() -> (ScriptedStore<impl FnMut(&Request) -> Answer>, Users) {
        let users = Users::default();
        let seen = Rc::clone(&users);
        let store = ScriptedStore::new(move |request| {
            let mut users = seen.borrow_mut();
            match request {
                Request::CreateUser {
                    email,
                    org,
                    password_phc,
                } => {
                    if users.iter().any(|u| &u.email == email) {
                        return Err(StoreError::Invalid(format!(
                            "a user with the email {email} already exists"
                        )));
                    }
                    users.push(UserRecord {
                        email: email.clone(),
                        org: org.clone(),
                        password_phc: password_phc.clone(),
                        created_ms: 1_700_000_000_000,
                    });
                    Ok(Response::Done)
                }
                Request::GetUser { email } => Ok(Response::User(
                    users
                        .iter()
                        .find(|u| u.email == normalize_email(email))
                        .cloned(),
                )),
                _ => Err(StoreError::Invalid("unexpected".into())),
            }
        });
        (store, users)
    }

    fn new_user(email: &str, password: PasswordChoice) -> NewUser {
        NewUser {
            email: email.into(),
            org: "acme".into(),
            password,
        }
    }

    #[test]
    fn a_generated_password_comes_back_once_and_only_its_hash_is_stored() {
        let (mut store, users) = store();
        let created = create(
            &mut store,
            &Principal::Operator,
            new_user(" Ann@Example.com", PasswordChoice::Generate),
        )
        .expect("creates");
        assert_eq!(created.email, "ann@example.com");
        let password = created.generated_password.expect("generated");
        assert_eq!(password.expose().len(), 24);
        assert!(!format!("{password:?}").contains(password.expose()));
        let stored = users.borrow()[0].clone();
        let hash = client_hash(password.expose(), "Ann@Example.com");
        assert!(!stored.password_phc.contains(password.expose()));
        assert!(!stored.password_phc.contains(&hash));
        assert_eq!(verify(&stored.password_phc, &hash), PasswordCheck::Matches);

        let shown = get(&mut store, &Principal::Operator, "ANN@example.com").expect("gets");
        assert_eq!(
            shown,
            User {
                email: "ann@example.com".into(),
                org: "acme".into(),
                created_ms: 1_700_000_000_000
            }
        );
    }

    #[test]
    fn given_passwords_are_bounded_and_duplicates_are_named() {
        let (mut store, _) = store();
        let operator = Principal::Operator;
        let given = |p: &str| PasswordChoice::Given(p.into());
        let created = create(
            &mut store,
            &operator,
            new_user("b@c.d", given("correct horse")),
        )
        .expect("creates");
        assert!(created.generated_password.is_none());
        for (password, want_short) in [("", true), ("short", true), (&"x".repeat(1025), false)] {
            let error = create(&mut store, &operator, new_user("e@f.g", given(password)))
                .expect_err("refused");
            match error {
                OperationError::Invalid(InvalidInput::PasswordTooShort { min: 8 })
                    if want_short => {}
                OperationError::Invalid(InvalidInput::PasswordTooLong { max: 1024 })
                    if !want_short => {}
                other => panic!("{password:?}: {other:?}"),
            }
        }
        create(
            &mut store,
            &operator,
            new_user("max@f.g", given(&"x".repeat(1024))),
        )
        .expect("at the limit");
        let error = create(
            &mut store,
            &operator,
            new_user("B@C.D", given("another one")),
        )
        .expect_err("duplicate");
        match error {
            OperationError::Invalid(InvalidInput::UserExists { email, why }) => {
                assert_eq!(email, "b@c.d");
                assert!(why.contains("already exists"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let long = format!("{}@x.example", "a".repeat(MAX_EMAIL_LEN));
        let error = create(
            &mut store,
            &operator,
            new_user(&long, PasswordChoice::Generate),
        )
        .expect_err("long email");
        assert_eq!(
            error.to_string(),
            format!("the email is longer than {MAX_EMAIL_LEN} bytes")
        );
    }

    /// Who × (a user of org a, an email nobody has): hidden and missing answer alike.
    #[test]
    fn get_scope_matrix() {
        for (who, principal, sees_user_of_a) in [
            ("operator", Principal::Operator, true),
            ("member of a", Principal::member("ann@a.example", "a"), true),
            (
                "member of b",
                Principal::member("bob@b.example", "b"),
                false,
            ),
        ] {
            let mut store = fleet();
            match get(&mut store, &principal, "ann@a.example") {
                Ok(user) if sees_user_of_a => assert_eq!(user.org, "a", "{who}"),
                Err(OperationError::NotFound(Missing::User(email)))
                    if !sees_user_of_a && email == "ann@a.example" => {}
                other => panic!("{who}: {other:?}"),
            }
            let missing = get(&mut store, &principal, "Nobody@X.example").expect_err("missing");
            assert_eq!(
                missing.to_string(),
                "no user has the email nobody@x.example",
                "{who}"
            );
        }
        let bob = Principal::member("bob@b.example", "b");
        let error = create(
            &mut fleet(),
            &bob,
            NewUser {
                email: "c@b.example".into(),
                org: "b".into(),
                password: PasswordChoice::Generate,
            },
        )
        .expect_err("members create no users");
        assert!(
            matches!(error, OperationError::NotPermitted { .. }),
            "{error:?}"
        );
    }
}
