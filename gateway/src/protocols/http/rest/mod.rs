//! The REST management API (`/api/v1`): organizations, users, roles, templates, devices, API
//! keys, the audit log, and the account flows (sign-up, verification, login, logout, password
//! reset, invitations, "me"). JSON in, JSON out, errors in Blynk's shape
//! `{"error":{"message":"..."}}`; described by `docs/api/openapi.json`.
//!
//! The HTTP session (`super`) matches a route and hands a [`RestCall`] to a worker ([`job`]):
//! every call blocks (store round trips, argon2id for logins), so none runs on a shard. On the
//! worker, [`handle`] authenticates the bearer (a session token or an API key) into a
//! `Principal`, parses the body, runs one operation of `portcullis_operations` (which decides
//! with the one permission table and names the principal to the store, which decides again) and
//! renders the answer. Login paths share the app WebSocket's per-address throttle, so five
//! failures block an address on every interface.

mod accounts;
mod auth;
mod fleet;
mod json;
mod keys;
#[cfg(test)]
mod tests;
mod views;

use crate::guard::admission::Guards;
use crate::protocols::{Job, Pool, WorkDone, WorkerStore};
pub use json::ApiError;
use portcullis_operations::accounts::{Links, OutgoingMail};
use portcullis_operations::{Fault, OperationError, Principal, sessions};
use portcullis_protocol::http::{Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long the HTTP connection waits for a worker's answer before it is closed (a worker's
/// store calls time out well before: `reactor::workers::WORKER_STORE_TIMEOUT`).
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// One REST endpoint (see `routes::REST_ROUTES` for its method and path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    OpenApi,
    SignUp,
    VerifyEmail,
    Login,
    Logout,
    RequestReset,
    ConfirmReset,
    AcceptInvite,
    Me,
    ListOrgs,
    CreateOrg,
    GetOrg,
    UpdateOrg,
    ListUsers,
    InviteUser,
    GetUser,
    UpdateUser,
    DeleteUser,
    ForceLogout,
    ListRoles,
    CreateRole,
    UpdateRole,
    DeleteRole,
    ListTemplates,
    CreateTemplate,
    GetTemplate,
    UpdateTemplate,
    DeleteTemplate,
    ListDevices,
    CreateDevice,
    GetDevice,
    DeleteDevice,
    ReprovisionDevice,
    TransferDevice,
    ListApiKeys,
    CreateApiKey,
    RevokeApiKey,
    ReadAudit,
}

impl Endpoint {
    /// Whether the call checks a password (argon2id): it runs on the password pool, so a login
    /// flood cannot delay the other calls.
    fn pool(self) -> Pool {
        match self {
            Endpoint::SignUp
            | Endpoint::Login
            | Endpoint::ConfirmReset
            | Endpoint::AcceptInvite => Pool::Passwords,
            _ => Pool::Operations,
        }
    }

    /// Whether the call is made without a bearer (the account flows before a login).
    fn anonymous(self) -> bool {
        matches!(
            self,
            Endpoint::OpenApi
                | Endpoint::SignUp
                | Endpoint::VerifyEmail
                | Endpoint::Login
                | Endpoint::RequestReset
                | Endpoint::ConfirmReset
                | Endpoint::AcceptInvite
        )
    }
}

/// A matched REST request, owned, on its way to a worker.
#[derive(Debug, PartialEq, Eq)]
pub struct RestCall {
    pub endpoint: Endpoint,
    /// Path parameters by name, still percent-encoded.
    pub params: Vec<(String, String)>,
    pub query: Option<String>,
    /// The `Authorization: Bearer …` credential, if any.
    pub bearer: Option<String>,
    pub body: Vec<u8>,
    /// Set by the session before the call leaves for a worker.
    pub peer: Option<SocketAddr>,
}

impl RestCall {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn from(&self) -> String {
        self.peer
            .map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string())
    }
}

/// A worker's answer for the HTTP session.
#[derive(Debug)]
pub struct Done {
    pub response: Response,
}

/// Where mail goes: the gateway's mailer (the outbox or an SMTP relay). `health` is asked
/// before a flow writes anything, so a flow whose mail cannot go is refused whole.
pub trait MailSink: Send + Sync {
    /// `Err(why)` while the relay is failing.
    fn health(&self) -> Result<(), String>;
    /// Queues a mail; `Err(why)` when it cannot be queued.
    fn submit(&self, mail: OutgoingMail) -> Result<(), String>;
}

/// What the REST API needs from the gateway, shared by every shard and worker.
pub struct RestEnv {
    pub guards: Arc<Guards>,
    pub mail: Arc<dyn MailSink>,
    pub links: Links,
    /// `accounts.signup`: whether strangers may sign up (each gets an organization of their
    /// own). Off by default.
    pub signup: bool,
    pub session_ttl: Duration,
    /// `accounts.rest_on_plain_port`: whether the plain port serves the API too (it carries
    /// bearer tokens in the clear). Off by default.
    pub on_plain_port: bool,
}

impl std::fmt::Debug for RestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestEnv")
            .field("links", &self.links)
            .field("signup", &self.signup)
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

/// The call of a matched REST route.
pub fn call(endpoint: Endpoint, params: &[(&str, &str)], request: &Request) -> super::Answer {
    let bearer = request
        .header("authorization")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|v| v.trim().to_owned());
    super::Answer::Work(Box::new(RestCall {
        endpoint,
        params: params
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        query: request.query.clone(),
        bearer,
        body: request.body.clone(),
        peer: None,
    }))
}

/// The job that answers `call` on a worker.
pub fn job(call: RestCall, env: &Arc<RestEnv>) -> Job {
    let env = Arc::clone(env);
    let endpoint = call.endpoint;
    Job {
        pool: endpoint.pool(),
        run: Box::new(move |store| {
            WorkDone::Http(Box::new(Done {
                response: handle(store, &env, call),
            }))
        }),
        refused: WorkDone::Http(Box::new(Done {
            response: ApiError::new(503, "The gateway is busy; retry in a moment.").response(),
        })),
    }
}

/// A refusal in the API's error shape.
pub fn refusal(status: u16, message: &str) -> Response {
    ApiError::new(status, message).response()
}

/// A 500 for a bug of ours, in the API's error shape.
pub fn internal_error(why: &str) -> Response {
    tracing::error!(why, "internal error in the REST API");
    ApiError::new(500, "Internal error.").response()
}

/// Answers one call (blocking: runs on a worker).
pub fn handle(store: &mut WorkerStore<'_>, env: &RestEnv, call: RestCall) -> Response {
    let endpoint = call.endpoint;
    let answer = if endpoint.anonymous() {
        auth::anonymous(store, env, &call)
    } else {
        match authenticate(store, &call) {
            Ok(principal) => dispatch(store, env, &principal, &call),
            Err(error) => Err(error),
        }
    };
    match answer {
        Ok(response) => response,
        Err(error) => {
            if error.status >= 500 {
                tracing::warn!(?endpoint, status = error.status, message = %error.message, "REST call failed");
            }
            error.response()
        }
    }
}

/// Reads everything a call's handler reads from the request before it asks the store: path
/// parameters, the query, the JSON body, each decoded exactly as the handler decodes it. No
/// store is needed, so the fuzz target `rest_request` drives the whole input side of the API
/// with it; `Err` is the 400 the client would get.
pub fn check_input(call: &RestCall) -> Result<(), ApiError> {
    auth::check_input(call)?;
    accounts::check_input(call)?;
    fleet::check_input(call)?;
    keys::check_input(call)
}

/// The principal of the bearer credential.
fn authenticate(store: &mut WorkerStore<'_>, call: &RestCall) -> Result<Principal, ApiError> {
    let Some(bearer) = call.bearer.as_deref() else {
        return Err(ApiError::new(
            401,
            "Authentication required: send Authorization: Bearer <session token or API key>.",
        ));
    };
    sessions::authenticate(store, bearer, &call.from()).map_err(ApiError::from)
}

fn dispatch(
    store: &mut WorkerStore<'_>,
    env: &RestEnv,
    principal: &Principal,
    call: &RestCall,
) -> Result<Response, ApiError> {
    use Endpoint as E;
    match call.endpoint {
        E::Me | E::Logout => auth::signed_in(store, principal, call),
        E::ListOrgs
        | E::CreateOrg
        | E::GetOrg
        | E::UpdateOrg
        | E::ListUsers
        | E::InviteUser
        | E::GetUser
        | E::UpdateUser
        | E::DeleteUser
        | E::ForceLogout
        | E::ListRoles
        | E::CreateRole
        | E::UpdateRole
        | E::DeleteRole => accounts::handle(store, env, principal, call),
        E::ListTemplates
        | E::CreateTemplate
        | E::GetTemplate
        | E::UpdateTemplate
        | E::DeleteTemplate
        | E::ListDevices
        | E::CreateDevice
        | E::GetDevice
        | E::DeleteDevice
        | E::ReprovisionDevice
        | E::TransferDevice => fleet::handle(store, principal, call),
        E::ListApiKeys | E::CreateApiKey | E::RevokeApiKey | E::ReadAudit => {
            keys::handle(store, principal, call)
        }
        E::OpenApi
        | E::SignUp
        | E::VerifyEmail
        | E::Login
        | E::RequestReset
        | E::ConfirmReset
        | E::AcceptInvite => auth::anonymous(store, env, call),
    }
}

impl From<OperationError> for ApiError {
    fn from(error: OperationError) -> ApiError {
        use portcullis_operations::error::InvalidInput;
        let status = match &error {
            OperationError::NotFound(_) => 404,
            OperationError::NotPermitted { .. } => 403,
            OperationError::NotAuthenticated(_) => 401,
            OperationError::Invalid(InvalidInput::UserExists { .. }) => 409,
            OperationError::Invalid(_) => 400,
            _ => match error.fault() {
                Fault::StoreUnavailable => 503,
                _ => 500,
            },
        };
        let message = if status >= 500 {
            tracing::warn!(%error, "an operation failed");
            match status {
                503 => "The store is unavailable; retry in a moment.".to_owned(),
                _ => "Internal error.".to_owned(),
            }
        } else {
            sentence(&error.to_string())
        };
        ApiError::new(status, message)
    }
}

/// A message as Blynk writes them: a capital first letter and a full stop.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => return String::new(),
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// Unix time in milliseconds (0 if the clock is before 1970).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
