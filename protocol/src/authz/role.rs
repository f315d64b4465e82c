//! The built-in roles every organization has: Admin, Staff and User, with Blynk's ids (1, 2, 3)
//! and Portcullis' default permissions. Custom roles are records of the store (an id, a name, a
//! [`Permissions`] set); the built-in ones are defined here so every side agrees on them, and
//! Admin cannot be deleted.

use super::permission::{Permission, Permissions};

/// A role's id. Built-in roles have ids 1–3; custom roles get ids above
/// [`RoleId::FIRST_CUSTOM`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct RoleId(pub u32);

impl RoleId {
    /// The first id a custom role may have.
    pub const FIRST_CUSTOM: RoleId = RoleId(100);
}

/// A role every organization has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltInRole {
    /// Everything, in the organization and (by switching) below it. Cannot be deleted.
    Admin,
    /// Support and operations: users and devices, but not roles, templates, keys or settings.
    Staff,
    /// An end user: the devices they own, nothing else.
    User,
}

impl BuiltInRole {
    pub const ALL: [BuiltInRole; 3] = [BuiltInRole::Admin, BuiltInRole::Staff, BuiltInRole::User];

    pub fn id(self) -> RoleId {
        match self {
            BuiltInRole::Admin => RoleId(1),
            BuiltInRole::Staff => RoleId(2),
            BuiltInRole::User => RoleId(3),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BuiltInRole::Admin => "Admin",
            BuiltInRole::Staff => "Staff",
            BuiltInRole::User => "User",
        }
    }

    pub fn from_id(id: RoleId) -> Option<BuiltInRole> {
        BuiltInRole::ALL.into_iter().find(|role| role.id() == id)
    }

    /// Whether the role may be deleted (only Admin may not: every organization keeps one).
    pub fn deletable(self) -> bool {
        self != BuiltInRole::Admin
    }

    /// The permissions a new organization's copy of the role starts with.
    pub fn default_permissions(self) -> Permissions {
        use Permission::*;
        match self {
            BuiltInRole::Admin => Permissions::all(),
            BuiltInRole::Staff => [
                RolesView,
                UsersView,
                UsersInvite,
                UsersEdit,
                UsersSuspend,
                UsersForceLogout,
                OwnDevicesView,
                OwnDevicesControl,
                OrgDevicesView,
                OrgDevicesControl,
                DevicesCreate,
                DevicesDelete,
                DeviceTokensEdit,
                TemplatesView,
                SubOrgsSwitch,
            ]
            .into_iter()
            .collect(),
            BuiltInRole::User => [OwnDevicesView, OwnDevicesControl].into_iter().collect(),
        }
    }
}
