//! Organizations, users and roles over REST: the tree (list my subtree, create, get, rename or
//! move), the users of an organization (list, invite with a mailed link, get, change role,
//! suspend or reactivate, rename, delete, force logout) and roles (list, create, change,
//! delete). Each call is one operation; what may be seen and done is decided there and in the
//! store.

use super::json::{ApiError, Query, body, id_param, no_content, org_param, reply};
use super::views::{OrgView, RoleView, UserView};
use super::{Endpoint, RestCall, RestEnv};
use crate::protocols::WorkerStore;
use portcullis_operations::accounts::invite_mail;
use portcullis_operations::{Principal, orgs, roles, users};
use portcullis_protocol::authz::{OrgId, RoleId, UserId};
use portcullis_protocol::http::Response;
use portcullis_protocol::store::{MAX_ACCOUNT_PAGE, UserStatus};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    parent: u32,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgChange {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    parent: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invitation {
    email: String,
    #[serde(default)]
    name: Option<String>,
    role: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChangeBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    role: Option<u32>,
    /// `active` or `suspended`.
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    permissions: Option<Vec<String>>,
}

pub fn handle(
    store: &mut WorkerStore<'_>,
    env: &RestEnv,
    principal: &Principal,
    call: &RestCall,
) -> Result<Response, ApiError> {
    match call.endpoint {
        Endpoint::ListOrgs => {
            let query = Query::of(call, &["under"])?;
            let under = query
                .number("under")?
                .map_or_else(|| principal.home_org(), OrgId);
            let list = orgs::list(store, principal, under)?;
            reply(
                200,
                &list.into_iter().map(OrgView::from).collect::<Vec<_>>(),
            )
        }
        Endpoint::CreateOrg => {
            let form: NewOrg = body(call)?;
            let org = orgs::create(store, principal, OrgId(form.parent), form.name)?;
            reply(201, &OrgView::from(org))
        }
        Endpoint::GetOrg => reply(
            200,
            &OrgView::from(orgs::get(store, principal, org_param(call)?)?),
        ),
        Endpoint::UpdateOrg => {
            let form: OrgChange = body(call)?;
            let org = orgs::update(
                store,
                principal,
                org_param(call)?,
                form.name,
                form.parent.map(OrgId),
            )?;
            reply(200, &OrgView::from(org))
        }
        Endpoint::ListUsers => {
            let query = Query::of(call, &["after", "limit"])?;
            let after = query.number("after")?.map(UserId);
            let limit = query.number("limit")?.unwrap_or(100).min(MAX_ACCOUNT_PAGE);
            let list = users::list(store, principal, org_param(call)?, after, limit)?;
            reply(
                200,
                &list.into_iter().map(UserView::from).collect::<Vec<_>>(),
            )
        }
        Endpoint::InviteUser => invite(store, env, principal, call),
        Endpoint::GetUser => {
            let user = users::find(store, principal, UserId(id_param(call, "user")?))?;
            reply(200, &UserView::from(user))
        }
        Endpoint::UpdateUser => {
            let form: UserChangeBody = body(call)?;
            let status = status_of(form.status.as_deref())?;
            let change = users::Change {
                name: form.name,
                role: form.role.map(RoleId),
                status,
                password: None,
            };
            let user = users::update(store, principal, UserId(id_param(call, "user")?), change)?;
            reply(200, &UserView::from(user))
        }
        Endpoint::DeleteUser => {
            users::delete(store, principal, UserId(id_param(call, "user")?))?;
            no_content()
        }
        Endpoint::ForceLogout => {
            users::force_logout(store, principal, UserId(id_param(call, "user")?))?;
            no_content()
        }
        Endpoint::ListRoles => {
            let list = roles::list(store, principal, org_param(call)?)?;
            reply(
                200,
                &list.into_iter().map(RoleView::from).collect::<Vec<_>>(),
            )
        }
        Endpoint::CreateRole => {
            let form: RoleBody = body(call)?;
            let name = form
                .name
                .ok_or_else(|| ApiError::bad_request("A role needs a name."))?;
            let permissions = parse(form.permissions.unwrap_or_default())?;
            let role = roles::create(store, principal, org_param(call)?, name, permissions)?;
            reply(201, &RoleView::from(role))
        }
        Endpoint::UpdateRole => {
            let form: RoleBody = body(call)?;
            let permissions = form.permissions.map(parse).transpose()?;
            let role = roles::update(
                store,
                principal,
                RoleId(id_param(call, "role")?),
                form.name,
                permissions,
            )?;
            reply(200, &RoleView::from(role))
        }
        Endpoint::DeleteRole => {
            roles::delete(store, principal, RoleId(id_param(call, "role")?))?;
            no_content()
        }
        _ => Err(ApiError::new(500, "Internal error.")),
    }
}

/// The status a change sets: `active` or `suspended` (the other states belong to flows).
fn status_of(status: Option<&str>) -> Result<Option<UserStatus>, ApiError> {
    match status {
        None => Ok(None),
        Some("active") => Ok(Some(UserStatus::Active)),
        Some("suspended") => Ok(Some(UserStatus::Suspended)),
        Some(other) => Err(ApiError::bad_request(format!(
            "A status can be set to active or suspended, not {other:?}."
        ))),
    }
}

/// Everything [`handle`] reads from the call before it asks the store (path, query, body), read
/// the same way, with no store: what the fuzz target `rest_request` drives.
pub fn check_input(call: &RestCall) -> Result<(), ApiError> {
    match call.endpoint {
        Endpoint::ListOrgs => {
            Query::of(call, &["under"])?.number::<u32>("under")?;
        }
        Endpoint::CreateOrg => {
            body::<NewOrg>(call)?;
        }
        Endpoint::GetOrg | Endpoint::ListRoles => {
            org_param(call)?;
        }
        Endpoint::UpdateOrg => {
            body::<OrgChange>(call)?;
            org_param(call)?;
        }
        Endpoint::ListUsers => {
            let query = Query::of(call, &["after", "limit"])?;
            query.number::<u64>("after")?;
            query.number::<u32>("limit")?;
            org_param(call)?;
        }
        Endpoint::InviteUser => {
            body::<Invitation>(call)?;
            org_param(call)?;
        }
        Endpoint::GetUser | Endpoint::DeleteUser | Endpoint::ForceLogout => {
            id_param::<u64>(call, "user")?;
        }
        Endpoint::UpdateUser => {
            let form: UserChangeBody = body(call)?;
            status_of(form.status.as_deref())?;
            id_param::<u64>(call, "user")?;
        }
        Endpoint::CreateRole => {
            let form: RoleBody = body(call)?;
            form.name
                .ok_or_else(|| ApiError::bad_request("A role needs a name."))?;
            parse(form.permissions.unwrap_or_default())?;
            org_param(call)?;
        }
        Endpoint::UpdateRole => {
            let form: RoleBody = body(call)?;
            form.permissions.map(parse).transpose()?;
            id_param::<u32>(call, "role")?;
        }
        Endpoint::DeleteRole => {
            id_param::<u32>(call, "role")?;
        }
        _ => {}
    }
    Ok(())
}

fn parse(names: Vec<String>) -> Result<portcullis_protocol::authz::Permissions, ApiError> {
    Ok(roles::parse_permissions(names.iter().map(String::as_str))?)
}

fn invite(
    store: &mut WorkerStore<'_>,
    env: &RestEnv,
    principal: &Principal,
    call: &RestCall,
) -> Result<Response, ApiError> {
    let form: Invitation = body(call)?;
    env.mail.health().map_err(|_| {
        ApiError::new(
            503,
            "Mail cannot be sent right now (the mail relay is unreachable); try again later.",
        )
    })?;
    let name = form.name.unwrap_or_else(|| form.email.clone());
    let invited = users::invite(
        store,
        principal,
        &form.email,
        name,
        org_param(call)?,
        RoleId(form.role),
        super::now_ms(),
    )?;
    let mail = invite_mail(&env.links, &invited.user, &invited.token);
    if let Err(why) = env.mail.submit(mail) {
        tracing::warn!(%why, user = invited.user.id.0, "an invitation mail could not be queued");
    }
    reply(201, &UserView::from(invited.user))
}
