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
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::Interest;
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit};
use tokio_util::codec::{Decoder, Encoder};

use super::answer::{EngineOp, Entry, Work};
use super::stream::Stream;
use super::{Phase, Shared};
use crate::engine::{Command, Job, Reply};
use crate::key;
use crate::notify::Mailbox;
use crate::protocol::{
    wire, ClientFrame, Condition as WireCondition, ErrorCode, ErrorFrame, FrameError, Inbound,
    Request, Response, ServerCodec, ServerFrame,
};
use crate::store::Condition;

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
    pub id: u64,
    pub shared: Arc<Shared>,
    stream: Stream,
    jobs: Sender<Job>,
    /// Bytes read and not yet decoded.
    input: BytesMut,
    pub codec: ServerCodec,
    /// Bytes encoded and not yet written.
    pub output: BytesMut,
    /// When output last made progress (or became non-empty).
    last_progress: Instant,
    /// Until HELLO is answered: when the handshake times out.
    handshake_deadline: Option<Instant>,
    /// When the frame whose first bytes are in `input` must be complete.
    frame_deadline: Option<Instant>,
    /// The large-frame budget drawn for the frame being received.
    large_permit: Option<OwnedSemaphorePermit>,
    /// Bytes of budget the frame being received still waits for.
    large_wanted: u32,
    /// Requests in order, awaiting (or streaming) their answer.
    pub queue: VecDeque<Entry>,
    /// Engine replies received, in the order the jobs were sent.
    pub arrived: VecDeque<Reply>,
    replies: mpsc::UnboundedReceiver<Reply>,
    reply_tx: mpsc::UnboundedSender<Reply>,
    /// Bytes of the requests in `queue`.
    pub held_input: usize,
    /// Subscriptions whose SYNCED was sent, draining their mailboxes.
    pub active: BTreeMap<u32, Arc<Mailbox>>,
    /// Where event draining resumes (round robin over `active`).
    pub next_sub: u32,
    /// Subscription ids in use as of the last request read (SUB adds, UNSUB
    /// removes), counted in the server-wide total.
    logical_subs: HashSet<u32>,
    /// Wakes this task when a mailbox gets an event.
    pub waker: Arc<Notify>,
    /// Set once nothing more is read: the connection ends when the queue
    /// and the output are empty.
    pub closing: bool,
    /// Set once shutdown began.
    draining: bool,
    /// Set once the client closed its sending side.
    peer_closed: bool,
}

/// What ended a connection early.
enum End {
    /// The peer is gone or the socket failed.
    Gone,
    /// Shutdown's grace period is over.
    Abandon,
}

impl Connection {
    pub(super) fn new(stream: Stream, id: u64, shared: Arc<Shared>, jobs: Sender<Job>) -> Self {
        let (reply_tx, replies) = mpsc::unbounded_channel();
        let now = Instant::now();
        Connection {
            id,
            stream,
            jobs,
            input: BytesMut::new(),
            codec: ServerCodec::with_max_frame_length(wire::PRE_HELLO_MAX_FRAME),
            output: BytesMut::new(),
            last_progress: now,
            handshake_deadline: Some(now + shared.config.handshake_timeout),
            frame_deadline: None,
            large_permit: None,
            large_wanted: 0,
            queue: VecDeque::new(),
            arrived: VecDeque::new(),
            replies,
            reply_tx,
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
                        self.arrived.push_back(reply);
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
    pub fn take_replies(&mut self) {
        while let Ok(reply) = self.replies.try_recv() {
            self.arrived.push_back(reply);
        }
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
    fn fail(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.push(
            wire::CONNECTION_ID,
            0,
            Work::Error(ErrorFrame::new(code, message)),
        );
        self.stop_reading();
    }

    fn stop_reading(&mut self) {
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

    /// Queues one request (or answers the handshake).
    fn accept(&mut self, inbound: Inbound, permit: Option<OwnedSemaphorePermit>) {
        if self.handshake_deadline.is_some() {
            return self.handshake(inbound);
        }
        let held = inbound_size(&inbound);
        let (id, request) = match inbound {
            Inbound::Invalid {
                id, code, message, ..
            } => {
                let error = ErrorFrame::new(code, message);
                if code.closes_connection() {
                    self.stop_reading();
                }
                return self.push(id, held, Work::Error(error));
            }
            Inbound::Request(ClientFrame { id, request }) => (id, request),
        };
        let work = match request {
            Request::Hello { .. } => {
                return self.fail(ErrorCode::Protocol, "HELLO was already received");
            }
            Request::Ping => Work::Pong,
            Request::Get { key } => Work::Get(key),
            Request::List { prefix } => match self.check_prefix(&prefix) {
                Ok(()) => Work::List(prefix),
                Err(e) => Work::Error(e),
            },
            Request::Put {
                key,
                value,
                condition,
            } => {
                // A value of its own: a slice would pin the whole read
                // buffer for as long as a mailbox holds the event.
                let value = Bytes::copy_from_slice(&value);
                let command = Command::Put {
                    key,
                    value,
                    condition: store_condition(condition),
                };
                self.submit(command, EngineOp::Put)
            }
            Request::Delete { key, condition } => self.submit(
                Command::Delete {
                    key,
                    condition: store_condition(condition),
                },
                EngineOp::Delete,
            ),
            Request::DeletePrefix { prefix } => match self.check_prefix(&prefix) {
                Ok(()) => self.submit(Command::DeletePrefix { prefix }, EngineOp::Delete),
                Err(e) => Work::Error(e),
            },
            Request::Subscribe { prefix, since } => self.subscribe(id, prefix, since),
            Request::Unsubscribe { subscription } => {
                if self.logical_subs.remove(&subscription) {
                    self.shared.subscriptions.fetch_sub(1, Ordering::Relaxed);
                    self.submit(
                        Command::Unsubscribe { subscription },
                        EngineOp::Unsubscribe(subscription),
                    )
                } else {
                    Work::Error(ErrorFrame::new(
                        ErrorCode::NotFound,
                        format!("no subscription {subscription} on this connection"),
                    ))
                }
            }
            Request::Stats => self.submit(Command::Stats, EngineOp::Stats),
            Request::Compact => self.submit(Command::Compact, EngineOp::Compact),
        };
        if let Work::Error(e) = &work {
            if e.code.closes_connection() {
                self.stop_reading();
            }
        }
        self.held_input += held;
        self.queue.push_back(Entry {
            id,
            held,
            _budget: permit,
            work,
        });
    }

    fn push(&mut self, id: u32, held: usize, work: Work) {
        self.held_input += held;
        self.queue.push_back(Entry {
            id,
            held,
            _budget: None,
            work,
        });
    }

    fn check_prefix(&self, prefix: &str) -> Result<(), ErrorFrame> {
        key::validate_prefix(prefix, self.shared.max_key)
            .map_err(|e| ErrorFrame::new(ErrorCode::InvalidKey, e.to_string()))
    }

    fn subscribe(&mut self, id: u32, prefix: String, since: Option<u64>) -> Work {
        if let Err(e) = self.check_prefix(&prefix) {
            return Work::Error(e);
        }
        if self.logical_subs.contains(&id) {
            return Work::Error(ErrorFrame::new(
                ErrorCode::InvalidArgument,
                format!("subscription {id} already exists on this connection"),
            ));
        }
        let config = &self.shared.config;
        if self.logical_subs.len() >= config.max_subscriptions {
            return Work::Error(ErrorFrame::new(
                ErrorCode::Limit,
                format!(
                    "too many subscriptions on this connection (limit {})",
                    config.max_subscriptions
                ),
            ));
        }
        let total = self.shared.subscriptions.fetch_add(1, Ordering::Relaxed);
        if total >= config.max_total_subscriptions {
            self.shared.subscriptions.fetch_sub(1, Ordering::Relaxed);
            return Work::Error(ErrorFrame::new(
                ErrorCode::Limit,
                format!(
                    "too many subscriptions on this server (limit {})",
                    config.max_total_subscriptions
                ),
            ));
        }
        self.logical_subs.insert(id);
        self.shared.ops.sub.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox::new(self.waker.clone()));
        let command = Command::Subscribe {
            subscription: id,
            prefix: prefix.clone(),
            mailbox: mailbox.clone(),
        };
        self.submit(
            command,
            EngineOp::Subscribe {
                prefix,
                since,
                mailbox,
            },
        )
    }

    /// A SUB the engine refused: its id is free again.
    pub fn forget_subscription(&mut self, id: u32) {
        if self.logical_subs.remove(&id) {
            self.shared.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sends a job to the engine; its answer comes back in order.
    pub fn submit(&mut self, command: Command, op: EngineOp) -> Work {
        let job = Job {
            connection: self.id,
            command,
            reply: self.reply_tx.clone(),
        };
        if self.jobs.send(job).is_err() {
            return Work::Error(ErrorFrame::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            ));
        }
        Work::Engine(op)
    }

    /// The first frame: HELLO, answered with HELLO_OK or an ERROR that
    /// closes the connection.
    fn handshake(&mut self, inbound: Inbound) {
        self.handshake_deadline = None;
        let (id, version) = match inbound {
            Inbound::Request(ClientFrame {
                id,
                request: Request::Hello { version, .. },
            }) => (id, version),
            // A HELLO whose client name is not UTF-8 (section 3's table).
            Inbound::Invalid {
                id,
                frame_type: wire::frame_type::HELLO,
                code,
                message,
            } => {
                self.push(id, 0, Work::Error(ErrorFrame::new(code, message)));
                return self.stop_reading();
            }
            _ => return self.fail(ErrorCode::Protocol, "the first frame must be HELLO"),
        };
        if version < wire::MIN_PROTOCOL_VERSION {
            let message = format!(
                "protocol version {version} is not supported; this server speaks {}..={}",
                wire::MIN_PROTOCOL_VERSION,
                wire::PROTOCOL_VERSION
            );
            let error = ErrorFrame::new(ErrorCode::UnsupportedVersion, message);
            self.push(id, 0, Work::Error(error));
            return self.stop_reading();
        }
        let config = &self.shared.config;
        let hello = Response::HelloOk {
            version: version.min(wire::PROTOCOL_VERSION),
            max_frame: config.max_frame,
            max_key: self.shared.max_key as u32,
            max_value: self.shared.max_value as u32,
            server_name: concat!("nkv-server ", env!("CARGO_PKG_VERSION")).to_owned(),
        };
        self.codec.set_max_frame_length(config.max_frame);
        self.encode(ServerFrame::Response {
            id,
            response: hello,
        });
        tracing::debug!(connection = self.id, version, "handshake");
    }

    /// Appends a frame to the output.
    pub fn encode(&mut self, frame: ServerFrame) {
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
        let (reply, _) = mpsc::unbounded_channel();
        let _ = self.jobs.send(Job {
            connection: self.id,
            command: Command::Disconnect,
            reply,
        });
        self.shared.connections.fetch_sub(1, Ordering::SeqCst);
        self.shared.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Bytes a decoded request holds while it waits for its answer.
fn inbound_size(inbound: &Inbound) -> usize {
    let payload = match inbound {
        Inbound::Request(ClientFrame { request, .. }) => match request {
            Request::Put { key, value, .. } => key.len() + value.len(),
            Request::Get { key } | Request::Delete { key, .. } => key.len(),
            Request::List { prefix }
            | Request::DeletePrefix { prefix }
            | Request::Subscribe { prefix, .. } => prefix.len(),
            _ => 0,
        },
        Inbound::Invalid { message, .. } => message.len(),
    };
    wire::HEADER_SIZE + payload
}

fn store_condition(condition: WireCondition) -> Condition {
    match condition {
        WireCondition::None => Condition::None,
        WireCondition::MustNotExist => Condition::MustNotExist,
        WireCondition::RevisionEquals(revision) => Condition::RevisionIs(revision),
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline.into()).await;
    }
}
