//! Organizations: the tree under the root (`orgs` records, each naming its parent, and the
//! `org_index` entries `c` naming each organization's children). A path ([`org_path`]) is read
//! by walking parents up to the root, at most `MAX_ORG_DEPTH` point reads; a subtree
//! ([`subtree`]) by walking the child entries down. The requests: `CreateOrg`, `GetOrg`,
//! `ListOrgs` (the organization and the descendants the actor may see) and `UpdateOrg` (rename,
//! move: never below itself, never past the depth limit; everything that refers to an
//! organization holds its id, so nothing else is rewritten).

use super::acting::{Target, Who, visible};
use super::audit;
use super::group::{Change, View};
use super::records::{StoredOrg, decode, encode};
use super::{MAX_NAME_LEN, Result, SchemaError, check_text, keys, next_id, synced};
use crate::engine::{Cf, WriteBatch};
use portcullis_protocol::authz::{MAX_ORG_DEPTH, OrgId, OrgPath};
use portcullis_protocol::store::{OrgRecord, Response};

/// The root organization's name in a fresh (or migrated) store.
pub const ROOT_NAME: &str = "root";

pub(super) fn find_org(view: &impl View, id: OrgId) -> Result<Option<StoredOrg>> {
    let key = keys::org(id);
    view.get(Cf::Orgs, &key)?
        .map(|bytes| decode("organization", &key, &bytes))
        .transpose()
}

fn not_found(id: OrgId) -> SchemaError {
    SchemaError::NotFound(id.to_string())
}

fn corrupt(id: OrgId, reason: String) -> SchemaError {
    SchemaError::Corrupt {
        what: "organization",
        key: keys::hex(&keys::org(id)),
        reason,
    }
}

/// The path from the root down to `id`; `None` when there is no such organization.
pub(super) fn org_path(view: &impl View, id: OrgId) -> Result<Option<OrgPath>> {
    let mut ids = Vec::new();
    let mut next = Some(id);
    while let Some(current) = next {
        if ids.len() >= MAX_ORG_DEPTH {
            return Err(corrupt(
                id,
                "deeper than the depth limit, or a cycle".into(),
            ));
        }
        let Some(org) = find_org(view, current)? else {
            return if ids.is_empty() {
                Ok(None)
            } else {
                Err(corrupt(
                    current,
                    format!("parent of org {} is missing", id.0),
                ))
            };
        };
        ids.push(current);
        next = org.parent.map(OrgId);
    }
    ids.reverse();
    OrgPath::new(ids)
        .map(Some)
        .map_err(|e| corrupt(id, e.to_string()))
}

/// The path of `id`, or `NotFound("org N")`.
pub(super) fn load_path(view: &impl View, id: OrgId) -> Result<OrgPath> {
    org_path(view, id)?.ok_or_else(|| not_found(id))
}

fn record(id: OrgId, org: StoredOrg, path: OrgPath) -> OrgRecord {
    OrgRecord {
        id,
        parent: org.parent.map(OrgId),
        name: org.name,
        path,
        created_ms: org.created_ms,
    }
}

pub(super) fn org_record(view: &impl View, id: OrgId) -> Result<OrgRecord> {
    let org = find_org(view, id)?.ok_or_else(|| not_found(id))?;
    let path = load_path(view, id)?;
    Ok(record(id, org, path))
}

/// The members of one `kind` (`keys::ORG_CHILD`, `ORG_DEVICE`, …) of `org`'s index, in key
/// order, each read by `parse`; an entry `parse` cannot read is corrupt (`what` names what it
/// should have been, e.g. "a role id").
pub(super) fn members<T>(
    view: &impl View,
    org: OrgId,
    kind: u8,
    what: &'static str,
    parse: impl Fn(&[u8]) -> Option<T>,
) -> Result<Vec<T>> {
    let prefix = keys::org_index_prefix(org, kind);
    view.scan_prefix(Cf::OrgIndex, &prefix, usize::MAX)?
        .into_iter()
        .map(|(key, _)| {
            parse(keys::org_index_member(&key)).ok_or_else(|| SchemaError::Corrupt {
                what: "org index",
                key: keys::hex(&key),
                reason: format!("not {what}"),
            })
        })
        .collect()
}

/// The direct children of `id`, by id.
pub(super) fn children(view: &impl View, id: OrgId) -> Result<Vec<OrgId>> {
    members(view, id, keys::ORG_CHILD, "an org id", keys::parse_org)
}

/// `id` and every organization below it, by id.
pub(super) fn subtree(view: &impl View, id: OrgId) -> Result<Vec<OrgId>> {
    let mut out = vec![id];
    let mut level = vec![id];
    for _ in 1..MAX_ORG_DEPTH {
        let mut next = Vec::new();
        for org in level {
            next.extend(children(view, org)?);
        }
        if next.is_empty() {
            break;
        }
        out.extend(&next);
        level = next;
    }
    out.sort_unstable();
    Ok(out)
}

/// How many levels the subtree of `id` spans (1: no children).
fn height(view: &impl View, id: OrgId) -> Result<usize> {
    let mut levels = 1;
    let mut level = vec![id];
    loop {
        let mut next = Vec::new();
        for org in level {
            next.extend(children(view, org)?);
        }
        if next.is_empty() {
            return Ok(levels);
        }
        levels += 1;
        if levels > MAX_ORG_DEPTH {
            return Err(corrupt(
                id,
                "its subtree is deeper than the depth limit".into(),
            ));
        }
        level = next;
    }
}

/// Writes the root organization (a fresh store, a migration).
pub(super) fn put_root(batch: &mut WriteBatch, now: u64) -> Result<()> {
    let root = StoredOrg {
        parent: None,
        name: ROOT_NAME.into(),
        created_ms: now,
    };
    batch.put(Cf::Orgs, keys::org(OrgId::ROOT), encode(&root)?);
    Ok(())
}

/// Adds organization `name` below `parent` (whose path is `parent_path`) to `change`.
pub(super) fn insert_org(
    view: &impl View,
    change: &mut Change,
    parent_path: &OrgPath,
    name: String,
    now: u64,
) -> Result<OrgRecord> {
    check_text("organization name", &name, MAX_NAME_LEN)?;
    let raw = next_id(view, change, keys::NEXT_ORG_ID, 2)?;
    let id = OrgId(
        u32::try_from(raw)
            .map_err(|_| SchemaError::Internal("organization ids are exhausted".into()))?,
    );
    let path = parent_path.child(id).map_err(|e| {
        SchemaError::Invalid(format!(
            "an organization below {} would be too deep: {e}",
            parent_path.org()
        ))
    })?;
    let parent = parent_path.org();
    let org = StoredOrg {
        parent: Some(parent.0),
        name,
        created_ms: now,
    };
    change.batch.put(Cf::Orgs, keys::org(id), encode(&org)?);
    change.batch.put(
        Cf::OrgIndex,
        keys::org_index(parent, keys::ORG_CHILD, &keys::org(id)),
        Vec::new(),
    );
    Ok(record(id, org, path))
}

pub(super) fn create_org(
    view: &impl View,
    who: &Who,
    parent: OrgId,
    name: String,
) -> Result<(Response, Change)> {
    let parent_path = load_path(view, parent)?;
    let mut change = synced();
    let org = insert_org(view, &mut change, &parent_path, name, who.now)?;
    audit::record(
        view,
        &mut change,
        who,
        parent,
        org.id.to_string(),
        format!("name {:?}", org.name),
    )?;
    Ok((Response::Org(org), change))
}

pub(super) fn get_org(view: &impl View, org: OrgId) -> Result<Response> {
    org_record(view, org).map(Response::Org)
}

/// `org` and the organizations below it the actor may see, by id.
pub(super) fn list_orgs(view: &impl View, who: &Who, org: OrgId) -> Result<Response> {
    let mut out = Vec::new();
    for id in subtree(view, org)? {
        let record = org_record(view, id)?;
        if visible(who, &Target::org(record.path.clone(), id.to_string())) {
            out.push(record);
        }
    }
    Ok(Response::Orgs(out))
}

pub(super) fn update_org(
    view: &impl View,
    who: &Who,
    id: OrgId,
    name: Option<String>,
    parent: Option<OrgId>,
) -> Result<(Response, Change)> {
    let mut org = find_org(view, id)?.ok_or_else(|| not_found(id))?;
    let mut change = synced();
    let mut detail = Vec::new();
    if let Some(name) = name {
        check_text("organization name", &name, MAX_NAME_LEN)?;
        detail.push(format!("name {name:?}"));
        org.name = name;
    }
    if let Some(parent) = parent {
        let Some(old) = org.parent.map(OrgId) else {
            return Err(SchemaError::Invalid(
                "the root organization has no parent and cannot be moved".into(),
            ));
        };
        let parent_path = load_path(view, parent)?;
        if parent_path.ids().contains(&id) {
            return Err(SchemaError::Invalid(format!(
                "{id} cannot move below itself ({parent} is in its subtree)"
            )));
        }
        let depth = parent_path.depth() + height(view, id)?;
        if depth > MAX_ORG_DEPTH {
            return Err(SchemaError::Invalid(format!(
                "moving {id} below {parent} would make the tree {depth} deep; the limit is {MAX_ORG_DEPTH}"
            )));
        }
        if old != parent {
            change.batch.delete(
                Cf::OrgIndex,
                keys::org_index(old, keys::ORG_CHILD, &keys::org(id)),
            );
            change.batch.put(
                Cf::OrgIndex,
                keys::org_index(parent, keys::ORG_CHILD, &keys::org(id)),
                Vec::new(),
            );
            org.parent = Some(parent.0);
        }
        detail.push(format!("parent {parent}"));
    }
    change.batch.put(Cf::Orgs, keys::org(id), encode(&org)?);
    audit::record(
        view,
        &mut change,
        who,
        id,
        id.to_string(),
        detail.join(", "),
    )?;
    // The path as it will be once this change is written.
    let path = match org.parent.map(OrgId) {
        None => OrgPath::root(),
        Some(parent) => load_path(view, parent)?
            .child(id)
            .map_err(|e| SchemaError::Invalid(e.to_string()))?,
    };
    Ok((Response::Org(record(id, org, path)), change))
}
