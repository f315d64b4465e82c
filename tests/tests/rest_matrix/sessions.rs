//! The REST rules about credentials, run after the matrix by `rules::check`: a session ends
//! with a logout, a force logout or a suspension; an API key acts with its own set cut to its
//! creator's current role, mints nothing beyond it, and ends with its revocation or its
//! creator's suspension or deletion; a refused login says only "wrong email or password" until
//! the address is blocked; and REST calls pipelined on one connection (with a chunked body, or
//! `Expect: 100-continue`) are answered in order.

use super::rules::Probes;
use super::world::World;
use portcullis_protocol::authz::BuiltInRole;
use serde_json::json;

/// Sessions and keys end when they should; a key acts with its own permissions.
pub fn credentials(w: &mut World, p: &mut Probes) {
    let me = w.call_with(None, "GET", "/me", None);
    p.calls += 1;
    if me.status != 401 || me.header("www-authenticate") != Some("Bearer") {
        p.failures.push(format!(
            "GET /me without a bearer: {} {}",
            me.status,
            me.text()
        ));
    }
    let garbage = w.call_with(Some("pk_1_nonsense"), "GET", "/me", None);
    p.calls += 1;
    if garbage.status != 401 {
        p.failures.push(format!(
            "GET /me with a made-up key: {} {}",
            garbage.status,
            garbage.text()
        ));
    }
    let admin = w.caller(BuiltInRole::Admin);
    let (email, password) = (admin.email.clone(), admin.password.clone());
    let session = w.login(&email, &password);
    let out = w.call_with(Some(&session), "POST", "/auth/logout", None);
    let after = w.call_with(Some(&session), "GET", "/me", None);
    p.calls += 2;
    if out.status != 204 || after.status != 401 {
        p.failures.push(format!(
            "a session after logout: {} then {}",
            out.status, after.status
        ));
    }
    // Force logout and suspension end a user's sessions.
    for (what, body) in [
        ("force logout", None),
        ("suspension", Some(json!({"status": "suspended"}))),
    ] {
        let victim = w.extra_user("user");
        let path = format!("/users/{}", victim.id);
        let (method, path) = match body {
            None => ("POST", format!("{path}/logout")),
            Some(_) => ("PATCH", path),
        };
        p.expect(
            w,
            what,
            BuiltInRole::Staff,
            (method, &path, body),
            if method == "POST" { 204 } else { 200 },
        );
        let after = w.call_with(Some(&victim.token), "GET", "/me", None);
        p.calls += 1;
        if after.status != 401 {
            p.failures.push(format!(
                "a session after {what}: GET /me answers {}",
                after.status
            ));
        }
    }
    // A key with audit_log.view reads the audit log and nothing else.
    let a = w.a_path.org().0;
    let made = p.expect(
        w,
        "an audit key",
        BuiltInRole::Admin,
        (
            "POST",
            "/api-keys",
            Some(json!({"name": "audit", "permissions": ["audit_log.view"]})),
        ),
        201,
    );
    let secret = made["secret"].as_str().unwrap_or_default().to_owned();
    for (method, path, status) in [
        ("GET", format!("/audit?org={a}"), 200),
        ("GET", format!("/audit?org={a}&format=jsonl"), 200),
        ("GET", format!("/orgs/{a}/users"), 403),
        ("GET", "/api-keys".to_owned(), 403),
        ("GET", "/me".to_owned(), 200),
    ] {
        let reply = w.call_with(Some(&secret), method, &path, None);
        p.calls += 1;
        if reply.status != status {
            p.failures.push(format!(
                "{method} {path} with an audit_log.view key: expected {status}, got {} {}",
                reply.status,
                reply.text()
            ));
        }
    }
}

/// An API key acts with its own set cut to its creator's current role, mints nothing beyond
/// it, and ends with its revocation or its creator's suspension or deletion.
pub fn keys(w: &mut World, p: &mut Probes) {
    let a = w.a_path.org().0;
    let audit = format!("/audit?org={a}");
    let key =
        |name: &str, permissions: &[&str]| Some(json!({"name": name, "permissions": permissions}));
    // Minting: a key holding api_keys.manage grants nothing it does not hold itself.
    let creator = w.extra_user("admin");
    let made = p.with(
        w,
        "a key-managing key",
        &creator.token,
        ("POST", "/api-keys", key("minter", &["api_keys.manage"])),
        201,
    );
    let minter = made["secret"].as_str().unwrap_or_default().to_owned();
    p.with(
        w,
        "a key mints a key beyond its own set",
        &minter,
        ("POST", "/api-keys", key("more", &["users.delete"])),
        403,
    );
    p.with(
        w,
        "a key mints a key within its own set",
        &minter,
        ("POST", "/api-keys", key("same", &["api_keys.manage"])),
        201,
    );
    // The creator's role now: demoted to User, the creator's audit key reads nothing.
    let made = p.with(
        w,
        "an audit key",
        &creator.token,
        ("POST", "/api-keys", key("audit", &["audit_log.view"])),
        201,
    );
    let secret = made["secret"].as_str().unwrap_or_default().to_owned();
    let key_id = made["key"]["id"].as_u64().unwrap_or_default();
    p.with(
        w,
        "the audit key before",
        &secret,
        ("GET", &audit, None),
        200,
    );
    p.expect(
        w,
        "demote the key's creator",
        BuiltInRole::Admin,
        (
            "PATCH",
            &format!("/users/{}", creator.id),
            Some(json!({"role": 3})),
        ),
        200,
    );
    p.with(
        w,
        "the audit key of a demoted creator",
        &secret,
        ("GET", &audit, None),
        403,
    );
    p.expect(
        w,
        "promote the key's creator again",
        BuiltInRole::Admin,
        (
            "PATCH",
            &format!("/users/{}", creator.id),
            Some(json!({"role": 1})),
        ),
        200,
    );
    p.with(
        w,
        "the audit key of a promoted creator",
        &secret,
        ("GET", &audit, None),
        200,
    );
    p.expect(
        w,
        "revoke the key",
        BuiltInRole::Admin,
        ("DELETE", &format!("/api-keys/{key_id}"), None),
        204,
    );
    p.with(w, "a revoked key", &secret, ("GET", "/me", None), 401);
    // Suspension and deletion of the creator end the keys.
    for (what, call) in [
        (
            "suspension",
            ("PATCH", Some(json!({"status": "suspended"}))),
        ),
        ("deletion", ("DELETE", None)),
    ] {
        let owner = w.extra_user("admin");
        let made = p.with(
            w,
            "a key",
            &owner.token,
            ("POST", "/api-keys", key(what, &["audit_log.view"])),
            201,
        );
        let secret = made["secret"].as_str().unwrap_or_default().to_owned();
        let status = if call.0 == "DELETE" { 204 } else { 200 };
        p.expect(
            w,
            what,
            BuiltInRole::Admin,
            (call.0, &format!("/users/{}", owner.id), call.1),
            status,
        );
        p.with(
            w,
            &format!("a key after its creator's {what}"),
            &secret,
            ("GET", &audit, None),
            401,
        );
    }
    // Logging out with a key is not an internal error.
    let made = p.with(
        w,
        "a key",
        &creator.token,
        ("POST", "/api-keys", key("logout", &["audit_log.view"])),
        201,
    );
    let secret = made["secret"].as_str().unwrap_or_default().to_owned();
    let out = w.call_with(Some(&secret), "POST", "/auth/logout", None);
    p.calls += 1;
    if out.status >= 500 {
        p.failures.push(format!(
            "POST /auth/logout with an API key: {} {}",
            out.status,
            out.text()
        ));
    }
    // A user ends their own sessions.
    let me = w.extra_user("user");
    p.with(
        w,
        "a user logs itself out everywhere",
        &me.token,
        ("POST", &format!("/users/{}/logout", me.id), None),
        204,
    );
    p.with(
        w,
        "a session after logging oneself out everywhere",
        &me.token,
        ("GET", "/me", None),
        401,
    );
}

/// A refused login says only "wrong email or password", and five refusals block the address.
/// Run last: the block holds for every later login from this address.
pub fn logins(w: &mut World, p: &mut Probes) {
    let known = w.caller(BuiltInRole::User).email.clone();
    let mut bodies = Vec::new();
    for email in [known.as_str(), "nobody@example.com"] {
        let body = json!({"email": email, "hash": "d3Jvbmc="});
        let reply = w.call_with(None, "POST", "/auth/login", Some(body));
        p.calls += 1;
        if reply.status != 401 {
            p.failures.push(format!(
                "a wrong login for {email}: {} {}",
                reply.status,
                reply.text()
            ));
        }
        bodies.push(reply.text());
    }
    if bodies[0] != bodies[1] {
        p.failures.push(format!(
            "a wrong password and an unknown email read differently: {bodies:?}"
        ));
    }
    let mut last = None;
    for _ in 0..6 {
        let body = json!({"email": "nobody@example.com", "hash": "d3Jvbmc="});
        last = Some(w.call_with(None, "POST", "/auth/login", Some(body)));
        p.calls += 1;
    }
    let blocked = last.expect("six attempts");
    if blocked.status != 429 || blocked.header("retry-after").is_none() {
        p.failures.push(format!(
            "a login after many failures: {} (Retry-After {:?}) {}",
            blocked.status,
            blocked.header("retry-after"),
            blocked.text()
        ));
    }
}

/// REST calls pipelined on one connection are answered in order; a body may be chunked or
/// wait for `100 Continue`.
pub fn framing(w: &mut World, p: &mut Probes) {
    let token = w.caller(BuiltInRole::Admin).token.clone();
    let a = w.a_path.org().0;
    let get = |path: &str| {
        format!("GET /api/v1{path} HTTP/1.1\r\nHost: l\r\nAuthorization: Bearer {token}\r\n\r\n")
    };
    let body = format!(r#"{{"name":"chunked-{a}"}}"#);
    let chunked = format!(
        "POST /api/v1/orgs/{a}/templates HTTP/1.1\r\nHost: l\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let wire = [
        get("/me"),
        get(&format!("/orgs/{a}")),
        chunked,
        get("/nowhere"),
        get("/me"),
    ]
    .concat();
    let replies = w.client.pipeline(wire.as_bytes(), 5);
    p.calls += 5;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    if statuses != [200, 200, 201, 404, 200] || replies[1].json()["id"] != json!(a) {
        p.failures.push(format!(
            "five pipelined calls: {statuses:?} {:?}",
            replies.iter().map(|r| r.text()).collect::<Vec<_>>()
        ));
    }
    let body = format!(r#"{{"name":"continued-{a}"}}"#);
    let expecting = format!(
        "POST /api/v1/orgs/{a}/templates HTTP/1.1\r\nHost: l\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let replies = w.client.pipeline(expecting.as_bytes(), 1);
    p.calls += 1;
    if replies[0].status != 201 {
        p.failures.push(format!(
            "a call sent with Expect: 100-continue: {} {}",
            replies[0].status,
            replies[0].text()
        ));
    }
}
