//! The shard's traffic with the store: its non-blocking link (pipelined, re-sending what was in
//! flight after a reconnect), the telemetry batched per loop turn and bounded while the store is
//! slow or away, and the requests the protocol sessions make, each carrying the continuation its
//! reply goes back to. The link knows nothing of protocols; this file knows only the classes of
//! request (`protocols::StoreRequest`), not what a device or an app does with the answer.
//!
//! The telemetry bound (`limits.store_queue_max_writes`) counts every pin write not yet
//! acknowledged by the store: the shard's own queue plus what the link holds queued or in flight.
//! A slow store therefore costs bounded memory; the oldest writes not yet sent are dropped first.
//! The link gets at most half the bound in flight: writes already sent cannot be taken back, so
//! the other half stays droppable, where the newest values wait and the oldest make room for
//! them. A read of pins moves everything to the link's queue first (it must see the writes before
//! it); the link keeps those batches queued beyond its share, so they stay droppable too.

use crate::conn::ConnId;
use crate::metrics::shard::ShardMetrics;
use crate::protocols::{Continuation, StoreRequest};
use mio::{Registry, Token};
use portcullis_protocol::store::{
    ClientHello, ClientRole, NodeName, PinWrite, Request, TrafficLink,
};
use portcullis_store_client::{Completion, LinkState, StoreEndpoint, StoreLink};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Pin writes per store request: one store write batch.
pub const MAX_WRITE_BATCH: usize = 4096;

/// Store requests queued or in flight beyond which requests that wait for a reply are refused
/// with an answer and best-effort ones dropped (telemetry has its own bound; presence changes are
/// never refused: each connection makes at most two, so the connection limits bound them).
pub const MAX_QUEUED_CALLS: usize = 65_536;

/// Who waits for a reply: the connection and the continuation of the session that asked.
#[derive(Debug)]
pub struct Pending {
    pub conn: ConnId,
    pub then: Continuation,
}

/// A reply for a session (or for nobody: telemetry, presence and info only need storing).
pub type StoreCompletion = Completion<Option<Pending>>;

/// How much queued telemetry to hand to the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TelemetryFlush {
    /// Everything: a read follows and must see the writes before it (the link keeps order).
    Everything,
    /// Only while the link's unacknowledged writes stay within its half of the bound; the rest
    /// waits in the shard's queue, where the bound drops the oldest.
    WithinBound,
}

/// What became of a request a session made.
#[derive(Debug)]
pub enum Submitted {
    Queued,
    /// Refused at once (the store queue is full): the continuation must hear so now.
    Refused(Pending),
    /// Dropped without an answer (best effort, or telemetry over the bound).
    Dropped,
}

pub struct StoreTraffic {
    shard: u16,
    link: StoreLink<Option<Pending>>,
    telemetry: VecDeque<PinWrite>,
    /// `limits.store_queue_max_writes`.
    max_writes: usize,
    metrics: Arc<ShardMetrics>,
}

impl StoreTraffic {
    pub fn new(
        shard: u16,
        endpoint: StoreEndpoint,
        node: NodeName,
        token: Token,
        max_writes: usize,
        metrics: Arc<ShardMetrics>,
    ) -> Self {
        Self {
            shard,
            link: StoreLink::new(
                endpoint,
                ClientHello::new(node, ClientRole::DeviceTraffic(TrafficLink::Shard(shard))),
                token,
            ),
            telemetry: VecDeque::new(),
            max_writes,
            metrics,
        }
    }

    /// A live reload changed `limits.store_queue_max_writes`.
    pub fn set_max_writes(&mut self, max_writes: usize) {
        self.max_writes = max_writes;
    }

    pub fn is_up(&self) -> bool {
        self.link.state == LinkState::Up
    }

    /// Pin writes not yet acknowledged: the shard's queue plus what the link holds.
    pub fn unacked_writes(&self) -> usize {
        self.telemetry.len() + self.link.unacked_writes()
    }

    /// Requests queued on the link or in flight.
    pub fn outstanding(&self) -> usize {
        self.link.outstanding()
    }

    /// Whether every write was acknowledged and nothing waits.
    pub fn is_idle(&self) -> bool {
        self.telemetry.is_empty() && self.link.is_idle()
    }

    /// Queues a session's request, by its class.
    pub fn submit(&mut self, conn: ConnId, request: StoreRequest) -> Submitted {
        let busy = self.link.outstanding() >= MAX_QUEUED_CALLS;
        match request {
            StoreRequest::Telemetry(write) => {
                if !self.make_room_for_write() {
                    return Submitted::Dropped;
                }
                self.telemetry.push_back(write);
                Submitted::Queued
            }
            StoreRequest::Record(request) => {
                self.link.submit(request, None);
                Submitted::Queued
            }
            StoreRequest::BestEffort(_) if busy => {
                self.count_refused();
                Submitted::Dropped
            }
            StoreRequest::BestEffort(request) => {
                self.link.submit(request, None);
                Submitted::Queued
            }
            StoreRequest::Call { then, .. } if busy => {
                self.count_refused();
                Submitted::Refused(Pending { conn, then })
            }
            StoreRequest::Call { request, then } => {
                if matches!(request, Request::ReadPins { .. }) {
                    self.telemetry_to_link(TelemetryFlush::Everything);
                }
                self.link.submit(request, Some(Pending { conn, then }));
                Submitted::Queued
            }
        }
    }

    /// Once per loop turn: reconnect if due, hand telemetry to the link within its share, and
    /// write what the socket takes.
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        self.link.maintain(registry, now);
        if self.is_up() {
            self.telemetry_to_link(TelemetryFlush::WithinBound);
        }
        let share = self.link_share();
        self.link.pump(registry, share);
    }

    /// Reads replies; they are appended to `done`.
    pub fn on_readable(
        &mut self,
        registry: &Registry,
        scratch: &mut [u8],
        done: &mut Vec<StoreCompletion>,
    ) {
        self.link.on_readable(registry, scratch, done);
    }

    /// The part of the telemetry bound the link may hold (and have in flight).
    fn link_share(&self) -> usize {
        (self.max_writes / 2).max(1)
    }

    /// Hands queued telemetry to the link as write batches.
    fn telemetry_to_link(&mut self, flush: TelemetryFlush) {
        let link_share = self.link_share();
        while !self.telemetry.is_empty() {
            let room = match flush {
                TelemetryFlush::Everything => MAX_WRITE_BATCH,
                // A partial batch when that is all the room left: a burst larger than the link's
                // share must not wait for a read to move at all.
                TelemetryFlush::WithinBound => {
                    link_share.saturating_sub(self.link.unacked_writes())
                }
            };
            let n = self.telemetry.len().min(MAX_WRITE_BATCH).min(room);
            if n == 0 {
                return;
            }
            let writes: Vec<PinWrite> = self.telemetry.drain(..n).collect();
            self.metrics.write_batch.observe(n as u64);
            self.link.submit(Request::WritePins { writes }, None);
        }
    }

    /// Makes room for one more pin write under the bound: drops the oldest batch the link has not
    /// written yet (only a read moves more than the link's share there, and those are the oldest
    /// writes), else the oldest write in the shard's queue. `false` when everything
    /// unacknowledged is already in flight (then the new write is the one dropped).
    fn make_room_for_write(&mut self) -> bool {
        if self.unacked_writes() < self.max_writes {
            return true;
        }
        let (dropped, room) = if let Some(batch) = self.link.drop_oldest_queued_writes() {
            (batch as u64, true)
        } else if self.telemetry.pop_front().is_some() {
            (1, true)
        } else {
            (1, false)
        };
        if let Some(total) = self.metrics.telemetry_dropped.add_sampled(dropped) {
            tracing::warn!(
                shard = self.shard,
                dropped = total,
                "telemetry queue full (store slow or away); dropping the oldest values"
            );
        }
        room
    }

    fn count_refused(&self) {
        if let Some(total) = self.metrics.store_calls_refused.add_sampled(1) {
            tracing::warn!(
                shard = self.shard,
                refused = total,
                limit = MAX_QUEUED_CALLS,
                "store queue full (store slow or away); answering logins, syncs and property \
                 writes with SERVER_ERROR"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::blynk;
    use portcullis_protocol::body::{PinAddr, PinKind};
    use portcullis_protocol::store::{Presence, SessionTag};
    use portcullis_store_client::StoreEndpoint;

    const CONN: ConnId = ConnId {
        slot: 3,
        generation: 1,
    };

    /// Traffic whose link never comes up (nothing listens there, and it is never maintained), so
    /// everything submitted stays queued.
    fn store_away(max_writes: usize) -> (StoreTraffic, Arc<ShardMetrics>) {
        let metrics = Arc::new(ShardMetrics::new(0));
        let endpoint = StoreEndpoint::Unix("/nonexistent/store.sock".into());
        let node = NodeName::new("gw-test").expect("valid node name");
        let traffic = StoreTraffic::new(0, endpoint, node, Token(1), max_writes, metrics.clone());
        (traffic, metrics)
    }

    fn write(value: u32) -> StoreRequest {
        StoreRequest::Telemetry(PinWrite {
            device: 1,
            pin: PinAddr {
                kind: PinKind::Virtual,
                pin: 1,
            },
            value: value.to_string().into_bytes(),
            at_ms: 0,
        })
    }

    fn presence() -> StoreRequest {
        StoreRequest::Record(Request::SetPresence {
            device: 1,
            presence: Presence::Offline {
                session: SessionTag {
                    node: NodeName::new("gw-test").expect("valid node name"),
                    local: 1,
                },
            },
            at_ms: 0,
        })
    }

    #[test]
    fn a_full_store_queue_refuses_calls_at_once_drops_best_effort_and_keeps_presence() {
        let (mut traffic, metrics) = store_away(1_000);
        for _ in 0..MAX_QUEUED_CALLS {
            assert!(matches!(
                traffic.submit(CONN, presence()),
                Submitted::Queued
            ));
        }
        let call = StoreRequest::Call {
            request: Request::GetDevice { device: 1 },
            then: Continuation::Blynk(blynk::Pending::Login { msg_id: 7 }),
        };
        match traffic.submit(CONN, call) {
            Submitted::Refused(Pending {
                conn,
                then: Continuation::Blynk(blynk::Pending::Login { msg_id: 7 }),
            }) => assert_eq!(
                conn, CONN,
                "the refusal goes back to the session that asked"
            ),
            other => panic!("a call beyond the queue is refused with its continuation: {other:?}"),
        }
        let info = StoreRequest::BestEffort(Request::Ping);
        assert!(matches!(traffic.submit(CONN, info), Submitted::Dropped));
        assert!(
            matches!(traffic.submit(CONN, presence()), Submitted::Queued),
            "presence is never refused"
        );
        assert_eq!(traffic.outstanding(), MAX_QUEUED_CALLS + 1);
        assert_eq!(metrics.store_calls_refused.get(), 2);
    }

    #[test]
    fn telemetry_over_its_bound_drops_the_oldest_and_counts_them() {
        let (mut traffic, metrics) = store_away(10);
        for value in 0..15 {
            assert!(matches!(
                traffic.submit(CONN, write(value)),
                Submitted::Queued
            ));
        }
        assert_eq!(
            traffic.unacked_writes(),
            10,
            "bounded by store_queue_max_writes"
        );
        assert_eq!(metrics.telemetry_dropped.get(), 5);
        let kept: Vec<&[u8]> = traffic.telemetry.iter().map(|w| &w.value[..]).collect();
        assert_eq!(kept.first(), Some(&&b"5"[..]), "the oldest went first");
        assert_eq!(kept.last(), Some(&&b"14"[..]), "the newest is kept");
    }
}
