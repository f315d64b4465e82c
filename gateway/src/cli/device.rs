//! `portcullis admin device create|list|get|pins|history|reprovision|delete|transfer`: the device
//! commands, as the operator. Each runs one operation of `portcullis_operations::devices` or
//! `pins` (a token is generated and hashed there; it is printed here, once) and prints a short
//! report or, with `--json`, one JSON document. `device history` is parsed here and run by
//! [`super::history`].

use super::args::{parse_org, parse_template, parse_user};
use super::events::AdminEvent;
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
        /// `template list --org ID`): of the device's organization or one above it.
        #[arg(long, value_parser = parse_template)]
        template: TemplateId,
        /// Organization id the device belongs to (see `org list`; 1 is the root).
        #[arg(long, value_name = "ID", default_value = "1", value_parser = parse_org)]
        org: OrgId,
        /// User id of the device's owner, for "own devices" permissions (see `user list`).
        #[arg(long, value_name = "ID", value_parser = parse_user)]
        owner: Option<UserId>,
    },
    /// List devices: every device, or those of one organization.
    List {
        /// Only the devices of this organization (see `org list`).
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        org: Option<OrgId>,
        /// With --org: also the devices of every organization below it.
        #[arg(long, requires = "org")]
        subtree: bool,
    },
    /// Show one device: organization, owner, presence, last connection, what its firmware
    /// reported.
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
    /// Give a device a new token (shown only this once). The old token stops working at once;
    /// the running gateway closes the device's live sessions within a second.
    Reprovision {
        /// Device id (see `device list`).
        id: DeviceId,
    },
    /// Delete a device with its token, pin values and history. Cannot be undone.
    Delete {
        /// Device id (see `device list`).
        id: DeviceId,
    },
    /// Move a device to another organization and/or give it another owner (a user of its new
    /// organization) or none.
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true).args(["org", "owner", "no_owner"]))]
    Transfer {
        /// Device id (see `device list`).
        id: DeviceId,
        /// The organization to move it to (see `org list`).
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        org: Option<OrgId>,
        /// User id of its new owner (see `user list --org ID`).
        #[arg(long, value_name = "ID", value_parser = parse_user, conflicts_with = "no_owner")]
        owner: Option<UserId>,
        /// Leave it without an owner.
        #[arg(long)]
        no_owner: bool,
    },
}

/// Runs a device command as the operator.
pub fn execute(
    store: &mut impl StoreAccess,
    command: DeviceCommand,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let operator = &Principal::Operator;
    match command {
        DeviceCommand::Create {
            name,
            template,
            org,
            owner,
        } => {
            let device = NewDevice {
                name,
                template,
                org,
                owner,
            };
            let created = devices::create(store, operator, device).map_err(failure)?;
            let record = &created.device;
            AdminEvent::new(
                "admin_device_created",
                format!("device {}", record.id),
                format!(
                    "created: name {:?}, template {}, org {}; a new token was issued",
                    record.name, record.template, record.org.0
                ),
            )
            .record();
            print_token(record, created.token.expose(), "Created", json, out)
        }
        DeviceCommand::List { org, subtree } => {
            let scope = match org {
                None => DeviceScope::All,
                Some(org) => DeviceScope::Org { org, subtree },
            };
            list(store, scope, json, out)
        }
        DeviceCommand::Get { id } => get(store, id, json, out),
        DeviceCommand::Pins { id } => show_pins(store, id, json, out),
        DeviceCommand::History(args) => history::execute(store, args, json, out),
        DeviceCommand::Reprovision { id } => {
            let created = devices::reprovision(store, operator, id).map_err(failure)?;
            AdminEvent::new(
                "admin_device_reprovisioned",
                format!("device {id}"),
                "re-provisioned: a new token was issued, the old one revoked",
            )
            .record();
            print_token(
                &created.device,
                created.token.expose(),
                "Re-provisioned",
                json,
                out,
            )
        }
        DeviceCommand::Delete { id } => {
            devices::delete(store, operator, id).map_err(failure)?;
            AdminEvent::new("admin_device_deleted", format!("device {id}"), "deleted").record();
            if json {
                return render::json(out, &serde_json::json!({"deleted": id}));
            }
            writeln!(
                out,
                "Deleted device {id} with its token, pin values and history; the running gateway closes its live sessions within a second."
            )?;
            Ok(())
        }
        DeviceCommand::Transfer {
            id,
            org,
            owner,
            no_owner,
        } => {
            let new_owner = if no_owner {
                Some(None)
            } else {
                owner.map(Some)
            };
            let record = devices::transfer(store, operator, id, org, new_owner).map_err(failure)?;
            let owner_text = owner_text(record.owner);
            AdminEvent::new(
                "admin_device_transferred",
                format!("device {id}"),
                format!("now in org {}, owner {owner_text}", record.org.0),
            )
            .record();
            if json {
                return render::json(out, &DeviceView::from(&record));
            }
            writeln!(
                out,
                "Device {id} {:?} is now in org {} with owner {owner_text}.",
                printable(&record.name),
                record.org.0
            )?;
            Ok(())
        }
    }
}

fn owner_text(owner: Option<UserId>) -> String {
    owner.map_or_else(|| "none".into(), |user| format!("user {}", user.0))
}

#[derive(Serialize)]
struct TokenView<'a> {
    id: DeviceId,
    name: &'a str,
    template: &'a str,
    org: u32,
    owner: Option<u64>,
    token: &'a str,
}

/// A device's new token, shown this once (`create` and `reprovision`).
fn print_token(
    record: &DeviceRecord,
    token: &str,
    verb: &str,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json {
        let view = TokenView {
            id: record.id,
            name: &record.name,
            template: record.template.as_str(),
            org: record.org.0,
            owner: record.owner.map(|u| u.0),
            token,
        };
        return render::json(out, &view);
    }
    writeln!(
        out,
        "{verb} device {} {:?} (template {}, org {}, owner {}).",
        record.id,
        printable(&record.name),
        record.template,
        record.org.0,
        owner_text(record.owner)
    )?;
    writeln!(out, "Token: {token}")?;
    writeln!(
        out,
        "The token is shown only this once: put it in the device's firmware now. Only its hash is stored."
    )?;
    if verb == "Re-provisioned" {
        writeln!(
            out,
            "The old token stopped working; the running gateway closes the device's live sessions within a second."
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
    org: u32,
    owner: Option<u64>,
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
            owner: record.owner.map(|u| u.0),
            online: record.online(),
            sessions: record.sessions,
            created_ms: record.created_ms,
            last_seen_ms: record.last_seen_ms,
            last_addr: record.last_addr.as_deref(),
            info: record.info.as_ref(),
        }
    }
}

fn list(
    store: &mut impl StoreAccess,
    scope: DeviceScope,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let devices = devices::list_all(store, &Principal::Operator, scope).map_err(failure)?;
    if json {
        let views: Vec<DeviceView<'_>> = devices.iter().map(DeviceView::from).collect();
        return render::json(out, &views);
    }
    if devices.is_empty() {
        writeln!(
            out,
            "No devices. Create one with `portcullis admin device create --name NAME --template TMPL… --org ID`."
        )?;
        return Ok(());
    }
    let rows: Vec<[String; 7]> = devices
        .iter()
        .map(|d| {
            [
                d.id.to_string(),
                printable(&d.name),
                d.template.to_string(),
                d.org.0.to_string(),
                d.owner.map_or_else(|| "-".into(), |u| u.0.to_string()),
                if d.online() { "yes" } else { "no" }.into(),
                d.last_seen_ms.map_or_else(|| "never".into(), format_ms),
            ]
        })
        .collect();
    write_table(
        out,
        [
            "ID",
            "NAME",
            "TEMPLATE",
            "ORG",
            "OWNER",
            "ONLINE",
            "LAST SEEN",
        ],
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
    render::write_fields(
        out,
        &[
            ("id", view.id.to_string()),
            ("name", printable(view.name)),
            ("template", view.template.to_owned()),
            ("org", view.org.to_string()),
            ("owner", owner_text(record.owner)),
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
        ],
    )?;
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
#[path = "device_tests.rs"]
mod tests;
