//! `portcullis admin`: bootstrap and scripting commands that talk to a running store over its
//! Unix socket, or over mutual TLS when the configuration names a remote store (so they work
//! while the gateway serves). This file parses the global flags, opens the store link as the
//! admin role and hands each noun to its file; every command runs operations of
//! `portcullis_operations` as the operator and prints either a short human-readable report or,
//! with `--json`, one JSON document on stdout for scripts.

use super::apikey::{self, ApikeyCommand};
use super::audit::{self, AuditArgs};
use super::backup;
use super::device::{self, DeviceCommand};
use super::org::{self, OrgCommand};
use super::role::{self, RoleCommand};
use super::template::{self, TemplateCommand};
use super::user::{self, UserCommand};
use crate::config::Config;
use anyhow::Context;
use portcullis_operations::StoreAccess;
use portcullis_protocol::store::{ClientHello, ClientRole};
use portcullis_store_client::{StoreClient, StoreEndpoint};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// How long an admin command waits for the store before giving up.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `portcullis admin`.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Data directory of the gateway whose store to use [default: the config's data_dir, else ./data].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Configuration file of that gateway; its store.socket or store.remote (if set) says where
    /// the store is.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON document instead of text (`audit`: one JSON object per line). Secrets
    /// appear only where they are shown once (a new token, password or invitation secret).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// The organization tree: create, list, show, rename and move organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// User accounts: create, invite, list, show, change role, suspend, activate, log out,
    /// delete, set a password.
    #[command(subcommand)]
    User(UserCommand),
    /// Roles and their permissions: list, create, update and delete custom roles; list every
    /// permission name.
    #[command(subcommand)]
    Role(RoleCommand),
    /// Templates (products) and their datastreams: create, list, show, delete.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Devices: create, list, inspect, read pins and history, re-provision, delete, transfer.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// List and revoke API keys (users create them with the REST API, not here).
    ///
    /// An API key acts as the user who created it, limited to the permissions chosen for it,
    /// so only a logged-in user can create one: the operator running this CLI is no user.
    /// Create keys with the REST API, `POST /api/v1/api-keys`, logged in as the user the key
    /// should act for. Revoking one here refuses every request made with it from then on.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Read the audit log: who changed what, when and from where (with --json, one JSON object
    /// per line, for export).
    ///
    /// Entries come in sequence order. To export incrementally, pass the last `seq` read as
    /// --after next time. The store writes each entry with the change it records; nothing
    /// removes one.
    Audit(AuditArgs),
    /// Write a consistent checkpoint of the running store's database into DIR (a new directory).
    Backup {
        /// Where to write it; must not exist yet, its parent must.
        dir: PathBuf,
    },
}

/// Runs an admin command against the store of the configured gateway, printing to stdout.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(data_dir) = &args.data_dir {
        config.data_dir = data_dir.clone();
    }
    let _security_log = crate::daemon::logging::security_only(&config)?;
    let endpoint = StoreEndpoint::open(&config.store_endpoint_spec())?;
    let hello = ClientHello::new(config.server.node_name.clone(), ClientRole::Admin);
    let mut client = StoreClient::connect_to(&endpoint, hello, ADMIN_TIMEOUT)?;
    let mut stdout = std::io::stdout().lock();
    execute(&mut client, args.command, args.json, &mut stdout)?;
    stdout.flush().context("cannot write to stdout")
}

/// Runs one command on an open link, writing its report to `out`.
pub fn execute(
    store: &mut impl StoreAccess,
    command: AdminCommand,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        AdminCommand::Org(command) => org::execute(store, command, json, out),
        AdminCommand::User(command) => {
            user::execute(store, command, json, &mut std::io::stdin().lock(), out)
        }
        AdminCommand::Role(command) => role::execute(store, command, json, out),
        AdminCommand::Template(command) => template::execute(store, command, json, out),
        AdminCommand::Device(command) => device::execute(store, command, json, out),
        AdminCommand::Apikey(command) => apikey::execute(store, command, json, out),
        AdminCommand::Audit(args) => audit::execute(store, args, json, out),
        AdminCommand::Backup { dir } => backup::execute(store, &dir, json, out),
    }
}
