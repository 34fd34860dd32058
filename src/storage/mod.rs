//! Storage as an interface: what the engine needs from persistence, and
//! the backends that provide it (see `docs/architecture.md`).
//!
//! A [`Backend`] holds keys with their values and revisions, applies a
//! batch of writes atomically at a revision the caller gives, reads one
//! key, scans a prefix, reports changes since a revision, and hands out
//! [`Snapshot`]s that other threads read while the owner goes on writing.
//! Two implement it:
//!
//! - the log store ([`crate::store::Store`], `log.rs` here): durable, an
//!   append-only log of checksummed records in memory-mapped segments;
//! - [`MemoryStore`] (`memory.rs`): in memory only, gone after a restart,
//!   never written to disk.
//!
//! [`Tiers`] (`tiers.rs`) puts them side by side behind one global
//! revision: keys under a volatile prefix (`nkv-server --volatile run`)
//! and ephemeral keys live in memory, every other key in the log, and a
//! write that touches both is still one revision. `Tiers` is itself a
//! `Backend`, and the engine uses nothing else.
//!
//! What every backend guarantees (checked for each of them by
//! `tests/storage_contract.rs`):
//!
//! - `apply` is all or nothing: on `Err` nothing of the batch is visible;
//! - revisions only grow: `apply` and `advance` are given revisions above
//!   every earlier one, and the backend reports them back unchanged;
//! - after `apply(r, ..)`, reads and scans show the batch, each written key
//!   with revision `r`, and [`Backend::changes_since`] of any revision at
//!   or above the floor reports every key changed after it (deletes
//!   included) with its latest state;
//! - a [`Snapshot`] never changes, whatever is applied after it was taken;
//! - after `sync` returns `Ok`, a durable backend reopened holds everything
//!   applied before it.

mod log;
mod memory;
mod reservation;
mod tiers;
mod tiers_view;

use std::sync::Arc;

use crate::store::{Changes, Key, StoreError, ViewEntry};

pub use memory::{MemorySnapshot, MemoryStore};
pub use reservation::REVISION_FILE;
pub use tiers::{Op, Placement, Tiers, Written};
pub use tiers_view::TiersSnapshot;

/// One write of a batch given to [`Backend::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<'a> {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: &'a str,
        /// The value.
        value: &'a [u8],
    },
    /// Delete `key` (the caller only deletes keys that are live here).
    Delete {
        /// The key.
        key: &'a str,
    },
}

impl Write<'_> {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }
}

/// Sizes of one backend, for STATS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Live keys.
    pub keys: u64,
    /// Tombstones kept for `changes_since`.
    pub tombstones: u64,
    /// Bytes of the keys and values of live keys.
    pub data_bytes: u64,
}

/// What the engine needs from a place that keeps keys (see the module
/// docs for the guarantees).
pub trait Backend: Send {
    /// A short name for logs and docs (`"log"`, `"memory"`).
    fn name(&self) -> &'static str;

    /// Whether what `apply` wrote survives a restart.
    fn durable(&self) -> bool;

    /// Makes everything applied so far durable: when it returns `Ok`, it
    /// survives a power cut (nothing to do for a backend that is not
    /// durable). The engine's group commit does this off the lock with the
    /// log's sync points; this is the plain form, for shutdown and for
    /// backends without such a split.
    fn sync(&mut self) -> Result<(), StoreError>;

    /// The highest revision applied or advanced to.
    fn revision(&self) -> u64;

    /// Changes since a revision below this one may be forgotten: such a
    /// `changes_since` answers [`Changes::TooOld`].
    fn floor(&self) -> u64;

    /// Another backend took `revision`: writes here from now on get higher
    /// ones, and `changes_since(revision)` is not too new.
    fn advance(&mut self, revision: u64);

    /// The revision of `key` if it is live here.
    fn current(&self, key: &str) -> Option<u64>;

    /// Every live key covered by `prefix`, in key order.
    fn live_keys(&self, prefix: &str) -> Vec<Key>;

    /// Applies `writes` atomically at `revision` (above every earlier
    /// one): all of them, or on `Err` none.
    fn apply(&mut self, revision: u64, writes: &[Write<'_>]) -> Result<(), StoreError>;

    /// Calls `f` with the revision and value of `key` if it is live here.
    /// Returns whether it was.
    fn read(&self, key: &str, f: &mut dyn FnMut(u64, &[u8])) -> Result<bool, StoreError>;

    /// Live entries and deletes under `prefix` after `revision`, by
    /// revision; `TooOld` below the floor or above the revision.
    fn changes_since(&self, prefix: &str, revision: u64) -> Result<Changes, StoreError>;

    /// A consistent read-only copy of everything applied so far, for other
    /// threads.
    fn snapshot(&self) -> Arc<dyn Snapshot>;

    /// Sizes, for STATS.
    fn stats(&self) -> BackendStats;
}

/// A consistent, read-only state of a backend, readable from any thread.
pub trait Snapshot: Send + Sync {
    /// The revision it is consistent at.
    fn revision(&self) -> u64;

    /// Its tombstone floor.
    fn floor(&self) -> u64;

    /// Live keys.
    fn live_keys(&self) -> u64;

    /// Calls `f` with the revision and value of `key` if it is live.
    fn read(&self, key: &str, f: &mut dyn FnMut(u64, &[u8])) -> Result<bool, StoreError>;

    /// The keys covered by `prefix` in key order, starting after `after`:
    /// without `since` every live key; with `since` every key written or
    /// deleted after that revision.
    fn walk<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        since: Option<u64>,
    ) -> Box<dyn Iterator<Item = Result<ViewEntry, StoreError>> + 'a>;
}
