//! The writes themselves: each checks its conditions against the tiers,
//! applies, keeps the ephemeral owners up to date, and reports the events
//! to publish. Called by [`Engine::submit`](super::Engine::submit) under the
//! write lock.

use bytes::Bytes;

use crate::notify::{ChangeKind, KeyEvent};
use crate::protocol::{Txn, TxnOp};
use crate::storage::{Op, Written};
use crate::store::Condition;

use super::{Core, EngineError, Outcome, Reply};

/// A single PUT; `owner` makes it ephemeral (connection, grace).
pub(super) fn put(
    core: &mut Core,
    key: String,
    value: Bytes,
    condition: Condition,
    owner: Option<(u64, std::time::Duration)>,
    events: &mut Vec<KeyEvent>,
) -> Reply {
    let store = &mut core.store;
    if condition != Condition::None {
        // An invalid key is INVALID_KEY whatever the condition.
        crate::key::validate_key(&key, store.log().options().max_key_len)
            .map_err(|e| EngineError::Store(e.into()))?;
        condition
            .check(store.current(&key))
            .map_err(EngineError::Store)?;
    }
    let revision = store
        .put(&key, &value, owner.is_some())
        .map_err(EngineError::Store)?;
    match owner {
        Some((connection, grace)) => core.owners.claim(&key, connection, grace),
        None if !core.owners.is_empty() => core.owners.release(&key),
        None => {}
    }
    // Values are never logged, only their sizes.
    tracing::trace!(%key, bytes = value.len(), revision, "put");
    events.push(KeyEvent {
        key,
        revision,
        kind: ChangeKind::Update(value),
    });
    Ok(Outcome::Written(revision))
}

pub(super) fn delete(
    core: &mut Core,
    key: String,
    condition: Condition,
    events: &mut Vec<KeyEvent>,
) -> Reply {
    let store = &mut core.store;
    crate::key::validate_key(&key, store.log().options().max_key_len)
        .map_err(|e| EngineError::Store(e.into()))?;
    condition
        .check(store.current(&key))
        .map_err(EngineError::Store)?;
    let revision = store.delete(&key).map_err(EngineError::Store)?;
    if !core.owners.is_empty() {
        core.owners.release(&key);
    }
    events.push(KeyEvent {
        key,
        revision,
        kind: ChangeKind::Delete,
    });
    Ok(Outcome::Deleted { revision, count: 1 })
}

pub(super) fn delete_prefix(core: &mut Core, prefix: &str, events: &mut Vec<KeyEvent>) -> Reply {
    let store = &mut core.store;
    let deletion = store.delete_prefix(prefix).map_err(EngineError::Store)?;
    let Some(revision) = deletion.revision else {
        return Ok(Outcome::Deleted {
            revision: store.revision(),
            count: 0,
        });
    };
    let count = u32::try_from(deletion.keys.len()).unwrap_or(u32::MAX);
    for key in deletion.keys {
        if !core.owners.is_empty() {
            core.owners.release(&key);
        }
        events.push(KeyEvent {
            key: key.to_string(),
            revision,
            kind: ChangeKind::Delete,
        });
    }
    Ok(Outcome::Deleted { revision, count })
}

/// A TXN: every condition against the state before it, then the
/// operations as one write.
pub(super) fn transact(core: &mut Core, txn: &Txn, events: &mut Vec<KeyEvent>) -> Reply {
    let store = &mut core.store;
    for (index, condition) in txn.conditions.iter().enumerate() {
        crate::key::validate_key(&condition.key, store.log().options().max_key_len)
            .map_err(|e| EngineError::Store(e.into()))?;
        let current = store.current(&condition.key);
        if !condition.check.holds(current) {
            return Err(EngineError::TxnConditionFailed {
                index,
                key: condition.key.clone(),
                check: condition.check,
                current: current.unwrap_or(0),
            });
        }
    }
    let ops: Vec<Op<'_>> = txn
        .ops
        .iter()
        .map(|op| match op {
            TxnOp::Put { key, value } => Op::Put {
                key,
                value,
                memory: false,
            },
            TxnOp::Delete { key } => Op::Delete { key },
            TxnOp::DeletePrefix { prefix } => Op::DeletePrefix { prefix },
        })
        .collect();
    let written = store.write(&ops).map_err(EngineError::Store)?;
    let revision = written.revision.unwrap_or(store.revision());
    if !core.owners.is_empty() {
        for (key, _) in &written.changes {
            core.owners.release(key);
        }
    }
    events_of(&written, events);
    Ok(Outcome::Transacted {
        revision,
        deleted: written.deleted,
    })
}

/// The events of a multi-key write, all at its revision.
pub(super) fn events_of(written: &Written, events: &mut Vec<KeyEvent>) {
    let Some(revision) = written.revision else {
        return;
    };
    events.extend(written.changes.iter().map(|(key, value)| KeyEvent {
        key: key.to_string(),
        revision,
        kind: match value {
            Some(value) => ChangeKind::Update(value.clone()),
            None => ChangeKind::Delete,
        },
    }));
}
