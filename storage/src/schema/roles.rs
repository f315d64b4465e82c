//! Roles: the built-in ones (Admin, Staff, User: ids 1–3, fixed permissions from
//! `authz::BuiltInRole`, never stored) and the custom roles of one organization each (`roles`
//! records with ids from `RoleId::FIRST_CUSTOM`, listed by the `org_index` entries `r`).
//!
//! A user holds a built-in role or a custom role of their own organization ([`assignable`]).
//! Nobody grants what they do not hold: creating or changing a role, or giving one to a user,
//! needs every permission it carries (`Who::grantable`); and a role that already carries more
//! than the actor holds is not theirs to change. Built-in roles are never changed or deleted; a
//! custom role only when nobody holds it.

use super::acting::{Target, Who, visible};
use super::audit;
use super::group::{Change, View};
use super::orgs::load_path;
use super::records::{StoredPermissions, StoredRole, StoredUser, decode, encode};
use super::{MAX_NAME_LEN, Result, SchemaError, check_text, keys, next_id, orgs, synced};
use crate::engine::Cf;
use portcullis_protocol::authz::{BuiltInRole, OrgId, Permissions, RoleId};
use portcullis_protocol::store::{Response, RoleRecord};

pub(super) fn find_role(view: &impl View, id: RoleId) -> Result<Option<StoredRole>> {
    let key = keys::role(id);
    view.get(Cf::Roles, &key)?
        .map(|bytes| decode("role", &key, &bytes))
        .transpose()
}

fn not_found(id: RoleId) -> SchemaError {
    SchemaError::NotFound(format!("role {}", id.0))
}

/// A custom role's permissions (none when it is gone).
pub(super) fn role_permissions(view: &impl View, id: RoleId) -> Result<Permissions> {
    match find_role(view, id)? {
        Some(role) => role.permissions.to_set(),
        None => Ok(Permissions::NONE),
    }
}

fn builtin_record(role: BuiltInRole) -> RoleRecord {
    RoleRecord {
        id: role.id(),
        org: None,
        name: role.name().to_owned(),
        permissions: role.default_permissions(),
    }
}

fn custom_record(id: RoleId, role: &StoredRole) -> Result<RoleRecord> {
    Ok(RoleRecord {
        id,
        org: Some(OrgId(role.org)),
        name: role.name.clone(),
        permissions: role.permissions.to_set()?,
    })
}

/// The custom roles of `org`, by id.
fn custom_roles(view: &impl View, org: OrgId) -> Result<Vec<(RoleId, StoredRole)>> {
    let ids = orgs::members(view, org, keys::ORG_ROLE, "a role id", |member| {
        <[u8; 4]>::try_from(member)
            .ok()
            .map(u32::from_be_bytes)
            .map(RoleId)
    })?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(role) = find_role(view, id)? {
            out.push((id, role));
        }
    }
    Ok(out)
}

pub(super) fn list_roles(view: &impl View, org: OrgId) -> Result<Response> {
    let mut out: Vec<RoleRecord> = BuiltInRole::ALL.into_iter().map(builtin_record).collect();
    for (id, role) in custom_roles(view, org)? {
        out.push(custom_record(id, &role)?);
    }
    Ok(Response::Roles(out))
}

/// Whether a user of `org` may be given `role` by the actor: a built-in role, or a custom role
/// of `org`, whose permissions the actor may grant. Returns those permissions.
pub(super) fn assignable(
    view: &impl View,
    who: &Who,
    org: OrgId,
    role: RoleId,
) -> Result<Permissions> {
    let permissions = match BuiltInRole::from_id(role) {
        Some(builtin) => builtin.default_permissions(),
        None => {
            let record = find_role(view, role)?.ok_or_else(|| not_found(role))?;
            if record.org != org.0 {
                // A role of an organization the actor cannot see reads like one that does not
                // exist: the refusal below would name it and its organization.
                let path = load_path(view, OrgId(record.org))?;
                if !visible(who, &Target::org(path, String::new())) {
                    return Err(not_found(role));
                }
                return Err(SchemaError::Invalid(format!(
                    "role {} is a role of org {}, not of {org}: a user holds a built-in role or one of their own organization",
                    role.0, record.org
                )));
            }
            record.permissions.to_set()?
        }
    };
    who.grantable(permissions)?;
    Ok(permissions)
}

fn check_name(view: &impl View, org: OrgId, name: &str, except: Option<RoleId>) -> Result<()> {
    check_text("role name", name, MAX_NAME_LEN)?;
    let taken = |other: &str| other.eq_ignore_ascii_case(name);
    if BuiltInRole::ALL.into_iter().any(|r| taken(r.name())) {
        return Err(SchemaError::Invalid(format!(
            "{name:?} is the name of a built-in role"
        )));
    }
    if custom_roles(view, org)?
        .iter()
        .any(|(id, role)| Some(*id) != except && taken(&role.name))
    {
        return Err(SchemaError::Invalid(format!(
            "{org} already has a role named {name:?}"
        )));
    }
    Ok(())
}

pub(super) fn create_role(
    view: &impl View,
    who: &Who,
    org: OrgId,
    name: String,
    permissions: Permissions,
) -> Result<(Response, Change)> {
    load_path(view, org)?;
    who.grantable(permissions)?;
    check_name(view, org, &name, None)?;
    let mut change = synced();
    let raw = next_id(
        view,
        &mut change,
        keys::NEXT_ROLE_ID,
        u64::from(RoleId::FIRST_CUSTOM.0),
    )?;
    let id = RoleId(
        u32::try_from(raw).map_err(|_| SchemaError::Internal("role ids are exhausted".into()))?,
    );
    let role = StoredRole {
        org: org.0,
        name,
        permissions: StoredPermissions::of(permissions),
    };
    change.batch.put(Cf::Roles, keys::role(id), encode(&role)?);
    change.batch.put(
        Cf::OrgIndex,
        keys::org_index(org, keys::ORG_ROLE, &keys::role(id)),
        Vec::new(),
    );
    audit::record(
        view,
        &mut change,
        who,
        org,
        format!("role {}", id.0),
        format!("name {:?}, permissions {permissions}", role.name),
    )?;
    Ok((Response::Role(custom_record(id, &role)?), change))
}

fn builtin_refusal(role: BuiltInRole, what: &str) -> SchemaError {
    SchemaError::Invalid(format!(
        "{} is a built-in role; built-in roles are never {what}",
        role.name()
    ))
}

pub(super) fn update_role(
    view: &impl View,
    who: &Who,
    id: RoleId,
    name: Option<String>,
    permissions: Option<Permissions>,
) -> Result<(Response, Change)> {
    if let Some(builtin) = BuiltInRole::from_id(id) {
        return Err(builtin_refusal(builtin, "changed"));
    }
    let mut role = find_role(view, id)?.ok_or_else(|| not_found(id))?;
    let org = OrgId(role.org);
    // A role carrying more than the actor holds is not theirs to change, not even its name.
    who.grantable(role.permissions.to_set()?)?;
    let mut detail = Vec::new();
    if let Some(name) = name {
        check_name(view, org, &name, Some(id))?;
        detail.push(format!("name {name:?}"));
        role.name = name;
    }
    if let Some(permissions) = permissions {
        who.grantable(permissions)?;
        detail.push(format!("permissions {permissions}"));
        role.permissions = StoredPermissions::of(permissions);
    }
    let mut change = synced();
    change.batch.put(Cf::Roles, keys::role(id), encode(&role)?);
    audit::record(
        view,
        &mut change,
        who,
        org,
        format!("role {}", id.0),
        detail.join(", "),
    )?;
    Ok((Response::Role(custom_record(id, &role)?), change))
}

pub(super) fn delete_role(view: &impl View, who: &Who, id: RoleId) -> Result<(Response, Change)> {
    if let Some(builtin) = BuiltInRole::from_id(id) {
        return Err(builtin_refusal(builtin, "deleted"));
    }
    let role = find_role(view, id)?.ok_or_else(|| not_found(id))?;
    let org = OrgId(role.org);
    // Nor to delete.
    who.grantable(role.permissions.to_set()?)?;
    let holders = users_of(view, org)?
        .into_iter()
        .filter(|u| u.role == id.0)
        .count();
    if holders > 0 {
        return Err(SchemaError::Invalid(format!(
            "role {} is held by {holders} user(s); give them another role first",
            id.0
        )));
    }
    let mut change = synced();
    change.batch.delete(Cf::Roles, keys::role(id));
    change.batch.delete(
        Cf::OrgIndex,
        keys::org_index(org, keys::ORG_ROLE, &keys::role(id)),
    );
    audit::record(
        view,
        &mut change,
        who,
        org,
        format!("role {}", id.0),
        format!("name {:?}", role.name),
    )?;
    Ok((Response::Done, change))
}

fn users_of(view: &impl View, org: OrgId) -> Result<Vec<StoredUser>> {
    super::users::org_users(view, org, None, usize::MAX)
        .map(|users| users.into_iter().map(|(_, user)| user).collect())
}
