//! API keys and the audit log over REST: create a key (a subset of the caller's permissions,
//! an optional expiry; the key is shown once), list and revoke keys, and read the audit log of
//! an organization as JSON or as JSON lines for export (`format=jsonl`).

use super::json::{ApiError, Query, body, id_param, no_content, reply};
use super::views::{ApiKeyView, AuditView};
use super::{Endpoint, RestCall};
use crate::protocols::WorkerStore;
use portcullis_operations::{Principal, apikeys, audit, roles};
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::http::Response;
use portcullis_protocol::store::{ApiKeyId, MAX_ACCOUNT_PAGE};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    permissions: Vec<String>,
    #[serde(default)]
    expires_ms: Option<u64>,
}

#[derive(Serialize)]
struct CreatedKey {
    key: ApiKeyView,
    /// `pk_<id>_<secret>`: shown only in this answer; send it as `Authorization: Bearer`.
    secret: String,
}

pub fn handle(
    store: &mut WorkerStore<'_>,
    principal: &Principal,
    call: &RestCall,
) -> Result<Response, ApiError> {
    match call.endpoint {
        Endpoint::CreateApiKey => {
            let form: NewKey = body(call)?;
            let permissions =
                roles::parse_permissions(form.permissions.iter().map(String::as_str))?;
            if form.expires_ms.is_some_and(|at| at <= super::now_ms()) {
                return Err(ApiError::bad_request("The expiry must be in the future."));
            }
            let created =
                apikeys::create(store, principal, form.name, permissions, form.expires_ms)?;
            reply(
                201,
                &CreatedKey {
                    secret: created.secret.expose().to_owned(),
                    key: created.key.into(),
                },
            )
        }
        Endpoint::ListApiKeys => {
            let query = Query::of(call, &["org"])?;
            let org = query
                .number("org")?
                .map_or_else(|| principal.home_org(), OrgId);
            let list = apikeys::list(store, principal, org)?;
            reply(
                200,
                &list.into_iter().map(ApiKeyView::from).collect::<Vec<_>>(),
            )
        }
        Endpoint::RevokeApiKey => {
            apikeys::revoke(store, principal, ApiKeyId(id_param(call, "key")?))?;
            no_content()
        }
        Endpoint::ReadAudit => {
            let query = Query::of(call, &["org", "subtree", "after", "limit", "format"])?;
            let org = query
                .number("org")?
                .map_or_else(|| principal.home_org(), OrgId);
            let limit = query.number("limit")?.unwrap_or(100).min(MAX_ACCOUNT_PAGE);
            // Refused before the store is asked.
            let jsonl = audit_format(query.text("format"))?;
            let entries = audit::read(
                store,
                principal,
                org,
                query.flag("subtree")?,
                query.number("after")?,
                limit,
            )?;
            let views: Vec<AuditView> = entries.into_iter().map(Into::into).collect();
            if jsonl {
                let mut lines = Vec::new();
                for view in &views {
                    serde_json::to_writer(&mut lines, view)
                        .map_err(|e| ApiError::new(500, format!("cannot serialize: {e}")))?;
                    lines.push(b'\n');
                }
                Ok(Response::new(200).with_body("application/jsonl", lines))
            } else {
                reply(200, &views)
            }
        }
        _ => Err(ApiError::new(500, "Internal error.")),
    }
}

/// Everything [`handle`] reads from the call before it asks the store (path, query, body), read
/// the same way, with no store: what the fuzz target `rest_request` drives.
pub fn check_input(call: &RestCall) -> Result<(), ApiError> {
    match call.endpoint {
        Endpoint::CreateApiKey => {
            let form: NewKey = body(call)?;
            roles::parse_permissions(form.permissions.iter().map(String::as_str))?;
        }
        Endpoint::ListApiKeys => {
            Query::of(call, &["org"])?.number::<u32>("org")?;
        }
        Endpoint::RevokeApiKey => {
            id_param::<u64>(call, "key")?;
        }
        Endpoint::ReadAudit => {
            let query = Query::of(call, &["org", "subtree", "after", "limit", "format"])?;
            query.number::<u32>("org")?;
            query.number::<u32>("limit")?;
            query.flag("subtree")?;
            query.number::<u64>("after")?;
            audit_format(query.text("format"))?;
        }
        _ => {}
    }
    Ok(())
}

/// Whether the audit log is wanted as JSON lines (`format=jsonl`) rather than JSON.
fn audit_format(format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        None | Some("json") => Ok(false),
        Some("jsonl") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "format={other:?} is not json or jsonl."
        ))),
    }
}
