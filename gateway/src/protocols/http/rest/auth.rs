//! The account flows of the REST API: the OpenAPI document, sign-up, email verification,
//! login (throttled per address with the app WebSocket's counters, on every interface), logout,
//! password reset, accepting an invitation, and "me". Every refusal of a login says only "wrong
//! email or password"; the security log and the counters learn why.

use super::json::{ApiError, body, no_content, reply};
use super::now_ms;
use super::views::{OrgView, UserView, permission_names};
use super::{RestCall, RestEnv};
use crate::guard::security_events::ConnectionEvent;
use crate::guard::security_log;
use crate::protocols::WorkerStore;
use portcullis_operations::accounts::{self, SignUp};
use portcullis_operations::{Principal, orgs, sessions, users};
use portcullis_protocol::app::normalize_email;
use portcullis_protocol::http::Response;
use portcullis_protocol::store::TokenPurpose;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

/// The OpenAPI 3.1 description of this API, served as written in the repository.
pub const OPENAPI: &str = include_str!("../../../../../docs/api/openapi.json");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignUpBody {
    email: String,
    name: String,
    #[serde(default)]
    org_name: String,
    /// The Blynk client hash of the password (base64 SHA-256 of the password and the SHA-256 of
    /// the lower-cased email), computed by the client.
    hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    email: String,
    hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenWithHash {
    token: String,
    hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailBody {
    email: String,
}

#[derive(Serialize)]
struct LoggedIn {
    token: String,
    expires_ms: u64,
    user: u64,
    org: u32,
    permissions: Vec<&'static str>,
}

/// The calls made without a bearer.
pub fn anonymous(
    store: &mut WorkerStore<'_>,
    env: &RestEnv,
    call: &RestCall,
) -> Result<Response, ApiError> {
    use super::Endpoint as E;
    match call.endpoint {
        E::OpenApi => Ok(Response::new(200).with_body("application/json", OPENAPI)),
        E::SignUp => sign_up(store, env, call),
        E::VerifyEmail => {
            let form: TokenBody = body(call)?;
            let user = accounts::use_token(
                store,
                TokenPurpose::VerifyEmail,
                &form.token,
                None,
                &call.from(),
            )?;
            reply(200, &UserView::from(user))
        }
        E::Login => login(store, env, call),
        E::RequestReset => {
            let form: EmailBody = body(call)?;
            require_mail(env)?;
            if let Some(mail) = accounts::request_reset(store, &env.links, &form.email, now_ms())?
                && let Err(why) = env.mail.submit(mail)
            {
                tracing::warn!(%why, "a password reset mail could not be queued");
            }
            // The same answer whether the address has an account or not.
            reply(
                202,
                &serde_json::json!({"status": "If the address has an account, a reset link is on its way."}),
            )
        }
        E::ConfirmReset | E::AcceptInvite => {
            let form: TokenWithHash = body(call)?;
            let purpose = if call.endpoint == E::ConfirmReset {
                TokenPurpose::ResetPassword
            } else {
                TokenPurpose::AcceptInvite
            };
            let user =
                accounts::use_token(store, purpose, &form.token, Some(&form.hash), &call.from())?;
            reply(200, &UserView::from(user))
        }
        _ => Err(ApiError::new(401, "Authentication required.")),
    }
}

/// Everything the account flows read from the call before they ask the store (the body), read
/// the same way, with no store: what the fuzz target `rest_request` drives.
pub fn check_input(call: &RestCall) -> Result<(), ApiError> {
    use super::Endpoint as E;
    match call.endpoint {
        E::SignUp => {
            body::<SignUpBody>(call)?;
        }
        E::VerifyEmail => {
            body::<TokenBody>(call)?;
        }
        E::Login => {
            body::<LoginBody>(call)?;
        }
        E::RequestReset => {
            body::<EmailBody>(call)?;
        }
        E::ConfirmReset | E::AcceptInvite => {
            body::<TokenWithHash>(call)?;
        }
        _ => {}
    }
    Ok(())
}

/// A flow that mails refuses before writing anything while the relay is down.
fn require_mail(env: &RestEnv) -> Result<(), ApiError> {
    env.mail.health().map_err(|why| {
        tracing::warn!(%why, "refusing a call that must send mail: the relay is failing");
        ApiError::new(
            503,
            "Mail cannot be sent right now (the mail relay is unreachable); try again later.",
        )
    })
}

fn sign_up(
    store: &mut WorkerStore<'_>,
    env: &RestEnv,
    call: &RestCall,
) -> Result<Response, ApiError> {
    if !env.signup {
        return Err(ApiError::new(
            403,
            "Sign-up is disabled on this gateway (accounts.signup = false); ask an administrator for an invitation.",
        ));
    }
    let form: SignUpBody = body(call)?;
    require_mail(env)?;
    let form = SignUp {
        email: form.email,
        name: form.name,
        org_name: form.org_name,
        client_hash: form.hash,
    };
    let (user, mail) = accounts::sign_up(store, &env.links, form, &call.from(), now_ms())?;
    if let Err(why) = env.mail.submit(mail) {
        tracing::warn!(%why, user = user.id.0, "a verification mail could not be queued");
    }
    reply(201, &UserView::from(user))
}

fn peer(call: &RestCall) -> SocketAddr {
    call.peer
        .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0))
}

fn login(
    store: &mut WorkerStore<'_>,
    env: &RestEnv,
    call: &RestCall,
) -> Result<Response, ApiError> {
    let form: LoginBody = body(call)?;
    let peer = peer(call);
    let email = normalize_email(&form.email);
    if let Some(wait) = env
        .guards
        .app_login_wait(Some(&email), peer.ip(), Instant::now())
    {
        let retry_in_secs = wait.retry_in_secs();
        security_log::record(
            "rest",
            &ConnectionEvent::AppLoginThrottled {
                peer,
                email,
                retry_in_secs,
            },
        );
        let error = ApiError::new(
            429,
            format!(
                "Too many failed logins {}; retry in {retry_in_secs} s.",
                wait.whose()
            ),
        );
        return Ok(error
            .response()
            .with_header("Retry-After", retry_in_secs.to_string()));
    }
    let from = peer.ip().to_string();
    match sessions::login(store, &email, &form.hash, &from, env.session_ttl, now_ms())? {
        Ok(session) => {
            env.guards.app_accounts().succeeded(&email, peer.ip());
            let Some(member) = session.principal.as_member() else {
                return Err(ApiError::new(500, "Internal error."));
            };
            tracing::info!(%peer, %email, user = member.user().0, "REST login");
            reply(
                200,
                &LoggedIn {
                    token: session.token.expose().to_owned(),
                    expires_ms: session.expires_ms,
                    user: member.user().0,
                    org: member.org().org().0,
                    permissions: permission_names(member.permissions()),
                },
            )
        }
        Err(refusal) => {
            let (account_failures, gate) =
                env.guards
                    .app_login_failed(Some(&email), peer.ip(), Instant::now());
            security_log::record(
                "rest",
                &ConnectionEvent::AppLoginFailed {
                    peer,
                    email,
                    why: refusal.why(),
                    next: gate.name(),
                    account_failures,
                },
            );
            Err(ApiError::new(401, "Wrong email or password."))
        }
    }
}

#[derive(Serialize)]
struct Me {
    user: UserView,
    org: OrgView,
    permissions: Vec<&'static str>,
    via_api_key: Option<u64>,
}

/// The calls of a signed-in principal about itself.
pub fn signed_in(
    store: &mut WorkerStore<'_>,
    principal: &Principal,
    call: &RestCall,
) -> Result<Response, ApiError> {
    let Some(member) = principal.as_member() else {
        return Err(ApiError::new(400, "The operator has no account here."));
    };
    match call.endpoint {
        super::Endpoint::Logout => {
            if let Some(token) = call.bearer.as_deref() {
                sessions::logout(store, principal, token)?;
            }
            no_content()
        }
        _ => {
            let user = users::find(store, principal, member.user())?;
            let org = orgs::get(store, principal, member.org().org())?;
            let via_api_key = match member.credential() {
                portcullis_operations::Credential::ApiKey(key) => Some(key.0),
                portcullis_operations::Credential::Session => None,
            };
            reply(
                200,
                &Me {
                    user: user.into(),
                    org: org.into(),
                    permissions: permission_names(member.permissions()),
                    via_api_key,
                },
            )
        }
    }
}
