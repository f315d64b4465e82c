//! The group committer: one thread that owns every write. Links hand it write requests
//! ([`Committer::submit`]) and keep reading; it takes everything queued when it becomes free
//! (plus, with a commit window, whatever arrives within the window after the first request) and
//! commits it as one group ([`Store::commit_group`]): one engine batch, at most one WAL sync.
//! While one group syncs, the next one queues up, so the number of fsyncs follows the disk's
//! speed, not the number of requests: 100 000 pipelined device creations share a few hundred
//! syncs.
//!
//! Each result goes back on the submitting link's own channel, in submission order. The
//! committer also publishes how far writes are applied (visible to readers), so that a link can
//! tell whether a read may run at once or must run after its own pending writes.

use crate::engine::Engine;
use crate::schema::Store;
use portcullis_protocol::store::{Request, Response, StoreError};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest commit window the configuration accepts.
pub const MAX_COMMIT_WINDOW: Duration = Duration::from_millis(10);

/// The result of one submitted write, for the link that submitted it.
pub(crate) type Outcome = Result<Response, StoreError>;

struct Job {
    request: Request,
    reply: Sender<Outcome>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// Sequence number of the last job submitted (the first is 1).
    submitted: u64,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
    /// Sequence number of the last job whose writes readers can see.
    applied: Mutex<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Both mutexes guard plain counters and a queue that stays consistent across a panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A handle on the committer thread, shared by every link.
#[derive(Clone)]
pub(crate) struct Committer {
    shared: Arc<Shared>,
}

impl Committer {
    /// Starts the committer thread over `store`.
    pub(crate) fn start<E: Engine>(
        store: Arc<Store<E>>,
        window: Duration,
    ) -> std::io::Result<(Self, JoinHandle<()>)> {
        let shared = Arc::new(Shared::default());
        let worker = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || run(&worker, &store, window))?;
        Ok((Self { shared }, handle))
    }

    /// Queues a write; its result will arrive on `reply`. Returns the job's sequence number.
    pub(crate) fn submit(&self, request: Request, reply: &Sender<Outcome>) -> u64 {
        let mut queue = lock(&self.shared.queue);
        queue.submitted += 1;
        queue.jobs.push(Job {
            request,
            reply: reply.clone(),
        });
        let seq = queue.submitted;
        drop(queue);
        self.shared.work.notify_one();
        seq
    }

    /// Sequence number of the last job whose writes readers can see.
    pub(crate) fn applied(&self) -> u64 {
        *lock(&self.shared.applied)
    }

    /// Commits what is queued, then stops the thread (join its handle to wait for that).
    pub(crate) fn close(&self) {
        lock(&self.shared.queue).closing = true;
        self.shared.work.notify_all();
    }
}

fn run<E: Engine>(shared: &Shared, store: &Store<E>, window: Duration) {
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
                return;
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
        let (requests, replies): (Vec<Request>, Vec<Sender<Outcome>>) =
            jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        let results = store.commit_group(requests, || *lock(&shared.applied) = last_seq);
        for (reply, result) in replies.into_iter().zip(results) {
            // A link that went away no longer needs its answer.
            let _ = reply.send(result);
        }
    }
}
