//! The user commands against a fake store that keeps users in a list and refuses duplicate
//! emails like the real one: what each command sends (acting as the operator), that passwords
//! and invitation secrets leave only as hashes and are printed once, and what is printed.

use super::*;
use crate::cli::test_store::{self, Seen, requests};
use portcullis_operations::password::{PasswordCheck, verify};
use portcullis_operations::secrets;
use portcullis_protocol::app::{client_hash, normalize_email};
use portcullis_protocol::authz::{self, OrgPath, Permissions};
use portcullis_protocol::store::{Credentials, Request, Response, UserChange};
use portcullis_store_client::StoreClient;
use std::sync::{Arc, Mutex};

type Users = Arc<Mutex<Vec<(UserRecord, Option<String>)>>>;

/// A fake store keeping users (with their PHC strings) in a list.
fn store() -> (tempfile::TempDir, StoreClient, Seen, Users) {
    let users: Users = Arc::default();
    let kept = Arc::clone(&users);
    let (dir, client, seen) = test_store::store(move |request| {
        let mut users = kept.lock().expect("lock");
        let find = |users: &[(UserRecord, Option<String>)], id: UserId| {
            users.iter().position(|(u, _)| u.id == id)
        };
        match request.clone() {
            Request::CreateUser {
                email,
                name,
                org,
                role,
                status,
                password_phc,
                ..
            } => {
                if users.iter().any(|(u, _)| u.email == email) {
                    return Err(StoreError::Invalid(format!(
                        "a user with the email {email} already exists"
                    )));
                }
                let user = UserRecord {
                    id: UserId(users.len() as u64 + 1),
                    email,
                    name,
                    org,
                    role,
                    status,
                    created_ms: 1_700_000_000_000,
                };
                users.push((user.clone(), password_phc));
                Ok(Response::User(Some(user)))
            }
            Request::GetUser { email } => Ok(Response::Credentials(
                users
                    .iter()
                    .find(|(u, _)| u.email == normalize_email(&email))
                    .map(|(u, phc)| {
                        Box::new(Credentials {
                            user: u.clone(),
                            password_phc: phc.clone(),
                            member: authz::Member {
                                user: u.id,
                                org: OrgPath::root(),
                                permissions: Permissions::NONE,
                            },
                        })
                    }),
            )),
            Request::FindUser { user } => Ok(Response::User(
                find(&users, user).map(|i| users[i].0.clone()),
            )),
            Request::ListUsers { org, after, limit } => Ok(Response::Users(
                users
                    .iter()
                    .map(|(u, _)| u.clone())
                    .filter(|u| u.org == org && after.is_none_or(|a| u.id > a))
                    .take(limit as usize)
                    .collect(),
            )),
            Request::UpdateUser { user, change } => {
                let i = find(&users, user)
                    .ok_or_else(|| StoreError::NotFound(format!("user {}", user.0)))?;
                let (record, phc) = &mut users[i];
                if let Some(role) = change.role {
                    record.role = role;
                }
                if let Some(status) = change.status {
                    record.status = status;
                }
                if change.password_phc.is_some() {
                    phc.clone_from(&change.password_phc);
                }
                Ok(Response::User(Some(record.clone())))
            }
            Request::DeleteUser { user } | Request::RevokeSessions { user, .. } => {
                find(&users, user)
                    .map(|_| Response::Done)
                    .ok_or_else(|| StoreError::NotFound(format!("user {}", user.0)))
            }
            other => Err(StoreError::Invalid(format!("unexpected {other:?}"))),
        }
    });
    (dir, client, seen, users)
}

fn run(
    client: &mut StoreClient,
    command: UserCommand,
    json: bool,
    stdin: &[u8],
) -> anyhow::Result<String> {
    let mut out = Vec::new();
    execute(client, command, json, &mut &stdin[..], &mut out)?;
    Ok(test_store::text(out))
}

fn create(email: &str, password_stdin: bool) -> UserCommand {
    UserCommand::Create {
        email: email.into(),
        name: None,
        org: OrgId(2),
        role: RoleId(2),
        password_stdin,
    }
}

#[test]
fn a_generated_password_is_shown_once_and_only_its_hash_is_sent() {
    let (_dir, mut client, seen, users) = store();
    let out = run(&mut client, create(" Ann@Example.com", false), true, b"").expect("creates");
    let created: serde_json::Value = serde_json::from_str(&out).expect("json");
    let password = created["password"].as_str().expect("password");
    assert!(password.len() >= 16, "{password}");
    assert_eq!(
        (
            &created["id"],
            &created["email"],
            &created["org"],
            &created["role"],
            &created["status"]
        ),
        (
            &1.into(),
            &"ann@example.com".into(),
            &2.into(),
            &2.into(),
            &"active".into()
        )
    );
    let Request::CreateUser {
        status,
        password_phc: Some(phc),
        invite: None,
        name,
        ..
    } = &requests(&seen)[0]
    else {
        panic!("{:?}", requests(&seen))
    };
    assert_eq!(
        (status, name.as_str()),
        (&UserStatus::Active, " Ann@Example.com")
    );
    assert!(!phc.contains(password));
    let hash = client_hash(password, "ann@example.com");
    assert!(!phc.contains(&hash));
    assert_eq!(verify(phc, &hash), PasswordCheck::Matches);
    assert_eq!(users.lock().expect("lock").len(), 1);

    let show = UserCommand::Show {
        email: Some("ANN@example.com".into()),
        id: None,
    };
    let shown: serde_json::Value =
        serde_json::from_str(&run(&mut client, show, true, b"").expect("shows")).expect("json");
    assert_eq!(
        shown,
        serde_json::json!({"id": 1, "email": "ann@example.com", "name": " Ann@Example.com",
            "org": 2, "role": 2, "status": "active", "created_ms": 1_700_000_000_000u64})
    );
}

#[test]
fn a_password_from_stdin_is_used_and_never_printed() {
    let (_dir, mut client, _seen, users) = store();
    let out = run(
        &mut client,
        create("b@c.d", true),
        false,
        b"correct horse\r\nignored",
    )
    .expect("creates");
    assert_eq!(
        out,
        "Created user 1 b@c.d (org 2, role Staff (2), active).\n"
    );
    let phc = users.lock().expect("lock")[0].1.clone().expect("a hash");
    let hash = client_hash("correct horse", "b@c.d");
    assert_eq!(verify(&phc, &hash), PasswordCheck::Matches);
    for short in [&b""[..], b"short\n"] {
        let err = run(&mut client, create("e@f.g", true), false, short).expect_err("short");
        assert!(err.to_string().contains("shorter than"), "{err}");
    }
    let mut exact = vec![b'x'; MAX_PASSWORD_BYTES];
    exact.extend(b"\r\n");
    run(&mut client, create("max@f.g", true), false, &exact).expect("at the limit");
    let long = vec![b'x'; MAX_PASSWORD_BYTES + 3];
    let err = run(&mut client, create("e@f.g", true), false, &long).expect_err("long");
    assert!(err.to_string().contains("longer than"), "{err}");
}

#[test]
fn duplicates_and_unknown_users_say_what_to_do() {
    let (_dir, mut client, _seen, _) = store();
    run(&mut client, create("a@b.c", false), true, b"").expect("creates");
    let err = run(&mut client, create("A@B.C", false), true, b"").expect_err("duplicate");
    let err = err.to_string();
    assert!(
        err.contains("already exists") && err.contains("user show --email a@b.c"),
        "{err}"
    );
    let by_email = UserCommand::Show {
        email: Some("x@y.z".into()),
        id: None,
    };
    let err = run(&mut client, by_email, false, b"").expect_err("unknown");
    assert!(
        err.to_string().contains("no user has the email x@y.z"),
        "{err}"
    );
    let by_id = UserCommand::Show {
        email: None,
        id: Some(UserId(9)),
    };
    let err = run(&mut client, by_id, false, b"").expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "user 9 does not exist (see `portcullis admin user list --org ORG`)"
    );
}

#[test]
fn an_invitation_prints_its_secret_once_and_sends_only_its_hash() {
    let (_dir, mut client, seen, _) = store();
    let invite = |email: &str| UserCommand::Invite {
        email: email.into(),
        org: OrgId(3),
        role: RoleId(3),
        name: Some("Bo".into()),
    };
    let before = now_ms();
    let out = run(&mut client, invite("bo@example.com"), true, b"").expect("invites");
    let invited: serde_json::Value = serde_json::from_str(&out).expect("json");
    let secret = invited["invite_token"].as_str().expect("a secret");
    assert!(secrets::plausible(secret), "{secret}");
    assert_eq!(invited["status"], "invited");
    assert_eq!(invited["name"], "Bo");
    let Request::CreateUser {
        status,
        password_phc: None,
        invite: Some((hash, expires_ms)),
        org,
        role,
        ..
    } = &requests(&seen)[0]
    else {
        panic!("{:?}", requests(&seen))
    };
    assert_eq!(
        (status, org, role),
        (&UserStatus::Invited, &OrgId(3), &RoleId(3))
    );
    assert_eq!(*hash, secrets::hash(secret));
    let ttl = INVITE_TTL.as_millis() as u64;
    assert!((before + ttl..=now_ms() + ttl).contains(expires_ms));
    assert_eq!(invited["invite_expires_ms"], *expires_ms);

    let text = run(&mut client, invite("cy@example.com"), false, b"").expect("invites");
    assert!(
        text.starts_with(
            "Invited user 2 cy@example.com (org 3, role User (3), invited).\nInvitation secret: "
        ) && text.contains("shown only this once")
            && text.contains("sends no mail")
            && text.contains("/#/accept-invite?token="),
        "{text}"
    );
}

#[test]
fn list_pages_through_an_organization() {
    let (_dir, mut client, seen, _) = store();
    for email in ["a@b.c", "d@e.f"] {
        run(&mut client, create(email, false), true, b"").expect("creates");
    }
    let listed = run(&mut client, UserCommand::List { org: OrgId(2) }, true, b"").expect("lists");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(2));
    assert!(listed[0].get("password").is_none() && listed[0].get("password_phc").is_none());
    let text = run(&mut client, UserCommand::List { org: OrgId(2) }, false, b"").expect("lists");
    assert!(
        text.starts_with("ID  EMAIL") && text.contains("d@e.f  d@e.f  Staff (2)  active"),
        "{text}"
    );
    let empty = run(&mut client, UserCommand::List { org: OrgId(7) }, false, b"").expect("lists");
    assert!(empty.starts_with("Org 7 has no users"), "{empty}");
    let lists: Vec<Request> = requests(&seen)
        .into_iter()
        .filter(|r| matches!(r, Request::ListUsers { .. }))
        .collect();
    let page = |org, after: Option<u64>| Request::ListUsers {
        org: OrgId(org),
        after: after.map(UserId),
        limit: MAX_ACCOUNT_PAGE,
    };
    assert_eq!(lists[..2], [page(2, None), page(2, Some(2))]);
}

#[test]
fn changes_send_one_request_each_and_say_what_happened() {
    let (_dir, mut client, seen, users) = store();
    run(&mut client, create("a@b.c", false), true, b"").expect("creates");
    let id = UserId(1);
    let text = run(
        &mut client,
        UserCommand::SetRole {
            id,
            role: RoleId(1),
        },
        false,
        b"",
    )
    .expect("sets the role");
    assert_eq!(text, "User 1 a@b.c now has role Admin (1).\n");
    let text = run(&mut client, UserCommand::Suspend { id }, false, b"").expect("suspends");
    assert!(
        text.contains("is suspended") && text.contains("within a second"),
        "{text}"
    );
    let active: serde_json::Value = serde_json::from_str(
        &run(&mut client, UserCommand::Activate { id }, true, b"").expect("activates"),
    )
    .expect("json");
    assert_eq!(active["status"], "active");
    let set_password = UserCommand::SetPassword {
        id,
        password_stdin: true,
    };
    let text = run(&mut client, set_password, false, b"s3cret-horse\n").expect("sets");
    assert!(
        text.contains("has a new password") && !text.contains("s3cret"),
        "{text}"
    );
    let phc = users.lock().expect("lock")[0].1.clone().expect("a hash");
    let hash = client_hash("s3cret-horse", "a@b.c");
    assert_eq!(verify(&phc, &hash), PasswordCheck::Matches);
    let text = run(&mut client, UserCommand::Logout { id }, false, b"").expect("logs out");
    assert!(text.starts_with("Ended every session of user 1"), "{text}");
    let deleted = run(&mut client, UserCommand::Delete { id }, true, b"").expect("deletes");
    assert_eq!(deleted, "{\"deleted\":1}\n");
    let err = run(
        &mut client,
        UserCommand::Delete { id: UserId(5) },
        false,
        b"",
    )
    .expect_err("unknown");
    assert!(err.to_string().contains("user list"), "{err}");

    let change = |change: UserChange| Request::UpdateUser { user: id, change };
    let sent = requests(&seen);
    assert_eq!(
        sent[1..4],
        [
            change(UserChange {
                role: Some(RoleId(1)),
                ..UserChange::default()
            }),
            change(UserChange {
                status: Some(UserStatus::Suspended),
                ..UserChange::default()
            }),
            change(UserChange {
                status: Some(UserStatus::Active),
                ..UserChange::default()
            }),
        ]
    );
    assert_eq!(sent[4], Request::FindUser { user: id });
    assert!(
        matches!(&sent[5], Request::UpdateUser { user, change: UserChange { password_phc: Some(_), role: None, status: None, name: None } } if *user == id),
        "{:?}",
        sent[5]
    );
    assert_eq!(
        sent[6..],
        [
            Request::RevokeSessions {
                user: id,
                only: None
            },
            Request::DeleteUser { user: id },
            Request::DeleteUser { user: UserId(5) },
        ]
    );
}
