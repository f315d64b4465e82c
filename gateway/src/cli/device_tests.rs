//! The device commands against a fake store holding a few devices: tokens are printed once and
//! only their hashes sent, listings page and take a scope, unknown ids say where to look, and
//! re-provisioning, deleting and transferring send one request each, acting as the operator.

use super::*;
use crate::cli::test_store::{self, Seen, requests};
use portcullis_operations::devices::LIST_ALL_PAGE as LIST_PAGE;
use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{Request, Response, StoreError};
use portcullis_protocol::token::{is_plausible_token, token_hash};
use portcullis_store_client::StoreClient;

fn tmpl(id: &str) -> TemplateId {
    TemplateId::parse(id).expect("valid")
}

/// An in-memory store with `devices` devices (ids 1..), device 1 having two pins.
fn store_with(devices: u64) -> (tempfile::TempDir, StoreClient, Seen) {
    let mut records: Vec<DeviceRecord> = (1..=devices)
        .map(|id| record(id, &format!("dev{id}")))
        .collect();
    test_store::store(move |request| {
        let position = |records: &[DeviceRecord], device: DeviceId| {
            records
                .iter()
                .position(|d| d.id == device)
                .ok_or_else(|| StoreError::NotFound(format!("device {device}")))
        };
        match request.clone() {
            Request::CreateDevice {
                org,
                template,
                owner,
                name,
                ..
            } => {
                let mut created = record(records.len() as u64 + 1, &name);
                (created.org, created.template, created.owner) = (org, template, owner);
                records.push(created.clone());
                Ok(Response::Device(created))
            }
            Request::ListDevices {
                after,
                limit,
                scope,
            } => Ok(Response::Devices(
                records
                    .iter()
                    .filter(|d| after.is_none_or(|a| d.id > a))
                    .filter(|d| match &scope {
                        DeviceScope::All => true,
                        DeviceScope::Org { org, .. } => d.org == *org,
                    })
                    .take(limit as usize)
                    .cloned()
                    .collect(),
            )),
            Request::GetDevice { device } | Request::ReprovisionDevice { device, .. } => {
                position(&records, device).map(|i| Response::Device(records[i].clone()))
            }
            Request::DeleteDevice { device } => {
                let i = position(&records, device)?;
                records.remove(i);
                Ok(Response::Done)
            }
            Request::TransferDevice { device, org, owner } => {
                let i = position(&records, device)?;
                if let Some(org) = org {
                    records[i].org = org;
                }
                if let Some(owner) = owner {
                    records[i].owner = owner;
                }
                Ok(Response::Device(records[i].clone()))
            }
            Request::ReadPins {
                device: 1,
                pins: None,
            } => Ok(Response::Pins(vec![
                PinValue {
                    pin: PinAddr::new(PinKind::Virtual, 5),
                    value: b"42".to_vec(),
                    at_ms: 1_700_000_000_000,
                },
                PinValue {
                    pin: PinAddr::new(PinKind::Digital, 13),
                    value: b"a\0b\xff".to_vec(),
                    at_ms: 7,
                },
            ])),
            Request::ReadPins { device, .. } => {
                position(&records, device).map(|_| Response::Pins(Vec::new()))
            }
            other => Err(StoreError::Invalid(format!("unexpected {other:?}"))),
        }
    })
}

fn record(id: DeviceId, name: &str) -> DeviceRecord {
    DeviceRecord {
        id,
        org: OrgId(if id.is_multiple_of(2) { 2 } else { 1 }),
        template: tmpl("TMPL1"),
        owner: None,
        name: name.into(),
        created_ms: 1_700_000_000_000,
        sessions: u32::from(id == 1),
        last_seen_ms: (id == 1).then_some(1_700_000_000_500),
        last_addr: (id == 1).then(|| "192.0.2.7:50000".into()),
        info: (id == 1).then(|| DeviceInfo {
            heartbeat_secs: Some(45),
            ..DeviceInfo::default()
        }),
    }
}

fn run_json(client: &mut StoreClient, command: DeviceCommand) -> anyhow::Result<serde_json::Value> {
    let mut out = Vec::new();
    execute(client, command, true, &mut out)?;
    Ok(test_store::json(out))
}

fn run_text(client: &mut StoreClient, command: DeviceCommand) -> String {
    let mut out = Vec::new();
    execute(client, command, false, &mut out).expect("succeeds");
    test_store::text(out)
}

/// The token hashes of the create and re-provision requests sent so far.
fn hashes(seen: &Seen) -> Vec<[u8; 32]> {
    requests(seen)
        .into_iter()
        .filter_map(|r| match r {
            Request::CreateDevice { token_hash, .. }
            | Request::ReprovisionDevice { token_hash, .. } => Some(token_hash),
            _ => None,
        })
        .collect()
}

#[test]
fn create_prints_the_token_once_and_sends_only_its_hash() {
    let (_dir, mut client, seen) = store_with(0);
    let create = DeviceCommand::Create {
        name: "Kitchen".into(),
        template: tmpl("TMPL9"),
        org: OrgId(3),
        owner: Some(UserId(7)),
    };
    let created = run_json(&mut client, create).expect("creates");
    let token = created["token"].as_str().expect("token");
    assert!(is_plausible_token(token.as_bytes()));
    assert_eq!(hashes(&seen), [token_hash(token.as_bytes())]);
    assert_eq!(
        created,
        serde_json::json!({"id": 1, "name": "Kitchen", "template": "TMPL9", "org": 3, "owner": 7, "token": token})
    );
    let Request::CreateDevice {
        org,
        template,
        owner,
        name,
        ..
    } = &requests(&seen)[0]
    else {
        panic!("{:?}", requests(&seen))
    };
    assert_eq!(
        (org, template, owner, name.as_str()),
        (&OrgId(3), &tmpl("TMPL9"), &Some(UserId(7)), "Kitchen")
    );

    let text = run_text(
        &mut client,
        DeviceCommand::Create {
            name: "Porch".into(),
            template: tmpl("TMPL1"),
            org: OrgId::ROOT,
            owner: None,
        },
    );
    assert!(
        text.starts_with("Created device 2 \"Porch\" (template TMPL1, org 1, owner none).")
            && text.contains("shown only this once")
            && text.contains("Token: "),
        "{text}"
    );
}

#[test]
fn list_pages_until_the_store_runs_out_and_takes_a_scope() {
    let (_dir, mut client, seen) = store_with(2 * u64::from(LIST_PAGE) + 1);
    let all = || DeviceCommand::List {
        org: None,
        subtree: false,
    };
    let listed = run_json(&mut client, all()).expect("lists");
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), 2 * LIST_PAGE as usize + 1);
    assert_eq!(listed[0]["online"], true);
    assert_eq!(listed[1]["online"], false);
    assert!(listed[0].get("token").is_none());
    let text = run_text(&mut client, all());
    assert!(
        text.starts_with("ID") && text.contains("dev2001"),
        "{}",
        &text[..200]
    );
    seen.lock().expect("lock").clear();
    let scoped = DeviceCommand::List {
        org: Some(OrgId(2)),
        subtree: true,
    };
    let listed = run_json(&mut client, scoped).expect("lists");
    assert_eq!(listed.as_array().map(Vec::len), Some(LIST_PAGE as usize));
    assert_eq!(listed[0]["id"], 2);
    let scope = DeviceScope::Org {
        org: OrgId(2),
        subtree: true,
    };
    assert!(
        requests(&seen)
            .iter()
            .all(|r| matches!(r, Request::ListDevices { scope: s, .. } if *s == scope)),
        "{:?}",
        requests(&seen)
    );
}

#[test]
fn get_shows_the_record_and_refuses_unknown_ids() {
    let (_dir, mut client, _) = store_with(2);
    let device = run_json(&mut client, DeviceCommand::Get { id: 1 }).expect("gets");
    assert_eq!(device["sessions"], 1);
    assert_eq!(device["last_seen_ms"], 1_700_000_000_500u64);
    assert_eq!(device["info"]["heartbeat_secs"], 45);
    assert_eq!(device["owner"], serde_json::Value::Null);
    let text = run_text(&mut client, DeviceCommand::Get { id: 1 });
    assert!(
        text.contains("2023-11-14T22:13:20.5Z")
            && text.contains("45 s")
            && text.contains("owner:             none"),
        "{text}"
    );
    let err = run_json(&mut client, DeviceCommand::Get { id: 99 }).expect_err("unknown");
    assert!(
        err.to_string().contains("device 99 does not exist"),
        "{err}"
    );
}

#[test]
fn pins_split_multi_values_and_refuse_unknown_devices() {
    let (_dir, mut client, _) = store_with(2);
    let pins = run_json(&mut client, DeviceCommand::Pins { id: 1 }).expect("reads");
    assert_eq!(
        pins,
        serde_json::json!([
            {"pin": "V5", "value": "42", "values": ["42"], "at_ms": 1_700_000_000_000u64},
            {"pin": "D13", "value": "a b\u{fffd}", "values": ["a", "b\u{fffd}"], "at_ms": 7},
        ])
    );
    assert_eq!(
        run_json(&mut client, DeviceCommand::Pins { id: 2 }).expect("empty"),
        serde_json::json!([])
    );
    let err = run_json(&mut client, DeviceCommand::Pins { id: 99 }).expect_err("unknown");
    assert!(
        err.to_string().contains("device 99 does not exist"),
        "{err}"
    );
    let text = run_text(&mut client, DeviceCommand::Pins { id: 1 });
    assert!(text.contains("V5") && text.contains("42"), "{text}");
}

#[test]
fn reprovision_prints_a_new_token_once_and_says_the_old_one_stopped() {
    let (_dir, mut client, seen) = store_with(2);
    let shown = run_json(&mut client, DeviceCommand::Reprovision { id: 2 }).expect("reprovisions");
    let token = shown["token"].as_str().expect("token");
    assert!(is_plausible_token(token.as_bytes()));
    assert_eq!(hashes(&seen), [token_hash(token.as_bytes())]);
    assert_eq!(shown["id"], 2);
    let text = run_text(&mut client, DeviceCommand::Reprovision { id: 1 });
    assert!(
        text.starts_with("Re-provisioned device 1")
            && text.contains("Token: ")
            && text.contains("old token stopped working")
            && text.contains("within a second"),
        "{text}"
    );
    let err = run_json(&mut client, DeviceCommand::Reprovision { id: 99 }).expect_err("unknown");
    assert!(err.to_string().contains("device list"), "{err}");
    let hashes = hashes(&seen);
    assert_eq!(hashes.len(), 3);
    assert_ne!(hashes[0], hashes[1], "every re-provisioning is a new token");
}

#[test]
fn delete_and_transfer_send_one_request_each() {
    let (_dir, mut client, seen) = store_with(3);
    let text = run_text(&mut client, DeviceCommand::Delete { id: 3 });
    assert!(text.starts_with("Deleted device 3"), "{text}");
    let err = run_json(&mut client, DeviceCommand::Delete { id: 3 }).expect_err("gone");
    assert!(err.to_string().contains("device 3 does not exist"), "{err}");
    let moved = run_json(
        &mut client,
        DeviceCommand::Transfer {
            id: 1,
            org: Some(OrgId(2)),
            owner: Some(UserId(7)),
            no_owner: false,
        },
    )
    .expect("transfers");
    assert_eq!((&moved["org"], &moved["owner"]), (&2.into(), &7.into()));
    let text = run_text(
        &mut client,
        DeviceCommand::Transfer {
            id: 1,
            org: None,
            owner: None,
            no_owner: true,
        },
    );
    assert_eq!(text, "Device 1 \"dev1\" is now in org 2 with owner none.\n");
    assert_eq!(
        requests(&seen),
        [
            Request::DeleteDevice { device: 3 },
            Request::DeleteDevice { device: 3 },
            Request::TransferDevice {
                device: 1,
                org: Some(OrgId(2)),
                owner: Some(Some(UserId(7)))
            },
            Request::TransferDevice {
                device: 1,
                org: None,
                owner: Some(None)
            },
        ]
    );
}
