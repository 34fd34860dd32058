//! [`Store`]: open, the write path (append, then index), reads, group
//! commit and the fsync policy. Recovery and compaction live in their own
//! files and work on the same struct.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::key::{validate_key, validate_prefix};

use super::error::StoreError;
use super::format::{
    encode_batch_value, encode_record, new_salt, record_len, Kind, OpRef, SegmentHeader,
    BATCH_OP_HEADER_LEN, FORMAT_MAX_KEY_LEN, HEADER_LEN, LOCK_FILE, R_KEY,
};
use super::index::{Index, Loc, Slot};
use super::segment::{Active, Sealed};
use super::{io, recovery};
use super::{BatchOp, Condition, FsyncPolicy, Options, PrefixDeletion, StoreStats};

/// A durable, log-structured key-value store in one directory.
///
/// Owned by one thread. Writes are appended (not yet durable) and become
/// durable at [`Store::commit`] (policy `Always`) or [`Store::sync`].
/// Dropping the store does not sync: under `Interval` or `Never`, call
/// [`Store::sync`] at shutdown.
pub struct Store {
    /// The data directory.
    pub(super) dir: PathBuf,
    /// Tunables given at open.
    pub(super) options: Options,
    /// Holds the exclusive lock on `DIR/LOCK` for the life of the store.
    _lock: File,
    /// Sealed segments by id, each mapped read-only (shared with views).
    pub(super) sealed: BTreeMap<u64, Arc<Sealed>>,
    /// The segment being appended to.
    pub(super) active: Active,
    /// Every key in order.
    pub(super) index: Index,
    /// Revision of the last write.
    pub(super) revision: u64,
    /// `changes_since` below this revision is too old.
    pub(super) floor: u64,
    /// When the oldest write not yet fsynced was made.
    unsynced_since: Option<Instant>,
    /// Set after a failed fsync (or an interrupted compaction): the reason.
    pub(super) poisoned: Option<String>,
    /// fdatasync calls made.
    syncs: u64,
    /// Duration of the last fdatasync.
    last_sync_micros: u64,
    /// Longest fdatasync.
    max_sync_micros: u64,
    /// Compactions completed.
    pub(super) compactions: u64,
    /// Upper bound of a record's length, to reject damaged length fields.
    pub(super) max_record_len: usize,
    /// Encode buffer reused by every append (small records only).
    scratch: Vec<u8>,
    /// Revision covered by the last successful fdatasync.
    durable_revision: u64,
    /// Why automatic compaction is on hold, if it is.
    pub(super) compaction_hold: Option<super::autocompact::Hold>,
    /// The last measurement of the filesystem's free space.
    pub(super) free_seen: Option<FreeSeen>,
    /// Inside [`Store::begin_batch`]: records are buffered, not written.
    batching: bool,
    /// A compaction job was started and has not finished.
    pub(super) compacting: bool,
    /// Bytes of the active segment known to be on disk (fdatasynced).
    pub(super) synced_len: u64,
    /// Hints of sealed segments are queued, not written (the engine).
    pub(super) defer_hints: bool,
    /// Sealed segments waiting for their hint files.
    pub(super) hint_jobs: Vec<super::HintJob>,
}

/// The state to make durable with one fdatasync, taken from the store and
/// synced without it (so writers and readers go on meanwhile); the result
/// goes back through [`Store::synced`].
#[derive(Debug)]
pub struct SyncPoint {
    file: Arc<File>,
    path: PathBuf,
    /// The segment it syncs, and its written length when taken.
    segment: u64,
    len: u64,
    /// Every write up to this revision is in `file` or in a segment synced
    /// when it was sealed.
    pub revision: u64,
    taken: Instant,
}

impl SyncPoint {
    /// The fdatasync itself; returns how long it took.
    pub fn sync(&self) -> std::io::Result<std::time::Duration> {
        let started = Instant::now();
        io::sync_data(&self.file)?;
        Ok(started.elapsed())
    }
}

/// A measurement of the free space of the data directory's filesystem.
#[derive(Debug, Clone)]
pub(super) struct FreeSeen {
    /// Bytes free.
    pub free: u64,
    /// Segment bytes of the store when measured.
    pub total_bytes: u64,
    /// When measured.
    pub at: Instant,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("revision", &self.revision)
            .field("durable_revision", &self.durable_revision)
            .field("floor", &self.floor)
            .field("segments", &(self.sealed.len() + 1))
            .field("keys", &self.index.live_keys())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

/// Largest record the options allow (a batch is bounded like a value).
pub(super) fn max_record_len(options: &Options) -> usize {
    record_len(FORMAT_MAX_KEY_LEN, options.max_value_len)
}

fn check_options(o: &Options) -> Result<(), StoreError> {
    let bad = if o.max_key_len == 0 || o.max_key_len > FORMAT_MAX_KEY_LEN {
        Some(format!("max_key_len must be 1..={FORMAT_MAX_KEY_LEN}"))
    } else if o.max_value_len > (u32::MAX as usize) / 2 {
        Some("max_value_len must be below 2 GiB".to_string())
    } else if !(0.0..=1.0).contains(&o.compaction_dead_ratio) {
        Some("compaction_dead_ratio must be within 0..=1".to_string())
    } else {
        None
    };
    match bad {
        Some(msg) => Err(StoreError::Io {
            context: "checking store options".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, msg),
        }),
        None => Ok(()),
    }
}

/// Takes the exclusive lock of `dir`, failing at once if it is held.
pub(super) fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(super::io::FILE_MODE)
        .open(&path)
        .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => {
            Err(StoreError::io(format!("locking {}", path.display()), e))
        }
    }
}

fn check_condition(current: Option<u64>, condition: Condition) -> Result<(), StoreError> {
    condition.check(current)
}

impl Store {
    /// Opens (or creates) the store in `dir`: takes the directory lock,
    /// removes leftovers of an interrupted compaction, truncates a torn
    /// tail, and rebuilds the index (from hint files where they are valid).
    pub fn open(dir: &Path, options: Options) -> Result<Store, StoreError> {
        check_options(&options)?;
        super::io::create_data_dir(dir)
            .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        let lock = lock_dir(dir)?;
        let max_record_len = max_record_len(&options);
        let rec = recovery::recover(dir, max_record_len)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            sealed: rec.sealed,
            active: rec.active,
            index: rec.index,
            revision: rec.revision,
            floor: rec.floor,
            unsynced_since: None,
            poisoned: None,
            syncs: 0,
            last_sync_micros: 0,
            max_sync_micros: 0,
            compactions: 0,
            max_record_len,
            scratch: Vec::new(),
            durable_revision: rec.revision,
            compaction_hold: None,
            free_seen: None,
            batching: false,
            compacting: false,
            synced_len: 0,
            defer_hints: false,
            hint_jobs: Vec::new(),
        })
    }

    /// The options given at open.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Revision of the last write (0 for a new, empty store).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Another store took `revision` (the in-memory keys beside this one
    /// share its revision counter): the next write here gets a higher one.
    /// Nothing is written now; the next record, or the header of the next
    /// segment, carries it.
    pub fn advance_revision(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
    }

    /// The highest revision known to be on disk: the revision found at open,
    /// then the revision at the last successful fdatasync. Every write at or
    /// below it survives a power cut. (Under `Always`, equal to `revision()`
    /// after each successful `commit`.)
    pub fn durable_revision(&self) -> u64 {
        self.durable_revision
    }

    /// `changes_since` a revision below this answers `TooOld`.
    pub fn tombstone_floor(&self) -> u64 {
        self.floor
    }

    /// Why the store refuses writes, if it does (a failed fsync, a write
    /// error other than a full disk, or an interrupted compaction).
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Refuses writes once poisoned.
    pub(super) fn check_writable(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(reason) => Err(StoreError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Marks the store dead for writes and returns the error to report.
    pub(super) fn poison(&mut self, reason: String) -> StoreError {
        tracing::error!(dir = %self.dir.display(), "store poisoned: {reason}");
        self.poisoned = Some(reason.clone());
        StoreError::Poisoned { reason }
    }

    /// Sets `key` to `value` if `condition` holds; returns the new revision.
    /// The write is appended but durable only after `commit`/`sync`.
    pub fn put(
        &mut self,
        key: &str,
        value: &[u8],
        condition: Condition,
    ) -> Result<u64, StoreError> {
        self.check_writable()?;
        validate_key(key, self.options.max_key_len)?;
        if value.len() > self.options.max_value_len {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                max: self.options.max_value_len,
            });
        }
        // An unconditional put looks the key up once, when it updates it.
        if condition != Condition::None {
            check_condition(self.index.current(key), condition)?;
        }
        let (revision, segment, offset) = self.append(Kind::Put, key, value)?;
        let loc = Loc {
            segment,
            offset,
            rec_len: record_len(key.len(), value.len()) as u32,
            value_offset: (R_KEY + key.len()) as u32,
            value_len: value.len() as u32,
        };
        self.index.apply(key, Slot::Live { revision, loc });
        Ok(revision)
    }

    /// Deletes `key` if `condition` holds; `NotFound` (nothing written) if
    /// it does not exist. Returns the revision of the delete. The condition
    /// is checked first, so `MustNotExist` on an absent key gives `NotFound`.
    pub fn delete(&mut self, key: &str, condition: Condition) -> Result<u64, StoreError> {
        self.check_writable()?;
        validate_key(key, self.options.max_key_len)?;
        let current = self.index.current(key);
        check_condition(current, condition)?;
        if current.is_none() {
            return Err(StoreError::NotFound);
        }
        let (revision, _, _) = self.append(Kind::Delete, key, b"")?;
        self.index.apply(key, Slot::Tomb { revision });
        Ok(revision)
    }

    /// Deletes every key covered by `prefix` (`""`: every key) in one
    /// atomic record under one revision. Writes nothing if nothing matches.
    pub fn delete_prefix(&mut self, prefix: &str) -> Result<PrefixDeletion, StoreError> {
        self.check_writable()?;
        validate_prefix(prefix, self.options.max_key_len)?;
        if !self
            .index
            .covered(prefix, None)
            .any(|(_, s)| matches!(s, Slot::Live { .. }))
        {
            return Ok(PrefixDeletion {
                revision: None,
                keys: Vec::new(),
            });
        }
        let (revision, _, _) = self.append(Kind::DeletePrefix, prefix, b"")?;
        let keys = self.index.delete_prefix(prefix, revision);
        Ok(PrefixDeletion {
            revision: Some(revision),
            keys,
        })
    }

    /// Applies several puts and deletes atomically under one revision (one
    /// batch record). Deleting an absent key is not an error. The encoded
    /// batch is bounded by `max_value_len`.
    pub fn write_batch(&mut self, ops: &[BatchOp<'_>]) -> Result<u64, StoreError> {
        self.check_writable()?;
        let mut refs = Vec::with_capacity(ops.len());
        for op in ops {
            let r = match *op {
                BatchOp::Put { key, value } => OpRef {
                    kind: Kind::Put,
                    key,
                    value,
                },
                BatchOp::Delete { key } => OpRef {
                    kind: Kind::Delete,
                    key,
                    value: b"",
                },
            };
            validate_key(r.key, self.options.max_key_len)?;
            refs.push(r);
        }
        let value = encode_batch_value(&refs);
        if value.len() > self.options.max_value_len {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                max: self.options.max_value_len,
            });
        }
        let (revision, segment, offset) = self.append(Kind::Batch, "", &value)?;
        let rec_len = record_len(0, value.len()) as u32;
        let mut at = R_KEY + BATCH_OP_HEADER_LEN;
        for r in &refs {
            let slot = match r.kind {
                Kind::Put => Slot::Live {
                    revision,
                    loc: Loc {
                        segment,
                        offset,
                        rec_len,
                        value_offset: (at + r.key.len()) as u32,
                        value_len: r.value.len() as u32,
                    },
                },
                _ => Slot::Tomb { revision },
            };
            self.index.apply(r.key, slot);
            at += r.key.len() + r.value.len() + BATCH_OP_HEADER_LEN;
        }
        Ok(revision)
    }

    /// Appends one record under the next revision; returns (revision,
    /// segment, offset). A failed write is rolled back: the revision is not
    /// used and the store stays usable after a transient failure
    /// (`DiskFull`, `OutOfResources`). A full disk first tries to reclaim
    /// dead space with a compaction, then the write once more.
    fn append(
        &mut self,
        kind: Kind,
        key: &str,
        value: &[u8],
    ) -> Result<(u64, u64, u64), StoreError> {
        match self.append_once(kind, key, value) {
            Err(StoreError::DiskFull) if self.maybe_compact(true) => {
                self.append_once(kind, key, value)
            }
            other => other,
        }
    }

    fn append_once(
        &mut self,
        kind: Kind,
        key: &str,
        value: &[u8],
    ) -> Result<(u64, u64, u64), StoreError> {
        let len = record_len(key.len(), value.len());
        if self.active.len > HEADER_LEN as u64
            && self.active.len + len as u64 > self.options.segment_size
        {
            self.roll()?;
        }
        let revision = self.revision + 1;
        // Reuse one encode buffer: a put should not allocate for its record.
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        encode_record(
            &mut buf,
            self.active.header.salt,
            revision,
            kind,
            key,
            value,
        );
        let appended = if self.batching {
            self.active.append_buffered(&buf)
        } else {
            self.active.append(&buf)
        };
        if buf.capacity() <= 1 << 16 {
            self.scratch = buf;
        }
        let offset = match appended {
            Ok(offset) => offset,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => return Err(self.poison(format!("write failed: {e}"))),
        };
        self.revision = revision;
        self.unsynced_since.get_or_insert_with(Instant::now);
        Ok((revision, self.active.header.id, offset))
    }

    /// Starts a batch: records appended until [`Store::end_batch`] wait in
    /// memory and are written with one `pwrite` at its end. Reads of the
    /// store see them meanwhile; views and syncs come after the batch.
    /// Space is still reserved record by record, so a full disk refuses
    /// the one write that does not fit and nothing else.
    pub fn begin_batch(&mut self) {
        self.batching = true;
    }

    /// Writes the batch's records. A failure poisons the store: the index
    /// already points at records that are not in the file.
    pub fn end_batch(&mut self) -> Result<(), StoreError> {
        self.batching = false;
        self.flush_batch()
    }

    /// Writes buffered records now (before anything that needs them in the
    /// file: a seal, a sync, a compaction, a view).
    pub(super) fn flush_batch(&mut self) -> Result<(), StoreError> {
        if self.active.buffer.is_empty() {
            return Ok(());
        }
        match self.active.flush() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.poison(format!("write failed: {e}"))),
        }
    }

    /// Seals the active segment (fsync, map, hint file) and starts a new one.
    fn roll(&mut self) -> Result<(), StoreError> {
        self.roll_to(self.active.header.id + 1, self.floor)
    }

    /// Seals the active segment and starts segment `id` (above it), whose
    /// header records `floor` (a compaction raises it).
    pub(super) fn roll_to(&mut self, id: u64, floor: u64) -> Result<(), StoreError> {
        debug_assert!(id > self.active.header.id);
        // Trim the preallocated zeros and make the final size durable before
        // the next segment exists: recovery relies on every segment but the
        // last being complete.
        self.seal_active_tail()?;
        let header = SegmentHeader {
            id,
            salt: new_salt(),
            base_revision: self.revision,
            floor,
        };
        let fresh = match Active::create(&self.dir, header) {
            Ok(a) => a,
            // Nothing half-made is left behind: the store stays usable.
            Err(e) if e.is_transient() => return Err(e),
            // A failed fsync of the new file or the directory: the same rule
            // as for fdatasync, never carry on as if it had worked.
            Err(e) => return Err(self.poison(format!("creating a segment failed: {e}"))),
        };
        // Map the old segment before switching: if that fails (no memory),
        // the new file goes again and the old segment stays active.
        let sealed = match self.active.seal() {
            Ok(sealed) => sealed,
            Err(e) => {
                let path = fresh.path.clone();
                drop(fresh);
                if io::remove_file(&path).is_err() {
                    return Err(self.poison(format!(
                        "sealing a segment failed ({e}) and {} could not be removed",
                        path.display()
                    )));
                }
                return Err(e);
            }
        };
        self.active = fresh;
        // The new segment's header was synced when it was created.
        self.synced_len = self.active.written;
        let sealed = Arc::new(sealed);
        self.sealed.insert(sealed.header.id, sealed.clone());
        self.hint_due(sealed);
        Ok(())
    }

    /// Trims the active segment's preallocated zeros and fsyncs its final
    /// size, before a segment with a higher id can exist (roll, compaction).
    pub(super) fn seal_active_tail(&mut self) -> Result<(), StoreError> {
        self.flush_batch()?;
        if let Err(e) = self.active.trim() {
            let ctx = format!("trimming {}", self.active.path.display());
            return Err(StoreError::io(ctx, e));
        }
        self.unsynced_since.get_or_insert_with(Instant::now);
        self.sync_active()
    }

    /// fdatasync of the active segment if it has unsynced writes. A failure
    /// poisons the store: the kernel may have dropped the dirty pages, so a
    /// retry that succeeds would prove nothing.
    pub(super) fn sync_active(&mut self) -> Result<(), StoreError> {
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        self.flush_batch()?;
        let started = Instant::now();
        if let Err(e) = io::sync_data(&self.active.file) {
            let reason = format!("fdatasync of {} failed: {e}", self.active.path.display());
            return Err(self.poison(reason));
        }
        let micros = started.elapsed().as_micros() as u64;
        self.syncs += 1;
        self.last_sync_micros = micros;
        self.max_sync_micros = self.max_sync_micros.max(micros);
        self.unsynced_since = None;
        self.durable_revision = self.revision;
        self.synced_len = self.active.written;
        Ok(())
    }

    /// Makes every write so far durable as the policy says: `Always` runs
    /// one fdatasync for all writes since the last commit (group commit);
    /// `Interval` and `Never` do not sync here. Then runs an automatic
    /// compaction if the dead-byte thresholds are passed; its failure is
    /// logged, not returned, because the batch itself is already durable.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.check_writable()?;
        if self.options.fsync == FsyncPolicy::Always {
            self.sync_active()?;
        }
        self.maybe_compact(false);
        Ok(())
    }

    /// What an fdatasync now would make durable, for a sync run without
    /// holding the store (see [`SyncPoint`]); `None` when every write is
    /// durable already.
    pub fn sync_point(&self) -> Option<SyncPoint> {
        debug_assert!(self.active.buffer.is_empty(), "a sync point inside a batch");
        self.unsynced_since.map(|_| SyncPoint {
            file: self.active.file.clone(),
            path: self.active.path.clone(),
            segment: self.active.header.id,
            len: self.active.written,
            revision: self.revision,
            taken: Instant::now(),
        })
    }

    /// Records the outcome of [`SyncPoint::sync`]: on success every write
    /// up to its revision is durable; a failure poisons the store (the
    /// kernel may have dropped the dirty pages) and returns the error.
    pub fn synced(
        &mut self,
        point: &SyncPoint,
        outcome: std::io::Result<std::time::Duration>,
    ) -> Result<(), StoreError> {
        match outcome {
            Ok(took) => {
                let micros = took.as_micros() as u64;
                self.syncs += 1;
                self.last_sync_micros = micros;
                self.max_sync_micros = self.max_sync_micros.max(micros);
                self.durable_revision = self.durable_revision.max(point.revision);
                if point.segment == self.active.header.id {
                    self.synced_len = self.synced_len.max(point.len);
                }
                if self.revision == point.revision {
                    self.unsynced_since = None;
                } else if self.unsynced_since.is_some() {
                    // The writes left came after the point was taken.
                    self.unsynced_since = Some(point.taken);
                }
                Ok(())
            }
            Err(e) => {
                let reason = format!("fdatasync of {} failed: {e}", point.path.display());
                Err(self.poison(reason))
            }
        }
    }

    /// Forces an fdatasync now (the interval timer, shutdown).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.check_writable()?;
        self.sync_active()
    }

    /// Under `Interval`, with unsynced writes: when `sync` is due.
    pub fn next_sync_deadline(&self) -> Option<Instant> {
        match self.options.fsync {
            FsyncPolicy::Interval(d) => self.unsynced_since.map(|t| t + d),
            _ => None,
        }
    }

    pub(super) fn total_bytes(&self) -> u64 {
        self.active.len + self.sealed.values().map(|s| s.len()).sum::<u64>()
    }

    pub(super) fn segment_count(&self) -> u64 {
        self.sealed.len() as u64 + 1
    }

    /// Counters and sizes.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.index.live_keys(),
            tombstones: self.index.tombstones(),
            data_bytes: self.index.data_bytes(),
            live_bytes: self.index.live_bytes(),
            dead_bytes: self.dead_bytes(),
            free_bytes: self.free_bytes().unwrap_or(0),
            total_bytes: self.total_bytes(),
            segments: self.segment_count(),
            revision: self.revision,
            tombstone_floor: self.floor,
            syncs: self.syncs,
            last_sync_micros: self.last_sync_micros,
            max_sync_micros: self.max_sync_micros,
            compactions: self.compactions,
            compaction_hold: self.compaction_hold().cloned(),
        }
    }

    /// Compactions completed since open.
    pub fn compactions(&self) -> u64 {
        self.compactions
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Store {
    /// Trims the preallocated zeros so a cleanly closed segment ends at its
    /// last record (a crash leaves them; open trims them then). No sync
    /// here: durability is `commit`/`sync`'s job.
    fn drop(&mut self) {
        // A poisoned store leaves the files exactly as the failure left
        // them, like a crash would; open copes with the zeros.
        if self.poisoned.is_none() && self.flush_batch().is_ok() {
            let _ = self.active.trim();
        }
    }
}
