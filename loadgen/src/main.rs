//! `portcullis-loadgen`: the binary edge. Parses the command line, turns each scenario's flags
//! into a [`plan::Scenario`], and runs it (`runner.rs`, which also starts `fanout`'s app
//! clients), or provisions devices, compares two reports, or renders a results index. Errors
//! are reported here, once, with their context.

mod activity;
mod app_client;
mod assemble;
mod cli;
mod controller;
mod dashboard;
mod device;
mod fanout;
mod observer;
mod plan;
mod procfs;
mod report;
mod runner;
mod sendtime;
mod shard;
mod store_ops;
mod tally;
mod tls_verify;
mod tokens;
mod transport;
mod workers;

use anyhow::{Context, bail};
use clap::Parser;
use cli::{Cli, Command, Trigger};
use plan::{FanoutApps, Scenario, StormTrigger};
use serde_json::json;
use std::io::Write;
use std::time::Duration;

fn main() {
    let cli = Cli::parse();
    if let Err(error) = run(cli) {
        eprintln!("portcullis-loadgen: {error:#}");
        std::process::exit(1);
    }
}

/// A number of seconds from the command line; NaN, negative, infinite or absurdly large values
/// are refused with the flag's name (`Duration::from_secs_f64` would panic on them).
fn secs(value: f64, flag: &str) -> anyhow::Result<Duration> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) => Ok(duration),
        Err(_) => bail!("{flag} must be a number of seconds ≥ 0, not {value}"),
    }
}

fn params(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Provision(args) => provision(args),
        Command::Connect(args) => {
            let scenario = Scenario::Connect {
                hold: secs(args.hold, "--hold")?,
            };
            runner::run(
                &args.common,
                scenario,
                params(json!({ "hold_s": args.hold })),
            )
        }
        Command::Telemetry(args) => {
            let w = &args.writes;
            let scenario = Scenario::Telemetry {
                duration: write_duration(w)?,
                rate: w.rate,
                pin: w.pin,
                sample_every: w.sample_every.max(1),
            };
            runner::run(&args.common, scenario, params(write_params(w)))
        }
        Command::Fanout(args) => {
            let w = &args.writes;
            let apps = FanoutApps {
                count: args.apps,
                per_app: args.subscriptions_per_app,
                email: args.email.clone(),
                password_file: args.password_file.clone(),
                tls: args.app_tls,
            };
            let scenario = Scenario::Fanout {
                duration: write_duration(w)?,
                rate: w.rate,
                pin: w.pin,
                sample_every: w.sample_every.max(1),
                apps,
            };
            let mut p = params(write_params(w));
            p.insert("apps".into(), json!(args.apps));
            p.insert(
                "subscriptions_per_app".into(),
                json!(args.subscriptions_per_app),
            );
            p.insert("app_tls".into(), json!(args.app_tls));
            // The email says whose devices were watched; the password stays out of the report.
            p.insert("email".into(), json!(args.email));
            runner::run(&args.common, scenario, p)
        }
        Command::Ping(args) => {
            let scenario = Scenario::Ping {
                duration: secs(args.duration, "--duration")?,
            };
            runner::run(
                &args.common,
                scenario,
                params(json!({ "duration_s": args.duration })),
            )
        }
        Command::Storm(args) => {
            let trigger = match args.trigger {
                Trigger::Client => StormTrigger::Client,
                Trigger::Server => StormTrigger::Server,
            };
            let scenario = Scenario::Storm {
                trigger,
                timeout: secs(args.timeout, "--timeout")?,
                reconnect_delay: Duration::from_millis(args.reconnect_delay_ms),
            };
            let p = json!({
                "trigger": format!("{:?}", args.trigger).to_lowercase(),
                "timeout_s": args.timeout,
                "reconnect_delay_ms": args.reconnect_delay_ms,
            });
            runner::run(&args.common, scenario, params(p))
        }
        Command::Compare { a, b } => {
            let read = |p: &std::path::Path| -> anyhow::Result<report::Report> {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not a portcullis-loadgen report", p.display()))
            };
            let (ra, rb) = (read(&a)?, read(&b)?);
            print!(
                "{}",
                report::compare(&ra, &rb, &a.display().to_string(), &b.display().to_string())
            );
            Ok(())
        }
        Command::Index { dir, title } => index(&dir, &title),
    }
}

/// The measured part of a write schedule; a rate that is not a positive number is refused.
fn write_duration(w: &cli::WriteArgs) -> anyhow::Result<Duration> {
    if !(w.rate.is_finite() && w.rate > 0.0) {
        bail!("--rate must be above 0 writes per second");
    }
    secs(w.duration, "--duration")
}

fn write_params(w: &cli::WriteArgs) -> serde_json::Value {
    json!({
        "duration_s": w.duration,
        "rate_per_device": w.rate,
        "pin": w.pin,
        "sample_every": w.sample_every,
    })
}

fn provision(args: cli::ProvisionArgs) -> anyhow::Result<()> {
    let socket = match (&args.socket, &args.data_dir) {
        (Some(s), _) => s.clone(),
        (None, Some(d)) => d.join("store.sock"),
        (None, None) => bail!("give --data-dir (the gateway's) or --socket (the store's)"),
    };
    let mut last_print = std::time::Instant::now();
    let done = store_ops::provision(
        &socket,
        args.count,
        args.batch,
        (&args.prefix, &args.template, args.org),
        |n| {
            if last_print.elapsed() >= Duration::from_secs(1) || n == args.count {
                eprintln!("provisioned {n}/{}", args.count);
                last_print = std::time::Instant::now();
            }
        },
    )?;
    tokens::write(&args.tokens, &done.devices)?;
    let rate = done.devices.len() as f64 / done.took.as_secs_f64().max(1e-6);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "created {} devices in {:.2} s ({rate:.0}/s); tokens in {}",
        done.devices.len(),
        done.took.as_secs_f64(),
        args.tokens.display()
    )?;
    Ok(())
}

fn index(dir: &std::path::Path, title: &str) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    for path in entries {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        // Other JSON files (redis-benchmark output, notes) are not reports: skip them.
        if let Ok(report) = serde_json::from_str::<report::Report>(&text) {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            reports.push((name, report));
        }
    }
    let out = dir.join("index.html");
    std::fs::write(&out, dashboard::render_index(title, &reports))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("{} reports indexed in {}", reports.len(), out.display());
    Ok(())
}
