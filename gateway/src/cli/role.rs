//! `portcullis admin role list|create|update|delete|permissions`: the built-in roles (Admin,
//! Staff, User) and the custom roles of an organization, each a set of permissions named by their
//! stable names (`users.view`, `devices.create`, ...), through `portcullis_operations::roles` as
//! the operator. `role permissions` lists every name with what it allows; [`parse_permission_list`]
//! reads `a,b,c` (or `none`) with the operations layer's own name check.

use super::args::{parse_org, parse_role};
use super::events::AdminEvent;
use super::render::{self, failure, names, printable, write_table};
use portcullis_operations::{Principal, StoreAccess, roles};
use portcullis_protocol::authz::{BuiltInRole, OrgId, Permission, Permissions, RoleId};
use portcullis_protocol::store::RoleRecord;
use serde::Serialize;
use std::io::Write;

#[derive(Debug, clap::Subcommand)]
pub enum RoleCommand {
    /// List the roles users of an organization may hold: the built-in Admin (1), Staff (2) and
    /// User (3), and the organization's custom roles, with their permissions.
    List {
        /// Organization id (see `org list`).
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        org: OrgId,
    },
    /// Create a custom role of an organization.
    #[command(after_long_help = permission_help())]
    Create {
        /// Organization id (see `org list`).
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        org: OrgId,
        /// Display name of the role.
        #[arg(long)]
        name: String,
        /// Comma-separated permission names, e.g. users.view,org_devices.view, or `none`
        /// (`role permissions` lists every name).
        #[arg(long, value_parser = parse_permission_list, value_name = "A,B,C")]
        permissions: Permissions,
    },
    /// Rename a custom role and/or replace its permissions (users holding it get the new set at
    /// their next request).
    #[command(
        group = clap::ArgGroup::new("change").required(true).multiple(true).args(["name", "permissions"]),
        after_long_help = permission_help()
    )]
    Update {
        /// Role id (see `role list --org ID`).
        #[arg(value_parser = parse_role)]
        id: RoleId,
        /// The new name.
        #[arg(long)]
        name: Option<String>,
        /// The new permissions, all of them (comma-separated names, or `none`).
        #[arg(long, value_parser = parse_permission_list, value_name = "A,B,C")]
        permissions: Option<Permissions>,
    },
    /// Delete a custom role nobody holds (give its users another role first with
    /// `user set-role`). Built-in roles are never deleted.
    Delete {
        /// Role id (see `role list --org ID`).
        #[arg(value_parser = parse_role)]
        id: RoleId,
    },
    /// List every permission name a role may hold, with what it allows.
    Permissions,
}

/// What each permission allows, in one line (the stable name is [`Permission::name`]).
pub fn meaning(permission: Permission) -> &'static str {
    match permission {
        Permission::RolesView => "see the roles of the organization and their permissions",
        Permission::RolesCreate => "create custom roles (with permissions one holds oneself)",
        Permission::RolesEdit => "rename custom roles and change their permissions",
        Permission::RolesDelete => "delete custom roles nobody holds",
        Permission::UsersView => "see the users of the organization",
        Permission::UsersInvite => "invite or create users",
        Permission::UsersEdit => "change users' names and roles",
        Permission::UsersSuspend => "suspend and re-activate users",
        Permission::UsersDelete => "delete users",
        Permission::UsersForceLogout => "end every session of a user",
        Permission::OwnDevicesView => "see the devices one owns",
        Permission::OwnDevicesControl => "write to the devices one owns",
        Permission::OrgDevicesView => "see every device of the organization, whoever owns it",
        Permission::OrgDevicesControl => "write to every device of the organization",
        Permission::DevicesCreate => "create devices and give them owners",
        Permission::DevicesDelete => "delete devices and move them to other organizations",
        Permission::DeviceTokensEdit => "re-provision devices (a new token replaces the old one)",
        Permission::TemplatesView => "see templates and their datastreams",
        Permission::TemplatesManage => "create, change and delete templates",
        Permission::OrgSettings => "create, rename and move organizations",
        Permission::SubOrgsSwitch => "see and act in the organizations below one's own",
        Permission::ApiKeysManage => "create, list and revoke API keys",
        Permission::AuditLogView => "read the audit log",
    }
}

/// Every permission name with its meaning, for the help of the commands that take them.
fn permission_help() -> String {
    let width = Permission::ALL
        .iter()
        .map(|p| p.name().len())
        .max()
        .unwrap_or(0);
    let mut help = String::from("Permissions:\n");
    for permission in Permission::ALL {
        help.push_str(&format!(
            "  {:<width$}  {}\n",
            permission.name(),
            meaning(permission)
        ));
    }
    help
}

/// Permissions from `a,b,c` (spaces around names allowed) or `none`; an unknown name is refused
/// with where to find the valid ones.
pub fn parse_permission_list(text: &str) -> Result<Permissions, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("none") {
        return Ok(Permissions::NONE);
    }
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.iter().any(|part| part.is_empty()) {
        return Err(format!(
            "{text:?} has an empty permission name; give names separated by single commas, or `none`"
        ));
    }
    roles::parse_permissions(parts).map_err(|error| {
        format!("{error}; `portcullis admin role permissions` lists every permission name")
    })
}

/// Runs a role command as the operator.
pub fn execute(
    store: &mut impl StoreAccess,
    command: RoleCommand,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let operator = &Principal::Operator;
    match command {
        RoleCommand::List { org } => {
            let roles = roles::list(store, operator, org).map_err(failure)?;
            list(&roles, json, out)
        }
        RoleCommand::Create {
            org,
            name,
            permissions,
        } => {
            let role = roles::create(store, operator, org, name, permissions).map_err(failure)?;
            AdminEvent::new(
                "admin_role_created",
                format!("role {}", role.id.0),
                format!(
                    "created in {org}, name {:?}, permissions {permissions}",
                    role.name
                ),
            )
            .record();
            report(&role, "Created", json, out)
        }
        RoleCommand::Update {
            id,
            name,
            permissions,
        } => {
            let role = roles::update(store, operator, id, name, permissions).map_err(failure)?;
            AdminEvent::new(
                "admin_role_updated",
                format!("role {}", id.0),
                format!(
                    "now named {:?} with permissions {}",
                    role.name, role.permissions
                ),
            )
            .record();
            report(&role, "Updated", json, out)
        }
        RoleCommand::Delete { id } => {
            roles::delete(store, operator, id).map_err(failure)?;
            AdminEvent::new("admin_role_deleted", format!("role {}", id.0), "deleted").record();
            if json {
                return render::json(out, &serde_json::json!({"deleted": id.0}));
            }
            writeln!(out, "Deleted role {}.", id.0)?;
            Ok(())
        }
        RoleCommand::Permissions => permissions(json, out),
    }
}

/// A role as the admin CLI shows it.
#[derive(Serialize)]
struct RoleView<'a> {
    id: u32,
    name: &'a str,
    /// `null` for a built-in role.
    org: Option<u32>,
    built_in: bool,
    permissions: Permissions,
}

impl<'a> From<&'a RoleRecord> for RoleView<'a> {
    fn from(role: &'a RoleRecord) -> Self {
        Self {
            id: role.id.0,
            name: &role.name,
            org: role.org.map(|o| o.0),
            built_in: BuiltInRole::from_id(role.id).is_some(),
            permissions: role.permissions,
        }
    }
}

fn permission_names(permissions: Permissions) -> String {
    if permissions == Permissions::all() {
        return "all".into();
    }
    names(permissions.iter().map(Permission::name))
}

fn report(role: &RoleRecord, verb: &str, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        return render::json(out, &RoleView::from(role));
    }
    writeln!(
        out,
        "{verb} role {} {:?}: {}.",
        role.id.0,
        printable(&role.name),
        permission_names(role.permissions)
    )?;
    Ok(())
}

fn list(roles: &[RoleRecord], json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        let views: Vec<RoleView<'_>> = roles.iter().map(RoleView::from).collect();
        return render::json(out, &views);
    }
    let rows: Vec<[String; 4]> = roles
        .iter()
        .map(|role| {
            [
                role.id.0.to_string(),
                printable(&role.name),
                match role.org {
                    None => "built-in".into(),
                    Some(org) => format!("custom (org {})", org.0),
                },
                permission_names(role.permissions),
            ]
        })
        .collect();
    write_table(out, ["ID", "NAME", "KIND", "PERMISSIONS"], &rows)?;
    Ok(())
}

#[derive(Serialize)]
struct PermissionView {
    name: &'static str,
    meaning: &'static str,
}

fn permissions(json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    if json {
        let views: Vec<PermissionView> = Permission::ALL
            .into_iter()
            .map(|p| PermissionView {
                name: p.name(),
                meaning: meaning(p),
            })
            .collect();
        return render::json(out, &views);
    }
    let rows: Vec<[String; 2]> = Permission::ALL
        .into_iter()
        .map(|p| [p.name().to_owned(), meaning(p).to_owned()])
        .collect();
    write_table(out, ["PERMISSION", "ALLOWS"], &rows)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_store::{self, requests};
    use portcullis_protocol::store::{Request, Response, StoreError};

    fn store_answer(request: &Request) -> Result<Response, StoreError> {
        let built_in = |role: BuiltInRole| RoleRecord {
            id: role.id(),
            org: None,
            name: role.name().into(),
            permissions: role.default_permissions(),
        };
        match request {
            Request::ListRoles { org } => Ok(Response::Roles(vec![
                built_in(BuiltInRole::Admin),
                built_in(BuiltInRole::User),
                RoleRecord {
                    id: RoleId(100),
                    org: Some(*org),
                    name: "Viewer".into(),
                    permissions: Permissions::NONE.with(Permission::UsersView),
                },
            ])),
            Request::CreateRole {
                org,
                name,
                permissions,
            } => Ok(Response::Role(RoleRecord {
                id: RoleId(101),
                org: Some(*org),
                name: name.clone(),
                permissions: *permissions,
            })),
            Request::UpdateRole {
                role,
                name,
                permissions,
            } => Ok(Response::Role(RoleRecord {
                id: *role,
                org: Some(OrgId(2)),
                name: name.clone().unwrap_or_else(|| "Viewer".into()),
                permissions: permissions.unwrap_or_default(),
            })),
            Request::DeleteRole { role } if role.0 >= 100 => Ok(Response::Done),
            Request::DeleteRole { role } => Err(StoreError::Invalid(format!(
                "built-in role {} cannot be deleted",
                role.0
            ))),
            other => Err(StoreError::Invalid(format!("unexpected {other:?}"))),
        }
    }

    fn run(
        client: &mut portcullis_store_client::StoreClient,
        command: RoleCommand,
        json: bool,
    ) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        execute(client, command, json, &mut out)?;
        Ok(out)
    }

    #[test]
    fn permission_lists_parse_by_stable_name() {
        let parsed = parse_permission_list("users.view, devices.create").expect("parses");
        assert_eq!(
            parsed,
            Permissions::NONE
                .with(Permission::UsersView)
                .with(Permission::DevicesCreate)
        );
        assert_eq!(parse_permission_list("none"), Ok(Permissions::NONE));
        let err = parse_permission_list("users.view,users.fly").expect_err("unknown");
        assert!(
            err.contains("users.fly") && err.contains("role permissions"),
            "{err}"
        );
        assert!(parse_permission_list("users.view,,roles.view").is_err());
        assert!(parse_permission_list("").is_err());
        for permission in Permission::ALL {
            assert_eq!(
                parse_permission_list(permission.name()),
                Ok(Permissions::NONE.with(permission))
            );
            assert!(!meaning(permission).is_empty());
        }
    }

    #[test]
    fn list_shows_built_in_and_custom_roles_with_permission_names() {
        let (_dir, mut client, seen) = test_store::store(store_answer);
        let list = || RoleCommand::List { org: OrgId(2) };
        let text = test_store::text(run(&mut client, list(), false).expect("lists"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(
            lines[1].contains("Admin")
                && lines[1].contains("built-in")
                && lines[1].ends_with("all"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("own_devices.view, own_devices.control"),
            "{text}"
        );
        assert!(
            lines[3].contains("custom (org 2)") && lines[3].ends_with("users.view"),
            "{text}"
        );
        let listed = test_store::json(run(&mut client, list(), true).expect("lists"));
        assert_eq!(
            listed[2],
            serde_json::json!({"id": 100, "name": "Viewer", "org": 2, "built_in": false, "permissions": ["users.view"]})
        );
        assert_eq!(listed[0]["built_in"], true);
        assert_eq!(
            requests(&seen),
            [
                Request::ListRoles { org: OrgId(2) },
                Request::ListRoles { org: OrgId(2) }
            ]
        );
    }

    #[test]
    fn create_update_and_delete_send_the_parsed_permissions() {
        let (_dir, mut client, seen) = test_store::store(store_answer);
        let permissions = parse_permission_list("roles.view,audit_log.view").expect("parses");
        let create = RoleCommand::Create {
            org: OrgId(2),
            name: "Auditor".into(),
            permissions,
        };
        let created = test_store::json(run(&mut client, create, true).expect("creates"));
        assert_eq!(
            created,
            serde_json::json!({"id": 101, "name": "Auditor", "org": 2, "built_in": false, "permissions": ["roles.view", "audit_log.view"]})
        );
        let update = RoleCommand::Update {
            id: RoleId(101),
            name: None,
            permissions: Some(Permissions::NONE),
        };
        let text = test_store::text(run(&mut client, update, false).expect("updates"));
        assert_eq!(text, "Updated role 101 \"Viewer\": -.\n");
        let text = test_store::text(
            run(&mut client, RoleCommand::Delete { id: RoleId(101) }, false).expect("deletes"),
        );
        assert_eq!(text, "Deleted role 101.\n");
        let err =
            run(&mut client, RoleCommand::Delete { id: RoleId(1) }, false).expect_err("built-in");
        assert!(format!("{err:#}").contains("cannot be deleted"), "{err:#}");
        assert_eq!(
            requests(&seen),
            [
                Request::CreateRole {
                    org: OrgId(2),
                    name: "Auditor".into(),
                    permissions
                },
                Request::UpdateRole {
                    role: RoleId(101),
                    name: None,
                    permissions: Some(Permissions::NONE)
                },
                Request::DeleteRole { role: RoleId(101) },
                Request::DeleteRole { role: RoleId(1) },
            ]
        );
    }

    #[test]
    fn permissions_lists_every_name_with_its_meaning() {
        let mut out = Vec::new();
        permissions(true, &mut out).expect("lists");
        let listed = test_store::json(out);
        assert_eq!(listed.as_array().map(Vec::len), Some(Permission::ALL.len()));
        assert_eq!(listed[4]["name"], "users.view");
        let mut out = Vec::new();
        permissions(false, &mut out).expect("lists");
        let text = test_store::text(out);
        assert!(
            text.contains("devices.edit_token") && text.contains("re-provision"),
            "{text}"
        );
    }
}
