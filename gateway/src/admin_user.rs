//! `portcullis admin user ...`: creating a user account and showing one. The password never
//! leaves this process: it is turned into the Blynk client hash here, that into an argon2id PHC
//! string ([`crate::password`]), and only the PHC string goes to the store. A generated
//! password is printed once; `user show` never prints the PHC string.

use crate::password::hash_client_hash;
use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use portcullis_protocol::app::{MAX_EMAIL_LEN, client_hash, normalize_email};
use portcullis_protocol::store::{Request, Response, StoreError, UserRecord};
use portcullis_store_client::{StoreClient, StoreClientError};
use serde::Serialize;
use std::io::{BufRead, Read, Write};

/// Random bytes of a generated password: 18 bytes are 144 bits, 24 base64url characters.
pub const GENERATED_PASSWORD_BYTES: usize = 18;

/// Shortest password `--password-stdin` accepts, in characters. A floor against typos and
/// empty input, not a strength meter.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Longest password line read from stdin, in bytes: a password is hashed client-side into a
/// fixed-size digest anyway, and a bounded read means a runaway pipe cannot fill memory.
pub const MAX_PASSWORD_BYTES: usize = 1024;

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user. Without --password-stdin a password is generated and shown only once.
    Create {
        /// Email address; the login name (stored in lower case).
        #[arg(long)]
        email: String,
        /// Organization whose devices the user sees.
        #[arg(long, default_value = "default")]
        org: String,
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
    client: &mut StoreClient,
    command: UserCommand,
    json: bool,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        UserCommand::Create {
            email,
            org,
            password_stdin,
        } => {
            let password = if password_stdin {
                Password::Given(read_password(stdin)?)
            } else {
                Password::Generated(generate_password()?)
            };
            create_user(client, &email, org, password, json, out)
        }
        UserCommand::Show { email } => show_user(client, &email, json, out),
    }
}

enum Password {
    Given(String),
    Generated(String),
}

/// A fresh password: [`GENERATED_PASSWORD_BYTES`] from the OS CSPRNG, base64url.
fn generate_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; GENERATED_PASSWORD_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("the system random generator failed: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The first line of `input`, without its line ending, checked for length.
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
    if password.len() > MAX_PASSWORD_BYTES {
        bail!("the password is longer than {MAX_PASSWORD_BYTES} bytes");
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!(
            "the password on standard input is shorter than {MIN_PASSWORD_CHARS} characters (or missing); pipe one line, e.g. `printf '%s\\n' \"$PW\" | portcullis admin user create ... --password-stdin`"
        );
    }
    Ok(password.to_owned())
}

#[derive(Serialize)]
struct CreatedUser<'a> {
    email: &'a str,
    org: &'a str,
    /// Only when generated here: shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
}

/// Security event of a user created with the admin CLI, with the operator's uid.
struct UserCreated<'a> {
    email: &'a str,
    org: &'a str,
}

impl crate::security::SecurityEvent for UserCreated<'_> {
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
            "created by uid {} with the admin CLI in org {:?}",
            nix::unistd::getuid(),
            self.org
        )
    }
    fn message(&self) -> &'static str {
        "admin action"
    }
}

fn create_user(
    client: &mut StoreClient,
    email: &str,
    org: String,
    password: Password,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let email = normalize_email(email);
    if email.len() > MAX_EMAIL_LEN {
        bail!("the email is longer than {MAX_EMAIL_LEN} bytes");
    }
    let (plain, generated) = match &password {
        Password::Given(p) => (p.as_str(), false),
        Password::Generated(p) => (p.as_str(), true),
    };
    // The same hash an app computes at login from what the user types (the email lower-cased).
    let phc = hash_client_hash(&client_hash(plain, &email))?;
    let request = Request::CreateUser {
        email: email.clone(),
        org: org.clone(),
        password_phc: phc,
    };
    match client.call(request) {
        Ok(Response::Done) => {}
        Ok(other) => bail!("the store answered CreateUser with an unexpected {other:?}"),
        Err(StoreClientError::Store(StoreError::Invalid(why)))
            if why.contains("already exists") =>
        {
            bail!(
                "{why}; choose another email, or see the existing account with `portcullis admin user show --email {email}`"
            )
        }
        Err(StoreClientError::Store(StoreError::Invalid(why))) => {
            bail!("the store refused the user: {why}")
        }
        Err(other) => return Err(other.into()),
    }
    crate::security::record(
        "admin",
        &UserCreated {
            email: &email,
            org: &org,
        },
    );
    let created = CreatedUser {
        email: &email,
        org: &org,
        password: generated.then_some(plain),
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&created)?)?;
        return Ok(());
    }
    let (shown_email, shown_org) = (
        crate::admin::printable(&email),
        crate::admin::printable(&org),
    );
    writeln!(out, "Created user {shown_email} (org {shown_org}).")?;
    if generated {
        writeln!(out, "Password: {plain}")?;
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
    email: &'a str,
    org: &'a str,
    created_ms: u64,
}

fn show_user(
    client: &mut StoreClient,
    email: &str,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let user: UserRecord = match client.call(Request::GetUser {
        email: email.to_owned(),
    })? {
        Response::User(Some(user)) => user,
        Response::User(None) => bail!(
            "no user has the email {} (create one with `portcullis admin user create --email EMAIL --org ORG`)",
            crate::admin::printable(&normalize_email(email))
        ),
        other => bail!("the store answered GetUser with an unexpected {other:?}"),
    };
    let view = UserView {
        email: &user.email,
        org: &user.org,
        created_ms: user.created_ms,
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&view)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<9} {}",
        "email:",
        crate::admin::printable(view.email)
    )?;
    writeln!(out, "{:<9} {}", "org:", crate::admin::printable(view.org))?;
    writeln!(
        out,
        "{:<9} {}",
        "created:",
        crate::admin::format_ms(view.created_ms)
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::{PasswordCheck, verify};
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
