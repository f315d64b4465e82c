//! The `portcullis-store` commands of key rotation, which talk to the running store over an
//! admin link: telling it to reload its key file after `rotate-key`, re-sealing every value of an
//! older key with the current one (`reseal`, with progress), and saying which key ids the stored
//! values use (`key-usage`), so the operator knows when an old key may leave the key file.
//! Every request acts as the operator (`Party::Operator`, which only an admin link may claim).

use portcullis_protocol::store::{
    Acting, ClientHello, ClientRole, KeyStatus, NodeName, Party, Request, Response,
};
use portcullis_store_client::{StoreClient, StoreClientError};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long one request may take before the link gives up: a reseal step or a key count of a
/// large store can take a while, a hung store should not hang the operator forever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The name these commands give in their hello (they are no gateway node).
const TOOL_NODE: NodeName = NodeName::from_static("portcullis-store");

/// Shortest time between two progress lines of `reseal`.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Why a key command failed.
#[derive(Debug, Error)]
pub enum KeyToolError {
    /// The store could not be reached or refused.
    #[error(transparent)]
    Store(#[from] StoreClientError),
    /// Store: answered with something else than the request calls for (a bug).
    #[error("the store answered {request} with an unexpected {response}")]
    Unexpected {
        request: &'static str,
        response: String,
    },
    /// Writing the report failed.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// An admin link to the store at `socket`.
fn connect(socket: &Path) -> Result<StoreClient, StoreClientError> {
    let hello = ClientHello::new(TOOL_NODE, ClientRole::Admin);
    StoreClient::connect(socket, hello, CALL_TIMEOUT)
}

/// The operator at this machine: whom every key command acts for.
fn operator() -> Acting {
    Acting {
        party: Party::Operator,
        from: "local".into(),
    }
}

/// One request acting as the operator.
fn call(link: &mut StoreClient, request: Request) -> Result<Response, StoreClientError> {
    link.call_as(Some(&operator()), request)
}

fn keys(request: &'static str, response: Response) -> Result<KeyStatus, KeyToolError> {
    match response {
        Response::Keys(status) => Ok(status),
        other => Err(KeyToolError::Unexpected {
            request,
            response: format!("{other:?}"),
        }),
    }
}

/// Tells the store at `socket` to reload its key file.
pub fn reload(socket: &Path) -> Result<KeyStatus, KeyToolError> {
    let mut link = connect(socket)?;
    keys("ReloadKeys", call(&mut link, Request::ReloadKeys)?)
}

/// Counts the stored values per key id.
pub fn usage(socket: &Path) -> Result<KeyStatus, KeyToolError> {
    let mut link = connect(socket)?;
    keys("KeyUsage", call(&mut link, Request::KeyUsage)?)
}

/// Writes which key ids are in use and which may be removed.
pub fn report(status: &KeyStatus, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "current key: {}", status.current)?;
    for count in &status.in_use {
        writeln!(out, "key {}: {} values", count.id, count.values)?;
    }
    let unused: Vec<String> = status
        .loaded
        .iter()
        .filter(|id| **id != status.current && !status.in_use.iter().any(|c| c.id == **id))
        .map(u32::to_string)
        .collect();
    let old_in_use: Vec<String> = status
        .in_use
        .iter()
        .filter(|c| c.id != status.current)
        .map(|c| c.id.to_string())
        .collect();
    if unused.is_empty() {
        writeln!(out, "no key of the file is unused")?;
    } else {
        writeln!(
            out,
            "unused keys: {} (they may be removed from the key file)",
            unused.join(", ")
        )?;
    }
    if !old_in_use.is_empty() {
        writeln!(
            out,
            "older keys still in use: {} (run `portcullis-store reseal`)",
            old_in_use.join(", ")
        )?;
    }
    Ok(())
}

/// Re-seals every value of an older key with the current one, step by step, printing progress
/// to `out`, then counts the keys again and returns that count. Interrupting it is harmless:
/// every step is committed on its own, and a rerun skips what is already re-sealed.
pub fn reseal(socket: &Path, out: &mut dyn Write) -> Result<KeyStatus, KeyToolError> {
    let mut link = connect(socket)?;
    let before = keys("KeyUsage", call(&mut link, Request::KeyUsage)?)?;
    let total: u64 = before
        .in_use
        .iter()
        .filter(|c| c.id != before.current)
        .map(|c| c.values)
        .sum();
    writeln!(
        out,
        "re-sealing {total} values of older keys with key {}",
        before.current
    )?;
    let (mut done, mut scanned) = (0u64, 0u64);
    let mut after = None;
    let mut last_line = Instant::now();
    loop {
        let step = match call(&mut link, Request::Reseal { after })? {
            Response::Resealed(step) => step,
            other => {
                return Err(KeyToolError::Unexpected {
                    request: "Reseal",
                    response: format!("{other:?}"),
                });
            }
        };
        done += step.resealed + step.dropped;
        scanned += step.scanned;
        after = step.next;
        if after.is_none() || last_line.elapsed() >= PROGRESS_EVERY {
            // Values written under an old key by a reload racing us can push `done` past `total`.
            writeln!(
                out,
                "resealed {done}/{} ({scanned} entries looked at)",
                total.max(done)
            )?;
            last_line = Instant::now();
        }
        if after.is_none() {
            break;
        }
    }
    let status = keys("KeyUsage", call(&mut link, Request::KeyUsage)?)?;
    report(&status, out)?;
    Ok(status)
}
