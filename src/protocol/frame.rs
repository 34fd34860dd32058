//! Typed frames: what a client asks, what a server answers, what a
//! subscription reports.
//!
//! The types hold only what the wire can express, and only in its canonical
//! form (a condition carries its expected revision, a resume carries its
//! `since`), so decoding then encoding any accepted frame gives back the
//! same bytes. This module also writes payloads; reading them is the
//! decoders' job in [`codec`](super::codec), where the fatal/non-fatal split
//! lives.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{ErrorCode, FrameError};
use super::txn::{txn_len, write_txn};
pub use super::txn::{Check, Txn, TxnCondition, TxnOp};
use super::wire::{condition, del_flags, frame_type, put_flags, sub_flags, MAGIC};

/// The condition of a PUT or DEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    /// Unconditional.
    #[default]
    None,
    /// Only if the key does not exist (PUT: create; DEL: never succeeds on
    /// an existing key, so it is of little use there, but it is well defined).
    MustNotExist,
    /// Only if the key exists and its revision equals this one.
    RevisionEquals(u64),
}

impl Condition {
    /// The `condition` byte.
    pub fn wire_value(self) -> u8 {
        match self {
            Condition::None => condition::NONE,
            Condition::MustNotExist => condition::MUST_NOT_EXIST,
            Condition::RevisionEquals(_) => condition::REVISION_EQUALS,
        }
    }

    /// The `expected_revision` field (0 unless [`Condition::RevisionEquals`]).
    pub fn expected_revision(self) -> u64 {
        match self {
            Condition::RevisionEquals(r) => r,
            _ => 0,
        }
    }
}

/// A client request, without its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// HELLO (0x01): open the session. The magic is checked by the codec.
    Hello {
        /// The highest protocol version the client speaks.
        version: u16,
        /// A name for logs, e.g. `"nkv-cli 0.1.0"`.
        client_name: String,
        /// The access token (optional trailing field): required over TCP
        /// when the server has a token file.
        token: Option<String>,
    },
    /// PING (0x02).
    Ping,
    /// GET (0x10): read one key.
    Get {
        /// The key.
        key: String,
    },
    /// PUT (0x11): write one key.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
        /// When to write.
        condition: Condition,
    },
    /// PUT (0x11) with the ephemeral flag: write one key that belongs to
    /// this connection and is deleted when the connection ends, after
    /// `grace_ms` (0: at once) unless it is taken back or written plainly.
    PutEphemeral {
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
        /// When to write.
        condition: Condition,
        /// How long the key outlives its connection, in milliseconds
        /// (at most [`MAX_EPHEMERAL_GRACE_MS`](super::wire::MAX_EPHEMERAL_GRACE_MS)).
        grace_ms: u32,
    },
    /// DEL (0x12) without the prefix flag: delete one key.
    Delete {
        /// The key.
        key: String,
        /// When to delete.
        condition: Condition,
    },
    /// DEL (0x12) with the prefix flag: delete a key and its whole subtree
    /// atomically (`""` = every key).
    DeletePrefix {
        /// The prefix.
        prefix: String,
    },
    /// LIST (0x13): every key under a prefix (`""` = every key).
    List {
        /// The prefix.
        prefix: String,
    },
    /// SUB (0x14): subscribe to a prefix; the request id becomes the
    /// subscription id.
    Subscribe {
        /// The prefix (`""` = every key).
        prefix: String,
        /// Resume: the last revision the client saw (resume flag set), or
        /// `None` for a full snapshot.
        since: Option<u64>,
    },
    /// SUB (0x14) with the grouped flag: as [`Request::Subscribe`], and
    /// live events that belong together are announced by [`Event::Group`].
    SubscribeGrouped {
        /// The prefix (`""` = every key).
        prefix: String,
        /// Resume: the last revision the client saw, or `None`.
        since: Option<u64>,
    },
    /// UNSUB (0x15): end a subscription of this connection.
    Unsubscribe {
        /// The subscription id (the id of the SUB that created it).
        subscription: u32,
    },
    /// STATS (0x16).
    Stats,
    /// COMPACT (0x17): compact the store now (an operator's request).
    Compact,
    /// TXN (0x19): conditions and operations applied all or nothing.
    Txn(Txn),
}

/// A request with its client-chosen id (never 0): what a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    /// The request id, `1..=u32::MAX`.
    pub id: u32,
    /// The request.
    pub request: Request,
}

/// The payload of an ERROR frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// What went wrong.
    pub code: ErrorCode,
    /// A human-readable explanation; never parse it.
    pub message: String,
    /// For [`ErrorCode::ConditionFailed`] only: the key's current revision
    /// (`Some(0)` = the key does not exist). Always `None` for other codes
    /// (the encoder ignores it there, and the decoder never sets it).
    pub current_revision: Option<u64>,
    /// For [`ErrorCode::ConditionFailed`] of a TXN only: the key of the
    /// condition that failed (the first one, in request order).
    pub key: Option<String>,
}

impl ErrorFrame {
    /// An error without a current revision.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorFrame {
        ErrorFrame {
            code,
            message: message.into(),
            current_revision: None,
            key: None,
        }
    }

    /// A CONDITION_FAILED error; `current_revision` is 0 when the key is absent.
    pub fn condition_failed(current_revision: u64) -> ErrorFrame {
        let message = if current_revision == 0 {
            "key does not exist".to_owned()
        } else {
            format!("current revision {current_revision}")
        };
        ErrorFrame {
            code: ErrorCode::ConditionFailed,
            message,
            current_revision: Some(current_revision),
            key: None,
        }
    }

    /// The CONDITION_FAILED answer to a TXN whose condition on `key`
    /// (number `index` in the request, from 0) did not hold.
    pub fn txn_condition_failed(
        index: usize,
        key: &str,
        check: Check,
        current_revision: u64,
    ) -> ErrorFrame {
        let wanted = match check {
            Check::Absent => "absent".to_owned(),
            Check::Present => "present".to_owned(),
            Check::RevisionEquals(r) => format!("at revision {r}"),
        };
        let found = if current_revision == 0 {
            "it does not exist".to_owned()
        } else {
            format!("its revision is {current_revision}")
        };
        ErrorFrame {
            code: ErrorCode::ConditionFailed,
            message: format!("condition {index} failed: {key} must be {wanted}, {found}"),
            current_revision: Some(current_revision),
            key: Some(key.to_owned()),
        }
    }
}

/// A server answer to a request, without its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// HELLO_OK (0x81): the session is open at `version`.
    HelloOk {
        /// The version the server will speak: min(client's, server's highest).
        version: u16,
        /// Largest length field the server accepts and sends.
        max_frame: u32,
        /// Largest key, in bytes.
        max_key: u32,
        /// Largest value, in bytes.
        max_value: u32,
        /// e.g. `"nkv-server 0.1.0"`.
        server_name: String,
    },
    /// PONG (0x82).
    Pong,
    /// GET_OK (0x90).
    GetOk {
        /// Revision of the key's last write.
        revision: u64,
        /// The value.
        value: Bytes,
    },
    /// PUT_OK (0x91): the write is durable under the server's fsync policy.
    PutOk {
        /// Revision assigned to the write.
        revision: u64,
    },
    /// DEL_OK (0x92).
    DelOk {
        /// Revision assigned to the delete (or the current store revision
        /// when a prefix delete matched nothing).
        revision: u64,
        /// How many keys were deleted.
        deleted: u32,
    },
    /// LIST_ITEM (0x98): one entry of a listing; `count` of them precede LIST_OK.
    ListItem {
        /// Revision of the key's last write.
        revision: u64,
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
    },
    /// LIST_OK (0x93): the listing is complete.
    ListOk {
        /// Store revision the listing is consistent at.
        revision: u64,
        /// How many LIST_ITEM frames were sent for this request.
        count: u32,
    },
    /// SUB_OK (0x94): the subscription exists; its events follow.
    SubOk,
    /// UNSUB_OK (0x95): no event of the subscription follows.
    UnsubOk,
    /// COMPACT_OK (0x97): the compaction is done.
    CompactOk {
        /// Bytes of the data files before.
        bytes_before: u64,
        /// Bytes of the data files after.
        bytes_after: u64,
    },
    /// TXN_OK (0x99): every condition held and every operation is applied
    /// (durable under the server's fsync policy).
    TxnOk {
        /// The transaction's revision (the current store revision when it
        /// changed nothing).
        revision: u64,
        /// How many keys it deleted (prefix deletes included).
        deleted: u32,
    },
    /// STATS_OK (0x96): named counters, at most 65535.
    StatsOk {
        /// `(name, value)` pairs in the server's order.
        stats: Vec<(String, u64)>,
    },
    /// ERROR (0xFF).
    Error(ErrorFrame),
}

/// A subscription event, without its subscription id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// UPDATE (0xC0): the key has this value.
    Update {
        /// Revision of the write.
        revision: u64,
        /// Earlier events for this key that were folded into this one.
        coalesced: u32,
        /// The key.
        key: String,
        /// The value.
        value: Bytes,
    },
    /// DELETE (0xC1): the key was deleted.
    Delete {
        /// Revision of the delete.
        revision: u64,
        /// Earlier events for this key that were folded into this one.
        coalesced: u32,
        /// The key.
        key: String,
    },
    /// SYNCED (0xC2): the snapshot or resume is complete at this revision.
    Synced {
        /// The revision the client's view is now consistent at.
        revision: u64,
    },
    /// RESET (0xC3): forget every key held for this subscription; a full
    /// snapshot and SYNCED follow.
    Reset,
    /// CLOSED (0xC4): the server ended the subscription.
    Closed {
        /// Why.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
    },
    /// GROUP (0xC5), grouped subscriptions only: the next `count` UPDATE and
    /// DELETE events belong together (one transaction or prefix delete, or
    /// writes a slow subscriber's coalescing merged); applied together they
    /// make the view consistent at `revision`.
    Group {
        /// How many events follow that belong to the group (2 or more).
        count: u32,
        /// The revision the view is consistent at after the last of them.
        revision: u64,
    },
}

/// Anything a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// An answer to the request with this id (0 only for an ERROR that
    /// belongs to no request).
    Response {
        /// The request id.
        id: u32,
        /// The answer.
        response: Response,
    },
    /// An event of a subscription.
    Event {
        /// The subscription id (the id of the SUB that created it).
        subscription: u32,
        /// The event.
        event: Event,
    },
}

// ---------------------------------------------------------------------------
// Encoding. Sizes are computed first so that a frame over the limit is
// refused before a byte of it is written into the output buffer.

/// Frame type byte, id and payload writer of a request.
impl Request {
    /// The frame type byte of this request.
    pub fn frame_type(&self) -> u8 {
        match self {
            Request::Hello { .. } => frame_type::HELLO,
            Request::Ping => frame_type::PING,
            Request::Get { .. } => frame_type::GET,
            Request::Put { .. } | Request::PutEphemeral { .. } => frame_type::PUT,
            Request::Delete { .. } | Request::DeletePrefix { .. } => frame_type::DEL,
            Request::List { .. } => frame_type::LIST,
            Request::Subscribe { .. } | Request::SubscribeGrouped { .. } => frame_type::SUB,
            Request::Unsubscribe { .. } => frame_type::UNSUB,
            Request::Stats => frame_type::STATS,
            Request::Compact => frame_type::COMPACT,
            Request::Txn(_) => frame_type::TXN,
        }
    }

    pub(crate) fn payload_len(&self) -> Result<usize, FrameError> {
        Ok(match self {
            Request::Hello {
                client_name, token, ..
            } => {
                let token = match token {
                    Some(token) => str16_len("token", token)?,
                    None => 0,
                };
                4 + 2 + str16_len("client_name", client_name)? + token
            }
            Request::Ping | Request::Stats | Request::Compact => 0,
            Request::Get { key } => str16_len("key", key)?,
            Request::Put { key, value, .. } => {
                1 + 8 + str16_len("key", key)? + bytes32_len("value", value)?
            }
            Request::PutEphemeral { key, value, .. } => {
                1 + 8 + str16_len("key", key)? + bytes32_len("value", value)? + 1 + 4
            }
            Request::Delete { key, .. } => 1 + 1 + 8 + str16_len("key", key)?,
            Request::DeletePrefix { prefix } => 1 + 1 + 8 + str16_len("prefix", prefix)?,
            Request::List { prefix } => str16_len("prefix", prefix)?,
            Request::Subscribe { prefix, .. } | Request::SubscribeGrouped { prefix, .. } => {
                1 + 8 + str16_len("prefix", prefix)?
            }
            Request::Unsubscribe { .. } => 4,
            Request::Txn(txn) => txn_len(txn)?,
        })
    }

    pub(crate) fn write_payload(&self, dst: &mut BytesMut) {
        match self {
            Request::Hello {
                version,
                client_name,
                token,
            } => {
                dst.put_slice(&MAGIC);
                dst.put_u16(*version);
                put_str16(dst, client_name);
                if let Some(token) = token {
                    put_str16(dst, token);
                }
            }
            Request::Ping | Request::Stats | Request::Compact => {}
            Request::Get { key } | Request::List { prefix: key } => put_str16(dst, key),
            Request::Put {
                key,
                value,
                condition,
            } => {
                dst.put_u8(condition.wire_value());
                dst.put_u64(condition.expected_revision());
                put_str16(dst, key);
                put_bytes32(dst, value);
            }
            Request::PutEphemeral {
                key,
                value,
                condition,
                grace_ms,
            } => {
                dst.put_u8(condition.wire_value());
                dst.put_u64(condition.expected_revision());
                put_str16(dst, key);
                put_bytes32(dst, value);
                dst.put_u8(put_flags::EPHEMERAL);
                dst.put_u32(*grace_ms);
            }
            Request::Delete { key, condition } => {
                dst.put_u8(0);
                dst.put_u8(condition.wire_value());
                dst.put_u64(condition.expected_revision());
                put_str16(dst, key);
            }
            Request::DeletePrefix { prefix } => {
                dst.put_u8(del_flags::PREFIX);
                dst.put_u8(condition::NONE);
                dst.put_u64(0);
                put_str16(dst, prefix);
            }
            Request::Subscribe { prefix, since } => {
                dst.put_u8(if since.is_some() {
                    sub_flags::RESUME
                } else {
                    0
                });
                dst.put_u64(since.unwrap_or(0));
                put_str16(dst, prefix);
            }
            Request::SubscribeGrouped { prefix, since } => {
                let resume = if since.is_some() {
                    sub_flags::RESUME
                } else {
                    0
                };
                dst.put_u8(sub_flags::GROUPED | resume);
                dst.put_u64(since.unwrap_or(0));
                put_str16(dst, prefix);
            }
            Request::Unsubscribe { subscription } => dst.put_u32(*subscription),
            Request::Txn(txn) => write_txn(txn, dst),
        }
    }
}

impl Response {
    /// The frame type byte of this response.
    pub fn frame_type(&self) -> u8 {
        match self {
            Response::HelloOk { .. } => frame_type::HELLO_OK,
            Response::Pong => frame_type::PONG,
            Response::GetOk { .. } => frame_type::GET_OK,
            Response::PutOk { .. } => frame_type::PUT_OK,
            Response::DelOk { .. } => frame_type::DEL_OK,
            Response::ListItem { .. } => frame_type::LIST_ITEM,
            Response::ListOk { .. } => frame_type::LIST_OK,
            Response::SubOk => frame_type::SUB_OK,
            Response::UnsubOk => frame_type::UNSUB_OK,
            Response::StatsOk { .. } => frame_type::STATS_OK,
            Response::CompactOk { .. } => frame_type::COMPACT_OK,
            Response::TxnOk { .. } => frame_type::TXN_OK,
            Response::Error(_) => frame_type::ERROR,
        }
    }

    pub(crate) fn payload_len(&self) -> Result<usize, FrameError> {
        Ok(match self {
            Response::HelloOk { server_name, .. } => {
                2 + 4 + 4 + 4 + str16_len("server_name", server_name)?
            }
            Response::Pong | Response::SubOk | Response::UnsubOk => 0,
            Response::GetOk { value, .. } => 8 + bytes32_len("value", value)?,
            Response::PutOk { .. } => 8,
            Response::DelOk { .. } | Response::TxnOk { .. } => 8 + 4,
            Response::ListItem { key, value, .. } => {
                8 + str16_len("key", key)? + bytes32_len("value", value)?
            }
            Response::ListOk { .. } => 8 + 4,
            Response::CompactOk { .. } => 8 + 8,
            Response::StatsOk { stats } => {
                if stats.len() > usize::from(u16::MAX) {
                    return Err(FrameError::FieldTooLong {
                        field: "stats",
                        len: stats.len(),
                    });
                }
                let mut len = 2;
                for (name, _) in stats {
                    len += str16_len("stat name", name)? + 8;
                }
                len
            }
            Response::Error(e) => {
                let extra = match (e.code == ErrorCode::ConditionFailed, &e.key) {
                    (true, Some(key)) => 8 + str16_len("key", key)?,
                    (true, None) => 8,
                    (false, _) => 0,
                };
                2 + str16_len("message", &e.message)? + extra
            }
        })
    }

    pub(crate) fn write_payload(&self, dst: &mut BytesMut) {
        match self {
            Response::HelloOk {
                version,
                max_frame,
                max_key,
                max_value,
                server_name,
            } => {
                dst.put_u16(*version);
                dst.put_u32(*max_frame);
                dst.put_u32(*max_key);
                dst.put_u32(*max_value);
                put_str16(dst, server_name);
            }
            Response::Pong | Response::SubOk | Response::UnsubOk => {}
            Response::GetOk { revision, value } => {
                dst.put_u64(*revision);
                put_bytes32(dst, value);
            }
            Response::PutOk { revision } => dst.put_u64(*revision),
            Response::DelOk { revision, deleted } | Response::TxnOk { revision, deleted } => {
                dst.put_u64(*revision);
                dst.put_u32(*deleted);
            }
            Response::ListItem {
                revision,
                key,
                value,
            } => {
                dst.put_u64(*revision);
                put_str16(dst, key);
                put_bytes32(dst, value);
            }
            Response::ListOk { revision, count } => {
                dst.put_u64(*revision);
                dst.put_u32(*count);
            }
            Response::CompactOk {
                bytes_before,
                bytes_after,
            } => {
                dst.put_u64(*bytes_before);
                dst.put_u64(*bytes_after);
            }
            Response::StatsOk { stats } => {
                // Checked by payload_len.
                dst.put_u16(stats.len() as u16);
                for (name, value) in stats {
                    put_str16(dst, name);
                    dst.put_u64(*value);
                }
            }
            Response::Error(e) => {
                dst.put_u16(e.code.as_u16());
                put_str16(dst, &e.message);
                if e.code == ErrorCode::ConditionFailed {
                    dst.put_u64(e.current_revision.unwrap_or(0));
                    if let Some(key) = &e.key {
                        put_str16(dst, key);
                    }
                }
            }
        }
    }
}

impl Event {
    /// The frame type byte of this event.
    pub fn frame_type(&self) -> u8 {
        match self {
            Event::Update { .. } => frame_type::UPDATE,
            Event::Delete { .. } => frame_type::DELETE,
            Event::Synced { .. } => frame_type::SYNCED,
            Event::Reset => frame_type::RESET,
            Event::Closed { .. } => frame_type::CLOSED,
            Event::Group { .. } => frame_type::GROUP,
        }
    }

    pub(crate) fn payload_len(&self) -> Result<usize, FrameError> {
        Ok(match self {
            Event::Update { key, value, .. } => {
                8 + 4 + str16_len("key", key)? + bytes32_len("value", value)?
            }
            Event::Delete { key, .. } => 8 + 4 + str16_len("key", key)?,
            Event::Synced { .. } => 8,
            Event::Reset => 0,
            Event::Closed { message, .. } => 2 + str16_len("message", message)?,
            Event::Group { .. } => 4 + 8,
        })
    }

    pub(crate) fn write_payload(&self, dst: &mut BytesMut) {
        match self {
            Event::Update {
                revision,
                coalesced,
                key,
                value,
            } => {
                dst.put_u64(*revision);
                dst.put_u32(*coalesced);
                put_str16(dst, key);
                put_bytes32(dst, value);
            }
            Event::Delete {
                revision,
                coalesced,
                key,
            } => {
                dst.put_u64(*revision);
                dst.put_u32(*coalesced);
                put_str16(dst, key);
            }
            Event::Synced { revision } => dst.put_u64(*revision),
            Event::Reset => {}
            Event::Closed { code, message } => {
                dst.put_u16(code.as_u16());
                put_str16(dst, message);
            }
            Event::Group { count, revision } => {
                dst.put_u32(*count);
                dst.put_u64(*revision);
            }
        }
    }
}

pub(super) fn str16_len(field: &'static str, s: &str) -> Result<usize, FrameError> {
    if s.len() > usize::from(u16::MAX) {
        return Err(FrameError::FieldTooLong {
            field,
            len: s.len(),
        });
    }
    Ok(2 + s.len())
}

pub(super) fn bytes32_len(field: &'static str, b: &[u8]) -> Result<usize, FrameError> {
    if u32::try_from(b.len()).is_err() {
        return Err(FrameError::FieldTooLong {
            field,
            len: b.len(),
        });
    }
    Ok(4 + b.len())
}

// Lengths were checked by the matching `*_len` before anything is written.
pub(super) fn put_str16(dst: &mut BytesMut, s: &str) {
    dst.put_u16(s.len() as u16);
    dst.put_slice(s.as_bytes());
}

pub(super) fn put_bytes32(dst: &mut BytesMut, b: &[u8]) {
    dst.put_u32(b.len() as u32);
    dst.put_slice(b);
}
