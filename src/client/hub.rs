//! Where subscription handlers live and run: one [`Hub`] per client.
//!
//! Every subscription has a slot: its handler and its own bounded queue
//! ([`SubQueue`]). Whoever reads the connection (the I/O thread, or a
//! calling thread waiting for its answer, see `link.rs`) only pushes events
//! into queues; it never runs or drops a handler, so user code (a C
//! callback, its `free_user_data`) never runs on the I/O path. Handlers run on a *runner*: the
//! client's dispatcher thread, or, in manual mode, whichever thread calls
//! [`Hub::dispatch`] (a program's own event loop, woken by [`Hub::fd`]).
//! One handler call at a time per client, so handlers need no locking
//! among themselves.
//!
//! The rules a caller can rely on (the C header says the same):
//! - No handler call before `subscribe` returned the id ([`Hub::activate`]).
//! - `unsubscribe(B)` drops B's queued events, waits only for a running
//!   call of B's own handler, and drops the handler on the calling thread
//!   before it returns; from inside B's own handler, the handler is dropped
//!   right after that call returns.
//! - `close` ends every subscription with a final `Closed` event and drops
//!   its handler, on the closing thread, before it returns; from inside a
//!   handler, that happens right after the handler returns, on the runner.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;

use super::queue::SubQueue;
use super::subscription::SubscriptionEvent;

/// A subscription handler: called with the subscription id and each event;
/// dropped exactly once, after its last call.
pub type Handler = Box<dyn FnMut(u32, &SubscriptionEvent) + Send + 'static>;

/// Subscription ids are below this; request ids (`link.rs`) are at or
/// above it, so the two never collide on one connection.
pub(crate) const FIRST_REQUEST_ID: u32 = 1 << 31;

/// One subscription's handler and waiting events.
struct Slot {
    /// `None` while a call runs (the runner holds it) or once dropped.
    handler: Option<Handler>,
    queue: SubQueue,
    /// `subscribe` has returned the id: events may be delivered.
    active: bool,
    /// Unsubscribed: no further call; the handler goes to the unsubscriber.
    cancelled: bool,
    /// The subscription is over (closed): deliver what is queued (a final
    /// `Closed`), then drop the handler.
    ending: bool,
    /// An unsubscribe waits for the running call to hand the handler back.
    waiter: bool,
    /// The id is in `ready`.
    queued: bool,
}

#[derive(Default)]
struct State {
    slots: HashMap<u32, Slot>,
    /// Subscriptions with a deliverable event, in turn.
    ready: VecDeque<u32>,
    /// The thread running a handler now, and whose.
    running: Option<(ThreadId, u32)>,
    /// The client is closing; `closer` delivers the final events.
    stopping: bool,
    closer: Option<ThreadId>,
    next_id: u32,
}

/// Wakes a manual-mode program's event loop: an eventfd that is readable
/// while events wait.
struct Notifier(OwnedFd);

impl Notifier {
    fn new() -> std::io::Result<Notifier> {
        use rustix::event::{eventfd, EventfdFlags};
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Notifier(fd))
    }

    fn signal(&self) {
        // Only fails when the counter would overflow: it is readable then.
        let _ = rustix::io::write(&self.0, &1u64.to_ne_bytes());
    }

    fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.0, &mut buf);
    }
}

/// The handlers and queues of one client (see the module docs).
pub(crate) struct Hub {
    state: Mutex<State>,
    cond: Condvar,
    notifier: Option<Notifier>,
    queue_limit: usize,
}

impl Hub {
    /// A hub whose queues merge from `queue_limit` events on; `manual`
    /// gives it a pollable descriptor instead of a dispatcher thread.
    pub fn new(queue_limit: usize, manual: bool) -> std::io::Result<Hub> {
        Ok(Hub {
            state: Mutex::new(State {
                next_id: 1,
                ..State::default()
            }),
            cond: Condvar::new(),
            notifier: if manual { Some(Notifier::new()?) } else { None },
            queue_limit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every operation leaves the state consistent; a panic in a
        // handler never happens under the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.cond
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The descriptor that is readable while events wait (manual mode).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.notifier.as_ref().map(|n| n.0.as_fd())
    }

    /// Holds `handler` under a new subscription id; nothing is delivered
    /// until [`Hub::activate`].
    pub fn reserve(&self, handler: Handler, grouped: bool) -> u32 {
        let mut state = self.lock();
        let id = loop {
            let id = state.next_id;
            state.next_id = if id + 1 >= FIRST_REQUEST_ID {
                1
            } else {
                id + 1
            };
            if !state.slots.contains_key(&id) {
                break id;
            }
        };
        state.slots.insert(
            id,
            Slot {
                handler: Some(handler),
                queue: if grouped {
                    SubQueue::grouped(self.queue_limit)
                } else {
                    SubQueue::new(self.queue_limit)
                },
                active: false,
                cancelled: false,
                ending: false,
                waiter: false,
                queued: false,
            },
        );
        id
    }

    /// True when subscription `id` exists and is not unsubscribed.
    pub fn is_live(&self, id: u32) -> bool {
        self.lock().slots.get(&id).is_some_and(|s| !s.cancelled)
    }

    /// `subscribe` returned `id`: its events may now be delivered.
    pub fn activate(&self, id: u32) {
        let mut state = self.lock();
        if let Some(slot) = state.slots.get_mut(&id) {
            slot.active = true;
        }
        self.schedule(&mut state, id);
    }

    /// The subscribe of `id` failed: removes it and hands back the handler
    /// for the caller to drop on its own thread.
    pub fn abandon(&self, id: u32) -> Option<Handler> {
        let mut state = self.lock();
        let slot = state.slots.remove(&id)?;
        self.cond.notify_all();
        slot.handler
    }

    /// Queues an event of `id` (from whoever reads the connection).
    pub fn push(&self, id: u32, event: SubscriptionEvent) {
        let mut state = self.lock();
        let Some(slot) = state.slots.get_mut(&id) else {
            return;
        };
        if slot.cancelled || slot.ending {
            return;
        }
        slot.queue.push(event);
        self.schedule(&mut state, id);
    }

    /// The subscription `id` is over (the server ended it, or it could not
    /// be resumed): a final `Closed`, then its handler is dropped.
    pub fn end(&self, id: u32, reason: String) {
        let mut state = self.lock();
        let Some(slot) = state.slots.get_mut(&id) else {
            return;
        };
        if slot.cancelled || slot.ending {
            return;
        }
        slot.queue.push(SubscriptionEvent::Closed { reason });
        slot.ending = true;
        self.schedule(&mut state, id);
    }

    /// Puts `id` in line if it has something deliverable, and wakes a runner.
    fn schedule(&self, state: &mut State, id: u32) {
        let Some(slot) = state.slots.get_mut(&id) else {
            return;
        };
        if slot.active && !slot.queued && slot.handler.is_some() && !slot.queue.is_empty() {
            slot.queued = true;
            let was_empty = state.ready.is_empty();
            state.ready.push_back(id);
            if was_empty {
                if let Some(n) = &self.notifier {
                    n.signal();
                }
            }
        }
        self.cond.notify_all();
    }

    /// Ends subscription `id` from the calling thread (see the module
    /// docs). `Ok(Some(handler))`: drop it now, on this thread; `Ok(None)`:
    /// the handler is dropped right after its running call returns (this
    /// thread is inside it). `Err(())`: no such subscription.
    pub fn unsubscribe(&self, id: u32) -> Result<Option<Handler>, ()> {
        let me = std::thread::current().id();
        let mut state = self.lock();
        match state.slots.get_mut(&id) {
            Some(slot) if slot.active && !slot.cancelled && !slot.ending => {
                slot.cancelled = true;
                slot.queue.clear();
            }
            _ => return Err(()),
        }
        if state.running == Some((me, id)) {
            return Ok(None);
        }
        loop {
            let Some(slot) = state.slots.get_mut(&id) else {
                return Ok(None);
            };
            if let Some(handler) = slot.handler.take() {
                state.slots.remove(&id);
                self.cond.notify_all();
                return Ok(Some(handler));
            }
            // Running on another thread: wait for that call only.
            slot.waiter = true;
            state = self.wait(state);
        }
    }

    /// Takes the next call to make: a deliverable event and its handler.
    fn next_call(&self, state: &mut State) -> Option<(u32, SubscriptionEvent, Handler)> {
        while let Some(id) = state.ready.pop_front() {
            let Some(slot) = state.slots.get_mut(&id) else {
                continue;
            };
            slot.queued = false;
            if slot.cancelled || !slot.active {
                continue;
            }
            let Some(handler) = slot.handler.take() else {
                continue;
            };
            let Some(event) = slot.queue.pop() else {
                slot.handler = Some(handler);
                continue;
            };
            if !slot.queue.is_empty() {
                slot.queued = true;
                state.ready.push_back(id);
            }
            return Some((id, event, handler));
        }
        None
    }

    /// Makes one call, the lock released around it; returns the guard.
    fn call<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        (id, event, mut handler): (u32, SubscriptionEvent, Handler),
    ) -> MutexGuard<'a, State> {
        let me = std::thread::current().id();
        state.running = Some((me, id));
        drop(state);
        if catch_unwind(AssertUnwindSafe(|| handler(id, &event))).is_err() {
            tracing::error!(subscription = id, "subscription handler panicked");
        }
        let mut state = self.lock();
        state.running = None;
        self.cond.notify_all();
        let keep = match state.slots.get_mut(&id) {
            // The waiting unsubscriber drops it, on its own thread.
            Some(slot) if slot.cancelled && slot.waiter => true,
            // Unsubscribed from inside this call, or a final event: the
            // handler goes now, on this thread.
            Some(slot) if slot.cancelled => false,
            Some(slot) if slot.ending && slot.queue.is_empty() => false,
            Some(_) => true,
            None => false,
        };
        if keep {
            if let Some(slot) = state.slots.get_mut(&id) {
                slot.handler = Some(handler);
            }
            self.schedule(&mut state, id);
            return state;
        }
        state.slots.remove(&id);
        drop(state);
        drop_handler(handler);
        self.lock()
    }

    /// The dispatcher thread's loop: runs handlers until the client
    /// closes. When another thread closes, that thread delivers the final
    /// events and this loop stops after its current call.
    pub fn run_dispatcher(&self) {
        let me = std::thread::current().id();
        let mut state = self.lock();
        loop {
            if state.stopping && state.closer != Some(me) {
                return;
            }
            if let Some(call) = self.next_call(&mut state) {
                state = self.call(state, call);
                continue;
            }
            if state.stopping {
                // This thread closed from inside a handler and has now
                // delivered every final event.
                self.cond.notify_all();
                return;
            }
            state = self.wait(state);
        }
    }

    /// Runs up to `max` waiting calls on this thread (manual mode); returns
    /// how many ran. Returns 0 at once when called from inside a handler.
    /// Another thread's `dispatch` is waited for. While the client closes,
    /// runs every final event whatever `max` says.
    pub fn dispatch(&self, max: usize) -> usize {
        let me = std::thread::current().id();
        if let Some(n) = &self.notifier {
            n.drain();
        }
        let mut state = self.lock();
        loop {
            match state.running {
                Some((thread, _)) if thread == me => return 0,
                Some(_) => state = self.wait(state),
                None => break,
            }
        }
        let mut ran = 0;
        while ran < max || state.stopping {
            let Some(call) = self.next_call(&mut state) else {
                break;
            };
            state = self.call(state, call);
            ran += 1;
        }
        if !state.ready.is_empty() {
            if let Some(n) = &self.notifier {
                n.signal();
            }
        }
        ran
    }

    /// Closes every subscription: a final `Closed` with `reason`, then the
    /// handler is dropped; returns once done, except when called from
    /// inside a handler (then the runner finishes after that handler
    /// returns). Subscriptions not yet activated are left to their
    /// `subscribe` call, which fails.
    pub fn close(&self, reason: &str) {
        let me = std::thread::current().id();
        let mut state = self.lock();
        if state.stopping {
            return;
        }
        state.stopping = true;
        state.closer = Some(me);
        let ids: Vec<u32> = state
            .slots
            .iter()
            .filter(|(_, s)| s.active && !s.cancelled && !s.ending)
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            let slot = state.slots.get_mut(&id).expect("listed above");
            slot.queue.clear();
            slot.queue.push(SubscriptionEvent::Closed {
                reason: reason.to_owned(),
            });
            slot.ending = true;
            self.schedule(&mut state, id);
        }
        if matches!(state.running, Some((thread, _)) if thread == me) {
            return;
        }
        // Wait for a call running elsewhere, then deliver the rest here.
        while state.running.is_some() {
            state = self.wait(state);
        }
        while let Some(call) = self.next_call(&mut state) {
            state = self.call(state, call);
        }
        self.cond.notify_all();
    }

    /// Number of subscriptions that still have a handler (for tests).
    #[cfg(test)]
    fn live(&self) -> usize {
        self.lock().slots.len()
    }
}

/// Drops a handler (runs C's `free_user_data`), containing a panic.
pub(crate) fn drop_handler(handler: Handler) {
    if catch_unwind(AssertUnwindSafe(|| drop(handler))).is_err() {
        tracing::error!("a subscription handler panicked while being dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn counting(calls: Arc<AtomicUsize>, drops: Arc<AtomicUsize>) -> Handler {
        struct OnDrop(Arc<AtomicUsize>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let guard = OnDrop(drops);
        Box::new(move |_, _| {
            let _ = &guard;
            calls.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[test]
    fn nothing_is_delivered_before_activation() {
        let hub = Hub::new(8, true).unwrap();
        let (calls, drops) = (Arc::default(), Arc::default());
        let id = hub.reserve(counting(Arc::clone(&calls), Arc::clone(&drops)), false);
        hub.push(id, SubscriptionEvent::Synced { revision: 1 });
        assert_eq!(hub.dispatch(10), 0);
        hub.activate(id);
        assert_eq!(hub.dispatch(10), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn unsubscribe_drops_queued_events_and_the_handler_at_once() {
        let hub = Hub::new(8, true).unwrap();
        let (calls, drops) = (Arc::default(), Arc::<AtomicUsize>::default());
        let id = hub.reserve(counting(Arc::clone(&calls), Arc::clone(&drops)), false);
        hub.activate(id);
        for r in 0..5 {
            hub.push(id, SubscriptionEvent::Synced { revision: r });
        }
        let handler = hub.unsubscribe(id).unwrap().expect("not running");
        drop_handler(handler);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        assert_eq!(hub.dispatch(10), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(hub.unsubscribe(id).is_err());
    }

    #[test]
    fn close_delivers_closed_and_drops_every_handler_before_returning() {
        let hub = Hub::new(8, true).unwrap();
        let (calls, drops) = (Arc::default(), Arc::<AtomicUsize>::default());
        for _ in 0..3 {
            let id = hub.reserve(counting(Arc::clone(&calls), Arc::clone(&drops)), false);
            hub.activate(id);
            hub.push(id, SubscriptionEvent::Synced { revision: 1 });
        }
        hub.close("closed");
        assert_eq!(calls.load(Ordering::SeqCst), 3, "one Closed each");
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        assert_eq!(hub.live(), 0);
    }
}
