//! What each request needs of the party it acts for: [`Request::needs`], one table that the
//! operations layer (before it asks) and the store (again, for every request that names an
//! acting party) decide with, so the two cannot disagree about which permission guards what.
//!
//! A [`Check`] names a permission and a [`Subject`] by id; whoever decides resolves the subject
//! to an `authz::Resource` (an organization path, a device's organization and owner) from the
//! records and asks `authz::allows`. Rules that are not a permission on a subject (nobody grants
//! what they do not hold, a user cannot change their own role, a template must be usable in the
//! device's organization) are the store's, next to the records they read.

use super::accounts::{ApiKeyId, DeviceScope, TemplateId, UserChange, UserStatus};
use super::records::DeviceId;
use super::requests::Request;
use crate::authz::{OrgId, Permission, RoleId, UserId};

/// What a request needs of its acting party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needs {
    /// Device traffic, the login steps and the store's own counters: sent acting for nobody,
    /// and then the link's role decides (`server::permissions`). With an acting party, only
    /// the operator may send them.
    Nobody,
    /// The operator alone: backups, keys, listing every device, device-side writes.
    Operator,
    /// Every check must pass.
    Checks(Vec<Check>),
}

/// One condition on the acting party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `authz::allows(actor, permission, subject) == Allowed`.
    Permission(Permission, Subject),
    /// The subject is visible to the actor (not `Hidden`); what a listing returns is then
    /// filtered item by item.
    Visible(Subject),
    /// Passes when the actor is this user; otherwise the permission on the user.
    SelfOr(UserId, Permission),
}

/// What a check is about, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// An organization as a whole (its users, roles, templates, keys, audit log, settings).
    Org(OrgId),
    /// The acting party's own organization.
    ActingOrg,
    /// A device: its organization and owner.
    Device(DeviceId),
    /// A user: their organization.
    User(UserId),
    /// A custom role: its organization (a built-in role is the actor's own organization's).
    Role(RoleId),
    /// A template: visible from its organization and every organization below it, since the
    /// devices there may use it.
    Template(TemplateId),
    /// An API key: its organization.
    ApiKey(ApiKeyId),
}

use Check::{Permission as Holds, SelfOr, Visible};

impl Request {
    /// Whether the request may be sent acting for nobody (device traffic, the login steps):
    /// everything that needs nobody, and the device-side reads a shard makes for its own
    /// device (pins and properties for a sync), which with an acting party are a view.
    pub fn acts_for_nobody(&self) -> bool {
        matches!(
            self,
            Request::ReadPins { .. } | Request::ReadProperties { .. }
        ) || self.needs() == Needs::Nobody
    }

    /// What the request needs of its acting party (see the module's text).
    pub fn needs(&self) -> Needs {
        use Permission as P;
        let checks = |checks: Vec<Check>| Needs::Checks(checks);
        let device_view =
            |device: &DeviceId| checks(vec![Holds(P::OrgDevicesView, Subject::Device(*device))]);
        match self {
            Request::Ping
            | Request::Stats
            | Request::Authenticate { .. }
            | Request::WritePins { .. }
            | Request::SetPresence { .. }
            | Request::SetInfo { .. }
            | Request::ResetPresence { .. }
            | Request::WriteProperty { .. }
            | Request::GetUser { .. }
            | Request::SignUp { .. }
            | Request::CreateToken { .. }
            | Request::ConsumeToken { .. }
            | Request::CreateSession { .. }
            | Request::ResolveSession { .. }
            | Request::UseApiKey { .. }
            | Request::Bootstrap { .. }
            | Request::Revocations { .. } => Needs::Nobody,
            // Device-side reads a shard makes for its device (sync) act for nobody too; with an
            // acting party they are a view of the device.
            Request::ReadPins { device, .. } | Request::ReadProperties { device } => {
                device_view(device)
            }
            Request::Backup { .. }
            | Request::ReloadKeys
            | Request::KeyUsage
            | Request::Reseal { .. } => Needs::Operator,
            Request::CreateDevice { org, .. } => {
                checks(vec![Holds(P::DevicesCreate, Subject::Org(*org))])
            }
            Request::ListDevices { scope, .. } => match scope {
                DeviceScope::All => Needs::Operator,
                DeviceScope::Org { org, .. } => checks(vec![Visible(Subject::Org(*org))]),
            },
            Request::GetDevice { device } | Request::ReadHistory { device, .. } => {
                device_view(device)
            }
            Request::ReprovisionDevice { device, .. } => {
                checks(vec![Holds(P::DeviceTokensEdit, Subject::Device(*device))])
            }
            Request::DeleteDevice { device } => {
                checks(vec![Holds(P::DevicesDelete, Subject::Device(*device))])
            }
            Request::TransferDevice { device, org, owner } => {
                let mut list = vec![Holds(P::DevicesDelete, Subject::Device(*device))];
                if let Some(org) = org {
                    list.push(Holds(P::DevicesCreate, Subject::Org(*org)));
                }
                if owner.is_some() {
                    list.push(Holds(P::DevicesCreate, Subject::Device(*device)));
                }
                checks(list)
            }
            Request::CreateUser { org, .. } => {
                checks(vec![Holds(P::UsersInvite, Subject::Org(*org))])
            }
            Request::FindUser { user } => checks(vec![SelfOr(*user, P::UsersView)]),
            Request::ListUsers { org, .. } => checks(vec![Holds(P::UsersView, Subject::Org(*org))]),
            Request::UpdateUser { user, change } => checks(user_change_checks(*user, change)),
            Request::DeleteUser { user } => {
                checks(vec![Holds(P::UsersDelete, Subject::User(*user))])
            }
            Request::RevokeSessions { user, .. } => {
                checks(vec![SelfOr(*user, P::UsersForceLogout)])
            }
            Request::CreateOrg { parent, .. } => {
                checks(vec![Holds(P::OrgSettings, Subject::Org(*parent))])
            }
            Request::GetOrg { org } | Request::ListOrgs { org } => {
                checks(vec![Visible(Subject::Org(*org))])
            }
            Request::UpdateOrg { org, parent, .. } => {
                let mut list = vec![Holds(P::OrgSettings, Subject::Org(*org))];
                if let Some(parent) = parent {
                    list.push(Holds(P::OrgSettings, Subject::Org(*parent)));
                }
                checks(list)
            }
            Request::CreateRole { org, .. } => {
                checks(vec![Holds(P::RolesCreate, Subject::Org(*org))])
            }
            Request::ListRoles { org } => checks(vec![Holds(P::RolesView, Subject::Org(*org))]),
            Request::UpdateRole { role, .. } => {
                checks(vec![Holds(P::RolesEdit, Subject::Role(*role))])
            }
            Request::DeleteRole { role } => {
                checks(vec![Holds(P::RolesDelete, Subject::Role(*role))])
            }
            Request::CreateTemplate { org, .. } => {
                checks(vec![Holds(P::TemplatesManage, Subject::Org(*org))])
            }
            Request::GetTemplate { id } => {
                checks(vec![Holds(P::TemplatesView, Subject::Template(id.clone()))])
            }
            Request::ListTemplates { org } => {
                checks(vec![Holds(P::TemplatesView, Subject::Org(*org))])
            }
            Request::UpdateTemplate { id, .. } | Request::DeleteTemplate { id } => {
                checks(vec![Holds(P::TemplatesManage, template_subject(id))])
            }
            Request::CreateApiKey { .. } => {
                checks(vec![Holds(P::ApiKeysManage, Subject::ActingOrg)])
            }
            Request::ListApiKeys { org } => {
                checks(vec![Holds(P::ApiKeysManage, Subject::Org(*org))])
            }
            Request::RevokeApiKey { key } => {
                checks(vec![Holds(P::ApiKeysManage, Subject::ApiKey(*key))])
            }
            Request::ReadAudit { org, .. } => {
                checks(vec![Holds(P::AuditLogView, Subject::Org(*org))])
            }
        }
    }
}

fn template_subject(id: &TemplateId) -> Subject {
    Subject::Template(id.clone())
}

/// A user's own name and password are theirs to change; role and status are an admin's.
fn user_change_checks(user: UserId, change: &UserChange) -> Vec<Check> {
    let mut list = Vec::new();
    if change.name.is_some() || change.password_phc.is_some() {
        list.push(SelfOr(user, Permission::UsersEdit));
    }
    if change.role.is_some() {
        list.push(Holds(Permission::UsersEdit, Subject::User(user)));
    }
    match change.status {
        Some(UserStatus::Active | UserStatus::Suspended) => {
            list.push(Holds(Permission::UsersSuspend, Subject::User(user)));
        }
        // Invited and unverified are set by the flows that create them, never by a change: the
        // store refuses them; asking for edit rights here keeps the check non-empty.
        Some(UserStatus::Invited | UserStatus::Unverified) => {
            list.push(Holds(Permission::UsersEdit, Subject::User(user)));
        }
        None => {}
    }
    if list.is_empty() {
        list.push(SelfOr(user, Permission::UsersEdit));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TokenHash;

    #[test]
    fn device_traffic_and_login_steps_act_for_nobody() {
        let token_hash: TokenHash = [0; 32];
        assert!(Request::Authenticate { token_hash }.acts_for_nobody());
        assert!(Request::WritePins { writes: vec![] }.acts_for_nobody());
        let sync = Request::ReadPins {
            device: 1,
            pins: None,
        };
        assert!(sync.acts_for_nobody(), "a shard's sync");
        assert_ne!(sync.needs(), Needs::Nobody, "an app's read is a view");
        assert!(
            Request::ResolveSession {
                token_hash: [1; 32]
            }
            .acts_for_nobody()
        );
        assert!(!Request::GetDevice { device: 1 }.acts_for_nobody());
        assert!(
            !Request::ListDevices {
                after: None,
                limit: 1,
                scope: DeviceScope::All
            }
            .acts_for_nobody()
        );
    }

    #[test]
    fn changing_ones_own_name_is_self_but_role_and_status_are_not() {
        let own = Request::UpdateUser {
            user: UserId(4),
            change: UserChange {
                name: Some("n".into()),
                ..UserChange::default()
            },
        };
        assert_eq!(
            own.needs(),
            Needs::Checks(vec![SelfOr(UserId(4), Permission::UsersEdit)])
        );
        let promote = Request::UpdateUser {
            user: UserId(4),
            change: UserChange {
                role: Some(RoleId(1)),
                status: Some(UserStatus::Suspended),
                ..UserChange::default()
            },
        };
        assert_eq!(
            promote.needs(),
            Needs::Checks(vec![
                Holds(Permission::UsersEdit, Subject::User(UserId(4))),
                Holds(Permission::UsersSuspend, Subject::User(UserId(4))),
            ])
        );
    }

    #[test]
    fn every_management_request_names_a_permission_or_the_operator() {
        let requests = [
            Request::ReprovisionDevice {
                device: 1,
                token_hash: [0; 32],
            },
            Request::DeleteDevice { device: 1 },
            Request::Backup { dir: "/x".into() },
            Request::ReadAudit {
                org: OrgId(1),
                subtree: false,
                after: None,
                limit: 1,
            },
        ];
        for request in requests {
            assert_ne!(request.needs(), Needs::Nobody, "{}", request.name());
        }
    }
}
