//! Compaction: copy every live record (and every tombstone still within
//! the retention) into new segments, then remove the old ones, without
//! holding writers or readers back for more than a moment.
//!
//! A [`CompactionJob`] goes through three stages:
//! 1. **Start** ([`Store::start_compaction`], under the store, quick): seal
//!    the active segment and start a new one whose id leaves room below it
//!    for the outputs; take an O(1) snapshot of the index and the list of
//!    input segments.
//! 2. **Run** ([`CompactionJob::run`], without the store, the long part):
//!    find the tombstones old enough to drop and the tombstone floor that
//!    raises (recorded in every output's header, where open finds it; an
//!    empty output carries it if nothing is copied), write the outputs as
//!    `*.tmp` files in key order, each record keeping its revision, fsync
//!    them, rename them into place, fsync the
//!    directory. Writes go on meanwhile, into the new active segment.
//! 3. **Install** ([`Store::install_compaction`], under the store, in
//!    chunks): point each key still as it was at the snapshot at its copy;
//!    keys written since keep their newer record (their copy is dead
//!    space). Once every key is done, the inputs are removed, oldest first.
//!
//! Crash safety, step by step (each step has a [`CrashPoint`] for tests):
//! - After the start, the state on disk is a plain roll.
//! - A crash before the outputs are renamed leaves only temp files, which
//!   the next open removes.
//! - Renamed outputs beside their inputs give exactly the same state:
//!   replay keeps the highest revision per key, and outputs hold copies.
//!   Outputs have ids between the inputs and the active segment, so the
//!   active segment stays the last one (the only one that may have a torn
//!   tail).
//! - Inputs are removed oldest first: a delete always lives in a segment at
//!   or after the put it deletes, so stopping part-way (a crash, or a
//!   failed removal) can never keep a dropped put while losing the
//!   tombstone (or newer put) that hid it.
//!
//! A failure while running (a full disk, no descriptor left) removes every
//! file the job made and leaves the store as it was; only a failed fsync,
//! or a rollback that fails too, poisons the store. A failed removal keeps
//! the remaining inputs as (dead) sealed segments, which the next
//! compaction removes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::db::Store;
use super::error::StoreError;
use super::format::{encode_record, new_salt, Kind, SegmentHeader, HEADER_LEN, R_KEY};
use super::hint;
use super::index::{Index, Key, Loc, Slot};
use super::io::{self, crash_point, CrashPoint};
use super::read::Source;
use super::segment::{hint_path, segment_path, temp_path, Sealed};

/// Keys relocated per call of [`Store::install_compaction`]: about two
/// milliseconds of holding the store on a slow machine.
pub const INSTALL_CHUNK: usize = 2048;

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    /// Bytes of all segment files before.
    pub bytes_before: u64,
    /// Bytes of all segment files after.
    pub bytes_after: u64,
    /// Segment files before.
    pub segments_before: u64,
    /// Segment files after (outputs plus the active segments).
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

/// Where each record goes: output segments filled in key order, a new one
/// when the next record would pass the segment size. Running it twice over
/// the same snapshot gives the same places, so the install recomputes them
/// instead of keeping a list.
#[derive(Debug, Clone)]
struct Layout {
    segment_size: u64,
    /// Index of the output being filled.
    output: u64,
    /// Bytes of it so far.
    len: u64,
}

impl Layout {
    fn new(segment_size: u64) -> Layout {
        Layout {
            segment_size,
            output: 0,
            len: HEADER_LEN as u64,
        }
    }

    /// The output and offset of the next record of `len` bytes.
    fn place(&mut self, len: u64) -> (u64, u64) {
        if self.len > HEADER_LEN as u64 && self.len + len > self.segment_size {
            self.output += 1;
            self.len = HEADER_LEN as u64;
        }
        let at = self.len;
        self.len += len;
        (self.output, at)
    }
}

/// What becomes of one slot of the snapshot.
enum Plan {
    /// Copied as this record kind, `len` bytes.
    Copy { kind: Kind, revision: u64, len: u64 },
    /// A tombstone past the retention: dropped.
    Drop,
}

fn plan(key: &str, slot: &Slot, cutoff: u64) -> Plan {
    match *slot {
        Slot::Live { revision, loc } => Plan::Copy {
            kind: Kind::Put,
            revision,
            len: (R_KEY + key.len()) as u64 + u64::from(loc.value_len),
        },
        Slot::Tomb { revision } if revision > cutoff => Plan::Copy {
            kind: Kind::Delete,
            revision,
            len: (R_KEY + key.len()) as u64,
        },
        Slot::Tomb { .. } => Plan::Drop,
    }
}

/// An output written to its temporary files (not yet fsynced or renamed).
struct Written {
    id: u64,
    header: SegmentHeader,
    file: std::fs::File,
    hint_file: std::fs::File,
    seg_tmp: PathBuf,
    hint_tmp: PathBuf,
}

/// A compaction in progress (see the module docs).
pub struct CompactionJob {
    dir: PathBuf,
    /// The index at the start.
    snapshot: Index,
    /// Every sealed segment at the start: the inputs.
    inputs: BTreeMap<u64, Arc<Sealed>>,
    /// Output `n` gets id `first_id + n`; ids up to `last_id` are free.
    first_id: u64,
    last_id: u64,
    base_revision: u64,
    cutoff: u64,
    floor: u64,
    segment_size: u64,
    max_record_len: usize,
    bytes_before: u64,
    segments_before: u64,
    /// Files made so far, removed again if the job fails before install.
    made: Vec<PathBuf>,
    /// Outputs, mapped, once the run succeeded.
    outputs: Vec<Arc<Sealed>>,
    /// Install progress: outputs added to the store, the last key done, and
    /// the layout up to it.
    installing: bool,
    done_through: Option<Key>,
    layout: Layout,
    copied: u64,
    kept: u64,
    dropped: u64,
    /// Set to stop a run early (shutdown).
    cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for CompactionJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactionJob")
            .field("inputs", &self.inputs.len())
            .field("outputs", &self.outputs.len())
            .field("first_id", &self.first_id)
            .finish()
    }
}

impl Store {
    /// Starts a compaction: seals the active segment, reserves ids for the
    /// outputs and snapshots the index (see the module docs). At most one
    /// runs at a time.
    pub fn start_compaction(&mut self) -> Result<CompactionJob, StoreError> {
        self.check_writable()?;
        if self.compacting {
            return Err(StoreError::CompactionRunning);
        }
        self.flush_batch()?;
        let cutoff = self
            .revision
            .saturating_sub(self.options.tombstone_retention);
        // One output per record at worst (each record bigger than half a
        // segment); ids are cheap, gaps in them are fine.
        let reserve = self.index.live_keys() + self.index.tombstones() + 1;
        let first_id = self.active.header.id + 1;
        let bytes_before = self.total_bytes();
        let segments_before = self.segment_count();
        // The floor is raised by the job (it scans the snapshot, not the
        // store) and recorded in its outputs' headers.
        self.roll_to(first_id + reserve, self.floor)?;
        let floor = self.floor;
        self.compacting = true;
        Ok(CompactionJob {
            dir: self.dir.clone(),
            snapshot: self.index.clone(),
            inputs: self.sealed.clone(),
            first_id,
            last_id: first_id + reserve - 1,
            base_revision: self.revision,
            cutoff,
            floor,
            segment_size: self.options.segment_size,
            max_record_len: self.max_record_len,
            bytes_before,
            segments_before,
            made: Vec::new(),
            outputs: Vec::new(),
            installing: false,
            done_through: None,
            layout: Layout::new(self.options.segment_size),
            copied: 0,
            kept: 0,
            dropped: 0,
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    /// True while a compaction job is started and not finished.
    pub fn is_compacting(&self) -> bool {
        self.compacting
    }

    /// A started job was dropped before it ran (it made no file).
    pub fn compaction_not_run(&mut self) {
        self.compacting = false;
    }

    /// Installs up to [`INSTALL_CHUNK`] keys of a job that ran; returns the
    /// report once every key is done and the inputs are removed.
    pub fn install_compaction(
        &mut self,
        job: &mut CompactionJob,
    ) -> Result<Option<CompactionReport>, StoreError> {
        if !job.installing {
            job.installing = true;
            // The outputs hold the raised floor; from now on a resume below
            // it gets a full snapshot (the dropped tombstones go below).
            self.floor = self.floor.max(job.floor);
            for out in &job.outputs {
                self.sealed.insert(out.header.id, out.clone());
            }
        }
        let mut n = 0;
        let mut last = None;
        for (key, slot) in job.snapshot.covered("", job.done_through.as_deref()) {
            if n == INSTALL_CHUNK {
                break;
            }
            n += 1;
            last = Some(key.clone());
            match plan(key, slot, job.cutoff) {
                Plan::Drop => {
                    self.index.forget(key, slot);
                    job.dropped += 1;
                }
                Plan::Copy {
                    kind,
                    revision,
                    len,
                } => {
                    let (output, offset) = job.layout.place(len);
                    let new = match *slot {
                        Slot::Live { loc, .. } => {
                            job.copied += 1;
                            Slot::Live {
                                revision,
                                loc: Loc {
                                    segment: job.first_id + output,
                                    offset,
                                    rec_len: len as u32,
                                    value_offset: (R_KEY + key.len()) as u32,
                                    value_len: loc.value_len,
                                },
                            }
                        }
                        Slot::Tomb { .. } => {
                            job.kept += 1;
                            debug_assert_eq!(kind, Kind::Delete);
                            Slot::Tomb { revision }
                        }
                    };
                    self.index.relocate(key, slot, new);
                }
            }
        }
        if n == INSTALL_CHUNK && last.is_some() {
            job.done_through = last;
            return Ok(None);
        }
        self.remove_inputs(job)?;
        self.compacting = false;
        self.compactions += 1;
        self.compaction_succeeded();
        Ok(Some(CompactionReport {
            bytes_before: job.bytes_before,
            bytes_after: self.total_bytes(),
            segments_before: job.segments_before,
            segments_after: self.segment_count(),
            records_copied: job.copied,
            tombstones_kept: job.kept,
            tombstones_dropped: job.dropped,
            tombstone_floor: job.floor,
        }))
    }

    /// A job that failed (or was given up) before its install: its files
    /// are removed and the store goes on as before (`None`). Returns the
    /// error that poisoned the store instead if the failure was a failed
    /// fsync or the files cannot be removed.
    pub fn abandon_compaction(
        &mut self,
        job: CompactionJob,
        why: &StoreError,
    ) -> Option<StoreError> {
        self.compacting = false;
        let simulated =
            matches!(why, StoreError::Io { source, .. } if io::is_simulated_crash(source));
        if simulated {
            // A simulated crash leaves the files as a crash would.
            return Some(self.poison(format!("compaction interrupted: {why}")));
        }
        if let StoreError::Poisoned { reason } = why {
            return Some(self.poison(reason.clone()));
        }
        let mut undone = true;
        for path in job.made.iter().rev() {
            match io::remove_file(path) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => undone = false,
            }
        }
        undone &= io::sync_dir(&self.dir).is_ok();
        if !undone {
            return Some(self.poison(format!(
                "compaction failed ({why}) and its files could not be removed"
            )));
        }
        None
    }

    /// Compacts now, start to finish, holding the store throughout (tests,
    /// tools, and a write that finds the disk full). A failure removes
    /// every file the compaction made and leaves the store usable and
    /// unchanged; a failed fsync, or a rollback that fails too, poisons it.
    pub fn compact(&mut self) -> Result<CompactionReport, StoreError> {
        let mut job = self.start_compaction()?;
        if let Err(e) = job.run() {
            return Err(self.abandon_compaction(job, &e).unwrap_or(e));
        }
        loop {
            if let Some(report) = self.install_compaction(&mut job)? {
                return Ok(report);
            }
        }
    }

    /// Removes the inputs oldest first, stopping at the first failure (what
    /// remains is a suffix of old segments, kept and counted as dead bytes
    /// until the next compaction removes it).
    fn remove_inputs(&mut self, job: &CompactionJob) -> Result<(), StoreError> {
        // A simulated crash stops here as a real one would: nothing more is
        // written by this store.
        if let Err(e) = crash_point(CrashPoint::BeforeRemove) {
            return Err(self.poison(format!("compaction interrupted: {e}")));
        }
        let mut first = true;
        for &id in job.inputs.keys() {
            let path = segment_path(&self.dir, id);
            if let Err(e) = io::remove_file(&path) {
                tracing::warn!(
                    "compaction: could not remove {}: {e}; kept until the next compaction",
                    path.display()
                );
                break;
            }
            self.sealed.remove(&id);
            let _ = io::remove_file(&hint_path(&self.dir, id));
            if std::mem::take(&mut first) {
                if let Err(e) = crash_point(CrashPoint::AfterFirstRemove) {
                    return Err(self.poison(format!("compaction interrupted: {e}")));
                }
            }
        }
        if let Err(e) = io::sync_dir(&self.dir) {
            tracing::warn!("compaction: directory fsync after removals failed: {e}");
        }
        Ok(())
    }
}

impl CompactionJob {
    /// A flag that stops [`CompactionJob::run`] early when set.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Writes, syncs and renames the outputs (stage 2 of the module docs),
    /// without the store. On failure, hand the job to
    /// [`Store::abandon_compaction`].
    pub fn run(&mut self) -> Result<(), StoreError> {
        let source = Source {
            dir: &self.dir,
            sealed: &self.inputs,
            active: None,
        };
        let made = &mut self.made;
        let write_temp = |made: &mut Vec<PathBuf>, id, header, bytes: Vec<u8>| {
            write_temp(&self.dir, made, id, header, &bytes, self.max_record_len)
        };
        // The floor rises to the newest tombstone this job drops.
        let dropped_max = self
            .snapshot
            .iter()
            .filter_map(|(_, s)| match s {
                Slot::Tomb { revision } if *revision <= self.cutoff => Some(*revision),
                _ => None,
            })
            .max();
        let floor_before = self.floor;
        self.floor = self.floor.max(dropped_max.unwrap_or(0));
        let mut layout = Layout::new(self.segment_size);
        let mut files: Vec<Written> = Vec::new();
        let mut cur: Option<(u64, SegmentHeader, Vec<u8>)> = None;
        for (n, (key, slot)) in self.snapshot.iter().enumerate() {
            if n % 4096 == 0 && self.cancel.load(Ordering::Relaxed) {
                return Err(StoreError::io(
                    "compaction".to_string(),
                    std::io::Error::other("stopped for shutdown"),
                ));
            }
            let Plan::Copy {
                kind,
                revision,
                len,
            } = plan(key, slot, self.cutoff)
            else {
                continue;
            };
            let (output, offset) = layout.place(len);
            if cur.as_ref().is_none_or(|(o, _, _)| *o != output) {
                if let Some((o, header, bytes)) = cur.take() {
                    files.push(write_temp(made, self.first_id + o, header, bytes)?);
                }
                let id = self.first_id + output;
                if id > self.last_id {
                    return Err(StoreError::io(
                        "compaction".to_string(),
                        std::io::Error::other("more outputs than ids reserved"),
                    ));
                }
                let header = SegmentHeader {
                    id,
                    salt: new_salt(),
                    base_revision: self.base_revision,
                    floor: self.floor,
                };
                let mut bytes = Vec::with_capacity(self.segment_size.min(64 << 20) as usize);
                bytes.extend_from_slice(&header.encode());
                cur = Some((output, header, bytes));
            }
            let (_, header, bytes) = cur.as_mut().expect("just set");
            debug_assert_eq!(bytes.len() as u64, offset);
            match *slot {
                Slot::Live { loc, .. } => source.with_value(key, revision, loc, |value| {
                    encode_record(bytes, header.salt, revision, kind, key, value)
                })?,
                Slot::Tomb { .. } => encode_record(bytes, header.salt, revision, kind, key, b""),
            }
        }
        if let Some((o, header, bytes)) = cur.take() {
            files.push(write_temp(made, self.first_id + o, header, bytes)?);
        }
        if files.is_empty() && self.floor > floor_before {
            // Nothing to copy, but tombstones dropped: an empty output
            // carries the raised floor, which open takes from the headers.
            let header = SegmentHeader {
                id: self.first_id,
                salt: new_salt(),
                base_revision: self.base_revision,
                floor: self.floor,
            };
            let bytes = header.encode().to_vec();
            files.push(write_temp(made, self.first_id, header, bytes)?);
        }
        let io_err = |what: &str, e| StoreError::io(format!("compaction: {what}"), e);
        crash_point(CrashPoint::BeforeOutputSync).map_err(|e| io_err("sync", e))?;
        for w in &files {
            // A failed fsync of an output loses nothing (the inputs are
            // intact), but the same rule as everywhere holds: never carry on.
            if let Err(e) = io::sync_data(&w.file).and_then(|_| io::sync_data(&w.hint_file)) {
                return Err(StoreError::Poisoned {
                    reason: format!("compaction: fsync of an output failed: {e}"),
                });
            }
        }
        crash_point(CrashPoint::BeforeRename).map_err(|e| io_err("rename", e))?;
        for (n, w) in files.iter().enumerate() {
            let (seg, hint) = (segment_path(&self.dir, w.id), hint_path(&self.dir, w.id));
            io::rename(&w.seg_tmp, &seg).map_err(|e| io_err("rename", e))?;
            made.push(seg);
            io::rename(&w.hint_tmp, &hint).map_err(|e| io_err("rename", e))?;
            made.push(hint);
            if n == 0 {
                crash_point(CrashPoint::AfterFirstRename).map_err(|e| io_err("rename", e))?;
            }
        }
        io::sync_dir(&self.dir).map_err(|e| io_err("directory fsync", e))?;
        for w in &files {
            let seg = Sealed::map(segment_path(&self.dir, w.id), &w.file, w.header)?;
            self.outputs.push(Arc::new(seg));
        }
        Ok(())
    }
}

/// Writes a filled output and its hint to temporary files.
fn write_temp(
    dir: &std::path::Path,
    made: &mut Vec<PathBuf>,
    id: u64,
    header: SegmentHeader,
    bytes: &[u8],
    max_record_len: usize,
) -> Result<Written, StoreError> {
    let seg_tmp = temp_path(&segment_path(dir, id));
    let hint_tmp = temp_path(&hint_path(dir, id));
    let ctx = || format!("writing compaction output {}", seg_tmp.display());
    made.push(seg_tmp.clone());
    let file = io::create_truncate(&seg_tmp).map_err(|e| StoreError::io(ctx(), e))?;
    io::write_at(&file, bytes, 0).map_err(|e| StoreError::io(ctx(), e))?;
    made.push(hint_tmp.clone());
    let hint_bytes = hint::build(id, header.salt, bytes, max_record_len);
    let hint_file = io::create_truncate(&hint_tmp).map_err(|e| StoreError::io(ctx(), e))?;
    io::write_at(&hint_file, &hint_bytes, 0).map_err(|e| StoreError::io(ctx(), e))?;
    Ok(Written {
        id,
        header,
        file,
        hint_file,
        seg_tmp,
        hint_tmp,
    })
}
