//! The log and the memory side by side behind one revision counter.
//!
//! Where a key lives: in memory when it is under a volatile prefix or was
//! written ephemeral, in the log otherwise; never live in both. A write
//! that moves a key (an ephemeral PUT of a logged key, a plain PUT of an
//! ephemeral one) deletes it from the side it leaves under the same
//! revision, so a restart never brings back a value that was replaced.
//!
//! Every write takes the next revision of the one counter; the side that
//! is not written is advanced to it, so both report the same revision and
//! a resume point means the same thing on both.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::key::{covers, validate_key, validate_prefix, KeyError};
use crate::store::{Changes, Key, PrefixDeletion, Store, StoreError};

use super::memory::MemoryStore;
use super::reservation::{Reservation, Reserved, DAMAGED_SKIP, RESERVE_STEP};
use super::tiers_view::TiersSnapshot;
use super::{Backend, BackendStats, Write};

/// Bytes a multi-key write costs per key beside its key and value (the
/// log's batch sub-operation header).
const BATCH_OP_COST: usize = 7;

/// Which keys live in memory only: those under the volatile prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    volatile: Vec<String>,
}

impl Placement {
    /// Keys covered by any of `prefixes` (segment rule: `run` covers `run`
    /// and `run.x`, not `runner`) are kept in memory. The empty prefix
    /// makes every key volatile.
    pub fn volatile(prefixes: &[String], max_key_len: usize) -> Result<Placement, KeyError> {
        for p in prefixes {
            validate_prefix(p, max_key_len)?;
        }
        Ok(Placement {
            volatile: prefixes.to_vec(),
        })
    }

    /// Whether `key` is under a volatile prefix.
    pub fn is_volatile(&self, key: &str) -> bool {
        self.volatile.iter().any(|p| covers(p, key))
    }

    /// The volatile prefixes.
    pub fn prefixes(&self) -> &[String] {
        &self.volatile
    }
}

/// One operation of [`Tiers::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Set a key; `memory` keeps it in memory whatever its prefix (an
    /// ephemeral key).
    Put {
        /// The key.
        key: &'a str,
        /// The value.
        value: &'a [u8],
        /// Keep it in memory (ephemeral).
        memory: bool,
    },
    /// Delete a key if it exists.
    Delete {
        /// The key.
        key: &'a str,
    },
    /// Delete a key and every key it covers.
    DeletePrefix {
        /// The prefix (`""`: every key).
        prefix: &'a str,
    },
}

/// What [`Tiers::write`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The revision of the write; `None` when nothing changed (nothing was
    /// written, no revision taken).
    pub revision: Option<u64>,
    /// Each key that changed with its new value (`None`: deleted), in key
    /// order.
    pub changes: Vec<(Key, Option<Bytes>)>,
    /// How many keys were deleted.
    pub deleted: u32,
}

/// The log and the memory behind one revision (see the module docs).
#[derive(Debug)]
pub struct Tiers {
    log: Store,
    memory: MemoryStore,
    placement: Placement,
    revision: u64,
    reservation: Reservation,
}

impl Tiers {
    /// Puts an open log store and an empty memory side by side. If the
    /// last run kept keys in memory, they are gone now: the floor rises
    /// above every revision that run handed out (see `reservation.rs`).
    pub fn open(mut log: Store, placement: Placement) -> Result<Tiers, StoreError> {
        let (mut reservation, read) = Reservation::load(log.dir())?;
        let before = read.unwrap_or_else(|| {
            // Which revisions memory took is lost: skip far past any it
            // could have, and treat the last run as having kept keys.
            tracing::warn!(
                file = %reservation.path().display(),
                "the memory state file is damaged; skipping revisions and raising the floor \
                 (resuming subscribers get a full snapshot)"
            );
            Reserved {
                up_to: log.revision() + DAMAGED_SKIP,
                floor: 0,
                dirty: true,
            }
        });
        let revision = log.revision().max(before.up_to);
        let floor = if before.dirty {
            before.floor.max(revision + 1)
        } else {
            before.floor
        };
        let now = Reserved {
            up_to: revision,
            floor,
            dirty: false,
        };
        // A server that never kept keys in memory needs no file.
        let used = before != Reserved::default() || !placement.volatile.is_empty();
        if read.is_none() || (now != before && used) {
            reservation.store(now)?;
        }
        reservation.state = now;
        log.advance_revision(revision);
        let mut memory = MemoryStore::new(log.options());
        memory.start_at(revision, floor);
        Ok(Tiers {
            log,
            memory,
            placement,
            revision,
            reservation,
        })
    }

    /// The log store (for what only it has: sync, compaction, hints).
    pub fn log(&self) -> &Store {
        &self.log
    }

    /// The log store, mutable.
    pub fn log_mut(&mut self) -> &mut Store {
        &mut self.log
    }

    /// Which keys are volatile.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Revision of the last write.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A resume below this revision gets a full snapshot.
    pub fn floor(&self) -> u64 {
        self.reservation
            .state
            .floor
            .max(self.log.tombstone_floor())
            .max(Backend::floor(&self.memory))
    }

    /// Whether `key` is live in memory (volatile or ephemeral).
    pub fn in_memory(&self, key: &str) -> bool {
        !self.memory.is_empty() && self.memory.current(key).is_some()
    }

    /// The revision of `key` if it is live.
    pub fn current(&self, key: &str) -> Option<u64> {
        if self.memory.is_empty() {
            return self.log.current(key);
        }
        self.memory.current(key).or_else(|| self.log.current(key))
    }

    /// Calls `f` with the revision and value of `key` if it is live.
    pub fn get_with<R>(
        &self,
        key: &str,
        f: impl FnOnce(u64, &[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        if self.memory.is_empty() {
            return self.log.get_with(key, f);
        }
        let mut f = Some(f);
        let mut out = None;
        let mut take = |r: u64, v: &[u8]| out = f.take().map(|f| f(r, v));
        if !self.memory.read(key, &mut take)? {
            self.log.read(key, &mut take)?;
        }
        Ok(out)
    }

    /// A consistent snapshot of both sides, for readers on other threads.
    pub fn view(&self) -> TiersSnapshot {
        TiersSnapshot::new(self.log.view(), &self.memory, self.revision, self.floor())
    }

    /// Changes under `prefix` after `revision` on both sides, by revision.
    pub fn changes_since(&self, prefix: &str, revision: u64) -> Result<Changes, StoreError> {
        validate_prefix(prefix, self.log.options().max_key_len)?;
        let floor = self.floor();
        if revision < floor || revision > self.revision {
            return Ok(Changes::TooOld { floor });
        }
        let mut merged = BTreeMap::new();
        for side in [
            self.log.changes_since(prefix, revision)?,
            self.memory.changes_since(prefix, revision)?,
        ] {
            let Changes::Since(changes) = side else {
                return Ok(Changes::TooOld { floor });
            };
            for change in changes {
                let key = match &change {
                    crate::store::Change::Put { key, .. }
                    | crate::store::Change::Delete { key, .. } => key.clone(),
                };
                // A key that moved sides has a delete on one and a put on
                // the other at the same revision: the put is its state.
                let newer = match merged.get(&key) {
                    Some(old) => later(&change, old),
                    None => true,
                };
                if newer {
                    merged.insert(key, change);
                }
            }
        }
        let mut out: Vec<_> = merged.into_values().collect();
        out.sort_by_key(crate::store::Change::revision);
        Ok(Changes::Since(out))
    }

    /// Sizes of both sides added up.
    pub fn stats(&self) -> BackendStats {
        let (log, memory) = (Backend::stats(&self.log), self.memory.stats());
        BackendStats {
            keys: log.keys + memory.keys,
            tombstones: log.tombstones + memory.tombstones,
            data_bytes: log.data_bytes + memory.data_bytes,
        }
    }

    /// Live keys and data bytes kept in memory.
    pub fn memory_stats(&self) -> BackendStats {
        self.memory.stats()
    }

    /// Sets `key` (one write). `memory` keeps it in memory whatever its
    /// prefix (ephemeral).
    pub fn put(&mut self, key: &str, value: &[u8], memory: bool) -> Result<u64, StoreError> {
        let to_memory = memory || self.placement.is_volatile(key);
        if !to_memory && !self.in_memory(key) {
            // The usual case: one log record, no bookkeeping.
            let revision = self.log.put(key, value, crate::store::Condition::None)?;
            self.revision = revision;
            return Ok(revision);
        }
        let written = self.write(&[Op::Put { key, value, memory }])?;
        Ok(written.revision.unwrap_or(self.revision))
    }

    /// Deletes `key`; `NotFound` (nothing written) when it is absent.
    pub fn delete(&mut self, key: &str) -> Result<u64, StoreError> {
        validate_key(key, self.log.options().max_key_len)?;
        if !self.in_memory(key) {
            // The usual case: one log record (`NotFound` when absent).
            let revision = self.log.delete(key, crate::store::Condition::None)?;
            self.revision = revision;
            return Ok(revision);
        }
        let written = self.write(&[Op::Delete { key }])?;
        Ok(written.revision.unwrap_or(self.revision))
    }

    /// Deletes `prefix` and every key it covers, on both sides, as one
    /// write; writes nothing when nothing matches.
    pub fn delete_prefix(&mut self, prefix: &str) -> Result<PrefixDeletion, StoreError> {
        validate_prefix(prefix, self.log.options().max_key_len)?;
        let in_memory = if self.memory.is_empty() {
            Vec::new()
        } else {
            self.memory.live_keys(prefix)
        };
        if in_memory.is_empty() {
            let deletion = self.log.delete_prefix(prefix)?;
            if let Some(r) = deletion.revision {
                self.revision = r;
            }
            return Ok(deletion);
        }
        // The log side stays one small prefix record however many keys it
        // covers (a batch of single deletes would be bounded by
        // `max_value_len`).
        let revision = self.revision + 1;
        self.reserve(revision)?;
        self.log.advance_revision(revision - 1);
        let logged = self.log.delete_prefix(prefix)?;
        self.log.advance_revision(revision);
        let writes: Vec<Write<'_>> = in_memory.iter().map(|key| Write::Delete { key }).collect();
        self.memory.apply(revision, &writes)?;
        self.revision = revision;
        let mut keys = logged.keys;
        keys.extend(in_memory);
        keys.sort();
        Ok(PrefixDeletion {
            revision: Some(revision),
            keys,
        })
    }

    /// Applies `ops` in order as one write under one revision: each key
    /// ends in the state the last op touching it gives; a key created and
    /// deleted within it does not change. All or nothing.
    pub fn write(&mut self, ops: &[Op<'_>]) -> Result<Written, StoreError> {
        let options = self.log.options();
        let (max_key, max_value) = (options.max_key_len, options.max_value_len);
        // The final state of each touched key: (value or deleted, memory).
        let mut finals: BTreeMap<Key, (Option<&[u8]>, bool)> = BTreeMap::new();
        for op in ops {
            match *op {
                Op::Put { key, value, memory } => {
                    validate_key(key, max_key)?;
                    if value.len() > max_value {
                        return Err(StoreError::ValueTooLarge {
                            len: value.len(),
                            max: max_value,
                        });
                    }
                    let memory = memory || self.placement.is_volatile(key);
                    finals.insert(Key::from(key), (Some(value), memory));
                }
                Op::Delete { key } => {
                    validate_key(key, max_key)?;
                    finals.insert(Key::from(key), (None, false));
                }
                Op::DeletePrefix { prefix } => {
                    validate_prefix(prefix, max_key)?;
                    for key in self.log.live_keys(prefix) {
                        finals.insert(key, (None, false));
                    }
                    for key in self.memory.live_keys(prefix) {
                        finals.insert(key, (None, false));
                    }
                    // Keys put earlier in this write.
                    for (key, state) in finals.iter_mut() {
                        if covers(prefix, key) {
                            *state = (None, false);
                        }
                    }
                }
            }
        }
        // One bound for a multi-key write wherever its keys live: what the
        // log's batch record may hold.
        if finals.len() > 1 {
            let size: usize = finals
                .iter()
                .map(|(k, (v, _))| k.len() + v.map_or(0, <[u8]>::len) + BATCH_OP_COST)
                .sum();
            if size > max_value {
                return Err(StoreError::ValueTooLarge {
                    len: size,
                    max: max_value,
                });
            }
        }
        let revision = self.revision + 1;
        let (mut to_log, mut to_memory) = (Vec::new(), Vec::new());
        let mut written = Written::default();
        for (key, (value, memory)) in &finals {
            let in_memory = self.memory.current(key).is_some();
            let in_log = !in_memory && self.log.current(key).is_some();
            match value {
                Some(value) => {
                    let (put_side, other) = if *memory {
                        (&mut to_memory, in_log.then_some(&mut to_log))
                    } else {
                        (&mut to_log, in_memory.then_some(&mut to_memory))
                    };
                    put_side.push(Write::Put { key, value });
                    if let Some(other) = other {
                        other.push(Write::Delete { key });
                    }
                    written
                        .changes
                        .push((key.clone(), Some(Bytes::copy_from_slice(value))));
                }
                None if in_memory => to_memory.push(Write::Delete { key }),
                None if in_log => to_log.push(Write::Delete { key }),
                None => continue,
            }
            if value.is_none() {
                written.changes.push((key.clone(), None));
                written.deleted += 1;
            }
        }
        if written.changes.is_empty() {
            return Ok(written);
        }
        if !to_memory.is_empty() {
            self.reserve(revision)?;
        }
        // The log first: it is the side that can fail (a full disk); the
        // memory side was checked above and cannot.
        if to_log.is_empty() {
            self.log.advance_revision(revision);
        } else {
            Backend::apply(&mut self.log, revision, &to_log)?;
        }
        if to_memory.is_empty() {
            self.memory.advance(revision);
        } else {
            self.memory.apply(revision, &to_memory)?;
        }
        self.revision = revision;
        written.revision = Some(revision);
        Ok(written)
    }

    /// Makes sure `revision` is reserved before memory takes it.
    fn reserve(&mut self, revision: u64) -> Result<(), StoreError> {
        let state = self.reservation.state;
        if state.dirty && revision <= state.up_to {
            return Ok(());
        }
        self.reservation.store(Reserved {
            up_to: revision + RESERVE_STEP,
            floor: state.floor,
            dirty: true,
        })
    }
}

/// Whether `a` is the newer state of its key than `b` (at the same
/// revision a put wins: the key moved sides).
fn later(a: &crate::store::Change, b: &crate::store::Change) -> bool {
    use crate::store::Change;
    match a.revision().cmp(&b.revision()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => matches!(a, Change::Put { .. }),
    }
}

/// The tiers as one backend: what the engine relies on holds for the
/// whole as for each side (`tests/storage_contract.rs` runs the same model
/// test against all three). Writes through this trait follow the
/// placement (volatile prefixes); ephemeral writes need [`Tiers::write`].
impl Backend for Tiers {
    fn name(&self) -> &'static str {
        "tiers"
    }

    fn durable(&self) -> bool {
        // Keys under volatile prefixes are not.
        self.placement.volatile.is_empty()
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.log.sync()
    }

    fn revision(&self) -> u64 {
        self.revision
    }

    fn floor(&self) -> u64 {
        Tiers::floor(self)
    }

    fn advance(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
        self.log.advance_revision(revision);
        self.memory.advance(revision);
    }

    fn current(&self, key: &str) -> Option<u64> {
        Tiers::current(self, key)
    }

    fn live_keys(&self, prefix: &str) -> Vec<Key> {
        let mut keys = self.log.live_keys(prefix);
        keys.extend(self.memory.live_keys(prefix));
        keys.sort();
        keys
    }

    fn apply(&mut self, revision: u64, writes: &[Write<'_>]) -> Result<(), StoreError> {
        Backend::advance(self, revision - 1);
        let ops: Vec<Op<'_>> = writes
            .iter()
            .map(|w| match *w {
                Write::Put { key, value } => Op::Put {
                    key,
                    value,
                    memory: false,
                },
                Write::Delete { key } => Op::Delete { key },
            })
            .collect();
        self.write(&ops).map(|_| ())
    }

    fn read(&self, key: &str, f: &mut dyn FnMut(u64, &[u8])) -> Result<bool, StoreError> {
        Ok(self.get_with(key, |r, v| f(r, v))?.is_some())
    }

    fn changes_since(&self, prefix: &str, revision: u64) -> Result<Changes, StoreError> {
        Tiers::changes_since(self, prefix, revision)
    }

    fn snapshot(&self) -> std::sync::Arc<dyn super::Snapshot> {
        std::sync::Arc::new(self.view())
    }

    fn stats(&self) -> BackendStats {
        Tiers::stats(self)
    }
}
