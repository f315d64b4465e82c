//! The configuration projected onto what the running pieces enforce: the shards' limits (with the
//! protocol sessions' share) and the shared abuse guards. Built once at start and again on every
//! reload, so a key is read in exactly one place.

use super::Config;
use crate::guard::admission::{Admission, AdmissionLimits, Guards};
use crate::guard::login_throttle::{LoginThrottle, ThrottleLimits};
use crate::protocols::ProtocolLimits;
use crate::protocols::blynk::device::SessionLimits;
use crate::protocols::blynk::quota::QuotaLimits;
use crate::reactor::ShardLimits;
use std::time::{Duration, Instant};

/// The limits every shard enforces.
pub fn shard_limits(config: &Config) -> ShardLimits {
    let l = &config.limits;
    ShardLimits {
        protocol: ProtocolLimits {
            device: SessionLimits {
                default_heartbeat_secs: l.default_heartbeat_secs,
                heartbeat_factor: l.heartbeat_factor,
                default_buff_in: l.default_buff_in,
                max_heartbeat_secs: l.max_heartbeat_secs,
                quota: QuotaLimits {
                    per_sec: l.device_messages_per_sec,
                    burst: l.device_message_burst,
                },
            },
            max_body_before_login: l.max_body_before_login as usize,
            max_body: l.max_body as usize,
            preauth_buffer_bytes: l.preauth_buffer_bytes as usize,
            outbound_queue_bytes: l.outbound_queue_bytes as usize,
            app_max_subscriptions: config.app.max_subscriptions as usize,
            app_idle_timeout: Duration::from_secs(config.app.idle_timeout_secs),
            app_outbound_queue_bytes: config.app.outbound_queue_bytes as usize,
            app_socket_send_buffer_bytes: config.app.socket_send_buffer_bytes as usize,
        },
        login_timeout: Duration::from_millis(l.login_timeout_ms),
        output_budget_bytes: (l.output_budget_mib as usize * 1024 * 1024)
            / config.effective_shards().max(1),
        socket_send_buffer_bytes: l.socket_send_buffer_bytes as usize,
        store_queue_max_writes: l.store_queue_max_writes as usize,
    }
}

/// The shared admission and login-throttle tables, sized from `[admission]` and `[app]`.
pub fn guards(config: &Config) -> Guards {
    let a = &config.admission;
    let admission = Admission::new(
        AdmissionLimits {
            max_connections_per_ip: a.max_connections_per_ip,
            accept_rate: a.accept_rate,
            accept_burst: a.accept_burst,
            accept_rate_per_ip: a.accept_rate_per_ip,
            accept_burst_per_ip: a.accept_burst_per_ip,
            max_tracked_ips: a.max_tracked_ips as usize,
            max_unauthenticated: a.max_unauthenticated,
        },
        Instant::now(),
    );
    let throttle = LoginThrottle::new(ThrottleLimits {
        free_failures: a.login_free_failures,
        backoff_initial: Duration::from_millis(a.login_backoff_initial_ms),
        backoff_max: Duration::from_millis(a.login_backoff_max_ms),
        block_after_failures: a.login_block_after_failures,
        block_for: Duration::from_secs(a.login_block_secs),
        forget_after: Duration::from_secs(a.login_failure_forget_secs),
        max_tracked_ips: a.max_tracked_ips as usize,
    });
    // App logins: no back-off, a plain block after a few failures (docs/reference/decisions.md
    // §2: 5 failures, 10 minutes); a source's count starts over once its block has passed.
    let app = &config.app;
    let app_throttle = LoginThrottle::new(ThrottleLimits {
        free_failures: app.login_block_after_failures,
        backoff_initial: Duration::ZERO,
        backoff_max: Duration::ZERO,
        block_after_failures: app.login_block_after_failures,
        block_for: Duration::from_secs(app.login_block_secs),
        forget_after: Duration::from_secs(app.login_block_secs),
        max_tracked_ips: a.max_tracked_ips as usize,
    });
    Guards::new(admission, throttle, app_throttle)
}
