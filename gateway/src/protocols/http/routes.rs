//! What the public ports serve over HTTP, in one table: today only the upgrade to the app
//! WebSocket. The REST API, the device HTTP API and the console add their routes here, each
//! leading to its handler in this folder.

use portcullis_protocol::app::APP_WS_PATH;
use portcullis_protocol::http::{Method, Router};
use std::sync::OnceLock;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /api/ws`: the app WebSocket API (docs/app-api.md).
    AppWebSocket,
}

/// The route table of the public ports, built once.
pub fn router() -> &'static Router<Route> {
    static ROUTER: OnceLock<Router<Route>> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let mut router = Router::new();
        // A fixed pattern without parameters cannot be refused.
        if let Err(e) = router.add(Method::Get, APP_WS_PATH, Route::AppWebSocket) {
            tracing::error!(error = %e, "the app WebSocket route is not served");
        }
        router
    })
}

/// The text of a 404: what this port does serve.
pub fn not_served(path: &str) -> String {
    format!("HTTP path {path:?} is not served (only the app WebSocket at {APP_WS_PATH})")
}
