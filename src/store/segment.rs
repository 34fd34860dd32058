//! Segment files: naming, the append-only active segment, and sealed
//! segments read through read-only memory maps.
//!
//! Writes only ever go through `pwrite` on the active segment, and only into
//! space already allocated for real (zeros written ahead, see
//! [`Active::append`]), so a full disk fails a write before any byte of it
//! lands and never after. A map is taken only once a segment is sealed
//! (synced and never written again), only of a file without holes, and no
//! mapped file is ever truncated, so a map can never fault with SIGBUS.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

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
}

/// The segment being appended to.
///
/// Invariant: `len <= allocated <= file length`, every block below
/// `allocated` is allocated on disk (written, never a hole), and the bytes
/// `len..allocated` are zeros. So a record write goes only into space the
/// filesystem already gave us, and a full disk shows up while reserving
/// space, before any byte of the record is written.
pub(crate) struct Active {
    /// Its header.
    pub header: SegmentHeader,
    /// Its path.
    pub path: PathBuf,
    /// Open for reading and writing; written only with `pwrite`. Shared
    /// with views, which read committed records from it with `pread`.
    pub file: std::sync::Arc<File>,
    /// Offset where the next record goes (= valid length of the file).
    pub len: u64,
    /// End of the space written ahead with zeros. Overwriting already
    /// written blocks lets `fdatasync` skip the journal commit that every
    /// file-size change costs, which roughly halves its latency. Zeros never
    /// validate as a record (the CRC is salted and the length field would
    /// be 0).
    pub allocated: u64,
}

/// Zeros written ahead of the active segment's end at a time.
pub(crate) const PREALLOCATE_CHUNK: u64 = 1 << 20;

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
        if let Err(e) = written {
            drop(file);
            let _ = io::remove_file(&path);
            return Err(StoreError::io(ctx(), e));
        }
        Ok(Active {
            header,
            path,
            file: std::sync::Arc::new(file),
            len: HEADER_LEN as u64,
            allocated: HEADER_LEN as u64,
        })
    }

    /// Appends `buf` at the end and returns its offset. Space is reserved
    /// first, so a full disk gives `DiskFull` with nothing written. If the
    /// write itself fails, zeros are put back where it went (best effort;
    /// open would cut a torn record there anyway) and the valid length is
    /// unchanged: the write is rolled back.
    pub fn append(&mut self, buf: &[u8]) -> Result<u64, StoreError> {
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
        Ok(at)
    }

    /// Writes zeros from the allocated end to past `end`: a whole chunk
    /// ahead if the disk has room, else exactly up to `end`. A failed
    /// attempt is cut off again (the file is not mapped, and nothing past
    /// `allocated` holds data), so the file is as it was.
    fn reserve(&mut self, end: u64) -> Result<(), StoreError> {
        let ctx = || format!("reserving space in {}", self.path.display());
        for target in [end + PREALLOCATE_CHUNK, end] {
            let zeros = vec![0u8; (target - self.allocated) as usize];
            match io::write_at(&self.file, &zeros, self.allocated) {
                Ok(()) => {
                    self.allocated = target;
                    return Ok(());
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

    /// Cuts the preallocated zeros off, so the file ends at its last record
    /// (before sealing, and when the store is dropped). The file is not
    /// mapped, so truncating it is safe.
    pub fn trim(&mut self) -> std::io::Result<()> {
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
