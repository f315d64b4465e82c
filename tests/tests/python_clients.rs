//! Compatibility with the real Python client libraries from PyPI: `blynklib` 0.2.6 over plain TCP
//! and over TLS (trusting the generated CA), and `blynk-library-python` 0.2.0 (`BlynkLib`) over
//! plain TCP. Each logs in, writes a virtual pin, the value is read back with `admin device pins`,
//! and HARDWARE_SYNC returns it after a reconnect and after the gateway restarts on the same data.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::{Gateway, python, wait_for};
use serde_json::Value;
use std::time::Duration;

const PY_TIMEOUT: Duration = Duration::from_secs(30);

fn client(lib: &str, port: u16, token: &str, ca: Option<&str>, extra: &[&str]) -> Value {
    let port = port.to_string();
    // `--token=` keeps a token that starts with '-' from being read as a flag.
    let token = format!("--token={token}");
    let mut args = vec![lib, port.as_str(), token.as_str()];
    if let Some(ca) = ca {
        args.extend(["--ca", ca]);
    }
    args.extend(extra);
    let out = python("blynk_client.py", &args, PY_TIMEOUT);
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad output from the client ({e}): {out}"))
}

/// The real clients run against the shipped message quota (the harness turns it off for the
/// suites that flood on purpose): compatibility is checked under production defaults.
const SHIPPED_QUOTA: &str = "[limits]\ndevice_messages_per_sec = 100\ndevice_message_burst = 200\n";

fn round_trip(lib: &str, tls: bool) {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("data");
    let mut gw = Gateway::start_in(&data_dir, SHIPPED_QUOTA);
    let (id, token) = gw.create_device(lib);
    let ca = data_dir.join("tls").join("ca.pem").display().to_string();
    let ca = tls.then_some(ca.as_str());
    let port = |gw: &Gateway| if tls { gw.tls_port } else { gw.plain_port };
    let value = format!("{lib}-{}", if tls { "tls" } else { "plain" });

    let out = client(lib, port(&gw), &token, ca, &["--write", "5", &value]);
    assert_eq!(out["connected"], true, "{out}");
    wait_for("V5 stored", Duration::from_secs(5), || {
        (gw.pin(id, "V5").as_deref() == Some(value.as_str())).then_some(())
    });

    // After a reconnect the value comes back through HARDWARE_SYNC.
    let out = client(lib, port(&gw), &token, ca, &["--sync", "5"]);
    assert_eq!(out["synced"], serde_json::json!([value]), "{out}");

    // After the gateway (and its store) restart, the value survived in RocksDB.
    assert!(
        gw.stop().success(),
        "gateway did not exit cleanly:\n{}",
        gw.log()
    );
    drop(gw);
    let gw = Gateway::start_in(&data_dir, SHIPPED_QUOTA);
    let out = client(lib, port(&gw), &token, ca, &["--sync", "5"]);
    assert_eq!(out["synced"], serde_json::json!([value]), "{out}");
}

#[test]
fn blynklib_plain() {
    round_trip("blynklib", false);
}

#[test]
fn blynklib_tls() {
    round_trip("blynklib", true);
}

#[test]
fn blynklib_python_plain() {
    round_trip("BlynkLib", false);
}
