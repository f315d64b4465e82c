//! The `[mail]` section of the gateway configuration: which transport carries mail (the
//! `.eml` outbox or an SMTP relay), the relay's address, security and credentials, and the
//! worker's limits. Owns every default and bound (each a named constant below), the checks
//! of [`MailConfig::validate`], and the checked result ([`Loaded`]) the mailer runs on; the
//! two files the section names (password, CA) are read by `files`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};

mod files;

pub(crate) use files::Secret;
use files::{read_ca, read_password};

/// `mail.from` when unset: a sender on this machine, which a relay may rewrite or refuse,
/// so an operator who turns SMTP on should set a real one.
pub const DEFAULT_FROM: &str = "Portcullis <portcullis@localhost>";
/// `mail.smtp.port` when unset: the submission port (RFC 6409), spoken with STARTTLS.
pub const DEFAULT_SMTP_PORT: u16 = 587;
/// `mail.smtp.timeout_secs` when unset: how long one connect, read or write to the relay may
/// take before the attempt counts as failed.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// Largest `mail.smtp.timeout_secs`: past this a stuck relay would hold the one worker (and
/// so every mail behind it) for longer than any sign-up link is worth waiting for.
pub const MAX_TIMEOUT_SECS: u64 = 300;
/// `mail.queue_capacity` when unset: mails waiting for the worker before `submit` answers
/// `QueueFull`. The worker keeps at most as many again in its own retry list.
pub const DEFAULT_QUEUE_CAPACITY: usize = 256;
/// Largest `mail.queue_capacity`: each queued mail holds its body in memory.
pub const MAX_QUEUE_CAPACITY: usize = 65_536;
/// `mail.max_attempts` when unset: delivery attempts of one mail (the first included)
/// before it is dropped with an error in the log.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
/// Largest `mail.max_attempts`: with the default back-off this is already days of trying.
pub const MAX_ATTEMPTS_LIMIT: u32 = 32;
/// `mail.backoff_base_ms` when unset: the wait after the first failed attempt; each further
/// consecutive failure doubles it, up to `mail.backoff_cap_ms`.
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 2_000;
/// `mail.backoff_cap_ms` when unset: the longest wait between two attempts (5 minutes).
pub const DEFAULT_BACKOFF_CAP_MS: u64 = 300_000;
/// Largest `mail.backoff_cap_ms` (1 hour): a relay that is back should not wait longer to be
/// noticed, since sign-ups are refused while it is taken as down.
pub const MAX_BACKOFF_CAP_MS: u64 = 3_600_000;
/// Largest password file read: a password is a line, so anything bigger is the wrong file.
pub const MAX_PASSWORD_FILE_BYTES: u64 = 4_096;
/// Largest CA file read: a bundle of a few hundred certificates fits well under this.
pub const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// Which way mail leaves the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// The embedded default: nothing is sent; each mail is written to
    /// `<data-dir>/outbox/` as an `.eml` file for the operator to read or forward.
    #[default]
    Outbox,
    /// Delivered to the relay of `[mail.smtp]`.
    Smtp,
}

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connect, then STARTTLS, which the relay must offer (usually port 587).
    #[default]
    Starttls,
    /// TLS from the first byte ("implicit TLS", usually port 465).
    Tls,
    /// No TLS at all: only to a relay on this machine (a loopback host).
    None,
}

/// `[mail]`: every key may be left out; the defaults are the constants of this module.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// `"outbox"` (default) or `"smtp"`.
    pub transport: TransportKind,
    /// The `From:` of every mail, as `Name <address>` or a bare address
    /// (default [`DEFAULT_FROM`]).
    pub from: String,
    /// `[mail.smtp]`: required when `transport = "smtp"`, ignored otherwise.
    pub smtp: Option<SmtpConfig>,
    /// Mails waiting for the worker (default [`DEFAULT_QUEUE_CAPACITY`]).
    pub queue_capacity: usize,
    /// Attempts per mail before it is dropped (default [`DEFAULT_MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// First wait after a failure, in milliseconds (default [`DEFAULT_BACKOFF_BASE_MS`]).
    pub backoff_base_ms: u64,
    /// Longest wait between attempts, in milliseconds (default [`DEFAULT_BACKOFF_CAP_MS`]).
    pub backoff_cap_ms: u64,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            transport: TransportKind::Outbox,
            from: DEFAULT_FROM.to_owned(),
            smtp: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
            backoff_cap_ms: DEFAULT_BACKOFF_CAP_MS,
        }
    }
}

/// `[mail.smtp]`: the relay. Only `host` is required.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The relay's DNS name or IP address (also the name its TLS certificate must carry).
    pub host: String,
    /// Default [`DEFAULT_SMTP_PORT`].
    #[serde(default = "default_port")]
    pub port: u16,
    /// `"starttls"` (default), `"tls"` or `"none"` (loopback hosts only).
    #[serde(default)]
    pub security: Security,
    /// The user to authenticate as; needs `password_file`. Unset: no authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (its trailing newline is dropped). Passwords are never
    /// written in the configuration itself. A relative path is taken from the working
    /// directory.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM certificates of the CA that signed the relay's certificate, for a self-hosted
    /// relay. When set, only these are trusted; unset, the built-in Mozilla roots are.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Default [`DEFAULT_TIMEOUT_SECS`], at most [`MAX_TIMEOUT_SECS`].
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_port() -> u16 {
    DEFAULT_SMTP_PORT
}

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

impl SmtpConfig {
    /// A relay at `host` with every other key at its default.
    pub fn new(host: impl Into<String>) -> Self {
        SmtpConfig {
            host: host.into(),
            port: DEFAULT_SMTP_PORT,
            security: Security::Starttls,
            username: None,
            password_file: None,
            ca_file: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}

/// What is wrong in `[mail]`: always the operator's configuration (or the files it names),
/// and each message names the key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("mail.transport = \"smtp\" needs a [mail.smtp] section with at least `host`")]
    SmtpSectionMissing,
    #[error("mail.smtp.host is empty or not a host name or IP address: {host:?}")]
    BadHost { host: String },
    #[error("mail.smtp.port must not be 0")]
    PortZero,
    #[error(
        "mail.smtp.security = \"none\" sends credentials and sign-up links in clear text, so it \
         is allowed only for a relay on this machine (127.0.0.1, ::1 or localhost), not {host:?}: \
         use \"starttls\" or \"tls\""
    )]
    PlaintextToRemote { host: String },
    #[error(
        "mail.from is not a mailbox (`Name <user@example.org>` or `user@example.org`): {from:?}: {reason}"
    )]
    BadFrom { from: String, reason: String },
    #[error("mail.{key} = {value} is out of range: it must be between {min} and {max}")]
    OutOfRange {
        key: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("mail.backoff_cap_ms ({cap}) must not be below mail.backoff_base_ms ({base})")]
    BackoffCapBelowBase { base: u64, cap: u64 },
    #[error("mail.smtp.username is set but mail.smtp.password_file is not: set both, or neither")]
    UsernameWithoutPassword,
    #[error("mail.smtp.password_file is set but mail.smtp.username is not: set both, or neither")]
    PasswordWithoutUsername,
    #[error("mail.smtp.password_file {path:?} cannot be read: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mail.smtp.password_file {path:?} {problem}")]
    PasswordFileContent {
        path: PathBuf,
        problem: &'static str,
    },
    #[error("mail.smtp.ca_file {path:?} cannot be read: {source}")]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mail.smtp.ca_file {path:?} {problem}")]
    CaFileContent { path: PathBuf, problem: String },
}

/// `[mail.smtp]` checked, with its files read.
#[derive(Debug)]
pub(crate) struct LoadedSmtp {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) security: Security,
    pub(crate) credentials: Option<(String, Secret)>,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) timeout: Duration,
}

/// `[mail]` checked, with its files read: what the mailer runs on.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) from: Mailbox,
    pub(crate) smtp: Option<LoadedSmtp>,
    pub(crate) queue_capacity: usize,
    pub(crate) max_attempts: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
}

impl MailConfig {
    /// Checks every key and reads the files `[mail.smtp]` names (when `transport = "smtp"`),
    /// so that a start-up can refuse a bad section before anything runs. The error says what
    /// to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.load().map(drop)
    }

    pub(crate) fn load(&self) -> Result<Loaded, ConfigError> {
        let from: Mailbox = self
            .from
            .parse()
            .map_err(|e: lettre::address::AddressError| ConfigError::BadFrom {
                from: self.from.clone(),
                reason: e.to_string(),
            })?;
        let queue_capacity = in_range(
            "queue_capacity",
            self.queue_capacity as u64,
            1,
            MAX_QUEUE_CAPACITY as u64,
        )?;
        let max_attempts = in_range(
            "max_attempts",
            u64::from(self.max_attempts),
            1,
            u64::from(MAX_ATTEMPTS_LIMIT),
        )?;
        let base = in_range(
            "backoff_base_ms",
            self.backoff_base_ms,
            1,
            MAX_BACKOFF_CAP_MS,
        )?;
        let cap = in_range("backoff_cap_ms", self.backoff_cap_ms, 1, MAX_BACKOFF_CAP_MS)?;
        if cap < base {
            return Err(ConfigError::BackoffCapBelowBase { base, cap });
        }
        let smtp = match (self.transport, &self.smtp) {
            (TransportKind::Outbox, _) => None,
            (TransportKind::Smtp, None) => return Err(ConfigError::SmtpSectionMissing),
            (TransportKind::Smtp, Some(smtp)) => Some(smtp.load()?),
        };
        Ok(Loaded {
            from,
            smtp,
            // Both bounded above by the checks just made, so they fit.
            queue_capacity: queue_capacity as usize,
            max_attempts: max_attempts as u32,
            backoff_base: Duration::from_millis(base),
            backoff_cap: Duration::from_millis(cap),
        })
    }
}

impl SmtpConfig {
    fn load(&self) -> Result<LoadedSmtp, ConfigError> {
        let host = self.host.trim();
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !host_ok {
            return Err(ConfigError::BadHost {
                host: self.host.clone(),
            });
        }
        if self.port == 0 {
            return Err(ConfigError::PortZero);
        }
        if self.security == Security::None && !is_loopback(host) {
            return Err(ConfigError::PlaintextToRemote {
                host: self.host.clone(),
            });
        }
        let timeout = in_range("smtp.timeout_secs", self.timeout_secs, 1, MAX_TIMEOUT_SECS)?;
        let credentials = match (&self.username, &self.password_file) {
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::UsernameWithoutPassword),
            (None, Some(_)) => return Err(ConfigError::PasswordWithoutUsername),
            (Some(user), Some(path)) => Some((user.clone(), read_password(path)?)),
        };
        let ca_pem = self.ca_file.as_deref().map(read_ca).transpose()?;
        Ok(LoadedSmtp {
            host: host.to_owned(),
            port: self.port,
            security: self.security,
            credentials,
            ca_file: self.ca_file.clone(),
            ca_pem,
            timeout: Duration::from_secs(timeout),
        })
    }
}

/// Whether `host` is this machine: `localhost` or a loopback address (127.0.0.0/8, ::1).
pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn in_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange {
            key,
            value,
            min,
            max,
        })
    }
}
