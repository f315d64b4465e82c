//! The accounts REST API end to end, the way people use it: a stranger signs up, verifies the
//! mailed link, logs in, makes a template and a device, and the real `blynklib` device writes a
//! pin with the token shown once; organizations keep their devices from their siblings (a
//! hidden device answers exactly like a missing one) while the parent's Admin sees them; every
//! change lands in the audit log with its actor and source address; and an app WebSocket opened
//! with a session token ends when that session logs out. The real gateway and store binaries,
//! curl as the HTTP client, loopback only, every wait bounded.

#![allow(clippy::unwrap_used)] // test: a failed unwrap is a failed test

use portcullis_e2e::app::App;
use portcullis_e2e::device::{Device, client_config};
use portcullis_e2e::rest::{
    self, FIRST_ADMIN, Reply, Rest, create_user, link_token, root_admin_session, wait_for_mail,
};
use portcullis_e2e::{Gateway, python, wait_for};
use portcullis_protocol::Status;
use portcullis_protocol::app::{AppEvent, AppRequest, client_hash};
use serde_json::{Value, json};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const PY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the real blynklib client: logs in with `token` on the plain port and writes `value`
/// to virtual pin `pin`.
fn blynklib_write(port: u16, token: &str, pin: u8, value: &str) -> Value {
    let port = port.to_string();
    let token = format!("--token={token}");
    let pin = pin.to_string();
    let out = python(
        "blynk_client.py",
        &["blynklib", &port, &token, "--write", &pin, value],
        PY_TIMEOUT,
    );
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad output from the client ({e}): {out}"))
}

#[test]
fn a_stranger_signs_up_verifies_logs_in_and_a_real_device_uses_the_token_shown_once() {
    let gw = Gateway::start("[accounts]\nsignup = true\n");
    let rest = Rest::new(&gw);
    let email = "maker@example.com";
    let password = "a long and private passphrase";

    let signed_up = rest.post(
        "/auth/signup",
        None,
        &json!({"email": email, "name": "Mara Maker", "org_name": "Maker Labs",
                "hash": client_hash(password, email)}),
    );
    let user = signed_up.expect(201).clone();
    assert_eq!(user["email"], email, "{user}");
    // Not usable before the address is verified, and the refusal does not say why.
    let early = rest.login(email, password);
    assert_eq!(early.status, 401, "{:?}", early);

    // The verification mail is in the outbox; its link carries the single-use token.
    let mail = wait_for_mail(&gw.data_dir, email);
    let token = link_token(&mail, "verify").unwrap_or_else(|| panic!("no verify link in:\n{mail}"));
    let verified = rest.post("/auth/verify", None, &json!({"token": token}));
    assert_eq!(verified.expect(200)["status"], "active", "{:?}", verified);
    let again = rest.post("/auth/verify", None, &json!({"token": token}));
    assert!(
        (400..500).contains(&again.status),
        "a verification token works once: {again:?}"
    );

    let session = rest.session(email, password);
    let me = rest.get("/me", &session);
    let me = me.expect(200);
    let org = me["org"]["id"].as_u64().unwrap();
    assert_ne!(org, 1, "a sign-up gets an organization of its own: {me}");
    assert_eq!(me["org"]["name"], "Maker Labs", "{me}");

    let template = rest.post(
        &format!("/orgs/{org}/templates"),
        Some(&session),
        &json!({"name": "Thermostat", "datastreams": [
            {"name": "temperature", "pin": "V5", "type": "string"}
        ]}),
    );
    let template = template.expect(201)["id"].as_str().unwrap().to_owned();
    assert!(template.starts_with("TMPL"), "{template}");

    let created = rest.post(
        "/devices",
        Some(&session),
        &json!({"name": "hall thermostat", "org": org, "template": template}),
    );
    let created = created.expect(201).clone();
    let device = created["device"]["id"].as_u64().unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(created["device"]["template"], template.as_str());
    // Shown once: neither reading the device nor listing devices tells the token again.
    let shown = rest.get(&format!("/devices/{device}"), &session);
    assert_eq!(shown.expect(200)["id"], device);
    let listed = rest.get(&format!("/devices?org={org}"), &session);
    listed.expect(200);
    for reply in [&shown, &listed] {
        let text = String::from_utf8_lossy(&reply.body);
        assert!(!text.contains(&token), "the token was shown again: {text}");
    }

    // The real Python device logs in with it and writes a pin.
    let out = blynklib_write(gw.plain_port, &token, 5, "21.5");
    assert_eq!(out["connected"], true, "{out}");
    wait_for("V5 stored", Duration::from_secs(5), || {
        (gw.pin(device, "V5").as_deref() == Some("21.5")).then_some(())
    });
    // The whole story is in the new organization's audit log, each step with its address
    // (sign-up and verification act for nobody, yet name where they came from).
    let audit = rest.get(&format!("/audit?org={org}"), &session);
    let steps: Vec<(String, String)> = audit
        .expect(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["from"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let from = "127.0.0.1".to_owned();
    assert_eq!(
        steps,
        ["SignUp", "ConsumeToken", "CreateTemplate", "CreateDevice"]
            .map(|a| (a.to_owned(), from.clone())),
        "{audit:?}"
    );
    let seen = rest.get(&format!("/devices/{device}"), &session);
    assert!(
        seen.expect(200)["last_seen_ms"].as_u64().is_some(),
        "{seen:?}"
    );
}

/// Every header but `date`, lower-cased, in order.
fn headers_without_date(reply: &Reply) -> Vec<(String, String)> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n != "date")
        .cloned()
        .collect()
}

/// The answers a user gets for `device`: read, re-provision, transfer, delete.
fn device_calls(rest: &Rest, session: &str, device: u64) -> Vec<(&'static str, Reply)> {
    let path = format!("/devices/{device}");
    vec![
        ("GET", rest.get(&path, session)),
        (
            "reprovision",
            rest.post(&format!("{path}/reprovision"), Some(session), &json!({})),
        ),
        (
            "transfer",
            rest.post(
                &format!("{path}/transfer"),
                Some(session),
                &json!({"owner": null}),
            ),
        ),
        ("DELETE", rest.delete(&path, session)),
    ]
}

#[test]
fn a_sibling_organization_gets_the_404_of_a_missing_device_and_the_parent_admin_sees_it() {
    let gw = Gateway::start("");
    let rest = Rest::new(&gw);
    let root = root_admin_session(&gw, &rest);
    let mut orgs = Vec::new();
    for name in ["North", "South"] {
        let made = rest.post("/orgs", Some(&root), &json!({"parent": 1, "name": name}));
        orgs.push(made.expect(201)["id"].as_u64().unwrap() as u32);
    }
    let (north, south) = (orgs[0], orgs[1]);
    let (_, north_pw) = create_user(&gw, "admin@north.example", north, "admin");
    let north_admin = rest.session("admin@north.example", &north_pw);

    // Device ids are handed out in order: ask about the next one before it exists, then again
    // once it is South's. The answers must not differ by a single byte.
    let (probe, _) = gw.create_device_in("probe", south);
    let next = probe + 1;
    let before = device_calls(&rest, &north_admin, next);
    let (device, token) = gw.create_device_in("south pump", south);
    assert_eq!(
        device, next,
        "device ids are not sequential; the probe is wrong"
    );
    let after = device_calls(&rest, &north_admin, device);
    for ((call, missing), (_, hidden)) in before.iter().zip(&after) {
        assert_eq!(
            missing.status, 404,
            "{call} of a missing device: {missing:?}"
        );
        assert_eq!(
            hidden.status, 404,
            "{call} of a sibling's device: {hidden:?}"
        );
        assert_eq!(
            hidden.body,
            missing.body,
            "{call}: the sibling's device answers differently from a missing one: {} vs {}",
            String::from_utf8_lossy(&hidden.body),
            String::from_utf8_lossy(&missing.body)
        );
        assert_eq!(headers_without_date(hidden), headers_without_date(missing));
    }
    // Not listed either.
    let listed = rest.get("/devices", &north_admin);
    let listed = listed.expect(200)["devices"].as_array().unwrap().clone();
    assert!(
        listed.iter().all(|d| d["id"] != device),
        "North lists South's device: {listed:?}"
    );

    // The sibling organization itself is hidden the same way: ask about the next org id
    // before it exists, then once it is a sibling of North's.
    let org_calls = |org: u32| {
        vec![
            rest.get(&format!("/orgs/{org}"), &north_admin),
            rest.get(&format!("/devices?org={org}"), &north_admin),
            rest.get(&format!("/orgs/{org}/users"), &north_admin),
        ]
    };
    let next_org = south + 1;
    let before = org_calls(next_org);
    let east = rest.post("/orgs", Some(&root), &json!({"parent": 1, "name": "East"}));
    assert_eq!(
        east.expect(201)["id"],
        next_org,
        "org ids are not sequential"
    );
    for (missing, hidden) in before.iter().zip(&org_calls(next_org)) {
        assert_eq!(missing.status, 404, "{missing:?}");
        assert_eq!(
            (hidden.status, &hidden.body),
            (missing.status, &missing.body),
            "a sibling organization answers differently from a missing one: {} vs {}",
            String::from_utf8_lossy(&hidden.body),
            String::from_utf8_lossy(&missing.body)
        );
    }

    // And a sibling's user, the same way.
    let user_calls = |user: u64| {
        vec![
            rest.get(&format!("/users/{user}"), &north_admin),
            rest.patch(
                &format!("/users/{user}"),
                &north_admin,
                &json!({"name": "x"}),
            ),
            rest.call(
                "POST",
                &format!("/users/{user}/logout"),
                Some(&north_admin),
                None,
            ),
            rest.delete(&format!("/users/{user}"), &north_admin),
        ]
    };
    let me = rest.get("/me", &north_admin);
    let next_user = me.expect(200)["user"]["id"].as_u64().unwrap() + 1;
    let before = user_calls(next_user);
    let (south_user, _) = create_user(&gw, "user@south.example", south, "user");
    assert_eq!(south_user, next_user, "user ids are not sequential");
    for (missing, hidden) in before.iter().zip(&user_calls(next_user)) {
        assert_eq!(missing.status, 404, "{missing:?}");
        assert_eq!(
            (hidden.status, &hidden.body),
            (missing.status, &missing.body),
            "a sibling's user answers differently from a missing one: {} vs {}",
            String::from_utf8_lossy(&hidden.body),
            String::from_utf8_lossy(&missing.body)
        );
    }
    let south_user = rest.get(&format!("/users/{south_user}"), &root);
    assert_eq!(south_user.expect(200)["name"], "user@south.example");

    // Nothing happened to it: the parent's Admin sees it, and its token still logs in.
    let seen = rest.get(&format!("/devices/{device}"), &root);
    assert_eq!(seen.expect(200)["org"], south, "{seen:?}");
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
}

/// The audit entries the caller can read (the root Admin reads the whole tree).
fn audit(rest: &Rest, session: &str) -> Vec<Value> {
    let reply = rest.get("/audit?org=1&subtree=true&limit=1000", session);
    reply.expect(200).as_array().unwrap().clone()
}

#[test]
fn every_change_is_in_the_audit_log_with_its_actor_and_source_address() {
    let gw = Gateway::start("");
    let admin = Rest::new(&gw).from_source(Ipv4Addr::new(127, 0, 0, 3));
    let session = root_admin_session(&gw, &admin);
    let me = admin.get("/me", &session);
    let admin_id = me.expect(200)["user"]["id"].as_u64().unwrap();
    let baseline = audit(&admin, &session).len();

    let org = admin.post(
        "/orgs",
        Some(&session),
        &json!({"parent": 1, "name": "Audited"}),
    );
    let org = org.expect(201)["id"].as_u64().unwrap();
    let template = admin.post(
        &format!("/orgs/{org}/templates"),
        Some(&session),
        &json!({"name": "Meter"}),
    );
    let template = template.expect(201)["id"].as_str().unwrap().to_owned();
    let device = admin.post(
        "/devices",
        Some(&session),
        &json!({"name": "meter 1", "org": org, "template": template}),
    );
    let device = device.expect(201)["device"]["id"].as_u64().unwrap();
    admin
        .post(
            &format!("/devices/{device}/reprovision"),
            Some(&session),
            &json!({}),
        )
        .expect(200);
    let invited = admin.post(
        &format!("/orgs/{org}/invitations"),
        Some(&session),
        &json!({"email": "new.hire@example.com", "role": 3}),
    );
    let invited = invited.expect(201)["id"].as_u64().unwrap();
    let key = admin.post(
        "/api-keys",
        Some(&session),
        &json!({"name": "exporter", "permissions": ["org_devices.view"]}),
    );
    let key = key.expect(201)["key"]["id"].as_u64().unwrap();
    admin
        .delete(&format!("/api-keys/{key}"), &session)
        .expect(204);
    admin
        .delete(&format!("/devices/{device}"), &session)
        .expect(204);

    let entries = audit(&admin, &session);
    let new: Vec<&Value> = entries.iter().skip(baseline).collect();
    let text: Vec<String> = new.iter().map(|e| e.to_string()).collect();
    // Each change made above, in order, by what it touched.
    let seen: Vec<(&str, &str)> = new
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default(),
                e["target"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let (org, device, user, key) = (
        format!("org {org}"),
        format!("device {device}"),
        format!("user {invited}"),
        format!("key {key}"),
    );
    let template = format!("template {template}");
    let expected: Vec<(&str, &str)> = vec![
        ("CreateOrg", &org),
        ("CreateTemplate", &template),
        ("CreateDevice", &device),
        ("ReprovisionDevice", &device),
        ("CreateUser", &user),
        ("CreateApiKey", &key),
        ("RevokeApiKey", &key),
        ("DeleteDevice", &device),
    ];
    assert_eq!(seen, expected, "the audit log:\n{}", text.join("\n"));
    for entry in &new {
        assert_eq!(
            entry["actor_user"], admin_id,
            "every change was the Admin's: {entry}"
        );
        assert!(
            entry["actor"]
                .as_str()
                .is_some_and(|a| a.contains(FIRST_ADMIN)),
            "the actor names the Admin: {entry}"
        );
        assert_eq!(entry["from"], "127.0.0.3", "the source address: {entry}");
    }
}

#[test]
fn an_app_logged_in_with_a_session_token_is_closed_when_the_session_logs_out() {
    let gw = Gateway::start("");
    let rest = Rest::new(&gw);
    let (viewer, password) = create_user(&gw, "viewer@example.com", 1, "user");
    let session = rest.session("viewer@example.com", &password);
    let tls = client_config(
        &gw.data_dir.join("tls").join("ca.pem"),
        &rustls::version::TLS13,
    );

    // A bad token is refused; the session's token logs in.
    let mut stranger = App::tls(gw.tls_port, tls.clone());
    stranger.request(|id| AppRequest::LoginToken {
        id,
        token: "A".repeat(43),
    });
    assert!(
        matches!(stranger.next_event(), Some(AppEvent::Error { .. }) | None),
        "a made-up session token must not log in"
    );
    let mut app = App::tls(gw.tls_port, tls.clone());
    app.send_text(&format!(
        r#"{{"type":"login_token","id":1,"token":"{session}"}}"#
    ));
    match app.next_event() {
        Some(AppEvent::LoggedIn { email, .. }) => assert_eq!(email, "viewer@example.com"),
        other => panic!("login_token with a live session: {other:?}"),
    }

    let logout = rest.call("POST", "/auth/logout", Some(&session), None);
    let logged_out = Instant::now();
    assert_eq!(logout.status, 204, "{logout:?}");
    // Closed within about a second (the revocation feed is polled every 250 ms).
    let code = app.close_code();
    let took = logged_out.elapsed();
    // 1008, policy violation: the credential no longer holds (docs/app-api.md).
    assert_eq!(code, Some(1008), "the close code");
    eprintln!("app WebSocket closed {took:?} after the logout answer");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    // The token is dead for REST too.
    assert_eq!(rest.get("/me", &session).status, 401);

    // Suspending the user ends their other sessions' WebSockets as well.
    let session = rest.session("viewer@example.com", &password);
    let mut app = App::tls(gw.tls_port, tls);
    app.send_text(&format!(
        r#"{{"type":"login_token","id":1,"token":"{session}"}}"#
    ));
    assert!(matches!(app.next_event(), Some(AppEvent::LoggedIn { .. })));
    let root = root_admin_session(&gw, &rest);
    let suspended = rest.patch(
        &format!("/users/{viewer}"),
        &root,
        &json!({"status": "suspended"}),
    );
    assert_eq!(suspended.expect(200)["status"], "suspended");
    assert_eq!(
        app.close_code(),
        Some(1008),
        "the suspended user's WebSocket"
    );
    assert_eq!(rest.login("viewer@example.com", &password).status, 401);
}

#[test]
fn an_invitation_and_a_password_reset_go_by_mail_and_their_links_work_once() {
    let gw = Gateway::start("");
    let rest = Rest::new(&gw);
    let root = root_admin_session(&gw, &rest);
    let email = "invitee@example.com";
    let invited = rest.post(
        "/orgs/1/invitations",
        Some(&root),
        &json!({"email": email, "name": "Ivo", "role": 3}),
    );
    let invited = invited.expect(201).clone();
    assert_eq!(invited["status"], "invited", "{invited}");
    assert!(
        invited.get("token").is_none(),
        "the secret goes by mail only"
    );

    let mail = wait_for_mail(&gw.data_dir, email);
    let token = link_token(&mail, "accept-invite")
        .unwrap_or_else(|| panic!("no invitation link in:\n{mail}"));
    let first = "the invitee's first password";
    let accept = json!({"token": token, "hash": client_hash(first, email)});
    let accepted = rest.post("/auth/invitation/accept", None, &accept);
    assert_eq!(accepted.expect(200)["status"], "active", "{accepted:?}");
    assert!((400..500).contains(&rest.post("/auth/invitation/accept", None, &accept).status));
    rest.session(email, first);

    // A reset is answered the same for an unknown address; only the real one gets mail.
    let asked = rest.post("/auth/password-reset", None, &json!({"email": email}));
    let unknown = rest.post(
        "/auth/password-reset",
        None,
        &json!({"email": "nobody@example.com"}),
    );
    assert_eq!(asked.status, 202, "{asked:?}");
    assert_eq!((unknown.status, &unknown.body), (asked.status, &asked.body));
    let reset_mail = rest::wait_for_mail_containing(&gw.data_dir, email, "#/reset-password?");
    let token = link_token(&reset_mail, "reset-password")
        .unwrap_or_else(|| panic!("no reset link in:\n{reset_mail}"));
    let second = "the invitee's second password";
    let confirm = json!({"token": token, "hash": client_hash(second, email)});
    rest.post("/auth/password-reset/confirm", None, &confirm)
        .expect(200);
    assert_eq!(rest.login(email, first).status, 401, "the old password");
    rest.session(email, second);
    assert!(
        !rest::outbox(&gw.data_dir)
            .iter()
            .any(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("nobody@example.com"))),
        "no mail to an address without an account"
    );
}
