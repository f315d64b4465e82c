//! Reading the audit log: the entries of an organization (and optionally of everything below
//! it), in order, page by page, with "view audit log". The store writes the entries, in the
//! same batch as each change; nothing here or anywhere can remove one.

use crate::error::OperationError;
use crate::principal::Principal;
use crate::store_access::{StoreAccess, act_for};
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::store::{AuditEntry, Request, Response};

pub fn read(
    store: &mut impl StoreAccess,
    principal: &Principal,
    org: OrgId,
    subtree: bool,
    after: Option<u64>,
    limit: u32,
) -> Result<Vec<AuditEntry>, OperationError> {
    let request = Request::ReadAudit {
        org,
        subtree,
        after,
        limit,
    };
    act_for(store, principal, request, |r| match r {
        Response::Audit(entries) => Ok(entries),
        other => Err(Box::new(other)),
    })
}
