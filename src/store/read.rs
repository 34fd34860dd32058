//! The read path: get, prefix scans and changes since a revision, on the
//! store itself and on a [`View`], a consistent snapshot that other threads
//! read while the owner goes on writing.
//!
//! Every read re-checks the record it returns (CRC with the segment salt,
//! revision, key), so bytes damaged at rest give `Corrupt`, never a wrong
//! value. Values in sealed segments are handed out without a copy: the
//! returned `Bytes` keeps the segment's map alive.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;

use crate::key::{validate_key, validate_prefix};

use super::db::Store;
use super::error::StoreError;
use super::format::{decode_record, Kind};
use super::index::{Index, Key, Loc, Slot};
use super::segment::{segment_path, Sealed};
use super::{Change, Changes, Entry};

/// Where records are read from, borrowed from a store, a view or a
/// compaction's inputs.
pub(super) struct Source<'a> {
    pub dir: &'a Path,
    pub sealed: &'a BTreeMap<u64, Arc<Sealed>>,
    /// The active segment, if the records may lie there.
    pub active: Option<ActiveSource<'a>>,
}

/// The active segment, as a [`Source`] reads it.
pub(super) struct ActiveSource<'a> {
    pub id: u64,
    pub salt: u64,
    pub path: &'a Path,
    pub file: &'a File,
    /// Its map (`None`: read it with `pread`).
    pub map: Option<&'a Arc<Mmap>>,
    /// End of its records in the file.
    pub written: u64,
    /// Records of the store's current batch, from `written` on (always
    /// empty for a view).
    pub buffer: &'a [u8],
}

/// What keeps the bytes of a value alive, so it is handed out without a
/// copy.
enum Owner {
    Sealed(Arc<Sealed>),
    Map(Arc<Mmap>),
}

/// A byte range of a segment's bytes, owning them.
struct OwnedSlice {
    owner: Owner,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for OwnedSlice {
    fn as_ref(&self) -> &[u8] {
        let bytes: &[u8] = match &self.owner {
            Owner::Sealed(segment) => segment.bytes(),
            Owner::Map(map) => map,
        };
        &bytes[self.start..self.end]
    }
}

/// A record's bytes, found by [`Source::record`].
struct Found<'a> {
    /// The record (borrowed from a map or the batch buffer, or read).
    bytes: std::borrow::Cow<'a, [u8]>,
    /// For a borrowed record in a segment's bytes: what owns them and
    /// where the record starts in them.
    owner: Option<(Owner, usize)>,
    salt: u64,
    path: &'a Path,
}

impl<'a> Source<'a> {
    /// The bytes of the record at `loc`, without a copy where possible.
    fn record(&self, loc: Loc) -> Result<Found<'a>, StoreError> {
        let rec_len = loc.rec_len as usize;
        let active = self.active.as_ref().filter(|a| a.id == loc.segment);
        let Some(active) = active else {
            let seg = self.sealed.get(&loc.segment).ok_or_else(|| {
                StoreError::corrupt(
                    &segment_path(self.dir, loc.segment),
                    loc.offset,
                    format!("segment {} is missing", loc.segment),
                )
            })?;
            let start = loc.offset as usize;
            let bytes = seg.bytes().get(start..start + rec_len).ok_or_else(|| {
                StoreError::corrupt(&seg.path, loc.offset, "record beyond end of file")
            })?;
            return Ok(Found {
                bytes: bytes.into(),
                owner: Some((Owner::Sealed(seg.clone()), start)),
                salt: seg.header.salt,
                path: &seg.path,
            });
        };
        let (salt, path) = (active.salt, active.path);
        let end = loc.offset + rec_len as u64;
        if loc.offset >= active.written {
            // A record of the batch being written.
            let at = (loc.offset - active.written) as usize;
            let bytes = active
                .buffer
                .get(at..at + rec_len)
                .ok_or_else(|| StoreError::corrupt(path, loc.offset, "record beyond its batch"))?;
            return Ok(Found {
                bytes: bytes.into(),
                owner: None,
                salt,
                path,
            });
        }
        if end > active.written {
            return Err(StoreError::corrupt(
                path,
                loc.offset,
                "record beyond end of file",
            ));
        }
        if let Some(map) = active.map {
            let start = loc.offset as usize;
            return Ok(Found {
                bytes: map[start..start + rec_len].into(),
                owner: Some((Owner::Map(map.clone()), start)),
                salt,
                path,
            });
        }
        let mut buf = vec![0u8; rec_len];
        active
            .file
            .read_exact_at(&mut buf, loc.offset)
            .map_err(|e| StoreError::io(format!("reading {}", path.display()), e))?;
        Ok(Found {
            bytes: buf.into(),
            owner: None,
            salt,
            path,
        })
    }

    /// Checks the record at `loc` and calls `f` with its value, borrowed
    /// (no copy, no allocation for records in a map).
    pub fn with_value<R>(
        &self,
        key: &str,
        revision: u64,
        loc: Loc,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, StoreError> {
        let found = self.record(loc)?;
        check(&found.bytes, found.salt, found.path, key, revision, loc)?;
        let value = found
            .bytes
            .get(loc.value_offset as usize..(loc.value_offset + loc.value_len) as usize)
            .ok_or_else(|| beyond(found.path, loc))?;
        Ok(f(value))
    }

    /// Reads and verifies the record at `loc`, returning the value.
    pub fn read_entry(&self, key: &str, revision: u64, loc: Loc) -> Result<Entry, StoreError> {
        let found = self.record(loc)?;
        check(&found.bytes, found.salt, found.path, key, revision, loc)?;
        let (value_start, value_end) = (
            loc.value_offset as usize,
            loc.value_offset as usize + loc.value_len as usize,
        );
        if value_end > found.bytes.len() {
            return Err(beyond(found.path, loc));
        }
        let value = match found.owner {
            Some((owner, start)) => Bytes::from_owner(OwnedSlice {
                owner,
                start: start + value_start,
                end: start + value_end,
            }),
            None => Bytes::copy_from_slice(&found.bytes[value_start..value_end]),
        };
        Ok(Entry { value, revision })
    }
}

/// One index lookup, then the value borrowed from where it lies.
fn get_with<R>(
    index: &Index,
    source: &Source<'_>,
    key: &str,
    f: impl FnOnce(u64, &[u8]) -> R,
) -> Result<Option<R>, StoreError> {
    match index.get(key) {
        Some(&Slot::Live { revision, loc }) => source
            .with_value(key, revision, loc, |value| f(revision, value))
            .map(Some),
        _ => Ok(None),
    }
}

fn beyond(path: &Path, loc: Loc) -> StoreError {
    StoreError::corrupt(path, loc.offset, "value beyond its record")
}

/// Checks that `bytes` hold a valid record of `key` at `revision`.
fn check(
    bytes: &[u8],
    salt: u64,
    path: &Path,
    key: &str,
    revision: u64,
    loc: Loc,
) -> Result<(), StoreError> {
    let rec = decode_record(bytes, salt, bytes.len())
        .map_err(|d| StoreError::corrupt(path, loc.offset, d))?;
    let single_mismatch = rec.kind != Kind::Batch && rec.key != key;
    if rec.revision != revision || single_mismatch {
        return Err(StoreError::corrupt(
            path,
            loc.offset,
            "record does not match the index",
        ));
    }
    Ok(())
}

/// One key of a [`View`] walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewEntry {
    /// The key holds this entry.
    Live {
        /// The key.
        key: Key,
        /// Its value and revision.
        entry: Entry,
    },
    /// The key was deleted at this revision (only in walks with `since`).
    Deleted {
        /// The key.
        key: Key,
        /// Revision of the delete.
        revision: u64,
    },
}

impl ViewEntry {
    /// The key.
    pub fn key(&self) -> &Key {
        match self {
            ViewEntry::Live { key, .. } | ViewEntry::Deleted { key, .. } => key,
        }
    }
}

/// A consistent, read-only snapshot of the store at one revision. Cheap to
/// clone, `Send + Sync`, readable from any thread while the store's owner
/// goes on writing: it shares the index's nodes and the segments' maps,
/// and keeps both alive for as long as it lives.
#[derive(Clone)]
pub struct View(Arc<ViewState>);

struct ViewState {
    index: Index,
    dir: PathBuf,
    sealed: BTreeMap<u64, Arc<Sealed>>,
    active_id: u64,
    active_salt: u64,
    active_path: PathBuf,
    active_file: Arc<File>,
    active_map: Option<Arc<Mmap>>,
    active_written: u64,
    revision: u64,
    floor: u64,
    max_key_len: usize,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("revision", &self.0.revision)
            .field("keys", &self.0.index.live_keys())
            .finish()
    }
}

impl View {
    fn source(&self) -> Source<'_> {
        let s = &self.0;
        Source {
            dir: &s.dir,
            sealed: &s.sealed,
            active: Some(ActiveSource {
                id: s.active_id,
                salt: s.active_salt,
                path: &s.active_path,
                file: &s.active_file,
                map: s.active_map.as_ref(),
                written: s.active_written,
                buffer: &[],
            }),
        }
    }

    /// The revision this view is consistent at.
    pub fn revision(&self) -> u64 {
        self.0.revision
    }

    /// The tombstone floor of this view: a resume below it is too old.
    pub fn tombstone_floor(&self) -> u64 {
        self.0.floor
    }

    /// True when changes since `revision` cannot be told from this view
    /// (below the tombstone floor, or above its revision): send a full
    /// snapshot instead.
    pub fn too_old(&self, revision: u64) -> bool {
        revision < self.0.floor || revision > self.0.revision
    }

    /// Number of live keys.
    pub fn keys(&self) -> u64 {
        self.0.index.live_keys()
    }

    /// The value and revision of `key`, if it exists.
    pub fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        validate_key(key, self.0.max_key_len)?;
        match self.0.index.get(key) {
            Some(&Slot::Live { revision, loc }) => {
                Ok(Some(self.source().read_entry(key, revision, loc)?))
            }
            _ => Ok(None),
        }
    }

    /// Calls `f` with the revision and value of `key`, if it exists,
    /// without copying the value.
    pub fn get_with<R>(
        &self,
        key: &str,
        f: impl FnOnce(u64, &[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        validate_key(key, self.0.max_key_len)?;
        get_with(&self.0.index, &self.source(), key, f)
    }

    /// The keys covered by `prefix` in key order, starting after the key
    /// `after` if given, as an iterator: without `since` every live key;
    /// with `since` every key written or deleted after that revision. A
    /// value is read (and checked) only for an entry it yields.
    pub fn entries<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        since: Option<u64>,
    ) -> impl Iterator<Item = Result<ViewEntry, StoreError>> + 'a {
        let invalid = validate_prefix(prefix, self.0.max_key_len)
            .err()
            .map(StoreError::from);
        let valid = invalid.is_none();
        let source = self.source();
        let items = self
            .0
            .index
            .covered(prefix, after)
            .filter(move |_| valid)
            .filter_map(move |(key, slot)| match (*slot, since) {
                (Slot::Live { revision, loc }, None) => Some(
                    source
                        .read_entry(key, revision, loc)
                        .map(|entry| ViewEntry::Live {
                            key: key.clone(),
                            entry,
                        }),
                ),
                (Slot::Live { revision, loc }, Some(s)) if revision > s => Some(
                    source
                        .read_entry(key, revision, loc)
                        .map(|entry| ViewEntry::Live {
                            key: key.clone(),
                            entry,
                        }),
                ),
                (Slot::Tomb { revision }, Some(s)) if revision > s => {
                    Some(Ok(ViewEntry::Deleted {
                        key: key.clone(),
                        revision,
                    }))
                }
                _ => None,
            });
        invalid.map(Err).into_iter().chain(items)
    }

    /// Walks the keys covered by `prefix` in key order, starting after the
    /// key `after` if given, calling `each` until it returns false. Without
    /// `since`, every live key; with `since`, every key written or deleted
    /// after that revision (deletes as [`ViewEntry::Deleted`]).
    pub fn walk(
        &self,
        prefix: &str,
        after: Option<&str>,
        since: Option<u64>,
        mut each: impl FnMut(ViewEntry) -> bool,
    ) -> Result<(), StoreError> {
        validate_prefix(prefix, self.0.max_key_len)?;
        let source = self.source();
        for (key, slot) in self.0.index.covered(prefix, after) {
            let item = match (*slot, since) {
                (Slot::Live { revision, loc }, None) => ViewEntry::Live {
                    key: key.clone(),
                    entry: source.read_entry(key, revision, loc)?,
                },
                (Slot::Live { revision, loc }, Some(s)) if revision > s => ViewEntry::Live {
                    key: key.clone(),
                    entry: source.read_entry(key, revision, loc)?,
                },
                (Slot::Tomb { revision }, Some(s)) if revision > s => ViewEntry::Deleted {
                    key: key.clone(),
                    revision,
                },
                _ => continue,
            };
            if !each(item) {
                break;
            }
        }
        Ok(())
    }
}

impl Store {
    pub(super) fn source(&self) -> Source<'_> {
        Source {
            dir: &self.dir,
            sealed: &self.sealed,
            active: Some(ActiveSource {
                id: self.active.header.id,
                salt: self.active.header.salt,
                path: &self.active.path,
                file: &self.active.file,
                map: self.active.map.as_ref(),
                written: self.active.written,
                buffer: &self.active.buffer,
            }),
        }
    }

    /// A consistent view of everything written so far, for readers on
    /// other threads. Take it after `commit` so it shows only durable
    /// writes, and outside a batch (a view reads only written records).
    pub fn view(&self) -> View {
        debug_assert!(self.active.buffer.is_empty(), "a view taken inside a batch");
        View(Arc::new(ViewState {
            index: self.index.clone(),
            dir: self.dir.clone(),
            sealed: self.sealed.clone(),
            active_id: self.active.header.id,
            active_salt: self.active.header.salt,
            active_path: self.active.path.clone(),
            active_file: self.active.file.clone(),
            active_map: self.active.map.clone(),
            active_written: self.active.written,
            revision: self.revision,
            floor: self.floor,
            max_key_len: self.options.max_key_len,
        }))
    }

    /// The revision of `key` if it is live.
    pub fn current(&self, key: &str) -> Option<u64> {
        self.index.current(key)
    }

    /// Every live key covered by `prefix`, in key order.
    pub fn live_keys(&self, prefix: &str) -> Vec<Key> {
        self.index
            .covered(prefix, None)
            .filter(|(_, slot)| matches!(slot, Slot::Live { .. }))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The value and revision of `key`, if it exists.
    pub fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        validate_key(key, self.options.max_key_len)?;
        match self.index.get(key) {
            Some(&Slot::Live { revision, loc }) => {
                Ok(Some(self.source().read_entry(key, revision, loc)?))
            }
            _ => Ok(None),
        }
    }

    /// Calls `f` with the revision and value of `key`, if it exists,
    /// without copying the value.
    pub fn get_with<R>(
        &self,
        key: &str,
        f: impl FnOnce(u64, &[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        validate_key(key, self.options.max_key_len)?;
        get_with(&self.index, &self.source(), key, f)
    }

    /// Every live key covered by `prefix` (segment boundaries: `net` covers
    /// `net` and `net.x`, not `network`), sorted by key.
    pub fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Entry)>, StoreError> {
        validate_prefix(prefix, self.options.max_key_len)?;
        let source = self.source();
        let mut out = Vec::new();
        for (key, slot) in self.index.covered(prefix, None) {
            if let Slot::Live { revision, loc } = *slot {
                out.push((key.to_string(), source.read_entry(key, revision, loc)?));
            }
        }
        Ok(out)
    }

    /// Live entries and tombstones under `prefix` with a revision above
    /// `revision`, by revision; `TooOld` if `revision` is below the floor or
    /// above the store's revision.
    pub fn changes_since(&self, prefix: &str, revision: u64) -> Result<Changes, StoreError> {
        validate_prefix(prefix, self.options.max_key_len)?;
        if revision < self.floor || revision > self.revision {
            return Ok(Changes::TooOld { floor: self.floor });
        }
        let source = self.source();
        let mut out = Vec::new();
        for (key, slot) in self.index.covered(prefix, None) {
            match *slot {
                Slot::Live { revision: r, loc } if r > revision => out.push(Change::Put {
                    key: key.to_string(),
                    entry: source.read_entry(key, r, loc)?,
                }),
                Slot::Tomb { revision: r } if r > revision => out.push(Change::Delete {
                    key: key.to_string(),
                    revision: r,
                }),
                _ => {}
            }
        }
        out.sort_by_key(Change::revision);
        Ok(Changes::Since(out))
    }
}
