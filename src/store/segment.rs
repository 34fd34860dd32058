//! Segment files: naming, the append-only active segment, and read-only
//! memory maps to read records without a system call.
//!
//! Writes only ever go through `pwrite` on the active segment, and only into
//! space already allocated for real (zeros written ahead, see
//! [`Active::append`]), so a full disk fails a write before any byte of it
//! lands and never after. Maps are read-only and only of files without
//! holes; a reader touches only bytes below the end of what was written,
//! and a file is truncated only beyond that (trimming the active segment's
//! preallocated zeros), so a map never faults with SIGBUS. The active
//! segment is mapped too, beyond its current end: pages past the end of the
//! file are in the map but never touched.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::{Mmap, MmapOptions, UncheckedAdvice};

use super::error::{is_disk_full, StoreError};
use super::format::{SegmentHeader, HEADER_LEN, HINT_SUFFIX, SEGMENT_SUFFIX, TEMP_SUFFIX};
use super::io;

/// What a file in the data directory is, judged by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// `<id>.seg`
    Segment(u64),
    /// `<id>.hint`
    Hint(u64),
    /// `*.tmp`: an unfinished compaction or repair output.
    Temp,
}

/// Path of segment `id`. Ids are fixed-width hex so names sort like ids.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.{SEGMENT_SUFFIX}"))
}

/// Path of the hint file of segment `id`.
pub(crate) fn hint_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.{HINT_SUFFIX}"))
}

/// Temporary path used while `final_path` is being written.
pub(crate) fn temp_path(final_path: &Path) -> PathBuf {
    let mut s = final_path.as_os_str().to_owned();
    s.push(".");
    s.push(TEMP_SUFFIX);
    PathBuf::from(s)
}

/// Classifies a directory entry name; `None` for files that are not ours.
pub(crate) fn classify(name: &str) -> Option<FileKind> {
    if name.ends_with(&format!(".{TEMP_SUFFIX}")) {
        return Some(FileKind::Temp);
    }
    let (stem, ext) = name.rsplit_once('.')?;
    if stem.len() != 16 {
        return None;
    }
    let id = u64::from_str_radix(stem, 16).ok()?;
    match ext {
        SEGMENT_SUFFIX => Some(FileKind::Segment(id)),
        HINT_SUFFIX => Some(FileKind::Hint(id)),
        _ => None,
    }
}

/// The bytes of a whole segment file: a read-only map, or, for a file with
/// holes (damage from outside the store), a copy read with `pread`, which
/// returns zeros for a hole where touching a map could raise SIGBUS.
pub(crate) enum SegmentBytes {
    /// Mapped read-only.
    Mapped(Mmap),
    /// Read into memory.
    Read(Vec<u8>),
}

impl std::ops::Deref for SegmentBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            SegmentBytes::Mapped(map) => map,
            SegmentBytes::Read(bytes) => bytes,
        }
    }
}

impl SegmentBytes {
    /// Maps `file` (or reads it, if it has a hole). The caller guarantees
    /// that nothing writes or truncates the file while the bytes live.
    pub fn load(path: &Path, file: &File) -> Result<SegmentBytes, StoreError> {
        let ctx = || format!("reading {}", path.display());
        let len = file.metadata().map_err(|e| StoreError::io(ctx(), e))?.len();
        if let Some(hole) = super::io::first_hole(file, len) {
            tracing::warn!(
                "{} has a hole at offset {hole}; reading it instead of mapping it",
                path.display()
            );
            let mut bytes = vec![0u8; len as usize];
            std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, 0)
                .map_err(|e| StoreError::io(ctx(), e))?;
            return Ok(SegmentBytes::Read(bytes));
        }
        if len == 0 {
            return Ok(SegmentBytes::Read(Vec::new()));
        }
        // SAFETY: the map is read-only, the file has no hole below its length
        // (checked just above, so no page fault needs a new block), and the
        // caller guarantees nothing writes or truncates it while the map
        // lives: sealed segments are never written again, the store
        // truncates only the unmapped active segment, and the directory lock
        // keeps other nkv processes out.
        let map = unsafe { Mmap::map(file) }.map_err(|e| StoreError::io(ctx(), e))?;
        Ok(SegmentBytes::Mapped(map))
    }
}

/// A sealed segment: complete, synced, read through a read-only map.
pub(crate) struct Sealed {
    /// Its header.
    pub header: SegmentHeader,
    /// Its path (for error messages and removal).
    pub path: PathBuf,
    /// The whole file.
    bytes: SegmentBytes,
}

impl Sealed {
    /// Maps `file`, whose content will never change again.
    pub fn map(path: PathBuf, file: &File, header: SegmentHeader) -> Result<Sealed, StoreError> {
        let bytes = SegmentBytes::load(&path, file)?;
        Ok(Sealed::new(path, bytes, header))
    }

    /// A sealed segment over bytes already loaded.
    pub fn new(path: PathBuf, bytes: SegmentBytes, header: SegmentHeader) -> Sealed {
        Sealed {
            header,
            path,
            bytes,
        }
    }

    /// Every byte of the segment.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Length of the file in bytes.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Unmaps the pages of the segment this process touched (reading it
    /// whole for a hint, say), so they stop counting in its resident size;
    /// they stay in the page cache and a later read maps them back.
    pub fn release_pages(&self) {
        if let SegmentBytes::Mapped(map) = &self.bytes {
            // SAFETY: a shared, read-only mapping of a file that is never
            // written again: MADV_DONTNEED only drops our page-table entries,
            // and any later access (a view reading it on another thread)
            // faults the same bytes back in from the page cache.
            let released = unsafe { map.unchecked_advise(UncheckedAdvice::DontNeed) };
            if let Err(e) = released {
                tracing::debug!(error = %e, "madvise(DONTNEED) of a sealed segment failed");
            }
        }
    }
}

/// The segment being appended to.
///
/// Invariant: `written <= len <= allocated <= file length`, every block
/// below `allocated` is allocated on disk (written, never a hole), and the
/// bytes `written..allocated` of the file are zeros. So a record write goes
/// only into space the filesystem already gave us, and a full disk shows up
/// while reserving space, before any byte of the record is written. In a
/// batch, records `written..len` wait in `buffer` and go to the file with
/// one write at its end.
pub(crate) struct Active {
    /// Its header.
    pub header: SegmentHeader,
    /// Its path.
    pub path: PathBuf,
    /// Open for reading and writing; written only with `pwrite`. Shared
    /// with views, which read committed records through `map` (or with
    /// `pread` when there is no map).
    pub file: Arc<File>,
    /// Offset where the next record goes (buffered records included).
    pub len: u64,
    /// End of the records in the file; `buffer` holds `written..len`.
    pub written: u64,
    /// Records of the current batch not yet written.
    pub buffer: Vec<u8>,
    /// End of the space written ahead with zeros. Overwriting already
    /// written blocks lets `fdatasync` skip the journal commit that every
    /// file-size change costs, which roughly halves its latency. Zeros never
    /// validate as a record (the CRC is salted and the length field would
    /// be 0).
    pub allocated: u64,
    /// A read-only map of the file covering at least `allocated`, so reads
    /// of committed records need no system call. `None` for a segment found
    /// with holes at open (read with `pread` then).
    pub map: Option<Arc<Mmap>>,
}

/// Zeros written ahead of the active segment's end at a time.
pub(crate) const PREALLOCATE_CHUNK: u64 = 1 << 20;

/// The active segment's first map covers this much; it doubles as needed.
const FIRST_MAP_LEN: u64 = 8 << 20;

/// A read-only map of `len` bytes of `file`, which may be longer than the
/// file: pages past its end are never touched (see the module docs).
fn map_ahead(path: &Path, file: &File, len: u64) -> Result<Arc<Mmap>, StoreError> {
    let len = usize::try_from(len).map_err(|_| {
        StoreError::io(
            format!("mapping {}", path.display()),
            std::io::Error::other("segment too large to map"),
        )
    })?;
    // SAFETY: the map is read-only and readers touch only bytes below the
    // active segment's `written` end, which lie in blocks written for real
    // (no hole, so no page fault needs a new block) and inside the file
    // (it is truncated only beyond them); nothing else writes or truncates
    // the file (the directory lock keeps other nkv processes out).
    let map = unsafe { MmapOptions::new().len(len).map(file) }
        .map_err(|e| StoreError::io(format!("mapping {}", path.display()), e))?;
    Ok(Arc::new(map))
}

impl Active {
    /// Creates a new segment with `header`: writes and syncs the header,
    /// then fsyncs the directory so the new name survives a power cut. On
    /// any failure the new file is removed again, so a failed create leaves
    /// nothing behind and can simply be retried.
    pub fn create(dir: &Path, header: SegmentHeader) -> Result<Active, StoreError> {
        let path = segment_path(dir, header.id);
        let ctx = || format!("creating segment {}", path.display());
        let file = io::create_new(&path).map_err(|e| StoreError::io(ctx(), e))?;
        let written = io::write_at(&file, &header.encode(), 0)
            .and_then(|_| io::sync_data(&file))
            .and_then(|_| io::sync_dir(dir));
        let map = written
            .map_err(|e| StoreError::io(ctx(), e))
            .and_then(|()| map_ahead(&path, &file, FIRST_MAP_LEN));
        let map = match map {
            Ok(map) => map,
            Err(e) => {
                drop(file);
                let _ = io::remove_file(&path);
                return Err(e);
            }
        };
        Ok(Active {
            header,
            path,
            file: Arc::new(file),
            len: HEADER_LEN as u64,
            written: HEADER_LEN as u64,
            buffer: Vec::new(),
            allocated: HEADER_LEN as u64,
            map: Some(map),
        })
    }

    /// The active segment found at open, `len` bytes of valid records
    /// (the file has been cut there). Mapped unless it has holes.
    pub fn reopen(
        path: PathBuf,
        file: File,
        header: SegmentHeader,
        len: u64,
    ) -> Result<Active, StoreError> {
        let map = match io::first_hole(&file, len) {
            Some(hole) => {
                tracing::warn!(
                    "{} has a hole at offset {hole}; reading it with pread",
                    path.display()
                );
                None
            }
            None => Some(map_ahead(&path, &file, FIRST_MAP_LEN.max(2 * len))?),
        };
        Ok(Active {
            header,
            path,
            file: Arc::new(file),
            len,
            written: len,
            buffer: Vec::new(),
            allocated: len,
            map,
        })
    }

    /// Appends `buf` at the end and returns its offset. Space is reserved
    /// first, so a full disk gives `DiskFull` with nothing written. If the
    /// write itself fails, zeros are put back where it went (best effort;
    /// open would cut a torn record there anyway) and the valid length is
    /// unchanged: the write is rolled back.
    pub fn append(&mut self, buf: &[u8]) -> Result<u64, StoreError> {
        debug_assert!(self.buffer.is_empty(), "append during a batch");
        let at = self.len;
        let end = at + buf.len() as u64;
        if end > self.allocated {
            self.reserve(end)?;
        }
        if let Err(e) = io::write_at(&self.file, buf, at) {
            let _ = io::write_at(&self.file, &vec![0u8; buf.len()], at);
            return Err(StoreError::io(
                format!("writing {}", self.path.display()),
                e,
            ));
        }
        self.len = end;
        self.written = end;
        Ok(at)
    }

    /// Appends `record` to the batch buffer and returns its offset. Space
    /// is reserved first, exactly as for [`Active::append`], so a full disk
    /// refuses this record with nothing buffered.
    pub fn append_buffered(&mut self, record: &[u8]) -> Result<u64, StoreError> {
        let at = self.len;
        let end = at + record.len() as u64;
        if end > self.allocated {
            self.reserve(end)?;
        }
        self.buffer.extend_from_slice(record);
        self.len = end;
        Ok(at)
    }

    /// Writes the buffered records with one `pwrite`. On failure zeros are
    /// put back (best effort) and the buffered records are dropped: the
    /// caller must treat them as never written.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let result = io::write_at(&self.file, &self.buffer, self.written);
        if let Err(e) = result {
            let _ = io::write_at(&self.file, &vec![0u8; self.buffer.len()], self.written);
            self.len = self.written;
            self.buffer.clear();
            return Err(StoreError::io(
                format!("writing {}", self.path.display()),
                e,
            ));
        }
        self.written = self.len;
        self.buffer.clear();
        if self.buffer.capacity() > 4 << 20 {
            self.buffer = Vec::new();
        }
        Ok(())
    }

    /// Writes zeros from the allocated end to past `end`: a whole chunk
    /// ahead if the disk has room, else exactly up to `end`. A failed
    /// attempt is cut off again (nothing past `allocated` holds data or is
    /// read through the map), so the file is as it was. The map grows with
    /// the allocated space.
    fn reserve(&mut self, end: u64) -> Result<(), StoreError> {
        let ctx = || format!("reserving space in {}", self.path.display());
        for target in [end + PREALLOCATE_CHUNK, end] {
            let zeros = vec![0u8; (target - self.allocated) as usize];
            match io::write_at(&self.file, &zeros, self.allocated) {
                Ok(()) => {
                    self.allocated = target;
                    return self.map_to(target);
                }
                Err(e) => {
                    let _ = io::set_len(&self.file, self.allocated);
                    if !is_disk_full(&e) {
                        return Err(StoreError::io(ctx(), e));
                    }
                }
            }
        }
        Err(StoreError::DiskFull)
    }

    /// Makes the map cover `end` (a new, larger map; readers holding the
    /// old one go on using it for the bytes it covers).
    fn map_to(&mut self, end: u64) -> Result<(), StoreError> {
        match &self.map {
            Some(map) if (map.len() as u64) < end => {
                self.map = Some(map_ahead(
                    &self.path,
                    &self.file,
                    (2 * end).max(FIRST_MAP_LEN),
                )?);
            }
            _ => {}
        }
        Ok(())
    }

    /// Cuts the preallocated zeros off, so the file ends at its last record
    /// (before sealing, and when the store is dropped). Readers never touch
    /// the bytes cut off, so truncating a mapped file is safe here.
    pub fn trim(&mut self) -> std::io::Result<()> {
        debug_assert!(self.buffer.is_empty(), "trim during a batch");
        if self.allocated > self.len {
            io::set_len(&self.file, self.len)?;
            self.allocated = self.len;
        }
        Ok(())
    }

    /// A sealed, mapped copy of this segment's view, for when it stops
    /// being the active one. The caller has trimmed and synced it.
    pub fn seal(&self) -> Result<Sealed, StoreError> {
        Sealed::map(self.path.clone(), &self.file, self.header)
    }
}
