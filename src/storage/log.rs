//! The log store as a [`Backend`]: durable keys.

use std::sync::Arc;

use crate::store::{Changes, Condition, Key, Store, StoreError, View, ViewEntry};

use super::{Backend, BackendStats, Snapshot, Write};

impl Backend for Store {
    fn name(&self) -> &'static str {
        "log"
    }

    fn durable(&self) -> bool {
        true
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Store::sync(self)
    }

    fn revision(&self) -> u64 {
        Store::revision(self)
    }

    fn floor(&self) -> u64 {
        self.tombstone_floor()
    }

    fn advance(&mut self, revision: u64) {
        self.advance_revision(revision);
    }

    fn current(&self, key: &str) -> Option<u64> {
        Store::current(self, key)
    }

    fn live_keys(&self, prefix: &str) -> Vec<Key> {
        Store::live_keys(self, prefix)
    }

    fn apply(&mut self, revision: u64, writes: &[Write<'_>]) -> Result<(), StoreError> {
        // The store numbers its records itself, one above its revision.
        self.advance_revision(revision - 1);
        let written = match writes {
            [] => return Ok(()),
            [Write::Put { key, value }] => self.put(key, value, Condition::None)?,
            [Write::Delete { key }] => self.delete(key, Condition::None)?,
            many => {
                let ops: Vec<_> = many
                    .iter()
                    .map(|w| match *w {
                        Write::Put { key, value } => crate::store::BatchOp::Put { key, value },
                        Write::Delete { key } => crate::store::BatchOp::Delete { key },
                    })
                    .collect();
                self.write_batch(&ops)?
            }
        };
        debug_assert_eq!(written, revision, "the log took another revision");
        Ok(())
    }

    fn read(&self, key: &str, f: &mut dyn FnMut(u64, &[u8])) -> Result<bool, StoreError> {
        Ok(self.get_with(key, |r, v| f(r, v))?.is_some())
    }

    fn changes_since(&self, prefix: &str, revision: u64) -> Result<Changes, StoreError> {
        Store::changes_since(self, prefix, revision)
    }

    fn snapshot(&self) -> Arc<dyn Snapshot> {
        Arc::new(self.view())
    }

    fn stats(&self) -> BackendStats {
        let s = Store::stats(self);
        BackendStats {
            keys: s.keys,
            tombstones: s.tombstones,
            data_bytes: s.data_bytes,
        }
    }
}

impl Snapshot for View {
    fn revision(&self) -> u64 {
        View::revision(self)
    }

    fn floor(&self) -> u64 {
        self.tombstone_floor()
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
        Box::new(self.entries(prefix, after, since))
    }
}
