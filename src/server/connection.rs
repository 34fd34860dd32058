//! One client connection, served by one task: read requests, answer them in
//! order, deliver subscription events, and keep everything the client can
//! make the server hold within a bound.
//!
//! The loop, each turn: move ready answers and events into the output
//! buffer ([`answer`](super::answer)), write what the socket takes, then
//! wait for whichever comes first: the socket (readable when more requests
//! may be taken, writable when output is waiting), an engine reply, a
//! mailbox event, a deadline, or shutdown.
//!
//! What a client controls, and the bound on what the server holds for it
//! (the numbers are [`Config`](super::Config) fields):
//! - a frame being received: at most `max_frame` bytes (4 KiB before
//!   HELLO), and it must complete within `frame_timeout`; frames over 64
//!   KiB also draw on a server-wide budget (`large_frame_budget`);
//! - requests waiting for their answer: at most `max_in_flight`, holding at
//!   most `max_input` bytes (one request may exceed it);
//! - answers and events not yet taken by the client: once `max_output`
//!   bytes are waiting, the server stops reading requests and stops
//!   producing output for this connection (LIST and snapshots are produced
//!   piece by piece from a view, never built whole); output that makes no
//!   progress for `write_timeout` closes the connection;
//! - subscriptions: `max_subscriptions` per connection and
//!   `max_total_subscriptions` server-wide; each holds a mailbox bounded by
//!   the number of keys it covers.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit};
use tokio_util::codec::{Decoder, Encoder};

use super::answer::{Entry, Work};
use super::stream::Stream;
use super::{Phase, Shared};
use crate::engine::{Command, Reply, ReplyTo, Ticket};
use crate::notify::Mailbox;
use crate::protocol::{
    wire, ErrorCode, ErrorFrame, FrameError, Response, ServerCodec, ServerFrame,
};

/// Frames over this many bytes draw on the server-wide large-frame budget
/// while they are received and until they are answered.
const LARGE_FRAME: u32 = 64 << 10;

/// Read at most this much from the socket per readiness.
const READ_CHUNK: usize = 64 << 10;

/// After the server closes a connection on its own (a fatal error, a
/// timeout, shutdown), how long it keeps discarding what the client still
/// sends, and how much at most. Closing a socket with unread input makes
/// the kernel reset the connection, and the client would lose the ERROR
/// that says why; discarding for a moment lets it arrive.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);
const LINGER_BYTES: usize = 4 << 20;

/// State of one connection (see the module docs).
pub(super) struct Connection {
    /// Server-assigned number (STATS, logs, subscription keys).
    pub(super) id: u64,
    pub(super) shared: Arc<Shared>,
    pub(super) stream: Stream,
    /// Who is calling (credentials, token name), for the access rules.
    pub(super) peer: super::access::Peer,
    /// Bytes read and not yet decoded.
    pub(super) input: BytesMut,
    pub(super) codec: ServerCodec,
    /// Bytes encoded and not yet written.
    pub(super) output: BytesMut,
    /// When output last made progress (or became non-empty).
    pub(super) last_progress: Instant,
    /// Until HELLO is answered: when the handshake times out.
    pub(super) handshake_deadline: Option<Instant>,
    /// When the frame whose first bytes are in `input` must be complete.
    pub(super) frame_deadline: Option<Instant>,
    /// The large-frame budget drawn for the frame being received.
    pub(super) large_permit: Option<OwnedSemaphorePermit>,
    /// Bytes of budget the frame being received still waits for.
    pub(super) large_wanted: u32,
    /// Requests in order, awaiting (or streaming) their answer.
    pub(super) queue: VecDeque<Entry>,
    /// Commands decoded and not yet handed to the engine, which takes them
    /// together once the input read so far is decoded.
    pub(super) batch: Vec<(Ticket, Command)>,
    /// The ticket of the next command.
    pub(super) next_ticket: Ticket,
    /// Engine answers not yet used, by ticket (ascending).
    pub(super) arrived: VecDeque<(Ticket, Reply)>,
    /// Answers the engine gives later (writes waiting for their fsync).
    pub(super) replies: mpsc::UnboundedReceiver<(Ticket, Reply)>,
    pub(super) reply_tx: ReplyTo,
    /// Scratch for the engine's immediate answers.
    answers: Vec<(Ticket, Reply)>,
    /// Bytes of the requests in `queue`.
    pub(super) held_input: usize,
    /// Subscriptions whose SYNCED was sent, draining their mailboxes.
    pub(super) active: BTreeMap<u32, Arc<Mailbox>>,
    /// Where event draining resumes (round robin over `active`).
    pub(super) next_sub: u32,
    /// Subscription ids in use as of the last request read (SUB adds, UNSUB
    /// removes), counted in the server-wide total.
    pub(super) logical_subs: HashSet<u32>,
    /// Wakes this task when a mailbox gets an event.
    pub(super) waker: Arc<Notify>,
    /// Set once nothing more is read: the connection ends when the queue
    /// and the output are empty.
    pub(super) closing: bool,
    /// Set once shutdown began.
    pub(super) draining: bool,
    /// Set once the client closed its sending side.
    pub(super) peer_closed: bool,
}

/// What ended a connection early.
enum End {
    /// The peer is gone or the socket failed.
    Gone,
    /// Shutdown's grace period is over.
    Abandon,
}

impl Connection {
    pub(super) fn new(stream: Stream, id: u64, shared: Arc<Shared>) -> Self {
        let (reply_tx, replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        let peer = match &stream {
            Stream::Unix(s) => match s.peer_cred() {
                Ok(cred) => super::access::Peer::unix(
                    cred.uid(),
                    cred.gid(),
                    cred.pid().and_then(|p| u32::try_from(p).ok()),
                ),
                // No credentials: the least a Unix client can be.
                Err(_) => super::access::Peer::unix(u32::MAX, u32::MAX, None),
            },
            Stream::Tcp(_) => super::access::Peer::tcp(),
        };
        Connection {
            id,
            stream,
            peer,
            input: BytesMut::new(),
            codec: ServerCodec::with_max_frame_length(wire::PRE_HELLO_MAX_FRAME),
            output: BytesMut::new(),
            last_progress: now,
            handshake_deadline: Some(now + shared.config.handshake_timeout),
            frame_deadline: None,
            large_permit: None,
            large_wanted: 0,
            queue: VecDeque::new(),
            batch: Vec::new(),
            next_ticket: 0,
            arrived: VecDeque::new(),
            replies,
            reply_tx,
            answers: Vec::new(),
            held_input: 0,
            active: BTreeMap::new(),
            next_sub: 0,
            logical_subs: HashSet::new(),
            waker: Arc::new(Notify::new()),
            closing: false,
            draining: false,
            peer_closed: false,
            shared,
        }
    }

    /// Serves the connection until the client leaves, a fatal error, or
    /// shutdown.
    pub(super) async fn serve(mut self, mut phase: watch::Receiver<Phase>) {
        match self.run(&mut phase).await {
            Ok(()) if !self.peer_closed => self.linger().await,
            Ok(()) | Err(End::Abandon) => {}
            Err(End::Gone) => tracing::debug!(connection = self.id, "connection lost"),
        }
    }

    /// Half-closes, then discards input for a moment (see [`LINGER`]).
    async fn linger(&mut self) {
        // The buffers are not needed any more; give them back first.
        self.input = BytesMut::new();
        self.output = BytesMut::new();
        self.stream.shutdown_write().await;
        let deadline = tokio::time::Instant::now() + LINGER;
        let mut scratch = [0u8; 4096];
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            tokio::select! {
                ready = self.stream.ready(Interest::READABLE) => {
                    if ready.is_err() {
                        return;
                    }
                    match self.stream.try_read(&mut scratch) {
                        Ok(0) => return,
                        Ok(n) => discarded += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    async fn run(&mut self, phase: &mut watch::Receiver<Phase>) -> Result<(), End> {
        loop {
            match *phase.borrow_and_update() {
                Phase::Running => {}
                Phase::Draining => self.begin_draining(),
                Phase::Closing => return Err(End::Abandon),
            }
            // Produce, write, and produce again while writing made room.
            loop {
                self.run_batch();
                self.advance();
                let before = self.output.len();
                self.write_now()?;
                let after = self.output.len();
                if after == before || after >= self.shared.config.max_output {
                    break;
                }
            }
            if self.closing && self.queue.is_empty() && self.output.is_empty() {
                return Ok(());
            }
            let mut interest = None;
            if self.may_read() && self.large_wanted == 0 {
                interest = Some(Interest::READABLE);
            }
            if !self.output.is_empty() {
                interest = Some(interest.map_or(Interest::WRITABLE, |i| i | Interest::WRITABLE));
            }
            let deadline = self.deadline();
            let large = self.shared.large_frames.clone();
            let wanted = self.large_wanted;
            tokio::select! {
                ready = async { self.stream.ready(interest.unwrap()).await }, if interest.is_some() => {
                    let ready = ready.map_err(|_| End::Gone)?;
                    if ready.is_readable() || ready.is_read_closed() {
                        self.read()?;
                    }
                }
                reply = self.replies.recv() => {
                    // The sender lives in `self`, so the channel never closes here.
                    if let Some(reply) = reply {
                        self.arrive(reply);
                    }
                }
                _ = self.waker.notified(), if !self.active.is_empty() => {}
                permit = large.acquire_many_owned(wanted), if wanted > 0 => {
                    self.large_permit = permit.ok();
                    self.large_wanted = 0;
                    self.decode()?;
                }
                _ = sleep_until(deadline), if deadline.is_some() => self.on_deadline()?,
                _ = phase.changed() => {}
            }
        }
    }

    /// Moves every engine reply already sent into `arrived`.
    pub(super) fn take_replies(&mut self) {
        while let Ok(reply) = self.replies.try_recv() {
            self.arrive(reply);
        }
    }

    /// Files an engine answer by ticket. Answers come mostly in order, so
    /// the search from the back is short.
    fn arrive(&mut self, reply: (Ticket, Reply)) {
        let at = self
            .arrived
            .iter()
            .rposition(|(ticket, _)| *ticket < reply.0)
            .map_or(0, |i| i + 1);
        self.arrived.insert(at, reply);
    }

    /// Hands the decoded commands to the engine; files its answers.
    pub(super) fn run_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut answers = std::mem::take(&mut self.answers);
        self.shared
            .engine
            .submit(self.id, &mut self.batch, &self.reply_tx, &mut answers);
        for answer in answers.drain(..) {
            self.arrive(answer);
        }
        self.answers = answers;
    }

    /// True when another request may be read now.
    fn may_read(&self) -> bool {
        let config = &self.shared.config;
        !self.closing
            && self.queue.len() < config.max_in_flight
            && (self.held_input < config.max_input || self.queue.is_empty())
            && self.output.len() < config.max_output
    }

    /// The earliest deadline in force.
    fn deadline(&self) -> Option<Instant> {
        let stall = (!self.output.is_empty())
            .then(|| self.last_progress + self.shared.config.write_timeout);
        [self.handshake_deadline, self.frame_deadline, stall]
            .into_iter()
            .flatten()
            .min()
    }

    fn on_deadline(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if !self.output.is_empty() && now >= self.last_progress + self.shared.config.write_timeout {
            tracing::info!(
                connection = self.id,
                pending = self.output.len(),
                "closing a connection whose output made no progress"
            );
            return Err(End::Gone);
        }
        if self.handshake_deadline.is_some_and(|d| now >= d) {
            self.handshake_deadline = None;
            self.fail(ErrorCode::Timeout, "no HELLO within the handshake timeout");
        } else if self.frame_deadline.is_some_and(|d| now >= d) {
            self.frame_deadline = None;
            let message = format!(
                "a frame was started but not completed within {} s",
                self.shared.config.frame_timeout.as_secs()
            );
            self.fail(ErrorCode::Timeout, message);
        }
        Ok(())
    }

    /// Stops reading and answers what is queued, then ERROR `code` with id
    /// 0; the connection closes after.
    pub(super) fn fail(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.push(
            wire::CONNECTION_ID,
            0,
            Work::Error(ErrorFrame::new(code, message)),
        );
        self.stop_reading();
    }

    pub(super) fn stop_reading(&mut self) {
        self.closing = true;
        self.frame_deadline = None;
        self.large_wanted = 0;
        self.large_permit = None;
        self.input = BytesMut::new();
    }

    fn begin_draining(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        if self.handshake_deadline.is_some() {
            // No session yet: nothing to finish.
            self.queue.clear();
            self.fail(ErrorCode::ShuttingDown, "the server is shutting down");
        } else if !self.closing {
            self.stop_reading();
            self.queue.push_back(Entry {
                id: wire::CONNECTION_ID,
                held: 0,
                _budget: None,
                work: Work::CloseSubscriptions,
            });
        }
    }

    /// Writes what the socket takes now.
    fn write_now(&mut self) -> Result<(), End> {
        while !self.output.is_empty() {
            match self.stream.try_write(&self.output) {
                Ok(0) => return Err(End::Gone),
                Ok(n) => {
                    let _ = self.output.split_to(n);
                    self.last_progress = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(End::Gone),
            }
        }
        if self.output.is_empty() {
            self.last_progress = Instant::now();
            // Give back what a burst grew (a big LIST item, say).
            if self.output.capacity() > 2 * self.shared.config.max_output.max(64 << 10) {
                self.output = BytesMut::new();
            }
        }
        Ok(())
    }

    /// Reads what is available, then decodes what the bounds allow.
    fn read(&mut self) -> Result<(), End> {
        if !self.may_read() {
            return Ok(());
        }
        self.input
            .reserve(READ_CHUNK.min(self.codec.max_frame_length() as usize + 4));
        match self.stream.try_read_buf(&mut self.input) {
            Ok(0) => {
                // The client is done sending; answer what it asked.
                self.peer_closed = true;
                if !self.input.is_empty() {
                    tracing::debug!(connection = self.id, "a frame cut short by the peer");
                }
                self.stop_reading();
                if self.handshake_deadline.is_some() {
                    return Err(End::Gone);
                }
                return Ok(());
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(_) => return Err(End::Gone),
        }
        self.decode()
    }

    /// Decodes and accepts whole frames while the bounds allow.
    fn decode(&mut self) -> Result<(), End> {
        while self.may_read() && !self.input.is_empty() {
            if !self.has_budget_for_next_frame() {
                return Ok(());
            }
            match self.codec.decode(&mut self.input) {
                Ok(Some(inbound)) => {
                    self.frame_deadline = None;
                    let permit = self.large_permit.take();
                    self.accept(inbound, permit);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(connection = self.id, error = %e, "undecodable frame; closing");
                    self.fail_frame(e);
                    return Ok(());
                }
            }
        }
        if self.input.is_empty() || !self.may_read() {
            self.frame_deadline = None;
        } else if self.frame_deadline.is_none() && self.handshake_deadline.is_none() {
            self.frame_deadline = Some(Instant::now() + self.shared.config.frame_timeout);
        }
        if self.input.is_empty() && self.input.capacity() > 2 * READ_CHUNK {
            self.input = BytesMut::new();
        }
        Ok(())
    }

    /// For a large frame, takes its share of the server-wide budget before
    /// reading its body; false while the budget is not available.
    fn has_budget_for_next_frame(&mut self) -> bool {
        if self.large_permit.is_some() || self.input.len() < wire::LENGTH_SIZE {
            return true;
        }
        let length = u32::from_be_bytes(self.input[..4].try_into().expect("4 bytes"));
        if length <= LARGE_FRAME || length > self.codec.max_frame_length() {
            return true;
        }
        let kib = length.div_ceil(1024);
        match self.shared.large_frames.clone().try_acquire_many_owned(kib) {
            Ok(permit) => {
                self.large_permit = Some(permit);
                true
            }
            Err(_) => {
                self.large_wanted = kib;
                false
            }
        }
    }

    /// A frame that cannot be decoded: the stream cannot be trusted.
    fn fail_frame(&mut self, e: FrameError) {
        let code = e.code();
        // Before HELLO every bad first frame is PROTOCOL (a length over the
        // pre-HELLO limit keeps its own code, TOO_LARGE).
        let code = if self.handshake_deadline.is_some() && code != ErrorCode::TooLarge {
            ErrorCode::Protocol
        } else {
            code
        };
        self.fail(code, e.to_string());
    }

    /// Appends a frame to the output.
    pub(super) fn encode(&mut self, frame: ServerFrame) {
        if let Err(e) = self.codec.encode(&frame, &mut self.output) {
            // Only a frame over the limit can fail; answer in its place.
            tracing::error!(connection = self.id, error = %e, "cannot encode an answer");
            if let ServerFrame::Response { id, .. } = frame {
                let error = ErrorFrame::new(ErrorCode::Server, format!("answer too large: {e}"));
                let _ = self.codec.encode(
                    ServerFrame::Response {
                        id,
                        response: Response::Error(error),
                    },
                    &mut self.output,
                );
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let n = self.logical_subs.len();
        if n > 0 {
            self.shared.subscriptions.fetch_sub(n, Ordering::Relaxed);
        }
        let waits = self.shared.engine.disconnect(self.id);
        // Ephemeral keys with a grace period go when it is over (unless
        // taken over meanwhile).
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for wait in waits {
                let engine = self.shared.engine.clone();
                runtime.spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tokio::task::spawn_blocking(move || engine.expire_ephemeral()).await;
                });
            }
        }
        self.shared.connections.fetch_sub(1, Ordering::SeqCst);
        self.shared.closed.fetch_add(1, Ordering::Relaxed);
        self.shared
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}
