//! The accounts REST API end to end, where it must refuse: Staff cannot make an Admin (by
//! invitation or by changing a role) and nothing is written when refused; REST logins share
//! the per-address throttle (the right password is refused while an address is blocked,
//! another address is not, and the block ends); re-provisioning closes the live device within
//! a second and retires the old token; a device announcing another template is closed and the
//! logs say why; an API key does only what it was given and cannot mint a broader key. The
//! real gateway and store binaries, curl as the HTTP client, loopback only, every wait bounded.

#![allow(clippy::unwrap_used)] // test: a failed unwrap is a failed test

use portcullis_e2e::device::{Device, Got};
use portcullis_e2e::rest::{Rest, create_user, root_admin_session};
use portcullis_e2e::{Gateway, TEST_TEMPLATE, json_lines, wait_for};
use portcullis_protocol::{Command, Status};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The users of `org` as its Admin lists them.
fn users(rest: &Rest, session: &str, org: u32) -> Value {
    rest.get(&format!("/orgs/{org}/users"), session)
        .expect(200)
        .clone()
}

#[test]
fn staff_cannot_make_an_admin_and_a_refusal_writes_nothing() {
    let gw = Gateway::start("");
    let rest = Rest::new(&gw);
    let root = root_admin_session(&gw, &rest);
    let (staff_id, staff_pw) = create_user(&gw, "staff@example.com", 1, "staff");
    let (plain_id, _) = create_user(&gw, "plain@example.com", 1, "user");
    let staff = rest.session("staff@example.com", &staff_pw);
    let before = users(&rest, &root, 1);
    let outbox_before = portcullis_e2e::rest::outbox(&gw.data_dir).len();

    // Invite an Admin: refused.
    let invite = rest.post(
        "/orgs/1/invitations",
        Some(&staff),
        &json!({"email": "would.be.admin@example.com", "role": 1}),
    );
    assert_eq!(invite.status, 403, "{invite:?}");
    // Raise a User, or oneself, to Admin: refused.
    for target in [plain_id, staff_id] {
        let raise = rest.patch(&format!("/users/{target}"), &staff, &json!({"role": 1}));
        assert_eq!(raise.status, 403, "raising user {target}: {raise:?}");
    }
    // Nor to a custom role holding more than Staff does (an Admin in all but name).
    let wide = rest.post(
        "/orgs/1/roles",
        Some(&root),
        &json!({"name": "Ops lead", "permissions": ["users.view", "api_keys.manage",
                "roles.create", "audit_log.view"]}),
    );
    let wide = wide.expect(201)["id"].as_u64().unwrap();
    let raise = rest.patch(
        &format!("/users/{plain_id}"),
        &staff,
        &json!({"role": wide}),
    );
    assert_eq!(raise.status, 403, "giving a wider custom role: {raise:?}");
    let invite = rest.post(
        "/orgs/1/invitations",
        Some(&staff),
        &json!({"email": "wide@example.com", "role": wide}),
    );
    assert_eq!(
        invite.status, 403,
        "inviting into a wider custom role: {invite:?}"
    );

    // Nothing written: the same users with the same roles, and no invitation mail.
    assert_eq!(users(&rest, &root, 1), before);
    assert_eq!(
        portcullis_e2e::rest::outbox(&gw.data_dir).len(),
        outbox_before
    );
    let me = rest.get("/me", &staff);
    assert_eq!(me.expect(200)["user"]["role"], 2, "{me:?}");

    // What Staff may do still works: invite a User (so the refusals above are about Admin).
    let invite = rest.post(
        "/orgs/1/invitations",
        Some(&staff),
        &json!({"email": "new.user@example.com", "role": 3}),
    );
    assert_eq!(invite.expect(201)["role"], 3, "{invite:?}");
}

#[test]
fn failed_rest_logins_block_the_address_not_others_and_the_block_ends() {
    const BLOCK_SECS: u64 = 3;
    let gw = Gateway::start(&format!(
        "[app]\nlogin_block_after_failures = 5\nlogin_block_secs = {BLOCK_SECS}\n"
    ));
    let rest = Rest::new(&gw);
    let (_, password) = create_user(&gw, "ops@example.com", 1, "staff");
    for guess in 0..5 {
        let reply = rest.login("ops@example.com", &format!("guess {guess}"));
        assert_eq!(reply.status, 401, "guess {guess}: {reply:?}");
    }
    // The right password now: refused without being checked.
    let blocked = rest.login("ops@example.com", &password);
    assert_eq!(blocked.status, 429, "{blocked:?}");
    let retry: u64 = blocked
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {blocked:?}"))
        .parse()
        .unwrap();
    assert!((1..=BLOCK_SECS).contains(&retry), "Retry-After {retry}");
    assert!(blocked.message().is_some_and(|m| m.contains("retry in")));

    // Another source address logs in.
    let other = rest.from_source(Ipv4Addr::new(127, 0, 0, 2));
    assert_eq!(other.login("ops@example.com", &password).status, 200);

    // After the window, the first address logs in again.
    std::thread::sleep(Duration::from_secs(retry) + Duration::from_millis(300));
    let reply = rest.login("ops@example.com", &password);
    assert_eq!(reply.status, 200, "after the block: {reply:?}");
}

#[test]
fn reprovisioning_closes_the_live_device_within_a_second_and_retires_the_old_token() {
    let gw = Gateway::start("");
    let rest = Rest::new(&gw);
    let root = root_admin_session(&gw, &rest);
    let (device, old_token) = gw.create_device("boiler");
    let mut live = Device::plain(gw.plain_port);
    live.login(&old_token, Status::Ok);
    live.info(10);
    live.set_read_timeout(Duration::from_secs(5));

    let asked = Instant::now();
    let reply = rest.post(
        &format!("/devices/{device}/reprovision"),
        Some(&root),
        &json!({}),
    );
    let answered = Instant::now();
    let new_token = reply.expect(200)["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, old_token);
    assert_eq!(live.recv(), Got::Closed, "the live session must end");
    let closed = Instant::now();
    let since_answer = closed - answered;
    eprintln!(
        "re-provision: the REST call took {:?}; the device was closed {since_answer:?} after the answer ({:?} after the request)",
        answered - asked,
        closed - asked
    );
    assert!(
        since_answer < Duration::from_secs(1),
        "closed {since_answer:?} after the answer"
    );

    let mut old = Device::plain(gw.plain_port);
    old.login(&old_token, Status::InvalidToken);
    let mut new = Device::plain(gw.plain_port);
    new.login(&new_token, Status::Ok);
    new.info(10);

    // Deleting the device ends its session the same way, and its token with it.
    new.set_read_timeout(Duration::from_secs(5));
    let asked = Instant::now();
    rest.delete(&format!("/devices/{device}"), &root)
        .expect(204);
    assert_eq!(
        new.recv(),
        Got::Closed,
        "a deleted device's session must end"
    );
    let took = asked.elapsed();
    eprintln!("delete: the device was closed {took:?} after the request");
    assert!(
        took < Duration::from_secs(2),
        "closed {took:?} after the request"
    );
    Device::plain(gw.plain_port).login(&new_token, Status::InvalidToken);
}

#[test]
fn a_device_announcing_another_template_is_closed_and_the_logs_say_why() {
    let temp = tempfile::tempdir().unwrap();
    let security = temp.path().join("security.log");
    let gw = Gateway::start_in(
        &temp.path().join("data"),
        &format!("[log]\nsecurity = {:?}\n", security.display().to_string()),
    );
    let (device, token) = gw.create_device("sensor");

    // Its own template is accepted.
    let mut honest = Device::plain(gw.plain_port);
    honest.login(&token, Status::Ok);
    let id = honest.send(
        Command::Internal,
        &[b"ver", b"1.3.2", b"tmpl", TEST_TEMPLATE.as_bytes()],
    );
    honest.expect_status(id, Status::Ok);
    drop(honest);

    // Another is refused unanswered and closed.
    let mut wrong = Device::plain(gw.plain_port);
    wrong.login(&token, Status::Ok);
    wrong.send(
        Command::Internal,
        &[
            b"ver",
            b"9.9.9",
            b"tmpl",
            b"TMPLforeign",
            b"dev",
            b"impostor",
        ],
    );
    wrong.expect_closed();

    let events = wait_for("the security event", Duration::from_secs(5), || {
        let found: Vec<Value> = json_lines(&security)
            .into_iter()
            .filter(|e| e["kind"] == "device_template_mismatch")
            .collect();
        (!found.is_empty()).then_some(found)
    });
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    let reason = event["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("TMPLforeign") && reason.contains(TEST_TEMPLATE),
        "{event}"
    );
    assert!(
        event["subject"]
            .as_str()
            .is_some_and(|s| s.contains(&format!("device {device}")) && s.contains("127.0.0.1")),
        "{event}"
    );
    gw.wait_for_log("TMPLforeign", Duration::from_secs(5));
    assert_eq!(
        gw.scrape()
            .get("portcullis_device_template_mismatches_total", &[]),
        Some(1.0)
    );
    // The impostor's info was not stored.
    let stored = gw.device(device);
    assert!(
        !stored.to_string().contains("impostor") && !stored.to_string().contains("9.9.9"),
        "{stored}"
    );
}

#[test]
fn an_api_key_does_only_what_it_was_given_and_cannot_mint_a_broader_key() {
    let gw = Gateway::start("");
    let rest = Rest::new(&gw);
    let root = root_admin_session(&gw, &rest);
    let (device, _) = gw.create_device("listed");

    let made = rest.post(
        "/api-keys",
        Some(&root),
        &json!({"name": "dashboard", "permissions": ["org_devices.view"]}),
    );
    let made = made.expect(201).clone();
    let secret = made["secret"].as_str().unwrap().to_owned();
    let key_id = made["key"]["id"].as_u64().unwrap();
    assert!(
        secret.starts_with(&format!("pk_{key_id}_")),
        "the key's shape: {secret}"
    );
    assert_eq!(made["key"]["permissions"], json!(["org_devices.view"]));

    // It lists devices.
    let listed = rest.get("/devices", &secret);
    let listed = listed.expect(200)["devices"].as_array().unwrap().clone();
    assert!(listed.iter().any(|d| d["id"] == device), "{listed:?}");
    // It does not create one, and nothing is created.
    let create = rest.post(
        "/devices",
        Some(&secret),
        &json!({"name": "sneaky", "org": 1, "template": TEST_TEMPLATE}),
    );
    assert_eq!(create.status, 403, "{create:?}");
    let after = rest.get("/devices", &root);
    let after = after.expect(200)["devices"].as_array().unwrap().clone();
    assert_eq!(after.len(), listed.len(), "{after:?}");

    // It cannot mint a key with more than it has (nor, lacking api_keys.manage, any key).
    let keys = || -> Vec<(Value, Value, Value)> {
        let list = rest.get("/api-keys", &root);
        let list = list.expect(200).as_array().unwrap().clone();
        list.into_iter()
            .map(|k| (k["id"].clone(), k["name"].clone(), k["permissions"].clone()))
            .collect()
    };
    let keys_before = keys();
    for permissions in [
        json!(["org_devices.view", "devices.create"]),
        json!(["api_keys.manage"]),
        json!(["org_devices.view"]),
    ] {
        let minted = rest.post(
            "/api-keys",
            Some(&secret),
            &json!({"name": "wider", "permissions": permissions}),
        );
        assert_eq!(minted.status, 403, "{permissions}: {minted:?}");
        assert!(minted.json.get("secret").is_none());
    }
    assert_eq!(keys(), keys_before);
    // A key that may manage keys mints a narrower one, never a wider one.
    let manager = rest.post(
        "/api-keys",
        Some(&root),
        &json!({"name": "key manager", "permissions": ["api_keys.manage", "org_devices.view"]}),
    );
    let manager = manager.expect(201)["secret"].as_str().unwrap().to_owned();
    let narrower = rest.post(
        "/api-keys",
        Some(&manager),
        &json!({"name": "narrower", "permissions": ["org_devices.view"]}),
    );
    narrower.expect(201);
    let wider = rest.post(
        "/api-keys",
        Some(&manager),
        &json!({"name": "wider", "permissions": ["org_devices.view", "devices.create"]}),
    );
    assert_eq!(wider.status, 403, "{wider:?}");
    assert_eq!(
        keys().len(),
        keys_before.len() + 2,
        "only the manager and the narrower key"
    );
    // A revoked key stops working.
    rest.delete(&format!("/api-keys/{key_id}"), &root)
        .expect(204);
    assert_eq!(rest.get("/devices", &secret).status, 401);

    // Listing keys never shows a secret.
    let listing = rest.get("/api-keys", &root);
    assert!(!String::from_utf8_lossy(&listing.body).contains(&secret));
}
