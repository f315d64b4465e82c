//! Test harness for the end-to-end suites: starts the real `portcullis serve` (which starts the
//! real `portcullis-store`) on ephemeral loopback ports in a temporary data directory, or against
//! an externally run store (`store`), runs admin commands, and speaks the device protocol over
//! plain TCP or TLS. Every wait is bounded.
//!
//! The binaries are looked up next to the test executable's target directory, so run
//! `cargo build --bins` before `cargo test` (`.ci/run` does), or in `PORTCULLIS_E2E_BIN_DIR`
//! when set (a copy taken right after the build, for a target directory that another checkout
//! of the workspace builds into as well: its next build replaces `target/debug/portcullis`).

#![allow(clippy::unwrap_used)] // test harness: a failed unwrap is a failed test

pub mod app;
pub mod device;
pub mod hostile;
pub mod https;
pub mod metrics;
pub mod rest;
pub mod store;

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the gateway may take to start and write ports.json.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory holding the workspace binaries: `PORTCULLIS_E2E_BIN_DIR` when set, else
/// `target/<profile>`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PORTCULLIS_E2E_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary>
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins` before the end-to-end tests",
        path.display()
    );
    path
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The harness's `[limits]` line turning the per-device message quota off.
const MESSAGE_QUOTA_OFF: &str = "device_messages_per_sec = 0\n";

/// `extra_toml` with the per-device message quota turned off, unless the test sets it itself.
/// Several suites push frames on one connection faster than the production default of 100 a
/// second (the crash test writes as fast as it can, the flood and pipelining tests send bursts),
/// and a dropped frame would read as a gateway bug. The key goes into the test's own `[limits]`
/// section when it has one (TOML refuses a table defined twice), else into a new one.
pub fn without_message_quota(extra_toml: &str) -> String {
    const LIMITS: &str = "[limits]\n";
    if extra_toml.contains("device_messages_per_sec") {
        return extra_toml.to_owned();
    }
    match extra_toml.find(LIMITS) {
        Some(at) => {
            let (head, tail) = extra_toml.split_at(at + LIMITS.len());
            format!("{head}{MESSAGE_QUOTA_OFF}{tail}")
        }
        None => format!("{extra_toml}\n{LIMITS}{MESSAGE_QUOTA_OFF}"),
    }
}

/// A running gateway with its own data directory.
pub struct Gateway {
    child: Option<Child>,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub config_path: PathBuf,
    pub tls_port: u16,
    pub plain_port: u16,
    /// The metrics port (0 when `[metrics] enabled = false`).
    pub metrics_port: u16,
    log_path: PathBuf,
    /// Whether [`TEST_TEMPLATE`] is known to exist in this gateway's store.
    template_ready: std::cell::Cell<bool>,
}

/// The template of the devices the harness creates (in the root organization).
pub const TEST_TEMPLATE: &str = "TMPL0001";

impl Gateway {
    /// Starts a gateway with the default configuration plus `extra_toml` (whole sections).
    pub fn start(extra_toml: &str) -> Gateway {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let mut gw = Gateway::start_in(&data_dir, extra_toml);
        gw._temp = Some(temp);
        gw
    }

    /// Starts a gateway on an existing data directory (used to restart on the same data).
    pub fn start_in(data_dir: &Path, extra_toml: &str) -> Gateway {
        Gateway::start_with_env(data_dir, extra_toml, &[])
    }

    /// Like `start_in`, for a gateway named `node` (`[server] node_name`), one of several
    /// sharing a store.
    pub fn start_node_in(data_dir: &Path, node: &str, extra_toml: &str) -> Gateway {
        Gateway::launch(
            data_dir,
            &format!("node_name = {node:?}\n"),
            extra_toml,
            &[],
        )
    }

    /// Like `start_in`, with extra environment variables for the gateway process.
    pub fn start_with_env(data_dir: &Path, extra_toml: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::launch(data_dir, "", extra_toml, env)
    }

    /// Writes the configuration (`server_keys` go into its `[server]` section) and starts.
    fn launch(
        data_dir: &Path,
        server_keys: &str,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        std::fs::create_dir_all(data_dir).unwrap();
        let config_path = data_dir.with_extension("toml");
        let config = format!(
            "data_dir = {:?}\n[server]\nshards = 2\nbind_address = \"127.0.0.1\"\n{server_keys}{}\n",
            data_dir.display().to_string(),
            without_message_quota(extra_toml)
        );
        std::fs::write(&config_path, config).unwrap();
        let ports = data_dir.join("ports.json");
        let _ = std::fs::remove_file(&ports);
        let log_path = data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(bin("portcullis"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .args([
                "--tls-port",
                "0",
                "--plain-port",
                "0",
                "--metrics-port",
                "0",
            ])
            .env("RUST_LOG", "info,portcullis_gateway=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut gw = Gateway {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            _temp: None,
            config_path,
            tls_port: 0,
            plain_port: 0,
            metrics_port: 0,
            log_path,
            template_ready: std::cell::Cell::new(false),
        };
        let (tls, plain, metrics) = wait_for("ports.json", START_TIMEOUT, || {
            if let Some(status) = gw.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "gateway exited during start-up ({status}); log:\n{}",
                    gw.log()
                );
            }
            let text = std::fs::read_to_string(&ports).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            Some((
                v["tls"].as_u64()? as u16,
                v["plain"].as_u64()? as u16,
                v["metrics"].as_u64().unwrap_or(0) as u16,
            ))
        });
        gw.tls_port = tls;
        gw.plain_port = plain;
        gw.metrics_port = metrics;
        gw
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Runs `portcullis admin --data-dir D <args> --json` and parses its output.
    pub fn admin(&self, args: &[&str]) -> Result<Value, String> {
        admin_json(&["--data-dir".as_ref(), self.data_dir.as_os_str()], args)
    }

    /// Creates [`TEST_TEMPLATE`] in the root organization unless it exists already (a gateway
    /// restarted on the same data directory has it).
    pub fn ensure_template(&self) {
        if self.template_ready.get() {
            return;
        }
        let made = self.admin(&[
            "template",
            "create",
            "--org",
            "1",
            "--id",
            TEST_TEMPLATE,
            "--name",
            "test devices",
        ]);
        if let Err(e) = made {
            assert!(e.contains("is taken"), "creating the test template: {e}");
        }
        self.template_ready.set(true);
    }

    /// Creates a device of [`TEST_TEMPLATE`] in the root organization; returns its id and
    /// token.
    pub fn create_device(&self, name: &str) -> (u64, String) {
        self.create_device_in(name, 1)
    }

    /// Creates a device of [`TEST_TEMPLATE`] in organization `org`; returns its id and token.
    pub fn create_device_in(&self, name: &str, org: u32) -> (u64, String) {
        self.ensure_template();
        let org = org.to_string();
        let v = self
            .admin(&[
                "device",
                "create",
                "--name",
                name,
                "--template",
                TEST_TEMPLATE,
                "--org",
                &org,
            ])
            .unwrap();
        (
            v["id"].as_u64().unwrap(),
            v["token"].as_str().unwrap().to_string(),
        )
    }

    /// Creates an organization below `parent`; returns its id.
    pub fn create_org(&self, parent: u32, name: &str) -> u32 {
        let v = self
            .admin(&[
                "org",
                "create",
                "--parent",
                &parent.to_string(),
                "--name",
                name,
            ])
            .unwrap();
        v["id"].as_u64().unwrap() as u32
    }

    /// The stored value of `pin` (e.g. "V5") of `device`, if any.
    pub fn pin(&self, device: u64, pin: &str) -> Option<String> {
        let v = self
            .admin(&["device", "pins", &device.to_string()])
            .unwrap();
        v.as_array()?
            .iter()
            .find(|p| p["pin"] == pin)
            .and_then(|p| p["value"].as_str().map(str::to_string))
    }

    pub fn device(&self, device: u64) -> Value {
        self.admin(&["device", "get", &device.to_string()]).unwrap()
    }

    /// Pid of the child store process (a process whose parent is the gateway).
    pub fn store_pid(&self) -> Option<i32> {
        let me = self.pid();
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // Fields after the parenthesised command name: state, ppid, ...
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .and_then(|rest| rest.split_whitespace().nth(1))
                    .and_then(|p| p.parse().ok());
                ppid == Some(me)
                    && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.contains("portcullis-store"))
            })
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Sends SIGINT and waits (bounded) for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGINT);
        self.wait(Duration::from_secs(30))
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let status = wait_for("gateway exit", timeout, || child.try_wait().unwrap());
        self.child = None;
        status
    }

    /// `GET path` on the metrics port, with an optional bearer token: (status, body).
    pub fn http_get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        metrics::http_get(self.metrics_port, path, token)
    }

    /// Scrapes and parses `/metrics`.
    pub fn scrape(&self) -> metrics::Scrape {
        let (status, body) = self.http_get("/metrics", None);
        assert_eq!(status, 200, "scrape failed: {body}");
        metrics::Scrape::parse(&body)
    }

    /// Reads the gateway log so far for a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        wait_for(&format!("log line {needle:?}"), timeout, || {
            self.log().contains(needle).then_some(())
        });
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- gateway log ({}) ----\n{}",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// Runs a Python script from `tests/python/` with arguments; returns its stdout, failing the
/// test with its stderr if it exits non-zero. Bounded by `timeout`.
pub fn python(script: &str, args: &[&str], timeout: Duration) -> String {
    // The run-time variable, not `env!`: cargo reuses a test binary built from another checkout
    // of the same workspace (a shared target dir), and the compile-time path would point there.
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    let path = Path::new(&manifest_dir).join("python").join(script);
    let mut child = Command::new("python3")
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 must be installed (the README's test command installs it)");
    let status = wait_for(&format!("python {script}"), timeout, || {
        child.try_wait().unwrap()
    });
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        status.success(),
        "python {script} failed ({status}):\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// Runs `portcullis admin <how> <args> --json` (`how` says where the store is: `--data-dir D` or
/// `--config F`) and parses its output; the error is the CLI's stderr.
pub fn admin_json(how: &[&std::ffi::OsStr], args: &[&str]) -> Result<Value, String> {
    let out = Command::new(bin("portcullis"))
        .arg("admin")
        .args(how)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "bad JSON from admin ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The JSON lines of a log file (the security log), empty while the file does not exist yet.
pub fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}
