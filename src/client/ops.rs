//! The operations both clients offer, as pairs of pure functions: one
//! checks the arguments against the server's limits and builds the
//! [`Request`], the other turns the answer into the operation's result.
//! The blocking [`Client`](super::Client) and the
//! [`AsyncClient`](crate::async_client::AsyncClient) differ only in how a
//! request travels and how its caller waits; what is sent and what an
//! answer means is written once, here. A new operation (a transaction, say)
//! is one more pair, and one short method in each client.

use bytes::Bytes;

use std::time::Duration;

use super::answers::Answer;
use super::error::{Error, ErrorKind};
use super::{Entry, ListEntry, TxnOutcome};
use crate::key::{validate_key, validate_prefix};
use crate::protocol::wire::{MAX_EPHEMERAL_GRACE_MS, MAX_TXN_CONDITIONS, MAX_TXN_OPS};
use crate::protocol::{Condition, Request, Response, Txn, TxnOp};

/// The longest key and the largest value the server takes (from its
/// HELLO_OK).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_key: usize,
    pub max_value: usize,
}

impl Limits {
    /// Checks a key.
    pub fn key(self, key: &str) -> Result<(), Error> {
        validate_key(key, self.max_key).map_err(|e| Error::invalid_key("key", key, e))
    }

    /// Checks a prefix (`""` is allowed: every key).
    pub fn prefix(self, prefix: &str) -> Result<(), Error> {
        validate_prefix(prefix, self.max_key).map_err(|e| Error::invalid_key("prefix", prefix, e))
    }
}

/// PUT: checks key and value size (before the caller copies the value
/// anywhere), then builds the request.
pub(crate) fn put_check(limits: Limits, key: &str, value_len: usize) -> Result<(), Error> {
    limits.key(key)?;
    if value_len > limits.max_value {
        return Err(Error::new(
            ErrorKind::TooLarge,
            format!(
                "value is {value_len} bytes, more than the server's limit of {}",
                limits.max_value,
            ),
        ));
    }
    Ok(())
}

/// PUT, after [`put_check`].
pub(crate) fn put(key: &str, value: Bytes, condition: Condition) -> Request {
    Request::Put {
        key: key.to_owned(),
        value,
        condition,
    }
}

/// An ephemeral PUT's grace period in milliseconds (at most 600 s).
pub(crate) fn grace_ms(grace: Duration) -> Result<u32, Error> {
    u32::try_from(grace.as_millis())
        .ok()
        .filter(|ms| *ms <= MAX_EPHEMERAL_GRACE_MS)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "grace period {grace:?} is over the protocol's limit of {} s",
                    MAX_EPHEMERAL_GRACE_MS / 1000
                ),
            )
        })
}

/// PUT with the ephemeral flag, after [`put_check`] and [`grace_ms`]; its
/// answer is [`put_answer`]'s.
pub(crate) fn put_ephemeral(
    key: &str,
    value: Bytes,
    condition: Condition,
    grace_ms: u32,
) -> Request {
    Request::PutEphemeral {
        key: key.to_owned(),
        value,
        condition,
        grace_ms,
    }
}

/// PUT_OK: the revision of the write.
pub(crate) fn put_answer(answer: Answer) -> Result<u64, Error> {
    match answer {
        Answer::Response(Response::PutOk { revision }) => Ok(revision),
        other => Err(unexpected(other)),
    }
}

/// GET.
pub(crate) fn get(limits: Limits, key: &str) -> Result<Request, Error> {
    limits.key(key)?;
    Ok(Request::Get {
        key: key.to_owned(),
    })
}

/// GET_OK, or NOT_FOUND as `None` (a missing key is an answer, not an
/// error, to a reader).
pub(crate) fn get_answer(answer: Result<Answer, Error>) -> Result<Option<Entry>, Error> {
    match answer {
        Ok(Answer::Response(Response::GetOk { revision, value })) => {
            Ok(Some(Entry { value, revision }))
        }
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Ok(other) => Err(unexpected(other)),
        Err(e) => Err(e),
    }
}

/// LIST.
pub(crate) fn list(limits: Limits, prefix: &str) -> Result<Request, Error> {
    limits.prefix(prefix)?;
    Ok(Request::List {
        prefix: prefix.to_owned(),
    })
}

/// The LIST_ITEMs collected until LIST_OK.
pub(crate) fn list_answer(answer: Answer) -> Result<Vec<ListEntry>, Error> {
    match answer {
        Answer::List(items) => Ok(items),
        other => Err(unexpected(other)),
    }
}

/// DEL of one key.
pub(crate) fn delete(limits: Limits, key: &str, condition: Condition) -> Result<Request, Error> {
    limits.key(key)?;
    Ok(Request::Delete {
        key: key.to_owned(),
        condition,
    })
}

/// DEL_OK of one key: the revision of the delete.
pub(crate) fn delete_answer(answer: Answer) -> Result<u64, Error> {
    delete_prefix_answer(answer).map(|(revision, _)| revision)
}

/// DEL with the prefix flag.
pub(crate) fn delete_prefix(limits: Limits, prefix: &str) -> Result<Request, Error> {
    limits.prefix(prefix)?;
    Ok(Request::DeletePrefix {
        prefix: prefix.to_owned(),
    })
}

/// DEL_OK of a prefix: the revision and how many keys were deleted.
pub(crate) fn delete_prefix_answer(answer: Answer) -> Result<(u64, u32), Error> {
    match answer {
        Answer::Response(Response::DelOk { revision, deleted }) => Ok((revision, deleted)),
        other => Err(unexpected(other)),
    }
}

/// TXN: refuses before sending what the server would refuse for the
/// counts, the keys and the values. The total size is the server's to
/// judge: it counts the keys the transaction ends up changing, which a
/// prefix delete decides.
pub(crate) fn txn(limits: Limits, txn: &Txn) -> Result<Request, Error> {
    for (what, n, max) in [
        ("conditions", txn.conditions.len(), MAX_TXN_CONDITIONS),
        ("operations", txn.ops.len(), MAX_TXN_OPS),
    ] {
        if n > max {
            return Err(Error::new(
                ErrorKind::Limit,
                format!("a transaction has at most {max} {what}, this one has {n}"),
            ));
        }
    }
    for condition in &txn.conditions {
        limits.key(&condition.key)?;
    }
    for op in &txn.ops {
        match op {
            TxnOp::Put { key, value } => put_check(limits, key, value.len())?,
            TxnOp::Delete { key } => limits.key(key)?,
            TxnOp::DeletePrefix { prefix } => limits.prefix(prefix)?,
        }
    }
    Ok(Request::Txn(txn.clone()))
}

/// TXN_OK: the revision and how many keys were deleted. A failed condition
/// came as ERROR: [`Error::failed_key`] names it.
pub(crate) fn txn_answer(answer: Answer) -> Result<TxnOutcome, Error> {
    match answer {
        Answer::Response(Response::TxnOk { revision, deleted }) => {
            Ok(TxnOutcome { revision, deleted })
        }
        other => Err(unexpected(other)),
    }
}

/// PONG.
pub(crate) fn ping_answer(answer: Answer) -> Result<(), Error> {
    match answer {
        Answer::Response(Response::Pong) => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// STATS_OK: the counters in the server's order.
pub(crate) fn stats_answer(answer: Answer) -> Result<Vec<(String, u64)>, Error> {
    match answer {
        Answer::Response(Response::StatsOk { stats }) => Ok(stats),
        other => Err(unexpected(other)),
    }
}

/// COMPACT_OK: bytes of the data files before and after.
pub(crate) fn compact_answer(answer: Answer) -> Result<(u64, u64), Error> {
    match answer {
        Answer::Response(Response::CompactOk {
            bytes_before,
            bytes_after,
        }) => Ok((bytes_before, bytes_after)),
        other => Err(unexpected(other)),
    }
}

/// The error for an answer of the wrong type: the server broke the protocol.
pub(crate) fn unexpected(answer: Answer) -> Error {
    let what = match answer {
        Answer::Response(r) => format!("response type 0x{:02X}", r.frame_type()),
        Answer::List(_) => "listing".to_owned(),
    };
    Error::new(
        ErrorKind::Protocol,
        format!("unexpected {what} from the server"),
    )
}
