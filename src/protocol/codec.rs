//! The two codecs: [`ServerCodec`] (decodes client frames, encodes server
//! frames) and [`ClientCodec`] (the opposite), for `tokio_util::codec::Framed`.
//!
//! ```text
//! offset 0        4      5        9
//!        +--------+------+--------+------------------------+
//!        | length | type |   id   | payload ...            |
//!        |  u32   |  u8  |  u32   | (length - 5 bytes)     |
//!        +--------+------+--------+------------------------+
//!                 \________ length bytes ________________/
//! ```
//!
//! Decoding is a two-step state machine driven by how much is buffered:
//! with fewer than 4 bytes nothing is known; with the length prefix the
//! length is checked against the maximum *before* any room is reserved for
//! the body (a hostile `FF FF FF FF` costs nothing), then the decoder waits
//! until the whole frame is buffered and splits it off without copying.
//!
//! The server-side decoder separates two kinds of bad input, because they
//! call for different answers:
//!
//! - the framing itself is broken (length out of range, fields that do not
//!   fill the length exactly, id 0, wrong magic): `Err(FrameError)`; the
//!   stream cannot be trusted any more, the connection closes;
//! - a well-framed frame says something invalid (unknown type, unknown flag
//!   bits or condition, invalid UTF-8): [`Inbound::Invalid`] with the
//!   request id; the server answers with an ERROR and reads on.
//!
//! The client-side decoder trusts nothing it cannot check either, but a
//! server that sends a bad frame is broken, so every problem is fatal there.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::error::{ErrorCode, FrameError};
use super::frame::{
    bytes32_len, Check, ClientFrame, Condition, ErrorFrame, Event, Request, Response, ServerFrame,
    Txn, TxnCondition, TxnOp,
};
use super::wire::{
    condition, del_flags, frame_type as ft, put_flags, sub_flags, txn_condition, txn_op,
    CONNECTION_ID, DEFAULT_MAX_FRAME, LENGTH_SIZE, MAGIC, MAX_EPHEMERAL_GRACE_MS,
    MAX_TXN_CONDITIONS, MAX_TXN_OPS, MIN_FRAME_LENGTH,
};

/// What the server's decoder yields for one well-framed client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A valid request.
    Request(ClientFrame),
    /// A frame that is well framed but invalid; the server answers with
    /// ERROR `code` and this `id`, and the connection survives (except
    /// before the handshake is complete, see `protocol.md`).
    Invalid {
        /// The request id of the frame (never 0).
        id: u32,
        /// The frame type byte of the frame.
        frame_type: u8,
        /// The code to answer with.
        code: ErrorCode,
        /// What is wrong, for the ERROR message.
        message: String,
    },
}

impl Inbound {
    /// The request id, valid or not.
    pub fn id(&self) -> u32 {
        match self {
            Inbound::Request(frame) => frame.id,
            Inbound::Invalid { id, .. } => *id,
        }
    }
}

/// The server side of a connection: [`Decoder`] of client frames into
/// [`Inbound`], [`Encoder`] of [`ServerFrame`]s.
#[derive(Debug, Clone)]
pub struct ServerCodec {
    max_frame: u32,
}

/// The client side of a connection: [`Decoder`] of [`ServerFrame`]s,
/// [`Encoder`] of [`ClientFrame`]s.
#[derive(Debug, Clone)]
pub struct ClientCodec {
    max_frame: u32,
}

macro_rules! max_frame_methods {
    ($t:ident) => {
        impl $t {
            /// A codec with the default maximum frame length
            /// ([`DEFAULT_MAX_FRAME`]).
            pub fn new() -> $t {
                $t::with_max_frame_length(DEFAULT_MAX_FRAME)
            }

            /// A codec that refuses frames whose length field is over `max_frame`,
            /// in both directions.
            pub fn with_max_frame_length(max_frame: u32) -> $t {
                $t { max_frame }
            }

            /// The maximum length field accepted and produced.
            pub fn max_frame_length(&self) -> u32 {
                self.max_frame
            }

            /// Changes the maximum (a client adopts the `max_frame` of HELLO_OK).
            pub fn set_max_frame_length(&mut self, max_frame: u32) {
                self.max_frame = max_frame;
            }
        }

        impl Default for $t {
            fn default() -> $t {
                $t::new()
            }
        }
    };
}

max_frame_methods!(ServerCodec);
max_frame_methods!(ClientCodec);

impl ServerCodec {
    /// Encodes GET_OK from a borrowed value: the same bytes as encoding
    /// [`Response::GetOk`], without first copying the value into a
    /// [`Bytes`] (a GET's value is read from a memory map).
    pub fn encode_get_ok(
        &self,
        id: u32,
        revision: u64,
        value: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), FrameError> {
        if id == CONNECTION_ID {
            return Err(FrameError::ZeroId {
                frame_type: ft::GET_OK,
            });
        }
        let len = 8 + bytes32_len("value", value)?;
        put_frame(dst, self.max_frame, ft::GET_OK, id, len, |d| {
            d.put_u64(revision);
            d.put_u32(value.len() as u32);
            d.put_slice(value);
        })
    }
}

impl Decoder for ServerCodec {
    type Item = Inbound;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Inbound>, FrameError> {
        let Some(raw) = split_frame(src, self.max_frame)? else {
            return Ok(None);
        };
        if raw.id == CONNECTION_ID {
            return Err(FrameError::ZeroId {
                frame_type: raw.frame_type,
            });
        }
        let (id, frame_type) = (raw.id, raw.frame_type);
        Ok(Some(match decode_request(raw)? {
            Ok(request) => Inbound::Request(ClientFrame { id, request }),
            Err((code, message)) => Inbound::Invalid {
                id,
                frame_type,
                code,
                message,
            },
        }))
    }
}

impl Decoder for ClientCodec {
    type Item = ServerFrame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<ServerFrame>, FrameError> {
        match split_frame(src, self.max_frame)? {
            Some(raw) => decode_server_frame(raw).map(Some),
            None => Ok(None),
        }
    }
}

impl Encoder<&ClientFrame> for ClientCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &ClientFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let ty = item.request.frame_type();
        if item.id == CONNECTION_ID {
            return Err(FrameError::ZeroId { frame_type: ty });
        }
        let len = item.request.payload_len()?;
        put_frame(dst, self.max_frame, ty, item.id, len, |d| {
            item.request.write_payload(d)
        })
    }
}

impl Encoder<ClientFrame> for ClientCodec {
    type Error = FrameError;

    fn encode(&mut self, item: ClientFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&item, dst)
    }
}

impl Encoder<&ServerFrame> for ServerCodec {
    type Error = FrameError;

    fn encode(&mut self, item: &ServerFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match item {
            ServerFrame::Response { id, response } => {
                let ty = response.frame_type();
                // Only an ERROR may belong to no request.
                if *id == CONNECTION_ID && ty != ft::ERROR {
                    return Err(FrameError::ZeroId { frame_type: ty });
                }
                let len = response.payload_len()?;
                put_frame(dst, self.max_frame, ty, *id, len, |d| {
                    response.write_payload(d)
                })
            }
            ServerFrame::Event {
                subscription,
                event,
            } => {
                let ty = event.frame_type();
                if *subscription == CONNECTION_ID {
                    return Err(FrameError::ZeroId { frame_type: ty });
                }
                let len = event.payload_len()?;
                put_frame(dst, self.max_frame, ty, *subscription, len, |d| {
                    event.write_payload(d)
                })
            }
        }
    }
}

impl Encoder<ServerFrame> for ServerCodec {
    type Error = FrameError;

    fn encode(&mut self, item: ServerFrame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&item, dst)
    }
}

/// Writes one frame, after checking that it fits; on error `dst` is untouched.
pub(super) fn put_frame(
    dst: &mut BytesMut,
    max_frame: u32,
    frame_type: u8,
    id: u32,
    payload_len: usize,
    write_payload: impl FnOnce(&mut BytesMut),
) -> Result<(), FrameError> {
    let length = MIN_FRAME_LENGTH as u64 + payload_len as u64;
    if length > u64::from(max_frame) {
        return Err(FrameError::TooLarge {
            length,
            max: max_frame,
        });
    }
    let start = dst.len();
    dst.reserve(LENGTH_SIZE + length as usize);
    dst.extend_from_slice(&(length as u32).to_be_bytes());
    dst.extend_from_slice(&[frame_type]);
    dst.extend_from_slice(&id.to_be_bytes());
    write_payload(dst);
    debug_assert_eq!(dst.len() - start, LENGTH_SIZE + length as usize);
    Ok(())
}

/// One whole frame split off the input: header parsed, payload not yet.
struct RawFrame {
    frame_type: u8,
    id: u32,
    payload: Bytes,
}

/// Splits one whole frame off `src`, or returns `Ok(None)` (after reserving
/// room for the rest of the frame, which is at most `max_frame` bytes) when
/// more input is needed.
fn split_frame(src: &mut BytesMut, max_frame: u32) -> Result<Option<RawFrame>, FrameError> {
    let Some(prefix) = src.get(..LENGTH_SIZE) else {
        return Ok(None);
    };
    let length = u32::from_be_bytes(prefix.try_into().expect("4 bytes"));
    if length < MIN_FRAME_LENGTH {
        return Err(FrameError::TooShort { length });
    }
    if length > max_frame {
        // Refused on the prefix alone: nothing has been reserved for the body.
        return Err(FrameError::TooLarge {
            length: length.into(),
            max: max_frame,
        });
    }
    let total = LENGTH_SIZE + length as usize;
    if src.len() < total {
        src.reserve(total - src.len());
        return Ok(None);
    }
    let mut frame = src.split_to(total).freeze();
    frame.advance(LENGTH_SIZE);
    let frame_type = frame.get_u8();
    let id = frame.get_u32();
    Ok(Some(RawFrame {
        frame_type,
        id,
        payload: frame,
    }))
}

/// A cursor over a payload whose every read is bounds-checked: running past
/// the end, or finishing with bytes left, is [`FrameError::Malformed`].
struct Fields {
    frame_type: u8,
    buf: Bytes,
}

impl Fields {
    fn need(&self, n: usize) -> Result<(), FrameError> {
        if self.buf.remaining() < n {
            return Err(self.malformed("a field runs past the end of the frame"));
        }
        Ok(())
    }

    fn malformed(&self, reason: &'static str) -> FrameError {
        FrameError::Malformed {
            frame_type: self.frame_type,
            reason,
        }
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    fn take(&mut self, n: usize) -> Result<Bytes, FrameError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// The bytes of a `str16`, not yet checked for UTF-8.
    fn str16_bytes(&mut self) -> Result<Bytes, FrameError> {
        let n = self.u16()?;
        self.take(n.into())
    }

    /// A `str16` that must be valid UTF-8 (server-sent strings).
    fn str16(&mut self) -> Result<String, FrameError> {
        let b = self.str16_bytes()?;
        utf8(&b).ok_or_else(|| self.malformed("a string is not valid UTF-8"))
    }

    /// A `bytes32`, shared with the input buffer (no copy).
    fn bytes32(&mut self) -> Result<Bytes, FrameError> {
        let n = self.u32()?;
        self.take(n as usize)
    }

    fn finish(&self) -> Result<(), FrameError> {
        if self.buf.has_remaining() {
            return Err(self.malformed("bytes are left over after the last field"));
        }
        Ok(())
    }
}

fn utf8(b: &[u8]) -> Option<String> {
    std::str::from_utf8(b).ok().map(str::to_owned)
}

/// A non-fatal problem: the code and message of the ERROR to answer with.
type Invalid = (ErrorCode, String);

fn invalid<T>(code: ErrorCode, message: impl Into<String>) -> Result<T, Invalid> {
    Err((code, message.into()))
}

/// Decodes a client frame's payload. The outer `Result` is fatal (framing),
/// the inner one is a well-framed but invalid request. Every field is read
/// and the end checked before anything is validated, so a frame that is
/// both badly framed and invalid is always treated as badly framed.
fn decode_request(raw: RawFrame) -> Result<Result<Request, Invalid>, FrameError> {
    let mut f = Fields {
        frame_type: raw.frame_type,
        buf: raw.payload,
    };
    let key_text = |b: &Bytes, what: &str| match utf8(b) {
        Some(s) => Ok(s),
        None => invalid(ErrorCode::InvalidKey, format!("{what} is not valid UTF-8")),
    };
    let result = match raw.frame_type {
        ft::HELLO => {
            let magic: [u8; 4] = f.take(4)?[..].try_into().expect("4 bytes");
            if magic != MAGIC {
                return Err(FrameError::BadMagic { magic });
            }
            let version = f.u16()?;
            let name = f.str16_bytes()?;
            let token = if f.buf.has_remaining() {
                Some(f.str16_bytes()?)
            } else {
                None
            };
            f.finish()?;
            match (utf8(&name), token.as_deref().map(utf8)) {
                (None, _) => invalid(ErrorCode::InvalidArgument, "client name is not valid UTF-8"),
                (_, Some(None)) => invalid(ErrorCode::InvalidArgument, "token is not valid UTF-8"),
                (Some(client_name), token) => Ok(Request::Hello {
                    version,
                    client_name,
                    token: token.flatten(),
                }),
            }
        }
        ft::PING | ft::STATS | ft::COMPACT => {
            f.finish()?;
            Ok(match raw.frame_type {
                ft::PING => Request::Ping,
                ft::STATS => Request::Stats,
                _ => Request::Compact,
            })
        }
        ft::GET | ft::LIST => {
            let key = f.str16_bytes()?;
            f.finish()?;
            if raw.frame_type == ft::GET {
                key_text(&key, "key").map(|key| Request::Get { key })
            } else {
                key_text(&key, "prefix").map(|prefix| Request::List { prefix })
            }
        }
        ft::PUT => {
            let (cond, expected) = (f.u8()?, f.u64()?);
            let key = f.str16_bytes()?;
            let value = f.bytes32()?;
            // Optional trailing flags and grace period (section 7).
            let trailer = if f.buf.has_remaining() {
                Some((f.u8()?, f.u32()?))
            } else {
                None
            };
            f.finish()?;
            parse_condition(cond, expected).and_then(|condition| {
                let key = key_text(&key, "key")?;
                match parse_put_flags(trailer)? {
                    None => Ok(Request::Put {
                        key,
                        value,
                        condition,
                    }),
                    Some(grace_ms) => Ok(Request::PutEphemeral {
                        key,
                        value,
                        condition,
                        grace_ms,
                    }),
                }
            })
        }
        ft::TXN => decode_txn(&mut f)?,
        ft::DEL => {
            let (flags, cond, expected) = (f.u8()?, f.u8()?, f.u64()?);
            let key = f.str16_bytes()?;
            f.finish()?;
            parse_delete(flags, cond, expected).and_then(|prefix_flag| {
                let condition = parse_condition(cond, expected)?;
                Ok(if prefix_flag {
                    Request::DeletePrefix {
                        prefix: key_text(&key, "prefix")?,
                    }
                } else {
                    Request::Delete {
                        key: key_text(&key, "key")?,
                        condition,
                    }
                })
            })
        }
        ft::SUB => {
            let (flags, since) = (f.u8()?, f.u64()?);
            let prefix = f.str16_bytes()?;
            f.finish()?;
            parse_since(flags, since).and_then(|since| {
                let prefix = key_text(&prefix, "prefix")?;
                Ok(if flags & sub_flags::GROUPED != 0 {
                    Request::SubscribeGrouped { prefix, since }
                } else {
                    Request::Subscribe { prefix, since }
                })
            })
        }
        ft::UNSUB => {
            let subscription = f.u32()?;
            f.finish()?;
            Ok(Request::Unsubscribe { subscription })
        }
        other => invalid(
            ErrorCode::Unsupported,
            format!("unknown frame type 0x{other:02X}"),
        ),
    };
    Ok(result)
}

/// Reads a TXN payload. Every field is read before anything is validated
/// (see [`decode_request`]).
fn decode_txn(f: &mut Fields) -> Result<Result<Request, Invalid>, FrameError> {
    let n_conditions = f.u16()?;
    let mut conditions = Vec::new();
    for _ in 0..n_conditions {
        let (kind, revision) = (f.u8()?, f.u64()?);
        conditions.push((kind, revision, f.str16_bytes()?));
    }
    let n_ops = f.u16()?;
    let mut ops = Vec::new();
    for _ in 0..n_ops {
        let kind = f.u8()?;
        let key = f.str16_bytes()?;
        let value = if kind == txn_op::PUT {
            Some(f.bytes32()?)
        } else {
            None
        };
        ops.push((kind, key, value));
    }
    f.finish()?;
    Ok(txn_request(conditions, ops))
}

type RawCondition = (u8, u64, Bytes);
type RawOp = (u8, Bytes, Option<Bytes>);

fn txn_request(conditions: Vec<RawCondition>, ops: Vec<RawOp>) -> Result<Request, Invalid> {
    if conditions.len() > MAX_TXN_CONDITIONS || ops.len() > MAX_TXN_OPS {
        return invalid(
            ErrorCode::Limit,
            format!(
                "a transaction carries at most {MAX_TXN_CONDITIONS} conditions and \
                 {MAX_TXN_OPS} operations (got {} and {})",
                conditions.len(),
                ops.len()
            ),
        );
    }
    let text = |b: &Bytes, what: &str| match utf8(b) {
        Some(s) => Ok(s),
        None => invalid(ErrorCode::InvalidKey, format!("{what} is not valid UTF-8")),
    };
    let mut txn = Txn::default();
    for (i, (kind, revision, key)) in conditions.into_iter().enumerate() {
        let check = match kind {
            txn_condition::REVISION_EQUALS => Check::RevisionEquals(revision),
            txn_condition::ABSENT | txn_condition::PRESENT if revision != 0 => {
                return invalid(
                    ErrorCode::InvalidArgument,
                    format!("condition {i}: revision must be 0 unless kind is 3"),
                )
            }
            txn_condition::ABSENT => Check::Absent,
            txn_condition::PRESENT => Check::Present,
            other => {
                return invalid(
                    ErrorCode::InvalidArgument,
                    format!("condition {i}: unknown kind {other}"),
                )
            }
        };
        txn.conditions.push(TxnCondition {
            key: text(&key, "a condition's key")?,
            check,
        });
    }
    for (i, (kind, key, value)) in ops.into_iter().enumerate() {
        let op = match (kind, value) {
            (txn_op::PUT, Some(value)) => TxnOp::Put {
                key: text(&key, "an operation's key")?,
                value,
            },
            (txn_op::DELETE, _) => TxnOp::Delete {
                key: text(&key, "an operation's key")?,
            },
            (txn_op::DELETE_PREFIX, _) => TxnOp::DeletePrefix {
                prefix: text(&key, "an operation's prefix")?,
            },
            (other, _) => {
                return invalid(
                    ErrorCode::InvalidArgument,
                    format!("operation {i}: unknown kind {other}"),
                )
            }
        };
        txn.ops.push(op);
    }
    Ok(Request::Txn(txn))
}

/// Checks PUT's optional trailer; returns the grace period of an
/// ephemeral PUT, `None` for a plain one.
fn parse_put_flags(trailer: Option<(u8, u32)>) -> Result<Option<u32>, Invalid> {
    let Some((flags, grace_ms)) = trailer else {
        return Ok(None);
    };
    if flags & !put_flags::ALL != 0 {
        return invalid(
            ErrorCode::InvalidArgument,
            format!("undefined PUT flag bits 0x{:02X}", flags & !put_flags::ALL),
        );
    }
    if flags == 0 {
        // One way to say "plain PUT": without the trailer.
        return invalid(
            ErrorCode::InvalidArgument,
            "PUT flags 0 must be left out (omit flags and grace_ms)",
        );
    }
    if grace_ms > MAX_EPHEMERAL_GRACE_MS {
        return invalid(
            ErrorCode::InvalidArgument,
            format!("grace_ms {grace_ms} is over the maximum {MAX_EPHEMERAL_GRACE_MS}"),
        );
    }
    Ok(Some(grace_ms))
}

fn parse_condition(cond: u8, expected: u64) -> Result<Condition, Invalid> {
    match cond {
        condition::REVISION_EQUALS => return Ok(Condition::RevisionEquals(expected)),
        condition::NONE | condition::MUST_NOT_EXIST if expected != 0 => {}
        condition::NONE => return Ok(Condition::None),
        condition::MUST_NOT_EXIST => return Ok(Condition::MustNotExist),
        other => {
            return invalid(
                ErrorCode::InvalidArgument,
                format!("unknown condition {other}"),
            )
        }
    }
    invalid(
        ErrorCode::InvalidArgument,
        "expected_revision must be 0 unless condition is 2 (revision equals)",
    )
}

/// Checks DEL's flags; returns whether the prefix flag is set.
fn parse_delete(flags: u8, cond: u8, expected: u64) -> Result<bool, Invalid> {
    if flags & !del_flags::ALL != 0 {
        return invalid(
            ErrorCode::InvalidArgument,
            format!("undefined DEL flag bits 0x{:02X}", flags & !del_flags::ALL),
        );
    }
    let prefix = flags & del_flags::PREFIX != 0;
    if prefix && (cond != condition::NONE || expected != 0) {
        return invalid(
            ErrorCode::InvalidArgument,
            "a prefix delete takes no condition",
        );
    }
    Ok(prefix)
}

fn parse_since(flags: u8, since: u64) -> Result<Option<u64>, Invalid> {
    if flags & !sub_flags::ALL != 0 {
        return invalid(
            ErrorCode::InvalidArgument,
            format!("undefined SUB flag bits 0x{:02X}", flags & !sub_flags::ALL),
        );
    }
    if flags & sub_flags::RESUME != 0 {
        Ok(Some(since))
    } else if since != 0 {
        invalid(
            ErrorCode::InvalidArgument,
            "since must be 0 without the resume flag",
        )
    } else {
        Ok(None)
    }
}

/// Decodes anything a server may send; every problem is fatal.
fn decode_server_frame(raw: RawFrame) -> Result<ServerFrame, FrameError> {
    let (frame_type, id) = (raw.frame_type, raw.id);
    // Only an ERROR may carry id 0.
    if id == CONNECTION_ID && frame_type != ft::ERROR {
        return Err(FrameError::ZeroId { frame_type });
    }
    let mut f = Fields {
        frame_type,
        buf: raw.payload,
    };
    let code = |f: &mut Fields| -> Result<ErrorCode, FrameError> {
        let code = f.u16()?;
        ErrorCode::from_u16(code).ok_or(FrameError::UnknownErrorCode { code })
    };
    let response = |response| ServerFrame::Response { id, response };
    let event = |event| ServerFrame::Event {
        subscription: id,
        event,
    };
    let frame = match frame_type {
        ft::HELLO_OK => response(Response::HelloOk {
            version: f.u16()?,
            max_frame: f.u32()?,
            max_key: f.u32()?,
            max_value: f.u32()?,
            server_name: f.str16()?,
        }),
        ft::PONG => response(Response::Pong),
        ft::GET_OK => response(Response::GetOk {
            revision: f.u64()?,
            value: f.bytes32()?,
        }),
        ft::PUT_OK => response(Response::PutOk { revision: f.u64()? }),
        ft::DEL_OK => response(Response::DelOk {
            revision: f.u64()?,
            deleted: f.u32()?,
        }),
        ft::LIST_ITEM => response(Response::ListItem {
            revision: f.u64()?,
            key: f.str16()?,
            value: f.bytes32()?,
        }),
        ft::LIST_OK => response(Response::ListOk {
            revision: f.u64()?,
            count: f.u32()?,
        }),
        ft::SUB_OK => response(Response::SubOk),
        ft::UNSUB_OK => response(Response::UnsubOk),
        ft::TXN_OK => response(Response::TxnOk {
            revision: f.u64()?,
            deleted: f.u32()?,
        }),
        ft::COMPACT_OK => response(Response::CompactOk {
            bytes_before: f.u64()?,
            bytes_after: f.u64()?,
        }),
        ft::STATS_OK => {
            let count = f.u16()?;
            // Each entry is at least 10 bytes, so `count` cannot make this
            // reserve more than the frame itself holds.
            let mut stats = Vec::with_capacity(usize::from(count).min(f.buf.remaining() / 10));
            for _ in 0..count {
                stats.push((f.str16()?, f.u64()?));
            }
            response(Response::StatsOk { stats })
        }
        ft::ERROR => {
            let code = code(&mut f)?;
            let message = f.str16()?;
            let (current_revision, key) = if code == ErrorCode::ConditionFailed {
                let current = f.u64()?;
                // A TXN's failed condition names its key.
                let key = if f.buf.has_remaining() {
                    Some(f.str16()?)
                } else {
                    None
                };
                (Some(current), key)
            } else {
                (None, None)
            };
            response(Response::Error(ErrorFrame {
                code,
                message,
                current_revision,
                key,
            }))
        }
        ft::UPDATE => event(Event::Update {
            revision: f.u64()?,
            coalesced: f.u32()?,
            key: f.str16()?,
            value: f.bytes32()?,
        }),
        ft::DELETE => event(Event::Delete {
            revision: f.u64()?,
            coalesced: f.u32()?,
            key: f.str16()?,
        }),
        ft::SYNCED => event(Event::Synced { revision: f.u64()? }),
        ft::RESET => event(Event::Reset),
        ft::GROUP => event(Event::Group {
            count: f.u32()?,
            revision: f.u64()?,
        }),
        ft::CLOSED => event(Event::Closed {
            code: code(&mut f)?,
            message: f.str16()?,
        }),
        _ => return Err(FrameError::UnknownType { frame_type }),
    };
    f.finish()?;
    Ok(frame)
}
