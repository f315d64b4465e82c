//! One client link, whatever carries it (a Unix socket or a mutually authenticated TLS stream, see
//! [`LinkStream`]): the hello exchange (the client's version, role and gateway node, logged when
//! the link opens), then the pipelined request loop on two threads, every request checked against
//! what the hello's role may send and which acting party it may claim (`permissions`; the schema
//! then decides on the party itself). The reader (the link's thread) decodes every
//! complete request already buffered, in order, and never waits for the disk: a write goes to the
//! group committer; a read is answered from the engine once this link's own earlier writes are
//! applied (visible), which takes an apply, never an fsync, and keeps the read from seeing the
//! link's later writes. The writer thread sends the replies back in request order, echoing the ids,
//! waiting for each write's outcome in turn and batching whatever is ready into one socket write.
//! Anything wrong with the peer's bytes ends this link only, with the reason logged; the store
//! keeps serving every other link.

use super::ServerConfig;
use super::commit::{Committer, Outcome};
use super::permissions;
use crate::engine::Engine;
use crate::schema::{Call, Store, is_write};
use portcullis_protocol::store::{
    ClientHello, ClientHelloFrame, NodeNameError, ReplyEnvelope, RequestEnvelope, ServerHello,
    StoreError, WIRE_VERSION, WireError, decode_client_hello, decode_frame, encode_frame,
    frame_len,
};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};
use thiserror::Error;

/// How often a blocked read wakes up to look at the shutdown flag.
const READ_TICK: Duration = Duration::from_millis(100);
/// A peer that does not take our replies for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Smallest read.
const READ_CHUNK: usize = 64 * 1024;
/// Replies are flushed once this many bytes are pending, even mid-batch, to bound memory.
const FLUSH_AT: usize = 256 * 1024;
/// Replies a link may owe at once; a peer that sends more without reading its replies is slowed
/// down (the reader stops reading) rather than growing the store's memory.
pub const MAX_OWED_REPLIES: usize = 16 * 1024;

/// A transport a link can be served over. It is split into a reading half (used by the link's
/// own thread, blocking reads that time out every [`READ_TICK`] with `WouldBlock`/`TimedOut` so
/// the shutdown flag is seen) and a writing half (the reply writer thread), so requests keep
/// being decoded while replies wait for the committer.
pub(crate) trait LinkStream {
    type Reader: Read + Send;
    type Writer: LinkWriter;
    /// Sets the read tick and write timeout and splits the stream.
    fn split(
        self,
        read_tick: Duration,
        write_timeout: Duration,
    ) -> io::Result<(Self::Reader, Self::Writer)>;
}

/// The writing half of a [`LinkStream`].
pub(crate) trait LinkWriter: Write + Send {
    /// Tears the transport down after a write failure so the reading half stops too.
    fn abort(&mut self);
}

/// The next reply the writer owes, in request order.
enum Owed {
    /// A read, already answered.
    Ready(u64, Box<Outcome>),
    /// A write: its outcome is the next one on the link's outcome channel.
    Committed(u64),
}

/// Why a link ended abnormally.
#[derive(Debug, Error)]
pub(crate) enum ConnError {
    /// Peer: runs under another uid than the store (Unix socket links).
    #[error("peer uid {peer} is not the store's uid {ours}; refused")]
    ForeignUid { peer: u32, ours: u32 },
    /// Peer: sent a frame that is too large or does not decode.
    #[error("bad frame: {0}")]
    BadFrame(#[from] WireError),
    /// Peer: closed the link in the middle of a frame.
    #[error("peer closed the link {pending} bytes into an unfinished frame")]
    HalfFrame { pending: usize },
    /// Peer: no hello in time.
    #[error("no hello within {0:?}")]
    HelloTimeout(Duration),
    /// Peer: speaks another wire version (we answered `Refused`).
    #[error("peer speaks wire version {0}; refused")]
    WrongVersion(u16),
    /// Peer: its hello names no valid gateway node (we answered `Refused`).
    #[error("the hello's node name is unusable: {0}; refused")]
    BadNodeName(NodeNameError),
    /// Store side: the socket failed (or the peer vanished mid-write).
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
    /// Internal: a reply could not be encoded even as an error.
    #[error("cannot encode a reply: {0}")]
    Encode(WireError),
    /// Internal: the reply writer thread could not start or went away.
    #[error("reply writer failed: {0}")]
    Writer(String),
}

/// How a link ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    /// The peer closed between frames.
    ByPeer,
    /// The store is shutting down; everything received was answered.
    Shutdown,
}

enum Fill {
    Data,
    Eof,
    Idle,
}

struct Link<'a, R> {
    stream: R,
    buf: Vec<u8>,
    shutdown: &'a AtomicBool,
}

impl<R: Read> Link<'_, R> {
    /// Reads what is available (after at most one [`READ_TICK`]) onto `buf`.
    fn fill(&mut self) -> Result<Fill, ConnError> {
        // Size the read for the frame in progress; `frame_len` has refused oversize prefixes
        // before we get here, so this is bounded by the frame limit.
        let pending_frame =
            frame_len(&self.buf)?.map_or(0, |len| (len + 4).saturating_sub(self.buf.len()));
        let want = pending_frame.max(READ_CHUNK);
        let start = self.buf.len();
        self.buf.resize(start + want, 0);
        let result = self.stream.read(&mut self.buf[start..]);
        self.buf.truncate(start + *result.as_ref().unwrap_or(&0));
        match result {
            Ok(0) => Ok(Fill::Eof),
            Ok(_) => Ok(Fill::Data),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Fill::Idle)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn eof(&self) -> Result<Closed, ConnError> {
        if self.buf.is_empty() {
            Ok(Closed::ByPeer)
        } else {
            Err(ConnError::HalfFrame {
                pending: self.buf.len(),
            })
        }
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}

/// Answers `Refused` with the reason to a peer we will not serve, without reading anything from
/// it. Best effort: it may already be gone.
pub(crate) fn refuse(mut stream: impl Write, err: &ConnError) {
    let mut out = Vec::new();
    let refused = ServerHello::Refused {
        version: WIRE_VERSION,
        reason: err.to_string(),
    };
    if encode_frame(&refused, &mut out).is_ok() {
        let _ = stream.write_all(&out);
    }
}

/// Answers a hello we will not serve with `Refused` and its reason, then ends the link with `error`.
fn refuse_hello<W: Write>(
    writer: &mut W,
    reason: String,
    error: ConnError,
) -> Result<Closed, ConnError> {
    let mut out = Vec::new();
    encode_frame(
        &ServerHello::Refused {
            version: WIRE_VERSION,
            reason,
        },
        &mut out,
    )
    .map_err(ConnError::Encode)?;
    writer.write_all(&out)?;
    writer.flush()?;
    Err(error)
}

/// Serves one accepted (and, for a Unix socket, uid-checked) link until the peer leaves,
/// misbehaves, or the store shuts down.
pub(crate) fn serve<E: Engine, S: LinkStream>(
    stream: S,
    store: &Store<E>,
    committer: &Committer,
    shutdown: &AtomicBool,
    config: &ServerConfig,
) -> Result<Closed, ConnError> {
    let (reader, mut writer) = stream.split(READ_TICK, WRITE_TIMEOUT)?;
    let mut link = Link {
        stream: reader,
        buf: Vec::new(),
        shutdown,
    };

    let hello = match read_hello(&mut link, config.hello_timeout)? {
        Ok(hello) => hello,
        Err(closed) => return Ok(closed),
    };
    let hello = match hello {
        ClientHelloFrame::OtherVersion(version) => {
            let reason = format!("this store speaks wire version {WIRE_VERSION}, not {version}");
            return refuse_hello(&mut writer, reason, ConnError::WrongVersion(version));
        }
        ClientHelloFrame::Ours(hello) => match hello.node.check() {
            Ok(()) => hello,
            Err(why) => {
                let reason = format!("{why}; set the gateway's server.node_name");
                return refuse_hello(&mut writer, reason, ConnError::BadNodeName(why));
            }
        },
    };
    let mut out = Vec::new();
    encode_frame(
        &ServerHello::Accepted {
            version: WIRE_VERSION,
        },
        &mut out,
    )
    .map_err(ConnError::Encode)?;
    writer.write_all(&out)?;
    writer.flush()?;
    tracing::info!(node = %hello.node, role = %hello.role, "link open");

    let (owed_tx, owed_rx) = mpsc::sync_channel(MAX_OWED_REPLIES);
    let (outcome_tx, outcome_rx) = mpsc::channel();
    thread::scope(|scope| {
        let writer = thread::Builder::new()
            .name("store-link-writer".into())
            .spawn_scoped(scope, move || write_replies(writer, &owed_rx, &outcome_rx))
            .map_err(|e| ConnError::Writer(e.to_string()))?;
        let read_result = read_requests(&mut link, store, committer, &hello, &owed_tx, &outcome_tx);
        drop(owed_tx);
        let write_result = writer
            .join()
            .unwrap_or_else(|_| Err(ConnError::Writer("the reply writer panicked".into())));
        match (read_result, write_result) {
            // The reader stops when the writer fails; the writer's error is the real reason.
            (_, Err(e)) => Err(e),
            (result, Ok(())) => result,
        }
    })
}

/// Decodes and dispatches requests until the peer leaves, misbehaves or the store shuts down.
fn read_requests<E: Engine, R: Read>(
    link: &mut Link<'_, R>,
    store: &Store<E>,
    committer: &Committer,
    hello: &ClientHello,
    owed: &SyncSender<Owed>,
    outcomes: &mpsc::Sender<Outcome>,
) -> Result<Closed, ConnError> {
    let writer_gone = || ConnError::Writer("the reply writer stopped".into());
    // Sequence number of this link's last submitted write; a read waits until it is applied.
    let mut last_write = 0;
    loop {
        let mut used = 0;
        let mut bad = None;
        loop {
            match decode_frame::<RequestEnvelope>(&link.buf[used..]) {
                Ok(Some((envelope, len))) => {
                    used += len;
                    let id = envelope.id;
                    let next = if let Err(refusal) =
                        permissions::check(hello, envelope.acting.as_ref(), &envelope.request)
                    {
                        tracing::debug!(id, %refusal, "request refused by the link's role");
                        Owed::Ready(id, Box::new(Err(StoreError::Invalid(refusal.to_string()))))
                    } else if is_write(&envelope.request) {
                        last_write = committer.submit(Call::from(envelope), outcomes);
                        Owed::Committed(id)
                    } else {
                        committer.wait_applied(last_write);
                        Owed::Ready(id, Box::new(read(store, id, envelope)))
                    };
                    owed.send(next).map_err(|_| writer_gone())?;
                }
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        link.buf.drain(..used);
        if let Some(e) = bad {
            // Everything before the bad frame is still answered by the writer.
            return Err(e.into());
        }
        if link.stopping() {
            return Ok(Closed::Shutdown);
        }
        match link.fill()? {
            Fill::Data | Fill::Idle => {}
            Fill::Eof => return link.eof(),
        }
    }
}

fn read<E: Engine>(store: &Store<E>, id: u64, envelope: RequestEnvelope) -> Outcome {
    let result = store.read(envelope.acting.as_ref(), envelope.request);
    if let Err(err) = &result {
        tracing::debug!(id, %err, "request refused");
    }
    result
}

/// Sends the owed replies in order until the reader is done and everything is answered. On a
/// socket failure it shuts the socket down so the reader stops too.
fn write_replies<W: LinkWriter>(
    mut stream: W,
    owed: &Receiver<Owed>,
    outcomes: &Receiver<Outcome>,
) -> Result<(), ConnError> {
    let result = send_in_order(&mut stream, owed, outcomes);
    if result.is_err() {
        stream.abort();
    }
    result
}

fn send_in_order<W: Write>(
    stream: &mut W,
    owed: &Receiver<Owed>,
    outcomes: &Receiver<Outcome>,
) -> Result<(), ConnError> {
    let mut out = Vec::new();
    loop {
        let next = match owed.try_recv() {
            Ok(next) => next,
            Err(TryRecvError::Empty) => {
                flush(stream, &mut out)?;
                match owed.recv() {
                    Ok(next) => next,
                    Err(_) => return Ok(()),
                }
            }
            Err(TryRecvError::Disconnected) => return flush(stream, &mut out),
        };
        let (id, result) = match next {
            Owed::Ready(id, result) => (id, *result),
            Owed::Committed(id) => {
                let result = match outcomes.try_recv() {
                    Ok(result) => result,
                    Err(_) => {
                        // Do not hold finished replies back while the group commits.
                        flush(stream, &mut out)?;
                        outcomes.recv().map_err(|_| {
                            ConnError::Writer("the committer dropped a write".into())
                        })?
                    }
                };
                if let Err(err) = &result {
                    tracing::debug!(id, %err, "write refused");
                }
                (id, result)
            }
        };
        push_reply(&mut out, id, result)?;
        if out.len() >= FLUSH_AT {
            flush(stream, &mut out)?;
        }
    }
}

fn flush<W: Write>(stream: &mut W, out: &mut Vec<u8>) -> Result<(), ConnError> {
    if !out.is_empty() {
        stream.write_all(out)?;
        stream.flush()?;
        out.clear();
    }
    Ok(())
}

/// Waits for the hello; `Err(Closed)` when the peer left cleanly or the store began shutting down.
fn read_hello<R: Read>(
    link: &mut Link<'_, R>,
    timeout: Duration,
) -> Result<Result<ClientHelloFrame, Closed>, ConnError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((hello, used)) = decode_client_hello(&link.buf)? {
            link.buf.drain(..used);
            return Ok(Ok(hello));
        }
        match link.fill()? {
            Fill::Data => {}
            Fill::Eof => return link.eof().map(Err),
            Fill::Idle if link.stopping() => return Ok(Err(Closed::Shutdown)),
            Fill::Idle if Instant::now() >= deadline => {
                return Err(ConnError::HelloTimeout(timeout));
            }
            Fill::Idle => {}
        }
    }
}

/// Appends the reply frame; a reply too large for one frame becomes an error reply instead.
fn push_reply(out: &mut Vec<u8>, id: u64, result: Outcome) -> Result<(), ConnError> {
    match encode_frame(&ReplyEnvelope { id, result }, out) {
        Ok(()) => Ok(()),
        Err(WireError::TooLarge { len, max }) => {
            tracing::warn!(
                id,
                len,
                "reply over the frame limit; answering with an error"
            );
            let why = format!(
                "the reply would be {len} bytes, over the {max}-byte frame limit; ask for less at once"
            );
            encode_frame(
                &ReplyEnvelope {
                    id,
                    result: Err(StoreError::Invalid(why)),
                },
                out,
            )
            .map_err(ConnError::Encode)
        }
        Err(e) => Err(ConnError::Encode(e)),
    }
}
