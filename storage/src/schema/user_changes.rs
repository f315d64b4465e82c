//! Changing and deleting users: `UpdateUser` (name, role, status, password) and `DeleteUser`.
//!
//! Beyond the permissions `Request::needs` names, the store's own rules:
//!
//! - nobody changes their own role or status (`NotPermitted`);
//! - a role given must be assignable to the user's organization and grantable by the actor
//!   (so a Staff member cannot make anyone an Admin);
//! - the role, status or existence of a user whose current role carries more than the actor
//!   holds is not the actor's to change (a Staff member cannot suspend, demote or delete an
//!   Admin);
//! - only `Active` and `Suspended` are set this way; suspension and a new password revoke every
//!   session of the user in the same write;
//! - deleting a user deletes their sessions, one-time tokens and API keys, and the devices they
//!   owned keep no owner, all in one write.

use super::acting::{Who, permissions_of_role};
use super::apikeys::keys_of_org;
use super::audit;
use super::devices::org_device_ids;
use super::group::{Change, View};
use super::records::{StoredStatus, StoredUser, encode};
use super::roles::assignable;
use super::sessions::{delete_tokens, revoke_all};
use super::users::{check_phc, load_user};
use super::{MAX_NAME_LEN, Result, SchemaError, check_text, devices, keys, synced};
use crate::engine::Cf;
use portcullis_protocol::authz::{OrgId, RoleId, UserId};
use portcullis_protocol::store::{Response, UserChange, UserStatus};

/// The actor may act on this user's standing only if they could grant everything the user's
/// role holds.
fn outranks(view: &impl View, who: &Who, user: &StoredUser) -> Result<()> {
    who.grantable(permissions_of_role(view, RoleId(user.role))?)
}

pub(super) fn update_user(
    view: &impl View,
    who: &Who,
    id: UserId,
    change: UserChange,
) -> Result<(Response, Change)> {
    let mut user = load_user(view, id)?;
    let org = OrgId(user.org);
    if (change.role.is_some() || change.status.is_some()) && who.is_user(id) {
        return Err(SchemaError::NotPermitted(
            "a user cannot change their own role or status".into(),
        ));
    }
    let mut out = synced();
    let mut detail = Vec::new();
    let mut revoke = false;
    if let Some(name) = change.name {
        check_text("user name", &name, MAX_NAME_LEN)?;
        detail.push(format!("name {name:?}"));
        user.name = name;
    }
    if let Some(role) = change.role {
        outranks(view, who, &user)?;
        let permissions = assignable(view, who, org, role)?;
        detail.push(format!("role {} ({permissions})", role.0));
        user.role = role.0;
    }
    if let Some(status) = change.status {
        outranks(view, who, &user)?;
        match status {
            UserStatus::Active => {}
            UserStatus::Suspended => revoke = true,
            UserStatus::Invited | UserStatus::Unverified => {
                return Err(SchemaError::Invalid(format!(
                    "a user's status is set to active or suspended, never {}",
                    status.name()
                )));
            }
        }
        detail.push(format!("status {}", status.name()));
        user.status = StoredStatus::from(status);
    }
    if let Some(phc) = change.password_phc {
        check_phc(&phc)?;
        detail.push("password changed".into());
        user.password_phc = Some(phc);
        revoke = true;
    }
    if revoke {
        let revoked = revoke_all(view, &mut out, id, who.now)?;
        detail.push(format!("{revoked} session(s) revoked"));
    }
    out.batch.put(Cf::Users, keys::user(id), encode(&user)?);
    audit::record(
        view,
        &mut out,
        who,
        org,
        format!("user {}", id.0),
        detail.join(", "),
    )?;
    Ok((Response::User(Some(user.to_wire(id))), out))
}

pub(super) fn delete_user(view: &impl View, who: &Who, id: UserId) -> Result<(Response, Change)> {
    let user = load_user(view, id)?;
    if who.is_user(id) {
        return Err(SchemaError::NotPermitted(
            "a user cannot delete themselves".into(),
        ));
    }
    outranks(view, who, &user)?;
    let org = OrgId(user.org);
    let mut change = synced();
    change.batch.delete(Cf::Users, keys::user(id));
    change
        .batch
        .delete(Cf::UserEmails, keys::email(&user.email).to_vec());
    change.batch.delete(
        Cf::OrgIndex,
        keys::org_index(org, keys::ORG_USER, &keys::user(id)),
    );
    let sessions = revoke_all(view, &mut change, id, who.now)?;
    delete_tokens(view, &mut change, id)?;
    let mut keys_deleted = 0;
    for (key_id, key) in keys_of_org(view, org)? {
        if key.creator == id.0 {
            change.batch.delete(Cf::ApiKeys, keys::api_key(key_id));
            change.batch.delete(
                Cf::OrgIndex,
                keys::org_index(org, keys::ORG_KEY, &keys::api_key(key_id)),
            );
            keys_deleted += 1;
        }
    }
    // A device's owner is a user of the device's organization, so the user's own organization
    // holds every device they own.
    let mut disowned = 0;
    for device in org_device_ids(view, org)? {
        let Some(mut record) = devices::find_device(view, device)? else {
            continue;
        };
        if record.owner == Some(id.0) {
            record.owner = None;
            change
                .batch
                .put(Cf::Devices, keys::device(device), encode(&record)?);
            disowned += 1;
        }
    }
    audit::record(
        view,
        &mut change,
        who,
        org,
        format!("user {}", id.0),
        format!(
            "email {}; {sessions} session(s), {keys_deleted} API key(s) deleted, {disowned} device(s) left without owner",
            user.email
        ),
    )?;
    Ok((Response::Done, change))
}
