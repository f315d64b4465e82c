//! The revocation feed behind `Request::Revocations`: one entry per device, user or session
//! whose live connections must end, appended in the same batch as the change that revoked it
//! (re-provisioning or deleting a device; suspending, deleting, resetting the password of or
//! logging out a user), so a gateway polling the feed hears of exactly the revocations that
//! happened.
//!
//! Entries live in `Cf::Revocations` under a sequence number (u64 BE, consecutive from 1, from
//! the `next_revocation_seq` counter). The family expires: each value starts with its expiry
//! (write time + [`REVOCATION_RETENTION_MS`]) and the engine drops it in its own maintenance,
//! so the feed never needs pruning; readers skip an expired entry that is still there.
//!
//! A reader asking `after: n` gets the entries after `n` in order, at most
//! [`MAX_REVOCATIONS_PAGE`], and `gap` when an entry after `n` is already gone (expired or
//! dropped) or when `n` lies beyond the newest entry (a poller holding a cursor of another data
//! directory): either way it missed something, and ends what it cannot vouch for. `after: 0` is
//! the baseline question and never reports a gap.

use super::group::{Change, View};
use super::records::{decode, encode};
use super::{Result, SchemaError, counter, keys, next_id};
use crate::engine::{Cf, EXPIRY_LEN, expired};
use portcullis_protocol::store::{
    MAX_REVOCATIONS_PAGE, REVOCATION_RETENTION_MS, RevocationPage, Revoked,
};

/// Appends `revoked` to the feed in `change`, written at `now` (Unix ms).
pub(super) fn record(
    view: &impl View,
    change: &mut Change,
    now: u64,
    revoked: Revoked,
) -> Result<()> {
    let seq = next_id(view, change, keys::NEXT_REVOCATION_SEQ, 1)?;
    let body = encode(&revoked)?;
    let mut value = Vec::with_capacity(EXPIRY_LEN + body.len());
    value.extend_from_slice(&now.saturating_add(REVOCATION_RETENTION_MS).to_be_bytes());
    value.extend_from_slice(&body);
    change
        .batch
        .put(Cf::Revocations, keys::revocation(seq), value);
    Ok(())
}

/// The entries after `after`, read at `now`.
pub(super) fn read(view: &impl View, after: u64, now: u64) -> Result<RevocationPage> {
    // The counter holds the next sequence to hand out: the newest entry is one below it.
    let newest = counter(view, keys::NEXT_REVOCATION_SEQ, 1)?.saturating_sub(1);
    if after >= newest {
        return Ok(RevocationPage {
            next: newest,
            revoked: Vec::new(),
            gap: after > newest,
        });
    }
    let start = keys::revocation(after + 1);
    let end = u64::MAX.to_be_bytes();
    let entries = view.scan(Cf::Revocations, &start, &end, MAX_REVOCATIONS_PAGE as usize)?;
    let mut expected = after + 1;
    let mut gap = false;
    let mut revoked = Vec::with_capacity(entries.len());
    for (key, value) in &entries {
        let seq = parse_seq(key)?;
        gap |= seq != expected;
        expected = seq.saturating_add(1);
        if expired(value, now) {
            gap = true;
            continue;
        }
        let body = value
            .get(EXPIRY_LEN..)
            .ok_or_else(|| SchemaError::Corrupt {
                what: "revocation",
                key: keys::hex(key),
                reason: "value shorter than its expiry".into(),
            })?;
        revoked.push(decode("revocation", key, body)?);
    }
    // A full page stops at its last entry; otherwise the feed was read to its newest entry, and
    // entries missing at the end were dropped.
    let next = if entries.len() == MAX_REVOCATIONS_PAGE as usize {
        expected - 1
    } else {
        gap |= expected <= newest;
        newest
    };
    Ok(RevocationPage {
        next,
        revoked,
        gap: gap && after != 0,
    })
}

fn parse_seq(key: &[u8]) -> Result<u64> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| SchemaError::Corrupt {
            what: "revocation key",
            key: keys::hex(key),
            reason: "not 8 bytes".into(),
        })
}
