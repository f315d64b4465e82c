//! `portcullis admin template create|list|show|delete`: templates (Blynk's products) and their
//! datastreams, through `portcullis_operations::templates` as the operator. A datastream is given
//! as `NAME:PIN:TYPE[:MIN:MAX[:UNITS]]` and read by [`parse_datastream`]; the template id is the
//! one given (`--id TMPL…`) or one the operations layer generates.

use super::args::{parse_org, parse_template};
use super::events::AdminEvent;
use super::history::parse_pin;
use super::render::{self, failure, format_ms, printable, write_table};
use portcullis_operations::{Principal, StoreAccess, templates};
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::store::{Datastream, TemplateId, TemplateRecord, ValueType};
use serde::Serialize;
use std::io::Write;

#[derive(Debug, clap::Subcommand)]
pub enum TemplateCommand {
    /// Create a template; the devices of its organization and of every organization below it
    /// may use it.
    Create {
        /// Organization id the template belongs to (see `org list`).
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        org: OrgId,
        /// Display name.
        #[arg(long)]
        name: String,
        /// The id firmware declares in BLYNK_TEMPLATE_ID: TMPL and 1 to 28 letters, digits, _
        /// or - [default: a new random TMPL… id].
        #[arg(long, value_name = "TMPL…")]
        id: Option<String>,
        /// A datastream: NAME:PIN:TYPE[:MIN:MAX[:UNITS]], e.g. temperature:V5:double:-40:85:°C
        /// (PIN like V5, D13 or A0; TYPE integer, double or string; MIN or MAX may be left
        /// empty). Repeat for each datastream.
        #[arg(long = "datastream", value_parser = parse_datastream, value_name = "SPEC")]
        datastreams: Vec<Datastream>,
    },
    /// List the templates the devices of an organization may use: its own and those of the
    /// organizations above it.
    List {
        /// Organization id (see `org list`).
        #[arg(long, value_name = "ID", value_parser = parse_org)]
        org: OrgId,
    },
    /// Show one template with its datastreams.
    Show {
        /// Template id, TMPL… (see `template list --org ID`).
        #[arg(value_parser = parse_template)]
        id: TemplateId,
    },
    /// Delete a template no device uses (delete or re-create those devices first).
    Delete {
        /// Template id, TMPL… (see `template list --org ID`).
        #[arg(value_parser = parse_template)]
        id: TemplateId,
    },
}

/// A value type by name.
pub fn parse_value_type(text: &str) -> Result<ValueType, String> {
    match text.to_ascii_lowercase().as_str() {
        "integer" | "int" => Ok(ValueType::Integer),
        "double" | "float" => Ok(ValueType::Double),
        "string" => Ok(ValueType::String),
        _ => Err(format!(
            "{text:?} is not a datastream type; use integer, double or string"
        )),
    }
}

/// A value type's name as `--datastream` takes it.
pub fn value_type_name(value_type: ValueType) -> &'static str {
    match value_type {
        ValueType::Integer => "integer",
        ValueType::Double => "double",
        ValueType::String => "string",
    }
}

/// `NAME:PIN:TYPE[:MIN:MAX[:UNITS]]`; the units may hold colons themselves. The template's
/// own rules (unique names, lengths) are the store's.
pub fn parse_datastream(spec: &str) -> Result<Datastream, String> {
    let form = "NAME:PIN:TYPE[:MIN:MAX[:UNITS]]";
    let mut parts = spec.splitn(6, ':');
    let (Some(name), Some(pin), Some(value_type)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!(
            "{spec:?} is not {form}, e.g. temperature:V5:double"
        ));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("{spec:?} has no datastream name ({form})"));
    }
    let pin = parse_pin(pin.trim()).map_err(|why| format!("{spec:?}: {why}"))?;
    let value_type = parse_value_type(value_type.trim())?;
    let bound = |text: Option<&str>, which: &str| -> Result<Option<f64>, String> {
        match text.map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => match text.parse::<f64>() {
                Ok(n) if n.is_finite() => Ok(Some(n)),
                _ => Err(format!("{spec:?}: the {which} {text:?} is not a number")),
            },
        }
    };
    let min = bound(parts.next(), "minimum")?;
    let max_text = parts.next();
    if min.is_some() && max_text.is_none() {
        return Err(format!(
            "{spec:?} gives a minimum without a maximum; write NAME:PIN:TYPE:MIN:MAX (MAX may be empty)"
        ));
    }
    let max = bound(max_text, "maximum")?;
    if let (Some(min), Some(max)) = (min, max)
        && min > max
    {
        return Err(format!(
            "{spec:?}: the minimum {min} is above the maximum {max}"
        ));
    }
    let units = parts
        .next()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    Ok(Datastream {
        name: name.to_owned(),
        pin,
        value_type,
        min,
        max,
        units,
        default: None,
    })
}

/// Runs a template command as the operator.
pub fn execute(
    store: &mut impl StoreAccess,
    command: TemplateCommand,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let operator = &Principal::Operator;
    match command {
        TemplateCommand::Create {
            org,
            name,
            id,
            datastreams,
        } => {
            let id = templates::template_id(id.as_deref()).map_err(failure)?;
            let template =
                templates::create(store, operator, org, id, name, datastreams).map_err(failure)?;
            AdminEvent::new(
                "admin_template_created",
                format!("template {}", template.id),
                format!(
                    "created in {org}, name {:?}, {} datastream(s)",
                    template.name,
                    template.datastreams.len()
                ),
            )
            .record();
            if json {
                return render::json(out, &TemplateView::from(&template));
            }
            writeln!(
                out,
                "Created template {} {:?} in org {} with {} datastream(s).",
                template.id,
                printable(&template.name),
                template.org.0,
                template.datastreams.len()
            )?;
            writeln!(
                out,
                "Firmware declares it with: #define BLYNK_TEMPLATE_ID \"{}\"",
                template.id
            )?;
            Ok(())
        }
        TemplateCommand::List { org } => {
            let list = templates::list(store, operator, org).map_err(failure)?;
            if json {
                let views: Vec<TemplateView<'_>> = list.iter().map(TemplateView::from).collect();
                return render::json(out, &views);
            }
            if list.is_empty() {
                writeln!(
                    out,
                    "No templates for org {}. Create one with `portcullis admin template create --org {} --name NAME`.",
                    org.0, org.0
                )?;
                return Ok(());
            }
            let rows: Vec<[String; 5]> = list
                .iter()
                .map(|t| {
                    [
                        t.id.to_string(),
                        printable(&t.name),
                        t.org.0.to_string(),
                        t.datastreams.len().to_string(),
                        format_ms(t.created_ms),
                    ]
                })
                .collect();
            write_table(out, ["ID", "NAME", "ORG", "DATASTREAMS", "CREATED"], &rows)?;
            Ok(())
        }
        TemplateCommand::Show { id } => {
            let template = templates::get(store, operator, id).map_err(failure)?;
            show(&template, json, out)
        }
        TemplateCommand::Delete { id } => {
            templates::delete(store, operator, id.clone()).map_err(failure)?;
            AdminEvent::new(
                "admin_template_deleted",
                format!("template {id}"),
                "deleted",
            )
            .record();
            if json {
                return render::json(out, &serde_json::json!({"deleted": id.as_str()}));
            }
            writeln!(out, "Deleted template {id}.")?;
            Ok(())
        }
    }
}

/// A datastream as the admin CLI shows it (the pin by name).
#[derive(Serialize)]
struct DatastreamView<'a> {
    name: &'a str,
    pin: String,
    #[serde(rename = "type")]
    value_type: &'static str,
    min: Option<f64>,
    max: Option<f64>,
    units: Option<&'a str>,
    default: Option<&'a str>,
}

#[derive(Serialize)]
struct TemplateView<'a> {
    id: &'a str,
    name: &'a str,
    org: u32,
    datastreams: Vec<DatastreamView<'a>>,
    created_ms: u64,
}

impl<'a> From<&'a TemplateRecord> for TemplateView<'a> {
    fn from(t: &'a TemplateRecord) -> Self {
        Self {
            id: t.id.as_str(),
            name: &t.name,
            org: t.org.0,
            datastreams: t
                .datastreams
                .iter()
                .map(|d| DatastreamView {
                    name: &d.name,
                    pin: d.pin.to_string(),
                    value_type: value_type_name(d.value_type),
                    min: d.min,
                    max: d.max,
                    units: d.units.as_deref(),
                    default: d.default.as_deref(),
                })
                .collect(),
            created_ms: t.created_ms,
        }
    }
}

fn show(template: &TemplateRecord, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let view = TemplateView::from(template);
    if json {
        return render::json(out, &view);
    }
    render::write_fields(
        out,
        &[
            ("id", view.id.to_owned()),
            ("name", printable(view.name)),
            ("org", view.org.to_string()),
            ("created", format_ms(view.created_ms)),
        ],
    )?;
    if view.datastreams.is_empty() {
        writeln!(out, "No datastreams.")?;
        return Ok(());
    }
    writeln!(out)?;
    let none = || "-".to_owned();
    let rows: Vec<[String; 6]> = view
        .datastreams
        .iter()
        .map(|d| {
            [
                printable(d.name),
                d.pin.clone(),
                d.value_type.to_owned(),
                d.min.map_or_else(none, |n| n.to_string()),
                d.max.map_or_else(none, |n| n.to_string()),
                d.units.map_or_else(none, printable),
            ]
        })
        .collect();
    write_table(
        out,
        ["DATASTREAM", "PIN", "TYPE", "MIN", "MAX", "UNITS"],
        &rows,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_store::{self, requests};
    use portcullis_protocol::body::{PinAddr, PinKind};
    use portcullis_protocol::store::{Request, Response, StoreError};

    fn tmpl(id: &str) -> TemplateId {
        TemplateId::parse(id).expect("valid")
    }

    #[test]
    fn datastream_specs_parse_or_say_why_not() {
        let full = parse_datastream("temperature:V5:double:-40:85:°C:x").expect("parses");
        assert_eq!(
            full,
            Datastream {
                name: "temperature".into(),
                pin: PinAddr::new(PinKind::Virtual, 5),
                value_type: ValueType::Double,
                min: Some(-40.0),
                max: Some(85.0),
                units: Some("°C:x".into()),
                default: None,
            }
        );
        let plain = parse_datastream("label:v0:String").expect("parses");
        assert_eq!(
            (plain.value_type, plain.min, plain.units),
            (ValueType::String, None, None)
        );
        let open = parse_datastream("level:A0:integer::1023").expect("parses");
        assert_eq!((open.min, open.max), (None, Some(1023.0)));
        for (bad, why) in [
            ("temperature", "is not NAME:PIN:TYPE"),
            ("t:V5", "is not NAME:PIN:TYPE"),
            (":V5:double", "no datastream name"),
            ("t:X5:double", "t:X5:double"),
            ("t:V5:bool", "integer, double or string"),
            ("t:V5:double:low:1", "not a number"),
            ("t:V5:double:1", "without a maximum"),
            ("t:V5:double:5:1", "above the maximum"),
            ("t:V5:double:0:inf", "not a number"),
        ] {
            let err = parse_datastream(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    fn store_answer(request: &Request) -> Result<Response, StoreError> {
        let record = |id: &TemplateId, org: OrgId, datastreams: Vec<Datastream>| TemplateRecord {
            id: id.clone(),
            org,
            name: "Thermostat".into(),
            datastreams,
            created_ms: 1_700_000_000_000,
        };
        match request {
            Request::CreateTemplate {
                org,
                id,
                datastreams,
                ..
            } => Ok(Response::Template(record(id, *org, datastreams.clone()))),
            Request::GetTemplate { id } if id.as_str() == "TMPL1" => {
                Ok(Response::Template(record(
                    id,
                    OrgId(2),
                    vec![parse_datastream("t:V5:double:-40:85:C").expect("valid")],
                )))
            }
            Request::GetTemplate { id } => Err(StoreError::NotFound(format!("template {id}"))),
            Request::ListTemplates { org } => Ok(Response::Templates(vec![record(
                &tmpl("TMPL1"),
                *org,
                Vec::new(),
            )])),
            Request::DeleteTemplate { .. } => Ok(Response::Done),
            other => Err(StoreError::Invalid(format!("unexpected {other:?}"))),
        }
    }

    fn run(
        client: &mut portcullis_store_client::StoreClient,
        command: TemplateCommand,
        json: bool,
    ) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        execute(client, command, json, &mut out)?;
        Ok(out)
    }

    #[test]
    fn create_sends_the_datastreams_and_generates_an_id_when_none_is_given() {
        let (_dir, mut client, seen) = test_store::store(store_answer);
        let stream = parse_datastream("t:V5:double:-40:85:C").expect("valid");
        let create = |id: Option<&str>| TemplateCommand::Create {
            org: OrgId(2),
            name: "Thermostat".into(),
            id: id.map(str::to_owned),
            datastreams: vec![stream.clone()],
        };
        let created =
            test_store::json(run(&mut client, create(Some("TMPLthermo1")), true).expect("creates"));
        assert_eq!(
            created,
            serde_json::json!({"id": "TMPLthermo1", "name": "Thermostat", "org": 2, "created_ms": 1_700_000_000_000u64,
                "datastreams": [{"name": "t", "pin": "V5", "type": "double", "min": -40.0, "max": 85.0, "units": "C", "default": null}]})
        );
        let text = test_store::text(run(&mut client, create(None), false).expect("creates"));
        assert!(text.contains("BLYNK_TEMPLATE_ID \"TMPL"), "{text}");
        let err = run(&mut client, create(Some("nope")), false).expect_err("bad id");
        assert!(err.to_string().contains("TMPL"), "{err}");
        let sent = requests(&seen);
        assert_eq!(sent.len(), 2, "the bad id never reached the store");
        let Request::CreateTemplate {
            org,
            id,
            name,
            datastreams,
        } = &sent[1]
        else {
            panic!("{sent:?}")
        };
        assert_eq!(
            (org, name.as_str(), datastreams.as_slice()),
            (&OrgId(2), "Thermostat", &[stream][..])
        );
        assert!(
            id.as_str().len() > 4 && id.as_str().starts_with("TMPL"),
            "{id}"
        );
    }

    #[test]
    fn list_show_and_delete_name_the_template() {
        let (_dir, mut client, seen) = test_store::store(store_answer);
        let text = test_store::text(
            run(&mut client, TemplateCommand::List { org: OrgId(3) }, false).expect("lists"),
        );
        assert!(
            text.starts_with("ID") && text.contains("TMPL1  Thermostat  3"),
            "{text}"
        );
        let text = test_store::text(
            run(
                &mut client,
                TemplateCommand::Show { id: tmpl("TMPL1") },
                false,
            )
            .expect("shows"),
        );
        assert!(
            text.contains("DATASTREAM") && text.contains("t           V5   double  -40  85   C"),
            "{text}"
        );
        let err = run(
            &mut client,
            TemplateCommand::Show { id: tmpl("TMPL9") },
            false,
        )
        .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "template TMPL9 does not exist (see `portcullis admin template list --org ORG`)"
        );
        let deleted = test_store::json(
            run(
                &mut client,
                TemplateCommand::Delete { id: tmpl("TMPL1") },
                true,
            )
            .expect("deletes"),
        );
        assert_eq!(deleted, serde_json::json!({"deleted": "TMPL1"}));
        assert_eq!(
            requests(&seen),
            [
                Request::ListTemplates { org: OrgId(3) },
                Request::GetTemplate { id: tmpl("TMPL1") },
                Request::GetTemplate { id: tmpl("TMPL9") },
                Request::DeleteTemplate { id: tmpl("TMPL1") },
            ]
        );
    }
}
