//! Backups with the real binaries: `portcullis admin backup DIR` checkpoints a store that keeps
//! serving writes, `portcullis-store --restore DIR` turns the checkpoint into a new data
//! directory, and a gateway on it sees exactly what was stored before the backup. Pin history is
//! read back through `portcullis admin device history`, raw and downsampled.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::device::Device;
use portcullis_e2e::{Gateway, bin};
use portcullis_protocol::{Command, Status};
use std::process::Command as Process;

fn sync(dev: &mut Device, pin: &[u8]) {
    let id = dev.send(Command::HardwareSync, &[b"vr", pin]);
    loop {
        if let portcullis_e2e::device::Got::Frame { id: got, .. } = dev.recv()
            && got == id
        {
            return;
        }
    }
}

#[test]
fn a_backup_taken_while_serving_restores_what_came_before_it() {
    let gw = Gateway::start("");
    let (id, token) = gw.create_device("backed-up");
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    dev.info(30);
    for i in 0..20 {
        dev.virtual_write(1, &i.to_string());
    }
    sync(&mut dev, b"1");

    // Outside the gateway's own temporary directory, which goes away with it.
    let outside = tempfile::tempdir().unwrap();
    let backup = outside.path().join("backup");
    let report = gw.admin(&["backup", backup.to_str().unwrap()]).unwrap();
    assert_eq!(report["dir"], backup.to_str().unwrap());
    assert!(report["bytes"].as_u64().unwrap() > 0);
    let again = gw.admin(&["backup", backup.to_str().unwrap()]);
    assert!(
        again.unwrap_err().contains("already exists"),
        "a backup never overwrites"
    );

    dev.virtual_write(1, "after-backup");
    sync(&mut dev, b"1");
    let history = gw
        .admin(&["device", "history", &id.to_string(), "V1", "--from", "0"])
        .unwrap();
    assert_eq!(history["points"].as_array().unwrap().len(), 21);
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        - 3_600_000;
    let from = hour_ago.to_string();
    let id_text = id.to_string();
    let args = [
        "device", "history", &id_text, "V1", "--from", &from, "--step", "1h",
    ];
    let buckets = gw.admin(&args).unwrap();
    let buckets = buckets["buckets"].as_array().unwrap();
    let numeric: u64 = buckets.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(
        numeric, 20,
        "the 20 numbers are counted, the text value is not"
    );
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["max"].as_f64().unwrap())
            .fold(0.0, f64::max),
        19.0
    );

    // Restore into a new data directory and serve it.
    let restored = outside.path().join("restored");
    let refused = Process::new(bin("portcullis-store"))
        .arg("--data-dir")
        .arg(gw.data_dir.join("store"))
        .arg("--restore")
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "restoring over live data is refused"
    );
    let out = Process::new(bin("portcullis-store"))
        .arg("--data-dir")
        .arg(restored.join("store"))
        .arg("--restore")
        .arg(&backup)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(dev);
    drop(gw);

    let gw = Gateway::start_in(&restored, "");
    assert_eq!(
        gw.pin(id, "V1"),
        Some("19".into()),
        "the value at backup time"
    );
    let history = gw
        .admin(&["device", "history", &id.to_string(), "V1", "--from", "0"])
        .unwrap();
    assert_eq!(history["points"].as_array().unwrap().len(), 20);
}
