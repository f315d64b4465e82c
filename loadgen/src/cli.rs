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
self-contained HTML dashboard.\n\nTypical run: `provision` once, then `connect`, `telemetry`, `fanout`, \
`ping` or `storm` with the same --tokens file and --data-dir. `fanout` also needs a user of the devices' \
organization for its app WebSocket clients (--email, --password-file)."
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
    /// Devices write as in `telemetry` while app WebSocket clients (`/api/ws`) subscribed to
    /// them receive every write as a pin event: end-to-end device → app latency, and events
    /// received against expected (writes × subscribers).
    #[command(long_about = FANOUT_ABOUT)]
    Fanout(FanoutArgs),
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
    /// Template id of the devices (created in --org when it does not exist yet).
    #[arg(long, default_value = "TMPLLOADGEN")]
    pub template: String,
    /// Organization id of the devices (1 is the root organization).
    #[arg(long, default_value_t = 1)]
    pub org: u32,
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
    #[command(flatten)]
    pub writes: WriteArgs,
}

/// The write schedule shared by `telemetry` and `fanout`.
#[derive(Debug, Args)]
pub struct WriteArgs {
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

const FANOUT_ABOUT: &str = "Devices write as in `telemetry` while app WebSocket clients receive \
every write as a pin event.\n\n\
The N devices of the --tokens file log in and each writes virtual pin --pin at --rate writes per second \
for --duration seconds, on telemetry's schedule. Each value written is the write's scheduled send time \
(Unix microseconds). Before the devices connect, --apps app clients open a WebSocket to the gateway's \
app API (ws://HOST:PLAIN-PORT/api/ws, or wss://SERVER-NAME:TLS-PORT/api/ws with --app-tls, checked \
against --ca or the data dir's CA), log in as --email with the Blynk client hash of the password, and \
subscribe to their devices. Every pin event an app receives is timed: receive time − send time, recorded \
as `end_to_end` (HdrHistogram), so it includes any lag of the load generator's own schedule, as \
telemetry's write latency does.\n\n\
Subscriptions: by default every device goes to exactly one app (the devices are cut into --apps \
contiguous groups). With --subscriptions-per-app K every app subscribes to K devices (at most the device count); \
K above devices/apps gives each device several subscribers, so one write is pushed to several apps \
(the fan-out). Subscriber counts differ by one at most between devices.\n\n\
The password is read from --password-file (one line; a trailing line break is ignored) and never taken \
on the command line, where `ps` and shell history would show it; the report holds neither it nor its \
hash. The user must exist, have a verified email and see the devices (the devices' organization).\n\n\
Reported: events expected (writes sent × confirmed subscribers of the writing device) and received, \
app logins and their failures with the gateway's reason, subscriptions confirmed and refused, \
end-to-end and app-login latency percentiles, device write latency as in telemetry, and the usual CPU \
and memory. App clients are one thread each in the main process; if one of them is busy ≥ 90 % of the \
time it receives, the report says the load generator is the bottleneck (use more --apps).\n\n\
Example: portcullis-loadgen fanout --tokens tokens.txt --devices 1000 --data-dir data --apps 10 \
--subscriptions-per-app 300 --email admin@example.com --password-file pw.txt --rate 5 --duration 10 \
--out fanout";

#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub writes: WriteArgs,
    /// App WebSocket clients (one thread each).
    #[arg(long, default_value_t = crate::fanout::DEFAULT_APPS)]
    pub apps: usize,
    /// Devices each app subscribes to (default: every device to exactly one app).
    #[arg(long)]
    pub subscriptions_per_app: Option<usize>,
    /// Email of the user the apps log in as.
    #[arg(long)]
    pub email: String,
    /// File holding that user's password on its first line (never pass a password as a flag).
    #[arg(long)]
    pub password_file: PathBuf,
    /// Apps use wss:// on the TLS port (with --ca or the data dir's CA) instead of ws:// on the
    /// plain port.
    #[arg(long)]
    pub app_tls: bool,
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
