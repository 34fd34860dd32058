//! The async Rust client, for programs on tokio: the blocking
//! [`Client`](crate::client::Client)'s operations as `async fn`s, a
//! subscription as a [`Stream`](futures_util::Stream), and a key's newest
//! value as a [`tokio::sync::watch`] channel.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use nkv::addr::Address;
//! use nkv::async_client::AsyncClient;
//! use nkv::client::{ClientOptions, SubscriptionEvent};
//! use nkv::protocol::Condition;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = AsyncClient::connect(&Address::from_env_or_default()?, ClientOptions::default())
//!     .await?;
//! let revision = client.put("net.eth0.state", b"up", Condition::None).await?;
//! let mut events = client.subscribe("net").await?;
//! while let Some(event) = events.next().await {
//!     match event {
//!         SubscriptionEvent::Update { key, value, .. } => println!("{key} = {value:?}"),
//!         SubscriptionEvent::Synced { revision } => println!("in sync at {revision}"),
//!         other => println!("{other:?}"),
//!     }
//! }
//! # let _ = revision;
//! # Ok(())
//! # }
//! ```
//!
//! # One connection, many tasks
//!
//! [`AsyncClient`] is `Clone` (a handle) and every method takes `&self`:
//! any number of tasks call it at once, and their requests are pipelined
//! on one connection. One background task, spawned by
//! [`AsyncClient::connect`] on the current tokio runtime, owns the socket:
//! it writes requests and reads the server's frames through the protocol's
//! own codec ([`ClientCodec`](crate::protocol::ClientCodec) in a
//! `tokio_util::codec::Framed`), and hands each answer to its caller by
//! request id. What is sent and what an answer means is the blocking
//! client's code (`client/ops.rs`); connecting, with the same default
//! address, runtime-directory check and HELLO (token included), too
//! (`client/handshake.rs`).
//!
//! The connection lives while any handle does (a client clone, a
//! [`Subscription`], a watch's task), or until [`AsyncClient::close`].
//!
//! # Options
//!
//! [`ClientOptions`] means here what it means for the blocking client,
//! except [`ClientOptions::dispatch`], which is ignored: there are no
//! handlers to run, a [`Subscription`] is read by whoever polls it.
//!
//! # Subscriptions and slow readers
//!
//! Each [`Subscription`] has its own queue, which merges events of the same
//! key once it holds [`ClientOptions::queue_limit`] events (the latest value
//! wins, `coalesced` counts what was skipped), exactly like the blocking
//! client's. The background task never waits for a reader, and a reader
//! that falls behind costs memory bounded by the keys it covers.
//!
//! # Reconnecting
//!
//! With [`ClientOptions::reconnect`] (the default), a lost connection fails
//! the requests in flight with [`ErrorKind::Connection`], and requests made
//! while disconnected fail at once the same way; the background task
//! reconnects with exponential backoff. Every subscription then receives
//! [`SubscriptionEvent::Disconnected`](crate::client::SubscriptionEvent::Disconnected),
//! and, once reconnected, what it missed since its last complete revision
//! (or `Reset` and a full snapshot), then `Synced`: the blocking client's
//! rules ([`crate::client::subscription`]). A [`watch`](AsyncClient::watch)
//! converges to the key's newest value the same way. Before any of that,
//! the ephemeral keys the client holds
//! ([`put_ephemeral`](AsyncClient::put_ephemeral)) are taken back, each
//! only if nobody wrote it meanwhile: the blocking client's rules too
//! (`client/ephemeral.rs`).

mod conn;
mod driver;
mod routing;
mod subscription;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use subscription::Subscription;

use crate::addr::Address;
use crate::client::handshake;
use crate::client::ops;
use crate::client::{
    Answer, ClientOptions, ConnState, Entry, Error, ErrorKind, ListEntry, ServerLimits, Shared,
    TxnOutcome,
};
use crate::protocol::{Condition, Request, Txn};
use conn::Conn;
use driver::{Command, Driver};
use subscription::Sink;

/// A connection to an nkv server for async programs. See the
/// [module documentation](self).
///
/// Cloning gives another handle to the same connection.
#[derive(Clone)]
pub struct AsyncClient {
    /// To the background task.
    commands: mpsc::UnboundedSender<Command>,
    /// Connection state and the server's limits, written by the task.
    shared: Arc<Shared>,
    /// Cancelled by [`AsyncClient::close`].
    close: CancellationToken,
    /// [`ClientOptions::timeout`].
    timeout: Duration,
    /// [`ClientOptions::queue_limit`].
    queue_limit: usize,
    /// The ephemeral keys held, published by the task.
    held: tokio::sync::watch::Receiver<Vec<String>>,
}

impl AsyncClient {
    /// Connects to `addr` and performs the handshake, then starts the
    /// background task on the current tokio runtime (so this must be
    /// called from within one, with its I/O and time drivers enabled, as
    /// `#[tokio::main]` has them). Only this first connection's failure is
    /// reported here; later ones are handled by reconnecting.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nkv::client::Error> {
    /// use nkv::async_client::AsyncClient;
    /// use nkv::client::ClientOptions;
    ///
    /// let addr = "unix:/run/user/1000/nkv.sock".parse().expect("an address");
    /// let client = AsyncClient::connect(&addr, ClientOptions::default()).await?;
    /// client.ping().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(addr: &Address, options: ClientOptions) -> Result<AsyncClient, Error> {
        let opened = handshake::connect(addr, options.hello(), options.connect_timeout).await?;
        let (conn, server) = Conn::new(opened);
        let shared = Arc::new(Shared::new(ConnState::Connected));
        shared.set_info(server);
        let (commands, receiver) = mpsc::unbounded_channel();
        let close = CancellationToken::new();
        let (held_tx, held) = tokio::sync::watch::channel(Vec::new());
        let client = AsyncClient {
            commands,
            shared: Arc::clone(&shared),
            close: close.clone(),
            timeout: options.timeout,
            queue_limit: options.queue_limit,
            held,
        };
        let driver = Driver::new(addr.clone(), options, shared, receiver, close, held_tx);
        tokio::spawn(driver.run(conn));
        Ok(client)
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnState {
        if self.close.is_cancelled() {
            return ConnState::Closed;
        }
        self.shared.state()
    }

    /// The server's limits (of the current or last connection).
    pub fn server_limits(&self) -> ServerLimits {
        self.shared.info().limits()
    }

    /// The server's name from its HELLO_OK, e.g. `"nkv-server 0.1.0"`.
    pub fn server_name(&self) -> String {
        self.shared.info().name
    }

    /// Checks that the server answers.
    pub async fn ping(&self) -> Result<(), Error> {
        ops::ping_answer(self.call(Request::Ping).await?)
    }

    /// Writes `value` at `key` if `condition` holds; returns the revision of
    /// the write. A failed condition gives [`ErrorKind::ConditionFailed`]
    /// with [`Error::current_revision`].
    ///
    /// A plain put makes an ephemeral key ordinary again: if this client
    /// held `key` (see [`AsyncClient::put_ephemeral`]), it no longer does.
    ///
    /// ```no_run
    /// # async fn run(client: nkv::async_client::AsyncClient) -> Result<(), nkv::client::Error> {
    /// use nkv::protocol::Condition;
    ///
    /// let first = client.put("svc.netd.alive", b"1", Condition::MustNotExist).await?;
    /// // Only if nobody wrote it since:
    /// client.put("svc.netd.alive", b"2", Condition::RevisionEquals(first)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put(&self, key: &str, value: &[u8], condition: Condition) -> Result<u64, Error> {
        ops::put_check(self.shared.limits(), key, value.len())?;
        let request = ops::put(key, Bytes::copy_from_slice(value), condition);
        ops::put_answer(self.call(request).await?)
    }

    /// Reads `key`; `Ok(None)` when it does not exist.
    ///
    /// ```no_run
    /// # async fn run(client: nkv::async_client::AsyncClient) -> Result<(), nkv::client::Error> {
    /// if let Some(entry) = client.get("net.eth0.state").await? {
    ///     println!("{:?} (revision {})", entry.value, entry.revision);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, Error> {
        let request = ops::get(self.shared.limits(), key)?;
        ops::get_answer(self.call(request).await)
    }

    /// Every key under `prefix` (`""` = every key), in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, Error> {
        let request = ops::list(self.shared.limits(), prefix)?;
        ops::list_answer(self.call(request).await?)
    }

    /// Deletes `key` if `condition` holds; returns the revision of the
    /// delete. A missing key gives [`ErrorKind::NotFound`].
    pub async fn delete(&self, key: &str, condition: Condition) -> Result<u64, Error> {
        let request = ops::delete(self.shared.limits(), key, condition)?;
        ops::delete_answer(self.call(request).await?)
    }

    /// Deletes `prefix` and every key under it atomically (`""` = every
    /// key); returns the revision and how many keys were deleted.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(u64, u32), Error> {
        let request = ops::delete_prefix(self.shared.limits(), prefix)?;
        ops::delete_prefix_answer(self.call(request).await?)
    }

    /// Applies `txn` all or nothing under one revision: every condition
    /// must hold, then every operation is applied in order. A condition
    /// that does not hold gives [`ErrorKind::ConditionFailed`] with the
    /// key in [`Error::failed_key`] and its revision in
    /// [`Error::current_revision`]; nothing is written then.
    ///
    /// ```no_run
    /// # async fn run(client: nkv::async_client::AsyncClient) -> Result<(), nkv::client::Error> {
    /// use nkv::protocol::Txn;
    ///
    /// let txn = Txn::new()
    ///     .if_absent("net.lock")
    ///     .put("net.lock", "me")
    ///     .put("net.eth0.state", "up")
    ///     .delete_prefix("net.eth1");
    /// let outcome = client.txn(&txn).await?;
    /// println!("applied at revision {}", outcome.revision);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn txn(&self, txn: &Txn) -> Result<TxnOutcome, Error> {
        let request = ops::txn(self.shared.limits(), txn)?;
        ops::txn_answer(self.call(request).await?)
    }

    /// Writes an ephemeral key: like [`AsyncClient::put`], but the key
    /// belongs to this client's connection, and the server deletes it when
    /// the connection ends (the client closes, crashes, or loses the
    /// connection) and `grace` has passed (at most 600 s; zero: at once).
    /// Returns the revision of the write.
    ///
    /// After a reconnect within `grace` the client takes the key back by
    /// itself, as the blocking client does: the same value and grace, only
    /// if its revision is still the one this client wrote, before any
    /// subscription is resumed. The key stops being this client's when
    /// someone else writes or deletes it, when the client writes or deletes
    /// it plainly ([`put`](AsyncClient::put),
    /// [`delete`](AsyncClient::delete),
    /// [`delete_prefix`](AsyncClient::delete_prefix), a
    /// [`txn`](AsyncClient::txn) covering it), or when taking it back
    /// fails; [`AsyncClient::ephemeral_keys`] lists what it holds.
    /// `Condition::MustNotExist` makes this a leader claim: of several
    /// clients, exactly one gets the key, and it is freed when that client
    /// goes away.
    ///
    /// ```no_run
    /// # async fn run(client: nkv::async_client::AsyncClient) -> Result<(), nkv::client::Error> {
    /// use std::time::Duration;
    /// use nkv::protocol::Condition;
    ///
    /// let grace = Duration::from_secs(5);
    /// client.put_ephemeral("svc.netd.leader", b"me", Condition::MustNotExist, grace).await?;
    /// assert_eq!(client.ephemeral_keys(), ["svc.netd.leader"]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn put_ephemeral(
        &self,
        key: &str,
        value: &[u8],
        condition: Condition,
        grace: std::time::Duration,
    ) -> Result<u64, Error> {
        ops::put_check(self.shared.limits(), key, value.len())?;
        let grace_ms = ops::grace_ms(grace)?;
        let request = ops::put_ephemeral(key, Bytes::copy_from_slice(value), condition, grace_ms);
        ops::put_answer(self.call(request).await?)
    }

    /// The ephemeral keys this client holds now (written with
    /// [`AsyncClient::put_ephemeral`], and not lost since), in key order.
    /// A key is listed once its `put_ephemeral` has returned, and no longer
    /// once a plain write of it has.
    pub fn ephemeral_keys(&self) -> Vec<String> {
        if self.close.is_cancelled() {
            return Vec::new();
        }
        self.held.borrow().clone()
    }

    /// The server's counters, in the server's order.
    pub async fn stats(&self) -> Result<Vec<(String, u64)>, Error> {
        ops::stats_answer(self.call(Request::Stats).await?)
    }

    /// Asks the server to compact its store now; returns the bytes of its
    /// data files before and after.
    pub async fn compact(&self) -> Result<(u64, u64), Error> {
        ops::compact_answer(self.call(Request::Compact).await?)
    }

    /// Subscribes to `prefix` (`""` = every key): the stream yields the
    /// snapshot, then [`Synced`](crate::client::SubscriptionEvent::Synced),
    /// then live events. Dropping the stream unsubscribes.
    ///
    /// ```no_run
    /// # async fn run(client: nkv::async_client::AsyncClient) -> Result<(), nkv::client::Error> {
    /// use futures_util::StreamExt;
    /// use nkv::client::SubscriptionEvent;
    ///
    /// let mut net = client.subscribe("net").await?;
    /// while let Some(event) = net.next().await {
    ///     if let SubscriptionEvent::Update { key, value, coalesced, .. } = event {
    ///         println!("{key} = {value:?} ({coalesced} older updates skipped)");
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe(&self, prefix: &str) -> Result<Subscription, Error> {
        self.open_subscription(prefix, None, false).await
    }

    /// Like [`AsyncClient::subscribe`], with GROUP markers: each
    /// [`Group`](crate::client::SubscriptionEvent::Group) `{ count, .. }`
    /// is followed by the `count` events of one transaction or prefix
    /// delete (or of writes merged across one); a reader that applies them
    /// together only ever holds states the store had. Resumed grouped
    /// after a reconnect.
    ///
    /// ```no_run
    /// # async fn run(client: nkv::async_client::AsyncClient) -> Result<(), nkv::client::Error> {
    /// use futures_util::StreamExt;
    /// use nkv::client::SubscriptionEvent;
    ///
    /// let mut cfg = client.subscribe_grouped("cfg", None).await?;
    /// while let Some(event) = cfg.next().await {
    ///     if let SubscriptionEvent::Group { count, revision } = event {
    ///         let mut batch = Vec::new();
    ///         for _ in 0..count {
    ///             batch.extend(cfg.next().await);
    ///         }
    ///         println!("apply {} changes at once (revision {revision})", batch.len());
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn subscribe_grouped(
        &self,
        prefix: &str,
        since: Option<u64>,
    ) -> Result<Subscription, Error> {
        self.open_subscription(prefix, since, true).await
    }

    /// Like [`AsyncClient::subscribe`], resuming after `revision` (the
    /// revision of the last `Synced` a previous subscription saw, say): the
    /// stream yields only what changed since (deletes included), or `Reset`
    /// and a full snapshot when the server no longer knows.
    pub async fn subscribe_since(
        &self,
        prefix: &str,
        revision: u64,
    ) -> Result<Subscription, Error> {
        self.open_subscription(prefix, Some(revision), false).await
    }

    async fn open_subscription(
        &self,
        prefix: &str,
        since: Option<u64>,
        grouped: bool,
    ) -> Result<Subscription, Error> {
        self.shared.limits().prefix(prefix)?;
        let sink = Sink::new(self.queue_limit, grouped);
        let (reply, answer) = oneshot::channel();
        self.send(Command::Subscribe {
            prefix: prefix.to_owned(),
            since,
            grouped,
            sink: Arc::clone(&sink),
            reply,
        })?;
        // If this future is dropped (a timeout of the caller's), the task
        // sees nobody holds the sink any more and ends the subscription.
        let id = self.wait(answer).await?;
        Ok(Subscription::new(
            id,
            prefix.to_owned(),
            sink,
            self.commands.clone(),
        ))
    }

    /// Closes the connection: requests in flight fail with
    /// [`ErrorKind::Closed`], every subscription yields a final
    /// [`Closed`](crate::client::SubscriptionEvent::Closed) and ends, and
    /// every later call fails with [`ErrorKind::Closed`]. Affects every
    /// clone. Idempotent.
    pub fn close(&self) {
        self.close.cancel();
    }

    /// Sends a request and waits for its answer.
    async fn call(&self, request: Request) -> Result<Answer, Error> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Request { request, reply })?;
        self.wait(answer).await
    }

    fn send(&self, command: Command) -> Result<(), Error> {
        if self.close.is_cancelled() {
            return Err(Error::closed());
        }
        // Fails only once the background task has stopped.
        self.commands.send(command).map_err(|_| Error::closed())
    }

    /// Waits for an answer, at most [`ClientOptions::timeout`] (the request
    /// may still take effect after a timeout).
    async fn wait<T>(&self, answer: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, answer).await {
            Ok(Ok(result)) => result,
            // The task stopped without answering: closed, or its runtime
            // shut down.
            Ok(Err(_)) => Err(Error::closed()),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("no answer within {:?}", self.timeout),
            )),
        }
    }
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("server", &self.shared.info().name)
            .field("state", &self.state())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        assert_send_sync::<AsyncClient>();
        assert_send_sync::<Subscription>();
    }
}
