//! The sync thread: fdatasync without holding the engine's lock.
//!
//! Under `Always` it wakes when a submission's writes wait in `pending`,
//! takes a [`SyncPoint`](crate::store::SyncPoint) (and a view of the same
//! moment) under the read lock, runs one fdatasync for everything written
//! so far while writers and readers go on, then, under the write lock,
//! answers the writes it covered, lets readers see them and publishes their
//! events. Writes that came in during the fsync wait for the next round:
//! that is group commit. Under `Interval` it syncs when the interval since
//! the oldest unsynced write has passed.
//!
//! Under every policy it also does what the store leaves to other threads
//! so that no writer waits for it: a background fdatasync once a megabyte
//! of the active segment is unsynced (so the one that seals it is short),
//! and the hint files of sealed segments.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use super::{Engine, EngineError, Pending};
use crate::store::FsyncPolicy;

/// Wakes and stops the sync thread.
#[derive(Default)]
pub(super) struct Syncer {
    state: Mutex<State>,
    signal: Condvar,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    /// Something may be waiting to be synced.
    work: bool,
    /// The thread is blocked in a wait (so a wake must signal it).
    waiting: bool,
    /// Shutdown.
    stop: bool,
}

impl Syncer {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the thread there is work; signals it only if it sleeps.
    pub(super) fn wake(&self) {
        let mut state = self.state();
        state.work = true;
        if state.waiting {
            self.signal.notify_one();
        }
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(&self) {
        self.state().stop = true;
        self.signal.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    /// Waits for work or `deadline`; false once stopped.
    fn wait(&self, deadline: Option<Instant>) -> bool {
        let mut state = self.state();
        loop {
            if state.stop {
                return false;
            }
            if std::mem::take(&mut state.work) {
                return true;
            }
            state.waiting = true;
            state = match deadline {
                None => self.signal.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        state.waiting = false;
                        return true;
                    }
                    self.signal
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            state.waiting = false;
        }
    }
}

/// Starts the sync thread of `engine`.
pub(super) fn spawn(engine: &Arc<Engine>) -> std::io::Result<()> {
    let owner = engine.clone();
    let thread = std::thread::Builder::new()
        .name("nkv-sync".into())
        .spawn(move || run(&owner))?;
    *engine.sync.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
    Ok(())
}

fn run(engine: &Engine) {
    loop {
        let deadline = match engine.policy {
            FsyncPolicy::Interval(_) => engine.read().store.log().next_sync_deadline(),
            _ => None,
        };
        if !engine.sync.wait(deadline) {
            return;
        }
        match engine.policy {
            FsyncPolicy::Always => engine.sync_pending(),
            FsyncPolicy::Interval(_) => {
                // A wake only says the timer may have started: sync when due.
                let due = engine.read().store.log().next_sync_deadline();
                if due.is_some_and(|due| due <= Instant::now()) {
                    engine.sync_interval();
                }
            }
            FsyncPolicy::Never => {}
        }
        engine.background_work();
    }
}

impl Engine {
    /// One round of group commit (see the module docs).
    fn sync_pending(&self) {
        let (point, revision, view) = {
            let core = self.read();
            if core.pending.is_empty() {
                return;
            }
            (
                core.store.log().sync_point(),
                core.store.revision(),
                core.store.view(),
            )
        };
        let outcome = point.as_ref().map(|p| p.sync());
        let mut core = self.write();
        let synced = match (&point, outcome) {
            (Some(point), Some(outcome)) => core.store.log_mut().synced(point, outcome),
            // Nothing was unsynced (a roll synced it all already).
            _ => Ok(()),
        };
        let released: Vec<Pending> = match &synced {
            Ok(()) => {
                let n = core
                    .pending
                    .iter()
                    .take_while(|p| p.revision <= revision)
                    .count();
                let released = core.pending.drain(..n).collect();
                core.durable = (!core.pending.is_empty()).then_some(view);
                released
            }
            Err(e) => {
                // Nothing pending will ever be durable; readers keep the
                // last durable state for good (the store refuses writes).
                tracing::error!(error = %e, "fsync failed; pending writes not acknowledged");
                for pending in core.pending.drain(..) {
                    for (ticket, _) in pending.replies {
                        let _ = pending
                            .to
                            .send((ticket, Err(EngineError::CommitFailed(e.to_string()))));
                    }
                }
                return;
            }
        };
        let registry = self.registry();
        drop(core);
        for pending in released {
            // A closed channel means the connection went away; its write
            // is durable all the same.
            for reply in pending.replies {
                let _ = pending.to.send(reply);
            }
            registry.publish_all(&pending.events);
        }
    }

    /// What the store left to other threads (see `store::background`):
    /// writeback of a filling active segment, hints of sealed ones.
    fn background_work(&self) {
        if self.policy != FsyncPolicy::Always && self.read().store.log().writeback_due() {
            self.sync_interval();
        }
        let jobs = self.write().store.log_mut().take_hint_jobs();
        for job in jobs {
            let outcome = job.write();
            self.write().store.log_mut().hint_written(job, outcome);
        }
    }

    /// An interval sync: everything written so far.
    fn sync_interval(&self) {
        let Some(point) = self.read().store.log().sync_point() else {
            return;
        };
        let outcome = point.sync();
        if let Err(e) = self.write().store.log_mut().synced(&point, outcome) {
            tracing::error!(error = %e, "interval fsync failed; the store refuses further writes");
        }
    }
}
