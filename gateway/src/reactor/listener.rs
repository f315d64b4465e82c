//! Binding the listening sockets: one `SO_REUSEPORT` listener per shard and port, so the kernel
//! spreads new connections over the shards without a shared accept lock. The preferred port falls
//! back to its alternative when it cannot be bound (443 → 9443, 80 → 8080); port 0 asks for an
//! ephemeral port that every shard then shares. The ports actually bound go to `ports.json`.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ListenError {
    #[error("cannot bind {what} on {addr} or its fallback port {fallback}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        fallback: u16,
        source: io::Error,
    },
    #[error("cannot bind shard listener {addr}: {source}")]
    Shard { addr: SocketAddr, source: io::Error },
    #[error("cannot write {path}: {source}")]
    PortsFile { path: String, source: io::Error },
}

/// Opens one listener on `addr` with `SO_REUSEPORT`, non-blocking.
fn bind_one(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // Dual stack: "::" also takes IPv4 clients.
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Listeners for one port, one per shard.
pub struct PortListeners {
    pub port: u16,
    pub listeners: Vec<std::net::TcpListener>,
}

/// Binds `shards` listeners on `preferred`, or on `fallback` if `preferred` cannot be bound.
/// An unusable IPv6 wildcard falls back to the IPv4 wildcard.
pub fn bind_port(
    what: &'static str,
    bind: IpAddr,
    preferred: u16,
    fallback: u16,
    shards: usize,
    backlog: i32,
) -> Result<PortListeners, ListenError> {
    let first = match bind_first(bind, preferred, backlog) {
        Ok(first) => first,
        Err(e) if fallback != preferred => {
            tracing::warn!(%what, port = preferred, error = %e, fallback, "cannot bind preferred port; trying fallback");
            bind_first(bind, fallback, backlog).map_err(|source| ListenError::Bind {
                what,
                addr: SocketAddr::new(bind, preferred),
                fallback,
                source,
            })?
        }
        Err(source) => {
            return Err(ListenError::Bind {
                what,
                addr: SocketAddr::new(bind, preferred),
                fallback,
                source,
            });
        }
    };
    let local = first.local_addr().map_err(|source| ListenError::Shard {
        addr: SocketAddr::new(bind, preferred),
        source,
    })?;
    let mut listeners = vec![first];
    for _ in 1..shards {
        listeners.push(
            bind_one(local, backlog).map_err(|source| ListenError::Shard {
                addr: local,
                source,
            })?,
        );
    }
    Ok(PortListeners {
        port: local.port(),
        listeners,
    })
}

fn bind_first(bind: IpAddr, port: u16, backlog: i32) -> io::Result<std::net::TcpListener> {
    match bind_one(SocketAddr::new(bind, port), backlog) {
        Err(e)
            if bind.is_ipv6()
                && bind.is_unspecified()
                && e.kind() == io::ErrorKind::AddrNotAvailable =>
        {
            tracing::warn!("IPv6 unavailable; listening on IPv4 only");
            bind_one(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                backlog,
            )
        }
        other => other,
    }
}

/// Writes `{"tls": P, "plain": Q, "metrics": M}` atomically so scripts never read half a file
/// (`metrics` is null when the metrics port is off).
pub fn write_ports_file(
    data_dir: &Path,
    tls: u16,
    plain: u16,
    metrics: Option<u16>,
) -> Result<(), ListenError> {
    let path = data_dir.join("ports.json");
    let tmp = data_dir.join("ports.json.tmp");
    let body = serde_json::json!({ "tls": tls, "plain": plain, "metrics": metrics }).to_string();
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| ListenError::PortsFile {
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_port_is_shared_by_every_shard() {
        let bound = bind_port("test", IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0, 3, 16).expect("binds");
        assert_ne!(bound.port, 0);
        assert_eq!(bound.listeners.len(), 3);
        for l in &bound.listeners {
            assert_eq!(l.local_addr().expect("addr").port(), bound.port);
        }
    }

    #[test]
    fn falls_back_when_the_preferred_port_is_taken() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
        let busy = taken.local_addr().expect("addr").port();
        let bound =
            bind_port("test", IpAddr::V4(Ipv4Addr::LOCALHOST), busy, 0, 1, 16).expect("falls back");
        assert_ne!(bound.port, busy);
    }
}
