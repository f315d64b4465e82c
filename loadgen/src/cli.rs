//! Command-line interface of `portcullis-loadgen`: one subcommand per scenario, each with a
//! `--help` that says what it measures, plus `provision`, `compare` and `index`.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Default new connections per second during the ramp.
pub const DEFAULT_LOGIN_RATE: f64 = 2000.0;
/// Default heartbeat announced by every device (the Blynk libraries' default).
pub const DEFAULT_HEARTBEAT_SECS: u16 = 10;
/// Default connects in flight per shard.
pub const DEFAULT_MAX_CONNECTING: usize = 512;
/// Default time a device has to get online after its first SYN.
pub const DEFAULT_LOGIN_TIMEOUT_SECS: f64 = 10.0;
/// Default pause between the ramp and the memory measurement.
pub const DEFAULT_SETTLE_MS: u64 = 2000;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis-loadgen",
    version,
    about = "Load generator for the Portcullis gateway: simulated Blynk devices over plain TCP and TLS",
    long_about = "Load generator for the Portcullis gateway. It simulates Blynk devices (login with \
command 29, info message, PING heartbeat, virtual-pin writes) over plain TCP and TLS 1.3 from one mio \
event loop per core, spreads connections over loopback source addresses 127.0.0.2… when one address \
would run out of ports, and over several worker processes when the per-process open-file limit is \
below the connection count. Every scenario prints a live progress line and writes a JSON report and a \
self-contained HTML dashboard.\n\nTypical run: `provision` once, then `connect`, `telemetry`, `ping` or \
`storm` with the same --tokens file and --data-dir.\n\nNot available: `fanout` (device writes to app \
WebSocket subscribers) needs the gateway's app WebSocket API, which does not exist yet."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create N devices through the store socket (pipelined CreateDevice requests) and write
    /// their ids and tokens to a file the scenarios read.
    Provision(ProvisionArgs),
    /// Open N device connections (plain, TLS or a mix) at a target login rate, hold them idle
    /// with the Blynk heartbeat, and report connect/login latency, failures by reason, and the
    /// gateway's, the kernel's and the load generator's memory per connection.
    Connect(ConnectArgs),
    /// N logged-in devices each write a virtual pin at a fixed rate. Write latency is measured
    /// from each write's scheduled time (corrected for coordinated omission) to the reply of a
    /// PING sent right after it; with --data-dir the store is read back afterwards to count what
    /// was really stored.
    Telemetry(TelemetryArgs),
    /// Every device keeps one PING in flight (request/response round trips at a concurrency equal
    /// to the device count), comparable with `redis-benchmark -t ping -c N`.
    Ping(PingArgs),
    /// All devices disconnect and reconnect at once and the time until every one is back online
    /// is measured. `--trigger client` drops them from this side; `--trigger server` waits for
    /// the gateway to drop them (restart it while this runs).
    Storm(StormArgs),
    /// Print two JSON reports side by side with the ratio B/A.
    Compare { a: PathBuf, b: PathBuf },
    /// Render DIR/index.html linking every report (*.json) in DIR with its headline figures.
    Index {
        dir: PathBuf,
        #[arg(long, default_value = "portcullis benchmark results")]
        title: String,
    },
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The gateway's data directory (its store socket is <data-dir>/store.sock).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The store socket, if not in the data directory.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Devices to create.
    #[arg(long)]
    pub count: usize,
    /// File to write `<id> <token>` lines to (mode 0600).
    #[arg(long)]
    pub tokens: PathBuf,
    /// CreateDevice requests per pipelined batch.
    #[arg(long, default_value_t = 5000)]
    pub batch: usize,
    #[arg(long, default_value = "TMPLLOADGEN")]
    pub template: String,
    #[arg(long, default_value = "default")]
    pub org: String,
    /// Devices are named <prefix>-<n>.
    #[arg(long, default_value = "loadgen")]
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Trigger {
    Client,
    Server,
}

#[derive(Debug, Args)]
pub struct Common {
    /// Token file written by `provision`.
    #[arg(long)]
    pub tokens: PathBuf,
    /// Devices to simulate (the first N of the token file; default all).
    #[arg(long)]
    pub devices: Option<usize>,
    /// The gateway's data directory: ports from ports.json, the CA from tls/ca.pem, the store
    /// socket for read-backs. Flags below override each.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    #[arg(long)]
    pub plain_port: Option<u16>,
    #[arg(long)]
    pub tls_port: Option<u16>,
    /// CA certificate (PEM) that signed the gateway's certificate.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Name the gateway's certificate is checked against.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Percentage of devices that connect over TLS (0 plain only, 100 TLS only).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub tls_percent: u8,
    /// New connections per second during the ramp (whole run, all processes).
    #[arg(long, default_value_t = DEFAULT_LOGIN_RATE)]
    pub login_rate: f64,
    /// Heartbeat (seconds) announced in the info message; a PING goes out this often.
    #[arg(long, default_value_t = DEFAULT_HEARTBEAT_SECS)]
    pub heartbeat: u16,
    /// Event-loop threads per process (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
    /// Connects in flight per shard at most.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTING)]
    pub max_connecting: usize,
    /// Seconds a device has to get online after its first SYN before it counts as failed.
    #[arg(long, default_value_t = DEFAULT_LOGIN_TIMEOUT_SECS)]
    pub login_timeout: f64,
    /// Seconds the ramp may take at most (default: devices / login rate × 1.5 + 30).
    #[arg(long)]
    pub ramp_timeout: Option<f64>,
    /// Loopback source addresses to spread connections over: "auto" (one per quarter of the
    /// ephemeral port range's worth of connections, so the kernel's port search stays short),
    /// "none" (let the kernel choose), or a count starting at 127.0.0.2.
    #[arg(long, default_value = "auto")]
    pub source_addrs: String,
    /// Pid of the gateway (`portcullis serve`), for its memory and CPU (and its store's CPU).
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Milliseconds between the end of the ramp and the memory measurement.
    #[arg(long, default_value_t = DEFAULT_SETTLE_MS)]
    pub settle_ms: u64,
    /// Report path prefix: writes PREFIX.json and PREFIX.html (default loadgen-<scenario>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Connections per process at most (default: the open-file limit less a reserve). Runs
    /// needing more are split over worker processes.
    #[arg(long)]
    pub per_process: Option<u64>,
    /// Internal: this process is a worker for tokens FIRST:END of the file.
    #[arg(long, hide = true)]
    pub worker_slice: Option<String>,
    /// Internal: how many workers share the run.
    #[arg(long, hide = true)]
    pub worker_count: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds to hold the connections idle after the ramp.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
}

#[derive(Debug, Args)]
pub struct TelemetryArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds of writing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Writes per second per device.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Virtual pin written.
    #[arg(long, default_value_t = 1)]
    pub pin: u8,
    /// Every Nth write is followed by a PING that times it (and acknowledges the writes before).
    #[arg(long, default_value_t = 10)]
    pub sample_every: u64,
}

#[derive(Debug, Args)]
pub struct PingArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds of pinging.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

#[derive(Debug, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Who drops the connections.
    #[arg(long, value_enum, default_value_t = Trigger::Client)]
    pub trigger: Trigger,
    /// Seconds to wait for every device to be back (server trigger: including the wait for the
    /// gateway to go down).
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Milliseconds before a dropped device's first reconnect attempt (doubling per failed
    /// attempt, at most 1 s; spread over devices).
    #[arg(long, default_value_t = 100)]
    pub reconnect_delay_ms: u64,
}
