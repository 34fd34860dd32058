//! Segment files: naming, the append-only active segment, and sealed
//! segments read through read-only memory maps.
//!
//! Writes only ever go through `pwrite` on the active segment; a map is
//! taken only once a segment is sealed (synced and never written again), and
//! no mapped file is ever truncated, so a map can never fault with SIGBUS.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::error::StoreError;
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

/// A sealed segment: complete, synced, read through a read-only map.
pub(crate) struct Sealed {
    /// Its header.
    pub header: SegmentHeader,
    /// Its path (for error messages and removal).
    pub path: PathBuf,
    /// The read-only map of the whole file.
    map: Mmap,
}

impl Sealed {
    /// Maps `file`, whose content will never change again.
    pub fn map(path: PathBuf, file: &File, header: SegmentHeader) -> Result<Sealed, StoreError> {
        // SAFETY: the map is read-only and the file is sealed: the store
        // never writes to or truncates a sealed segment (writes go only to
        // the active segment, truncation only happens at open before any
        // map exists), and the directory lock keeps other nkv processes out.
        let map = unsafe { Mmap::map(file) }
            .map_err(|e| StoreError::io(format!("mapping {}", path.display()), e))?;
        Ok(Sealed { header, path, map })
    }

    /// Every byte of the segment.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Length of the file in bytes.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }
}

/// The segment being appended to.
pub(crate) struct Active {
    /// Its header.
    pub header: SegmentHeader,
    /// Its path.
    pub path: PathBuf,
    /// Open for reading and writing; written only with `pwrite`.
    pub file: File,
    /// Offset where the next record goes (= valid length of the file).
    pub len: u64,
    /// Length of the file on disk; bytes `len..allocated` are zeros written
    /// ahead of time. Overwriting already-written blocks lets `fdatasync`
    /// skip the journal commit that every file-size change costs, which
    /// roughly halves its latency. Zeros never validate as a record (the
    /// CRC is salted and the length field would be 0).
    pub allocated: u64,
}

/// Zeros written ahead of the active segment's end at a time.
pub(crate) const PREALLOCATE_CHUNK: u64 = 1 << 20;

impl Active {
    /// Creates a new segment with `header`: writes and syncs the header,
    /// then fsyncs the directory so the new name survives a power cut.
    pub fn create(dir: &Path, header: SegmentHeader) -> Result<Active, StoreError> {
        let path = segment_path(dir, header.id);
        let ctx = || format!("creating segment {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io(ctx(), e))?;
        let written = io::write_at(&file, &header.encode(), 0).and_then(|_| io::sync_data(&file));
        if let Err(e) = written {
            // Leave no half-made segment behind; a failed create is harmless.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(StoreError::io(ctx(), e));
        }
        io::sync_dir(dir).map_err(|e| StoreError::io(ctx(), e))?;
        Ok(Active {
            header,
            path,
            file,
            len: HEADER_LEN as u64,
            allocated: HEADER_LEN as u64,
        })
    }

    /// Appends `buf` at the end. On failure the bytes written so far are cut
    /// off again (this file is not mapped, so truncating it is safe) and the
    /// valid length is unchanged: the write is rolled back.
    pub fn append(&mut self, buf: &[u8]) -> Result<u64, StoreError> {
        let at = self.len;
        let end = at + buf.len() as u64;
        if end > self.allocated {
            self.preallocate(end);
        }
        if let Err(e) = io::write_at(&self.file, buf, at) {
            let _ = self.file.set_len(at);
            self.allocated = at;
            return Err(StoreError::io(
                format!("writing {}", self.path.display()),
                e,
            ));
        }
        self.len = end;
        Ok(at)
    }

    /// Writes zeros from the allocated end to past `end`. A failure (full
    /// disk) is ignored here: the extension is cut off again and the record
    /// write that follows reports the real outcome.
    fn preallocate(&mut self, end: u64) {
        let target = end + PREALLOCATE_CHUNK;
        let zeros = vec![0u8; (target - self.allocated) as usize];
        match io::write_at(&self.file, &zeros, self.allocated) {
            Ok(()) => self.allocated = target,
            Err(_) => {
                let _ = self.file.set_len(self.allocated);
            }
        }
    }

    /// Cuts the preallocated zeros off, so the file ends at its last record
    /// (before sealing, and when the store is dropped). The file is not
    /// mapped, so truncating it is safe.
    pub fn trim(&mut self) -> std::io::Result<()> {
        if self.allocated > self.len {
            self.file.set_len(self.len)?;
            self.allocated = self.len;
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` (pread).
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| StoreError::io(format!("reading {}", self.path.display()), e))?;
        Ok(buf)
    }

    /// Turns this segment into a sealed, mapped one. The caller has synced it.
    pub fn seal(self) -> Result<Sealed, StoreError> {
        Sealed::map(self.path, &self.file, self.header)
    }
}
