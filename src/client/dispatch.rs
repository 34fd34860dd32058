//! The dispatcher thread: the one thread per client that runs subscription
//! handlers, in the order the I/O thread queued their events.
//!
//! Handlers live only here, so a handler is never called concurrently with
//! itself or with another handler of the same client, and dropping one
//! needs no lock. The I/O thread talks to the dispatcher through one FIFO
//! queue ([`DispatchMsg`]); because registration, events and removal of a
//! subscription go through the same queue, "the handler is dropped" is a
//! point in the event order that a waiting `unsubscribe` can wait for.
//!
//! A handler may call `unsubscribe` (or `close`) on its own client. That
//! call cannot wait for this thread (it *is* this thread), so it records
//! the id in [`Cancelled`] instead: no further call of that handler happens,
//! and the handler is dropped as soon as the current call returns.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use super::error::Error;
use super::subscription::SubscriptionEvent;

/// A subscription handler: called on the dispatcher thread for each event;
/// dropped exactly once, after its last call.
pub type Handler = Box<dyn FnMut(&SubscriptionEvent) + Send + 'static>;

/// Subscription ids whose handlers must not be called again, recorded by an
/// `unsubscribe` made on the dispatcher thread itself.
///
/// A std mutex, held only to insert or take ids, never across a handler
/// call or drop, so a handler that calls `unsubscribe` cannot deadlock on it.
#[derive(Debug, Default)]
pub(crate) struct Cancelled(Mutex<HashSet<u32>>);

impl Cancelled {
    /// Marks `id` as cancelled.
    pub fn insert(&self, id: u32) {
        self.lock().insert(id);
    }

    fn contains(&self, id: u32) -> bool {
        self.lock().contains(&id)
    }

    fn remove(&self, id: u32) -> bool {
        self.lock().remove(&id)
    }

    fn snapshot(&self) -> Vec<u32> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        // The set is always consistent (single inserts and removes), so a
        // panic elsewhere while it was held does not make it unusable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Who waits for a [`DispatchMsg::Remove`], and the result to tell them.
pub(crate) type RemoveReply = (SyncSender<Result<(), Error>>, Result<(), Error>);

/// A message from the I/O thread (or from `close`) to the dispatcher.
pub(crate) enum DispatchMsg {
    /// A subscription was confirmed: hold its handler.
    Register {
        /// The subscription id.
        id: u32,
        /// Its handler.
        handler: Handler,
    },
    /// Call the handler of `id` with `event`.
    Event {
        /// The subscription id.
        id: u32,
        /// The event.
        event: SubscriptionEvent,
    },
    /// Drop the handler of `id` (if any), then send `reply` (if any): the
    /// point an `unsubscribe` waits for.
    Remove {
        /// The subscription id.
        id: u32,
        /// Who waits, and what to tell them.
        reply: Option<RemoveReply>,
    },
    /// Drop every remaining handler and end the thread.
    Stop,
}

/// The dispatcher thread's loop; returns when told to stop or when the I/O
/// side is gone.
pub(crate) fn run(queue: Receiver<DispatchMsg>, cancelled: Arc<Cancelled>) {
    let mut handlers: HashMap<u32, Handler> = HashMap::new();
    while let Ok(msg) = queue.recv() {
        match msg {
            DispatchMsg::Register { id, handler } => {
                if cancelled.remove(id) {
                    // Unsubscribed from inside a handler before this
                    // registration was processed.
                    drop(handler);
                } else {
                    handlers.insert(id, handler);
                }
            }
            DispatchMsg::Event { id, event } => {
                if cancelled.contains(id) {
                    continue;
                }
                if let Some(handler) = handlers.get_mut(&id) {
                    call(id, handler, &event);
                    drop_cancelled(&mut handlers, &cancelled);
                }
            }
            DispatchMsg::Remove { id, reply } => {
                let handler = handlers.remove(&id);
                cancelled.remove(id);
                drop(handler);
                if let Some((reply, result)) = reply {
                    // The caller may have given up waiting; nothing to do then.
                    let _ = reply.send(result);
                }
            }
            DispatchMsg::Stop => break,
        }
    }
    // Dropped here, on this thread, after their last call.
    drop(handlers);
}

/// Calls one handler, containing a panic so that one faulty handler does not
/// silence every other subscription of the client.
fn call(id: u32, handler: &mut Handler, event: &SubscriptionEvent) {
    if catch_unwind(AssertUnwindSafe(|| handler(event))).is_err() {
        tracing::error!(subscription = id, "subscription handler panicked");
    }
}

/// Drops the handlers cancelled from inside the handler call that just
/// returned. Ids not registered yet stay in the set for `Register` to see.
fn drop_cancelled(handlers: &mut HashMap<u32, Handler>, cancelled: &Cancelled) {
    for id in cancelled.snapshot() {
        if let Some(handler) = handlers.remove(&id) {
            cancelled.remove(id);
            // Outside the lock: a handler's drop may call into the client.
            drop(handler);
        }
    }
}
