//! The format version at open, and the migration from format 1 to format 2.
//!
//! [`prepare`] reads `meta/format_version`: a fresh database (no version, no data) is stamped
//! [`FORMAT_VERSION`] with its root organization; version 1 is migrated; version 2 is ours;
//! anything else (newer, unreadable, or data without a version) is refused with
//! `SchemaError::UnknownFormat`.
//!
//! Format 1 knew organizations and templates only as strings on devices and users, and users
//! only by email. The migration, one synced batch (so a crash leaves version 1 as it was):
//!
//! - each distinct organization string (of devices and users) becomes an organization below the
//!   root with that name, ids from 2 in the strings' order;
//! - each such organization gets one custom role, "Viewer", with `org_devices.view` and
//!   `templates.view`: what a format-1 user could do (see every device of their organization,
//!   change nothing; the devices name their templates, so those may be seen too). Format 1 had
//!   no way to list users, so no `users.view`;
//! - each format-1 user becomes a user of their organization, active, with that Viewer role,
//!   their PHC string, and their email as their name (format 1 had none), ids from 1 in email
//!   order;
//! - each distinct (organization, template string) becomes a template of that organization with
//!   no datastreams: the string stays the id when it is a valid `TemplateId` not yet taken by
//!   another organization's template, otherwise the id is `TMPL` plus 12 hex digits of a SHA-256
//!   of the pair (deterministic), and the old string is kept as the template's name;
//! - devices get their organization's and template's ids and no owner, plus their index entries.
//!
//! Pins, properties, history, presence and the device token index are untouched (their keys
//! and values did not change). The batch holds every device and user record, so its size
//! follows the format-1 store's (fine for the fleets format 1 served; a store of millions of
//! devices would want resumable steps).
//!
//! The `V1` structs are the frozen format-1 encodings: never edit them.

use super::keys;
use super::orgs::{ROOT_NAME, put_root};
use super::records::{
    StoredDevice, StoredInfo, StoredOrg, StoredPermissions, StoredRole, StoredStatus,
    StoredTemplate, StoredUser, decode, encode,
};
use super::{FORMAT_VERSION, Result, SchemaError, now_ms};
use crate::engine::{Cf, Durability, Engine, KeyValue, WriteBatch};
use portcullis_protocol::authz::{OrgId, Permission, Permissions, RoleId, UserId};
use portcullis_protocol::store::TemplateId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The oldest format version this build migrates.
pub const OLDEST_MIGRATED: u32 = 1;

/// The name of the role migrated users get.
pub const VIEWER_ROLE: &str = "Viewer";

/// What the Viewer role of a migrated organization holds.
pub fn viewer_permissions() -> Permissions {
    [Permission::OrgDevicesView, Permission::TemplatesView]
        .into_iter()
        .collect()
}

/// A device of format 1 (`devices/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Device {
    pub org: String,
    pub template: String,
    pub name: String,
    pub token_hash: [u8; 32],
    pub created_ms: u64,
    pub sessions: u32,
    pub last_seen_ms: Option<u64>,
    pub last_addr: Option<String>,
    pub info: Option<V1Info>,
}

/// The device info of format 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Info {
    pub heartbeat_secs: Option<u16>,
    pub buff_in: Option<u16>,
    pub template: Option<String>,
    pub firmware: Option<String>,
    pub lib_version: Option<String>,
    pub device_type: Option<String>,
}

/// A user of format 1 (`users/<normalized email>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1User {
    pub org: String,
    pub password_phc: String,
    pub created_ms: u64,
}

/// Stamps, migrates or refuses the database (see the module's text).
pub(super) fn prepare(engine: &impl Engine) -> Result<()> {
    match engine.get(Cf::Meta, keys::FORMAT_VERSION)? {
        Some(bytes) => {
            let found = <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(u32::from_be_bytes);
            match found {
                Some(FORMAT_VERSION) => Ok(()),
                Some(1) => migrate_v1(engine),
                other => Err(SchemaError::UnknownFormat {
                    found: other.map_or_else(
                        || format!("<unreadable: {}>", keys::hex(&bytes)),
                        |v| v.to_string(),
                    ),
                    supported: FORMAT_VERSION,
                }),
            }
        }
        None => {
            for cf in Cf::ALL {
                if !engine.scan_range(cf, b"", None, 1)?.is_empty() {
                    return Err(SchemaError::UnknownFormat {
                        found: format!("none (but the {} family holds data)", cf.name()),
                        supported: FORMAT_VERSION,
                    });
                }
            }
            let mut batch = WriteBatch::new();
            put_root(&mut batch, now_ms())?;
            batch.put(Cf::Meta, keys::NEXT_ORG_ID, 2u64.to_be_bytes());
            batch.put(Cf::Meta, keys::FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
            engine.write(batch, Durability::Sync)?;
            Ok(())
        }
    }
}

/// Every entry of a family, read in chunks.
fn scan_all(engine: &impl Engine, cf: Cf) -> Result<Vec<KeyValue>> {
    const CHUNK: usize = 4096;
    let mut out: Vec<KeyValue> = Vec::new();
    let mut start = Vec::new();
    loop {
        let page = engine.scan_range(cf, &start, None, CHUNK)?;
        let full = page.len() == CHUNK;
        if let Some((last, _)) = page.last() {
            start = last.clone();
            start.push(0);
        }
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// The id a format-1 template string gets in org `org` (see the module's text).
fn template_id(org: &str, template: &str, taken: &HashSet<String>) -> Result<TemplateId> {
    if let Ok(id) = TemplateId::parse(template)
        && !taken.contains(template)
    {
        return Ok(id);
    }
    for salt in 0u32.. {
        let mut digest = Sha256::new();
        digest.update(org.as_bytes());
        digest.update([0]);
        digest.update(template.as_bytes());
        if salt > 0 {
            digest.update(salt.to_be_bytes());
        }
        let hex = keys::hex(&digest.finalize()[..6]);
        let candidate = format!("TMPL{hex}");
        if !taken.contains(&candidate) {
            return TemplateId::parse(&candidate).map_err(SchemaError::Internal);
        }
    }
    Err(SchemaError::Internal("no free template id".into()))
}

fn migrate_v1(engine: &impl Engine) -> Result<()> {
    let now = now_ms();
    let devices = scan_all(engine, Cf::Devices)?
        .into_iter()
        .map(|(key, value)| {
            let id = keys::parse_device(&key).ok_or_else(|| SchemaError::Corrupt {
                what: "format-1 device key",
                key: keys::hex(&key),
                reason: "not 8 bytes".into(),
            })?;
            Ok((id, decode::<V1Device>("format-1 device", &key, &value)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let users = scan_all(engine, Cf::Users)?
        .into_iter()
        .map(|(key, value)| {
            let email = String::from_utf8(key.clone()).map_err(|_| SchemaError::Corrupt {
                what: "format-1 user key",
                key: keys::hex(&key),
                reason: "not UTF-8".into(),
            })?;
            let user = decode::<V1User>("format-1 user", &key, &value)?;
            Ok((key, email, user))
        })
        .collect::<Result<Vec<_>>>()?;

    let names: BTreeSet<&str> = devices
        .iter()
        .map(|(_, d)| d.org.as_str())
        .chain(users.iter().map(|(_, _, u)| u.org.as_str()))
        .collect();
    let mut batch = WriteBatch::new();
    put_root(&mut batch, now)?;
    let mut orgs: BTreeMap<&str, (OrgId, RoleId)> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let index = u32::try_from(i).map_err(|_| SchemaError::Internal("too many orgs".into()))?;
        let org = OrgId(2 + index);
        let role = RoleId(RoleId::FIRST_CUSTOM.0 + index);
        let record = StoredOrg {
            parent: Some(OrgId::ROOT.0),
            name: (*name).to_owned(),
            created_ms: now,
        };
        batch.put(Cf::Orgs, keys::org(org), encode(&record)?);
        batch.put(
            Cf::OrgIndex,
            keys::org_index(OrgId::ROOT, keys::ORG_CHILD, &keys::org(org)),
            Vec::new(),
        );
        let viewer = StoredRole {
            org: org.0,
            name: VIEWER_ROLE.into(),
            permissions: StoredPermissions::of(viewer_permissions()),
        };
        batch.put(Cf::Roles, keys::role(role), encode(&viewer)?);
        batch.put(
            Cf::OrgIndex,
            keys::org_index(org, keys::ORG_ROLE, &keys::role(role)),
            Vec::new(),
        );
        orgs.insert(name, (org, role));
    }
    let org_of = |name: &str| {
        orgs.get(name)
            .copied()
            .ok_or_else(|| SchemaError::Internal(format!("org {name:?} was not migrated")))
    };

    let pairs: BTreeSet<(&str, &str)> = devices
        .iter()
        .map(|(_, d)| (d.org.as_str(), d.template.as_str()))
        .collect();
    let mut taken = HashSet::new();
    let mut templates: BTreeMap<(&str, &str), TemplateId> = BTreeMap::new();
    let mut renamed = 0usize;
    // Valid ids first, so a valid string keeps its id before a generated one could take it.
    let (valid, other): (Vec<_>, Vec<_>) = pairs
        .iter()
        .partition(|(_, t)| TemplateId::parse(t).is_ok());
    for (org_name, template) in valid.into_iter().chain(other) {
        let id = template_id(org_name, template, &taken)?;
        renamed += usize::from(id.as_str() != template);
        taken.insert(id.as_str().to_owned());
        let (org, _) = org_of(org_name)?;
        let record = StoredTemplate {
            org: org.0,
            name: (*template).to_owned(),
            datastreams: Vec::new(),
            created_ms: now,
        };
        batch.put(
            Cf::Templates,
            keys::template(&id).to_vec(),
            encode(&record)?,
        );
        batch.put(
            Cf::OrgIndex,
            keys::org_index(org, keys::ORG_TEMPLATE, keys::template(&id)),
            Vec::new(),
        );
        templates.insert((org_name, template), id);
    }

    for (id, device) in &devices {
        let (org, _) = org_of(&device.org)?;
        let template = templates
            .get(&(device.org.as_str(), device.template.as_str()))
            .ok_or_else(|| SchemaError::Internal("a template was not migrated".into()))?;
        let record = StoredDevice {
            org: org.0,
            template: template.as_str().to_owned(),
            owner: None,
            name: device.name.clone(),
            token_hash: device.token_hash,
            created_ms: device.created_ms,
            sessions: device.sessions,
            last_seen_ms: device.last_seen_ms,
            last_addr: device.last_addr.clone(),
            info: device.info.clone().map(|i| StoredInfo {
                heartbeat_secs: i.heartbeat_secs,
                buff_in: i.buff_in,
                template: i.template,
                firmware: i.firmware,
                lib_version: i.lib_version,
                device_type: i.device_type,
            }),
        };
        batch.put(Cf::Devices, keys::device(*id), encode(&record)?);
        batch.put(
            Cf::OrgIndex,
            keys::org_index(org, keys::ORG_DEVICE, &keys::device(*id)),
            Vec::new(),
        );
        batch.put(
            Cf::TemplateDevices,
            keys::template_device(template, *id),
            Vec::new(),
        );
    }

    // The email keys go first: the id keys replace them in the same family.
    for (key, _, _) in &users {
        batch.delete(Cf::Users, key.clone());
    }
    for (i, (_, email, user)) in users.iter().enumerate() {
        let id = UserId(i as u64 + 1);
        let (org, role) = org_of(&user.org)?;
        let record = StoredUser {
            email: email.clone(),
            name: email.clone(),
            org: org.0,
            role: role.0,
            status: StoredStatus::Active,
            password_phc: Some(user.password_phc.clone()),
            created_ms: user.created_ms,
        };
        batch.put(Cf::Users, keys::user(id), encode(&record)?);
        batch.put(Cf::UserEmails, keys::email(email).to_vec(), keys::user(id));
        batch.put(
            Cf::OrgIndex,
            keys::org_index(org, keys::ORG_USER, &keys::user(id)),
            Vec::new(),
        );
    }

    let count = |n: usize| n as u64;
    batch.put(
        Cf::Meta,
        keys::NEXT_ORG_ID,
        (2 + count(orgs.len())).to_be_bytes(),
    );
    batch.put(
        Cf::Meta,
        keys::NEXT_ROLE_ID,
        (u64::from(RoleId::FIRST_CUSTOM.0) + count(orgs.len())).to_be_bytes(),
    );
    batch.put(
        Cf::Meta,
        keys::NEXT_USER_ID,
        (1 + count(users.len())).to_be_bytes(),
    );
    batch.put(Cf::Meta, keys::FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
    engine.write(batch, Durability::Sync)?;
    tracing::info!(
        organizations = orgs.len(),
        roles = orgs.len(),
        users = users.len(),
        templates = templates.len(),
        templates_renamed = renamed,
        devices = devices.len(),
        root = ROOT_NAME,
        "migrated the data directory from format 1 to format {FORMAT_VERSION}"
    );
    if renamed > 0 {
        tracing::warn!(
            renamed,
            "some format-1 template strings were not valid template ids and got generated ids (the old string is the template's name); history retention overrides by template apply to the new ids"
        );
    }
    Ok(())
}
