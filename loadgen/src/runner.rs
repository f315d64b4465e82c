//! Runs one scenario from the command line to the written report: reads the token file, finds
//! the gateway's ports and CA, reads the open-file limit and decides how many processes and
//! source addresses the run needs (and says so), starts `fanout`'s app clients and waits until
//! they are subscribed, runs the devices here or in worker processes, reads telemetry back from
//! the store, and hands everything to `assemble.rs`.

use crate::assemble::{self, RunFacts};
use crate::cli::Common;
use crate::controller::{self, LocalOutcome};
use crate::fanout::{self, AppsRun, AppsSetup};
use crate::observer::{GatewayProbe, Gauges, Observer};
use crate::plan::{self, DeviceSpec, FanoutApps, Plan, Scenario};
use crate::procfs;
use crate::report::{Fanout, Stored};
use crate::shard::TelemetryProgress;
use crate::store_ops;
use crate::tally::Tally;
use crate::tls_verify::ChainVerifiedOnce;
use crate::tokens::{self, TokenLine};
use crate::transport::TlsClient;
use crate::workers::{self, WorkerPipe};
use anyhow::{Context, bail};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long the read-back keeps polling while the stored count still grows (the gateway batches
/// writes to the store once per loop turn and the store group-commits them).
const READ_BACK_PATIENCE: Duration = Duration::from_secs(5);

/// How long `fanout`'s app clients may outlive the run's planned end before they stop on their
/// own; normally they are stopped as soon as the devices' drain is over.
const APP_GRACE: Duration = Duration::from_secs(60);

/// Runs `scenario` with `common`; `params` go into the report as they are.
pub fn run(
    common: &Common,
    scenario: Scenario,
    params: serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<()> {
    let all = tokens::read(&common.tokens, common.devices)?;
    if all.is_empty() {
        bail!(
            "the token file {} holds no devices",
            common.tokens.display()
        );
    }
    let nofile = procfs::raise_nofile_limit();
    let per_process = procfs::connections_per_process(nofile)
        .min(common.per_process.unwrap_or(u64::MAX))
        .max(1);
    let app_tls = matches!(&scenario, Scenario::Fanout { apps, .. } if apps.tls);
    let (plain_port, tls_port) = ports(common, app_tls)?;
    let plain_target = SocketAddr::new(common.host, plain_port);
    let tls_target = SocketAddr::new(common.host, tls_port);
    let tls = if common.tls_percent > 0 || app_tls {
        Some(tls_client(common)?)
    } else {
        None
    };
    let port_range = procfs::local_port_range_size();
    let sources = source_addresses(
        &common.source_addrs,
        plain_target,
        all.len() as u64,
        port_range,
    )?;
    let shards = if common.shards == 0 {
        procfs::cpu_count()
    } else {
        common.shards
    };
    // Checked here, not where they are used: a NaN, negative or infinite number of seconds would
    // panic in `Duration`.
    let login_timeout =
        crate::secs(common.login_timeout, "--login-timeout")?.max(Duration::from_millis(100));
    let make_plan = |devices: Vec<DeviceSpec>, rate: f64| Plan {
        scenario: scenario.clone(),
        plain_target,
        tls_target,
        tls_percent: common.tls_percent,
        tls: tls.clone(),
        devices,
        login_rate: rate,
        heartbeat_secs: common.heartbeat,
        shards,
        sources: sources.clone(),
        max_connecting: common.max_connecting.max(1),
        login_timeout,
    };
    let ramp_timeout = match common.ramp_timeout {
        Some(given) => crate::secs(given, "--ramp-timeout")?,
        None => crate::secs(
            all.len() as f64 / common.login_rate.max(1.0) * 1.5 + common.login_timeout + 30.0,
            "--login-rate/--login-timeout",
        )?,
    };

    if let Some(slice) = &common.worker_slice {
        // A worker: run our slice and report to the parent over stdout.
        let (first, end) = parse_slice(slice, all.len())?;
        let count = common.worker_count.unwrap_or(1).max(1);
        let plan = make_plan(specs(&all, first, end), common.login_rate / count as f64);
        let LocalOutcome {
            tally,
            telemetry,
            times,
        } = controller::run(Arc::new(plan), ramp_timeout, &mut WorkerPipe)?;
        WorkerPipe::done(&tally, telemetry, times);
        return Ok(());
    }

    let processes = (all.len() as u64).div_ceil(per_process) as usize;
    eprintln!(
        "{} devices ({}% TLS) against plain {plain_target} / TLS {tls_target}; open-file limit {nofile} \
         allows {per_process} connections per process → {processes} process(es) × {shards} shard(s); \
         source addresses: {}",
        all.len(),
        common.tls_percent,
        describe_sources(&sources, port_range),
    );
    // The apps subscribe before the first device connects, so no write goes unwatched.
    let apps = match &scenario {
        Scenario::Fanout {
            apps,
            pin,
            duration,
            ..
        } => {
            let targets = (plain_target, tls_target, tls.as_ref());
            let until = ramp_timeout + Duration::from_millis(common.settle_ms) + *duration;
            Some(start_apps(common, apps, *pin, &all, targets, until)?)
        }
        _ => None,
    };
    let probe = GatewayProbe::new(common.gateway_pid);
    if common.gateway_pid.is_some() && probe.rss().is_none() {
        bail!(
            "no process with pid {:?} to measure (--gateway-pid)",
            common.gateway_pid
        );
    }
    let own = controller::Snapshot {
        rss_bytes: procfs::own_rss_bytes().unwrap_or(0),
        ..controller::Snapshot::default()
    };
    let mut observer = Observer::new(
        probe,
        Duration::from_millis(common.settle_ms),
        all.len(),
        Gauges::take(&probe, &own),
    );
    if let Some(apps) = &apps {
        observer.watch_apps(apps.live(), processes > 1);
    }
    let (mut tally, telemetry, times) = if processes > 1 {
        let per = all.len().div_ceil(processes);
        let slices: Vec<(usize, usize)> = (0..processes)
            .map(|i| (i * per, ((i + 1) * per).min(all.len())))
            .filter(|(a, b)| a < b)
            .collect();
        let args: Vec<String> = std::env::args().skip(1).collect();
        let merged = workers::run(&args, &slices, &mut observer)?;
        (merged.tally, merged.telemetry, merged.times)
    } else {
        let plan = make_plan(specs(&all, 0, all.len()), common.login_rate);
        let outcome = controller::run(Arc::new(plan), ramp_timeout, &mut observer)?;
        (outcome.tally, outcome.telemetry, outcome.times)
    };
    observer.finish();
    let fanout = apps.map(|apps| finish_apps(apps, app_tls, &all, &telemetry, &mut tally));

    let stored = match (&scenario, store_socket(common)) {
        (Scenario::Telemetry { pin, .. }, Some(socket)) => {
            Some(read_back(&socket, &all, &telemetry, *pin, times.measure_s)?)
        }
        _ => None,
    };
    let facts = RunFacts {
        scenario: &scenario,
        common,
        params,
        host: crate::report::Host {
            cores: procfs::cpu_count(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            nofile_limit: nofile,
            connections_per_process: per_process,
            local_port_range: port_range,
        },
        devices: all.len(),
        shards,
        processes,
        sources: &sources,
        plain_target,
        tls_target,
    };
    let report = assemble::build(&facts, &tally, &times, &observer, stored, fanout);
    let prefix = common
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("loadgen-{}", scenario.name())));
    let json_path = prefix.with_extension("json");
    let html_path = prefix.with_extension("html");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    std::fs::write(&html_path, crate::dashboard::render(&report))
        .with_context(|| format!("cannot write {}", html_path.display()))?;
    print!("{}", report.summary());
    println!(
        "report: {} and {}",
        json_path.display(),
        html_path.display()
    );
    Ok(())
}

fn specs(all: &[TokenLine], first: usize, end: usize) -> Vec<DeviceSpec> {
    all[first..end]
        .iter()
        .enumerate()
        .map(|(i, t)| DeviceSpec {
            index: first + i,
            token: t.token.clone(),
        })
        .collect()
}

fn parse_slice(slice: &str, len: usize) -> anyhow::Result<(usize, usize)> {
    let (a, b) = slice
        .split_once(':')
        .context("--worker-slice must be FIRST:END")?;
    let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
    if a >= b || b > len {
        bail!("--worker-slice {slice} is outside the {len} devices of the token file");
    }
    Ok((a, b))
}

/// Starts `fanout`'s app clients and waits until they have logged in and subscribed. `until`
/// is how long the run is planned to take after that.
fn start_apps(
    common: &Common,
    apps: &FanoutApps,
    pin: u8,
    all: &[TokenLine],
    (plain_target, tls_target, tls): (SocketAddr, SocketAddr, Option<&TlsClient>),
    until: Duration,
) -> anyhow::Result<AppsRun> {
    let devices: Vec<u64> = all.iter().map(|t| t.id).collect();
    let assignments = fanout::spread(&devices, apps.count, apps.per_app)?;
    let password = fanout::read_password(&apps.password_file)?;
    let hash = portcullis_protocol::app::client_hash(&password, &apps.email);
    let path = portcullis_protocol::app::APP_WS_PATH;
    let (target, url, tls) = if apps.tls {
        // The TLS client's server name (--server-name) is the URL's host, so Host matches SNI.
        let host = if common.server_name.contains(':') {
            format!("[{}]", common.server_name)
        } else {
            common.server_name.clone()
        };
        let url = format!("wss://{host}:{}{path}", tls_target.port());
        (tls_target, url, tls.cloned())
    } else {
        (plain_target, format!("ws://{plain_target}{path}"), None)
    };
    eprintln!(
        "{} apps ({url}) log in as {} and subscribe to {} devices ({})",
        apps.count,
        apps.email,
        devices.len(),
        match apps.per_app {
            Some(k) => format!("{k} per app"),
            None => "each device to one app".into(),
        }
    );
    let setup = AppsSetup {
        target,
        url,
        tls,
        email: apps.email.clone(),
        hash,
        pin: format!("V{pin}"),
        assignments,
        give_up_at: std::time::Instant::now() + fanout::APPS_READY_TIMEOUT + until + APP_GRACE,
    };
    Ok(AppsRun::start(setup)?.wait_ready()?)
}

/// Stops the apps, adds what they saw to the run's tally and sums the fan-out up.
fn finish_apps(
    apps: AppsRun,
    tls: bool,
    all: &[TokenLine],
    telemetry: &[TelemetryProgress],
    tally: &mut Tally,
) -> Fanout {
    let mut result = apps.finish();
    let devices: Vec<u64> = all.iter().map(|t| t.id).collect();
    let writes = telemetry
        .iter()
        .filter_map(|t| Some((all.get(t.device)?.id, t.sent)));
    let summary = fanout::summarize(&mut result, &devices, writes, tls);
    tally.merge(&result.tally);
    summary
}

/// The plain and TLS ports: flags first, then `<data-dir>/ports.json`. `app_tls`: `fanout`'s
/// apps need the TLS port.
fn ports(common: &Common, app_tls: bool) -> anyhow::Result<(u16, u16)> {
    let from_file = match &common.data_dir {
        Some(dir) if common.plain_port.is_none() || common.tls_port.is_none() => {
            let path = dir.join("ports.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read {} (is the gateway running with this data dir?)",
                    path.display()
                )
            })?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let port = |k: &str| v[k].as_u64().and_then(|p| u16::try_from(p).ok());
            Some((port("plain"), port("tls")))
        }
        _ => None,
    };
    let plain = common
        .plain_port
        .or(from_file.and_then(|f| f.0))
        .context("no plain port: give --plain-port or --data-dir")?;
    let tls = common
        .tls_port
        .or(from_file.and_then(|f| f.1))
        .unwrap_or(plain);
    if common.tls_percent > 0 && tls == plain {
        bail!("--tls-percent needs the TLS port: give --tls-port or --data-dir");
    }
    if app_tls && tls == plain {
        bail!("--app-tls needs the TLS port: give --tls-port or --data-dir");
    }
    Ok((plain, tls))
}

fn tls_client(common: &Common) -> anyhow::Result<TlsClient> {
    let ca = common
        .ca
        .clone()
        .or_else(|| {
            common
                .data_dir
                .as_ref()
                .map(|d| d.join("tls").join("ca.pem"))
        })
        .context("TLS devices and --app-tls need the gateway's CA: give --ca or --data-dir")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca)
        .with_context(|| format!("cannot read the CA {}", ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("bad PEM in {}", ca.display()))?)
            .with_context(|| format!("unusable CA certificate in {}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .context("cannot build a certificate verifier from the CA")?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 is not available")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainVerifiedOnce::new(webpki)))
        .with_no_client_auth();
    let server_name = ServerName::try_from(common.server_name.clone()).with_context(|| {
        format!(
            "--server-name {:?} is not a DNS name or IP",
            common.server_name
        )
    })?;
    Ok(TlsClient {
        config: Arc::new(config),
        server_name,
    })
}

fn source_addresses(
    choice: &str,
    target: SocketAddr,
    connections: u64,
    port_range: u64,
) -> anyhow::Result<Vec<IpAddr>> {
    match choice {
        "auto" => Ok(plan::source_addresses(target, connections, port_range)),
        "none" => Ok(Vec::new()),
        n => {
            let count: u32 = n
                .parse()
                .with_context(|| format!("--source-addrs {n:?}: expected auto, none or a count"))?;
            if !target.ip().is_loopback() || !target.is_ipv4() {
                bail!("--source-addrs needs an IPv4 loopback target");
            }
            let base = u32::from(plan::FIRST_SOURCE);
            Ok((0..count.max(1))
                .map(|i| IpAddr::V4((base + i).into()))
                .collect())
        }
    }
}

fn describe_sources(sources: &[IpAddr], port_range: u64) -> String {
    match sources {
        [] => "chosen by the kernel".into(),
        [one] => format!("{one} (up to {port_range} ports)"),
        [first, .., last] => format!(
            "{first} … {last} ({} addresses, {port_range} ports each)",
            sources.len()
        ),
    }
}

fn store_socket(common: &Common) -> Option<PathBuf> {
    common.data_dir.as_ref().map(|d| d.join("store.sock"))
}

/// Reads the telemetry pin of every device until the stored total stops growing.
fn read_back(
    socket: &Path,
    all: &[TokenLine],
    telemetry: &[TelemetryProgress],
    pin: u8,
    measure_s: f64,
) -> anyhow::Result<Stored> {
    let ids: Vec<u64> = telemetry.iter().map(|t| all[t.device].id).collect();
    let sent: u64 = telemetry.iter().map(|t| t.sent).sum();
    let deadline = std::time::Instant::now() + READ_BACK_PATIENCE;
    let mut last_total = None;
    loop {
        let values = store_ops::read_back(socket, &ids, pin)?;
        let total: u64 = values.iter().map(|v| v.unwrap_or(0)).sum();
        let complete = values
            .iter()
            .zip(telemetry)
            .filter(|(v, t)| v.unwrap_or(0) == t.sent)
            .count();
        let settled = total == sent || last_total == Some(total);
        if settled || std::time::Instant::now() >= deadline {
            return Ok(Stored {
                devices_read: ids.len(),
                writes_stored: total,
                writes_sent: sent,
                devices_complete: complete,
                stored_per_s: total as f64 / measure_s.max(1e-3),
                how: "each write carries its sequence number as the value; after the run the store is \
                      asked for every device's latest value of the pin, and the sum of those numbers is \
                      the count of writes whose last one the store holds (a write dropped in the middle \
                      would not show here; the gateway logs telemetry_dropped at shutdown)"
                    .into(),
            });
        }
        last_total = Some(total);
        std::thread::sleep(Duration::from_millis(500));
    }
}
