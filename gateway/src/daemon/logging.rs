//! Process logging: human-readable diagnostics on standard error (JSON with `--log-format json`),
//! filtered by `log.level` or `RUST_LOG`, with a handle to change the filter on SIGHUP; and the
//! security event log (see `crate::guard::security_log`), which always has its own JSON sink and
//! never appears in the diagnostics.

use crate::config::{Config, LogFormat};
use crate::guard::security_log::{self as security, SecurityFile, SecurityLogError, SecuritySink};
use std::sync::Arc;
use thiserror::Error;
use tracing_subscriber::filter::ParseError;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Keeps security events out of the diagnostics: they go to their own sink.
const WITHOUT_SECURITY: &str = "security=off";

/// Why a `log.level` value cannot be applied, by whose fault.
#[derive(Debug, Error)]
pub enum LogLevelError {
    /// The operator's value is no level or filter directive (config validation refuses it
    /// first, so only a `RUST_LOG` or a bypassed check gets here).
    #[error("{directive:?} is not a log level or filter directive: {source}")]
    BadDirective {
        directive: String,
        source: ParseError,
    },
    /// The subscriber behind the reload handle is gone: a bug of ours, not the operator's.
    #[error("internal: cannot swap the log filter: {0}")]
    Reload(#[from] reload::Error),
}

/// Changes the diagnostic log filter of the running process.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    security_file: Option<Arc<SecurityFile>>,
}

impl LogControl {
    /// Applies a `log.level` value (a level or filter directive).
    pub fn set_level(&self, directive: &str) -> Result<(), LogLevelError> {
        let filter = diagnostics_filter(directive)?;
        Ok(self.handle.reload(filter)?)
    }

    /// Reopens the security log file after a rotation (nothing to do for stderr).
    pub fn reopen_security_log(&self) -> Result<(), SecurityLogError> {
        match &self.security_file {
            Some(file) => file.reopen(),
            None => Ok(()),
        }
    }
}

/// The filter for `directive`, with security events always kept out of the diagnostics.
fn diagnostics_filter(directive: &str) -> Result<EnvFilter, LogLevelError> {
    EnvFilter::try_new(format!("{directive},{WITHOUT_SECURITY}")).map_err(|source| {
        // Names the operator's value only: the appended security directive is ours.
        LogLevelError::BadDirective {
            directive: directive.to_owned(),
            source,
        }
    })
}

/// Installs the process-wide subscriber for `portcullis serve`.
pub fn init(config: &Config) -> Result<LogControl, SecurityLogError> {
    let directive = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| diagnostics_filter(d).is_ok())
        .unwrap_or_else(|| config.log.level.clone());
    // The configured level was validated; fall back to "info" rather than log nothing.
    let filter = diagnostics_filter(&directive)
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{WITHOUT_SECURITY}")));
    let (filter, handle) = reload::Layer::new(filter);
    let diagnostics = match config.log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let sink = SecuritySink::parse(&config.log.security);
    let registry = tracing_subscriber::registry().with(diagnostics);
    let (security, security_file) = security::layer_with_file(&sink)?;
    registry.with(security).init();
    Ok(LogControl {
        handle,
        security_file,
    })
}

/// For short-lived commands (`portcullis admin`): only the security log, for the length of the
/// returned guard.
pub fn security_only(
    config: &Config,
) -> Result<tracing::subscriber::DefaultGuard, SecurityLogError> {
    let sink = SecuritySink::parse(&config.log.security);
    let subscriber = tracing_subscriber::registry().with(security::layer(&sink)?);
    Ok(tracing::subscriber::set_default(subscriber))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_directive_is_named_without_the_security_suffix() {
        assert!(diagnostics_filter("debug,portcullis=trace").is_ok());
        let text = diagnostics_filter("info,[bad")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            text.starts_with("\"info,[bad\" is not a log level or filter directive: "),
            "{text}"
        );
        assert!(!text.contains(WITHOUT_SECURITY), "{text}");
    }
}
