//! A subscription as a [`Stream`] of [`SubscriptionEvent`]s, and the queue
//! between the background task, which fills it, and the stream's reader.
//!
//! The queue is the blocking client's [`SubQueue`]: once it holds
//! [`ClientOptions::queue_limit`](crate::client::ClientOptions::queue_limit)
//! events, a new event of a key that already has one waiting replaces it
//! (the latest value wins, `coalesced` counts what was skipped). The
//! background task therefore never waits for a slow reader, and a slow
//! reader costs memory bounded by the keys its subscription covers, not by
//! the write rate.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_util::Stream;
use tokio::sync::mpsc::UnboundedSender;

use super::driver::Command;
use crate::client::{SubQueue, SubscriptionEvent};

/// The events of one subscription waiting for its reader. Shared by the
/// background task (which pushes) and the [`Subscription`] (which pops).
///
/// A std mutex, not tokio's: it is held for a push or a pop, never across
/// an `await`, and the background task must never wait for a reader.
#[derive(Debug)]
pub(super) struct Sink {
    state: Mutex<SinkState>,
}

#[derive(Debug)]
struct SinkState {
    /// Waiting events, merged per key past the limit.
    queue: SubQueue,
    /// The reader's waker, when it found the queue empty.
    waker: Option<Waker>,
    /// No event follows what is queued (the last one is `Closed`).
    ended: bool,
}

impl Sink {
    /// An empty sink whose queue merges events from `limit` waiting ones on;
    /// `grouped` keeps GROUP markers true through merges.
    pub fn new(limit: usize, grouped: bool) -> Arc<Sink> {
        Arc::new(Sink {
            state: Mutex::new(SinkState {
                queue: if grouped {
                    SubQueue::grouped(limit)
                } else {
                    SubQueue::new(limit)
                },
                waker: None,
                ended: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, SinkState> {
        // A push or a pop leaves the queue consistent even if a panic
        // interrupted the other side between two of them.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an event and wakes the reader.
    pub fn push(&self, event: SubscriptionEvent) {
        let waker = {
            let mut state = self.lock();
            if state.ended {
                return;
            }
            state.queue.push(event);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ends the subscription: a final `Closed` with `reason`, then the
    /// stream ends.
    pub fn end(&self, reason: String) {
        let waker = {
            let mut state = self.lock();
            if state.ended {
                return;
            }
            state.queue.push(SubscriptionEvent::Closed { reason });
            state.ended = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// True when nobody can read the events any more: the only holder left
    /// is the background task (the [`Subscription`] was dropped, or the
    /// `subscribe` call that would have made it was cancelled).
    pub fn orphaned(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1
    }
}

/// A live subscription: a [`Stream`] of [`SubscriptionEvent`]s, made by
/// [`AsyncClient::subscribe`](super::AsyncClient::subscribe).
///
/// It yields the snapshot (an `Update` per key, in key order), then
/// [`SubscriptionEvent::Synced`], then live events. After a lost connection
/// it yields `Disconnected`, then what was missed (or `Reset` and a full
/// snapshot), then `Synced` again. It ends (yields `None`) after a final
/// `Closed`: the client was closed, or the server ended the subscription.
///
/// Dropping it unsubscribes: the background task sends UNSUB, and events
/// already queued are dropped.
#[derive(Debug)]
pub struct Subscription {
    /// The subscription id (the id of its SUB request).
    id: u32,
    /// The prefix subscribed to.
    prefix: String,
    /// Where the background task puts the events.
    sink: Arc<Sink>,
    /// To tell the background task we are gone.
    commands: UnboundedSender<Command>,
    /// `Closed` was yielded: the stream is over.
    done: bool,
}

impl Subscription {
    pub(super) fn new(
        id: u32,
        prefix: String,
        sink: Arc<Sink>,
        commands: UnboundedSender<Command>,
    ) -> Subscription {
        Subscription {
            id,
            prefix,
            sink,
            commands,
            done: false,
        }
    }

    /// The subscription id, as the server's STATS names it
    /// (`sub.<conn>.<id>.pending`).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The prefix subscribed to.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Events received and not yet read. Bounded: past
    /// [`ClientOptions::queue_limit`](crate::client::ClientOptions::queue_limit)
    /// only keys without a waiting event add to it.
    pub fn queued(&self) -> usize {
        self.sink.lock().queue.len()
    }

    /// Events this client merged away because the reader was behind (the
    /// server's own merging shows only in the events' `coalesced`).
    pub fn merged(&self) -> u64 {
        self.sink.lock().queue.merged()
    }
}

impl Stream for Subscription {
    type Item = SubscriptionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = {
            let mut state = self.sink.lock();
            match state.queue.pop() {
                Some(event) => Some(event),
                None if state.ended => None,
                None => {
                    // Stored under the lock the pusher takes: no event can
                    // slip in between the empty queue and the waker.
                    match &state.waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => state.waker = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
            }
        };
        if matches!(next, None | Some(SubscriptionEvent::Closed { .. })) {
            self.done = true;
        }
        Poll::Ready(next)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The task may be gone (client closed): then so is the subscription.
        let _ = self.commands.send(Command::Unsubscribe { id: self.id });
    }
}
