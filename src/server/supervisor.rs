//! What a running server tells whoever supervises it (systemd, in
//! `nkv-server`): that it is ready, how it is doing, and where shutdown
//! stands.
//!
//! The server knows nothing of systemd: [`run_supervised`](super::run_supervised)
//! calls a [`Supervisor`] at each step, and `crate::systemd` turns the
//! calls into notifications. [`run`](super::run) passes one that does
//! nothing.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use super::Shared;
use crate::engine::Probe;

/// Told of the server's life by [`run_supervised`](super::run_supervised).
/// Each method is called on the server's task: it must return quickly
/// (send a datagram, spawn a task), never wait.
pub trait Supervisor: Send + Sync {
    /// The store is open and every listener accepts: a request sent from
    /// now on is answered. `health` lets the supervisor check, as often as
    /// it likes, that the server still answers.
    fn ready(&self, health: Health) {
        let _ = health;
    }

    /// Shutdown reached `stage` (called in order: draining, perhaps
    /// closing, syncing).
    fn stopping(&self, stage: Stopping) {
        let _ = stage;
    }
}

/// A supervisor that is told nothing: [`run`](super::run) uses it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unsupervised;

impl Supervisor for Unsupervised {}

/// The stages of shutdown (see the module docs of [`crate::server`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopping {
    /// No new connections; these connections finish what they asked.
    Draining {
        /// Connections open when shutdown began.
        connections: usize,
    },
    /// The grace period is over; these connections are being closed.
    Closing {
        /// Connections still open.
        connections: usize,
    },
    /// Every connection is gone; the store is synced one last time.
    Syncing,
}

/// A running server, as its supervisor sees it: not used by connections,
/// and holding nothing alive (once the server is gone, every probe says
/// so).
#[derive(Debug, Clone)]
pub struct Health {
    pub(super) shared: Weak<Shared>,
}

/// How a running server is doing, from [`Health::probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vitals {
    /// Live keys, on disk and in memory.
    pub keys: u64,
    /// The revision of the last write.
    pub revision: u64,
    /// Client connections open now.
    pub connections: usize,
}

impl Health {
    /// Asks the engine for its counters under the locks every write takes
    /// ([`crate::engine::Engine::probe`]): an answer proves writes are not
    /// stuck. Blocks while they are, so call it from a blocking thread
    /// with a deadline. `None` once the server has stopped.
    pub fn probe(&self) -> Option<Vitals> {
        let shared = self.shared.upgrade()?;
        let Probe { keys, revision } = shared.engine.probe();
        Some(Vitals {
            keys,
            revision,
            connections: shared.connections.load(Ordering::SeqCst),
        })
    }
}
