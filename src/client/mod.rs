//! The Rust client: a blocking API over one multiplexed connection.
//!
//! ```no_run
//! use nkv::addr::Address;
//! use nkv::client::{Client, ClientOptions, SubscriptionEvent};
//! use nkv::protocol::Condition;
//!
//! let client = Client::connect(&Address::from_env_or_default()?, ClientOptions::default())?;
//! let revision = client.put("net.eth0.state", b"up", Condition::None)?;
//! let id = client.subscribe("net", None, Box::new(|id: u32, event: &SubscriptionEvent| {
//!     println!("subscription {id}: {event:?}");
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
//! each caller gets its own answer. A call does its I/O on the calling
//! thread (`client/call.rs`): it writes its request itself unless another
//! thread is writing (which then takes it along), and when no other call
//! is in flight it also reads the socket itself until its answer arrives,
//! handing whatever else comes on the way to its place; otherwise the
//! thread reading hands it its answer. The connection's state is shared
//! under one lock (`client/link.rs`). Behind it run:
//!
//! - the I/O thread (`client/io.rs`): a current-thread tokio runtime that
//!   connects and reconnects, reads the socket while no caller does (so
//!   events arrive while the program makes no call), writes what waited for
//!   room, and sends keepalives. It never runs user code.
//! - the dispatcher thread (`client/hub.rs`), unless
//!   [`ClientOptions::dispatch`] is [`DispatchMode::Manual`]: runs the
//!   subscription handlers, one call at a time. In manual mode the program
//!   runs them itself with [`Client::dispatch`] when [`Client::event_fd`]
//!   becomes readable.
//!
//! # Subscription handlers
//!
//! A handler is called with the subscription id and each event, never
//! before [`Client::subscribe`] has returned that id, one call at a time
//! per client, and dropped exactly once after its last call. Each
//! subscription has its own queue; a slow handler makes its queue merge
//! events of the same key once it holds [`ClientOptions::queue_limit`]
//! events (the latest value wins, `coalesced` counts what was skipped on
//! both sides), so memory stays bounded by the keys it covers. In a
//! grouped subscription such a merge folds the events in between into one
//! [`SubscriptionEvent::Group`], so that after each group or lone event
//! the handler still holds a state the store had (`client/queue.rs`).
//!
//! - [`Client::unsubscribe`] drops the subscription's queued events, waits
//!   only for a running call of its own handler, and drops the handler on
//!   the calling thread before it returns. Called from inside that same
//!   handler, it returns at once and the handler is dropped right after the
//!   call returns.
//! - [`Client::close`] gives every subscription a final
//!   [`SubscriptionEvent::Closed`] and drops its handler, on the closing
//!   thread, before it returns (from inside a handler: right after that
//!   handler returns, on the runner).
//! - A failed [`Client::subscribe`] has dropped its handler, on the calling
//!   thread, before it returns, whatever the failure (a timeout included).

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
//! the loss may be delivered again. The ephemeral keys the client holds
//! ([`Client::put_ephemeral`]) are taken back first, each only if nobody
//! wrote it meanwhile (see `client/ephemeral.rs`).
//!
//! # Transactions and groups
//!
//! [`Client::txn`] applies a [`Txn`] (conditions on any keys, then puts and
//! deletes) all or nothing under one revision. A subscription made with
//! [`SubscribeOptions::grouped`] receives [`SubscriptionEvent::Group`]
//! before the events of one transaction or prefix delete: a handler that
//! applies the `count` events that follow together never shows a state the
//! store never had, even when its queue merges events of a slow handler
//! (`client/queue.rs`).
//!
//! # Fork
//!
//! The threads do not exist in a forked child. Every call made there fails
//! with [`ErrorKind::Connection`], and dropping the client there leaks it
//! instead of touching the parent's threads.

mod answers;
mod call;
mod deadline;
pub(crate) mod ephemeral;
mod error;
pub(crate) mod handshake;
mod hub;
mod io;
mod lifecycle;
mod link;
pub(crate) mod ops;
mod queue;
mod socket;
pub mod subscription;
mod wait;

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use bytes::Bytes;

pub use deadline::{clear_deadline, set_deadline};
pub use error::{Error, ErrorKind};
pub use hub::Handler;
pub use subscription::SubscriptionEvent;
pub use wait::WaitFor;

use crate::addr::Address;
use crate::protocol::{Condition, Request, Txn};
pub(crate) use answers::Answer;
use call::SubscribeArgs;
use ephemeral::{Claim, Cover};
use hub::Hub;
use link::Link;
pub(crate) use queue::SubQueue;

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
    /// After this long without hearing from the server, the client sends
    /// a PING; after twice this long it gives the connection up (and
    /// reconnects): a hung server or a vanished peer is noticed.
    /// `Duration::ZERO` turns it off.
    pub keepalive: Duration,
    /// Who runs subscription handlers.
    pub dispatch: DispatchMode,
    /// Events a subscription's queue holds before it merges events of the
    /// same key.
    pub queue_limit: usize,
    /// The access token sent in HELLO (a secret of the server's token
    /// file): needed over TCP when the server has one. See
    /// [`read_token_file`].
    pub token: Option<String>,
}

impl ClientOptions {
    /// What HELLO carries: the name and the token.
    pub(crate) fn hello(&self) -> (String, Option<String>) {
        (self.name.clone(), self.token.clone())
    }
}

/// Reads a token file as clients use it: its first secret (the whole
/// first non-comment line, or its second word for `NAME SECRET`), so the
/// server's own token file works for a client too.
pub fn read_token_file(path: &std::path::Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("cannot read token file {}: {e}", path.display()),
        )
    })?;
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("token file {} holds no token", path.display()),
            )
        })
}

/// Who runs subscription handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchMode {
    /// A dispatcher thread per client.
    Thread,
    /// The program, with [`Client::dispatch`] when [`Client::event_fd`] is
    /// readable (for programs with their own event loop).
    Manual,
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
            keepalive: Duration::from_secs(15),
            dispatch: DispatchMode::Thread,
            queue_limit: 1024,
            token: None,
        }
    }
}

/// The state of a client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    /// Connected and handshaken.
    Connected = 0,
    /// The connection was lost; waiting before the next attempt.
    Disconnected = 1,
    /// A reconnect attempt is under way.
    Connecting = 2,
    /// The client is closed.
    Closed = 3,
}

/// What the connection's handlers publish for the API: the server's limits
/// and name, and the connection state.
#[derive(Debug)]
pub(crate) struct Shared {
    info: Mutex<ServerInfo>,
    /// `max_key` and `max_value` of `info` again, read by every call
    /// without taking the lock.
    max_key: AtomicU32,
    max_value: AtomicU32,
    state: AtomicU8,
    /// How many ephemeral keys the client holds: plain writes take the
    /// core's lock to forget theirs only when there are some.
    holdings: AtomicUsize,
}

impl Shared {
    /// A connection state with no server known yet.
    pub(crate) fn new(state: ConnState) -> Shared {
        Shared {
            info: Mutex::new(ServerInfo::default()),
            max_key: AtomicU32::new(0),
            max_value: AtomicU32::new(0),
            state: AtomicU8::new(state as u8),
            holdings: AtomicUsize::new(0),
        }
    }

    /// Adopts a new connection's server.
    pub(crate) fn set_info(&self, info: ServerInfo) {
        self.max_key.store(info.max_key, Ordering::Relaxed);
        self.max_value.store(info.max_value, Ordering::Relaxed);
        *self.info.lock().unwrap_or_else(PoisonError::into_inner) = info;
    }

    /// Publishes the connection's state.
    pub(crate) fn set_state(&self, state: ConnState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// The connection's state now.
    pub(crate) fn state(&self) -> ConnState {
        match self.state.load(Ordering::Acquire) {
            0 => ConnState::Connected,
            1 => ConnState::Disconnected,
            2 => ConnState::Connecting,
            _ => ConnState::Closed,
        }
    }

    /// The server's key and value limits, without taking the lock.
    pub(crate) fn limits(&self) -> ops::Limits {
        ops::Limits {
            max_key: self.max_key.load(Ordering::Relaxed) as usize,
            max_value: self.max_value.load(Ordering::Relaxed) as usize,
        }
    }

    /// The server's name and limits (of the current or last connection).
    pub(crate) fn info(&self) -> ServerInfo {
        self.info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
    /// The server's name from HELLO_OK.
    pub(crate) name: String,
    /// Largest frame (length field), in bytes.
    pub(crate) max_frame: u32,
    /// Largest key, in bytes.
    pub(crate) max_key: u32,
    /// Largest value, in bytes.
    pub(crate) max_value: u32,
}

impl ServerInfo {
    /// The limits part, as the public API gives it.
    pub(crate) fn limits(&self) -> ServerLimits {
        ServerLimits {
            max_key: self.max_key,
            max_value: self.max_value,
            max_frame: self.max_frame,
        }
    }
}

/// A value with the revision of its last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// Revision of the key's last write.
    pub revision: u64,
}

/// What an applied transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    /// The transaction's revision (the current revision when it changed
    /// nothing).
    pub revision: u64,
    /// How many keys it deleted (prefix deletes included).
    pub deleted: u32,
}

/// How [`Client::subscribe_with`] subscribes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Resume: only what changed after this revision (or `Reset` and a
    /// snapshot when the server no longer knows).
    pub since: Option<u64>,
    /// Announce events that belong together (one transaction, one prefix
    /// delete) with [`SubscriptionEvent::Group`].
    pub grouped: bool,
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
///
/// [`Client::shutdown`] closes it through a shared reference, so a client
/// shared between threads (an `Arc<Client>`, the C library's handle) can
/// be closed while other calls are in flight: they fail with
/// [`ErrorKind::Closed`].
pub struct Client {
    inner: Inner,
    /// Set by the first `shutdown`.
    closed: std::sync::atomic::AtomicBool,
}

struct Inner {
    /// The connection, shared with the I/O thread.
    link: Arc<Link>,
    /// Written by whoever handles the connection.
    shared: Arc<Shared>,
    /// Subscription handlers and their queues.
    hub: Arc<Hub>,
    /// The I/O thread; joined at close.
    io_thread: Mutex<Option<JoinHandle<()>>>,
    /// The dispatcher thread (none in manual mode); joined at close unless
    /// closing on it.
    dispatcher: Mutex<Option<JoinHandle<()>>>,
    /// Manual dispatch mode.
    manual: bool,
    /// Ids of both threads, to avoid waiting for (or joining) ourselves.
    io_thread_id: ThreadId,
    dispatcher_id: Option<ThreadId>,
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
        let shared = Arc::new(Shared::new(ConnState::Connecting));
        let manual = options.dispatch == DispatchMode::Manual;
        let hub =
            Arc::new(Hub::new(options.queue_limit, manual).map_err(|e| {
                Error::connection(format!("cannot create the event descriptor: {e}"))
            })?);
        let timeout = options.timeout;
        let (io_thread, link) =
            io::spawn(addr.clone(), options, Arc::clone(&shared), Arc::clone(&hub))?;
        let dispatcher = if manual {
            None
        } else {
            let hub = Arc::clone(&hub);
            match std::thread::Builder::new()
                .name("nkv-client-dispatch".into())
                .spawn(move || hub.run_dispatcher())
            {
                Ok(thread) => Some(thread),
                Err(e) => {
                    link.close();
                    let _ = io_thread.join();
                    return Err(Error::connection(format!(
                        "cannot start the dispatcher thread: {e}"
                    )));
                }
            }
        };
        Ok(Client {
            inner: Inner {
                link,
                shared,
                hub,
                io_thread_id: io_thread.thread().id(),
                dispatcher_id: dispatcher.as_ref().map(|d| d.thread().id()),
                io_thread: Mutex::new(Some(io_thread)),
                dispatcher: Mutex::new(dispatcher),
                manual,
                pid: std::process::id(),
                timeout_ms: std::sync::atomic::AtomicU64::new(timeout.as_millis() as u64),
            },
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnState {
        match self.inner() {
            Ok(inner) => inner.shared.state(),
            Err(_) => ConnState::Closed,
        }
    }

    /// In [`DispatchMode::Manual`]: a descriptor that is readable while
    /// subscription events wait for [`Client::dispatch`]. `None` otherwise.
    pub fn event_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inner.hub.fd()
    }

    /// Runs up to `max` waiting handler calls on this thread and returns how
    /// many ran (see [`DispatchMode::Manual`]; in thread mode the dispatcher
    /// thread runs them and this returns 0). Returns 0 when called from
    /// inside a handler. While the client closes, runs every final event.
    pub fn dispatch(&self, max: usize) -> usize {
        if !self.inner.manual || self.inner.pid != std::process::id() {
            return 0;
        }
        self.inner.hub.dispatch(max)
    }

    /// The server's limits (of the current or last connection).
    pub fn server_limits(&self) -> ServerLimits {
        self.info().limits()
    }

    /// The server's name from its HELLO_OK, e.g. `"nkv-server 0.1.0"`.
    pub fn server_name(&self) -> String {
        self.info().name
    }

    /// Checks that the server answers.
    pub fn ping(&self) -> Result<(), Error> {
        ops::ping_answer(self.inner()?.call(Request::Ping)?)
    }

    /// Writes `value` at `key` if `condition` holds; returns the revision of
    /// the write. A failed condition gives [`ErrorKind::ConditionFailed`]
    /// with [`Error::current_revision`].
    ///
    /// A plain put makes an ephemeral key ordinary again: if this client
    /// held `key` (see [`Client::put_ephemeral`]), it no longer does.
    pub fn put(&self, key: &str, value: &[u8], condition: Condition) -> Result<u64, Error> {
        let inner = self.inner()?;
        ops::put_check(inner.limits(), key, value.len())?;
        let request = ops::put(key, Bytes::copy_from_slice(value), condition);
        let revision = ops::put_answer(inner.call(request)?)?;
        inner.disown(|core| core.disown(&[Cover::Key(key.to_owned())]));
        Ok(revision)
    }

    /// Writes an ephemeral key: like [`Client::put`], but the key belongs to
    /// this client's connection, and the server deletes it when the
    /// connection ends (the client closes, crashes, or loses the
    /// connection) and `grace` has passed (at most 600 s; zero: at once).
    /// Returns the revision of the write.
    ///
    /// After a reconnect within `grace` the client takes the key back by
    /// itself (the same value and grace, only if its revision is still the
    /// one this client wrote). The key stops being this client's when
    /// someone else writes or deletes it, when the client writes or deletes
    /// it plainly, or when taking it back fails; [`Client::ephemeral_keys`]
    /// lists what it holds. `Condition::MustNotExist` makes this a leader
    /// claim: of several clients, exactly one gets the key, and it is freed
    /// when that client goes away.
    pub fn put_ephemeral(
        &self,
        key: &str,
        value: &[u8],
        condition: Condition,
        grace: Duration,
    ) -> Result<u64, Error> {
        let inner = self.inner()?;
        ops::put_check(inner.limits(), key, value.len())?;
        let grace_ms = ops::grace_ms(grace)?;
        let value = Bytes::copy_from_slice(value);
        let claim = Claim {
            key: key.to_owned(),
            value: value.clone(),
            grace_ms,
        };
        let request = ops::put_ephemeral(key, value, condition, grace_ms);
        ops::put_answer(inner.link.claim(request, claim, inner.timeout()?)?)
    }

    /// The ephemeral keys this client holds now (written with
    /// [`Client::put_ephemeral`], and not lost since), in key order.
    pub fn ephemeral_keys(&self) -> Vec<String> {
        match self.inner() {
            Ok(inner) => inner.link.with(|core| core.held_keys()),
            Err(_) => Vec::new(),
        }
    }

    /// Applies a transaction: if every condition holds (checked against
    /// the state before it), every operation, in order, all under one
    /// revision; otherwise nothing. A failed condition gives
    /// [`ErrorKind::ConditionFailed`] with [`Error::failed_key`] (the
    /// first condition that failed, in the transaction's order) and
    /// [`Error::current_revision`] (that key's revision, 0 when absent).
    /// More than 256 conditions or 1024 operations give
    /// [`ErrorKind::Limit`] (before anything is sent); a value over the
    /// server's value limit, or a transaction whose changed keys, their
    /// values and 7 bytes each exceed it, [`ErrorKind::TooLarge`].
    ///
    /// ```no_run
    /// # let client: nkv::client::Client = unimplemented!();
    /// use nkv::protocol::Txn;
    /// let txn = Txn::new()
    ///     .if_absent("net.lock")
    ///     .put("net.lock", "me")
    ///     .delete("net.old")
    ///     .delete_prefix("tmp");
    /// let outcome = client.txn(&txn)?;
    /// # Ok::<(), nkv::client::Error>(())
    /// ```
    ///
    /// The keys it writes or deletes stop being ephemeral keys of this
    /// client.
    pub fn txn(&self, txn: &Txn) -> Result<TxnOutcome, Error> {
        let inner = self.inner()?;
        let request = ops::txn(inner.limits(), txn)?;
        let outcome = ops::txn_answer(inner.call(request)?)?;
        inner.disown(|core| core.disown(&Cover::of_txn(txn)));
        Ok(outcome)
    }

    /// Reads `key`; `Ok(None)` when it does not exist.
    pub fn get(&self, key: &str) -> Result<Option<Entry>, Error> {
        let inner = self.inner()?;
        let request = ops::get(inner.limits(), key)?;
        ops::get_answer(inner.call(request))
    }

    /// Every key under `prefix` (`""` = every key), in key order.
    pub fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, Error> {
        let inner = self.inner()?;
        let request = ops::list(inner.limits(), prefix)?;
        ops::list_answer(inner.call(request)?)
    }

    /// Deletes `key` if `condition` holds; returns the revision of the
    /// delete. A missing key gives [`ErrorKind::NotFound`].
    pub fn delete(&self, key: &str, condition: Condition) -> Result<u64, Error> {
        let inner = self.inner()?;
        let request = ops::delete(inner.limits(), key, condition)?;
        let revision = ops::delete_answer(inner.call(request)?)?;
        inner.disown(|core| core.disown(&[Cover::Key(key.to_owned())]));
        Ok(revision)
    }

    /// Deletes `prefix` and every key under it atomically (`""` = every
    /// key); returns the revision and how many keys were deleted.
    pub fn delete_prefix(&self, prefix: &str) -> Result<(u64, u32), Error> {
        let inner = self.inner()?;
        let request = ops::delete_prefix(inner.limits(), prefix)?;
        let done = ops::delete_prefix_answer(inner.call(request)?)?;
        inner.disown(|core| core.disown(&[Cover::Prefix(prefix.to_owned())]));
        Ok(done)
    }

    /// The server's counters, in the server's order.
    pub fn stats(&self) -> Result<Vec<(String, u64)>, Error> {
        ops::stats_answer(self.inner()?.call(Request::Stats)?)
    }

    /// Asks the server to compact its store now; returns the bytes of its
    /// data files before and after.
    pub fn compact(&self) -> Result<(u64, u64), Error> {
        ops::compact_answer(self.inner()?.call(Request::Compact)?)
    }

    /// Subscribes to `prefix` (`""` = every key) and returns the
    /// subscription id. The handler receives the snapshot (or, with
    /// `since`, only what changed after that revision), then
    /// [`SubscriptionEvent::Synced`], then live events; never before this
    /// returns.
    ///
    /// On any error (a timeout included) the handler has been dropped, on
    /// this thread, when this returns; a subscription the server confirms
    /// after a timeout is ended at once.
    pub fn subscribe(
        &self,
        prefix: &str,
        since: Option<u64>,
        handler: Handler,
    ) -> Result<u32, Error> {
        self.subscribe_then(prefix, since, handler, &mut |_| {})
    }

    /// Like [`Client::subscribe`], grouped: before the live events of one
    /// transaction or prefix delete (two or more keys), the handler
    /// receives [`SubscriptionEvent::Group`] with how many of the events
    /// that follow belong together; applied at once, they make the view
    /// the store's state at the group's revision. Snapshots need no group
    /// (`Synced` marks the consistent point).
    pub fn subscribe_grouped(
        &self,
        prefix: &str,
        since: Option<u64>,
        handler: Handler,
    ) -> Result<u32, Error> {
        let options = SubscribeOptions {
            since,
            grouped: true,
        };
        self.subscribe_with(prefix, options, handler, &mut |_| {})
    }

    /// Like [`Client::subscribe`]; `before_activate` receives the id after
    /// the server confirmed and before the handler can be called (the C API
    /// stores `*out_subscription` there).
    pub fn subscribe_then(
        &self,
        prefix: &str,
        since: Option<u64>,
        handler: Handler,
        before_activate: &mut dyn FnMut(u32),
    ) -> Result<u32, Error> {
        let options = SubscribeOptions {
            since,
            grouped: false,
        };
        self.subscribe_with(prefix, options, handler, before_activate)
    }

    /// Subscribes with [`SubscribeOptions`]; otherwise as
    /// [`Client::subscribe_then`].
    pub fn subscribe_with(
        &self,
        prefix: &str,
        options: SubscribeOptions,
        handler: Handler,
        before_activate: &mut dyn FnMut(u32),
    ) -> Result<u32, Error> {
        let ready = self.inner().and_then(|inner| {
            inner.limits().prefix(prefix)?;
            Ok((inner, inner.timeout()?))
        });
        let (inner, timeout) = match ready {
            Ok(ready) => ready,
            Err(e) => {
                hub::drop_handler(handler);
                return Err(e);
            }
        };
        let id = inner.hub.reserve(handler, options.grouped);
        let args = SubscribeArgs {
            id,
            prefix: prefix.to_owned(),
            since: options.since,
            grouped: options.grouped,
        };
        match inner.link.subscribe(args, timeout) {
            Ok(()) => {
                before_activate(id);
                inner.hub.activate(id);
                Ok(id)
            }
            Err(e) => {
                if let Some(handler) = inner.hub.abandon(id) {
                    hub::drop_handler(handler);
                }
                // If the server confirms it late, it is ended then.
                inner.link.forget(id);
                Err(e)
            }
        }
    }

    /// Ends subscription `id`: its queued events are dropped, a running call
    /// of its handler (on another thread) is waited for, and the handler is
    /// dropped on this thread before this returns. Called from inside that
    /// same handler, it returns at once and the handler is dropped right
    /// after the call returns. [`ErrorKind::NotFound`] when `id` is not
    /// active (the server ended it, or it was already unsubscribed).
    pub fn unsubscribe(&self, id: u32) -> Result<(), Error> {
        let inner = self.inner()?;
        match inner.hub.unsubscribe(id) {
            Err(()) => Err(Error::new(
                ErrorKind::NotFound,
                format!("no active subscription {id}"),
            )),
            Ok(handler) => {
                inner.link.forget(id);
                if let Some(handler) = handler {
                    hub::drop_handler(handler);
                }
                Ok(())
            }
        }
    }

    /// Closes the client: every subscription gets a final
    /// [`SubscriptionEvent::Closed`] and its handler is dropped (on this
    /// thread, before this returns; from inside a handler, right after that
    /// handler returns), requests in flight fail with
    /// [`ErrorKind::Closed`], the threads stop. Dropping the client does
    /// the same.
    pub fn close(self) {
        self.shutdown();
    }

    /// Closes the client like [`Client::close`], through a shared
    /// reference; idempotent. Calls made afterwards (or still waiting) fail
    /// with [`ErrorKind::Closed`].
    pub fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = &self.inner;
        if std::process::id() != inner.pid {
            // A forked child: the threads are the parent's (they do not
            // exist here); touching their channels could wake the parent's
            // runtime through an inherited descriptor. Do nothing.
            return;
        }
        // No more events: stop the I/O thread first (it never waits for
        // handlers, so joining it is safe from anywhere but itself). Once it
        // has closed the link, no caller delivers events either.
        inner.link.close();
        let current = std::thread::current().id();
        if current != inner.io_thread_id {
            let thread = inner
                .io_thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
        inner.hub.close("the client was closed");
        // On the dispatcher thread (a handler closed or dropped the client)
        // the dispatcher delivers the final events after the handler
        // returns, then stops; joining would wait for ourselves.
        if Some(current) != inner.dispatcher_id {
            let thread = inner
                .dispatcher
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
    }

    fn inner(&self) -> Result<&Inner, Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::closed());
        }
        let inner = &self.inner;
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
        // In a forked child the lock may have been held by a parent thread
        // at the fork, and would then never be released.
        if self.inner.pid != std::process::id() {
            return ServerInfo::default();
        }
        self.inner.shared.info()
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
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Inner {
    /// The longest key and largest value the server takes.
    fn limits(&self) -> ops::Limits {
        self.shared.limits()
    }

    /// Runs `f` on the core if the client holds ephemeral keys (after a
    /// plain write that may have been one of them).
    fn disown(&self, f: impl FnOnce(&mut link::Core)) {
        if self.shared.holdings.load(Ordering::Relaxed) > 0 {
            self.link.with(f);
        }
    }

    /// Sends a request and waits for its answer.
    fn call(&self, request: Request) -> Result<Answer, Error> {
        let timeout = self.timeout()?;
        self.link.call(request, timeout)
    }

    /// How long the next call may wait: the per-request timeout, or less if
    /// this thread's deadline ([`set_deadline`]) comes first. A deadline
    /// already past fails the call before anything is sent, so a caller
    /// that ran out of time never changes the store.
    fn timeout(&self) -> Result<Duration, Error> {
        let timeout =
            Duration::from_millis(self.timeout_ms.load(std::sync::atomic::Ordering::Relaxed));
        match deadline::limit(timeout) {
            left if left.is_zero() => Err(Error::new(
                ErrorKind::Timeout,
                "this thread's deadline has passed".to_owned(),
            )),
            left => Ok(left),
        }
    }
}

impl Client {
    /// Changes how long each later call waits for its answer.
    pub fn set_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.inner.timeout_ms.store(ms, Ordering::Relaxed);
    }
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
