//! Opening a data directory: list the files, drop leftovers of an
//! interrupted compaction, replay every segment (from its hint file where
//! one is valid) into the index, and cut a torn tail off the last segment.
//!
//! The rules (see `docs/storage.md`, "Recovery"):
//! - Only the last segment can have a torn tail: every other segment was
//!   fsynced before the next one was created, or written by compaction and
//!   fsynced before its rename. Invalid bytes at the end of the last segment
//!   with no valid record after them are a torn write: truncate, warn, go on.
//! - Invalid bytes followed by a valid record (or in a sealed segment) are
//!   damage: refuse to open with `Corrupt`, naming file and offset.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::StoreError;
use super::format::{decode_record, new_salt, Kind, Op, RecordRef, SegmentHeader, HEADER_LEN};
use super::hint;
use super::index::{Index, Loc, Slot};
use super::io;
use super::segment::{classify, hint_path, segment_path, Active, FileKind, Sealed, SegmentBytes};

/// What open found on disk.
pub(super) struct Recovered {
    /// Sealed segments, mapped.
    pub sealed: BTreeMap<u64, std::sync::Arc<Sealed>>,
    /// The segment to append to.
    pub active: Active,
    /// The rebuilt index.
    pub index: Index,
    /// Highest revision seen in any header or record.
    pub revision: u64,
    /// Highest tombstone floor seen in any header.
    pub floor: u64,
}

/// Segment and hint ids present in `dir`. Temporary files are removed
/// (with a directory fsync) when `remove_temps` is set.
pub(super) fn list_dir(
    dir: &Path,
    remove_temps: bool,
) -> Result<(Vec<u64>, BTreeSet<u64>), StoreError> {
    let ctx = || format!("listing {}", dir.display());
    let mut segments = Vec::new();
    let mut hints = BTreeSet::new();
    let mut removed = false;
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(ctx(), e))? {
        let entry = entry.map_err(|e| StoreError::io(ctx(), e))?;
        let name = entry.file_name();
        match classify(&name.to_string_lossy()) {
            Some(FileKind::Segment(id)) => segments.push(id),
            Some(FileKind::Hint(id)) => {
                hints.insert(id);
            }
            Some(FileKind::Temp) if remove_temps => {
                tracing::warn!(
                    "removing leftover temporary file {}",
                    entry.path().display()
                );
                io::remove_file(&entry.path()).map_err(|e| {
                    StoreError::io(format!("removing {}", entry.path().display()), e)
                })?;
                removed = true;
            }
            _ => {}
        }
    }
    if removed {
        io::sync_dir(dir).map_err(|e| StoreError::io(ctx(), e))?;
    }
    segments.sort_unstable();
    Ok((segments, hints))
}

/// Where walking the records of a segment stopped.
pub(super) struct Walk {
    /// Offset just past the last whole, valid record.
    pub end: usize,
    /// The first invalid bytes, if the walk did not reach the end cleanly.
    pub damage: Option<(usize, &'static str)>,
}

/// Walks records from `start`, calling `f(offset, record, ops)` for each
/// valid one, until the end of `bytes` or the first invalid record.
pub(super) fn walk<'a>(
    bytes: &'a [u8],
    start: usize,
    salt: u64,
    max_len: usize,
    mut f: impl FnMut(usize, &RecordRef<'a>, &[Op<'a>]),
) -> Walk {
    let mut at = start;
    while at < bytes.len() {
        let rec = match decode_record(&bytes[at..], salt, max_len) {
            Ok(r) => r,
            Err(d) => {
                return Walk {
                    end: at,
                    damage: Some((at, d)),
                }
            }
        };
        let ops = match rec.ops() {
            Ok(ops) => ops,
            Err(d) => {
                return Walk {
                    end: at,
                    damage: Some((at, d)),
                }
            }
        };
        f(at, &rec, &ops);
        at += rec.len;
    }
    Walk {
        end: at,
        damage: None,
    }
}

/// Offset of the first valid record at or after `from`, trying every byte
/// offset: the salted checksum makes a false match practically impossible.
pub(super) fn find_valid_record(
    bytes: &[u8],
    from: usize,
    salt: u64,
    max_len: usize,
) -> Option<usize> {
    (from..bytes.len()).find(|&p| decode_record(&bytes[p..], salt, max_len).is_ok())
}

/// Applies one logical operation to the index.
pub(super) fn apply_op(index: &mut Index, revision: u64, kind: Kind, key: &str, loc: Loc) {
    match kind {
        Kind::Put => {
            index.replay(key, Slot::Live { revision, loc });
        }
        Kind::Delete => {
            index.replay(key, Slot::Tomb { revision });
        }
        Kind::DeletePrefix => {
            index.delete_prefix(key, revision);
        }
        // Only a hint's placeholder for an empty batch: nothing to apply.
        Kind::Batch => {}
    }
}

/// True when bytes `from..len` of `file` are all zero (preallocated space).
pub(super) fn zeros_from(file: &std::fs::File, from: u64, len: u64) -> bool {
    let mut buf = vec![0u8; 1 << 16];
    let mut at = from;
    while at < len {
        let n = buf.len().min((len - at) as usize);
        if file.read_exact_at(&mut buf[..n], at).is_err() || buf[..n].iter().any(|&b| b != 0) {
            return false;
        }
        at += n as u64;
    }
    true
}

/// Reads a segment header; `Err(detail)` if it is missing or invalid.
fn read_header(file: &std::fs::File, len: u64) -> Result<SegmentHeader, &'static str> {
    if len < HEADER_LEN as u64 {
        return Err("segment header is cut short");
    }
    let mut b = [0u8; HEADER_LEN];
    file.read_exact_at(&mut b, 0)
        .map_err(|_| "segment header unreadable")?;
    SegmentHeader::decode(&b)
}

/// Opens the store files in `dir` (the caller holds the lock).
pub(super) fn recover(dir: &Path, max_len: usize) -> Result<Recovered, StoreError> {
    let (mut ids, hints) = list_dir(dir, true)?;
    let mut stale_removed = false;
    for stale in hints.iter().filter(|h| ids.binary_search(h).is_err()) {
        stale_removed |= io::remove_file(&hint_path(dir, *stale)).is_ok();
    }
    if stale_removed {
        io::sync_dir(dir).map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))?;
    }
    let next_id = ids.last().map_or(1, |l| l + 1);
    let mut index = Index::default();
    let (mut revision, mut floor) = (0u64, 0u64);
    let mut sealed = BTreeMap::new();
    let mut active = None;

    // A crash while creating a segment can leave the last file shorter than
    // its header: it holds no record, so it is removed.
    if let Some(&last) = ids.last() {
        let path = segment_path(dir, last);
        let len = std::fs::metadata(&path)
            .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?
            .len();
        let file = std::fs::File::open(&path)
            .map_err(|e| StoreError::io(format!("opening {}", path.display()), e))?;
        if len <= HEADER_LEN as u64 && read_header(&file, len).is_err() {
            tracing::warn!(
                "removing segment {} with a torn header ({len} bytes)",
                path.display()
            );
            io::remove_file(&path)
                .map_err(|e| StoreError::io(format!("removing {}", path.display()), e))?;
            io::sync_dir(dir)
                .map_err(|e| StoreError::io(format!("syncing {}", dir.display()), e))?;
            ids.pop();
        }
    }

    for (n, &id) in ids.iter().enumerate() {
        let is_last = n + 1 == ids.len();
        let path = segment_path(dir, id);
        let ctx = || format!("opening {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(is_last)
            .open(&path)
            .map_err(|e| StoreError::io(ctx(), e))?;
        let len = file.metadata().map_err(|e| StoreError::io(ctx(), e))?.len();
        let header = read_header(&file, len).map_err(|d| StoreError::corrupt(&path, 0, d))?;
        if header.id != id {
            return Err(StoreError::corrupt(
                &path,
                0,
                "segment id does not match the file name",
            ));
        }
        revision = revision.max(header.base_revision);
        floor = floor.max(header.floor);
        // Nothing writes this file while the map lives (we hold the
        // directory lock), and the map is dropped before the torn-tail
        // truncation below.
        let map = SegmentBytes::load(&path, &file)?;
        let bytes: &[u8] = &map;
        let mut start = HEADER_LEN;
        if hints.contains(&id) {
            let hint_bytes = std::fs::read(hint_path(dir, id)).unwrap_or_default();
            let parsed = hint::parse(&hint_bytes, id, header.salt, len, |e| {
                revision = revision.max(e.revision);
                apply_op(&mut index, e.revision, e.kind, e.key, e.loc);
            });
            match parsed {
                Some(covered) => start = covered as usize,
                None => tracing::warn!("ignoring invalid hint file for segment {}", path.display()),
            }
        }
        let w = walk(bytes, start, header.salt, max_len, |at, rec, ops| {
            revision = revision.max(rec.revision);
            for op in ops {
                let loc = Loc {
                    segment: id,
                    offset: at as u64,
                    rec_len: rec.len as u32,
                    value_offset: op.value_offset as u32,
                    value_len: op.value.len() as u32,
                };
                apply_op(&mut index, rec.revision, op.kind, op.key, loc);
            }
        });
        let torn = match w.damage {
            None => None,
            Some((at, detail)) => {
                if !is_last || find_valid_record(bytes, at + 1, header.salt, max_len).is_some() {
                    return Err(StoreError::corrupt(&path, at as u64, detail));
                }
                Some((at, detail))
            }
        };
        if !is_last {
            let segment = Sealed::new(path, map, header);
            // A segment replayed without a hint was read whole.
            if start < len as usize {
                segment.release_pages();
            }
            sealed.insert(id, std::sync::Arc::new(segment));
            continue;
        }
        drop(map);
        if let Some((at, detail)) = torn {
            if zeros_from(&file, at as u64, len) {
                // Preallocated space left by a crash: nothing was lost.
                tracing::debug!("trimming preallocated zeros of {}", path.display());
            } else {
                tracing::warn!(
                    "truncating torn tail of {} at offset {at} ({detail}; {} bytes dropped)",
                    path.display(),
                    len - at as u64
                );
            }
            io::set_len(&file, at as u64).map_err(|e| StoreError::io(ctx(), e))?;
            io::sync_data(&file).map_err(|e| StoreError::io(ctx(), e))?;
        }
        active = Some(Active::reopen(path, file, header, w.end as u64)?);
    }
    let active = match active {
        Some(a) => a,
        None => Active::create(
            dir,
            SegmentHeader {
                id: next_id,
                salt: new_salt(),
                base_revision: revision,
                floor,
            },
        )?,
    };
    Ok(Recovered {
        sealed,
        active,
        index,
        revision,
        floor,
    })
}
