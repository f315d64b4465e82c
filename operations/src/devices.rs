//! Device operations: create one (the token is generated here, only its SHA-256 hash goes to
//! the store, and the token comes back once for whoever created the device), create many
//! pipelined on one link (provisioning), list a page or everything in a scope, get one,
//! re-provision one (a new token, shown once; the old one stops working at once), delete one and
//! transfer one within the organization tree. A device the principal may not see answers
//! exactly like a device that does not exist: the store hides it, and [`visible_device`] maps
//! both to the same [`Missing::Device`].
//!
//! Results are the store's [`DeviceRecord`]s, which never hold a token.

use crate::error::{LocalFailure, Missing, OperationError, StoreFailure};
use crate::principal::Principal;
use crate::store_access::{Answer, StoreAccess, act, act_many};
use portcullis_protocol::authz::{OrgId, UserId};
use portcullis_protocol::store::{
    DeviceId, DeviceRecord, DeviceScope, Request, Response, StoreError, TemplateId,
};
use portcullis_protocol::token::DeviceToken;

/// Devices fetched per request by [`list_all`].
pub const LIST_ALL_PAGE: u32 = 1000;

/// A device to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// Display name.
    pub name: String,
    /// The template its firmware is built for (`TMPL…`), of its organization or one above.
    pub template: TemplateId,
    /// Organization it belongs to.
    pub org: OrgId,
    /// The user it belongs to, for "own devices" permissions.
    pub owner: Option<UserId>,
}

/// A registered (or re-provisioned) device and its token. The token exists nowhere else: show
/// it once.
#[derive(Debug, Clone)]
pub struct CreatedDevice {
    pub device: DeviceRecord,
    pub token: DeviceToken,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePage {
    /// Ordered by id.
    pub devices: Vec<DeviceRecord>,
    /// Where the next page starts (pass it as `after`), set when this page came back full.
    pub next: Option<DeviceId>,
}

/// Registers one device with a fresh token.
pub fn create(
    store: &mut impl StoreAccess,
    principal: &Principal,
    device: NewDevice,
) -> Result<CreatedDevice, OperationError> {
    let (request, token) = create_request(device)?;
    created("CreateDevice", act(store, principal, request)?, token)
}

/// Registers many devices, each with a fresh token, pipelined on one link so the store can
/// share its disk syncs between them. The outer error is a failure of the whole batch (not
/// permitted, the link); each device then has its own answer, in order.
pub fn create_many(
    store: &mut impl StoreAccess,
    principal: &Principal,
    devices: Vec<NewDevice>,
) -> Result<Vec<Result<CreatedDevice, OperationError>>, OperationError> {
    let (requests, tokens): (Vec<Request>, Vec<DeviceToken>) = devices
        .into_iter()
        .map(create_request)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let replies = act_many(store, principal, requests)?;
    Ok(replies
        .into_iter()
        .zip(tokens)
        .map(|(reply, token)| created("CreateDevice", reply, token))
        .collect())
}

fn create_request(device: NewDevice) -> Result<(Request, DeviceToken), OperationError> {
    let token = DeviceToken::generate().map_err(LocalFailure::Token)?;
    let request = Request::CreateDevice {
        org: device.org,
        template: device.template,
        owner: device.owner,
        name: device.name,
        token_hash: token.hash(),
    };
    Ok((request, token))
}

fn created(
    request: &'static str,
    reply: Answer,
    token: DeviceToken,
) -> Result<CreatedDevice, OperationError> {
    match reply {
        Ok(Response::Device(device)) => Ok(CreatedDevice { device, token }),
        Ok(other) => Err(OperationError::unexpected(request, &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

/// One page of the devices the principal sees within `scope`, ordered by id, starting after
/// `after`, at most `limit` (the store caps it at its page limit).
pub fn list_page(
    store: &mut impl StoreAccess,
    principal: &Principal,
    scope: DeviceScope,
    after: Option<DeviceId>,
    limit: u32,
) -> Result<DevicePage, OperationError> {
    let devices = fetch_page(store, principal, scope, after, limit)?;
    let next = (devices.len() >= limit as usize)
        .then(|| devices.last().map(|d| d.id))
        .flatten();
    Ok(DevicePage { devices, next })
}

/// The widest scope a principal may list: every device for the operator, the member's own
/// organization and everything below it otherwise (the store filters what they may not see).
pub fn home_scope(principal: &Principal) -> DeviceScope {
    match principal.as_member() {
        None => DeviceScope::All,
        Some(member) => DeviceScope::Org {
            org: member.org().org(),
            subtree: true,
        },
    }
}

/// Every device the principal sees in `scope`, fetched page by page until the store has no
/// more.
pub fn list_all(
    store: &mut impl StoreAccess,
    principal: &Principal,
    scope: DeviceScope,
) -> Result<Vec<DeviceRecord>, OperationError> {
    let mut devices = Vec::new();
    let mut after = None;
    loop {
        let page = fetch_page(store, principal, scope.clone(), after, LIST_ALL_PAGE)?;
        let Some(last) = page.last() else { break };
        // Ids must grow, or a buggy store could keep us paging forever.
        if after.is_some_and(|after| last.id <= after) {
            return Err(StoreFailure::PageDoesNotAdvance { last: last.id }.into());
        }
        after = Some(last.id);
        // A short page does not prove the end (the store may cap pages to fit a frame, or
        // filter out what the principal may not see); only an empty one does.
        devices.extend(page);
    }
    Ok(devices)
}

fn fetch_page(
    store: &mut impl StoreAccess,
    principal: &Principal,
    scope: DeviceScope,
    after: Option<DeviceId>,
    limit: u32,
) -> Result<Vec<DeviceRecord>, OperationError> {
    let request = Request::ListDevices {
        after,
        limit,
        scope,
    };
    match act(store, principal, request)? {
        Ok(Response::Devices(page)) => Ok(page),
        Ok(other) => Err(OperationError::unexpected("ListDevices", &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

/// One device, if the principal sees it.
pub fn get(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: DeviceId,
) -> Result<DeviceRecord, OperationError> {
    let reply = act(store, principal, Request::GetDevice { device: id })?;
    visible_device(id, reply)
}

/// Gives a device a new token (shown once); the old one stops authenticating at once. The
/// caller closes the device's live sessions (the gateway does, on every shard).
pub fn reprovision(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: DeviceId,
) -> Result<CreatedDevice, OperationError> {
    let token = DeviceToken::generate().map_err(LocalFailure::Token)?;
    let request = Request::ReprovisionDevice {
        device: id,
        token_hash: token.hash(),
    };
    let device = visible_device(id, act(store, principal, request)?)?;
    Ok(CreatedDevice { device, token })
}

/// Deletes a device with its token, values and history.
pub fn delete(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: DeviceId,
) -> Result<(), OperationError> {
    match act(store, principal, Request::DeleteDevice { device: id })? {
        Ok(Response::Done) => Ok(()),
        other => visible_device(id, other).map(|_| ()),
    }
}

/// Moves a device to another organization and/or gives it another owner.
pub fn transfer(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: DeviceId,
    org: Option<OrgId>,
    owner: Option<Option<UserId>>,
) -> Result<DeviceRecord, OperationError> {
    let request = Request::TransferDevice {
        device: id,
        org,
        owner,
    };
    visible_device(id, act(store, principal, request)?)
}

/// The store's answer about device `id`: its record, or the one "does not exist" for a device
/// that is missing or hidden from the principal (the store words both alike; this makes them
/// one value).
pub(crate) fn visible_device(id: DeviceId, reply: Answer) -> Result<DeviceRecord, OperationError> {
    match reply {
        Ok(Response::Device(device)) => Ok(device),
        Ok(other) => Err(OperationError::unexpected("GetDevice", &other)),
        Err(StoreError::NotFound(_)) => Err(OperationError::NotFound(Missing::Device(id))),
        Err(error) => Err(OperationError::refused(error)),
    }
}
