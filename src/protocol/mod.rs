//! The wire protocol: typed frames and the codecs that turn them into bytes
//! and back. `protocol.md` at the root of the repository is the normative
//! specification; this module is its executable twin.
//!
//! Pure by design: no sockets, no tasks, no clocks. Bytes go in, typed
//! values come out, and back, so the codec can be tested and fuzzed on its
//! own. The server and the client wrap a [`ServerCodec`] or a
//! [`ClientCodec`] in `tokio_util::codec::Framed`.
//!
//! - [`wire`]: every constant of the spec (magic, version, frame types,
//!   offsets, flags, default limits, STATS names).
//! - [`error`]: [`ErrorCode`] (the wire error table) and [`FrameError`]
//!   (fatal codec errors).
//! - [`frame`]: [`Request`], [`Response`], [`Event`] and the envelopes
//!   [`ClientFrame`] and [`ServerFrame`].
//! - [`codec`]: the decoders and encoders, and [`Inbound`], which separates
//!   a valid request from a well-framed but invalid one.
//! - [`change`]: [`EncodedChange`], an UPDATE or DELETE encoded once for
//!   every subscriber.
//!
//! The codec checks framing and UTF-8 only; whether a key is valid and
//! within the server's limits is the server's business (see [`crate::key`]).

pub mod change;
pub mod codec;
pub mod error;
pub mod frame;
pub mod txn;
pub mod wire;

#[cfg(test)]
mod tests;

pub use change::EncodedChange;
pub use codec::{ClientCodec, Inbound, ServerCodec};
pub use error::{ErrorCode, FrameError};
pub use frame::{
    Check, ClientFrame, Condition, ErrorFrame, Event, Request, Response, ServerFrame, Txn,
    TxnCondition, TxnOp,
};
