//! `portcullis admin device create|list|get|pins|history`: the device commands, as the operator.
//! Each runs one operation of `portcullis_operations::devices` or `pins` (the token is
//! generated and hashed there; it is printed here, once) and prints a short report or, with
//! `--json`, one JSON document. `device history` is parsed here and run by
//! [`super::history`].

use super::history::{self, HistoryArgs};
use super::render::{self, failure, format_ms, pin_values, printable, write_table};
use portcullis_operations::devices::{self, NewDevice};
use portcullis_operations::{Principal, StoreAccess, pins};
use portcullis_protocol::authz::{OrgId, UserId};
use portcullis_protocol::body::DeviceInfo;
use portcullis_protocol::store::{DeviceId, DeviceRecord, DeviceScope, PinValue, TemplateId};
use serde::Serialize;
use std::io::Write;

#[derive(Debug, clap::Subcommand)]
pub enum DeviceCommand {
    /// Register a device and print its token (shown only this once).
    Create {
        /// Display name of the device.
        #[arg(long)]
        name: String,
        /// Template (product) id the device firmware is built for, e.g. TMPLxxxxxx (see
        /// `template list`): of the device's organization or one above it.
        #[arg(long, value_parser = parse_template)]
        template: TemplateId,
        /// Organization id the device belongs to (see `org list`; 1 is the root).
        #[arg(long, default_value_t = 1)]
        org: u32,
        /// User id of the device's owner, for "own devices" permissions.
        #[arg(long)]
        owner: Option<u64>,
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
    History(HistoryArgs),
}

/// A template id from the command line, in Blynk's form.
pub fn parse_template(id: &str) -> Result<TemplateId, String> {
    TemplateId::parse(id)
}

/// Runs a device command as the operator.
pub fn execute(
    store: &mut impl StoreAccess,
    command: DeviceCommand,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Create {
            name,
            template,
            org,
            owner,
        } => create(
            store,
            NewDevice {
                name,
                template,
                org: OrgId(org),
                owner: owner.map(UserId),
            },
            json,
            out,
        ),
        DeviceCommand::List => list(store, json, out),
        DeviceCommand::Get { id } => get(store, id, json, out),
        DeviceCommand::Pins { id } => show_pins(store, id, json, out),
        DeviceCommand::History(args) => history::execute(store, args, json, out),
    }
}

/// Security events of the admin CLI: every change it makes, with the operator's uid.
#[derive(Debug)]
pub enum AdminEvent<'a> {
    DeviceCreated {
        id: DeviceId,
        name: &'a str,
        template: &'a str,
        org: u32,
    },
}

impl crate::guard::security_log::SecurityEvent for AdminEvent<'_> {
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
    org: u32,
    token: &'a str,
}

fn create(
    store: &mut impl StoreAccess,
    device: NewDevice,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let created = devices::create(store, &Principal::Operator, device).map_err(failure)?;
    let record = &created.device;
    crate::guard::security_log::record(
        "admin",
        &AdminEvent::DeviceCreated {
            id: record.id,
            name: &record.name,
            template: record.template.as_str(),
            org: record.org.0,
        },
    );
    let shown = CreatedDevice {
        id: record.id,
        name: &record.name,
        template: record.template.as_str(),
        org: record.org.0,
        token: created.token.expose(),
    };
    if json {
        return render::json(out, &shown);
    }
    writeln!(
        out,
        "Created device {} {:?} (template {}, org {}).",
        shown.id,
        printable(shown.name),
        printable(shown.template),
        shown.org
    )?;
    writeln!(out, "Token: {}", shown.token)?;
    writeln!(
        out,
        "The token is shown only this once: put it in the device's firmware now. Only its hash is stored."
    )?;
    Ok(())
}

/// A device as the admin CLI shows it (`online` spelled out; never a token).
#[derive(Serialize)]
struct DeviceView<'a> {
    id: DeviceId,
    name: &'a str,
    template: &'a str,
    org: u32,
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
            template: record.template.as_str(),
            org: record.org.0,
            online: record.online(),
            sessions: record.sessions,
            created_ms: record.created_ms,
            last_seen_ms: record.last_seen_ms,
            last_addr: record.last_addr.as_deref(),
            info: record.info.as_ref(),
        }
    }
}

fn list(store: &mut impl StoreAccess, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let devices =
        devices::list_all(store, &Principal::Operator, DeviceScope::All).map_err(failure)?;
    if json {
        let views: Vec<DeviceView<'_>> = devices.iter().map(DeviceView::from).collect();
        return render::json(out, &views);
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
                printable(d.template.as_str()),
                d.org.0.to_string(),
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

fn get(
    store: &mut impl StoreAccess,
    id: DeviceId,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let record = devices::get(store, &Principal::Operator, id).map_err(failure)?;
    let view = DeviceView::from(&record);
    if json {
        return render::json(out, &view);
    }
    let none = || "-".to_owned();
    let info = record.info.clone().unwrap_or_default();
    let lines = [
        ("id", view.id.to_string()),
        ("name", printable(view.name)),
        ("template", printable(view.template)),
        ("org", view.org.to_string()),
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
        let values = pin_values(&stored.value);
        Self {
            pin: stored.pin.to_string(),
            value: values.join(" "),
            values,
            at_ms: stored.at_ms,
        }
    }
}

fn show_pins(
    store: &mut impl StoreAccess,
    id: DeviceId,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let pins = pins::read_latest(store, &Principal::Operator, id, None).map_err(failure)?;
    let views: Vec<PinView> = pins.iter().map(PinView::from).collect();
    if json {
        return render::json(out, &views);
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

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_operations::devices::LIST_ALL_PAGE as LIST_PAGE;
    use portcullis_protocol::body::{PinAddr, PinKind};
    use portcullis_protocol::store::{Request, Response, StoreError, TokenHash};
    use portcullis_protocol::token::{is_plausible_token, token_hash};
    use portcullis_store_client::StoreClient;
    use portcullis_store_client::fake_store::{admin_hello, serving};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

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
        execute(client, command, true, &mut out)?;
        Ok(serde_json::from_slice(&out).expect("one JSON document"))
    }

    fn run_text(client: &mut StoreClient, command: DeviceCommand) -> String {
        let mut out = Vec::new();
        execute(client, command, false, &mut out).expect("succeeds");
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
}
