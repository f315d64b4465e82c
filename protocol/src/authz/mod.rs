//! Who may see and do what: the one permission decision, [`allows`], a pure function of the
//! acting party ([`Actor`]), a [`Permission`] and the [`Resource`] acted on, and [`grantable`],
//! the rule that nobody grants a permission they do not hold. It lives in `protocol` because both
//! ends decide with it: the operations layer before it asks the store, and the store again for
//! every request that carries an actor.
//!
//! The rules, in order:
//!
//! 1. The local operator may do everything.
//! 2. Something outside the actor's subtree (above, beside, another tree) is
//!    [`Decision::Hidden`]; so is something below the actor's own organization unless the actor
//!    may switch to sub-organizations. A hidden resource must be answered exactly like one that
//!    does not exist.
//! 3. A device is visible with "view organization devices", or with "view own devices" when the
//!    actor owns it; an invisible device is hidden too.
//! 4. What is visible is then allowed or [`Decision::Forbidden`] by the permission itself. A
//!    device permission with an "own" and an "organization" form ([`Permission::device_forms`])
//!    is satisfied by the organization form, or by the own form on an owned device. Forbidden
//!    reveals nothing: the actor could see the thing anyway.
//!
//! The store-wide administration (backups, encryption keys) is the operator's alone.

pub mod org;
pub mod permission;
pub mod role;

pub use org::{MAX_ORG_DEPTH, OrgId, OrgPath, OrgPathError, Relation};
pub use permission::{Permission, Permissions};
pub use role::{BuiltInRole, RoleId};

use serde::{Deserialize, Serialize};

/// A user's id: what a device's owner and an audit line refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UserId(pub u64);

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// The local operator (the admin CLI over the store's own socket, or mutual TLS).
    Operator,
    /// A user of an organization, with the permissions of their role there (for an API key: the
    /// key's own set, cut to what its creator holds).
    Member(Member),
}

/// A user acting within their organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user: UserId,
    pub org: OrgPath,
    pub permissions: Permissions,
}

/// What is acted on, as the decision needs to see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// Something of an organization as a whole: the organization itself, its users, roles,
    /// templates, settings, API keys and audit log, or a device about to be created in it.
    Org(&'a OrgPath),
    /// One device, with its organization and owner.
    Device {
        org: &'a OrgPath,
        owner: Option<UserId>,
    },
    /// The store as a whole: backups and encryption keys.
    Store,
}

/// The answer of [`allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Outside what the actor may see: answer as if it did not exist.
    Hidden,
    /// Visible, but this permission is not held.
    Forbidden,
}

/// Whether `actor` may exercise `permission` on `resource`.
pub fn allows(actor: &Actor, permission: Permission, resource: Resource<'_>) -> Decision {
    let member = match actor {
        Actor::Operator => return Decision::Allowed,
        Actor::Member(member) => member,
    };
    let held = |p: Permission| member.permissions.contains(p);
    let (org, owner) = match resource {
        Resource::Store => return Decision::Forbidden,
        Resource::Org(org) => (org, None),
        Resource::Device { org, owner } => (org, Some(owner)),
    };
    match member.org.relation_of(org) {
        Relation::Same => {}
        Relation::Below if held(Permission::SubOrgsSwitch) => {}
        Relation::Below | Relation::Outside => return Decision::Hidden,
    }
    let Some(owner) = owner else {
        return if held(permission) {
            Decision::Allowed
        } else {
            Decision::Forbidden
        };
    };
    let owns = owner == Some(member.user);
    let may = |(own, org): (Permission, Permission)| held(org) || (owns && held(own));
    if !may((Permission::OwnDevicesView, Permission::OrgDevicesView)) {
        return Decision::Hidden;
    }
    let allowed = match permission.device_forms() {
        Some(forms) => may(forms),
        None => held(permission),
    };
    if allowed {
        Decision::Allowed
    } else {
        Decision::Forbidden
    }
}

/// Whether `actor` may hand out `grant` (to a role, an invited user or an API key): only what
/// the actor holds. On refusal, the permissions beyond the actor's own.
pub fn grantable(actor: &Actor, grant: Permissions) -> Result<(), Permissions> {
    match actor {
        Actor::Operator => Ok(()),
        Actor::Member(member) => {
            let beyond = grant.difference(member.permissions);
            if beyond.is_empty() {
                Ok(())
            } else {
                Err(beyond)
            }
        }
    }
}

#[cfg(test)]
mod tests;
