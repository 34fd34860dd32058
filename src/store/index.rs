//! The in-memory index: every key (live or tombstoned) in key order.
//!
//! A `BTreeMap` keeps keys sorted, so a prefix scan is one range walk. Each
//! slot remembers the revision of the key's last write and, for a live key,
//! where its record lies. Applying a write keeps the slot with the highest
//! revision ("max revision wins"), which makes replay insensitive to the
//! order of put and delete records across segments: a compaction output
//! replayed next to the segments it came from never reverts a key.

use std::collections::BTreeMap;

use crate::key::covers;

use super::format::RECORD_HEADER_LEN;

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
}

/// Ordered map of every key to its slot, with running counts.
#[derive(Default)]
pub(crate) struct Index {
    map: BTreeMap<String, Slot>,
    live: u64,
    tombstones: u64,
    live_bytes: u64,
}

impl Index {
    /// The slot of `key`.
    pub fn get(&self, key: &str) -> Option<&Slot> {
        self.map.get(key)
    }

    /// Revision of `key` if it is live.
    pub fn current(&self, key: &str) -> Option<u64> {
        match self.map.get(key) {
            Some(Slot::Live { revision, .. }) => Some(*revision),
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

    fn count(&mut self, key: &str, slot: &Slot, sign: i64) {
        let fp = slot.footprint(key);
        let (n, bytes) = (&mut self.live, &mut self.live_bytes);
        let t = &mut self.tombstones;
        let target = if matches!(slot, Slot::Live { .. }) {
            n
        } else {
            t
        };
        if sign > 0 {
            *target += 1;
            *bytes += fp;
        } else {
            *target -= 1;
            *bytes -= fp;
        }
    }

    /// Sets `key` to `slot` unless the key already has a newer revision.
    /// Returns whether the slot was stored.
    pub fn apply(&mut self, key: &str, slot: Slot) -> bool {
        if let Some(old) = self.map.get(key).copied() {
            // Equal revisions: the later operation wins. That is the order
            // inside one batch record (put then delete of the same key), and
            // a compaction copy of a slot is identical to what it replaces.
            if old.revision() > slot.revision() {
                return false;
            }
            self.count(key, &old, -1);
            self.count(key, &slot, 1);
            *self.map.get_mut(key).expect("present") = slot;
        } else {
            self.count(key, &slot, 1);
            self.map.insert(key.to_owned(), slot);
        }
        true
    }

    /// Moves live keys to new locations after compaction copied their
    /// records: `locs` has one item per slot, in key order (`None`: keep).
    /// Sizes are unchanged, so the counts stay right.
    pub fn relocate_in_order(&mut self, locs: impl IntoIterator<Item = Option<Loc>>) {
        for (slot, new) in self.map.values_mut().zip(locs) {
            if let (Slot::Live { loc, .. }, Some(new)) = (slot, new) {
                debug_assert_eq!(loc.value_len, new.value_len);
                *loc = new;
            }
        }
    }

    /// Tombstones every live key covered by `prefix` whose revision is below
    /// `revision`. Returns the keys deleted, in key order.
    pub fn delete_prefix(&mut self, prefix: &str, revision: u64) -> Vec<String> {
        let keys: Vec<String> = self
            .covered(prefix)
            .filter(|(_, s)| matches!(s, Slot::Live { revision: r, .. } if *r < revision))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.apply(k, Slot::Tomb { revision });
        }
        keys
    }

    /// Every key covered by `prefix` (segment-boundary rule), in key order.
    pub fn covered<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a Slot)> + 'a {
        // Keys under `net` start with "net", but "net-x" sorts between "net"
        // and "net.x", so the walk filters with `covers` until the text
        // prefix no longer matches.
        self.map
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .filter(move |(k, _)| covers(prefix, k))
    }

    /// Every slot in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Slot)> {
        self.map.iter()
    }

    /// Drops tombstones with revision `<= cutoff`; returns how many, and the
    /// highest revision dropped (0 if none).
    pub fn drop_tombstones(&mut self, cutoff: u64) -> (u64, u64) {
        let (mut dropped, mut max, mut bytes) = (0u64, 0u64, 0u64);
        self.map.retain(|key, slot| match *slot {
            Slot::Tomb { revision } if revision <= cutoff => {
                dropped += 1;
                max = max.max(revision);
                bytes += slot.footprint(key);
                false
            }
            _ => true,
        });
        self.tombstones -= dropped;
        self.live_bytes -= bytes;
        (dropped, max)
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
        assert!(ix.apply("a", Slot::Tomb { revision: 6 }));
        assert_eq!(ix.current("a"), None);
        assert_eq!((ix.live_keys(), ix.tombstones()), (0, 1));
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
        let keys: Vec<_> = ix.covered("net").map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["net", "net.a"]);
        assert_eq!(ix.delete_prefix("net", 9), ["net", "net.a"]);
        assert_eq!(ix.current("network"), Some(4));
        assert_eq!(ix.drop_tombstones(9), (2, 9));
        assert_eq!(ix.tombstones(), 0);
    }
}
