//! The data directory: what may be opened, and restoring a backup into one.
//!
//! A store's data directory holds the RocksDB files and a marker file, [`MARKER`], naming the
//! data format version. Before opening anything the store decides what the directory is
//! ([`inspect`]): new (missing or empty: created and stamped), ours (marker with our format
//! version and a database behind it), older (a format this build migrates: opened, migrated by
//! the schema, then re-stamped), an unmarked database from before markers existed (opened,
//! checked by the schema, then stamped), or something else — another format version, a marker
//! without a database, or files that are not a database — which is refused with the reason and
//! the command that recovers. RocksDB is opened with `create_if_missing` only for a new
//! directory, so a store never starts empty over data it failed to find.
//!
//! [`restore`] copies a checkpoint written by `portcullis admin backup` into a new data
//! directory, checks that it opens, stamps it, and only then moves it into place.

use crate::engine::rocks::RocksEngine;
use crate::engine::sealed::{Keyring, SEALING_KEY, Sealed};
use crate::engine::{Cf, Engine, EngineError, EngineOptions};
use crate::schema::migrate::OLDEST_MIGRATED;
use crate::schema::{FORMAT_VERSION, SchemaError, Store};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Name of the marker file in a data directory.
pub const MARKER: &str = "PORTCULLIS_STORE";
/// First line of the marker; the second is `format_version = N`.
const MARKER_HEADER: &str = "portcullis-store data directory";
/// Entries a fresh data directory may already hold (a socket placed there, a filesystem's
/// `lost+found`).
const IGNORED: [&str; 2] = ["lost+found", "store.sock"];

/// Why a data directory cannot be used, always with what to do about it.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// Operator: the directory was written by another format version.
    #[error(
        "{} holds store format version {found}; this portcullis-store reads version {supported}. Run the portcullis-store release that wrote it, or restore a backup made by this one: portcullis-store --data-dir NEW_DIR --restore BACKUP_DIR", dir.display()
    )]
    OtherVersion {
        dir: PathBuf,
        found: String,
        supported: u32,
    },
    /// Operator or disk: the marker is there but the database is not (or is damaged).
    #[error(
        "{} is a store data directory but its database cannot be opened ({reason}). The store will not start empty over it. Restore the latest backup: move the directory aside, then run portcullis-store --data-dir {} --restore BACKUP_DIR", dir.display(), dir.display()
    )]
    Damaged { dir: PathBuf, reason: String },
    /// Operator: another store process has the database open.
    #[error("{} is in use by another store process ({reason}); stop it first", dir.display())]
    InUse { dir: PathBuf, reason: String },
    /// Operator: the directory holds something else.
    #[error(
        "{} is not a store data directory: it holds {example:?} and no PORTCULLIS_STORE marker. Point --data-dir at a new or empty directory, or restore a backup into one with --restore BACKUP_DIR", dir.display()
    )]
    Foreign { dir: PathBuf, example: String },
    /// Operator: restoring over an existing directory.
    #[error("{} already exists and is not empty; restore into a new directory (move the old one aside first)", .0.display())]
    RestoreTarget(PathBuf),
    /// Operator: the backup is not a usable checkpoint.
    #[error("{} is not a usable backup: {reason}", dir.display())]
    BadBackup { dir: PathBuf, reason: String },
    /// Operator: the key file does not fit the database (missing, wrong, or not wanted).
    #[error("{0}")]
    Sealing(String),
    /// Store: the schema refused the database (it says why).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// Store: a filesystem call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DataDirError {
    let path = path.to_owned();
    move |source| DataDirError::Io {
        action,
        path,
        source,
    }
}

/// What a data directory turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirState {
    /// Missing or empty: a new store is created here.
    New,
    /// Marked with our format version, database present.
    Ours,
    /// Marked with an older format version this build migrates (the schema does it at open;
    /// the marker is rewritten after).
    Older(u32),
    /// A database without a marker (written before markers existed); the schema decides.
    Unmarked,
}

/// Decides what `dir` is, refusing anything the store must not open.
pub fn inspect(dir: &Path) -> Result<DirState, DataDirError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DirState::New),
        Err(e) => return Err(io_err("read", dir)(e)),
    };
    let mut first_foreign = None;
    let mut any = false;
    for entry in entries {
        let name = entry.map_err(io_err("read", dir))?.file_name();
        let name = name.to_string_lossy();
        if IGNORED.contains(&name.as_ref()) {
            continue;
        }
        any = true;
        if first_foreign.is_none() && name != MARKER {
            first_foreign = Some(name.into_owned());
        }
    }
    if !any {
        return Ok(DirState::New);
    }
    let has_db = dir.join("CURRENT").is_file();
    match fs::read_to_string(dir.join(MARKER)) {
        Ok(text) => {
            let found = parse_marker(&text).ok_or_else(|| DataDirError::OtherVersion {
                dir: dir.to_owned(),
                found: format!(
                    "<unreadable marker {:?}>",
                    text.lines().next().unwrap_or("")
                ),
                supported: FORMAT_VERSION,
            })?;
            if (OLDEST_MIGRATED..FORMAT_VERSION).contains(&found) && has_db {
                return Ok(DirState::Older(found));
            }
            if found != FORMAT_VERSION {
                return Err(DataDirError::OtherVersion {
                    dir: dir.to_owned(),
                    found: found.to_string(),
                    supported: FORMAT_VERSION,
                });
            }
            if !has_db {
                return Err(DataDirError::Damaged {
                    dir: dir.to_owned(),
                    reason: "the RocksDB CURRENT file is missing".into(),
                });
            }
            Ok(DirState::Ours)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if has_db {
                Ok(DirState::Unmarked)
            } else {
                Err(DataDirError::Foreign {
                    dir: dir.to_owned(),
                    example: first_foreign.unwrap_or_default(),
                })
            }
        }
        Err(e) => Err(io_err("read the marker in", dir)(e)),
    }
}

fn parse_marker(text: &str) -> Option<u32> {
    let mut lines = text.lines();
    if lines.next()? != MARKER_HEADER {
        return None;
    }
    lines
        .next()?
        .strip_prefix("format_version = ")?
        .trim()
        .parse()
        .ok()
}

/// Writes the marker durably (temporary file, fsync, rename, fsync of the directory).
fn write_marker(dir: &Path) -> Result<(), DataDirError> {
    let tmp = dir.join(format!("{MARKER}.tmp"));
    let mut file = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    writeln!(file, "{MARKER_HEADER}\nformat_version = {FORMAT_VERSION}")
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", &tmp))?;
    let marker = dir.join(MARKER);
    fs::rename(&tmp, &marker).map_err(io_err("rename", &marker))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), DataDirError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

/// Opens the store in `dir` after [`inspect`] allowed it: creates a new one (mode 0700) or opens
/// the existing database without ever creating one in its place. With `keys`, values are sealed
/// at rest (a new database becomes a sealed one; a clear one is refused), without, a sealed
/// database is refused.
pub fn open(
    dir: &Path,
    engine: &EngineOptions,
    options: crate::schema::StoreOptions,
    keys: Option<Keyring>,
) -> Result<Store<Sealed<RocksEngine>>, DataDirError> {
    let state = inspect(dir)?;
    if state == DirState::New {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create", dir))?;
    }
    let engine_options = EngineOptions {
        create_if_missing: state == DirState::New,
        ..engine.clone()
    };
    let engine = RocksEngine::open_with(dir, &engine_options).map_err(|e| match e {
        // RocksDB's LOCK file: another process has it open, which is no damage at all.
        EngineError::Open { reason, .. } if reason.contains("lock") => DataDirError::InUse {
            dir: dir.to_owned(),
            reason,
        },
        EngineError::Open { reason, .. } => DataDirError::Damaged {
            dir: dir.to_owned(),
            reason,
        },
        other => DataDirError::Damaged {
            dir: dir.to_owned(),
            reason: other.to_string(),
        },
    })?;
    let engine = match keys {
        Some(keys) => Sealed::open(engine, keys),
        None => Sealed::clear(engine),
    }
    .map_err(|e| DataDirError::Sealing(e.to_string()))?;
    let store = Store::open_with(engine, options)?;
    if state != DirState::Ours {
        write_marker(dir)?;
    }
    Ok(store)
}

/// Restores the checkpoint in `backup` as the data directory `dir` (which must be missing or
/// empty). The copy is opened and checked in a temporary sibling first; `dir` only appears once
/// it is complete.
pub fn restore(backup: &Path, dir: &Path) -> Result<(), DataDirError> {
    if inspect(dir)? != DirState::New {
        return Err(DataDirError::RestoreTarget(dir.to_owned()));
    }
    let bad = |reason: String| DataDirError::BadBackup {
        dir: backup.to_owned(),
        reason,
    };
    if !backup.join("CURRENT").is_file() {
        return Err(bad("no RocksDB CURRENT file in it".into()));
    }
    let name = dir
        .file_name()
        .ok_or_else(|| DataDirError::RestoreTarget(dir.to_owned()))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err("create", parent))?;
    }
    let staging = dir.with_file_name(format!(".{}.restoring", name.to_string_lossy()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_err("remove the leftover", &staging))?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .map_err(io_err("create", &staging))?;
    for entry in fs::read_dir(backup).map_err(io_err("read", backup))? {
        let entry = entry.map_err(io_err("read", backup))?;
        let from = entry.path();
        if !entry
            .file_type()
            .map_err(io_err("inspect", &from))?
            .is_file()
        {
            return Err(bad(format!("{} is not a plain file", from.display())));
        }
        let to = staging.join(entry.file_name());
        fs::copy(&from, &to).map_err(io_err("copy", &from))?;
        fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(io_err("sync", &to))?;
    }
    {
        let engine = RocksEngine::open_with(
            &staging,
            &EngineOptions {
                create_if_missing: false,
                ..EngineOptions::default()
            },
        )
        .map_err(|e| bad(e.to_string()))?;
        // A sealed backup can only be read with its key; the store checks it at its next start.
        if engine
            .get(Cf::Meta, SEALING_KEY)
            .map_err(|e| bad(e.to_string()))?
            .is_none()
        {
            Store::open(engine).map_err(|e| bad(e.to_string()))?;
        }
    }
    write_marker(&staging)?;
    if dir.exists() {
        fs::remove_dir(dir).map_err(io_err("replace the empty", dir))?;
    }
    fs::rename(&staging, dir).map_err(io_err("move the restored copy to", dir))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_protocol::authz::OrgId;
    use portcullis_protocol::store::{Acting, Party, Request, Response, TemplateId};

    fn tmpl(id: &str) -> TemplateId {
        TemplateId::parse(id).expect("valid")
    }

    fn operator() -> Acting {
        Acting {
            party: Party::Operator,
            from: "local".into(),
        }
    }

    fn create(store: &Store<impl Engine>, token: u8) -> u64 {
        let op = Some(operator());
        if store
            .handle_as(op.as_ref(), Request::GetTemplate { id: tmpl("TMPL1") })
            .is_err()
        {
            let made = store.handle_as(
                op.as_ref(),
                Request::CreateTemplate {
                    org: OrgId::ROOT,
                    id: tmpl("TMPL1"),
                    name: "t".into(),
                    datastreams: Vec::new(),
                },
            );
            assert!(made.is_ok(), "{made:?}");
        }
        match store.handle_as(
            op.as_ref(),
            Request::CreateDevice {
                org: OrgId::ROOT,
                template: tmpl("TMPL1"),
                owner: None,
                name: format!("d{token}"),
                token_hash: [token; 32],
            },
        ) {
            Ok(Response::Device(d)) => d.id,
            other => panic!("{other:?}"),
        }
    }

    fn opts() -> crate::schema::StoreOptions {
        crate::schema::StoreOptions::default()
    }

    #[test]
    fn a_new_dir_is_created_marked_and_reopened() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("store");
        {
            let s = open(&dir, &EngineOptions::default(), opts(), None).expect("new");
            create(&s, 1);
        }
        assert!(
            parse_marker(&fs::read_to_string(dir.join(MARKER)).expect("marker"))
                == Some(FORMAT_VERSION)
        );
        assert_eq!(inspect(&dir).expect("inspect"), DirState::Ours);
        let s = open(&dir, &EngineOptions::default(), opts(), None).expect("reopen");
        assert_eq!(create(&s, 2), 2, "the first device is still there");
    }

    #[test]
    fn foreign_other_version_and_damaged_dirs_are_refused_with_the_way_out() {
        let root = tempfile::tempdir().expect("tempdir");
        let foreign = root.path().join("foreign");
        fs::create_dir(&foreign).expect("mkdir");
        fs::write(foreign.join("photo.jpg"), b"x").expect("write");
        let err = open(&foreign, &EngineOptions::default(), opts(), None)
            .err()
            .expect("foreign");
        assert!(matches!(err, DataDirError::Foreign { .. }), "{err}");
        assert!(err.to_string().contains("photo.jpg") && err.to_string().contains("--restore"));
        assert!(
            !foreign.join("CURRENT").exists(),
            "nothing was created over it"
        );

        let dir = root.path().join("store");
        drop(open(&dir, &EngineOptions::default(), opts(), None).expect("new"));
        fs::write(
            dir.join(MARKER),
            format!("{MARKER_HEADER}\nformat_version = 7\n"),
        )
        .expect("w");
        let err = open(&dir, &EngineOptions::default(), opts(), None)
            .err()
            .expect("version");
        assert!(err.to_string().contains("format version 7"), "{err}");

        write_marker(&dir).expect("marker");
        fs::remove_file(dir.join("CURRENT")).expect("damage");
        let err = open(&dir, &EngineOptions::default(), opts(), None)
            .err()
            .expect("damaged");
        assert!(matches!(err, DataDirError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("--restore"), "{err}");
        assert!(!dir.join("CURRENT").exists(), "never started empty over it");
    }

    #[test]
    fn an_unmarked_database_of_ours_is_adopted() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("store");
        {
            let s = Store::open(RocksEngine::open(&dir).expect("rocks")).expect("store");
            create(&s, 1);
        }
        assert_eq!(inspect(&dir).expect("inspect"), DirState::Unmarked);
        let s = open(&dir, &EngineOptions::default(), opts(), None).expect("adopted");
        assert_eq!(create(&s, 2), 2);
        assert_eq!(inspect(&dir).expect("inspect"), DirState::Ours);
    }

    #[test]
    fn a_checkpoint_restores_into_a_new_dir_only() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("store");
        let backup = root.path().join("backup");
        {
            let s = open(&dir, &EngineOptions::default(), opts(), None).expect("new");
            create(&s, 1);
            s.engine().checkpoint(&backup).expect("checkpoint");
            create(&s, 2);
        }
        let err = restore(&backup, &dir).expect_err("over existing data");
        assert!(matches!(err, DataDirError::RestoreTarget(_)), "{err}");
        let restored = root.path().join("restored");
        restore(&backup, &restored).expect("restore");
        let s = open(&restored, &EngineOptions::default(), opts(), None).expect("open restored");
        assert_eq!(create(&s, 3), 2, "the backup holds device 1 only");
        let err = restore(&root.path().join("nothing"), &root.path().join("x")).expect_err("bad");
        assert!(matches!(err, DataDirError::BadBackup { .. }), "{err}");
    }

    fn keys(byte: u8) -> Keyring {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join("keys");
        let line = format!("1 {}\n", format!("{byte:02x}").repeat(32));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .expect("key file");
            f.write_all(line.as_bytes()).expect("write");
        }
        Keyring::load(&path).expect("load")
    }

    #[test]
    fn a_sealed_store_needs_its_own_key() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("store");
        {
            let s = open(&dir, &EngineOptions::default(), opts(), Some(keys(7))).expect("new");
            create(&s, 1);
        }
        let err = open(&dir, &EngineOptions::default(), opts(), Some(keys(8)))
            .err()
            .expect("wrong key");
        assert!(err.to_string().contains("wrong key file"), "{err}");
        let err = open(&dir, &EngineOptions::default(), opts(), None)
            .err()
            .expect("no key");
        assert!(err.to_string().contains("key file"), "{err}");
        let s = open(&dir, &EngineOptions::default(), opts(), Some(keys(7))).expect("right key");
        assert_eq!(create(&s, 2), 2);
    }
}
