//! The password workers: argon2id takes tens of milliseconds and 19 MiB per check on purpose, so
//! it never runs on a shard thread. A shard hands a check to this bounded pool and goes on; the
//! verdict comes back as a control message through the hub, which wakes the shard. When the queue
//! is full the shard answers the app `busy` at once instead of queueing without end: a login flood
//! costs at most the pool's threads and queue, never the shards' latency.

use super::conn::ConnId;
use super::hub::{Control, Hub, PasswordChecked};
use crate::password::PasswordCheck;
use std::io;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

/// Checks waiting for a worker, at most; beyond it logins are answered `busy`.
pub const MAX_QUEUED_PASSWORD_CHECKS: usize = 256;

/// Checks a client hash against the stored PHC string; `None` means no such user, and must cost
/// as long as a real check (no telling unknown emails from wrong passwords by timing).
pub type Verifier = fn(stored_phc: Option<&str>, client_hash: &str) -> PasswordCheck;

/// One check for a worker.
#[derive(Debug)]
pub struct PasswordJob {
    pub shard: u16,
    pub conn: ConnId,
    pub id: u32,
    pub email: String,
    pub org: String,
    pub stored_phc: Option<String>,
    pub client_hash: String,
}

/// The queue is full; the login is refused for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolBusy;

pub struct PasswordPool {
    jobs: SyncSender<PasswordJob>,
}

impl PasswordPool {
    /// Starts `workers` threads (at least one). They stop when the pool is dropped.
    pub fn start(workers: usize, hub: Arc<Hub>, verify: Verifier) -> io::Result<Self> {
        let (jobs, queue) = mpsc::sync_channel(MAX_QUEUED_PASSWORD_CHECKS);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..workers.max(1) {
            let queue = queue.clone();
            let hub = hub.clone();
            std::thread::Builder::new()
                .name(format!("password-{index}"))
                .spawn(move || work(&queue, &hub, verify))?;
        }
        Ok(Self { jobs })
    }

    pub fn submit(&self, job: PasswordJob) -> Result<(), PoolBusy> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(PoolBusy),
        }
    }
}

fn work(queue: &Mutex<Receiver<PasswordJob>>, hub: &Hub, verify: Verifier) {
    loop {
        // The lock is held only while waiting for the next job, never during a check.
        let job = match queue.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let verdict = verify(job.stored_phc.as_deref(), &job.client_hash);
        let known_user = job.stored_phc.is_some();
        hub.send_control(
            job.shard,
            Control::PasswordChecked(PasswordChecked {
                conn: job.conn,
                id: job.id,
                email: job.email,
                org: job.org,
                known_user,
                verdict,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn by_equality(stored: Option<&str>, hash: &str) -> PasswordCheck {
        match stored {
            Some(stored) if stored == hash => PasswordCheck::Matches,
            Some(_) | None => PasswordCheck::Mismatch,
        }
    }

    fn slow(_: Option<&str>, _: &str) -> PasswordCheck {
        std::thread::sleep(Duration::from_millis(50));
        PasswordCheck::Mismatch
    }

    fn job(id: u32, stored: Option<&str>, hash: &str) -> PasswordJob {
        PasswordJob {
            shard: 0,
            conn: ConnId {
                slot: 3,
                generation: 9,
            },
            id,
            email: "a@b.c".into(),
            org: "acme".into(),
            stored_phc: stored.map(str::to_owned),
            client_hash: hash.into(),
        }
    }

    fn hub() -> (Arc<Hub>, super::super::hub::HubInbox, mio::Poll) {
        let poll = mio::Poll::new().expect("test fixture");
        let waker =
            Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("test fixture"));
        let (hub, mut inboxes) = Hub::new(&[waker]);
        (hub, inboxes.remove(0), poll)
    }

    fn next_verdict(inbox: &super::super::hub::HubInbox) -> PasswordChecked {
        for _ in 0..500 {
            if let Some(Control::PasswordChecked(done)) = inbox.next_control() {
                return done;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no verdict within 5 s");
    }

    #[test]
    fn verdicts_come_back_to_the_asking_connection() {
        let (hub, inbox, _poll) = hub();
        let pool = PasswordPool::start(2, hub, by_equality).expect("test fixture");
        pool.submit(job(1, Some("h"), "h")).expect("test fixture");
        let done = next_verdict(&inbox);
        assert_eq!((done.id, done.verdict), (1, PasswordCheck::Matches));
        assert_eq!(done.conn.generation, 9);
        assert!(done.known_user);
        pool.submit(job(2, None, "h")).expect("test fixture");
        let done = next_verdict(&inbox);
        assert_eq!(done.verdict, PasswordCheck::Mismatch);
        assert!(!done.known_user);
    }

    #[test]
    fn a_full_queue_is_refused_not_grown() {
        let (hub, _inbox, _poll) = hub();
        let pool = PasswordPool::start(1, hub, slow).expect("test fixture");
        let refused = (0..MAX_QUEUED_PASSWORD_CHECKS as u32 + 10)
            .filter(|&id| pool.submit(job(id, None, "h")).is_err())
            .count();
        // One job may already be with the worker, so the queue takes its bound plus at most one.
        assert!((9..=10).contains(&refused), "{refused} refused");
    }
}
