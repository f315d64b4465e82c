//! The self-service account flows, acting for nobody until they are done: sign-up (a new
//! organization and its first user, unverified, with a mailed single-use link), email
//! verification, accepting an invitation (setting a password), and the forgotten password (a
//! mailed link, then a new password that ends every session). Each flow that mails returns the
//! mail as an [`OutgoingMail`]; the caller hands it to its mailer, after checking the relay is
//! up (so a flow whose mail cannot go is refused before anything is written).
//!
//! Tokens are [`Secret`]s: random, shown only in the mail, stored hashed, valid for
//! [`TOKEN_TTL`], used once. A request for a reset of an unknown address answers exactly like
//! one for a known address, and mails nothing.

use crate::error::OperationError;
use crate::secrets::{self, Secret};
use crate::store_access::{StoreAccess, answer, ask};
use crate::users::{check_email, client_hash_phc, done};
use portcullis_protocol::app::normalize_email;
use portcullis_protocol::store::{
    MAX_EMAIL_LEN, Request, Response, TokenPurpose, TokenUse, UserRecord, UserStatus,
};
use std::time::Duration;

/// How long a verification or reset link stays valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// A mail a flow wants sent. The body holds a secret link: never log it.
#[derive(Clone, PartialEq, Eq)]
pub struct OutgoingMail {
    pub to: String,
    pub subject: String,
    pub body: String,
    /// For logs and file names: `verify-email`, `invitation`, `password-reset`.
    pub kind: &'static str,
}

impl std::fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingMail")
            .field("to", &self.to)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Where the links in mails point: the gateway's public address (`accounts.public_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    pub public_url: String,
}

impl Links {
    fn link(&self, page: &str, token: &Secret) -> String {
        format!(
            "{}/#/{page}?token={}",
            self.public_url.trim_end_matches('/'),
            token.expose()
        )
    }
}

/// What sign-up asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignUp {
    pub email: String,
    pub name: String,
    /// The new organization's name (the user's name when empty).
    pub org_name: String,
    /// The Blynk client hash of the password, computed by the app or the console.
    pub client_hash: String,
}

/// Signs up: the store creates the organization, the unverified user and the token in one
/// write; the verification mail comes back for the caller to send.
pub fn sign_up(
    store: &mut impl StoreAccess,
    links: &Links,
    form: SignUp,
    from: &str,
    now_ms: u64,
) -> Result<(UserRecord, OutgoingMail), OperationError> {
    let email = check_email(&form.email)?;
    let password_phc = client_hash_phc(&form.client_hash)?;
    let token = Secret::generate()?;
    let org_name = if form.org_name.trim().is_empty() {
        form.name.clone()
    } else {
        form.org_name
    };
    let request = Request::SignUp {
        email: email.clone(),
        name: form.name,
        org_name,
        password_phc,
        token_hash: token.hash(),
        expires_ms: expiry(now_ms),
        from: from.to_owned(),
    };
    let user = answer("SignUp", ask(store, request)?, |r| match r {
        Response::User(Some(user)) => Ok(user),
        other => Err(Box::new(other)),
    })?;
    let mail = OutgoingMail {
        to: email,
        subject: "Verify your email address".into(),
        body: format!(
            "Welcome to Portcullis, {}.\n\nOpen this link within 24 hours to verify your email \
             address and activate your account:\n\n{}\n\nIf you did not sign up, ignore this \
             mail; the account stays inactive.\n",
            user.name,
            links.link("verify", &token)
        ),
        kind: "verify-email",
    };
    Ok((user, mail))
}

/// The mail of an invitation made by [`crate::users::invite`].
pub fn invite_mail(links: &Links, user: &UserRecord, token: &Secret) -> OutgoingMail {
    OutgoingMail {
        to: user.email.clone(),
        subject: "You are invited to Portcullis".into(),
        body: format!(
            "Hello {},\n\nyou have been invited to an organization on Portcullis. Open this link \
             within 24 hours to choose your password:\n\n{}\n",
            user.name,
            links.link("accept-invite", token)
        ),
        kind: "invitation",
    }
}

/// Uses a token from a mail. `client_hash` is needed for an invitation or a reset (the new
/// password, hashed by the app or console). Unknown, used, expired and wrong-purpose tokens
/// are one refusal. `from` is the client's address, for the audit entry.
pub fn use_token(
    store: &mut impl StoreAccess,
    purpose: TokenPurpose,
    token: &str,
    client_hash: Option<&str>,
    from: &str,
) -> Result<UserRecord, OperationError> {
    const REFUSED: OperationError =
        OperationError::NotAuthenticated("the link is unknown, used or expired");
    if !secrets::plausible(token) {
        return Err(REFUSED);
    }
    let phc = || match client_hash {
        Some(hash) => client_hash_phc(hash),
        None => client_hash_phc(""),
    };
    let using = match purpose {
        TokenPurpose::VerifyEmail => TokenUse::VerifyEmail,
        TokenPurpose::AcceptInvite => TokenUse::AcceptInvite {
            password_phc: phc()?,
        },
        TokenPurpose::ResetPassword => TokenUse::ResetPassword {
            password_phc: phc()?,
        },
    };
    let request = Request::ConsumeToken {
        token_hash: secrets::hash(token),
        using,
        from: from.to_owned(),
    };
    match ask(store, request)? {
        Ok(Response::User(Some(user))) => Ok(user),
        Ok(Response::User(None)) | Err(portcullis_protocol::store::StoreError::NotFound(_)) => {
            Err(REFUSED)
        }
        other => answer("ConsumeToken", other, |r| Err::<UserRecord, _>(Box::new(r))),
    }
}

/// A forgotten password: for an active account, a reset token and its mail; for an unknown
/// or inactive address, nothing (and the caller answers the same either way).
pub fn request_reset(
    store: &mut impl StoreAccess,
    links: &Links,
    email: &str,
    now_ms: u64,
) -> Result<Option<OutgoingMail>, OperationError> {
    if email.len() > MAX_EMAIL_LEN {
        return Ok(None);
    }
    let request = Request::GetUser {
        email: normalize_email(email),
    };
    let credentials = answer("GetUser", ask(store, request)?, |r| match r {
        Response::Credentials(c) => Ok(c),
        other => Err(Box::new(other)),
    })?;
    let Some(credentials) = credentials else {
        return Ok(None);
    };
    if credentials.user.status != UserStatus::Active {
        return Ok(None);
    }
    let token = Secret::generate()?;
    let request = Request::CreateToken {
        user: credentials.user.id,
        purpose: TokenPurpose::ResetPassword,
        token_hash: token.hash(),
        expires_ms: expiry(now_ms),
    };
    answer("CreateToken", ask(store, request)?, done)?;
    Ok(Some(OutgoingMail {
        to: credentials.user.email.clone(),
        subject: "Reset your password".into(),
        body: format!(
            "Someone asked to reset the password of your Portcullis account. Open this link \
             within 24 hours to choose a new one (every session will be logged out):\n\n{}\n\n\
             If it was not you, ignore this mail; your password stays as it is.\n",
            links.link("reset-password", &token)
        ),
        kind: "password-reset",
    }))
}

fn expiry(now_ms: u64) -> u64 {
    now_ms.saturating_add(TOKEN_TTL.as_millis() as u64)
}
