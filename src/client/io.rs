//! The I/O thread: one current-thread tokio runtime that keeps the
//! connection alive while no caller is busy with it.
//!
//! It makes the connection (the first one before `connect` returns, the
//! next ones with exponential backoff after a loss), holds the reader role
//! whenever no caller does, so that subscription events reach the hub's
//! queues promptly while the program makes no call, writes what waited for
//! room in the socket buffer, sends keepalive PINGs, and stops at close.
//! It does all of that through the shared [`Link`], whose state callers
//! change too; it is woken by the gate (`socket.rs`), its timers, and
//! [`Command`]s. It never runs or drops a subscription handler: user code
//! never runs on this thread.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;
use tokio_util::either::Either;

use super::error::Error;
use super::handshake;
use super::hub::Hub;
use super::link::{Command, Link};
use super::socket::{Gate, Sock};
use super::{ClientOptions, ConnState, ServerInfo, Shared};
use crate::addr::Address;

/// A handshaken connection: its socket, the server's HELLO_OK, and the
/// bytes read past it.
type Handshaken = (Sock, ServerInfo, BytesMut);

type Connecting = Pin<Box<dyn Future<Output = Result<Handshaken, Error>> + Send>>;

/// Starts the I/O thread and makes the first connection; returns once the
/// handshake is done (or failed, in which case the thread has ended).
pub(crate) fn spawn(
    addr: Address,
    options: ClientOptions,
    shared: Arc<Shared>,
    hub: Arc<Hub>,
) -> Result<(std::thread::JoinHandle<()>, Arc<Link>), Error> {
    let gate =
        Gate::new().map_err(|e| Error::connection(format!("cannot create an epoll: {e}")))?;
    let (wake, commands) = tokio::sync::mpsc::unbounded_channel();
    let link = Arc::new(Link::new(
        addr.clone(),
        &options,
        shared,
        hub,
        gate.clone(),
        wake,
    ));
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let io_link = Arc::clone(&link);
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
                // The safe constructor is deprecated because a registered
                // descriptor could be closed (and its number reused) behind
                // tokio's back; here the `AsyncFd` owns a reference to the
                // `OwnedFd`, so it stays open as long as it is registered.
                #[allow(deprecated)]
                let gate = AsyncFd::with_interest(gate.fd(), Interest::READABLE);
                let gate = match gate {
                    Ok(gate) => gate,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::connection(format!(
                            "cannot watch the epoll: {e}"
                        ))));
                        return;
                    }
                };
                let first = connect(addr.clone(), options.hello(), options.connect_timeout);
                let first = match first.await {
                    Ok((sock, server, leftover)) => {
                        io_link.with(|core| core.connected(sock, server, leftover))
                    }
                    Err(e) => Err(e),
                };
                let _ = ready_tx.send(first.clone());
                if first.is_ok() {
                    let io = Io {
                        addr,
                        options,
                        link: io_link,
                    };
                    io.run(commands, gate).await;
                }
            });
        })
        .map_err(|e| Error::connection(format!("cannot start the client thread: {e}")))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok((thread, link)),
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

/// The I/O thread's own state: what it needs to reconnect.
struct Io {
    addr: Address,
    options: ClientOptions,
    link: Arc<Link>,
}

/// Where the connection is, as the I/O thread sees it.
enum Phase {
    /// Up (as far as the thread knows: a caller may have lost it).
    Connected,
    /// Lost; the next attempt is at this time (never without reconnect).
    Waiting(Instant),
    /// An attempt is under way.
    Connecting(Connecting),
}

/// What woke the main loop.
enum Wake {
    Command(Option<Command>),
    Gate,
    Keepalive,
    Retry,
    Connected(Result<Handshaken, Error>),
}

impl Io {
    async fn run(self, mut commands: UnboundedReceiver<Command>, gate: AsyncFd<Arc<OwnedFd>>) {
        let mut phase = Phase::Connected;
        let mut backoff = self.options.backoff_initial;
        loop {
            let (up, keepalive_due) = self.link.status();
            if matches!(phase, Phase::Connected) && !up {
                // Lost, by this thread or a caller.
                phase = Phase::Waiting(Instant::now() + backoff);
            }
            let wake = match &mut phase {
                Phase::Connected => {
                    let keepalive_at = keepalive_due.map(Instant::from_std);
                    tokio::select! {
                        cmd = commands.recv() => Wake::Command(cmd),
                        ready = gate.readable() => {
                            // Readiness is cleared before looking, so an
                            // edge that comes while serving is not lost.
                            if let Ok(mut guard) = ready {
                                guard.clear_ready();
                            }
                            Wake::Gate
                        }
                        _ = sleep_until(keepalive_at), if keepalive_at.is_some() => Wake::Keepalive,
                    }
                }
                Phase::Waiting(at) => {
                    let at = *at;
                    tokio::select! {
                        cmd = commands.recv() => Wake::Command(cmd),
                        _ = tokio::time::sleep_until(at), if self.options.reconnect => Wake::Retry,
                    }
                }
                Phase::Connecting(attempt) => tokio::select! {
                    cmd = commands.recv() => Wake::Command(cmd),
                    result = attempt => Wake::Connected(result),
                },
            };
            match wake {
                Wake::Command(None | Some(Command::Close)) => {
                    self.link.with(|core| core.shutdown());
                    return;
                }
                // The loss is seen at the top of the loop.
                Wake::Command(Some(Command::Lost)) => {}
                Wake::Gate => self.link.serve_gate(),
                Wake::Keepalive => {
                    // A frame already there proves the server alive.
                    self.link.serve_gate();
                    self.link.with(|core| core.keepalive());
                }
                Wake::Retry => {
                    self.link
                        .with(|core| core.shared.set_state(ConnState::Connecting));
                    phase = Phase::Connecting(Box::pin(connect(
                        self.addr.clone(),
                        self.options.hello(),
                        self.options.connect_timeout,
                    )));
                }
                Wake::Connected(result) => {
                    let result = result.and_then(|(sock, server, leftover)| {
                        self.link
                            .with(|core| core.connected(sock, server, leftover))
                    });
                    match result {
                        Ok(()) => {
                            backoff = self.options.backoff_initial;
                            phase = Phase::Connected;
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "reconnect failed");
                            self.link.with(|core| {
                                core.shared.set_state(ConnState::Disconnected);
                                core.last_loss = e.to_string();
                            });
                            backoff = (backoff * 2).min(self.options.backoff_max);
                            phase = Phase::Waiting(Instant::now() + backoff);
                        }
                    }
                }
            }
        }
    }
}

/// Sleeps until `at`; forever for `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Connects and performs the handshake (see `handshake.rs`), then takes the
/// socket away from tokio: callers read and write it directly.
async fn connect(
    addr: Address,
    hello: (String, Option<String>),
    timeout: Duration,
) -> Result<Handshaken, Error> {
    let (stream, server, leftover) = handshake::connect(&addr, hello, timeout).await?;
    let io_error = |e: io::Error| Error::connection(format!("connecting to {addr}: {e}"));
    let fd: OwnedFd = match stream {
        Either::Left(unix) => unix.into_std().map_err(io_error)?.into(),
        Either::Right(tcp) => tcp.into_std().map_err(io_error)?.into(),
    };
    let sock = Sock::new(fd).map_err(io_error)?;
    Ok((sock, server, leftover))
}
