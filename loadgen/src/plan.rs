//! What one load-generator process is asked to do, decided once before any socket opens: the
//! scenario and its parameters, the targets, which devices (tokens) it drives and over which
//! transport, the loopback source addresses to spread them over, and the run phases the
//! controller and the shards agree on.

use crate::transport::TlsClient;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

/// Share of the ephemeral port range one source address uses at most. The kernel hands each
/// (source address, destination) pair one port per connection, and its search for a free port
/// slows as the range fills (ports in TIME_WAIT from an earlier run count too): at 19,000
/// connections from one address (0.67 of the range) the ramp fell from 5,000 to ~1,200 logins/s
/// with the load generator's CPU spent in `connect()`, and 10 % of connects took a second. A
/// quarter keeps the search short; loopback has addresses to spare.
pub const SOURCE_ADDRESS_HEADROOM: f64 = 0.25;

/// The first source address used; 127.0.0.1 is left to the gateway and everything else.
pub const FIRST_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StormTrigger {
    /// The load generator drops every connection itself, then reconnects them all at once.
    Client,
    /// Someone restarts the gateway; devices reconnect when it drops them.
    Server,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scenario {
    /// Hold every device idle (heartbeat only) for `hold`.
    Connect { hold: Duration },
    /// Every device writes `V<pin>` at `rate` writes/s for `duration`; every `sample_every`-th
    /// write is followed by a PING whose reply times that write.
    Telemetry {
        duration: Duration,
        rate: f64,
        pin: u8,
        sample_every: u64,
    },
    /// Telemetry's schedule, each value the write's scheduled send time, while app WebSocket
    /// clients (`apps`) subscribed to the devices time each write's arrival as a pin event.
    Fanout {
        duration: Duration,
        rate: f64,
        pin: u8,
        sample_every: u64,
        apps: FanoutApps,
    },
    /// Every device keeps one PING in flight for `duration`.
    Ping { duration: Duration },
    /// Disconnect and reconnect everything; wait at most `timeout` for all to be back.
    Storm {
        trigger: StormTrigger,
        timeout: Duration,
        reconnect_delay: Duration,
    },
}

/// The app side of a `fanout` run; only the main process uses it (workers run devices only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutApps {
    /// App WebSocket clients.
    pub count: usize,
    /// Subscriptions per app; `None` spreads every device over the apps once.
    pub per_app: Option<usize>,
    pub email: String,
    /// Holds the password; it is read once, in the main process, and never put on a command line.
    pub password_file: PathBuf,
    /// Apps connect with `wss://` to the TLS port.
    pub tls: bool,
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Connect { .. } => "connect",
            Scenario::Telemetry { .. } => "telemetry",
            Scenario::Fanout { .. } => "fanout",
            Scenario::Ping { .. } => "ping",
            Scenario::Storm { .. } => "storm",
        }
    }
}

/// One device as a process knows it.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Position in the token file (also decides source address and transport).
    pub index: usize,
    pub token: String,
}

pub struct Plan {
    pub scenario: Scenario,
    pub plain_target: SocketAddr,
    pub tls_target: SocketAddr,
    /// Percentage of devices that use TLS (0 = all plain, 100 = all TLS).
    pub tls_percent: u8,
    pub tls: Option<TlsClient>,
    pub devices: Vec<DeviceSpec>,
    /// New connections per second for this process.
    pub login_rate: f64,
    pub heartbeat_secs: u16,
    pub shards: usize,
    pub sources: Vec<IpAddr>,
    /// Connects in flight per shard at most (keeps the SYN backlog from overflowing).
    pub max_connecting: usize,
    /// A device not online this long after its first SYN counts as failed.
    pub login_timeout: Duration,
}

impl Plan {
    /// Whether the device at `index` uses TLS: spreads `tls_percent` evenly over the indexes.
    pub fn uses_tls(&self, index: usize) -> bool {
        uses_tls(self.tls_percent, index)
    }

    pub fn source_for(&self, index: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[index % self.sources.len()])
    }
}

pub fn uses_tls(percent: u8, index: usize) -> bool {
    let p = usize::from(percent.min(100));
    (index + 1) * p / 100 > index * p / 100
}

/// Source addresses for `connections` to a loopback IPv4 target: enough that none needs more
/// ports than its share of the ephemeral range. Empty for other targets (the kernel chooses).
pub fn source_addresses(target: SocketAddr, connections: u64, port_range: u64) -> Vec<IpAddr> {
    let IpAddr::V4(v4) = target.ip() else {
        return Vec::new();
    };
    if !v4.is_loopback() {
        return Vec::new();
    }
    let per_address = ((port_range as f64 * SOURCE_ADDRESS_HEADROOM) as u64).max(1);
    let count = connections.div_ceil(per_address).max(1);
    let base = u32::from(FIRST_SOURCE);
    (0..count)
        .map(|i| IpAddr::V4(Ipv4Addr::from(base + i as u32)))
        .collect()
}

/// Where the run is; the controller moves it forward, shards follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Opening connections at the login rate.
    Ramp = 0,
    /// Everything is up (or failed); waiting for the other worker processes.
    Ready = 1,
    /// The scenario's measured part.
    Measure = 2,
    /// No new work; replies still count.
    Drain = 3,
    /// Close everything and report.
    Done = 4,
}

#[derive(Debug, Default)]
pub struct PhaseCell(AtomicU8);

impl PhaseCell {
    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            0 => Phase::Ramp,
            1 => Phase::Ready,
            2 => Phase::Measure,
            3 => Phase::Drain,
            _ => Phase::Done,
        }
    }

    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_share_is_spread_evenly() {
        for percent in [0u8, 1, 25, 50, 99, 100] {
            let tls = (0..10_000).filter(|&i| uses_tls(percent, i)).count();
            assert_eq!(tls, usize::from(percent) * 100, "{percent}%");
        }
        assert!(!uses_tls(50, 0) && uses_tls(50, 1));
    }

    #[test]
    fn enough_source_addresses_for_the_port_range() {
        let target: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        assert_eq!(source_addresses(target, 100, 28_232).len(), 1);
        let many = source_addresses(target, 1_000_000, 28_232);
        assert_eq!(many.len(), 142, "a quarter of the range each");
        assert_eq!(many[0], IpAddr::V4(FIRST_SOURCE));
        assert_eq!(many[141].to_string(), "127.0.0.143");
        assert_eq!(source_addresses(target, 19_000, 28_232).len(), 3);
        let remote: SocketAddr = "[::1]:8080".parse().expect("addr");
        assert!(source_addresses(remote, 1_000_000, 28_232).is_empty());
    }
}
