//! The JSON shapes of the REST API's records: what a client sees of an organization, role,
//! user, template, device, API key and audit entry. Never a password hash, token hash or key
//! secret; a new device's token and a new key's secret are added by their one answer only.

use portcullis_protocol::authz::Permissions;
use portcullis_protocol::body::{DeviceInfo, PinAddr};
use portcullis_protocol::store::{
    ApiKeyRecord, AuditEntry, Datastream, DeviceRecord, OrgRecord, RoleRecord, TemplateRecord,
    UserRecord, ValueType,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
pub struct OrgView {
    pub id: u32,
    pub parent: Option<u32>,
    pub name: String,
    /// Ids from the root down to this organization.
    pub path: Vec<u32>,
    pub created_ms: u64,
}

impl From<OrgRecord> for OrgView {
    fn from(o: OrgRecord) -> Self {
        OrgView {
            id: o.id.0,
            parent: o.parent.map(|p| p.0),
            name: o.name,
            path: o.path.ids().iter().map(|id| id.0).collect(),
            created_ms: o.created_ms,
        }
    }
}

pub fn permission_names(permissions: Permissions) -> Vec<&'static str> {
    permissions.iter().map(|p| p.name()).collect()
}

#[derive(Serialize)]
pub struct RoleView {
    pub id: u32,
    pub org: Option<u32>,
    pub name: String,
    pub built_in: bool,
    pub permissions: Vec<&'static str>,
}

impl From<RoleRecord> for RoleView {
    fn from(r: RoleRecord) -> Self {
        RoleView {
            id: r.id.0,
            org: r.org.map(|o| o.0),
            built_in: r.org.is_none(),
            name: r.name,
            permissions: permission_names(r.permissions),
        }
    }
}

#[derive(Serialize)]
pub struct UserView {
    pub id: u64,
    pub email: String,
    pub name: String,
    pub org: u32,
    pub role: u32,
    pub status: &'static str,
    pub created_ms: u64,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        UserView {
            id: u.id.0,
            email: u.email,
            name: u.name,
            org: u.org.0,
            role: u.role.0,
            status: u.status.name(),
            created_ms: u.created_ms,
        }
    }
}

/// A datastream, in and out.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastreamView {
    pub name: String,
    /// `V5`, `D13`, `A0`.
    pub pin: String,
    /// `integer`, `double` or `string`.
    #[serde(rename = "type")]
    pub value_type: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub units: Option<String>,
    #[serde(default)]
    pub default: Option<String>,
}

impl From<Datastream> for DatastreamView {
    fn from(d: Datastream) -> Self {
        DatastreamView {
            name: d.name,
            pin: d.pin.to_string(),
            value_type: match d.value_type {
                ValueType::Integer => "integer",
                ValueType::Double => "double",
                ValueType::String => "string",
            }
            .to_owned(),
            min: d.min,
            max: d.max,
            units: d.units,
            default: d.default,
        }
    }
}

impl DatastreamView {
    pub fn into_datastream(self) -> Result<Datastream, String> {
        let pin = PinAddr::parse_name(&self.pin).map_err(|_| {
            format!(
                "datastream {:?}: {:?} is not a pin like V5",
                self.name, self.pin
            )
        })?;
        let value_type = match self.value_type.as_str() {
            "integer" => ValueType::Integer,
            "double" => ValueType::Double,
            "string" => ValueType::String,
            other => {
                return Err(format!(
                    "datastream {:?}: type {other:?} is not integer, double or string",
                    self.name
                ));
            }
        };
        Ok(Datastream {
            name: self.name,
            pin,
            value_type,
            min: self.min,
            max: self.max,
            units: self.units,
            default: self.default,
        })
    }
}

#[derive(Serialize)]
pub struct TemplateView {
    pub id: String,
    pub org: u32,
    pub name: String,
    pub datastreams: Vec<DatastreamView>,
    pub created_ms: u64,
}

impl From<TemplateRecord> for TemplateView {
    fn from(t: TemplateRecord) -> Self {
        TemplateView {
            id: t.id.to_string(),
            org: t.org.0,
            name: t.name,
            datastreams: t.datastreams.into_iter().map(Into::into).collect(),
            created_ms: t.created_ms,
        }
    }
}

#[derive(Serialize)]
pub struct DeviceView {
    pub id: u64,
    pub name: String,
    pub org: u32,
    pub template: String,
    pub owner: Option<u64>,
    pub online: bool,
    pub created_ms: u64,
    pub last_seen_ms: Option<u64>,
    pub last_addr: Option<String>,
    pub info: Option<DeviceInfo>,
}

impl From<DeviceRecord> for DeviceView {
    fn from(d: DeviceRecord) -> Self {
        DeviceView {
            online: d.online(),
            id: d.id,
            name: d.name,
            org: d.org.0,
            template: d.template.to_string(),
            owner: d.owner.map(|o| o.0),
            created_ms: d.created_ms,
            last_seen_ms: d.last_seen_ms,
            last_addr: d.last_addr,
            info: d.info,
        }
    }
}

#[derive(Serialize)]
pub struct ApiKeyView {
    pub id: u64,
    pub name: String,
    pub creator: u64,
    pub org: u32,
    pub permissions: Vec<&'static str>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
    pub last_used_ms: Option<u64>,
    pub revoked: bool,
}

impl From<ApiKeyRecord> for ApiKeyView {
    fn from(k: ApiKeyRecord) -> Self {
        ApiKeyView {
            id: k.id.0,
            name: k.name,
            creator: k.creator.0,
            org: k.org.0,
            permissions: permission_names(k.permissions),
            created_ms: k.created_ms,
            expires_ms: k.expires_ms,
            last_used_ms: k.last_used_ms,
            revoked: k.revoked,
        }
    }
}

#[derive(Serialize)]
pub struct AuditView {
    pub seq: u64,
    pub at_ms: u64,
    pub actor: String,
    pub actor_user: Option<u64>,
    pub org: u32,
    pub action: String,
    pub target: String,
    pub from: String,
    pub detail: String,
}

impl From<AuditEntry> for AuditView {
    fn from(a: AuditEntry) -> Self {
        AuditView {
            seq: a.seq,
            at_ms: a.at_ms,
            actor: a.actor,
            actor_user: a.actor_user.map(|u| u.0),
            org: a.org.0,
            action: a.action,
            target: a.target,
            from: a.from,
            detail: a.detail,
        }
    }
}
