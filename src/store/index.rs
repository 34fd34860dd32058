//! The in-memory index: every key (live or tombstoned) in key order.
//!
//! A persistent B-tree (`imbl::OrdMap`): cloning it is O(1) and shares
//! every node, and a write copies only the nodes on its path that a clone
//! still shares. That is what lets the engine publish a consistent
//! [`View`](super::View) after every commit for readers on other threads,
//! and lets a slow LIST or subscription snapshot walk its view for as long
//! as it needs without holding writers back or copying the store.
//!
//! Each slot remembers the revision of the key's last write and, for a
//! live key, where its record lies. Applying a write keeps the slot with
//! the highest revision ("max revision wins"), which makes replay
//! insensitive to the order of put and delete records across segments: a
//! compaction output replayed next to the segments it came from never
//! reverts a key.

use std::ops::Bound;

use crate::key::covers;

use super::format::RECORD_HEADER_LEN;

/// A key as the index stores it: up to 24 bytes inline (no allocation:
/// most keys on a device are short dotted paths), longer ones on the heap.
/// An `Arc<str>` cost a pointer in the node plus a 48-byte allocation per
/// key, the largest part of the index's memory.
pub type Key = compact_str::CompactString;

/// Where a live value is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Segment id.
    pub segment: u64,
    /// Offset of the whole record in the segment.
    pub offset: u64,
    /// Length of the whole record (checked by CRC on every read).
    pub rec_len: u32,
    /// Offset of the value from the start of the record.
    pub value_offset: u32,
    /// Length of the value.
    pub value_len: u32,
}

/// The state of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The key exists; its last write has `revision`.
    Live {
        /// Revision of the last write.
        revision: u64,
        /// Where the value is.
        loc: Loc,
    },
    /// The key was deleted at `revision`; kept for `changes_since`.
    Tomb {
        /// Revision of the delete.
        revision: u64,
    },
}

impl Slot {
    /// Revision of the last write of this key.
    pub fn revision(&self) -> u64 {
        match *self {
            Slot::Live { revision, .. } | Slot::Tomb { revision } => revision,
        }
    }

    /// Bytes compaction would write for this slot: the live-data measure.
    fn footprint(&self, key: &str) -> u64 {
        let value = match self {
            Slot::Live { loc, .. } => loc.value_len as u64,
            Slot::Tomb { .. } => 0,
        };
        (RECORD_HEADER_LEN + key.len()) as u64 + value
    }

    /// Bytes of key and value a user stored: the `bytes` of STATS.
    fn data(&self, key: &str) -> u64 {
        match self {
            Slot::Live { loc, .. } => key.len() as u64 + loc.value_len as u64,
            Slot::Tomb { .. } => 0,
        }
    }
}

/// Ordered map of every key to its slot, with running counts. Cloning is
/// O(1) (see the module docs).
#[derive(Default, Clone)]
pub(crate) struct Index {
    map: imbl::OrdMap<Key, Slot>,
    live: u64,
    tombstones: u64,
    live_bytes: u64,
    data_bytes: u64,
}

impl Index {
    /// The slot of `key`.
    pub fn get(&self, key: &str) -> Option<&Slot> {
        self.map.get(key)
    }

    /// Revision of `key` if it is live.
    pub fn current(&self, key: &str) -> Option<u64> {
        match self.map.get(key) {
            Some(&Slot::Live { revision, .. }) => Some(revision),
            _ => None,
        }
    }

    /// Number of live keys.
    pub fn live_keys(&self) -> u64 {
        self.live
    }

    /// Number of tombstones.
    pub fn tombstones(&self) -> u64 {
        self.tombstones
    }

    /// Bytes a compaction would write (record bytes of live keys and tombstones).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Bytes of the keys and values of live keys.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    fn count(&mut self, key: &str, slot: &Slot, add: bool) {
        let (footprint, data) = (slot.footprint(key), slot.data(key));
        let n = if matches!(slot, Slot::Live { .. }) {
            &mut self.live
        } else {
            &mut self.tombstones
        };
        if add {
            *n += 1;
            self.live_bytes += footprint;
            self.data_bytes += data;
        } else {
            *n -= 1;
            self.live_bytes -= footprint;
            self.data_bytes -= data;
        }
    }

    /// Sets `key` to `slot` unless the key already has a newer revision.
    /// Returns whether the slot was stored.
    pub fn apply(&mut self, key: &str, slot: Slot) -> bool {
        // One walk down the tree for an existing key (the common case).
        let replaced = match self.map.get_mut(key) {
            Some(current) => {
                let old = *current;
                // Equal revisions: the later operation wins. That is the
                // order inside one batch record (put then delete of the same
                // key), and a compaction copy of a slot is identical to what
                // it replaces.
                if old.revision() > slot.revision() {
                    return false;
                }
                *current = slot;
                Some(old)
            }
            None => None,
        };
        match replaced {
            Some(old) => self.count(key, &old, false),
            None => {
                self.map.insert(Key::from(key), slot);
            }
        }
        self.count(key, &slot, true);
        true
    }

    /// [`Index::apply`] for replay at open, where most keys are new: one
    /// walk down the tree (an insert) instead of a lookup and an insert.
    /// The rare older slot (a compaction output replayed beside its
    /// inputs) is put back with a second walk.
    pub fn replay(&mut self, key: &str, slot: Slot) -> bool {
        match self.map.insert(Key::from(key), slot) {
            None => {
                self.count(key, &slot, true);
                true
            }
            Some(old) if old.revision() > slot.revision() => {
                self.map.insert(Key::from(key), old);
                false
            }
            Some(old) => {
                self.count(key, &old, false);
                self.count(key, &slot, true);
                true
            }
        }
    }

    /// Replaces `key`'s slot by `new` if it is still `expect` (compaction
    /// moving a record, unless the key was written meanwhile). Returns
    /// whether it did.
    pub fn relocate(&mut self, key: &str, expect: &Slot, new: Slot) -> bool {
        match self.map.get(key) {
            Some(current) if current == expect => {}
            _ => return false,
        }
        self.count(key, expect, false);
        self.count(key, &new, true);
        *self.map.get_mut(key).expect("present") = new;
        true
    }

    /// Forgets `key` if its slot is still `expect` (compaction dropping an
    /// old tombstone). Returns whether it did.
    pub fn forget(&mut self, key: &str, expect: &Slot) -> bool {
        match self.map.get(key) {
            Some(current) if current == expect => {}
            _ => return false,
        }
        self.count(key, expect, false);
        self.map.remove(key);
        true
    }

    /// Tombstones every live key covered by `prefix` whose revision is below
    /// `revision`. Returns the keys deleted, in key order.
    pub fn delete_prefix(&mut self, prefix: &str, revision: u64) -> Vec<Key> {
        let keys: Vec<Key> = self
            .covered(prefix, None)
            .filter(|(_, s)| matches!(s, Slot::Live { revision: r, .. } if *r < revision))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.apply(k, Slot::Tomb { revision });
        }
        keys
    }

    /// Every key covered by `prefix` (segment-boundary rule), in key order,
    /// starting after the key `after` when given (to resume a walk).
    pub fn covered<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Slot)> + 'a {
        // Keys under `net` start with "net", but "net-x" sorts between "net"
        // and "net.x", so the walk filters with `covers` until the text
        // prefix no longer matches.
        let start = match after {
            Some(key) if key >= prefix => Bound::Excluded(key),
            _ => Bound::Included(prefix),
        };
        self.map
            .range::<_, str>((start, Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .filter(move |(k, _)| covers(prefix, k))
    }

    /// Every slot in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Slot)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(rev: u64) -> Slot {
        let loc = Loc {
            segment: 1,
            offset: 64,
            rec_len: 30,
            value_offset: 25,
            value_len: 5,
        };
        Slot::Live { revision: rev, loc }
    }

    #[test]
    fn newest_revision_wins_in_any_order() {
        let mut ix = Index::default();
        assert!(ix.apply("a", live(5)));
        assert!(!ix.apply("a", live(3)));
        assert!(!ix.apply("a", Slot::Tomb { revision: 4 }));
        assert_eq!(ix.current("a"), Some(5));
        assert_eq!(ix.data_bytes(), 1 + 5);
        assert!(ix.apply("a", Slot::Tomb { revision: 6 }));
        assert_eq!(ix.current("a"), None);
        assert_eq!((ix.live_keys(), ix.tombstones()), (0, 1));
        assert_eq!(ix.data_bytes(), 0, "a deleted key holds no data");
    }

    #[test]
    fn prefix_on_segment_boundaries() {
        let mut ix = Index::default();
        for (k, r) in [
            ("net", 1),
            ("net-x", 2),
            ("net.a", 3),
            ("network", 4),
            ("ne", 5),
        ] {
            ix.apply(k, live(r));
        }
        let keys: Vec<_> = ix.covered("net", None).map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["net", "net.a"]);
        let rest: Vec<_> = ix.covered("net", Some("net")).map(|(k, _)| &**k).collect();
        assert_eq!(rest, ["net.a"]);
        let all: Vec<_> = ix.covered("", Some("net-x")).map(|(k, _)| &**k).collect();
        assert_eq!(all, ["net.a", "network"]);
        let deleted: Vec<_> = ix
            .delete_prefix("net", 9)
            .iter()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(deleted, ["net", "net.a"]);
        assert_eq!(ix.current("network"), Some(4));
    }

    #[test]
    fn a_clone_is_a_snapshot() {
        let mut ix = Index::default();
        ix.apply("a", live(1));
        let snapshot = ix.clone();
        ix.apply("a", live(2));
        ix.apply("b", live(3));
        assert_eq!(snapshot.current("a"), Some(1));
        assert_eq!(snapshot.get("b"), None);
        assert_eq!(snapshot.live_keys(), 1);
        assert_eq!(ix.live_keys(), 2);
    }
}
