//! API keys: `api_keys` records by id (the secret only as its SHA-256), listed per
//! organization by the `org_index` entries `k`.
//!
//! A key belongs to the user who made it and acts as them, in their organization, with the
//! key's permissions cut to what the creator's role holds at each use (`acting`). Creating one
//! grants nothing new: its permissions must be grantable by the actor, and when a key makes a
//! key, the actor's permissions are already that key's, so a key never mints a broader one.
//!
//! `UseApiKey` (acting for nobody: the gateway's check of a presented key) goes through the
//! write path so it can touch `last_used_ms`, at most once per `API_KEY_TOUCH_INTERVAL_MS`
//! and with buffered durability (a lost touch after a machine crash is harmless); otherwise it
//! writes nothing.

use super::acting::Who;
use super::audit;
use super::group::{Change, View};
use super::records::{StoredApiKey, StoredPermissions, decode, encode};
use super::users::{find_user, member_of};
use super::{MAX_NAME_LEN, Result, SchemaError, check_text, keys, next_id, orgs, synced};
use crate::engine::{Cf, Durability};
use portcullis_protocol::authz::{OrgId, Permissions, UserId};
use portcullis_protocol::store::{
    API_KEY_TOUCH_INTERVAL_MS, ApiKeyId, KeySubject, Response, SecretHash,
};

pub(super) fn find_key(view: &impl View, id: ApiKeyId) -> Result<Option<StoredApiKey>> {
    let key = keys::api_key(id);
    view.get(Cf::ApiKeys, &key)?
        .map(|bytes| decode("API key", &key, &bytes))
        .transpose()
}

fn not_found(id: ApiKeyId) -> SchemaError {
    SchemaError::NotFound(id.to_string())
}

/// The keys of `org`, by id.
pub(super) fn keys_of_org(view: &impl View, org: OrgId) -> Result<Vec<(ApiKeyId, StoredApiKey)>> {
    let ids = orgs::members(view, org, keys::ORG_KEY, "a key id", |member| {
        <[u8; 8]>::try_from(member)
            .ok()
            .map(u64::from_be_bytes)
            .map(ApiKeyId)
    })?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(record) = find_key(view, id)? {
            out.push((id, record));
        }
    }
    Ok(out)
}

pub(super) fn create(
    view: &impl View,
    who: &Who,
    name: String,
    permissions: Permissions,
    secret_hash: SecretHash,
    expires_ms: Option<u64>,
) -> Result<(Response, Change)> {
    let Some(member) = who.member() else {
        return Err(SchemaError::Invalid(
            "an API key acts as the user who made it; the operator has no keys".into(),
        ));
    };
    check_text("API key name", &name, MAX_NAME_LEN)?;
    who.grantable(permissions)?;
    if expires_ms.is_some_and(|at| at <= who.now) {
        return Err(SchemaError::Invalid(
            "the key would expire before it is made".into(),
        ));
    }
    let org = member.org.org();
    let mut change = synced();
    let id = ApiKeyId(next_id(view, &mut change, keys::NEXT_KEY_ID, 1)?);
    let record = StoredApiKey {
        name,
        creator: member.user.0,
        org: org.0,
        permissions: StoredPermissions::of(permissions),
        secret_hash,
        created_ms: who.now,
        expires_ms,
        last_used_ms: None,
        revoked: false,
    };
    change
        .batch
        .put(Cf::ApiKeys, keys::api_key(id), encode(&record)?);
    change.batch.put(
        Cf::OrgIndex,
        keys::org_index(org, keys::ORG_KEY, &keys::api_key(id)),
        Vec::new(),
    );
    audit::record(
        view,
        &mut change,
        who,
        org,
        id.to_string(),
        format!("name {:?}, permissions {permissions}", record.name),
    )?;
    Ok((Response::ApiKey(record.to_wire(id)?), change))
}

/// Compares two hashes without an early exit.
fn same(a: &SecretHash, b: &SecretHash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn use_key(
    view: &impl View,
    id: ApiKeyId,
    secret_hash: SecretHash,
    now: u64,
) -> Result<(Response, Change)> {
    let nothing = || Ok((Response::KeyUse(None), Change::new(Durability::Buffered)));
    let Some(mut record) = find_key(view, id)? else {
        return nothing();
    };
    if !same(&record.secret_hash, &secret_hash)
        || record.revoked
        || record.expires_ms.is_some_and(|at| at <= now)
    {
        return nothing();
    }
    let creator = UserId(record.creator);
    let Some(user) = find_user(view, creator)?.filter(|u| u.active()) else {
        return nothing();
    };
    let mut member = member_of(view, creator, &user)?;
    member.permissions = record
        .permissions
        .to_set()?
        .intersection(member.permissions);
    let mut change = Change::new(Durability::Buffered);
    if record
        .last_used_ms
        .is_none_or(|at| now.saturating_sub(at) >= API_KEY_TOUCH_INTERVAL_MS)
    {
        record.last_used_ms = Some(now);
        change
            .batch
            .put(Cf::ApiKeys, keys::api_key(id), encode(&record)?);
    }
    let key = record.to_wire(id)?;
    Ok((
        Response::KeyUse(Some(Box::new(KeySubject { key, member }))),
        change,
    ))
}

pub(super) fn list(view: &impl View, org: OrgId) -> Result<Response> {
    keys_of_org(view, org)?
        .into_iter()
        .map(|(id, record)| record.to_wire(id))
        .collect::<Result<_>>()
        .map(Response::ApiKeys)
}

pub(super) fn revoke(view: &impl View, who: &Who, id: ApiKeyId) -> Result<(Response, Change)> {
    let mut record = find_key(view, id)?.ok_or_else(|| not_found(id))?;
    let mut change = synced();
    let detail = if record.revoked {
        "already revoked".to_owned()
    } else {
        record.revoked = true;
        change
            .batch
            .put(Cf::ApiKeys, keys::api_key(id), encode(&record)?);
        format!("name {:?}", record.name)
    };
    audit::record(
        view,
        &mut change,
        who,
        OrgId(record.org),
        id.to_string(),
        detail,
    )?;
    Ok((Response::Done, change))
}
