//! The engine: the one place where writes are ordered, shared by every
//! connection without a thread hop.
//!
//! A connection hands the engine the writes it decoded in one go
//! ([`Engine::submit`]); the engine applies them under one write lock, in
//! order, appends their records with one `pwrite`, and answers. Reads
//! ([`Engine::get_with`], [`Engine::view`]) take the read lock on the
//! connection's own task: a GET is one index lookup and a read from a
//! memory map. So a request costs the connection's task its own socket
//! reads and writes and nothing else: no channel, no other thread.
//!
//! Durability. Under `--fsync always` a write is answered, seen by readers
//! and told to subscribers only once it is on disk: a submission's writes
//! wait in `pending` while the sync thread ([`sync`]) runs one fdatasync
//! for everything written so far (group commit) without holding the lock,
//! then answers them through the connections' reply channels, publishes
//! their events and lets readers see them. Meanwhile readers see `durable`,
//! the newest state whose writes are all on disk. Under `interval` and
//! `never` writes are answered at once and the sync thread syncs on the
//! interval (or never).
//!
//! Ordering. The write lock orders writes; the registry lock is taken
//! before the write lock is released and held while the events are
//! delivered (lock coupling), so subscribers receive events in revision
//! order, and a subscription registered under both locks sees each write
//! either in its snapshot or as an event, never both, never neither.

mod compact;
mod owners;
mod sync;
mod writes;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use crate::notify::{KeyEvent, Mailbox, Registry, SubscriptionKey};
use crate::protocol::{Check, Txn};
use crate::storage::{BackendStats, Op, Placement, Tiers, TiersSnapshot};
use crate::store::{CompactionReport, Condition, FsyncPolicy, Store, StoreError, StoreStats};

use owners::Owners;
use writes::{delete, delete_prefix, events_of, put, transact};

/// Numbers a connection gives its requests to the engine, increasing, so
/// answers that come later (through the reply channel) find their request.
pub type Ticket = u64;

/// Where the engine sends answers it gives after [`Engine::submit`]
/// returned (writes waiting for their fsync).
pub type ReplyTo = UnboundedSender<(Ticket, Reply)>;

/// What a connection asks of the engine.
#[derive(Debug)]
pub enum Command {
    /// Write one key.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
        /// The compare-and-swap condition.
        condition: Condition,
        /// `Some(grace)`: the key is ephemeral, owned by this connection,
        /// deleted `grace` after it ends.
        ephemeral: Option<std::time::Duration>,
    },
    /// Conditions and operations applied all or nothing, under one
    /// revision.
    Txn(Txn),
    /// Delete one key.
    Delete {
        /// The key.
        key: String,
        /// The compare-and-swap condition.
        condition: Condition,
    },
    /// Delete a key and its whole subtree in one atomic write.
    DeletePrefix {
        /// The prefix ("" for everything).
        prefix: String,
    },
    /// Register a subscription; the answer carries the view to snapshot.
    Subscribe {
        /// The client's id for the subscription.
        subscription: u32,
        /// The covered prefix.
        prefix: String,
        /// Where the live events go.
        mailbox: Arc<Mailbox>,
    },
    /// End a subscription.
    Unsubscribe {
        /// The client's id for the subscription.
        subscription: u32,
    },
    /// Report the store's counters and every subscription's backlog.
    Stats,
    /// Compact the store now (an operator's request).
    Compact,
}

/// The answer to one command.
pub type Reply = Result<Outcome, EngineError>;

/// A successful result.
#[derive(Debug)]
pub enum Outcome {
    /// The revision of a write.
    Written(u64),
    /// A delete: its revision (the current one when nothing was deleted)
    /// and how many keys went.
    Deleted {
        /// Revision of the delete record, or the current revision.
        revision: u64,
        /// Number of keys deleted.
        count: u32,
    },
    /// The subscription is registered; events after `view` go to its
    /// mailbox.
    Subscribed {
        /// The store as of the registration: the snapshot to send.
        view: TiersSnapshot,
    },
    /// The subscription is gone; no event of it follows.
    Unsubscribed,
    /// A transaction was applied.
    Transacted {
        /// Its revision, or the current one when it changed nothing.
        revision: u64,
        /// Keys it deleted.
        deleted: u32,
    },
    /// Counters.
    Stats(Box<EngineStats>),
    /// What a compaction did.
    Compacted(CompactionReport),
}

/// Why a command failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum EngineError {
    /// The store refused or failed.
    Store(StoreError),
    /// The write could not be made durable.
    CommitFailed(String),
    /// The subscription id is already in use on this connection.
    DuplicateSubscription(u32),
    /// No such subscription on this connection.
    UnknownSubscription(u32),
    /// The compaction asked for failed (the store is as it was).
    CompactionFailed(String),
    /// A transaction's condition did not hold; nothing was written.
    TxnConditionFailed {
        /// Its position in the request, from 0.
        index: usize,
        /// Its key.
        key: String,
        /// What it required.
        check: Check,
        /// The key's revision (0: absent).
        current: u64,
    },
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Store(e) => write!(f, "{e}"),
            EngineError::CommitFailed(why) => write!(f, "write not durable: {why}"),
            EngineError::DuplicateSubscription(id) => {
                write!(f, "subscription {id} already exists on this connection")
            }
            EngineError::UnknownSubscription(id) => {
                write!(f, "no subscription {id} on this connection")
            }
            EngineError::CompactionFailed(why) => write!(f, "compaction failed: {why}"),
            EngineError::TxnConditionFailed {
                index,
                key,
                current,
                ..
            } => write!(
                f,
                "condition {index} on {key} failed (current revision {current})"
            ),
        }
    }
}

impl std::error::Error for EngineError {}

/// One subscription's backlog, for STATS.
#[derive(Debug, Clone)]
pub struct SubscriptionStats {
    /// Which subscription.
    pub key: SubscriptionKey,
    /// Keys with an event not yet taken by the connection.
    pub pending: usize,
    /// Updates skipped since the subscription began.
    pub coalesced: u64,
}

/// Everything the engine can report.
#[derive(Debug, Clone)]
pub struct EngineStats {
    /// The log store's own numbers, but for keys, bytes, revision and
    /// floor, which count the keys kept in memory too.
    pub store: StoreStats,
    /// Keys and bytes kept in memory only (volatile and ephemeral).
    pub memory: BackendStats,
    /// Ephemeral keys (orphans waiting for their grace period included).
    pub ephemeral: u64,
    /// Batches of writes applied.
    pub commits: u64,
    /// Each live subscription.
    pub subscriptions: Vec<SubscriptionStats>,
}

/// What [`Engine::probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Live keys, on disk and in memory.
    pub keys: u64,
    /// The revision of the last write.
    pub revision: u64,
}

/// Writes of one submission waiting for their fsync (policy `Always`).
struct Pending {
    /// The revision of the last of them.
    revision: u64,
    /// Their events, in order.
    events: Vec<KeyEvent>,
    /// Their answers, and where to send them.
    replies: Vec<(Ticket, Reply)>,
    to: ReplyTo,
}

/// The state behind the write lock.
struct Core {
    store: Tiers,
    /// Owners of the ephemeral keys.
    owners: Owners,
    /// Under `Always`: submissions written but not yet durable, oldest first.
    pending: VecDeque<Pending>,
    /// What readers see while `pending` is not empty (or for good after a
    /// failed fsync): the newest state whose writes are all durable.
    durable: Option<TiersSnapshot>,
    /// Batches of writes applied.
    commits: u64,
}

impl Core {
    /// What a reader may see now.
    fn readable(&self) -> Result<&TiersSnapshot, &Tiers> {
        self.durable.as_ref().ok_or(&self.store)
    }
}

/// Writes of one submission between two cuts (see [`Engine::submit`]).
#[derive(Default)]
struct Batch {
    events: Vec<KeyEvent>,
    replies: Vec<(Ticket, Reply)>,
}

/// The engine (see the module docs). Shared by every connection.
pub struct Engine {
    core: RwLock<Core>,
    registry: Mutex<Registry>,
    policy: FsyncPolicy,
    sync: sync::Syncer,
    compactor: compact::Compactor,
    /// Itself, for the threads it starts.
    me: Weak<Engine>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Engine {
    /// Wraps an open store (every key durable) and starts the sync
    /// thread.
    pub fn start(store: Store) -> std::io::Result<Arc<Engine>> {
        let tiers = Tiers::open(store, Placement::default()).map_err(std::io::Error::other)?;
        Engine::start_tiers(tiers)
    }

    /// Wraps the log store and the memory (see [`Tiers`]) and starts the
    /// sync thread.
    pub fn start_tiers(mut store: Tiers) -> std::io::Result<Arc<Engine>> {
        let policy = store.log().options().fsync;
        // Sealed segments' hints are written by the sync thread.
        store.log_mut().defer_hints();
        let engine = Arc::new_cyclic(|me| Engine {
            core: RwLock::new(Core {
                store,
                owners: Owners::default(),
                pending: VecDeque::new(),
                durable: None,
                commits: 0,
            }),
            registry: Mutex::new(Registry::new()),
            policy,
            sync: sync::Syncer::default(),
            compactor: compact::Compactor::default(),
            me: me.clone(),
        });
        sync::spawn(&engine)?;
        Ok(engine)
    }

    fn read(&self) -> RwLockReadGuard<'_, Core> {
        // A panic under the lock leaves the store as consistent as a
        // failed write does (each step is complete or rolled back).
        self.core.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Core> {
        self.core.write().unwrap_or_else(|p| p.into_inner())
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `f` with the revision and value of `key` as readers may see it
    /// now, without copying the value.
    pub fn get_with<R>(
        &self,
        key: &str,
        f: impl FnOnce(u64, &[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        match self.read().readable() {
            Ok(view) => view.get_with(key, f),
            Err(store) => store.get_with(key, f),
        }
    }

    /// A consistent view of what readers may see now (for LIST).
    pub fn view(&self) -> TiersSnapshot {
        match self.read().readable() {
            Ok(view) => view.clone(),
            Err(store) => store.view(),
        }
    }

    /// Runs `commands` of `connection` in order. Answers ready now go to
    /// `out`; writes that wait for their fsync are answered later through
    /// `to`. Every answer carries its command's ticket.
    pub fn submit(
        &self,
        connection: u64,
        commands: &mut Vec<(Ticket, Command)>,
        to: &ReplyTo,
        out: &mut Vec<(Ticket, Reply)>,
    ) {
        let mut guard = self.write();
        let core = &mut *guard;
        if self.policy == FsyncPolicy::Always && core.pending.is_empty() {
            // Readers keep seeing this state until the writes below are on
            // disk.
            core.durable.get_or_insert_with(|| core.store.view());
        }
        // The interval timer starts with the first unsynced write.
        let idle = matches!(self.policy, FsyncPolicy::Interval(_))
            && core.store.log().next_sync_deadline().is_none();
        let mut batch = Batch::default();
        let mut wrote = false;
        core.store.log_mut().begin_batch();
        for (ticket, command) in commands.drain(..) {
            match command {
                Command::Put {
                    key,
                    value,
                    condition,
                    ephemeral,
                } => {
                    let owner = ephemeral.map(|grace| (connection, grace));
                    let reply = put(core, key, value, condition, owner, &mut batch.events);
                    wrote |= reply.is_ok();
                    batch.replies.push((ticket, reply));
                }
                Command::Delete { key, condition } => {
                    let reply = delete(core, key, condition, &mut batch.events);
                    wrote |= reply.is_ok();
                    batch.replies.push((ticket, reply));
                }
                Command::DeletePrefix { prefix } => {
                    let reply = delete_prefix(core, &prefix, &mut batch.events);
                    wrote |= reply.is_ok();
                    batch.replies.push((ticket, reply));
                }
                Command::Txn(txn) => {
                    let reply = transact(core, &txn, &mut batch.events);
                    wrote |= reply.is_ok();
                    batch.replies.push((ticket, reply));
                }
                Command::Subscribe {
                    subscription,
                    prefix,
                    mailbox,
                } => {
                    // Writes before it in this submission come first: in
                    // its snapshot, or (not yet durable) as events.
                    self.cut(core, &mut batch, to, out);
                    let view = match core.readable() {
                        Ok(view) => view.clone(),
                        Err(store) => store.view(),
                    };
                    let key = SubscriptionKey {
                        connection,
                        subscription,
                    };
                    let reply = if self.registry().register(key, &prefix, mailbox) {
                        Ok(Outcome::Subscribed { view })
                    } else {
                        Err(EngineError::DuplicateSubscription(subscription))
                    };
                    out.push((ticket, reply));
                    core.store.log_mut().begin_batch();
                }
                Command::Unsubscribe { subscription } => {
                    let key = SubscriptionKey {
                        connection,
                        subscription,
                    };
                    let reply = if self.registry().unregister(key) {
                        Ok(Outcome::Unsubscribed)
                    } else {
                        Err(EngineError::UnknownSubscription(subscription))
                    };
                    out.push((ticket, reply));
                }
                Command::Stats => {
                    let stats = self.stats_of(core);
                    out.push((ticket, Ok(Outcome::Stats(Box::new(stats)))));
                }
                Command::Compact => self.compact_request(core, to, ticket, out),
            }
        }
        if wrote {
            core.commits += 1;
        }
        let registry = self.end(core, &mut batch, to, out);
        if wrote {
            self.compact_if_due(core);
        }
        let background = core.store.log().writeback_due() || core.store.log().has_hint_jobs();
        if background || (idle && core.store.log().next_sync_deadline().is_some()) {
            self.sync.wake();
        }
        drop(guard);
        if let Some((registry, events)) = registry {
            registry.publish_all(&events);
        }
    }

    /// Ends the batch in the middle of a submission (before a subscription
    /// or a compaction): writes it, and publishes or queues its events.
    fn cut(
        &self,
        core: &mut Core,
        batch: &mut Batch,
        to: &ReplyTo,
        out: &mut Vec<(Ticket, Reply)>,
    ) {
        if let Some((registry, events)) = self.end(core, batch, to, out) {
            registry.publish_all(&events);
        }
    }

    /// Writes the batch's records. Under `Always` its answers and events
    /// wait for the sync thread; otherwise its answers go to `out`, and the
    /// registry (locked while the write lock is still held) is returned with
    /// the events to publish.
    fn end(
        &self,
        core: &mut Core,
        batch: &mut Batch,
        to: &ReplyTo,
        out: &mut Vec<(Ticket, Reply)>,
    ) -> Option<(MutexGuard<'_, Registry>, Vec<KeyEvent>)> {
        let written = core.store.log_mut().end_batch();
        let events = std::mem::take(&mut batch.events);
        let replies = std::mem::take(&mut batch.replies);
        if let Err(e) = written {
            tracing::error!(error = %e, "writing a batch failed; not acknowledged");
            out.extend(replies.into_iter().map(|(ticket, reply)| {
                let reply = match reply {
                    Ok(_) => Err(EngineError::CommitFailed(e.to_string())),
                    failed => failed,
                };
                (ticket, reply)
            }));
            return None;
        }
        if self.policy == FsyncPolicy::Always && !events.is_empty() {
            let (done, failed): (Vec<_>, Vec<_>) =
                replies.into_iter().partition(|(_, reply)| reply.is_ok());
            out.extend(failed);
            core.pending.push_back(Pending {
                revision: core.store.revision(),
                events,
                replies: done,
                to: to.clone(),
            });
            self.sync.wake();
            return None;
        }
        out.extend(replies);
        if self.policy == FsyncPolicy::Always && core.pending.is_empty() {
            // Nothing waits for a sync: readers see the store itself again.
            if core.store.log().poisoned().is_none() {
                core.durable = None;
            }
        }
        if events.is_empty() {
            return None;
        }
        Some((self.registry(), events))
    }

    /// The connection is gone: drops its subscriptions and deletes the
    /// ephemeral keys it owned that have no grace period. Returns the
    /// grace periods of the others: call [`Engine::expire_ephemeral`]
    /// after each.
    pub fn disconnect(&self, connection: u64) -> Vec<std::time::Duration> {
        self.registry().unregister_connection(connection);
        let mut core = self.write();
        if core.owners.is_empty() {
            return Vec::new();
        }
        let (gone, waits) = core
            .owners
            .disconnect(connection, std::time::Instant::now());
        self.delete_owned(core, gone);
        waits
    }

    /// Deletes the orphaned ephemeral keys whose grace period is over.
    pub fn expire_ephemeral(&self) {
        let mut core = self.write();
        let gone = core.owners.expired(std::time::Instant::now());
        self.delete_owned(core, gone);
    }

    /// Deletes ephemeral keys whose owner went, as one write (subscribers
    /// see the DELETEs as one group), like a client's write.
    fn delete_owned(&self, mut guard: RwLockWriteGuard<'_, Core>, keys: Vec<crate::store::Key>) {
        if keys.is_empty() {
            return;
        }
        let core = &mut *guard;
        if self.policy == FsyncPolicy::Always && core.pending.is_empty() {
            core.durable.get_or_insert_with(|| core.store.view());
        }
        let ops: Vec<Op<'_>> = keys.iter().map(|key| Op::Delete { key }).collect();
        let mut batch = Batch::default();
        core.store.log_mut().begin_batch();
        match core.store.write(&ops) {
            Ok(written) => events_of(&written, &mut batch.events),
            Err(e) => {
                tracing::error!(error = %e, "deleting the keys of a closed connection failed")
            }
        }
        // Nobody waits for this answer.
        let (to, _) = tokio::sync::mpsc::unbounded_channel();
        let mut out = Vec::new();
        let registry = self.end(core, &mut batch, &to, &mut out);
        drop(guard);
        if let Some((registry, events)) = registry {
            registry.publish_all(&events);
        }
    }

    fn stats_of(&self, core: &Core) -> EngineStats {
        let registry = self.registry();
        let mut subscriptions: Vec<_> = registry
            .iter()
            .map(|(key, _, mailbox)| SubscriptionStats {
                key,
                pending: mailbox.pending(),
                coalesced: mailbox.coalesced_total(),
            })
            .collect();
        drop(registry);
        subscriptions.sort_by_key(|s| s.key);
        let mut store = core.store.log().stats();
        let all = core.store.stats();
        store.keys = all.keys;
        store.tombstones = all.tombstones;
        store.data_bytes = all.data_bytes;
        store.revision = core.store.revision();
        store.tombstone_floor = core.store.floor();
        EngineStats {
            store,
            memory: core.store.memory_stats(),
            ephemeral: core.owners.len() as u64,
            commits: core.commits,
            subscriptions,
        }
    }

    /// Keys (every tier) and the current revision, read under the write
    /// lock and then the registry lock, as every write takes them: an
    /// answer proves that no write is stuck holding either. Blocks while
    /// one is held; the service watchdog asks it from a blocking thread.
    pub fn probe(&self) -> Probe {
        let core = self.write();
        let probe = Probe {
            keys: core.store.stats().keys,
            revision: core.store.revision(),
        };
        drop(self.registry());
        probe
    }

    /// Stops the sync thread and syncs the store one last time (shutdown,
    /// once no connection is left). Returns whether that sync worked.
    pub fn close(&self) -> Result<(), StoreError> {
        self.compactor.stop();
        self.sync.stop();
        let mut core = self.write();
        let synced = crate::storage::Backend::sync(&mut core.store);
        if let Err(e) = &synced {
            tracing::error!(error = %e, "final sync at shutdown failed");
        }
        synced
    }
}
