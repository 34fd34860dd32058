//! The server: listeners, one task per connection, and orderly shutdown.
//!
//! [`run`] takes already-bound listeners, an open store and a shutdown
//! future, so tests start a real server on a temporary socket and stop it
//! when they like. Shutdown propagates through a `watch` channel: accept
//! loops stop, each connection stops reading, answers what is in flight,
//! sends CLOSED to its subscriptions and ends; then the engine, whose last
//! job sender is gone, syncs the store and returns.

mod connection;
mod listener;
mod stats;

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

pub use listener::Listener;

use crate::engine::{self, Job};
use crate::protocol::wire;
use crate::store::Store;

/// Server settings that are not the store's.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest frame accepted or sent, in bytes.
    pub max_frame: u32,
    /// How long a new connection may take to send HELLO.
    pub handshake_timeout: Duration,
    /// Most connections served at once; more are refused with LIMIT.
    pub max_connections: usize,
    /// Most subscriptions on one connection.
    pub max_subscriptions: usize,
    /// Most requests of one connection waiting for their answer; the
    /// connection stops reading past this, so a client that pipelines
    /// without reading answers costs bounded memory.
    pub max_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: wire::DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(5),
            max_connections: 1024,
            max_subscriptions: 1024,
            max_in_flight: 1024,
        }
    }
}

/// State shared by every connection task.
#[derive(Debug)]
struct Shared {
    config: Config,
    /// Largest key the store accepts, told to clients at handshake.
    max_key: usize,
    /// Largest value the store accepts, told to clients at handshake.
    max_value: usize,
    /// Connections open now, for STATS and the connection cap.
    connections: AtomicUsize,
    /// Source of connection ids.
    next_connection: AtomicU64,
}

/// Serves `listeners` over `store` until `shutdown` completes, then stops in
/// order and returns once the store is synced and closed.
pub async fn run(
    listeners: Vec<Listener>,
    store: Store,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let shared = Arc::new(Shared {
        max_key: store.options().max_key_len,
        max_value: store.options().max_value_len,
        config,
        connections: AtomicUsize::new(0),
        next_connection: AtomicU64::new(1),
    });
    let (jobs, engine_thread) = engine::spawn(store)?;
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut accepting = JoinSet::new();
    for listener in listeners {
        accepting.spawn(accept_loop(
            listener,
            shared.clone(),
            jobs.clone(),
            stop_rx.clone(),
        ));
    }
    drop(jobs);

    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = stop_tx.send(true);
    while accepting.join_next().await.is_some() {}

    // Every job sender is gone now, so the engine drains, syncs and ends.
    tokio::task::spawn_blocking(move || engine_thread.join())
        .await
        .map_err(io::Error::other)?
        .map_err(|_| io::Error::other("the engine thread panicked"))?;
    tracing::info!("store synced; bye");
    Ok(())
}

/// Accepts connections until shutdown, then waits for them to finish.
async fn accept_loop(
    listener: Listener,
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = accept(&listener) => match accepted {
                Ok(stream) => {
                    let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(connection::serve(
                        stream,
                        id,
                        shared.clone(),
                        jobs.clone(),
                        connection_stop.clone(),
                    ));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    while connections.join_next().await.is_some() {}
    drop(listener);
}

/// Completes once shutdown has begun. (The guard `wait_for` returns is not
/// `Send`, so it must not live in a `select!` output.)
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// Any accepted stream, Unix or TCP.
type Stream = Box<dyn connection::AsyncStream>;

async fn accept(listener: &Listener) -> io::Result<Stream> {
    match listener {
        Listener::Unix(l, _) => Ok(Box::new(l.accept().await?.0)),
        Listener::Tcp(l) => {
            let (stream, _) = l.accept().await?;
            // Small frames answer requests; do not hold them back.
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
    }
}
