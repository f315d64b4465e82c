//! The `portcullis` binary: `serve` runs the gateway, `check-config` validates a configuration
//! file, `admin` manages organizations, users, roles, templates, devices, API keys, the audit log,
//! history and backups through the running store, as the operator. Only this edge uses
//! `anyhow`.

use clap::{Parser, Subcommand};
use portcullis_gateway::cli::admin::{self, AdminArgs};
use portcullis_gateway::config::{Config, LogFormat};
use portcullis_gateway::daemon::serve::{Overrides, ServeContext};
use std::path::PathBuf;
use std::process::ExitCode;

/// Portcullis: a self-hosted gateway for devices speaking the Blynk protocols, over TLS or plain
/// TCP, with its data in an isolated RocksDB store process.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway. With no configuration it keeps its data in ./data, generates a TLS
    /// certificate there (clients trust ./data/tls/ca.pem), starts the store as a child process and
    /// listens on 443 and 80 (or 9443 and 8080 when those cannot be bound). Stop with Ctrl-C.
    Serve(ServeArgs),
    /// Validate a configuration file without starting anything; names the offending key.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Manage organizations, users, roles, templates, devices, API keys, the audit log and
    /// backups through the running store, as the operator (`portcullis admin device create ...`).
    Admin(AdminArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see docs/configuration.md). Without one, built-in defaults apply.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Data directory (store, certificates, ports.json). Overrides `data_dir`; default ./data.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TLS port (0 = ephemeral). Overrides `server.tls_port` and disables the fallback port.
    #[arg(long)]
    tls_port: Option<u16>,
    /// Plain TCP port (0 = ephemeral). Overrides `server.plain_port` and disables the fallback.
    #[arg(long)]
    plain_port: Option<u16>,
    /// Metrics port (0 = ephemeral). Overrides `metrics.port`.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Number of shards (event-loop threads); 0 = one per core.
    #[arg(long)]
    shards: Option<u16>,
    /// Log format: text (default) or json.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { file } => match Config::load(Some(&file)) {
            // A remote store's certificate files are read too: better found here than at start.
            Ok(config) => {
                match portcullis_store_client::StoreEndpoint::open(&config.store_endpoint_spec()) {
                    Ok(_) => {
                        println!("{}: OK", file.display());
                        Ok(())
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        },
        Command::Admin(args) => admin::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        tls_port: args.tls_port,
        plain_port: args.plain_port,
        metrics_port: args.metrics_port,
        shards: args.shards,
        log_format: args.log_format.map(|format| match format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }),
    };
    let mut config = Config::load(args.config.as_deref())?;
    overrides.apply(&mut config);
    config.validate(args.config.as_deref())?;
    let log = portcullis_gateway::daemon::logging::init(&config)?;
    let context = ServeContext {
        config_path: args.config,
        overrides,
        log,
    };
    portcullis_gateway::daemon::serve::serve(config, context)
}
