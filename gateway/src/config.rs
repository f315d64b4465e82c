//! The gateway's configuration: one TOML file, every key optional with a documented default,
//! unknown keys rejected at every level, and every value checked once by [`Config::validate`]
//! before anything starts. `docs/configuration.md` is the user-facing reference and must list the
//! same keys and defaults as the doc comments here.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Largest body a Blynk frame can carry: its length field is 16 bits.
pub const MAX_FRAME_BODY: u32 = 65_535;

/// Longest Unix socket path the kernel accepts (`sun_path` is 108 bytes including the NUL).
const MAX_UNIX_SOCKET_PATH: usize = 107;

/// Why a configuration could not be used. Each message names the file and the key at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys and wrongly typed values; toml's message carries line and column.
    #[error("invalid config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: `{key}` {reason}", origin(path.as_deref()))]
    Invalid {
        path: Option<PathBuf>,
        key: &'static str,
        reason: String,
    },
}

fn origin(path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("config file {}", path.display()),
        None => "built-in configuration".to_owned(),
    }
}

/// The whole configuration. Relative paths are relative to the gateway's working directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory holding everything the gateway writes: the store's database (`store/`), the
    /// generated development certificate (`tls/`) and the store socket. Default `"./data"`.
    pub data_dir: PathBuf,
    pub server: ServerSection,
    pub tls: TlsSection,
    pub limits: LimitsSection,
    pub store: StoreSection,
    pub log: LogSection,
    pub metrics: MetricsSection,
    pub shutdown: ShutdownSection,
}

/// `[server]`: shards and listening sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Number of reactor shards (threads, each with its own listeners); 0 means one per CPU core.
    /// Default 0.
    pub shards: u16,
    /// Address to listen on. Default `"::"` (all IPv6 and, dual-stack, IPv4 addresses); callers
    /// fall back to `0.0.0.0` when the host has no IPv6.
    pub bind_address: IpAddr,
    /// TLS port for devices, HTTPS and secure WebSockets. Default 443.
    pub tls_port: u16,
    /// TLS port used when `tls_port` cannot be bound (taken, or no privilege). Default 9443.
    pub tls_fallback_port: u16,
    /// Plain-TCP port (device binary protocol, HTTP, WebSocket). Default 80.
    pub plain_port: u16,
    /// Plain port used when `plain_port` cannot be bound. Default 8080.
    pub plain_fallback_port: u16,
    /// Accept backlog of each listening socket. Default 1024.
    pub listen_backlog: u32,
}

/// `[tls]`: the server certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first. Set together with `key`. Default: none, meaning a
    /// self-signed development certificate is generated in `<data_dir>/tls/` on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`. Set together with `cert`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Extra names (DNS names or IP addresses) for the generated development certificate, besides
    /// localhost, 127.0.0.1, ::1 and the host name. Default `[]`.
    pub names: Vec<String>,
    /// How often the certificate and key files are checked for changes, in milliseconds; a
    /// changed pair is validated and served to new handshakes. 0 turns the watcher off (SIGHUP
    /// still reloads). Default 10000.
    pub watch_interval_ms: u64,
}

/// `[limits]`: timeouts, frame sizes and queue bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// A connection that has not logged in after this many milliseconds is closed. Default 10000.
    pub login_timeout_ms: u64,
    /// Largest frame body accepted before login, in bytes. Default 1024.
    pub max_body_before_login: u32,
    /// Largest frame body accepted after login, in bytes; at most 65535. Default 4096.
    pub max_body: u32,
    /// Heartbeat interval assumed for a device whose info message announced none. Default 10.
    pub default_heartbeat_secs: u16,
    /// A device silent for `ceil(heartbeat_factor × h-beat)` seconds is disconnected; must be above
    /// 1. Default 2.3.
    pub heartbeat_factor: f64,
    /// Bytes queued towards one connection before it is considered a slow reader and closed.
    /// Default 65536.
    pub outbound_queue_bytes: u32,
    /// Pin writes a shard may queue for the store while the store is slow or restarting; beyond
    /// that, writes are dropped and counted. Default 100000.
    pub store_queue_max_writes: u32,
    /// Largest message (header included) sent to a device that announced no `buff-in`; the stock
    /// C++ library reads into a 256-byte buffer. Default 255.
    pub default_buff_in: u16,
}

/// `[store]`: where the store runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// Unix socket of an externally managed `portcullis-store` (for example its own systemd
    /// unit). Default: none, meaning the gateway starts the store as a child process listening on
    /// `<data_dir>/store.sock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// Path of the `portcullis-store` executable to start. Default: the one next to the
    /// `portcullis` executable, else the first on `PATH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// How often the child store syncs telemetry (pin values) to disk, in milliseconds: at most
    /// this much acknowledged telemetry is lost on a power cut. Account and device changes are
    /// always synced before they are acknowledged. Default 100.
    pub sync_interval_ms: u64,
}

/// `[log]`: diagnostics on standard error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Level or `tracing` filter directive (`"debug"`, `"info,portcullis_gateway=trace"`).
    /// Default `"info"`.
    pub level: String,
    /// `"text"` for people, `"json"` (one object per line) for log collectors. Default `"text"`.
    pub format: LogFormat,
    /// Where the security event log (JSON lines) goes: `"stderr"` or a file path (appended to,
    /// created with mode 0600). Default `"stderr"`.
    pub security: String,
}

/// `[metrics]`: the Prometheus endpoint and health checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve `/metrics`, `/healthz` and `/readyz`. Default true.
    pub enabled: bool,
    /// Address of the metrics port. Default `"127.0.0.1"` (loopback only).
    pub bind_address: IpAddr,
    /// Metrics port; 0 = ephemeral (written to `ports.json`). Default 9464.
    pub port: u16,
    /// When set, `/metrics` requires `Authorization: Bearer <token>` (health checks do not). At
    /// least 16 characters. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<String>,
}

/// `[shutdown]`: how SIGTERM/SIGINT stop the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSection {
    /// Connections are closed gradually over this many milliseconds after the listeners close,
    /// so the fleet does not reconnect all at once; at most 600000. Default 5000.
    pub drain_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            server: ServerSection::default(),
            tls: TlsSection::default(),
            limits: LimitsSection::default(),
            store: StoreSection::default(),
            log: LogSection::default(),
            metrics: MetricsSection::default(),
            shutdown: ShutdownSection::default(),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            shards: 0,
            bind_address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            tls_port: 443,
            tls_fallback_port: 9443,
            plain_port: 80,
            plain_fallback_port: 8080,
            listen_backlog: 1024,
        }
    }
}

impl Default for TlsSection {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            names: Vec::new(),
            watch_interval_ms: 10_000,
        }
    }
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            bind_address: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port: 9464,
            bearer_token: None,
        }
    }
}

impl Default for ShutdownSection {
    fn default() -> Self {
        Self { drain_ms: 5_000 }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            login_timeout_ms: 10_000,
            max_body_before_login: 1024,
            max_body: 4096,
            default_heartbeat_secs: 10,
            heartbeat_factor: 2.3,
            outbound_queue_bytes: 65_536,
            store_queue_max_writes: 100_000,
            default_buff_in: 255,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            socket: None,
            binary: None,
            sync_interval_ms: 100,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
            security: "stderr".to_owned(),
        }
    }
}

impl Config {
    /// Reads and validates `path`, or validates the built-in defaults when there is no file.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            let config = Config::default();
            config.validate(None)?;
            return Ok(config);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `path` only names the origin in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate(Some(path))?;
        Ok(config)
    }

    /// The effective configuration as TOML, defaults filled in (for `portcullis check-config`).
    pub fn to_toml(&self) -> String {
        // Every field is a plain string, number, bool, path or table, which toml always encodes.
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }

    /// Checks every rule that the types alone do not express. `path` names the file in errors.
    pub fn validate(&self, path: Option<&Path>) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: String| {
            Err(ConfigError::Invalid {
                path: path.map(Path::to_owned),
                key,
                reason,
            })
        };

        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty".into());
        }

        let server = &self.server;
        if server.listen_backlog == 0 || server.listen_backlog > i32::MAX as u32 {
            return invalid(
                "server.listen_backlog",
                format!("must be between 1 and {}", i32::MAX),
            );
        }
        // A port may equal its own fallback (meaning: no fallback), but the TLS and plain
        // listeners can never share a port: the second bind would fail at start.
        let tls_ports = [server.tls_port, server.tls_fallback_port];
        let plain_ports = [server.plain_port, server.plain_fallback_port];
        if let Some(port) = tls_ports
            .iter()
            .find(|port| **port != 0 && plain_ports.contains(port))
        {
            return invalid(
                "server.tls_port",
                format!(
                    "port {port} is also a plain port; TLS and plain listeners need different ports"
                ),
            );
        }

        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return invalid(
                    "tls.key",
                    "is missing: `tls.cert` is set, so set `tls.key` too".into(),
                );
            }
            (None, Some(_)) => {
                return invalid(
                    "tls.cert",
                    "is missing: `tls.key` is set, so set `tls.cert` too".into(),
                );
            }
            _ => {}
        }
        for name in &self.tls.names {
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                return invalid(
                    "tls.names",
                    format!("entry {name:?} is neither a DNS name nor an IP address"),
                );
            }
        }

        let limits = &self.limits;
        if limits.login_timeout_ms == 0 {
            return invalid("limits.login_timeout_ms", "must be above 0".into());
        }
        if limits.max_body == 0 || limits.max_body > MAX_FRAME_BODY {
            return invalid(
                "limits.max_body",
                format!(
                    "is {} but must be between 1 and {MAX_FRAME_BODY} (a frame's length field is 16 bits)",
                    limits.max_body
                ),
            );
        }
        // A login body is a 32-character token, possibly followed by a template id.
        if limits.max_body_before_login < 32 || limits.max_body_before_login > limits.max_body {
            return invalid(
                "limits.max_body_before_login",
                format!(
                    "is {} but must be between 32 (a token) and limits.max_body ({})",
                    limits.max_body_before_login, limits.max_body
                ),
            );
        }
        if limits.default_heartbeat_secs == 0 {
            return invalid("limits.default_heartbeat_secs", "must be above 0".into());
        }
        if !limits.heartbeat_factor.is_finite()
            || limits.heartbeat_factor <= 1.0
            || limits.heartbeat_factor > 100.0
        {
            return invalid(
                "limits.heartbeat_factor",
                format!(
                    "is {} but must be above 1 (at or below 1 a device on time would be cut off) and at most 100",
                    limits.heartbeat_factor
                ),
            );
        }
        // A connection must be able to queue at least one largest frame (5-byte header + body).
        if limits.outbound_queue_bytes < limits.max_body + 5 {
            return invalid(
                "limits.outbound_queue_bytes",
                format!(
                    "must be at least limits.max_body + 5 ({}) to hold one frame",
                    limits.max_body + 5
                ),
            );
        }
        if limits.store_queue_max_writes == 0 {
            return invalid("limits.store_queue_max_writes", "must be above 0".into());
        }
        // Below 32 bytes a device could not receive even one pin write with a short value.
        if limits.default_buff_in < 32 {
            return invalid(
                "limits.default_buff_in",
                format!("is {} but must be at least 32", limits.default_buff_in),
            );
        }

        if self.store.sync_interval_ms == 0 || self.store.sync_interval_ms > 60_000 {
            return invalid(
                "store.sync_interval_ms",
                "must be between 1 and 60000".into(),
            );
        }
        let socket = self.store_socket_path();
        if socket.as_os_str().len() > MAX_UNIX_SOCKET_PATH {
            let key = if self.store.socket.is_some() {
                "store.socket"
            } else {
                "data_dir"
            };
            return invalid(
                key,
                format!(
                    "gives the store socket path {} which is longer than the {MAX_UNIX_SOCKET_PATH} bytes a Unix socket \
                     path may have; use a shorter path",
                    socket.display()
                ),
            );
        }

        if self.log.level.trim().is_empty() {
            return invalid("log.level", "must not be empty (try \"info\")".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return invalid(
                "log.level",
                format!(
                    "{:?} is not a level or filter directive: {e}",
                    self.log.level
                ),
            );
        }
        if self.tls.watch_interval_ms != 0 && self.tls.watch_interval_ms < 100 {
            return invalid(
                "tls.watch_interval_ms",
                "must be 0 (off) or at least 100".into(),
            );
        }
        if self.log.security.trim().is_empty() {
            return invalid("log.security", "must be \"stderr\" or a file path".into());
        }

        if let Some(token) = &self.metrics.bearer_token
            && (token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return invalid(
                "metrics.bearer_token",
                "must be at least 16 printable characters without spaces".into(),
            );
        }
        if self.metrics.enabled
            && self.metrics.port != 0
            && tls_ports
                .iter()
                .chain(&plain_ports)
                .any(|port| *port == self.metrics.port)
        {
            return invalid(
                "metrics.port",
                format!(
                    "port {} is also a device port; the metrics port must be separate",
                    self.metrics.port
                ),
            );
        }
        if self.shutdown.drain_ms > 600_000 {
            return invalid(
                "shutdown.drain_ms",
                "must be at most 600000 (ten minutes)".into(),
            );
        }
        Ok(())
    }

    /// Shards to run: `server.shards`, or one per available core when it is 0.
    pub fn effective_shards(&self) -> usize {
        match self.server.shards {
            0 => std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
            n => usize::from(n),
        }
    }

    /// The store's socket: `store.socket` when the store is managed externally, otherwise the
    /// socket of the child store in the data directory.
    pub fn store_socket_path(&self) -> PathBuf {
        self.store
            .socket
            .clone()
            .unwrap_or_else(|| self.data_dir.join("store.sock"))
    }

    /// Whether the gateway must start and supervise the store itself.
    pub fn store_is_child(&self) -> bool {
        self.store.socket.is_none()
    }

    /// Where the generated development certificate lives.
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    /// Where the child store keeps its database.
    pub fn store_data_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("portcullis.toml"))
    }

    fn invalid_key(text: &str) -> &'static str {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_match_the_documentation() {
        let config = Config::load(None).expect("defaults validate");
        assert_eq!(config, parse("").expect("empty file is all defaults"));
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(
            config.server.bind_address,
            "::".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            (
                config.server.tls_port,
                config.server.tls_fallback_port,
                config.server.plain_port
            ),
            (443, 9443, 80)
        );
        assert_eq!(
            (
                config.server.plain_fallback_port,
                config.server.listen_backlog
            ),
            (8080, 1024)
        );
        assert_eq!(config.limits.login_timeout_ms, 10_000);
        assert_eq!(
            (config.limits.max_body_before_login, config.limits.max_body),
            (1024, 4096)
        );
        assert_eq!(
            (
                config.limits.default_heartbeat_secs,
                config.limits.heartbeat_factor
            ),
            (10, 2.3)
        );
        assert_eq!(
            (
                config.limits.outbound_queue_bytes,
                config.limits.store_queue_max_writes
            ),
            (65_536, 100_000)
        );
        assert_eq!(config.limits.default_buff_in, 255);
        assert_eq!(config.store.sync_interval_ms, 100);
        assert_eq!(
            (config.log.level.as_str(), config.log.format),
            ("info", LogFormat::Text)
        );
        assert_eq!(config.log.security, "stderr");
        assert_eq!(config.tls.watch_interval_ms, 10_000);
        assert!(config.metrics.enabled);
        assert_eq!(
            (config.metrics.bind_address, config.metrics.port),
            ("127.0.0.1".parse::<IpAddr>().expect("ip"), 9464)
        );
        assert_eq!(config.metrics.bearer_token, None);
        assert_eq!(config.shutdown.drain_ms, 5_000);
        assert_eq!(
            config.store_socket_path(),
            PathBuf::from("./data/store.sock")
        );
        assert!(config.store_is_child());
        assert!(config.effective_shards() >= 1);
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("docs hold a toml block") + "```toml\n".len();
        let len = doc[start..].find("```").expect("toml block ends");
        let config = parse(&doc[start..start + len]).expect("documented example is valid");
        assert_eq!(
            config,
            Config::default(),
            "the documented values are the defaults"
        );
    }

    #[test]
    fn keys_are_read_from_every_section() {
        let config = parse(
            r#"
            data_dir = "/var/lib/portcullis"
            [server]
            shards = 3
            bind_address = "0.0.0.0"
            tls_port = 8443
            [tls]
            cert = "/etc/portcullis/fullchain.pem"
            key = "/etc/portcullis/privkey.pem"
            names = ["gw.example.com", "10.0.0.5"]
            [limits]
            max_body = 65535
            outbound_queue_bytes = 131072
            heartbeat_factor = 1.5
            [store]
            socket = "/run/portcullis/store.sock"
            [log]
            level = "debug,portcullis_gateway=trace"
            format = "json"
            "#,
        )
        .expect("valid");
        assert_eq!(config.effective_shards(), 3);
        assert_eq!(config.server.tls_port, 8443);
        assert_eq!(config.tls.names.len(), 2);
        assert_eq!(config.limits.max_body, 65_535);
        assert_eq!(
            config.store_socket_path(),
            PathBuf::from("/run/portcullis/store.sock")
        );
        assert!(!config.store_is_child());
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(parse(&config.to_toml()).expect("round trip"), config);
    }

    #[test]
    fn a_typo_is_rejected_with_its_name_and_line() {
        let err = parse("[limits]\nmax_body = 4096\nlogin_timout_ms = 5\n").expect_err("typo");
        let message = err.to_string();
        assert!(message.contains("login_timout_ms"), "{message}");
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("portcullis.toml"), "{message}");

        let err = parse("[sever]\nshards = 1\n").expect_err("unknown section");
        assert!(err.to_string().contains("sever"), "{err}");
    }

    #[test]
    fn wrong_types_are_rejected() {
        assert!(matches!(
            parse("[server]\ntls_port = 70000\n"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            parse("[server]\nbind_address = \"localhost\"\n"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            parse("[log]\nformat = \"xml\"\n"),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn invalid_values_are_rejected_naming_the_key() {
        assert_eq!(invalid_key("[tls]\ncert = \"c.pem\"\n"), "tls.key");
        assert_eq!(invalid_key("[tls]\nkey = \"k.pem\"\n"), "tls.cert");
        assert_eq!(invalid_key("[tls]\nnames = [\"bad name!\"]\n"), "tls.names");
        assert_eq!(
            invalid_key("[limits]\nmax_body = 65536\n"),
            "limits.max_body"
        );
        assert_eq!(
            invalid_key("[limits]\nheartbeat_factor = 1.0\n"),
            "limits.heartbeat_factor"
        );
        assert_eq!(
            invalid_key("[limits]\nheartbeat_factor = 0.5\n"),
            "limits.heartbeat_factor"
        );
        assert_eq!(
            invalid_key("[limits]\nheartbeat_factor = nan\n"),
            "limits.heartbeat_factor"
        );
        assert_eq!(
            invalid_key("[limits]\nmax_body_before_login = 8192\n"),
            "limits.max_body_before_login"
        );
        assert_eq!(
            invalid_key("[limits]\noutbound_queue_bytes = 100\n"),
            "limits.outbound_queue_bytes"
        );
        assert_eq!(
            invalid_key("[limits]\ndefault_buff_in = 4\n"),
            "limits.default_buff_in"
        );
        assert_eq!(
            invalid_key("[server]\nplain_port = 443\n"),
            "server.tls_port"
        );
        assert_eq!(
            invalid_key("[server]\nlisten_backlog = 0\n"),
            "server.listen_backlog"
        );
        assert_eq!(
            invalid_key("[store]\nsync_interval_ms = 0\n"),
            "store.sync_interval_ms"
        );
        assert_eq!(
            invalid_key("[log]\nlevel = \"portcullis=loud\"\n"),
            "log.level"
        );
        assert_eq!(invalid_key("[log]\nlevel = \" \"\n"), "log.level");
        assert_eq!(invalid_key("[log]\nsecurity = \"\"\n"), "log.security");
        assert_eq!(
            invalid_key("[tls]\nwatch_interval_ms = 5\n"),
            "tls.watch_interval_ms"
        );
        assert_eq!(
            invalid_key("[metrics]\nbearer_token = \"short\"\n"),
            "metrics.bearer_token"
        );
        assert_eq!(invalid_key("[metrics]\nport = 8080\n"), "metrics.port");
        assert_eq!(
            invalid_key("[shutdown]\ndrain_ms = 600001\n"),
            "shutdown.drain_ms"
        );
        let long = format!("data_dir = \"/{}\"\n", "d".repeat(120));
        assert_eq!(invalid_key(&long), "data_dir");

        let message = parse("[limits]\nmax_body = 70000\n")
            .expect_err("too big")
            .to_string();
        assert!(
            message.contains("limits.max_body") && message.contains("65535"),
            "{message}"
        );
        assert!(message.contains("portcullis.toml"), "{message}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err =
            Config::load(Some(Path::new("/nonexistent/portcullis.toml"))).expect_err("missing");
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(
            err.to_string().contains("/nonexistent/portcullis.toml"),
            "{err}"
        );
    }
}
