//! The audit log: one entry per change made for someone (and per sign-up, token use and
//! bootstrap), appended under the next sequence number in the same batch as the change itself,
//! so an entry exists exactly when its change does. Sequence numbers come from the
//! `next_audit_seq` counter read through the group's view: consecutive, from 1, without gaps
//! (a request that fails writes neither its change nor its entry). Nothing deletes or rewrites
//! an entry.
//!
//! `ReadAudit` pages by sequence and keeps the entries of one organization (or of its subtree):
//! it reads the log in order and filters, so a page of a quiet organization in a busy store
//! reads every entry in between, up to the end of the log when fewer than `limit` match. (The
//! reply carries no cursor, so the scan cannot stop early; a per-organization index of the log
//! is the fix once logs are long.)

use super::acting::Who;
use super::group::{Change, View};
use super::orgs::subtree;
use super::records::{StoredAudit, decode, encode};
use super::{Result, SchemaError, keys, next_id};
use crate::engine::Cf;
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::store::{AuditEntry, MAX_ACCOUNT_PAGE};
use std::collections::BTreeSet;

/// Entries read per engine scan while filtering.
const SCAN_CHUNK: usize = 1024;

/// Appends the audit entry of the change being built in `change`.
pub(super) fn record(
    view: &impl View,
    change: &mut Change,
    who: &Who,
    org: OrgId,
    target: String,
    detail: String,
) -> Result<()> {
    let seq = next_id(view, change, keys::NEXT_AUDIT_SEQ, 1)?;
    let entry = StoredAudit {
        at_ms: who.now,
        actor: who.label.clone(),
        actor_user: who.user.map(|u| u.0),
        org: org.0,
        action: who.action.to_owned(),
        target,
        from: who.from.clone(),
        detail,
    };
    change
        .batch
        .put(Cf::Audit, keys::audit(seq), encode(&entry)?);
    Ok(())
}

/// Entries of `org` (with `subtree`, of the organizations below it too) after `after`.
pub(super) fn read(
    view: &impl View,
    org: OrgId,
    with_subtree: bool,
    after: Option<u64>,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    let orgs: BTreeSet<u32> = if with_subtree {
        subtree(view, org)?.into_iter().map(|o| o.0).collect()
    } else {
        BTreeSet::from([org.0])
    };
    let limit = limit.min(MAX_ACCOUNT_PAGE) as usize;
    let Some(mut start) = after.map_or(Some(1), |a| a.checked_add(1)) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let end = u64::MAX.to_be_bytes();
    while out.len() < limit {
        let page = view.scan(Cf::Audit, &keys::audit(start), &end, SCAN_CHUNK)?;
        let Some((last, _)) = page.last() else { break };
        let last = parse_seq(last)?;
        for (key, value) in &page {
            let entry: StoredAudit = decode("audit entry", key, value)?;
            if orgs.contains(&entry.org) {
                out.push(entry.to_wire(parse_seq(key)?));
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        if page.len() < SCAN_CHUNK {
            break;
        }
        match last.checked_add(1) {
            Some(next) => start = next,
            None => break,
        }
    }
    Ok(out)
}

fn parse_seq(key: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| SchemaError::Corrupt {
            what: "audit key",
            key: keys::hex(key),
            reason: "not 8 bytes".into(),
        })
}
