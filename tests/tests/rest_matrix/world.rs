//! The world the REST permission matrix runs in: a gateway with the tree root(1) > a > a1 and
//! root > b, an Admin, a Staff and a User of `a` signed in over REST, standing subjects (a user,
//! a custom role, a template, a device, an API key) in `a`, `a1` and `b` plus a device owned by
//! the User, fresh subjects for the destructive routes, and the requests of each route (path,
//! query, body) for a caller and a subject. Subjects are made over REST by an Admin of the root
//! organization (API keys by an Admin of the key's organization: a key belongs to its
//! creator's), so setting up costs a few CLI calls, not hundreds.

use super::{Guard, Row};
use portcullis_e2e::https::{Client, Reply};
use portcullis_e2e::{Gateway, TEST_TEMPLATE};
use portcullis_protocol::app::client_hash;
use portcullis_protocol::authz::{BuiltInRole, OrgId, OrgPath};
use serde_json::{Value, json};
use std::collections::HashMap;

pub const API: &str = "/api/v1";

/// What a route's subject is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Org,
    User,
    Role,
    Template,
    Device,
    ApiKey,
}

/// Where the subject of a call sits, seen from the callers' organization `a`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The route names no subject.
    None,
    /// In `a`.
    Own,
    /// In `a1`, below `a`.
    Child,
    /// In `b`, beside `a`.
    Sibling,
    /// A device in `a` owned by the User.
    Owned,
    /// An id that does not exist.
    Missing,
}

/// A subject: its id as the path shows it, its organization (`None`: missing) and owner.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub org: Option<OrgPath>,
    pub owner: Option<u64>,
}

impl Target {
    fn org_id(&self) -> Option<u32> {
        self.org.as_ref().map(|p| p.org().0)
    }
}

/// A signed-in user.
pub struct Caller {
    pub id: u64,
    pub email: String,
    pub password: String,
    pub token: String,
}

pub struct World {
    pub gw: Gateway,
    pub client: Client,
    pub a_path: OrgPath,
    paths: HashMap<Slot, OrgPath>,
    callers: Vec<(BuiltInRole, Caller)>,
    /// An Admin of the root organization: makes the subjects.
    root: Caller,
    /// Admins of `a1` and `b`: make the API keys there.
    org_admins: HashMap<Slot, Caller>,
    standing: HashMap<(Kind, Slot), Target>,
    seq: u32,
}

/// The id every missing subject has (no test world gets near it).
const MISSING: u32 = 999_999;
const MISSING_TEMPLATE: &str = "TMPLmissing999999";

impl World {
    pub fn build() -> World {
        let gw = Gateway::start("");
        gw.ensure_template();
        let a = gw.create_org(1, "a");
        let a1 = gw.create_org(a, "a1");
        let b = gw.create_org(1, "b");
        let root_path = OrgPath::root();
        let a_path = root_path.child(OrgId(a)).unwrap();
        let a1_path = a_path.child(OrgId(a1)).unwrap();
        let b_path = root_path.child(OrgId(b)).unwrap();
        let client = Client::new(gw.tls_port, &gw.data_dir);
        let mut w = World {
            gw,
            client,
            a_path: a_path.clone(),
            paths: HashMap::from([
                (Slot::Own, a_path.clone()),
                (Slot::Owned, a_path),
                (Slot::Child, a1_path),
                (Slot::Sibling, b_path),
            ]),
            callers: Vec::new(),
            root: Caller {
                id: 0,
                email: String::new(),
                password: String::new(),
                token: String::new(),
            },
            org_admins: HashMap::new(),
            standing: HashMap::new(),
            seq: 0,
        };
        w.root = w.sign_in("root-admin@example.com", 1, "admin");
        for role in BuiltInRole::ALL {
            let email = format!("{}@a.example.com", role.name().to_lowercase());
            let caller = w.sign_in(&email, a, &role.name().to_lowercase());
            w.callers.push((role, caller));
        }
        for (slot, org) in [(Slot::Own, a), (Slot::Child, a1), (Slot::Sibling, b)] {
            if slot != Slot::Own {
                let admin = w.sign_in(&format!("admin@{org}.example.com"), org, "admin");
                w.org_admins.insert(slot, admin);
            }
            for kind in [
                Kind::Org,
                Kind::User,
                Kind::Role,
                Kind::Template,
                Kind::Device,
                Kind::ApiKey,
            ] {
                let target = w.make(kind, slot);
                w.standing.insert((kind, slot), target);
            }
        }
        let owned = w.make(Kind::Device, Slot::Owned);
        w.standing.insert((Kind::Device, Slot::Owned), owned);
        w
    }

    pub fn caller(&self, role: BuiltInRole) -> &Caller {
        &self
            .callers
            .iter()
            .find(|(r, _)| *r == role)
            .expect("every built-in role has a caller")
            .1
    }

    fn unique(&mut self, what: &str) -> String {
        self.seq += 1;
        format!("{what}-{}", self.seq)
    }

    /// An active user made with the CLI, signed in over REST.
    fn sign_in(&mut self, email: &str, org: u32, role: &str) -> Caller {
        let made = self
            .gw
            .admin(&[
                "user",
                "create",
                "--email",
                email,
                "--org",
                &org.to_string(),
                "--role",
                role,
            ])
            .unwrap();
        let password = made["password"].as_str().unwrap().to_owned();
        let token = self.login(email, &password);
        Caller {
            id: made["id"].as_u64().unwrap(),
            email: email.to_owned(),
            password,
            token,
        }
    }

    /// A new session of `email`.
    pub fn login(&mut self, email: &str, password: &str) -> String {
        let body = json!({"email": email, "hash": client_hash(password, email)});
        let reply = self
            .client
            .call("POST", &format!("{API}/auth/login"), None, Some(&body));
        assert_eq!(reply.status, 200, "login of {email}: {}", reply.text());
        reply.json()["token"].as_str().unwrap().to_owned()
    }

    /// A call as the root Admin that must succeed with `status`.
    fn as_root(&mut self, method: &str, path: &str, body: Value, status: u16) -> Value {
        let token = self.root.token.clone();
        let reply = self
            .client
            .call(method, &format!("{API}{path}"), Some(&token), Some(&body));
        assert_eq!(
            reply.status,
            status,
            "setup {method} {path}: {}",
            reply.text()
        );
        reply.json()
    }

    /// A new subject of `kind` in `slot`'s organization.
    fn make(&mut self, kind: Kind, slot: Slot) -> Target {
        let org = self.paths[&slot].clone();
        let org_id = org.org().0;
        let mut owner = None;
        let id = match kind {
            Kind::Org => org_id.to_string(),
            Kind::User => {
                let email = format!("{}@example.com", self.unique("subject"));
                let v = self.as_root(
                    "POST",
                    &format!("/orgs/{org_id}/invitations"),
                    json!({"email": email, "role": 3}),
                    201,
                );
                v["id"].as_u64().unwrap().to_string()
            }
            Kind::Role => {
                let name = self.unique("role");
                let v = self.as_root(
                    "POST",
                    &format!("/orgs/{org_id}/roles"),
                    json!({"name": name, "permissions": ["devices.create"]}),
                    201,
                );
                v["id"].as_u64().unwrap().to_string()
            }
            Kind::Template => {
                let name = self.unique("template");
                let v = self.as_root(
                    "POST",
                    &format!("/orgs/{org_id}/templates"),
                    json!({"name": name}),
                    201,
                );
                v["id"].as_str().unwrap().to_owned()
            }
            Kind::Device => {
                let name = self.unique("device");
                let mut body = json!({"name": name, "org": org_id, "template": TEST_TEMPLATE});
                if slot == Slot::Owned {
                    let user = self.caller(BuiltInRole::User).id;
                    body["owner"] = json!(user);
                    owner = Some(user);
                }
                let v = self.as_root("POST", "/devices", body, 201);
                v["device"]["id"].as_u64().unwrap().to_string()
            }
            Kind::ApiKey => {
                let token = match slot {
                    Slot::Own => self.caller(BuiltInRole::Admin).token.clone(),
                    _ => self.org_admins[&slot].token.clone(),
                };
                let name = self.unique("key");
                let body = json!({"name": name, "permissions": ["audit_log.view"]});
                let reply = self.client.call(
                    "POST",
                    &format!("{API}/api-keys"),
                    Some(&token),
                    Some(&body),
                );
                assert_eq!(reply.status, 201, "setup: an API key: {}", reply.text());
                reply.json()["key"]["id"].as_u64().unwrap().to_string()
            }
        };
        Target {
            id,
            org: Some(org),
            owner,
        }
    }

    /// The kind of subject a row names (`Org` for routes without one).
    fn kind(row: &Row) -> Kind {
        match row.guard {
            Guard::Visible(kind) | Guard::Holds(_, kind) => kind,
            Guard::Anonymous(_) | Guard::Caller | Guard::Acting(_) => Kind::Org,
        }
    }

    /// The standing subject of `row` in `slot` (or the missing one).
    pub fn standing(&self, row: &Row, slot: Slot) -> Target {
        let kind = World::kind(row);
        match slot {
            Slot::None => Target {
                id: String::new(),
                org: Some(self.a_path.clone()),
                owner: None,
            },
            Slot::Missing => Target {
                id: self.missing_id(kind),
                org: None,
                owner: None,
            },
            _ => self.standing[&(kind, slot)].clone(),
        }
    }

    /// A subject of `row` in `slot` that nothing else uses.
    pub fn fresh(&mut self, row: &Row, slot: Slot) -> Target {
        self.make(World::kind(row), slot)
    }

    pub fn missing_id(&self, kind: Kind) -> String {
        match kind {
            Kind::Template => MISSING_TEMPLATE.to_owned(),
            _ => MISSING.to_string(),
        }
    }

    /// Sends `row`'s request as `role` on `target`.
    pub fn send(&mut self, row: &Row, role: BuiltInRole, target: &Target) -> Reply {
        let (email, password, mut token) = {
            let c = self.caller(role);
            (c.email.clone(), c.password.clone(), c.token.clone())
        };
        let mut path = row.path.to_owned();
        for name in [
            "{org}",
            "{user}",
            "{role}",
            "{template}",
            "{device}",
            "{key}",
        ] {
            path = path.replace(name, &target.id);
        }
        let subject_org = target.org_id().unwrap_or(MISSING);
        let unique = self.unique("n");
        let query = match (row.method, row.path) {
            ("GET", "/orgs") => format!("?under={}", target.id),
            ("GET", "/devices" | "/api-keys" | "/audit") => format!("?org={}", target.id),
            _ => String::new(),
        };
        let body = match (row.method, row.path) {
            ("POST", "/auth/signup") => {
                Some(json!({"email": format!("{unique}@example.com"), "name": unique, "hash": "x"}))
            }
            ("POST", "/auth/verify") => Some(json!({"token": "not-a-token"})),
            ("POST", "/auth/login") => {
                Some(json!({"email": email, "hash": client_hash(&password, &email)}))
            }
            ("POST", "/auth/password-reset") => Some(json!({"email": "nobody@example.com"})),
            ("POST", "/auth/password-reset/confirm" | "/auth/invitation/accept") => {
                Some(json!({"token": "not-a-token", "hash": "x"}))
            }
            ("POST", "/orgs") => Some(json!({"parent": subject_org, "name": unique})),
            (
                "PATCH",
                "/orgs/{org}" | "/users/{user}" | "/roles/{role}" | "/templates/{template}",
            ) => Some(json!({"name": unique})),
            ("POST", "/orgs/{org}/invitations") => {
                Some(json!({"email": format!("{unique}@example.com"), "role": 3}))
            }
            ("POST", "/orgs/{org}/roles") => Some(json!({"name": unique, "permissions": []})),
            ("POST", "/orgs/{org}/templates") => Some(json!({"name": unique})),
            ("POST", "/devices") => {
                Some(json!({"name": unique, "org": subject_org, "template": TEST_TEMPLATE}))
            }
            ("POST", "/devices/{device}/transfer") => {
                let org = target.org_id().unwrap_or(self.a_path.org().0);
                Some(json!({"org": org}))
            }
            ("POST", "/api-keys") => {
                Some(json!({"name": unique, "permissions": ["audit_log.view"]}))
            }
            _ => None,
        };
        let bearer = match row.guard {
            Guard::Anonymous(_) => None,
            _ if row.path == "/auth/login" => None,
            _ => {
                if row.path == "/auth/logout" {
                    // Its own session, so the caller's stays usable.
                    token = self.login(&email, &password);
                }
                Some(token)
            }
        };
        self.client.call(
            row.method,
            &format!("{API}{path}{query}"),
            bearer.as_deref(),
            body.as_ref(),
        )
    }

    /// A call as `role` outside the matrix.
    pub fn call(
        &mut self,
        role: BuiltInRole,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let token = self.caller(role).token.clone();
        self.client
            .call(method, &format!("{API}{path}"), Some(&token), body.as_ref())
    }

    /// The id of the standing subject of `kind` in `slot`.
    pub fn id(&self, kind: Kind, slot: Slot) -> String {
        self.standing[&(kind, slot)].id.clone()
    }

    /// The root organization's Admin (its user id; it makes the subjects).
    pub fn root_admin(&self) -> u64 {
        self.root.id
    }

    /// A call as the root Admin, whatever it answers.
    pub fn call_as_root(&mut self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let token = self.root.token.clone();
        self.client
            .call(method, &format!("{API}{path}"), Some(&token), body.as_ref())
    }

    /// A call with any bearer (or none).
    pub fn call_with(
        &mut self,
        bearer: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        self.client
            .call(method, &format!("{API}{path}"), bearer, body.as_ref())
    }

    /// A new active user of `a` with `role` (a built-in name or a custom role's id), signed in.
    pub fn extra_user(&mut self, role: &str) -> Caller {
        let email = format!("{}@a.example.com", self.unique("extra"));
        let org = self.a_path.org().0;
        self.sign_in(&email, org, role)
    }

    /// A custom role of `a` holding every permission, made by the Admin.
    pub fn wide_role(&mut self) -> String {
        let all: Vec<&str> = portcullis_protocol::authz::Permission::ALL
            .iter()
            .map(|p| p.name())
            .collect();
        let name = self.unique("wide");
        let org = self.a_path.org().0;
        let reply = self.call(
            BuiltInRole::Admin,
            "POST",
            &format!("/orgs/{org}/roles"),
            Some(json!({"name": name, "permissions": all})),
        );
        assert_eq!(reply.status, 201, "a wide role: {}", reply.text());
        reply.json()["id"].as_u64().unwrap().to_string()
    }
}
