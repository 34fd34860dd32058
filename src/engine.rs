//! The engine: the single owner of the store, the one place where order is
//! decided.
//!
//! Connections send [`Job`]s over one channel. The engine thread takes every
//! job that is waiting (up to [`MAX_BATCH`]), applies them to the store in
//! arrival order, commits the batch with one fsync (group commit), and only
//! then answers the jobs and hands the changes to the notify registry. So an
//! acknowledgement or a notification never precedes durability, and every
//! subscriber sees the changes of one key in revision order.
//!
//! A subscription is registered and its snapshot taken inside the engine,
//! between two writes, so no write can fall between the snapshot and the
//! live events.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc::UnboundedSender;

use crate::notify::{ChangeKind, KeyEvent, Mailbox, Registry, SubscriptionKey};
use crate::store::{Change, Changes, Condition, Entry, Store, StoreError, StoreStats};

/// The most jobs applied before one commit.
pub const MAX_BATCH: usize = 512;

/// What a connection asks of the engine.
#[derive(Debug)]
pub enum Command {
    /// Reply with a pong; keeps replies in request order.
    Ping,
    /// Read one key.
    Get {
        /// The key.
        key: String,
    },
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
    /// Read every key under a prefix.
    List {
        /// The prefix ("" for everything).
        prefix: String,
    },
    /// Register a subscription and take its snapshot atomically.
    Subscribe {
        /// The client's id for the subscription.
        subscription: u32,
        /// The covered prefix.
        prefix: String,
        /// Resume point: only changes after this revision.
        since: Option<u64>,
        /// Where the live events go.
        mailbox: Arc<Mailbox>,
    },
    /// End a subscription.
    Unsubscribe {
        /// The client's id for the subscription.
        subscription: u32,
    },
    /// Report counters.
    Stats,
    /// Answer with this error without touching the store (keeps replies in
    /// request order for requests the connection already refused).
    Reject(EngineError),
    /// The connection is gone: drop its subscriptions. No reply.
    Disconnect,
}

/// A command with its return address.
#[derive(Debug)]
pub struct Job {
    /// The connection that sent it.
    pub connection: u64,
    /// The request id, echoed in the reply.
    pub id: u32,
    /// What to do.
    pub command: Command,
    /// Where the reply goes.
    pub reply: UnboundedSender<Reply>,
}

/// The answer to one job.
#[derive(Debug)]
pub struct Reply {
    /// The request id of the job.
    pub id: u32,
    /// What came of it.
    pub outcome: Result<Outcome, EngineError>,
}

/// A successful result.
#[derive(Debug)]
pub enum Outcome {
    /// Answer to [`Command::Ping`].
    Pong,
    /// The value of a key.
    Value(Entry),
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
    /// A listing consistent at `revision`.
    Listing {
        /// The store revision of the listing.
        revision: u64,
        /// The entries, sorted by key.
        entries: Vec<(String, Entry)>,
    },
    /// A subscription is live; send these, then SYNCED, then the mailbox.
    Subscribed {
        /// True when a resume was impossible and this is a full snapshot.
        reset: bool,
        /// The snapshot or the changes since the resume point.
        snapshot: Vec<Change>,
        /// The revision the snapshot is consistent at.
        synced_at: u64,
        /// Where the live events of the subscription collect.
        mailbox: Arc<Mailbox>,
    },
    /// The subscription is gone; no event of it follows.
    Unsubscribed,
    /// Counters.
    Stats(Box<EngineStats>),
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
    /// The request was refused before reaching the store.
    Refused {
        /// The wire error code to send.
        code: crate::protocol::ErrorCode,
        /// A message for the user.
        message: String,
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
            EngineError::Refused { message, .. } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for EngineError {}

/// Operation counters kept by the engine.
#[derive(Debug, Default, Clone)]
pub struct OpCounters {
    /// GET requests.
    pub get: u64,
    /// PUT requests.
    pub put: u64,
    /// DEL requests (single and prefix).
    pub del: u64,
    /// LIST requests.
    pub list: u64,
    /// SUB requests.
    pub sub: u64,
    /// Batches committed.
    pub commits: u64,
}

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
    /// Operation counters.
    pub ops: OpCounters,
    /// Each live subscription.
    pub subscriptions: Vec<SubscriptionStats>,
}

/// The engine state, owned by its thread.
pub struct Engine {
    store: Store,
    registry: Registry,
    counters: OpCounters,
    /// Replies held until the batch commits.
    held: Vec<(UnboundedSender<Reply>, Reply)>,
    /// Events held until the batch commits.
    events: Vec<KeyEvent>,
    /// Subscriptions registered in the held batch, undone if it fails.
    registered: Vec<SubscriptionKey>,
    /// True when the held batch contains a write.
    dirty: bool,
}

impl Engine {
    /// Wraps an open store.
    pub fn new(store: Store) -> Self {
        Engine {
            store,
            registry: Registry::new(),
            counters: OpCounters::default(),
            held: Vec::new(),
            events: Vec::new(),
            registered: Vec::new(),
            dirty: false,
        }
    }

    /// Runs the engine until every sender of `jobs` is dropped, then syncs
    /// the store and returns it.
    pub fn run(mut self, jobs: Receiver<Job>) -> Store {
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
        if let Err(e) = self.store.sync() {
            tracing::error!(error = %e, "final sync at shutdown failed");
        }
        self.store
    }

    fn background_sync(&mut self) {
        if let Err(e) = self.store.sync() {
            tracing::error!(error = %e, "interval fsync failed; the store refuses further writes");
        }
    }

    /// Commits held writes, then releases held replies and events.
    fn flush(&mut self) {
        let committed = if self.dirty {
            self.counters.commits += 1;
            self.store.commit().map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        self.dirty = false;
        match committed {
            Ok(()) => {
                self.registered.clear();
                for (tx, reply) in self.held.drain(..) {
                    // A closed channel means the connection went away; its
                    // write is durable all the same.
                    let _ = tx.send(reply);
                }
                for event in self.events.drain(..) {
                    self.registry.publish(&event);
                }
            }
            Err(why) => {
                tracing::error!(error = %why, "commit failed; batch not acknowledged");
                self.events.clear();
                for key in self.registered.drain(..) {
                    self.registry.unregister(key);
                }
                for (tx, reply) in self.held.drain(..) {
                    let outcome = Err(EngineError::CommitFailed(why.clone()));
                    let _ = tx.send(Reply {
                        id: reply.id,
                        outcome,
                    });
                }
            }
        }
    }

    fn apply(&mut self, job: Job) {
        let Job {
            connection,
            id,
            command,
            reply,
        } = job;
        let outcome = match command {
            Command::Disconnect => {
                self.registry.unregister_connection(connection);
                return;
            }
            Command::Subscribe {
                subscription,
                prefix,
                since,
                mailbox,
            } => {
                // Writes earlier in this batch must reach their subscribers
                // before this one registers, or it would hear them twice
                // (once in the snapshot, once live).
                if self.dirty {
                    self.flush();
                }
                self.counters.sub += 1;
                let key = SubscriptionKey {
                    connection,
                    subscription,
                };
                self.subscribe(key, &prefix, since, mailbox)
            }
            other => self.execute(connection, other),
        };
        self.held.push((reply, Reply { id, outcome }));
    }

    fn execute(&mut self, connection: u64, command: Command) -> Result<Outcome, EngineError> {
        match command {
            Command::Ping => Ok(Outcome::Pong),
            Command::Get { key } => {
                self.counters.get += 1;
                match self.store.get(&key).map_err(EngineError::Store)? {
                    Some(entry) => Ok(Outcome::Value(entry)),
                    None => Err(EngineError::Store(StoreError::NotFound)),
                }
            }
            Command::Put {
                key,
                value,
                condition,
            } => {
                self.counters.put += 1;
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
                self.counters.del += 1;
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
                self.counters.del += 1;
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
            Command::List { prefix } => {
                self.counters.list += 1;
                let entries = self
                    .store
                    .scan_prefix(&prefix)
                    .map_err(EngineError::Store)?;
                Ok(Outcome::Listing {
                    revision: self.store.revision(),
                    entries,
                })
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
            Command::Reject(error) => Err(error),
            Command::Subscribe { .. } | Command::Disconnect => {
                unreachable!("handled in apply")
            }
        }
    }

    fn subscribe(
        &mut self,
        key: SubscriptionKey,
        prefix: &str,
        since: Option<u64>,
        mailbox: Arc<Mailbox>,
    ) -> Result<Outcome, EngineError> {
        let (reset, snapshot) = match since {
            Some(revision) => match self
                .store
                .changes_since(prefix, revision)
                .map_err(EngineError::Store)?
            {
                Changes::Since(changes) => (false, changes),
                Changes::TooOld { .. } => (true, self.full_snapshot(prefix)?),
            },
            None => (false, self.full_snapshot(prefix)?),
        };
        if !self.registry.register(key, prefix, mailbox.clone()) {
            return Err(EngineError::DuplicateSubscription(key.subscription));
        }
        self.registered.push(key);
        Ok(Outcome::Subscribed {
            reset,
            snapshot,
            synced_at: self.store.revision(),
            mailbox,
        })
    }

    fn full_snapshot(&self, prefix: &str) -> Result<Vec<Change>, EngineError> {
        let entries = self.store.scan_prefix(prefix).map_err(EngineError::Store)?;
        Ok(entries
            .into_iter()
            .map(|(key, entry)| Change::Put { key, entry })
            .collect())
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
            ops: self.counters.clone(),
            subscriptions,
        }
    }
}

/// Starts the engine on its own thread; returns the job sender and the
/// thread handle, which yields the store back after the last sender drops.
pub fn spawn(store: Store) -> std::io::Result<(Sender<Job>, std::thread::JoinHandle<Store>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("nkv-engine".into())
        .spawn(move || Engine::new(store).run(rx))?;
    Ok((tx, handle))
}
