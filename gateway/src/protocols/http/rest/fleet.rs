//! Templates and devices over REST: templates with their datastreams (list those an
//! organization's devices may use, create, get, change, delete) and devices (list a page of an
//! organization, optionally with everything below it; create, which returns the token once;
//! get; delete; re-provision, which returns the new token once and ends the old one's sessions
//! through the gateways' revocation feed; transfer within the tree).

use super::json::{ApiError, Query, body, id_param, no_content, org_param, reply, template_param};
use super::views::{DatastreamView, DeviceView, TemplateView};
use super::{Endpoint, RestCall};
use crate::protocols::WorkerStore;
use portcullis_operations::devices::{self, NewDevice};
use portcullis_operations::{Principal, templates};
use portcullis_protocol::authz::{OrgId, UserId};
use portcullis_protocol::http::Response;
use portcullis_protocol::store::{Datastream, DeviceScope, MAX_LIST_PAGE, TemplateId};
use serde::{Deserialize, Serialize};

/// Devices per page when the client does not say.
pub const DEFAULT_DEVICE_PAGE: u32 = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    datastreams: Option<Vec<DatastreamView>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    name: String,
    org: u32,
    template: String,
    #[serde(default)]
    owner: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    #[serde(default)]
    org: Option<u32>,
    /// A user id, or `null` for nobody; absent: unchanged.
    #[serde(default, deserialize_with = "some_or_null")]
    owner: Option<Option<u64>>,
}

/// Tells `"owner": null` (nobody) from a missing field (unchanged).
fn some_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

#[derive(Serialize)]
struct DeviceWithToken {
    device: DeviceView,
    /// Shown only in this answer: put it in the device's firmware now.
    token: String,
}

#[derive(Serialize)]
struct DevicePageView {
    devices: Vec<DeviceView>,
    /// Pass as `after` for the next page; absent on the last one.
    next: Option<u64>,
}

fn datastreams(views: Vec<DatastreamView>) -> Result<Vec<Datastream>, ApiError> {
    views
        .into_iter()
        .map(|d| {
            d.into_datastream()
                .map_err(|why| ApiError::bad_request(format!("{why}.")))
        })
        .collect()
}

pub fn handle(
    store: &mut WorkerStore<'_>,
    principal: &Principal,
    call: &RestCall,
) -> Result<Response, ApiError> {
    match call.endpoint {
        Endpoint::ListTemplates => {
            let org = org_param(call)?;
            let list = templates::list(store, principal, org)?;
            reply(
                200,
                &list.into_iter().map(TemplateView::from).collect::<Vec<_>>(),
            )
        }
        Endpoint::CreateTemplate => {
            let form: TemplateBody = body(call)?;
            let org = org_param(call)?;
            let id = templates::template_id(form.id.as_deref())?;
            let name = form
                .name
                .ok_or_else(|| ApiError::bad_request("A template needs a name."))?;
            let streams = datastreams(form.datastreams.unwrap_or_default())?;
            let created = templates::create(store, principal, org, id, name, streams)?;
            reply(201, &TemplateView::from(created))
        }
        Endpoint::GetTemplate => {
            let found = templates::get(store, principal, template_param(call)?)?;
            reply(200, &TemplateView::from(found))
        }
        Endpoint::UpdateTemplate => {
            let form: TemplateBody = body(call)?;
            if form.id.is_some() {
                return Err(ApiError::bad_request("A template's id cannot change."));
            }
            let streams = form.datastreams.map(datastreams).transpose()?;
            let changed =
                templates::update(store, principal, template_param(call)?, form.name, streams)?;
            reply(200, &TemplateView::from(changed))
        }
        Endpoint::DeleteTemplate => {
            templates::delete(store, principal, template_param(call)?)?;
            no_content()
        }
        Endpoint::ListDevices => list_devices(store, principal, call),
        Endpoint::CreateDevice => {
            let form: DeviceBody = body(call)?;
            let template = TemplateId::parse(&form.template)
                .map_err(|why| ApiError::bad_request(format!("{why}.")))?;
            let new = NewDevice {
                name: form.name,
                template,
                org: OrgId(form.org),
                owner: form.owner.map(UserId),
            };
            let created = devices::create(store, principal, new)?;
            reply(
                201,
                &DeviceWithToken {
                    token: created.token.expose().to_owned(),
                    device: created.device.into(),
                },
            )
        }
        Endpoint::GetDevice => {
            let device = devices::get(store, principal, id_param(call, "device")?)?;
            reply(200, &DeviceView::from(device))
        }
        Endpoint::DeleteDevice => {
            devices::delete(store, principal, id_param(call, "device")?)?;
            no_content()
        }
        Endpoint::ReprovisionDevice => {
            let created = devices::reprovision(store, principal, id_param(call, "device")?)?;
            reply(
                200,
                &DeviceWithToken {
                    token: created.token.expose().to_owned(),
                    device: created.device.into(),
                },
            )
        }
        Endpoint::TransferDevice => {
            let form: TransferBody = body(call)?;
            let owner = form.owner.map(|o| o.map(UserId));
            let device = devices::transfer(
                store,
                principal,
                id_param(call, "device")?,
                form.org.map(OrgId),
                owner,
            )?;
            reply(200, &DeviceView::from(device))
        }
        _ => Err(ApiError::new(500, "Internal error.")),
    }
}

/// Everything [`handle`] reads from the call before it asks the store (path, query, body), read
/// the same way, with no store: what the fuzz target `rest_request` drives.
pub fn check_input(call: &RestCall) -> Result<(), ApiError> {
    match call.endpoint {
        Endpoint::ListTemplates => {
            id_param::<u32>(call, "org")?;
        }
        Endpoint::CreateTemplate => {
            let form: TemplateBody = body(call)?;
            id_param::<u32>(call, "org")?;
            // A given id is checked; none is generated (the operation makes one).
            if let Some(id) = form.id.as_deref() {
                templates::template_id(Some(id))?;
            }
            form.name
                .ok_or_else(|| ApiError::bad_request("A template needs a name."))?;
            datastreams(form.datastreams.unwrap_or_default())?;
        }
        Endpoint::GetTemplate | Endpoint::DeleteTemplate => {
            template_param(call)?;
        }
        Endpoint::UpdateTemplate => {
            let form: TemplateBody = body(call)?;
            if form.id.is_some() {
                return Err(ApiError::bad_request("A template's id cannot change."));
            }
            form.datastreams.map(datastreams).transpose()?;
            template_param(call)?;
        }
        Endpoint::ListDevices => {
            device_scope(call)?;
        }
        Endpoint::CreateDevice => {
            let form: DeviceBody = body(call)?;
            TemplateId::parse(&form.template)
                .map_err(|why| ApiError::bad_request(format!("{why}.")))?;
        }
        Endpoint::GetDevice | Endpoint::DeleteDevice | Endpoint::ReprovisionDevice => {
            id_param::<u64>(call, "device")?;
        }
        Endpoint::TransferDevice => {
            body::<TransferBody>(call)?;
            id_param::<u64>(call, "device")?;
        }
        _ => {}
    }
    Ok(())
}

/// The page size, the id to start after, and the scope a device listing asks for (`None`: the
/// query names no organization, so the caller's own scope).
fn device_scope(call: &RestCall) -> Result<(u32, Option<u64>, Option<DeviceScope>), ApiError> {
    let query = Query::of(call, &["org", "subtree", "after", "limit"])?;
    let limit = query
        .number("limit")?
        .unwrap_or(DEFAULT_DEVICE_PAGE)
        .clamp(1, MAX_LIST_PAGE);
    let after = query.number("after")?;
    let scope = match query.number("org")? {
        Some(org) => Some(DeviceScope::Org {
            org: OrgId(org),
            subtree: query.flag("subtree")?,
        }),
        None => None,
    };
    Ok((limit, after, scope))
}

fn list_devices(
    store: &mut WorkerStore<'_>,
    principal: &Principal,
    call: &RestCall,
) -> Result<Response, ApiError> {
    let (limit, after, scope) = device_scope(call)?;
    let scope = scope.unwrap_or_else(|| devices::home_scope(principal));
    let page = devices::list_page(store, principal, scope, after, limit)?;
    reply(
        200,
        &DevicePageView {
            devices: page.devices.into_iter().map(Into::into).collect(),
            next: page.next,
        },
    )
}
