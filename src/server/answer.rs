//! Turning queued requests into answers, in request order, and mailboxes
//! into events, never past the connection's output bound.
//!
//! Reads are answered here from the engine's latest published view (so
//! they see every write answered before them on this connection, and
//! nothing that is not durable); writes and subscription changes wait for
//! the engine's reply. A LIST or a subscription snapshot is produced a
//! piece at a time from its view, resuming after the last key sent, so a
//! client that reads slowly holds a view (shared nodes), never a copy of
//! the data.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::connection::Connection;
use crate::engine::{EngineError, Outcome, Reply, Ticket};
use crate::notify::Mailbox;
use crate::protocol::{ErrorCode, ErrorFrame, Event, Response, ServerFrame};
use crate::storage::TiersSnapshot;
use crate::store::{Key, StoreError, ViewEntry};

/// Events written per subscription before moving on to the next, so one
/// busy subscription cannot starve the others.
const EVENTS_PER_ROUND: usize = 64;

/// One request in the connection's queue.
pub(super) struct Entry {
    /// The request id (0 for a connection-level error).
    pub id: u32,
    /// Bytes the request holds (counted in the input bound).
    pub held: usize,
    /// The large-frame budget the request's frame drew, returned when the
    /// entry is dropped.
    pub _budget: Option<OwnedSemaphorePermit>,
    /// What is left to do.
    pub work: Work,
}

/// What a queued request still needs.
pub(super) enum Work {
    /// Waiting for the engine's answer to this ticket.
    Engine(EngineOp, Ticket),
    /// PING.
    Pong,
    /// GET of this key.
    Get(String),
    /// LIST of this prefix, not started.
    List(String),
    /// A LIST or a snapshot in progress.
    Walk(Walk),
    /// An answer decided when the request was read.
    Error(ErrorFrame),
    /// Shutdown: CLOSED for every active subscription, then close.
    CloseSubscriptions,
}

/// What a job sent to the engine was, to encode its reply.
pub(super) enum EngineOp {
    /// PUT → PUT_OK.
    Put,
    /// DEL (single or prefix) → DEL_OK.
    Delete,
    /// TXN → TXN_OK.
    Txn,
    /// SUB → SUB_OK, then the snapshot.
    Subscribe {
        prefix: String,
        since: Option<u64>,
        mailbox: Arc<Mailbox>,
    },
    /// UNSUB of this subscription → UNSUB_OK.
    Unsubscribe(u32),
    /// STATS → STATS_OK.
    Stats,
    /// COMPACT → COMPACT_OK.
    Compact,
    /// A job whose reply is dropped (unregistering a failed snapshot's
    /// subscription).
    Silent,
}

/// A walk over a view, resumable after the last key sent.
pub(super) struct Walk {
    view: TiersSnapshot,
    prefix: String,
    after: Option<Key>,
    /// Resume point of a subscription (changes after it), if any.
    since: Option<u64>,
    /// Items sent so far.
    count: u32,
    /// For a snapshot: the subscription's mailbox, activated after SYNCED.
    subscription: Option<Arc<Mailbox>>,
    /// Ended by a read error (already answered).
    failed: bool,
}

impl Connection {
    /// Moves every answer that is ready, then pending events, into the
    /// output, until the output bound is reached.
    pub(super) fn advance(&mut self) {
        // The engine answers a write before it publishes the write's
        // events: taking every waiting reply first means a client that
        // writes a key it watches gets PUT_OK before the UPDATE (unless an
        // earlier answer still blocks the queue).
        self.take_replies();
        while self.output.len() < self.shared.config.max_output {
            let Some(head) = self.queue.front_mut() else {
                break;
            };
            let id = head.id;
            let work = match &mut head.work {
                Work::Engine(_, ticket)
                    if self.arrived.front().is_none_or(|(t, _)| t != ticket) =>
                {
                    break
                }
                Work::Walk(_) => {
                    // Taken out while it runs: failing may queue more work.
                    let mut entry = self.queue.pop_front().expect("a head");
                    let Work::Walk(walk) = &mut entry.work else {
                        unreachable!("matched above")
                    };
                    if self.walk_some(id, walk) {
                        self.held_input -= entry.held;
                        if let Work::Walk(walk) = entry.work {
                            self.finish_walk(id, walk);
                        }
                    } else {
                        self.queue.push_front(entry);
                    }
                    continue;
                }
                Work::List(prefix) => {
                    let prefix = std::mem::take(prefix);
                    self.shared.ops.list.fetch_add(1, Ordering::Relaxed);
                    head.work = Work::Walk(Walk {
                        view: self.shared.engine.view(),
                        prefix,
                        after: None,
                        since: None,
                        count: 0,
                        subscription: None,
                        failed: false,
                    });
                    continue;
                }
                _ => {
                    let entry = self.pop();
                    entry.work
                }
            };
            match work {
                Work::Engine(op, _) => {
                    let (_, reply) = self.arrived.pop_front().expect("checked above");
                    self.answer_engine(id, op, reply);
                }
                Work::Pong => self.respond(id, Response::Pong),
                Work::Get(key) => self.answer_get(id, &key),
                Work::Error(error) => {
                    let closes = id == crate::protocol::wire::CONNECTION_ID
                        || error.code.closes_connection();
                    self.respond(id, Response::Error(error));
                    if closes {
                        // Nothing after an error that closes.
                        self.queue.clear();
                        self.closing = true;
                        return;
                    }
                }
                Work::CloseSubscriptions => self.close_subscriptions(),
                Work::List(_) | Work::Walk(_) => unreachable!("handled above"),
            }
        }
        self.write_events();
    }

    /// Removes the head of the queue, releasing what it held.
    fn pop(&mut self) -> super::answer::Entry {
        let entry = self.queue.pop_front().expect("a head");
        self.held_input -= entry.held;
        entry
    }

    fn respond(&mut self, id: u32, response: Response) {
        self.encode(ServerFrame::Response { id, response });
    }

    fn event(&mut self, subscription: u32, event: Event) {
        self.encode(ServerFrame::Event {
            subscription,
            event,
        });
    }

    fn answer_get(&mut self, id: u32, key: &str) {
        self.shared.ops.get.fetch_add(1, Ordering::Relaxed);
        // The value goes from the store's map into the output directly.
        let (codec, output) = (&self.codec, &mut self.output);
        let encoded = self.shared.engine.get_with(key, |revision, value| {
            codec.encode_get_ok(id, revision, value, output)
        });
        let response = match encoded {
            Ok(Some(Ok(()))) => return,
            Ok(Some(Err(e))) => {
                tracing::error!(connection = self.id, error = %e, "cannot encode an answer");
                Response::Error(ErrorFrame::new(
                    ErrorCode::Server,
                    format!("answer too large: {e}"),
                ))
            }
            Ok(None) => Response::Error(ErrorFrame::new(ErrorCode::NotFound, "key not found")),
            Err(e) => Response::Error(error_frame(&EngineError::Store(e))),
        };
        self.respond(id, response);
    }

    fn answer_engine(&mut self, id: u32, op: EngineOp, reply: Reply) {
        if let EngineOp::Silent = op {
            return;
        }
        let outcome = match reply {
            Ok(outcome) => outcome,
            Err(error) => {
                if let EngineOp::Subscribe { .. } = op {
                    self.forget_subscription(id);
                }
                return self.respond(id, Response::Error(error_frame(&error)));
            }
        };
        let response = match (op, outcome) {
            (EngineOp::Put, Outcome::Written(revision)) => {
                self.shared.ops.put.fetch_add(1, Ordering::Relaxed);
                Response::PutOk { revision }
            }
            (EngineOp::Txn, Outcome::Transacted { revision, deleted }) => {
                self.shared.ops.txn.fetch_add(1, Ordering::Relaxed);
                Response::TxnOk { revision, deleted }
            }
            (EngineOp::Delete, Outcome::Deleted { revision, count }) => {
                self.shared.ops.del.fetch_add(1, Ordering::Relaxed);
                Response::DelOk {
                    revision,
                    deleted: count,
                }
            }
            (
                EngineOp::Subscribe {
                    prefix,
                    since,
                    mailbox,
                },
                Outcome::Subscribed { view },
            ) => {
                self.respond(id, Response::SubOk);
                let since = match since {
                    Some(since) if view.too_old(since) => {
                        self.event(id, Event::Reset);
                        None
                    }
                    other => other,
                };
                // The snapshot goes first, then SYNCED, then the mailbox.
                self.queue.push_front(Entry {
                    id,
                    held: 0,
                    _budget: None,
                    work: Work::Walk(Walk {
                        view,
                        prefix,
                        after: None,
                        since,
                        count: 0,
                        subscription: Some(mailbox),
                        failed: false,
                    }),
                });
                return;
            }
            (EngineOp::Unsubscribe(subscription), Outcome::Unsubscribed) => {
                // Queued events of it go with the mailbox: none follows.
                self.active.remove(&subscription);
                Response::UnsubOk
            }
            (EngineOp::Stats, Outcome::Stats(stats)) => Response::StatsOk {
                stats: super::stats::to_wire(&stats, &self.shared),
            },
            (EngineOp::Compact, Outcome::Compacted(report)) => Response::CompactOk {
                bytes_before: report.bytes_before,
                bytes_after: report.bytes_after,
            },
            (_, outcome) => {
                tracing::error!(
                    connection = self.id,
                    ?outcome,
                    "engine reply does not match"
                );
                Response::Error(ErrorFrame::new(ErrorCode::Server, "internal error"))
            }
        };
        self.respond(id, response);
    }

    /// Sends walk items until the output bound; true when the walk is done.
    fn walk_some(&mut self, id: u32, walk: &mut Walk) -> bool {
        let max_output = self.shared.config.max_output;
        let mut frames = Vec::new();
        let mut size = self.output.len();
        let after = walk.after.clone();
        let snapshot = walk.subscription.is_some();
        let mut last = None;
        let mut more = false;
        let access = self.shared.config.access.current();
        let peer = &self.peer;
        let result = walk
            .view
            .walk(&walk.prefix, after.as_deref(), walk.since, |item| {
                if size >= max_output {
                    more = true;
                    return false;
                }
                last = Some(item.key().clone());
                // Keys the caller may not read are left out, silently.
                let rights = access.rights(peer, item.key());
                if !rights.read || (snapshot && !rights.subscribe) {
                    return true;
                }
                size += item_size(&item);
                frames.push(item);
                true
            });
        for item in frames {
            walk.count += 1;
            let frame = if snapshot {
                ServerFrame::Event {
                    subscription: id,
                    event: view_event(item),
                }
            } else {
                let ViewEntry::Live { key, entry } = item else {
                    unreachable!("a LIST walk has no deletes")
                };
                ServerFrame::Response {
                    id,
                    response: Response::ListItem {
                        revision: entry.revision,
                        key: key.to_string(),
                        value: entry.value,
                    },
                }
            };
            self.encode(frame);
        }
        if let Some(last) = last {
            walk.after = Some(last);
        }
        if let Err(e) = result {
            // Damaged data: end the answer with the error, not a listing
            // that silently lacks entries.
            self.fail_walk(id, walk, e);
            return true;
        }
        !more
    }

    fn fail_walk(&mut self, id: u32, walk: &mut Walk, error: StoreError) {
        tracing::error!(connection = self.id, error = %error, "read failed");
        let frame = error_frame(&EngineError::Store(error));
        match walk.subscription.take() {
            None => self.respond(id, Response::Error(frame)),
            Some(_) => {
                self.event(
                    id,
                    Event::Closed {
                        code: frame.code,
                        message: frame.message,
                    },
                );
                self.forget_subscription(id);
                // Unregister it in the engine; the reply goes nowhere.
                let work = self.submit(
                    crate::engine::Command::Unsubscribe { subscription: id },
                    EngineOp::Silent,
                );
                self.queue.push_back(Entry {
                    id,
                    held: 0,
                    _budget: None,
                    work,
                });
            }
        }
        walk.failed = true;
    }

    fn finish_walk(&mut self, id: u32, walk: Walk) {
        if walk.failed {
            return;
        }
        match walk.subscription {
            None => self.respond(
                id,
                Response::ListOk {
                    revision: walk.view.revision(),
                    count: walk.count,
                },
            ),
            Some(mailbox) => {
                self.event(
                    id,
                    Event::Synced {
                        revision: walk.view.revision(),
                    },
                );
                self.active.insert(id, mailbox);
                // Events may have arrived while the snapshot was on its way.
                self.waker.notify_one();
            }
        }
    }

    /// Writes a round of events from the active mailboxes, round robin,
    /// while there is room.
    fn write_events(&mut self) {
        if self.active.is_empty() {
            return;
        }
        let max_output = self.shared.config.max_output;
        let mut more = false;
        let ids: Vec<u32> = self
            .active
            .range(self.next_sub..)
            .chain(self.active.range(..self.next_sub))
            .map(|(&id, _)| id)
            .collect();
        let mut batch = Vec::new();
        let trusted = self.peer.trusted;
        let access = self.shared.config.access.current();
        for id in ids {
            if self.output.len() >= max_output {
                self.next_sub = id;
                return;
            }
            let Some(mailbox) = self.active.get(&id) else {
                continue;
            };
            let grouped = mailbox.is_grouped();
            mailbox.drain_into(EVENTS_PER_ROUND, &mut batch);
            more |= batch.len() >= EVENTS_PER_ROUND;
            // Events of keys the caller may not read (or subscribe to) are
            // dropped here, with the rules in force now.
            if !trusted {
                batch.retain(|pending| self.may_see(&access, &pending.change.key, true));
            }
            let mut group_left = 0;
            for (at, pending) in batch.iter().enumerate() {
                if grouped && group_left == 0 {
                    // A run that ends a group: announce it when it has
                    // more than one event.
                    let run = batch[at..]
                        .iter()
                        .position(|p| p.ends_group)
                        .map_or(batch.len() - at, |end| end + 1);
                    if run > 1 {
                        let last = &batch[at + run - 1];
                        self.event(
                            id,
                            Event::Group {
                                count: run as u32,
                                revision: last.change.encoded.revision(),
                            },
                        );
                    }
                    group_left = run;
                }
                group_left = group_left.saturating_sub(1);
                let encoded = &pending.change.encoded;
                if let Err(e) =
                    self.codec
                        .encode_change(id, pending.coalesced, encoded, &mut self.output)
                {
                    // The store bounds keys and values below the frame
                    // limit; should that ever fail, say so, skip it.
                    tracing::error!(connection = self.id, error = %e, "cannot encode an event");
                }
            }
            batch.clear();
        }
        if more {
            self.waker.notify_one();
        }
    }

    /// Shutdown: CLOSED for every active subscription, then close.
    fn close_subscriptions(&mut self) {
        let ids: Vec<u32> = self.active.keys().copied().collect();
        for id in ids {
            self.event(
                id,
                Event::Closed {
                    code: ErrorCode::ShuttingDown,
                    message: "the server is shutting down".into(),
                },
            );
        }
        self.active.clear();
        self.closing = true;
    }
}

/// Approximate encoded size of a walk item (for the output bound).
fn item_size(item: &ViewEntry) -> usize {
    match item {
        ViewEntry::Live { key, entry } => 32 + key.len() + entry.value.len(),
        ViewEntry::Deleted { key, .. } => 32 + key.len(),
    }
}

fn view_event(item: ViewEntry) -> Event {
    match item {
        ViewEntry::Live { key, entry } => Event::Update {
            revision: entry.revision,
            coalesced: 0,
            key: key.to_string(),
            value: entry.value,
        },
        ViewEntry::Deleted { key, revision } => Event::Delete {
            revision,
            coalesced: 0,
            key: key.to_string(),
        },
    }
}

/// The wire error for an engine error: one code per kind of failure.
pub fn error_frame(error: &EngineError) -> ErrorFrame {
    let message = error.to_string();
    let code = match error {
        EngineError::Store(StoreError::ConditionFailed { current }) => {
            return ErrorFrame::condition_failed(current.unwrap_or(0));
        }
        EngineError::TxnConditionFailed {
            index,
            key,
            check,
            current,
        } => return ErrorFrame::txn_condition_failed(*index, key, *check, *current),
        EngineError::Store(StoreError::NotFound) => ErrorCode::NotFound,
        EngineError::Store(StoreError::InvalidKey(_)) => ErrorCode::InvalidKey,
        EngineError::Store(StoreError::ValueTooLarge { .. }) => ErrorCode::TooLarge,
        EngineError::Store(StoreError::Locked { .. }) => ErrorCode::Server,
        EngineError::Store(_) | EngineError::CommitFailed(_) | EngineError::CompactionFailed(_) => {
            ErrorCode::Storage
        }
        EngineError::DuplicateSubscription(_) => ErrorCode::InvalidArgument,
        EngineError::UnknownSubscription(_) => ErrorCode::NotFound,
        #[allow(unreachable_patterns)]
        _ => ErrorCode::Server,
    };
    ErrorFrame::new(code, message)
}
