//! The real `portcullis-store` binary on a temporary data directory: the wire end to end, a bad
//! peer not hurting others, SIGKILL and restart keeping acknowledged writes, the socket's mode,
//! graceful exits (SIGTERM, stdin EOF) and refusing to start twice. Every wait is bounded.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{
    Acting, ClientHello, ClientRole, DeviceAuth, NodeName, Party, PinWrite, ReplyEnvelope, Request,
    RequestEnvelope, Response, ServerHello, SessionTag, StoreError, TemplateId, TokenHash,
    WIRE_VERSION, decode_frame, encode_frame,
};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const STARTUP: Duration = Duration::from_secs(30);
const IO_WAIT: Duration = Duration::from_secs(10);

struct Store {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

fn spawn(data: &Path, socket: &Path, log: &Path) -> Child {
    spawn_with(data, socket, log, &[])
}

fn spawn_with(data: &Path, socket: &Path, log: &Path, extra: &[&std::ffi::OsStr]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_portcullis-store"))
        .arg("--data-dir")
        .arg(data)
        .arg("--socket")
        .arg(socket)
        .arg("--exit-on-stdin-eof")
        .args(extra)
        .stdin(Stdio::piped()) // dropped with the test: the store exits even if we panic
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn portcullis-store")
}

impl Store {
    /// Starts the store and waits until it answers a hello.
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// Like [`Store::start`], with extra command-line options.
    fn start_with(dir: &Path, extra: &[&std::ffi::OsStr]) -> Self {
        let socket = dir.join("store.sock");
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let log = dir.join(format!(
            "store-{}.log",
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut child = spawn_with(&dir.join("data"), &socket, &log, extra);
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "store exited early with {status}: {}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if let Ok(stream) = UnixStream::connect(&socket) {
                drop(stream);
                break;
            }
            assert!(
                started.elapsed() < STARTUP,
                "store not ready: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
        Self { child, socket, log }
    }

    fn hello(&self) -> Client {
        let mut c = Client::connect(&self.socket);
        // An admin link: the tests make devices (acting as the operator) and send their
        // traffic (acting for nobody) on one link.
        c.send(&ClientHello::new(
            NodeName::from_static("gw1"),
            ClientRole::Admin,
        ));
        assert_eq!(
            c.recv::<ServerHello>(),
            Some(ServerHello::Accepted {
                version: WIRE_VERSION
            })
        );
        c
    }

    fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        kill(Pid::from_raw(pid), signal).expect("kill");
    }

    fn wait_exit(&mut self) -> ExitStatus {
        wait_exit(&mut self.child, &self.log)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn wait_exit(child: &mut Child, log: &Path) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            started.elapsed() < IO_WAIT,
            "store did not exit: {}",
            fs::read_to_string(log).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).expect("connect");
        stream
            .set_read_timeout(Some(IO_WAIT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(IO_WAIT))
            .expect("write timeout");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    fn send<T: serde::Serialize>(&mut self, msg: &T) {
        let mut out = Vec::new();
        encode_frame(msg, &mut out).expect("encode");
        self.stream.write_all(&out).expect("send");
    }

    fn recv<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        loop {
            if let Some((msg, used)) =
                decode_frame::<T>(&self.buf).expect("valid frame from the store")
            {
                self.buf.drain(..used);
                return Some(msg);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read from store: {e}"),
            }
        }
    }

    fn call(&mut self, id: u64, request: Request) -> Result<Response, StoreError> {
        self.send(&RequestEnvelope {
            id,
            acting: acting_for(&request),
            request,
        });
        let reply: ReplyEnvelope = self.recv().expect("a reply");
        assert_eq!(reply.id, id, "reply echoes the request id");
        reply.result
    }
}

fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Management requests act as the operator; device traffic acts for nobody.
fn acting_for(request: &Request) -> Option<Acting> {
    (!request.acts_for_nobody()).then(|| Acting {
        party: Party::Operator,
        from: "local".into(),
    })
}

fn template() -> TemplateId {
    TemplateId::parse("TMPL0001").expect("valid")
}

/// Creates a device of the root (with template `TMPL0001`, made first if it is not there yet).
fn create(c: &mut Client, id: u64, name: &str, token: &str) -> u64 {
    let made = c.call(
        id + 1_000_000,
        Request::CreateTemplate {
            org: OrgId::ROOT,
            id: template(),
            name: "greenhouse sensor".into(),
            datastreams: Vec::new(),
        },
    );
    assert!(
        matches!(&made, Ok(Response::Template(_)))
            || matches!(&made, Err(StoreError::Invalid(m)) if m.contains("taken")),
        "{made:?}"
    );
    let request = Request::CreateDevice {
        org: OrgId::ROOT,
        template: template(),
        owner: None,
        name: name.into(),
        token_hash: token_hash(token),
    };
    match c.call(id, request) {
        Ok(Response::Device(d)) => d.id,
        other => panic!("create: {other:?}"),
    }
}

fn v(pin: u8) -> PinAddr {
    PinAddr::new(PinKind::Virtual, pin)
}

#[test]
fn speaks_the_wire_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::start(dir.path());
    let mut c = store.hello();
    let device = create(&mut c, 1, "greenhouse", "tok-greenhouse-0123456789abcdef");
    assert_eq!(device, 1);

    let auth = c.call(
        2,
        Request::Authenticate {
            token_hash: token_hash("tok-greenhouse-0123456789abcdef"),
        },
    );
    let expected = DeviceAuth {
        device,
        org: OrgId::ROOT,
        template: template(),
    };
    assert_eq!(auth, Ok(Response::Authenticated(Some(expected))));
    let wrong = c.call(
        3,
        Request::Authenticate {
            token_hash: token_hash("tok-greenhouse-0123456789abcdeF"),
        },
    );
    assert_eq!(wrong, Ok(Response::Authenticated(None)));
    let dup = Request::CreateDevice {
        org: OrgId::ROOT,
        template: template(),
        owner: None,
        name: "copy".into(),
        token_hash: token_hash("tok-greenhouse-0123456789abcdef"),
    };
    assert!(matches!(c.call(4, dup), Err(StoreError::Invalid(_))));

    let writes = vec![
        PinWrite {
            device,
            pin: v(1),
            value: b"21.5".to_vec(),
            at_ms: 1000,
        },
        PinWrite {
            device,
            pin: v(2),
            value: b"on\0off".to_vec(),
            at_ms: 1001,
        },
    ];
    assert_eq!(c.call(5, Request::WritePins { writes }), Ok(Response::Done));
    match c.call(6, Request::ReadPins { device, pins: None }) {
        Ok(Response::Pins(pins)) => {
            let got: Vec<_> = pins
                .iter()
                .map(|p| (p.pin, p.value.as_slice(), p.at_ms))
                .collect();
            assert_eq!(
                got,
                vec![(v(1), &b"21.5"[..], 1000), (v(2), &b"on\0off"[..], 1001)]
            );
        }
        other => panic!("read pins: {other:?}"),
    }

    // Pipelined: many requests in one write, replies in order with their ids.
    let ids: Vec<u64> = (0..64u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let mut batch = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let request = if i % 2 == 0 {
            Request::WritePins {
                writes: vec![PinWrite {
                    device,
                    pin: v(10),
                    value: i.to_string().into_bytes(),
                    at_ms: i as u64,
                }],
            }
        } else {
            Request::ReadPins {
                device,
                pins: Some(vec![v(10)]),
            }
        };
        encode_frame(
            &RequestEnvelope {
                id,
                acting: acting_for(&request),
                request,
            },
            &mut batch,
        )
        .expect("encode");
    }
    c.stream.write_all(&batch).expect("pipelined write");
    for (i, &id) in ids.iter().enumerate() {
        let reply: ReplyEnvelope = c.recv().expect("pipelined reply");
        assert_eq!(reply.id, id, "reply {i} out of order");
        if i % 2 == 1 {
            let Ok(Response::Pins(pins)) = reply.result else {
                panic!("reply {i}: {:?}", reply.result)
            };
            assert_eq!(
                pins[0].value,
                (i - 1).to_string().into_bytes(),
                "each read sees the write before it"
            );
        }
    }
}

#[test]
fn an_oversize_frame_drops_only_that_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::start(dir.path());
    let mut bad = store.hello();
    let mut good = store.hello();
    bad.stream
        .write_all(&(64u32 * 1024 * 1024).to_be_bytes())
        .expect("write prefix");
    assert!(
        bad.recv::<ReplyEnvelope>().is_none(),
        "the bad link is closed"
    );
    assert_eq!(good.call(1, Request::Ping), Ok(Response::Pong));
    let mut fresh = store.hello();
    assert_eq!(fresh.call(2, Request::Ping), Ok(Response::Pong));
    let started = Instant::now();
    while !store.log().contains("exceeds") {
        assert!(
            started.elapsed() < IO_WAIT,
            "the reason is not logged: {}",
            store.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_after_acknowledged_writes_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::start(dir.path());
    let mut c = store.hello();
    let device = create(&mut c, 1, "survivor", "tok-survivor");
    let online = Request::SetPresence {
        device,
        presence: portcullis_protocol::store::Presence::Online {
            addr: "10.1.1.1:4000".into(),
            session: SessionTag {
                node: NodeName::from_static("gw1"),
                local: 1,
            },
        },
        at_ms: 7,
    };
    assert_eq!(c.call(2, online), Ok(Response::Done));
    let writes = vec![PinWrite {
        device,
        pin: v(3),
        value: b"buffered".to_vec(),
        at_ms: 8,
    }];
    assert_eq!(c.call(3, Request::WritePins { writes }), Ok(Response::Done));
    store.signal(Signal::SIGKILL);
    let status = store.wait_exit();
    assert!(!status.success());
    assert!(
        store.socket.exists(),
        "a killed store leaves its socket file behind"
    );
    drop(store);

    let store = Store::start(dir.path()); // must clear the stale socket
    let mut c = store.hello();
    match c.call(1, Request::GetDevice { device }) {
        Ok(Response::Device(d)) => {
            assert_eq!(
                (d.name.as_str(), d.sessions, d.last_addr.as_deref()),
                ("survivor", 1, Some("10.1.1.1:4000"))
            );
        }
        other => panic!("device lost: {other:?}"),
    }
    let auth = c.call(
        2,
        Request::Authenticate {
            token_hash: token_hash("tok-survivor"),
        },
    );
    assert!(matches!(auth, Ok(Response::Authenticated(Some(a))) if a.device == device));
    // A process crash keeps buffered writes too: they were in the WAL (the OS) before the reply.
    match c.call(3, Request::ReadPins { device, pins: None }) {
        Ok(Response::Pins(p)) => assert_eq!(
            p.first().map(|p| p.value.as_slice()),
            Some(&b"buffered"[..])
        ),
        other => panic!("read pins: {other:?}"),
    }
    assert_eq!(
        create(&mut c, 4, "next", "tok-next"),
        device + 1,
        "the id counter survived"
    );
}

#[test]
fn the_socket_is_private_and_sigterm_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::start(dir.path());
    let meta = fs::symlink_metadata(&store.socket).expect("stat socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.mode() & 0o777,
        0o600,
        "socket mode is {:o}",
        meta.mode() & 0o777
    );
    let data_mode = fs::metadata(dir.path().join("data"))
        .expect("stat data")
        .mode()
        & 0o777;
    assert_eq!(data_mode, 0o700, "data dir mode is {data_mode:o}");

    let mut c = store.hello();
    create(&mut c, 1, "d", "t");
    store.signal(Signal::SIGTERM);
    let status = store.wait_exit();
    assert_eq!(status.code(), Some(0), "log: {}", store.log());
    assert!(!store.socket.exists(), "socket removed on shutdown");
    assert!(c.recv::<ReplyEnvelope>().is_none(), "open links are closed");
    let log = store.log();
    assert!(
        log.contains("store ready") && log.contains("WAL synced"),
        "log: {log}"
    );
}

#[test]
fn stdin_eof_shuts_the_store_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::start(dir.path());
    drop(store.child.stdin.take());
    assert_eq!(store.wait_exit().code(), Some(0), "log: {}", store.log());
    assert!(!store.socket.exists());
}

#[test]
fn a_second_store_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::start(dir.path());

    // Same socket, another data dir: the live socket is not stolen.
    let log = dir.path().join("second.log");
    let mut second = spawn(&dir.path().join("other-data"), &store.socket, &log);
    let status = wait_exit(&mut second, &log);
    assert!(!status.success());
    assert!(
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("already listening")
    );

    // Same data dir, another socket: RocksDB's lock refuses it.
    let log = dir.path().join("third.log");
    let mut third = spawn(
        &dir.path().join("data"),
        &dir.path().join("other.sock"),
        &log,
    );
    let status = wait_exit(&mut third, &log);
    assert!(!status.success());
    assert!(
        fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("in use by another store process")
    );

    assert_eq!(
        store.hello().call(1, Request::Ping),
        Ok(Response::Pong),
        "the first store is unharmed"
    );
}

#[test]
fn help_explains_the_flags_and_the_durability_contract() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis-store"))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--data-dir",
        "--socket",
        "--sync-interval-ms",
        "--exit-on-stdin-eof",
        "--log-format",
        "fsynced",
        "power loss",
        "--commit-window-us",
        "--block-cache-mib",
        "--history-retention-days",
        "--key-file",
        "--restore",
        "rotate-key",
        "reseal",
        "SIGHUP",
        "point-in-time",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

/// Encryption at rest with the real binary: nothing readable on disk, the key file made by
/// `rotate-key`, a wrong or missing key stops the store with a reason, a rotated key file keeps
/// the old data readable.
#[test]
fn an_encrypted_store_keeps_its_secrets_and_refuses_the_wrong_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("store.keys");
    let rotate = |file: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis-store"))
            .arg("rotate-key")
            .arg("--key-file")
            .arg(file)
            .output()
            .expect("rotate-key");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rotate(&keys);
    assert_eq!(fs::metadata(&keys).expect("key file").mode() & 0o777, 0o600);
    let with_key = |file: &Path| vec![std::ffi::OsString::from("--key-file"), file.into()];
    let args = with_key(&keys);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    {
        let mut store = Store::start_with(dir.path(), &args);
        let mut c = store.hello();
        create(&mut c, 1, "secret-device-name", "tok-secret");
        drop(c);
        store.signal(Signal::SIGTERM);
        assert!(store.wait_exit().success());
    }
    let name_on_disk = |data: &Path| {
        fs::read_dir(data).expect("data dir").any(|entry| {
            let bytes = fs::read(entry.expect("entry").path()).expect("read");
            bytes.windows(18).any(|w| w == b"secret-device-name")
        })
    };
    assert!(
        !name_on_disk(&dir.path().join("data")),
        "the device name is on disk in clear"
    );
    // The same check on a store without a key finds it, so the check can fail.
    let clear = tempfile::tempdir().expect("tempdir");
    {
        let mut store = Store::start(clear.path());
        create(&mut store.hello(), 1, "secret-device-name", "tok-secret");
        store.signal(Signal::SIGTERM);
        assert!(store.wait_exit().success());
    }
    assert!(name_on_disk(&clear.path().join("data")));

    let other = dir.path().join("other.keys");
    rotate(&other);
    for (extra, needle) in [
        (with_key(&other), "wrong key file"),
        (Vec::new(), "encrypted at rest"),
    ] {
        let log = dir.path().join("refused.log");
        let extra: Vec<&std::ffi::OsStr> = extra.iter().map(|a| a.as_os_str()).collect();
        let mut child = spawn_with(
            &dir.path().join("data"),
            &dir.path().join("refused.sock"),
            &log,
            &extra,
        );
        let status = wait_exit(&mut child, &log);
        assert!(!status.success());
        let text = fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }

    rotate(&keys);
    let mut store = Store::start_with(dir.path(), &args);
    let mut c = store.hello();
    let Ok(Response::Device(d)) = c.call(2, Request::GetDevice { device: 1 }) else {
        panic!("the device sealed with key 1 is readable after rotating to key 2");
    };
    assert_eq!(d.name, "secret-device-name");
    assert_eq!(create(&mut c, 3, "sealed-with-two", "tok-2"), 2);
    drop(c);
    store.signal(Signal::SIGTERM);
    assert!(store.wait_exit().success(), "{}", store.log());
}

#[test]
fn systemd_hears_ready_once_the_socket_is_bound_and_stopping_at_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let socket = dir.path().join("store.sock");
    let log = dir.path().join("store.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis-store"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--socket")
        .arg(&socket)
        .arg("--exit-on-stdin-eof")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn portcullis-store");
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("a notification");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(first.contains("READY=1"), "{first}");
    assert!(socket.exists(), "READY comes after the socket is bound");
    drop(child.stdin.take());
    let n = notify.recv(&mut buf).expect("a second notification");
    let second = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(second.contains("STOPPING=1"), "{second}");
    let status = child.wait().expect("exits");
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}
