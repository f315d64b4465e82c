//! Roles: the built-in Admin, Staff and User, and the custom roles of an organization, each a
//! set of permissions. Nobody grants what they do not hold: [`create`] and [`update`] check it
//! here with `authz::grantable` (naming what is beyond the principal), and the store again.

use crate::error::{InvalidInput, OperationError};
use crate::principal::Principal;
use crate::store_access::{StoreAccess, act_for};
use crate::users::done;
use portcullis_protocol::authz::{OrgId, Permission, Permissions, RoleId, grantable};
use portcullis_protocol::store::{Request, Response, RoleRecord};

fn role(response: Response) -> Result<RoleRecord, Box<Response>> {
    match response {
        Response::Role(role) => Ok(role),
        other => Err(Box::new(other)),
    }
}

/// Permissions from their stable names (`users.view`, ...); an unknown name is refused.
pub fn parse_permissions<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Permissions, OperationError> {
    names
        .into_iter()
        .map(|name| {
            Permission::from_name(name.trim())
                .ok_or_else(|| InvalidInput::UnknownPermission(name.to_owned()).into())
        })
        .collect()
}

fn check_grant(principal: &Principal, permissions: Permissions) -> Result<(), OperationError> {
    grantable(&principal.actor(), permissions).map_err(|beyond| OperationError::NotPermitted {
        needs: beyond.to_string(),
    })
}

pub fn create(
    store: &mut impl StoreAccess,
    principal: &Principal,
    org: OrgId,
    name: String,
    permissions: Permissions,
) -> Result<RoleRecord, OperationError> {
    check_grant(principal, permissions)?;
    let request = Request::CreateRole {
        org,
        name,
        permissions,
    };
    act_for(store, principal, request, role)
}

pub fn list(
    store: &mut impl StoreAccess,
    principal: &Principal,
    org: OrgId,
) -> Result<Vec<RoleRecord>, OperationError> {
    act_for(store, principal, Request::ListRoles { org }, |r| match r {
        Response::Roles(roles) => Ok(roles),
        other => Err(Box::new(other)),
    })
}

pub fn update(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: RoleId,
    name: Option<String>,
    permissions: Option<Permissions>,
) -> Result<RoleRecord, OperationError> {
    if let Some(permissions) = permissions {
        check_grant(principal, permissions)?;
    }
    let request = Request::UpdateRole {
        role: id,
        name,
        permissions,
    };
    act_for(store, principal, request, role)
}

pub fn delete(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: RoleId,
) -> Result<(), OperationError> {
    act_for(store, principal, Request::DeleteRole { role: id }, done)
}
