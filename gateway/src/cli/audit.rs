//! `portcullis admin audit [--org ID] [--subtree] [--after SEQ] [--limit N]`: the audit log,
//! through `portcullis_operations::audit` as the operator, read page by page in sequence order.
//! Text is a table; `--json` is JSON lines (one entry per line, written as each page arrives) so
//! an export of any size streams and `--after` the last `seq` resumes it.

use super::args::parse_org;
use super::render::{failure, format_ms, printable, write_table};
use anyhow::anyhow;
use portcullis_operations::{Principal, StoreAccess, audit};
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::store::{AuditEntry, MAX_ACCOUNT_PAGE};
use serde::Serialize;
use std::io::Write;

// The arguments of `audit` (its help text is the doc comment of `AdminCommand::Audit`).
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Organization whose entries to read (see `org list`) [default: 1, the root].
    #[arg(long, value_name = "ID", value_parser = parse_org)]
    org: Option<OrgId>,
    /// Also the entries of every organization below it.
    #[arg(long)]
    subtree: bool,
    /// Only entries after this sequence number (the `seq` of the last entry already read).
    #[arg(long, value_name = "SEQ")]
    after: Option<u64>,
    /// At most this many entries [default: all].
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

/// An entry as `audit --json` writes it, one per line.
#[derive(Serialize)]
struct EntryView<'a> {
    seq: u64,
    at_ms: u64,
    actor: &'a str,
    actor_user: Option<u64>,
    org: u32,
    action: &'a str,
    target: &'a str,
    from: &'a str,
    detail: &'a str,
}

impl<'a> From<&'a AuditEntry> for EntryView<'a> {
    fn from(e: &'a AuditEntry) -> Self {
        Self {
            seq: e.seq,
            at_ms: e.at_ms,
            actor: &e.actor,
            actor_user: e.actor_user.map(|u| u.0),
            org: e.org.0,
            action: &e.action,
            target: &e.target,
            from: &e.from,
            detail: &e.detail,
        }
    }
}

/// Runs `audit`: pages of at most [`MAX_ACCOUNT_PAGE`] until the store has no more or the
/// limit is reached.
pub fn execute(
    store: &mut impl StoreAccess,
    args: AuditArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let AuditArgs {
        org,
        subtree,
        mut after,
        limit,
    } = args;
    let org = org.unwrap_or(OrgId::ROOT);
    let mut left = limit.unwrap_or(u64::MAX);
    let mut rows: Vec<[String; 7]> = Vec::new();
    while left > 0 {
        let page = u32::try_from(left).map_or(MAX_ACCOUNT_PAGE, |n| n.min(MAX_ACCOUNT_PAGE));
        let entries =
            audit::read(store, &Principal::Operator, org, subtree, after, page).map_err(failure)?;
        let Some(last) = entries.last() else { break };
        // Sequence numbers must grow, or a buggy store could keep us paging forever.
        if after.is_some_and(|after| last.seq <= after) {
            return Err(anyhow!(
                "the store returned an audit page that does not advance (last seq {}); stopping",
                last.seq
            ));
        }
        after = Some(last.seq);
        let taken = entries
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        left = left.saturating_sub(taken as u64);
        for entry in &entries[..taken] {
            if json {
                writeln!(out, "{}", serde_json::to_string(&EntryView::from(entry))?)?;
            } else {
                rows.push([
                    entry.seq.to_string(),
                    format_ms(entry.at_ms),
                    printable(&entry.actor),
                    printable(&entry.action),
                    printable(&entry.target),
                    printable(&entry.from),
                    printable(&entry.detail),
                ]);
            }
        }
    }
    if json {
        return Ok(());
    }
    if rows.is_empty() {
        let scope = if subtree { " or below it" } else { "" };
        writeln!(out, "No audit entries in org {}{scope}.", org.0)?;
        return Ok(());
    }
    write_table(
        out,
        ["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "FROM", "DETAIL"],
        &rows,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_store::{self, requests};
    use portcullis_protocol::store::{Request, Response, StoreError};

    fn entry(seq: u64) -> AuditEntry {
        AuditEntry {
            seq,
            at_ms: 1_700_000_000_000 + seq,
            actor: "operator".into(),
            actor_user: None,
            org: OrgId(2),
            action: "CreateDevice".into(),
            target: format!("device {seq}"),
            from: "local".into(),
            detail: "name \"x\x1b\"".into(),
        }
    }

    /// A log of `total` entries, answering pages by sequence.
    fn log(total: u64) -> impl FnMut(&Request) -> Result<Response, StoreError> {
        move |request| match request {
            Request::ReadAudit { after, limit, .. } => {
                let start = after.unwrap_or(0) + 1;
                let end = (start + u64::from(*limit)).min(total + 1);
                Ok(Response::Audit((start..end).map(entry).collect()))
            }
            other => Err(StoreError::Invalid(format!("unexpected {other:?}"))),
        }
    }

    fn run(
        client: &mut portcullis_store_client::StoreClient,
        args: AuditArgs,
        json: bool,
    ) -> String {
        let mut out = Vec::new();
        execute(client, args, json, &mut out).expect("reads");
        test_store::text(out)
    }

    #[test]
    fn json_lines_page_through_the_whole_log() {
        let total = u64::from(MAX_ACCOUNT_PAGE) + 5;
        let (_dir, mut client, seen) = test_store::store(log(total));
        let args = AuditArgs {
            org: Some(OrgId(2)),
            subtree: true,
            after: None,
            limit: None,
        };
        let out = run(&mut client, args, true);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        assert_eq!(lines.len() as u64, total);
        assert_eq!(
            lines[0],
            serde_json::json!({"seq": 1, "at_ms": 1_700_000_000_001u64, "actor": "operator",
                "actor_user": null, "org": 2, "action": "CreateDevice", "target": "device 1",
                "from": "local", "detail": "name \"x\x1b\""})
        );
        let read = |after| Request::ReadAudit {
            org: OrgId(2),
            subtree: true,
            after,
            limit: MAX_ACCOUNT_PAGE,
        };
        assert_eq!(
            requests(&seen),
            [
                read(None),
                read(Some(u64::from(MAX_ACCOUNT_PAGE))),
                read(Some(total))
            ]
        );
    }

    #[test]
    fn text_is_a_table_within_the_limit_after_a_sequence() {
        let (_dir, mut client, seen) = test_store::store(log(10));
        let args = AuditArgs {
            org: None,
            subtree: false,
            after: Some(3),
            limit: Some(2),
        };
        let out = run(&mut client, args, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("SEQ  TIME"), "{out}");
        assert!(
            lines[1].starts_with("4    2023-11-14T22:13:20.004Z  operator  CreateDevice  device 4  local  name \"x\u{fffd}\""),
            "{out}"
        );
        assert_eq!(
            requests(&seen),
            [Request::ReadAudit {
                org: OrgId::ROOT,
                subtree: false,
                after: Some(3),
                limit: 2
            }]
        );
        let (_dir, mut client, _) = test_store::store(log(0));
        let empty = AuditArgs {
            org: Some(OrgId(4)),
            subtree: true,
            after: None,
            limit: None,
        };
        assert_eq!(
            run(&mut client, empty, false),
            "No audit entries in org 4 or below it.\n"
        );
    }
}
