//! systemd integration (`Type=notify`): READY once listeners are bound and the store answered,
//! RELOADING/READY around a SIGHUP reload, STOPPING at shutdown, and a watchdog fed only while
//! every shard's event loop keeps turning (each shard stamps a heartbeat at the end of every loop
//! turn; a wedged shard stops the pings and systemd restarts the service). Outside systemd
//! (no `NOTIFY_SOCKET`) every call does nothing.

use crate::metrics::shard::ShardMetrics;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` must carry the monotonic time for `Type=notify-reload`.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The shard whose loop has not turned for longer than `stale`, if any.
pub fn stalled_shard(shards: &[Arc<ShardMetrics>], now_ms: u64, stale: Duration) -> Option<u16> {
    let stale_ms = stale.as_millis() as u64;
    shards
        .iter()
        .find(|s| now_ms.saturating_sub(s.heartbeat_ms.load(Ordering::Relaxed)) > stale_ms)
        .map(|s| s.index)
}

/// Starts the watchdog thread when systemd asked for one (`WatchdogSec=`): pings at a third of
/// the interval while every shard's heartbeat is younger than half of it.
pub fn spawn_watchdog(shards: Vec<Arc<ShardMetrics>>) -> std::io::Result<()> {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return Ok(());
    };
    let period = interval / 3;
    let stale = interval / 2;
    tracing::info!(?interval, "systemd watchdog enabled");
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            loop {
                match stalled_shard(&shards, unix_ms(), stale) {
                    None => send(&[NotifyState::Watchdog]),
                    Some(shard) => tracing::error!(
                        shard,
                        "shard event loop stalled; withholding the systemd watchdog ping"
                    ),
                }
                std::thread::sleep(period);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_with_an_old_heartbeat_is_named() {
        let a = Arc::new(ShardMetrics::new(0));
        let b = Arc::new(ShardMetrics::new(1));
        a.heartbeat_ms.store(10_000, Ordering::Relaxed);
        b.heartbeat_ms.store(10_900, Ordering::Relaxed);
        let shards = vec![a, b];
        assert_eq!(
            stalled_shard(&shards, 11_000, Duration::from_millis(500)),
            Some(0)
        );
        assert_eq!(
            stalled_shard(&shards, 10_400, Duration::from_millis(500)),
            None
        );
    }
}
