//! The security event log: one JSON object per line on the dedicated `security` tracing target,
//! written to the sink named by `log.security` (standard error or a file), separate from the
//! human-readable diagnostics. Every event carries the same fields — `kind`, `module`, `source`
//! (the peer's IP address, when there is one), `subject` (what was acted on: a device, a
//! certificate file, a token prefix) and `reason` — so tools parse one format.
//!
//! Each module that has something to report defines one enum implementing [`SecurityEvent`]
//! (`reactor::events::ConnectionEvent`, `tls::reload::CertificateEvent`, `cli::device::AdminEvent`);
//! a new feature adds an enum or a variant, never a new format.

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use thiserror::Error;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;

/// The tracing target of every security event.
pub const TARGET: &str = "security";

/// One thing worth an operator's attention.
pub trait SecurityEvent {
    /// Stable machine-readable name, e.g. `invalid_device_token`.
    fn kind(&self) -> &'static str;
    /// The peer's address, when the event came from the network.
    fn source(&self) -> Option<IpAddr>;
    /// What was acted on (device id, certificate path, token prefix); empty when nothing.
    fn subject(&self) -> String;
    /// Why, in words.
    fn reason(&self) -> String;
    /// Short human message, e.g. "TLS handshake refused".
    fn message(&self) -> &'static str;
}

/// Writes `event` to the security log. `module` names the reporting module.
pub fn record(module: &'static str, event: &dyn SecurityEvent) {
    let source = event.source().map(|ip| ip.to_string()).unwrap_or_default();
    tracing::warn!(
        target: "security",
        kind = event.kind(),
        module,
        source = %source,
        subject = %event.subject(),
        reason = %event.reason(),
        "{}",
        event.message()
    );
}

/// Where security events go (`log.security`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecuritySink {
    Stderr,
    File(PathBuf),
}

impl SecuritySink {
    /// `"stderr"` or a file path.
    pub fn parse(value: &str) -> SecuritySink {
        match value {
            "stderr" => SecuritySink::Stderr,
            path => SecuritySink::File(PathBuf::from(path)),
        }
    }
}

#[derive(Debug, Error)]
#[error("cannot open the security log {}: {source}; check log.security and the directory's permissions", path.display())]
pub struct SecurityLogError {
    path: PathBuf,
    source: io::Error,
}

/// Opens a security log file for appending, readable by its owner only (it names peers and
/// devices).
fn open_log_file(path: &Path) -> Result<File, SecurityLogError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| SecurityLogError {
            path: path.to_owned(),
            source,
        })
}

/// The security log file, reopened on SIGHUP so logrotate can move it away (`create` mode).
#[derive(Debug)]
pub struct SecurityFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl SecurityFile {
    pub fn open(path: &Path) -> Result<Self, SecurityLogError> {
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(open_log_file(path)?),
        })
    }

    /// Opens the path again (a new file if the old one was renamed); the old handle is closed.
    pub fn reopen(&self) -> Result<(), SecurityLogError> {
        let fresh = open_log_file(&self.path)?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }
}

/// One event's write access to the security log file.
pub struct SecurityFileWriter<'a>(MutexGuard<'a, File>);

impl io::Write for SecurityFileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `MakeWriter` over a shared [`SecurityFile`].
#[derive(Debug, Clone)]
pub struct SharedSecurityFile(pub Arc<SecurityFile>);

impl<'a> MakeWriter<'a> for SharedSecurityFile {
    type Writer = SecurityFileWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        SecurityFileWriter(self.0.file.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// A layer that writes only `security` events, as flattened JSON lines, to `sink`; for a file
/// sink, also the handle to reopen it.
pub fn layer<S>(
    sink: &SecuritySink,
) -> Result<Box<dyn Layer<S> + Send + Sync + 'static>, SecurityLogError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    Ok(layer_with_file(sink)?.0)
}

/// [`layer`], returning the file handle (for a file sink) so SIGHUP can reopen it.
#[allow(clippy::type_complexity)]
pub fn layer_with_file<S>(
    sink: &SecuritySink,
) -> Result<
    (
        Box<dyn Layer<S> + Send + Sync + 'static>,
        Option<Arc<SecurityFile>>,
    ),
    SecurityLogError,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // INFO: the reactor logs repeats of a flood at debug level, and those stay out.
    let only_security = Targets::new().with_target(TARGET, tracing::Level::INFO);
    let json = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false);
    Ok(match sink {
        SecuritySink::Stderr => (
            json.with_writer(io::stderr)
                .with_filter(only_security)
                .boxed(),
            None,
        ),
        SecuritySink::File(path) => {
            let file = Arc::new(SecurityFile::open(path)?);
            (
                json.with_writer(SharedSecurityFile(file.clone()))
                    .with_filter(only_security)
                    .boxed(),
                Some(file),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    struct Probe;
    impl SecurityEvent for Probe {
        fn kind(&self) -> &'static str {
            "probe"
        }
        fn source(&self) -> Option<IpAddr> {
            Some(IpAddr::from([192, 0, 2, 7]))
        }
        fn subject(&self) -> String {
            "device 42".into()
        }
        fn reason(&self) -> String {
            "testing".into()
        }
        fn message(&self) -> &'static str {
            "probe event"
        }
    }

    #[test]
    fn events_are_json_lines_with_every_field_and_only_security_events_are_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("security.log");
        let subscriber = tracing_subscriber::registry()
            .with(layer(&SecuritySink::File(path.clone())).expect("opens"));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("an ordinary diagnostic");
            record("test", &Probe);
        });
        let text = std::fs::read_to_string(&path).expect("written");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(v["kind"], "probe");
        assert_eq!(v["module"], "test");
        assert_eq!(v["source"], "192.0.2.7");
        assert_eq!(v["subject"], "device 42");
        assert_eq!(v["reason"], "testing");
        assert_eq!(v["message"], "probe event");
        assert_eq!(v["target"], "security");
        assert!(v["timestamp"].is_string(), "{v}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_rotated_file_is_recreated_on_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("security.log");
        let (layer, file) = layer_with_file(&SecuritySink::File(path.clone())).expect("opens");
        let file = file.expect("a file sink has a handle");
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            record("test", &Probe);
            std::fs::rename(&path, dir.path().join("security.log.1")).expect("rotates");
            file.reopen().expect("reopens");
            record("test", &Probe);
        });
        let lines = |name: &str| {
            std::fs::read_to_string(dir.path().join(name))
                .expect("read")
                .lines()
                .count()
        };
        assert_eq!(lines("security.log.1"), 1);
        assert_eq!(lines("security.log"), 1);
    }

    #[test]
    fn the_sink_is_stderr_or_a_path() {
        assert_eq!(SecuritySink::parse("stderr"), SecuritySink::Stderr);
        assert_eq!(
            SecuritySink::parse("/var/log/portcullis/security.log"),
            SecuritySink::File("/var/log/portcullis/security.log".into())
        );
    }
}
