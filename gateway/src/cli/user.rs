//! `portcullis admin user create|show`: creating a user account and showing one, through
//! `portcullis_operations::users` as the operator. The password never leaves this process in
//! clear: the operations layer turns it into the Blynk client hash and that into an argon2id
//! PHC string, and only the PHC string goes to the store. This file reads a given password from
//! standard input, prints a generated one once, and never prints the PHC string.

use super::render::{self, failure, format_ms, printable};
use anyhow::{Context, anyhow};
use portcullis_operations::error::InvalidInput;
use portcullis_operations::users::{self, MAX_PASSWORD_BYTES, NewUser, PasswordChoice};
use portcullis_operations::{Missing, OperationError, Principal, StoreAccess};
use portcullis_protocol::authz::{BuiltInRole, OrgId, RoleId};
use portcullis_protocol::store::StoreError;
use serde::Serialize;
use std::io::{BufRead, Read, Write};

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user. Without --password-stdin a password is generated and shown only once.
    Create {
        /// Email address; the login name (stored in lower case).
        #[arg(long)]
        email: String,
        /// Display name (the email when left out).
        #[arg(long)]
        name: Option<String>,
        /// Organization id the user belongs to (see `org list`; 1 is the root).
        #[arg(long, default_value_t = 1)]
        org: u32,
        /// Role: admin, staff, user, or a custom role's id (see `role list`).
        #[arg(long, default_value = "user", value_parser = parse_role)]
        role: RoleId,
        /// Read the password from the first line of standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Show a user's email, organization and creation time (never the password hash).
    Show {
        #[arg(long)]
        email: String,
    },
}

/// Runs a user command; `stdin` is read only by `create --password-stdin`.
pub fn execute(
    store: &mut impl StoreAccess,
    command: UserCommand,
    json: bool,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            email,
            name,
            org,
            role,
            password_stdin,
        } => {
            let password = if password_stdin {
                PasswordChoice::Given(read_password(stdin)?)
            } else {
                PasswordChoice::Generate
            };
            let user = NewUser {
                name: name.unwrap_or_else(|| email.clone()),
                email,
                org: OrgId(org),
                role,
                password,
            };
            create_user(store, user, json, out)
        }
        UserCommand::Show { email } => show_user(store, &email, json, out),
    }
}

/// A role by built-in name (any case) or id.
pub fn parse_role(text: &str) -> Result<RoleId, String> {
    if let Some(role) = BuiltInRole::ALL
        .into_iter()
        .find(|role| role.name().eq_ignore_ascii_case(text))
    {
        return Ok(role.id());
    }
    text.parse::<u32>()
        .map(RoleId)
        .map_err(|_| format!("{text:?} is neither admin, staff, user nor a role id"))
}

/// The first line of `input`, without its line ending. Reads at most a little more than
/// [`MAX_PASSWORD_BYTES`], so a runaway pipe cannot fill memory; the length rules themselves
/// are the operation's.
fn read_password(input: &mut dyn BufRead) -> anyhow::Result<String> {
    /// Room for the line ending (`\r\n`) beyond the password itself.
    const LINE_END: u64 = 2;
    let mut line = String::new();
    input
        .take(MAX_PASSWORD_BYTES as u64 + LINE_END)
        .read_line(&mut line)
        .context("cannot read the password from standard input (it must be UTF-8)")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    Ok(password.to_owned())
}

#[derive(Serialize)]
struct CreatedUser<'a> {
    id: u64,
    email: &'a str,
    org: u32,
    role: u32,
    /// Only when generated here: shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
}

/// Security event of a user created with the admin CLI, with the operator's uid.
struct UserCreated<'a> {
    email: &'a str,
    org: u32,
}

impl crate::guard::security_log::SecurityEvent for UserCreated<'_> {
    fn kind(&self) -> &'static str {
        "admin_user_created"
    }
    fn source(&self) -> Option<std::net::IpAddr> {
        None
    }
    fn subject(&self) -> String {
        format!("user {}", self.email)
    }
    fn reason(&self) -> String {
        format!(
            "created by uid {} with the admin CLI in org {}",
            nix::unistd::getuid(),
            self.org
        )
    }
    fn message(&self) -> &'static str {
        "admin action"
    }
}

/// A refused `user create` with what to do about it.
fn create_failure(error: OperationError) -> anyhow::Error {
    match error {
        OperationError::Invalid(InvalidInput::PasswordTooShort { min }) => anyhow!(
            "the password on standard input is shorter than {min} characters (or missing); pipe one line, e.g. `printf '%s\\n' \"$PW\" | portcullis admin user create ... --password-stdin`"
        ),
        OperationError::Invalid(InvalidInput::UserExists { email, why }) => anyhow!(
            "{why}; choose another email, or see the existing account with `portcullis admin user show --email {email}`"
        ),
        OperationError::Invalid(InvalidInput::RefusedByStore(StoreError::Invalid(why))) => {
            anyhow!("the store refused the user: {why}")
        }
        other => failure(other),
    }
}

fn create_user(
    store: &mut impl StoreAccess,
    user: NewUser,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let created = users::create(store, &Principal::Operator, user).map_err(create_failure)?;
    crate::guard::security_log::record(
        "admin",
        &UserCreated {
            email: &created.user.email,
            org: created.user.org.0,
        },
    );
    let password = created
        .generated_password
        .as_ref()
        .map(|password| password.expose());
    let shown = CreatedUser {
        id: created.user.id.0,
        email: &created.user.email,
        org: created.user.org.0,
        role: created.user.role.0,
        password,
    };
    if json {
        return render::json(out, &shown);
    }
    writeln!(
        out,
        "Created user {} {} (org {}, role {}).",
        shown.id,
        printable(shown.email),
        shown.org,
        shown.role
    )?;
    if let Some(password) = password {
        writeln!(out, "Password: {password}")?;
        writeln!(
            out,
            "The password is shown only this once: hand it to the user now. Only a hash of it is stored."
        )?;
    }
    Ok(())
}

/// A user as `user show` prints it: never the password hash.
#[derive(Serialize)]
struct UserView<'a> {
    id: u64,
    email: &'a str,
    name: &'a str,
    org: u32,
    role: u32,
    status: &'static str,
    created_ms: u64,
}

fn show_user(
    store: &mut impl StoreAccess,
    email: &str,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let user = users::find_by_email(store, &Principal::Operator, email).map_err(|error| match error {
        OperationError::NotFound(Missing::User(email)) => anyhow!(
            "no user has the email {} (create one with `portcullis admin user create --email EMAIL --org ORG`)",
            printable(&email)
        ),
        other => failure(other),
    })?;
    let view = UserView {
        id: user.id.0,
        email: &user.email,
        name: &user.name,
        org: user.org.0,
        role: user.role.0,
        status: user.status.name(),
        created_ms: user.created_ms,
    };
    if json {
        return render::json(out, &view);
    }
    writeln!(out, "{:<9} {}", "id:", view.id)?;
    writeln!(out, "{:<9} {}", "email:", printable(view.email))?;
    writeln!(out, "{:<9} {}", "name:", printable(view.name))?;
    writeln!(out, "{:<9} {}", "org:", view.org)?;
    writeln!(out, "{:<9} {}", "role:", view.role)?;
    writeln!(out, "{:<9} {}", "status:", view.status)?;
    writeln!(out, "{:<9} {}", "created:", format_ms(view.created_ms))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_operations::password::{PasswordCheck, verify};
    use portcullis_protocol::app::client_hash;
    use portcullis_protocol::store::{Request, Response, UserRecord};
    use portcullis_store_client::StoreClient;
    use portcullis_store_client::fake_store::{admin_hello, serving};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A fake store keeping users in a list, refusing duplicates like the real one.
    fn store() -> (tempfile::TempDir, StoreClient, Arc<Mutex<Vec<UserRecord>>>) {
        let users = Arc::new(Mutex::new(Vec::<UserRecord>::new()));
        let seen = Arc::clone(&users);
        let (dir, path, _server) = serving(move |request| {
            let mut users = seen.lock().expect("lock");
            match request {
                Request::CreateUser {
                    email,
                    org,
                    password_phc,
                } => {
                    if users.iter().any(|u| u.email == email) {
                        return Err(StoreError::Invalid(format!(
                            "a user with the email {email} already exists"
                        )));
                    }
                    users.push(UserRecord {
                        email,
                        org,
                        password_phc,
                        created_ms: 1_700_000_000_000,
                    });
                    Ok(Response::Done)
                }
                Request::GetUser { email } => Ok(Response::User(
                    users.iter().find(|u| u.email == email).cloned(),
                )),
                other => Err(StoreError::Invalid(format!("unexpected {other:?}"))),
            }
        });
        let client =
            StoreClient::connect(&path, admin_hello(), Duration::from_secs(5)).expect("connects");
        (dir, client, users)
    }

    fn run(
        client: &mut StoreClient,
        command: UserCommand,
        json: bool,
        stdin: &[u8],
    ) -> anyhow::Result<String> {
        let mut out = Vec::new();
        execute(client, command, json, &mut &stdin[..], &mut out)?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    fn create(email: &str, password_stdin: bool) -> UserCommand {
        UserCommand::Create {
            email: email.into(),
            org: "acme".into(),
            password_stdin,
        }
    }

    #[test]
    fn a_generated_password_is_shown_once_and_only_its_hash_is_sent() {
        let (_dir, mut client, users) = store();
        let out = run(&mut client, create(" Ann@Example.com", false), true, b"").expect("creates");
        let created: serde_json::Value = serde_json::from_str(&out).expect("json");
        let password = created["password"].as_str().expect("password");
        assert!(password.len() >= 16, "{password}");
        assert_eq!(created["email"], "ann@example.com");
        let stored = users.lock().expect("lock")[0].clone();
        assert!(!stored.password_phc.contains(password));
        let hash = client_hash(password, "Ann@Example.com");
        assert!(!stored.password_phc.contains(&hash));
        assert_eq!(verify(&stored.password_phc, &hash), PasswordCheck::Matches);

        let shown = run(
            &mut client,
            UserCommand::Show {
                email: "ann@example.com".into(),
            },
            true,
            b"",
        )
        .expect("shows");
        let shown: serde_json::Value = serde_json::from_str(&shown).expect("json");
        assert_eq!(
            shown,
            serde_json::json!({"email": "ann@example.com", "org": "acme", "created_ms": 1_700_000_000_000u64})
        );
    }

    #[test]
    fn a_password_from_stdin_is_used_and_never_printed() {
        let (_dir, mut client, users) = store();
        let out = run(
            &mut client,
            create("b@c.d", true),
            false,
            b"correct horse\r\nignored",
        )
        .expect("creates");
        assert!(
            out.contains("Created user b@c.d") && !out.contains("Password"),
            "{out}"
        );
        let stored = users.lock().expect("lock")[0].clone();
        let hash = client_hash("correct horse", "b@c.d");
        assert_eq!(verify(&stored.password_phc, &hash), PasswordCheck::Matches);
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
        let (_dir, mut client, _) = store();
        run(&mut client, create("a@b.c", false), true, b"").expect("creates");
        let err = run(&mut client, create("A@B.C", false), true, b"").expect_err("duplicate");
        let err = err.to_string();
        assert!(
            err.contains("already exists") && err.contains("user show --email a@b.c"),
            "{err}"
        );
        let err = run(
            &mut client,
            UserCommand::Show {
                email: "x@y.z".into(),
            },
            false,
            b"",
        )
        .expect_err("unknown");
        assert!(
            err.to_string().contains("no user has the email x@y.z"),
            "{err}"
        );
    }
}
