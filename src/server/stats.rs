//! STATS: the engine's and the server's counters as named wire values.

use crate::engine::EngineStats;
use crate::protocol::wire::stats as names;

/// Most per-subscription rows in one answer; the rest are counted under
/// `sub.omitted` so the frame stays far below the frame limit.
const MAX_SUBSCRIPTION_ROWS: usize = 4096;

/// Flattens `stats` and the open connection count into `(name, value)`
/// pairs, in the order `protocol.md` lists them.
pub fn to_wire(stats: &EngineStats, connections: usize) -> Vec<(String, u64)> {
    let store = &stats.store;
    let ops = &stats.ops;
    let mut out: Vec<(String, u64)> = [
        (names::KEYS, store.keys),
        (names::BYTES, store.live_bytes),
        (names::REVISION, store.revision),
        (names::CONNECTIONS, connections as u64),
        (names::SUBSCRIPTIONS, stats.subscriptions.len() as u64),
        (names::OPS_GET, ops.get),
        (names::OPS_PUT, ops.put),
        (names::OPS_DEL, ops.del),
        (names::OPS_LIST, ops.list),
        (names::OPS_SUB, ops.sub),
        (names::FSYNC_COUNT, store.syncs),
        (names::FSYNC_LAST_US, store.last_sync_micros),
        (names::FSYNC_MAX_US, store.max_sync_micros),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    for sub in stats.subscriptions.iter().take(MAX_SUBSCRIPTION_ROWS) {
        let (conn, id) = (sub.key.connection, sub.key.subscription);
        out.push((names::sub_pending(conn, id), sub.pending as u64));
        out.push((names::sub_coalesced(conn, id), sub.coalesced));
    }
    let omitted = stats
        .subscriptions
        .len()
        .saturating_sub(MAX_SUBSCRIPTION_ROWS);
    if omitted > 0 {
        out.push((names::SUB_OMITTED.to_owned(), omitted as u64));
    }
    out
}
