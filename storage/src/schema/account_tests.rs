//! The account requests through the store, acting for real parties: the decision (hidden
//! equals missing, a matrix of built-in roles over own, child and sibling organizations),
//! grants, sign-up and one-time tokens, sessions and their revocation, re-provisioning,
//! deletion, API keys, bootstrap and the audit log (the revocation feed: `revocations_tests.rs`).

use super::tests::{AsOperator, ensure_template, hash, operator, pw, tmpl, v};
use super::*;
use crate::engine::memory::MemoryEngine;
use portcullis_protocol::authz::{BuiltInRole, OrgId, Permission, Permissions, RoleId, UserId};
use portcullis_protocol::store::{
    ApiKeyId, DeviceId, DeviceScope, Party, TokenPurpose, TokenUse, UserChange, UserStatus,
};
use std::sync::Arc;

const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";

pub(super) fn user(id: UserId) -> Acting {
    Acting {
        party: Party::User(id),
        from: "10.0.0.9".into(),
    }
}

fn key(id: ApiKeyId) -> Acting {
    Acting {
        party: Party::ApiKey(id),
        from: "10.0.0.9".into(),
    }
}

/// The tree: root(1) > a(2) > a1(4), root > b(3); a template of the root; in each of a, a1 and
/// b an Admin, a Staff and a User; a device of a owned by its User, one of a1, one of b.
pub(super) struct World {
    pub(super) s: Store<Arc<MemoryEngine>>,
    pub(super) a: OrgId,
    pub(super) b: OrgId,
    pub(super) a1: OrgId,
    /// (admin, staff, user) of a, a1, b.
    pub(super) users: [(UserId, UserId, UserId); 3],
    pub(super) dev_a: DeviceId,
    pub(super) dev_a1: DeviceId,
    pub(super) dev_b: DeviceId,
}

fn org(s: &Store<impl Engine>, parent: OrgId, name: &str) -> OrgId {
    match s.op(Request::CreateOrg {
        parent,
        name: name.into(),
    }) {
        Ok(Response::Org(o)) => o.id,
        other => panic!("{other:?}"),
    }
}

fn new_user(s: &Store<impl Engine>, org: OrgId, email: &str, role: BuiltInRole) -> UserId {
    match s.op(Request::CreateUser {
        email: email.into(),
        name: email.into(),
        org,
        role: role.id(),
        status: UserStatus::Active,
        password_phc: Some(PHC.into()),
        invite: None,
    }) {
        Ok(Response::User(Some(u))) => u.id,
        other => panic!("{other:?}"),
    }
}

fn device(s: &Store<impl Engine>, org: OrgId, owner: Option<UserId>, token: u8) -> DeviceId {
    match s.op(Request::CreateDevice {
        org,
        template: tmpl("TMPL1"),
        owner,
        name: format!("d{token}"),
        token_hash: hash(token),
    }) {
        Ok(Response::Device(d)) => d.id,
        other => panic!("{other:?}"),
    }
}

pub(super) fn world() -> World {
    let s = Store::open(Arc::new(MemoryEngine::new())).expect("open");
    ensure_template(&s, OrgId::ROOT, "TMPL1");
    let a = org(&s, OrgId::ROOT, "a");
    let b = org(&s, OrgId::ROOT, "b");
    let a1 = org(&s, a, "a1");
    let trio = |o: OrgId, n: &str| {
        (
            new_user(&s, o, &format!("admin@{n}"), BuiltInRole::Admin),
            new_user(&s, o, &format!("staff@{n}"), BuiltInRole::Staff),
            new_user(&s, o, &format!("user@{n}"), BuiltInRole::User),
        )
    };
    let users = [trio(a, "a"), trio(a1, "a1"), trio(b, "b")];
    let dev_a = device(&s, a, Some(users[0].2), 1);
    let dev_a1 = device(&s, a1, None, 2);
    let dev_b = device(&s, b, None, 3);
    World {
        s,
        a,
        b,
        a1,
        users,
        dev_a,
        dev_a1,
        dev_b,
    }
}

pub(super) fn as_(
    s: &Store<impl Engine>,
    who: &Acting,
    request: Request,
) -> Result<Response, StoreError> {
    s.handle_as(Some(who), request)
}

#[test]
fn a_hidden_subject_is_answered_exactly_like_a_missing_one() {
    let w = world();
    let admin_a = user(w.users[0].0);
    let hidden = as_(&w.s, &admin_a, Request::GetDevice { device: w.dev_b });
    let missing_id = 999;
    let missing = as_(&w.s, &admin_a, Request::GetDevice { device: missing_id });
    assert_eq!(
        hidden,
        Err(StoreError::NotFound(format!("device {}", w.dev_b)))
    );
    assert_eq!(missing, Err(StoreError::NotFound("device 999".into())));
    // Byte for byte: the same text for the same id, whichever the reason.
    let other = as_(&w.s, &admin_a, Request::DeleteDevice { device: w.dev_b });
    let gone = w.s.op(Request::DeleteDevice { device: w.dev_b });
    assert_eq!(gone, Ok(Response::Done));
    let after = as_(&w.s, &admin_a, Request::DeleteDevice { device: w.dev_b });
    assert_eq!(other, after);
    let user_b = w.users[2].0;
    assert_eq!(
        as_(&w.s, &admin_a, Request::FindUser { user: user_b }),
        Ok(Response::User(None))
    );
    assert_eq!(
        as_(&w.s, &admin_a, Request::GetOrg { org: w.b }),
        Err(StoreError::NotFound(format!("org {}", w.b.0)))
    );
}

/// GetDevice, DeleteDevice and ListUsers for each built-in role of org a over a's own device,
/// its child a1's and its sibling b's.
#[test]
fn the_decision_matrix_over_roles_and_organizations() {
    let w = world();
    let (admin, staff, plain) = w.users[0];
    let ok = |r: &Result<Response, StoreError>| r.is_ok();
    let hidden = |r: &Result<Response, StoreError>| matches!(r, Err(StoreError::NotFound(_)));
    let forbidden =
        |r: &Result<Response, StoreError>| matches!(r, Err(StoreError::NotPermitted(_)));
    type Expect = fn(&Result<Response, StoreError>) -> bool;
    let get = |who: UserId, device| as_(&w.s, &user(who), Request::GetDevice { device });
    let cases: [(UserId, DeviceId, Expect); 9] = [
        (admin, w.dev_a, |r| r.is_ok()),
        (admin, w.dev_a1, |r| r.is_ok()),
        (admin, w.dev_b, |r| {
            matches!(r, Err(StoreError::NotFound(_)))
        }),
        (staff, w.dev_a, |r| r.is_ok()),
        (staff, w.dev_a1, |r| r.is_ok()),
        (staff, w.dev_b, |r| {
            matches!(r, Err(StoreError::NotFound(_)))
        }),
        (plain, w.dev_a, |r| r.is_ok()),
        (plain, w.dev_a1, |r| {
            matches!(r, Err(StoreError::NotFound(_)))
        }),
        (plain, w.dev_b, |r| {
            matches!(r, Err(StoreError::NotFound(_)))
        }),
    ];
    for (who, device, expect) in cases {
        let got = get(who, device);
        assert!(expect(&got), "user {} device {device}: {got:?}", who.0);
    }
    // The User role owns dev_a but may not delete it; Staff may; nobody deletes b's.
    let delete = |who: UserId, device| as_(&w.s, &user(who), Request::DeleteDevice { device });
    assert!(forbidden(&delete(plain, w.dev_a)));
    assert!(hidden(&delete(staff, w.dev_b)));
    assert!(ok(&delete(staff, w.dev_a1)));
    let list_users = |who: UserId, org| {
        as_(
            &w.s,
            &user(who),
            Request::ListUsers {
                org,
                after: None,
                limit: 10,
            },
        )
    };
    assert!(ok(&list_users(admin, w.a1)));
    assert!(forbidden(&list_users(plain, w.a)));
    assert!(hidden(&list_users(plain, w.a1)), "no switching to sub-orgs");
    assert!(hidden(&list_users(admin, w.b)));
    let Ok(Response::Users(users)) = list_users(staff, w.a) else {
        panic!("staff lists users")
    };
    assert_eq!(users.len(), 3);
}

#[test]
fn requests_without_a_party_and_parties_that_cannot_act_are_refused() {
    let w = world();
    let err = w.s.handle(Request::GetDevice { device: w.dev_a });
    assert!(matches!(err, Err(StoreError::NotPermitted(m)) if m.contains("must name the party")));
    let err = as_(
        &w.s,
        &user(w.users[0].0),
        Request::Backup { dir: "/x".into() },
    );
    assert!(matches!(err, Err(StoreError::NotPermitted(m)) if m.contains("operator's alone")));
    let err = as_(&w.s, &user(UserId(999)), Request::Ping);
    assert!(matches!(err, Err(StoreError::NotPermitted(_))), "{err:?}");
    let suspend = UserChange {
        status: Some(UserStatus::Suspended),
        ..UserChange::default()
    };
    let staff = w.users[0].1;
    assert!(
        w.s.op(Request::UpdateUser {
            user: staff,
            change: suspend
        })
        .is_ok()
    );
    let err = as_(&w.s, &user(staff), Request::GetDevice { device: w.dev_a });
    assert!(matches!(err, Err(StoreError::NotPermitted(m)) if m.contains("not active")));
}

#[test]
fn nobody_grants_what_they_do_not_hold() {
    let w = world();
    let (admin, staff, _) = w.users[0];
    let make_admin = Request::CreateUser {
        email: "new@a".into(),
        name: "n".into(),
        org: w.a,
        role: BuiltInRole::Admin.id(),
        status: UserStatus::Active,
        password_phc: Some(PHC.into()),
        invite: None,
    };
    let err = as_(&w.s, &user(staff), make_admin.clone());
    assert!(matches!(err, Err(StoreError::NotPermitted(m)) if m.contains("roles.create")));
    assert!(as_(&w.s, &user(admin), make_admin).is_ok());
    // Staff may not promote anyone to Admin, nor change their own role.
    let promote = |target| Request::UpdateUser {
        user: target,
        change: UserChange {
            role: Some(BuiltInRole::Admin.id()),
            ..UserChange::default()
        },
    };
    assert!(matches!(
        as_(&w.s, &user(staff), promote(w.users[0].2)),
        Err(StoreError::NotPermitted(_))
    ));
    assert!(matches!(
        as_(&w.s, &user(admin), promote(admin)),
        Err(StoreError::NotPermitted(m)) if m.contains("own role")
    ));
    // A key of the admin limited to devices cannot mint a broader key.
    let narrow: Permissions = [Permission::OrgDevicesView, Permission::ApiKeysManage]
        .into_iter()
        .collect();
    let Ok(Response::ApiKey(k)) = as_(
        &w.s,
        &user(admin),
        Request::CreateApiKey {
            name: "ci".into(),
            permissions: narrow,
            secret_hash: [5; 32],
            expires_ms: None,
        },
    ) else {
        panic!("key")
    };
    let broader = Request::CreateApiKey {
        name: "more".into(),
        permissions: narrow.with(Permission::DevicesDelete),
        secret_hash: [6; 32],
        expires_ms: None,
    };
    assert!(matches!(
        as_(&w.s, &key(k.id), broader),
        Err(StoreError::NotPermitted(m)) if m.contains("devices.delete")
    ));
    // The key acts for its creator within its permissions.
    assert!(as_(&w.s, &key(k.id), Request::GetDevice { device: w.dev_a }).is_ok());
    assert!(matches!(
        as_(&w.s, &key(k.id), Request::DeleteDevice { device: w.dev_a }),
        Err(StoreError::NotPermitted(_))
    ));
    // UseApiKey finds it by id and secret; a wrong secret or a revoked key finds nothing.
    let use_key = |secret| {
        w.s.handle(Request::UseApiKey {
            key: k.id,
            secret_hash: secret,
        })
    };
    assert!(matches!(use_key([5; 32]), Ok(Response::KeyUse(Some(_)))));
    assert_eq!(use_key([9; 32]), Ok(Response::KeyUse(None)));
    assert!(as_(&w.s, &user(admin), Request::RevokeApiKey { key: k.id }).is_ok());
    assert_eq!(use_key([5; 32]), Ok(Response::KeyUse(None)));
}

#[test]
fn sign_up_verifies_once_and_expired_or_used_tokens_are_not_found() {
    let w = world();
    let sign_up = Request::SignUp {
        email: "Founder@New.io".into(),
        name: "Founder".into(),
        org_name: "newco".into(),
        password_phc: PHC.into(),
        token_hash: [40; 32],
        expires_ms: unix_ms() + 60_000,
        from: "198.51.100.7".into(),
    };
    let Ok(Response::User(Some(founder))) = w.s.handle(sign_up) else {
        panic!("sign-up")
    };
    assert_eq!(founder.status, UserStatus::Unverified);
    assert_eq!(founder.role, BuiltInRole::Admin.id());
    assert_eq!(
        w.s.handle(Request::CreateSession {
            user: founder.id,
            token_hash: [41; 32],
            expires_ms: unix_ms() + 60_000
        })
        .map_err(|e| matches!(e, StoreError::Invalid(_))),
        Err(true),
        "an unverified user does not log in"
    );
    let verify = || Request::ConsumeToken {
        token_hash: [40; 32],
        using: TokenUse::VerifyEmail,
        from: "198.51.100.8".into(),
    };
    let wrong_purpose = w.s.handle(Request::ConsumeToken {
        token_hash: [40; 32],
        using: TokenUse::ResetPassword {
            password_phc: PHC.into(),
        },
        from: "198.51.100.7".into(),
    });
    let Ok(Response::User(Some(active))) = w.s.handle(verify()) else {
        panic!("verify")
    };
    assert_eq!(active.status, UserStatus::Active);
    // Acting for nobody, the sign-up and the verification still name their client's address.
    let Ok(Response::Audit(log)) = w.s.op(Request::ReadAudit {
        org: founder.org,
        subtree: false,
        after: None,
        limit: 1000,
    }) else {
        panic!("audit")
    };
    let seen: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str(), e.from.as_str()))
        .collect();
    assert_eq!(seen[0], ("SignUp", "anonymous", "198.51.100.7"));
    assert_eq!(seen[1].0, "ConsumeToken");
    assert_eq!(seen[1].2, "198.51.100.8");
    let used = w.s.handle(verify());
    assert!(matches!(used, Err(StoreError::NotFound(_))));
    assert_eq!(used, wrong_purpose, "one message for every failure");
    // A token created already expired is not found either.
    assert_eq!(
        w.s.handle(Request::CreateToken {
            user: founder.id,
            purpose: TokenPurpose::ResetPassword,
            token_hash: [42; 32],
            expires_ms: 1,
        }),
        Ok(Response::Done)
    );
    let expired = w.s.handle(Request::ConsumeToken {
        token_hash: [42; 32],
        using: TokenUse::ResetPassword {
            password_phc: PHC.into(),
        },
        from: "198.51.100.7".into(),
    });
    assert_eq!(expired, used);
    // A new token of the same purpose replaces the earlier one.
    for t in [43, 44] {
        let created = w.s.handle(Request::CreateToken {
            user: founder.id,
            purpose: TokenPurpose::ResetPassword,
            token_hash: [t; 32],
            expires_ms: unix_ms() + 60_000,
        });
        assert_eq!(created, Ok(Response::Done));
    }
    let reset = |t: u8| {
        w.s.handle(Request::ConsumeToken {
            token_hash: [t; 32],
            using: TokenUse::ResetPassword {
                password_phc: PHC.into(),
            },
            from: "198.51.100.7".into(),
        })
    };
    assert_eq!(reset(43), used, "replaced");
    assert!(reset(44).is_ok());
}

#[test]
fn suspension_and_a_new_password_revoke_every_session() {
    let w = world();
    let (admin, staff, plain) = w.users[0];
    let session = |u: UserId, t: u8| {
        w.s.handle(Request::CreateSession {
            user: u,
            token_hash: [t; 32],
            expires_ms: unix_ms() + 60_000,
        })
    };
    let live = |t: u8| {
        matches!(
            w.s.handle(Request::ResolveSession {
                token_hash: [t; 32]
            }),
            Ok(Response::Session(Some(_)))
        )
    };
    assert_eq!(session(plain, 50), Ok(Response::Done));
    assert_eq!(session(plain, 51), Ok(Response::Done));
    assert!(live(50) && live(51));
    let suspend = Request::UpdateUser {
        user: plain,
        change: UserChange {
            status: Some(UserStatus::Suspended),
            ..UserChange::default()
        },
    };
    assert!(as_(&w.s, &user(staff), suspend).is_ok());
    assert!(!live(50) && !live(51));
    // A session created earlier in the same group is revoked by the password change too.
    let change = Request::UpdateUser {
        user: admin,
        change: UserChange {
            password_phc: Some(PHC.into()),
            ..UserChange::default()
        },
    };
    let results = w.s.commit_group(
        vec![
            Call::nobody(Request::CreateSession {
                user: admin,
                token_hash: [52; 32],
                expires_ms: unix_ms() + 60_000,
            }),
            Call::new(Some(user(admin)), change),
        ],
        || {},
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(!live(52));
    // Expired sessions do not resolve.
    w.s.handle(Request::CreateSession {
        user: staff,
        token_hash: [53; 32],
        expires_ms: unix_ms() + 60_000,
    })
    .expect("session");
    assert!(live(53));
    assert!(
        as_(
            &w.s,
            &user(staff),
            Request::RevokeSessions {
                user: staff,
                only: Some([53; 32])
            }
        )
        .is_ok()
    );
    assert!(!live(53), "logout");
}

#[test]
fn reprovisioning_stops_the_old_token_at_once_and_deletion_takes_everything() {
    let w = world();
    let auth = |t: u8| match w.s.handle(Request::Authenticate {
        token_hash: hash(t),
    }) {
        Ok(Response::Authenticated(a)) => a.map(|a| a.device),
        other => panic!("{other:?}"),
    };
    assert_eq!(auth(1), Some(w.dev_a));
    let staff = user(w.users[0].1);
    let taken = as_(
        &w.s,
        &staff,
        Request::ReprovisionDevice {
            device: w.dev_a,
            token_hash: hash(2),
        },
    );
    assert!(matches!(taken, Err(StoreError::Invalid(m)) if m.contains("already belongs")));
    let again = as_(
        &w.s,
        &staff,
        Request::ReprovisionDevice {
            device: w.dev_a,
            token_hash: hash(9),
        },
    );
    assert!(matches!(again, Ok(Response::Device(_))));
    assert_eq!(auth(1), None, "the old token no longer authenticates");
    assert_eq!(auth(9), Some(w.dev_a));
    w.s.handle(Request::WritePins {
        writes: vec![pw(w.dev_a, v(1), "7", 5)],
    })
    .expect("pins");
    assert_eq!(
        as_(&w.s, &staff, Request::DeleteDevice { device: w.dev_a }),
        Ok(Response::Done)
    );
    assert_eq!(auth(9), None);
    assert!(
        w.s.engine()
            .scan_prefix(Cf::Pins, b"")
            .expect("scan")
            .is_empty()
    );
    assert!(
        w.s.engine()
            .scan_prefix(Cf::History, b"")
            .expect("scan")
            .is_empty()
    );
    // The template is unused now in a only; a1's device still uses it.
    let err = w.s.op(Request::DeleteTemplate { id: tmpl("TMPL1") });
    assert!(matches!(err, Err(StoreError::Invalid(m)) if m.contains("used by devices")));
}

#[test]
fn own_device_roles_list_only_their_devices_and_subtrees_merge_in_id_order() {
    let w = world();
    let list = |who: &Acting, org, subtree| match as_(
        &w.s,
        who,
        Request::ListDevices {
            after: None,
            limit: 100,
            scope: DeviceScope::Org { org, subtree },
        },
    ) {
        Ok(Response::Devices(d)) => d.into_iter().map(|d| d.id).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let extra = device(&w.s, w.a, None, 20);
    assert_eq!(list(&user(w.users[0].2), w.a, false), [w.dev_a]);
    assert_eq!(
        list(&user(w.users[0].0), w.a, true),
        [w.dev_a, w.dev_a1, extra]
    );
    assert_eq!(list(&operator(), OrgId::ROOT, true).len(), 4);
}

#[test]
fn roles_templates_orgs_and_bootstrap_keep_their_rules() {
    let w = world();
    let admin = user(w.users[0].0);
    let Ok(Response::Role(role)) = as_(
        &w.s,
        &admin,
        Request::CreateRole {
            org: w.a,
            name: "Auditor".into(),
            permissions: [Permission::AuditLogView].into_iter().collect(),
        },
    ) else {
        panic!("role")
    };
    assert!(role.id >= RoleId::FIRST_CUSTOM);
    let holder = Request::UpdateUser {
        user: w.users[0].2,
        change: UserChange {
            role: Some(role.id),
            ..UserChange::default()
        },
    };
    assert!(as_(&w.s, &admin, holder).is_ok());
    let err = as_(&w.s, &admin, Request::DeleteRole { role: role.id });
    assert!(matches!(err, Err(StoreError::Invalid(m)) if m.contains("held by 1")));
    let err = as_(
        &w.s,
        &admin,
        Request::DeleteRole {
            role: BuiltInRole::Admin.id(),
        },
    );
    assert!(matches!(err, Err(StoreError::Invalid(m)) if m.contains("built-in")));
    // The root's template is usable in a, but not a's to change.
    let err = as_(
        &w.s,
        &admin,
        Request::UpdateTemplate {
            id: tmpl("TMPL1"),
            name: Some("mine".into()),
            datastreams: None,
        },
    );
    assert!(matches!(err, Err(StoreError::NotPermitted(m)) if m == "templates.manage"));
    // An org never moves below itself.
    let err = w.s.op(Request::UpdateOrg {
        org: w.a,
        name: None,
        parent: Some(w.a1),
    });
    assert!(matches!(err, Err(StoreError::Invalid(m)) if m.contains("below itself")));
    let Ok(Response::Orgs(orgs)) = as_(&w.s, &admin, Request::ListOrgs { org: w.a }) else {
        panic!("orgs")
    };
    assert_eq!(orgs.iter().map(|o| o.id).collect::<Vec<_>>(), [w.a, w.a1]);
    assert_eq!(orgs[1].path.ids(), [OrgId::ROOT, w.a, w.a1]);
    let bootstrap = Request::Bootstrap {
        email: "root@x".into(),
        password_phc: PHC.into(),
    };
    assert_eq!(
        w.s.handle(bootstrap.clone()),
        Ok(Response::Bootstrapped(false))
    );
    let fresh = Store::open(Arc::new(MemoryEngine::new())).expect("open");
    assert_eq!(
        fresh.handle(bootstrap.clone()),
        Ok(Response::Bootstrapped(true))
    );
    assert_eq!(fresh.handle(bootstrap), Ok(Response::Bootstrapped(false)));
}

/// A custom role of an organization the actor cannot see, given to a user, reads like a role
/// that does not exist; one the actor can see but of another organization says why it is refused.
#[test]
fn a_hidden_role_given_to_a_user_reads_like_a_missing_one() {
    let w = world();
    let Ok(Response::Role(role_b)) = w.s.op(Request::CreateRole {
        org: w.b,
        name: "B".into(),
        permissions: Permissions::NONE,
    }) else {
        panic!("role of b")
    };
    let Ok(Response::Role(role_a1)) = w.s.op(Request::CreateRole {
        org: w.a1,
        name: "A1".into(),
        permissions: Permissions::NONE,
    }) else {
        panic!("role of a1")
    };
    let admin = user(w.users[0].0);
    let give = |role: RoleId| Request::UpdateUser {
        user: w.users[0].2,
        change: UserChange {
            role: Some(role),
            ..UserChange::default()
        },
    };
    let hidden = as_(&w.s, &admin, give(role_b.id));
    assert_eq!(
        hidden,
        Err(StoreError::NotFound(format!("role {}", role_b.id.0)))
    );
    let missing = as_(&w.s, &admin, give(RoleId(9999)));
    assert_eq!(missing, Err(StoreError::NotFound("role 9999".into())));
    let visible = as_(&w.s, &admin, give(role_a1.id));
    assert!(matches!(visible, Err(StoreError::Invalid(m)) if m.contains("not of org")));
}

#[test]
fn every_change_is_audited_in_order_without_gaps_and_filtered_by_org() {
    let w = world();
    let Ok(Response::Audit(all)) = w.s.op(Request::ReadAudit {
        org: OrgId::ROOT,
        subtree: true,
        after: None,
        limit: 1000,
    }) else {
        panic!("audit")
    };
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    // template, 3 orgs, 9 users, 3 devices
    assert_eq!(all.len(), 16);
    assert!(
        all.iter()
            .all(|e| e.actor == "operator" && e.from == "local")
    );
    assert!(
        all.iter().all(|e| !e.detail.contains("argon2")),
        "no secrets"
    );
    let admin = user(w.users[0].0);
    as_(&w.s, &admin, Request::GetDevice { device: w.dev_a }).expect("a read");
    let Ok(Response::Audit(of_a)) = as_(
        &w.s,
        &admin,
        Request::ReadAudit {
            org: w.a,
            subtree: false,
            after: None,
            limit: 1000,
        },
    ) else {
        panic!("audit of a")
    };
    assert!(of_a.iter().all(|e| e.org == w.a));
    assert_eq!(
        of_a.len(),
        5,
        "a1's creation (in its parent), 3 users and 1 device of a; reads are not audited"
    );
    let staff = w.users[0].1;
    as_(
        &w.s,
        &admin,
        Request::RevokeSessions {
            user: staff,
            only: None,
        },
    )
    .expect("logout");
    let Ok(Response::Audit(last)) = as_(
        &w.s,
        &admin,
        Request::ReadAudit {
            org: w.a,
            subtree: false,
            after: Some(all.len() as u64),
            limit: 10,
        },
    ) else {
        panic!("audit")
    };
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].action, "RevokeSessions");
    assert_eq!(last[0].actor, format!("user {} (admin@a)", w.users[0].0.0));
    assert_eq!(last[0].target, format!("user {}", staff.0));
    assert_eq!(last[0].from, "10.0.0.9");
    let _ = (w.b, w.dev_b, w.dev_a1);
}
