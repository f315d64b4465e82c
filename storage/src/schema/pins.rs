//! Latest pin values and pin properties: the point reads behind every HARDWARE_SYNC, the pin
//! writes that also append each value to its history series, and the properties of a device.

use super::devices::{load_device, require_device};
use super::group::{Change, Committed, View};
use super::records::{StoredValue, decode, encode};
use super::{Result, SchemaError, Store, check_value, history, keys};
use crate::engine::{Cf, Durability, Engine};
use portcullis_protocol::body::PinAddr;
use portcullis_protocol::store::{DeviceId, PinValue, PinWrite, PropertyValue};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

impl<E: Engine> Store<E> {
    /// The device's latest values. The device record is read only when no value is found (to
    /// tell an unknown device from one without values): values exist only for devices that exist,
    /// since a write loads its device and devices are never deleted, and a point read is the hot
    /// path of every HARDWARE_SYNC, where the extra lookup was half the read's cost.
    pub(super) fn read_pins(
        &self,
        device: DeviceId,
        pins: Option<Vec<PinAddr>>,
    ) -> Result<Vec<PinValue>> {
        let found = self.read_pin_values(device, pins)?;
        if found.is_empty() {
            require_device(&Committed(&self.engine), device)?;
        }
        Ok(found)
    }

    fn read_pin_values(
        &self,
        device: DeviceId,
        pins: Option<Vec<PinAddr>>,
    ) -> Result<Vec<PinValue>> {
        let decode_pin = |key: &[u8], value: &[u8], pin: PinAddr| {
            decode::<StoredValue>("pin value", key, value).map(|v| PinValue {
                pin,
                value: v.value,
                at_ms: v.at_ms,
            })
        };
        match pins {
            None => self
                .engine
                .scan_prefix(Cf::Pins, &keys::device(device))?
                .into_iter()
                .map(|(key, value)| {
                    let pin = keys::parse_pin(&key).ok_or_else(|| SchemaError::Corrupt {
                        what: "pin key",
                        key: keys::hex(&key),
                        reason: "not a pin address".into(),
                    })?;
                    decode_pin(&key, &value, pin)
                })
                .collect(),
            Some(pins) => {
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for pin in pins {
                    if !seen.insert(pin) {
                        continue;
                    }
                    let key = keys::pin(device, pin);
                    if let Some(value) = self.engine.get(Cf::Pins, &key)? {
                        out.push(decode_pin(&key, &value, pin)?);
                    }
                }
                Ok(out)
            }
        }
    }

    /// Latest values plus one history point per write (unless the template keeps no history).
    pub(super) fn write_pins(&self, view: &impl View, writes: Vec<PinWrite>) -> Result<Change> {
        let mut templates = BTreeMap::new();
        for w in &writes {
            check_value(
                &format!("value of device {} pin {}", w.device, w.pin),
                &w.value,
            )?;
            if let std::collections::btree_map::Entry::Vacant(slot) = templates.entry(w.device) {
                let template = load_device(view, w.device)?.template;
                slot.insert(self.options.retention.of(&template));
            }
        }
        let mut change = Change::new(Durability::Buffered);
        for w in writes {
            let retention = templates
                .get(&w.device)
                .copied()
                .unwrap_or(self.options.retention.default);
            if let Some(point) = history::value(w.at_ms, retention, &w.value) {
                let seq = self.history_seq.fetch_add(1, Ordering::Relaxed);
                change.batch.put(
                    Cf::History,
                    keys::history(w.device, w.pin, w.at_ms, seq),
                    point,
                );
            }
            change.batch.put(
                Cf::Pins,
                keys::pin(w.device, w.pin),
                encode(&StoredValue {
                    value: w.value,
                    at_ms: w.at_ms,
                })?,
            );
        }
        Ok(change)
    }

    pub(super) fn read_properties(&self, device: DeviceId) -> Result<Vec<PropertyValue>> {
        require_device(&Committed(&self.engine), device)?;
        self.engine
            .scan_prefix(Cf::Properties, &keys::device(device))?
            .into_iter()
            .map(|(key, value)| {
                let (pin, property) =
                    keys::parse_property(&key).ok_or_else(|| SchemaError::Corrupt {
                        what: "property key",
                        key: keys::hex(&key),
                        reason: "not a pin and property name".into(),
                    })?;
                let v: StoredValue = decode("property value", &key, &value)?;
                Ok(PropertyValue {
                    pin,
                    property: property.to_owned(),
                    value: v.value,
                    at_ms: v.at_ms,
                })
            })
            .collect()
    }
}

/// A starting point for [`Store::history_seq`] that differs between store processes: the clock's
/// nanoseconds mixed with the pid. Two processes collide only if they also pick the same 32-bit
/// value and then write the same pin in the same millisecond with the same counter value.
pub(super) fn history_seq_start() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
    nanos ^ std::process::id().rotate_left(16)
}
