//! When compaction runs by itself: the thresholds, the free-space check,
//! and the hold that keeps a compaction that cannot succeed from being
//! retried at every commit.
//!
//! The rules (see `docs/storage.md`, "Compaction"):
//! - Due when dead bytes (segment bytes a compaction would not keep) reach
//!   both a minimum and `compaction_dead_ratio` of all segment bytes. The
//!   ratio makes the trigger scale with the store: a compaction never
//!   rewrites more live bytes than it frees. The minimum is
//!   `compaction_min_dead_bytes`, lowered to a quarter of the free space
//!   (but not below 64 KiB) on a filesystem with little room, so a small
//!   disk compacts long before it is full.
//! - Also due, at any size, when a write finds the disk full and there is
//!   something to reclaim: on a small disk, overwriting one key must not
//!   fill it for good.
//! - Before starting, the filesystem must have room for the live data
//!   (compaction writes its output before removing its input). If not, or
//!   if the attempt fails, compaction goes on hold: the reason is logged
//!   once and shown in STATS, and it is tried again only once something
//!   changed (the free space now fits, dead bytes grew by another
//!   `compaction_min_dead_bytes`, or an operator asks with `compact`).

use super::db::Store;
use super::error::StoreError;
use super::format::HEADER_LEN;

/// Room needed beyond the live data and its hints when compacting: the new
/// segments' headers and filesystem metadata.
const COMPACTION_HEADROOM: u64 = 64 << 10;

/// The lowest the free-space-scaled minimum of dead bytes goes.
const SMALLEST_MIN_DEAD: u64 = 64 << 10;

/// The free space is measured again after this much was written...
const FREE_RECHECK_BYTES: u64 = 64 << 10;
/// ...or this long after the last measurement.
const FREE_RECHECK_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Why automatic compaction is on hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactionHold {
    /// The filesystem has less free space than compaction needs.
    NoRoom {
        /// Bytes compaction needs free.
        needed: u64,
        /// Bytes free when it was checked.
        free: u64,
    },
    /// The last attempt failed (an I/O error, no descriptor or memory).
    Failed(String),
}

impl CompactionHold {
    /// The number STATS reports for this hold (`compaction.blocked`):
    /// 1 = not enough free space, 2 = the last attempt failed.
    pub fn code(&self) -> u64 {
        match self {
            CompactionHold::NoRoom { .. } => 1,
            CompactionHold::Failed(_) => 2,
        }
    }
}

impl std::fmt::Display for CompactionHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompactionHold::NoRoom { needed, free } => write!(
                f,
                "not enough free space to compact: needs about {needed} bytes, {free} free"
            ),
            CompactionHold::Failed(why) => write!(f, "the last compaction failed: {why}"),
        }
    }
}

/// The hold and what it was decided on.
#[derive(Debug, Clone)]
pub(super) struct Hold {
    /// Why.
    pub reason: CompactionHold,
    /// Dead bytes when the hold began.
    pub dead_at: u64,
}

impl Store {
    /// Segment bytes a compaction would not keep.
    pub(super) fn dead_bytes(&self) -> u64 {
        let live = self.index.live_bytes() + HEADER_LEN as u64 * self.segment_count();
        self.total_bytes().saturating_sub(live)
    }

    /// Bytes free on the data directory's filesystem for this process,
    /// measured now (`None` if the filesystem does not say).
    pub fn free_bytes(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(&self.dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Free bytes as last measured, measuring again only after enough was
    /// written or enough time passed (a `statvfs` per commit would cost a
    /// syscall on every write).
    fn recent_free_bytes(&mut self) -> Option<u64> {
        let total = self.total_bytes();
        let fresh = self.free_seen.as_ref().is_some_and(|seen| {
            total.abs_diff(seen.total_bytes) < FREE_RECHECK_BYTES
                && seen.at.elapsed() < FREE_RECHECK_AFTER
        });
        if !fresh {
            self.free_seen = self.free_bytes().map(|free| super::db::FreeSeen {
                free,
                total_bytes: total,
                at: std::time::Instant::now(),
            });
        }
        self.free_seen.as_ref().map(|seen| seen.free)
    }

    /// Free space a compaction needs now: the live records, their hint
    /// entries (at most a quarter of the records' size), and headroom.
    fn compaction_needs(&self) -> u64 {
        let live = self.index.live_bytes();
        live + live / 4 + COMPACTION_HEADROOM
    }

    /// True when dead bytes pass both automatic compaction thresholds.
    fn thresholds_passed(&mut self, dead: u64) -> bool {
        let total = self.total_bytes();
        if total == 0 || (dead as f64 / total as f64) < self.options.compaction_dead_ratio {
            return false;
        }
        if dead >= self.options.compaction_min_dead_bytes {
            return true;
        }
        let scaled = self
            .recent_free_bytes()
            .map_or(u64::MAX, |free| (free / 4).max(SMALLEST_MIN_DEAD));
        dead >= scaled
    }

    /// Whether a hold still applies: true until something changed that
    /// could make the next attempt succeed.
    fn still_held(&mut self, dead: u64) -> bool {
        let Some(hold) = &self.compaction_hold else {
            return false;
        };
        if dead >= hold.dead_at + self.options.compaction_min_dead_bytes.max(1) {
            return false;
        }
        match hold.reason {
            CompactionHold::NoRoom { .. } => {
                let needs = self.compaction_needs();
                self.recent_free_bytes().is_some_and(|free| free < needs)
            }
            CompactionHold::Failed(_) => true,
        }
    }

    /// Puts automatic compaction on hold, logging the reason once.
    fn hold(&mut self, reason: CompactionHold, dead: u64) {
        let changed = self
            .compaction_hold
            .as_ref()
            .is_none_or(|h| std::mem::discriminant(&h.reason) != std::mem::discriminant(&reason));
        if changed {
            tracing::warn!(dir = %self.dir.display(), "automatic compaction on hold: {reason}");
        }
        self.compaction_hold = Some(Hold {
            reason,
            dead_at: dead,
        });
    }

    /// Whether an automatic compaction should start now: one is due
    /// (thresholds passed, or `disk_full` with something to reclaim), none
    /// is running, and no hold applies.
    fn compaction_due(&mut self, disk_full: bool) -> bool {
        if self.compacting || self.poisoned.is_some() {
            return false;
        }
        let dead = self.dead_bytes();
        let due = self.thresholds_passed(dead) || (disk_full && dead > 0);
        due && !self.still_held(dead)
    }

    /// An automatic compaction could not run or failed: on hold until
    /// something changes (a poisoned store needs no hold).
    pub(super) fn compaction_failed(&mut self, e: &StoreError) {
        let dead = self.dead_bytes();
        match e {
            StoreError::NoRoomToCompact { needed, free } => {
                let (needed, free) = (*needed, *free);
                self.hold(CompactionHold::NoRoom { needed, free }, dead);
            }
            e if self.poisoned.is_none() => self.hold(CompactionHold::Failed(e.to_string()), dead),
            _ => {}
        }
    }

    /// A compaction finished: automatic compaction is no longer on hold.
    pub(super) fn compaction_succeeded(&mut self) {
        if self.compaction_hold.take().is_some() {
            tracing::info!(dir = %self.dir.display(), "automatic compaction resumed");
        }
    }

    /// Runs an automatic compaction now, start to finish, if one is due and
    /// fits on the disk (a write that found the disk full). Returns true if
    /// it compacted.
    pub(super) fn maybe_compact(&mut self, disk_full: bool) -> bool {
        if !self.compaction_due(disk_full) {
            return false;
        }
        match self.compact_if_room() {
            Ok(_) => true,
            Err(e) => {
                self.compaction_failed(&e);
                false
            }
        }
    }

    /// Starts an automatic compaction to run in the background, if one is
    /// due and fits on the disk (see [`Store::start_compaction`]).
    pub fn start_compaction_if_due(&mut self) -> Option<super::CompactionJob> {
        if !self.compaction_due(false) {
            return None;
        }
        match self.start_compaction_if_room() {
            Ok(job) => Some(job),
            Err(e) => {
                self.compaction_failed(&e);
                None
            }
        }
    }

    /// Starts a compaction if the filesystem has room for it (what an
    /// operator's `compact` request runs).
    pub fn start_compaction_if_room(&mut self) -> Result<super::CompactionJob, StoreError> {
        self.check_writable()?;
        let needed = self.compaction_needs();
        if let Some(free) = self.free_bytes().filter(|&free| free < needed) {
            return Err(StoreError::NoRoomToCompact { needed, free });
        }
        self.start_compaction()
    }

    /// A background job that failed: the store forgets it (removing its
    /// files) and automatic compaction goes on hold. Returns the error to
    /// report (the poisoning one if the failure poisoned the store).
    pub fn compaction_job_failed(
        &mut self,
        job: super::CompactionJob,
        e: StoreError,
    ) -> StoreError {
        let e = self.abandon_compaction(job, &e).unwrap_or(e);
        self.compaction_failed(&e);
        e
    }

    /// Compacts now, start to finish, if the filesystem has room for it.
    pub fn compact_if_room(&mut self) -> Result<super::CompactionReport, StoreError> {
        self.check_writable()?;
        let needed = self.compaction_needs();
        if let Some(free) = self.free_bytes().filter(|&free| free < needed) {
            return Err(StoreError::NoRoomToCompact { needed, free });
        }
        self.compact()
    }

    /// Why automatic compaction is on hold, if it is.
    pub fn compaction_hold(&self) -> Option<&CompactionHold> {
        self.compaction_hold.as_ref().map(|h| &h.reason)
    }
}
