//! Taking new connections: accepting within a per-wake budget, asking admission control (per-source
//! caps, accept-rate buckets, the pre-login cap), pausing on descriptor exhaustion instead of
//! spinning, and setting up the socket, the TLS session and the login deadline of a new connection.

use super::*;

impl Shard {
    pub(super) fn accept(&mut self, token: Token) {
        if self.accept_paused_until.is_some() {
            return;
        }
        let Some(index) = self.listeners.iter().position(|(t, _, _)| *t == token) else {
            return;
        };
        for _ in 0..ACCEPT_BUDGET {
            let (stream, peer) = match self.listeners[index].1.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS/ENOMEM: the pending connection stays in the kernel
                    // backlog. Pause instead of spinning on it; the next close (or the pause
                    // timer, for descriptors freed elsewhere in the process) resumes accepting.
                    if !self.accept_starved {
                        tracing::warn!(target: "security", shard = self.index, error = %e, open = self.conns.len(), "accept failed; pausing accepts until a connection closes");
                        self.stats.accept_pauses.fetch_add(1, Ordering::Relaxed);
                        self.metrics.reject(Rejection::AcceptFailed);
                    }
                    self.accept_starved = true;
                    self.accept_paused_until = Some(self.now + ACCEPT_PAUSE);
                    return;
                }
            };
            if self.accept_starved {
                self.accept_starved = false;
                tracing::info!(
                    shard = self.index,
                    open = self.conns.len(),
                    "accepting again"
                );
            }
            if self.queued_total > self.limits.output_budget_bytes {
                // Memory for answers is spent on the connections we have: serve them first.
                self.refuse(peer, Refusal::OutputBudget);
                continue;
            }
            let admitted = self.guards.admission().admit(peer.ip(), self.now);
            if let Admit::Refused(refusal) = admitted {
                self.refuse(peer, refusal);
                continue;
            }
            let port = self.listeners[index].2;
            self.open(stream, peer, port);
        }
        // Budget used up: more may be waiting, and edge-triggered readiness will not say so again.
        self.accept_paused_until = Some(self.now);
    }

    /// A connection refused at accept: its socket is dropped (closed) by the caller. Logged on the
    /// security target at powers of two per shard, so a flood cannot flood the log too.
    pub(super) fn refuse(&mut self, peer: std::net::SocketAddr, refusal: Refusal) {
        let refused = self
            .stats
            .connections_refused
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        self.metrics.reject(Rejection::AdmissionLimit);
        if refused.is_power_of_two() {
            security::record(
                "reactor",
                &ConnectionEvent::RefusedAtAccept {
                    peer,
                    reason: format!(
                        "{} ({refusal:?}); {refused} refused by shard {} so far (logged at powers of two)",
                        refusal.name(),
                        self.index
                    ),
                },
            );
        } else {
            tracing::debug!(%peer, reason = refusal.name(), "connection refused at accept");
        }
    }

    /// Opens an admitted connection; releases its admission if it cannot be opened after all.
    pub(super) fn open(
        &mut self,
        socket: mio::net::TcpStream,
        peer: std::net::SocketAddr,
        port: Port,
    ) {
        if !self.try_open(socket, peer, port) {
            let mut admission = self.guards.admission();
            admission.leave_unauthenticated();
            admission.release(peer.ip());
        }
    }

    pub(super) fn try_open(
        &mut self,
        mut socket: mio::net::TcpStream,
        peer: std::net::SocketAddr,
        port: Port,
    ) -> bool {
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        // A fixed kernel send buffer: autotuning would let a peer that never reads park megabytes
        // of our answers in the kernel (tiny writes coalesce there), so the outbound queue bound
        // would never be reached while the shard spent a syscall on every answer.
        if let Err(e) = socket2::SockRef::from(&socket)
            .set_send_buffer_size(self.limits.socket_send_buffer_bytes)
        {
            tracing::debug!(%peer, error = %e, "cannot set SO_SNDBUF");
        }
        let (tls, stage) = match port {
            Port::Plain => (None, Stage::Sniff),
            Port::Tls => match TlsSession::new(self.tls_config.clone()) {
                Ok(tls) => (Some(Box::new(tls)), Stage::TlsHandshake),
                Err(e) => {
                    tracing::error!(%peer, error = %e, "cannot start a TLS session");
                    return false;
                }
            },
        };
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let deadline = self
            .timers
            .deadline_after(self.now, self.limits.login_timeout);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            Token(key + CONN_BASE),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(%peer, error = %e, "cannot register a new connection");
            return false;
        }
        entry.insert(Conn {
            generation,
            socket,
            peer,
            port,
            tls,
            stage,
            inbuf: Vec::new(),
            outq: None,
            deadline,
            armed: deadline,
        });
        self.timers.schedule(
            ConnId {
                slot: key as u32,
                generation,
            },
            deadline,
        );
        self.stats.connections_open.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .conn_moved(transport(port), None, Some(ConnState::PreAuth));
        tracing::debug!(shard = self.index, %peer, ?port, "accepted");
        true
    }
}
