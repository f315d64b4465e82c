//! Question: how much gateway memory does one idle, logged-in device connection cost, plain and
//! TLS? Budget: ≤ 512 bytes (plain) and ≤ 4 KiB (TLS) beyond the kernel's own socket memory.
//!
//! Starts the real release binaries, provisions N devices straight through the store link,
//! measures the gateway's resident memory, opens N connections that log in and send their info,
//! waits for them to settle idle, and measures again. The kernel's share is reported separately:
//! slab memory from /proc/meminfo (socket structures, both ends) and TCP buffer pages from
//! /proc/net/sockstat. N defaults to 10,000 (`IDLE_CONNECTIONS=N`).
//! Run: `cargo build --release --bins && cargo bench -p portcullis-bench --bench idle_memory`.

#![allow(clippy::unwrap_used)]

use portcullis_e2e::Gateway;
use portcullis_e2e::device::client_config;
use portcullis_protocol::Command;
use portcullis_protocol::authz::OrgId;
use portcullis_protocol::frame;
use portcullis_protocol::store::{
    Acting, ClientHello, ClientRole, NodeName, Party, Request, Response, TemplateId,
};
use portcullis_protocol::token::DeviceToken;
use portcullis_store_client::StoreClient;
use rustls::pki_types::ServerName;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    kb * 1024
}

/// Kernel slab memory (socket, inode, dentry and TCP structures live there), in bytes. Both ends
/// of every connection are on this machine, so the delta covers two sockets per connection.
fn kernel_slab_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let line = meminfo.lines().find(|l| l.starts_with("Slab:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Kernel memory charged to TCP socket buffers, in bytes (pages × 4096); idle sockets hold none.
fn kernel_tcp_bytes() -> u64 {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap();
    let line = sockstat.lines().find(|l| l.starts_with("TCP:")).unwrap();
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            return words.next().unwrap().parse::<u64>().unwrap() * 4096;
        }
    }
    0
}

fn provision(gw: &Gateway, n: usize) -> Vec<String> {
    let mut client = StoreClient::connect(
        &gw.data_dir.join("store.sock"),
        ClientHello::new(NodeName::from_static("bench"), ClientRole::Admin),
        Duration::from_secs(10),
    )
    .unwrap();
    let operator = Acting {
        party: Party::Operator,
        from: "local".into(),
    };
    let template = TemplateId::parse("TMPLBENCH").unwrap();
    let made = client.call_as(
        Some(&operator),
        Request::CreateTemplate {
            org: OrgId::ROOT,
            id: template.clone(),
            name: "bench".into(),
            datastreams: Vec::new(),
        },
    );
    assert!(matches!(made, Ok(Response::Template(_))), "{made:?}");
    let mut tokens = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(1000) {
        let count = 1000.min(n - chunk * 1000);
        let batch: Vec<DeviceToken> = (0..count)
            .map(|_| DeviceToken::generate().unwrap())
            .collect();
        let requests = batch
            .iter()
            .enumerate()
            .map(|(i, t)| Request::CreateDevice {
                org: OrgId::ROOT,
                template: template.clone(),
                owner: None,
                name: format!("idle-{}", chunk * 1000 + i),
                token_hash: t.hash(),
            })
            .collect();
        for reply in client.call_many_as(Some(&operator), requests).unwrap() {
            assert!(matches!(reply, Ok(Response::Device(_))), "{reply:?}");
        }
        tokens.extend(batch.iter().map(|t| t.expose().to_string()));
    }
    tokens
}

fn login_frames(token: &str) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(&mut out, Command::HardwareLogin, 1, token.as_bytes()).unwrap();
    frame::encode_args(
        &mut out,
        Command::Internal,
        2,
        &[b"ver", b"1.0.0", b"h-beat", b"600", b"buff-in", b"1024"],
    )
    .unwrap();
    out
}

/// Reads until both replies (login 200, info 200 = 10 bytes) arrived.
fn read_replies(stream: &mut impl Read) {
    let mut got = [0u8; 10];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(
        &got,
        &[0, 0, 1, 0, 200, 0, 0, 2, 0, 200],
        "login or info refused"
    );
}

fn measure(
    label: &str,
    gw: &Gateway,
    n: usize,
    open: impl Fn(&str) -> Box<dyn Send>,
    tokens: &[String],
) {
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, kern0, slab0) = (rss_bytes(gw.pid()), kernel_tcp_bytes(), kernel_slab_bytes());
    let start = Instant::now();
    let conns: Vec<Box<dyn Send>> = tokens.iter().take(n).map(|t| open(t)).collect();
    let connect_secs = start.elapsed().as_secs_f64();
    // Let the gateway release per-handshake state and settle.
    std::thread::sleep(Duration::from_secs(2));
    let (rss1, kern1, slab1) = (rss_bytes(gw.pid()), kernel_tcp_bytes(), kernel_slab_bytes());
    let per_conn = (rss1.saturating_sub(rss0)) as f64 / n as f64;
    let kernel_per_conn = (kern1.saturating_sub(kern0)) as f64 / n as f64;
    let slab_per_conn = (slab1.saturating_sub(slab0)) as f64 / n as f64;
    println!(
        "{}",
        serde_json::json!({
            "bench": "idle_memory",
            "transport": label,
            "connections": n,
            "gateway_rss_before": rss0,
            "gateway_rss_after": rss1,
            "gateway_bytes_per_connection": per_conn.round(),
            "kernel_tcp_buffer_bytes_per_connection_both_ends": kernel_per_conn.round(),
            "kernel_slab_bytes_per_connection_both_ends": slab_per_conn.round(),
            "connect_and_login_secs": connect_secs,
        })
    );
    drop(conns);
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let n: usize = std::env::var("IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let gw = Gateway::start("[limits]\nlogin_timeout_ms = 60000\n");
    let tokens = provision(&gw, n);
    let port = gw.plain_port;
    measure(
        "plain",
        &gw,
        n,
        |token| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(&login_frames(token)).unwrap();
            read_replies(&mut s);
            Box::new(s)
        },
        &tokens,
    );
    std::thread::sleep(Duration::from_secs(2));
    let config = client_config(
        &gw.data_dir.join("tls").join("ca.pem"),
        &rustls::version::TLS13,
    );
    let tls_port = gw.tls_port;
    measure(
        "tls13",
        &gw,
        n,
        |token| {
            let tcp = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
            let conn = rustls::ClientConnection::new(
                config.clone(),
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(&login_frames(token)).unwrap();
            read_replies(&mut s);
            Box::new(s)
        },
        &tokens,
    );
}
