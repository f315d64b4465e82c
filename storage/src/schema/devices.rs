//! Devices: the records (`devices/<id>`), their token index, and the `org_index` entries `d`
//! and `template_devices` entries that say which organization holds a device and which
//! template it uses, all written in the same batch as the record. Finding a device through a
//! [`View`] (committed data or a group in the making), listing devices (every one, or those of
//! an organization or subtree the actor may see), the management requests (create,
//! re-provision, delete, transfer) and the device-side writes that edit one device (info,
//! properties), each returning the [`Change`] it wants committed. Presence, which also edits a
//! device, is `presence.rs`.
//!
//! Listing an organization's devices reads its `org_index` entries (a range scan from the
//! page's start) and then each device record: the cost follows the devices of the
//! organizations in scope, not the fleet; with a subtree the organizations' entries are merged
//! in id order chunk by chunk. An actor who sees only their own devices still reads every
//! device of the scope up to the end of the page (owners are not indexed).

use super::acting::{Target, Who, require, visible};
use super::audit;
use super::group::{Change, View};
use super::orgs::{self, load_path, subtree};
use super::records::{StoredDevice, StoredInfo, StoredValue, decode, encode};
use super::templates::{load_template, usable};
use super::users::find_user;
use super::{
    LIST_PAGE_BYTES, LIST_SCAN_CHUNK, MAX_NAME_LEN, MAX_PROPERTY_NAME_LEN, Result, SchemaError,
    check_info, check_text, check_value, keys, next_id, revocations, synced,
};
use crate::engine::{Cf, Durability};
use portcullis_protocol::authz::{OrgId, OrgPath, Permission, UserId};
use portcullis_protocol::body::{DeviceInfo, PinAddr, WIDGET_PROPERTIES, is_widget_property};
use portcullis_protocol::store::{
    DeviceAuth, DeviceId, DeviceRecord, DeviceScope, MAX_LIST_PAGE, Response, Revoked, TemplateId,
    TokenHash,
};

pub(super) fn find_device(view: &impl View, id: DeviceId) -> Result<Option<StoredDevice>> {
    let key = keys::device(id);
    view.get(Cf::Devices, &key)?
        .map(|bytes| decode("device", &key, &bytes))
        .transpose()
}

pub(super) fn load_device(view: &impl View, id: DeviceId) -> Result<StoredDevice> {
    find_device(view, id)?.ok_or_else(|| SchemaError::NotFound(format!("device {id}")))
}

pub(super) fn require_device(view: &impl View, id: DeviceId) -> Result<()> {
    match view.get(Cf::Devices, &keys::device(id))? {
        Some(_) => Ok(()),
        None => Err(SchemaError::NotFound(format!("device {id}"))),
    }
}

fn parse_id(key: &[u8]) -> Result<DeviceId> {
    keys::parse_device(key).ok_or_else(|| SchemaError::Corrupt {
        what: "device key",
        key: keys::hex(key),
        reason: "not 8 bytes".into(),
    })
}

/// The ids of the devices of `org`, by id.
pub(super) fn org_device_ids(view: &impl View, org: OrgId) -> Result<Vec<DeviceId>> {
    orgs::members(
        view,
        org,
        keys::ORG_DEVICE,
        "a device id",
        keys::parse_device,
    )
}

/// The first device id a page after `after` may hold (`None`: nothing can follow).
fn page_start(after: Option<DeviceId>) -> Option<DeviceId> {
    match after {
        None => Some(0),
        Some(id) => id.checked_add(1),
    }
}

/// `ListDevices` (see the module's text for the cost).
pub(super) fn list_devices(
    view: &impl View,
    who: &Who,
    after: Option<DeviceId>,
    limit: u32,
    scope: &DeviceScope,
) -> Result<Vec<DeviceRecord>> {
    let limit = limit.min(MAX_LIST_PAGE) as usize;
    let Some(start) = page_start(after) else {
        return Ok(Vec::new());
    };
    match scope {
        DeviceScope::All => list_all(view, start, limit),
        DeviceScope::Org { org, subtree: all } => {
            let orgs = if *all {
                subtree(view, *org)?
            } else {
                vec![*org]
            };
            list_orgs(view, who, &orgs, start, limit)
        }
    }
}

/// Every device from `start`, in id order.
fn list_all(view: &impl View, start: DeviceId, limit: usize) -> Result<Vec<DeviceRecord>> {
    let end = u64::MAX.to_be_bytes();
    let mut out = Vec::new();
    let mut bytes = 0;
    for (key, value) in view.scan(Cf::Devices, &keys::device(start), &end, limit)? {
        let id = parse_id(&key)?;
        let record: StoredDevice = decode("device", &key, &value)?;
        bytes += value.len();
        if bytes > LIST_PAGE_BYTES && !out.is_empty() {
            break;
        }
        out.push(record.to_wire(id)?);
    }
    Ok(out)
}

/// The devices of `orgs` the actor may see, from `start`, in id order: each organization's
/// index entries are read a chunk at a time and merged up to the lowest id where a chunk that
/// may continue stopped, so no id is skipped.
fn list_orgs(
    view: &impl View,
    who: &Who,
    orgs: &[OrgId],
    mut start: DeviceId,
    limit: usize,
) -> Result<Vec<DeviceRecord>> {
    let mut paths = Vec::with_capacity(orgs.len());
    for org in orgs {
        paths.push(load_path(view, *org)?);
    }
    let mut out = Vec::new();
    let mut bytes = 0;
    loop {
        let mut ids = Vec::new();
        let mut horizon = DeviceId::MAX;
        let mut more = false;
        for org in orgs {
            let prefix = keys::org_index_prefix(*org, keys::ORG_DEVICE);
            let from = keys::org_index(*org, keys::ORG_DEVICE, &keys::device(start));
            let chunk = view.scan(
                Cf::OrgIndex,
                &from,
                &keys::prefix_end(&prefix),
                LIST_SCAN_CHUNK,
            )?;
            let got: Vec<DeviceId> = chunk
                .iter()
                .map(|(key, _)| parse_id(keys::org_index_member(key)))
                .collect::<Result<_>>()?;
            if got.len() == LIST_SCAN_CHUNK
                && let Some(last) = got.last()
            {
                horizon = horizon.min(*last);
                more = true;
            }
            ids.extend(got);
        }
        ids.sort_unstable();
        for id in ids.into_iter().filter(|id| *id <= horizon) {
            let Some(record) = find_device(view, id)? else {
                continue;
            };
            let Some(path) = paths.iter().find(|p| p.org().0 == record.org) else {
                continue;
            };
            let target = Target {
                path: path.clone(),
                owner: Some(record.owner.map(UserId)),
                name: format!("device {id}"),
            };
            if !visible(who, &target) {
                continue;
            }
            let wire = record.to_wire(id)?;
            bytes += wire.name.len() + 128;
            if bytes > LIST_PAGE_BYTES && !out.is_empty() {
                return Ok(out);
            }
            out.push(wire);
            if out.len() == limit {
                return Ok(out);
            }
        }
        if !more {
            return Ok(out);
        }
        match horizon.checked_add(1) {
            Some(next) => start = next,
            None => return Ok(out),
        }
    }
}

/// The device behind a device token, if any.
pub(super) fn authenticate(view: &impl View, token_hash: &TokenHash) -> Result<Option<DeviceAuth>> {
    let Some(bytes) = view.get(Cf::TokenIndex, token_hash)? else {
        return Ok(None);
    };
    let corrupt = |reason: String| SchemaError::Corrupt {
        what: "token index",
        key: keys::hex(token_hash),
        reason,
    };
    let id =
        keys::parse_device(&bytes).ok_or_else(|| corrupt("value is not a device id".into()))?;
    let device =
        find_device(view, id)?.ok_or_else(|| corrupt(format!("points at missing device {id}")))?;
    Ok(Some(DeviceAuth {
        device: id,
        org: OrgId(device.org),
        template: device.template_id(id)?,
    }))
}

fn refuse_used_token(
    view: &impl View,
    token_hash: &TokenHash,
    except: Option<DeviceId>,
) -> Result<()> {
    match view.get(Cf::TokenIndex, token_hash)? {
        Some(bytes) if keys::parse_device(&bytes) != except || except.is_none() => Err(
            SchemaError::Invalid("the token hash already belongs to a device".into()),
        ),
        _ => Ok(()),
    }
}

/// Checks that `template` may be used in the organization at `path`: missing, or hidden from
/// the actor, is `NotFound`; visible but of an organization that is not this one or above it
/// is `Invalid`.
fn check_template(view: &impl View, who: &Who, id: &TemplateId, path: &OrgPath) -> Result<()> {
    let template = load_template(view, id)?;
    if usable(view, &template, path)? {
        return Ok(());
    }
    let own = load_path(view, OrgId(template.org))?;
    if !visible(who, &Target::org(own, format!("template {id}"))) {
        return Err(super::templates::not_found(id));
    }
    Err(SchemaError::Invalid(format!(
        "template {id} belongs to org {}, which is not {} or above it",
        template.org,
        path.org()
    )))
}

/// Checks that `owner` is a user of the organization at `path` (missing, or hidden from the
/// actor, is `NotFound`).
fn check_owner(view: &impl View, who: &Who, owner: UserId, path: &OrgPath) -> Result<()> {
    let missing = || SchemaError::NotFound(format!("user {}", owner.0));
    let user = find_user(view, owner)?.ok_or_else(missing)?;
    if user.org == path.org().0 {
        return Ok(());
    }
    let theirs = load_path(view, OrgId(user.org))?;
    if !visible(who, &Target::org(theirs, format!("user {}", owner.0))) {
        return Err(missing());
    }
    Err(SchemaError::Invalid(format!(
        "user {} is not a user of {}; a device's owner is a user of its organization",
        owner.0,
        path.org()
    )))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn create_device(
    view: &impl View,
    who: &Who,
    org: OrgId,
    template: TemplateId,
    owner: Option<UserId>,
    name: String,
    token_hash: TokenHash,
) -> Result<(Response, Change)> {
    check_text("device name", &name, MAX_NAME_LEN)?;
    let path = load_path(view, org)?;
    check_template(view, who, &template, &path)?;
    if let Some(owner) = owner {
        check_owner(view, who, owner, &path)?;
    }
    refuse_used_token(view, &token_hash, None)?;
    let mut change = synced();
    let id = next_id(view, &mut change, keys::NEXT_DEVICE_ID, 1)?;
    let record = StoredDevice {
        org: org.0,
        template: template.as_str().to_owned(),
        owner: owner.map(|u| u.0),
        name,
        token_hash,
        created_ms: who.now,
        sessions: 0,
        last_seen_ms: None,
        last_addr: None,
        info: None,
    };
    change
        .batch
        .put(Cf::Devices, keys::device(id), encode(&record)?);
    change
        .batch
        .put(Cf::TokenIndex, token_hash, keys::device(id));
    change.batch.put(
        Cf::OrgIndex,
        keys::org_index(org, keys::ORG_DEVICE, &keys::device(id)),
        Vec::new(),
    );
    change.batch.put(
        Cf::TemplateDevices,
        keys::template_device(&template, id),
        Vec::new(),
    );
    audit::record(
        view,
        &mut change,
        who,
        org,
        format!("device {id}"),
        format!(
            "name {:?}, template {template}, owner {}",
            record.name,
            owner.map_or_else(|| "none".to_owned(), |u| format!("user {}", u.0))
        ),
    )?;
    tracing::debug!(device = id, org = org.0, %template, "device created");
    Ok((Response::Device(record.to_wire(id)?), change))
}

pub(super) fn reprovision(
    view: &impl View,
    who: &Who,
    id: DeviceId,
    token_hash: TokenHash,
) -> Result<(Response, Change)> {
    let mut record = load_device(view, id)?;
    refuse_used_token(view, &token_hash, Some(id))?;
    let mut change = synced();
    if record.token_hash != token_hash {
        change
            .batch
            .delete(Cf::TokenIndex, record.token_hash.to_vec());
        change
            .batch
            .put(Cf::TokenIndex, token_hash, keys::device(id));
        record.token_hash = token_hash;
        change
            .batch
            .put(Cf::Devices, keys::device(id), encode(&record)?);
    }
    revocations::record(view, &mut change, who.now, Revoked::Device(id))?;
    audit::record(
        view,
        &mut change,
        who,
        OrgId(record.org),
        format!("device {id}"),
        "new token".into(),
    )?;
    Ok((Response::Device(record.to_wire(id)?), change))
}

pub(super) fn delete_device(
    view: &impl View,
    who: &Who,
    id: DeviceId,
) -> Result<(Response, Change)> {
    let record = load_device(view, id)?;
    let org = OrgId(record.org);
    let template = record.template_id(id)?;
    let mut change = synced();
    change.batch.delete(Cf::Devices, keys::device(id));
    change
        .batch
        .delete(Cf::TokenIndex, record.token_hash.to_vec());
    change.batch.delete(
        Cf::OrgIndex,
        keys::org_index(org, keys::ORG_DEVICE, &keys::device(id)),
    );
    change
        .batch
        .delete(Cf::TemplateDevices, keys::template_device(&template, id));
    let (start, end) = keys::device_range(id);
    // Device ids stop below u64::MAX (the counter refuses to pass it), so the range has an end.
    if !end.is_empty() {
        for cf in [Cf::Pins, Cf::Properties, Cf::History] {
            change.batch.delete_range(cf, start.clone(), end.clone());
        }
    }
    // Presence sets of the device (`node_presence/<node>/<id>`) are left to the next reset of
    // their node, which skips devices that are gone.
    revocations::record(view, &mut change, who.now, Revoked::Device(id))?;
    audit::record(
        view,
        &mut change,
        who,
        org,
        format!("device {id}"),
        format!("name {:?}", record.name),
    )?;
    Ok((Response::Done, change))
}

pub(super) fn transfer(
    view: &impl View,
    who: &Who,
    id: DeviceId,
    org: Option<OrgId>,
    owner: Option<Option<UserId>>,
) -> Result<(Response, Change)> {
    let mut record = load_device(view, id)?;
    let old = OrgId(record.org);
    let target = org.unwrap_or(old);
    let path = load_path(view, target)?;
    let template = record.template_id(id)?;
    let mut change = synced();
    let mut detail = Vec::new();
    if target != old {
        // `needs` asked devices.create there; the organization must also be in the actor's own
        // subtree, which that implies for a member (a hidden organization is not found).
        require(
            who,
            Permission::DevicesCreate,
            &Target::org(path.clone(), target.to_string()),
        )?;
        check_template(view, who, &template, &path)?;
        change.batch.delete(
            Cf::OrgIndex,
            keys::org_index(old, keys::ORG_DEVICE, &keys::device(id)),
        );
        change.batch.put(
            Cf::OrgIndex,
            keys::org_index(target, keys::ORG_DEVICE, &keys::device(id)),
            Vec::new(),
        );
        record.org = target.0;
        detail.push(format!("to {target}"));
    }
    let new_owner = owner.unwrap_or(record.owner.map(UserId));
    if let Some(user) = new_owner {
        check_owner(view, who, user, &path)?;
    }
    if owner.is_some() {
        detail.push(format!(
            "owner {}",
            new_owner.map_or_else(|| "none".to_owned(), |u| format!("user {}", u.0))
        ));
    }
    record.owner = new_owner.map(|u| u.0);
    change
        .batch
        .put(Cf::Devices, keys::device(id), encode(&record)?);
    audit::record(
        view,
        &mut change,
        who,
        old,
        format!("device {id}"),
        detail.join(", "),
    )?;
    Ok((Response::Device(record.to_wire(id)?), change))
}

pub(super) fn write_property(
    view: &impl View,
    device: DeviceId,
    pin: PinAddr,
    property: &str,
    value: Vec<u8>,
    at_ms: u64,
) -> Result<Change> {
    check_text("property name", property, MAX_PROPERTY_NAME_LEN)?;
    if !is_widget_property(property.as_bytes()) {
        return Err(SchemaError::Invalid(format!(
            "unknown widget property {property:?}; known: {}",
            WIDGET_PROPERTIES.join(", ")
        )));
    }
    check_value(&format!("property {property} of pin {pin}"), &value)?;
    require_device(view, device)?;
    let mut change = synced();
    change.batch.put(
        Cf::Properties,
        keys::property(device, pin, property),
        encode(&StoredValue { value, at_ms })?,
    );
    Ok(change)
}

/// Loads a device (as the group sees it), lets `edit` change it, and writes it back synced.
pub(super) fn update_device(
    view: &impl View,
    id: DeviceId,
    edit: impl FnOnce(&mut StoredDevice),
) -> Result<Change> {
    let mut record = load_device(view, id)?;
    edit(&mut record);
    let mut change = Change::new(Durability::Sync);
    change
        .batch
        .put(Cf::Devices, keys::device(id), encode(&record)?);
    Ok(change)
}

pub(super) fn set_info(
    view: &impl View,
    device: DeviceId,
    info: DeviceInfo,
    at_ms: u64,
) -> Result<Change> {
    check_info(&info)?;
    update_device(view, device, |d| {
        d.info = Some(StoredInfo::from(info));
        d.last_seen_ms = Some(at_ms);
    })
}
