//! The Rust client: a blocking API over one multiplexed connection.
//!
//! ```no_run
//! use nkv::addr::Address;
//! use nkv::client::{Client, ClientOptions, SubscriptionEvent};
//! use nkv::protocol::Condition;
//!
//! let client = Client::connect(&Address::from_env_or_default()?, ClientOptions::default())?;
//! let revision = client.put("net.eth0.state", b"up", Condition::None)?;
//! let id = client.subscribe("net", None, Box::new(|event: &SubscriptionEvent| {
//!     println!("{event:?}");
//! }))?;
//! client.unsubscribe(id)?;
//! client.close();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Threads
//!
//! [`Client`] is `Send + Sync`; every method takes `&self` and may be called
//! from many threads at once: requests are pipelined on one connection and
//! each caller gets its own answer. Behind it run two threads:
//!
//! - the I/O thread (`client/io.rs`): a current-thread tokio runtime that owns the
//!   socket, matches answers to requests and reconnects;
//! - the dispatcher thread (`client/dispatch.rs`): runs every subscription handler,
//!   one at a time, in event order.
//!
//! # Subscription handlers
//!
//! A handler is called on the dispatcher thread for each event of its
//! subscription and dropped exactly once, after its last call:
//! [`Client::unsubscribe`] returns only once that has happened (except when
//! called from a handler, where the drop happens right after the running
//! handler call returns); [`Client::close`] sends every subscription a final
//! [`SubscriptionEvent::Closed`] and then drops its handler.
//!
//! # Reconnecting
//!
//! With [`ClientOptions::reconnect`] (the default), a lost connection fails
//! the requests in flight with [`ErrorKind::Connection`], sends every
//! subscription [`SubscriptionEvent::Disconnected`], and the client
//! reconnects with exponential backoff. Requests made while it is
//! disconnected fail at once with [`ErrorKind::Connection`]. Each
//! subscription is resumed from the last revision known to be complete (see
//! [`subscription`]): the handler receives what it missed (or a `Reset` and
//! a full snapshot), then `Synced`. Events of the last revision seen before
//! the loss may be delivered again.
//!
//! # Fork
//!
//! The threads do not exist in a forked child. Every call made there fails
//! with [`ErrorKind::Connection`], and dropping the client there leaks it
//! instead of touching the parent's threads.

mod dispatch;
mod error;
mod io;
pub mod subscription;

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

pub use dispatch::Handler;
pub use error::{Error, ErrorKind};
pub use subscription::SubscriptionEvent;

use crate::addr::Address;
use crate::key::{validate_key, validate_prefix};
use crate::protocol::{Condition, Request, Response};
use dispatch::{Cancelled, DispatchMsg};
use io::{Answer, Command};

/// How a [`Client`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// The name sent in HELLO, shown in the server's logs.
    pub name: String,
    /// How long a call waits for its answer before failing with
    /// [`ErrorKind::Timeout`] (the request may still take effect).
    pub timeout: Duration,
    /// How long connecting plus the handshake may take.
    pub connect_timeout: Duration,
    /// Reconnect (and resume subscriptions) when the connection drops.
    pub reconnect: bool,
    /// The first delay before reconnecting.
    pub backoff_initial: Duration,
    /// The longest delay between reconnect attempts (the delay doubles
    /// after each failed attempt, up to this).
    pub backoff_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            name: concat!("nkv-rust ", env!("CARGO_PKG_VERSION")).to_owned(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            reconnect: true,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// The server's limits, as announced in its HELLO_OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Largest key, in bytes.
    pub max_key: u32,
    /// Largest value, in bytes.
    pub max_value: u32,
    /// Largest frame (length field), in bytes.
    pub max_frame: u32,
}

/// What the client knows about the server it is connected to (refreshed at
/// every reconnect).
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerInfo {
    name: String,
    max_frame: u32,
    max_key: u32,
    max_value: u32,
}

/// A value with the revision of its last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// Revision of the key's last write.
    pub revision: u64,
}

/// One key of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// Revision of the key's last write.
    pub revision: u64,
}

/// A connection to an nkv server. See the [module documentation](self).
pub struct Client {
    /// `None` once closed.
    inner: Option<Inner>,
}

struct Inner {
    /// Commands to the I/O thread.
    commands: UnboundedSender<Command>,
    /// Written by the I/O thread at each handshake.
    info: Arc<Mutex<ServerInfo>>,
    /// Subscriptions cancelled from inside a handler.
    cancelled: Arc<Cancelled>,
    /// The I/O thread; joined at close.
    io_thread: JoinHandle<()>,
    /// The dispatcher thread; joined at close unless closing on it.
    dispatcher: JoinHandle<()>,
    /// Ids of both threads, to avoid waiting for (or joining) ourselves.
    io_thread_id: ThreadId,
    dispatcher_id: ThreadId,
    /// The process that made the client; other processes are forks.
    pid: u32,
    /// [`ClientOptions::timeout`] in milliseconds; changeable while in use
    /// (see [`Client::set_timeout`]).
    timeout_ms: std::sync::atomic::AtomicU64,
}

impl Client {
    /// Connects to `addr` and performs the handshake. Only this first
    /// connection's failure is reported here; later ones are handled by
    /// reconnecting.
    pub fn connect(addr: &Address, options: ClientOptions) -> Result<Client, Error> {
        let info = Arc::new(Mutex::new(ServerInfo::default()));
        let cancelled = Arc::new(Cancelled::default());
        let (dispatch_tx, dispatch_rx): (Sender<DispatchMsg>, Receiver<DispatchMsg>) =
            std::sync::mpsc::channel();
        let timeout = options.timeout;
        let (io_thread, commands) =
            io::spawn(addr.clone(), options, Arc::clone(&info), dispatch_tx)?;
        let dispatcher_cancelled = Arc::clone(&cancelled);
        let dispatcher = match std::thread::Builder::new()
            .name("nkv-client-dispatch".into())
            .spawn(move || dispatch::run(dispatch_rx, dispatcher_cancelled))
        {
            Ok(thread) => thread,
            Err(e) => {
                let _ = commands.send(Command::Close);
                let _ = io_thread.join();
                return Err(Error::connection(format!(
                    "cannot start the dispatcher thread: {e}"
                )));
            }
        };
        Ok(Client {
            inner: Some(Inner {
                commands,
                info,
                cancelled,
                io_thread_id: io_thread.thread().id(),
                dispatcher_id: dispatcher.thread().id(),
                io_thread,
                dispatcher,
                pid: std::process::id(),
                timeout_ms: std::sync::atomic::AtomicU64::new(timeout.as_millis() as u64),
            }),
        })
    }

    /// The server's limits (of the current or last connection).
    pub fn server_limits(&self) -> ServerLimits {
        let info = self.info();
        ServerLimits {
            max_key: info.max_key,
            max_value: info.max_value,
            max_frame: info.max_frame,
        }
    }

    /// The server's name from its HELLO_OK, e.g. `"nkv-server 0.1.0"`.
    pub fn server_name(&self) -> String {
        self.info().name
    }

    /// Checks that the server answers.
    pub fn ping(&self) -> Result<(), Error> {
        match self.call(Request::Ping)? {
            Answer::Response(Response::Pong) => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Writes `value` at `key` if `condition` holds; returns the revision of
    /// the write. A failed condition gives [`ErrorKind::ConditionFailed`]
    /// with [`Error::current_revision`].
    pub fn put(&self, key: &str, value: &[u8], condition: Condition) -> Result<u64, Error> {
        self.check_key(key)?;
        let limits = self.server_limits();
        if value.len() > limits.max_value as usize {
            return Err(Error::new(
                ErrorKind::TooLarge,
                format!(
                    "value is {} bytes, more than the server's limit of {}",
                    value.len(),
                    limits.max_value
                ),
            ));
        }
        let request = Request::Put {
            key: key.to_owned(),
            value: Bytes::copy_from_slice(value),
            condition,
        };
        match self.call(request)? {
            Answer::Response(Response::PutOk { revision }) => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    /// Reads `key`; `Ok(None)` when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Entry>, Error> {
        self.check_key(key)?;
        let request = Request::Get {
            key: key.to_owned(),
        };
        match self.call(request) {
            Ok(Answer::Response(Response::GetOk { revision, value })) => {
                Ok(Some(Entry { value, revision }))
            }
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        }
    }

    /// Every key under `prefix` (`""` = every key), in key order.
    pub fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, Error> {
        self.check_prefix(prefix)?;
        let request = Request::List {
            prefix: prefix.to_owned(),
        };
        match self.call(request)? {
            Answer::List(items) => Ok(items),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes `key` if `condition` holds; returns the revision of the
    /// delete. A missing key gives [`ErrorKind::NotFound`].
    pub fn delete(&self, key: &str, condition: Condition) -> Result<u64, Error> {
        self.check_key(key)?;
        let request = Request::Delete {
            key: key.to_owned(),
            condition,
        };
        match self.call(request)? {
            Answer::Response(Response::DelOk { revision, .. }) => Ok(revision),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes `prefix` and every key under it atomically (`""` = every
    /// key); returns the revision and how many keys were deleted.
    pub fn delete_prefix(&self, prefix: &str) -> Result<(u64, u32), Error> {
        self.check_prefix(prefix)?;
        let request = Request::DeletePrefix {
            prefix: prefix.to_owned(),
        };
        match self.call(request)? {
            Answer::Response(Response::DelOk { revision, deleted }) => Ok((revision, deleted)),
            other => Err(unexpected(other)),
        }
    }

    /// The server's counters, in the server's order.
    pub fn stats(&self) -> Result<Vec<(String, u64)>, Error> {
        match self.call(Request::Stats)? {
            Answer::Response(Response::StatsOk { stats }) => Ok(stats),
            other => Err(unexpected(other)),
        }
    }

    /// Asks the server to compact its store now; returns the bytes of its
    /// data files before and after.
    pub fn compact(&self) -> Result<(u64, u64), Error> {
        match self.call(Request::Compact)? {
            Answer::Response(Response::CompactOk {
                bytes_before,
                bytes_after,
            }) => Ok((bytes_before, bytes_after)),
            other => Err(unexpected(other)),
        }
    }

    /// Subscribes to `prefix` (`""` = every key) and returns the
    /// subscription id. The handler receives the snapshot (or, with
    /// `since`, only what changed after that revision), then
    /// [`SubscriptionEvent::Synced`], then live events.
    ///
    /// On error the handler has been dropped when this returns. If the call
    /// times out, the subscription is ended as soon as its confirmation
    /// arrives (it may still see events in between).
    pub fn subscribe(
        &self,
        prefix: &str,
        since: Option<u64>,
        handler: Handler,
    ) -> Result<u32, Error> {
        let inner = self.inner()?;
        self.check_prefix(prefix)?;
        let (reply, answer) = sync_channel(1);
        let command = Command::Subscribe {
            prefix: prefix.to_owned(),
            since,
            handler,
            reply,
        };
        if let Err(e) = inner.commands.send(command) {
            // Drop the handler here, not wherever the channel goes.
            drop(e.0);
            return Err(Error::closed());
        }
        match wait(&answer, inner.timeout())? {
            Ok(id) => Ok(id),
            Err((e, handler)) => {
                drop(handler);
                Err(e)
            }
        }
    }

    /// Ends subscription `id`. When this returns, its handler is not
    /// running, will not be called again and has been dropped; called from
    /// a handler, the handler is dropped right after the running call
    /// returns. [`ErrorKind::NotFound`] when `id` is not active (the server
    /// ended it, or it was already unsubscribed).
    pub fn unsubscribe(&self, id: u32) -> Result<(), Error> {
        let inner = self.inner()?;
        let from_dispatcher = std::thread::current().id() == inner.dispatcher_id;
        if from_dispatcher {
            // We are inside a handler: the dispatcher cannot run the drop
            // for us to wait on, so make it skip and drop the handler instead.
            inner.cancelled.insert(id);
        }
        let (reply, answer) = sync_channel(1);
        let command = Command::Unsubscribe {
            id,
            reply,
            from_dispatcher,
        };
        if inner.commands.send(command).is_err() {
            return Err(Error::closed());
        }
        if from_dispatcher {
            wait(&answer, inner.timeout())?
        } else {
            // No timeout: the promise is that the handler is gone when this
            // returns, and only a handler that never returns delays that.
            answer.recv().unwrap_or_else(|_| Err(Error::closed()))
        }
    }

    /// Closes the client: every subscription gets a final
    /// [`SubscriptionEvent::Closed`] and its handler is dropped, requests in
    /// flight fail with [`ErrorKind::Closed`], the threads stop. Dropping the
    /// client does the same.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if std::process::id() != inner.pid {
            // A forked child: the threads are the parent's (they do not
            // exist here); touching their channels could wake the parent's
            // runtime through an inherited descriptor. Leak instead.
            std::mem::forget(inner);
            return;
        }
        let _ = inner.commands.send(Command::Close);
        let current = std::thread::current().id();
        // The I/O thread never waits for the dispatcher, so joining it is
        // safe from anywhere but itself.
        if current != inner.io_thread_id {
            let _ = inner.io_thread.join();
        }
        // On the dispatcher thread (a handler closed or dropped the client)
        // the dispatcher finishes the queued Closed events and stops after
        // the handler returns; joining would wait for ourselves.
        if current != inner.dispatcher_id {
            let _ = inner.dispatcher.join();
        }
    }

    fn inner(&self) -> Result<&Inner, Error> {
        let inner = self.inner.as_ref().ok_or_else(Error::closed)?;
        if std::process::id() != inner.pid {
            return Err(Error::connection(format!(
                "this client belongs to process {}, the parent of this forked process; \
                 connect a new client here",
                inner.pid
            )));
        }
        Ok(inner)
    }

    fn info(&self) -> ServerInfo {
        match &self.inner {
            // In a forked child the lock may have been held by a parent
            // thread at the fork, and would then never be released.
            Some(inner) if inner.pid != std::process::id() => ServerInfo::default(),
            Some(inner) => inner
                .info
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            None => ServerInfo::default(),
        }
    }

    fn check_key(&self, key: &str) -> Result<(), Error> {
        // First: in a forked child, say so rather than judge the key.
        self.inner()?;
        let max = self.server_limits().max_key as usize;
        validate_key(key, max).map_err(|e| Error::invalid_key("key", key, e))
    }

    fn check_prefix(&self, prefix: &str) -> Result<(), Error> {
        self.inner()?;
        let max = self.server_limits().max_key as usize;
        validate_prefix(prefix, max).map_err(|e| Error::invalid_key("prefix", prefix, e))
    }

    /// Sends a request and waits for its answer.
    fn call(&self, request: Request) -> Result<Answer, Error> {
        let inner = self.inner()?;
        let (reply, answer) = sync_channel(1);
        if inner
            .commands
            .send(Command::Request { request, reply })
            .is_err()
        {
            return Err(Error::closed());
        }
        wait(&answer, inner.timeout())?
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.info().name)
            .field("closed", &self.inner.is_none())
            .finish()
    }
}

impl Inner {
    /// The current per-request timeout.
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Client {
    /// Changes how long each later call waits for its answer.
    pub fn set_timeout(&self, timeout: Duration) {
        if let Some(inner) = &self.inner {
            let ms = u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            inner
                .timeout_ms
                .store(ms, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Waits for the I/O thread's answer, at most `timeout`.
fn wait<T>(answer: &Receiver<T>, timeout: Duration) -> Result<T, Error> {
    match answer.recv_timeout(timeout) {
        Ok(value) => Ok(value),
        Err(RecvTimeoutError::Timeout) => Err(Error::new(
            ErrorKind::Timeout,
            format!("no answer within {timeout:?}"),
        )),
        Err(RecvTimeoutError::Disconnected) => Err(Error::closed()),
    }
}

fn unexpected(answer: Answer) -> Error {
    let what = match answer {
        Answer::Response(r) => format!("response type 0x{:02X}", r.frame_type()),
        Answer::List(_) => "listing".to_owned(),
    };
    Error::new(
        ErrorKind::Protocol,
        format!("unexpected {what} from the server"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn client_is_send_and_sync() {
        assert_send_sync::<Client>();
    }
}
