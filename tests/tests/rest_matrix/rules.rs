//! The rules of the REST API that `authz::allows` on one subject does not say, hand-written
//! and run in the matrix's world after the matrix: nobody grants what they lack; a user's own
//! account is theirs to read and rename but not to promote; a reference in a body (an owner, a
//! template, a role, a new parent or organization) to something the caller cannot see answers
//! exactly like a reference to nothing; a template of an organization above is used, not
//! managed; credentials end when they should (logout, force logout, suspension); an API key
//! acts with its own permissions only.

use super::world::{Kind, Slot, World};
use portcullis_e2e::TEST_TEMPLATE;
use portcullis_protocol::authz::{BuiltInRole, Permission};
use serde_json::{Value, json};

const MISSING: &str = "999999";
const MISSING_TEMPLATE: &str = "TMPLmissing999999";

/// What the probes found.
struct Probes {
    calls: u32,
    failures: Vec<String>,
}

impl Probes {
    /// `role` calls `method path` with `body` and must get `status`.
    fn expect(
        &mut self,
        w: &mut World,
        what: &str,
        role: BuiltInRole,
        call: (&str, &str, Option<Value>),
        status: u16,
    ) -> Value {
        let (method, path, body) = call;
        let reply = w.call(role, method, path, body);
        self.calls += 1;
        if reply.status != status {
            self.failures.push(format!(
                "{what}: {method} {path} as {role:?}: expected {status}, got {} {}",
                reply.status,
                reply.text()
            ));
        }
        reply.json()
    }

    /// `role` sends `template` (a path and a JSON body, `@ID@` standing for the id) once with
    /// `hidden`, an id it may not see, and once with `missing`: both must be refused alike, with
    /// a 4xx, and the same body once the id is swapped.
    fn like_missing(
        &mut self,
        w: &mut World,
        what: &str,
        role: BuiltInRole,
        method: &str,
        template: (&str, &str),
        hidden: &str,
        missing: &str,
    ) {
        let mut send = |id: &str| {
            let path = template.0.replace("@ID@", id);
            let body: Value = serde_json::from_str(&template.1.replace("@ID@", id)).unwrap();
            let body = (!body.is_null()).then_some(body);
            w.call(role, method, &path, body)
        };
        let seen = send(hidden);
        let none = send(missing);
        self.calls += 2;
        let same =
            seen.status == none.status && seen.text().replace(hidden, missing) == none.text();
        if !(400..500).contains(&seen.status) || !same {
            self.failures.push(format!(
                "{what}: {method} {} as {role:?} with a hidden id ({hidden}) must read like a missing one ({missing}):\n  hidden:  {} {}\n  missing: {} {}",
                template.0,
                seen.status,
                seen.text(),
                none.status,
                none.text()
            ));
        }
    }
}

/// Runs every rule; returns the calls made and the failures.
pub fn check(w: &mut World) -> (u32, Vec<String>) {
    let mut p = Probes {
        calls: 0,
        failures: Vec::new(),
    };
    grants(w, &mut p);
    own_account(w, &mut p);
    references(w, &mut p);
    templates_above(w, &mut p);
    credentials(w, &mut p);
    keys(w, &mut p);
    framing(w, &mut p);
    logins(w, &mut p);
    (p.calls, p.failures)
}

/// Nobody grants what they lack.
fn grants(w: &mut World, p: &mut Probes) {
    use BuiltInRole::{Admin, Staff};
    let a = w.a_path.org().0;
    let user = w.id(Kind::User, Slot::Own);
    let wide = w.wide_role();
    let wide_id: u32 = wide.parse().unwrap();
    let invite =
        |role: u32, n: u32| json!({"email": format!("grant-{n}@example.com"), "role": role});
    let invitations = format!("/orgs/{a}/invitations");
    let user_path = format!("/users/{user}");
    let cases: [(&str, BuiltInRole, (&str, &str, Option<Value>), u16); 7] = [
        (
            "Staff invites an Admin",
            Staff,
            ("POST", &invitations, Some(invite(1, 1))),
            403,
        ),
        (
            "Staff invites to a role beyond its own",
            Staff,
            ("POST", &invitations, Some(invite(wide_id, 2))),
            403,
        ),
        (
            "Staff promotes to Admin",
            Staff,
            ("PATCH", &user_path, Some(json!({"role": 1}))),
            403,
        ),
        (
            "Staff hands out a role beyond its own",
            Staff,
            ("PATCH", &user_path, Some(json!({"role": wide_id}))),
            403,
        ),
        (
            "Staff hands out User, within its own",
            Staff,
            ("PATCH", &user_path, Some(json!({"role": 3}))),
            200,
        ),
        (
            "Staff invites a User",
            Staff,
            ("POST", &invitations, Some(invite(3, 3))),
            201,
        ),
        (
            "Admin hands out the wide role",
            Admin,
            ("PATCH", &user_path, Some(json!({"role": wide_id}))),
            200,
        ),
    ];
    for (what, role, call, status) in cases {
        p.expect(w, what, role, call, status);
    }
    let all: Vec<&str> = Permission::ALL.iter().map(|p| p.name()).collect();
    let key = json!({"name": "all", "permissions": all});
    p.expect(
        w,
        "Admin makes a key with every permission",
        Admin,
        ("POST", "/api-keys", Some(key)),
        201,
    );
}

/// A user's own account: read and rename, never promote; a User lists only its devices.
fn own_account(w: &mut World, p: &mut Probes) {
    let u = BuiltInRole::User;
    let me = w.caller(u).id;
    let mine = format!("/users/{me}");
    p.expect(w, "a User reads itself", u, ("GET", &mine, None), 200);
    p.expect(
        w,
        "a User renames itself",
        u,
        ("PATCH", &mine, Some(json!({"name": "me"}))),
        200,
    );
    p.expect(
        w,
        "a User cannot change its own role",
        u,
        ("PATCH", &mine, Some(json!({"role": 1}))),
        403,
    );
    let a = w.a_path.org().0;
    for query in [String::new(), format!("?org={a}&subtree=true")] {
        let listed = p.expect(
            w,
            "a User lists its devices",
            u,
            ("GET", &format!("/devices{query}"), None),
            200,
        );
        let devices = listed["devices"].as_array().cloned().unwrap_or_default();
        let owned = w.id(Kind::Device, Slot::Owned);
        let others = devices.iter().any(|d| d["owner"] != json!(me));
        if others || !devices.iter().any(|d| d["id"].to_string() == owned) {
            p.failures.push(format!(
                "GET /devices{query} as User holds its device {owned} and no other's: {devices:?}"
            ));
        }
    }
}

/// A reference in a body to something hidden answers like a reference to nothing.
fn references(w: &mut World, p: &mut Probes) {
    use BuiltInRole::{Admin, Staff};
    let a = w.a_path.org().0;
    let a1 = w.id(Kind::Org, Slot::Child);
    let b = w.id(Kind::Org, Slot::Sibling);
    let user_b = w.id(Kind::User, Slot::Sibling);
    let role_b = w.id(Kind::Role, Slot::Sibling);
    let template_b = w.id(Kind::Template, Slot::Sibling);
    let device_a = w.id(Kind::Device, Slot::Own);
    let user_a = w.id(Kind::User, Slot::Own);
    let root_admin = w.root_admin().to_string();
    let root_dev = root_device(w);
    let new_device =
        format!(r#"{{"name":"x","org":{a},"template":"{TEST_TEMPLATE}","owner":@ID@}}"#);
    let transfer = format!("/devices/{device_a}/transfer");
    let invitations = format!("/orgs/{a}/invitations");
    let user_path = format!("/users/{user_a}");
    let a1_path = format!("/orgs/{a1}");
    for role in [Admin, Staff] {
        p.like_missing(
            w,
            "a new device owned by a sibling org's user",
            role,
            "POST",
            ("/devices", &new_device),
            &user_b,
            MISSING,
        );
        p.like_missing(
            w,
            "a new device owned by the root org's admin",
            role,
            "POST",
            ("/devices", &new_device),
            &root_admin,
            MISSING,
        );
        let with_template = format!(r#"{{"name":"x","org":{a},"template":"@ID@"}}"#);
        p.like_missing(
            w,
            "a new device of a sibling org's template",
            role,
            "POST",
            ("/devices", &with_template),
            &template_b,
            MISSING_TEMPLATE,
        );
        p.like_missing(
            w,
            "a transfer to a sibling org's user",
            role,
            "POST",
            (&transfer, r#"{"owner":@ID@}"#),
            &user_b,
            MISSING,
        );
        p.like_missing(
            w,
            "a transfer to a sibling org",
            role,
            "POST",
            (&transfer, r#"{"org":@ID@}"#),
            &b,
            MISSING,
        );
        p.like_missing(
            w,
            "an invitation to a sibling org's role",
            role,
            "POST",
            (&invitations, r#"{"email":"r@example.com","role":@ID@}"#),
            &role_b,
            MISSING,
        );
        p.like_missing(
            w,
            "a user given a sibling org's role",
            role,
            "PATCH",
            (&user_path, r#"{"role":@ID@}"#),
            &role_b,
            MISSING,
        );
        p.like_missing(
            w,
            "a root org device",
            role,
            "GET",
            ("/devices/@ID@", "null"),
            &root_dev,
            MISSING,
        );
        p.like_missing(
            w,
            "the root org's admin",
            role,
            "GET",
            ("/users/@ID@", "null"),
            &root_admin,
            MISSING,
        );
    }
    p.like_missing(
        w,
        "a child org moved below a sibling",
        Admin,
        "PATCH",
        (&a1_path, r#"{"parent":@ID@}"#),
        &b,
        MISSING,
    );
    p.expect(
        w,
        "an org moved below its own child",
        Admin,
        (
            "PATCH",
            &format!("/orgs/{a}"),
            Some(json!({"parent": a1.parse::<u32>().unwrap()})),
        ),
        400,
    );
    p.expect(
        w,
        "a built-in role deleted",
        Admin,
        ("DELETE", "/roles/1", None),
        400,
    );
}

/// The root organization's device (made once, by the root Admin).
fn root_device(w: &mut World) -> String {
    let body = json!({"name": "root-device", "org": 1, "template": TEST_TEMPLATE});
    let reply = w.call_as_root("POST", "/devices", Some(body));
    assert_eq!(reply.status, 201, "a root device: {}", reply.text());
    reply.json()["device"]["id"].to_string()
}

/// A template of an organization above is used from below, not managed.
fn templates_above(w: &mut World, p: &mut Probes) {
    use BuiltInRole::{Admin, Staff};
    let path = format!("/templates/{TEST_TEMPLATE}");
    p.expect(
        w,
        "the root's template seen from below",
        Staff,
        ("GET", &path, None),
        200,
    );
    p.expect(
        w,
        "the root's template renamed from below",
        Admin,
        ("PATCH", &path, Some(json!({"name": "mine"}))),
        403,
    );
    p.expect(
        w,
        "the root's template deleted from below",
        Admin,
        ("DELETE", &path, None),
        403,
    );
}

/// Sessions and keys end when they should; a key acts with its own permissions.
fn credentials(w: &mut World, p: &mut Probes) {
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

impl Probes {
    /// A call with `bearer` that must answer `status`.
    fn with(
        &mut self,
        w: &mut World,
        what: &str,
        bearer: &str,
        call: (&str, &str, Option<Value>),
        status: u16,
    ) -> Value {
        let (method, path, body) = call;
        let reply = w.call_with(Some(bearer), method, path, body);
        self.calls += 1;
        if reply.status != status {
            self.failures.push(format!(
                "{what}: {method} {path}: expected {status}, got {} {}",
                reply.status,
                reply.text()
            ));
        }
        reply.json()
    }
}

/// An API key acts with its own set cut to its creator's current role, mints nothing beyond
/// it, and ends with its revocation or its creator's suspension or deletion.
fn keys(w: &mut World, p: &mut Probes) {
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
fn logins(w: &mut World, p: &mut Probes) {
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
fn framing(w: &mut World, p: &mut Probes) {
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
