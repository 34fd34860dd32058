//! Keys kept in memory only: served and notified like any other, never
//! written to disk, gone after a restart (`nkv-server --volatile PREFIX`,
//! and ephemeral keys).
//!
//! The same persistent B-tree as the log store's index (`imbl::OrdMap`),
//! holding the values themselves: a snapshot is an O(1) clone.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use imbl::OrdMap;

use crate::key::{covers, validate_key, validate_prefix};
use crate::store::{Change, Changes, Entry, Key, Options, StoreError, ViewEntry};

use super::{Backend, BackendStats, Snapshot, Write};

/// Tombstones are pruned once there are at least this many (and more than
/// live keys): below it they cost less than the scan.
const PRUNE_MIN_TOMBSTONES: u64 = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Live { revision: u64, value: Bytes },
    Tomb { revision: u64 },
}

impl Slot {
    fn revision(&self) -> u64 {
        match self {
            Slot::Live { revision, .. } | Slot::Tomb { revision } => *revision,
        }
    }
}

/// The in-memory backend (see the module docs).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    map: OrdMap<Key, Slot>,
    revision: u64,
    floor: u64,
    live: u64,
    tombstones: u64,
    data_bytes: u64,
    /// Tombstones newer than `revision - retention` are kept.
    retention: u64,
    /// Prune when `tombstones` reaches this (doubles after each prune, so
    /// pruning costs O(1) per write on average).
    prune_at: u64,
    max_key_len: usize,
    max_value_len: usize,
}

impl MemoryStore {
    /// An empty store with the key, value and tombstone limits of
    /// `options` (the same as the log store's, so a key is accepted or
    /// refused alike wherever it lives).
    pub fn new(options: &Options) -> MemoryStore {
        MemoryStore {
            map: OrdMap::new(),
            revision: 0,
            floor: 0,
            live: 0,
            tombstones: 0,
            data_bytes: 0,
            retention: options.tombstone_retention,
            prune_at: PRUNE_MIN_TOMBSTONES,
            max_key_len: options.max_key_len,
            max_value_len: options.max_value_len,
        }
    }

    /// Starts the revision counter and the floor at these values (a
    /// restart: revisions are never reused, and a resume from before it
    /// must not be served from an empty memory).
    pub fn start_at(&mut self, revision: u64, floor: u64) {
        self.revision = self.revision.max(revision);
        self.floor = self.floor.max(floor);
    }

    /// True when no key, live or deleted, is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn set(&mut self, key: &str, slot: Slot) {
        match &slot {
            Slot::Live { value, .. } => {
                self.live += 1;
                self.data_bytes += (key.len() + value.len()) as u64;
            }
            Slot::Tomb { .. } => self.tombstones += 1,
        }
        match self.map.insert(Key::from(key), slot) {
            Some(Slot::Live { value, .. }) => {
                self.live -= 1;
                self.data_bytes -= (key.len() + value.len()) as u64;
            }
            Some(Slot::Tomb { .. }) => self.tombstones -= 1,
            None => {}
        }
    }

    /// Drops tombstones older than the retention and raises the floor to
    /// the newest one dropped.
    fn prune(&mut self) {
        if self.tombstones < self.prune_at.max(self.live) {
            return;
        }
        let keep_after = self.revision.saturating_sub(self.retention);
        let old: Vec<(Key, u64)> = self
            .map
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Tomb { revision } if *revision <= keep_after => Some((k.clone(), *revision)),
                _ => None,
            })
            .collect();
        for (key, revision) in old {
            self.map.remove(&key);
            self.tombstones -= 1;
            self.floor = self.floor.max(revision);
        }
        self.prune_at = (self.tombstones * 2).max(PRUNE_MIN_TOMBSTONES);
    }

    fn check(&self, writes: &[Write<'_>]) -> Result<(), StoreError> {
        for w in writes {
            validate_key(w.key(), self.max_key_len)?;
            if let Write::Put { value, .. } = w {
                if value.len() > self.max_value_len {
                    return Err(StoreError::ValueTooLarge {
                        len: value.len(),
                        max: self.max_value_len,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Backend for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn durable(&self) -> bool {
        false
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn revision(&self) -> u64 {
        self.revision
    }

    fn floor(&self) -> u64 {
        self.floor
    }

    fn advance(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
    }

    fn current(&self, key: &str) -> Option<u64> {
        match self.map.get(key) {
            Some(Slot::Live { revision, .. }) => Some(*revision),
            _ => None,
        }
    }

    fn live_keys(&self, prefix: &str) -> Vec<Key> {
        covered(&self.map, prefix, None)
            .filter(|(_, s)| matches!(s, Slot::Live { .. }))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn apply(&mut self, revision: u64, writes: &[Write<'_>]) -> Result<(), StoreError> {
        // Everything is checked before anything changes: all or nothing.
        self.check(writes)?;
        if writes.is_empty() {
            return Ok(());
        }
        for w in writes {
            match *w {
                Write::Put { key, value } => self.set(
                    key,
                    Slot::Live {
                        revision,
                        value: Bytes::copy_from_slice(value),
                    },
                ),
                Write::Delete { key } => self.set(key, Slot::Tomb { revision }),
            }
        }
        self.revision = self.revision.max(revision);
        self.prune();
        Ok(())
    }

    fn read(&self, key: &str, f: &mut dyn FnMut(u64, &[u8])) -> Result<bool, StoreError> {
        validate_key(key, self.max_key_len)?;
        Ok(read(&self.map, key, f))
    }

    fn changes_since(&self, prefix: &str, revision: u64) -> Result<Changes, StoreError> {
        validate_prefix(prefix, self.max_key_len)?;
        if revision < self.floor || revision > self.revision {
            return Ok(Changes::TooOld { floor: self.floor });
        }
        let mut out: Vec<Change> = covered(&self.map, prefix, None)
            .filter(|(_, s)| s.revision() > revision)
            .map(|(key, slot)| match slot {
                Slot::Live { revision, value } => Change::Put {
                    key: key.to_string(),
                    entry: Entry {
                        value: value.clone(),
                        revision: *revision,
                    },
                },
                Slot::Tomb { revision } => Change::Delete {
                    key: key.to_string(),
                    revision: *revision,
                },
            })
            .collect();
        out.sort_by_key(Change::revision);
        Ok(Changes::Since(out))
    }

    fn snapshot(&self) -> Arc<dyn Snapshot> {
        Arc::new(self.frozen())
    }

    fn stats(&self) -> BackendStats {
        BackendStats {
            keys: self.live,
            tombstones: self.tombstones,
            data_bytes: self.data_bytes,
        }
    }
}

impl MemoryStore {
    /// A snapshot of the concrete type (what [`Backend::snapshot`] boxes).
    pub fn frozen(&self) -> MemorySnapshot {
        MemorySnapshot {
            map: self.map.clone(),
            revision: self.revision,
            floor: self.floor,
            live: self.live,
            max_key_len: self.max_key_len,
        }
    }
}

/// A consistent copy of a [`MemoryStore`] (an O(1) clone of its tree).
#[derive(Debug, Clone)]
pub struct MemorySnapshot {
    map: OrdMap<Key, Slot>,
    revision: u64,
    floor: u64,
    live: u64,
    max_key_len: usize,
}

impl MemorySnapshot {
    /// True when it holds no key, live or deleted.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl Snapshot for MemorySnapshot {
    fn revision(&self) -> u64 {
        self.revision
    }

    fn floor(&self) -> u64 {
        self.floor
    }

    fn live_keys(&self) -> u64 {
        self.live
    }

    fn read(&self, key: &str, f: &mut dyn FnMut(u64, &[u8])) -> Result<bool, StoreError> {
        validate_key(key, self.max_key_len)?;
        Ok(read(&self.map, key, f))
    }

    fn walk<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        since: Option<u64>,
    ) -> Box<dyn Iterator<Item = Result<ViewEntry, StoreError>> + 'a> {
        if let Err(e) = validate_prefix(prefix, self.max_key_len) {
            return Box::new(std::iter::once(Err(e.into())));
        }
        Box::new(
            covered(&self.map, prefix, after).filter_map(move |(key, slot)| match (slot, since) {
                (Slot::Live { revision, value }, s) if s.is_none_or(|s| *revision > s) => {
                    Some(Ok(ViewEntry::Live {
                        key: key.clone(),
                        entry: Entry {
                            value: value.clone(),
                            revision: *revision,
                        },
                    }))
                }
                (Slot::Tomb { revision }, Some(s)) if *revision > s => {
                    Some(Ok(ViewEntry::Deleted {
                        key: key.clone(),
                        revision: *revision,
                    }))
                }
                _ => None,
            }),
        )
    }
}

fn read(map: &OrdMap<Key, Slot>, key: &str, f: &mut dyn FnMut(u64, &[u8])) -> bool {
    match map.get(key) {
        Some(Slot::Live { revision, value }) => {
            f(*revision, value);
            true
        }
        _ => false,
    }
}

/// Every key covered by `prefix` in key order, after `after` (see the log
/// index's `covered`: "net-x" sorts between "net" and "net.x").
fn covered<'a>(
    map: &'a OrdMap<Key, Slot>,
    prefix: &'a str,
    after: Option<&'a str>,
) -> impl Iterator<Item = (&'a Key, &'a Slot)> + 'a {
    let start = match after {
        Some(key) if key >= prefix => Bound::Excluded(key),
        _ => Bound::Included(prefix),
    };
    map.range::<_, str>((start, Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
        .filter(move |(k, _)| covers(prefix, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_tombstones_go_and_the_floor_rises_past_them() {
        let options = Options {
            tombstone_retention: 10,
            ..Options::default()
        };
        let mut store = MemoryStore::new(&options);
        let mut revision = 0;
        for i in 0..3000u64 {
            let key = format!("k.{i}");
            revision += 1;
            store
                .apply(
                    revision,
                    &[Write::Put {
                        key: &key,
                        value: b"v",
                    }],
                )
                .unwrap();
            revision += 1;
            store
                .apply(revision, &[Write::Delete { key: &key }])
                .unwrap();
        }
        let stats = store.stats();
        assert_eq!(stats.keys, 0);
        assert!(stats.tombstones < 2100, "tombstones are pruned: {stats:?}");
        let floor = Backend::floor(&store);
        assert!(floor > 0 && floor <= revision - 10, "floor {floor}");
        assert!(matches!(
            store.changes_since("", floor - 1),
            Ok(Changes::TooOld { .. })
        ));
        // Deletes within the retention are still told.
        match store.changes_since("", revision - 3).unwrap() {
            Changes::Since(changes) => assert_eq!(changes.len(), 2),
            other => panic!("{other:?}"),
        }
    }
}
