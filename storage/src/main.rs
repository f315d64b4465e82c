//! `portcullis-store`: the store process. Parses the command line, sets up logging to stderr,
//! opens RocksDB in the data directory, binds the Unix socket and serves until SIGINT/SIGTERM
//! (or stdin EOF with `--exit-on-stdin-eof`), then shuts down gracefully and exits 0. A second
//! signal during shutdown exits at once with status 1.

use anyhow::Context;
use clap::{Parser, ValueEnum};
use portcullis_storage::{RocksEngine, Server, ServerConfig, Store};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io::{self, IsTerminal, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const LONG_ABOUT: &str = "\
The Portcullis store: owns the RocksDB database and serves the gateway's domain operations \
(devices, token lookups, pin values, presence) over a private Unix socket (mode 0600, peer uid \
checked against the store's own).

Durability: device, token, presence, info and property changes are fsynced to disk before the \
store replies. Pin values (telemetry) are acknowledged once written to the write-ahead log, so a \
crash of the store process loses nothing, and the log is fsynced every --sync-interval-ms \
milliseconds, so a machine crash or power loss can lose at most that window of pin writes.";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "portcullis-store", version, about = "The Portcullis store process", long_about = LONG_ABOUT)]
struct Args {
    /// Directory of the database (created with mode 0700 if missing). Only one store may use it.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,

    /// Unix socket to listen on. Created with mode 0600; a stale socket file nothing listens on
    /// is replaced, a live one or a non-socket file makes the store refuse to start.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,

    /// Milliseconds between WAL fsyncs: the longest a pin write may stay acknowledged but not yet
    /// on disk (power-loss window). 1 to 60000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    sync_interval_ms: u64,

    /// Shut down gracefully when stdin reaches end of file. A parent that spawns the store with a
    /// piped stdin gets it to exit whenever the parent dies, even by SIGKILL.
    #[arg(long)]
    exit_on_stdin_eof: bool,

    /// Format of the log lines written to stderr (filter with RUST_LOG, default "info").
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

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

fn run(args: Args) -> anyhow::Result<()> {
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag before the second registration sets it: the first
        // signal only sets the flag, a second one (flag already set) exits at once with status 1.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&shutdown))
            .context("installing signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&shutdown))
            .context("installing signal handlers")?;
    }
    if args.exit_on_stdin_eof {
        watch_stdin(Arc::clone(&shutdown)).context("starting the stdin watcher")?;
    }
    tracing::info!(
        data_dir = %args.data_dir.display(),
        socket = %args.socket.display(),
        sync_interval_ms = args.sync_interval_ms,
        "starting the store"
    );

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let engine = RocksEngine::open(&args.data_dir).context("opening the database")?;
    let store = Arc::new(
        Store::open(engine)
            .with_context(|| format!("opening the store in {}", args.data_dir.display()))?,
    );
    let server = Server::bind(&args.socket).context("binding the store socket")?;
    tracing::info!(socket = %server.path().display(), "store ready");

    let config = ServerConfig {
        sync_interval: Duration::from_millis(args.sync_interval_ms),
        ..ServerConfig::default()
    };
    server.run(store, config, shutdown).context("serving")?;
    Ok(())
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
