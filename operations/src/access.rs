//! The operations layer's half of the one decision: before a request goes to the store,
//! [`precheck`] evaluates what the request needs of its principal ([`Request::needs`], the table
//! the store decides with too) with `authz::allows`, as far as it can without records: whether
//! the principal holds the permission at all, whether a check on "self" names the principal, and
//! the full decision when the subject is the principal's own organization. The store then
//! decides again with its records (the subject's organization path and owner) and answers a
//! hidden subject exactly like a missing one.
//!
//! Refusing here reveals nothing about any resource: it depends only on the principal and the
//! request's kind, never on whether the named thing exists. A principal without any form of a
//! permission is refused the same way for an existing and for a missing device.

use crate::error::OperationError;
use crate::principal::Principal;
use portcullis_protocol::authz::{Decision, Permission, Resource, allows};
use portcullis_protocol::store::{Check, Needs, Request, Subject};

/// Whether `principal` may send `request` as far as the principal alone tells.
pub fn precheck(principal: &Principal, request: &Request) -> Result<(), OperationError> {
    let member = match principal {
        Principal::Operator => return Ok(()),
        Principal::Member(member) => member,
    };
    let refuse = |needs: &str| {
        Err(OperationError::NotPermitted {
            needs: needs.to_owned(),
        })
    };
    let checks = match request.needs() {
        Needs::Checks(checks) => checks,
        Needs::Nobody | Needs::Operator => return refuse("the operator"),
    };
    let held = |permission: Permission| match permission.device_forms() {
        Some((own, org)) => {
            member.permissions().contains(own) || member.permissions().contains(org)
        }
        None => member.permissions().contains(permission),
    };
    for check in checks {
        match check {
            Check::Visible(_) => {}
            Check::SelfOr(user, permission) => {
                if user != member.user() && !held(permission) {
                    return refuse(permission.name());
                }
            }
            Check::Permission(permission, subject) => {
                if !held(permission) {
                    return refuse(permission.name());
                }
                let own_org = match subject {
                    Subject::ActingOrg => true,
                    Subject::Org(org) => org == member.org().org(),
                    _ => false,
                };
                if own_org
                    && allows(&principal.actor(), permission, Resource::Org(member.org()))
                        == Decision::Forbidden
                {
                    return refuse(permission.name());
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::tests::member_of;
    use portcullis_protocol::authz::{BuiltInRole, OrgId, UserId};
    use portcullis_protocol::store::{DeviceScope, TemplateId, UserChange};

    fn create_device(org: u32) -> Request {
        Request::CreateDevice {
            org: OrgId(org),
            template: TemplateId::parse("TMPL1").expect("valid"),
            owner: None,
            name: "d".into(),
            token_hash: [0; 32],
        }
    }

    #[test]
    fn a_missing_permission_is_refused_before_the_store_is_asked() {
        let user = member_of(5, &[1, 2], BuiltInRole::User);
        let staff = member_of(6, &[1, 2], BuiltInRole::Staff);
        assert!(precheck(&user, &create_device(2)).is_err());
        assert!(precheck(&staff, &create_device(2)).is_ok());
        // Another org's id: the store decides (and hides it); nothing is refused here.
        assert!(precheck(&staff, &create_device(9)).is_ok());
        // Own-devices view is a form of device view: a User may ask, the store filters.
        assert!(precheck(&user, &Request::GetDevice { device: 1 }).is_ok());
        let list = Request::ListDevices {
            after: None,
            limit: 10,
            scope: DeviceScope::All,
        };
        assert!(
            precheck(&staff, &list).is_err(),
            "every device: operator only"
        );
        assert!(precheck(&Principal::Operator, &list).is_ok());
        let backup = Request::Backup { dir: "/b".into() };
        let error = precheck(&staff, &backup).expect_err("operator only");
        assert_eq!(error.to_string(), "not permitted: needs the operator");
    }

    #[test]
    fn changes_to_oneself_pass_and_to_others_need_the_permission() {
        let user = member_of(5, &[1, 2], BuiltInRole::User);
        let rename = |id: u64| Request::UpdateUser {
            user: UserId(id),
            change: UserChange {
                name: Some("n".into()),
                ..UserChange::default()
            },
        };
        assert!(precheck(&user, &rename(5)).is_ok());
        let error = precheck(&user, &rename(6)).expect_err("another user");
        assert_eq!(error.to_string(), "not permitted: needs users.edit");
        let logout_all = Request::RevokeSessions {
            user: UserId(5),
            only: None,
        };
        assert!(precheck(&user, &logout_all).is_ok());
    }
}
