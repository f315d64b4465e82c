//! Tests of [`crate::devices`]: the scope matrix against a store that hides like the real one,
//! paging, tokens shown once and sent only as hashes, pipelined creation, re-provisioning.

use crate::devices::*;
use crate::error::{Fault, InvalidInput, Missing, OperationError, StoreFailure};
use crate::principal::Principal;
use crate::principal::tests::member_of;
use crate::scripted::{ScriptedStore, ann, bob, device, fleet};
use crate::store_access::StoreAccess;
use portcullis_protocol::authz::{BuiltInRole, OrgId};
use portcullis_protocol::store::{
    DeviceRecord, DeviceScope, Party, Request, Response, StoreError, TemplateId,
};
use portcullis_protocol::token::{is_plausible_token, token_hash};

fn tmpl() -> TemplateId {
    TemplateId::parse("TMPL9").expect("valid")
}

fn new_device(name: &str, org: u32) -> NewDevice {
    NewDevice {
        name: name.into(),
        template: tmpl(),
        org: OrgId(org),
        owner: None,
    }
}

/// Who × (a device of org 2, a device that does not exist). A hidden device and a missing one
/// must be indistinguishable: same variant, same message.
#[test]
fn get_scope_matrix() {
    for (who, principal, sees_device_of_2) in [
        ("operator", Principal::Operator, true),
        ("member of 2", ann(), true),
        ("member of 3", bob(), false),
    ] {
        let mut store = fleet();
        match get(&mut store, &principal, 1) {
            Ok(device) if sees_device_of_2 => assert_eq!(device.org, OrgId(2), "{who}"),
            Err(OperationError::NotFound(Missing::Device(1))) if !sees_device_of_2 => {}
            other => panic!("{who}: device 1 gave {other:?}"),
        }
        let missing = get(&mut store, &principal, 99).expect_err("device 99 exists nowhere");
        assert_eq!(missing.to_string(), "device 99 does not exist", "{who}");
        assert_eq!(missing.fault(), Fault::Caller, "{who}");
        if !sees_device_of_2 {
            let hidden = get(&mut store, &principal, 1).expect_err("hidden");
            assert_eq!(hidden.to_string(), "device 1 does not exist");
        }
    }
}

#[test]
fn listings_hold_what_the_store_lets_the_principal_see() {
    let ids = |devices: Vec<DeviceRecord>| devices.iter().map(|d| d.id).collect::<Vec<_>>();
    for (who, principal, want) in [
        ("operator", Principal::Operator, vec![1, 2, 3]),
        ("2", ann(), vec![1, 2]),
        ("3", bob(), vec![3]),
    ] {
        let mut store = fleet();
        let scope = home_scope(&principal);
        assert_eq!(
            ids(list_all(&mut store, &principal, scope).expect("lists")),
            want,
            "{who}"
        );
    }
    assert_eq!(home_scope(&Principal::Operator), DeviceScope::All);
    assert_eq!(
        home_scope(&ann()),
        DeviceScope::Org {
            org: OrgId(2),
            subtree: true
        }
    );
    // A member may not ask for every device of the store: that is the operator's.
    let error = list_page(&mut fleet(), &ann(), DeviceScope::All, None, 10).expect_err("all");
    assert!(
        matches!(error, OperationError::NotPermitted { .. }),
        "{error:?}"
    );
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
                    .map(|id| device(id, 2))
                    .collect(),
            ))
        }
        _ => Err(StoreError::Invalid("unexpected".into())),
    });
    let all = list_all(&mut store, &Principal::Operator, DeviceScope::All).expect("lists");
    assert_eq!(all.len() as u64, total);
    assert_eq!(store.requests.len(), 4, "three pages and the empty one");

    let mut stuck = ScriptedStore::new(|_| Ok(Response::Devices(vec![device(1, 2), device(2, 2)])));
    let error = list_all(&mut stuck, &Principal::Operator, DeviceScope::All).expect_err("stuck");
    assert!(
        matches!(
            error,
            OperationError::StoreFailure(StoreFailure::PageDoesNotAdvance { last: 2 })
        ),
        "{error:?}"
    );
}

#[test]
fn create_returns_the_token_once_sends_only_its_hash_and_names_the_principal() {
    let mut store = ScriptedStore::new(|request| match request {
        Request::CreateDevice {
            org,
            template,
            name,
            ..
        } => {
            let mut created = device(1, org.0);
            (created.template, created.name) = (template.clone(), name.clone());
            Ok(Response::Device(created))
        }
        _ => Err(StoreError::Invalid("unexpected".into())),
    });
    let created = create(&mut store, &ann(), new_device("Kitchen", 2)).expect("creates");
    assert_eq!(
        (created.device.name.as_str(), created.device.org),
        ("Kitchen", OrgId(2))
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
    let acting = store.acting[0].as_ref().expect("acts for someone");
    assert_eq!(
        acting.party,
        Party::User(portcullis_protocol::authz::UserId(1))
    );
}

#[test]
fn create_many_pipelines_one_batch_and_answers_each_device() {
    let mut store = ScriptedStore::new(|request| match request {
        Request::CreateDevice { name, .. } if name == "bad" => {
            Err(StoreError::Invalid("bad name".into()))
        }
        Request::CreateDevice { name, .. } => {
            let id = name.trim_start_matches('d').parse().unwrap_or(0);
            Ok(Response::Device(device(id, 2)))
        }
        _ => Err(StoreError::Invalid("unexpected".into())),
    });
    let devices = ["d1", "bad", "d3"].map(|name| new_device(name, 2)).to_vec();
    let answers = create_many(&mut store, &Principal::Operator, devices).expect("link works");
    assert_eq!(store.batches, [3], "one pipelined batch");
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
fn a_user_without_create_rights_reaches_nothing_and_a_down_store_is_unavailable() {
    let user = member_of(5, &[1, 2], BuiltInRole::User);
    let mut store = fleet();
    let error = create(&mut store, &user, new_device("x", 2)).expect_err("no devices.create");
    assert_eq!(error.to_string(), "not permitted: needs devices.create");
    let error = create_many(&mut store, &user, vec![new_device("x", 2)]).expect_err("nor many");
    assert!(
        matches!(error, OperationError::NotPermitted { .. }),
        "{error:?}"
    );
    assert!(store.requests.is_empty(), "nothing reached the store");

    let mut down = fleet().down();
    let error = create(&mut down, &Principal::Operator, new_device("x", 2)).expect_err("down");
    assert_eq!(error.fault(), Fault::StoreUnavailable);
    assert_eq!(error.to_string(), "the store is not running");
}

#[test]
fn reprovisioning_sends_a_fresh_hash_and_a_store_refusal_is_not_a_device() {
    let mut store = ScriptedStore::new(|request| match request {
        Request::ReprovisionDevice { device: 4, .. } => Ok(Response::Device(device(4, 2))),
        Request::ReprovisionDevice { device, .. } => {
            Err(StoreError::NotFound(format!("device {device}")))
        }
        Request::DeleteDevice { .. } => Err(StoreError::NotPermitted("devices.delete".into())),
        _ => Err(StoreError::Invalid("unexpected".into())),
    });
    let first = reprovision(&mut store, &Principal::Operator, 4).expect("reprovisions");
    let second = reprovision(&mut store, &Principal::Operator, 4).expect("again");
    assert_ne!(first.token.expose(), second.token.expose());
    let Request::ReprovisionDevice { token_hash, .. } = &store.requests[1] else {
        panic!("{:?}", store.requests[1]);
    };
    assert_eq!(*token_hash, second.token.hash());
    let missing = reprovision(&mut store, &Principal::Operator, 8).expect_err("missing");
    assert!(matches!(
        missing,
        OperationError::NotFound(Missing::Device(8))
    ));
    let refused = delete(&mut store, &Principal::Operator, 4).expect_err("refused");
    assert_eq!(refused.to_string(), "not permitted: needs devices.delete");
    let _ = store.call(None, Request::Ping);
}
