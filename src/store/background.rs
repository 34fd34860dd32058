//! Work a store hands to other threads so that writers never wait for it:
//! hint files of sealed segments, and writeback of the active segment
//! ahead of the fdatasync that seals it.
//!
//! Both exist for the stall bound: sealing a full 64 MiB segment used to
//! build its hint (reading every byte) and fdatasync tens of megabytes
//! under the engine's write lock, which stopped every reader and writer
//! for 100 ms and more. A store used directly (tests, tools) does both
//! inline, as before; the engine asks for them to be deferred.

use std::path::PathBuf;
use std::sync::Arc;

use super::db::Store;
use super::hint;
use super::segment::{hint_path, Sealed};
use super::FsyncPolicy;

/// Unsynced bytes in the active segment after which a background
/// fdatasync is due (policies other than `always`). It bounds what the
/// fdatasync at a segment's seal, which holds the store, has to write.
pub const WRITEBACK_BYTES: u64 = 1 << 20;

/// A sealed segment whose hint file is still to be written.
pub struct HintJob {
    dir: PathBuf,
    segment: Arc<Sealed>,
    max_record_len: usize,
}

impl HintJob {
    /// The segment's id.
    pub fn id(&self) -> u64 {
        self.segment.header.id
    }

    /// Builds and writes the hint (reads the whole segment; no store
    /// needed). Hand the job back with [`Store::hint_written`] after.
    pub fn write(&self) -> std::io::Result<()> {
        let header = &self.segment.header;
        let bytes = hint::build(
            header.id,
            header.salt,
            self.segment.bytes(),
            self.max_record_len,
        );
        // Building read the whole segment: give its pages back.
        self.segment.release_pages();
        hint::write(&self.dir, header.id, &bytes)
    }
}

impl Store {
    /// From now on, sealing a segment queues its hint as a [`HintJob`]
    /// (taken with [`Store::take_hint_jobs`]) instead of writing it.
    pub fn defer_hints(&mut self) {
        self.defer_hints = true;
    }

    /// Queues a hint for `segment`, or writes it now unless deferred.
    pub(super) fn hint_due(&mut self, segment: Arc<Sealed>) {
        let job = HintJob {
            dir: self.dir.clone(),
            segment,
            max_record_len: self.max_record_len,
        };
        if self.defer_hints {
            self.hint_jobs.push(job);
        } else if let Err(e) = job.write() {
            let id = job.id();
            tracing::warn!("could not write hint file for segment {id}: {e} (open will scan it)");
        }
    }

    /// True if sealed segments wait for their hints.
    pub fn has_hint_jobs(&self) -> bool {
        !self.hint_jobs.is_empty()
    }

    /// The hints waiting to be written.
    pub fn take_hint_jobs(&mut self) -> Vec<HintJob> {
        std::mem::take(&mut self.hint_jobs)
    }

    /// After [`HintJob::write`]: a compaction may have removed the segment
    /// meanwhile, and then the hint goes too (open would remove it anyway).
    pub fn hint_written(&mut self, job: HintJob, outcome: std::io::Result<()>) {
        let id = job.id();
        if let Err(e) = outcome {
            tracing::warn!("could not write hint file for segment {id}: {e} (open will scan it)");
        }
        if !self.sealed.contains_key(&id) {
            let _ = super::io::remove_file(&hint_path(&self.dir, id));
        }
    }

    /// True when enough of the active segment is unsynced that a
    /// background fdatasync ([`Store::sync_point`]) should run, so that the
    /// one at its seal stays short.
    pub fn writeback_due(&self) -> bool {
        self.options.fsync != FsyncPolicy::Always
            && self.active.written.saturating_sub(self.synced_len) >= WRITEBACK_BYTES
    }
}
