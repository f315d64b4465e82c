//! The embedded default transport: each mail becomes `<data-dir>/outbox/<unix-ms>-<seq>-<kind>.eml`.
//! Owns the directory (created 0700), the file names, and the write discipline: a hidden
//! temporary file in the same directory, mode 0600 from its creation (the link inside is a
//! secret), synced, then renamed into place, so a reader never sees half a mail. Temporary
//! files left by a crash are removed when the outbox opens.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The outbox's directory under the data directory.
pub const OUTBOX_DIR_NAME: &str = "outbox";
/// Mode of the outbox directory when this crate creates it: the gateway's user only.
pub const OUTBOX_DIR_MODE: u32 = 0o700;
/// Mode of every `.eml` file: it holds a single-use link, so the gateway's user only.
pub const OUTBOX_FILE_MODE: u32 = 0o600;
/// Suffix of the temporary file a mail is written to before its rename.
const TEMP_SUFFIX: &str = ".eml.tmp";

/// The outbox directory and the sequence number of the next file.
#[derive(Debug)]
pub(crate) struct Outbox {
    dir: PathBuf,
    seq: u64,
}

impl Outbox {
    /// Creates `<data_dir>/outbox` if it is missing and removes temporary files a crash left.
    pub(crate) fn open(data_dir: &Path) -> io::Result<Outbox> {
        let dir = data_dir.join(OUTBOX_DIR_NAME);
        DirBuilder::new()
            .recursive(true)
            .mode(OUTBOX_DIR_MODE)
            .create(&dir)?;
        let mode = fs::metadata(&dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                dir = %dir.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "the mail outbox can be read by other users; its mails hold secret links: chmod 700 it"
            );
        }
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                fs::remove_file(entry.path())?;
                tracing::info!(file = %name, "removed a half-written mail left in the outbox");
            }
        }
        Ok(Outbox { dir, seq: 0 })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one message; answers the file name it got.
    pub(crate) fn write(&mut self, kind: &str, message: &[u8]) -> io::Result<String> {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        // The sequence makes names unique within this process; a name that exists (the same
        // millisecond in an earlier run) moves on to the next number, never overwrites.
        let name = loop {
            self.seq += 1;
            let name = format!("{millis}-{}-{kind}.eml", self.seq);
            if !self.dir.join(&name).exists() {
                break name;
            }
        };
        let temp = self.dir.join(format!(".{name}.tmp"));
        let written = write_new(&temp, message)
            .and_then(|()| fs::rename(&temp, self.dir.join(&name)))
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if let Err(e) = written {
            // Leave nothing half-written; the original error is the one worth reporting.
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok(name)
    }

    /// Whether a mail could be written now: creates and removes an empty temporary file.
    pub(crate) fn probe(&self) -> io::Result<()> {
        let temp = self
            .dir
            .join(format!(".probe-{}{TEMP_SUFFIX}", std::process::id()));
        write_new(&temp, b"")?;
        fs::remove_file(&temp)
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(OUTBOX_FILE_MODE)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_removes_leftover_temporary_files_and_keeps_mails() -> io::Result<()> {
        let data = tempfile::tempdir()?;
        let dir = data.path().join(OUTBOX_DIR_NAME);
        fs::create_dir(&dir)?;
        fs::write(dir.join(".1-1-verify-email.eml.tmp"), b"half")?;
        fs::write(dir.join("1-1-verify-email.eml"), b"whole")?;
        let mut outbox = Outbox::open(data.path())?;
        assert!(!dir.join(".1-1-verify-email.eml.tmp").exists());
        assert!(dir.join("1-1-verify-email.eml").exists());
        let name = outbox.write("reset", b"x")?;
        assert!(name.ends_with("-reset.eml"), "{name}");
        outbox.probe()?;
        let names: Vec<_> = fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<_>>()?;
        assert_eq!(names.len(), 2, "{names:?}");
        Ok(())
    }

    #[test]
    fn a_taken_name_is_never_overwritten() -> io::Result<()> {
        let data = tempfile::tempdir()?;
        let mut outbox = Outbox::open(data.path())?;
        let first = outbox.write("k", b"one")?;
        // Rewind the sequence as a restart in the same millisecond would.
        outbox.seq = 0;
        let second = outbox.write("k", b"two")?;
        assert_ne!(first, second);
        assert_eq!(fs::read(outbox.dir().join(&first))?, b"one");
        Ok(())
    }
}
