//! Device-record helpers shared by the read and write paths: finding a device through a
//! [`View`] (committed data or a group in the making), listing devices (optionally of one org),
//! and the write requests that edit one device (info, properties), each returning the [`Change`]
//! it wants committed. Presence, which also edits a device, is `presence.rs`.

use super::group::{Change, View};
use super::records::{StoredDevice, StoredInfo, StoredValue, decode, encode};
use super::{
    LIST_PAGE_BYTES, LIST_SCAN_CHUNK, MAX_PROPERTY_NAME_LEN, Result, SchemaError, check_info,
    check_text, check_value, keys,
};
use crate::engine::{Cf, Durability, Engine};
use portcullis_protocol::body::{DeviceInfo, PinAddr, WIDGET_PROPERTIES, is_widget_property};
use portcullis_protocol::store::{DeviceId, DeviceRecord, MAX_LIST_PAGE};

pub(super) fn find_device(view: &impl View, id: DeviceId) -> Result<Option<StoredDevice>> {
    let key = keys::device(id);
    view.get(Cf::Devices, &key)?
        .map(|bytes| decode("device", &key, &bytes))
        .transpose()
}

pub(super) fn load_device(view: &impl View, id: DeviceId) -> Result<StoredDevice> {
    find_device(view, id)?.ok_or_else(|| SchemaError::NotFound(format!("device {id}")))
}

pub(super) fn require_device(view: &impl View, id: DeviceId) -> Result<()> {
    match view.get(Cf::Devices, &keys::device(id))? {
        Some(_) => Ok(()),
        None => Err(SchemaError::NotFound(format!("device {id}"))),
    }
}

/// Devices ordered by id after `after`, at most `limit` (capped at [`MAX_LIST_PAGE`] and at
/// [`LIST_PAGE_BYTES`] of records); with `org`, only that org's devices. The filter reads every
/// record between matches: a page of a small org in a large fleet costs a scan of the fleet
/// up to its last match. (An org index is the fix once orgs are many; it is a format change.)
pub(super) fn list_devices(
    engine: &impl Engine,
    after: Option<DeviceId>,
    limit: u32,
    org: Option<&str>,
) -> Result<Vec<DeviceRecord>> {
    let mut start = match after {
        None => keys::device(0).to_vec(),
        Some(id) => match id.checked_add(1) {
            Some(next) => keys::device(next).to_vec(),
            None => return Ok(Vec::new()),
        },
    };
    let limit = limit.min(MAX_LIST_PAGE) as usize;
    // Unfiltered, every record read is a match: one scan of `limit` is the whole page.
    let chunk = if org.is_some() {
        LIST_SCAN_CHUNK
    } else {
        limit
    };
    let mut out = Vec::new();
    let mut bytes = 0;
    while out.len() < limit {
        let scanned = engine.scan_range(Cf::Devices, &start, None, chunk)?;
        let Some((last, _)) = scanned.last() else {
            break;
        };
        let mut next_start = last.clone();
        next_start.push(0);
        for (key, value) in &scanned {
            let id = keys::parse_device(key).ok_or_else(|| SchemaError::Corrupt {
                what: "device key",
                key: keys::hex(key),
                reason: "not 8 bytes".into(),
            })?;
            let record: StoredDevice = decode("device", key, value)?;
            if org.is_some_and(|org| record.org != org) {
                continue;
            }
            bytes += value.len();
            if bytes > LIST_PAGE_BYTES && !out.is_empty() {
                return Ok(out);
            }
            out.push(record.to_wire(id));
            if out.len() == limit {
                return Ok(out);
            }
        }
        if scanned.len() < chunk {
            break;
        }
        start = next_start;
    }
    Ok(out)
}

pub(super) fn write_property(
    view: &impl View,
    device: DeviceId,
    pin: PinAddr,
    property: &str,
    value: Vec<u8>,
    at_ms: u64,
) -> Result<Change> {
    check_text("property name", property, MAX_PROPERTY_NAME_LEN)?;
    if !is_widget_property(property.as_bytes()) {
        return Err(SchemaError::Invalid(format!(
            "unknown widget property {property:?}; known: {}",
            WIDGET_PROPERTIES.join(", ")
        )));
    }
    check_value(&format!("property {property} of pin {pin}"), &value)?;
    require_device(view, device)?;
    let mut change = Change::new(Durability::Sync);
    change.batch.put(
        Cf::Properties,
        keys::property(device, pin, property),
        encode(&StoredValue { value, at_ms })?,
    );
    Ok(change)
}

/// Loads a device (as the group sees it), lets `edit` change it, and writes it back synced.
pub(super) fn update_device(
    view: &impl View,
    id: DeviceId,
    edit: impl FnOnce(&mut StoredDevice),
) -> Result<Change> {
    let mut record = load_device(view, id)?;
    edit(&mut record);
    let mut change = Change::new(Durability::Sync);
    change
        .batch
        .put(Cf::Devices, keys::device(id), encode(&record)?);
    Ok(change)
}

pub(super) fn set_info(
    view: &impl View,
    device: DeviceId,
    info: DeviceInfo,
    at_ms: u64,
) -> Result<Change> {
    check_info(&info)?;
    update_device(view, device, |d| {
        d.info = Some(StoredInfo::from(info));
        d.last_seen_ms = Some(at_ms);
    })
}
