//! The REST API's permission matrix, end to end: against the real gateway and store, every
//! route of `docs/api/openapi.json` (which a gateway unit test holds equal to `REST_ROUTES`) is
//! called by an Admin, a Staff and a User of organization `a`, on subjects in `a` (own), `a1`
//! (child), `b` (sibling), a device owned by the User, and an id that does not exist. The
//! expected status is computed from the built-in roles' permissions with
//! `portcullis_protocol::authz::allows` and the permission each route names in [`ROWS`]; only
//! the anonymous account flows have hand-written answers. Rules asserted:
//!
//! - allowed → the route's 2xx;
//! - not visible (sibling org; below without "switch to sub-organizations"; another's device
//!   with only own-device view) → 404 whose body is byte for byte the 404 of a missing id, once
//!   the id itself is swapped;
//! - visible but not permitted, or the permission not held in any form → 403 (then the missing
//!   id gets the same 403: a refusal reveals nothing);
//! - nobody grants what they lack (Staff inviting an Admin, promoting to Admin, handing out a
//!   custom role beyond its own permissions).
//!
//! Destructive routes get a fresh subject per case. A route missing from [`ROWS`] fails
//! [`every_route_of_the_spec_has_a_matrix_row`].

#![allow(clippy::unwrap_used)] // test: a failed unwrap is a failed test

#[path = "rest_matrix/rules.rs"]
mod rules;
#[path = "rest_matrix/sessions.rs"]
mod sessions;
#[path = "rest_matrix/world.rs"]
mod world;

use portcullis_protocol::authz::{
    Actor, BuiltInRole, Decision, Member, OrgId, OrgPath, Permission, Resource, allows,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Instant;
use world::{Kind, Slot, Target, World};

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy)]
pub enum Guard {
    /// An account flow without a bearer: this status for everyone.
    Anonymous(u16),
    /// About the caller itself: allowed for every signed-in caller.
    Caller,
    /// Only that the subject is visible (a listing then filters item by item).
    Visible(Kind),
    /// The permission on the subject.
    Holds(Permission, Kind),
    /// The permission in the caller's own organization; the route names no subject.
    Acting(Permission),
}

/// One route: method, path (below `/api/v1`, as in the spec), guard, status when allowed,
/// and whether an allowed call consumes its subject.
pub struct Row {
    pub method: &'static str,
    pub path: &'static str,
    pub guard: Guard,
    pub ok: u16,
    pub destructive: bool,
}

const fn row(method: &'static str, path: &'static str, guard: Guard, ok: u16) -> Row {
    Row {
        method,
        path,
        guard,
        ok,
        destructive: false,
    }
}

const fn consumes(method: &'static str, path: &'static str, guard: Guard, ok: u16) -> Row {
    Row {
        method,
        path,
        guard,
        ok,
        destructive: true,
    }
}

use Guard::{Acting, Anonymous, Caller, Holds, Visible};
use Permission as P;

/// Every route with what it needs (docs/api/openapi.json, docs/accounts).
pub const ROWS: &[Row] = &[
    row("GET", "/openapi.json", Anonymous(200), 200),
    // Sign-up is off by default (accounts.signup = false).
    row("POST", "/auth/signup", Anonymous(403), 201),
    row("POST", "/auth/verify", Anonymous(401), 200),
    row("POST", "/auth/login", Caller, 200),
    row("POST", "/auth/logout", Caller, 204),
    row("POST", "/auth/password-reset", Anonymous(202), 202),
    row("POST", "/auth/password-reset/confirm", Anonymous(401), 200),
    row("POST", "/auth/invitation/accept", Anonymous(401), 200),
    row("GET", "/me", Caller, 200),
    row("GET", "/orgs", Visible(Kind::Org), 200),
    row("POST", "/orgs", Holds(P::OrgSettings, Kind::Org), 201),
    row("GET", "/orgs/{org}", Visible(Kind::Org), 200),
    row(
        "PATCH",
        "/orgs/{org}",
        Holds(P::OrgSettings, Kind::Org),
        200,
    ),
    row(
        "GET",
        "/orgs/{org}/users",
        Holds(P::UsersView, Kind::Org),
        200,
    ),
    row(
        "POST",
        "/orgs/{org}/invitations",
        Holds(P::UsersInvite, Kind::Org),
        201,
    ),
    row(
        "GET",
        "/orgs/{org}/roles",
        Holds(P::RolesView, Kind::Org),
        200,
    ),
    row(
        "POST",
        "/orgs/{org}/roles",
        Holds(P::RolesCreate, Kind::Org),
        201,
    ),
    row(
        "GET",
        "/orgs/{org}/templates",
        Holds(P::TemplatesView, Kind::Org),
        200,
    ),
    row(
        "POST",
        "/orgs/{org}/templates",
        Holds(P::TemplatesManage, Kind::Org),
        201,
    ),
    row("GET", "/users/{user}", Holds(P::UsersView, Kind::User), 200),
    row(
        "PATCH",
        "/users/{user}",
        Holds(P::UsersEdit, Kind::User),
        200,
    ),
    consumes(
        "DELETE",
        "/users/{user}",
        Holds(P::UsersDelete, Kind::User),
        204,
    ),
    row(
        "POST",
        "/users/{user}/logout",
        Holds(P::UsersForceLogout, Kind::User),
        204,
    ),
    row(
        "PATCH",
        "/roles/{role}",
        Holds(P::RolesEdit, Kind::Role),
        200,
    ),
    consumes(
        "DELETE",
        "/roles/{role}",
        Holds(P::RolesDelete, Kind::Role),
        204,
    ),
    row(
        "GET",
        "/templates/{template}",
        Holds(P::TemplatesView, Kind::Template),
        200,
    ),
    row(
        "PATCH",
        "/templates/{template}",
        Holds(P::TemplatesManage, Kind::Template),
        200,
    ),
    consumes(
        "DELETE",
        "/templates/{template}",
        Holds(P::TemplatesManage, Kind::Template),
        204,
    ),
    row("GET", "/devices", Visible(Kind::Org), 200),
    row("POST", "/devices", Holds(P::DevicesCreate, Kind::Org), 201),
    row(
        "GET",
        "/devices/{device}",
        Holds(P::OrgDevicesView, Kind::Device),
        200,
    ),
    consumes(
        "DELETE",
        "/devices/{device}",
        Holds(P::DevicesDelete, Kind::Device),
        204,
    ),
    row(
        "POST",
        "/devices/{device}/reprovision",
        Holds(P::DeviceTokensEdit, Kind::Device),
        200,
    ),
    // To the device's own organization: devices.delete on the device and devices.create on the
    // organization, held together by every built-in role that holds either.
    row(
        "POST",
        "/devices/{device}/transfer",
        Holds(P::DevicesDelete, Kind::Device),
        200,
    ),
    row("GET", "/api-keys", Holds(P::ApiKeysManage, Kind::Org), 200),
    row("POST", "/api-keys", Acting(P::ApiKeysManage), 201),
    consumes(
        "DELETE",
        "/api-keys/{key}",
        Holds(P::ApiKeysManage, Kind::ApiKey),
        204,
    ),
    row("GET", "/audit", Holds(P::AuditLogView, Kind::Org), 200),
];

/// What the matrix expects of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Allowed,
    Hidden,
    Forbidden,
    Status(u16),
}

/// The expectation for `role` (a member of `home`) calling a route guarded by `guard` on
/// `target`, from the role's permissions and `authz::allows`.
fn expect(role: BuiltInRole, caller: u64, home: &OrgPath, guard: Guard, target: &Target) -> Expect {
    let permissions = role.default_permissions();
    let actor = Actor::Member(Member {
        user: portcullis_protocol::authz::UserId(caller),
        org: home.clone(),
        permissions,
    });
    // A missing id: as far as the caller can tell, something outside its subtree.
    let nowhere = OrgPath::new(vec![OrgId::ROOT, OrgId(u32::MAX)]).unwrap();
    let org = target.org.as_ref().unwrap_or(&nowhere);
    let resource = |kind: Kind| match kind {
        Kind::Device => Resource::Device {
            org,
            owner: target.owner.map(portcullis_protocol::authz::UserId),
        },
        _ => Resource::Org(org),
    };
    // Held in some form: without it the operations layer refuses before any lookup.
    let held = |p: Permission| match p.device_forms() {
        Some((own, of_org)) => permissions.contains(own) || permissions.contains(of_org),
        None => permissions.contains(p),
    };
    let decided = |d: Decision| match d {
        Decision::Allowed => Expect::Allowed,
        Decision::Hidden => Expect::Hidden,
        Decision::Forbidden => Expect::Forbidden,
    };
    match guard {
        Anonymous(status) => Expect::Status(status),
        Caller => Expect::Allowed,
        Acting(p) => {
            if held(p) {
                Expect::Allowed
            } else {
                Expect::Forbidden
            }
        }
        Visible(kind) => match allows(&actor, P::OrgDevicesView, resource(kind)) {
            Decision::Hidden => Expect::Hidden,
            _ => Expect::Allowed,
        },
        Holds(p, kind) => {
            if !held(p) {
                Expect::Forbidden
            } else {
                decided(allows(&actor, p, resource(kind)))
            }
        }
    }
}

/// The subject slots a route is called on.
fn slots(guard: Guard) -> &'static [Slot] {
    match guard {
        Anonymous(_) | Caller | Acting(_) => &[Slot::None],
        Holds(_, Kind::Device) => &[
            Slot::Own,
            Slot::Child,
            Slot::Sibling,
            Slot::Owned,
            Slot::Missing,
        ],
        _ => &[Slot::Own, Slot::Child, Slot::Sibling, Slot::Missing],
    }
}

fn spec_routes() -> BTreeSet<(String, String)> {
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let path = std::path::Path::new(&manifest_dir).join("../docs/api/openapi.json");
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut routes = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let path = path.strip_prefix(world::API).unwrap().to_owned();
            routes.insert((method.to_uppercase(), path));
        }
    }
    routes
}

#[test]
fn every_route_of_the_spec_has_a_matrix_row() {
    let rows: BTreeSet<(String, String)> = ROWS
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(rows.len(), ROWS.len(), "a route has two rows");
    let spec = spec_routes();
    let missing: Vec<_> = spec.difference(&rows).collect();
    let extra: Vec<_> = rows.difference(&spec).collect();
    assert!(
        missing.is_empty(),
        "routes without a matrix row: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "rows for routes not in the spec: {extra:?}"
    );
}

/// One call of the matrix and what came of it.
struct Case {
    label: String,
    /// The subject's id as the path showed it.
    id: String,
    expect: Expect,
    ok: u16,
    status: u16,
    body: String,
}

#[test]
fn every_route_answers_every_role_as_its_permissions_say() {
    let started = Instant::now();
    let mut w = World::build();
    let setup = started.elapsed();
    let mut failures = Vec::new();
    let mut calls = 0;
    for row in ROWS {
        for role in BuiltInRole::ALL {
            let mut cases: Vec<(Slot, Case)> = Vec::new();
            for &slot in slots(row.guard) {
                let target = if row.destructive && slot != Slot::Missing {
                    w.fresh(row, slot)
                } else {
                    w.standing(row, slot)
                };
                let expect = expect(role, w.caller(role).id, &w.a_path, row.guard, &target);
                let reply = w.send(row, role, &target);
                calls += 1;
                let case = Case {
                    label: format!(
                        "{} {} as {role:?} on {slot:?} ({})",
                        row.method, row.path, target.id
                    ),
                    id: target.id.clone(),
                    expect,
                    ok: row.ok,
                    status: reply.status,
                    body: reply.text(),
                };
                if std::env::var_os("REST_MATRIX_VERBOSE").is_some() {
                    eprintln!("{} -> {} {}", case.label, case.status, case.body);
                }
                failures.extend(judge(&case));
                cases.push((slot, case));
            }
            failures.extend(hidden_like_missing(&cases));
        }
    }
    let (rule_calls, rule_failures) = rules::check(&mut w);
    calls += rule_calls;
    failures.extend(rule_failures);
    let elapsed = started.elapsed();
    eprintln!(
        "matrix: {} routes x {} roles, {calls} calls, setup {setup:?}, total {elapsed:?}, {} connections",
        ROWS.len(),
        BuiltInRole::ALL.len(),
        w.client.connects
    );
    assert!(
        failures.is_empty(),
        "{} of {calls} matrix cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The mismatch of one case, if any.
fn judge(case: &Case) -> Option<String> {
    let wanted = match case.expect {
        Expect::Allowed => case.ok,
        Expect::Hidden => 404,
        Expect::Forbidden => 403,
        Expect::Status(s) => s,
    };
    (case.status != wanted).then(|| {
        format!(
            "{}: expected {:?} ({wanted}), got {} {}",
            case.label, case.expect, case.status, case.body
        )
    })
}

/// A hidden subject's 404 must read exactly like the missing id's, once the id is swapped
/// (the message names the id the caller sent), and a refusal of a missing id must read like
/// the refusal of an existing one.
fn hidden_like_missing(cases: &[(Slot, Case)]) -> Vec<String> {
    let Some((_, missing)) = cases.iter().find(|(s, _)| *s == Slot::Missing) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (slot, case) in cases {
        if *slot == Slot::Missing || case.status != missing.status {
            continue;
        }
        if !matches!(case.status, 403 | 404) {
            continue;
        }
        let swapped = case.body.replace(&case.id, &missing.id);
        if swapped != missing.body {
            out.push(format!(
                "{}: the {} differs from the missing id's:\n  this:    {}\n  missing: {}",
                case.label, case.status, case.body, missing.body
            ));
        }
    }
    out
}
