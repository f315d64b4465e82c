//! The gateway's configuration: one TOML file, every key optional with a documented default,
//! unknown keys rejected at every level, and every value checked once by [`Config::validate`]
//! before anything starts. `docs/configuration.md` is the user-facing reference and must list the
//! same keys and defaults as the doc comments here. `limits.rs` projects it onto what the shards
//! and guards enforce.

use portcullis_protocol::store::NodeName;
use portcullis_store_client::{EndpointSpec, RemoteSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Largest body a Blynk frame can carry: its length field is 16 bits.
pub const MAX_FRAME_BODY: u32 = portcullis_protocol::frame::MAX_WIRE_BODY_LEN as u32;

/// Longest back-off, block or forget period for failed logins: one week.
const MAX_PENALTY_SECS: u64 = 7 * 24 * 3600;

/// `server.node_name` when none is set: one gateway on its store needs no name of its own.
pub const DEFAULT_NODE_NAME: NodeName = NodeName::from_static("gateway");

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
    pub admission: AdmissionSection,
    pub store: StoreSection,
    pub log: LogSection,
    pub metrics: MetricsSection,
    pub shutdown: ShutdownSection,
    pub app: AppSection,
    pub accounts: AccountsSection,
    /// `[mail]`: where the mails of sign-up, invitations and password resets go (the default
    /// writes them to `<data_dir>/outbox/` as `.eml` files; `transport = "smtp"` sends them).
    pub mail: portcullis_mail::MailConfig,
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
    /// This gateway's name among the gateways sharing one store: its links name it in their
    /// hello, and its device sessions carry it, so a restart ends only this node's sessions.
    /// 1 to 32 ASCII letters, digits, `.`, `_` or `-`; give each gateway of a shared store its
    /// own. Default `"gateway"`.
    pub node_name: NodeName,
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
    /// Bytes buffered from a peer whose login has not completed (its login frame and what it
    /// sends behind it while the store checks the token); more closes the connection. At least
    /// `max_body_before_login + 5`. Default 4116 (four frames of the pre-login maximum).
    pub preauth_buffer_bytes: u32,
    /// Largest frame body accepted after login, in bytes; at most 65535. Default 4096.
    pub max_body: u32,
    /// Heartbeat interval assumed for a device whose info message announced none. Default 10.
    pub default_heartbeat_secs: u16,
    /// A device silent for `ceil(heartbeat_factor × h-beat)` seconds is disconnected; must be above
    /// 1. Default 2.3.
    pub heartbeat_factor: f64,
    /// Largest heartbeat a device's info message may announce; a larger `h-beat` is held to this,
    /// so a device that vanished behind a NAT frees its slot within `heartbeat_factor ×` this
    /// many seconds rather than up to 42 hours. 1 ..= 65535 and at least `default_heartbeat_secs`.
    /// Default 3600 (the top of the device library's range).
    pub max_heartbeat_secs: u16,
    /// Frames per second one logged-in device connection may send (the reference server's
    /// `user.message.quota.limit`); frames beyond it are dropped unprocessed, counted, and
    /// answered QUOTA_LIMIT at most once a minute. 0 turns the quota off. At most 1000000.
    /// Default 100.
    pub device_messages_per_sec: u32,
    /// Frames a device may send at once above `device_messages_per_sec` (token bucket size). At
    /// least 1 when the quota is on, at most 1000000. Default 200.
    pub device_message_burst: u32,
    /// Bytes queued towards one connection (each queued frame counted with 40 bytes of overhead)
    /// before it is considered a slow reader and closed. Default 65536.
    pub outbound_queue_bytes: u32,
    /// Kernel send buffer (`SO_SNDBUF`) of each connection, in bytes; the kernel doubles it. A
    /// fixed size instead of autotuning keeps a peer that never reads from parking megabytes of
    /// answers in the kernel. 4096 ..= 16777216. Default 32768.
    pub socket_send_buffer_bytes: u32,
    /// Memory, in MiB, that the outbound queues of all connections together may hold; while a
    /// shard's share (this divided by the shards) is used up, it refuses new connections, so
    /// the sessions it has keep their memory. 1 ..= 1048576. Default 512.
    pub output_budget_mib: u32,
    /// Pin writes a shard may hold unacknowledged by the store (queued in the shard, or queued or
    /// in flight on its store link) while the store is slow or restarting; beyond that, the
    /// oldest writes not yet sent are dropped and counted. Default 100000.
    pub store_queue_max_writes: u32,
    /// Largest message (header included) sent to a device that announced no `buff-in`; the stock
    /// C++ library reads into a 256-byte buffer. Default 255.
    pub default_buff_in: u16,
}

/// `[admission]`: who may open connections and try logins, per source and in total. A source is
/// an IPv4 address or an IPv6 /64 prefix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionSection {
    /// Connections one source may have open at once. Default 1000.
    pub max_connections_per_ip: u32,
    /// New connections per second the whole gateway accepts (token bucket rate). Default 5000.
    pub accept_rate: u32,
    /// Burst above `accept_rate` (token bucket size). Default 10000.
    pub accept_burst: u32,
    /// New connections per second one source may open. Default 100.
    pub accept_rate_per_ip: u32,
    /// Burst above `accept_rate_per_ip`. Default 200.
    pub accept_burst_per_ip: u32,
    /// Sources tracked at once by the connection and login tables (bounds their memory). Default
    /// 100000.
    pub max_tracked_ips: u32,
    /// Connections that have not logged in yet, gateway-wide; beyond it new connections are
    /// refused at accept, so pre-login state (TLS handshakes, buffered login bytes) cannot starve
    /// the sessions that did log in. Default 20000.
    pub max_unauthenticated: u32,
    /// Failed device logins (unknown or malformed token) a source may have before back-off starts.
    /// Default 5.
    pub login_free_failures: u32,
    /// Wait imposed after the first failure beyond the free ones, in milliseconds; it doubles with
    /// each further failure. Default 1000.
    pub login_backoff_initial_ms: u64,
    /// Longest back-off, in milliseconds. Default 60000.
    pub login_backoff_max_ms: u64,
    /// Failures after which every login from the source is refused for `login_block_secs`.
    /// Default 20.
    pub login_block_after_failures: u32,
    /// How long a blocked source stays blocked, in seconds. Default 600.
    pub login_block_secs: u64,
    /// A source with no failed login for this many seconds starts from zero. Default 600.
    pub login_failure_forget_secs: u64,
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
    /// How long the child store's group committer waits after the first write of a group for more
    /// writes to join the same batch and WAL sync, in microseconds (0 to 10000). 0 groups whatever
    /// arrived while the previous group was committing. Default 0.
    pub commit_window_us: u64,
    /// Size of the child store's RocksDB block cache in MiB (1 to 65536). Default 64.
    pub block_cache_mib: u64,
    /// Days of pin history the child store keeps (0 keeps none, at most 36500). Default 30.
    pub history_retention_days: u64,
    /// Per-template history retention in days, overriding `history_retention_days` for the devices
    /// of that template: `{ TMPL123 = 7 }`. Default: none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub history_retention_by_template: BTreeMap<String, u64>,
    /// Key file that turns on encryption at rest in the child store (lines `ID HEX`, mode 0600;
    /// made with `portcullis-store rotate-key --key-file FILE`). Must be set when the store's
    /// data directory is created and kept from then on. Default: none (values stored in clear).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// `HOST:PORT` of a store on another host, reached over mutual TLS (the store's
    /// `--remote-listen`). Requires the three `remote_*_file` keys; excludes `socket`, `binary`
    /// and `key_file`. Resolved once at start. Default: none (a local store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// CA certificate (PEM) that signed the remote store's certificate (`gen-certs`: `ca.pem`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_ca_file: Option<PathBuf>,
    /// This gateway's client certificate (PEM) for the remote store (`gateway-NAME.pem`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_cert_file: Option<PathBuf>,
    /// Private key of `remote_cert_file` (`gateway-NAME.key`, keep it mode 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_key_file: Option<PathBuf>,
    /// Name the remote store's certificate must carry (its `--store-name`). Default: the host
    /// part of `remote`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_server_name: Option<String>,
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
    /// created with mode 0600, reopened on SIGHUP). Default `"stderr"`.
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

/// `[app]`: the app WebSocket API at `/api/ws` (apps and consoles log in with email and the
/// Blynk client hash of their password, then subscribe to devices of their organization).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppSection {
    /// Threads that check passwords (argon2id, ~19 MiB and tens of ms each). Default 1: on a
    /// small machine a login flood then costs one core at most, never the shards'.
    pub password_workers: u16,
    /// Devices one app connection may subscribe to. Default 10000.
    pub max_subscriptions: u32,
    /// Bytes of events that may wait for one app before it is closed as a slow reader. Larger
    /// than a device's `limits.outbound_queue_bytes`: an app watching thousands of devices gets
    /// a loop turn's events in one burst. Default 4194304 (4 MiB).
    pub outbound_queue_bytes: u32,
    /// SO_SNDBUF of an app connection once its WebSocket opens (the kernel doubles it); devices
    /// keep the small `limits.socket_send_buffer_bytes`. Default 1048576.
    pub socket_send_buffer_bytes: u32,
    /// A logged-in app silent for this long (no message, no WebSocket ping) is closed. Default
    /// 120.
    pub idle_timeout_secs: u64,
    /// Failed app logins from one address after which it is refused for `login_block_secs`.
    /// Default 5.
    pub login_block_after_failures: u32,
    /// How long such an address is refused. Default 600 (ten minutes).
    pub login_block_secs: u64,
}

/// `[accounts]`: the REST management API (`/api/v1`), sign-up, sessions and the links mailed
/// for verification, invitations and password resets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsSection {
    /// Whether anyone may sign up (each sign-up gets an organization of its own below the
    /// root). Default false: accounts come from invitations and the admin CLI.
    pub signup: bool,
    /// The address people reach the gateway at, for the links in mails (e.g.
    /// `https://iot.example.com`). Default: `https://localhost:<tls port>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// How long a login session lasts, in seconds (60 to 31536000). Default 604800 (a week).
    pub session_ttl_secs: u64,
    /// Whether the plain port serves the REST API too (bearer tokens in the clear: only behind
    /// a TLS-terminating proxy). Default false.
    pub rest_on_plain_port: bool,
    /// The email of the Admin account created on the first start of an empty data directory
    /// (its one-time password is printed once). Default `"admin@localhost.localdomain"`.
    pub first_admin_email: String,
}

impl Default for AccountsSection {
    fn default() -> Self {
        Self {
            signup: false,
            public_url: None,
            session_ttl_secs: 7 * 24 * 3600,
            rest_on_plain_port: false,
            first_admin_email: "admin@localhost.localdomain".to_owned(),
        }
    }
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
            admission: AdmissionSection::default(),
            store: StoreSection::default(),
            log: LogSection::default(),
            metrics: MetricsSection::default(),
            shutdown: ShutdownSection::default(),
            app: AppSection::default(),
            accounts: AccountsSection::default(),
            mail: portcullis_mail::MailConfig::default(),
        }
    }
}

impl Default for AppSection {
    fn default() -> Self {
        Self {
            password_workers: 1,
            max_subscriptions: 10_000,
            outbound_queue_bytes: 4 * 1024 * 1024,
            socket_send_buffer_bytes: 1024 * 1024,
            idle_timeout_secs: 120,
            login_block_after_failures: 5,
            login_block_secs: 600,
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
            node_name: DEFAULT_NODE_NAME,
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
            preauth_buffer_bytes: 4116,
            max_body: 4096,
            default_heartbeat_secs: 10,
            heartbeat_factor: 2.3,
            max_heartbeat_secs: 3600,
            device_messages_per_sec: 100,
            device_message_burst: 200,
            outbound_queue_bytes: 65_536,
            socket_send_buffer_bytes: 32_768,
            output_budget_mib: 512,
            store_queue_max_writes: 100_000,
            default_buff_in: 255,
        }
    }
}

impl Default for AdmissionSection {
    fn default() -> Self {
        Self {
            max_connections_per_ip: 1000,
            accept_rate: 5000,
            accept_burst: 10_000,
            accept_rate_per_ip: 100,
            accept_burst_per_ip: 200,
            max_tracked_ips: 100_000,
            max_unauthenticated: 20_000,
            login_free_failures: 5,
            login_backoff_initial_ms: 1000,
            login_backoff_max_ms: 60_000,
            login_block_after_failures: 20,
            login_block_secs: 600,
            login_failure_forget_secs: 600,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            socket: None,
            binary: None,
            sync_interval_ms: 100,
            commit_window_us: 0,
            block_cache_mib: 64,
            history_retention_days: 30,
            history_retention_by_template: BTreeMap::new(),
            key_file: None,
            remote: None,
            remote_ca_file: None,
            remote_cert_file: None,
            remote_key_file: None,
            remote_server_name: None,
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

    /// Where the store is, for the store client: the remote store of `store.remote*` when it is
    /// configured (validation makes sure its files are all set), else the store socket.
    pub fn store_endpoint_spec(&self) -> EndpointSpec {
        let store = &self.store;
        match (
            &store.remote,
            &store.remote_ca_file,
            &store.remote_cert_file,
            &store.remote_key_file,
        ) {
            (Some(addr), Some(ca_file), Some(cert_file), Some(key_file)) => {
                EndpointSpec::Remote(RemoteSpec {
                    addr: addr.clone(),
                    server_name: store.remote_server_name.clone(),
                    ca_file: ca_file.clone(),
                    cert_file: cert_file.clone(),
                    key_file: key_file.clone(),
                })
            }
            _ => EndpointSpec::Unix(self.store_socket_path()),
        }
    }

    /// Whether the gateway must start and supervise the store itself (neither an external
    /// socket nor a remote store is configured).
    pub fn store_is_child(&self) -> bool {
        self.store.socket.is_none() && self.store.remote.is_none()
    }

    /// Where the generated development certificate lives.
    /// Where the links in mails point: `accounts.public_url`, or the TLS port on localhost.
    pub fn public_url(&self, tls_port: u16) -> String {
        self.accounts
            .public_url
            .clone()
            .unwrap_or_else(|| format!("https://localhost:{tls_port}"))
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    /// Command-line options that carry the `[store]` settings to a child `portcullis-store`.
    pub fn store_child_args(&self) -> Vec<String> {
        let store = &self.store;
        let mut args = vec![
            "--sync-interval-ms".to_owned(),
            store.sync_interval_ms.to_string(),
            "--commit-window-us".to_owned(),
            store.commit_window_us.to_string(),
            "--block-cache-mib".to_owned(),
            store.block_cache_mib.to_string(),
            "--history-retention-days".to_owned(),
            store.history_retention_days.to_string(),
        ];
        for (template, days) in &store.history_retention_by_template {
            args.push("--template-retention".to_owned());
            args.push(format!("{template}={days}"));
        }
        if let Some(key_file) = &store.key_file {
            args.push("--key-file".to_owned());
            args.push(key_file.display().to_string());
        }
        args
    }

    /// Where the child store keeps its database.
    pub fn store_data_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
}

pub mod limits;
mod validate;

#[cfg(test)]
mod tests;
