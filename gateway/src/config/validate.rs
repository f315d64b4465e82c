//! The rules of the configuration that its types alone do not express: value ranges, ports that
//! must differ, files that must go together, and which store settings exclude each other. Every
//! failure names the key and the rule, so `portcullis check-config` can say what to change.

use super::*;
use crate::protocols::blynk::quota::MAX_QUOTA;
use portcullis_protocol::store::option_ranges;
use portcullis_store_client::endpoint::{CERT_HINT, server_name, split_host_port};

/// Most password workers `app.password_workers` may ask for: each check holds ~19 MiB while it
/// runs, and more threads than cores only queue in the kernel instead of in the pool.
const MAX_PASSWORD_WORKERS: u16 = 64;

impl Config {
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
        if let Err(why) = server.node_name.check() {
            return invalid("server.node_name", why.to_string());
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
        if limits.preauth_buffer_bytes < limits.max_body_before_login + 5 {
            return invalid(
                "limits.preauth_buffer_bytes",
                format!(
                    "must be at least limits.max_body_before_login + 5 ({}) to hold a login frame",
                    limits.max_body_before_login + 5
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
        if limits.max_heartbeat_secs < limits.default_heartbeat_secs {
            return invalid(
                "limits.max_heartbeat_secs",
                format!(
                    "is {} but must be at least limits.default_heartbeat_secs ({})",
                    limits.max_heartbeat_secs, limits.default_heartbeat_secs
                ),
            );
        }
        if limits.device_messages_per_sec > MAX_QUOTA {
            return invalid(
                "limits.device_messages_per_sec",
                format!(
                    "is {} but must be at most {MAX_QUOTA} (0 turns the quota off)",
                    limits.device_messages_per_sec
                ),
            );
        }
        // With the quota on, a bucket of 0 would drop every frame, the login's followers included.
        if limits.device_messages_per_sec != 0
            && !(1..=MAX_QUOTA).contains(&limits.device_message_burst)
        {
            return invalid(
                "limits.device_message_burst",
                format!(
                    "is {} but must be between 1 and {MAX_QUOTA} while limits.device_messages_per_sec is on",
                    limits.device_message_burst
                ),
            );
        }
        if !(1..=1_048_576).contains(&limits.output_budget_mib) {
            return invalid(
                "limits.output_budget_mib",
                format!(
                    "is {} but must be between 1 and 1048576",
                    limits.output_budget_mib
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
        if !(4096..=16 << 20).contains(&limits.socket_send_buffer_bytes) {
            return invalid(
                "limits.socket_send_buffer_bytes",
                format!(
                    "is {} but must be between 4096 and 16777216",
                    limits.socket_send_buffer_bytes
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

        self.admission
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                path: path.map(Path::to_owned),
                key,
                reason,
            })?;

        for (key, value, range) in [
            (
                "store.sync_interval_ms",
                self.store.sync_interval_ms,
                option_ranges::SYNC_INTERVAL_MS,
            ),
            (
                "store.commit_window_us",
                self.store.commit_window_us,
                option_ranges::COMMIT_WINDOW_US,
            ),
            (
                "store.block_cache_mib",
                self.store.block_cache_mib,
                option_ranges::BLOCK_CACHE_MIB,
            ),
            (
                "store.history_retention_days",
                self.store.history_retention_days,
                option_ranges::HISTORY_RETENTION_DAYS,
            ),
        ] {
            if !range.contains(&value) {
                return invalid(
                    key,
                    format!("must be between {} and {}", range.start(), range.end()),
                );
            }
        }
        let days_range = option_ranges::HISTORY_RETENTION_DAYS;
        for (template, days) in &self.store.history_retention_by_template {
            if template.is_empty() || template.contains('=') || !days_range.contains(days) {
                return invalid(
                    "store.history_retention_by_template",
                    format!(
                        "{template:?} = {days}: the template must be non-empty without '=', the days between {} and {}",
                        days_range.start(),
                        days_range.end()
                    ),
                );
            }
        }
        validate_remote_store(&self.store).or_else(|(key, reason)| invalid(key, reason))?;
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
        let app = &self.app;
        let positive: [(&'static str, u64); 7] = [
            ("app.password_workers", app.password_workers.into()),
            ("app.outbound_queue_bytes", app.outbound_queue_bytes.into()),
            (
                "app.socket_send_buffer_bytes",
                app.socket_send_buffer_bytes.into(),
            ),
            ("app.max_subscriptions", app.max_subscriptions.into()),
            ("app.idle_timeout_secs", app.idle_timeout_secs),
            (
                "app.login_block_after_failures",
                app.login_block_after_failures.into(),
            ),
            ("app.login_block_secs", app.login_block_secs),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return invalid(key, "must be at least 1".into());
        }
        if app.password_workers > MAX_PASSWORD_WORKERS {
            return invalid(
                "app.password_workers",
                format!("must be at most {MAX_PASSWORD_WORKERS} (each check holds ~19 MiB)"),
            );
        }
        if app.idle_timeout_secs > 86_400 || app.login_block_secs > 86_400 {
            let key = if app.idle_timeout_secs > 86_400 {
                "app.idle_timeout_secs"
            } else {
                "app.login_block_secs"
            };
            return invalid(key, "must be at most 86400 (a day)".into());
        }
        let accounts = &self.accounts;
        if !(60..=31_536_000).contains(&accounts.session_ttl_secs) {
            return invalid(
                "accounts.session_ttl_secs",
                "must be between 60 (a minute) and 31536000 (a year)".into(),
            );
        }
        if let Some(url) = &accounts.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return invalid(
                "accounts.public_url",
                format!("{url:?} must start with https:// (or http:// behind a proxy)"),
            );
        }
        if let Err(e) = self.mail.validate() {
            return invalid("mail", e.to_string());
        }
        if portcullis_operations::users::check_email(&accounts.first_admin_email).is_err() {
            return invalid(
                "accounts.first_admin_email",
                format!("{:?} is not an email address", accounts.first_admin_email),
            );
        }
        Ok(())
    }
}

impl AdmissionSection {
    /// Checks the section; on failure names the key and the rule.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive: [(&'static str, u64); 12] = [
            (
                "admission.max_connections_per_ip",
                self.max_connections_per_ip.into(),
            ),
            ("admission.accept_rate", self.accept_rate.into()),
            ("admission.accept_burst", self.accept_burst.into()),
            (
                "admission.accept_rate_per_ip",
                self.accept_rate_per_ip.into(),
            ),
            (
                "admission.accept_burst_per_ip",
                self.accept_burst_per_ip.into(),
            ),
            ("admission.max_tracked_ips", self.max_tracked_ips.into()),
            (
                "admission.max_unauthenticated",
                self.max_unauthenticated.into(),
            ),
            (
                "admission.login_backoff_initial_ms",
                self.login_backoff_initial_ms,
            ),
            ("admission.login_backoff_max_ms", self.login_backoff_max_ms),
            (
                "admission.login_block_after_failures",
                self.login_block_after_failures.into(),
            ),
            ("admission.login_block_secs", self.login_block_secs),
            (
                "admission.login_failure_forget_secs",
                self.login_failure_forget_secs,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err((key, "must be above 0".into()));
        }
        if self.login_backoff_max_ms < self.login_backoff_initial_ms {
            return Err((
                "admission.login_backoff_max_ms",
                format!(
                    "is {} but must be at least admission.login_backoff_initial_ms ({})",
                    self.login_backoff_max_ms, self.login_backoff_initial_ms
                ),
            ));
        }
        if self.login_block_after_failures < self.login_free_failures {
            return Err((
                "admission.login_block_after_failures",
                format!(
                    "is {} but must be at least admission.login_free_failures ({})",
                    self.login_block_after_failures, self.login_free_failures
                ),
            ));
        }
        // Durations in milliseconds and seconds must fit an Instant offset comfortably.
        if self.login_block_secs > MAX_PENALTY_SECS
            || self.login_failure_forget_secs > MAX_PENALTY_SECS
            || self.login_backoff_max_ms / 1000 > MAX_PENALTY_SECS
        {
            return Err((
                "admission.login_block_secs",
                format!(
                    "login back-off, block and forget periods must be at most {MAX_PENALTY_SECS} s"
                ),
            ));
        }
        Ok(())
    }
}

/// Checks the `store.remote*` keys; on failure names the key and the rule.
fn validate_remote_store(section: &StoreSection) -> Result<(), (&'static str, String)> {
    let files = [
        ("store.remote_ca_file", &section.remote_ca_file),
        ("store.remote_cert_file", &section.remote_cert_file),
        ("store.remote_key_file", &section.remote_key_file),
    ];
    let Some(remote) = &section.remote else {
        for (key, value) in files {
            if value.is_some() {
                return Err((key, "is only used with store.remote; set that too".into()));
            }
        }
        if section.remote_server_name.is_some() {
            return Err((
                "store.remote_server_name",
                "is only used with store.remote; set that too".into(),
            ));
        }
        return Ok(());
    };
    split_host_port(remote).map_err(|why| ("store.remote", why.to_string()))?;
    for (key, value) in files {
        match value {
            None => {
                return Err((
                    key,
                    format!("is required with store.remote (mutual TLS only); {CERT_HINT}"),
                ));
            }
            Some(path) if path.as_os_str().is_empty() => {
                return Err((key, "must not be empty".into()));
            }
            Some(_) => {}
        }
    }
    // The remote store is not ours to start or configure: keys for a local store would be
    // silently ignored, so they are refused.
    for (key, set) in [
        ("store.socket", section.socket.is_some()),
        ("store.binary", section.binary.is_some()),
        ("store.key_file", section.key_file.is_some()),
    ] {
        if set {
            return Err((
                key,
                "cannot be combined with store.remote (that store is configured on its own host)"
                    .into(),
            ));
        }
    }
    server_name(remote, section.remote_server_name.as_deref())
        .map_err(|why| ("store.remote_server_name", why.to_string()))?;
    Ok(())
}
