//! [`Mailer`], the handle the gateway holds: starts the one worker thread on the configured
//! transport, takes mails without ever blocking ([`Mailer::submit`] answers at once, or says
//! why not with [`Refused`]), tells whether mail is going out ([`Mailer::health`]), and shuts
//! the worker down within a deadline ([`Mailer::shutdown`]). Owns [`MailError`], the reasons
//! a mailer cannot start.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::config::{ConfigError, MailConfig, TransportKind};
use crate::health::{Health, Shared};
use crate::message::Mail;
use crate::outbox::{OUTBOX_DIR_NAME, Outbox};
use crate::smtp::Relay;
use crate::transport::Transport;
use crate::worker::{Job, Limits, Worker};

/// How long [`Mailer::shutdown`] waits past its deadline for the worker to notice it, log
/// what it drops and exit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// Why a mailer could not start.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The operator's `[mail]` section (or a file it names).
    #[error("invalid [mail] configuration: {0}")]
    Config(#[from] ConfigError),
    /// The operator's data directory: the outbox cannot be created or read there.
    #[error(
        "the mail outbox {dir:?} cannot be prepared: {source} (the data directory must be \
         writable by the gateway)"
    )]
    Outbox {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// This machine: the worker thread could not be spawned.
    #[error("internal: the mail worker thread could not be started: {0}")]
    Spawn(std::io::Error),
}

/// Why [`Mailer::submit`] did not take a mail. Every case means the mail will not go, and
/// the caller should refuse the flow that needed it (before writing anything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `mail.queue_capacity` mails are already waiting.
    #[error("too many mails are waiting to be sent; try again later")]
    QueueFull,
    /// The last delivery attempt failed and none has succeeded since `since`.
    #[error("the mail relay is unreachable; try again later")]
    RelayDown { since: SystemTime },
    /// The worker has stopped (it ended or died); nothing more will be sent.
    #[error("the mailer has stopped; no mail can be sent")]
    Stopped,
}

/// How [`Mailer::shutdown`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every queued mail was handled (delivered, or dropped after its attempts).
    Drained,
    /// The deadline passed: this many mails were dropped undelivered (each is logged).
    DeadlinePassed { dropped: usize },
    /// The worker was still inside one delivery (a slow relay) at the deadline; it is left
    /// to end on its own, within `mail.smtp.timeout_secs` per step of the conversation.
    WorkerBusy,
    /// The worker had died (a bug, logged when it happened).
    WorkerDied,
}

/// The gateway's mail sender: a bounded queue in front of one worker thread.
#[derive(Debug)]
pub struct Mailer {
    tx: SyncSender<Job>,
    shared: Arc<Shared>,
    /// Behind a mutex only so that the handle is `Sync` (shared by the gateway's threads);
    /// `shutdown` takes the handle by value and is its one reader.
    done: Mutex<Receiver<usize>>,
    thread: std::thread::JoinHandle<()>,
    outbox_dir: Option<PathBuf>,
}

impl Mailer {
    /// Checks `config`, reads the files it names, prepares the transport (for the outbox,
    /// `<data_dir>/outbox/`) and starts the worker. Does not connect to the relay: a relay
    /// that is down shows in [`Mailer::health`] after the first attempt.
    ///
    /// The worker logs to the global `tracing` subscriber (a thread-scoped one set by the
    /// caller does not follow it onto the worker's thread).
    pub fn start(config: &MailConfig, data_dir: &Path) -> Result<Mailer, MailError> {
        let loaded = config.load()?;
        let (transport, outbox_dir) = match (config.transport, &loaded.smtp) {
            (TransportKind::Smtp, Some(smtp)) => {
                let relay = Relay::new(smtp)?;
                tracing::info!(
                    host = %smtp.host,
                    port = smtp.port,
                    security = ?smtp.security,
                    "mail goes to the SMTP relay {}:{}",
                    smtp.host,
                    smtp.port
                );
                (Transport::Smtp(relay), None)
            }
            // `load` refuses "smtp" without its section, so this is the outbox.
            _ => {
                let outbox = Outbox::open(data_dir).map_err(|source| MailError::Outbox {
                    dir: data_dir.join(OUTBOX_DIR_NAME),
                    source,
                })?;
                let dir = outbox.dir().to_owned();
                tracing::info!(
                    dir = %dir.display(),
                    "mail is not sent: it is written to {} (mail.transport = \"outbox\")",
                    dir.display()
                );
                (Transport::Outbox(outbox), Some(dir))
            }
        };
        let limits = Limits {
            capacity: loaded.queue_capacity,
            max_attempts: loaded.max_attempts,
            backoff_base: loaded.backoff_base,
            backoff_cap: loaded.backoff_cap,
        };
        let (tx, rx) = mpsc::sync_channel(limits.capacity);
        let (done_tx, done) = mpsc::channel();
        let shared = Arc::new(Shared::new());
        let worker = Worker::new(rx, transport, loaded.from, limits, Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("mail-worker".to_owned())
            .spawn(move || {
                let dropped = worker.run();
                // The mailer may be gone (dropped without shutdown): nobody to tell.
                let _ = done_tx.send(dropped);
            })
            .map_err(MailError::Spawn)?;
        Ok(Mailer {
            tx,
            shared,
            done: Mutex::new(done),
            thread,
            outbox_dir,
        })
    }

    /// Queues `mail` without blocking. Refused while the relay is failing (see
    /// [`Health::Failing`]), when the queue is full, or once the worker has stopped.
    pub fn submit(&self, mail: Mail) -> Result<(), Refused> {
        if let Health::Failing { since, .. } = self.shared.health() {
            return Err(Refused::RelayDown { since });
        }
        let job = Job {
            mail,
            queued_at: SystemTime::now(),
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Refused::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(Refused::Stopped),
        }
    }

    /// Whether mail is going out now: check it before starting a flow that must mail.
    pub fn health(&self) -> Health {
        self.shared.health()
    }

    /// Where mails are written, when `mail.transport = "outbox"`.
    pub fn outbox_dir(&self) -> Option<&Path> {
        self.outbox_dir.as_deref()
    }

    /// Stops taking mail, lets the worker deliver what is queued until `deadline` from now
    /// (retries included, on their schedule), then drops and logs the rest and waits for the
    /// worker to end (at most [`SHUTDOWN_GRACE`] longer).
    ///
    /// A mailer dropped without this also stops taking mail, but its worker goes on with
    /// what is queued, without a deadline, until the process ends.
    pub fn shutdown(self, deadline: Duration) -> ShutdownOutcome {
        let Mailer {
            tx,
            shared,
            done,
            thread,
            ..
        } = self;
        // A deadline past what an Instant can hold is no deadline: drain everything.
        if let Some(at) = Instant::now().checked_add(deadline) {
            shared.set_deadline(at);
        }
        drop(tx);
        let done = done.into_inner().unwrap_or_else(PoisonError::into_inner);
        match done.recv_timeout(deadline.saturating_add(SHUTDOWN_GRACE)) {
            Ok(dropped) => {
                // It has sent its last word; joining cannot wait long.
                let _ = thread.join();
                if dropped == 0 {
                    ShutdownOutcome::Drained
                } else {
                    ShutdownOutcome::DeadlinePassed { dropped }
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    "the mail worker is still inside a delivery at its shutdown deadline; \
                     it is left to end on its own"
                );
                ShutdownOutcome::WorkerBusy
            }
            Err(RecvTimeoutError::Disconnected) => {
                if thread.join().is_err() {
                    tracing::error!("internal: the mail worker had died (its panic is above)");
                }
                ShutdownOutcome::WorkerDied
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared_between_threads<T: Send + Sync>() {}

    #[test]
    fn the_handle_can_be_shared_by_the_gateways_threads() {
        shared_between_threads::<Mailer>();
    }
}
