//! The store process's own counters in the gateway's metrics: at scrape time the metrics thread
//! asks the store (`Request::Stats`, over a link of its own, with a short timeout) for its write
//! groups and WAL fsync latency, and renders them next to the gateway's. Its link holds the
//! read-only metrics role: the store lets it send `Ping` and `Stats` only. A store that does not
//! answer shows as `portcullis_store_up 0`; the scrape itself never fails for it.

use super::names;
use portcullis_protocol::store::{
    ClientHello, ClientRole, NodeName, Request, Response, StatsHistogram, StoreStats,
};
use portcullis_store_client::{StoreClient, StoreEndpoint};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How long a scrape waits for the store's counters.
pub const STORE_STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// Fetches [`StoreStats`], keeping its link between scrapes.
#[derive(Debug)]
pub struct StoreStatsSource {
    store: StoreEndpoint,
    /// This gateway's node, named in the link's hello.
    node: NodeName,
    client: Mutex<Option<StoreClient>>,
}

impl StoreStatsSource {
    pub fn new(store: StoreEndpoint, node: NodeName) -> Self {
        Self {
            store,
            node,
            client: Mutex::new(None),
        }
    }

    /// The store's counters, or `None` if it cannot be reached right now.
    pub fn fetch(&self) -> Option<StoreStats> {
        let mut client = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if client.is_none() {
            let hello = ClientHello::new(self.node.clone(), ClientRole::Metrics);
            *client = StoreClient::connect_to(&self.store, hello, STORE_STATS_TIMEOUT).ok();
        }
        match client.as_mut()?.call(Request::Stats) {
            Ok(Response::Stats(stats)) => Some(stats),
            _ => {
                // A broken or confused link is reopened on the next scrape.
                *client = None;
                None
            }
        }
    }
}

/// Renders the store's counters (or only `store_up 0` without them).
pub fn encode(encoder: &mut DescriptorEncoder, stats: Option<&StoreStats>) -> fmt::Result {
    super::gauge_family(
        encoder,
        names::STORE_UP,
        "Whether the store answered this scrape's request for its counters",
        [(super::NoLabels, f64::from(u8::from(stats.is_some())))],
    )?;
    let Some(stats) = stats else {
        return Ok(());
    };
    super::counter(
        encoder,
        names::STORE_GROUPS,
        "Write groups the store applied (one RocksDB batch each)",
        stats.groups,
    )?;
    histogram(
        encoder,
        names::STORE_GROUP_REQUESTS,
        "Requests per store write group",
        &stats.group_requests,
        1.0,
    )?;
    histogram(
        encoder,
        names::STORE_FSYNC,
        "Duration of the store's WAL fsyncs",
        &stats.fsync_micros,
        1e-6,
    )
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &StatsHistogram,
    scale: f64,
) -> fmt::Result {
    let (buckets, count) =
        super::shard::cumulative_buckets(&h.bounds, h.counts.iter().copied(), scale);
    encoder
        .encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(h.sum as f64 * scale, count, &buckets, None)
}
