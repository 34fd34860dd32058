//! Compaction beside the engine, never inside it.
//!
//! The engine starts a job under its write lock (a roll and an O(1) index
//! snapshot: quick), a thread of its own runs it without any lock (copying
//! the live records, the long part), then installs it a chunk of keys at a
//! time, taking the write lock for each chunk only, so readers and writers
//! wait a few milliseconds at most. Operators' COMPACT requests that come
//! while a job runs wait for it and get its report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Core, Engine, EngineError, Outcome, Reply, ReplyTo, Ticket};
use crate::store::{CompactionJob, CompactionReport, StoreError};

/// The pause between two chunks of an install, so that the threads that
/// waited for the lock get it (1M keys: ~500 chunks, a quarter second).
const INSTALL_PAUSE: std::time::Duration = std::time::Duration::from_micros(500);

/// The compaction thread's state.
#[derive(Default)]
pub(super) struct Compactor {
    state: Mutex<State>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    /// Stops the running job's copy (shutdown).
    cancel: Option<Arc<AtomicBool>>,
    /// COMPACT requests waiting for the running job.
    waiters: Vec<(ReplyTo, Ticket)>,
    /// Shutdown began: no new job.
    stopped: bool,
}

impl Compactor {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops a running job early and waits for its thread.
    pub(super) fn stop(&self) {
        {
            let mut state = self.state();
            state.stopped = true;
            if let Some(cancel) = &state.cancel {
                cancel.store(true, Ordering::Relaxed);
            }
        }
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Engine {
    /// After writes: starts an automatic compaction if one is due.
    pub(super) fn compact_if_due(&self, core: &mut Core) {
        if let Some(job) = core.store.log_mut().start_compaction_if_due() {
            self.run_in_background(core, job);
        }
    }

    /// An operator's COMPACT: joins the running job, or starts one; the
    /// answer comes when it is done.
    pub(super) fn compact_request(
        &self,
        core: &mut Core,
        to: &ReplyTo,
        ticket: Ticket,
        out: &mut Vec<(Ticket, Reply)>,
    ) {
        if !core.store.log().is_compacting() {
            match core.store.log_mut().start_compaction_if_room() {
                Ok(job) => self.run_in_background(core, job),
                Err(e) => return out.push((ticket, Err(EngineError::Store(e)))),
            }
        }
        self.compactor.state().waiters.push((to.clone(), ticket));
    }

    fn run_in_background(&self, core: &mut Core, job: CompactionJob) {
        let mut state = self.compactor.state();
        let engine = match self.me.upgrade() {
            Some(engine) if !state.stopped => engine,
            _ => {
                let why = StoreError::io(
                    "compaction".to_string(),
                    std::io::Error::other("the server is shutting down"),
                );
                core.store.log_mut().compaction_job_failed(job, why);
                return;
            }
        };
        state.cancel = Some(job.cancel_flag());
        let spawned = std::thread::Builder::new()
            .name("nkv-compact".into())
            .spawn(move || {
                let outcome = engine.compact(job);
                engine.compaction_done(outcome);
            });
        drop(state);
        match spawned {
            Ok(thread) => {
                let old = self
                    .compactor
                    .thread
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .replace(thread);
                // The previous job's thread has finished (one job at a time).
                if let Some(old) = old {
                    let _ = old.join();
                }
            }
            Err(e) => {
                // The job was dropped unrun: it made no file yet.
                tracing::error!(error = %e, "cannot start the compaction thread");
                self.compactor.state().cancel = None;
                core.store.log_mut().compaction_not_run();
            }
        }
    }

    /// Runs `job` (no lock), then installs it chunk by chunk.
    fn compact(&self, mut job: CompactionJob) -> Result<CompactionReport, String> {
        let started = std::time::Instant::now();
        // The copy runs on a thread of its own at the lowest priority; the
        // install below must not: a thread holding (or queued for) the
        // write lock at nice 19 makes every reader wait for its time
        // slice (priority inversion, measured at 100 ms with 1M keys).
        let ran = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("nkv-compact-copy".into())
                .spawn_scoped(scope, || {
                    lower_priority();
                    job.run()
                })
                .map(|copy| copy.join())
        });
        let ran = match ran {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(StoreError::io(
                "compaction".to_string(),
                std::io::Error::other("the copy thread panicked"),
            )),
            // No thread for the copy: run it here, at normal priority.
            Err(_) => job.run(),
        };
        if let Err(e) = ran {
            let mut core = self.write();
            let e = core.store.log_mut().compaction_job_failed(job, e);
            tracing::warn!(error = %e, "compaction failed");
            return Err(e.to_string());
        }
        loop {
            let mut core = self.write();
            match core.store.log_mut().install_compaction(&mut job) {
                Ok(Some(report)) => {
                    tracing::info!(
                        before = report.bytes_before,
                        after = report.bytes_after,
                        took_ms = started.elapsed().as_millis() as u64,
                        "compacted"
                    );
                    return Ok(report);
                }
                // Let readers and writers in between chunks. Unlocking
                // alone is not enough: a waiting thread must first be
                // scheduled, and this one would take the lock straight back.
                Ok(None) => {
                    drop(core);
                    std::thread::sleep(INSTALL_PAUSE);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn compaction_done(&self, outcome: Result<CompactionReport, String>) {
        let waiters = {
            let mut state = self.compactor.state();
            state.cancel = None;
            std::mem::take(&mut state.waiters)
        };
        for (to, ticket) in waiters {
            let reply = match &outcome {
                Ok(report) => Ok(Outcome::Compacted(report.clone())),
                Err(why) => Err(EngineError::CompactionFailed(why.clone())),
            };
            let _ = to.send((ticket, reply));
        }
    }
}

/// The copy is background work: on a busy machine (two cores, say) the
/// threads serving clients must win the CPU over it, or a GET waits for a
/// time slice behind it. Nice 19 for the calling thread only (Linux nice
/// values are per thread); failing to lower it is harmless.
fn lower_priority() {
    let me = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(me), 19) {
        tracing::debug!(error = %e, "could not lower the compaction thread's priority");
    }
}
