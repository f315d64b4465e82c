//! What the public ports serve over HTTP, in one table: the upgrade to the app WebSocket and
//! the REST management API under [`API_PREFIX`] (`rest/`). The device HTTP API and the console
//! add their routes here, each leading to its handler in this folder. The OpenAPI file
//! (`docs/api/openapi.json`) describes exactly the REST routes of this table; a test compares
//! them.

use super::rest::Endpoint;
use portcullis_protocol::app::APP_WS_PATH;
use portcullis_protocol::http::{Method, Router};
use std::sync::OnceLock;

/// Where the REST management API lives.
pub const API_PREFIX: &str = "/api/v1";

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /api/ws`: the app WebSocket API (docs/app-api.md).
    AppWebSocket,
    /// A REST endpoint, answered on a worker.
    Rest(Endpoint),
}

/// Every REST route: method, path below [`API_PREFIX`], endpoint.
pub const REST_ROUTES: &[(Method, &str, Endpoint)] = &[
    (Method::Get, "/openapi.json", Endpoint::OpenApi),
    (Method::Post, "/auth/signup", Endpoint::SignUp),
    (Method::Post, "/auth/verify", Endpoint::VerifyEmail),
    (Method::Post, "/auth/login", Endpoint::Login),
    (Method::Post, "/auth/logout", Endpoint::Logout),
    (Method::Post, "/auth/password-reset", Endpoint::RequestReset),
    (
        Method::Post,
        "/auth/password-reset/confirm",
        Endpoint::ConfirmReset,
    ),
    (
        Method::Post,
        "/auth/invitation/accept",
        Endpoint::AcceptInvite,
    ),
    (Method::Get, "/me", Endpoint::Me),
    (Method::Get, "/orgs", Endpoint::ListOrgs),
    (Method::Post, "/orgs", Endpoint::CreateOrg),
    (Method::Get, "/orgs/{org}", Endpoint::GetOrg),
    (Method::Patch, "/orgs/{org}", Endpoint::UpdateOrg),
    (Method::Get, "/orgs/{org}/users", Endpoint::ListUsers),
    (
        Method::Post,
        "/orgs/{org}/invitations",
        Endpoint::InviteUser,
    ),
    (Method::Get, "/orgs/{org}/roles", Endpoint::ListRoles),
    (Method::Post, "/orgs/{org}/roles", Endpoint::CreateRole),
    (
        Method::Get,
        "/orgs/{org}/templates",
        Endpoint::ListTemplates,
    ),
    (
        Method::Post,
        "/orgs/{org}/templates",
        Endpoint::CreateTemplate,
    ),
    (Method::Get, "/users/{user}", Endpoint::GetUser),
    (Method::Patch, "/users/{user}", Endpoint::UpdateUser),
    (Method::Delete, "/users/{user}", Endpoint::DeleteUser),
    (Method::Post, "/users/{user}/logout", Endpoint::ForceLogout),
    (Method::Patch, "/roles/{role}", Endpoint::UpdateRole),
    (Method::Delete, "/roles/{role}", Endpoint::DeleteRole),
    (Method::Get, "/templates/{template}", Endpoint::GetTemplate),
    (
        Method::Patch,
        "/templates/{template}",
        Endpoint::UpdateTemplate,
    ),
    (
        Method::Delete,
        "/templates/{template}",
        Endpoint::DeleteTemplate,
    ),
    (Method::Get, "/devices", Endpoint::ListDevices),
    (Method::Post, "/devices", Endpoint::CreateDevice),
    (Method::Get, "/devices/{device}", Endpoint::GetDevice),
    (Method::Delete, "/devices/{device}", Endpoint::DeleteDevice),
    (
        Method::Post,
        "/devices/{device}/reprovision",
        Endpoint::ReprovisionDevice,
    ),
    (
        Method::Post,
        "/devices/{device}/transfer",
        Endpoint::TransferDevice,
    ),
    (Method::Get, "/api-keys", Endpoint::ListApiKeys),
    (Method::Post, "/api-keys", Endpoint::CreateApiKey),
    (Method::Delete, "/api-keys/{key}", Endpoint::RevokeApiKey),
    (Method::Get, "/audit", Endpoint::ReadAudit),
];

/// The route table of the public ports, built once.
pub fn router() -> &'static Router<Route> {
    static ROUTER: OnceLock<Router<Route>> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let mut router = Router::new();
        // Fixed patterns, checked by the route tests: a refusal here is a bug, logged loudly.
        if let Err(e) = router.add(Method::Get, APP_WS_PATH, Route::AppWebSocket) {
            tracing::error!(error = %e, "the app WebSocket route is not served");
        }
        for (method, path, endpoint) in REST_ROUTES {
            let pattern = format!("{API_PREFIX}{path}");
            if let Err(e) = router.add(*method, &pattern, Route::Rest(*endpoint)) {
                tracing::error!(error = %e, "a REST route is not served");
            }
        }
        router
    })
}

/// The text of a 404: what this port does serve.
pub fn not_served(path: &str) -> String {
    format!(
        "HTTP path {path:?} is not served (the app WebSocket is at {APP_WS_PATH}, the REST API under {API_PREFIX}/, described at {API_PREFIX}/openapi.json)"
    )
}
