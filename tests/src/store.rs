//! An externally managed `portcullis-store` for the suites that run one themselves (a remote
//! store over mutual TLS, several gateways sharing one store): started on `<dir>/store.sock`
//! with its database in `<dir>/store-data`, ready once its log says so, killed on drop.

use crate::{bin, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long the store may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `portcullis-store` child with its log file; killed on drop.
pub struct ExternalStore {
    pub child: Child,
    log: PathBuf,
}

impl ExternalStore {
    /// Starts the store in `dir` (run `run` names its log file `store-<run>.log`); with `remote`,
    /// it also listens on `127.0.0.1:<port>` with the `gen-certs` files of that directory.
    pub fn start(dir: &Path, run: usize, remote: Option<(u16, &Path)>) -> ExternalStore {
        let log = dir.join(format!("store-{run}.log"));
        let mut command = Command::new(bin("portcullis-store"));
        command
            .arg("--data-dir")
            .arg(dir.join("store-data"))
            .arg("--socket")
            .arg(Self::socket_in(dir))
            .arg("--exit-on-stdin-eof");
        if let Some((port, certs)) = remote {
            command
                .args(["--remote-listen", &format!("127.0.0.1:{port}")])
                .arg("--remote-ca-file")
                .arg(certs.join("ca.pem"))
                .arg("--remote-cert-file")
                .arg(certs.join("store.pem"))
                .arg("--remote-key-file")
                .arg(certs.join("store.key"));
        }
        let child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut store = ExternalStore { child, log };
        wait_for("the store to be ready", READY_TIMEOUT, || {
            if let Some(status) = store.child.try_wait().unwrap() {
                panic!("store exited ({status}): {}", store.log());
            }
            store.log().contains("store ready").then_some(())
        });
        store
    }

    /// The Unix socket a store started in `dir` listens on.
    pub fn socket_in(dir: &Path) -> PathBuf {
        dir.join("store.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ExternalStore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- store log ----\n{}", self.log());
        }
    }
}
