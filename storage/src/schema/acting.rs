//! The store decides again: every request is checked here, against the store's own records,
//! before it reads or writes anything ([`decide`], called by both the read and the write path
//! with their [`View`], so a write sees what earlier requests of its group did).
//!
//! 1. A request acting for nobody must be one that may ([`Request::acts_for_nobody`]: device
//!    traffic and the login steps, which the link's role guards).
//! 2. The acting party is resolved from the records: the operator is `Actor::Operator`; a user
//!    must exist and be active, and acts with their organization's path and their role's
//!    permissions; an API key must exist, be neither revoked nor expired, and its creator must be
//!    active: the creator acts, with the key's permissions cut to what the creator's role holds
//!    now.
//! 3. [`Request::needs`] is evaluated: `Nobody` and `Operator` pass only for the operator (with
//!    an acting party), `Checks` resolve each [`Subject`] to an `authz::Resource` and ask
//!    `authz::allows`. A subject that does not exist and one that is hidden from the actor give
//!    the very same `NotFound` text ([`Target::name`]: `device 12`, `user 4`, ...); a forbidden
//!    one gives `NotPermitted` with the permission's name.
//!
//! Rules that are not a permission on a subject (grants, one's own role, a template's use) are
//! the concept modules' own, using [`Who`] ([`Who::grantable`], [`require`], [`visible`]).

use super::apikeys::find_key;
use super::group::View;
use super::orgs::org_path;
use super::records::builtin_permissions;
use super::roles::{find_role, role_permissions};
use super::templates::find_template;
use super::users::find_user;
use super::{Result, SchemaError, devices::find_device};
use portcullis_protocol::authz::{
    Actor, BuiltInRole, Decision, Member, OrgPath, Permission, Permissions, Resource, UserId,
    allows,
};
use portcullis_protocol::store::{Acting, Check, Needs, Party, Request, Subject};

/// The acting party of one request as the store resolved it, with what the audit log needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Who {
    /// `None`: the request acts for nobody.
    pub actor: Option<Actor>,
    /// For the audit log: `operator`, `user 7 (a@b.c)`, `key 3 of user 7`, `anonymous`.
    pub label: String,
    pub user: Option<UserId>,
    /// The client's address (`acting.from`), or `unknown` for a request acting for nobody.
    pub from: String,
    /// The request's name (the audit entry's action).
    pub action: &'static str,
    /// The store's clock when the request was decided (Unix ms).
    pub now: u64,
}

impl Who {
    pub(super) fn nobody(action: &'static str, now: u64) -> Self {
        Self {
            actor: None,
            label: "anonymous".into(),
            user: None,
            from: "unknown".into(),
            action,
            now,
        }
    }

    /// This party acting from `from`: the address a request acting for nobody names itself
    /// (sign-up, a mailed link), for its audit entry. Only ever replaces `unknown`.
    pub(super) fn with_address(&self, from: String) -> Self {
        let mut who = self.clone();
        if who.actor.is_none() && !from.is_empty() {
            who.from = from;
        }
        who
    }

    pub(super) fn member(&self) -> Option<&Member> {
        match &self.actor {
            Some(Actor::Member(member)) => Some(member),
            _ => None,
        }
    }

    pub(super) fn is_operator(&self) -> bool {
        self.actor == Some(Actor::Operator)
    }

    /// Whether the actor is this user (a key of theirs included).
    pub(super) fn is_user(&self, user: UserId) -> bool {
        self.member().is_some_and(|m| m.user == user)
    }

    /// The actor's organization path (the root's for the operator and for nobody).
    pub(super) fn org_path(&self) -> OrgPath {
        self.member().map_or_else(OrgPath::root, |m| m.org.clone())
    }

    /// `authz::allows` for this actor; nothing is visible to nobody.
    pub(super) fn allows(&self, permission: Permission, resource: Resource<'_>) -> Decision {
        match &self.actor {
            Some(actor) => allows(actor, permission, resource),
            None => Decision::Hidden,
        }
    }

    /// Nobody grants what they do not hold (`authz::grantable`): `NotPermitted` naming the
    /// permissions beyond the actor's own.
    pub(super) fn grantable(&self, grant: Permissions) -> Result<()> {
        let Some(actor) = &self.actor else {
            return Err(SchemaError::NotPermitted(
                "a request acting for nobody grants nothing".into(),
            ));
        };
        portcullis_protocol::authz::grantable(actor, grant).map_err(|beyond| {
            SchemaError::NotPermitted(format!(
                "{beyond} (beyond what the acting party holds, so it cannot grant them)"
            ))
        })
    }
}

/// A subject resolved for the decision: where it sits, whose device it is, and its name.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub path: OrgPath,
    /// `Some` for a device: its owner.
    pub owner: Option<Option<UserId>>,
    /// What a `NotFound` says, the same whether it is missing or hidden.
    pub name: String,
}

impl Target {
    pub(super) fn org(path: OrgPath, name: String) -> Self {
        Self {
            path,
            owner: None,
            name,
        }
    }

    pub(super) fn resource(&self) -> Resource<'_> {
        match self.owner {
            Some(owner) => Resource::Device {
                org: &self.path,
                owner,
            },
            None => Resource::Org(&self.path),
        }
    }
}

/// `permission` on `target`: allowed, or `NotFound` (hidden) / `NotPermitted` (forbidden).
pub(super) fn require(who: &Who, permission: Permission, target: &Target) -> Result<()> {
    match who.allows(permission, target.resource()) {
        Decision::Allowed => Ok(()),
        Decision::Hidden => Err(SchemaError::NotFound(target.name.clone())),
        Decision::Forbidden => Err(SchemaError::NotPermitted(permission.name().to_owned())),
    }
}

/// Whether the actor may see `target` at all.
pub(super) fn visible(who: &Who, target: &Target) -> bool {
    who.allows(Permission::OrgDevicesView, target.resource()) != Decision::Hidden
}

/// Decides `request` acting for `acting` (see the module's text) and returns the resolved party.
pub(super) fn decide(
    view: &impl View,
    acting: Option<&Acting>,
    request: &Request,
    now: u64,
) -> Result<Who> {
    let action = request.name();
    let needs = request.needs();
    let Some(acting) = acting else {
        // Device traffic's own reads (a shard syncing its device) act for nobody too.
        return if request.acts_for_nobody() {
            Ok(Who::nobody(action, now))
        } else {
            Err(SchemaError::NotPermitted(format!(
                "{action} must name the party it acts for"
            )))
        };
    };
    let who = resolve(view, acting, action, now)?;
    match needs {
        Needs::Nobody | Needs::Operator if who.is_operator() => Ok(who),
        Needs::Nobody | Needs::Operator => Err(SchemaError::NotPermitted(format!(
            "{action} is the operator's alone"
        ))),
        Needs::Checks(checks) => {
            for check in &checks {
                evaluate(view, &who, check)?;
            }
            Ok(who)
        }
    }
}

/// Resolves the acting party from the records.
pub(super) fn resolve(
    view: &impl View,
    acting: &Acting,
    action: &'static str,
    now: u64,
) -> Result<Who> {
    let from = acting.from.clone();
    match acting.party {
        Party::Operator => Ok(Who {
            actor: Some(Actor::Operator),
            label: "operator".into(),
            user: None,
            from,
            action,
            now,
        }),
        Party::User(id) => {
            let cannot = || {
                SchemaError::NotPermitted(format!(
                    "user {} cannot act: unknown or not active",
                    id.0
                ))
            };
            let user = find_user(view, id)?.ok_or_else(cannot)?;
            if !user.active() {
                return Err(cannot());
            }
            let member = super::users::member_of(view, id, &user)?;
            Ok(Who {
                actor: Some(Actor::Member(member)),
                label: format!("user {} ({})", id.0, user.email),
                user: Some(id),
                from,
                action,
                now,
            })
        }
        Party::ApiKey(id) => {
            let cannot = || {
                SchemaError::NotPermitted(format!(
                    "key {} cannot act: unknown, revoked or expired, or its creator is not active",
                    id.0
                ))
            };
            let key = find_key(view, id)?.ok_or_else(cannot)?;
            if key.revoked || key.expires_ms.is_some_and(|at| at <= now) {
                return Err(cannot());
            }
            let creator = UserId(key.creator);
            let user = find_user(view, creator)?.ok_or_else(cannot)?;
            if !user.active() {
                return Err(cannot());
            }
            let mut member = super::users::member_of(view, creator, &user)?;
            member.permissions = key.permissions.to_set()?.intersection(member.permissions);
            Ok(Who {
                actor: Some(Actor::Member(member)),
                label: format!("key {} of user {}", id.0, creator.0),
                user: Some(creator),
                from,
                action,
                now,
            })
        }
    }
}

fn evaluate(view: &impl View, who: &Who, check: &Check) -> Result<()> {
    match check {
        Check::Permission(permission, subject) => {
            require(who, *permission, &target(view, who, subject)?)
        }
        Check::Visible(subject) => {
            let target = target(view, who, subject)?;
            if visible(who, &target) {
                Ok(())
            } else {
                Err(SchemaError::NotFound(target.name))
            }
        }
        // Oneself: the user exists (the party resolved), nothing else to ask.
        Check::SelfOr(user, _) if who.is_user(*user) => Ok(()),
        Check::SelfOr(user, permission) => {
            require(who, *permission, &target(view, who, &Subject::User(*user))?)
        }
    }
}

/// Resolves a subject to where it sits. Missing is `NotFound` with the same name a hidden one
/// gets.
pub(super) fn target(view: &impl View, who: &Who, subject: &Subject) -> Result<Target> {
    let missing = |name: String| move || SchemaError::NotFound(name);
    match subject {
        Subject::Org(org) => {
            let name = org.to_string();
            let path = org_path(view, *org)?.ok_or_else(missing(name.clone()))?;
            Ok(Target::org(path, name))
        }
        Subject::ActingOrg => {
            let path = who.org_path();
            let name = path.org().to_string();
            Ok(Target::org(path, name))
        }
        Subject::Device(device) => {
            let name = format!("device {device}");
            let record = find_device(view, *device)?.ok_or_else(missing(name.clone()))?;
            let path = org_path(view, portcullis_protocol::authz::OrgId(record.org))?
                .ok_or_else(|| corrupt_org("device", &name, record.org))?;
            Ok(Target {
                path,
                owner: Some(record.owner.map(UserId)),
                name,
            })
        }
        Subject::User(user) => {
            let name = format!("user {}", user.0);
            let record = find_user(view, *user)?.ok_or_else(missing(name.clone()))?;
            let path = org_path(view, portcullis_protocol::authz::OrgId(record.org))?
                .ok_or_else(|| corrupt_org("user", &name, record.org))?;
            Ok(Target::org(path, name))
        }
        Subject::Role(role) => {
            let name = format!("role {}", role.0);
            if BuiltInRole::from_id(*role).is_some() {
                return Ok(Target::org(who.org_path(), name));
            }
            let record = find_role(view, *role)?.ok_or_else(missing(name.clone()))?;
            let path = org_path(view, portcullis_protocol::authz::OrgId(record.org))?
                .ok_or_else(|| corrupt_org("role", &name, record.org))?;
            Ok(Target::org(path, name))
        }
        Subject::Template(id) => {
            let name = format!("template {id}");
            let record = find_template(view, id)?.ok_or_else(missing(name.clone()))?;
            let path = org_path(view, portcullis_protocol::authz::OrgId(record.org))?
                .ok_or_else(|| corrupt_org("template", &name, record.org))?;
            // A template is visible from its organization's whole subtree: one of an
            // organization at or above the actor's counts as the actor's own.
            let own = who.org_path();
            let path = if own.ids().starts_with(path.ids()) {
                own
            } else {
                path
            };
            Ok(Target::org(path, name))
        }
        Subject::ApiKey(key) => {
            let name = key.to_string();
            let record = find_key(view, *key)?.ok_or_else(missing(name.clone()))?;
            let path = org_path(view, portcullis_protocol::authz::OrgId(record.org))?
                .ok_or_else(|| corrupt_org("API key", &name, record.org))?;
            Ok(Target::org(path, name))
        }
    }
}

fn corrupt_org(what: &'static str, name: &str, org: u32) -> SchemaError {
    SchemaError::Corrupt {
        what,
        key: name.to_owned(),
        reason: format!("its organization {org} does not exist"),
    }
}

/// The permissions role `role` gives (built-in: fixed; custom: its record; a custom role that
/// is gone gives none).
pub(super) fn permissions_of_role(
    view: &impl View,
    role: portcullis_protocol::authz::RoleId,
) -> Result<Permissions> {
    if let Some(set) = builtin_permissions(role) {
        return Ok(set);
    }
    role_permissions(view, role)
}
