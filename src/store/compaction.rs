//! Compaction: copy every live record (and every tombstone still within
//! the retention) into new segments, then remove the old ones.
//!
//! Crash safety, step by step (each step has a [`CrashPoint`] for tests):
//! 1. Trim the active segment's preallocated zeros and fsync it, so every
//!    input is durable and complete (it will no longer be the last segment).
//! 2. Write the output segments (and their hints) as `*.tmp` files, in key
//!    order, each record keeping its revision. A crash here leaves only temp
//!    files, removed at the next open.
//! 3. fsync the outputs, rename them into place, fsync the directory. The
//!    outputs get ids above every input, and replay keeps the highest
//!    revision per key, so old and new segments side by side (a crash
//!    between renames) give exactly the same state.
//! 4. Create a new, empty active segment (its header carries the revision
//!    and the raised tombstone floor, so neither is ever lost).
//! 5. Remove the old segments oldest first, then fsync the directory. Oldest
//!    first matters: a delete always lives in a segment at or after the put
//!    it deletes, so a crash part-way can never keep a dropped put while
//!    losing the tombstone (or newer put) that hid it.
//!
//! The store is single-threaded, so no write can happen "meanwhile": the
//! outputs hold the current value of every key at the time of compaction.

use std::fs::OpenOptions;

use super::db::Store;
use super::error::StoreError;
use super::format::{encode_record, new_salt, Kind, SegmentHeader, HEADER_LEN, R_KEY};
use super::hint;
use super::index::{Loc, Slot};
use super::io::{self, crash_point, CrashPoint};
use super::segment::{hint_path, segment_path, temp_path, Active, Sealed};

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    /// Bytes of all segment files before.
    pub bytes_before: u64,
    /// Bytes of all segment files after.
    pub bytes_after: u64,
    /// Segment files before.
    pub segments_before: u64,
    /// Segment files after (outputs plus the new active segment).
    pub segments_after: u64,
    /// Live records copied (one per live key).
    pub records_copied: u64,
    /// Tombstones copied (newer than the retention).
    pub tombstones_kept: u64,
    /// Tombstones dropped (at or below `revision - tombstone_retention`).
    pub tombstones_dropped: u64,
    /// The tombstone floor after compaction.
    pub tombstone_floor: u64,
}

/// An output segment being filled in memory (at most one at a time, so a
/// compaction needs about one segment of memory, not the whole store).
struct Output {
    id: u64,
    header: SegmentHeader,
    bytes: Vec<u8>,
}

/// An output written to its temporary files (not yet fsynced or renamed).
struct Written {
    id: u64,
    header: SegmentHeader,
    file: std::fs::File,
    hint_file: std::fs::File,
    seg_tmp: std::path::PathBuf,
    hint_tmp: std::path::PathBuf,
}

/// Progress of a compaction, for error handling.
#[derive(PartialEq)]
enum Stage {
    /// Only temporary files exist: a failure leaves the store usable.
    Temps,
    /// Files were renamed: only a reopen knows the state for sure.
    Committed,
}

impl Store {
    /// Compacts now (see the module docs). On a failure before any output
    /// is renamed into place, temporary files are removed and the store
    /// stays usable (e.g. `DiskFull`); after that point a failure poisons it.
    pub fn compact(&mut self) -> Result<CompactionReport, StoreError> {
        self.check_writable()?;
        let mut stage = Stage::Temps;
        let mut temps = Vec::new();
        match self.compact_steps(&mut stage, &mut temps) {
            Ok(report) => Ok(report),
            Err(e) => {
                let simulated =
                    matches!(&e, StoreError::Io { source, .. } if io::is_simulated_crash(source));
                if simulated || stage == Stage::Committed {
                    // A simulated crash leaves the files as a crash would.
                    Err(self.poison(format!("compaction interrupted: {e}")))
                } else {
                    for t in temps {
                        let _ = std::fs::remove_file(t);
                    }
                    Err(e)
                }
            }
        }
    }

    fn compact_steps(
        &mut self,
        stage: &mut Stage,
        temps: &mut Vec<std::path::PathBuf>,
    ) -> Result<CompactionReport, StoreError> {
        // Step 1: the active segment becomes an input with lower ids than the
        // outputs, so it must be complete on disk: trim its preallocated
        // zeros and fsync.
        self.seal_active_tail()?;
        let bytes_before = self.total_bytes();
        let segments_before = self.sealed.len() as u64 + 1;
        let cutoff = self
            .revision
            .saturating_sub(self.options.tombstone_retention);
        let dropped_max = self
            .index
            .iter()
            .filter_map(|(_, s)| match s {
                Slot::Tomb { revision } if *revision <= cutoff => Some(*revision),
                _ => None,
            })
            .max();
        let floor = self.floor.max(dropped_max.unwrap_or(0));

        // Step 2: fill outputs one at a time; each full one goes to its temp file.
        let mut next_id = self.active.header.id + 1;
        let new_header = |id| SegmentHeader {
            id,
            salt: new_salt(),
            base_revision: self.revision,
            floor,
        };
        let mut files: Vec<Written> = Vec::new();
        let mut cur = Output {
            id: next_id,
            header: new_header(next_id),
            bytes: Vec::new(),
        };
        cur.bytes.extend_from_slice(&cur.header.encode());
        let mut new_locs: Vec<Option<Loc>> = Vec::with_capacity(self.index.live_keys() as usize);
        let (mut copied, mut kept) = (0u64, 0u64);
        for (key, slot) in self.index.iter() {
            let (kind, revision, value) = match *slot {
                Slot::Live { revision, loc } => (
                    Kind::Put,
                    revision,
                    self.read_entry(key, revision, loc)?.value,
                ),
                Slot::Tomb { revision } if revision > cutoff => {
                    (Kind::Delete, revision, bytes::Bytes::new())
                }
                Slot::Tomb { .. } => {
                    new_locs.push(None);
                    continue;
                }
            };
            let len = R_KEY + key.len() + value.len();
            if cur.bytes.len() > HEADER_LEN
                && (cur.bytes.len() + len) as u64 > self.options.segment_size
            {
                next_id += 1;
                let fresh = Output {
                    id: next_id,
                    header: new_header(next_id),
                    bytes: Vec::new(),
                };
                files.push(self.write_temp(std::mem::replace(&mut cur, fresh), temps)?);
                cur.bytes.extend_from_slice(&cur.header.encode());
            }
            let offset = cur.bytes.len() as u64;
            encode_record(&mut cur.bytes, cur.header.salt, revision, kind, key, &value);
            new_locs.push((kind == Kind::Put).then_some(Loc {
                segment: cur.id,
                offset,
                rec_len: len as u32,
                value_offset: (R_KEY + key.len()) as u32,
                value_len: value.len() as u32,
            }));
            if kind == Kind::Put {
                copied += 1;
            } else {
                kept += 1;
            }
        }
        if cur.bytes.len() > HEADER_LEN {
            files.push(self.write_temp(cur, temps)?);
        }
        let io_err = |what: &str, e| StoreError::io(format!("compaction: {what}"), e);
        crash_point(CrashPoint::BeforeOutputSync).map_err(|e| io_err("sync", e))?;
        // Step 3: make the outputs durable, then rename them into place.
        for w in &files {
            io::sync_data(&w.file).map_err(|e| io_err("fsync of output", e))?;
            io::sync_data(&w.hint_file).map_err(|e| io_err("fsync of hint", e))?;
        }
        crash_point(CrashPoint::BeforeRename).map_err(|e| io_err("rename", e))?;
        for (n, w) in files.iter().enumerate() {
            *stage = Stage::Committed;
            std::fs::rename(&w.seg_tmp, segment_path(&self.dir, w.id))
                .map_err(|e| io_err("rename", e))?;
            std::fs::rename(&w.hint_tmp, hint_path(&self.dir, w.id))
                .map_err(|e| io_err("rename", e))?;
            if n == 0 {
                crash_point(CrashPoint::AfterFirstRename).map_err(|e| io_err("rename", e))?;
            }
        }
        *stage = Stage::Committed;
        io::sync_dir(&self.dir).map_err(|e| io_err("directory fsync", e))?;
        crash_point(CrashPoint::BeforeNewActive).map_err(|e| io_err("new segment", e))?;
        // Step 4: the new active segment, after every output.
        let active_header = SegmentHeader {
            id: next_id + 1,
            salt: new_salt(),
            base_revision: self.revision,
            floor,
        };
        let new_active = Active::create(&self.dir, active_header)?;
        crash_point(CrashPoint::BeforeRemove).map_err(|e| io_err("remove", e))?;
        // Step 5: remove the inputs, oldest first.
        let mut inputs: Vec<u64> = self.sealed.keys().copied().collect();
        inputs.push(self.active.header.id);
        for (n, id) in inputs.iter().enumerate() {
            let path = segment_path(&self.dir, *id);
            std::fs::remove_file(&path).map_err(|e| io_err("remove", e))?;
            let _ = std::fs::remove_file(hint_path(&self.dir, *id));
            if n == 0 {
                crash_point(CrashPoint::AfterFirstRemove).map_err(|e| io_err("remove", e))?;
            }
        }
        io::sync_dir(&self.dir).map_err(|e| io_err("directory fsync", e))?;

        // Switch the in-memory state over to the outputs.
        let mut sealed = std::collections::BTreeMap::new();
        for w in &files {
            let seg = Sealed::map(segment_path(&self.dir, w.id), &w.file, w.header)?;
            sealed.insert(w.id, seg);
        }
        self.index.relocate_in_order(new_locs);
        let (dropped, _) = self.index.drop_tombstones(cutoff);
        self.sealed = sealed;
        self.active = new_active;
        self.floor = floor;
        self.compactions += 1;
        Ok(CompactionReport {
            bytes_before,
            bytes_after: self.total_bytes(),
            segments_before,
            segments_after: self.sealed.len() as u64 + 1,
            records_copied: copied,
            tombstones_kept: kept,
            tombstones_dropped: dropped,
            tombstone_floor: floor,
        })
    }

    /// Writes a filled output and its hint to temporary files.
    fn write_temp(
        &self,
        out: Output,
        temps: &mut Vec<std::path::PathBuf>,
    ) -> Result<Written, StoreError> {
        let seg_tmp = temp_path(&segment_path(&self.dir, out.id));
        let hint_tmp = temp_path(&hint_path(&self.dir, out.id));
        let ctx = || format!("writing compaction output {}", seg_tmp.display());
        temps.push(seg_tmp.clone());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&seg_tmp)
            .map_err(|e| StoreError::io(ctx(), e))?;
        io::write_at(&file, &out.bytes, 0).map_err(|e| StoreError::io(ctx(), e))?;
        temps.push(hint_tmp.clone());
        let hint_bytes = hint::build(out.id, out.header.salt, &out.bytes, self.max_record_len);
        let hint_file = std::fs::File::create(&hint_tmp).map_err(|e| StoreError::io(ctx(), e))?;
        io::write_at(&hint_file, &hint_bytes, 0).map_err(|e| StoreError::io(ctx(), e))?;
        Ok(Written {
            id: out.id,
            header: out.header,
            file,
            hint_file,
            seg_tmp,
            hint_tmp,
        })
    }
}
