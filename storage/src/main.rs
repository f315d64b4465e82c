//! `portcullis-store`: the store process. Parses the command line, sets up logging to stderr,
//! opens RocksDB in the data directory, binds the Unix socket (and, with --remote-listen, the
//! mutual-TLS listener for remote gateways) and serves until SIGINT/SIGTERM
//! (or stdin EOF with `--exit-on-stdin-eof`), then shuts down gracefully and exits 0. A second
//! signal during shutdown exits at once with status 1. SIGHUP reloads the key file. The key
//! commands (`rotate-key`, `reseal`, `key-usage`) run here too and talk to a running store.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use portcullis_protocol::store::option_ranges;
use portcullis_storage::engine::sealed::{Keyring, rotate_key};
use portcullis_storage::{
    Engine, EngineOptions, RemoteConfig, Retention, Server, ServerConfig, Store, StoreOptions,
    certs, datadir, key_tools,
};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::io::{self, IsTerminal, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const LONG_ABOUT: &str = "\
The Portcullis store: owns the RocksDB database and serves the gateway's domain operations \
(devices, token lookups, pin values, presence) over a private Unix socket (mode 0600, peer uid \
checked against the store's own). It never listens on TCP unless --remote-listen is given, and then only with mutual TLS.

REMOTE GATEWAYS (mutual TLS)
  For a gateway on another host: make certificates once with `portcullis-store gen-certs DIR --store-name HOST --gateway NAME`, start the store with --remote-listen ADDR:PORT --remote-ca-file DIR/ca.pem --remote-cert-file DIR/store.pem --remote-key-file DIR/store.key, and give each gateway ca.pem plus its own gateway-NAME.pem/.key ([store] remote, remote_ca_file, remote_cert_file, remote_key_file, remote_server_name = HOST). The store accepts only TLS 1.3 clients presenting a certificate signed by that CA; any other connection is closed and logged with its address and the reason, without affecting other links. There is no plaintext TCP mode.

DURABILITY CONTRACT
  * Device, token, presence, info and property changes (the sync class) are written to the \
write-ahead log (WAL) and the WAL is fsynced before the store replies: an acknowledged change \
survives a crash of the store, of the machine, and power loss.
  * Pin values and pin history (telemetry, the buffered class) are acknowledged once written to \
the WAL (handed to the kernel): a crash of the store process loses nothing acknowledged. The WAL \
is fsynced at least every --sync-interval-ms milliseconds (default 100), so a machine crash or \
power loss can lose at most that window of acknowledged pin writes.
  * Group commit: writes arriving from all links while the previous group commits (plus \
--commit-window-us, default 0) form one RocksDB write batch with at most one WAL fsync. Reads \
are answered from RocksDB without waiting for any fsync.
  * WAL recovery mode is point-in-time: after an unclean stop the WAL is replayed up to the \
first torn or corrupt record, so the database comes back as a gap-free prefix of the writes \
that includes every fsynced (acknowledged sync-class) write.

ENCRYPTION AT REST (opt-in)
  With --key-file, every value is sealed with ChaCha20-Poly1305 under the current key of the \
file; each value records its key id, so `portcullis-store rotate-key --key-file F` adds a key \
without making older values unreadable. A wrong or missing key stops the store at start with a \
message saying which; it never serves undecryptable data.
  Rotation without downtime: `rotate-key --key-file F --socket S` adds the key and has the \
running store reload the file (SIGHUP does the same); new writes are then sealed with the new \
key. `reseal --socket S` re-seals every value of an older key with the current one, in small \
committed steps while the store serves, and reports the key ids still in use; a key it reports \
unused may be removed from the file (then `reload-keys --socket S` or SIGHUP). A reload re-checks the file like a start does and refuses a \
broken one, or one lacking a key that values may still need, logging why; the store then keeps \
its keys.

DATA DIRECTORY
  The data directory carries a format marker (PORTCULLIS_STORE) and the database. The store \
refuses to start on a directory it did not create, of another format version, or that is \
damaged, and says how to recover (restore a backup with --restore). It never starts empty over \
existing data.";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "portcullis-store", version, about = "The Portcullis store process", long_about = LONG_ABOUT, subcommand_negates_reqs = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Tool>,

    /// Directory of the database (created with mode 0700 if missing). Only one store may use it.
    #[arg(long, value_name = "DIR", required = true)]
    data_dir: Option<PathBuf>,

    /// Encrypt values at rest with the keys in this file (lines `ID HEX`, mode 0600; create or
    /// extend it with `portcullis-store rotate-key`). Chosen when a data directory is created: a
    /// clear database refuses a key file, a sealed one requires it.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// Unix socket to listen on. Created with mode 0600; a stale socket file nothing listens on
    /// is replaced, a live one or a non-socket file makes the store refuse to start.
    #[arg(long, value_name = "PATH", required_unless_present = "restore")]
    socket: Option<PathBuf>,

    /// Also listen for remote gateways on this TCP address (ADDR:PORT, e.g. a private interface),
    /// mutual TLS only: requires --remote-ca-file, --remote-cert-file and --remote-key-file.
    /// Without it the store opens no TCP socket at all.
    #[arg(long, value_name = "ADDR:PORT", requires_all = ["remote_ca_file", "remote_cert_file", "remote_key_file"])]
    remote_listen: Option<SocketAddr>,

    /// CA certificate (PEM) that signs the gateways' client certificates (gen-certs: ca.pem).
    #[arg(long, value_name = "FILE", requires = "remote_listen")]
    remote_ca_file: Option<PathBuf>,

    /// The store's TLS certificate chain (PEM) for remote gateways (gen-certs: store.pem).
    #[arg(long, value_name = "FILE", requires = "remote_listen")]
    remote_cert_file: Option<PathBuf>,

    /// The private key of --remote-cert-file (PEM, keep it mode 0600; gen-certs: store.key).
    #[arg(long, value_name = "FILE", requires = "remote_listen")]
    remote_key_file: Option<PathBuf>,

    /// Restore the backup in DIR (written by `portcullis admin backup`) as --data-dir, which must
    /// not exist or be empty, then exit without serving. Stop the store before restoring.
    #[arg(long, value_name = "DIR")]
    restore: Option<PathBuf>,

    /// Milliseconds between WAL fsyncs: the longest a pin write may stay acknowledged but not yet
    /// on disk (power-loss window). 1 to 60000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(option_ranges::SYNC_INTERVAL_MS))]
    sync_interval_ms: u64,

    /// Microseconds the group committer waits after the first write of a group for more writes
    /// to join it. 0 (the default) groups whatever queued while the previous group committed.
    #[arg(long, value_name = "US", default_value_t = 0, value_parser = clap::value_parser!(u64).range(option_ranges::COMMIT_WINDOW_US))]
    commit_window_us: u64,

    /// Size of RocksDB's block cache in MiB (cached data blocks for point reads). 1 to 65536.
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(option_ranges::BLOCK_CACHE_MIB))]
    block_cache_mib: u64,

    /// Days of pin history kept (0 keeps no history). Expired points are dropped by compaction.
    #[arg(long, value_name = "DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(option_ranges::HISTORY_RETENTION_DAYS))]
    history_retention_days: u64,

    /// Retention for the devices of one template, as TEMPLATE=DAYS; may be given many times.
    #[arg(long, value_name = "TEMPLATE=DAYS", value_parser = parse_template_retention)]
    template_retention: Vec<(String, u64)>,

    /// Shut down gracefully when stdin reaches end of file. A parent that spawns the store with a
    /// piped stdin gets it to exit whenever the parent dies, even by SIGKILL.
    #[arg(long)]
    exit_on_stdin_eof: bool,

    /// Format of the log lines written to stderr (filter with RUST_LOG, default "info").
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, clap::Subcommand)]
enum Tool {
    /// Add a new random key to a key file (creating it, mode 0600) and make it the current one.
    /// With --socket, the running store reloads the file at once and seals new writes with the
    /// new key (without it, send the store SIGHUP). Values sealed with older keys stay readable
    /// while their keys stay in the file; `reseal` moves them to the new key.
    RotateKey {
        /// The key file (the store's --key-file).
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// The socket of the running store to tell (its --socket; the gateway's store.socket).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Re-seal every stored value of an older key with the current key, while the store
    /// serves, in small steps (each one write of the store's group committer). Prints progress,
    /// then the key ids still in use. Safe to interrupt and to run again.
    Reseal {
        /// The socket of the running store.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
    },
    /// Have the running store re-read its key file (as SIGHUP does), for instance after an old
    /// key that `reseal` reported unused was removed from it. A broken file is refused and the
    /// store keeps its keys.
    ReloadKeys {
        /// The socket of the running store.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
    },
    /// Count the stored values of each key id (a read-only scan) and say which keys of the key
    /// file no value uses any more (those may be removed from it).
    KeyUsage {
        /// The socket of the running store.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
    },
    /// Make the certificates for remote gateways (mutual TLS) in DIR.
    ///
    /// Writes a private CA (ca.pem; its
    /// key ca.key stays with whoever issues certificates), the store's server certificate
    /// (store.pem, store.key: for the store's --remote-cert-file/--remote-key-file, with ca.pem
    /// as --remote-ca-file) and one client certificate per gateway (gateway-NAME.pem/.key: for
    /// that gateway's store.remote_cert_file/remote_key_file, with ca.pem as its
    /// store.remote_ca_file). Keys are written mode 0600. Run it again in the same DIR to add
    /// gateways with the same CA; existing files are never overwritten.
    GenCerts {
        /// Directory to write into (created with mode 0700 if missing).
        dir: PathBuf,
        /// DNS name or IP address gateways use to reach the store (goes into store.pem; the
        /// gateways' store.remote_server_name). May be given many times; omit it to only add
        /// gateways.
        #[arg(long, value_name = "HOST")]
        store_name: Vec<String>,
        /// A gateway to issue a client certificate for (letters, digits, '-', '.'). May be given
        /// many times.
        #[arg(long, value_name = "NAME")]
        gateway: Vec<String>,
    },
}

fn parse_template_retention(arg: &str) -> Result<(String, u64), String> {
    let (template, days) = arg
        .rsplit_once('=')
        .ok_or_else(|| format!("{arg:?} is not TEMPLATE=DAYS"))?;
    if template.is_empty() {
        return Err(format!("{arg:?} names no template"));
    }
    let days: u64 = days
        .parse()
        .map_err(|_| format!("{days:?} in {arg:?} is not a number of days"))?;
    let limit = *option_ranges::HISTORY_RETENTION_DAYS.end();
    if days > limit {
        return Err(format!(
            "{days} days in {arg:?} is over the {limit}-day limit"
        ));
    }
    Ok((template.to_owned(), days))
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs one of the subcommands: the key tools and `gen-certs`.
fn run_tool(tool: &Tool) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match tool {
        Tool::RotateKey { key_file, socket } => {
            let id = rotate_key(key_file)
                .with_context(|| format!("rotating the key in {}", key_file.display()))?;
            println!("key {id} added to {} and made current", key_file.display());
            let Some(socket) = socket else {
                println!(
                    "a running store adopts it on SIGHUP (or pass --socket); a stopped one at its next start"
                );
                return Ok(());
            };
            let status = key_tools::reload(socket).with_context(|| {
                format!(
                    "key {id} was added to {}, but the store at {} did not adopt it",
                    key_file.display(),
                    socket.display()
                )
            })?;
            println!(
                "the store reloaded the key file: new writes use key {} (keys held: {:?})",
                status.current, status.loaded
            );
        }
        Tool::Reseal { socket } => {
            key_tools::reseal(socket, &mut out)
                .with_context(|| format!("re-sealing through the store at {}", socket.display()))?;
        }
        Tool::ReloadKeys { socket } => {
            let status = key_tools::reload(socket).with_context(|| {
                format!("reloading the keys of the store at {}", socket.display())
            })?;
            println!(
                "the store reloaded the key file: new writes use key {} (keys held: {:?})",
                status.current, status.loaded
            );
        }
        Tool::GenCerts {
            dir,
            store_name,
            gateway,
        } => gen_certs(dir, store_name, gateway)?,
        Tool::KeyUsage { socket } => {
            let status = key_tools::usage(socket)
                .with_context(|| format!("counting keys in the store at {}", socket.display()))?;
            key_tools::report(&status, &mut out)?;
        }
    }
    Ok(())
}

/// Reloads the key file on every SIGHUP, for as long as the process lives. A refused file is
/// logged by the store and changes nothing.
fn reload_keys_on_sighup<E: Engine>(store: Arc<Store<E>>) -> anyhow::Result<()> {
    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP]).context("installing the SIGHUP handler")?;
    std::thread::Builder::new()
        .name("key-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                tracing::info!("SIGHUP: reloading the key file");
                // Success and refusal are both logged by the store itself.
                let _ = store.reload_keys();
            }
        })
        .context("starting the SIGHUP thread")?;
    Ok(())
}

/// Makes the mutual-TLS certificates for remote gateways (`gen-certs`).
fn gen_certs(dir: &Path, store_name: &[String], gateway: &[String]) -> anyhow::Result<()> {
    if store_name.is_empty() && gateway.is_empty() {
        anyhow::bail!("nothing to make: give --store-name HOST and/or --gateway NAME");
    }
    let written = certs::generate(dir, store_name, gateway)
        .with_context(|| format!("making certificates in {}", dir.display()))?;
    if written.ca_reused {
        println!("reused the CA in {}", dir.display());
    }
    for file in &written.files {
        println!("wrote {}", file.display());
    }
    println!(
        "store: --remote-ca-file ca.pem --remote-cert-file store.pem --remote-key-file store.key; \
         each gateway: ca.pem + its gateway-NAME.pem/.key. Keep ca.key offline."
    );
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(tool) = &args.command {
        return run_tool(tool);
    }
    let Some(data_dir) = args.data_dir.clone() else {
        anyhow::bail!("--data-dir is required");
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag before the second registration sets it: the first
        // signal only sets the flag, a second one (flag already set) exits at once with status 1.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&shutdown))
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&shutdown))
            .context("installing signal handlers")?;
    }
    if let Some(backup) = &args.restore {
        datadir::restore(backup, &data_dir).with_context(|| {
            format!("restoring {} into {}", backup.display(), data_dir.display())
        })?;
        tracing::info!(backup = %backup.display(), data_dir = %data_dir.display(), "backup restored; start the store on it normally");
        return Ok(());
    }
    let Some(socket) = args.socket.clone() else {
        anyhow::bail!("--socket is required to serve");
    };
    if args.exit_on_stdin_eof {
        watch_stdin(Arc::clone(&shutdown)).context("starting the stdin watcher")?;
    }
    tracing::info!(
        data_dir = %data_dir.display(),
        socket = %socket.display(),
        sync_interval_ms = args.sync_interval_ms,
        "starting the store"
    );

    let engine_options = EngineOptions {
        block_cache_bytes: usize::try_from(args.block_cache_mib << 20).unwrap_or(usize::MAX),
        create_if_missing: false,
    };
    let retention = Retention {
        default: DAY * u32::try_from(args.history_retention_days).unwrap_or(u32::MAX),
        by_template: args
            .template_retention
            .iter()
            .map(|(t, days)| (t.clone(), DAY * u32::try_from(*days).unwrap_or(u32::MAX)))
            .collect(),
    };
    let keys = args
        .key_file
        .as_deref()
        .map(Keyring::load)
        .transpose()
        .context("loading the encryption key file")?;
    let store = Arc::new(
        datadir::open(&data_dir, &engine_options, StoreOptions { retention }, keys)
            .with_context(|| format!("opening the store in {}", data_dir.display()))?,
    );
    if args.key_file.is_some() {
        reload_keys_on_sighup(Arc::clone(&store))?;
    }
    let mut server = Server::bind(&socket).context("binding the store socket")?;
    if let Some(listen) = args.remote_listen {
        let (Some(ca_file), Some(cert_file), Some(key_file)) = (
            args.remote_ca_file.clone(),
            args.remote_cert_file.clone(),
            args.remote_key_file.clone(),
        ) else {
            anyhow::bail!(
                "--remote-listen needs --remote-ca-file, --remote-cert-file and --remote-key-file \
                 (make them with `portcullis-store gen-certs`)"
            );
        };
        let addr = server
            .listen_remote(&RemoteConfig {
                listen,
                ca_file,
                cert_file,
                key_file,
            })
            .context("starting the remote-gateway listener")?;
        tracing::info!(%addr, "listening for remote gateways (mutual TLS only)");
    }
    tracing::info!(socket = %server.path().display(), "store ready");
    // Under systemd (Type=notify) the unit becomes active only now, with the socket bound: a
    // gateway ordered after it never finds the socket missing. Outside systemd this does nothing.
    notify_systemd(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);

    let config = ServerConfig {
        sync_interval: Duration::from_millis(args.sync_interval_ms),
        commit_window: Duration::from_micros(args.commit_window_us),
        ..ServerConfig::default()
    };
    let served = server.run(store, config, shutdown).context("serving");
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    served
}

fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Sets `shutdown` when stdin reaches EOF (or fails).
fn watch_stdin(shutdown: Arc<AtomicBool>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let mut sink = [0u8; 512];
            let mut stdin = io::stdin().lock();
            loop {
                match stdin.read(&mut sink) {
                    Ok(0) => {
                        tracing::info!("stdin closed; shutting down");
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "reading stdin failed; shutting down");
                        break;
                    }
                }
            }
            shutdown.store(true, Ordering::SeqCst);
        })?;
    Ok(())
}
