//! Compaction: copy every live record (and every tombstone still within
//! the retention) into new segments, then remove the old ones.
//!
//! Crash safety, step by step (each step has a [`CrashPoint`] for tests):
//! 1. Trim the active segment's preallocated zeros and fsync it, so every
//!    input is durable and complete (it will no longer be the last segment).
//! 2. Write the output segments (and their hints) as `*.tmp` files, in key
//!    order, each record keeping its revision, and fsync them. A crash here
//!    leaves only temp files, removed at the next open.
//! 3. Create the new, empty active segment, with an id above every output
//!    (its header carries the revision and the raised tombstone floor, so
//!    neither is ever lost). A crash now leaves the inputs, temp files and
//!    an empty last segment: the state before compaction.
//! 4. Rename the outputs into place, fsync the directory. Outputs have ids
//!    above every input, and replay keeps the highest revision per key, so
//!    old and new segments side by side (a crash between renames) give
//!    exactly the same state.
//! 5. Switch over in memory, then remove the old segments oldest first and
//!    fsync the directory. Oldest first matters: a delete always lives in a
//!    segment at or after the put it deletes, so stopping part-way (a crash,
//!    or a failed removal) can never keep a dropped put while losing the
//!    tombstone (or newer put) that hid it.
//!
//! Until step 5 nothing on disk is needed by the store, so a failure in
//! steps 2 to 4 (a full disk, no descriptor left) is rolled back: outputs
//! and the new active segment are removed and the store goes on as before.
//! Only a failed rollback, or a failed fsync, poisons the store. A failed
//! removal in step 5 keeps the remaining old segments as (dead) sealed
//! segments, which the next compaction removes.
//!
//! The store is single-threaded, so no write can happen "meanwhile": the
//! outputs hold the current value of every key at the time of compaction.

use super::db::Store;
use super::error::StoreError;
use super::format::{encode_record, new_salt, Kind, SegmentHeader, HEADER_LEN, R_KEY};
use super::hint;
use super::index::{Index, Loc, Slot};
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

/// Files a compaction has made so far, removed again if it fails before
/// the switch-over.
#[derive(Default)]
struct Made {
    /// Temporary and renamed output files (segments and hints).
    files: Vec<std::path::PathBuf>,
    /// Set once the in-memory state uses the outputs: no rollback after.
    switched: bool,
}

impl Store {
    /// Compacts now (see the module docs). A failure before the switch-over
    /// (e.g. `DiskFull`, `OutOfResources`) removes every file the
    /// compaction made and leaves the store usable and unchanged; a failed
    /// fsync, or a rollback that fails too, poisons it.
    pub fn compact(&mut self) -> Result<CompactionReport, StoreError> {
        self.check_writable()?;
        let mut made = Made::default();
        match self.compact_steps(&mut made) {
            Ok(report) => Ok(report),
            Err(e) => {
                let simulated =
                    matches!(&e, StoreError::Io { source, .. } if io::is_simulated_crash(source));
                if matches!(e, StoreError::Poisoned { .. }) {
                    return Err(e);
                }
                if simulated {
                    // A simulated crash leaves the files as a crash would.
                    return Err(self.poison(format!("compaction interrupted: {e}")));
                }
                if made.switched {
                    return Err(e);
                }
                let mut undone = true;
                for path in made.files.iter().rev() {
                    match io::remove_file(path) {
                        Ok(()) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                        Err(_) => undone = false,
                    }
                }
                undone &= io::sync_dir(&self.dir).is_ok();
                if !undone {
                    return Err(self.poison(format!(
                        "compaction failed ({e}) and its files could not be removed"
                    )));
                }
                Err(e)
            }
        }
    }

    fn compact_steps(&mut self, made: &mut Made) -> Result<CompactionReport, StoreError> {
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
        // The index after the switch-over, built alongside (the old one
        // stays in use until then).
        let mut new_index = Index::default();
        let (mut copied, mut kept) = (0u64, 0u64);
        for (key, slot) in self.index.iter() {
            let (kind, revision, value) = match *slot {
                Slot::Live { revision, loc } => (
                    Kind::Put,
                    revision,
                    self.source().read_entry(key, revision, loc)?.value,
                ),
                Slot::Tomb { revision } if revision > cutoff => {
                    (Kind::Delete, revision, bytes::Bytes::new())
                }
                Slot::Tomb { .. } => continue,
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
                files.push(self.write_temp(std::mem::replace(&mut cur, fresh), made)?);
                cur.bytes.extend_from_slice(&cur.header.encode());
            }
            let offset = cur.bytes.len() as u64;
            encode_record(&mut cur.bytes, cur.header.salt, revision, kind, key, &value);
            let new_slot = if kind == Kind::Put {
                copied += 1;
                let loc = Loc {
                    segment: cur.id,
                    offset,
                    rec_len: len as u32,
                    value_offset: (R_KEY + key.len()) as u32,
                    value_len: value.len() as u32,
                };
                Slot::Live { revision, loc }
            } else {
                kept += 1;
                Slot::Tomb { revision }
            };
            new_index.push_sorted(key.clone(), new_slot);
        }
        if cur.bytes.len() > HEADER_LEN {
            files.push(self.write_temp(cur, made)?);
        }
        let io_err = |what: &str, e| StoreError::io(format!("compaction: {what}"), e);
        crash_point(CrashPoint::BeforeOutputSync).map_err(|e| io_err("sync", e))?;
        for w in &files {
            // A failed fsync of an output loses nothing (the inputs are
            // intact), but the same rule as everywhere holds: never carry on.
            if let Err(e) = io::sync_data(&w.file).and_then(|_| io::sync_data(&w.hint_file)) {
                return Err(self.poison(format!("compaction: fsync of an output failed: {e}")));
            }
        }
        crash_point(CrashPoint::BeforeNewActive).map_err(|e| io_err("new segment", e))?;
        // Step 3: the new active segment, after every output.
        let active_header = SegmentHeader {
            id: next_id + 1,
            salt: new_salt(),
            base_revision: self.revision,
            floor,
        };
        let new_active = Active::create(&self.dir, active_header)?;
        made.files.push(new_active.path.clone());
        crash_point(CrashPoint::BeforeRename).map_err(|e| io_err("rename", e))?;
        // Step 4: rename the outputs into place.
        for (n, w) in files.iter().enumerate() {
            let (seg, hint) = (segment_path(&self.dir, w.id), hint_path(&self.dir, w.id));
            io::rename(&w.seg_tmp, &seg).map_err(|e| io_err("rename", e))?;
            made.files.push(seg);
            io::rename(&w.hint_tmp, &hint).map_err(|e| io_err("rename", e))?;
            made.files.push(hint);
            if n == 0 {
                crash_point(CrashPoint::AfterFirstRename).map_err(|e| io_err("rename", e))?;
            }
        }
        io::sync_dir(&self.dir).map_err(|e| io_err("directory fsync", e))?;
        let mut sealed = std::collections::BTreeMap::new();
        for w in &files {
            let seg = Sealed::map(segment_path(&self.dir, w.id), &w.file, w.header)?;
            sealed.insert(w.id, std::sync::Arc::new(seg));
        }
        crash_point(CrashPoint::BeforeRemove).map_err(|e| io_err("remove", e))?;

        // Step 5: switch the in-memory state over to the outputs...
        made.switched = true;
        let mut inputs = std::mem::replace(&mut self.sealed, sealed);
        let old_active = std::mem::replace(&mut self.active, new_active);
        let dropped = self.index.tombstones() - new_index.tombstones();
        self.index = new_index;
        self.floor = floor;
        self.compactions += 1;
        // ...then remove the inputs, oldest first, stopping at the first
        // failure: what remains is a suffix of old segments, kept (and
        // counted as dead bytes) until the next compaction removes it.
        let mut ids: Vec<u64> = inputs.keys().copied().collect();
        ids.push(old_active.header.id);
        let mut first = true;
        for id in ids {
            let path = segment_path(&self.dir, id);
            if let Err(e) = io::remove_file(&path) {
                tracing::warn!(
                    "compaction: could not remove {}: {e}; kept until the next compaction",
                    path.display()
                );
                for (id, seg) in inputs.split_off(&id) {
                    self.sealed.insert(id, seg);
                }
                if id == old_active.header.id {
                    match old_active.seal() {
                        Ok(seg) => {
                            self.sealed.insert(id, std::sync::Arc::new(seg));
                        }
                        Err(e) => {
                            return Err(self.poison(format!(
                                "compaction: cannot keep {}: {e}",
                                path.display()
                            )))
                        }
                    }
                }
                break;
            }
            let _ = io::remove_file(&hint_path(&self.dir, id));
            if first {
                first = false;
                crash_point(CrashPoint::AfterFirstRemove).map_err(|e| io_err("remove", e))?;
            }
        }
        if let Err(e) = io::sync_dir(&self.dir) {
            tracing::warn!("compaction: directory fsync after removals failed: {e}");
        }
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
    fn write_temp(&self, out: Output, made: &mut Made) -> Result<Written, StoreError> {
        let seg_tmp = temp_path(&segment_path(&self.dir, out.id));
        let hint_tmp = temp_path(&hint_path(&self.dir, out.id));
        let ctx = || format!("writing compaction output {}", seg_tmp.display());
        made.files.push(seg_tmp.clone());
        let file = io::create_truncate(&seg_tmp).map_err(|e| StoreError::io(ctx(), e))?;
        io::write_at(&file, &out.bytes, 0).map_err(|e| StoreError::io(ctx(), e))?;
        made.files.push(hint_tmp.clone());
        let hint_bytes = hint::build(out.id, out.header.salt, &out.bytes, self.max_record_len);
        let hint_file = io::create_truncate(&hint_tmp).map_err(|e| StoreError::io(ctx(), e))?;
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
