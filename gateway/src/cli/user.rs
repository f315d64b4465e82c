//! `portcullis admin user create|invite|list|show|set-role|suspend|activate|logout|delete|set-password`:
//! user accounts, through `portcullis_operations::users` as the operator. A password never leaves
//! this process in clear: the operations layer turns it into the Blynk client hash and that into an
//! argon2id PHC string, and only the PHC string goes to the store. This file reads a given password
//! from standard input, prints a generated password or an invitation secret once, and never prints
//! a hash.

use super::args::{now_ms, parse_org, parse_role, parse_user, role_label};
use super::events::AdminEvent;
use super::render::{self, failure, format_ms, printable, write_table};
use anyhow::{Context, anyhow};
use portcullis_operations::error::InvalidInput;
use portcullis_operations::users::{
    self, Change, INVITE_TTL, MAX_PASSWORD_BYTES, NewUser, PasswordChoice,
};
use portcullis_operations::{Missing, OperationError, Principal, StoreAccess};
use portcullis_protocol::authz::{OrgId, RoleId, UserId};
use portcullis_protocol::store::{MAX_ACCOUNT_PAGE, StoreError, UserRecord, UserStatus};
use serde::Serialize;
use std::io::{BufRead, Read, Write};

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create an active user with a password. Without --password-stdin a password is generated
    /// and shown only once.
    Create {
        /// Email address; the login name (stored in lower case).
        #[arg(long)]
        email: String,
        /// Display name (the email when left out).
        #[arg(long)]
        name: Option<String>,
        /// Organization id the user belongs to (see `org list`; 1 is the root).
        #[arg(long, value_name = "ID", default_value = "1", value_parser = parse_org)]
        org: OrgId,
        /// Role: admin, staff, user, or a custom role's id (see `role list --org ID`).
        #[arg(long, default_value = "user", value_parser = parse_role)]
        role: RoleId,
        /// Read the password from the first line of standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Invite a user: an account without a password and the secret of a single-use link to
    /// choose one (valid 24 hours), printed only this once. This command sends no mail; mailing
    /// invitations is the gateway's job (its REST API mails those it makes). Hand the link to
    /// the user yourself.
    Invite {
        /// Email address; the login name (stored in lower case).
        #[arg(long)]
        email: String,
        /// Organization id the user will belong to (see `org list`).
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        org: OrgId,
        /// Role: admin, staff, user, or a custom role's id (see `role list --org ID`).
        #[arg(long, value_parser = parse_role)]
        role: RoleId,
        /// Display name (the email when left out).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the users of an organization (not those of the organizations below it).
    List {
        /// Organization id (see `org list`).
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        org: OrgId,
    },
    /// Show one user: email, name, organization, role, status, creation time (never a hash).
    #[command(group = clap::ArgGroup::new("who").required(true).args(["email", "id"]))]
    Show {
        /// The user's email address (any case).
        #[arg(long)]
        email: Option<String>,
        /// The user's id.
        #[arg(long, value_name = "ID", value_parser = parse_user)]
        id: Option<UserId>,
    },
    /// Give a user another role (of their organization, or a built-in one).
    SetRole {
        /// User id (see `user list --org ID`).
        #[arg(value_parser = parse_user)]
        id: UserId,
        /// Role: admin, staff, user, or a custom role's id (see `role list --org ID`).
        #[arg(long, value_parser = parse_role)]
        role: RoleId,
    },
    /// Suspend a user: they cannot log in, and every session of theirs is revoked.
    Suspend {
        /// User id (see `user list --org ID`).
        #[arg(value_parser = parse_user)]
        id: UserId,
    },
    /// Re-activate a suspended user: they may log in again.
    Activate {
        /// User id (see `user list --org ID`).
        #[arg(value_parser = parse_user)]
        id: UserId,
    },
    /// Force a logout: end every session of a user (they may log in again).
    Logout {
        /// User id (see `user list --org ID`).
        #[arg(value_parser = parse_user)]
        id: UserId,
    },
    /// Delete a user with their sessions and API keys; devices they owned keep no owner.
    Delete {
        /// User id (see `user list --org ID`).
        #[arg(value_parser = parse_user)]
        id: UserId,
    },
    /// Set a user's password, read from the first line of standard input; every session of
    /// theirs is revoked.
    SetPassword {
        /// User id (see `user list --org ID`).
        #[arg(value_parser = parse_user)]
        id: UserId,
        /// Read the new password from the first line of standard input (required: a password
        /// is never an argument, which other local users could see).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

/// Where a revoked session ends: the note every command that revokes sessions prints.
pub const SESSIONS_CLOSE: &str =
    "the running gateway closes their live app connections within a second";

/// Runs a user command; `stdin` is read only by `--password-stdin`.
pub fn execute(
    store: &mut impl StoreAccess,
    command: UserCommand,
    json: bool,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let operator = &Principal::Operator;
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
                org,
                role,
                password,
            };
            create_user(store, user, json, out)
        }
        UserCommand::Invite {
            email,
            org,
            role,
            name,
        } => {
            let name = name.unwrap_or_else(|| email.clone());
            let now = now_ms();
            let invited = users::invite(store, operator, &email, name, org, role, now)
                .map_err(create_failure)?;
            AdminEvent::new(
                "admin_user_invited",
                format!("user {}", invited.user.email),
                format!("invited to {org} as {}", role_label(role)),
            )
            .record();
            let secret = invited.token.expose();
            let expires_ms = now.saturating_add(INVITE_TTL.as_millis() as u64);
            if json {
                return render::json(
                    out,
                    &InvitedView {
                        user: UserView::from(&invited.user),
                        invite_token: secret,
                        invite_expires_ms: expires_ms,
                    },
                );
            }
            describe(out, "Invited", &invited.user)?;
            writeln!(out, "Invitation secret: {secret}")?;
            writeln!(
                out,
                "It is shown only this once and works once, until {}. The CLI sends no mail: give the user the link <gateway public URL>/#/accept-invite?token={secret}",
                format_ms(expires_ms)
            )?;
            Ok(())
        }
        UserCommand::List { org } => list(store, org, json, out),
        UserCommand::Show { email, id } => {
            let user = match (id, email) {
                (Some(id), _) => users::find(store, operator, id).map_err(failure)?,
                (None, Some(email)) => find_by_email(store, &email)?,
                (None, None) => return Err(anyhow!("give --email EMAIL or --id ID")),
            };
            show(&user, json, out)
        }
        UserCommand::SetRole { id, role } => {
            let change = Change {
                role: Some(role),
                ..Change::default()
            };
            let what = format!("role set to {}", role_label(role));
            let user = change_user(store, id, change, ("admin_user_role_set", what))?;
            report(
                &user,
                json,
                out,
                &format!("now has role {}.", role_label(role)),
            )
        }
        UserCommand::Suspend { id } => {
            let change = Change {
                status: Some(UserStatus::Suspended),
                ..Change::default()
            };
            let event = ("admin_user_suspended", "suspended".to_owned());
            let user = change_user(store, id, change, event)?;
            let note = format!(
                "is suspended: they cannot log in, and every session of theirs was revoked ({SESSIONS_CLOSE})."
            );
            report(&user, json, out, &note)
        }
        UserCommand::Activate { id } => {
            let change = Change {
                status: Some(UserStatus::Active),
                ..Change::default()
            };
            let event = ("admin_user_activated", "activated".to_owned());
            let user = change_user(store, id, change, event)?;
            report(&user, json, out, "is active: they may log in again.")
        }
        UserCommand::SetPassword { id, .. } => {
            let change = Change {
                password: Some(read_password(stdin)?),
                ..Change::default()
            };
            let event = ("admin_user_password_set", "password set".to_owned());
            let user = change_user(store, id, change, event)?;
            let note = format!(
                "has a new password; every session of theirs was revoked ({SESSIONS_CLOSE})."
            );
            report(&user, json, out, &note)
        }
        UserCommand::Logout { id } => {
            users::force_logout(store, operator, id).map_err(failure)?;
            AdminEvent::new(
                "admin_user_logged_out",
                format!("user {}", id.0),
                "every session revoked",
            )
            .record();
            if json {
                return render::json(out, &serde_json::json!({"logged_out": id.0}));
            }
            writeln!(
                out,
                "Ended every session of user {} ({SESSIONS_CLOSE}); they may log in again.",
                id.0
            )?;
            Ok(())
        }
        UserCommand::Delete { id } => {
            users::delete(store, operator, id).map_err(failure)?;
            AdminEvent::new("admin_user_deleted", format!("user {}", id.0), "deleted").record();
            if json {
                return render::json(out, &serde_json::json!({"deleted": id.0}));
            }
            writeln!(
                out,
                "Deleted user {} with their sessions and API keys; devices they owned have no owner now.",
                id.0
            )?;
            Ok(())
        }
    }
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

/// A refused `user create`, `invite` or `set-password` with what to do about it.
fn create_failure(error: OperationError) -> anyhow::Error {
    match error {
        OperationError::Invalid(InvalidInput::PasswordTooShort { min }) => anyhow!(
            "the password on standard input is shorter than {min} characters (or missing); pipe one line, e.g. `printf '%s\\n' \"$PW\" | portcullis admin user ... --password-stdin`"
        ),
        OperationError::Invalid(InvalidInput::UserExists { email, why }) => anyhow!(
            "{why}; choose another email, or see the existing account with `portcullis admin user show --email {}`",
            printable(&email)
        ),
        OperationError::Invalid(InvalidInput::RefusedByStore(StoreError::Invalid(why))) => {
            anyhow!("the store refused the user: {why}")
        }
        other => failure(other),
    }
}

fn find_by_email(store: &mut impl StoreAccess, email: &str) -> anyhow::Result<UserRecord> {
    users::find_by_email(store, &Principal::Operator, email).map_err(|error| match error {
        OperationError::NotFound(Missing::User(email)) => anyhow!(
            "no user has the email {} (create one with `portcullis admin user create --email EMAIL --org ORG`)",
            printable(&email)
        ),
        other => failure(other),
    })
}

/// Applies a change and records it in the security log.
fn change_user(
    store: &mut impl StoreAccess,
    id: UserId,
    change: Change,
    (kind, what): (&'static str, String),
) -> anyhow::Result<UserRecord> {
    let user = users::update(store, &Principal::Operator, id, change).map_err(create_failure)?;
    AdminEvent::new(kind, format!("user {}", id.0), what).record();
    Ok(user)
}

/// A user as the admin CLI shows it: never a password hash.
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

impl<'a> From<&'a UserRecord> for UserView<'a> {
    fn from(user: &'a UserRecord) -> Self {
        Self {
            id: user.id.0,
            email: &user.email,
            name: &user.name,
            org: user.org.0,
            role: user.role.0,
            status: user.status.name(),
            created_ms: user.created_ms,
        }
    }
}

#[derive(Serialize)]
struct CreatedView<'a> {
    #[serde(flatten)]
    user: UserView<'a>,
    /// Only when generated here: shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
}

#[derive(Serialize)]
struct InvitedView<'a> {
    #[serde(flatten)]
    user: UserView<'a>,
    /// The invitation link's secret: shown this once.
    invite_token: &'a str,
    invite_expires_ms: u64,
}

/// `Created user 4 a@b.c (org 2, role User (3), active).`
fn describe(out: &mut dyn Write, verb: &str, user: &UserRecord) -> std::io::Result<()> {
    writeln!(
        out,
        "{verb} user {} {} (org {}, role {}, {}).",
        user.id.0,
        printable(&user.email),
        user.org.0,
        role_label(user.role),
        user.status.name()
    )
}

/// After a change: the user as JSON, or `User 4 a@b.c <note>`.
fn report(user: &UserRecord, json: bool, out: &mut dyn Write, note: &str) -> anyhow::Result<()> {
    if json {
        return render::json(out, &UserView::from(user));
    }
    writeln!(out, "User {} {} {note}", user.id.0, printable(&user.email))?;
    Ok(())
}

fn create_user(
    store: &mut impl StoreAccess,
    user: NewUser,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let created = users::create(store, &Principal::Operator, user).map_err(create_failure)?;
    AdminEvent::new(
        "admin_user_created",
        format!("user {}", created.user.email),
        format!(
            "created in org {} as {}",
            created.user.org.0,
            role_label(created.user.role)
        ),
    )
    .record();
    let password = created
        .generated_password
        .as_ref()
        .map(|password| password.expose());
    if json {
        let view = CreatedView {
            user: UserView::from(&created.user),
            password,
        };
        return render::json(out, &view);
    }
    describe(out, "Created", &created.user)?;
    if let Some(password) = password {
        writeln!(out, "Password: {password}")?;
        writeln!(
            out,
            "The password is shown only this once: hand it to the user now. Only a hash of it is stored."
        )?;
    }
    Ok(())
}

fn show(user: &UserRecord, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let view = UserView::from(user);
    if json {
        return render::json(out, &view);
    }
    render::write_fields(
        out,
        &[
            ("id", view.id.to_string()),
            ("email", printable(view.email)),
            ("name", printable(view.name)),
            ("org", view.org.to_string()),
            ("role", role_label(user.role)),
            ("status", view.status.to_owned()),
            ("created", format_ms(view.created_ms)),
        ],
    )?;
    Ok(())
}

/// Every user of `org`, page by page until the store has no more.
fn list(
    store: &mut impl StoreAccess,
    org: OrgId,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut all: Vec<UserRecord> = Vec::new();
    let mut after = None;
    loop {
        let page = users::list(store, &Principal::Operator, org, after, MAX_ACCOUNT_PAGE)
            .map_err(failure)?;
        let Some(last) = page.last() else { break };
        // Ids must grow, or a buggy store could keep us paging forever.
        if after.is_some_and(|after| last.id <= after) {
            return Err(anyhow!(
                "the store returned a user page that does not advance (last id {}); stopping",
                last.id.0
            ));
        }
        after = Some(last.id);
        all.extend(page);
    }
    if json {
        let views: Vec<UserView<'_>> = all.iter().map(UserView::from).collect();
        return render::json(out, &views);
    }
    if all.is_empty() {
        writeln!(
            out,
            "Org {} has no users. Add one with `portcullis admin user create --email EMAIL --org {}` or `user invite`.",
            org.0, org.0
        )?;
        return Ok(());
    }
    let rows: Vec<[String; 6]> = all
        .iter()
        .map(|u| {
            [
                u.id.0.to_string(),
                printable(&u.email),
                printable(&u.name),
                role_label(u.role),
                u.status.name().to_owned(),
                format_ms(u.created_ms),
            ]
        })
        .collect();
    write_table(
        out,
        ["ID", "EMAIL", "NAME", "ROLE", "STATUS", "CREATED"],
        &rows,
    )?;
    Ok(())
}

#[cfg(test)]
#[path = "user_tests.rs"]
mod tests;
