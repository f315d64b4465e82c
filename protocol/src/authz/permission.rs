//! The granular permissions a role or an API key holds, and [`Permissions`], a set of them.
//!
//! The list follows Blynk's ("view roles and permissions", "edit auth tokens", "switch to
//! sub-organizations", …) where Portcullis has the feature. Each permission has a stable name
//! ([`Permission::name`]): it is what the REST API, the admin CLI and the stored role records
//! use, so a name never changes meaning once released. A set is a 64-bit mask, so checking one
//! costs a shift and an AND, and a role record stays a few bytes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One granular permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Permission {
    RolesView,
    RolesCreate,
    RolesEdit,
    RolesDelete,
    UsersView,
    UsersInvite,
    UsersEdit,
    UsersSuspend,
    UsersDelete,
    UsersForceLogout,
    /// View the devices the user owns.
    OwnDevicesView,
    /// Write to the devices the user owns.
    OwnDevicesControl,
    /// View every device of the organizations in scope, whoever owns it.
    OrgDevicesView,
    /// Write to every device of the organizations in scope.
    OrgDevicesControl,
    DevicesCreate,
    DevicesDelete,
    /// Re-provision a device: a new token replaces the old one.
    DeviceTokensEdit,
    TemplatesView,
    TemplatesManage,
    OrgSettings,
    /// See and act in the organizations below one's own.
    SubOrgsSwitch,
    ApiKeysManage,
    AuditLogView,
}

impl Permission {
    /// Every permission, in declaration order.
    pub const ALL: [Permission; 23] = [
        Permission::RolesView,
        Permission::RolesCreate,
        Permission::RolesEdit,
        Permission::RolesDelete,
        Permission::UsersView,
        Permission::UsersInvite,
        Permission::UsersEdit,
        Permission::UsersSuspend,
        Permission::UsersDelete,
        Permission::UsersForceLogout,
        Permission::OwnDevicesView,
        Permission::OwnDevicesControl,
        Permission::OrgDevicesView,
        Permission::OrgDevicesControl,
        Permission::DevicesCreate,
        Permission::DevicesDelete,
        Permission::DeviceTokensEdit,
        Permission::TemplatesView,
        Permission::TemplatesManage,
        Permission::OrgSettings,
        Permission::SubOrgsSwitch,
        Permission::ApiKeysManage,
        Permission::AuditLogView,
    ];

    /// The stable name used by the API, the CLI and stored records.
    pub fn name(self) -> &'static str {
        match self {
            Permission::RolesView => "roles.view",
            Permission::RolesCreate => "roles.create",
            Permission::RolesEdit => "roles.edit",
            Permission::RolesDelete => "roles.delete",
            Permission::UsersView => "users.view",
            Permission::UsersInvite => "users.invite",
            Permission::UsersEdit => "users.edit",
            Permission::UsersSuspend => "users.suspend",
            Permission::UsersDelete => "users.delete",
            Permission::UsersForceLogout => "users.force_logout",
            Permission::OwnDevicesView => "own_devices.view",
            Permission::OwnDevicesControl => "own_devices.control",
            Permission::OrgDevicesView => "org_devices.view",
            Permission::OrgDevicesControl => "org_devices.control",
            Permission::DevicesCreate => "devices.create",
            Permission::DevicesDelete => "devices.delete",
            Permission::DeviceTokensEdit => "devices.edit_token",
            Permission::TemplatesView => "templates.view",
            Permission::TemplatesManage => "templates.manage",
            Permission::OrgSettings => "org.settings",
            Permission::SubOrgsSwitch => "org.switch_to_sub_orgs",
            Permission::ApiKeysManage => "api_keys.manage",
            Permission::AuditLogView => "audit_log.view",
        }
    }

    /// The permission with this stable name.
    pub fn from_name(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.name() == name)
    }

    /// For a device permission that comes in an "own devices" and an "organization devices"
    /// form, both forms: `(own, org)`. Either form names the same action on a device.
    pub fn device_forms(self) -> Option<(Permission, Permission)> {
        match self {
            Permission::OwnDevicesView | Permission::OrgDevicesView => {
                Some((Permission::OwnDevicesView, Permission::OrgDevicesView))
            }
            Permission::OwnDevicesControl | Permission::OrgDevicesControl => {
                Some((Permission::OwnDevicesControl, Permission::OrgDevicesControl))
            }
            _ => None,
        }
    }

    fn bit(self) -> u64 {
        1 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of permissions. Serialized as the list of their names (JSON) so stored records and API
/// answers say what they mean; unknown names are refused, not dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u64);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);

    /// Every permission there is.
    pub fn all() -> Permissions {
        Permission::ALL.into_iter().collect()
    }

    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }

    pub fn with(self, permission: Permission) -> Permissions {
        Permissions(self.0 | permission.bit())
    }

    pub fn without(self, permission: Permission) -> Permissions {
        Permissions(self.0 & !permission.bit())
    }

    /// Whether every permission of `self` is also in `other`.
    pub fn is_subset_of(self, other: Permissions) -> bool {
        self.0 & !other.0 == 0
    }

    /// The permissions in both sets (an API key acts with its own set cut to its creator's).
    pub fn intersection(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    /// The permissions of `self` that are not in `other`: what a grant would add beyond it.
    pub fn difference(self, other: Permissions) -> Permissions {
        Permissions(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Permissions(iter.into_iter().fold(0, |mask, p| mask | p.bit()))
    }
}

/// `a, b, c` by name, or `none`.
impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, p) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p.name())?;
        }
        Ok(())
    }
}

impl Serialize for Permissions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A collected list, not the filtering iterator: postcard (the store wire) must know a
        // sequence's length before its first element.
        let names: Vec<&'static str> = self.iter().map(Permission::name).collect();
        names.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        names
            .iter()
            .map(|name| {
                Permission::from_name(name)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown permission {name:?}")))
            })
            .collect()
    }
}
