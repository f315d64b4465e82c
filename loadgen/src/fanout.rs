//! The app side of the `fanout` scenario, run by the main process only (worker processes run
//! devices): which devices each app subscribes to, reading the password, starting one
//! `app_client` thread per app and waiting until all have logged in and subscribed before the
//! devices start, stopping them after the devices' drain, and turning what they saw into the
//! report's fan-out figures — events expected (each write × the apps subscribed to its device)
//! against events received.

use crate::app_client::{self, AppClientConfig, AppLive, AppOutcome};
use crate::report::Fanout;
use crate::tally::{Count, Tally};
use crate::transport::TlsClient;
use portcullis_protocol::store::DeviceId;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Default number of app clients.
pub const DEFAULT_APPS: usize = 10;

/// Most app clients one run may start: each is a thread, and past a few hundred the load
/// generator's scheduling rather than the gateway would shape the latencies.
pub const MAX_APPS: usize = 1000;

/// Longest the run waits for every app to be logged in and subscribed before the devices
/// start: the sum of one app's own limits (connect, handshake, login, subscribing) plus slack,
/// so in practice every app has settled by then.
pub const APPS_READY_TIMEOUT: Duration = Duration::from_secs(
    app_client::APP_CONNECT_TIMEOUT.as_secs()
        + 2 * app_client::APP_ANSWER_TIMEOUT.as_secs()
        + app_client::APP_SUBSCRIBE_TIMEOUT.as_secs()
        + 10,
);

/// How often the run looks whether the apps have settled.
const READY_POLL: Duration = Duration::from_millis(20);

/// Longest a password file may be; a longer file is the wrong file.
const MAX_PASSWORD_FILE_BYTES: u64 = 4096;

#[derive(Debug, Error)]
pub enum FanoutError {
    #[error("--apps must be between 1 and {MAX_APPS}, not {0}")]
    Apps(usize),
    #[error(
        "--subscriptions-per-app must be between 1 and the {devices} devices (an app subscribes to a device once), not {per_app}"
    )]
    PerApp { per_app: usize, devices: usize },
    #[error("cannot read the password file {}: {source}", path.display())]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the password file {} {why}", path.display())]
    BadPassword { path: PathBuf, why: &'static str },
    #[error("cannot start an app client thread: {0}")]
    Spawn(std::io::Error),
    #[error(
        "no app could log in ({reasons}); check --email and --password-file, and that the gateway serves the app WebSocket API"
    )]
    NoLogin { reasons: String },
}

/// Which devices each of `apps` apps subscribes to. Without `per_app`, every device goes to
/// exactly one app (app sizes differ by one at most). With `per_app = K`, every app takes K
/// devices, and the subscriptions are spread so device subscriber counts differ by one at
/// most; K above devices/apps gives devices several subscribers (the fan-out). App `j` takes the
/// next run of devices along the token file, wrapping around: consecutive positions are distinct
/// devices as long as K ≤ N, so no app subscribes to a device twice (dealing them out one at a
/// time would repeat devices when the app count divides the device count).
pub fn spread(
    devices: &[DeviceId],
    apps: usize,
    per_app: Option<usize>,
) -> Result<Vec<Vec<DeviceId>>, FanoutError> {
    if apps == 0 || apps > MAX_APPS {
        return Err(FanoutError::Apps(apps));
    }
    let n = devices.len();
    if let Some(k) = per_app
        && (k == 0 || k > n)
    {
        return Err(FanoutError::PerApp {
            per_app: k,
            devices: n,
        });
    }
    // Slots 0..total laid along the device ring; app j owns slots [j·total/apps, (j+1)·total/apps).
    let total = per_app.map_or(n, |k| k * apps);
    Ok((0..apps)
        .map(|j| {
            let (start, end) = (j * total / apps, (j + 1) * total / apps);
            (start..end).map(|slot| devices[slot % n]).collect()
        })
        .collect())
}

/// The password: the file's content without its trailing line break. Read from a file so it
/// never appears in a command line (visible in `ps` and shell history) or in the report.
pub fn read_password(path: &Path) -> Result<String, FanoutError> {
    let read_err = |source| FanoutError::PasswordFile {
        path: path.to_owned(),
        source,
    };
    let bad = |why| FanoutError::BadPassword {
        path: path.to_owned(),
        why,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > MAX_PASSWORD_FILE_BYTES {
        return Err(bad("is too long to hold one password"));
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(bad("is empty"));
    }
    if password.contains('\n') {
        return Err(bad("holds more than one line"));
    }
    Ok(password.to_owned())
}

/// What every app of a run shares.
pub struct AppsSetup {
    pub target: SocketAddr,
    pub url: String,
    pub tls: Option<TlsClient>,
    pub email: String,
    pub hash: String,
    /// The pin written, as events name it (`V1`).
    pub pin: String,
    /// Devices per app, from [`spread`].
    pub assignments: Vec<Vec<DeviceId>>,
    /// Apps stop by then whatever happens.
    pub give_up_at: Instant,
}

/// The running apps.
pub struct AppsRun {
    live: Arc<AppLive>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<AppOutcome>>,
    planned: usize,
}

/// What the apps saw, merged.
pub struct AppsResult {
    pub tally: Tally,
    /// Confirmed subscribers per device.
    pub subscribers: HashMap<DeviceId, u32>,
    /// The highest share of a core one app thread used while receiving.
    pub busiest_share: Option<f64>,
    pub apps: usize,
    pub planned: usize,
}

impl AppsRun {
    pub fn start(setup: AppsSetup) -> Result<AppsRun, FanoutError> {
        let live = Arc::new(AppLive::default());
        let stop = Arc::new(AtomicBool::new(false));
        let planned = setup.assignments.iter().map(Vec::len).sum();
        let mut run = AppsRun {
            live: Arc::clone(&live),
            stop: Arc::clone(&stop),
            threads: Vec::new(),
            planned,
        };
        for (j, devices) in setup.assignments.into_iter().enumerate() {
            let config = AppClientConfig {
                target: setup.target,
                url: setup.url.clone(),
                tls: setup.tls.clone(),
                email: setup.email.clone(),
                hash: setup.hash.clone(),
                devices,
                pin: setup.pin.clone(),
                answer_timeout: app_client::APP_ANSWER_TIMEOUT,
                subscribe_timeout: app_client::APP_SUBSCRIBE_TIMEOUT,
                stop: Arc::clone(&stop),
                give_up_at: setup.give_up_at,
            };
            let live = Arc::clone(&live);
            // On an error, `run` is dropped here, which stops the apps already started.
            let thread = std::thread::Builder::new()
                .name(format!("loadgen-app-{j}"))
                .spawn(move || app_client::run(&config, &live))
                .map_err(FanoutError::Spawn)?;
            run.threads.push(thread);
        }
        Ok(run)
    }

    pub fn live(&self) -> Arc<AppLive> {
        Arc::clone(&self.live)
    }

    /// Waits until every app has logged in and subscribed, or failed, and says how it went. A
    /// run in which no app logged in measures nothing, so it ends here with the reasons.
    pub fn wait_ready(self) -> Result<AppsRun, FanoutError> {
        let deadline = Instant::now() + APPS_READY_TIMEOUT;
        let apps = self.threads.len() as u64;
        while self.live.settled.load(Ordering::Relaxed) < apps && Instant::now() < deadline {
            std::thread::sleep(READY_POLL);
        }
        let l = &self.live;
        let logged_in = l.logged_in.load(Ordering::Relaxed);
        eprintln!(
            "apps: {logged_in}/{apps} logged in, {} of {} subscriptions confirmed, {} refused or unanswered",
            l.subscribed.load(Ordering::Relaxed),
            self.planned,
            l.subscribe_failures.load(Ordering::Relaxed),
        );
        if logged_in == 0 {
            let result = self.finish();
            let reasons: Vec<String> = result
                .tally
                .failures
                .iter()
                .map(|(reason, n)| format!("{n} × {reason}"))
                .collect();
            return Err(FanoutError::NoLogin {
                reasons: reasons.join("; "),
            });
        }
        Ok(self)
    }

    /// Stops every app and merges what they saw.
    pub fn finish(mut self) -> AppsResult {
        self.stop.store(true, Ordering::Relaxed);
        let mut result = AppsResult {
            tally: Tally::new(),
            subscribers: HashMap::new(),
            busiest_share: None,
            apps: self.threads.len(),
            planned: self.planned,
        };
        for thread in std::mem::take(&mut self.threads) {
            let Ok(outcome) = thread.join() else {
                result.tally.fail("app client thread panicked");
                continue;
            };
            result.tally.merge(&outcome.tally);
            for device in outcome.subscribed {
                *result.subscribers.entry(device).or_insert(0) += 1;
            }
            if let Some(share) = outcome.busy_share {
                result.busiest_share = Some(result.busiest_share.map_or(share, |b| b.max(share)));
            }
        }
        result
    }
}

impl Drop for AppsRun {
    /// A run that ends early (an error on the device side) still stops its apps.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Pin events the apps should have received: each device's writes times its subscribers.
pub fn expected_events(
    subscribers: &HashMap<DeviceId, u32>,
    writes: impl IntoIterator<Item = (DeviceId, u64)>,
) -> u64 {
    writes
        .into_iter()
        .map(|(device, sent)| {
            sent.saturating_mul(u64::from(subscribers.get(&device).copied().unwrap_or(0)))
        })
        .sum()
}

/// Adds the expected count to the apps' tally and sums the fan-out up for the report.
pub fn summarize(
    result: &mut AppsResult,
    devices: &[DeviceId],
    writes: impl IntoIterator<Item = (DeviceId, u64)>,
    tls: bool,
) -> Fanout {
    let expected = expected_events(&result.subscribers, writes);
    result.tally.add(Count::EventsExpected, expected);
    let received = result.tally.count(Count::EventsReceived);
    let per_device = devices
        .iter()
        .map(|d| result.subscribers.get(d).copied().unwrap_or(0));
    Fanout {
        apps: result.apps,
        app_tls: tls,
        subscriptions_planned: result.planned,
        subscribers_per_device_min: per_device.clone().min().unwrap_or(0),
        subscribers_per_device_max: per_device.max().unwrap_or(0),
        events_expected: expected,
        events_received: received,
        delivered_pct: if expected > 0 {
            received as f64 / expected as f64 * 100.0
        } else {
            0.0
        },
        busiest_app_thread_pct: result.busiest_share.map(|s| s * 100.0),
        how: "each device write carries its scheduled send time (Unix µs) as the value; an app \
              receiving the pin event records receive time − send time (end_to_end), so the \
              latency includes any delay of the load generator's own schedule, as for telemetry. \
              Events expected = writes sent × the apps whose subscription to that device was \
              confirmed; apps logged in and subscribed before the devices connected"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscriber_counts(assignments: &[Vec<DeviceId>], devices: &[DeviceId]) -> Vec<usize> {
        devices
            .iter()
            .map(|d| assignments.iter().filter(|a| a.contains(d)).count())
            .collect()
    }

    #[test]
    fn by_default_every_device_has_exactly_one_subscriber() {
        let devices: Vec<DeviceId> = (100..110).collect();
        let apps = spread(&devices, 3, None).expect("spread");
        assert_eq!(apps.len(), 3);
        let sizes: Vec<usize> = apps.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 3, 4]);
        assert_eq!(subscriber_counts(&apps, &devices), vec![1; 10]);
        // More apps than devices: some apps get none, every device still gets one.
        let apps = spread(&devices[..2], 5, None).expect("spread");
        assert_eq!(apps.iter().filter(|a| a.is_empty()).count(), 3);
        assert_eq!(subscriber_counts(&apps, &devices[..2]), vec![1, 1]);
    }

    #[test]
    fn more_subscriptions_than_devices_per_app_fan_out_evenly_without_repeats() {
        for (n, m, k) in [(10, 4, 5), (4, 2, 4), (6, 4, 5), (12, 3, 12), (7, 7, 3)] {
            let devices: Vec<DeviceId> = (1..=n as u64).collect();
            let apps = spread(&devices, m, Some(k)).expect("spread");
            for (j, app) in apps.iter().enumerate() {
                assert_eq!(app.len(), k, "app {j} of ({n}, {m}, {k})");
                let mut unique = app.clone();
                unique.sort_unstable();
                unique.dedup();
                assert_eq!(unique.len(), k, "app {j} repeats a device: {app:?}");
            }
            let counts = subscriber_counts(&apps, &devices);
            let (lo, hi) = (
                counts.iter().min().copied().unwrap_or(0),
                counts.iter().max().copied().unwrap_or(0),
            );
            assert_eq!(counts.iter().sum::<usize>(), m * k);
            assert!(hi - lo <= 1, "({n}, {m}, {k}): {counts:?}");
        }
        // 10 devices, 4 apps × 5: two subscribers each.
        let devices: Vec<DeviceId> = (1..=10).collect();
        let apps = spread(&devices, 4, Some(5)).expect("spread");
        assert_eq!(subscriber_counts(&apps, &devices), vec![2; 10]);
        assert_eq!(apps[2], vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn impossible_spreads_are_refused() {
        let devices: Vec<DeviceId> = (1..=3).collect();
        assert!(matches!(
            spread(&devices, 0, None),
            Err(FanoutError::Apps(0))
        ));
        assert!(spread(&devices, MAX_APPS + 1, None).is_err());
        let err = spread(&devices, 2, Some(4)).expect_err("an app cannot take 4 of 3 devices");
        assert!(
            err.to_string().contains("between 1 and the 3 devices"),
            "{err}"
        );
        assert!(spread(&devices, 2, Some(0)).is_err());
    }

    #[test]
    fn expected_events_count_every_confirmed_subscriber() {
        let subscribers: HashMap<DeviceId, u32> = [(1, 2), (2, 1)].into_iter().collect();
        // Device 3 had no confirmed subscriber: its writes are expected nowhere.
        assert_eq!(
            expected_events(&subscribers, [(1, 10), (2, 7), (3, 100)]),
            27
        );
    }

    #[test]
    fn the_password_file_gives_one_line_without_its_line_break() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret pass\r\n").expect("write");
        assert_eq!(read_password(&path).expect("read"), "s3cret pass");
        std::fs::write(&path, "no newline").expect("write");
        assert_eq!(read_password(&path).expect("read"), "no newline");
        std::fs::write(&path, "\n").expect("write");
        assert!(
            read_password(&path)
                .expect_err("empty")
                .to_string()
                .contains("is empty")
        );
        std::fs::write(&path, "one\ntwo\n").expect("write");
        assert!(read_password(&path).is_err());
        assert!(read_password(&dir.path().join("missing")).is_err());
    }
}
