//! Templates (Blynk's products): `templates` records under their store-wide unique id, listed
//! per organization by the `org_index` entries `t`, with the devices that use each one in
//! `template_devices` (so "no device uses it" is a one-key scan).
//!
//! A template of an organization may be used by the devices of that organization and of every
//! organization below it ([`usable`]). Datastreams are checked on every write ([`check`]):
//! at most `MAX_DATASTREAMS`, unique names (an MQTT topic addresses one as `ds/<name>`, so no
//! `/`, `+` or `#`), one datastream per pin, `min <= max` (both finite), and bounded units and
//! default values.
//!
//! Managing (changing, deleting) a template needs `templates.manage` where the template itself
//! lives: that a template of an organization above is visible from below (and counts as the
//! actor's own for `Request::needs`) lets devices use it, not their admins change it.

use super::acting::{Target, Who, require};
use super::audit;
use super::group::{Change, View};
use super::orgs::load_path;
use super::records::{StoredDatastream, StoredTemplate, decode, encode};
use super::{MAX_NAME_LEN, Result, SchemaError, check_text, keys, orgs, synced};
use crate::engine::Cf;
use portcullis_protocol::authz::{OrgId, OrgPath, Permission};
use portcullis_protocol::store::{
    Datastream, MAX_DATASTREAM_TEXT_LEN, MAX_DATASTREAMS, Response, TemplateId, TemplateRecord,
};
use std::collections::HashSet;

pub(super) fn find_template(view: &impl View, id: &TemplateId) -> Result<Option<StoredTemplate>> {
    let key = keys::template(id);
    view.get(Cf::Templates, key)?
        .map(|bytes| decode("template", key, &bytes))
        .transpose()
}

pub(super) fn not_found(id: &TemplateId) -> SchemaError {
    SchemaError::NotFound(format!("template {id}"))
}

pub(super) fn load_template(view: &impl View, id: &TemplateId) -> Result<StoredTemplate> {
    find_template(view, id)?.ok_or_else(|| not_found(id))
}

/// Whether a device of the organization at `device_org` may use `template`: the template's
/// organization is that one or one above it.
pub(super) fn usable(
    view: &impl View,
    template: &StoredTemplate,
    device_org: &OrgPath,
) -> Result<bool> {
    let own = load_path(view, OrgId(template.org))?;
    Ok(device_org.ids().starts_with(own.ids()))
}

fn check_optional_text(field: &str, value: Option<&String>) -> Result<()> {
    let Some(value) = value else { return Ok(()) };
    if value.len() > MAX_DATASTREAM_TEXT_LEN {
        return Err(SchemaError::Invalid(format!(
            "{field} is {} bytes long; the limit is {MAX_DATASTREAM_TEXT_LEN}",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(SchemaError::Invalid(format!(
            "{field} contains a control character"
        )));
    }
    Ok(())
}

/// The datastream rules (see the module's text).
pub(super) fn check(datastreams: &[Datastream]) -> Result<()> {
    if datastreams.len() > MAX_DATASTREAMS {
        return Err(SchemaError::Invalid(format!(
            "a template declares at most {MAX_DATASTREAMS} datastreams, not {}",
            datastreams.len()
        )));
    }
    let mut names = HashSet::new();
    let mut pins = HashSet::new();
    for d in datastreams {
        check_text("datastream name", &d.name, MAX_NAME_LEN)?;
        if let Some(bad) = d.name.chars().find(|c| matches!(c, '/' | '+' | '#')) {
            return Err(SchemaError::Invalid(format!(
                "datastream name {:?} holds {bad:?}, which an MQTT topic cannot carry",
                d.name
            )));
        }
        if !names.insert(d.name.as_str()) {
            return Err(SchemaError::Invalid(format!(
                "two datastreams are named {:?}",
                d.name
            )));
        }
        if !pins.insert(d.pin) {
            return Err(SchemaError::Invalid(format!(
                "two datastreams are on pin {}",
                d.pin
            )));
        }
        for (bound, value) in [("min", d.min), ("max", d.max)] {
            if value.is_some_and(|v| !v.is_finite()) {
                return Err(SchemaError::Invalid(format!(
                    "datastream {:?}: {bound} must be a finite number",
                    d.name
                )));
            }
        }
        if let (Some(min), Some(max)) = (d.min, d.max)
            && min > max
        {
            return Err(SchemaError::Invalid(format!(
                "datastream {:?}: min {min} is above max {max}",
                d.name
            )));
        }
        check_optional_text(&format!("datastream {:?} units", d.name), d.units.as_ref())?;
        check_optional_text(
            &format!("datastream {:?} default", d.name),
            d.default.as_ref(),
        )?;
    }
    Ok(())
}

fn stored(datastreams: &[Datastream]) -> Vec<StoredDatastream> {
    datastreams.iter().map(StoredDatastream::from).collect()
}

pub(super) fn create(
    view: &impl View,
    who: &Who,
    org: OrgId,
    id: TemplateId,
    name: String,
    datastreams: Vec<Datastream>,
) -> Result<(Response, Change)> {
    load_path(view, org)?;
    check_text("template name", &name, MAX_NAME_LEN)?;
    check(&datastreams)?;
    if find_template(view, &id)?.is_some() {
        return Err(SchemaError::Invalid(format!(
            "the template id {id} is taken; template ids are unique store-wide"
        )));
    }
    let template = StoredTemplate {
        org: org.0,
        name,
        datastreams: stored(&datastreams),
        created_ms: who.now,
    };
    let mut change = synced();
    change.batch.put(
        Cf::Templates,
        keys::template(&id).to_vec(),
        encode(&template)?,
    );
    change.batch.put(
        Cf::OrgIndex,
        keys::org_index(org, keys::ORG_TEMPLATE, keys::template(&id)),
        Vec::new(),
    );
    audit::record(
        view,
        &mut change,
        who,
        org,
        format!("template {id}"),
        format!(
            "name {:?}, {} datastream(s)",
            template.name,
            datastreams.len()
        ),
    )?;
    Ok((Response::Template(template.to_wire(id)?), change))
}

pub(super) fn get(view: &impl View, id: TemplateId) -> Result<Response> {
    let template = load_template(view, &id)?;
    Ok(Response::Template(template.to_wire(id)?))
}

/// The templates of `org` and of every organization above it (which its devices may use).
pub(super) fn list(view: &impl View, org: OrgId) -> Result<Response> {
    let path = load_path(view, org)?;
    let mut out = Vec::new();
    for owner in path.ids() {
        out.extend(templates_of(view, *owner)?);
    }
    Ok(Response::Templates(out))
}

fn templates_of(view: &impl View, org: OrgId) -> Result<Vec<TemplateRecord>> {
    let ids = orgs::members(view, org, keys::ORG_TEMPLATE, "a template id", |member| {
        std::str::from_utf8(member)
            .ok()
            .and_then(|raw| TemplateId::parse(raw).ok())
    })?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(template) = find_template(view, &id)? {
            out.push(template.to_wire(id)?);
        }
    }
    Ok(out)
}

/// `templates.manage` where the template lives (see the module's text).
fn require_manage(
    view: &impl View,
    who: &Who,
    id: &TemplateId,
    template: &StoredTemplate,
) -> Result<()> {
    let path = load_path(view, OrgId(template.org))?;
    require(
        who,
        Permission::TemplatesManage,
        &Target::org(path, format!("template {id}")),
    )
    .map_err(|err| match err {
        // Visible (the decision let it through) but above the actor: forbidden, not hidden.
        SchemaError::NotFound(_) => {
            SchemaError::NotPermitted(Permission::TemplatesManage.name().to_owned())
        }
        other => other,
    })
}

pub(super) fn update(
    view: &impl View,
    who: &Who,
    id: TemplateId,
    name: Option<String>,
    datastreams: Option<Vec<Datastream>>,
) -> Result<(Response, Change)> {
    let mut template = load_template(view, &id)?;
    require_manage(view, who, &id, &template)?;
    let mut detail = Vec::new();
    if let Some(name) = name {
        check_text("template name", &name, MAX_NAME_LEN)?;
        detail.push(format!("name {name:?}"));
        template.name = name;
    }
    if let Some(datastreams) = datastreams {
        check(&datastreams)?;
        detail.push(format!("{} datastream(s)", datastreams.len()));
        template.datastreams = stored(&datastreams);
    }
    let mut change = synced();
    change.batch.put(
        Cf::Templates,
        keys::template(&id).to_vec(),
        encode(&template)?,
    );
    audit::record(
        view,
        &mut change,
        who,
        OrgId(template.org),
        format!("template {id}"),
        detail.join(", "),
    )?;
    Ok((Response::Template(template.to_wire(id)?), change))
}

pub(super) fn delete(view: &impl View, who: &Who, id: TemplateId) -> Result<(Response, Change)> {
    let template = load_template(view, &id)?;
    require_manage(view, who, &id, &template)?;
    if !view
        .scan_prefix(Cf::TemplateDevices, &keys::template_devices_prefix(&id), 1)?
        .is_empty()
    {
        return Err(SchemaError::Invalid(format!(
            "template {id} is used by devices; delete or re-template them first"
        )));
    }
    let org = OrgId(template.org);
    let mut change = synced();
    change
        .batch
        .delete(Cf::Templates, keys::template(&id).to_vec());
    change.batch.delete(
        Cf::OrgIndex,
        keys::org_index(org, keys::ORG_TEMPLATE, keys::template(&id)),
    );
    audit::record(
        view,
        &mut change,
        who,
        org,
        format!("template {id}"),
        format!("name {:?}", template.name),
    )?;
    Ok((Response::Done, change))
}
