//! Cross-shard traffic of the app API. An app on shard 1 may watch a device connected to shard 0,
//! so each shard keeps its own table of who subscribed to which device ([`Fanout`]), kept equal
//! on every shard by broadcasting subscribe and unsubscribe messages, and the events a device
//! causes are batched per loop turn and target shard and handed over through that shard's
//! channel plus its `mio::Waker` ([`Hub`]). Nothing here takes a lock on the per-message path:
//! a device write costs one hash lookup, and only when some app subscribed to anything.
//!
//! Control messages (subscriptions, password verdicts) travel on an unbounded channel: their
//! number is bounded by the subscription cap per app connection and the connection limits, and
//! losing one would leave an app silently deaf. Event batches travel on a bounded one: when a
//! shard falls that far behind, batches are dropped and counted rather than queued without end.

use super::conn::ConnId;
use crate::password::PasswordCheck;
use mio::Waker;
use portcullis_protocol::store::DeviceId;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};

/// Event batches that may wait for one shard; beyond it new batches are dropped.
pub const MAX_QUEUED_EVENT_BATCHES: usize = 4096;

/// One app connection that subscribed to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subscriber {
    pub shard: u16,
    pub conn: ConnId,
}

/// A password check done by a worker, for the app connection that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordChecked {
    pub conn: ConnId,
    pub id: u32,
    pub email: String,
    pub org: String,
    /// Whether a user with this email exists (told apart in the security log, never to the app).
    pub known_user: bool,
    pub verdict: PasswordCheck,
}

/// A message for a shard's control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Subscribe {
        device: DeviceId,
        subscriber: Subscriber,
    },
    Unsubscribe {
        device: DeviceId,
        subscriber: Subscriber,
    },
    PasswordChecked(PasswordChecked),
}

/// Encoded events for app connections of one shard.
pub type EventBatch = Vec<(ConnId, Arc<str>)>;

/// Why an event batch did not reach its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// Its queue was full: the batch's events are dropped.
    QueueFull { events: usize },
    /// The shard stopped.
    ShardGone,
}

struct HubLink {
    control: Sender<Control>,
    events: SyncSender<EventBatch>,
    waker: Arc<Waker>,
}

/// The sending ends of every shard's channels.
pub struct Hub {
    shards: Vec<HubLink>,
}

/// A shard's receiving ends.
pub struct HubInbox {
    control: Receiver<Control>,
    events: Receiver<EventBatch>,
}

impl Hub {
    /// One channel pair per shard, woken through the shard's waker.
    pub fn new(wakers: &[Arc<Waker>]) -> (Arc<Hub>, Vec<HubInbox>) {
        let mut shards = Vec::with_capacity(wakers.len());
        let mut inboxes = Vec::with_capacity(wakers.len());
        for waker in wakers {
            let (control, control_rx) = mpsc::channel();
            let (events, events_rx) = mpsc::sync_channel(MAX_QUEUED_EVENT_BATCHES);
            shards.push(HubLink {
                control,
                events,
                waker: waker.clone(),
            });
            inboxes.push(HubInbox {
                control: control_rx,
                events: events_rx,
            });
        }
        (Arc::new(Hub { shards }), inboxes)
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Sends a control message to one shard; `false` if that shard is gone.
    pub fn send_control(&self, shard: u16, message: Control) -> bool {
        let Some(link) = self.shards.get(usize::from(shard)) else {
            return false;
        };
        let sent = link.control.send(message).is_ok();
        if sent {
            wake(&link.waker);
        }
        sent
    }

    /// Sends a control message to every shard (the sender included).
    pub fn broadcast(&self, message: &Control) {
        for shard in 0..self.shards.len() {
            self.send_control(shard as u16, message.clone());
        }
    }

    pub fn send_events(&self, shard: u16, batch: EventBatch) -> Result<(), Undelivered> {
        let Some(link) = self.shards.get(usize::from(shard)) else {
            return Err(Undelivered::ShardGone);
        };
        match link.events.try_send(batch) {
            Ok(()) => {
                wake(&link.waker);
                Ok(())
            }
            Err(TrySendError::Full(batch)) => Err(Undelivered::QueueFull {
                events: batch.len(),
            }),
            Err(TrySendError::Disconnected(_)) => Err(Undelivered::ShardGone),
        }
    }
}

fn wake(waker: &Waker) {
    if let Err(e) = waker.wake() {
        tracing::warn!(error = %e, "cannot wake a shard for app traffic");
    }
}

impl HubInbox {
    pub fn next_control(&self) -> Option<Control> {
        // Empty and disconnected alike: nothing to do this turn.
        self.control.try_recv().ok()
    }

    pub fn next_events(&self) -> Option<EventBatch> {
        self.events.try_recv().ok()
    }
}

/// A shard's copy of the subscription table, and the events of this loop turn waiting to go to
/// other shards.
#[derive(Debug)]
pub struct Fanout {
    shard: u16,
    subscribers: HashMap<DeviceId, Vec<Subscriber>>,
    /// Per target shard: events produced this loop turn.
    outgoing: Vec<EventBatch>,
}

impl Fanout {
    pub fn new(shard: u16, shards: usize) -> Self {
        Self {
            shard,
            subscribers: HashMap::new(),
            outgoing: vec![Vec::new(); shards],
        }
    }

    /// Records a subscription (a repeated one counts once).
    pub fn subscribe(&mut self, device: DeviceId, subscriber: Subscriber) {
        let list = self.subscribers.entry(device).or_default();
        if !list.contains(&subscriber) {
            list.push(subscriber);
        }
    }

    /// Forgets a subscription; the device's entry goes with its last subscriber.
    pub fn unsubscribe(&mut self, device: DeviceId, subscriber: Subscriber) {
        if let Some(list) = self.subscribers.get_mut(&device) {
            list.retain(|s| *s != subscriber);
            if list.is_empty() {
                self.subscribers.remove(&device);
            }
        }
    }

    /// Whether anything at all is subscribed: a device write looks no further when not.
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    pub fn has_subscribers(&self, device: DeviceId) -> bool {
        !self.subscribers.is_empty() && self.subscribers.contains_key(&device)
    }

    /// Queues `event` for every subscriber of `device`; returns how many there are.
    pub fn publish(&mut self, device: DeviceId, event: &Arc<str>) -> usize {
        let Some(list) = self.subscribers.get(&device) else {
            return 0;
        };
        for subscriber in list {
            if let Some(batch) = self.outgoing.get_mut(usize::from(subscriber.shard)) {
                batch.push((subscriber.conn, event.clone()));
            }
        }
        list.len()
    }

    /// The events of this turn for this shard's own connections.
    pub fn take_local(&mut self) -> EventBatch {
        self.outgoing
            .get_mut(usize::from(self.shard))
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The events of this turn for other shards, by shard index (empty batches left out).
    pub fn take_remote(&mut self) -> impl Iterator<Item = (u16, EventBatch)> + '_ {
        let own = self.shard;
        self.outgoing
            .iter_mut()
            .enumerate()
            .filter(move |(shard, batch)| *shard != usize::from(own) && !batch.is_empty())
            .map(|(shard, batch)| (shard as u16, std::mem::take(batch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(slot: u32) -> ConnId {
        ConnId {
            slot,
            generation: 1,
        }
    }

    #[test]
    fn events_go_to_every_subscriber_on_its_own_shard() {
        let mut fanout = Fanout::new(0, 3);
        let here = Subscriber {
            shard: 0,
            conn: conn(1),
        };
        let there = Subscriber {
            shard: 2,
            conn: conn(7),
        };
        assert!(fanout.is_empty());
        for subscriber in [here, there, there] {
            fanout.subscribe(42, subscriber);
        }
        assert!(fanout.has_subscribers(42));
        assert!(!fanout.has_subscribers(43));
        let event: Arc<str> = Arc::from("{}");
        assert_eq!(
            fanout.publish(42, &event),
            2,
            "a repeated subscribe counts once"
        );
        assert_eq!(fanout.publish(43, &event), 0);
        assert_eq!(fanout.take_local(), vec![(conn(1), event.clone())]);
        let remote: Vec<_> = fanout.take_remote().collect();
        assert_eq!(remote, vec![(2, vec![(conn(7), event.clone())])]);
        assert_eq!(fanout.take_remote().count(), 0, "batches are taken once");
        fanout.unsubscribe(42, here);
        fanout.unsubscribe(42, there);
        assert!(fanout.is_empty(), "the last unsubscribe removes the device");
    }

    #[test]
    fn a_full_event_queue_drops_and_says_how_much() {
        let poll = mio::Poll::new().expect("test fixture");
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("test fixture"));
        let (hub, inboxes) = Hub::new(&[waker]);
        let event: Arc<str> = Arc::from("{}");
        for _ in 0..MAX_QUEUED_EVENT_BATCHES {
            hub.send_events(0, vec![(conn(1), event.clone())])
                .expect("test fixture");
        }
        assert_eq!(
            hub.send_events(0, vec![(conn(1), event.clone()); 3]),
            Err(Undelivered::QueueFull { events: 3 })
        );
        assert!(inboxes[0].next_events().is_some());
        hub.send_events(0, vec![]).expect("test fixture");
        assert_eq!(hub.send_events(5, vec![]), Err(Undelivered::ShardGone));
        hub.broadcast(&Control::Unsubscribe {
            device: 1,
            subscriber: Subscriber {
                shard: 0,
                conn: conn(1),
            },
        });
        assert!(inboxes[0].next_control().is_some());
        assert!(inboxes[0].next_control().is_none());
    }
}
