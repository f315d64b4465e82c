//! Parsing of frame bodies: NUL-separated arguments, HARDWARE pin operations, HARDWARE_SYNC pin
//! lists, PROPERTY updates and the INTERNAL device-info message (docs/reference/blynk-protocol.md
//! §1.4 and §1.7).
//!
//! Everything here borrows from the frame body and returns a typed decision or a `BodyError`
//! that names what was wrong, so a session can answer `ILLEGAL_COMMAND` and keep going.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// Separator between body arguments.
pub const SEPARATOR: u8 = 0;

/// Longest string kept from the device-info message per field; longer values are cut, not refused.
pub const MAX_INFO_FIELD_LEN: usize = 64;

/// Splits a body on NUL. An empty body yields no arguments.
pub fn split_args(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut parts = body.split(|&b| b == SEPARATOR);
    let empty = body.is_empty();
    std::iter::from_fn(move || if empty { None } else { parts.next() })
}

/// Splits off the first argument; the rest keeps its separators (multi-value writes).
fn split_first(body: &[u8]) -> (&[u8], Option<&[u8]>) {
    match body.iter().position(|&b| b == SEPARATOR) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    }
}

/// Why a body could not be understood. Always the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BodyError {
    #[error("empty body")]
    Empty,
    #[error("unknown pin operation {0:?}")]
    UnknownOperation(String),
    #[error("bad pin {0:?} (expected 0..=255)")]
    BadPin(String),
    #[error("missing value")]
    MissingValue,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("unknown widget property {0:?} (see WIDGET_PROPERTIES)")]
    UnknownProperty(String),
}

/// The widget properties a device may set (docs/reference/blynk-protocol.md §3: the legacy
/// server's `WidgetProperty` list, plus `isDisabled` and `isHidden` from Blynk 2.0). Anything else
/// is refused: every accepted name is a stored row per pin, so an open set would let one device
/// grow the database without bound.
pub const WIDGET_PROPERTIES: &[&str] = &[
    "label",
    "color",
    "onLabel",
    "offLabel",
    "labels",
    "min",
    "max",
    "isOnPlay",
    "url",
    "urls",
    "step",
    "valueFormatting",
    "suffix",
    "maximumFractionDigits",
    "opacity",
    "scale",
    "rotation",
    "onColor",
    "offColor",
    "onBackColor",
    "offBackColor",
    "isDisabled",
    "isHidden",
];

/// Whether `name` is one of [`WIDGET_PROPERTIES`] (case-sensitive, as in the reference server).
pub fn is_widget_property(name: &[u8]) -> bool {
    WIDGET_PROPERTIES.iter().any(|p| p.as_bytes() == name)
}

/// The three pin spaces of a Blynk device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PinKind {
    Virtual,
    Digital,
    Analog,
}

impl PinKind {
    fn from_letter(letter: u8) -> Option<Self> {
        match letter.to_ascii_lowercase() {
            b'v' => Some(PinKind::Virtual),
            b'd' => Some(PinKind::Digital),
            b'a' => Some(PinKind::Analog),
            _ => None,
        }
    }

    /// Lower-case letter used in `vw`, `dw`, `aw` and in names such as `v5`.
    pub const fn letter(self) -> char {
        match self {
            PinKind::Virtual => 'v',
            PinKind::Digital => 'd',
            PinKind::Analog => 'a',
        }
    }
}

/// One pin of one device: `V5`, `D13`, `A0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PinAddr {
    pub kind: PinKind,
    pub pin: u8,
}

impl PinAddr {
    pub const fn new(kind: PinKind, pin: u8) -> Self {
        Self { kind, pin }
    }

    /// The write operation that sets this pin on a device (`vw`, `dw`, `aw`).
    pub fn write_op(self) -> [u8; 2] {
        [self.kind.letter() as u8, b'w']
    }

    /// Parses a name such as `V5`, `v5`, `d13` (used by the admin CLI and the HTTP API).
    pub fn parse_name(name: &str) -> Result<Self, BodyError> {
        let bytes = name.as_bytes();
        let kind = bytes
            .first()
            .and_then(|&b| PinKind::from_letter(b))
            .ok_or_else(|| BodyError::BadPin(name.into()))?;
        Ok(Self {
            kind,
            pin: parse_pin(&bytes[1..])?,
        })
    }
}

impl fmt::Display for PinAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.letter().to_ascii_uppercase(), self.pin)
    }
}

fn parse_pin(digits: &[u8]) -> Result<u8, BodyError> {
    std::str::from_utf8(digits)
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u8>().ok())
        .ok_or_else(|| BodyError::BadPin(String::from_utf8_lossy(digits).into_owned()))
}

/// A HARDWARE (20) body sent by a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hardware<'a> {
    /// `vw|dw|aw \0 pin \0 value[\0 value...]`; `value` keeps the inner separators.
    Write { pin: PinAddr, value: &'a [u8] },
    /// `vr|dr|ar \0 pin`: a device asking for a value (answered like a sync of that pin).
    Read { pin: PinAddr },
    /// `pm \0 pin \0 mode ...`: pin modes, accepted and ignored.
    PinMode,
}

/// Parses a HARDWARE body.
pub fn parse_hardware(body: &[u8]) -> Result<Hardware<'_>, BodyError> {
    let (op, rest) = split_first(body);
    if op.is_empty() {
        return Err(BodyError::Empty);
    }
    if op.eq_ignore_ascii_case(b"pm") {
        return Ok(Hardware::PinMode);
    }
    let kind = match op {
        [letter, _] => PinKind::from_letter(*letter),
        _ => None,
    };
    let (Some(kind), Some(action)) = (kind, op.get(1).map(u8::to_ascii_lowercase)) else {
        return Err(BodyError::UnknownOperation(
            String::from_utf8_lossy(op).into_owned(),
        ));
    };
    let rest = rest.ok_or(BodyError::Missing("pin"))?;
    let (pin_bytes, value) = split_first(rest);
    let pin = PinAddr::new(kind, parse_pin(pin_bytes)?);
    match action {
        b'w' => Ok(Hardware::Write {
            pin,
            value: value.ok_or(BodyError::MissingValue)?,
        }),
        b'r' => Ok(Hardware::Read { pin }),
        _ => Err(BodyError::UnknownOperation(
            String::from_utf8_lossy(op).into_owned(),
        )),
    }
}

/// What a HARDWARE_SYNC (16) asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncRequest {
    /// Empty body: every stored value.
    All,
    /// `vr \0 p1 \0 p2 ...` (also `dr`, `ar`); `vr` alone means every pin of that kind.
    Pins { kind: PinKind, pins: Vec<u8> },
}

/// Largest number of pins one sync request may name.
pub const MAX_SYNC_PINS: usize = 256;

/// Parses a HARDWARE_SYNC body.
pub fn parse_sync(body: &[u8]) -> Result<SyncRequest, BodyError> {
    if body.is_empty() {
        return Ok(SyncRequest::All);
    }
    let mut args = split_args(body);
    let op = args.next().ok_or(BodyError::Empty)?;
    let kind = match op {
        [letter, r] if r.eq_ignore_ascii_case(&b'r') => PinKind::from_letter(*letter),
        _ => None,
    }
    .ok_or_else(|| BodyError::UnknownOperation(String::from_utf8_lossy(op).into_owned()))?;
    let pins = args
        .filter(|a| !a.is_empty())
        .take(MAX_SYNC_PINS)
        .map(parse_pin)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SyncRequest::Pins { kind, pins })
}

/// A PROPERTY (19) body: `pin \0 property \0 value...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyUpdate<'a> {
    pub pin: PinAddr,
    pub property: &'a [u8],
    pub value: &'a [u8],
}

/// Parses a PROPERTY body. A bare number names a virtual pin, as the libraries send it.
pub fn parse_property(body: &[u8]) -> Result<PropertyUpdate<'_>, BodyError> {
    let (pin_bytes, rest) = split_first(body);
    if pin_bytes.is_empty() {
        return Err(BodyError::Empty);
    }
    let pin = match pin_bytes.first().and_then(|&b| PinKind::from_letter(b)) {
        Some(kind) => PinAddr::new(kind, parse_pin(&pin_bytes[1..])?),
        None => PinAddr::new(PinKind::Virtual, parse_pin(pin_bytes)?),
    };
    let (property, value) = split_first(rest.ok_or(BodyError::Missing("property"))?);
    if property.is_empty() {
        return Err(BodyError::Missing("property"));
    }
    if !is_widget_property(property) {
        return Err(BodyError::UnknownProperty(
            String::from_utf8_lossy(property).into_owned(),
        ));
    }
    Ok(PropertyUpdate {
        pin,
        property,
        value: value.ok_or(BodyError::MissingValue)?,
    })
}

/// What the INTERNAL info message (`ver`/`blynk`, `h-beat`, `buff-in`, ...) tells about a device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Heartbeat interval in seconds (`h-beat`).
    pub heartbeat_secs: Option<u16>,
    /// Receive buffer of the device in bytes (`buff-in`): frames to it must not exceed it.
    pub buff_in: Option<u16>,
    /// Template id (`tmpl`).
    pub template: Option<String>,
    /// Firmware version (`fw` in older libraries, `mcu` in 1.3+).
    pub firmware: Option<String>,
    /// Library version (`ver` in older libraries, `blynk` in 1.3+).
    pub lib_version: Option<String>,
    /// Board or platform (`dev`).
    pub device_type: Option<String>,
}

/// Outcome of looking at an INTERNAL body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Internal {
    /// A device-info message (any known info key present).
    Info(DeviceInfo),
    /// Another INTERNAL sub-command (`rtc`, `utc`, `meta`, ...), named by its first argument.
    Other(String),
}

/// Parses an INTERNAL body. Never fails: unknown keys are skipped and bad numbers left unset.
pub fn parse_internal(body: &[u8]) -> Internal {
    let mut args = split_args(body);
    let first = args.next().unwrap_or_default();
    const INFO_KEYS: &[&[u8]] = &[
        b"ver", b"blynk", b"h-beat", b"buff-in", b"dev", b"cpu", b"con", b"fw", b"fw-type", b"mcu",
        b"ncp", b"build", b"tmpl",
    ];
    if !INFO_KEYS.contains(&first) {
        return Internal::Other(lossy_capped(first));
    }
    let mut info = DeviceInfo::default();
    let mut args = split_args(body);
    while let (Some(key), value) = (args.next(), args.next()) {
        let Some(value) = value else { break };
        match key {
            b"h-beat" => info.heartbeat_secs = parse_number(value),
            b"buff-in" => info.buff_in = parse_number(value),
            b"tmpl" => info.template = Some(lossy_capped(value)),
            b"fw" | b"mcu" => info.firmware = Some(lossy_capped(value)),
            b"ver" | b"blynk" => info.lib_version = Some(lossy_capped(value)),
            b"dev" => info.device_type = Some(lossy_capped(value)),
            _ => {}
        }
    }
    Internal::Info(info)
}

fn parse_number(value: &[u8]) -> Option<u16> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

fn lossy_capped(value: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(&value[..value.len().min(MAX_INFO_FIELD_LEN)]).into_owned();
    s.retain(|c| !c.is_control());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_arguments() {
        assert_eq!(split_args(b"").count(), 0);
        assert_eq!(
            split_args(b"vw\x005\x0042").collect::<Vec<_>>(),
            vec![&b"vw"[..], b"5", b"42"]
        );
        assert_eq!(split_args(b"a\0").collect::<Vec<_>>(), vec![&b"a"[..], b""]);
    }

    #[test]
    fn hardware_writes_reads_and_errors() {
        assert_eq!(
            parse_hardware(b"vw\x005\x0042"),
            Ok(Hardware::Write {
                pin: PinAddr::new(PinKind::Virtual, 5),
                value: b"42"
            })
        );
        assert_eq!(
            parse_hardware(b"DW\x0013\x001\x002"),
            Ok(Hardware::Write {
                pin: PinAddr::new(PinKind::Digital, 13),
                value: b"1\x002"
            })
        );
        assert_eq!(
            parse_hardware(b"ar\x000"),
            Ok(Hardware::Read {
                pin: PinAddr::new(PinKind::Analog, 0)
            })
        );
        assert_eq!(parse_hardware(b"pm\x001\x00out"), Ok(Hardware::PinMode));
        assert_eq!(
            parse_hardware(b"vw\x00256\x001"),
            Err(BodyError::BadPin("256".into()))
        );
        assert_eq!(
            parse_hardware(b"vw\x00x\x001"),
            Err(BodyError::BadPin("x".into()))
        );
        assert_eq!(parse_hardware(b"vw\x005"), Err(BodyError::MissingValue));
        assert_eq!(
            parse_hardware(b"zz\x005\x001"),
            Err(BodyError::UnknownOperation("zz".into()))
        );
        assert_eq!(parse_hardware(b""), Err(BodyError::Empty));
        // An empty value is a legal write (clearing a string pin).
        assert_eq!(
            parse_hardware(b"vw\x001\x00"),
            Ok(Hardware::Write {
                pin: PinAddr::new(PinKind::Virtual, 1),
                value: b""
            })
        );
    }

    #[test]
    fn sync_requests() {
        assert_eq!(parse_sync(b""), Ok(SyncRequest::All));
        assert_eq!(
            parse_sync(b"vr\x001\x002"),
            Ok(SyncRequest::Pins {
                kind: PinKind::Virtual,
                pins: vec![1, 2]
            })
        );
        assert_eq!(
            parse_sync(b"vr"),
            Ok(SyncRequest::Pins {
                kind: PinKind::Virtual,
                pins: vec![]
            })
        );
        assert!(parse_sync(b"vw\x001").is_err());
        assert!(parse_sync(b"vr\x00999").is_err());
    }

    #[test]
    fn property_updates() {
        let p = parse_property(b"5\x00label\x00Temp").expect("valid");
        assert_eq!(p.pin, PinAddr::new(PinKind::Virtual, 5));
        assert_eq!((p.property, p.value), (&b"label"[..], &b"Temp"[..]));
        assert!(parse_property(b"5\x00label").is_err());
        assert_eq!(
            parse_property(b"5\x00p17\x00x").map(|p| p.property),
            Err(BodyError::UnknownProperty("p17".into()))
        );
        assert_eq!(
            parse_property(b"5\x00Label\x00x").map(|p| p.property),
            Err(BodyError::UnknownProperty("Label".into()))
        );
        for name in WIDGET_PROPERTIES {
            let body = format!("V5\x00{name}\x00x");
            assert_eq!(
                parse_property(body.as_bytes()).map(|p| p.property),
                Ok(name.as_bytes())
            );
        }
        assert!(parse_property(b"").is_err());
    }

    #[test]
    fn info_from_each_library_generation() {
        // blynklib 0.2.6
        let Internal::Info(i) =
            parse_internal(b"ver\x000.2.6\x00buff-in\x001024\x00h-beat\x0010\x00dev\x00python")
        else {
            panic!("not info")
        };
        assert_eq!((i.heartbeat_secs, i.buff_in), (Some(10), Some(1024)));
        assert_eq!(i.lib_version.as_deref(), Some("0.2.6"));
        // C++ lib 1.3+ (no trailing NUL) and 0.6.1 (trailing NUL).
        let Internal::Info(i) = parse_internal(
            b"mcu\x001.0.1\x00fw-type\x00TMPL1\x00build\x00Apr\x00blynk\x001.4.0\x00h-beat\x0045\x00buff-in\x00256\x00tmpl\x00TMPL1",
        ) else {
            panic!("not info")
        };
        assert_eq!(i.firmware.as_deref(), Some("1.0.1"));
        assert_eq!(i.template.as_deref(), Some("TMPL1"));
        assert_eq!((i.heartbeat_secs, i.buff_in), (Some(45), Some(256)));
        let Internal::Info(i) =
            parse_internal(b"ver\x000.6.1\x00h-beat\x00x\x00buff-in\x00256\x00")
        else {
            panic!("not info")
        };
        assert_eq!((i.heartbeat_secs, i.buff_in), (None, Some(256)));
        assert_eq!(
            parse_internal(b"rtc\x00sync"),
            Internal::Other("rtc".into())
        );
    }

    #[test]
    fn pin_names() {
        assert_eq!(
            PinAddr::parse_name("V5"),
            Ok(PinAddr::new(PinKind::Virtual, 5))
        );
        assert_eq!(
            PinAddr::parse_name("d13").map(|p| p.to_string()),
            Ok("D13".into())
        );
        assert!(PinAddr::parse_name("x1").is_err());
        assert!(PinAddr::parse_name("V").is_err());
    }
}
