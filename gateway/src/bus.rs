//! Device events across shards. An app on shard 1 may watch a device connected to shard 0, so
//! each shard keeps its own copy of who watches which device ([`Fanout`]), kept equal on every
//! shard by broadcasting subscribe and unsubscribe messages, and the events a device causes are
//! batched per loop turn and target shard and handed over through that shard's channel plus its
//! `mio::Waker` ([`Hub`]). Nothing here takes a lock on the per-message path: a device write costs
//! one hash lookup, and only when some app watches anything at all.
//!
//! Events are typed ([`DeviceEvent`]), not rendered: each protocol that delivers them renders its
//! own form, once per event for all its subscribers ([`BusEvent::rendered`]).
//!
//! Subscription messages travel on an unbounded channel: their number is bounded by the
//! subscription cap per app connection and the connection limits, and losing one would leave an
//! app silently deaf. Event batches travel on a bounded one: when a shard falls that far behind,
//! batches are dropped and counted rather than queued without end.

use crate::conn::ConnId;
use mio::Waker;
use portcullis_protocol::body::PinAddr;
use portcullis_protocol::store::DeviceId;
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

/// Event batches that may wait for one shard; beyond it new batches are dropped.
pub const MAX_QUEUED_EVENT_BATCHES: usize = 4096;

/// One app connection that subscribed to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subscriber {
    pub shard: u16,
    pub conn: ConnId,
}

/// Something that happened to a device, for the connections watching it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A pin was written; `value` holds NUL-separated values for multi-value pins.
    Pin {
        device: DeviceId,
        pin: PinAddr,
        value: Vec<u8>,
        at_ms: u64,
    },
    /// A session of the device started.
    Online { device: DeviceId },
    /// A session of the device ended.
    Offline { device: DeviceId },
}

/// A published event, shared by every subscriber on every shard.
#[derive(Debug)]
pub struct BusEvent {
    pub event: DeviceEvent,
    /// The app API's form of the event, rendered by the first app that delivers it.
    rendered: OnceLock<Box<str>>,
}

/// Two published events are equal when they say the same (whether rendered yet or not).
impl PartialEq for BusEvent {
    fn eq(&self, other: &Self) -> bool {
        self.event == other.event
    }
}

impl BusEvent {
    pub fn new(event: DeviceEvent) -> Self {
        Self {
            event,
            rendered: OnceLock::new(),
        }
    }

    /// The event as `render` writes it, rendered once however many connections deliver it.
    pub fn rendered(&self, render: impl FnOnce(&DeviceEvent) -> String) -> &str {
        self.rendered
            .get_or_init(|| render(&self.event).into_boxed_str())
    }
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
}

/// Events for connections of one shard.
pub type EventBatch = Vec<(ConnId, Arc<BusEvent>)>;

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
        tracing::warn!(error = %e, "cannot wake a shard for device events");
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
    pub fn publish(&mut self, device: DeviceId, event: &Arc<BusEvent>) -> usize {
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

/// A shard's end of the bus: its copy of the subscription table, this turn's outgoing events,
/// and the senders to every shard. Lent to the protocol sessions (through `Services`) so a device
/// write publishes with one hash lookup.
#[derive(Debug)]
pub struct Bus {
    hub: Arc<Hub>,
    fanout: Fanout,
}

/// What sending one turn's events to other shards cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Events dropped because a shard's queue was full.
    pub dropped: u64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("shards", &self.shards.len())
            .finish()
    }
}

impl Bus {
    pub fn new(shard: u16, hub: Arc<Hub>) -> Self {
        Self {
            fanout: Fanout::new(shard, hub.shards()),
            hub,
        }
    }

    /// A device's pin write, for whoever watches it (a no-op unless someone does).
    pub fn publish_pin(&mut self, device: DeviceId, pin: PinAddr, value: &[u8], at_ms: u64) {
        if self.fanout.has_subscribers(device) {
            let event = DeviceEvent::Pin {
                device,
                pin,
                value: value.to_vec(),
                at_ms,
            };
            self.fanout.publish(device, &Arc::new(BusEvent::new(event)));
        }
    }

    /// A device's session started or ended, for whoever watches it.
    pub fn publish_presence(&mut self, device: DeviceId, online: bool) {
        if self.fanout.has_subscribers(device) {
            let event = if online {
                DeviceEvent::Online { device }
            } else {
                DeviceEvent::Offline { device }
            };
            self.fanout.publish(device, &Arc::new(BusEvent::new(event)));
        }
    }

    /// Starts or stops delivering `device`'s events to `subscriber`, on every shard.
    pub fn watch(&self, device: DeviceId, subscriber: Subscriber, subscribe: bool) {
        let message = if subscribe {
            Control::Subscribe { device, subscriber }
        } else {
            Control::Unsubscribe { device, subscriber }
        };
        self.hub.broadcast(&message);
    }

    /// Applies a subscription change another shard (or this one) broadcast.
    pub fn apply(&mut self, message: Control) {
        match message {
            Control::Subscribe { device, subscriber } => self.fanout.subscribe(device, subscriber),
            Control::Unsubscribe { device, subscriber } => {
                self.fanout.unsubscribe(device, subscriber)
            }
        }
    }

    /// Sends this turn's events to the other shards, one batch each, and returns the batch for
    /// this shard's own connections.
    pub fn flush(&mut self) -> (EventBatch, Flushed) {
        let mut flushed = Flushed::default();
        if self.fanout.is_empty() {
            return (Vec::new(), flushed);
        }
        let remote: Vec<_> = self.fanout.take_remote().collect();
        for (shard, batch) in remote {
            match self.hub.send_events(shard, batch) {
                Ok(()) | Err(Undelivered::ShardGone) => {}
                Err(Undelivered::QueueFull { events }) => flushed.dropped += events as u64,
            }
        }
        (self.fanout.take_local(), flushed)
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
        let event = Arc::new(BusEvent::new(DeviceEvent::Online { device: 42 }));
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
        let event = Arc::new(BusEvent::new(DeviceEvent::Online { device: 42 }));
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

    #[test]
    fn the_bus_publishes_only_what_someone_watches_and_renders_it_once() {
        let poll = mio::Poll::new().expect("test fixture");
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("test fixture"));
        let (hub, inboxes) = Hub::new(&[waker]);
        let mut bus = Bus::new(0, hub);
        let pin = PinAddr::new(portcullis_protocol::body::PinKind::Virtual, 3);
        bus.publish_pin(7, pin, b"1", 10);
        assert!(bus.flush().0.is_empty(), "nobody watches device 7 yet");
        let watcher = Subscriber {
            shard: 0,
            conn: conn(4),
        };
        bus.watch(7, watcher, true);
        while let Some(message) = inboxes[0].next_control() {
            bus.apply(message);
        }
        bus.publish_pin(7, pin, b"on", 11);
        bus.publish_presence(8, false);
        let (local, flushed) = bus.flush();
        assert_eq!(flushed, Flushed::default());
        assert_eq!(local.len(), 1, "device 8 has no watcher");
        let (to, event) = &local[0];
        assert_eq!(*to, conn(4));
        let mut renders = 0;
        for _ in 0..3 {
            let text = event.rendered(|e| {
                renders += 1;
                format!("{e:?}")
            });
            assert!(text.contains("Pin"));
        }
        assert_eq!(renders, 1, "rendered once for every delivery");
    }
}
