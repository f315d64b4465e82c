//! The group committer: two threads that own every write. Links hand write requests to the
//! applier ([`Committer::submit`]) and keep reading; the applier takes everything queued when it
//! becomes free (plus, with a commit window, whatever arrives within the window after the first
//! request) and applies it as one group ([`Store::apply_group`]): one engine batch, visible to
//! readers at once. Groups that hold a sync-class write go to the syncer, which makes one WAL
//! fsync for every group waiting at that moment and only then releases their results. The applier
//! never waits for the disk, so while one fsync runs the next groups are already applied and
//! queue up for the next fsync: the number of fsyncs follows the disk's speed, not the number of
//! requests, and a read that follows its own link's write waits for an apply, never for a sync.
//!
//! Results go back on each submitting link's own channel. Per link they must arrive in
//! submission order, so once any group waits for the syncer, later groups' results wait behind
//! it (released right after its fsync) even when they need no fsync themselves.

use crate::engine::Engine;
use crate::schema::{Applied, Call, Store, finish_sync};
use portcullis_protocol::store::{Response, StoreError};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest commit window the configuration accepts.
pub const MAX_COMMIT_WINDOW: Duration =
    Duration::from_micros(*portcullis_protocol::store::option_ranges::COMMIT_WINDOW_US.end());

/// The result of one submitted write, for the link that submitted it.
pub(crate) type Outcome = Result<Response, StoreError>;

struct Job {
    call: Call,
    reply: Sender<Outcome>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Sequence number of the last job submitted (the first is 1).
    submitted: u64,
    closing: bool,
}

/// An applied group whose results wait for the syncer.
struct Held {
    applied: Applied,
    replies: Vec<Sender<Outcome>>,
}

#[derive(Default)]
struct SyncQueue {
    held: Vec<Held>,
    /// The syncer is between taking groups and releasing their results.
    busy: bool,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    /// Sequence number of the last job whose writes readers can see.
    applied: Mutex<u64>,
    applied_changed: Condvar,
    syncs: Mutex<SyncQueue>,
    sync_work: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // These mutexes guard counters and queues that stay consistent across a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A handle on the committer threads, shared by every link.
#[derive(Clone)]
pub(crate) struct Committer {
    shared: Arc<Shared>,
}

/// The committer's threads; join them after [`Committer::close`].
pub(crate) struct Threads {
    applier: JoinHandle<()>,
    syncer: JoinHandle<()>,
}

impl Threads {
    /// Waits for both threads; false if one panicked.
    pub(crate) fn join(self) -> bool {
        let applier = self.applier.join().is_ok();
        self.syncer.join().is_ok() && applier
    }
}

impl Committer {
    /// Starts the applier and syncer threads over `store`.
    pub(crate) fn start<E: Engine>(
        store: Arc<Store<E>>,
        window: Duration,
    ) -> std::io::Result<(Self, Threads)> {
        let shared = Arc::new(Shared::default());
        let (worker, sync_store) = (Arc::clone(&shared), Arc::clone(&store));
        let syncer = thread::Builder::new()
            .name("store-syncer".into())
            .spawn(move || sync_loop(&worker, &sync_store))?;
        let worker = Arc::clone(&shared);
        let applier = thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || apply_loop(&worker, &store, window));
        let applier = match applier {
            Ok(handle) => handle,
            Err(e) => {
                lock(&shared.syncs).closing = true;
                shared.sync_work.notify_all();
                let _ = syncer.join();
                return Err(e);
            }
        };
        Ok((Self { shared }, Threads { applier, syncer }))
    }

    /// Queues a write; its result will arrive on `reply`. Returns the job's sequence number.
    pub(crate) fn submit(&self, call: Call, reply: &Sender<Outcome>) -> u64 {
        let mut queue = lock(&self.shared.queue);
        queue.submitted += 1;
        queue.jobs.push(Job {
            call,
            reply: reply.clone(),
        });
        let seq = queue.submitted;
        drop(queue);
        self.shared.work.notify_one();
        seq
    }

    /// Blocks until the writes of job `seq` (and every job before it) are visible to readers.
    /// That takes an apply, never an fsync.
    pub(crate) fn wait_applied(&self, seq: u64) {
        let mut applied = lock(&self.shared.applied);
        while *applied < seq {
            applied = self
                .shared
                .applied_changed
                .wait(applied)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Commits what is queued, syncs what needs it, then stops both threads.
    pub(crate) fn close(&self) {
        lock(&self.shared.queue).closing = true;
        self.shared.work.notify_all();
    }
}

fn send_all(held: Held) {
    for (reply, result) in held.replies.into_iter().zip(held.applied.results) {
        // A link that went away no longer needs its answer.
        let _ = reply.send(result);
    }
}

fn apply_loop<E: Engine>(shared: &Shared, store: &Store<E>, window: Duration) {
    loop {
        let (jobs, last_seq) = {
            let mut queue = lock(&shared.queue);
            while queue.jobs.is_empty() && !queue.closing {
                queue = shared
                    .work
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if queue.jobs.is_empty() {
                break;
            }
            if !window.is_zero() {
                let deadline = Instant::now() + window;
                while !queue.closing {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    queue = shared
                        .work
                        .wait_timeout(queue, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
            (std::mem::take(&mut queue.jobs), queue.submitted)
        };
        let (calls, replies): (Vec<Call>, Vec<Sender<Outcome>>) =
            jobs.into_iter().map(|j| (j.call, j.reply)).unzip();
        let applied = store.apply_group(calls);
        *lock(&shared.applied) = last_seq;
        shared.applied_changed.notify_all();
        let held = Held { applied, replies };
        let mut syncs = lock(&shared.syncs);
        if !held.applied.needs_sync && !syncs.busy && syncs.held.is_empty() {
            // Nothing earlier is waiting for a sync: telemetry is acknowledged at once.
            drop(syncs);
            send_all(held);
        } else {
            syncs.held.push(held);
            drop(syncs);
            shared.sync_work.notify_one();
        }
    }
    lock(&shared.syncs).closing = true;
    shared.sync_work.notify_all();
}

fn sync_loop<E: Engine>(shared: &Shared, store: &Store<E>) {
    loop {
        let mut held = {
            let mut syncs = lock(&shared.syncs);
            while syncs.held.is_empty() && !syncs.closing {
                syncs = shared
                    .sync_work
                    .wait(syncs)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if syncs.held.is_empty() {
                return;
            }
            syncs.busy = true;
            std::mem::take(&mut syncs.held)
        };
        if held.iter().any(|h| h.applied.needs_sync) {
            let synced = store.sync();
            for h in &mut held {
                finish_sync(&synced, &mut h.applied.results);
            }
        }
        // Released under the lock, so the applier cannot slip a later group's results out first.
        let mut syncs = lock(&shared.syncs);
        for h in held {
            send_all(h);
        }
        syncs.busy = false;
    }
}
