//! A consistent snapshot of both sides of [`Tiers`](super::Tiers): what
//! LIST, subscription snapshots and readers under `--fsync always` read.

use std::iter::Peekable;
use std::sync::Arc;

use crate::store::{Entry, StoreError, View, ViewEntry};

use super::memory::{MemorySnapshot, MemoryStore};
use super::Snapshot;

/// Both sides at one revision. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct TiersSnapshot(Arc<Inner>);

struct Inner {
    log: View,
    /// `None` when memory held nothing (the usual case: reads skip it).
    memory: Option<MemorySnapshot>,
    revision: u64,
    floor: u64,
}

impl std::fmt::Debug for TiersSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TiersSnapshot")
            .field("revision", &self.0.revision)
            .field("keys", &self.keys())
            .finish()
    }
}

impl TiersSnapshot {
    pub(super) fn new(log: View, memory: &MemoryStore, revision: u64, floor: u64) -> Self {
        let memory = (!memory.is_empty()).then(|| memory.frozen());
        TiersSnapshot(Arc::new(Inner {
            log,
            memory,
            revision,
            floor,
        }))
    }

    /// The revision this snapshot is consistent at.
    pub fn revision(&self) -> u64 {
        self.0.revision
    }

    /// Its tombstone floor: a resume below it is too old.
    pub fn tombstone_floor(&self) -> u64 {
        self.0.floor
    }

    /// True when changes since `revision` cannot be told from this
    /// snapshot (below the floor, or above its revision).
    pub fn too_old(&self, revision: u64) -> bool {
        revision < self.0.floor || revision > self.0.revision
    }

    /// Number of live keys.
    pub fn keys(&self) -> u64 {
        self.0.log.keys() + self.0.memory.as_ref().map_or(0, |m| m.live_keys())
    }

    /// The value and revision of `key`, if it exists.
    pub fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.get_with(key, |revision, value| Entry {
            value: bytes::Bytes::copy_from_slice(value),
            revision,
        })
    }

    /// Calls `f` with the revision and value of `key`, if it exists,
    /// without copying the value.
    pub fn get_with<R>(
        &self,
        key: &str,
        f: impl FnOnce(u64, &[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        let Some(memory) = &self.0.memory else {
            return self.0.log.get_with(key, f);
        };
        let mut f = Some(f);
        let mut out = None;
        let mut take = |r: u64, v: &[u8]| out = f.take().map(|f| f(r, v));
        if !memory.read(key, &mut take)? {
            Snapshot::read(&self.0.log, key, &mut take)?;
        }
        Ok(out)
    }

    /// The keys covered by `prefix` in key order after `after`: without
    /// `since` every live key, with `since` every key written or deleted
    /// after it (see [`View::walk`]), from both sides merged.
    pub fn entries<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        since: Option<u64>,
    ) -> Box<dyn Iterator<Item = Result<ViewEntry, StoreError>> + 'a> {
        let log = self.0.log.entries(prefix, after, since);
        match &self.0.memory {
            None => Box::new(log),
            Some(memory) => Box::new(Merge {
                a: log.peekable(),
                b: memory.walk(prefix, after, since).peekable(),
            }),
        }
    }

    /// Calls `each` for every entry of [`TiersSnapshot::entries`] until it
    /// returns false.
    pub fn walk(
        &self,
        prefix: &str,
        after: Option<&str>,
        since: Option<u64>,
        mut each: impl FnMut(ViewEntry) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.entries(prefix, after, since) {
            if !each(item?) {
                break;
            }
        }
        Ok(())
    }
}

/// Two key-ordered walks as one. A key on both sides (it moved, so one
/// side has its delete and the other its newer state) yields the newer
/// entry; at the same revision the live one.
struct Merge<A: Iterator, B: Iterator> {
    a: Peekable<A>,
    b: Peekable<B>,
}

type Item = Result<ViewEntry, StoreError>;

impl<A: Iterator<Item = Item>, B: Iterator<Item = Item>> Iterator for Merge<A, B> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        let order = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) | (Some(Err(_)), _) => return self.a.next(),
            (None, Some(_)) | (_, Some(Err(_))) => return self.b.next(),
            (Some(Ok(a)), Some(Ok(b))) => a.key().cmp(b.key()),
        };
        match order {
            std::cmp::Ordering::Less => self.a.next(),
            std::cmp::Ordering::Greater => self.b.next(),
            std::cmp::Ordering::Equal => {
                let (a, b) = (self.a.next()?, self.b.next()?);
                match (a, b) {
                    (Ok(a), Ok(b)) => Some(Ok(if newer(&b, &a) { b } else { a })),
                    (Err(e), _) | (_, Err(e)) => Some(Err(e)),
                }
            }
        }
    }
}

fn revision(entry: &ViewEntry) -> u64 {
    match entry {
        ViewEntry::Live { entry, .. } => entry.revision,
        ViewEntry::Deleted { revision, .. } => *revision,
    }
}

fn newer(a: &ViewEntry, b: &ViewEntry) -> bool {
    match revision(a).cmp(&revision(b)) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => matches!(a, ViewEntry::Live { .. }),
    }
}

impl Snapshot for TiersSnapshot {
    fn revision(&self) -> u64 {
        self.0.revision
    }

    fn floor(&self) -> u64 {
        self.0.floor
    }

    fn live_keys(&self) -> u64 {
        self.keys()
    }

    fn read(&self, key: &str, f: &mut dyn FnMut(u64, &[u8])) -> Result<bool, StoreError> {
        Ok(self.get_with(key, |r, v| f(r, v))?.is_some())
    }

    fn walk<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        since: Option<u64>,
    ) -> Box<dyn Iterator<Item = Result<ViewEntry, StoreError>> + 'a> {
        self.entries(prefix, after, since)
    }
}
