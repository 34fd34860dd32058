//! STATS: the engine's and the server's counters as named wire values.

use std::sync::atomic::Ordering;

use super::Shared;
use crate::engine::EngineStats;
use crate::protocol::wire::stats as names;

/// Most per-subscription rows in one answer; the rest are counted under
/// `sub.omitted` so the frame stays far below the frame limit.
const MAX_SUBSCRIPTION_ROWS: usize = 4096;

/// Most connections described in one answer (up to four entries each).
const MAX_CONNECTION_ROWS: usize = 1024;

/// Flattens `stats` and the server's own counters into `(name, value)`
/// pairs, in the order `protocol.md` lists them.
pub(super) fn to_wire(stats: &EngineStats, shared: &Shared) -> Vec<(String, u64)> {
    let store = &stats.store;
    let ops = &shared.ops;
    let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let mut out: Vec<(String, u64)> = [
        (names::KEYS, store.keys),
        (names::BYTES, store.data_bytes),
        (names::REVISION, store.revision),
        (
            names::CONNECTIONS,
            shared.connections.load(Ordering::SeqCst) as u64,
        ),
        (names::SUBSCRIPTIONS, stats.subscriptions.len() as u64),
        (names::OPS_GET, load(&ops.get)),
        (names::OPS_PUT, load(&ops.put)),
        (names::OPS_DEL, load(&ops.del)),
        (names::OPS_LIST, load(&ops.list)),
        (names::OPS_SUB, load(&ops.sub)),
        (names::OPS_TXN, load(&ops.txn)),
        (names::MEMORY_KEYS, stats.memory.keys),
        (names::MEMORY_BYTES, stats.memory.data_bytes),
        (names::EPHEMERAL_KEYS, stats.ephemeral),
        (names::FSYNC_COUNT, store.syncs),
        (names::FSYNC_LAST_US, store.last_sync_micros),
        (names::FSYNC_MAX_US, store.max_sync_micros),
        (names::TOMBSTONE_FLOOR, store.tombstone_floor),
        (names::DISK_BYTES, store.total_bytes),
        (names::DISK_DEAD_BYTES, store.dead_bytes),
        (names::DISK_FREE_BYTES, store.free_bytes),
        (names::COMPACTION_COUNT, store.compactions),
        (
            names::COMPACTION_BLOCKED,
            store.compaction_hold.as_ref().map_or(0, |h| h.code()),
        ),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    // Who is connected: uid, pid and process name from the kernel (Unix
    // sockets), the token's name (TCP). Bounded like the subscriptions.
    let peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
    for (&conn, peer) in peers.iter().take(MAX_CONNECTION_ROWS) {
        if let Some(uid) = peer.caller.uid {
            out.push((names::conn_uid(conn), uid.into()));
        }
        if let Some(pid) = peer.pid {
            out.push((names::conn_pid(conn), pid.into()));
            if let Some(process) = &peer.process {
                out.push((names::conn_process(conn, process), pid.into()));
            }
        }
        if let Some(token) = &peer.caller.token {
            out.push((names::conn_token(conn, token), 1));
        }
    }
    drop(peers);
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
