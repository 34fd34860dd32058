//! The background task: the one owner of the connection. It takes
//! callers' commands, writes their requests, reads the server's frames and
//! routes them (`routing.rs`), sends keepalives, and, when the connection
//! is lost, reconnects with exponential backoff, takes back the ephemeral
//! keys it holds and resumes every subscription: the same life as the blocking client's I/O thread
//! (`client/io.rs`), without the thread.
//!
//! It runs while any handle lives: an [`AsyncClient`](super::AsyncClient)
//! clone or a [`Subscription`](super::Subscription) (each holds a sender
//! of its command channel), and stops at
//! [`AsyncClient::close`](super::AsyncClient::close).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, Io};
use super::routing::{Reply, Router, SubReply};
use super::subscription::Sink;
use crate::addr::Address;
use crate::client::handshake::{self, Opened};
use crate::client::subscription::SubState;
use crate::client::{ClientOptions, ConnState, Error, Shared};
use crate::protocol::Request;

/// What handles ask of the background task.
///
/// The channel is unbounded, yet bounded by its senders: a caller sends one
/// command and awaits its answer, so it holds at most one entry per call in
/// progress, plus one `Unsubscribe` per dropped subscription.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send a request; the answer goes to `reply`.
    Request {
        /// The request (already checked against the server's limits).
        request: Request,
        /// Where the answer goes.
        reply: Reply,
    },
    /// Subscribe; the id goes to `reply`, the events to `sink`.
    Subscribe {
        /// The prefix (already checked).
        prefix: String,
        /// Resume point, `None` for a full snapshot.
        since: Option<u64>,
        /// Ask for GROUP markers.
        grouped: bool,
        /// The new subscription's queue.
        sink: Arc<Sink>,
        /// Where the subscription id goes.
        reply: SubReply,
    },
    /// The subscription's reader is gone: unsubscribe.
    Unsubscribe {
        /// The subscription id.
        id: u32,
    },
}

type Connecting = Pin<Box<dyn Future<Output = Result<Opened, Error>> + Send>>;

/// Where the connection is.
enum Phase {
    /// Up.
    Connected(Conn),
    /// Lost; the next attempt is at this time (never without reconnect).
    Waiting(Instant),
    /// An attempt is under way.
    Connecting(Connecting),
}

/// What woke the loop.
enum Wake {
    Close,
    Command(Option<Command>),
    Io(Io),
    Keepalive,
    Retry,
    Connected(Result<Opened, Error>),
}

/// The background task's state.
pub(super) struct Driver {
    addr: Address,
    options: ClientOptions,
    /// Connection state and server limits, read by the handles.
    shared: Arc<Shared>,
    commands: UnboundedReceiver<Command>,
    /// Cancelled by [`AsyncClient::close`](super::AsyncClient::close).
    close: CancellationToken,
    router: Router,
    /// Why the last connection was lost, for the errors of calls made
    /// while disconnected.
    last_loss: String,
}

impl Driver {
    /// A driver for a client whose first connection is made; the
    /// ephemeral keys it holds are published on `held`.
    pub fn new(
        addr: Address,
        options: ClientOptions,
        shared: Arc<Shared>,
        commands: UnboundedReceiver<Command>,
        close: CancellationToken,
        held: watch::Sender<Vec<String>>,
    ) -> Driver {
        let router = Router::new(options.reconnect, held);
        Driver {
            addr,
            options,
            shared,
            commands,
            close,
            router,
            last_loss: String::new(),
        }
    }

    /// Runs until the client is closed or every handle is dropped.
    pub async fn run(mut self, first: Conn) {
        let mut phase = Phase::Connected(first);
        let mut backoff = self.options.backoff_initial;
        loop {
            let wake = match &mut phase {
                Phase::Connected(conn) => {
                    let room = conn.has_room();
                    let keepalive_at = (!self.options.keepalive.is_zero())
                        .then(|| conn.last_heard + self.options.keepalive);
                    tokio::select! {
                        _ = self.close.cancelled() => Wake::Close,
                        // Backpressure: with the outbox full, callers wait
                        // in the channel until the socket takes more.
                        cmd = self.commands.recv(), if room => Wake::Command(cmd),
                        io = conn.io() => Wake::Io(io),
                        _ = sleep_until(keepalive_at) => Wake::Keepalive,
                    }
                }
                Phase::Waiting(at) => {
                    let at = *at;
                    tokio::select! {
                        _ = self.close.cancelled() => Wake::Close,
                        cmd = self.commands.recv() => Wake::Command(cmd),
                        _ = tokio::time::sleep_until(at), if self.options.reconnect => Wake::Retry,
                    }
                }
                Phase::Connecting(attempt) => tokio::select! {
                    _ = self.close.cancelled() => Wake::Close,
                    cmd = self.commands.recv() => Wake::Command(cmd),
                    result = attempt => Wake::Connected(result),
                },
            };
            match wake {
                Wake::Close | Wake::Command(None) => {
                    self.router.close();
                    self.shared.set_state(ConnState::Closed);
                    return;
                }
                Wake::Command(Some(cmd)) => self.command(&mut phase, cmd),
                Wake::Io(io) => {
                    let Phase::Connected(conn) = &mut phase else {
                        unreachable!("only a connection does I/O");
                    };
                    let result = match io {
                        Io::Frame(frame) => self.router.frame(conn, frame),
                        Io::Refused { id, error } => {
                            self.router.refused(id, error);
                            Ok(())
                        }
                        Io::Lost(reason) => Err(reason),
                    };
                    if let Err(reason) = result {
                        self.lose(reason);
                        phase = Phase::Waiting(Instant::now() + backoff);
                    }
                }
                Wake::Keepalive => {
                    let Phase::Connected(conn) = &mut phase else {
                        unreachable!("only a connection has a keepalive");
                    };
                    if conn.pinging {
                        self.lose(format!(
                            "no answer from the server for {:?} (keepalive)",
                            self.options.keepalive * 2
                        ));
                        phase = Phase::Waiting(Instant::now() + backoff);
                    } else {
                        self.router.ping(conn);
                        conn.last_heard = Instant::now();
                    }
                }
                Wake::Retry => {
                    self.shared.set_state(ConnState::Connecting);
                    let addr = self.addr.clone();
                    let hello = self.options.hello();
                    let timeout = self.options.connect_timeout;
                    phase = Phase::Connecting(Box::pin(async move {
                        handshake::connect(&addr, hello, timeout).await
                    }));
                }
                Wake::Connected(Ok(opened)) => {
                    let (mut conn, server) = Conn::new(opened);
                    self.shared.set_info(server);
                    self.shared.set_state(ConnState::Connected);
                    tracing::debug!(addr = %self.addr, "reconnected");
                    // Held ephemeral keys first, then subscriptions.
                    self.router.resume(&mut conn);
                    backoff = self.options.backoff_initial;
                    phase = Phase::Connected(conn);
                }
                Wake::Connected(Err(e)) => {
                    tracing::debug!(error = %e, "reconnect failed");
                    self.shared.set_state(ConnState::Disconnected);
                    self.last_loss = e.to_string();
                    backoff = (backoff * 2).min(self.options.backoff_max);
                    phase = Phase::Waiting(Instant::now() + backoff);
                }
            }
        }
    }

    /// Carries out a handle's command on the connection, or, without one,
    /// fails it at once: a caller never waits for a reconnect.
    fn command(&mut self, phase: &mut Phase, cmd: Command) {
        let conn = match phase {
            Phase::Connected(conn) => Some(conn),
            _ => None,
        };
        match (cmd, conn) {
            (Command::Request { request, reply }, Some(conn)) => {
                self.router.call(conn, request, reply);
            }
            (Command::Request { reply, .. }, None) => {
                let _ = reply.send(Err(self.not_connected()));
            }
            (
                Command::Subscribe {
                    prefix,
                    since,
                    grouped,
                    sink,
                    reply,
                },
                Some(conn),
            ) => {
                let state = SubState::new(prefix, since).grouped(grouped);
                self.router.subscribe(conn, state, sink, reply)
            }
            (Command::Subscribe { reply, .. }, None) => {
                let _ = reply.send(Err(self.not_connected()));
            }
            (Command::Unsubscribe { id }, conn) => self.router.unsubscribe(conn, id),
        }
    }

    /// The connection is gone (the caller drops it): fail what waits on it,
    /// tell every subscription.
    fn lose(&mut self, reason: String) {
        tracing::debug!(%reason, "connection lost");
        self.shared.set_state(ConnState::Disconnected);
        let error = Error::connection(format!("connection to {} lost: {reason}", self.addr));
        self.router.lost(&error);
        self.last_loss = reason;
    }

    fn not_connected(&self) -> Error {
        Error::connection(format!(
            "not connected to {}: {}",
            self.addr, self.last_loss
        ))
    }
}

/// Sleeps until `at`; forever for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
