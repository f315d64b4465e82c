//! The server loop in-process, over the in-memory engine: hello, pipelining, every way a peer can
//! misbehave (each must end only its own link), the uid check, the syncer and shutdown.

use super::*;
use crate::engine::memory::MemoryEngine;
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::body::{PinAddr, PinKind};
use portcullis_protocol::store::{
    Acting, ClientHello, ClientRole, DeviceScope, NodeName, Party, PinWrite, ReplyEnvelope,
    Request, RequestEnvelope, Response, ServerHello, StoreError, TemplateId, TrafficLink,
    WIRE_VERSION, decode_frame, encode_frame,
};

/// Management requests act as the operator (these tests' links are admin links); device
/// traffic acts for nobody.
fn acting_for(request: &Request) -> Option<Acting> {
    (!request.acts_for_nobody()).then(|| Acting {
        party: Party::Operator,
        from: "local".into(),
    })
}

fn template() -> TemplateId {
    TemplateId::parse("TMPL1").expect("valid")
}
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

const WAIT: Duration = Duration::from_secs(10);

struct Running {
    _dir: tempfile::TempDir,
    path: PathBuf,
    engine: Arc<MemoryEngine>,
    shutdown: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Running {
    fn start(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.sock");
        let engine = Arc::new(MemoryEngine::new());
        let store = Arc::new(Store::open(Arc::clone(&engine)).expect("store"));
        let operator = Acting {
            party: Party::Operator,
            from: "local".into(),
        };
        let made = store.handle_as(
            Some(&operator),
            Request::CreateTemplate {
                org: OrgId::ROOT,
                id: template(),
                name: "t".into(),
                datastreams: Vec::new(),
            },
        );
        assert!(made.is_ok(), "{made:?}");
        let server = Server::bind(&path).expect("bind");
        let shutdown = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&shutdown);
        let handle = thread::spawn(move || server.run(store, config, flag));
        Self {
            _dir: dir,
            path,
            engine,
            shutdown,
            handle: Some(handle),
        }
    }

    fn stop(&mut self) -> Result<(), ServerError> {
        self.shutdown.store(true, Ordering::SeqCst);
        let handle = self.handle.take().expect("running");
        let started = Instant::now();
        while !handle.is_finished() {
            assert!(started.elapsed() < WAIT, "server did not stop in time");
            thread::sleep(Duration::from_millis(10));
        }
        handle.join().expect("server thread")
    }

    fn connect(&self) -> Client {
        let stream = UnixStream::connect(&self.path).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn hello(&self) -> Client {
        let mut c = self.connect();
        c.send(&ClientHello::new(
            NodeName::from_static("test"),
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
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::SeqCst);
    }
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    fn send<T: serde::Serialize>(&mut self, msg: &T) {
        let mut out = Vec::new();
        encode_frame(msg, &mut out).expect("encode");
        self.stream.write_all(&out).expect("send");
    }

    fn request(&mut self, id: u64, request: Request) {
        self.send(&RequestEnvelope {
            id,
            acting: acting_for(&request),
            request,
        });
    }

    /// The next message, or `None` once the server closed the link.
    fn recv<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        loop {
            if let Some((msg, used)) =
                decode_frame::<T>(&self.buf).expect("server frames are valid")
            {
                self.buf.drain(..used);
                return Some(msg);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn reply(&mut self) -> ReplyEnvelope {
        self.recv().expect("a reply")
    }

    fn call(&mut self, id: u64, request: Request) -> Result<Response, StoreError> {
        self.request(id, request);
        let reply = self.reply();
        assert_eq!(reply.id, id);
        reply.result
    }

    fn closed(&mut self) -> bool {
        self.recv::<ReplyEnvelope>().is_none()
    }
}

fn create_request(token: u8) -> Request {
    Request::CreateDevice {
        org: OrgId::ROOT,
        template: template(),
        owner: None,
        name: format!("d{token}"),
        token_hash: [token; 32],
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_with_their_ids() {
    let running = Running::start(ServerConfig::default());
    let mut c = running.hello();
    let mut batch = Vec::new();
    let requests = [
        (70, Request::Ping),
        (8, create_request(1)),
        (900, Request::GetDevice { device: 1 }),
        (5, Request::GetDevice { device: 2 }),
    ];
    for (id, request) in requests {
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
    c.stream
        .write_all(&batch)
        .expect("one write for four requests");
    let replies: Vec<ReplyEnvelope> = (0..4).map(|_| c.reply()).collect();
    assert_eq!(
        replies.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![70, 8, 900, 5]
    );
    assert_eq!(replies[0].result, Ok(Response::Pong));
    assert!(matches!(&replies[1].result, Ok(Response::Device(d)) if d.id == 1));
    assert!(matches!(&replies[2].result, Ok(Response::Device(d)) if d.name == "d1"));
    assert!(matches!(&replies[3].result, Err(StoreError::NotFound(_))));
}

#[test]
fn a_request_split_across_writes_is_reassembled() {
    let running = Running::start(ServerConfig::default());
    let mut c = running.hello();
    let mut frame = Vec::new();
    encode_frame(
        &RequestEnvelope {
            id: 3,
            acting: acting_for(&create_request(4)),
            request: create_request(4),
        },
        &mut frame,
    )
    .expect("encode");
    for byte in &frame {
        c.stream
            .write_all(std::slice::from_ref(byte))
            .expect("write");
    }
    assert!(matches!(c.reply().result, Ok(Response::Device(_))));
}

#[test]
fn a_wrong_wire_version_is_refused_and_closed() {
    let running = Running::start(ServerConfig::default());
    let mut c = running.connect();
    c.send(&ClientHello {
        version: WIRE_VERSION + 1,
        ..ClientHello::new(
            NodeName::from_static("gw1"),
            ClientRole::DeviceTraffic(TrafficLink::Control),
        )
    });
    match c.recv::<ServerHello>() {
        Some(ServerHello::Refused { version, reason }) => {
            assert_eq!(version, WIRE_VERSION);
            assert!(
                reason.contains(&format!("not {}", WIRE_VERSION + 1)),
                "{reason}"
            );
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(c.closed());
}

#[test]
fn a_foreign_uid_is_refused_without_reading_its_hello() {
    let ours = nix::unistd::geteuid().as_raw();
    let running = Running::start(ServerConfig {
        allowed_uid: ours.wrapping_add(1),
        ..ServerConfig::default()
    });
    let mut c = running.connect();
    let mut frame = Vec::new();
    encode_frame(
        &ClientHello::new(NodeName::from_static("test"), ClientRole::Admin),
        &mut frame,
    )
    .expect("encode");
    let _ = c.stream.write_all(&frame); // may already be closed
    match c.recv::<ServerHello>() {
        Some(ServerHello::Refused { version, reason }) => {
            assert_eq!(
                version, WIRE_VERSION,
                "same version: not a version mismatch"
            );
            assert!(reason.contains(&format!("peer uid {ours}")), "{reason}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(c.recv::<ServerHello>().is_none(), "and the link is closed");
}

#[test]
fn an_oversize_frame_closes_only_its_link_after_answering_what_came_before() {
    let running = Running::start(ServerConfig::default());
    let mut bad = running.hello();
    let mut good = running.hello();
    let mut bytes = Vec::new();
    encode_frame(
        &RequestEnvelope {
            id: 1,
            acting: acting_for(&Request::Ping),
            request: Request::Ping,
        },
        &mut bytes,
    )
    .expect("encode");
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    bad.stream.write_all(&bytes).expect("write");
    assert_eq!(
        bad.reply(),
        ReplyEnvelope {
            id: 1,
            result: Ok(Response::Pong)
        }
    );
    assert!(bad.closed());
    assert_eq!(good.call(2, Request::Ping), Ok(Response::Pong));
    assert_eq!(
        running.hello().call(3, Request::Ping),
        Ok(Response::Pong),
        "new links still accepted"
    );
}

#[test]
fn malformed_frames_half_frames_and_silent_peers_close_only_their_link() {
    let running = Running::start(ServerConfig {
        hello_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    let mut good = running.hello();

    let mut garbage = running.hello();
    garbage
        .stream
        .write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .expect("write");
    assert!(garbage.closed());

    let mut garbage_hello = running.connect();
    garbage_hello
        .stream
        .write_all(&[0, 0, 0, 2, 0xff, 0xff])
        .expect("write");
    assert!(garbage_hello.recv::<ServerHello>().is_none());

    let mut half = running.hello();
    half.stream
        .write_all(&[0, 0, 0, 50, 1, 2, 3])
        .expect("write");
    half.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half close");
    assert!(half.closed());

    let mut silent = running.connect();
    let started = Instant::now();
    assert!(
        silent.recv::<ServerHello>().is_none(),
        "a link without hello is dropped"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));

    assert_eq!(good.call(9, create_request(1)).map(|_| ()), Ok(()));
}

#[test]
fn a_reply_over_the_frame_limit_becomes_an_error_reply() {
    let running = Running::start(ServerConfig::default());
    let mut c = running.hello();
    assert!(c.call(1, create_request(1)).is_ok());
    for round in 0..2u8 {
        let writes = (0..60u8)
            .map(|p| PinWrite {
                device: 1,
                pin: PinAddr::new(PinKind::Virtual, round * 60 + p),
                value: vec![b'x'; 65_000],
                at_ms: 1,
            })
            .collect();
        assert_eq!(
            c.call(10 + u64::from(round), Request::WritePins { writes }),
            Ok(Response::Done)
        );
    }
    match c.call(
        20,
        Request::ReadPins {
            device: 1,
            pins: None,
        },
    ) {
        Err(StoreError::Invalid(why)) => assert!(why.contains("frame limit"), "{why}"),
        other => panic!(
            "expected an error reply, got {:?}",
            other.map(|_| "a response")
        ),
    }
    assert_eq!(
        c.call(21, Request::Ping),
        Ok(Response::Pong),
        "the link survives"
    );
}

#[test]
fn the_syncer_syncs_periodically() {
    let running = Running::start(ServerConfig {
        sync_interval: Duration::from_millis(20),
        ..ServerConfig::default()
    });
    let started = Instant::now();
    while running.engine.sync_count() < 5 {
        assert!(
            started.elapsed() < WAIT,
            "only {} syncs",
            running.engine.sync_count()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn shutdown_answers_links_syncs_and_removes_the_socket() {
    let mut running = Running::start(ServerConfig {
        sync_interval: Duration::from_secs(3600),
        ..ServerConfig::default()
    });
    let mut c = running.hello();
    assert!(c.call(1, create_request(1)).is_ok());
    let syncs = running.engine.sync_count();
    let started = Instant::now();
    running.stop().expect("clean stop");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopped in {:?}",
        started.elapsed()
    );
    assert!(running.engine.sync_count() > syncs, "a final WAL sync ran");
    assert!(!running.path.exists(), "socket file removed");
    assert!(c.closed(), "open links are closed");
    assert!(UnixStream::connect(&running.path).is_err());
}

fn create_request_n(n: u32) -> Request {
    let mut token_hash = [0u8; 32];
    token_hash[..4].copy_from_slice(&n.to_be_bytes());
    Request::CreateDevice {
        org: OrgId::ROOT,
        template: template(),
        owner: None,
        name: format!("d{n}"),
        token_hash,
    }
}

/// Pipelined creations on one link share group commits: far fewer WAL syncs than creations.
#[test]
fn pipelined_writes_share_syncs() {
    const N: u32 = 2000;
    let running = Running::start(ServerConfig {
        commit_window: Duration::from_millis(2),
        ..ServerConfig::default()
    });
    let mut c = running.hello();
    let syncs_before = running.engine.sync_count();
    let mut batch = Vec::new();
    for n in 1..=N {
        let request = create_request_n(n);
        encode_frame(
            &RequestEnvelope {
                id: u64::from(n),
                acting: acting_for(&request),
                request,
            },
            &mut batch,
        )
        .expect("encode");
    }
    let mut writer = c.stream.try_clone().expect("clone");
    let sender = thread::spawn(move || writer.write_all(&batch).expect("send"));
    for n in 1..=N {
        let created = c.reply();
        assert_eq!(created.id, u64::from(n));
        assert!(
            matches!(&created.result, Ok(Response::Device(d)) if d.id == u64::from(n)),
            "{created:?}"
        );
    }
    sender.join().expect("sender");
    let syncs = running.engine.sync_count() - syncs_before;
    assert!(
        syncs < u64::from(N) / 4,
        "{N} creations took {syncs} WAL syncs: they were not grouped"
    );
}

/// A read pipelined after a write of the same link sees that write and none of the link's later
/// writes, and every reply comes back in request order.
#[test]
fn reads_see_exactly_the_writes_before_them() {
    const N: u32 = 500;
    let running = Running::start(ServerConfig::default());
    let mut c = running.hello();
    let mut batch = Vec::new();
    for n in 1..=N {
        let id = u64::from(n) * 2;
        encode_frame(
            &RequestEnvelope {
                id,
                acting: acting_for(&create_request_n(n)),
                request: create_request_n(n),
            },
            &mut batch,
        )
        .expect("encode");
        let request = Request::ListDevices {
            after: None,
            limit: 10_000,
            scope: DeviceScope::All,
        };
        encode_frame(
            &RequestEnvelope {
                id: id + 1,
                acting: acting_for(&request),
                request,
            },
            &mut batch,
        )
        .expect("encode");
    }
    let mut writer = c.stream.try_clone().expect("clone");
    let sender = thread::spawn(move || writer.write_all(&batch).expect("send"));
    for n in 1..=N {
        let created = c.reply();
        assert_eq!(created.id, u64::from(n) * 2);
        let read = c.reply();
        assert_eq!(read.id, u64::from(n) * 2 + 1);
        assert!(
            matches!(&read.result, Ok(Response::Devices(d)) if d.len() == n as usize),
            "the read after creation {n} must see exactly {n} devices: {:?}",
            read.result.as_ref().map(|r| match r {
                Response::Devices(d) => d.len(),
                _ => 0,
            })
        );
    }
    sender.join().expect("sender");
}

/// Writes from several links land in shared groups, and nobody's reply is lost or crossed.
#[test]
fn writes_from_many_links_are_all_answered() {
    let running = Running::start(ServerConfig::default());
    thread::scope(|scope| {
        for link in 0..4u32 {
            let running = &running;
            scope.spawn(move || {
                let mut c = running.hello();
                let mut batch = Vec::new();
                for i in 0..250u32 {
                    let n = link * 1000 + i + 1;
                    encode_frame(
                        &RequestEnvelope {
                            id: u64::from(n),
                            acting: acting_for(&create_request_n(n)),
                            request: create_request_n(n),
                        },
                        &mut batch,
                    )
                    .expect("encode");
                }
                c.stream.write_all(&batch).expect("send");
                for i in 0..250u32 {
                    let reply = c.reply();
                    assert_eq!(reply.id, u64::from(link * 1000 + i + 1));
                    assert!(matches!(reply.result, Ok(Response::Device(_))), "{reply:?}");
                }
            });
        }
    });
    let mut c = running.hello();
    let Ok(Response::Devices(all)) = c.call(
        1,
        Request::ListDevices {
            after: None,
            limit: 10_000,
            scope: DeviceScope::All,
        },
    ) else {
        panic!("list");
    };
    let mut ids: Vec<u64> = all.iter().map(|d| d.id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=1000).collect::<Vec<u64>>(),
        "ids are unique and gapless"
    );
}

#[test]
fn only_admin_links_may_manage_the_keys_and_take_backups() {
    let running = Running::start(ServerConfig::default());
    let mut gateway = running.connect();
    gateway.send(&ClientHello::new(
        NodeName::from_static("gw1"),
        ClientRole::DeviceTraffic(TrafficLink::Shard(0)),
    ));
    assert!(matches!(
        gateway.recv::<ServerHello>(),
        Some(ServerHello::Accepted { .. })
    ));
    for (id, request) in [
        Request::ReloadKeys,
        Request::KeyUsage,
        Request::Reseal { after: None },
        Request::Backup {
            dir: "/tmp/portcullis-backup-refused".into(),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let err = gateway.call(id as u64, request).expect_err("refused");
        assert!(
            matches!(&err, StoreError::Invalid(m) if m.contains("only an admin link")),
            "{err}"
        );
    }
    assert_eq!(gateway.call(9, Request::Ping), Ok(Response::Pong));
    // An admin link gets through to the store, which has no keys here.
    let err = running
        .hello()
        .call(1, Request::ReloadKeys)
        .expect_err("clear store");
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("does not encrypt")),
        "{err}"
    );
}

/// The one client against the real server: a node name the store cannot use is refused at the
/// hello with what to change, and each role's refusals come back as clear request errors on a
/// link that stays up.
#[test]
fn the_store_client_hears_the_hello_refusal_and_each_roles_limits() {
    use portcullis_store_client::{StoreClient, StoreClientError};
    let running = Running::start(ServerConfig::default());
    let bad_node: NodeName =
        postcard::from_bytes(&postcard::to_stdvec("gw 1").expect("encodes")).expect("decodes");
    let err = StoreClient::connect(
        &running.path,
        ClientHello::new(bad_node, ClientRole::Admin),
        WAIT,
    )
    .expect_err("refused");
    assert!(matches!(err, StoreClientError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("server.node_name"), "{err}");

    let mut metrics = StoreClient::connect(
        &running.path,
        ClientHello::new(NodeName::from_static("gw1"), ClientRole::Metrics),
        WAIT,
    )
    .expect("a metrics link opens");
    assert!(matches!(
        metrics.call(Request::Stats),
        Ok(Response::Stats(_))
    ));
    let err = metrics
        .call(Request::GetDevice { device: 1 })
        .expect_err("read-only");
    assert!(
        err.to_string()
            .contains("a metrics link may send only Ping and Stats, not GetDevice"),
        "{err}"
    );
    metrics.ping().expect("the link stays up after a refusal");

    let mut shard = StoreClient::connect(
        &running.path,
        ClientHello::new(
            NodeName::from_static("gw1"),
            ClientRole::DeviceTraffic(TrafficLink::Shard(0)),
        ),
        WAIT,
    )
    .expect("a device-traffic link opens");
    let err = shard
        .call(Request::ResetPresence {
            node: NodeName::from_static("gw2"),
        })
        .expect_err("another node's presence");
    assert!(
        err.to_string()
            .contains("may change only its own node's presence"),
        "{err}"
    );
    assert_eq!(
        shard
            .call(Request::ResetPresence {
                node: NodeName::from_static("gw1"),
            })
            .expect("its own node"),
        Response::Done
    );
}
