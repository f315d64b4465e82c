//! Commands for every shard from threads outside the reactor: today the revocation feed's "end
//! the sessions of these devices, users, sessions" (`daemon/revocation_poller.rs`). Each shard
//! has a channel and is woken with its `mio::Waker`, as for the bus and the worker answers; the
//! shard drains its commands first in every loop turn (`Shard::drain_inboxes`) and carries them
//! out here ([`Shard::on_command`]).
//!
//! The channels are bounded ([`MAX_QUEUED_COMMANDS`]) and the sender blocks when one is full:
//! the sender is a thread that may wait, and a revocation must not be dropped, so a shard that
//! falls behind slows the feed down rather than losing what it says.

use super::shard::Shard;
use crate::conn::CloseReason;
use crate::protocols::revocation::RevocationSet;
use mio::Waker;
use portcullis_protocol::store::Revoked;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender};

/// Commands that may wait for one shard; a sender blocks beyond it. Each command is one poll's
/// page of revocations, so this many pages, far more than a poll interval brings.
pub const MAX_QUEUED_COMMANDS: usize = 64;

/// What a shard is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardCommand {
    /// Close every live connection logged in as one of these (one page of the revocation feed,
    /// shared by every shard).
    EndSessions(Arc<[Revoked]>),
}

/// The sending ends of every shard's command channel.
#[derive(Clone)]
pub struct ShardCommands {
    shards: Vec<(SyncSender<ShardCommand>, Arc<Waker>)>,
}

impl std::fmt::Debug for ShardCommands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardCommands")
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// A shard's receiving end.
#[derive(Debug)]
pub struct CommandInbox {
    commands: Receiver<ShardCommand>,
}

impl CommandInbox {
    pub fn next(&self) -> Option<ShardCommand> {
        // Empty and disconnected alike: nothing to do this turn.
        self.commands.try_recv().ok()
    }
}

impl ShardCommands {
    /// One channel per shard waker.
    pub fn new(wakers: &[Arc<Waker>]) -> (ShardCommands, Vec<CommandInbox>) {
        let mut shards = Vec::with_capacity(wakers.len());
        let mut inboxes = Vec::with_capacity(wakers.len());
        for waker in wakers {
            let (sender, commands) = mpsc::sync_channel(MAX_QUEUED_COMMANDS);
            shards.push((sender, waker.clone()));
            inboxes.push(CommandInbox { commands });
        }
        (ShardCommands { shards }, inboxes)
    }

    /// Sends `command` to every shard and wakes it, waiting while a shard's queue is full;
    /// returns how many shards took it (a stopped shard does not).
    pub fn broadcast(&self, command: &ShardCommand) -> usize {
        let mut delivered = 0;
        for (sender, waker) in &self.shards {
            if sender.send(command.clone()).is_err() {
                continue;
            }
            delivered += 1;
            if let Err(e) = waker.wake() {
                tracing::warn!(error = %e, "cannot wake a shard for a command");
            }
        }
        delivered
    }
}

impl Shard {
    /// Carries out one command.
    pub(super) fn on_command(&mut self, command: ShardCommand) {
        match command {
            ShardCommand::EndSessions(revoked) => self.end_sessions(&RevocationSet::new(&revoked)),
        }
    }

    /// Closes every live connection the revocations name: one pass over the shard's
    /// connections per page, whatever its length.
    fn end_sessions(&mut self, revoked: &RevocationSet) {
        if revoked.is_empty() {
            return;
        }
        let ended: Vec<(usize, &'static str)> = self
            .conns
            .iter()
            .filter_map(|(key, conn)| {
                let session = conn.stage.session()?;
                revoked.ends(session).map(|what| (key, what))
            })
            .collect();
        if ended.is_empty() {
            return;
        }
        self.services
            .metrics
            .sessions_revoked
            .add(ended.len() as u64);
        tracing::info!(
            shard = self.index,
            connections = ended.len(),
            "closing connections whose credentials were revoked"
        );
        for (key, what) in ended {
            self.close(key, CloseReason::Revoked { what });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_protocol::authz::UserId;

    #[test]
    fn a_broadcast_reaches_every_shard_once() {
        let poll = mio::Poll::new().expect("test fixture");
        let waker = Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("test fixture"));
        let (commands, inboxes) = ShardCommands::new(&[waker.clone(), waker]);
        let page: Arc<[Revoked]> = Arc::from(vec![Revoked::Device(4), Revoked::User(UserId(7))]);
        let command = ShardCommand::EndSessions(page);
        assert_eq!(commands.broadcast(&command), 2);
        for inbox in &inboxes {
            assert_eq!(inbox.next(), Some(command.clone()));
            assert_eq!(inbox.next(), None);
        }
        drop(inboxes);
        assert_eq!(
            commands.broadcast(&command),
            0,
            "stopped shards take nothing"
        );
    }
}

#[cfg(test)]
#[path = "revocation_tests.rs"]
mod revocation_tests;
