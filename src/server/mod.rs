//! The server: listeners, one task per connection, and orderly shutdown.
//!
//! [`run`] takes already-bound listeners, an open store and a shutdown
//! future, so tests start a real server on a temporary socket and stop it
//! when they like.
//!
//! Shutdown, when the future completes:
//! 1. the listeners close at once (the Unix socket file the server created
//!    goes), so a new client is refused instead of left hanging (a socket
//!    systemd passed stays open in systemd: a new client waits there for
//!    the next start);
//! 2. connections that have not finished HELLO get ERROR `SHUTTING_DOWN`
//!    and close; the others stop reading, answer what they have queued,
//!    send CLOSED to each subscription and close;
//! 3. after `shutdown_grace`, whatever is still open is dropped;
//! 4. the engine syncs the store one last time. [`run`] fails if that last
//!    sync failed.

pub mod access;
mod answer;
mod connection;
mod inherited;
pub mod limits;
mod listener;
mod memory;
mod requests;
mod stats;
mod stream;
mod supervisor;

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

pub use inherited::Inherited;
pub use listener::{Listener, SocketAccess};
pub use stream::Stream;
pub use supervisor::{Health, Stopping, Supervisor, Unsupervised, Vitals};

use crate::engine::Engine;
use crate::protocol::{wire, ErrorCode, ErrorFrame, Response, ServerCodec, ServerFrame};
use crate::storage::{Placement, Tiers};
use crate::store::Store;

/// Server settings that are not the store's. Each bound is per connection
/// unless its name says otherwise; `protocol.md` and the README document
/// the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest frame accepted or sent after HELLO, in bytes.
    pub max_frame: u32,
    /// How long a new connection may take to send HELLO.
    pub handshake_timeout: Duration,
    /// How long a frame may take from its first byte to its last.
    pub frame_timeout: Duration,
    /// How long output may wait without the client taking any of it before
    /// the connection is closed.
    pub write_timeout: Duration,
    /// Most connections at once, counted from accept (before HELLO too);
    /// more are refused with LIMIT at once.
    pub max_connections: usize,
    /// Most subscriptions on one connection.
    pub max_subscriptions: usize,
    /// Most subscriptions on the whole server.
    pub max_total_subscriptions: usize,
    /// Most requests of one connection waiting for their answer.
    pub max_in_flight: usize,
    /// Most bytes of requests of one connection waiting for their answer
    /// (a single request may be larger).
    pub max_input: usize,
    /// Bytes of answers and events waiting for a slow client after which
    /// the server stops reading its requests and producing its output.
    pub max_output: usize,
    /// Bytes of frames over 64 KiB being received or waiting for their
    /// answer, server-wide.
    pub large_frame_budget: usize,
    /// How long shutdown waits for connections to finish.
    pub shutdown_grace: Duration,
    /// Tokens and ACL in force (replaced on SIGHUP by the binary).
    pub access: Arc<access::AccessHandle>,
    /// Keys under these prefixes are kept in memory only
    /// (`--volatile`).
    pub volatile: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: wire::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_millis(wire::DEFAULT_HANDSHAKE_TIMEOUT_MS),
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_subscriptions: 1024,
            max_total_subscriptions: 8192,
            max_in_flight: 1024,
            max_input: 256 << 10,
            max_output: 64 << 10,
            large_frame_budget: 64 << 20,
            shutdown_grace: Duration::from_secs(5),
            access: Arc::default(),
            volatile: Vec::new(),
        }
    }
}

/// Where shutdown stands; every connection watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serving.
    Running,
    /// Finishing what is queued; no new requests.
    Draining,
    /// The grace period is over: close now.
    Closing,
}

/// Operation counters, kept by the connections.
#[derive(Debug, Default)]
pub(crate) struct OpCounters {
    pub get: AtomicU64,
    pub put: AtomicU64,
    pub del: AtomicU64,
    pub list: AtomicU64,
    pub sub: AtomicU64,
    pub txn: AtomicU64,
}

/// State shared by every connection task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    /// Largest key the store accepts, told to clients at handshake.
    pub max_key: usize,
    /// Largest value the store accepts, told to clients at handshake.
    pub max_value: usize,
    /// Connections open now (every accepted socket), for the cap and STATS.
    pub connections: AtomicUsize,
    /// Connections closed since start (a burst that ended frees memory).
    pub closed: AtomicU64,
    /// Subscriptions open now, server-wide.
    pub subscriptions: AtomicUsize,
    /// Source of connection ids.
    next_connection: AtomicU64,
    /// Operation counters.
    pub ops: OpCounters,
    /// The engine: writes go through it, reads come from it.
    pub engine: Arc<Engine>,
    /// The large-frame budget, in KiB.
    pub large_frames: Arc<Semaphore>,
    /// Who is on each open connection (after HELLO), for STATS.
    pub peers: std::sync::Mutex<std::collections::BTreeMap<u64, access::Peer>>,
}

/// Serves `listeners` over `store` until `shutdown` completes, then stops in
/// order (see the module docs). Fails if the store's final sync failed.
pub async fn run(
    listeners: Vec<Listener>,
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_supervised(listeners, store, config, shutdown, &Unsupervised).await
}

/// [`run`], telling `supervisor` when the server is ready and where
/// shutdown stands (`nkv-server` tells systemd).
pub async fn run_supervised(
    listeners: Vec<Listener>,
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()>,
    supervisor: &dyn Supervisor,
) -> io::Result<()> {
    let (max_key, max_value) = (store.options().max_key_len, store.options().max_value_len);
    let placement = Placement::volatile(&config.volatile, max_key)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--volatile: {e}")))?;
    let tiers = Tiers::open(store, placement).map_err(io::Error::other)?;
    let engine = Engine::start_tiers(tiers)?;
    let budget_kib = (config.large_frame_budget / 1024)
        .max(2 * config.max_frame as usize / 1024 + 1)
        .min(Semaphore::MAX_PERMITS);
    let shared = Arc::new(Shared {
        max_key,
        max_value,
        config,
        connections: AtomicUsize::new(0),
        closed: AtomicU64::new(0),
        subscriptions: AtomicUsize::new(0),
        next_connection: AtomicU64::new(1),
        ops: OpCounters::default(),
        engine: engine.clone(),
        large_frames: Arc::new(Semaphore::new(budget_kib)),
        peers: Default::default(),
    });
    let (phase_tx, phase) = watch::channel(Phase::Running);
    let (stop_accepting, _) = watch::channel(false);
    let tracker = TaskTracker::new();

    let mut accepting = tokio::task::JoinSet::new();
    for listener in listeners {
        accepting.spawn(accept_loop(
            listener,
            shared.clone(),
            tracker.clone(),
            phase.clone(),
            stop_accepting.subscribe(),
        ));
    }

    let trimmer = tokio::spawn(memory::give_back_after_bursts(shared.clone()));
    // The engine runs and every accept loop is spawned: a client that
    // connects now is served.
    supervisor.ready(Health {
        shared: Arc::downgrade(&shared),
    });
    shutdown.await;
    trimmer.abort();
    tracing::info!("shutting down: no new connections; finishing in-flight requests");
    supervisor.stopping(Stopping::Draining {
        connections: shared.connections.load(Ordering::SeqCst),
    });
    let _ = stop_accepting.send(true);
    while accepting.join_next().await.is_some() {}
    let _ = phase_tx.send(Phase::Draining);
    tracker.close();
    let grace = shared.config.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            "connections still open after the {} s grace period; closing them",
            grace.as_secs_f64()
        );
        supervisor.stopping(Stopping::Closing {
            connections: shared.connections.load(Ordering::SeqCst),
        });
        let _ = phase_tx.send(Phase::Closing);
        tracker.wait().await;
    }

    // No connection is left: sync one last time.
    supervisor.stopping(Stopping::Syncing);
    drop(shared);
    let synced = tokio::task::spawn_blocking(move || engine.close())
        .await
        .map_err(|_| io::Error::other("the final sync panicked"))?;
    synced.map_err(|e| io::Error::other(format!("the final sync failed: {e}")))?;
    tracing::info!("store synced; bye");
    Ok(())
}

/// Accepts connections until told to stop, then closes the listener.
async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    phase: watch::Receiver<Phase>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok(stream) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) or memory: back off,
                // doubling up to a second, instead of spinning.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tracing::warn!(error = %e, "accept failed; retrying in {backoff:?}");
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => break,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        // Every accepted socket counts, HELLO or not.
        let open = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        if open > shared.config.max_connections {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            refuse(&stream, shared.config.max_connections);
            continue;
        }
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        let connection = connection::Connection::new(stream, id, shared.clone());
        tracker.spawn(connection.serve(phase.clone()));
    }
    drop(listener);
}

/// Answers a connection over the cap with ERROR `LIMIT` (id 0), without
/// waiting for anything, and closes it.
fn refuse(stream: &Stream, max: usize) {
    let message = format!("too many connections (limit {max})");
    tracing::warn!("{message}");
    let frame = ServerFrame::Response {
        id: wire::CONNECTION_ID,
        response: Response::Error(ErrorFrame::new(ErrorCode::Limit, message)),
    };
    let mut out = bytes::BytesMut::new();
    if tokio_util::codec::Encoder::encode(&mut ServerCodec::new(), frame, &mut out).is_ok() {
        // A fresh socket's buffer takes a small frame; if not, the client
        // sees the connection close, which says the same.
        let _ = stream.try_write(&out);
    }
}
