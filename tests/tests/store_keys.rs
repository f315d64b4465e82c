//! Key rotation of a sealed store with the real binaries, without downtime: a gateway-supervised
//! store encrypts at rest, `portcullis-store rotate-key --socket` adds key 2 and the running store
//! adopts it, a broken key file is refused on reload while the store keeps serving, `reseal`
//! moves every value to key 2 and says key 1 is unused, key 1 leaves the file, and a restarted
//! store with only key 2 reads back every value written before and after the rotation.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::device::{Device, Got};
use portcullis_e2e::{Gateway, bin, wait_for};
use portcullis_protocol::{Command, Status};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command as Process, Output};
use std::time::Duration;

fn sync(dev: &mut Device, pin: &[u8]) {
    let id = dev.send(Command::HardwareSync, &[b"vr", pin]);
    loop {
        if let Got::Frame { id: got, .. } = dev.recv()
            && got == id
        {
            return;
        }
    }
}

fn store_tool(args: &[&str]) -> Output {
    Process::new(bin("portcullis-store"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_key_file(path: &Path, text: &str) {
    let tmp = path.with_extension("edit");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn history_values(gw: &Gateway, id: u64) -> Vec<String> {
    let history = gw
        .admin(&["device", "history", &id.to_string(), "V1", "--from", "0"])
        .unwrap();
    history["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_key_is_rotated_and_retired_while_the_store_serves() {
    let outside = tempfile::tempdir().unwrap();
    let keys = outside.path().join("store.keys");
    let keys_arg = keys.to_str().unwrap();
    assert!(ok(&store_tool(&["rotate-key", "--key-file", keys_arg])).contains("key 1"));
    let data_dir = outside.path().join("data");
    let config = format!("[store]\nkey_file = {keys_arg:?}\n");
    let gw = Gateway::start_in(&data_dir, &config);
    let socket = data_dir.join("store.sock");
    let socket_arg = socket.to_str().unwrap();

    let (id, token) = gw.create_device("sealed");
    let mut dev = Device::plain(gw.plain_port);
    dev.login(&token, Status::Ok);
    for i in 0..20 {
        dev.virtual_write(1, &i.to_string());
    }
    sync(&mut dev, b"1");

    // Key 2, adopted by the running store: nothing restarts, the device stays connected.
    let rotated = ok(&store_tool(&[
        "rotate-key",
        "--key-file",
        keys_arg,
        "--socket",
        socket_arg,
    ]));
    assert!(rotated.contains("new writes use key 2"), "{rotated}");
    for i in 20..40 {
        dev.virtual_write(1, &i.to_string());
    }
    sync(&mut dev, b"1");
    let usage = ok(&store_tool(&["key-usage", "--socket", socket_arg]));
    assert!(usage.contains("older keys still in use: 1"), "{usage}");

    // A broken key file is refused, by request and by SIGHUP, and the store goes on serving
    // with the keys it has.
    let good = std::fs::read_to_string(&keys).unwrap();
    write_key_file(&keys, "2 this-is-not-a-key\n");
    let refused = store_tool(&["reload-keys", "--socket", socket_arg]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("line 1") && why.contains("keeps its current keys"),
        "{why}"
    );
    let store = nix::unistd::Pid::from_raw(gw.store_pid().unwrap());
    nix::sys::signal::kill(store, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for(
        "the SIGHUP reload to be refused",
        Duration::from_secs(10),
        || {
            let log = gw.log();
            (log.contains("SIGHUP") && log.matches("key file reload refused").count() >= 2)
                .then_some(())
        },
    );
    dev.virtual_write(1, "while-refused");
    sync(&mut dev, b"1");
    assert_eq!(gw.pin(id, "V1"), Some("while-refused".into()));
    // Removing key 1 before a reseal would strand its values: refused too.
    let key2_line = good
        .lines()
        .find(|l| l.starts_with("2 "))
        .unwrap()
        .to_owned();
    write_key_file(&keys, &format!("{key2_line}\n"));
    let refused = store_tool(&["reload-keys", "--socket", socket_arg]);
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && why.contains("lacks key id 1"),
        "{why}"
    );
    write_key_file(&keys, &good);

    // Re-seal everything with key 2; key 1 is then unused and may leave, live.
    let resealed = ok(&store_tool(&["reseal", "--socket", socket_arg]));
    assert!(resealed.contains("unused keys: 1"), "{resealed}");
    assert!(!resealed.contains("still in use"), "{resealed}");
    write_key_file(&keys, &format!("{key2_line}\n"));
    let reloaded = ok(&store_tool(&["reload-keys", "--socket", socket_arg]));
    assert!(reloaded.contains("keys held: [2]"), "{reloaded}");
    dev.virtual_write(1, "after-retirement");
    sync(&mut dev, b"1");
    drop(dev);
    let mut gw = gw;
    assert!(gw.stop().success());
    drop(gw);

    // A restart with key 2 alone reads back every value.
    let gw = Gateway::start_in(&data_dir, &config);
    let mut expected: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    expected.push("while-refused".into());
    expected.push("after-retirement".into());
    assert_eq!(history_values(&gw, id), expected);
    assert_eq!(gw.pin(id, "V1"), Some("after-retirement".into()));
    assert_eq!(gw.device(id)["name"], "sealed");
}
