//! How the admin commands print: aligned text tables, Unix milliseconds as RFC 3339, text from
//! devices and users made safe for a terminal, one JSON document per command with `--json`, the
//! values of a multi-value pin, `key: value` fields, and an operation's failure with the hint
//! that helps an operator. Shared by every admin command; it imports none of them.

use anyhow::anyhow;
use portcullis_operations::error::InvalidInput;
use portcullis_operations::{Missing, OperationError};
use portcullis_protocol::body::SEPARATOR;
use serde::Serialize;
use std::io::Write;

/// Writes `value` as one JSON document on one line.
pub fn json(out: &mut dyn Write, value: &impl Serialize) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string(value)?)?;
    Ok(())
}

/// Unix milliseconds as RFC 3339 UTC, or the raw number when out of range.
pub fn format_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// Device-supplied text with control characters replaced, so a name cannot drive the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Each value of a stored pin value (NUL-separated for multi-value pins), as text.
pub fn pin_values(value: &[u8]) -> Vec<String> {
    value
        .split(|&b| b == SEPARATOR)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// A table: the header, then one line per row, columns padded to their widest cell and joined
/// by two spaces, trailing blanks trimmed.
pub fn write_table<const N: usize>(
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

/// An operation's failure as the admin CLI reports it: the operation's own message (a link
/// failure keeps the store client's words and hints), and for something that does not exist or a
/// name that is not a permission, where to look.
pub fn failure(error: OperationError) -> anyhow::Error {
    match error {
        OperationError::NotFound(Missing::Device(id)) => {
            anyhow!("device {id} does not exist (see `portcullis admin device list`)")
        }
        OperationError::NotFound(Missing::User(email)) => anyhow!(
            "no user has the email {} (see `portcullis admin user list --org ORG`)",
            printable(&email)
        ),
        OperationError::NotFound(Missing::Named(what)) => {
            anyhow!(
                "{} does not exist{}",
                printable(&what),
                where_to_look(&what)
            )
        }
        OperationError::Invalid(InvalidInput::UnknownPermission(name)) => anyhow!(
            "unknown permission {:?}; `portcullis admin role permissions` lists every name",
            printable(&name)
        ),
        other => other.into(),
    }
}

/// Which listing shows what the store named as missing (`org 4`, `template TMPL1`, `key 2`),
/// by its first word; nothing for a thing no listing shows (a one-time token).
fn where_to_look(what: &str) -> &'static str {
    let first = what.split_whitespace().next().unwrap_or_default();
    match first.to_ascii_lowercase().as_str() {
        "org" | "organization" => " (see `portcullis admin org list`)",
        "user" => " (see `portcullis admin user list --org ORG`)",
        "role" => " (see `portcullis admin role list --org ORG`)",
        "template" => " (see `portcullis admin template list --org ORG`)",
        "key" | "api" | "apikey" => " (see `portcullis admin apikey list --org ORG`)",
        "device" => " (see `portcullis admin device list`)",
        _ => "",
    }
}

/// A list of names as one cell: `a, b, c`, or `-` when empty.
pub fn names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let joined: Vec<&str> = names.into_iter().collect();
    if joined.is_empty() {
        "-".into()
    } else {
        joined.join(", ")
    }
}

/// `key: value` lines with the values aligned after the longest key.
pub fn write_fields(out: &mut dyn Write, fields: &[(&str, String)]) -> std::io::Result<()> {
    let width = fields.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    for (key, value) in fields {
        writeln!(out, "{:<width$} {value}", format!("{key}:"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("ok\x1b[2J\n"), "ok\u{fffd}[2J\u{fffd}");
    }

    #[test]
    fn tables_align_and_values_split() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            ["A", "LONG HEADER"],
            &[["wide cell".into(), "x".into()]],
        )
        .expect("writes");
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "A          LONG HEADER\nwide cell  x\n"
        );
        assert_eq!(pin_values(b"a\0b\xff"), ["a", "b\u{fffd}"]);
        assert_eq!(format_ms(1_700_000_000_500), "2023-11-14T22:13:20.5Z");
        assert_eq!(format_ms(u64::MAX), format!("{} ms", u64::MAX));
        let mut out = Vec::new();
        write_fields(&mut out, &[("id", "1".into()), ("name", "x".into())]).expect("writes");
        assert_eq!(String::from_utf8(out).expect("utf-8"), "id:   1\nname: x\n");
        assert_eq!(names([]), "-");
        assert_eq!(names(["a", "b"]), "a, b");
    }

    #[test]
    fn missing_things_say_where_to_look() {
        let missing = |what: &str| failure(OperationError::NotFound(Missing::Named(what.into())));
        assert_eq!(
            missing("org 4").to_string(),
            "org 4 does not exist (see `portcullis admin org list`)"
        );
        assert!(
            missing("template TMPL1")
                .to_string()
                .contains("template list")
        );
        assert!(missing("key 2").to_string().contains("apikey list"));
        assert!(missing("role 104").to_string().contains("role list"));
        assert!(missing("user 9").to_string().contains("user list"));
        assert_eq!(
            missing("one-time token").to_string(),
            "one-time token does not exist"
        );
        assert!(missing("org\x1b[2J").to_string().contains('\u{fffd}'));
        let unknown = failure(InvalidInput::UnknownPermission("users.fly".into()).into());
        assert!(
            unknown.to_string().contains("role permissions"),
            "{unknown}"
        );
    }
}
