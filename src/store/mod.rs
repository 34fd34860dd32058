//! The synchronous, durable store (see `docs/storage.md`).
//!
//! PUBLIC API CONTRACT — the engine is written against these names. The
//! store implementation (helper) may add items but must keep these.
//!
//! ```text
//! Store::open(dir: &Path, options: Options) -> Result<Store, StoreError>
//! store.put(key: &str, value: &[u8], condition: Condition) -> Result<u64 /*revision*/, StoreError>
//! store.delete(key: &str, condition: Condition) -> Result<u64, StoreError>      // NotFound if absent
//! store.delete_prefix(prefix: &str) -> Result<PrefixDeletion, StoreError>       // one atomic record
//! store.get(key: &str) -> Result<Option<Entry>, StoreError>
//! store.scan_prefix(prefix: &str) -> Result<Vec<(String, Entry)>, StoreError>   // ordered by key
//! store.changes_since(prefix: &str, revision: u64) -> Result<Changes, StoreError>
//! store.commit() -> Result<(), StoreError>  // make every write so far durable per the fsync policy
//! store.sync() -> Result<(), StoreError>    // force fdatasync now (interval timer, shutdown)
//! store.next_sync_deadline() -> Option<std::time::Instant> // interval policy: when sync() is due
//! store.revision() -> u64
//! store.tombstone_floor() -> u64
//! store.compact() -> Result<CompactionReport, StoreError>
//! store.stats() -> StoreStats
//! store.options() -> &Options
//! ```
