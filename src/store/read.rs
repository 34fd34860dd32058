//! The read path: get, prefix scans and changes since a revision. Every
//! read re-checks the record it returns (CRC with the segment salt,
//! revision, key), so bytes damaged at rest give `Corrupt`, never a wrong
//! value.

use bytes::Bytes;

use crate::key::{validate_key, validate_prefix};

use super::db::Store;
use super::error::StoreError;
use super::format::{decode_record, Kind};
use super::index::{Loc, Slot};
use super::{Change, Changes, Entry};

impl Store {
    /// The value and revision of `key`, if it exists.
    pub fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        validate_key(key, self.options.max_key_len)?;
        match self.index.get(key) {
            Some(&Slot::Live { revision, loc }) => Ok(Some(self.read_entry(key, revision, loc)?)),
            _ => Ok(None),
        }
    }

    /// Every live key covered by `prefix` (segment boundaries: `net` covers
    /// `net` and `net.x`, not `network`), sorted by key.
    pub fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Entry)>, StoreError> {
        validate_prefix(prefix, self.options.max_key_len)?;
        let mut out = Vec::new();
        for (key, slot) in self.index.covered(prefix) {
            if let Slot::Live { revision, loc } = *slot {
                out.push((key.clone(), self.read_entry(key, revision, loc)?));
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
        let mut out = Vec::new();
        for (key, slot) in self.index.covered(prefix) {
            match *slot {
                Slot::Live { revision: r, loc } if r > revision => out.push(Change::Put {
                    key: key.clone(),
                    entry: self.read_entry(key, r, loc)?,
                }),
                Slot::Tomb { revision: r } if r > revision => out.push(Change::Delete {
                    key: key.clone(),
                    revision: r,
                }),
                _ => {}
            }
        }
        out.sort_by_key(Change::revision);
        Ok(Changes::Since(out))
    }

    /// Reads and verifies the record at `loc`, returning the value.
    pub(super) fn read_entry(
        &self,
        key: &str,
        revision: u64,
        loc: Loc,
    ) -> Result<Entry, StoreError> {
        let (owned, path, salt);
        let bytes: &[u8] = if loc.segment == self.active.header.id {
            owned = self.active.read(loc.offset, loc.rec_len as usize)?;
            (path, salt) = (&self.active.path, self.active.header.salt);
            &owned
        } else {
            let seg = self.sealed.get(&loc.segment).ok_or_else(|| {
                StoreError::corrupt(
                    &super::segment::segment_path(&self.dir, loc.segment),
                    loc.offset,
                    format!("segment {} is missing", loc.segment),
                )
            })?;
            (path, salt) = (&seg.path, seg.header.salt);
            let start = loc.offset as usize;
            seg.bytes()
                .get(start..start + loc.rec_len as usize)
                .ok_or_else(|| {
                    StoreError::corrupt(&seg.path, loc.offset, "record beyond end of file")
                })?
        };
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
        let start = loc.value_offset as usize;
        let value = bytes
            .get(start..start + loc.value_len as usize)
            .ok_or_else(|| StoreError::corrupt(path, loc.offset, "value beyond its record"))?;
        Ok(Entry {
            value: Bytes::copy_from_slice(value),
            revision,
        })
    }
}
