//! `portcullis admin`: bootstrap and scripting commands that talk to a running store over its
//! Unix socket, or over mutual TLS when the configuration names a remote store (so they work
//! while the gateway serves). Every command prints either a short
//! human-readable report or, with `--json`, one JSON document on stdout for scripts. A device's
//! token is generated here, shown once, and only its SHA-256 hash is sent to the store. User
//! commands live in `admin_user`, history and backup in `admin_store`.

use crate::config::Config;
use crate::token::DeviceToken;
use anyhow::{Context, anyhow, bail};
use portcullis_protocol::body::{DeviceInfo, PinAddr, SEPARATOR};
use portcullis_protocol::store::{
    ClientHello, ClientRole, DeviceId, DeviceRecord, PinValue, Request, Response, StoreError,
};
use portcullis_store_client::{StoreClient, StoreClientError, StoreEndpoint};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// How long an admin command waits for the store before giving up.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Devices fetched per `ListDevices` request.
const LIST_PAGE: u32 = 1000;

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
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Create, list and inspect devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Create and show user accounts (email, org, password).
    #[command(subcommand)]
    User(crate::admin_user::UserCommand),
    /// Write a consistent checkpoint of the running store's database into DIR (a new directory).
    Backup {
        /// Where to write it; must not exist yet, its parent must.
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DeviceCommand {
    /// Register a device and print its token (shown only this once).
    Create {
        /// Display name of the device.
        #[arg(long)]
        name: String,
        /// Template (product) id the device firmware is built for, e.g. TMPLxxxxxx.
        #[arg(long)]
        template: String,
        /// Organization the device belongs to.
        #[arg(long, default_value = "default")]
        org: String,
    },
    /// List every device.
    List,
    /// Show one device: presence, last connection, what its firmware reported.
    Get {
        /// Device id (see `device list`).
        id: DeviceId,
    },
    /// Show the latest stored value of each pin of a device.
    Pins {
        /// Device id (see `device list`).
        id: DeviceId,
    },
    /// Show the stored values of one pin over a time range, raw or downsampled.
    History {
        /// Device id (see `device list`).
        id: DeviceId,
        /// Pin name such as V5, D13 or A0.
        #[arg(value_parser = parse_pin)]
        pin: PinAddr,
        /// Start of the range (inclusive): RFC 3339 or Unix ms [default: one day before --to].
        #[arg(long, value_parser = crate::admin_store::parse_time)]
        from: Option<u64>,
        /// End of the range (exclusive): RFC 3339 or Unix ms [default: now].
        #[arg(long, value_parser = crate::admin_store::parse_time)]
        to: Option<u64>,
        /// Downsample into buckets of this length (min/max/avg each): 500ms, 30s, 5m, 1h, 1d.
        #[arg(long, value_parser = crate::admin_store::parse_step)]
        step: Option<u64>,
    },
}

fn parse_pin(name: &str) -> Result<PinAddr, String> {
    PinAddr::parse_name(name).map_err(|e| e.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs an admin command against the store of the configured gateway, printing to stdout.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(data_dir) = &args.data_dir {
        config.data_dir = data_dir.clone();
    }
    let _security_log = crate::logging::security_only(&config)?;
    let endpoint = StoreEndpoint::open(&config.store_endpoint_spec())?;
    let hello = ClientHello::new(config.server.node_name.clone(), ClientRole::Admin);
    let mut client = StoreClient::connect_to(&endpoint, hello, ADMIN_TIMEOUT)?;
    let mut stdout = std::io::stdout().lock();
    execute(&mut client, args.command, args.json, &mut stdout)?;
    stdout.flush().context("cannot write to stdout")
}

/// Runs one command on an open link, writing its report to `out`.
pub fn execute(
    client: &mut StoreClient,
    command: AdminCommand,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        AdminCommand::Device(DeviceCommand::Create {
            name,
            template,
            org,
        }) => create_device(client, name, template, org, json, out),
        AdminCommand::Device(DeviceCommand::List) => list_devices(client, json, out),
        AdminCommand::Device(DeviceCommand::Get { id }) => get_device(client, id, json, out),
        AdminCommand::Device(DeviceCommand::Pins { id }) => device_pins(client, id, json, out),
        AdminCommand::Device(DeviceCommand::History {
            id,
            pin,
            from,
            to,
            step,
        }) => {
            let to = to.unwrap_or_else(now_ms);
            let from = from
                .unwrap_or_else(|| to.saturating_sub(crate::admin_store::DEFAULT_HISTORY_SPAN_MS));
            let query = crate::admin_store::HistoryQuery {
                device: id,
                pin,
                from_ms: from,
                to_ms: to,
                step_ms: step,
            };
            crate::admin_store::device_history(client, query, json, out)
        }
        AdminCommand::Backup { dir } => crate::admin_store::backup(client, &dir, json, out),
        AdminCommand::User(command) => {
            crate::admin_user::execute(client, command, json, &mut std::io::stdin().lock(), out)
        }
    }
}

/// Security events of the admin CLI: every change it makes, with the operator's uid.
#[derive(Debug)]
pub enum AdminEvent<'a> {
    DeviceCreated {
        id: DeviceId,
        name: &'a str,
        template: &'a str,
        org: &'a str,
    },
}

impl crate::security::SecurityEvent for AdminEvent<'_> {
    fn kind(&self) -> &'static str {
        match self {
            AdminEvent::DeviceCreated { .. } => "admin_device_created",
        }
    }
    fn source(&self) -> Option<std::net::IpAddr> {
        None
    }
    fn subject(&self) -> String {
        match self {
            AdminEvent::DeviceCreated { id, .. } => format!("device {id}"),
        }
    }
    fn reason(&self) -> String {
        let uid = nix::unistd::getuid();
        match self {
            AdminEvent::DeviceCreated {
                name,
                template,
                org,
                ..
            } => format!(
                "created by uid {uid} with the admin CLI: name {name:?}, template {template:?}, org {org:?}; a new token was issued"
            ),
        }
    }
    fn message(&self) -> &'static str {
        "admin action"
    }
}

#[derive(Serialize)]
struct CreatedDevice<'a> {
    id: DeviceId,
    name: &'a str,
    template: &'a str,
    org: &'a str,
    token: &'a str,
}

fn create_device(
    client: &mut StoreClient,
    name: String,
    template: String,
    org: String,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let token = DeviceToken::generate()?;
    let request = Request::CreateDevice {
        org,
        template,
        name,
        token_hash: token.hash(),
    };
    let record = match client.call(request)? {
        Response::Device(record) => record,
        other => bail!("the store answered CreateDevice with an unexpected {other:?}"),
    };
    crate::security::record(
        "admin",
        &AdminEvent::DeviceCreated {
            id: record.id,
            name: &record.name,
            template: &record.template,
            org: &record.org,
        },
    );
    let created = CreatedDevice {
        id: record.id,
        name: &record.name,
        template: &record.template,
        org: &record.org,
        token: token.expose(),
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&created)?)?;
    } else {
        writeln!(
            out,
            "Created device {} {:?} (template {}, org {}).",
            created.id,
            printable(created.name),
            printable(created.template),
            printable(created.org)
        )?;
        writeln!(out, "Token: {}", created.token)?;
        writeln!(
            out,
            "The token is shown only this once: put it in the device's firmware now. Only its hash is stored."
        )?;
    }
    Ok(())
}

/// A device as the admin CLI shows it (`online` spelled out; never a token).
#[derive(Serialize)]
struct DeviceView<'a> {
    id: DeviceId,
    name: &'a str,
    template: &'a str,
    org: &'a str,
    online: bool,
    sessions: u32,
    created_ms: u64,
    last_seen_ms: Option<u64>,
    last_addr: Option<&'a str>,
    info: Option<&'a DeviceInfo>,
}

impl<'a> From<&'a DeviceRecord> for DeviceView<'a> {
    fn from(record: &'a DeviceRecord) -> Self {
        Self {
            id: record.id,
            name: &record.name,
            template: &record.template,
            org: &record.org,
            online: record.online(),
            sessions: record.sessions,
            created_ms: record.created_ms,
            last_seen_ms: record.last_seen_ms,
            last_addr: record.last_addr.as_deref(),
            info: record.info.as_ref(),
        }
    }
}

/// Every device, fetched page by page until the store has no more.
fn fetch_all_devices(client: &mut StoreClient) -> anyhow::Result<Vec<DeviceRecord>> {
    let mut devices: Vec<DeviceRecord> = Vec::new();
    let mut after = None;
    loop {
        let page = match client.call(Request::ListDevices {
            after,
            limit: LIST_PAGE,
            org: None,
        })? {
            Response::Devices(page) => page,
            other => bail!("the store answered ListDevices with an unexpected {other:?}"),
        };
        let Some(last) = page.last() else { break };
        // Ids must grow, or a buggy store could keep us paging forever.
        if after.is_some_and(|after| last.id <= after) {
            bail!(
                "the store returned a device page that does not advance (last id {})",
                last.id
            );
        }
        after = Some(last.id);
        // A short page does not prove the end (the store may cap pages to fit a frame); only an
        // empty one does.
        devices.extend(page);
    }
    Ok(devices)
}

fn list_devices(client: &mut StoreClient, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let devices = fetch_all_devices(client)?;
    if json {
        let views: Vec<DeviceView<'_>> = devices.iter().map(DeviceView::from).collect();
        writeln!(out, "{}", serde_json::to_string(&views)?)?;
        return Ok(());
    }
    if devices.is_empty() {
        writeln!(
            out,
            "No devices. Create one with `portcullis admin device create --name NAME --template TMPL`."
        )?;
        return Ok(());
    }
    let rows: Vec<[String; 6]> = devices
        .iter()
        .map(|d| {
            [
                d.id.to_string(),
                printable(&d.name),
                printable(&d.template),
                printable(&d.org),
                if d.online() {
                    "yes".into()
                } else {
                    "no".into()
                },
                d.last_seen_ms.map_or_else(|| "never".into(), format_ms),
            ]
        })
        .collect();
    write_table(
        out,
        ["ID", "NAME", "TEMPLATE", "ORG", "ONLINE", "LAST SEEN"],
        &rows,
    )?;
    Ok(())
}

fn get_device(
    client: &mut StoreClient,
    id: DeviceId,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let record = match client
        .call(Request::GetDevice { device: id })
        .map_err(|e| device_error(id, e))?
    {
        Response::Device(record) => record,
        other => bail!("the store answered GetDevice with an unexpected {other:?}"),
    };
    let view = DeviceView::from(&record);
    if json {
        writeln!(out, "{}", serde_json::to_string(&view)?)?;
        return Ok(());
    }
    let none = || "-".to_owned();
    let info = record.info.clone().unwrap_or_default();
    let lines = [
        ("id", view.id.to_string()),
        ("name", printable(view.name)),
        ("template", printable(view.template)),
        ("org", printable(view.org)),
        (
            "online",
            format!(
                "{} ({} session(s))",
                if view.online { "yes" } else { "no" },
                view.sessions
            ),
        ),
        ("created", format_ms(view.created_ms)),
        (
            "last seen",
            view.last_seen_ms.map_or_else(|| "never".into(), format_ms),
        ),
        ("last address", view.last_addr.map_or_else(none, printable)),
        (
            "heartbeat",
            info.heartbeat_secs.map_or_else(none, |s| format!("{s} s")),
        ),
        (
            "buff-in",
            info.buff_in.map_or_else(none, |b| format!("{b} bytes")),
        ),
        (
            "firmware template",
            info.template.as_deref().map_or_else(none, printable),
        ),
        (
            "firmware",
            info.firmware.as_deref().map_or_else(none, printable),
        ),
        (
            "library",
            info.lib_version.as_deref().map_or_else(none, printable),
        ),
        (
            "board",
            info.device_type.as_deref().map_or_else(none, printable),
        ),
    ];
    for (key, value) in lines {
        writeln!(out, "{:<18} {value}", format!("{key}:"))?;
    }
    Ok(())
}

/// A pin value as `device pins` prints it.
#[derive(Debug, PartialEq, Eq, Serialize)]
struct PinView {
    pin: String,
    /// All values in one string, NUL separators shown as spaces.
    value: String,
    /// Each value of a multi-value pin (one element for a plain pin).
    values: Vec<String>,
    at_ms: u64,
}

impl From<&PinValue> for PinView {
    fn from(stored: &PinValue) -> Self {
        let values: Vec<String> = stored
            .value
            .split(|&b| b == SEPARATOR)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        Self {
            pin: stored.pin.to_string(),
            value: values.join(" "),
            values,
            at_ms: stored.at_ms,
        }
    }
}

fn device_pins(
    client: &mut StoreClient,
    id: DeviceId,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // The device lookup tells an unknown device from one that never wrote a pin; both requests
    // travel together.
    let mut replies = client.call_many(vec![
        Request::GetDevice { device: id },
        Request::ReadPins {
            device: id,
            pins: None,
        },
    ])?;
    let (Some(pins_reply), Some(device_reply)) = (replies.pop(), replies.pop()) else {
        bail!("the store answered two requests with fewer replies");
    };
    device_reply.map_err(|e| device_error(id, e.into()))?;
    let pins = match pins_reply? {
        Response::Pins(pins) => pins,
        other => bail!("the store answered ReadPins with an unexpected {other:?}"),
    };
    let views: Vec<PinView> = pins.iter().map(PinView::from).collect();
    if json {
        writeln!(out, "{}", serde_json::to_string(&views)?)?;
        return Ok(());
    }
    if views.is_empty() {
        writeln!(out, "Device {id} has no stored pin values.")?;
        return Ok(());
    }
    let rows: Vec<[String; 3]> = views
        .iter()
        .map(|v| [v.pin.clone(), printable(&v.value), format_ms(v.at_ms)])
        .collect();
    write_table(out, ["PIN", "VALUE", "UPDATED"], &rows)?;
    Ok(())
}

/// Turns "not found" into a message about the device the user named.
pub(crate) fn device_error(id: DeviceId, error: StoreClientError) -> anyhow::Error {
    match error {
        StoreClientError::Store(StoreError::NotFound(_)) => {
            anyhow!("device {id} does not exist (see `portcullis admin device list`)")
        }
        other => other.into(),
    }
}

/// Unix milliseconds as RFC 3339 UTC, or the raw number when out of range.
pub(crate) fn format_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// Device-supplied text with control characters replaced, so a name cannot drive the terminal.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

pub(crate) fn write_table<const N: usize>(
    out: &mut dyn Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut write_row = |cells: [&str; N]| -> std::io::Result<()> {
        let line: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())
    };
    write_row(header)?;
    for row in rows {
        write_row(row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{is_plausible_token, token_hash};
    use portcullis_protocol::body::PinKind;
    use portcullis_protocol::store::TokenHash;
    use portcullis_store_client::fake_store::{admin_hello, serving};
    use std::sync::{Arc, Mutex};

    /// An in-memory store with `devices` devices (ids 1..), device 1 having two pins; records
    /// the token hashes it is sent.
    fn store_with(devices: u64) -> (tempfile::TempDir, StoreClient, Arc<Mutex<Vec<TokenHash>>>) {
        let hashes = Arc::new(Mutex::new(Vec::new()));
        let seen = hashes.clone();
        let mut records: Vec<DeviceRecord> = (1..=devices)
            .map(|id| record(id, &format!("dev{id}")))
            .collect();
        let (dir, path, _server) = serving(move |request| match request {
            Request::CreateDevice {
                org,
                template,
                name,
                token_hash,
            } => {
                seen.lock().expect("lock").push(token_hash);
                let mut created = record(records.len() as u64 + 1, &name);
                (created.org, created.template) = (org, template);
                records.push(created.clone());
                Ok(Response::Device(created))
            }
            Request::ListDevices { after, limit, .. } => Ok(Response::Devices(
                records
                    .iter()
                    .filter(|d| after.is_none_or(|a| d.id > a))
                    .take(limit as usize)
                    .cloned()
                    .collect(),
            )),
            Request::GetDevice { device } => records
                .iter()
                .find(|d| d.id == device)
                .cloned()
                .map(Response::Device)
                .ok_or_else(|| StoreError::NotFound(format!("device {device}"))),
            Request::ReadPins {
                device: 1,
                pins: None,
            } => Ok(Response::Pins(vec![
                PinValue {
                    pin: PinAddr::new(PinKind::Virtual, 5),
                    value: b"42".to_vec(),
                    at_ms: 1_700_000_000_000,
                },
                PinValue {
                    pin: PinAddr::new(PinKind::Digital, 13),
                    value: b"a\0b\xff".to_vec(),
                    at_ms: 7,
                },
            ])),
            Request::ReadPins { .. } => Ok(Response::Pins(Vec::new())),
            other => Err(StoreError::Invalid(format!("unexpected {other:?}"))),
        });
        let client =
            StoreClient::connect(&path, admin_hello(), Duration::from_secs(5)).expect("connects");
        (dir, client, hashes)
    }

    fn record(id: DeviceId, name: &str) -> DeviceRecord {
        DeviceRecord {
            id,
            org: "default".into(),
            template: "TMPL1".into(),
            name: name.into(),
            created_ms: 1_700_000_000_000,
            sessions: u32::from(id == 1),
            last_seen_ms: (id == 1).then_some(1_700_000_000_500),
            last_addr: (id == 1).then(|| "192.0.2.7:50000".into()),
            info: (id == 1).then(|| DeviceInfo {
                heartbeat_secs: Some(45),
                ..DeviceInfo::default()
            }),
        }
    }

    fn run_json(
        client: &mut StoreClient,
        command: DeviceCommand,
    ) -> anyhow::Result<serde_json::Value> {
        let mut out = Vec::new();
        execute(client, AdminCommand::Device(command), true, &mut out)?;
        Ok(serde_json::from_slice(&out).expect("one JSON document"))
    }

    fn run_text(client: &mut StoreClient, command: DeviceCommand) -> String {
        let mut out = Vec::new();
        execute(client, AdminCommand::Device(command), false, &mut out).expect("succeeds");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn create_prints_the_token_once_and_sends_only_its_hash() {
        let (_dir, mut client, hashes) = store_with(0);
        let create = DeviceCommand::Create {
            name: "Kitchen".into(),
            template: "TMPL9".into(),
            org: "acme".into(),
        };
        let created = run_json(&mut client, create).expect("creates");
        let token = created["token"].as_str().expect("token");
        assert!(is_plausible_token(token.as_bytes()));
        assert_eq!(
            hashes.lock().expect("lock").as_slice(),
            [token_hash(token.as_bytes())]
        );
        assert_eq!(created["id"], 1);
        assert_eq!(
            (&created["name"], &created["template"], &created["org"]),
            (&"Kitchen".into(), &"TMPL9".into(), &"acme".into())
        );

        let text = run_text(
            &mut client,
            DeviceCommand::Create {
                name: "Porch".into(),
                template: "T".into(),
                org: "o".into(),
            },
        );
        assert!(
            text.contains("shown only this once") && text.contains("Token: "),
            "{text}"
        );
    }

    #[test]
    fn list_pages_until_the_store_runs_out() {
        let (_dir, mut client, _) = store_with(2 * u64::from(LIST_PAGE) + 1);
        let listed = run_json(&mut client, DeviceCommand::List).expect("lists");
        let listed = listed.as_array().expect("array");
        assert_eq!(listed.len(), 2 * LIST_PAGE as usize + 1);
        assert_eq!(listed[0]["online"], true);
        assert_eq!(listed[1]["online"], false);
        assert!(listed[0].get("token").is_none());
        let text = run_text(&mut client, DeviceCommand::List);
        assert!(
            text.starts_with("ID") && text.contains("dev2001"),
            "{}",
            &text[..200]
        );
    }

    #[test]
    fn get_shows_the_record_and_refuses_unknown_ids() {
        let (_dir, mut client, _) = store_with(2);
        let device = run_json(&mut client, DeviceCommand::Get { id: 1 }).expect("gets");
        assert_eq!(device["sessions"], 1);
        assert_eq!(device["last_seen_ms"], 1_700_000_000_500u64);
        assert_eq!(device["info"]["heartbeat_secs"], 45);
        let text = run_text(&mut client, DeviceCommand::Get { id: 1 });
        assert!(
            text.contains("2023-11-14T22:13:20.5Z") && text.contains("45 s"),
            "{text}"
        );
        let err = run_json(&mut client, DeviceCommand::Get { id: 99 }).expect_err("unknown");
        assert!(
            err.to_string().contains("device 99 does not exist"),
            "{err}"
        );
    }

    #[test]
    fn pins_split_multi_values_and_refuse_unknown_devices() {
        let (_dir, mut client, _) = store_with(2);
        let pins = run_json(&mut client, DeviceCommand::Pins { id: 1 }).expect("reads");
        assert_eq!(
            pins,
            serde_json::json!([
                {"pin": "V5", "value": "42", "values": ["42"], "at_ms": 1_700_000_000_000u64},
                {"pin": "D13", "value": "a b\u{fffd}", "values": ["a", "b\u{fffd}"], "at_ms": 7},
            ])
        );
        assert_eq!(
            run_json(&mut client, DeviceCommand::Pins { id: 2 }).expect("empty"),
            serde_json::json!([])
        );
        let err = run_json(&mut client, DeviceCommand::Pins { id: 99 }).expect_err("unknown");
        assert!(
            err.to_string().contains("device 99 does not exist"),
            "{err}"
        );
        let text = run_text(&mut client, DeviceCommand::Pins { id: 1 });
        assert!(text.contains("V5") && text.contains("42"), "{text}");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("ok\x1b[2J\n"), "ok\u{fffd}[2J\u{fffd}");
    }
}
