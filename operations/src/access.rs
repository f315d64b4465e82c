//! The one decision of who may see and do what: [`decide`], a pure function of the acting
//! principal, the action and the organization of the thing acted on. Every operation of this crate
//! asks it (through [`require`], [`require_store_wide`] or [`device_listing`]) before it returns or
//! changes anything, and nothing else in the workspace compares organizations.
//!
//! The rule that matters most: something outside the principal's scope is [`Decision::Hidden`], and
//! [`require`] turns that into the very error a missing thing gets ([`OperationError::NotFound`]
//! with the same [`Missing`]), so no answer, message or status tells "exists elsewhere" from "does
//! not exist". [`Decision::Forbidden`] is only for actions the principal may not take anywhere
//! (today: a user creating devices or backing the store up), which reveals nothing about any
//! particular resource.
//!
//! Today's rule: the operator may do everything; a user sees the devices and users of their own
//! organization and may change nothing. Issue 13 replaces the body of [`decide`] with
//! `allows(principal, permission, resource)` over roles and the organization tree; its callers stay
//! as they are.

use crate::error::{Missing, OperationError};
use crate::principal::Principal;
use std::fmt;

/// What a principal wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read a device: its record, latest pins, pin history; list devices.
    ViewDevice,
    /// Register a device (and receive its token).
    CreateDevice,
    /// Read a user's account (never its password hash).
    ViewUser,
    /// Register a user.
    CreateUser,
    /// Have the store write a checkpoint of its database.
    BackUpStore,
    /// Reload, count or re-seal the store's encryption keys.
    ManageKeys,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::ViewDevice => "view devices",
            Action::CreateDevice => "create devices",
            Action::ViewUser => "view users",
            Action::CreateUser => "create users",
            Action::BackUpStore => "back the store up",
            Action::ManageKeys => "manage the store's keys",
        })
    }
}

/// What the action applies to, as far as scope is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A device or user of this organization, existing or about to be created.
    Org(&'a str),
    /// The store as a whole (backup, keys).
    Store,
}

/// The verdict of [`decide`]: the same three answers as the permission decision it will become
/// (`portcullis_protocol::authz::allows`).
pub use portcullis_protocol::authz::Decision;

/// The decision itself, pure.
pub fn decide(principal: &Principal, action: Action, target: Target<'_>) -> Decision {
    let member = match principal {
        Principal::Operator => return Decision::Allowed,
        Principal::Member(member) => member,
    };
    match action {
        Action::ViewDevice | Action::ViewUser => {}
        Action::CreateDevice | Action::CreateUser | Action::BackUpStore | Action::ManageKeys => {
            return Decision::Forbidden;
        }
    }
    match target {
        Target::Org(org) if org == member.org() => Decision::Allowed,
        Target::Org(_) => Decision::Hidden,
        Target::Store => Decision::Forbidden,
    }
}

/// [`decide`] as a result: `Hidden` becomes the "does not exist" error of `missing`, the same
/// value an absent resource produces.
pub(crate) fn require(
    principal: &Principal,
    action: Action,
    target: Target<'_>,
    missing: impl FnOnce() -> Missing,
) -> Result<(), OperationError> {
    match decide(principal, action, target) {
        Decision::Allowed => Ok(()),
        Decision::Hidden => Err(OperationError::NotFound(missing())),
        Decision::Forbidden => Err(OperationError::NotPermitted { action }),
    }
}

/// [`decide`] for an action on the store as a whole, where nothing can be hidden.
pub(crate) fn require_store_wide(
    principal: &Principal,
    action: Action,
) -> Result<(), OperationError> {
    match decide(principal, action, Target::Store) {
        Decision::Allowed => Ok(()),
        Decision::Hidden | Decision::Forbidden => Err(OperationError::NotPermitted { action }),
    }
}

/// Whether `principal` may see a device of `org` (for filtering what a listing returned).
pub(crate) fn sees_device(principal: &Principal, org: &str) -> bool {
    decide(principal, Action::ViewDevice, Target::Org(org)) == Decision::Allowed
}

/// The organization filter a device listing asks the store for: `None` lists every device
/// (the operator), `Some(org)` only that organization's. Whatever the store returns is still
/// checked device by device with [`sees_device`].
pub(crate) fn device_listing(principal: &Principal) -> Option<String> {
    principal.as_member().map(|member| member.org().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Action; 6] = [
        Action::ViewDevice,
        Action::CreateDevice,
        Action::ViewUser,
        Action::CreateUser,
        Action::BackUpStore,
        Action::ManageKeys,
    ];

    #[test]
    fn the_operator_may_do_everything() {
        for action in ALL {
            for target in [Target::Org("acme"), Target::Org(""), Target::Store] {
                assert_eq!(
                    decide(&Principal::Operator, action, target),
                    Decision::Allowed
                );
            }
        }
        assert_eq!(device_listing(&Principal::Operator), None);
    }

    #[test]
    fn a_member_sees_its_own_org_only_and_changes_nothing() {
        let ann = Principal::member("ann@a.example", "acme");
        for action in [Action::ViewDevice, Action::ViewUser] {
            assert_eq!(decide(&ann, action, Target::Org("acme")), Decision::Allowed);
            assert_eq!(decide(&ann, action, Target::Org("other")), Decision::Hidden);
            // Organizations are compared exactly: no case folding, no prefixes.
            assert_eq!(decide(&ann, action, Target::Org("Acme")), Decision::Hidden);
            assert_eq!(decide(&ann, action, Target::Org("acme2")), Decision::Hidden);
            assert_eq!(decide(&ann, action, Target::Store), Decision::Forbidden);
        }
        for action in [
            Action::CreateDevice,
            Action::CreateUser,
            Action::BackUpStore,
            Action::ManageKeys,
        ] {
            // The same answer whatever the organization, so a refusal reveals none.
            for target in [Target::Org("acme"), Target::Org("other"), Target::Store] {
                assert_eq!(decide(&ann, action, target), Decision::Forbidden);
            }
        }
        assert_eq!(device_listing(&ann).as_deref(), Some("acme"));
        assert!(sees_device(&ann, "acme") && !sees_device(&ann, "other"));
    }

    #[test]
    fn hidden_is_reported_as_the_missing_thing_itself() {
        let ann = Principal::member("ann@a.example", "acme");
        let hidden = require(&ann, Action::ViewDevice, Target::Org("other"), || {
            Missing::Device(7)
        })
        .expect_err("hidden");
        assert!(
            matches!(hidden, OperationError::NotFound(Missing::Device(7))),
            "{hidden:?}"
        );
        let forbidden = require(&ann, Action::BackUpStore, Target::Store, || {
            Missing::Device(7)
        })
        .expect_err("forbidden");
        assert!(
            matches!(
                forbidden,
                OperationError::NotPermitted {
                    action: Action::BackUpStore
                }
            ),
            "{forbidden:?}"
        );
    }
}
