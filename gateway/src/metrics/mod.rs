//! Operational metrics: every metric name the gateway exposes is in [`names`], the per-shard
//! counters are in [`shard`] (plain atomics the shard bumps without locks), process-wide state
//! (certificate expiry, reloads, readiness) is in [`GlobalMetrics`], and [`GatewayMetrics`] turns
//! all of it into the Prometheus text format with `prometheus-client` when scraped. [`http`]
//! serves it, with `/healthz` and `/readyz`, on its own loopback port.

pub mod http;
pub mod shard;
pub mod store;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use protocol_names::command_label;
use shard::{ConnState, Counter, LoginResult, Rejection, ShardMetrics, TlsVersion, Transport};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every metric name, in one place. Counters get `_total` appended on the wire.
pub mod names {
    pub const CONNECTIONS: &str = "portcullis_connections";
    pub const LOGINS: &str = "portcullis_device_logins";
    pub const LOGIN_THROTTLE_BLOCKS: &str = "portcullis_login_throttle_blocks";
    pub const MESSAGES_RECEIVED: &str = "portcullis_messages_received";
    pub const MESSAGES_SENT: &str = "portcullis_messages_sent";
    pub const BYTES_RECEIVED: &str = "portcullis_bytes_received";
    pub const BYTES_SENT: &str = "portcullis_bytes_sent";
    pub const TELEMETRY_QUEUE: &str = "portcullis_telemetry_queue_writes";
    pub const TELEMETRY_DROPPED: &str = "portcullis_telemetry_dropped";
    pub const FRAMES_OVER_QUOTA: &str = "portcullis_device_frames_over_quota";
    pub const TEMPLATE_MISMATCHES: &str = "portcullis_device_template_mismatches";
    pub const SESSIONS_REVOKED: &str = "portcullis_sessions_revoked";
    pub const REVOCATIONS_RECEIVED: &str = "portcullis_revocations_received";
    pub const REVOCATION_GAPS: &str = "portcullis_revocation_feed_gaps";
    pub const REVOCATION_FEED_UP: &str = "portcullis_revocation_feed_up";
    pub const APP_LOGINS_OK: &str = "portcullis_app_logins_ok";
    pub const APP_LOGINS_REFUSED: &str = "portcullis_app_logins_refused";
    pub const APP_EVENTS_SENT: &str = "portcullis_app_events_sent";
    pub const APP_EVENTS_DROPPED: &str = "portcullis_app_events_dropped";
    pub const PINS_STORED: &str = "portcullis_pins_stored";
    pub const STORE_CALLS_REFUSED: &str = "portcullis_store_calls_refused";
    pub const STORE_IN_FLIGHT: &str = "portcullis_store_in_flight_requests";
    pub const STORE_LINK_UP: &str = "portcullis_store_link_up";
    pub const STORE_LATENCY: &str = "portcullis_store_request_duration_seconds";
    pub const STORE_WRITE_BATCH: &str = "portcullis_store_write_batch_pins";
    pub const TLS_HANDSHAKES: &str = "portcullis_tls_handshakes";
    pub const REJECTED: &str = "portcullis_connections_rejected";
    pub const CERT_EXPIRY_DAYS: &str = "portcullis_tls_certificate_expiry_days";
    pub const CERT_RELOADS: &str = "portcullis_tls_certificate_reloads";
    pub const CONFIG_RELOADS: &str = "portcullis_config_reloads";
    pub const LOOP_TURN: &str = "portcullis_shard_loop_turn_seconds";
    pub const DRAINING: &str = "portcullis_draining";
    pub const STORE_UP: &str = "portcullis_store_up";
    pub const STORE_GROUPS: &str = "portcullis_store_write_groups";
    pub const STORE_GROUP_REQUESTS: &str = "portcullis_store_write_group_requests";
    pub const STORE_FSYNC: &str = "portcullis_store_wal_fsync_seconds";
}

/// Process-wide state that is not a shard's: written by the reload and signal paths.
#[derive(Debug, Default)]
pub struct GlobalMetrics {
    /// `notAfter` of the served leaf certificate, seconds since the Unix epoch (0 = unknown).
    pub cert_not_after: AtomicI64,
    pub cert_reloads_ok: AtomicU64,
    pub cert_reloads_refused: AtomicU64,
    pub config_reloads_ok: AtomicU64,
    pub config_reloads_refused: AtomicU64,
    /// Set once every listener is bound and the shards run.
    pub listeners_bound: AtomicBool,
    /// Set when shutdown starts: the instance stops being ready.
    pub draining: AtomicBool,
    /// Revocations the feed poller received, by [`RevokedKind`].
    pub revocations_received: [AtomicU64; 3],
    /// Answers of the revocation feed saying entries were already dropped (`gap`).
    pub revocation_gaps: AtomicU64,
    /// Set while the revocation feed poller's last poll succeeded.
    pub revocation_feed_up: AtomicBool,
}

/// The kinds of revocation, for the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedKind {
    Device = 0,
    User = 1,
    Session = 2,
}

impl RevokedKind {
    pub const ALL: [RevokedKind; 3] =
        [RevokedKind::Device, RevokedKind::User, RevokedKind::Session];

    pub fn of(revoked: &portcullis_protocol::store::Revoked) -> RevokedKind {
        use portcullis_protocol::store::Revoked;
        match revoked {
            Revoked::Device(_) => RevokedKind::Device,
            Revoked::User(_) => RevokedKind::User,
            Revoked::Session(_) => RevokedKind::Session,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RevokedKind::Device => "device",
            RevokedKind::User => "user",
            RevokedKind::Session => "session",
        }
    }
}

impl GlobalMetrics {
    pub fn certificate_days_left(&self, now: SystemTime) -> Option<f64> {
        let not_after = self.cert_not_after.load(Ordering::Relaxed);
        if not_after == 0 {
            return None;
        }
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        Some((not_after - now) as f64 / 86_400.0)
    }
}

/// Everything that is scraped: the shards' counters and the global state.
#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    pub global: Arc<GlobalMetrics>,
    pub shards: Vec<Arc<ShardMetrics>>,
    /// Where the store's own counters come from; `None` leaves them out (unit tests).
    pub store: Option<Arc<store::StoreStatsSource>>,
}

/// Why the gateway is not ready, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Starting,
    Draining,
    StoreUnreachable { shards_down: usize },
}

impl GatewayMetrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::new();
        // Writing into a String cannot fail; an encoder error would be a bug in a label.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }

    pub fn readiness(&self) -> Readiness {
        if self.global.draining.load(Ordering::Relaxed) {
            return Readiness::Draining;
        }
        if !self.global.listeners_bound.load(Ordering::Relaxed) {
            return Readiness::Starting;
        }
        let shards_down = self
            .shards
            .iter()
            .filter(|m| m.store_link_up.load(Ordering::Relaxed) == 0)
            .count();
        if shards_down > 0 {
            return Readiness::StoreUnreachable { shards_down };
        }
        Readiness::Ready
    }

    /// Sum of a value over every shard.
    pub fn sum(&self, pick: impl Fn(&ShardMetrics) -> u64) -> u64 {
        self.shards.iter().map(|m| pick(m)).sum()
    }

    /// Sum of one counter over every shard.
    pub fn total(&self, pick: impl Fn(&ShardMetrics) -> &Counter) -> u64 {
        self.sum(|m| pick(m).get())
    }
}

fn counter_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, u64, u64>(&value, None)?;
    }
    Ok(())
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    metric.encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, f64)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

fn histogram_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    shards: &[Arc<ShardMetrics>],
    pick: impl Fn(&ShardMetrics) -> &shard::AtomicHistogram,
    scale: f64,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for m in shards {
        let (buckets, sum, count) = pick(m).snapshot(scale);
        let shard = m.index.to_string();
        metric
            .encode_family(&[("shard", shard.as_str())])?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

fn per_shard(
    shards: &[Arc<ShardMetrics>],
    pick: impl Fn(&ShardMetrics) -> u64,
) -> Vec<([(&'static str, String); 1], f64)> {
    shards
        .iter()
        .map(|m| ([("shard", m.index.to_string())], pick(m) as f64))
        .collect()
}

impl Collector for GatewayMetrics {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        self.encode_connections(&mut e)?;
        self.encode_devices(&mut e)?;
        self.encode_apps(&mut e)?;
        self.encode_store_link(&mut e)?;
        self.encode_tls(&mut e)?;
        self.encode_process(&mut e)?;
        match &self.store {
            Some(source) => store::encode(&mut e, source.fetch().as_ref()),
            None => Ok(()),
        }
    }
}

/// The families, one group per concern.
impl GatewayMetrics {
    /// Open connections by transport and state, and the ones turned away.
    fn encode_connections(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let mut rows = Vec::new();
        for transport in Transport::ALL {
            for state in ConnState::ALL {
                let n: i64 = self
                    .shards
                    .iter()
                    .map(|m| m.connections(transport, state))
                    .sum();
                rows.push((
                    [("transport", transport.label()), ("state", state.label())],
                    n as f64,
                ));
            }
        }
        gauge_family(
            e,
            names::CONNECTIONS,
            "Open client connections by transport and state",
            rows,
        )?;
        counter_family(
            e,
            names::REJECTED,
            "Connections turned away before they logged in, by reason",
            Rejection::ALL
                .iter()
                .map(|&r| ([("reason", r.label())], self.sum(|m| m.rejected(r)))),
        )?;
        counter_family(
            e,
            names::BYTES_RECEIVED,
            "Application bytes received (after TLS) by transport",
            Transport::ALL
                .iter()
                .map(|&t| ([("transport", t.label())], self.sum(|m| m.bytes(t).0))),
        )?;
        counter_family(
            e,
            names::BYTES_SENT,
            "Application bytes queued to clients (before TLS) by transport",
            Transport::ALL
                .iter()
                .map(|&t| ([("transport", t.label())], self.sum(|m| m.bytes(t).1))),
        )
    }

    /// Device logins and frames.
    fn encode_devices(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        counter_family(
            e,
            names::LOGINS,
            "Device login attempts by result",
            LoginResult::ALL
                .iter()
                .map(|&r| ([("result", r.label())], self.sum(|m| m.logins(r)))),
        )?;
        counter(
            e,
            names::LOGIN_THROTTLE_BLOCKS,
            "Login attempts blocked by the login throttle",
            self.sum(|m| m.logins(LoginResult::Throttled)),
        )?;
        for (name, help, pick) in [
            (
                names::MESSAGES_RECEIVED,
                "Frames received from logged-in devices by command",
                (|m: &ShardMetrics, c: usize| m.messages_in[c].load(Ordering::Relaxed))
                    as fn(&ShardMetrics, usize) -> u64,
            ),
            (
                names::MESSAGES_SENT,
                "Frames sent to devices by command",
                |m: &ShardMetrics, c: usize| m.messages_out[c].load(Ordering::Relaxed),
            ),
        ] {
            let rows: Vec<_> = (0..256usize)
                .filter_map(|code| {
                    let n = self.sum(|m| pick(m, code));
                    (n > 0).then(|| ([("command", command_label(code as u8))], n))
                })
                .collect();
            counter_family(e, name, help, rows)?;
        }
        counter(
            e,
            names::FRAMES_OVER_QUOTA,
            "Frames from logged-in devices dropped because the connection was over its message quota",
            self.total(|m| &m.frames_over_quota),
        )?;
        counter(
            e,
            names::TEMPLATE_MISMATCHES,
            "Logged-in devices closed because their info announced another template than their token's",
            self.total(|m| &m.template_mismatches),
        )
    }

    /// App WebSocket logins and the events delivered to apps.
    fn encode_apps(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        for (name, help, value) in [
            (
                names::APP_LOGINS_OK,
                "App WebSocket logins that passed the password check",
                self.total(|m| &m.app_logins_ok),
            ),
            (
                names::APP_LOGINS_REFUSED,
                "App WebSocket logins refused (unknown email, wrong password, or throttled)",
                self.total(|m| &m.app_logins_refused),
            ),
            (
                names::APP_EVENTS_SENT,
                "Device events (pin writes, presence) written to subscribed apps",
                self.total(|m| &m.app_events_sent),
            ),
            (
                names::APP_EVENTS_DROPPED,
                "Device events dropped because the app's shard had fallen too far behind",
                self.total(|m| &m.app_events_dropped),
            ),
        ] {
            counter(e, name, help, value)?;
        }
        Ok(())
    }

    /// The shards' links to the store: telemetry queued, stored and dropped, requests in flight,
    /// round trips.
    fn encode_store_link(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        gauge_family(
            e,
            names::TELEMETRY_QUEUE,
            "Pin writes not yet acknowledged by the store (queued in the shard or on its link); bounded by limits.store_queue_max_writes",
            per_shard(&self.shards, |m| m.telemetry_queue.load(Ordering::Relaxed)),
        )?;
        for (name, help, value) in [
            (
                names::TELEMETRY_DROPPED,
                "Pin writes dropped because the store queue was full",
                self.total(|m| &m.telemetry_dropped),
            ),
            (
                names::PINS_STORED,
                "Pin writes acknowledged by the store",
                self.total(|m| &m.pins_stored),
            ),
            (
                names::STORE_CALLS_REFUSED,
                "Store calls refused because the shard's store queue was full",
                self.total(|m| &m.store_calls_refused),
            ),
        ] {
            counter(e, name, help, value)?;
        }
        gauge_family(
            e,
            names::STORE_IN_FLIGHT,
            "Store requests sent or queued and not yet answered",
            per_shard(&self.shards, |m| m.store_in_flight.load(Ordering::Relaxed)),
        )?;
        gauge_family(
            e,
            names::STORE_LINK_UP,
            "1 while the shard's link to the store is up",
            per_shard(&self.shards, |m| m.store_link_up.load(Ordering::Relaxed)),
        )?;
        histogram_family(
            e,
            names::STORE_LATENCY,
            "Store request round trip, from submission to reply",
            &self.shards,
            |m| &m.store_latency,
            1e-6,
        )?;
        histogram_family(
            e,
            names::STORE_WRITE_BATCH,
            "Pin writes per store write request",
            &self.shards,
            |m| &m.write_batch,
            1.0,
        )
    }

    /// Handshakes and the served certificate.
    fn encode_tls(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let mut rows = Vec::new();
        for version in TlsVersion::ALL {
            for (ok, result) in [(true, "ok"), (false, "failed")] {
                rows.push((
                    [("version", version.label()), ("result", result)],
                    self.sum(|m| m.tls_handshakes(version, ok)),
                ));
            }
        }
        counter_family(
            e,
            names::TLS_HANDSHAKES,
            "TLS handshakes by negotiated version and result",
            rows,
        )?;
        let days = self.global.certificate_days_left(SystemTime::now());
        gauge_family(
            e,
            names::CERT_EXPIRY_DAYS,
            "Days until the served TLS certificate expires",
            days.map(|d| (NoLabels, d)),
        )?;
        let g = &self.global;
        counter_family(
            e,
            names::CERT_RELOADS,
            "Certificate reload attempts by result",
            [
                (
                    [("result", "ok")],
                    g.cert_reloads_ok.load(Ordering::Relaxed),
                ),
                (
                    [("result", "refused")],
                    g.cert_reloads_refused.load(Ordering::Relaxed),
                ),
            ],
        )
    }

    /// Configuration reloads, loop turns and shutdown.
    fn encode_process(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let g = &self.global;
        self.encode_revocations(e)?;
        counter_family(
            e,
            names::CONFIG_RELOADS,
            "Configuration reloads (SIGHUP) by result",
            [
                (
                    [("result", "ok")],
                    g.config_reloads_ok.load(Ordering::Relaxed),
                ),
                (
                    [("result", "refused")],
                    g.config_reloads_refused.load(Ordering::Relaxed),
                ),
            ],
        )?;
        histogram_family(
            e,
            names::LOOP_TURN,
            "Time a shard spends handling one batch of events (one loop turn)",
            &self.shards,
            |m| &m.loop_turn,
            1e-6,
        )?;
        gauge_family(
            e,
            names::DRAINING,
            "1 once shutdown has started",
            [(
                NoLabels,
                f64::from(u8::from(g.draining.load(Ordering::Relaxed))),
            )],
        )
    }
}

impl GatewayMetrics {
    /// The revocation feed: what it brought, its gaps, whether it is polled, what it closed.
    fn encode_revocations(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let g = &self.global;
        counter_family(
            e,
            names::REVOCATIONS_RECEIVED,
            "Revocations received from the store's feed, by kind",
            RevokedKind::ALL.iter().map(|&k| {
                (
                    [("kind", k.label())],
                    g.revocations_received[k as usize].load(Ordering::Relaxed),
                )
            }),
        )?;
        counter(
            e,
            names::REVOCATION_GAPS,
            "Revocation feed answers saying entries were lost (the gateway was cut off longer than the store keeps them)",
            g.revocation_gaps.load(Ordering::Relaxed),
        )?;
        gauge_family(
            e,
            names::REVOCATION_FEED_UP,
            "1 while the revocation feed is polled successfully",
            [(
                NoLabels,
                f64::from(u8::from(g.revocation_feed_up.load(Ordering::Relaxed))),
            )],
        )?;
        counter(
            e,
            names::SESSIONS_REVOKED,
            "Connections closed because the revocation feed named their device, user or session",
            self.total(|m| &m.sessions_revoked),
        )
    }
}

/// A sample without labels inside a family-shaped helper.
#[derive(Debug, Clone, Copy)]
struct NoLabels;

impl EncodeLabelSet for NoLabels {
    fn encode(&self, _encoder: &mut prometheus_client::encoding::LabelSetEncoder) -> fmt::Result {
        Ok(())
    }
}

mod protocol_names {
    use portcullis_protocol::Command;

    /// The command's name from the protocol table, or `unknown` for codes outside it.
    pub fn command_label(code: u8) -> &'static str {
        match Command::from_code(code) {
            Command::Unknown(_) => "unknown",
            known => COMMAND_NAMES
                .iter()
                .find(|(c, _)| *c == known)
                .map_or("unknown", |(_, name)| name),
        }
    }

    const COMMAND_NAMES: &[(Command, &str)] = &[
        (Command::Response, "response"),
        (Command::Login, "login"),
        (Command::HardwareLogin, "hardware_login"),
        (Command::Ping, "ping"),
        (Command::Hardware, "hardware"),
        (Command::HardwareSync, "hardware_sync"),
        (Command::Internal, "internal"),
        (Command::Property, "property"),
        (Command::Bridge, "bridge"),
        (Command::Email, "email"),
        (Command::PushNotification, "push_notification"),
        (Command::Sms, "sms"),
        (Command::Tweet, "tweet"),
        (Command::EventLog, "event_log"),
        (Command::EventClear, "event_clear"),
        (Command::DebugPrint, "debug_print"),
        (Command::Group, "group"),
        (Command::Redirect, "redirect"),
        (Command::HardwareConnected, "hardware_connected"),
        (Command::DeviceOffline, "device_offline"),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> GatewayMetrics {
        GatewayMetrics {
            global: Arc::new(GlobalMetrics::default()),
            shards: vec![
                Arc::new(ShardMetrics::new(0)),
                Arc::new(ShardMetrics::new(1)),
            ],
            store: None,
        }
    }

    #[test]
    fn counters_are_summed_over_shards_and_named_from_one_module() {
        let m = metrics();
        m.shards[0].login(LoginResult::Ok);
        m.shards[1].login(LoginResult::Ok);
        m.shards[1].login(LoginResult::InvalidToken);
        m.shards[0].message_in(20);
        m.shards[0].frame_out(&[0, 0, 1, 0, 200]);
        m.shards[1].reject(Rejection::TlsHandshake);
        m.shards[1].store_latency.observe(700);
        m.shards[0].pins_stored.add(7);
        m.shards[0].frames_over_quota.add(2);
        m.shards[1].frames_over_quota.add(3);
        m.shards[1].app_events_sent.add(4);
        m.shards[0].template_mismatches.add(1);
        m.shards[1].sessions_revoked.add(2);
        m.global.revocations_received[RevokedKind::User as usize].fetch_add(3, Ordering::Relaxed);
        let text = m.render();
        for line in [
            "portcullis_device_logins_total{result=\"ok\"} 2",
            "portcullis_device_logins_total{result=\"invalid_token\"} 1",
            "portcullis_messages_received_total{command=\"hardware\"} 1",
            "portcullis_messages_sent_total{command=\"response\"} 1",
            "portcullis_connections_rejected_total{reason=\"tls_handshake\"} 1",
            "portcullis_pins_stored_total 7",
            "portcullis_device_frames_over_quota_total 5",
            "portcullis_app_events_sent_total 4",
            "portcullis_device_template_mismatches_total 1",
            "portcullis_sessions_revoked_total 2",
            "portcullis_revocations_received_total{kind=\"user\"} 3",
            "portcullis_revocation_feed_gaps_total 0",
            "portcullis_revocation_feed_up 0",
            "portcullis_store_request_duration_seconds_bucket{shard=\"1\",le=\"0.001\"} 1",
            "portcullis_store_request_duration_seconds_count{shard=\"1\"} 1",
            "# TYPE portcullis_connections gauge",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("portcullis_tls_certificate_expiry_days ")),
            "no certificate, no value"
        );
    }

    #[test]
    fn certificate_days_left_is_exposed() {
        let m = metrics();
        let in_ten_days = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
            + 10 * 86_400;
        m.global
            .cert_not_after
            .store(in_ten_days, Ordering::Relaxed);
        let text = m.render();
        let line = text
            .lines()
            .find(|l| l.starts_with("portcullis_tls_certificate_expiry_days "))
            .expect("gauge present");
        let days: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("number");
        assert!((9.99..=10.0).contains(&days), "{line}");
    }

    #[test]
    fn readiness_needs_listeners_and_every_store_link() {
        let m = metrics();
        assert_eq!(m.readiness(), Readiness::Starting);
        m.global.listeners_bound.store(true, Ordering::Relaxed);
        assert_eq!(
            m.readiness(),
            Readiness::StoreUnreachable { shards_down: 2 }
        );
        for s in &m.shards {
            s.store_link_up.store(1, Ordering::Relaxed);
        }
        assert_eq!(m.readiness(), Readiness::Ready);
        m.global.draining.store(true, Ordering::Relaxed);
        assert_eq!(m.readiness(), Readiness::Draining);
    }
}
