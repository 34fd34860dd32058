//! Transactions (TXN): conditions on keys and operations applied all or
//! nothing, with a builder, and how their payload is written (the decoder
//! is in [`codec`](super::codec) with the others).

use bytes::{BufMut, Bytes, BytesMut};

use super::error::FrameError;
use super::frame::{bytes32_len, put_bytes32, put_str16, str16_len};
use super::wire::{txn_condition, txn_op};

/// What a TXN condition requires of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The key must not exist.
    Absent,
    /// The key must exist.
    Present,
    /// The key must exist with exactly this revision.
    RevisionEquals(u64),
}

impl Check {
    /// The condition's `kind` byte.
    pub fn wire_value(self) -> u8 {
        match self {
            Check::Absent => txn_condition::ABSENT,
            Check::Present => txn_condition::PRESENT,
            Check::RevisionEquals(_) => txn_condition::REVISION_EQUALS,
        }
    }

    /// The condition's `revision` field (0 unless [`Check::RevisionEquals`]).
    pub fn revision(self) -> u64 {
        match self {
            Check::RevisionEquals(r) => r,
            _ => 0,
        }
    }

    /// Whether a key whose current revision is `current` (`None`: absent)
    /// passes.
    pub fn holds(self, current: Option<u64>) -> bool {
        match self {
            Check::Absent => current.is_none(),
            Check::Present => current.is_some(),
            Check::RevisionEquals(r) => current == Some(r),
        }
    }
}

/// One condition of a TXN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnCondition {
    /// The key it is about.
    pub key: String,
    /// What it requires.
    pub check: Check,
}

/// One operation of a TXN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Set a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
    },
    /// Delete a key (nothing happens if it is absent).
    Delete {
        /// The key.
        key: String,
    },
    /// Delete a key and every key below it (`""`: every key).
    DeletePrefix {
        /// The prefix.
        prefix: String,
    },
}

impl TxnOp {
    /// The operation's `kind` byte.
    pub fn wire_value(&self) -> u8 {
        match self {
            TxnOp::Put { .. } => txn_op::PUT,
            TxnOp::Delete { .. } => txn_op::DELETE,
            TxnOp::DeletePrefix { .. } => txn_op::DELETE_PREFIX,
        }
    }

    /// The key (or prefix) the operation names.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. }
            | TxnOp::Delete { key }
            | TxnOp::DeletePrefix { prefix: key } => key,
        }
    }
}

/// A transaction: if every condition holds, every operation is applied, in
/// order, all under one revision; otherwise nothing is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    /// Checked first, all of them, against the state before the operations.
    pub conditions: Vec<TxnCondition>,
    /// Applied in order if every condition holds.
    pub ops: Vec<TxnOp>,
}

/// Building a transaction step by step, e.g.
/// `Txn::new().if_absent("net.lock").put("net.lock", "me").delete("net.old")`:
/// conditions and operations keep the order they are added in.
impl Txn {
    /// An empty transaction (no condition, no operation).
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a condition: `key` must not exist.
    pub fn if_absent(self, key: impl Into<String>) -> Txn {
        self.check(key, Check::Absent)
    }

    /// Adds a condition: `key` must exist.
    pub fn if_present(self, key: impl Into<String>) -> Txn {
        self.check(key, Check::Present)
    }

    /// Adds a condition: `key` must exist at exactly `revision`.
    pub fn if_revision(self, key: impl Into<String>, revision: u64) -> Txn {
        self.check(key, Check::RevisionEquals(revision))
    }

    /// Adds a condition on `key`.
    pub fn check(mut self, key: impl Into<String>, check: Check) -> Txn {
        self.conditions.push(TxnCondition {
            key: key.into(),
            check,
        });
        self
    }

    /// Adds an operation: set `key` to `value`.
    pub fn put(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Txn {
        self.ops.push(TxnOp::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds an operation: delete `key` (nothing happens if it is absent).
    pub fn delete(mut self, key: impl Into<String>) -> Txn {
        self.ops.push(TxnOp::Delete { key: key.into() });
        self
    }

    /// Adds an operation: delete `prefix` and every key below it (`""`:
    /// every key).
    pub fn delete_prefix(mut self, prefix: impl Into<String>) -> Txn {
        self.ops.push(TxnOp::DeletePrefix {
            prefix: prefix.into(),
        });
        self
    }
}

pub(super) fn txn_len(txn: &Txn) -> Result<usize, FrameError> {
    let mut len = 2 + 2;
    for c in &txn.conditions {
        len += 1 + 8 + str16_len("condition key", &c.key)?;
    }
    for op in &txn.ops {
        len += 1 + str16_len("operation key", op.key())?;
        if let TxnOp::Put { value, .. } = op {
            len += bytes32_len("value", value)?;
        }
    }
    for (what, n) in [
        ("conditions", txn.conditions.len()),
        ("operations", txn.ops.len()),
    ] {
        if n > usize::from(u16::MAX) {
            return Err(FrameError::FieldTooLong {
                field: what,
                len: n,
            });
        }
    }
    Ok(len)
}

// Counts were checked by `txn_len`.
pub(super) fn write_txn(txn: &Txn, dst: &mut BytesMut) {
    dst.put_u16(txn.conditions.len() as u16);
    for c in &txn.conditions {
        dst.put_u8(c.check.wire_value());
        dst.put_u64(c.check.revision());
        put_str16(dst, &c.key);
    }
    dst.put_u16(txn.ops.len() as u16);
    for op in &txn.ops {
        dst.put_u8(op.wire_value());
        put_str16(dst, op.key());
        if let TxnOp::Put { value, .. } = op {
            put_bytes32(dst, value);
        }
    }
}
