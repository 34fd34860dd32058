//! The synchronous, durable store (see `docs/storage.md`).
//!
//! An append-only log of checksummed records in numbered segment files, an
//! in-memory ordered index of every key, recovery at open, compaction, and
//! an fsync policy. One thread owns a [`Store`]; the engine appends a batch
//! of writes, calls [`Store::commit`] once (one `fdatasync` for the whole
//! batch under [`FsyncPolicy::Always`]), and acknowledges the batch only if
//! that returns `Ok`.
//!
//! Files, one job each: `db` (the [`Store`] and its write path), [`format`](mod@format)
//! (byte layout), `read` (get, scans, changes), `segment` (files and
//! maps), `index` (ordered map of keys), `hint` (fast open), `recovery`
//! (open and torn tails), `compaction`, `repair`, `io` (file layer with
//! fault injection), [`error`](mod@error).

mod autocompact;
mod background;
mod check;
mod compaction;
mod db;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
mod hint;
mod index;
mod io;
mod read;
mod recovery;
mod repair;
mod segment;

pub use autocompact::CompactionHold;
pub use background::{HintJob, WRITEBACK_BYTES};
pub use check::{check, CheckReport, Finding};
pub use compaction::{CompactionJob, CompactionReport};
pub use db::{Store, SyncPoint};
pub use error::StoreError;
pub use index::Key;
#[doc(hidden)]
pub use io::{errno, faults, CrashPoint, FileOp};
pub use read::{View, ViewEntry};
pub use repair::{repair, DroppedRange, RepairReport};

use bytes::Bytes;

/// Default maximum value length: 1 MiB.
pub const DEFAULT_MAX_VALUE_LEN: usize = 1 << 20;
/// Default segment size before rolling to a new one: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Default dead bytes before automatic compaction: 16 MiB.
pub const DEFAULT_COMPACTION_MIN_DEAD_BYTES: u64 = 16 << 20;
/// Default dead/total ratio before automatic compaction.
pub const DEFAULT_COMPACTION_DEAD_RATIO: f64 = 0.5;
/// Default tombstone retention, in revisions.
pub const DEFAULT_TOMBSTONE_RETENTION: u64 = 100_000;

/// Tunables of a store. `Options::default()` gives the documented defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Longest key in bytes (default [`crate::key::DEFAULT_MAX_KEY_LEN`],
    /// at most [`format::FORMAT_MAX_KEY_LEN`]).
    pub max_key_len: usize,
    /// Largest value in bytes (default 1 MiB). Also bounds a batch record.
    pub max_value_len: usize,
    /// Roll to a new segment when the active one would grow past this.
    pub segment_size: u64,
    /// When writes reach the disk.
    pub fsync: FsyncPolicy,
    /// Automatic compaction needs at least this many dead bytes...
    pub compaction_min_dead_bytes: u64,
    /// ...and dead/total bytes at least this ratio.
    pub compaction_dead_ratio: f64,
    /// Compaction keeps tombstones newer than `revision - retention`, so
    /// `changes_since` can still report those deletes.
    pub tombstone_retention: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_key_len: crate::key::DEFAULT_MAX_KEY_LEN,
            max_value_len: DEFAULT_MAX_VALUE_LEN,
            segment_size: DEFAULT_SEGMENT_SIZE,
            fsync: FsyncPolicy::Always,
            compaction_min_dead_bytes: DEFAULT_COMPACTION_MIN_DEAD_BYTES,
            compaction_dead_ratio: DEFAULT_COMPACTION_DEAD_RATIO,
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
        }
    }
}

/// When written data is forced to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `commit` runs one `fdatasync` for every write since the last one:
    /// acknowledged writes survive a power cut.
    Always,
    /// `commit` does not sync; the owner calls `sync` when
    /// `next_sync_deadline` passes. A power cut loses at most this much.
    Interval(std::time::Duration),
    /// Never sync (the OS writes back eventually); survives `kill -9`,
    /// not a power cut.
    Never,
}

/// A compare-and-swap condition on put and delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// Unconditional.
    None,
    /// The key must not exist (tombstones count as absent).
    MustNotExist,
    /// The key must exist with exactly this revision.
    RevisionIs(u64),
}

impl Condition {
    /// Whether a key whose current revision is `current` (`None`: absent)
    /// passes; `ConditionFailed` carrying `current` when not.
    pub fn check(self, current: Option<u64>) -> Result<(), StoreError> {
        let ok = match self {
            Condition::None => true,
            Condition::MustNotExist => current.is_none(),
            Condition::RevisionIs(r) => current == Some(r),
        };
        if ok {
            Ok(())
        } else {
            Err(StoreError::ConditionFailed { current })
        }
    }
}

/// A stored value and the revision of its last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value bytes.
    pub value: Bytes,
    /// Revision of the write that set it.
    pub revision: u64,
}

/// What a `delete_prefix` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixDeletion {
    /// Revision of the delete; `None` when nothing matched and nothing was written.
    pub revision: Option<u64>,
    /// The deleted keys, sorted.
    pub keys: Vec<Key>,
}

/// One change reported by `changes_since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key now holds this entry.
    Put {
        /// The key.
        key: String,
        /// Its current value and revision.
        entry: Entry,
    },
    /// The key was deleted at this revision.
    Delete {
        /// The key.
        key: String,
        /// Revision of the delete.
        revision: u64,
    },
}

impl Change {
    /// Revision of this change.
    pub fn revision(&self) -> u64 {
        match self {
            Change::Put { entry, .. } => entry.revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

/// Answer of `changes_since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// The revision is below the tombstone floor (deletes may be forgotten)
    /// or above the store's revision (a client of a wiped store): send a
    /// full snapshot instead.
    TooOld {
        /// The current tombstone floor.
        floor: u64,
    },
    /// Every change after the revision, sorted by revision ascending.
    Since(Vec<Change>),
}

/// One operation of an atomic multi-key [`Store::write_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp<'a> {
    /// Set a key.
    Put {
        /// The key.
        key: &'a str,
        /// The value.
        value: &'a [u8],
    },
    /// Delete a key (no error if absent).
    Delete {
        /// The key.
        key: &'a str,
    },
}

/// Counters and sizes, for monitoring and the compaction trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// Live keys.
    pub keys: u64,
    /// Tombstones held in the index.
    pub tombstones: u64,
    /// Bytes of the keys and values of live keys (what users stored).
    pub data_bytes: u64,
    /// Bytes a compaction would keep (records of live keys and tombstones).
    pub live_bytes: u64,
    /// Segment bytes a compaction would free.
    pub dead_bytes: u64,
    /// Free bytes on the data directory's filesystem (0 if unknown).
    pub free_bytes: u64,
    /// Bytes of every segment file.
    pub total_bytes: u64,
    /// Number of segment files.
    pub segments: u64,
    /// Revision of the last write.
    pub revision: u64,
    /// Tombstone floor: `changes_since` below it is too old.
    pub tombstone_floor: u64,
    /// fdatasync calls made.
    pub syncs: u64,
    /// Duration of the last fdatasync in microseconds.
    pub last_sync_micros: u64,
    /// Longest fdatasync in microseconds.
    pub max_sync_micros: u64,
    /// Compactions completed.
    pub compactions: u64,
    /// Why automatic compaction is on hold, if it is.
    pub compaction_hold: Option<CompactionHold>,
}
