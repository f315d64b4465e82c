//! The rules of the REST API that `authz::allows` on one subject does not say, hand-written
//! and run in the matrix's world after the matrix: nobody grants what they lack; a user's own
//! account is theirs to read and rename but not to promote; a reference in a body (an owner, a
//! template, a role, a new parent or organization) to something the caller cannot see answers
//! exactly like a reference to nothing; a template of an organization above is used, not
//! managed; a custom role's holder changes no role carrying more than it; the organization
//! above reads like a missing one. The rules about credentials are `sessions.rs`.

use super::sessions;
use super::world::{Kind, Slot, World};
use portcullis_e2e::TEST_TEMPLATE;
use portcullis_protocol::authz::{BuiltInRole, Permission};
use serde_json::{Value, json};

/// A grant rule: what it is, who tries, (method, path, body), the status it must get.
type GrantCase<'a> = (&'a str, BuiltInRole, (&'a str, &'a str, Option<Value>), u16);

const MISSING: &str = "999999";
const MISSING_TEMPLATE: &str = "TMPLmissing999999";

/// What the probes found.
pub struct Probes {
    pub calls: u32,
    pub failures: Vec<String>,
}

impl Probes {
    /// `role` calls `method path` with `body` and must get `status`.
    pub fn expect(
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
    #[allow(clippy::too_many_arguments)] // one call per rule reads as a table row
    pub fn like_missing(
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
    custom_roles(w, &mut p);
    above(w, &mut p);
    own_account(w, &mut p);
    references(w, &mut p);
    templates_above(w, &mut p);
    sessions::credentials(w, &mut p);
    sessions::keys(w, &mut p);
    sessions::framing(w, &mut p);
    sessions::logins(w, &mut p);
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
    let cases: [GrantCase<'_>; 7] = [
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
        if others
            || !devices
                .iter()
                .any(|d| d["id"].as_u64().is_some_and(|n| n.to_string() == owned))
        {
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

/// A custom role's holder grants only what the role carries, and cannot change a role that
/// carries more than it.
fn custom_roles(w: &mut World, p: &mut Probes) {
    let a = w.a_path.org().0;
    let carried = [
        "roles.view",
        "roles.create",
        "roles.edit",
        "users.view",
        "users.invite",
    ];
    let made = p.expect(
        w,
        "a role manager's role",
        BuiltInRole::Admin,
        (
            "POST",
            &format!("/orgs/{a}/roles"),
            Some(json!({"name": "managers", "permissions": carried})),
        ),
        201,
    );
    let role = made["id"].to_string();
    let manager = w.extra_user(&role);
    let roles = format!("/orgs/{a}/roles");
    let beyond = Some(json!({"name": "auditors", "permissions": ["audit_log.view"]}));
    p.with(
        w,
        "a role beyond the holder's own",
        &manager.token,
        ("POST", &roles, beyond),
        403,
    );
    let within = Some(json!({"name": "viewers", "permissions": ["users.view"]}));
    let made = p.with(
        w,
        "a role within the holder's own",
        &manager.token,
        ("POST", &roles, within),
        201,
    );
    let viewers = made["id"].to_string();
    let wide = w.wide_role();
    let rename = |name: &str| Some(json!({ "name": name }));
    p.with(
        w,
        "renaming a role that carries more",
        &manager.token,
        ("PATCH", &format!("/roles/{wide}"), rename("mine")),
        403,
    );
    p.with(
        w,
        "renaming a role within the holder's own",
        &manager.token,
        ("PATCH", &format!("/roles/{viewers}"), rename("watchers")),
        200,
    );
    let widen = Some(json!({"permissions": ["users.view", "devices.delete"]}));
    p.with(
        w,
        "widening a role beyond the holder's own",
        &manager.token,
        ("PATCH", &format!("/roles/{viewers}"), widen),
        403,
    );
    let invite = Some(json!({"email": "viewer@example.com", "role": 3}));
    p.with(
        w,
        "deleting a role that carries more",
        &manager.token,
        ("DELETE", &format!("/roles/{wide}"), None),
        403,
    );
    p.with(
        w,
        "inviting to User, which carries device permissions the holder lacks",
        &manager.token,
        ("POST", &format!("/orgs/{a}/invitations"), invite),
        403,
    );
}

/// The organization above the callers' reads like one that does not exist.
fn above(w: &mut World, p: &mut Probes) {
    for role in BuiltInRole::ALL {
        for path in [
            "/orgs/@ID@",
            "/orgs/@ID@/users",
            "/orgs/@ID@/roles",
            "/orgs?under=@ID@",
            "/devices?org=@ID@",
            "/audit?org=@ID@",
            "/api-keys?org=@ID@",
        ] {
            p.like_missing(
                w,
                "the root organization",
                role,
                "GET",
                (path, "null"),
                "1",
                MISSING,
            );
        }
    }
}

impl Probes {
    /// A call with `bearer` that must answer `status`.
    pub fn with(
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
