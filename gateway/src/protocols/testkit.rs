//! What protocol unit tests need to take a session step without a shard: the services a shard
//! lends (default limits and guards, a bus on a real `mio` waker), an outbox, and a connection.

use super::{Outbox, Services, Step};
use crate::bus::{Bus, Hub, HubInbox};
use crate::config::Config;
use crate::config::limits::{guards, shard_limits};
use crate::conn::{ConnId, ConnMeta, Transport};
use crate::guard::security_events::SecurityEvents;
use crate::metrics::shard::ShardMetrics;
use portcullis_protocol::store::NodeName;
use std::sync::Arc;
use std::time::Instant;

/// A shard's worth of services for one test, with the default configuration.
pub(crate) struct TestShard {
    // Keeps the waker's registry alive for the bus.
    _poll: mio::Poll,
    pub services: Services,
    pub out: Outbox,
    /// The shard's end of the bus, kept open so publishing works as it does in a shard.
    _inbox: HubInbox,
}

impl TestShard {
    pub fn new() -> Self {
        Self::with_config(&Config::default())
    }

    pub fn with_config(config: &Config) -> Self {
        let poll = mio::Poll::new().expect("test fixture");
        let waker =
            Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("test fixture"));
        let (hub, mut inboxes) = Hub::new(&[waker]);
        let now = Instant::now();
        let services = Services {
            shard: 0,
            node: NodeName::new("test-gw").expect("valid node name"),
            now,
            now_ms: 1_790_000_000_000,
            limits: shard_limits(config).protocol,
            guards: Arc::new(guards(config)),
            security: SecurityEvents::new(0, now),
            metrics: Arc::new(ShardMetrics::new(0)),
            bus: Bus::new(0, hub),
            rest: Arc::new(test_rest_env(guards(config))),
            template_names: Default::default(),
        };
        Self {
            _poll: poll,
            services,
            out: Outbox::default(),
            _inbox: inboxes.remove(0),
        }
    }

    /// A step for connection `slot` from `peer`, with a cleared outbox.
    pub fn step(&mut self, slot: u32, peer: &str) -> Step<'_> {
        self.out.clear();
        Step {
            conn: ConnMeta {
                id: ConnId {
                    slot,
                    generation: 1,
                },
                peer: peer.parse().expect("test fixture"),
                transport: Transport::Plain,
            },
            services: &mut self.services,
            out: &mut self.out,
        }
    }
}

/// Mail a test's REST calls sent, kept in memory; `failing` makes the relay look down.
#[derive(Default)]
pub(crate) struct TestMail {
    pub sent: std::sync::Mutex<Vec<portcullis_operations::accounts::OutgoingMail>>,
    pub failing: std::sync::atomic::AtomicBool,
}

impl crate::protocols::http::rest::MailSink for TestMail {
    fn health(&self) -> Result<(), String> {
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            Err("connection refused".into())
        } else {
            Ok(())
        }
    }

    fn submit(&self, mail: portcullis_operations::accounts::OutgoingMail) -> Result<(), String> {
        self.health()?;
        self.sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(mail);
        Ok(())
    }
}

/// The REST API's services for unit tests: sign-up on, mail kept in memory.
pub(crate) fn test_rest_env(
    guards: crate::guard::admission::Guards,
) -> crate::protocols::http::rest::RestEnv {
    crate::protocols::http::rest::RestEnv {
        guards: Arc::new(guards),
        mail: Arc::new(TestMail::default()),
        links: portcullis_operations::accounts::Links {
            public_url: "https://gw.test".into(),
        },
        signup: true,
        session_ttl: std::time::Duration::from_secs(3600),
        on_plain_port: false,
    }
}
