//! The I/O thread: one current-thread tokio runtime that owns the socket.
//!
//! Callers never touch the socket; they send a [`Command`] and wait on a
//! std channel for the answer. This one task assigns request ids, encodes
//! frames, matches responses to requests by id, pushes subscription events
//! into the hub's queues, keeps the resume point of every subscription,
//! sends keepalive PINGs, and reconnects with exponential backoff when the
//! connection drops. Because all of that state is owned by one task, none
//! of it needs a lock. It never runs or drops a subscription handler: user
//! code never runs on this thread.
//!
//! Writing happens in a separate task fed by an unbounded channel, so that
//! the main task never stops reading while a large request is written: a
//! server blocked on writing events to us while we are blocked on writing a
//! request to it would otherwise deadlock both.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::{Encoder, FramedRead};

use super::error::{Error, ErrorKind};
use super::hub::{Hub, FIRST_REQUEST_ID};
use super::subscription::{SubState, SubscriptionEvent};
use super::{ClientOptions, ConnState, ListEntry, ServerInfo, Shared};
use crate::addr::Address;
use crate::protocol::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use crate::protocol::{
    ClientCodec, ClientFrame, ErrorCode, Event, FrameError, Request, Response, ServerFrame,
};

/// What the public API asks of the I/O thread.
pub(crate) enum Command {
    /// Send a request and answer `reply` with its response.
    Request {
        /// The request (any but SUB and UNSUB).
        request: Request,
        /// Where the answer goes.
        reply: SyncSender<Result<Answer, Error>>,
    },
    /// Subscribe with the id the hub reserved; answer `reply` once the
    /// server confirmed (the handler stays in the hub all along).
    Subscribe {
        /// The subscription id.
        id: u32,
        /// The prefix.
        prefix: String,
        /// The caller's resume point.
        since: Option<u64>,
        /// Where the answer goes.
        reply: SyncSender<Result<(), Error>>,
    },
    /// The subscription ended on the client's side (unsubscribe, or a
    /// subscribe the caller gave up on): tell the server, now or as soon as
    /// its SUB is confirmed.
    Forget {
        /// The subscription id.
        id: u32,
    },
    /// End every subscription, fail every pending request, stop.
    Close,
}

/// A successful answer to [`Command::Request`].
#[derive(Debug)]
pub(crate) enum Answer {
    /// The one response frame (never ERROR, never LIST_ITEM).
    Response(Response),
    /// The LIST_ITEM frames of a listing, collected until its LIST_OK.
    List(Vec<ListEntry>),
}

/// A request that waits for its response.
enum Pending {
    /// A caller's request; LIST items accumulate in `items`.
    Request {
        reply: SyncSender<Result<Answer, Error>>,
        items: Vec<ListEntry>,
    },
    /// A caller's SUB.
    Subscribe {
        prefix: String,
        since: Option<u64>,
        reply: SyncSender<Result<(), Error>>,
    },
    /// A SUB re-sent after a reconnect.
    Resubscribe,
    /// A SUB whose caller gave up: end it when confirmed.
    Forgotten,
    /// A keepalive PING.
    Keepalive,
    /// A request nobody waits for (UNSUB).
    Ignore,
}

/// One live connection.
struct Conn {
    /// Frames from the server.
    reader: FramedRead<Box<dyn AsyncRead + Send + Unpin>, ClientCodec>,
    /// Encoded frames to the writer task.
    writer_tx: UnboundedSender<Bytes>,
    /// The writer task; it ends only on a write error.
    writer: JoinHandle<io::Result<()>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

type Connecting = Pin<Box<dyn Future<Output = Result<(Conn, ServerInfo), Error>> + Send>>;

/// Starts the I/O thread and makes the first connection; returns once the
/// handshake is done (or failed, in which case the thread has ended).
pub(crate) fn spawn(
    addr: Address,
    options: ClientOptions,
    shared: Arc<Shared>,
    hub: Arc<Hub>,
) -> Result<(std::thread::JoinHandle<()>, UnboundedSender<Command>), Error> {
    let (commands, command_rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("nkv-client-io".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = ready_tx.send(Err(Error::connection(format!(
                        "cannot start the client runtime: {e}"
                    ))));
                    return;
                }
            };
            runtime.block_on(async move {
                let first = connect(addr.clone(), options.name.clone(), options.connect_timeout);
                match first.await {
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                    Ok((conn, server)) => {
                        let encoder = ClientCodec::with_max_frame_length(server.max_frame);
                        *shared.info.lock().unwrap_or_else(PoisonError::into_inner) = server;
                        shared.set_state(ConnState::Connected);
                        let _ = ready_tx.send(Ok(()));
                        let io = Io {
                            addr,
                            options,
                            shared,
                            hub,
                            subs: BTreeMap::new(),
                            pending: HashMap::new(),
                            next_id: FIRST_REQUEST_ID,
                            encoder,
                            last_loss: String::new(),
                            last_heard: Instant::now(),
                            pinging: false,
                        };
                        io.run(command_rx, conn).await;
                    }
                }
            });
        })
        .map_err(|e| Error::connection(format!("cannot start the client thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((thread, commands)),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(Error::connection("the client I/O thread failed to start"))
        }
    }
}

/// The state of the I/O task.
struct Io {
    addr: Address,
    options: ClientOptions,
    /// Limits, name and connection state, read by the public API.
    shared: Arc<Shared>,
    /// Where subscription events go.
    hub: Arc<Hub>,
    /// Active subscriptions by id, ordered so re-subscribing is deterministic.
    subs: BTreeMap<u32, SubState>,
    /// Requests sent on the current connection and not fully answered.
    pending: HashMap<u32, Pending>,
    /// The next request id to try (never 0).
    next_id: u32,
    /// Encodes requests (its maximum follows the server's `max_frame`).
    encoder: ClientCodec,
    /// Why the last connection was lost, for fail-fast messages.
    last_loss: String,
    /// When the server last sent anything (for the keepalive).
    last_heard: Instant,
    /// A keepalive PING is unanswered.
    pinging: bool,
}

/// What woke the main loop.
enum Wake {
    Command(Option<Command>),
    Frame(Option<Result<ServerFrame, FrameError>>),
    WriterDone(String),
    Connected(Result<(Conn, ServerInfo), Error>),
    Retry,
    Keepalive,
}

impl Io {
    async fn run(mut self, mut commands: UnboundedReceiver<Command>, first: Conn) {
        let mut conn = Some(first);
        let mut connecting: Option<Connecting> = None;
        let mut backoff = self.options.backoff_initial;
        let mut retry_at = Instant::now();
        let keepalive = self.options.keepalive;
        loop {
            let wake = match conn.as_mut() {
                Some(c) => tokio::select! {
                    cmd = commands.recv() => Wake::Command(cmd),
                    frame = c.reader.next() => Wake::Frame(frame),
                    done = &mut c.writer => Wake::WriterDone(match done {
                        Ok(Ok(())) => "writer stopped".to_owned(),
                        Ok(Err(e)) => format!("write failed: {e}"),
                        Err(e) => format!("writer task failed: {e}"),
                    }),
                    _ = tokio::time::sleep_until(self.last_heard + keepalive),
                        if !keepalive.is_zero() => Wake::Keepalive,
                },
                None => {
                    let reconnect = self.options.reconnect;
                    tokio::select! {
                        cmd = commands.recv() => Wake::Command(cmd),
                        result = async { connecting.as_mut().expect("guarded").await },
                            if connecting.is_some() => Wake::Connected(result),
                        _ = tokio::time::sleep_until(retry_at),
                            if reconnect && connecting.is_none() => Wake::Retry,
                    }
                }
            };
            // `select!` picks among ready branches at random: a thread that
            // woke late can see the keepalive timer beside the very answer it
            // waits for. A frame already there wins.
            let wake = match (wake, conn.as_mut()) {
                (Wake::Keepalive, Some(c)) => match c.reader.next().now_or_never() {
                    Some(frame) => Wake::Frame(frame),
                    None => Wake::Keepalive,
                },
                (wake, _) => wake,
            };
            match wake {
                Wake::Command(None | Some(Command::Close)) => {
                    self.shutdown();
                    return;
                }
                Wake::Command(Some(cmd)) => self.command(cmd, conn.as_mut()),
                Wake::Keepalive => {
                    if let Err(reason) = self.keepalive(conn.as_mut()) {
                        conn = None;
                        self.lost(reason);
                        retry_at = Instant::now() + backoff;
                    }
                }
                Wake::Frame(Some(Ok(frame))) => {
                    self.last_heard = Instant::now();
                    if let Err(reason) = self.frame(frame, conn.as_mut()) {
                        conn = None;
                        self.lost(reason);
                        retry_at = Instant::now() + backoff;
                    }
                }
                Wake::Frame(end) => {
                    let reason = match end {
                        Some(Err(e)) => format!("bad data from the server: {e}"),
                        _ => "the server closed the connection".to_owned(),
                    };
                    conn = None;
                    self.lost(reason);
                    retry_at = Instant::now() + backoff;
                }
                Wake::WriterDone(reason) => {
                    conn = None;
                    self.lost(reason);
                    retry_at = Instant::now() + backoff;
                }
                Wake::Retry => {
                    self.shared.set_state(ConnState::Connecting);
                    connecting = Some(Box::pin(connect(
                        self.addr.clone(),
                        self.options.name.clone(),
                        self.options.connect_timeout,
                    )));
                }
                Wake::Connected(result) => {
                    connecting = None;
                    match result {
                        Ok((mut new, server)) => {
                            backoff = self.options.backoff_initial;
                            self.connected(&mut new, server);
                            conn = Some(new);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "reconnect failed");
                            self.shared.set_state(ConnState::Disconnected);
                            self.last_loss = e.to_string();
                            backoff = (backoff * 2).min(self.options.backoff_max);
                            retry_at = Instant::now() + backoff;
                        }
                    }
                }
            }
        }
    }

    /// A request id not in use by a pending request: from the upper half
    /// of the id space (subscription ids, from the hub, are below it).
    fn alloc_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(FIRST_REQUEST_ID);
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }

    /// Keepalive tick: the server has been silent for a keepalive interval.
    /// Ask it something; if it stays silent for another one, give up on
    /// the connection (a hung server, a peer that vanished).
    fn keepalive(&mut self, conn: Option<&mut Conn>) -> Result<(), String> {
        let Some(conn) = conn else {
            return Ok(());
        };
        if self.pinging {
            return Err(format!(
                "no answer from the server for {:?} (keepalive)",
                self.options.keepalive * 2
            ));
        }
        let id = self.alloc_id();
        if self.send(conn, id, Request::Ping).is_ok() {
            self.pending.insert(id, Pending::Keepalive);
            self.pinging = true;
        }
        self.last_heard = Instant::now();
        Ok(())
    }

    /// Encodes and queues a frame.
    fn send(&mut self, conn: &mut Conn, id: u32, request: Request) -> Result<(), Error> {
        let mut buf = BytesMut::new();
        self.encoder
            .encode(ClientFrame { id, request }, &mut buf)
            .map_err(encode_error)?;
        // A send error means the writer ended; the main loop sees that next.
        let _ = conn.writer_tx.send(buf.freeze());
        Ok(())
    }

    fn not_connected(&self) -> Error {
        Error::connection(format!(
            "not connected to {}: {}",
            self.addr, self.last_loss
        ))
    }

    /// Ends subscription `id` on the handler's side: `Closed`, then the
    /// runner drops the handler.
    fn end_subscription(&mut self, id: u32, reason: String) {
        self.subs.remove(&id);
        self.hub.end(id, reason);
    }

    fn command(&mut self, cmd: Command, conn: Option<&mut Conn>) {
        match cmd {
            Command::Request { request, reply } => {
                let Some(conn) = conn else {
                    let _ = reply.send(Err(self.not_connected()));
                    return;
                };
                let id = self.alloc_id();
                match self.send(conn, id, request) {
                    Ok(()) => {
                        let items = Vec::new();
                        self.pending.insert(id, Pending::Request { reply, items });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Subscribe {
                id,
                prefix,
                since,
                reply,
            } => {
                let Some(conn) = conn else {
                    let _ = reply.send(Err(self.not_connected()));
                    return;
                };
                let request = Request::Subscribe {
                    prefix: prefix.clone(),
                    since,
                };
                match self.send(conn, id, request) {
                    Ok(()) => {
                        let pending = Pending::Subscribe {
                            prefix,
                            since,
                            reply,
                        };
                        self.pending.insert(id, pending);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Forget { id } => {
                if let Some(pending) = self.pending.get_mut(&id) {
                    if matches!(pending, Pending::Subscribe { .. } | Pending::Resubscribe) {
                        // Ended when the server confirms it.
                        *pending = Pending::Forgotten;
                    }
                }
                if self.subs.remove(&id).is_some() {
                    if let Some(conn) = conn {
                        self.unsub_on_server(conn, id);
                    }
                }
            }
            Command::Close => unreachable!("handled by run"),
        }
    }

    /// Tells the server to end `id`, without waiting: locally it has ended.
    fn unsub_on_server(&mut self, conn: &mut Conn, subscription: u32) {
        let request_id = self.alloc_id();
        if self
            .send(conn, request_id, Request::Unsubscribe { subscription })
            .is_ok()
        {
            self.pending.insert(request_id, Pending::Ignore);
        }
    }

    /// Handles one frame; `Err(reason)` means the connection must be dropped.
    fn frame(&mut self, frame: ServerFrame, conn: Option<&mut Conn>) -> Result<(), String> {
        match frame {
            ServerFrame::Response {
                id: 0,
                response: Response::Error(e),
            } => Err(format!(
                "the server ended the connection: {}",
                Error::from_wire(e)
            )),
            ServerFrame::Response { id, response } => self.response(id, response, conn),
            ServerFrame::Event {
                subscription,
                event,
            } => {
                self.event(subscription, event);
                Ok(())
            }
        }
    }

    fn response(
        &mut self,
        id: u32,
        response: Response,
        conn: Option<&mut Conn>,
    ) -> Result<(), String> {
        let Some(pending) = self.pending.remove(&id) else {
            return Err(format!("the server answered unknown request {id}"));
        };
        match pending {
            Pending::Request { reply, mut items } => match response {
                Response::ListItem {
                    revision,
                    key,
                    value,
                } => {
                    items.push(ListEntry {
                        key,
                        value,
                        revision,
                    });
                    self.pending.insert(id, Pending::Request { reply, items });
                }
                Response::ListOk { .. } => {
                    let _ = reply.send(Ok(Answer::List(items)));
                }
                Response::Error(e) => {
                    let _ = reply.send(Err(Error::from_wire(e)));
                }
                other => {
                    let _ = reply.send(Ok(Answer::Response(other)));
                }
            },
            Pending::Subscribe {
                prefix,
                since,
                reply,
            } => match response {
                Response::SubOk => {
                    self.subs.insert(id, SubState::new(prefix, since));
                    if reply.send(Ok(())).is_err() || !self.hub.is_live(id) {
                        // The caller gave up waiting (and dropped its
                        // handler): end the subscription rather than leak it.
                        self.subs.remove(&id);
                        if let Some(conn) = conn {
                            self.unsub_on_server(conn, id);
                        }
                    }
                }
                Response::Error(e) => {
                    let _ = reply.send(Err(Error::from_wire(e)));
                }
                other => {
                    let e = protocol_error(&other, "SUB");
                    let _ = reply.send(Err(e.clone()));
                    return Err(e.message);
                }
            },
            Pending::Resubscribe => match response {
                Response::SubOk => {}
                Response::Error(e) => {
                    let reason = format!("could not resume: {}", Error::from_wire(e));
                    self.end_subscription(id, reason);
                }
                other => return Err(protocol_error(&other, "SUB").message),
            },
            Pending::Forgotten => {
                if let (Response::SubOk, Some(conn)) = (response, conn) {
                    self.unsub_on_server(conn, id);
                }
            }
            Pending::Keepalive => self.pinging = false,
            Pending::Ignore => {}
        }
        Ok(())
    }

    fn event(&mut self, id: u32, event: Event) {
        let Some(sub) = self.subs.get_mut(&id) else {
            // Unsubscribed locally; the server has not seen the UNSUB yet.
            return;
        };
        if let Event::Closed { code, message } = &event {
            if *code == ErrorCode::ShuttingDown && self.options.reconnect {
                // The server is going away, not ending this subscription
                // for cause: keep it and resume it on the next server.
                return;
            }
            let reason = format!("{code}: {message}");
            self.end_subscription(id, reason);
            return;
        }
        sub.observe(&event);
        self.hub.push(id, SubscriptionEvent::from_wire(event));
    }

    /// The connection is gone: fail what waits on it, tell every handler.
    fn lost(&mut self, reason: String) {
        tracing::debug!(%reason, "connection lost");
        self.shared.set_state(ConnState::Disconnected);
        self.pinging = false;
        let error = Error::connection(format!("connection to {} lost: {reason}", self.addr));
        for (_, pending) in self.pending.drain() {
            match pending {
                Pending::Request { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Pending::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                // Still in `subs`: re-sent on the next connection.
                Pending::Resubscribe
                | Pending::Forgotten
                | Pending::Keepalive
                | Pending::Ignore => {}
            }
        }
        for (&id, sub) in self.subs.iter_mut() {
            sub.disconnected();
            self.hub.push(id, SubscriptionEvent::Disconnected);
        }
        if !self.options.reconnect {
            let ids: Vec<u32> = self.subs.keys().copied().collect();
            for id in ids {
                self.end_subscription(id, format!("connection lost: {reason}"));
            }
        }
        self.last_loss = reason;
    }

    /// A new connection is up: adopt its limits, resume every subscription.
    fn connected(&mut self, conn: &mut Conn, server: ServerInfo) {
        tracing::debug!(addr = %self.addr, "reconnected");
        self.encoder.set_max_frame_length(server.max_frame);
        *self
            .shared
            .info
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = server;
        self.shared.set_state(ConnState::Connected);
        self.last_heard = Instant::now();
        let subs: Vec<(u32, SubState)> = self.subs.iter().map(|(&id, s)| (id, s.clone())).collect();
        for (id, sub) in subs {
            if sub.needs_reset() {
                // The handler may hold part of a snapshot that a fresh one
                // will not delete.
                self.hub.push(id, SubscriptionEvent::Reset);
            }
            let request = Request::Subscribe {
                prefix: sub.prefix.clone(),
                since: sub.resume,
            };
            match self.send(conn, id, request) {
                Ok(()) => {
                    self.pending.insert(id, Pending::Resubscribe);
                }
                Err(e) => self.end_subscription(id, format!("could not resume: {e}")),
            }
        }
    }

    /// The client is closing: fail what waits. (The hub ends every
    /// subscription on the closing thread.)
    fn shutdown(&mut self) {
        self.shared.set_state(ConnState::Closed);
        for (_, pending) in self.pending.drain() {
            match pending {
                Pending::Request { reply, .. } => {
                    let _ = reply.send(Err(Error::closed()));
                }
                Pending::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(Error::closed()));
                }
                Pending::Resubscribe
                | Pending::Forgotten
                | Pending::Keepalive
                | Pending::Ignore => {}
            }
        }
        self.subs.clear();
    }
}

fn encode_error(e: FrameError) -> Error {
    match e {
        FrameError::TooLarge { .. } | FrameError::FieldTooLong { .. } => {
            Error::new(ErrorKind::TooLarge, e.to_string())
        }
        other => Error::new(ErrorKind::InvalidArgument, other.to_string()),
    }
}

fn protocol_error(response: &Response, request: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!(
            "unexpected response type 0x{:02X} to {request}",
            response.frame_type()
        ),
    )
}

/// Connects and performs the handshake within `timeout`.
async fn connect(
    addr: Address,
    name: String,
    timeout: Duration,
) -> Result<(Conn, ServerInfo), Error> {
    match tokio::time::timeout(timeout, handshake(&addr, name)).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!("connecting to {addr}: no handshake within {timeout:?}"),
        )),
    }
}

async fn handshake(addr: &Address, name: String) -> Result<(Conn, ServerInfo), Error> {
    let io_error = |e: io::Error| Error::connection(format!("connecting to {addr}: {e}"));
    if let Address::Unix(path) = addr {
        // Never talk to a server someone else planted in our default directory.
        crate::perms::check_before_connect(path).map_err(io_error)?;
    }
    type Halves = (
        Box<dyn AsyncRead + Send + Unpin>,
        Box<dyn AsyncWrite + Send + Unpin>,
    );
    let (read, mut write): Halves = match addr {
        Address::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(io_error)?;
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        }
        Address::Tcp(endpoint) => {
            let stream = tokio::net::TcpStream::connect(endpoint.as_str())
                .await
                .map_err(io_error)?;
            // Requests are small and latency matters more than packing.
            stream.set_nodelay(true).map_err(io_error)?;
            let (r, w) = stream.into_split();
            (Box::new(r), Box::new(w))
        }
    };
    let mut encoder = ClientCodec::new();
    let mut hello = BytesMut::new();
    let request = Request::Hello {
        version: PROTOCOL_VERSION,
        client_name: name,
        token: None,
    };
    encoder
        .encode(ClientFrame { id: 1, request }, &mut hello)
        .map_err(|e| Error::new(ErrorKind::InvalidArgument, format!("client name: {e}")))?;
    write.write_all(&hello).await.map_err(io_error)?;

    let mut reader = FramedRead::new(read, ClientCodec::new());
    let server = match reader.next().await {
        Some(Ok(ServerFrame::Response {
            response:
                Response::HelloOk {
                    version,
                    max_frame,
                    max_key,
                    max_value,
                    server_name,
                },
            ..
        })) => {
            if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
                return Err(Error::new(
                    ErrorKind::UnsupportedVersion,
                    format!(
                        "server {server_name:?} chose protocol version {version}; \
                         this client speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
                    ),
                ));
            }
            ServerInfo {
                name: server_name,
                max_frame,
                max_key,
                max_value,
            }
        }
        Some(Ok(ServerFrame::Response {
            response: Response::Error(e),
            ..
        })) => return Err(Error::from_wire(e)),
        Some(Ok(_)) => {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("connecting to {addr}: the server did not answer HELLO with HELLO_OK"),
            ))
        }
        Some(Err(FrameError::Io(e))) => return Err(io_error(e)),
        Some(Err(e)) => {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("connecting to {addr}: {e}"),
            ))
        }
        None => {
            return Err(Error::connection(format!(
                "connecting to {addr}: the server closed the connection during the handshake"
            )))
        }
    };
    reader.decoder_mut().set_max_frame_length(server.max_frame);
    let (writer_tx, writer_rx) = tokio::sync::mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(write, writer_rx));
    Ok((
        Conn {
            reader,
            writer_tx,
            writer,
        },
        server,
    ))
}

/// Writes queued frames, batching whatever is queued into one flush.
async fn write_loop(
    write: Box<dyn AsyncWrite + Send + Unpin>,
    mut frames: UnboundedReceiver<Bytes>,
) -> io::Result<()> {
    let mut out = BufWriter::new(write);
    while let Some(frame) = frames.recv().await {
        out.write_all(&frame).await?;
        while let Ok(frame) = frames.try_recv() {
            out.write_all(&frame).await?;
        }
        out.flush().await?;
    }
    Ok(())
}
