//! The engine: the single owner of the store, the one place where writes
//! are ordered.
//!
//! Connections send [`Job`]s over one channel. The engine thread takes every
//! job that is waiting (up to [`MAX_BATCH`]), applies them to the store in
//! arrival order, commits the batch with one fsync (group commit), then
//! publishes a new [`View`] of the store, answers the jobs and hands the
//! changes to the notify registry. So an acknowledgement, a read that sees
//! a write, or a notification never precedes durability, and every
//! subscriber sees the changes of one key in revision order.
//!
//! Reads (GET, LIST, subscription snapshots) are not jobs: connections
//! answer them on their own task from the latest published view, so a
//! reader never waits for the engine and a slow reader never holds it up.
//!
//! A subscription is registered inside the engine, between two writes and
//! with no uncommitted write pending, and its answer carries the view of
//! that moment: the snapshot and the live events meet without a gap or an
//! overlap.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use crate::notify::{ChangeKind, KeyEvent, Mailbox, Registry, SubscriptionKey};
use crate::store::{CompactionReport, Condition, Store, StoreError, StoreStats, View};

/// The most jobs applied before one commit.
pub const MAX_BATCH: usize = 512;

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
    },
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
    /// The connection is gone: drop its subscriptions. No reply.
    Disconnect,
}

impl Command {
    /// True for the commands whose answer depends on the batch's commit.
    fn writes(&self) -> bool {
        matches!(
            self,
            Command::Put { .. } | Command::Delete { .. } | Command::DeletePrefix { .. }
        )
    }
}

/// A command with its return address.
#[derive(Debug)]
pub struct Job {
    /// The connection that sent it.
    pub connection: u64,
    /// What to do.
    pub command: Command,
    /// Where the reply goes. Replies to one sender arrive in job order.
    pub reply: UnboundedSender<Reply>,
}

/// The answer to one job.
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
        view: View,
    },
    /// The subscription is gone; no event of it follows.
    Unsubscribed,
    /// Counters.
    Stats(Box<EngineStats>),
    /// What a compaction did.
    Compacted(CompactionReport),
}

/// Why a job failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum EngineError {
    /// The store refused or failed.
    Store(StoreError),
    /// The batch this job belonged to could not be made durable.
    CommitFailed(String),
    /// The subscription id is already in use on this connection.
    DuplicateSubscription(u32),
    /// No such subscription on this connection.
    UnknownSubscription(u32),
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
    /// The store's own numbers.
    pub store: StoreStats,
    /// Batches committed.
    pub commits: u64,
    /// Each live subscription.
    pub subscriptions: Vec<SubscriptionStats>,
}

/// The latest view of the store, published by the engine after every
/// commit and read by every connection.
#[derive(Debug)]
pub struct Published(Mutex<View>);

impl Published {
    /// The latest view (a cheap clone; the lock is held only for it).
    pub fn load(&self) -> View {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn store(&self, view: View) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = view;
    }
}

/// The engine state, owned by its thread.
pub struct Engine {
    store: Store,
    registry: Registry,
    published: Arc<Published>,
    /// Compactions the published view has seen: a view taken before a
    /// compaction keeps the removed segments' space until it is replaced.
    published_compactions: u64,
    commits: u64,
    /// Replies held until the batch commits, with whether each is a write's.
    held: Vec<(UnboundedSender<Reply>, Reply, bool)>,
    /// Events held until the batch commits.
    events: Vec<KeyEvent>,
    /// True when the held batch contains a write.
    dirty: bool,
}

impl Engine {
    /// Wraps an open store and publishes its first view.
    pub fn new(store: Store) -> Self {
        let published = Arc::new(Published(Mutex::new(store.view())));
        Engine {
            store,
            registry: Registry::new(),
            published,
            published_compactions: 0,
            commits: 0,
            held: Vec::new(),
            events: Vec::new(),
            dirty: false,
        }
    }

    /// Where this engine publishes its views.
    pub fn published(&self) -> Arc<Published> {
        self.published.clone()
    }

    /// Runs the engine until every sender of `jobs` is dropped, then syncs
    /// the store. Returns the store and whether that last sync worked.
    pub fn run(mut self, jobs: Receiver<Job>) -> (Store, Result<(), StoreError>) {
        loop {
            let first = match self.store.next_sync_deadline() {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match jobs.recv_timeout(wait) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout) => {
                            self.background_sync();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            self.apply(first);
            for job in jobs.try_iter().take(MAX_BATCH - 1) {
                self.apply(job);
            }
            self.flush();
        }
        let synced = self.store.sync();
        if let Err(e) = &synced {
            tracing::error!(error = %e, "final sync at shutdown failed");
        }
        (self.store, synced)
    }

    fn background_sync(&mut self) {
        if let Err(e) = self.store.sync() {
            tracing::error!(error = %e, "interval fsync failed; the store refuses further writes");
        }
    }

    /// Commits held writes, publishes the new view, then releases held
    /// replies and events.
    fn flush(&mut self) {
        let committed = if self.dirty {
            self.commits += 1;
            self.store.commit().map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        let was_dirty = std::mem::take(&mut self.dirty);
        match committed {
            Ok(()) => {
                let compactions = self.store.compactions();
                if was_dirty || compactions != self.published_compactions {
                    self.published.store(self.store.view());
                    self.published_compactions = compactions;
                }
                for (tx, reply, _) in self.held.drain(..) {
                    // A closed channel means the connection went away; its
                    // write is durable all the same.
                    let _ = tx.send(reply);
                }
                for event in self.events.drain(..) {
                    self.registry.publish(&event);
                }
            }
            Err(why) => {
                // The view stays the last good one: nobody sees these writes.
                tracing::error!(error = %why, "commit failed; batch not acknowledged");
                self.events.clear();
                for (tx, reply, writes) in self.held.drain(..) {
                    let reply = if writes {
                        Err(EngineError::CommitFailed(why.clone()))
                    } else {
                        reply
                    };
                    let _ = tx.send(reply);
                }
            }
        }
    }

    fn apply(&mut self, job: Job) {
        let Job {
            connection,
            command,
            reply,
        } = job;
        let writes = command.writes();
        let outcome = match command {
            Command::Disconnect => {
                self.registry.unregister_connection(connection);
                return;
            }
            Command::Subscribe {
                subscription,
                prefix,
                mailbox,
            } => {
                // Writes earlier in this batch must be committed and reach
                // their subscribers before this one registers, or it would
                // hear them twice (once in the snapshot, once live).
                if self.dirty {
                    self.flush();
                }
                let key = SubscriptionKey {
                    connection,
                    subscription,
                };
                if self.registry.register(key, &prefix, mailbox) {
                    Ok(Outcome::Subscribed {
                        view: self.published.load(),
                    })
                } else {
                    Err(EngineError::DuplicateSubscription(subscription))
                }
            }
            other => self.execute(connection, other),
        };
        self.held.push((reply, outcome, writes));
    }

    fn execute(&mut self, connection: u64, command: Command) -> Reply {
        match command {
            Command::Put {
                key,
                value,
                condition,
            } => {
                let revision = self
                    .store
                    .put(&key, &value, condition)
                    .map_err(EngineError::Store)?;
                self.dirty = true;
                // Values are never logged, only their sizes.
                tracing::trace!(%key, bytes = value.len(), revision, "put");
                self.events.push(KeyEvent {
                    key: key.into(),
                    revision,
                    kind: ChangeKind::Update(value),
                });
                Ok(Outcome::Written(revision))
            }
            Command::Delete { key, condition } => {
                let revision = self
                    .store
                    .delete(&key, condition)
                    .map_err(EngineError::Store)?;
                self.dirty = true;
                self.events.push(KeyEvent {
                    key: key.into(),
                    revision,
                    kind: ChangeKind::Delete,
                });
                Ok(Outcome::Deleted { revision, count: 1 })
            }
            Command::DeletePrefix { prefix } => {
                let deletion = self
                    .store
                    .delete_prefix(&prefix)
                    .map_err(EngineError::Store)?;
                let Some(revision) = deletion.revision else {
                    return Ok(Outcome::Deleted {
                        revision: self.store.revision(),
                        count: 0,
                    });
                };
                self.dirty = true;
                let count = u32::try_from(deletion.keys.len()).unwrap_or(u32::MAX);
                self.events
                    .extend(deletion.keys.into_iter().map(|key| KeyEvent {
                        key,
                        revision,
                        kind: ChangeKind::Delete,
                    }));
                Ok(Outcome::Deleted { revision, count })
            }
            Command::Unsubscribe { subscription } => {
                let key = SubscriptionKey {
                    connection,
                    subscription,
                };
                if self.registry.unregister(key) {
                    Ok(Outcome::Unsubscribed)
                } else {
                    Err(EngineError::UnknownSubscription(subscription))
                }
            }
            Command::Stats => Ok(Outcome::Stats(Box::new(self.stats()))),
            Command::Compact => {
                // Writes of this batch are in the store already; compaction
                // copies them, and the commit that follows still decides
                // their acknowledgement.
                let report = self.store.compact_if_room().map_err(EngineError::Store)?;
                Ok(Outcome::Compacted(report))
            }
            Command::Subscribe { .. } | Command::Disconnect => {
                unreachable!("handled in apply")
            }
        }
    }

    fn stats(&self) -> EngineStats {
        let mut subscriptions: Vec<_> = self
            .registry
            .iter()
            .map(|(key, _, mailbox)| SubscriptionStats {
                key,
                pending: mailbox.pending(),
                coalesced: mailbox.coalesced_total(),
            })
            .collect();
        subscriptions.sort_by_key(|s| s.key);
        EngineStats {
            store: self.store.stats(),
            commits: self.commits,
            subscriptions,
        }
    }
}

/// A running engine: where to send jobs, where views are published, and
/// the thread, which yields the store and its final sync result once the
/// last job sender is dropped.
pub struct Spawned {
    /// Sends jobs to the engine.
    pub jobs: Sender<Job>,
    /// The latest view.
    pub published: Arc<Published>,
    /// The engine thread.
    pub thread: std::thread::JoinHandle<(Store, Result<(), StoreError>)>,
}

/// Starts the engine on its own thread.
pub fn spawn(store: Store) -> std::io::Result<Spawned> {
    let (tx, rx) = std::sync::mpsc::channel();
    let engine = Engine::new(store);
    let published = engine.published();
    let thread = std::thread::Builder::new()
        .name("nkv-engine".into())
        .spawn(move || engine.run(rx))?;
    Ok(Spawned {
        jobs: tx,
        published,
        thread,
    })
}
