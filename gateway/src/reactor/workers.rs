//! The bounded worker pools: slow or blocking work never runs on a shard thread. A session hands
//! a job to a pool through its outbox and goes on; the job runs on a worker with a blocking link
//! to the store (for operations on behalf of a principal), and its answer comes back through the
//! shard's inbox, which wakes the shard, to the session that asked. When a pool's queue is full
//! the job is not queued: the session gets the job's own refusal at once (an app is told "busy")
//! instead of work piling up without end. A login flood costs at most the password pool's threads
//! and queue, never the shards' latency.
//!
//! Two pools, so a burst of argon2id checks (tens of milliseconds and 19 MiB each, on purpose)
//! cannot delay a device page: `Passwords` (`app.password_workers` threads) and `Operations`.

use crate::conn::ConnId;
use crate::protocols::{Job, Pool, WorkDone, WorkerStore};
use mio::Waker;
use portcullis_operations::{LinkError, StoreAccess};
use portcullis_protocol::store::{
    Acting, ClientHello, ClientRole, NodeName, Request, Response, StoreError, TrafficLink,
};
use portcullis_store_client::{StoreClient, StoreEndpoint};
use std::io;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Jobs waiting for a worker, per pool, at most; beyond it jobs are refused.
pub const MAX_QUEUED_JOBS: usize = 256;

/// Threads of the operations pool.
pub const OPERATION_WORKERS: usize = 2;

/// How long a worker waits for the store on one call before it gives up on the link.
pub const WORKER_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// One job on its way to a worker.
struct Ticket {
    shard: u16,
    conn: ConnId,
    job: Job,
}

/// The sending ends: one queue per pool, one answer channel per shard.
pub struct Workers {
    passwords: SyncSender<Ticket>,
    operations: SyncSender<Ticket>,
}

/// The answers for one shard's connections.
pub struct WorkerInbox {
    answers: Receiver<(ConnId, WorkDone)>,
}

impl WorkerInbox {
    pub fn next(&self) -> Option<(ConnId, WorkDone)> {
        // Empty and disconnected alike: nothing to do this turn.
        self.answers.try_recv().ok()
    }
}

/// Where workers send answers: each shard's channel and the waker that makes it look.
#[derive(Clone)]
struct Replies {
    shards: Vec<ShardReplies>,
}

/// One shard's answer channel and the waker that makes the shard look at it.
type ShardReplies = (Sender<(ConnId, WorkDone)>, Arc<Waker>);

impl Replies {
    fn send(&self, shard: u16, conn: ConnId, done: WorkDone) {
        let Some((sender, waker)) = self.shards.get(usize::from(shard)) else {
            return;
        };
        if sender.send((conn, done)).is_ok()
            && let Err(e) = waker.wake()
        {
            tracing::warn!(error = %e, "cannot wake a shard for a worker's answer");
        }
    }
}

impl Workers {
    /// Starts both pools (each at least one thread) and one answer channel per shard waker.
    pub fn start(
        password_workers: usize,
        store: StoreEndpoint,
        node: &NodeName,
        wakers: &[Arc<Waker>],
    ) -> io::Result<(Arc<Workers>, Vec<WorkerInbox>)> {
        let mut replies = Replies { shards: Vec::new() };
        let mut inboxes = Vec::new();
        for waker in wakers {
            let (sender, answers) = mpsc::channel();
            replies.shards.push((sender, waker.clone()));
            inboxes.push(WorkerInbox { answers });
        }
        let workers = Workers {
            passwords: start_pool("password", 0, password_workers, &store, node, &replies)?,
            operations: start_pool(
                "operations",
                password_workers.max(1),
                OPERATION_WORKERS,
                &store,
                node,
                &replies,
            )?,
        };
        Ok((Arc::new(workers), inboxes))
    }

    /// Queues a job for `conn` on `shard`; when its pool is full, the job's refusal comes back.
    pub fn submit(&self, shard: u16, conn: ConnId, job: Job) -> Result<(), WorkDone> {
        let queue = match job.pool {
            Pool::Passwords => &self.passwords,
            Pool::Operations => &self.operations,
        };
        match queue.try_send(Ticket { shard, conn, job }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(ticket) | TrySendError::Disconnected(ticket)) => {
                Err(ticket.job.refused)
            }
        }
    }
}

/// Starts `threads` workers (at least one); `first_index` numbers their store links apart from
/// the other pool's in the store's logs (`TrafficLink::Worker`).
fn start_pool(
    name: &str,
    first_index: usize,
    threads: usize,
    store: &StoreEndpoint,
    node: &NodeName,
    replies: &Replies,
) -> io::Result<SyncSender<Ticket>> {
    let (jobs, queue) = mpsc::sync_channel(MAX_QUEUED_JOBS);
    let queue = Arc::new(Mutex::new(queue));
    for index in 0..threads.max(1) {
        let queue = queue.clone();
        let replies = replies.clone();
        let link = u16::try_from(first_index + index).unwrap_or(u16::MAX);
        let hello = ClientHello::new(
            node.clone(),
            ClientRole::DeviceTraffic(TrafficLink::Worker(link)),
        );
        let mut store = WorkerLink::new(store.clone(), hello);
        std::thread::Builder::new()
            .name(format!("{name}-{index}"))
            .spawn(move || work(&queue, &replies, &mut store))?;
    }
    Ok(jobs)
}

/// Runs jobs until the pool is dropped (its sender gone).
fn work(queue: &Mutex<Receiver<Ticket>>, replies: &Replies, store: &mut WorkerLink) {
    loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(Ticket { shard, conn, job }) = next else {
            return;
        };
        let done = (job.run)(&mut WorkerStore(store));
        replies.send(shard, conn, done);
    }
}

/// A worker's blocking link to the store, opened when first needed and again after a failure
/// (a store restart costs the jobs in flight at that moment an error, not the worker).
struct WorkerLink {
    endpoint: StoreEndpoint,
    /// A device-traffic hello: workers run the app API's operations (logins, device pages), which
    /// need neither keys nor backups.
    hello: ClientHello,
    client: Option<StoreClient>,
}

impl WorkerLink {
    fn new(endpoint: StoreEndpoint, hello: ClientHello) -> Self {
        Self {
            endpoint,
            hello,
            client: None,
        }
    }
}

impl StoreAccess for WorkerLink {
    fn call_many(
        &mut self,
        acting: Option<&Acting>,
        requests: Vec<Request>,
    ) -> Result<Vec<Result<Response, StoreError>>, LinkError> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self.client.insert(
                StoreClient::connect_to(&self.endpoint, self.hello.clone(), WORKER_STORE_TIMEOUT)
                    .map_err(LinkError::new)?,
            ),
        };
        client.call_many_as(acting, requests).map_err(|e| {
            // The link is out of step after any failure: the next call reconnects.
            self.client = None;
            LinkError::new(e)
        })
    }
}
