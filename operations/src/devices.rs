//! Device operations: create one (the token is generated here, only its SHA-256 hash goes to
//! the store, and the token comes back once for whoever created the device), create many
//! pipelined on one link (provisioning), list a page or everything, and get one. A device of
//! another organization answers exactly like a device that does not exist.
//!
//! Results are the store's [`DeviceRecord`]s, which never hold a token.

use crate::access::{self, Action, Target};
use crate::error::{LocalFailure, Missing, OperationError, StoreFailure};
use crate::principal::Principal;
use crate::store_access::{Answer, StoreAccess, ask, ask_many};
use portcullis_protocol::store::{DeviceId, DeviceRecord, Request, Response, StoreError};
use portcullis_protocol::token::DeviceToken;

/// Devices fetched per request by [`list_all`].
pub const LIST_ALL_PAGE: u32 = 1000;

/// A device to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// Display name.
    pub name: String,
    /// Template (product) id its firmware is built for, e.g. `TMPLxxxxxx`.
    pub template: String,
    /// Organization it belongs to.
    pub org: String,
}

/// A registered device and its token. The token exists nowhere else: show it once.
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
    access::require(
        principal,
        Action::CreateDevice,
        Target::Org(&device.org),
        || Missing::Org(device.org.clone()),
    )?;
    let (request, token) = create_request(device)?;
    created(ask(store, request)?, token)
}

/// Registers many devices, each with a fresh token, pipelined on one link so the store can
/// share its disk syncs between them. The outer error is a failure of the whole batch (not
/// permitted, the link); each device then has its own answer, in order.
pub fn create_many(
    store: &mut impl StoreAccess,
    principal: &Principal,
    devices: Vec<NewDevice>,
) -> Result<Vec<Result<CreatedDevice, OperationError>>, OperationError> {
    for device in &devices {
        access::require(
            principal,
            Action::CreateDevice,
            Target::Org(&device.org),
            || Missing::Org(device.org.clone()),
        )?;
    }
    let (requests, tokens): (Vec<Request>, Vec<DeviceToken>) = devices
        .into_iter()
        .map(create_request)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let replies = ask_many(store, requests)?;
    Ok(replies
        .into_iter()
        .zip(tokens)
        .map(|(reply, token)| created(reply, token))
        .collect())
}

fn create_request(device: NewDevice) -> Result<(Request, DeviceToken), OperationError> {
    let token = DeviceToken::generate().map_err(LocalFailure::Token)?;
    let request = Request::CreateDevice {
        org: device.org,
        template: device.template,
        name: device.name,
        token_hash: token.hash(),
    };
    Ok((request, token))
}

fn created(reply: Answer, token: DeviceToken) -> Result<CreatedDevice, OperationError> {
    match reply {
        Ok(Response::Device(device)) => Ok(CreatedDevice { device, token }),
        Ok(other) => Err(OperationError::unexpected("CreateDevice", &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

/// One page of the devices the principal sees, ordered by id, starting after `after`, at most
/// `limit` (the store caps it at its page limit).
pub fn list_page(
    store: &mut impl StoreAccess,
    principal: &Principal,
    after: Option<DeviceId>,
    limit: u32,
) -> Result<DevicePage, OperationError> {
    let raw = fetch_page(store, principal, after, limit)?;
    let next = (raw.len() >= limit as usize)
        .then(|| raw.last().map(|d| d.id))
        .flatten();
    Ok(DevicePage {
        devices: visible(principal, raw),
        next,
    })
}

/// Every device the principal sees, fetched page by page until the store has no more.
pub fn list_all(
    store: &mut impl StoreAccess,
    principal: &Principal,
) -> Result<Vec<DeviceRecord>, OperationError> {
    let mut devices = Vec::new();
    let mut after = None;
    loop {
        let page = fetch_page(store, principal, after, LIST_ALL_PAGE)?;
        let Some(last) = page.last() else { break };
        // Ids must grow, or a buggy store could keep us paging forever.
        if after.is_some_and(|after| last.id <= after) {
            return Err(StoreFailure::PageDoesNotAdvance { last: last.id }.into());
        }
        after = Some(last.id);
        // A short page does not prove the end (the store may cap pages to fit a frame); only
        // an empty one does.
        devices.extend(visible(principal, page));
    }
    Ok(devices)
}

fn fetch_page(
    store: &mut impl StoreAccess,
    principal: &Principal,
    after: Option<DeviceId>,
    limit: u32,
) -> Result<Vec<DeviceRecord>, OperationError> {
    let request = Request::ListDevices {
        after,
        limit,
        org: access::device_listing(principal),
    };
    match ask(store, request)? {
        Ok(Response::Devices(page)) => Ok(page),
        Ok(other) => Err(OperationError::unexpected("ListDevices", &other)),
        Err(error) => Err(OperationError::refused(error)),
    }
}

/// What the store listed, less anything the principal may not see (the store filtered by
/// organization already; this is the second check).
fn visible(principal: &Principal, devices: Vec<DeviceRecord>) -> Vec<DeviceRecord> {
    devices
        .into_iter()
        .filter(|device| access::sees_device(principal, &device.org))
        .collect()
}

/// One device, if the principal sees it.
pub fn get(
    store: &mut impl StoreAccess,
    principal: &Principal,
    id: DeviceId,
) -> Result<DeviceRecord, OperationError> {
    let reply = ask(store, Request::GetDevice { device: id })?;
    visible_device(principal, id, reply)
}

/// The answer to a `GetDevice` for `id`, as the principal may see it: a device of another
/// organization becomes the same `NotFound` as one that does not exist.
pub(crate) fn visible_device(
    principal: &Principal,
    id: DeviceId,
    reply: Answer,
) -> Result<DeviceRecord, OperationError> {
    match reply {
        Ok(Response::Device(device)) => {
            access::require(
                principal,
                Action::ViewDevice,
                Target::Org(&device.org),
                || Missing::Device(id),
            )?;
            Ok(device)
        }
        Ok(other) => Err(OperationError::unexpected("GetDevice", &other)),
        Err(StoreError::NotFound(_)) => Err(OperationError::NotFound(Missing::Device(id))),
        Err(error) => Err(OperationError::refused(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Fault, InvalidInput};
    use crate::scripted::{ScriptedStore, device, fleet};
    use portcullis_protocol::token::{is_plausible_token, token_hash};

    /// The scope rule as a matrix: who × (a device of org a, a device that does not exist).
    /// A hidden device and a missing one must be indistinguishable: same variant, same message.
    #[test]
    fn get_scope_matrix() {
        for (who, principal, sees_device_of_a) in [
            ("operator", Principal::Operator, true),
            ("member of a", Principal::member("ann@a.example", "a"), true),
            (
                "member of b",
                Principal::member("bob@b.example", "b"),
                false,
            ),
        ] {
            let mut store = fleet();
            match get(&mut store, &principal, 1) {
                Ok(device) if sees_device_of_a => assert_eq!(device.org, "a", "{who}"),
                Err(OperationError::NotFound(Missing::Device(1))) if !sees_device_of_a => {}
                other => panic!("{who}: device 1 gave {other:?}"),
            }
            let missing = get(&mut store, &principal, 99).expect_err("device 99 exists nowhere");
            assert!(
                matches!(missing, OperationError::NotFound(Missing::Device(99))),
                "{who}: {missing:?}"
            );
            assert_eq!(missing.to_string(), "device 99 does not exist", "{who}");
            assert_eq!(missing.fault(), Fault::Caller, "{who}");
        }
        // The same id hidden in one store and missing from another: identical answers.
        let mut holding = ScriptedStore::new(|_| Ok(Response::Device(device(5, "a"))));
        let mut empty = ScriptedStore::new(|_| Err(StoreError::NotFound("device 5".into())));
        let bob = Principal::member("bob@b.example", "b");
        let hidden = get(&mut holding, &bob, 5).expect_err("hidden");
        let missing = get(&mut empty, &bob, 5).expect_err("missing");
        assert_eq!(format!("{hidden:?}"), format!("{missing:?}"));
        assert_eq!(hidden.to_string(), missing.to_string());
    }

    #[test]
    fn listings_hold_only_what_the_principal_sees() {
        let ids = |devices: Vec<DeviceRecord>| devices.iter().map(|d| d.id).collect::<Vec<_>>();
        for (who, principal, want) in [
            ("operator", Principal::Operator, vec![1, 2, 3]),
            ("a", Principal::member("ann@a.example", "a"), vec![1, 2]),
            ("b", Principal::member("bob@b.example", "b"), vec![3]),
        ] {
            let mut store = fleet();
            assert_eq!(
                ids(list_all(&mut store, &principal).expect("lists")),
                want,
                "{who}"
            );
        }
        // A store that ignores the filter still shows a member nothing of another org.
        let mut careless = ScriptedStore::new(|request| match request {
            Request::ListDevices { after: None, .. } => {
                Ok(Response::Devices(vec![device(1, "a"), device(3, "b")]))
            }
            _ => Ok(Response::Devices(Vec::new())),
        });
        let bob = Principal::member("bob@b.example", "b");
        let page = list_page(&mut careless, &bob, None, 2).expect("lists");
        assert_eq!(ids(page.devices), [3]);
        assert_eq!(page.next, Some(3), "a full page says where to go on");
        assert!(
            matches!(&careless.requests[0], Request::ListDevices { org: Some(org), .. } if org == "b")
        );
        let page = list_page(&mut fleet(), &bob, None, 10).expect("lists");
        assert_eq!((ids(page.devices), page.next), (vec![3], None));
    }

    #[test]
    fn list_all_pages_until_an_empty_page_and_refuses_a_stuck_store() {
        let total = 2 * u64::from(LIST_ALL_PAGE) + 1;
        let mut store = ScriptedStore::new(move |request| match request {
            Request::ListDevices { after, limit, .. } => {
                let start = after.map_or(1, |a| a + 1);
                Ok(Response::Devices(
                    (start..=total)
                        .take(*limit as usize)
                        .map(|id| device(id, "a"))
                        .collect(),
                ))
            }
            _ => Err(StoreError::Invalid("unexpected".into())),
        });
        let all = list_all(&mut store, &Principal::Operator).expect("lists");
        assert_eq!(all.len() as u64, total);
        assert_eq!(store.requests.len(), 4, "three pages and the empty one");

        let mut stuck =
            ScriptedStore::new(|_| Ok(Response::Devices(vec![device(1, "a"), device(2, "a")])));
        let error = list_all(&mut stuck, &Principal::Operator).expect_err("stuck");
        assert!(
            matches!(
                error,
                OperationError::StoreFailure(StoreFailure::PageDoesNotAdvance { last: 2 })
            ),
            "{error:?}"
        );
    }

    #[test]
    fn create_returns_the_token_once_and_sends_only_its_hash() {
        let mut store = ScriptedStore::new(|request| match request {
            Request::CreateDevice {
                org,
                template,
                name,
                ..
            } => {
                let mut created = device(1, org);
                (created.template, created.name) = (template.clone(), name.clone());
                Ok(Response::Device(created))
            }
            _ => Err(StoreError::Invalid("unexpected".into())),
        });
        let new = NewDevice {
            name: "Kitchen".into(),
            template: "TMPL9".into(),
            org: "acme".into(),
        };
        let created = create(&mut store, &Principal::Operator, new).expect("creates");
        assert_eq!(
            (created.device.name.as_str(), created.device.org.as_str()),
            ("Kitchen", "acme")
        );
        let token = created.token.expose();
        assert!(is_plausible_token(token.as_bytes()));
        let Request::CreateDevice {
            token_hash: sent, ..
        } = &store.requests[0]
        else {
            panic!("sent {:?}", store.requests[0]);
        };
        assert_eq!(*sent, token_hash(token.as_bytes()));
        assert!(!format!("{:?}", store.requests).contains(token));
    }

    #[test]
    fn create_many_pipelines_one_batch_and_answers_each_device() {
        let mut store = ScriptedStore::new(|request| match request {
            Request::CreateDevice { name, .. } if name == "bad" => {
                Err(StoreError::Invalid("bad name".into()))
            }
            Request::CreateDevice { name, .. } => {
                let id = name.trim_start_matches('d').parse().unwrap_or(0);
                Ok(Response::Device(device(id, "a")))
            }
            _ => Err(StoreError::Invalid("unexpected".into())),
        });
        let devices = ["d1", "bad", "d3"]
            .map(|name| NewDevice {
                name: name.into(),
                template: "T".into(),
                org: "a".into(),
            })
            .to_vec();
        let answers = create_many(&mut store, &Principal::Operator, devices).expect("link works");
        assert_eq!(store.batches, [3], "one pipelined batch");
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[0].as_ref().expect("created").device.id, 1);
        assert!(matches!(
            &answers[1],
            Err(OperationError::Invalid(InvalidInput::RefusedByStore(_)))
        ));
        let tokens: Vec<&str> = [&answers[0], &answers[2]]
            .iter()
            .map(|a| a.as_ref().expect("created").token.expose())
            .collect();
        assert_ne!(tokens[0], tokens[1]);
    }

    #[test]
    fn members_create_nothing_and_a_down_store_is_unavailable() {
        let ann = Principal::member("ann@a.example", "a");
        let new = NewDevice {
            name: "x".into(),
            template: "T".into(),
            org: "a".into(),
        };
        let mut store = fleet();
        let error = create(&mut store, &ann, new.clone()).expect_err("members create nothing");
        assert!(
            matches!(error, OperationError::NotPermitted { .. }),
            "{error:?}"
        );
        let error = create_many(&mut store, &ann, vec![new.clone()]).expect_err("nor many");
        assert!(
            matches!(error, OperationError::NotPermitted { .. }),
            "{error:?}"
        );
        assert!(store.requests.is_empty(), "nothing reached the store");

        let mut down = fleet().down();
        let error = create(&mut down, &Principal::Operator, new).expect_err("down");
        assert_eq!(error.fault(), Fault::StoreUnavailable);
        assert_eq!(error.to_string(), "the store is not running");
    }
}
