//! Organizations: create one below another, get one, list a subtree, rename or move one. What a
//! principal sees of the tree (its own organization, and below it only with "switch to
//! sub-organizations") is the store's decision; an organization outside it does not exist.

use crate::error::OperationError;
use crate::principal::Principal;
use crate::store_access::{StoreAccess, act_for};
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::store::{OrgRecord, Request, Response};

fn org(response: Response) -> Result<OrgRecord, Box<Response>> {
    match response {
        Response::Org(org) => Ok(org),
        other => Err(Box::new(other)),
    }
}

pub fn create(
    store: &mut impl StoreAccess,
    principal: &Principal,
    parent: OrgId,
    name: String,
) -> Result<OrgRecord, OperationError> {
    act_for(store, principal, Request::CreateOrg { parent, name }, org)
}

pub fn get(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: OrgId,
) -> Result<OrgRecord, OperationError> {
    act_for(store, principal, Request::GetOrg { org: id }, org)
}

/// `id` and every organization below it the principal sees, in id order.
pub fn list(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: OrgId,
) -> Result<Vec<OrgRecord>, OperationError> {
    act_for(
        store,
        principal,
        Request::ListOrgs { org: id },
        |r| match r {
            Response::Orgs(orgs) => Ok(orgs),
            other => Err(Box::new(other)),
        },
    )
}

/// Renames and/or moves an organization; everything that refers to it keeps its id.
pub fn update(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: OrgId,
    name: Option<String>,
    parent: Option<OrgId>,
) -> Result<OrgRecord, OperationError> {
    let request = Request::UpdateOrg {
        org: id,
        name,
        parent,
    };
    act_for(store, principal, request, org)
}
