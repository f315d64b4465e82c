//! `portcullis admin backup DIR`: the running store writes a consistent RocksDB checkpoint into
//! DIR (a new directory) while it keeps serving, through `portcullis_operations::backup` as the
//! operator; this prints where it went and how to restore it.

use super::render::{self, failure};
use portcullis_operations::{Principal, StoreAccess, backup};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

#[derive(Serialize)]
struct BackupView<'a> {
    dir: &'a str,
    bytes: u64,
}

/// Runs `backup DIR`.
pub fn execute(
    store: &mut impl StoreAccess,
    dir: &Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let done = backup::checkpoint(store, &Principal::Operator, dir).map_err(failure)?;
    if json {
        return render::json(
            out,
            &BackupView {
                dir: &done.dir,
                bytes: done.bytes,
            },
        );
    }
    writeln!(
        out,
        "Backup written to {} ({} bytes).",
        done.dir, done.bytes
    )?;
    writeln!(
        out,
        "Restore it with: portcullis-store --data-dir DIR --restore {} (with the store stopped)",
        done.dir
    )?;
    Ok(())
}
